// The LSTM cell, as PyTorch's nn.LSTM (gate order i, f, g, o; optional projection):
//   i = σ(W_ii x + b_ii + W_hi h + b_hi)      f = σ(W_if x + b_if + W_hf h + b_hf)
//   g = tanh(W_ig x + b_ig + W_hg h + b_hg)   o = σ(W_io x + b_io + W_ho h + b_ho)
//   c' = f ⊙ c + i ⊙ g
//   h' = o ⊙ tanh(c')                 (proj_size = 0)
//   h' = W_hr (o ⊙ tanh(c'))          (proj_size = P > 0)
// With bias=false there are no bias parameters (PyTorch's bias=False): b_ih = b_hh = 0.
// Parameters are named and laid out exactly as PyTorch's, so its weights import by copying.
// ONNX's LSTM options (docs/CELLS.md): per-gate activations (σ → gate_activation, the
// candidate's tanh → cell_activation, tanh(c') → output_activation), peepholes (parameter
// weight_peephole, gates i,f,o), input_forget (f = 1 − i) and clip (each activation's input
// bounded to [-clip, clip]). Any of them selects the general path; the defaults keep the
// fused one.

import CSeqCell
import SeqCellPluginKit

private let cellID = "lstm"

private let optionSpecs = [
    OptionSpec(name: "proj_size", description: "size of the projected hidden state h (0: no projection); must be < hidden_size",
               kind: .int(min: 0, max: 1 << 20), defaultValue: 0),
    OptionSpec(name: "bias", description: "true (default): bias_ih and bias_hh, as PyTorch's bias=True; "
                   + "false: no bias parameters at all (PyTorch bias=False, Keras use_bias=False)",
               kind: .choice(["true", "false"]), defaultValue: 0),
]
    + activationOptionSpecs("gate_activation", choices: ActivationKind.onnxOrder, defaultIndex: 0,
                            what: "activation of the gates i, f, o (ONNX f)")
    + activationOptionSpecs("cell_activation", choices: ActivationKind.onnxOrder, defaultIndex: 1,
                            what: "activation of the candidate g (ONNX g)")
    + activationOptionSpecs("output_activation", choices: ActivationKind.onnxOrder, defaultIndex: 1,
                            what: "activation of c' in h' = o ⊙ act(c') (ONNX h)")
    + [
        OptionSpec(name: "peepholes", description: "true: peephole connections (parameter weight_peephole [3H], gates i,f,o), "
                       + "as ONNX LSTM's P; false (default): none",
                   kind: .choice(["false", "true"]), defaultValue: 0),
        OptionSpec(name: "input_forget", description: "true: coupled input and forget gates, f = 1 − i (ONNX input_forget); "
                       + "false (default): f is its own gate",
                   kind: .choice(["false", "true"]), defaultValue: 0),
        clipOptionSpec(),
    ]

final class LSTMKernel: CarvedWorkspace {
    let inputSize: Int
    let hidden: Int
    /// Width of h (and of the output): proj_size when projecting, else hidden.
    let hWidth: Int
    let projecting: Bool
    /// bias=false: no bias_ih / bias_hh parameters.
    let hasBias: Bool
    /// Index of weight_hr among the parameters (after the biases, when there are biases).
    let hrIndex: Int
    /// ONNX options: the three activations, peepholes (weight_peephole is the last parameter,
    /// at peepIndex), input_forget and clip; `general` when any differs from its default.
    let gateActivation: Activation
    let cellActivation: Activation
    let outputActivation: Activation
    let peepholes: Bool
    let inputForget: Bool
    let clip: Clip
    let general: Bool
    let peepIndex: Int
    let layout: LayoutStorage

    init(_ config: CellConfig) throws(CellError) {
        inputSize = config.inputSize
        hidden = config.hiddenSize
        let proj = Int(config.options[0])
        guard proj < hidden || proj == 0 else {
            throw .invalid("\(cellID): proj_size (\(proj)) must be smaller than hidden_size (\(hidden)); use 0 for no projection")
        }
        projecting = proj > 0
        hasBias = config.options[1] == 0
        hrIndex = hasBias ? 4 : 2
        hWidth = projecting ? proj : hidden
        let o = config.options
        let names = ActivationKind.onnxOrder
        gateActivation = Activation(choice: o[2], of: names, alpha: o[3], beta: o[4])
        cellActivation = Activation(choice: o[5], of: names, alpha: o[6], beta: o[7])
        outputActivation = Activation(choice: o[8], of: names, alpha: o[9], beta: o[10])
        peepholes = o[11] == 1
        inputForget = o[12] == 1
        clip = Clip(o[13])
        general = gateActivation.kind != .sigmoid || cellActivation.kind != .tanh || outputActivation.kind != .tanh
            || peepholes || inputForget || clip.isActive
        peepIndex = hrIndex + (projecting ? 1 : 0)
        let (I, H, P) = (inputSize, hidden, hWidth)
        var params = [
            ParamSpec("weight_ih", role: SEQCELL_ROLE_INPUT_WEIGHT, shape: [4 * H, I], gateOrder: "i,f,g,o",
                      description: "W_ih = [W_ii; W_if; W_ig; W_io] [4H, I]"),
            ParamSpec("weight_hh", role: SEQCELL_ROLE_RECURRENT_WEIGHT, shape: [4 * H, P], gateOrder: "i,f,g,o",
                      description: "W_hh = [W_hi; W_hf; W_hg; W_ho] [4H, \(projecting ? "P" : "H")]"),
        ]
        if hasBias {
            params += [
                ParamSpec("bias_ih", role: SEQCELL_ROLE_BIAS, shape: [4 * H], gateOrder: "i,f,g,o",
                          description: "b_ih = [b_ii; b_if; b_ig; b_io] [4H]"),
                ParamSpec("bias_hh", role: SEQCELL_ROLE_BIAS, shape: [4 * H], gateOrder: "i,f,g,o",
                          description: "b_hh = [b_hi; b_hf; b_hg; b_ho] [4H]"),
            ]
        }
        if projecting {
            // Role OTHER, not RECURRENT_WEIGHT: seqcell.h defines a recurrent weight as one that
            // multiplies a state, and W_hr multiplies o ⊙ tanh(c'), which is not a state (it
            // produces h). Marking it recurrent would give an importer or initialiser that
            // looks for "the" recurrent weight (Keras recurrent_kernel, orthogonal init of a
            // square transition) two candidates; OTHER gets the generic initialisation,
            // which is what PyTorch does for weight_hr too.
            params.append(ParamSpec("weight_hr", role: SEQCELL_ROLE_OTHER, shape: [P, H],
                                    description: "W_hr [P, H], projects o ⊙ tanh(c') to h"))
        }
        if peepholes {
            params.append(ParamSpec("weight_peephole", role: SEQCELL_ROLE_OTHER, shape: [3 * H], gateOrder: "i,f,o",
                                    description: "P = [P_i; P_f; P_o] [3H], peephole weights (ONNX orders them i,o,f)"))
        }
        layout = LayoutStorage(
            params: params,
            states: [StateSpec("h", size: P), StateSpec("c", size: H)],
            outputSize: P)
    }

    struct Buffers {
        var gates: UnsafeMutablePointer<Float>  // [T, B, 4H] pre-activations → activations (i,f,g,o) → dgates;
                                                // fused inference: the chunked projection's ring and W_ih's pack
        var h: UnsafeMutablePointer<Float>      // training: [T+1, B, P]; inference: [2, B, P] (steps alternate)
        var c: UnsafeMutablePointer<Float>      // training: [T+1, B, H]; inference: [B, H]
        var m: UnsafeMutablePointer<Float>      // projecting: o ⊙ tanh(c'), training [T, B, H], inference [B, H]
        var dh: UnsafeMutablePointer<Float>     // training only: [B, P] gradient of h_t
        var dc: UnsafeMutablePointer<Float>     // training only: [B, H] gradient of c_t
        var tmp: UnsafeMutablePointer<Float>    // training only: [B, P]
        var dm: UnsafeMutablePointer<Float>     // training + projecting: [B, H]
        var dhAll: UnsafeMutablePointer<Float>  // training + projecting: [T, B, P] total gradient of h_t
        var packed: UnsafeMutablePointer<Float> // W_hh packed for the recurrent product
        var packedT: UnsafeMutablePointer<Float> // training: W_hh packed for backward's dh = dgates W_hh
        var tail: UnsafeMutablePointer<Float>   // training: the packed backward tail (GateGradientProduct)
        var cache: UnsafeMutablePointer<Float>  // PackCache's header, first in every layout
    }

    /// Sizes (with a measuring carver) and carves the workspace: the one place both happen.
    func carve(_ c: inout WorkspaceCarver, T: Int, B: Int, training: Bool) -> Buffers {
        let (H, P) = (hidden, hWidth)
        let steps = training ? T : 1
        let cache = c.floats(PackCache.floats)
        let chunked = usesChunkedProjection(training: training)
        let gates = chunked ? c.floats(ChunkedInputProjection.workspaceFloats(T: T, B: B, n: 4 * H, k: inputSize))
                            : c.floats(T, B, 4 * H)
        let h = c.floats((training ? T + 1 : 2), B, P)
        let cs = c.floats((training ? T + 1 : 1), B, H)
        let m = projecting ? c.floats(steps, B, H) : gates
        let dh = training ? c.floats(B, P) : gates
        let dc = training ? c.floats(B, H) : gates
        let tmp = training ? c.floats(B, P) : gates
        let dm = training && projecting ? c.floats(B, H) : gates
        let dhAll = training && projecting ? c.floats(T, B, P) : gates
        // W_ih's pack for the input projection, then W_hh's for the steps (one after the other);
        // the chunked projection keeps W_ih's pack beside the ring.
        let packed = c.floats(max(RecurrentProduct.workspaceFloats(B: B, n: 4 * H, k: P),
                                  chunked ? 0 : InputProjection.workspaceFloats(rows: T * B, n: 4 * H, k: inputSize)))
        let packedT = training ? c.floats(RecurrentProduct.workspaceFloats(B: B, n: P, k: 4 * H)) : gates
        let tail = training ? c.floats(GateGradientProduct.workspaceFloats(rows: T * B, gates: 4 * H, inputSize: inputSize,
                                                                           widths: [P])) : gates
        return Buffers(gates: gates, h: h, c: cs, m: m, dh: dh, dc: dc, tmp: tmp, dm: dm, dhAll: dhAll, packed: packed,
                       packedT: packedT, tail: tail, cache: cache)
    }

    /// Inference on the fused path projects the input in chunks of steps inside the step loop
    /// (`ChunkedInputProjection`); training and the general path project every step at once.
    func usesChunkedProjection(training: Bool) -> Bool { !training && !general }

    func forward(_ f: ForwardCall) {
        let (T, B, I, H, P) = (f.T, f.B, inputSize, hidden, hWidth)
        let G = 4 * H
        let w = buffers(f)
        let wih = f.param(0), whh = f.param(1)
        let bias1 = hasBias ? f.param(2) : nil, bias2 = hasBias ? f.param(3) : nil
        // Fused inference keeps W_ih's and W_hh's packs in the workspace between calls of one
        // params_epoch (an InferenceSession's calls): they are packed by the first call only.
        let fused = usesChunkedProjection(training: f.training)
        let prepacked = PackCache.check(w.cache, f, instance: self, wih, whh, cacheable: fused)
        let chunked = fused
            ? ChunkedInputProjection(x: f.input, w: wih, n: G, k: I, T: T, B: B, bias1: bias1, bias2: bias2, scratch: w.gates,
                                     prepacked: prepacked)
            : nil
        if chunked == nil {
            // Input projection of every step at once: gates = X W_ih^T + b_ih + b_hh.
            fillRows(w.gates, rows: T * B, n: G, bias1: bias1, bias2: bias2)
            InputProjection.apply(f.input, ldx: I, rows: T * B, w: wih, n: G, k: I, into: w.gates, ldy: G, scratch: w.packed)
        }
        copyOrZero(f.initialState(0), to: w.h, count: B * P)
        copyOrZero(f.initialState(1), to: w.c, count: B * H)
        let recurrent = RecurrentProduct(w: whh, n: G, k: P, B: B, scratch: w.packed, prepacked: prepacked)
        if fused { PackCache.commit(w.cache, f, instance: self, wih, whh) }
        if general {
            forwardGeneral(f, w, recurrent)
            return
        }
        let store: Int32 = f.training ? 1 : 0
        let chunks = projecting ? 1 : stepChunks(rows: B, macs: B * G * P)
        let unitChunks = recurrent.unitChunks(hidden: H, macs: B * G * P, threads: chunks)
        // A chunk's projection is split by the step's unit chunks when it can be (same parallel
        // region, no extra hand-off); else it runs before the step.
        let projectUnits = unitChunks > 0 && chunked?.canSplitUnits(hidden: H, chunks: unitChunks) == true
        // Rows are independent within a step: each chunk does its rows' recurrent product
        // and gate pass for step t, so a step needs one hand-off, not one per GEMM.
        func rows(_ t: Int, _ r: Range<Int>) {
            let hPrev = f.training ? w.h + t * B * P : w.h + (t & 1) * B * P
            let hNext = f.training ? w.h + (t + 1) * B * P : w.h + ((t + 1) & 1) * B * P
            let cPrev = f.training ? w.c + t * B * H : w.c
            let cNext = f.training ? w.c + (t + 1) * B * H : w.c
            let mT = f.training ? w.m + t * B * H : w.m
            let gatesT = chunked?.gates(step: t) ?? w.gates + t * B * G
            let out = f.output + t * B * P
            recurrent.apply(hPrev + r.lowerBound * P, ldh: P, rows: r.count, into: gatesT + r.lowerBound * G, ldy: G,
                            accumulate: true)
            for b in r {
                let cp = cPrev + b * H, cn = cNext + b * H
                guard t < f.length(b) else {
                    if cn != cp { cn.update(from: cp, count: H) }
                    if projecting { (mT + b * H).update(repeating: 0, count: H) } else {
                        (out + b * H).update(repeating: 0, count: H)
                        let hp = hPrev + b * P, hn = hNext + b * P
                        if hn != hp { hn.update(from: hp, count: P) }
                    }
                    continue
                }
                // One fused vector pass: activations (kept for backward when training),
                // c' = f ⊙ c + i ⊙ g, and m = o ⊙ tanh(c'). Without projection m is h'
                // itself: written to the output and h together.
                let m = projecting ? mT + b * H : out + b * H
                vectorKernels.lstm_row(gatesT + b * G, Int64(H), cp, cn, m, projecting ? nil : hNext + b * P, store)
            }
        }
        // Inference without projection: the batch rows are independent for the whole sequence,
        // so a large enough batch is split by rows ONCE, each chunk running every step of its
        // rows (its rows of the chunked projection too): one hand-off per call, not per step.
        let seqChunks = f.training || projecting || chunked == nil ? 1 : sequenceChunks(rows: B, steps: T, weights: G * P)
        if seqChunks > 1 {
            runBatchChunks(seqChunks, rows: B, steps: T, projection: chunked!) { t, r in rows(t, r) }
            writeFinalStates(f, w)
            return
        }
        for t in 0..<T {
            // Inference alternates two h buffers: a step's product reads all of h_{t-1} while
            // threads split by hidden units already write h_t.
            let hPrev = f.training ? w.h + t * B * P : w.h + (t & 1) * B * P
            let hNext = f.training ? w.h + (t + 1) * B * P : w.h + ((t + 1) & 1) * B * P
            let cPrev = f.training ? w.c + t * B * H : w.c
            let cNext = f.training ? w.c + (t + 1) * B * H : w.c
            let mT = f.training ? w.m + t * B * H : w.m
            let gatesT = chunked?.gates(step: t) ?? w.gates + t * B * G
            let out = f.output + t * B * P
            let projectNow = chunked?.startsChunk(t) == true
            if projectNow && !projectUnits { chunked!.project(chunkAt: t) }
            // Split by hidden units when the packed blocks allow: each thread then reads only its
            // share of W_hh every step (it stays in its core's cache) and runs full row tiles.
            func units(_ u: Range<Int>) {
                if projectNow && projectUnits { chunked!.project(chunkAt: t, gates: 4, hidden: H, units: u) }
                recurrent.applyUnits(hPrev, ldh: P, rows: B, into: gatesT, ldy: G, accumulate: true, gates: 4, hidden: H,
                                     units: u)
                for b in 0..<B {
                    let cp = cPrev + b * H, cn = cNext + b * H, o = out + b * H, hp = hPrev + b * P, hn = hNext + b * P
                    guard t < f.length(b) else {
                        if cn != cp { (cn + u.lowerBound).update(from: cp + u.lowerBound, count: u.count) }
                        (o + u.lowerBound).update(repeating: 0, count: u.count)
                        (hn + u.lowerBound).update(from: hp + u.lowerBound, count: u.count)
                        continue
                    }
                    vectorKernels.lstm_row_range(gatesT + b * G, Int64(H), Int64(u.lowerBound), Int64(u.upperBound), cp, cn,
                                                 o, hn, store)
                }
            }
            if chunks == 1 {
                rows(t, 0..<B)
            } else if unitChunks > 0 {
                hostParallelFor(unitChunks) { units(chunkUnits($0, of: unitChunks, hidden: H)) }
            } else {
                hostParallelFor(chunks) { rows(t, chunkRows($0, of: chunks, rows: B)) }
            }
            if projecting { project(f, step: t, m: mT, out: out, hPrev: hPrev, hNext: hNext) }
        }
        writeFinalStates(f, w)
    }

    /// h' = m W_hr^T for step t, straight into the output rows; the rows of samples that have
    /// ended are fixed up after (output zero, h carried).
    func project(_ f: ForwardCall, step t: Int, m mT: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>,
                 hPrev: UnsafeMutablePointer<Float>, hNext: UnsafeMutablePointer<Float>) {
        let (B, H, P) = (f.B, hidden, hWidth)
        sgemm(transA: false, transB: true, m: B, n: P, k: H, a: mT, lda: H, b: f.param(hrIndex), ldb: H,
              beta: 0, c: out, ldc: P)
        for b in 0..<B {
            let o = out + b * P, hp = hPrev + b * P, hn = hNext + b * P
            if t < f.length(b) {
                hn.update(from: o, count: P)
            } else {
                o.update(repeating: 0, count: P)
                if hn != hp { hn.update(from: hp, count: P) }
            }
        }
    }

    /// h_T and c_T into the final-state outputs the host asked for (inference alternates two
    /// h buffers and keeps one c).
    func writeFinalStates(_ f: ForwardCall, _ w: Buffers) {
        let (T, B, H, P) = (f.T, f.B, hidden, hWidth)
        if let hN = f.finalState(0) { hN.update(from: w.h + (f.training ? T : T & 1) * B * P, count: B * P) }
        let steps = f.training ? T : 0
        if let cN = f.finalState(1) { cN.update(from: w.c + steps * B * H, count: B * H) }
    }

    /// The ONNX options: gates keeps each step's pre-activations (peephole terms included,
    /// before clip) for backward; one thread, a plain loop per element.
    func forwardGeneral(_ f: ForwardCall, _ w: Buffers, _ recurrent: RecurrentProduct) {
        let (T, B, H, P) = (f.T, f.B, hidden, hWidth)
        let G = 4 * H
        let fa = gateActivation, ga = cellActivation, ha = outputActivation, clip = clip, coupled = inputForget
        let peep: UnsafePointer<Float>? = peepholes ? f.param(peepIndex) : nil
        for t in 0..<T {
            let hPrev = f.training ? w.h + t * B * P : w.h + (t & 1) * B * P
            let hNext = f.training ? w.h + (t + 1) * B * P : w.h + ((t + 1) & 1) * B * P
            let cPrev = f.training ? w.c + t * B * H : w.c
            let cNext = f.training ? w.c + (t + 1) * B * H : w.c
            let mT = f.training ? w.m + t * B * H : w.m
            let gatesT = w.gates + t * B * G
            let out = f.output + t * B * P
            recurrent.apply(hPrev, ldh: P, rows: B, into: gatesT, ldy: G, accumulate: true)
            for b in 0..<B {
                let cp = cPrev + b * H, cn = cNext + b * H
                guard t < f.length(b) else {
                    if cn != cp { cn.update(from: cp, count: H) }
                    if projecting { (mT + b * H).update(repeating: 0, count: H) } else {
                        (out + b * H).update(repeating: 0, count: H)
                        let hp = hPrev + b * P, hn = hNext + b * P
                        if hn != hp { hn.update(from: hp, count: P) }
                    }
                    continue
                }
                let a = gatesT + b * G
                let m = projecting ? mT + b * H : out + b * H
                for j in 0..<H {
                    let c0 = cp[j]
                    if let peep {
                        a[j] += peep[j] * c0
                        a[H + j] += peep[H + j] * c0
                    }
                    let i = fa(clip(a[j]))
                    let fg = coupled ? 1 - i : fa(clip(a[H + j]))
                    let c1 = fg * c0 + i * ga(clip(a[2 * H + j]))
                    cn[j] = c1
                    if let peep { a[3 * H + j] += peep[2 * H + j] * c1 }
                    m[j] = fa(clip(a[3 * H + j])) * ha(c1)
                }
                if !projecting { (hNext + b * P).update(from: m, count: P) }
            }
            if projecting { project(f, step: t, m: mT, out: out, hPrev: hPrev, hNext: hNext) }
        }
        writeFinalStates(f, w)
    }

    /// Backward through the steps of the general path: gate pre-activations in, their
    /// gradients out (the f rows zero with input_forget); dh, dc carried; peephole gradients
    /// accumulated.
    func backwardGeneralSteps(_ g: BackwardCall, _ w: Buffers, _ back: RecurrentProduct) {
        let (T, B, H, P) = (g.T, g.B, hidden, hWidth)
        let G = 4 * H
        let fa = gateActivation, ga = cellActivation, ha = outputActivation, clip = clip, coupled = inputForget
        let peep: UnsafePointer<Float>? = peepholes ? g.param(peepIndex) : nil
        let dPeep: UnsafeMutablePointer<Float>? = peepholes ? g.gradParam(peepIndex) : nil
        for t in stride(from: T - 1, through: 0, by: -1) {
            let dg = w.gates + t * B * G
            let cT = w.c + (t + 1) * B * H, cPrev = w.c + t * B * H
            let goT = g.gradOutput.map { $0 + t * B * P }
            if projecting { projectionBackward(g, w, step: t, gradOutput: goT) }
            for b in 0..<B {
                let d = dg + b * G
                guard t < g.length(b) else { d.update(repeating: 0, count: G); continue }
                let dmSrc: UnsafeMutablePointer<Float>
                if projecting {
                    dmSrc = w.dm + b * H
                } else {
                    dmSrc = w.dh + b * H
                    if let gy = goT.map({ $0 + b * H }) { for j in 0..<H { dmSrc[j] += gy[j] } }
                }
                let cn = cT + b * H, cp = cPrev + b * H, dc = w.dc + b * H
                for j in 0..<H {
                    let xi = d[j], xf = d[H + j], xg = d[2 * H + j], xo = d[3 * H + j]
                    let i = fa(clip(xi)), gc = ga(clip(xg)), o = fa(clip(xo))
                    let fg = coupled ? 1 - i : fa(clip(xf))
                    let c1 = cn[j], c0 = cp[j], dm = dmSrc[j]
                    let dao = dm * ha(c1) * fa.derivative(clip(xo)) * clip.derivative(xo)
                    var dct = dc[j] + dm * o * ha.derivative(c1)
                    if let peep { dct += dao * peep[2 * H + j] }
                    let dag = dct * i * ga.derivative(clip(xg)) * clip.derivative(xg)
                    let dai: Float, daf: Float
                    if coupled {
                        // c' = (1 − i) c + i g: di = dc' (g − c); the f rows are unused.
                        dai = dct * (gc - c0) * fa.derivative(clip(xi)) * clip.derivative(xi)
                        daf = 0
                    } else {
                        dai = dct * gc * fa.derivative(clip(xi)) * clip.derivative(xi)
                        daf = dct * c0 * fa.derivative(clip(xf)) * clip.derivative(xf)
                    }
                    var dcp = dct * fg
                    if let peep { dcp += dai * peep[j] + daf * peep[H + j] }
                    if let dPeep {
                        dPeep[j] += dai * c0
                        dPeep[H + j] += daf * c0
                        dPeep[2 * H + j] += dao * c1
                    }
                    dc[j] = dcp
                    d[j] = dai
                    d[H + j] = daf
                    d[2 * H + j] = dag
                    d[3 * H + j] = dao
                }
            }
            back.apply(dg, ldh: G, rows: B, into: w.tmp, ldy: P, accumulate: false)
            g.carryActiveRows(step: t, from: w.tmp, into: w.dh, width: P)
        }
    }

    func backward(_ g: BackwardCall) {
        let (T, B, I, H, P) = (g.T, g.B, inputSize, hidden, hWidth)
        let G = 4 * H
        let w = buffers(g)
        let whh = g.param(1)
        copyOrZero(g.gradFinalState(0), to: w.dh, count: B * P)
        copyOrZero(g.gradFinalState(1), to: w.dc, count: B * H)
        let dgAll = w.gates  // each step's activations are last read at that step: reuse for dgates
        // dh_{t-1} = dgates_t W_hh: y = x·Wᵀ with W = W_hhᵀ, packed once for all steps.
        let back = RecurrentProduct(w: whh, n: P, k: G, B: B, scratch: w.packedT, transposed: true)
        let chunks = projecting ? 1 : stepChunks(rows: B, macs: B * G * P)
        if general { backwardGeneralSteps(g, w, back) } else {
            for t in stride(from: T - 1, through: 0, by: -1) {
                let dg = dgAll + t * B * G
                let cT = w.c + (t + 1) * B * H, cPrev = w.c + t * B * H
                let goT = g.gradOutput.map { $0 + t * B * P }
                if projecting { projectionBackward(g, w, step: t, gradOutput: goT) }
                // Rows are independent within a step: each chunk does its rows' gate gradients and
                // their share of dh_{t-1} = dgates_t W_hh (samples frozen at t carry dh unchanged).
                func rows(_ r: Range<Int>) {
                    for b in r {
                        let d = dg + b * G
                        guard t < g.length(b) else { d.update(repeating: 0, count: G); continue }
                        // Gradient of m = o ⊙ tanh(c'): dm from the projection, or dh + dy.
                        let dmSrc: UnsafeMutablePointer<Float>
                        if projecting {
                            dmSrc = w.dm + b * H
                        } else {
                            dmSrc = w.dh + b * H
                            if let gy = goT.map({ $0 + b * H }) { for j in 0..<H { dmSrc[j] += gy[j] } }
                        }
                        // Fused vector pass: activations in, pre-activation gradients out; dc carried.
                        vectorKernels.lstm_row_backward(d, Int64(H), cT + b * H, cPrev + b * H, w.dc + b * H, dmSrc)
                    }
                    back.apply(dg + r.lowerBound * G, ldh: G, rows: r.count, into: w.tmp + r.lowerBound * P, ldy: P,
                               accumulate: false)
                    g.carryActiveRows(step: t, from: w.tmp, into: w.dh, width: P, rows: r)
                }
                if chunks == 1 { rows(0..<B) } else { hostParallelFor(chunks) { rows(chunkRows($0, of: chunks, rows: B)) } }
            }
        }
        if let gh0 = g.gradInitialState(0) { gh0.update(from: w.dh, count: B * P) }
        if let gc0 = g.gradInitialState(1) { gc0.update(from: w.dc, count: B * H) }
        // W_hh multiplies h_{t-1}: states [0, T) of the training layout, width P.
        g.accumulateGateGradients(dGates: dgAll, gates: G, inputSize: I, parameters: .pytorch(bias: hasBias),
                                  recurrent: [.all(dgAll, gates: G, inputs: w.h, width: P)], scratch: w.tail)
        if projecting, let dWhr = g.gradParam(hrIndex) {
            // dW_hr = Σ_t dh_total_t^T m_t (frozen rows: dh_total = 0 and m = 0).
            sgemm(transA: true, transB: false, m: P, n: H, k: T * B, a: w.dhAll, lda: P, b: w.m, ldb: H,
                  beta: 1, c: dWhr, ldc: H)
        }
    }

    /// One step of backward through the projection h = W_hr m: dh_total = dh + dy (zero for
    /// samples that have ended), kept in dhAll for dW_hr, and dm = dh_total W_hr.
    func projectionBackward(_ g: BackwardCall, _ w: Buffers, step t: Int, gradOutput goT: UnsafePointer<Float>?) {
        let (B, H, P) = (g.B, hidden, hWidth)
        let dhT = w.dhAll + t * B * P
        for b in 0..<B {
            let d = dhT + b * P
            if t < g.length(b) {
                let dh = w.dh + b * P
                if let gy = goT.map({ $0 + b * P }) {
                    for j in 0..<P { d[j] = dh[j] + gy[j] }
                } else {
                    d.update(from: dh, count: P)
                }
            } else {
                d.update(repeating: 0, count: P)
            }
        }
        sgemm(transA: false, transB: false, m: B, n: H, k: P, a: dhT, lda: P, b: g.param(hrIndex), ldb: H,
              beta: 0, c: w.dm, ldc: H)
    }
}

private nonisolated(unsafe) let plugin = makePlugin(name: "SeqCell built-in LSTM", cells: [
    CellRegistration(
        id: cellID, version: (1, 2, 0),
        description: "LSTM, gates i,f,g,o, optional projection (proj_size), as torch.nn.LSTM; ONNX LSTM's peepholes, input_forget, clip and activations",
        options: optionSpecs) { config throws(CellError) in try LSTMKernel(config) },
])

@_cdecl("seqcell_plugin_entry")
public func seqcell_plugin_entry(_ major: UInt32, _ minor: UInt32, _ host: HostTable?, _ out: PluginSlot?,
                                 _ error: MessageBuffer?, _ capacity: Int) -> seqcell_status {
    pluginEntry(major, minor, host, out, error, capacity, plugin: plugin)
}

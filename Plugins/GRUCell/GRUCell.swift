// The GRU cell, as PyTorch's nn.GRU (gate order r, z, n):
//   r = σ(W_ir x + b_ir + W_hr h + b_hr)
//   z = σ(W_iz x + b_iz + W_hz h + b_hz)
//   n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))     reset = after  (PyTorch, cuDNN, Keras reset_after=True)
//   n = tanh(W_in x + b_in + W_hn (r ⊙ h) + b_hn)     reset = before (Cho et al. 2014, Keras reset_after=False)
//   h' = (1 - z) ⊙ n + z ⊙ h
// With bias=false there are no bias parameters (PyTorch's bias=False): b_ih = b_hh = 0.
// Parameters are named and laid out exactly as PyTorch's, so its weights import by copying.
// ONNX's GRU options (docs/CELLS.md): gate_activation replaces σ, candidate_activation the
// tanh of n, and clip bounds each activation's input to [-clip, clip]. Any of them selects the
// general path (reset = after is ONNX's linear_before_reset = 1, before is 0); the defaults
// keep the fused one.

import CSeqCell
import SeqCellPluginKit

private let cellID = "gru"

private let optionSpecs = [
    OptionSpec(name: "reset", description: "where the reset gate applies: after (default; PyTorch, cuDNN) "
                   + "or before (Cho et al. 2014) the recurrent product of the candidate",
               kind: .choice(["after", "before"]), defaultValue: 0),
    OptionSpec(name: "bias", description: "true (default): bias_ih and bias_hh, as PyTorch's bias=True; "
                   + "false: no bias parameters at all (PyTorch bias=False, Keras use_bias=False)",
               kind: .choice(["true", "false"]), defaultValue: 0),
]
    + activationOptionSpecs("gate_activation", choices: ActivationKind.onnxOrder, defaultIndex: 0,
                            what: "activation of the gates r, z (ONNX f)")
    + activationOptionSpecs("candidate_activation", choices: ActivationKind.onnxOrder, defaultIndex: 1,
                            what: "activation of the candidate n (ONNX g)")
    + [clipOptionSpec()]

final class GRUKernel: CarvedWorkspace {
    let inputSize: Int
    let hidden: Int
    /// reset = before: n uses W_hn (r ⊙ h) instead of r ⊙ (W_hn h + b_hn).
    let resetBefore: Bool
    /// bias=false: no bias_ih / bias_hh parameters.
    let hasBias: Bool
    /// bias=false: H zeros standing in for b_hn (read-only, shared by every call; one float
    /// with biases, where it is never read).
    let zeroBias: UnsafeMutablePointer<Float>
    /// ONNX options; `general` when any differs from its default.
    let gateActivation: Activation
    let candidateActivation: Activation
    let clip: Clip
    let general: Bool
    let layout: LayoutStorage

    init(_ config: CellConfig) {
        inputSize = config.inputSize
        hidden = config.hiddenSize
        resetBefore = config.options[0] == 1
        hasBias = config.options[1] == 0
        let o = config.options
        gateActivation = Activation(choice: o[2], of: ActivationKind.onnxOrder, alpha: o[3], beta: o[4])
        candidateActivation = Activation(choice: o[5], of: ActivationKind.onnxOrder, alpha: o[6], beta: o[7])
        clip = Clip(o[8])
        general = gateActivation.kind != .sigmoid || candidateActivation.kind != .tanh || clip.isActive
        let (I, H) = (inputSize, hidden)
        let zeros = hasBias ? 1 : max(H, 1)
        zeroBias = .allocate(capacity: zeros)
        zeroBias.initialize(repeating: 0, count: zeros)
        var params = [
            ParamSpec("weight_ih", role: SEQCELL_ROLE_INPUT_WEIGHT, shape: [3 * H, I], gateOrder: "r,z,n",
                      description: "W_ih = [W_ir; W_iz; W_in] [3H, I]"),
            ParamSpec("weight_hh", role: SEQCELL_ROLE_RECURRENT_WEIGHT, shape: [3 * H, H], gateOrder: "r,z,n",
                      description: "W_hh = [W_hr; W_hz; W_hn] [3H, H]"),
        ]
        if hasBias {
            params += [
                ParamSpec("bias_ih", role: SEQCELL_ROLE_BIAS, shape: [3 * H], gateOrder: "r,z,n",
                          description: "b_ih = [b_ir; b_iz; b_in] [3H]"),
                ParamSpec("bias_hh", role: SEQCELL_ROLE_BIAS, shape: [3 * H], gateOrder: "r,z,n",
                          description: "b_hh = [b_hr; b_hz; b_hn] [3H]"),
            ]
        }
        layout = LayoutStorage(
            params: params,
            states: [StateSpec("h", size: H)],
            outputSize: H)
    }

    deinit { zeroBias.deallocate() }

    struct Buffers {
        var gx: UnsafeMutablePointer<Float>     // [T, B, 3H] input part + biases → activations (r,z,n) → d(pre);
                                                // fused inference: the chunked projection's ring and W_ih's pack
        var states: UnsafeMutablePointer<Float> // training: [T+1, B, H]; inference: [2, B, H] (steps alternate)
        /// reset = after: W_hh h_{t-1} without bias (r,z,n) → in backward its gradient.
        /// Training [T, B, 3H] (backward needs W_hn h), inference [B, 3H].
        var gh: UnsafeMutablePointer<Float>
        /// reset = before: r ⊙ h_{t-1}. Training [T, B, H] (for dW_hn), inference [B, H].
        var rh: UnsafeMutablePointer<Float>
        var dh: UnsafeMutablePointer<Float>     // training only: [B, H]
        var tmp: UnsafeMutablePointer<Float>    // training only: [B, H] dh_{t-1} being summed
        var drh: UnsafeMutablePointer<Float>    // training, reset = before: [B, H] gradient of r ⊙ h
        var packed: UnsafeMutablePointer<Float> // reset = after, small batches: W_hh packed
        /// training, reset = after: W_hh packed for backward's dh += d(W_hh h) W_hh.
        var packedT: UnsafeMutablePointer<Float>
        var tail: UnsafeMutablePointer<Float>   // training: the packed backward tail (GateGradientProduct)
        var cache: UnsafeMutablePointer<Float>  // PackCache's header, first in every layout
    }

    /// Sizes (with a measuring carver) and carves the workspace: the one place both happen.
    func carve(_ c: inout WorkspaceCarver, T: Int, B: Int, training: Bool) -> Buffers {
        let H = hidden
        let steps = training ? T : 1
        let cache = c.floats(PackCache.floats)
        let chunked = usesChunkedProjection(training: training)
        let gx = chunked ? c.floats(ChunkedInputProjection.workspaceFloats(T: T, B: B, n: 3 * H, k: inputSize))
                         : c.floats(T, B, 3 * H)
        let states = c.floats((training ? T + 1 : 2), B, H)
        let gh = resetBefore ? gx : c.floats(steps, B, 3 * H)
        let rh = resetBefore ? c.floats(steps, B, H) : gx
        let dh = training ? c.floats(B, H) : gx
        let tmp = training ? c.floats(B, H) : gx
        let drh = training && resetBefore ? c.floats(B, H) : gx
        // W_ih's pack for the input projection, then W_hh's for the steps (one after the other);
        // the chunked projection keeps W_ih's pack beside the ring.
        let packed = c.floats(max(resetBefore ? 0 : RecurrentProduct.workspaceFloats(B: B, n: 3 * H, k: H),
                                  chunked ? 0 : InputProjection.workspaceFloats(rows: T * B, n: 3 * H, k: inputSize)))
        let packedT = training && !resetBefore ? c.floats(RecurrentProduct.workspaceFloats(B: B, n: H, k: 3 * H)) : gx
        let tail = training ? c.floats(GateGradientProduct.workspaceFloats(rows: T * B, gates: 3 * H, inputSize: inputSize,
                                                                           widths: [H])) : gx
        return Buffers(gx: gx, states: states, gh: gh, rh: rh, dh: dh, tmp: tmp, drh: drh, packed: packed, packedT: packedT,
                       tail: tail, cache: cache)
    }

    /// Inference on the fused path projects the input in chunks of steps inside the step loop
    /// (`ChunkedInputProjection`); training and the general path project every step at once.
    func usesChunkedProjection(training: Bool) -> Bool { !training && !general }

    func forward(_ f: ForwardCall) {
        let (T, B, I, H) = (f.T, f.B, inputSize, hidden)
        let G = 3 * H
        let w = buffers(f)
        let wih = f.param(0), whh = f.param(1)
        // Input projection: gx = X W_ih^T + b_ih + b_hh, except that for reset = after b_hn
        // stays out (it sits inside r ⊙ (W_hn h + b_hn)). Fused inference projects chunks of
        // steps inside the step loop; otherwise every step is projected at once here.
        // Fused inference keeps W_ih's and W_hh's packs in the workspace between calls of one
        // params_epoch (an InferenceSession's calls): they are packed by the first call only.
        let fused = usesChunkedProjection(training: f.training)
        let prepacked = PackCache.check(w.cache, f, instance: self, wih, whh, cacheable: fused)
        let chunked = fused
            ? ChunkedInputProjection(x: f.input, w: wih, n: G, k: I, T: T, B: B, bias1: hasBias ? f.param(2) : nil,
                                     bias2: hasBias ? f.param(3) : nil, bias2Columns: resetBefore ? G : 2 * H,
                                     scratch: w.gx, prepacked: prepacked)
            : nil
        let row = w.gx
        if chunked != nil {
            // Projected chunk by chunk in the step loop.
        } else if hasBias {
            let bih = f.param(2), bhh = f.param(3)
            for j in 0..<2 * H { row[j] = bih[j] + bhh[j] }
            if resetBefore {
                for j in 2 * H..<G { row[j] = bih[j] + bhh[j] }
            } else {
                for j in 2 * H..<G { row[j] = bih[j] }
            }
        } else {
            row.update(repeating: 0, count: G)
        }
        if chunked == nil {
            for r in 1..<T * B { (w.gx + r * G).update(from: row, count: G) }
            InputProjection.apply(f.input, ldx: I, rows: T * B, w: wih, n: G, k: I, into: w.gx, ldy: G, scratch: w.packed)
        }
        copyOrZero(f.initialState(0), to: w.states, count: B * H)
        let bhn: UnsafePointer<Float> = hasBias ? f.param(3) + 2 * H : UnsafePointer(zeroBias)
        let whn = whh + 2 * H * H
        // reset = before has no full-width recurrent product (r, z and n are separate GEMMs).
        let recurrent = RecurrentProduct(w: whh, n: G, k: H, B: B, scratch: w.packed, usePacked: !resetBefore,
                                         prepacked: prepacked)
        if fused { PackCache.commit(w.cache, f, instance: self, wih, whh) }
        if general {
            forwardGeneral(f, w, recurrent, bhn: bhn)
            return
        }
        let store: Int32 = f.training ? 1 : 0
        let chunks = resetBefore ? 1 : stepChunks(rows: B, macs: B * G * H)
        let unitChunks = recurrent.unitChunks(hidden: H, macs: B * G * H, threads: chunks)
        // A chunk's projection is split by the step's unit chunks when it can be (same parallel
        // region, no extra hand-off); else it runs before the step.
        let projectUnits = unitChunks > 0 && chunked?.canSplitUnits(hidden: H, chunks: unitChunks) == true
        // reset = after: rows are independent within a step, so a chunk of rows does its rows'
        // recurrent product (into gh, the n part must stay separate from gx) and one fused gate
        // pass for step t.
        func rows(_ t: Int, _ r: Range<Int>) {
            let hPrev = f.training ? w.states + t * B * H : w.states + (t & 1) * B * H
            let hNext = f.training ? w.states + (t + 1) * B * H : w.states + ((t + 1) & 1) * B * H
            let gxT = chunked?.gates(step: t) ?? w.gx + t * B * G
            let out = f.output + t * B * H
            let ghT = f.training ? w.gh + t * B * G : w.gh
            recurrent.apply(hPrev + r.lowerBound * H, ldh: H, rows: r.count, into: ghT + r.lowerBound * G, ldy: G,
                            accumulate: false)
            for b in r {
                let o = out + b * H, hn = hNext + b * H, hp = hPrev + b * H
                guard t < f.length(b) else {
                    o.update(repeating: 0, count: H)
                    if hn != hp { hn.update(from: hp, count: H) }
                    continue
                }
                // One fused vector pass: r, z, n (kept for backward when training), h'.
                vectorKernels.gru_row(gxT + b * G, ghT + b * G, bhn, hp, o, hn, Int64(H), store)
            }
        }
        // Inference, reset = after: the batch rows are independent for the whole sequence, so a
        // large enough batch is split by rows ONCE, each chunk running every step of its rows
        // (its rows of the chunked projection too): one hand-off per call, not per step.
        let seqChunks = f.training || resetBefore || chunked == nil ? 1 : sequenceChunks(rows: B, steps: T, weights: G * H)
        if seqChunks > 1 {
            runBatchChunks(seqChunks, rows: B, steps: T, projection: chunked!) { t, r in rows(t, r) }
        }
        for t in 0..<(seqChunks > 1 ? 0 : T) {
            // Inference alternates two h buffers (threads split by hidden units write h_t while
            // others still read h_{t-1}).
            let hPrev = f.training ? w.states + t * B * H : w.states + (t & 1) * B * H
            let hNext = f.training ? w.states + (t + 1) * B * H : w.states + ((t + 1) & 1) * B * H
            let gxT = chunked?.gates(step: t) ?? w.gx + t * B * G
            let out = f.output + t * B * H
            let projectNow = chunked?.startsChunk(t) == true
            if projectNow && !projectUnits { chunked!.project(chunkAt: t) }
            if resetBefore {
                // r, z: their recurrent part is added in place; then n needs W_hn (r ⊙ h).
                let rhT = f.training ? w.rh + t * B * H : w.rh
                sgemm(transA: false, transB: true, m: B, n: 2 * H, k: H, a: hPrev, lda: H, b: whh, ldb: H,
                      beta: 1, c: gxT, ldc: G)
                for b in 0..<B {
                    let rh = rhT + b * H
                    guard t < f.length(b) else { rh.update(repeating: 0, count: H); continue }
                    let gr = gxT + b * G, gz = gr + H, hp = hPrev + b * H
                    for j in 0..<H {
                        let r = sigmoid(gr[j])
                        gr[j] = r
                        gz[j] = sigmoid(gz[j])
                        rh[j] = r * hp[j]
                    }
                }
                sgemm(transA: false, transB: true, m: B, n: H, k: H, a: rhT, lda: H, b: whn, ldb: H,
                      beta: 1, c: gxT + 2 * H, ldc: G)
                for b in 0..<B {
                    let o = out + b * H, hn = hNext + b * H, hp = hPrev + b * H
                    guard t < f.length(b) else {
                        o.update(repeating: 0, count: H)
                        if hn != hp { hn.update(from: hp, count: H) }
                        continue
                    }
                    let gz = gxT + b * G + H, gn = gz + H
                    for j in 0..<H {
                        let z = gz[j], n = tanhActivation(gn[j])
                        gn[j] = n
                        let v = (1 - z) * n + z * hp[j]
                        o[j] = v
                        hn[j] = v
                    }
                }
            } else {
                // One recurrent GEMM for all three gates into its own buffer (the n part must
                // stay separate from gx), then one fused loop adds and activates.
                let ghT = f.training ? w.gh + t * B * G : w.gh
                // Split by hidden units when the packed blocks allow (each thread keeps its share
                // of W_hh in cache and runs full row tiles).
                func units(_ u: Range<Int>) {
                    if projectNow && projectUnits { chunked!.project(chunkAt: t, gates: 3, hidden: H, units: u) }
                    recurrent.applyUnits(hPrev, ldh: H, rows: B, into: ghT, ldy: G, accumulate: false, gates: 3, hidden: H,
                                         units: u)
                    for b in 0..<B {
                        let o = out + b * H, hn = hNext + b * H, hp = hPrev + b * H
                        guard t < f.length(b) else {
                            (o + u.lowerBound).update(repeating: 0, count: u.count)
                            (hn + u.lowerBound).update(from: hp + u.lowerBound, count: u.count)
                            continue
                        }
                        vectorKernels.gru_row_range(gxT + b * G, ghT + b * G, bhn, hp, o, hn, Int64(H), Int64(u.lowerBound),
                                                    Int64(u.upperBound), store)
                    }
                }
                if chunks == 1 {
                    rows(t, 0..<B)
                } else if unitChunks > 0 {
                    hostParallelFor(unitChunks) { units(chunkUnits($0, of: unitChunks, hidden: H)) }
                } else {
                    hostParallelFor(chunks) { rows(t, chunkRows($0, of: chunks, rows: B)) }
                }
            }
        }
        if let hN = f.finalState(0) {
            hN.update(from: w.states + (f.training ? T : T & 1) * B * H, count: B * H)
        }
    }

    /// The ONNX options: gx keeps each step's pre-activations of r, z, n (before clip) for
    /// backward instead of the activations; one thread, a plain loop per element.
    func forwardGeneral(_ f: ForwardCall, _ w: Buffers, _ recurrent: RecurrentProduct, bhn: UnsafePointer<Float>) {
        let (T, B, H) = (f.T, f.B, hidden)
        let G = 3 * H
        let fa = gateActivation, ga = candidateActivation, clip = clip
        let whh = f.param(1), whn = whh + 2 * H * H
        for t in 0..<T {
            let hPrev = f.training ? w.states + t * B * H : w.states + (t & 1) * B * H
            let hNext = f.training ? w.states + (t + 1) * B * H : w.states + ((t + 1) & 1) * B * H
            let gxT = w.gx + t * B * G
            let out = f.output + t * B * H
            if resetBefore {
                let rhT = f.training ? w.rh + t * B * H : w.rh
                sgemm(transA: false, transB: true, m: B, n: 2 * H, k: H, a: hPrev, lda: H, b: whh, ldb: H,
                      beta: 1, c: gxT, ldc: G)
                for b in 0..<B {
                    let rh = rhT + b * H
                    guard t < f.length(b) else { rh.update(repeating: 0, count: H); continue }
                    let gr = gxT + b * G, hp = hPrev + b * H
                    for j in 0..<H { rh[j] = fa(clip(gr[j])) * hp[j] }
                }
                sgemm(transA: false, transB: true, m: B, n: H, k: H, a: rhT, lda: H, b: whn, ldb: H,
                      beta: 1, c: gxT + 2 * H, ldc: G)
                for b in 0..<B {
                    let o = out + b * H, hn = hNext + b * H, hp = hPrev + b * H
                    guard t < f.length(b) else {
                        o.update(repeating: 0, count: H)
                        if hn != hp { hn.update(from: hp, count: H) }
                        continue
                    }
                    let gz = gxT + b * G + H, gn = gz + H
                    for j in 0..<H {
                        let z = fa(clip(gz[j])), n = ga(clip(gn[j]))
                        let v = (1 - z) * n + z * hp[j]
                        o[j] = v
                        hn[j] = v
                    }
                }
            } else {
                let ghT = f.training ? w.gh + t * B * G : w.gh
                recurrent.apply(hPrev, ldh: H, rows: B, into: ghT, ldy: G, accumulate: false)
                for b in 0..<B {
                    let o = out + b * H, hn = hNext + b * H, hp = hPrev + b * H
                    guard t < f.length(b) else {
                        o.update(repeating: 0, count: H)
                        if hn != hp { hn.update(from: hp, count: H) }
                        continue
                    }
                    let a = gxT + b * G, gh = ghT + b * G
                    for j in 0..<H {
                        a[j] += gh[j]
                        a[H + j] += gh[H + j]
                        let r = fa(clip(a[j])), z = fa(clip(a[H + j]))
                        a[2 * H + j] += r * (gh[2 * H + j] + bhn[j])
                        let n = ga(clip(a[2 * H + j]))
                        let v = (1 - z) * n + z * hp[j]
                        o[j] = v
                        hn[j] = v
                    }
                }
            }
        }
        if let hN = f.finalState(0) {
            hN.update(from: w.states + (f.training ? T : T & 1) * B * H, count: B * H)
        }
    }

    func backward(_ g: BackwardCall) {
        let (T, B, I, H) = (g.T, g.B, inputSize, hidden)
        let G = 3 * H
        let w = buffers(g)
        let whh = g.param(1)
        let bhn: UnsafePointer<Float> = hasBias ? g.param(3) + 2 * H : UnsafePointer(zeroBias)
        let whn = whh + 2 * H * H
        copyOrZero(g.gradFinalState(0), to: w.dh, count: B * H)
        // Each step's saved activations are last read at that step: gx becomes d(pre) of the
        // input part (dr, dz, dn), gh (reset = after) d(pre) of the recurrent part.
        let dgx = w.gx
        // reset = after: dh_{t-1} += d(W_hh h) W_hh, y = x·Wᵀ with W = W_hhᵀ, packed once for all steps.
        let back = RecurrentProduct(w: whh, n: H, k: G, B: B, scratch: w.packedT, transposed: true, usePacked: !resetBefore)
        let chunks = resetBefore ? 1 : stepChunks(rows: B, macs: B * G * H)
        for t in stride(from: T - 1, through: 0, by: -1) {
            let hPrev = w.states + t * B * H
            let dgxT = dgx + t * B * G
            let goT = g.gradOutput.map { $0 + t * B * H }
            if resetBefore {
                for b in 0..<B {
                    let d = dgxT + b * G
                    guard t < g.length(b) else {
                        d.update(repeating: 0, count: G)
                        (w.tmp + b * H).update(repeating: 0, count: H)
                        continue
                    }
                    let dz = d + H, dn = d + 2 * H
                    let dh = w.dh + b * H, hp = hPrev + b * H, acc = w.tmp + b * H
                    let gy = goT.map { $0 + b * H }
                    if general {
                        // dz, dn hold the pre-activations (before clip) on the general path.
                        let fa = gateActivation, ga = candidateActivation, clip = clip
                        for j in 0..<H {
                            let up = dh[j] + (gy?[j] ?? 0)
                            let xz = dz[j], xn = dn[j]
                            let z = fa(clip(xz)), n = ga(clip(xn))
                            acc[j] = up * z
                            dz[j] = up * (hp[j] - n) * fa.derivative(clip(xz)) * clip.derivative(xz)
                            dn[j] = up * (1 - z) * ga.derivative(clip(xn)) * clip.derivative(xn)
                        }
                        continue
                    }
                    for j in 0..<H {
                        let up = dh[j] + (gy?[j] ?? 0)
                        let z = dz[j], n = dn[j]
                        acc[j] = up * z
                        dz[j] = up * (hp[j] - n) * z * (1 - z)
                        dn[j] = up * (1 - z) * (1 - n * n)
                    }
                }
                // d(r ⊙ h) = dn W_hn, then dr and the r ⊙ h path into dh_{t-1}.
                sgemm(transA: false, transB: false, m: B, n: H, k: H, a: dgxT + 2 * H, lda: G, b: whn, ldb: H,
                      beta: 0, c: w.drh, ldc: H)
                for b in 0..<B where t < g.length(b) {
                    let dr = dgxT + b * G, drh = w.drh + b * H, hp = hPrev + b * H, acc = w.tmp + b * H
                    if general {
                        let fa = gateActivation, clip = clip
                        for j in 0..<H {
                            let xr = dr[j]
                            acc[j] += drh[j] * fa(clip(xr))
                            dr[j] = drh[j] * hp[j] * fa.derivative(clip(xr)) * clip.derivative(xr)
                        }
                        continue
                    }
                    for j in 0..<H {
                        let r = dr[j]
                        acc[j] += drh[j] * r
                        dr[j] = drh[j] * hp[j] * r * (1 - r)
                    }
                }
                // dh_{t-1} += [dr, dz] [W_hr; W_hz].
                sgemm(transA: false, transB: false, m: B, n: H, k: 2 * H, a: dgxT, lda: G, b: whh, ldb: H,
                      beta: 1, c: w.tmp, ldc: H)
            } else {
                let dghT = w.gh + t * B * G
                // Rows are independent within a step: each chunk does its rows' gate gradients and
                // their share of dh_{t-1} += d(W_hh h) W_hh.
                func rows(_ span: Range<Int>) {
                    for b in span {
                        let d = dgxT + b * G, dgh = dghT + b * G
                        guard t < g.length(b) else {
                            d.update(repeating: 0, count: G)
                            dgh.update(repeating: 0, count: G)
                            (w.tmp + b * H).update(repeating: 0, count: H)
                            continue
                        }
                        let dz = d + H, dn = d + 2 * H
                        let dhz = dgh + H, dhn = dgh + 2 * H
                        let dh = w.dh + b * H, hp = hPrev + b * H, acc = w.tmp + b * H
                        let gy = goT.map { $0 + b * H }
                        if general {
                            // d holds the pre-activations of r, z, n (before clip) on the general path.
                            let fa = gateActivation, ga = candidateActivation, clip = clip
                            for j in 0..<H {
                                let up = dh[j] + (gy?[j] ?? 0)
                                let xr = d[j], xz = dz[j], xn = dn[j]
                                let r = fa(clip(xr)), z = fa(clip(xz)), n = ga(clip(xn))
                                let hnPre = dhn[j] + bhn[j]  // W_hn h + b_hn
                                acc[j] = up * z
                                let dnPre = up * (1 - z) * ga.derivative(clip(xn)) * clip.derivative(xn)
                                let drPre = dnPre * hnPre * fa.derivative(clip(xr)) * clip.derivative(xr)
                                let dzPre = up * (hp[j] - n) * fa.derivative(clip(xz)) * clip.derivative(xz)
                                d[j] = drPre; dz[j] = dzPre; dn[j] = dnPre
                                dgh[j] = drPre; dhz[j] = dzPre; dhn[j] = dnPre * r
                            }
                            continue
                        }
                        // One fused vector pass: activations and W_hn h in, both parts' gradients out.
                        vectorKernels.gru_row_backward(d, dgh, bhn, hp, dh, gy, acc, Int64(H))
                    }
                    back.apply(dghT + span.lowerBound * G, ldh: G, rows: span.count, into: w.tmp + span.lowerBound * H,
                               ldy: H, accumulate: true)
                }
                if chunks == 1 { rows(0..<B) } else { hostParallelFor(chunks) { rows(chunkRows($0, of: chunks, rows: B)) } }
            }
            g.carryActiveRows(step: t, from: w.tmp, into: w.dh, width: H)
        }
        if let gh0 = g.gradInitialState(0) { gh0.update(from: w.dh, count: B * H) }
        if resetBefore {
            // W_hr, W_hz multiply h_{t-1}; W_hn multiplies r ⊙ h_{t-1}. b_hh sits outside r.
            g.accumulateGateGradients(
                dGates: dgx, gates: G, inputSize: I, parameters: .pytorch(bias: hasBias),
                recurrent: [
                    RecurrentGradientBlock(gradients: dgx, leadingDimension: G, rows: 0..<2 * H, inputs: w.states, width: H),
                    RecurrentGradientBlock(gradients: dgx + 2 * H, leadingDimension: G, rows: 2 * H..<G, inputs: w.rh, width: H),
                ], scratch: w.tail)
        } else {
            // The recurrent part's gradient (gh) differs from the input part's in the n rows.
            g.accumulateGateGradients(dGates: dgx, gates: G, inputSize: I, parameters: .pytorch(bias: hasBias),
                                      recurrent: [.all(w.gh, gates: G, inputs: w.states, width: H)], recurrentBias: w.gh,
                                      scratch: w.tail)
        }
    }
}

private nonisolated(unsafe) let plugin = makePlugin(name: "SeqCell built-in GRU", cells: [
    CellRegistration(
        id: cellID, version: (1, 2, 0),
        description: "GRU, gates r,z,n, reset gate after (PyTorch) or before (Cho et al.) W_hn, as torch.nn.GRU; ONNX GRU's clip and activations",
        options: optionSpecs) { config in GRUKernel(config) },
])

@_cdecl("seqcell_plugin_entry")
public func seqcell_plugin_entry(_ major: UInt32, _ minor: UInt32, _ host: HostTable?, _ out: PluginSlot?,
                                 _ error: MessageBuffer?, _ capacity: Int) -> seqcell_status {
    pluginEntry(major, minor, host, out, error, capacity, plugin: plugin)
}

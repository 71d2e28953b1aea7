// The Elman RNN cell, as PyTorch's nn.RNN:
//   h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh),  act = tanh (default) or relu.
// With bias=false there are no bias parameters (PyTorch's bias=False): b_ih = b_hh = 0.
// ONNX's RNN options: act may be any ONNX activation (with activation_alpha/_beta), and
// clip > 0 bounds act's input to [-clip, clip]. Those run on a general path; tanh and relu
// without clip keep the fused one.

import CSeqCell
import SeqCellPluginKit

private let cellID = "rnn"

/// tanh and relu keep indices 0 and 1; ONNX's other activations follow in ONNX's order.
private let activationChoices = ["tanh", "relu"] + ActivationKind.onnxOrder.filter { $0 != "tanh" && $0 != "relu" }

private let optionSpecs = [
    OptionSpec(name: "activation", description: "nonlinearity: tanh (default), relu, or one of ONNX's activations "
                   + "(\(activationChoices.dropFirst(2).joined(separator: ", "))) with activation_alpha/_beta",
               kind: .choice(activationChoices), defaultValue: 0),
    OptionSpec(name: "bias", description: "true (default): bias_ih and bias_hh, as PyTorch's bias=True; "
                   + "false: no bias parameters at all (PyTorch bias=False, Keras use_bias=False)",
               kind: .choice(["true", "false"]), defaultValue: 0),
] + activationOptionSpecs("activation", choices: activationChoices, defaultIndex: 0, what: "nonlinearity").dropFirst()
  + [clipOptionSpec()]

final class RNNKernel: CarvedWorkspace {
    let inputSize: Int
    let hidden: Int
    let relu: Bool
    /// The configured activation and clip; `general` when they need the general path
    /// (an activation other than tanh/relu, or clip > 0).
    let activation: Activation
    let clip: Clip
    let general: Bool
    /// bias=false: no bias_ih / bias_hh parameters.
    let hasBias: Bool
    let layout: LayoutStorage

    init(_ config: CellConfig) {
        inputSize = config.inputSize
        hidden = config.hiddenSize
        relu = config.options[0] == 1
        hasBias = config.options[1] == 0
        activation = Activation(choice: config.options[0], of: activationChoices, alpha: config.options[2],
                                beta: config.options[3])
        clip = Clip(config.options[4])
        general = config.options[0] > 1 || clip.isActive
        let (I, H) = (inputSize, hidden)
        var params = [
            ParamSpec("weight_ih", role: SEQCELL_ROLE_INPUT_WEIGHT, shape: [H, I], description: "W_ih [H, I]"),
            ParamSpec("weight_hh", role: SEQCELL_ROLE_RECURRENT_WEIGHT, shape: [H, H], description: "W_hh [H, H]"),
        ]
        if hasBias {
            params += [
                ParamSpec("bias_ih", role: SEQCELL_ROLE_BIAS, shape: [H], description: "b_ih [H]"),
                ParamSpec("bias_hh", role: SEQCELL_ROLE_BIAS, shape: [H], description: "b_hh [H]"),
            ]
        }
        layout = LayoutStorage(
            params: params,
            states: [StateSpec("h", size: H)],
            outputSize: H)
    }

    struct Buffers {
        var pre: UnsafeMutablePointer<Float>    // [T, B, H] pre-activations, then dpre in backward
        var states: UnsafeMutablePointer<Float> // training: [T+1, B, H]; inference: [B, H]
        var dh: UnsafeMutablePointer<Float>     // training only: [B, H]
        var tmp: UnsafeMutablePointer<Float>    // training only: [B, H]
        var packed: UnsafeMutablePointer<Float> // small batches: W_hh packed for the recurrent product
        var packedT: UnsafeMutablePointer<Float> // training: W_hh packed for backward's dh = dpre W_hh
        var tail: UnsafeMutablePointer<Float>   // training: the packed backward tail (GateGradientProduct)
    }

    func carve(_ c: inout WorkspaceCarver, T: Int, B: Int, training: Bool) -> Buffers {
        let H = hidden
        let pre = c.floats(T, B, H)
        let states = c.floats((training ? T + 1 : 1), B, H)
        let dh = training ? c.floats(B, H) : pre
        let tmp = training ? c.floats(B, H) : pre
        // W_ih's pack for the input projection, then W_hh's for the steps (one after the other).
        let packed = c.floats(max(RecurrentProduct.workspaceFloats(B: B, n: H, k: H),
                                  InputProjection.workspaceFloats(rows: T * B, n: H, k: inputSize)))
        let packedT = training ? c.floats(RecurrentProduct.workspaceFloats(B: B, n: H, k: H)) : pre
        let tail = training ? c.floats(GateGradientProduct.workspaceFloats(rows: T * B, gates: H, inputSize: inputSize,
                                                                           widths: [H])) : pre
        return Buffers(pre: pre, states: states, dh: dh, tmp: tmp, packed: packed, packedT: packedT, tail: tail)
    }

    func forward(_ f: ForwardCall) {
        let (T, B, I, H) = (f.T, f.B, inputSize, hidden)
        let w = buffers(f)
        let wih = f.param(0), whh = f.param(1)
        // Input projection of every step at once: pre = X W_ih^T + b_ih + b_hh.
        fillRows(w.pre, rows: T * B, n: H, bias1: hasBias ? f.param(2) : nil, bias2: hasBias ? f.param(3) : nil)
        InputProjection.apply(f.input, ldx: I, rows: T * B, w: wih, n: H, k: I, into: w.pre, ldy: H, scratch: w.packed)
        copyOrZero(f.initialState(0), to: w.states, count: B * H)
        let recurrent = RecurrentProduct(w: whh, n: H, k: H, B: B, scratch: w.packed)
        if general {
            forwardGeneral(f, w, recurrent)
            return
        }
        let chunks = stepChunks(rows: B, macs: B * H * H)
        for t in 0..<T {
            let hPrev = f.training ? w.states + t * B * H : w.states
            let hNext = f.training ? w.states + (t + 1) * B * H : w.states
            let pre = w.pre + t * B * H
            let out = f.output + t * B * H
            // Rows are independent within a step: each chunk does its rows' product and tanh.
            func rows(_ r: Range<Int>) {
                recurrent.apply(hPrev + r.lowerBound * H, ldh: H, rows: r.count, into: pre + r.lowerBound * H, ldy: H,
                                accumulate: true)
                for b in r {
                    let o = out + b * H, hn = hNext + b * H
                    if t < f.length(b) {
                        let p = pre + b * H
                        if relu {
                            // relu(NaN) = NaN, as torch.relu (only a negative value becomes 0).
                            for j in 0..<H { let v = p[j] < 0 ? 0 : p[j]; o[j] = v; hn[j] = v }
                        } else {
                            vectorKernels.tanh_copy(p, o, hn, Int64(H))
                        }
                    } else {
                        o.update(repeating: 0, count: H)
                        if hn != hPrev + b * H { hn.update(from: hPrev + b * H, count: H) }
                    }
                }
            }
            if chunks == 1 { rows(0..<B) } else { hostParallelFor(chunks) { rows(chunkRows($0, of: chunks, rows: B)) } }
        }
        if let hN = f.finalState(0) {
            hN.update(from: f.training ? w.states + T * B * H : w.states, count: B * H)
        }
    }

    /// Any activation, with clip: pre keeps each step's pre-activation (before clip) for backward.
    func forwardGeneral(_ f: ForwardCall, _ w: Buffers, _ recurrent: RecurrentProduct) {
        let (T, B, H) = (f.T, f.B, hidden)
        let act = activation, clip = clip
        for t in 0..<T {
            let hPrev = f.training ? w.states + t * B * H : w.states
            let hNext = f.training ? w.states + (t + 1) * B * H : w.states
            let pre = w.pre + t * B * H
            let out = f.output + t * B * H
            recurrent.apply(hPrev, ldh: H, rows: B, into: pre, ldy: H, accumulate: true)
            for b in 0..<B {
                let o = out + b * H, hn = hNext + b * H
                if t < f.length(b) {
                    let p = pre + b * H
                    for j in 0..<H { let v = act(clip(p[j])); o[j] = v; hn[j] = v }
                } else {
                    o.update(repeating: 0, count: H)
                    if hn != hPrev + b * H { hn.update(from: hPrev + b * H, count: H) }
                }
            }
        }
        if let hN = f.finalState(0) {
            hN.update(from: f.training ? w.states + T * B * H : w.states, count: B * H)
        }
    }

    func backward(_ g: BackwardCall) {
        let (T, B, I, H) = (g.T, g.B, inputSize, hidden)
        let w = buffers(g)
        let whh = g.param(1)
        copyOrZero(g.gradFinalState(0), to: w.dh, count: B * H)
        let dpreAll = w.pre  // the pre-activations are no longer needed: reuse for dpre
        // dh_{t-1} = dpre_t W_hh: y = x·Wᵀ with W = W_hhᵀ, packed once for all steps.
        let back = RecurrentProduct(w: whh, n: H, k: H, B: B, scratch: w.packedT, transposed: true)
        let chunks = stepChunks(rows: B, macs: B * H * H)
        for t in stride(from: T - 1, through: 0, by: -1) {
            let hT = w.states + (t + 1) * B * H
            let dpre = dpreAll + t * B * H
            // Rows are independent within a step: each chunk does its rows' dpre and their share of
            // dh_{t-1} = dpre_t W_hh (samples frozen at t carry dh unchanged).
            func rows(_ span: Range<Int>) {
                for b in span {
                    let d = dpre + b * H
                    guard t < g.length(b) else { d.update(repeating: 0, count: H); continue }
                    let dh = w.dh + b * H, h = hT + b * H
                    let go = g.gradOutput.map { $0 + (t * B + b) * H }
                    if general {
                        // d holds the pre-activation (before clip) until it is overwritten here.
                        let act = activation, clip = clip
                        for j in 0..<H {
                            let up = dh[j] + (go?[j] ?? 0), x = d[j]
                            d[j] = up * act.derivative(clip(x)) * clip.derivative(x)
                        }
                        continue
                    }
                    for j in 0..<H {
                        let up = dh[j] + (go?[j] ?? 0)
                        // relu: torch's threshold_backward (h <= 0 ? 0 : up), so a NaN h passes its gradient.
                        d[j] = relu ? (h[j] <= 0 ? 0 : up) : up * (1 - h[j] * h[j])
                    }
                }
                back.apply(dpre + span.lowerBound * H, ldh: H, rows: span.count, into: w.tmp + span.lowerBound * H, ldy: H,
                           accumulate: false)
            }
            if chunks == 1 { rows(0..<B) } else { hostParallelFor(chunks) { rows(chunkRows($0, of: chunks, rows: B)) } }
            g.carryActiveRows(step: t, from: w.tmp, into: w.dh, width: H)
        }
        if let gh0 = g.gradInitialState(0) { gh0.update(from: w.dh, count: B * H) }
        // W_hh multiplies h_{t-1}: states [0, T) of the training layout.
        g.accumulateGateGradients(dGates: dpreAll, gates: H, inputSize: I, parameters: .pytorch(bias: hasBias),
                                  recurrent: [.all(dpreAll, gates: H, inputs: w.states, width: H)], scratch: w.tail)
    }
}

private nonisolated(unsafe) let plugin = makePlugin(name: "SeqCell built-in RNN", cells: [
    CellRegistration(
        id: cellID, version: (1, 2, 0),
        description: "Elman RNN, h' = act(W_ih x + b_ih + W_hh h + b_hh), as torch.nn.RNN and ONNX RNN",
        options: optionSpecs) { config in RNNKernel(config) },
])

@_cdecl("seqcell_plugin_entry")
public func seqcell_plugin_entry(_ major: UInt32, _ minor: UInt32, _ host: HostTable?, _ out: PluginSlot?,
                                 _ error: MessageBuffer?, _ capacity: Int) -> seqcell_status {
    pluginEntry(major, minor, host, out, error, capacity, plugin: plugin)
}

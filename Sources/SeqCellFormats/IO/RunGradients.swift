import Foundation
import SeqCellBase
import SeqCellHost
import SeqCellModel

/// Gradients of a loss with respect to what `seqcell run` writes, read from a file with
/// PyTorch's conventions: `grad_output` shaped like `output` ([T, B, O], or [B, T, O]
/// batch-first), and optionally `grad_h_n`, `grad_c_n`, … stacked like `h_n`, `c_n`
/// ([layers×directions, B, size]).
public struct RunGradientInputs: Sendable {
    /// Time-major [T, B, O].
    public var gradOutput: Tensor
    /// [layer][direction][state], nil = zero; empty when no final-state gradient is given.
    public var gradFinalStates: [[[Tensor?]]]

    public init(gradOutput: Tensor, gradFinalStates: [[[Tensor?]]] = []) {
        self.gradOutput = gradOutput
        self.gradFinalStates = gradFinalStates
    }

    /// Reads the gradients for a run whose output is `outputShape` (time-major [T, B, O]).
    public static func read(path: String, batchFirst: Bool, model: Model, outputShape: [Int]) throws -> RunGradientInputs {
        let file = try H5File(opening: path)
        let root = try file.root
        guard root.isDataset("grad_output") else {
            throw SeqCellError(.io, "'\(path)' has no dataset 'grad_output' (the gradient of the loss with respect to 'output'; members: \((try? root.memberNames())?.joined(separator: ", ") ?? "?"))")
        }
        guard outputShape.count == 3 else {
            throw SeqCellError(.shape, "the run's output must be [T, B, O], got \(outputShape)")
        }
        let ds = try root.dataset("grad_output")
        guard ds.elementKind.isFloatingPoint else {
            throw SeqCellError(.io, "'\(path)': grad_output must hold floating-point values, found \(ds.elementKind)")
        }
        var g = try Tensor.checked(shape: ds.shape, data: try ds.readFloats(), what: "'\(path)':/grad_output")
        let (T, B, O) = (outputShape[0], outputShape[1], outputShape[2])
        let expected = batchFirst ? [B, T, O] : [T, B, O]
        guard g.shape == expected else {
            throw SeqCellError(.shape, "'\(path)': grad_output must be shaped like output, \(expected)\(batchFirst ? " (batch-first)" : ""), got \(g.shape)")
        }
        if batchFirst { g = swapFirstTwoAxes(g) }
        var stacked: [String: Tensor] = [:]
        for name in commonStateNames(model) where root.isDataset("grad_\(name)_n") {
            let s = try root.dataset("grad_\(name)_n")
            guard s.elementKind.isFloatingPoint else {
                throw SeqCellError(.io, "'\(path)': grad_\(name)_n must hold floating-point values, found \(s.elementKind)")
            }
            stacked[name] = try Tensor.checked(shape: s.shape, data: try s.readFloats(), what: "'\(path)':/grad_\(name)_n")
        }
        let finals = stacked.isEmpty ? [] : try RunInputs.unstackStates(stacked, model: model, batch: B, path: path, suffix: "_n", prefix: "grad_")
        return RunGradientInputs(gradOutput: g, gradFinalStates: finals)
    }
}

/// The result of a forward and backward run.
public struct RunWithGradients {
    public var forward: Model.Output
    public var gradients: Model.Gradients
}

extension Model {
    /// Forward (with a tape) and backward in one go: gradients of
    /// `sum(output ⊙ gradOutput) + Σ sum(final state ⊙ its gradient)` with respect to the input,
    /// the initial states and every parameter — what `torch.autograd.grad` gives.
    public func runWithGradients(_ inputs: RunInputs, _ grads: RunGradientInputs) throws -> RunWithGradients {
        let fwd = try inputs.tokens.map { try forward(tokens: $0, lengths: inputs.lengths, initialStates: inputs.initialStates, training: true) }
            ?? forward(input: inputs.input, lengths: inputs.lengths, initialStates: inputs.initialStates, training: true)
        guard grads.gradOutput.shape == fwd.output.shape else {
            throw SeqCellError(.shape, "grad_output must be \(fwd.output.shape), got \(grads.gradOutput.shape)")
        }
        // Token ids have no gradient: a model with an embedding stage writes the table's instead.
        let g = try backward(fwd, gradOutput: grads.gradOutput, gradFinalStates: grads.gradFinalStates,
                             wantInputGradient: inputs.tokens == nil)
        return RunWithGradients(forward: fwd, gradients: g)
    }

    /// Parameter gradients paired with the checkpoint paths of `namedParameters`.
    public func namedGradients(_ g: Gradients) -> [(path: String, value: Tensor)] {
        parameterTree.entries.compactMap { e in ParameterTree.gradient(of: e, in: g).map { (e.path, $0) } }
    }
}

/// Writes, into an open run-output file, `grad_input` (in the file's layout), `grad_h0`,
/// `grad_c0`, … stacked as PyTorch does where the model allows, every initial-state gradient
/// under `grad_initial_states/layers/NN/<direction>/<state>`, and every parameter gradient
/// under `grad_params/<checkpoint parameter path>`.
public func writeRunGradients(_ g: Model.Gradients, model: Model, batchFirst: Bool, into root: H5Group) throws {
    guard g.initialStates.count == model.layers.count,
          zip(g.initialStates, model.layers).allSatisfy({ $0.count == $1.cells.count }) else {
        throw SeqCellError(.invalidArgument, "the gradients do not come from this model")
    }
    if let gi = g.input, gi.rank != 3 || Boundary.elementCount(gi.shape) != gi.count {
        throw SeqCellError(.shape, "the input gradient must be a consistent [T, B, I] tensor, got \(gi.shape)")
    }
    if let gi = g.input {
        let t = batchFirst ? swapFirstTwoAxes(gi) : gi
        try root.writeDataset("grad_input", shape: t.shape, floats: t.data)
    }
    for name in commonStateNames(model) {
        if let s = stackedStates(g.initialStates, model: model, state: name) {
            try root.writeDataset("grad_\(name)0", shape: s.shape, floats: s.data)
        }
    }
    let layersGroup = try root.createGroup("grad_initial_states").createGroup("layers")
    for (k, layer) in model.layers.enumerated() {
        let lg = try layersGroup.createGroup(CheckpointFormat.layerName(k, count: model.layers.count))
        for (d, dc) in layer.cells.enumerated() {
            let dg = try lg.createGroup(layer.directionName(d))
            for (st, t) in zip(dc.cell.states, g.initialStates[k][d]) {
                try dg.writeDataset(st.name, shape: t.shape, floats: t.data)
            }
        }
    }
    let params = try root.createGroup("grad_params")
    for (path, t) in model.namedGradients(g) {
        var parent = params
        let parts = path.split(separator: "/").map(String.init)
        for p in parts.dropLast() { parent = parent.contains(p) ? try parent.group(p) : try parent.createGroup(p) }
        if let leaf = parts.last { try parent.writeDataset(leaf, shape: t.shape, floats: t.data) }
    }
}

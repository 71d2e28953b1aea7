import SeqCellBase
import SeqCellHost

/// What a model imported from another framework remembers of its origin, so that `export`
/// gives the framework back what it gave: the PyTorch module's attribute names, and whether
/// a Keras model returned every step or only the last (docs/FORMAT.md, `/model/source/`).
/// Training and checkpoints carry it unchanged; models built in SeqCell have none.
public struct ModelSource: Sendable, Equatable {
    /// "pytorch" or "keras".
    public var framework: String
    /// PyTorch: the recurrent module's prefix in the state_dict, e.g. "encoder." ("" for a bare module).
    public var prefix: String?
    /// PyTorch: the name of the `nn.Linear` after it, e.g. "fc" (its tensors are fc.weight, fc.bias).
    public var headName: String?
    /// PyTorch: the name of the `nn.Embedding` before it, e.g. "emb" (its table is emb.weight).
    public var embeddingName: String?

    /// Longest name kept (a module path is a few dozen bytes).
    public static let maximumNameLength = 1024

    public init(framework: String, prefix: String? = nil, headName: String? = nil, embeddingName: String? = nil) {
        self.framework = framework
        self.prefix = prefix
        self.headName = headName
        self.embeddingName = embeddingName
    }
}

/// Which steps a model's output holds.
public enum OutputSteps: String, Sendable, CaseIterable {
    /// [T, B, O]: every step (SeqCell's, PyTorch's and Keras' return_sequences=True).
    case all
    /// [B, O]: each sample's last step; Keras' return_sequences=False on the last recurrent
    /// layer. For a bidirectional layer, the forward direction's state after the sample's
    /// last step merged with the backward direction's state after step 0 (what Keras returns).
    case last
}

extension Model {
    /// Each sample's last-step output, [B, outputSize], from a `forward` result: Keras'
    /// `return_sequences=False`. Per direction of the last layer, the output after that
    /// direction's last step — the forward direction's at step `lengths[b] − 1`, the backward
    /// direction's at step 0 — merged with the layer's merge mode, then through the head.
    /// For a forward-only model this is simply the output at step `lengths[b] − 1`.
    public func lastStepOutput(_ fwd: Output, lengths: [Int32]?) throws -> Tensor {
        let (merged, _) = try lastStepMerged(fwd, lengths: lengths)
        let y = try head.map { try $0.forward(merged) } ?? merged
        return Tensor(shape: [y.shape[1], y.shape[2]], data: y.data)
    }

    /// The last layer's last-step output before the head, [1, B, F], and each direction's
    /// part of it ([1, B, F_d], what the merge read).
    package func lastStepMerged(_ fwd: Output, lengths: [Int32]?) throws -> (merged: Tensor, directions: [Tensor]) {
        guard let last = layers.last, let lo = fwd.layerOutputs.last, lo.directionOutputs.count == last.cells.count,
              fwd.layerOutputs.count == layers.count else {
            throw SeqCellError(.invalidArgument, "this forward result comes from another model")
        }
        let first = lo.directionOutputs[0]
        guard first.rank == 3 else { throw SeqCellError(.shape, "layer output must be [T, B, F], got \(first.shape)") }
        let (T, B) = (first.shape[0], first.shape[1])
        let checked = try lengths.map { try SequenceLengths.checked($0, T: T, B: B) }
        var picked: [Tensor] = []
        for (d, out) in lo.directionOutputs.enumerated() {
            guard out.rank == 3, out.shape[0] == T, out.shape[1] == B else {
                throw SeqCellError(.shape, "direction outputs disagree: \(first.shape) and \(out.shape)")
            }
            let F = out.shape[2]
            let backward = last.directionName(d) == "backward"
            var rows = [Float](repeating: 0, count: B * F)
            for b in 0..<B {
                let t = backward ? 0 : Int(checked?[b] ?? Int32(T)) - 1
                let src = (t * B + b) * F
                rows.replaceSubrange(b * F..<(b + 1) * F, with: out.data[src..<(src + F)])
            }
            picked.append(Tensor(shape: [1, B, F], data: rows))
        }
        return (picked.count == 2 ? try last.merge(picked[0], picked[1]) : picked[0], picked)
    }

    /// Loss and gradients of a last-step model (`outputSteps == .last`) on its [B, O] output,
    /// Keras' value: the loss sees `lastStepOutput`, and its gradient reaches each direction of
    /// the last layer through that direction's final state h — for the built-in cells a
    /// direction's output at a step is its h, so the forward direction's output at the last
    /// step and the backward direction's at step 0 are their final h.
    public func lastStepLossAndGradients(_ fwd: Output, lengths: [Int32]?,
                                         loss: (_ output: Tensor, _ preActivation: Tensor?) throws -> LossValue) throws -> (LossValue, Gradients) {
        let (merged, parts) = try lastStepMerged(fwd, lengths: lengths)
        var y = merged, z: Tensor? = nil
        if let head { (y, z) = try head.forward(merged, keepingPreActivation: head.activation == .softmax) }
        let value = try loss(y, z)
        var g = value.gradOutput
        var headGrads: (weight: Tensor, bias: Tensor)? = nil
        if let head {
            let (dx, dW, db) = try head.backward(input: merged, output: y, gradOutput: g, gradIsPreActivation: value.gradientOfPreActivation)
            g = dx
            headGrads = (dW, db)
        }
        let last = layers[layers.count - 1]
        let split = try last.splitGradient(g, outputs: parts)
        var finalStates = [[[Tensor?]]](repeating: [], count: layers.count)
        finalStates[layers.count - 1] = try split.enumerated().map { d, gd in
            let cell = last.cells[d].cell
            guard let h = cell.states.first, h.size == gd.shape[2], cell.outputSize == h.size else {
                throw SeqCellError(.unsupported,
                    "a last-step model needs cells whose output is their first state; '\(cell.type.id)' outputs \(cell.outputSize) values")
            }
            return [Tensor(shape: [gd.shape[1], gd.shape[2]], data: gd.data)] + Array(repeating: nil, count: cell.states.count - 1)
        }
        var grads = try backward(fwd, gradOutput: nil, gradFinalStates: finalStates)
        grads.head = headGrads
        return (value, grads)
    }
}

extension Model {
    /// What a loss (or a metric) on `mode` steps reads of a forward result: for a last-step
    /// model with `.lastStep` targets, its last-step output as [1, B, O] (lengths then nil,
    /// they are taken into account) and, for a softmax head, that output's pre-activation;
    /// otherwise the output, the lengths and the head's pre-activation as they are.
    public func lossInput(_ out: Output, mode: TargetMode, lengths: [Int32]?) throws
        -> (output: Tensor, lengths: [Int32]?, preActivation: Tensor?)
    {
        guard outputSteps == .last, mode == .lastStep else { return (out.output, lengths, out.headPreActivation) }
        let merged = try lastStepMerged(out, lengths: lengths).merged
        var y = merged, z: Tensor? = nil
        if let head { (y, z) = try head.forward(merged, keepingPreActivation: head.activation == .softmax) }
        return (y, nil, z)
    }
}

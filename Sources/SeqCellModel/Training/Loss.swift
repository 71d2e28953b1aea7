#if canImport(Glibc)
import Glibc
#endif
import SeqCellBase
import SeqCellHost

/// Which outputs a loss looks at.
public enum TargetMode: String, Sendable, CaseIterable {
    /// Sequence to one: each sample's output at its last valid step (lengths respected).
    case lastStep = "last"
    /// Sequence to sequence: every valid step; padded steps are masked out.
    case allSteps = "all"
}

public enum LossKind: String, Sendable, CaseIterable {
    /// Mean squared error over every compared value (PyTorch's MSELoss, mean reduction).
    case mse
    /// Softmax cross-entropy over classes, on logits, averaged over compared items
    /// (PyTorch's CrossEntropyLoss). Targets are class indices stored as floats.
    /// On a model whose head ends in softmax the output already holds probabilities: the loss
    /// is −log p[target] (Keras' sparse/categorical crossentropy on probabilities), taken from
    /// the head's pre-activation, never a second softmax (see `computeLoss`).
    case crossEntropy = "cross_entropy"
}

/// A loss value and its gradient with respect to the model's output.
public struct LossValue: Sendable {
    public var value: Double
    /// [T, B, O], zero wherever the loss does not look: the gradient with respect to the
    /// model's output, or — when `gradientOfPreActivation` — to the head's pre-activation.
    public var gradOutput: Tensor
    /// true for cross_entropy on a softmax head: `gradOutput` is p − onehot (scaled), the
    /// gradient of the softmax's input, which `Model.backward(_:gradOutput:gradOutputIsPreActivation:)`
    /// takes as is (the stable form of going through 1/p and the softmax Jacobian).
    public var gradientOfPreActivation: Bool = false
    /// What the sum was divided by: the compared values (mse) or items (cross-entropy) of this
    /// batch, or the `normalizer` given.
    public var itemCount: Double = 0
}

/// Computes a loss on `output` [T, B, O].
/// - Parameters:
///   - targets: for `.lastStep` [B, O] (mse) or [B] (class ids); for `.allSteps`
///     [T, B, O] (mse) or [T, B] (class ids).
///   - outputActivation: the activation that produced `output` (the model's head's, `.linear`
///     without a head). With `.softmax`, cross_entropy reads `output` as probabilities: the
///     loss is −log p[target] (what Keras' crossentropy gives on probabilities, without its
///     1e-7 clipping) and the gradient is that of the head's pre-activation, p − onehot.
///   - preActivation: the head's input to that softmax, [T, B, O], when at hand
///     (`Model.Output.headPreActivation`): log p is then log_softmax of it, exact even where p
///     underflows. Without it, log p is taken of the probabilities (floored at the smallest
///     positive float).
///   - normalizer: divide the sum by this instead of this batch's own count: a rank's share of
///     a data-parallel batch divides by the global count, so that the ranks' summed gradients
///     equal one process's mean-loss gradient over the whole batch.
public func computeLoss(_ kind: LossKind, mode: TargetMode, output: Tensor, targets: Tensor, lengths: [Int32]?,
                        outputActivation: HeadActivation = .linear, preActivation: Tensor? = nil,
                        normalizer: Double? = nil) throws -> LossValue {
    guard output.rank == 3 else { throw SeqCellError(.shape, "loss: output must be [T, B, O], got \(output.shape)") }
    try Boundary.checkConsistent(output, "loss: output")
    try Boundary.checkConsistent(targets, "loss: targets")
    let (T, B, O) = (output.shape[0], output.shape[1], output.shape[2])
    guard T >= 1, B >= 1 else { throw SeqCellError(.shape, "loss: output \(output.shape) is empty") }
    let lengths = try lengths.map { try SequenceLengths.checked($0, T: T, B: B) }
    // The (t, b) positions compared.
    var positions: [(Int, Int)] = []
    for b in 0..<B {
        let len = lengths.map { Int($0[b]) } ?? T
        switch mode {
        case .lastStep: positions.append((len - 1, b))
        case .allSteps: for t in 0..<len { positions.append((t, b)) }
        }
    }
    func targetIndex(_ t: Int, _ b: Int) -> Int { mode == .lastStep ? b : t * B + b }
    let expectedShape: [Int]
    switch (kind, mode) {
    case (.mse, .lastStep): expectedShape = [B, O]
    case (.mse, .allSteps): expectedShape = [T, B, O]
    case (.crossEntropy, .lastStep): expectedShape = [B]
    case (.crossEntropy, .allSteps): expectedShape = [T, B]
    }
    guard targets.shape == expectedShape else {
        throw SeqCellError(.shape, "\(kind.rawValue) loss on \(mode.rawValue) steps needs targets \(expectedShape), got \(targets.shape)")
    }
    var grad = [Float](repeating: 0, count: output.count)
    var total = 0.0
    let probabilities = kind == .crossEntropy && outputActivation == .softmax
    if probabilities, let z = preActivation {
        guard z.shape == output.shape else {
            throw SeqCellError(.shape, "loss: the head's pre-activation is \(z.shape) but the output is \(output.shape)")
        }
        try Boundary.checkConsistent(z, "loss: pre-activation")
    }
    var count = 0.0
    switch kind {
    case .mse:
        let n = normalizer ?? Double(positions.count * O)
        count = n
        for (t, b) in positions {
            for j in 0..<O {
                let d = Double(output.data[(t * B + b) * O + j]) - Double(targets.data[targetIndex(t, b) * O + j])
                total += d * d
                grad[(t * B + b) * O + j] = Float(2 * d / n)
            }
        }
        total /= n
    case .crossEntropy:
        let n = normalizer ?? Double(positions.count)
        count = n
        for (t, b) in positions {
            // Int(exactly:) is nil for NaN, ±inf and fractions: no trap on a bad target.
            guard let cls = Int(exactly: targets.data[targetIndex(t, b)]), cls >= 0, cls < O else {
                throw SeqCellError(.invalidArgument, "class target \(targets.data[targetIndex(t, b)]) at step \(t), sample \(b) is not in 0..<\(O)")
            }
            let base = (t * B + b) * O
            // Logits: the output itself, or for a softmax head its pre-activation (the log of the
            // probabilities up to a constant per row), never a second softmax of probabilities.
            let logits: [Float]
            if probabilities {
                logits = preActivation.map { Array($0.data[base..<(base + O)]) }
                    ?? (0..<O).map { logf(max(output.data[base + $0], Float.leastNonzeroMagnitude)) }
            } else {
                logits = Array(output.data[base..<(base + O)])
            }
            var m = -Double.infinity
            for j in 0..<O { m = max(m, Double(logits[j])) }
            var sum = 0.0
            for j in 0..<O { sum += exp(Double(logits[j]) - m) }
            let logZ = m + log(sum)
            total += logZ - Double(logits[cls])
            for j in 0..<O {
                let p = exp(Double(logits[j]) - logZ)
                grad[base + j] = Float((p - (j == cls ? 1 : 0)) / n)
            }
        }
        total /= n
    }
    return LossValue(value: total, gradOutput: Tensor(shape: output.shape, data: grad), gradientOfPreActivation: probabilities,
                     itemCount: count)
}

#if canImport(Glibc)
import Glibc
#endif
import SeqCellBase
import SeqCellHost

/// The sums behind a task's metrics, over any number of batches; `values` are exact means
/// over every compared item however the batches were cut.
///
/// - regression (`mse` loss): `mse` and `mae`, means over every compared value (each
///   compared step's O outputs), as PyTorch's MSELoss/L1Loss with mean reduction.
/// - classification (`cross_entropy` loss): `cross_entropy` (mean negative log softmax of
///   the target class) and `accuracy` (the share of compared items whose largest score —
///   the first one on ties, as argmax — is the target class).
///
/// The compared items are those the loss compares: each sample's last valid step (target
/// `last`) or every valid step (target `all`).
public struct MetricSums: Sendable, Equatable {
    public let kind: LossKind
    /// mse: sum of squared errors; cross-entropy: sum of negative log-likelihoods.
    public var lossSum = 0.0
    /// mse: sum of absolute errors; cross-entropy: items classified right.
    public var secondSum = 0.0
    /// Values (mse) or items (cross-entropy) compared.
    public var count = 0

    public init(kind: LossKind) { self.kind = kind }

    /// The metric names for a loss, the loss's own first.
    public static func names(for kind: LossKind) -> [String] {
        kind == .mse ? ["mse", "mae"] : ["cross_entropy", "accuracy"]
    }

    /// Whether a larger value of `metric` is better.
    public static func higherIsBetter(_ metric: String) -> Bool { metric.hasSuffix("accuracy") }

    public mutating func add(_ other: MetricSums) {
        lossSum += other.lossSum
        secondSum += other.secondSum
        count += other.count
    }

    /// The loss (the mean `computeLoss` gives over the same items).
    public var loss: Double { count > 0 ? lossSum / Double(count) : .nan }

    /// (name, value) in `names(for:)` order.
    public var values: [(name: String, value: Double)] {
        let n = Double(count)
        let names = Self.names(for: kind)
        return count > 0 ? [(names[0], lossSum / n), (names[1], secondSum / n)] : [(names[0], .nan), (names[1], .nan)]
    }

    public func value(_ name: String) -> Double? {
        if name == "loss" { return loss }
        return values.first { $0.name == name }?.value
    }

    /// Measures `output` [T, B, O] against `targets` (the shapes `computeLoss` takes).
    /// `outputActivation` is the head's: with `.softmax` the output holds probabilities and
    /// cross_entropy is −log p[target], as `computeLoss` takes it (no second softmax).
    public static func measure(_ kind: LossKind, mode: TargetMode, output: Tensor, targets: Tensor,
                               lengths: [Int32]?, outputActivation: HeadActivation = .linear) throws -> MetricSums {
        // computeLoss checks every shape, length and class id these sums index by.
        _ = try computeLoss(kind, mode: mode, output: output, targets: targets, lengths: lengths, outputActivation: outputActivation)
        return measureChecked(kind, mode: mode, output: output, targets: targets, lengths: lengths, outputActivation: outputActivation)
    }

    /// `measure` for arguments `computeLoss` has accepted (as in a training step).
    static func measureChecked(_ kind: LossKind, mode: TargetMode, output: Tensor, targets: Tensor,
                               lengths: [Int32]?, outputActivation: HeadActivation = .linear) -> MetricSums {
        // A softmax head's output is probabilities: their logs are the logits (up to a constant).
        let probabilities = kind == .crossEntropy && outputActivation == .softmax
        func logit(_ i: Int) -> Double {
            probabilities ? Double(logf(max(output.data[i], Float.leastNonzeroMagnitude))) : Double(output.data[i])
        }
        let (T, B, O) = (output.shape[0], output.shape[1], output.shape[2])
        var sums = MetricSums(kind: kind)
        for b in 0..<B {
            let len = lengths.map { Int($0[b]) } ?? T
            let steps = mode == .lastStep ? [len - 1] : Array(0..<len)
            for t in steps {
                let base = (t * B + b) * O
                let target = mode == .lastStep ? b : t * B + b
                switch kind {
                case .mse:
                    for j in 0..<O {
                        let d = Double(output.data[base + j]) - Double(targets.data[target * O + j])
                        sums.lossSum += d * d
                        sums.secondSum += abs(d)
                    }
                    sums.count += O
                case .crossEntropy:
                    let cls = Int(targets.data[target])
                    var m = -Double.infinity
                    var best = 0
                    for j in 0..<O where logit(base + j) > m {
                        m = logit(base + j)
                        best = j
                    }
                    var s = 0.0
                    for j in 0..<O { s += exp(logit(base + j) - m) }
                    sums.lossSum += m + log(s) - logit(base + cls)
                    sums.secondSum += best == cls ? 1 : 0
                    sums.count += 1
                }
            }
        }
        return sums
    }

    /// The metrics of `model` on every sample of `data`, read in order `batchSize` samples at
    /// a time (no dropout).
    public static func evaluate(_ model: Model, on data: SequenceDataset, kind: LossKind, mode: TargetMode,
                                batchSize: Int) throws -> MetricSums {
        var sums = MetricSums(kind: kind)
        var start = 0
        while start < data.count {
            let batch = data.select(Array(start..<min(start + max(batchSize, 1), data.count)))
            let out = try model.forward(batch)
            let seen = try model.lossInput(out, mode: mode, lengths: batch.lengths)
            sums.add(try measure(kind, mode: mode, output: seen.output, targets: batch.targets, lengths: seen.lengths,
                                 outputActivation: model.head?.activation ?? .linear))
            start += max(batchSize, 1)
        }
        return sums
    }
}

import SeqCellBase
import SeqCellHost

/// Training data held in memory, read from an HDF5 file:
///   input    float [T, N, I]   (N samples, time-major like everything else)
///   targets  float [N, O] or [T, N, O] for mse; class ids [N] or [T, N] (integers of any
///            width, or integral floats) for cross-entropy
///   lengths  int   [N]        optional
/// Batches are drawn by (seed, step) alone, so a resumed run sees the same batches.
public struct SequenceDataset: Sendable {
    public var input: Tensor
    public var targets: Tensor
    public var lengths: [Int32]?
    /// Targets per step ([T, N, ...], for target mode `all`) rather than per sample ([N, ...]).
    public let perStepTargets: Bool
    /// Token ids [T, N] when the file's input holds integers (then `input` is [T, N, 0]).
    public var tokens: TokenIDs?

    public var count: Int { input.shape[1] }

    public init(input: Tensor, targets: Tensor, lengths: [Int32]?, perStepTargets: Bool) throws {
        try self.init(input: input, targets: targets, wideLengths: lengths.map { $0.map(Int64.init) },
                      perStepTargets: perStepTargets, source: nil)
    }

    /// The same, with lengths of any width (as read from an int64 dataset): each is checked
    /// against 1...T and reported with its exact value.
    public init(input: Tensor, targets: Tensor, lengths: [Int], perStepTargets: Bool) throws {
        try self.init(input: input, targets: targets, wideLengths: lengths.map(Int64.init),
                      perStepTargets: perStepTargets, source: nil)
    }

    /// Checks everything `select` and `batch` index by; `source` (a file) prefixes messages.
    package init(input: Tensor, targets: Tensor, wideLengths: [Int64]?, perStepTargets: Bool, source: String?) throws {
        let at = source.map { "'\($0)': " } ?? ""
        guard input.rank == 3, input.shape[0] >= 1, input.shape[1] >= 1 else {
            throw SeqCellError(.shape, "\(at)training input must be [T, N, I] with T, N >= 1, got \(input.shape)")
        }
        try Boundary.checkConsistent(input, "\(at)training input")
        try Boundary.checkConsistent(targets, "\(at)targets")
        let (T, N) = (input.shape[0], input.shape[1])
        let ok = perStepTargets ? targets.rank >= 2 && targets.shape[0] == T && targets.shape[1] == N
                                : targets.rank >= 1 && targets.shape[0] == N
        guard ok else {
            throw SeqCellError(.shape, "\(at)targets \(targets.shape) do not fit input \(input.shape): need "
                               + (perStepTargets ? "[T, N, ...] = [\(T), \(N), ...] for per-step targets" : "[N, ...] = [\(N), ...] for per-sample targets"))
        }
        self.input = input
        self.targets = targets
        self.lengths = try wideLengths.map { try SequenceLengths.checked($0, T: T, B: N, what: "\(at)lengths") }
        self.perStepTargets = perStepTargets
    }

    /// The samples at `indices`, as a data set.
    public func subset(_ indices: [Int]) throws -> SequenceDataset {
        let b = select(indices)
        var d = try SequenceDataset(input: b.input, targets: b.targets, lengths: b.lengths, perStepTargets: perStepTargets)
        d.tokens = b.tokens
        return d
    }

    /// Keras' `validation_split`: the first floor(N·(1 − fraction)) samples train, the rest
    /// (the last ones, before any shuffling) validate. Both parts must hold a sample.
    public func splitLast(fraction: Double) throws -> (train: SequenceDataset, validation: SequenceDataset) {
        let N = count
        let splitAt = Int((Double(N) * (1.0 - fraction)).rounded(.down))
        guard splitAt >= 1, splitAt < N else {
            throw SeqCellError(.invalidArgument, "--validation-split \(fraction) of \(N) samples leaves \(splitAt) to train and \(N - splitAt) to validate; both need at least 1")
        }
        return (try subset(Array(0..<splitAt)), try subset(Array(splitAt..<N)))
    }

    /// A batch of `size` samples chosen by (seed, step).
    public func batch(size: Int, seed: UInt64, step: Int) -> Batch {
        var rng = SplitMix64(seed: seed &+ UInt64(step) &* 0xD1B5_4A32_D192_ED03)
        let N = count
        let picks = size >= N ? Array(0..<N) : (0..<max(size, 1)).map { _ in Int(rng.next() % UInt64(N)) }
        return select(picks)
    }

    /// The samples at `indices`, in order.
    public func select(_ indices: [Int]) -> Batch {
        let (T, N, I) = (input.shape[0], input.shape[1], input.shape[2])
        let B = indices.count
        var x = [Float](repeating: 0, count: T * B * I)
        for t in 0..<T { for (j, n) in indices.enumerated() { for k in 0..<I { x[(t * B + j) * I + k] = input.data[(t * N + n) * I + k] } } }
        let y: Tensor
        if perStepTargets {
            let O = targets.count / (T * N)
            var d = [Float](repeating: 0, count: T * B * O)
            for t in 0..<T { for (j, n) in indices.enumerated() { for k in 0..<O { d[(t * B + j) * O + k] = targets.data[(t * N + n) * O + k] } } }
            y = Tensor(shape: [T, B] + targets.shape.dropFirst(2), data: d)
        } else {
            let O = targets.count / N
            var d = [Float](repeating: 0, count: B * O)
            for (j, n) in indices.enumerated() { for k in 0..<O { d[j * O + k] = targets.data[n * O + k] } }
            y = Tensor(shape: [B] + targets.shape.dropFirst(), data: d)
        }
        var batch = Batch(input: Tensor(shape: [T, B, I], data: x), lengths: lengths.map { l in indices.map { l[$0] } }, targets: y)
        batch.tokens = tokens?.selecting(indices)
        return batch
    }
}

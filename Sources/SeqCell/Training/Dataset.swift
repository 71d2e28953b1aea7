/// Training data held in memory, read from an HDF5 file:
///   input    float [T, N, I]   (N samples, time-major like everything else)
///   targets  float [N, O] or [T, N, O] for mse; class ids [N] or [T, N] for cross-entropy
///   lengths  int   [N]        optional
/// Batches are drawn by (seed, step) alone, so a resumed run sees the same batches.
public struct SequenceDataset: Sendable {
    public var input: Tensor
    public var targets: Tensor
    public var lengths: [Int32]?
    /// Targets per step ([T, N, ...], for target mode `all`) rather than per sample ([N, ...]).
    public let perStepTargets: Bool

    public var count: Int { input.shape[1] }

    public init(input: Tensor, targets: Tensor, lengths: [Int32]?, perStepTargets: Bool) throws {
        guard input.rank == 3, input.shape[1] >= 1 else {
            throw SeqCellError(.shape, "training input must be [T, N, I] with N >= 1, got \(input.shape)")
        }
        let (T, N) = (input.shape[0], input.shape[1])
        let ok = perStepTargets ? targets.rank >= 2 && targets.shape[0] == T && targets.shape[1] == N
                                : targets.rank >= 1 && targets.shape[0] == N
        guard ok else {
            throw SeqCellError(.shape, "targets \(targets.shape) do not fit input \(input.shape): need "
                               + (perStepTargets ? "[T, N, ...] = [\(T), \(N), ...] for per-step targets" : "[N, ...] = [\(N), ...] for per-sample targets"))
        }
        if let lengths {
            guard lengths.count == N else { throw SeqCellError(.shape, "\(lengths.count) lengths for \(N) samples") }
            if let (i, l) = lengths.enumerated().first(where: { $0.element < 1 || Int($0.element) > T }) {
                throw SeqCellError(.invalidArgument, "lengths[\(i)] = \(l) is outside 1...\(T)")
            }
        }
        self.input = input
        self.targets = targets
        self.lengths = lengths
        self.perStepTargets = perStepTargets
    }

    public static func read(path: String, perStepTargets: Bool) throws -> SequenceDataset {
        let root = try H5File(opening: path).root
        func floats(_ name: String) throws -> Tensor {
            guard root.isDataset(name) else {
                throw SeqCellError(.io, "'\(path)' has no dataset '\(name)' (training data needs input, targets and optionally lengths)")
            }
            let ds = try root.dataset(name)
            return Tensor(shape: ds.shape, data: try ds.readFloats())
        }
        let lengths = root.isDataset("lengths") ? try root.dataset("lengths").readInt32s() : nil
        return try SequenceDataset(input: try floats("input"), targets: try floats("targets"), lengths: lengths,
                                   perStepTargets: perStepTargets)
    }

    /// A batch of `size` samples chosen by (seed, step).
    public func batch(size: Int, seed: UInt64, step: Int) -> Batch {
        var rng = SplitMix64(seed: seed &+ UInt64(step) &* 0xD1B5_4A32_D192_ED03)
        let N = count
        let picks = size >= N ? Array(0..<N) : (0..<size).map { _ in Int(rng.next() % UInt64(N)) }
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
        return Batch(input: Tensor(shape: [T, B, I], data: x), lengths: lengths.map { l in indices.map { l[$0] } }, targets: y)
    }
}

import SeqCellBase
import SeqCellHost

/// Data-parallel training: how a global batch is split over the ranks of a `Communicator`,
/// and the fingerprints ranks compare to know they train the same thing.
public enum DataParallel {
    /// The samples of a global batch of `globalBatch` that rank `rank` of `size` computes:
    /// equal, disjoint, contiguous slices in rank order, so their union is the global batch.
    public static func shard(globalBatch: Int, rank: Int, size: Int) throws -> Range<Int> {
        guard size >= 1, rank >= 0, rank < size else {
            throw SeqCellError(.invalidArgument, "rank \(rank) is not in 0..<\(size)")
        }
        guard globalBatch >= size else {
            throw SeqCellError(.invalidArgument, "the global batch of \(globalBatch) samples is smaller than the \(size) ranks: every rank needs at least one sample")
        }
        guard globalBatch % size == 0 else {
            throw SeqCellError(.invalidArgument, "the global batch size \(globalBatch) is not divisible by the \(size) ranks; use a multiple of \(size) (e.g. \(globalBatch / size * size + size))")
        }
        let per = globalBatch / size
        return (rank * per)..<((rank + 1) * per)
    }

    /// The dropout seed of rank `rank` for a step whose single-process seed is `seed`: rank 0
    /// keeps it (one rank trains exactly as one process does); others get independent streams.
    public static func dropoutSeed(_ seed: UInt64, rank: Int) -> UInt64 {
        guard rank > 0 else { return seed }
        var g = SplitMix64(seed: seed ^ (UInt64(rank) &* 0xA076_1D64_78BD_642F))
        return g.next()
    }
}

extension Batch {
    /// The samples `range` of this batch (along B), with their lengths and targets.
    /// - Parameter perStepTargets: whether targets are [T, B, ...] rather than [B, ...].
    public func samples(_ range: Range<Int>, perStepTargets: Bool) -> Batch {
        let (T, B) = (input.shape[0], input.shape[1])
        let I = B > 0 ? input.count / (T * B) : 0
        let n = range.count
        var x = [Float](repeating: 0, count: T * n * I)
        for t in 0..<T {
            let src = (t * B + range.lowerBound) * I
            x.replaceSubrange((t * n * I)..<((t + 1) * n * I), with: input.data[src..<(src + n * I)])
        }
        let y: Tensor
        if perStepTargets {
            let O = B > 0 ? targets.count / (T * B) : 0
            var d = [Float](repeating: 0, count: T * n * O)
            for t in 0..<T {
                let src = (t * B + range.lowerBound) * O
                d.replaceSubrange((t * n * O)..<((t + 1) * n * O), with: targets.data[src..<(src + n * O)])
            }
            y = Tensor(shape: [T, n] + targets.shape.dropFirst(2), data: d)
        } else {
            let O = B > 0 ? targets.count / B : 0
            y = Tensor(shape: [n] + targets.shape.dropFirst(), data: Array(targets.data[(range.lowerBound * O)..<(range.upperBound * O)]))
        }
        return Batch(input: Tensor(shape: [T, n, I], data: x), lengths: lengths.map { Array($0[range]) }, targets: y)
    }
}

extension SequenceDataset {
    /// The global batch `batch(size:seed:step:)` would draw, as its sample indices.
    public func batchIndices(size: Int, seed: UInt64, step: Int) -> [Int] {
        var rng = SplitMix64(seed: seed &+ UInt64(step) &* 0xD1B5_4A32_D192_ED03)
        let N = count
        return size >= N ? Array(0..<N) : (0..<max(size, 1)).map { _ in Int(rng.next() % UInt64(N)) }
    }

    /// Rank `rank`'s share of the global batch of step `step`: only its samples are copied.
    public func batchShard(size: Int, seed: UInt64, step: Int, rank: Int, ranks: Int) throws -> Batch {
        let picks = batchIndices(size: size, seed: seed, step: step)
        return select(Array(picks[try DataParallel.shard(globalBatch: picks.count, rank: rank, size: ranks)]))
    }
}

/// A 64-bit digest (FNV-1a over 64-bit words, then a SplitMix64 finaliser) for comparing
/// what ranks hold; not cryptographic.
public struct Fingerprint: Sendable, Equatable {
    public private(set) var value: UInt64 = 0xCBF2_9CE4_8422_2325

    public init() {}

    public mutating func add(_ word: UInt64) {
        value = (value ^ word) &* 0x0000_0100_0000_01B3
        value ^= value >> 29
    }

    public mutating func add(_ text: String) {
        add(UInt64(text.utf8.count))
        for b in text.utf8 { add(UInt64(b)) }
    }

    public mutating func add(_ values: [Float]) {
        add(UInt64(values.count))
        values.withUnsafeBufferPointer { b in
            var i = 0
            while i + 1 < b.count {
                add(UInt64(b[i].bitPattern) | UInt64(b[i + 1].bitPattern) << 32)
                i += 2
            }
            if i < b.count { add(UInt64(b[i].bitPattern)) }
        }
    }

    public mutating func add(_ tensor: Tensor) {
        for d in tensor.shape { add(UInt64(d)) }
        add(tensor.data)
    }

    /// The finished digest.
    public var digest: UInt64 {
        var z = value &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

extension SequenceDataset {
    /// Digest of the samples, targets and lengths (not the file's path).
    public var fingerprint: UInt64 {
        var f = Fingerprint()
        f.add(input)
        f.add(targets)
        f.add(perStepTargets ? 1 : 0)
        if let lengths { for l in lengths { f.add(UInt64(UInt32(bitPattern: l))) } }
        if let tokens {
            for d in tokens.shape { f.add(UInt64(d)) }
            for id in tokens.ids { f.add(UInt64(UInt32(bitPattern: id))) }
        }
        return f.digest
    }
}

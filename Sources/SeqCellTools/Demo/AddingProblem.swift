import SeqCellBase
import SeqCellHost
import SeqCellModel
import SeqCellFormats

/// The adding problem (Hochreiter & Schmidhuber 1997): each step carries a random value in
/// [0, 1) and a marker; exactly two steps are marked, one in each half of the sequence, and
/// the target is the sum of the two marked values. Predicting the mean, 1, gives MSE ≈ 1/6.
/// Solving it needs information carried across up to T steps.
public struct AddingProblem: Sendable {
    public var seqLen: Int
    public var batchSize: Int

    public init(seqLen: Int, batchSize: Int) {
        self.seqLen = seqLen
        self.batchSize = batchSize
    }

    /// The MSE of always predicting 1: Var(a + b) = 2 · 1/12.
    public static let baselineMSE = 1.0 / 6.0

    /// A batch drawn from `rng`: input [T, B, 2] (value, marker), targets [B, 1]. T and B are
    /// `seqLen` and `batchSize`, at least 1 each.
    public func batch(rng: inout SplitMix64) -> Batch {
        let (T, B) = (max(seqLen, 1), max(batchSize, 1))
        var x = [Float](repeating: 0, count: T * B * 2)
        var y = [Float](repeating: 0, count: B)
        let half = max(T / 2, 1)
        for b in 0..<B {
            for t in 0..<T { x[(t * B + b) * 2] = rng.uniform(0, 1) }
            let first = Int(rng.next() % UInt64(half))
            let second = T > 1 ? half + Int(rng.next() % UInt64(T - half)) : 0
            x[(first * B + b) * 2 + 1] = 1
            x[(second * B + b) * 2 + 1] = 1
            y[b] = x[(first * B + b) * 2] + (second != first ? x[(second * B + b) * 2] : 0)
        }
        return Batch(input: Tensor(shape: [T, B, 2], data: x), targets: Tensor(shape: [B, 1], data: y))
    }

    /// The batch for a training step: depends only on (seed, step), so a resumed run sees the
    /// same data as an uninterrupted one.
    public func batch(seed: UInt64, step: Int) -> Batch {
        var rng = SplitMix64(seed: seed &+ UInt64(step) &* 0x9E37_79B9_7F4A_7C15)
        return batch(rng: &rng)
    }
}

// Checks made once at the model boundary (Model, RecurrentLayer, the run and training
// readers), before anything reverses, indexes or allocates from caller data. Every failure is
// a SeqCellError that names the tensor; nothing here traps on what the data holds.

/// Per-sample sequence lengths, checked against the input they go with.
public enum SequenceLengths {
    /// Checks `lengths` for a batch of `B` sequences of `T` steps: one value per sample, each
    /// in 1...T, reported with its exact value whatever its integer type (an int64 2^40 is
    /// "1099511627776", never clamped). Returns them as the Int32 the plugin ABI takes.
    /// - Parameter what: how messages name the lengths, e.g. "lengths" or "'x.h5': lengths".
    public static func checked<L: BinaryInteger>(_ lengths: [L], T: Int, B: Int, what: String = "lengths") throws -> [Int32] {
        guard lengths.count == B else {
            throw SeqCellError(.shape, "\(what) holds \(lengths.count) values for a batch of \(B)")
        }
        var out = [Int32](repeating: 0, count: lengths.count)
        for (b, l) in lengths.enumerated() {
            // Compared as integers of the value's own type widened to Int64 where it fits; a
            // value that does not fit in Int64 is out of range by definition.
            guard let wide = Int64(exactly: l), wide >= 1, wide <= Int64(T), let narrow = Int32(exactly: wide) else {
                throw SeqCellError(.invalidArgument,
                                   "\(what)[\(b)] = \(l) is outside 1...\(T) (the input has T = \(T) steps)")
            }
            out[b] = narrow
        }
        return out
    }
}

/// Element-count arithmetic that cannot trap.
package enum Boundary {
    /// The product of `shape`, or nil when a dimension is negative or the product overflows.
    package static func elementCount(_ shape: [Int]) -> Int? {
        var n = 1
        for d in shape {
            guard d >= 0 else { return nil }
            let (p, overflow) = n.multipliedReportingOverflow(by: d)
            guard !overflow else { return nil }
            n = p
        }
        return n
    }

    /// Checks that `t` holds exactly the elements its shape says (`Tensor.data` is settable,
    /// so a tensor can be made inconsistent after its checked initialiser ran). `what` is
    /// only built for the message (these checks run on every call).
    package static func checkConsistent(_ t: Tensor, _ what: @autoclosure () -> String) throws {
        guard let n = elementCount(t.shape), n == t.data.count else {
            throw SeqCellError(.shape, "\(what()): shape \(t.shape) does not hold its \(t.data.count) values")
        }
    }

    /// Checks that a gradient has exactly `shape` and holds its values.
    package static func checkGradient(_ g: Tensor, shape: [Int], _ what: @autoclosure () -> String) throws {
        guard g.shape == shape else { throw SeqCellError(.shape, "\(what()) must be \(shape), got \(g.shape)") }
        try checkConsistent(g, what())
    }

    /// Checks a time-major sequence tensor [T, B, width] with T, B >= 1; returns (T, B).
    package static func checkSequence(_ x: Tensor, width: Int, _ what: String, taker: String = "this layer") throws -> (T: Int, B: Int) {
        guard x.rank == 3 else { throw SeqCellError(.shape, "\(what) must be [T, B, \(width)], got shape \(x.shape)") }
        try checkConsistent(x, what)
        let (T, B) = (x.shape[0], x.shape[1])
        guard T >= 1 else { throw SeqCellError(.shape, "\(what) has \(T) time steps (shape \(x.shape)); T must be >= 1") }
        guard B >= 1 else { throw SeqCellError(.shape, "\(what) has a batch of \(B) (shape \(x.shape)); B must be >= 1") }
        guard x.shape[2] == width else {
            throw SeqCellError(.shape, "\(what) has \(x.shape[2]) features per step (shape \(x.shape)); \(taker) takes \(width)")
        }
        return (T, B)
    }
}

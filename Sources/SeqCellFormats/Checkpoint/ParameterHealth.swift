import SeqCellBase
import SeqCellHost
import SeqCellModel

/// How many values of a tensor are NaN or ±infinity.
public struct NonFiniteCount: Sendable, Equatable, CustomStringConvertible {
    public var nan: Int = 0
    public var infinite: Int = 0

    public init(nan: Int = 0, infinite: Int = 0) {
        self.nan = nan
        self.infinite = infinite
    }

    /// Counts the NaN and infinite values of `values`.
    public init<C: Collection>(of values: C) where C.Element == Float {
        for v in values where !v.isFinite {
            if v.isNaN { nan += 1 } else { infinite += 1 }
        }
    }

    public var total: Int { nan + infinite }

    public static func + (a: NonFiniteCount, b: NonFiniteCount) -> NonFiniteCount {
        NonFiniteCount(nan: a.nan + b.nan, infinite: a.infinite + b.infinite)
    }

    /// "0", or e.g. "3 (2 NaN, 1 inf)".
    public var description: String {
        total == 0 ? "0" : "\(total) (\(nan) NaN, \(infinite) inf)"
    }
}

extension Model {
    /// The non-finite values of every parameter, in `namedParameters` order.
    public var nonFiniteParameters: [(path: String, count: NonFiniteCount)] {
        namedParameters.map { ($0.path, NonFiniteCount(of: $0.value.data)) }
    }
}

/// Non-finite parameter values of a checkpoint, read straight from the file (no plugin
/// needed, as `seqcell inspect` works without one).
public enum ParameterHealth {
    /// One entry per parameter dataset under /model (layers/NN/<direction>/<name>, then
    /// head/weight and head/bias, then embedding/weight), in file order; `count` is nil for a dataset that does not
    /// hold floating-point values (the checkpoint reader refuses those anyway).
    public static func nonFiniteCounts(checkpoint path: String) throws -> [(path: String, count: NonFiniteCount?)] {
        let file = try H5File(opening: path)
        let model = try file.root.group("model")
        var out: [(String, NonFiniteCount?)] = []
        func add(_ group: H5Group, _ name: String, _ prefix: String) throws {
            let ds = try group.dataset(name)
            guard ds.elementKind.isFloatingPoint else { out.append((prefix + name, nil)); return }
            out.append((prefix + name, NonFiniteCount(of: try ds.readFloats())))
        }
        if model.isGroup("layers") {
            let layers = try model.group("layers")
            for l in try layers.memberNames() where layers.isGroup(l) {
                let lg = try layers.group(l)
                for d in ["forward", "backward"] where lg.isGroup(d) {
                    let dg = try lg.group(d)
                    for name in try dg.memberNames() where dg.isDataset(name) {
                        try add(dg, name, "layers/\(l)/\(d)/")
                    }
                }
            }
        }
        if model.isGroup("head") {
            let head = try model.group("head")
            for name in ["weight", "bias"] where head.isDataset(name) { try add(head, name, "head/") }
        }
        if model.isGroup("embedding") {
            let embedding = try model.group("embedding")
            if embedding.isDataset("weight") { try add(embedding, "weight", "embedding/") }
        }
        return out
    }
}

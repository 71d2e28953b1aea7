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

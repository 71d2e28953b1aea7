import Foundation
import SeqCellBase
import SeqCellHost
import SeqCellModel
import SeqCellFormats

/// Round axis ticks, chosen as matplotlib's `MaxNLocator(nbins, steps=[1, 2, 5, 10])` chooses
/// them: the tick spacing is the smallest of 1, 2, 5 × 10^k that is at least the range divided
/// by `maxIntervals` (a smaller one if that leaves fewer than two ticks inside the range), and the
/// ticks are the multiples of that spacing from the last one at or below the range's start to
/// the first one at or above its end.
public struct AxisTicks: Equatable, Sendable {
    /// The spacing between ticks.
    public var step: Double
    /// The multiples of `step`, covering the range.
    public var values: [Double]

    public init(step: Double, values: [Double]) {
        self.step = step
        self.values = values
    }

    /// Ticks for `lo...hi`. An empty range (lo == hi) gets a unit-wide range around it.
    public static func linear(_ lo: Double, _ hi: Double, maxIntervals: Int = 5) -> AxisTicks {
        var (lo, hi) = (min(lo, hi), max(lo, hi))
        guard lo.isFinite, hi.isFinite else { return AxisTicks(step: 1, values: [0, 1]) }
        if hi - lo <= max(abs(lo), abs(hi)) * 1e-12 {
            let pad = lo == 0 ? 1 : abs(lo) * 0.05
            lo -= pad
            hi += pad
        }
        let raw = (hi - lo) / Double(max(1, maxIntervals))
        let magnitude = pow(10, (log10(raw)).rounded(.down))
        var candidates = [Double]()
        for decade in [magnitude / 10, magnitude, magnitude * 10] {
            for m in [1.0, 2, 5] { candidates.append(m * decade) }
        }
        // The smallest candidate at least `raw` (with a tolerance for rounding), then smaller
        // ones until two ticks fall inside the range.
        let tolerance = 1e-10
        guard var index = candidates.firstIndex(where: { $0 >= raw * (1 - tolerance) }) else {
            return AxisTicks(step: raw, values: [lo, hi])
        }
        while true {
            let step = candidates[index]
            let first = (lo / step + tolerance).rounded(.down)
            let last = (hi / step - tolerance).rounded(.up)
            let values = stride(from: first, through: last, by: 1).map { clean($0 * step, step: step) }
            let inside = values.filter { $0 >= lo - step * tolerance && $0 <= hi + step * tolerance }.count
            if inside >= 2 || index == 0 { return AxisTicks(step: step, values: values) }
            index -= 1
        }
    }

    /// Decade ticks for a log axis spanning 10^lo … 10^hi (whole exponents): every decade, or every
    /// 2nd, 5th, 10th… when there are more than `maxIntervals`. Returns the exponents.
    public static func decades(_ lo: Int, _ hi: Int, maxIntervals: Int = 5) -> [Int] {
        let (lo, hi) = (min(lo, hi), max(lo, hi))
        var step = 1
        var multipliers = [2, 5]
        var decade = 1
        while (hi - lo) > step * max(1, maxIntervals) {
            if multipliers.isEmpty {
                decade *= 10
                multipliers = [1, 2, 5]
            }
            step = multipliers.removeFirst() * decade
        }
        let first = Int((Double(lo) / Double(step)).rounded(.up)) * step
        return Array(stride(from: first, through: hi, by: step))
    }

    /// `k × step` without the binary rounding noise of the product (0.30000000000000004 → 0.3).
    static func clean(_ value: Double, step: Double) -> Double {
        let digits = max(0, -Int(log10(step).rounded(.down)))
        guard digits > 0, digits < 16 else { return value == 0 ? 0 : value }
        let scale = pow(10, Double(digits))
        let v = (value * scale).rounded() / scale
        return v == 0 ? 0 : v
    }

    /// Tick labels: as many decimals as the step needs (0.2 → `0.4`, 0.05 → `0.15`, 500 → `1500`);
    /// exponent notation beyond 1e6 or below 1e-4.
    public func label(_ value: Double) -> String {
        if value == 0 { return "0" }
        if step >= 1e6 || step < 1e-4 { return String(format: "%g", value) }
        let digits = max(0, -Int(log10(step).rounded(.down)))
        return String(format: "%.\(digits)f", value)
    }
}

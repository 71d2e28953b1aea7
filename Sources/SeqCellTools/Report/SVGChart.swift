import SeqCellBase
import SeqCellHost
import SeqCellModel
import SeqCellFormats

/// A small line-chart writer: enough to draw loss curves and per-step gradient norms as an
/// SVG a person can open in any browser, with no plotting dependency.
public struct SVGChart: Sendable {
    public struct Series: Sendable {
        public var name: String
        public var points: [(x: Double, y: Double)]
        public var color: String
        public init(name: String, points: [(x: Double, y: Double)], color: String) {
            self.name = name
            self.points = points
            self.color = color
        }
    }

    public struct Panel: Sendable {
        public var title: String
        public var xLabel: String
        public var yLabel: String
        public var logY: Bool
        public var series: [Series]
        /// Horizontal reference lines (value, label).
        public var references: [(y: Double, label: String)]
        public init(title: String, xLabel: String, yLabel: String, logY: Bool, series: [Series],
                    references: [(y: Double, label: String)] = []) {
            self.title = title
            self.xLabel = xLabel
            self.yLabel = yLabel
            self.logY = logY
            self.series = series
            self.references = references
        }
    }

    public var title: String
    public var panels: [Panel]

    public init(title: String, panels: [Panel]) {
        self.title = title
        self.panels = panels
    }

    public static let palette = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]

    public func render(width: Int = 720, panelHeight: Int = 300) -> String {
        let height = 40 + panels.count * (panelHeight + 40)
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(width)\" height=\"\(height)\" font-family=\"sans-serif\" font-size=\"12\">\n"
        s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        s += "<text x=\"\(width / 2)\" y=\"24\" text-anchor=\"middle\" font-size=\"16\">\(escape(title))</text>\n"
        for (i, panel) in panels.enumerated() {
            s += render(panel, x0: 70, y0: 50 + i * (panelHeight + 40), w: width - 100, h: panelHeight - 40)
        }
        return s + "</svg>\n"
    }

    func render(_ p: Panel, x0: Int, y0: Int, w: Int, h: Int) -> String {
        let all = p.series.flatMap(\.points).filter { $0.y.isFinite && (!p.logY || $0.y > 0) }
        let refs = p.references.map(\.y).filter { !p.logY || $0 > 0 }
        guard !all.isEmpty else { return "" }
        let tf: (Double) -> Double = p.logY ? { log10($0) } : { $0 }
        let xs = all.map(\.x), ys = all.map { tf($0.y) } + refs.map(tf)
        var (xmin, xmax) = (xs.min()!, xs.max()!)
        if xmax - xmin < 1e-9 { xmin -= 1; xmax += 1 }
        var (ymin, ymax) = (ys.min()!, ys.max()!)
        // Round ticks (1, 2, 5 × 10^k apart); a linear y axis spans whole ticks, a log one whole decades.
        let yTicks: [(value: Double, label: String)]
        if p.logY {
            ymin = ymin.rounded(.down)
            ymax = max(ymax.rounded(.up), ymin + 1)
            yTicks = AxisTicks.decades(Int(ymin), Int(ymax), maxIntervals: 6).map { (Double($0), decadeLabel($0)) }
        } else {
            let t = AxisTicks.linear(ymin, ymax, maxIntervals: 5)
            (ymin, ymax) = (t.values.first!, t.values.last!)
            yTicks = t.values.map { ($0, t.label($0)) }
        }
        let xt = AxisTicks.linear(xmin, xmax, maxIntervals: 8)
        let xTicks = xt.values.filter { $0 >= xmin - xt.step * 1e-9 && $0 <= xmax + xt.step * 1e-9 }
        func px(_ x: Double) -> Double { Double(x0) + (x - xmin) / (xmax - xmin) * Double(w) }
        func py(_ y: Double) -> Double { Double(y0 + h) - (tf(y) - ymin) / (ymax - ymin) * Double(h) }
        var s = "<g>\n<text x=\"\(x0 + w / 2)\" y=\"\(y0 - 6)\" text-anchor=\"middle\" font-size=\"13\">\(escape(p.title))</text>\n"
        s += "<rect x=\"\(x0)\" y=\"\(y0)\" width=\"\(w)\" height=\"\(h)\" fill=\"none\" stroke=\"#888\"/>\n"
        for (t, label) in yTicks {
            let y = Double(y0 + h) - (t - ymin) / (ymax - ymin) * Double(h)
            s += "<line x1=\"\(x0)\" x2=\"\(x0 + w)\" y1=\"\(f(y))\" y2=\"\(f(y))\" stroke=\"#eee\"/>"
            s += "<text x=\"\(x0 - 4)\" y=\"\(f(y + 4))\" text-anchor=\"end\">\(label)</text>\n"
        }
        for x in xTicks {
            s += "<line x1=\"\(f(px(x)))\" x2=\"\(f(px(x)))\" y1=\"\(y0)\" y2=\"\(y0 + h)\" stroke=\"#eee\"/>"
            s += "<text x=\"\(f(px(x)))\" y=\"\(y0 + h + 14)\" text-anchor=\"middle\">\(xt.label(x))</text>\n"
        }
        s += "<text x=\"\(x0 + w / 2)\" y=\"\(y0 + h + 30)\" text-anchor=\"middle\">\(escape(p.xLabel))</text>\n"
        s += "<text x=\"\(x0 - 50)\" y=\"\(y0 + h / 2)\" text-anchor=\"middle\" transform=\"rotate(-90 \(x0 - 50) \(y0 + h / 2))\">\(escape(p.yLabel))</text>\n"
        for (y, label) in p.references where !p.logY || y > 0 {
            s += "<line x1=\"\(x0)\" x2=\"\(x0 + w)\" y1=\"\(f(py(y)))\" y2=\"\(f(py(y)))\" stroke=\"#555\" stroke-dasharray=\"4 3\"/>"
            s += "<text x=\"\(x0 + w - 4)\" y=\"\(f(py(y) - 4))\" text-anchor=\"end\" fill=\"#555\">\(escape(label))</text>\n"
        }
        for (i, series) in p.series.enumerated() {
            let pts = series.points.filter { $0.y.isFinite && (!p.logY || $0.y > 0) }
                .map { "\(f(px($0.x))),\(f(py($0.y)))" }.joined(separator: " ")
            s += "<polyline fill=\"none\" stroke=\"\(series.color)\" stroke-width=\"1.5\" points=\"\(pts)\"/>\n"
            s += "<rect x=\"\(x0 + 10)\" y=\"\(y0 + 10 + i * 16)\" width=\"12\" height=\"3\" fill=\"\(series.color)\"/>"
            s += "<text x=\"\(x0 + 28)\" y=\"\(y0 + 15 + i * 16)\">\(escape(series.name))</text>\n"
        }
        return s + "</g>\n"
    }

    /// 10^k as a tick label: `0.001` … `1000`, `1e-4` and `1e4` beyond.
    func decadeLabel(_ k: Int) -> String {
        guard abs(k) <= 3 else { return "1e\(k)" }
        return k >= 0 ? "1" + String(repeating: "0", count: k) : "0." + String(repeating: "0", count: -k - 1) + "1"
    }

    func f(_ v: Double) -> String { String(Double(Int((v * 10).rounded())) / 10) }

    func escape(_ t: String) -> String {
        t.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;")
    }
}

#if canImport(Glibc)
import Glibc
#endif
import Foundation

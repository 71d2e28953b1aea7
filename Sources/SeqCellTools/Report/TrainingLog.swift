import Foundation
import Glibc
import SeqCellBase
import SeqCellHost
import SeqCellModel
import SeqCellFormats

/// The logs of a training run, written as it goes:
///
/// - a CSV of every logged step (`step,elapsed_s,<scalar names>…`), the header and any rows
///   carried over from the run this one resumes written atomically before the first step, then
///   one row appended (one `write()`) per logged step, so a crash keeps every row logged so far;
///   the file is synced when the run finishes. A scalar name first seen after the header was
///   written adds a column: the file is then rewritten atomically with the new header, earlier
///   rows having that column empty;
/// - TensorBoard event files in a log folder (`events.out.tfevents.<seconds>.<host>`): each
///   logged step's scalars as `simple_value`s and an optional histogram, appended as they come;
/// - a loss-curve SVG, written atomically by `finish()`.
///
/// Resuming continues the CSV of the run resumed: its rows up to the resumed step are kept
/// (rows logged after that checkpoint was saved are dropped, as the steps are run again), and
/// `elapsed_s` continues from the last kept row. The event file starts with `SessionLog START`
/// at the first new step, so TensorBoard drops such orphaned steps of earlier files in the folder.
public final class TrainingLogger {
    /// One logged step. `elapsed` is seconds of training since the first run of the log.
    public struct Row: Sendable, Equatable {
        public var step: Int
        public var elapsed: Double
        public var values: [String: Double]
        public init(step: Int, elapsed: Double, values: [String: Double]) {
            self.step = step
            self.elapsed = elapsed
            self.values = values
        }
    }

    /// The scalar columns, in the order they were first logged.
    public private(set) var columns: [String] = []
    /// Every row of the log: those carried over, then this run's.
    public private(set) var rows: [Row] = []
    /// The number of rows carried over from the log of the run resumed.
    public let continuedRows: Int
    /// The CSV the rows came from when resuming, if there was one.
    public let continuedFrom: String?
    public let csvPath: String?
    public let svgPath: String?
    /// The event file, when logging for TensorBoard.
    public var eventFilePath: String? { events?.path }
    /// Seconds of training before this run (the last carried-over row's elapsed time).
    public let elapsedOffset: Double

    let title: String
    private var csvDescriptor: Int32 = -1
    private var events: TensorBoardEventFile?
    private var finished = false

    /// Opens the logs, before the first step, so that an unwritable path fails before any work.
    ///
    /// - Parameters:
    ///   - csv: the CSV to write, or nil.
    ///   - svg: the loss-curve SVG to write at `finish()`, or nil.
    ///   - eventDirectory: the TensorBoard log folder (created if missing), or nil.
    ///   - title: the SVG's title.
    ///   - previousCSV: the CSV of the run being resumed; a missing file starts a new log.
    ///   - resumedStep: the step the run starts from (0 for a new run): carried-over rows after
    ///     it are dropped.
    public init(csv: String?, svg: String?, eventDirectory: String?, title: String,
                continuing previousCSV: String? = nil, resumedStep: Int = 0) throws {
        csvPath = csv
        svgPath = svg
        self.title = title
        if let previousCSV, FileManager.default.fileExists(atPath: previousCSV) {
            let previous = try Self.readCSV(previousCSV)
            columns = previous.columns
            rows = previous.rows.filter { $0.step <= resumedStep }
            continuedFrom = previousCSV
        } else {
            continuedFrom = nil
        }
        continuedRows = rows.count
        elapsedOffset = rows.last?.elapsed ?? 0
        // The log folder first: a bad --logdir then fails before any file is written.
        if let eventDirectory { try TensorBoardEventFile.createDirectories(eventDirectory) }
        if csvPath != nil { try rewriteCSV() }
        if let eventDirectory {
            let now = Date().timeIntervalSince1970
            let file = try TensorBoardEventFile(directory: eventDirectory, wallTime: now)
            events = file
            try file.write(TensorBoardEventFile.sessionStart(step: resumedStep + 1, wallTime: now))
        }
    }

    deinit {
        if csvDescriptor >= 0 { _ = Glibc.close(csvDescriptor) }
    }

    /// The path beside a checkpoint: its name without the extension, then `.suffix`
    /// (`out/model.h5` → `out/model.log.csv`).
    public static func companionPath(of checkpoint: String, _ suffix: String) -> String {
        let folder = (checkpoint as NSString).deletingLastPathComponent
        var name = (checkpoint as NSString).lastPathComponent
        if let dot = name.lastIndex(of: "."), dot != name.startIndex { name = String(name[..<dot]) }
        let file = name + "." + suffix
        return folder.isEmpty ? file : (folder as NSString).appendingPathComponent(file)
    }

    /// Logs one step: a CSV row and a TensorBoard summary of `scalars` (in this order), and the
    /// histogram of `histogram.values` under its name, if given.
    ///
    /// - Parameters:
    ///   - elapsed: seconds since this run started; the logs add the time of earlier runs.
    public func record(step: Int, elapsed: Double, scalars: [(String, Double)],
                       histogram: (name: String, values: [Double])? = nil) throws {
        guard !finished else { throw SeqCellError(.invalidArgument, "the training log was already finished") }
        var values = [String: Double]()
        var newColumn = false
        for (name, value) in scalars {
            guard name != "step", name != "elapsed_s", !name.isEmpty, !name.contains(where: \.isNewline) else {
                throw SeqCellError(.invalidArgument, "a logged scalar cannot be named '\(name)'")
            }
            if !columns.contains(name) {
                columns.append(name)
                newColumn = true
            }
            values[name] = value
        }
        let row = Row(step: step, elapsed: elapsedOffset + elapsed, values: values)
        rows.append(row)
        if csvPath != nil {
            if newColumn || csvDescriptor < 0 {
                try rewriteCSV()
            } else {
                try appendCSV(line(row))
            }
        }
        if let events {
            let now = Date().timeIntervalSince1970
            try events.write(TensorBoardEventFile.scalars(scalars, step: step, wallTime: now))
            if let histogram, !histogram.values.isEmpty {
                try events.write(TensorBoardEventFile.histogram(histogram.name, histogram.values, step: step, wallTime: now))
            }
        }
    }

    /// Syncs and closes the CSV and the event file, and writes the SVG. Later calls do nothing.
    public func finish() throws {
        guard !finished else { return }
        finished = true
        if csvDescriptor >= 0, let csvPath {
            var failure: Int32 = fsync(csvDescriptor) == 0 ? 0 : errno
            if Glibc.close(csvDescriptor) != 0, failure == 0 { failure = errno }
            csvDescriptor = -1
            if failure != 0 { throw SeqCellError(.io, "cannot write '\(csvPath)': \(AtomicTarget.describe(errno: failure))") }
        }
        try events?.close()
        if let svgPath, !rows.isEmpty {
            try writeBytesAtomically(Data(chart().render().utf8), to: svgPath)
        }
    }

    // MARK: - CSV

    static func field(_ text: String) -> String {
        guard text.contains(where: { $0 == "," || $0 == "\"" }) else { return text }
        return "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    /// A number as the CSV holds it: the shortest text that reads back as the same Double;
    /// `nan`, `inf`, `-inf` for the non-finite (as pandas and numpy read them).
    static func number(_ v: Double) -> String {
        if v.isNaN { return "nan" }
        if v.isInfinite { return v > 0 ? "inf" : "-inf" }
        return "\(v)"
    }

    var header: String {
        (["step", "elapsed_s"] + columns).map(Self.field).joined(separator: ",") + "\n"
    }

    func line(_ row: Row) -> String {
        ([String(row.step), String(format: "%.3f", row.elapsed)] + columns.map { row.values[$0].map(Self.number) ?? "" })
            .joined(separator: ",") + "\n"
    }

    /// Replaces the CSV atomically with the header and every row, and reopens it for appending.
    private func rewriteCSV() throws {
        guard let csvPath else { return }
        if csvDescriptor >= 0 {
            _ = Glibc.close(csvDescriptor)
            csvDescriptor = -1
        }
        try writeBytesAtomically(Data((header + rows.map(line).joined()).utf8), to: csvPath)
        let fd = open(csvPath, O_WRONLY | O_APPEND | O_CLOEXEC)
        guard fd >= 0 else { throw SeqCellError(.io, "cannot write '\(csvPath)': \(AtomicTarget.describe(errno: errno))") }
        csvDescriptor = fd
    }

    private func appendCSV(_ text: String) throws {
        guard let csvPath else { return }
        let bytes = Array(text.utf8)
        let failure = bytes.withUnsafeBytes { writeAll($0, to: csvDescriptor) }
        if failure != 0 { throw SeqCellError(.io, "cannot write '\(csvPath)': \(AtomicTarget.describe(errno: failure))") }
    }

    /// The largest CSV read back when resuming.
    static let csvByteLimit = 64 << 20

    /// Reads a CSV this logger wrote. A last line without its newline (a row torn by a crash)
    /// is left out; anything else unexpected is an error naming the file and the line.
    static func readCSV(_ path: String) throws -> (columns: [String], rows: [Row]) {
        func failure(_ what: String) -> SeqCellError {
            SeqCellError(.io, "cannot continue the training log '\(path)': \(what) (move it away to start a new log)")
        }
        let attributes = try? FileManager.default.attributesOfItem(atPath: path)
        if let size = attributes?[.size] as? Int, size > csvByteLimit {
            throw failure("larger than \(csvByteLimit >> 20) MiB")
        }
        guard let data = FileManager.default.contents(atPath: path) else { throw failure("cannot read it") }
        guard let text = String(data: data, encoding: .utf8) else { throw failure("not UTF-8 text") }
        var lines = text.components(separatedBy: "\n")
        lines.removeLast()  // after the last newline: empty, or a torn row
        guard let first = lines.first else { throw failure("no header line") }
        let header = try splitFields(first).get(or: failure("line 1: an unterminated quote"))
        guard header.count >= 2, header[0] == "step", header[1] == "elapsed_s" else {
            throw failure("line 1: expected a header starting 'step,elapsed_s'")
        }
        let columns = Array(header.dropFirst(2))
        var rows = [Row]()
        for (i, text) in lines.enumerated().dropFirst() {
            let fields = try splitFields(text).get(or: failure("line \(i + 1): an unterminated quote"))
            guard fields.count == header.count else {
                throw failure("line \(i + 1): \(fields.count) fields, the header has \(header.count)")
            }
            guard let step = Int(fields[0]), let elapsed = Double(fields[1]) else {
                throw failure("line \(i + 1): the step and elapsed time must be numbers")
            }
            var values = [String: Double]()
            for (name, field) in zip(columns, fields.dropFirst(2)) where !field.isEmpty {
                guard let v = Double(field) else { throw failure("line \(i + 1): '\(field)' in column \(name) is not a number") }
                values[name] = v
            }
            rows.append(Row(step: step, elapsed: elapsed, values: values))
        }
        return (columns, rows)
    }

    /// The fields of one CSV line (RFC 4180 quoting); nil when a quote is not closed.
    static func splitFields(_ line: String) -> [String]? {
        var fields = [String]()
        var current = ""
        var quoted = false
        var chars = line.makeIterator()
        var pendingQuote = false
        while let c = chars.next() {
            if quoted {
                if pendingQuote {
                    pendingQuote = false
                    if c == "\"" { current.append("\""); continue }
                    quoted = false
                } else if c == "\"" {
                    pendingQuote = true
                    continue
                } else {
                    current.append(c)
                    continue
                }
            }
            if c == "," {
                fields.append(current)
                current = ""
            } else if c == "\"", current.isEmpty {
                quoted = true
            } else {
                current.append(c)
            }
        }
        if pendingQuote { quoted = false }
        if quoted { return nil }
        fields.append(current)
        return fields
    }

    // MARK: - SVG

    /// Scalars drawn in the gradient panel; everything else that is not a loss goes in the
    /// metrics panel.
    static let nonMetrics: Set<String> = ["lr", "grad_norm", "clipped_fraction"]

    /// Points per series in the chart: longer logs are drawn from every k-th row (and the last).
    static let chartPointLimit = 2000

    /// The chart `finish()` writes: the losses (every scalar whose name contains "loss"), the
    /// other metrics if any, and the gradient norm before clipping, against the step.
    public func chart() -> SVGChart {
        let stride = (rows.count + Self.chartPointLimit - 1) / Self.chartPointLimit
        let drawn = rows.enumerated().filter { $0.offset % Swift.max(1, stride) == 0 || $0.offset == rows.count - 1 }.map(\.element)
        func series(_ names: [String]) -> [SVGChart.Series] {
            names.enumerated().map { i, name in
                SVGChart.Series(name: name, points: drawn.compactMap { r in r.values[name].map { (Double(r.step), $0) } },
                                color: SVGChart.palette[i % SVGChart.palette.count])
            }
        }
        func logScale(_ names: [String]) -> Bool {
            let v = names.flatMap { n in rows.compactMap { $0.values[n] } }.filter(\.isFinite)
            guard let lo = v.min(), let hi = v.max(), lo > 0 else { return false }
            return hi / lo >= 10
        }
        let losses = columns.filter { $0.contains("loss") }
        let metrics = columns.filter { !$0.contains("loss") && !Self.nonMetrics.contains($0) }
        var panels = [SVGChart.Panel]()
        if !losses.isEmpty {
            panels.append(SVGChart.Panel(title: "loss (mean over each logged interval)", xLabel: "step", yLabel: "loss",
                                         logY: logScale(losses), series: series(losses)))
        }
        if !metrics.isEmpty {
            panels.append(SVGChart.Panel(title: "metrics", xLabel: "step", yLabel: "value", logY: logScale(metrics),
                                         series: series(metrics)))
        }
        if columns.contains("grad_norm") {
            panels.append(SVGChart.Panel(title: "gradient norm before clipping (last step of each interval)",
                                         xLabel: "step", yLabel: "‖g‖", logY: logScale(["grad_norm"]),
                                         series: series(["grad_norm"])))
        }
        return SVGChart(title: title, panels: panels)
    }
}

extension Optional {
    fileprivate func get<E: Error>(or error: @autoclosure () -> E) throws -> Wrapped {
        guard let self else { throw error() }
        return self
    }
}

/// The time part of a progress line.
public enum TrainingProgress {
    /// `elapsed 12.3 s  remaining 45.6 s`: the remaining time is the mean time per step so far
    /// times the steps left.
    public static func describe(elapsed: Double, completed: Int, total: Int) -> String {
        let left = max(0, total - completed)
        let remaining = completed > 0 ? elapsed / Double(completed) * Double(left) : 0
        return "elapsed \(duration(elapsed))  remaining \(duration(remaining))"
    }

    /// `4.2 s`, `3m 07s`, `2h 05m`.
    public static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite, seconds >= 0 else { return "?" }
        if seconds < 59.95 { return String(format: "%.1f s", seconds) }
        let s = Int(seconds.rounded())
        if s < 3600 { return String(format: "%dm %02ds", s / 60, s % 60) }
        let m = Int((seconds / 60).rounded())
        return String(format: "%dh %02dm", m / 60, m % 60)
    }
}

import Foundation
import XCTest
@testable import SeqCellBase
@testable import SeqCellHost
@testable import SeqCellModel
@testable import SeqCellFormats
@testable import SeqCellTools
import SeqCellTestSupport

/// The logs of `seqcell train`: the CSV of logged steps, TensorBoard event files (read back with
/// TensorBoard's own reader), the loss-curve SVG and its round axis ticks, and the times on the
/// progress lines.
final class TrainingLogTests: TemporaryDirectoryTestCase {
    @discardableResult
    func seqcell(_ args: [String], file: StaticString = #filePath, line: UInt = #line) throws
        -> (status: Int32, out: String, err: String)
    {
        try runProgram(args, file: file, line: line)
    }

    func newModel(_ name: String = "m.h5") throws {
        let r = try seqcell(["new", "--input-size", "2", "--layer", "gru:4", "--head", "1", "-o", name])
        XCTAssertEqual(r.status, 0, r.err)
    }

    /// The rows of a CSV the logger wrote: header, then rows of fields.
    func readCSV(_ name: String) throws -> (header: [String], rows: [[String]]) {
        let text = try String(contentsOfFile: path(name), encoding: .utf8)
        XCTAssert(text.hasSuffix("\n"), "\(name) ends with a complete line")
        let lines = text.split(separator: "\n").map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
        return (lines.first ?? [], Array(lines.dropFirst()))
    }

    /// The `step N  loss X ...` lines a run printed, as (step, loss).
    func printedLosses(_ out: String) -> [(step: Int, loss: Double)] {
        out.split(separator: "\n").compactMap { line in
            let words = line.split(separator: " ", omittingEmptySubsequences: true)
            guard words.count > 3, words[0] == "step", let step = Int(words[1]), words[2] == "loss",
                  let loss = Double(words[3]) else { return nil }
            return (step, loss)
        }
    }

    // MARK: - CRC32C and TFRecord framing

    /// Check values: the standard CRC-32C check ("123456789"), RFC 3720's 32-byte vectors, and
    /// TensorBoard's own masking and framing (tensorboard.compat.tensorflow_stub.pywrap_tensorflow:
    /// masked_crc32c(b"123456789") == 0xc78ab0e5; the record of b"abc" as its reader expects it).
    func testCRC32CCheckValuesAndTensorFlowFraming() {
        XCTAssertEqual(CRC32C.checksum(Array("123456789".utf8)), 0xE306_9283)
        XCTAssertEqual(CRC32C.checksum([UInt8](repeating: 0, count: 32)), 0x8A91_36AA)
        XCTAssertEqual(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)), 0x62A8_AB43)
        XCTAssertEqual(CRC32C.checksum((0..<32).map { UInt8($0) }), 0x46DD_794E)
        XCTAssertEqual(CRC32C.masked(CRC32C.checksum(Array("123456789".utf8))), 0xC78A_B0E5)
        XCTAssertEqual(TFRecord.frame(Array("abc".utf8)),
                       [3, 0, 0, 0, 0, 0, 0, 0, 176, 153, 73, 14, 97, 98, 99, 110, 87, 241, 33])
    }

    // MARK: - Round ticks

    /// Expected ticks worked out by hand with matplotlib's MaxNLocator rule (steps 1, 2, 5 × 10^k,
    /// the smallest at least range / nbins; ticks from the multiple at or below the start to the
    /// one at or above the end).
    func testAxisTicksAreRoundOnSeveralRanges() {
        func check(_ lo: Double, _ hi: Double, _ n: Int, step: Double, _ values: [Double], labels: [String]? = nil,
                   line: UInt = #line) {
            let t = AxisTicks.linear(lo, hi, maxIntervals: n)
            XCTAssertEqual(t.step, step, accuracy: step * 1e-12, "step for \(lo)...\(hi)", line: line)
            XCTAssertEqual(t.values.count, values.count, "\(t.values)", line: line)
            for (a, b) in zip(t.values, values) { XCTAssertEqual(a, b, accuracy: step * 1e-9, "\(t.values)", line: line) }
            if let labels { XCTAssertEqual(t.values.map(t.label), labels, line: line) }
        }
        check(0, 1, 5, step: 0.2, [0, 0.2, 0.4, 0.6, 0.8, 1], labels: ["0", "0.2", "0.4", "0.6", "0.8", "1.0"])
        // The demo's x axis (steps 25 … 1500): 0, 200, … 1600 instead of 25, 394, 763, 1131, 1500.
        check(25, 1500, 8, step: 200, stride(from: 0, through: 1600, by: 200).map { $0 },
              labels: ["0", "200", "400", "600", "800", "1000", "1200", "1400", "1600"])
        check(-3.7, 12.2, 5, step: 5, [-5, 0, 5, 10, 15])
        check(0.0123, 0.0187, 5, step: 0.002, [0.012, 0.014, 0.016, 0.018, 0.02],
              labels: ["0.012", "0.014", "0.016", "0.018", "0.020"])
        check(1, 10, 5, step: 2, [0, 2, 4, 6, 8, 10])
        check(1, 1000, 5, step: 200, [0, 200, 400, 600, 800, 1000])
        check(0.1, 0.1, 5, step: 0.002, [0.094, 0.096, 0.098, 0.1, 0.102, 0.104, 0.106])  // widened by 5%
        check(-1e7, 3e7, 4, step: 1e7, [-1e7, 0, 1e7, 2e7, 3e7], labels: ["-1e+07", "0", "1e+07", "2e+07", "3e+07"])
        // Log axes: whole decades, every 2nd, 5th, 10th… when there are more than allowed.
        XCTAssertEqual(AxisTicks.decades(-3, 0, maxIntervals: 6), [-3, -2, -1, 0])
        XCTAssertEqual(AxisTicks.decades(-6, 2, maxIntervals: 6), [-6, -4, -2, 0, 2])
        XCTAssertEqual(AxisTicks.decades(-7, 2, maxIntervals: 4), [-5, 0])
        XCTAssertEqual(AxisTicks.decades(-20, 10, maxIntervals: 5), [-20, -10, 0, 10])
    }

    /// The SVG's tick labels, per `<text>` with `text-anchor="middle"` (x) or `"end"` (y).
    func tickLabels(_ svg: String, anchor: String) -> [String] {
        svg.components(separatedBy: "<text ").dropFirst().compactMap { part in
            guard part.contains("text-anchor=\"\(anchor)\""), !part.contains("fill=\"#555\""),
                  let open = part.firstIndex(of: ">"), let close = part.range(of: "</text>") else { return nil }
            return String(part[part.index(after: open)..<close.lowerBound])
        }
    }

    func testChartTicksAreRound() {
        let points = stride(from: 25.0, through: 1500, by: 25).map { (x: $0, y: 0.0123 + 0.0064 * $0 / 1500) }
        let chart = SVGChart(title: "t", panels: [
            SVGChart.Panel(title: "linear", xLabel: "step", yLabel: "loss", logY: false,
                           series: [SVGChart.Series(name: "a", points: points, color: "#000")]),
        ])
        let svg = chart.render()
        let x = tickLabels(svg, anchor: "middle").filter { Double($0) != nil }
        XCTAssertEqual(x, ["200", "400", "600", "800", "1000", "1200", "1400"], "x ticks inside the data")
        XCTAssertEqual(tickLabels(svg, anchor: "end"), ["0.012", "0.014", "0.016", "0.018", "0.020"])
        let log = SVGChart(title: "t", panels: [
            SVGChart.Panel(title: "log", xLabel: "step", yLabel: "loss", logY: true,
                           series: [SVGChart.Series(name: "a", points: [(1, 0.002), (394, 0.5), (763, 3)], color: "#000")]),
        ]).render()
        XCTAssertEqual(tickLabels(log, anchor: "end"), ["0.001", "0.01", "0.1", "1", "10"])
        XCTAssertEqual(tickLabels(log, anchor: "middle").filter { Double($0) != nil }, ["100", "200", "300", "400", "500", "600", "700"])
    }

    // MARK: - Progress

    func testProgressTimesFromTheMeanStepTime() {
        XCTAssertEqual(TrainingProgress.describe(elapsed: 10, completed: 100, total: 400), "elapsed 10.0 s  remaining 30.0 s")
        XCTAssertEqual(TrainingProgress.describe(elapsed: 50, completed: 10, total: 10), "elapsed 50.0 s  remaining 0.0 s")
        XCTAssertEqual(TrainingProgress.describe(elapsed: 30, completed: 50, total: 1000), "elapsed 30.0 s  remaining 9m 30s")
        XCTAssertEqual(TrainingProgress.duration(187), "3m 07s")
        XCTAssertEqual(TrainingProgress.duration(7500), "2h 05m")
        XCTAssertEqual(TrainingProgress.duration(59.9), "59.9 s")
    }

    // MARK: - CSV, unit level

    func testCompanionPaths() {
        XCTAssertEqual(TrainingLogger.companionPath(of: "out/model.h5", "log.csv"), "out/model.log.csv")
        XCTAssertEqual(TrainingLogger.companionPath(of: "model", "loss.svg"), "model.loss.svg")
        XCTAssertEqual(TrainingLogger.companionPath(of: "/a.b/m.v2.h5", "log.csv"), "/a.b/m.v2.log.csv")
        XCTAssertEqual(TrainingLogger.companionPath(of: ".h5", "log.csv"), ".h5.log.csv")
    }

    /// Each row is in the file as soon as it is logged (a crash keeps the rows so far); a new
    /// column rewrites the file with the wider header.
    func testRowsAreOnDiskBeforeTheRunFinishes() throws {
        let logger = try TrainingLogger(csv: path("a.log.csv"), svg: path("a.loss.svg"), eventDirectory: nil, title: "t")
        XCTAssertEqual(try String(contentsOfFile: path("a.log.csv"), encoding: .utf8), "step,elapsed_s\n", "written before step 1")
        try logger.record(step: 10, elapsed: 1.5, scalars: [("loss", 0.25), ("lr", 0.01)])
        try logger.record(step: 20, elapsed: 3, scalars: [("loss", 0.125), ("lr", 0.01)])
        XCTAssertEqual(try String(contentsOfFile: path("a.log.csv"), encoding: .utf8),
                       "step,elapsed_s,loss,lr\n10,1.500,0.25,0.01\n20,3.000,0.125,0.01\n")
        try logger.record(step: 30, elapsed: 4.5, scalars: [("loss", .nan), ("val_loss", 0.5)])
        XCTAssertEqual(try String(contentsOfFile: path("a.log.csv"), encoding: .utf8),
                       "step,elapsed_s,loss,lr,val_loss\n10,1.500,0.25,0.01,\n20,3.000,0.125,0.01,\n30,4.500,nan,,0.5\n")
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("a.loss.svg")), "the SVG comes at the end")
        try logger.finish()
        let svg = try String(contentsOfFile: path("a.loss.svg"), encoding: .utf8)
        XCTAssertEqual(svg.components(separatedBy: "<polyline").count - 1, 2, "loss and val_loss")
        XCTAssert(svg.contains(">val_loss</text>"), svg)
        XCTAssertThrowsError(try logger.record(step: 40, elapsed: 6, scalars: [("loss", 1)]), "finished")
    }

    /// A long log is drawn from every k-th row and the last, at most 2000 points per series.
    func testLongLogsAreThinnedInTheChart() throws {
        let logger = try TrainingLogger(csv: nil, svg: path("long.svg"), eventDirectory: nil, title: "t")
        for step in 1...5001 { try logger.record(step: step, elapsed: Double(step), scalars: [("loss", 1 / Double(step))]) }
        let points = logger.chart().panels[0].series[0].points
        XCTAssertEqual(points.count, 1668, "steps 1, 4, 7, … 4999 (every 3rd row) and 5001")
        XCTAssertEqual(points.first?.x, 1)
        XCTAssertEqual(points.last?.x, 5001)
        XCTAssertEqual(points.last?.y, 1.0 / 5001)
        try logger.finish()
        XCTAssert(FileManager.default.fileExists(atPath: path("long.svg")))
    }

    /// Column names are quoted as RFC 4180 says and read back; names that would break the file
    /// are refused.
    func testColumnNamesAreQuotedAndReadBack() throws {
        let logger = try TrainingLogger(csv: path("q.log.csv"), svg: nil, eventDirectory: nil, title: "t")
        try logger.record(step: 1, elapsed: 0, scalars: [("a,b", 1), ("say \"hi\"", 2)])
        for bad in ["step", "elapsed_s", "", "two\nlines"] {
            XCTAssertThrowsError(try logger.record(step: 2, elapsed: 0, scalars: [(bad, 1)]), bad)
        }
        try logger.finish()
        XCTAssertEqual(try String(contentsOfFile: path("q.log.csv"), encoding: .utf8),
                       "step,elapsed_s,\"a,b\",\"say \"\"hi\"\"\"\n1,0.000,1.0,2.0\n")
        let back = try TrainingLogger(csv: nil, svg: nil, eventDirectory: nil, title: "t", continuing: path("q.log.csv"), resumedStep: 1)
        XCTAssertEqual(back.columns, ["a,b", "say \"hi\""])
        XCTAssertEqual(back.rows, [TrainingLogger.Row(step: 1, elapsed: 0, values: ["a,b": 1, "say \"hi\"": 2])])
    }

    /// Resuming keeps the rows up to the resumed step (a torn last line, as a crash leaves it,
    /// is dropped) and continues the elapsed time; a damaged log is refused naming file and line.
    func testContinuingALogKeepsRowsUpToTheResumedStep() throws {
        try Data("step,elapsed_s,loss\n10,1.000,0.5\n20,2.000,0.25\n30,3.000,0.2\n40,4.0".utf8)
            .write(to: URL(fileURLWithPath: path("a.log.csv")))
        let logger = try TrainingLogger(csv: path("b.log.csv"), svg: nil, eventDirectory: nil, title: "t",
                                        continuing: path("a.log.csv"), resumedStep: 20)
        XCTAssertEqual(logger.continuedRows, 2)
        try logger.record(step: 25, elapsed: 0.5, scalars: [("loss", 0.125)])
        try logger.finish()
        XCTAssertEqual(try String(contentsOfFile: path("b.log.csv"), encoding: .utf8),
                       "step,elapsed_s,loss\n10,1.000,0.5\n20,2.000,0.25\n25,2.500,0.125\n")
        try Data("step,elapsed_s,loss\n10,1.000,0.5\n20,oops,0.25\n".utf8).write(to: URL(fileURLWithPath: path("bad.log.csv")))
        XCTAssertThrowsError(try TrainingLogger(csv: path("c.log.csv"), svg: nil, eventDirectory: nil, title: "t",
                                                continuing: path("bad.log.csv"), resumedStep: 20)) { error in
            let text = String(describing: error)
            XCTAssert(text.contains("bad.log.csv") && text.contains("line 3"), text)
        }
    }

    // MARK: - Through the CLI

    /// The CSV has a row per logged step whose loss is the printed loss; resuming continues it.
    func testTrainWritesTheCSVAndSVGAndResumeContinuesThem() throws {
        try newModel()
        let t = try seqcell(["train", "m.h5", "--task", "adding", "--seq-len", "6", "--steps", "20", "--log-every", "5",
                             "--lr", "0.02", "--optimizer", "adam", "-o", "t.h5"])
        XCTAssertEqual(t.status, 0, t.err)
        XCTAssert(t.out.contains("logging to t.log.csv, t.loss.svg"), t.out)
        XCTAssert(t.out.contains("elapsed ") && t.out.contains("remaining "), t.out)
        let printed = printedLosses(t.out)
        XCTAssertEqual(printed.map(\.step), [5, 10, 15, 20])
        let csv = try readCSV("t.log.csv")
        XCTAssertEqual(csv.header, ["step", "elapsed_s", "loss", "lr", "grad_norm", "clipped_fraction", "mse", "mae"],
                       "the training metrics of --loss mse follow the fixed columns")
        XCTAssertEqual(csv.rows.map { $0[0] }, ["5", "10", "15", "20"])
        for (row, p) in zip(csv.rows, printed) {
            XCTAssertEqual(Double(row[2])!, p.loss, accuracy: 5e-5, "CSV loss vs printed loss at step \(p.step)")
            XCTAssertEqual(Double(row[3]), 0.02, "lr")
            let fraction = Double(row[5])!
            XCTAssert([0, 0.2, 0.4, 0.6, 0.8, 1].contains { abs($0 - fraction) < 1e-12 }, "clipped fraction of 5 steps: \(fraction)")
        }
        let elapsed = csv.rows.map { Double($0[1])! }
        XCTAssertEqual(elapsed, elapsed.sorted())
        let svg = try String(contentsOfFile: path("t.loss.svg"), encoding: .utf8)
        XCTAssert(svg.contains(">loss</text>") && svg.contains("<polyline"), svg)

        let r = try seqcell(["train", "--resume", "t.h5", "--steps", "10", "--log-every", "5", "-o", "t2.h5"])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssert(r.out.contains("continuing 4 rows of t.log.csv"), r.out)
        let resumed = try readCSV("t2.log.csv")
        XCTAssertEqual(resumed.header, csv.header)
        XCTAssertEqual(resumed.rows.map { $0[0] }, ["5", "10", "15", "20", "25", "30"])
        XCTAssertEqual(Array(resumed.rows.prefix(4)), csv.rows, "the first run's rows carried over unchanged")
        XCTAssertEqual(printedLosses(r.out).map(\.step), [25, 30])
        XCTAssertGreaterThanOrEqual(Double(resumed.rows[4][1])!, elapsed.last!, "elapsed time continues")
    }

    /// A run killed mid-training keeps every row it logged (a torn last line at worst); resuming
    /// from its last saved checkpoint keeps the rows up to that step and continues from there.
    func testAKilledRunKeepsItsRowsAndResumeContinuesFromTheCheckpoint() throws {
        try newModel()
        let p = Process()
        p.executableURL = URL(fileURLWithPath: cli)
        p.arguments = ["train", "m.h5", "--task", "adding", "--seq-len", "6", "--steps", "1000000", "--log-every", "1",
                       "--save-every", "5", "-o", "t.h5"]
        p.currentDirectoryURL = directory
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        func loggedSteps() -> [Int] {
            let text = (try? String(contentsOfFile: path("t.log.csv"), encoding: .utf8)) ?? ""
            return text.split(separator: "\n", omittingEmptySubsequences: false).dropFirst().dropLast()
                .map { Int($0.split(separator: ",").first ?? "") ?? -1 }
        }
        let deadline = Date().addingTimeInterval(120)
        while loggedSteps().count < 12, p.isRunning, Date() < deadline { usleep(20_000) }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        XCTAssertEqual(p.terminationReason, .uncaughtSignal, "killed while training")
        let logged = loggedSteps()
        XCTAssertGreaterThanOrEqual(logged.count, 12)
        XCTAssertEqual(logged, Array(1...logged.count), "every step up to the kill, in order")
        let saved = try XCTUnwrap(Checkpoint.load(from: path("t.h5"), registry: testRegistry).training?.step)
        XCTAssertEqual(saved % 5, 0)
        let r = try seqcell(["train", "--resume", "t.h5", "--steps", "3", "--log-every", "1", "-o", "t.h5"])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssert(r.out.contains("continuing \(saved) rows of t.log.csv"), r.out)
        XCTAssertEqual(try readCSV("t.log.csv").rows.map { Int($0[0])! }, Array(1...(saved + 3)))
    }

    /// A log folder that cannot be created fails before step 1, naming it.
    func testUnusableLogdirFailsBeforeTheFirstStep() throws {
        try newModel()
        try Data("x".utf8).write(to: URL(fileURLWithPath: path("taken")))
        let r = try seqcell(["train", "m.h5", "--task", "adding", "--seq-len", "6", "--steps", "5", "--logdir", "taken/runs",
                             "-o", "t.h5"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssert(r.err.contains("cannot create the log folder 'taken/runs'") && r.err.contains("'taken' is not a folder"), r.err)
        XCTAssertFalse(r.out.contains("step 1"), r.out)
        XCTAssertEqual(try directoryContents(), ["m.h5", "taken"], "nothing written")
    }

    /// TensorBoard's own reader (EventAccumulator) reads the event file: the file version, every
    /// scalar at every logged step with the CSV's values (as float32), and the per-time-step
    /// gradient norms as a histogram matching the printed ones.
    func testTensorBoardReadsTheEventFile() throws {
        try requireTensorBoard()
        try newModel()
        let t = try seqcell(["train", "m.h5", "--task", "adding", "--seq-len", "7", "--steps", "15", "--log-every", "5",
                             "--step-grad-norms", "--logdir", "runs/a", "-o", "t.h5"])
        XCTAssertEqual(t.status, 0, t.err)
        let files = try FileManager.default.contentsOfDirectory(atPath: path("runs/a"))
        XCTAssertEqual(files.count, 1, "\(files)")
        XCTAssert(files.first?.hasPrefix("events.out.tfevents.") == true, "\(files)")
        let read = try readEvents(path("runs/a"))
        struct Histogram: Decodable { var step: Int; var num: Double; var min: Double; var max: Double; var sum: Double; var buckets: Double }
        struct Events: Decodable {
            var version: Double
            var plugins: [String: String]
            var scalars: [String: [[Double]]]
            var histograms: [Histogram]
        }
        let events = try JSONDecoder().decode(Events.self, from: Data(read.utf8))
        XCTAssertEqual(events.version, 2)
        XCTAssertEqual(events.plugins, ["loss": "scalars", "lr": "scalars", "grad_norm": "scalars", "clipped_fraction": "scalars",
                                        "mse": "scalars", "mae": "scalars", "step_grad_norms": "histograms"], "the dashboards `tensorboard --logdir` shows them in")
        let csv = try readCSV("t.log.csv")
        XCTAssertEqual(Set(events.scalars.keys), Set(csv.header.dropFirst(2)))
        for (column, name) in csv.header.enumerated().dropFirst(2) {
            let series = events.scalars[name] ?? []
            XCTAssertEqual(series.map { Int($0[0]) }, [5, 10, 15], name)
            for (point, row) in zip(series, csv.rows) {
                XCTAssertEqual(point[1], Double(Float(Double(row[column])!)), "\(name) at step \(row[0])")
            }
        }
        // The printed ‖∂L/∂x_t‖ lines (3 significant digits), in the order of the log lines.
        let printed = t.out.split(separator: "\n").filter { $0.contains("‖∂L/∂x_t‖") }.map { line in
            line.split(separator: ":").last!.split(separator: " ").compactMap { Double($0) }
        }
        XCTAssertEqual(printed.count, 3)
        XCTAssertEqual(events.histograms.map(\.step), [5, 10, 15])
        for (h, norms) in zip(events.histograms, printed) {
            XCTAssertEqual(norms.count, 7)
            XCTAssertEqual(h.num, 7)
            XCTAssertEqual(h.buckets, 7, "bucket counts add up to the values")
            XCTAssertEqual(h.min, norms.min()!, accuracy: norms.min()! * 6e-3)
            XCTAssertEqual(h.max, norms.max()!, accuracy: norms.max()! * 6e-3)
            XCTAssertEqual(h.sum, norms.reduce(0, +), accuracy: norms.reduce(0, +) * 6e-3)
        }
    }

    /// Resuming into the same log folder: the new event file's SessionLog START makes TensorBoard
    /// drop steps an earlier run logged after the checkpoint resumed from, so each step shows once.
    func testResumingIntoTheSameLogdirShowsEachStepOnce() throws {
        try requireTensorBoard()
        try newModel()
        let common = ["--log-every", "5", "--logdir", "runs"]
        XCTAssertEqual(try seqcell(["train", "m.h5", "--task", "adding", "--seq-len", "6", "--steps", "10", "-o", "a.h5"] + common).status, 0)
        XCTAssertEqual(try seqcell(["train", "--resume", "a.h5", "--steps", "10", "-o", "b.h5"] + common).status, 0)
        let c = try seqcell(["train", "--resume", "a.h5", "--steps", "5", "-o", "c.h5"] + common)
        XCTAssertEqual(c.status, 0, c.err)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: path("runs")).count, 3)
        let read = try readEvents(path("runs"))
        struct Events: Decodable { var scalars: [String: [[Double]]] }
        let loss = try JSONDecoder().decode(Events.self, from: Data(read.utf8)).scalars["loss"] ?? []
        XCTAssertEqual(loss.map { Int($0[0]) }, [5, 10, 15], "steps 15 and 20 of the run that was resumed again are dropped")
        XCTAssertEqual(try readCSV("c.log.csv").rows.map { $0[0] }, ["5", "10", "15"])
        XCTAssertEqual(try readCSV("b.log.csv").rows.map { $0[0] }, ["5", "10", "15", "20"])
    }

    /// Runs `python3 -c script arguments…`: (exit status, stdout, stderr).
    func python3(_ script: String, _ arguments: [String] = []) throws -> (status: Int32, out: String, err: String) {
        try runProgram(["python3", "-c", script] + arguments, executable: "/usr/bin/env")
    }

    /// What TensorBoard's EventAccumulator reads from `folder`, as the JSON `readEvents` prints.
    func readEvents(_ folder: String, file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let r = try python3(Self.readEvents, [folder])
        XCTAssertEqual(r.status, 0, "TensorBoard's reader failed: \(r.err)", file: file, line: line)
        return r.out
    }

    func requireTensorBoard() throws {
        let probe = try python3("import tensorboard.backend.event_processing.event_accumulator")
        guard probe.status == 0 else {
            throw XCTSkip("\(name): skipped: python3 with tensorboard is needed to read the event files back "
                          + "(scripts/ensure-deps.sh --python installs it)")
        }
    }

    /// Prints, as JSON, what TensorBoard's EventAccumulator reads from the folder in argv[1], and
    /// which dashboard (plugin) the server's reader, plugin_event_accumulator, files each tag under.
    static let readEvents = """
        import json, sys
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        from tensorboard.backend.event_processing import plugin_event_accumulator
        served = plugin_event_accumulator.EventAccumulator(sys.argv[1], size_guidance={"tensors": 0})
        served.Reload()
        acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0, "histograms": 0})
        acc.Reload()
        tags = acc.Tags()
        out = {"version": acc.file_version,
               "plugins": {t: served.SummaryMetadata(t).plugin_data.plugin_name for t in served.Tags()["tensors"]},
               "scalars": {t: [[e.step, e.value] for e in acc.Scalars(t)] for t in tags["scalars"]},
               "histograms": [{"step": e.step, "num": e.histogram_value.num, "min": e.histogram_value.min,
                               "max": e.histogram_value.max, "sum": e.histogram_value.sum,
                               "buckets": sum(e.histogram_value.bucket)}
                              for t in tags["histograms"] for e in acc.Histograms(t)]}
        print(json.dumps(out))
        """
}

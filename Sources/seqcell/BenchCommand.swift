import ArgumentParser
import Foundation
import SeqCell
import SeqCellTools

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Time the standard benchmark configurations A–F through the cell plugins.",
        discussion: """
            A  LSTM          I=256  H=256  B=32 T=100
            B  LSTM 2×bi     I=128  H=256  B=16 T=200
            C  GRU           I=512  H=512  B=64 T=50
            D  RNN tanh      I=128  H=128  B=1  T=1000   (latency-bound)
            E  LSTM          I=1024 H=1024 B=64 T=20     (GEMM-bound)
            F  training step on A: forward, MSE on all outputs, backward, clip norm 1.0, SGD
            GFLOP/s counts 2·T·B·G·H·(I+H) per layer and direction (G = 4 LSTM, 3 GRU, 1 RNN),
            3× that for F. A–E time a warmed InferenceSession call into a caller-owned output
            (the allocation-free API; --api model times Model.forward, which allocates per call);
            faults/call counts minor page faults per timed call. --serve reads commands on stdin for benchmarks/compare.py:
              threads N | load NAME CHECKPOINT | run NAME REPEATS | quit
            and answers each with one JSON line.
            """)

    @OptionGroup var plugins: PluginOptions

    @Argument(help: "Configurations to run (A–F); all when none.")
    var configs: [String] = []

    @OptionGroup var threadOptions: ThreadOptions

    @Option(help: "Untimed calls before timing.")
    var warmup: Int = 3

    @Option(help: "Timed calls.")
    var repeats: Int = 10

    @Option(help: "Run this checkpoint instead of a fresh model (one configuration only).")
    var model: String?

    @Option(help: "What A–E time: 'session' (a warmed InferenceSession call into a caller-owned output) or 'model' (Model.forward, allocating per call). Also for --serve.")
    var api: String = "session"

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    @Flag(help: "Serve timing requests on stdin (see above).")
    var serve = false

    @Flag(help: "Measure the peak memory of one inference forward call instead of timing (one configuration per process gives exact figures).")
    var memory = false

    @Option(help: "Time loading this checkpoint and saving a copy of it beside it, instead of A–F.")
    var checkpoint: String?

    func run() throws {
        let registry = plugins.registry()
        threadOptions.apply()
        guard let api = BenchAPI(rawValue: api) else { throw CLIError("--api takes session or model, got '\(api)'") }
        if serve { return try serveLoop(registry: registry, api: api) }
        if let checkpoint { return try checkpointIO(checkpoint, registry: registry) }
        let names = configs.isEmpty ? BenchConfig.standard.map(\.name) : configs
        let chosen = try names.map { n -> BenchConfig in
            guard let c = BenchConfig.named(n) else { throw CLIError("unknown configuration '\(n)'; use A–F") }
            return c
        }
        if model != nil, chosen.count != 1 { throw CLIError("--model needs exactly one configuration") }
        if memory {
            guard model == nil else { throw CLIError("--memory measures fresh models of the configurations; it does not take --model") }
            return try memoryReport(chosen, registry: registry)
        }
        let loaded = try model.map { try Checkpoint.load(from: $0, registry: registry).model }
        var results: [BenchResult] = []
        if !json {
            print("threads \(Benchmark.threads), warmup \(warmup), repeats \(repeats), api \(api.rawValue) (A–E)")
            print(CPUFeatures.current.summary)
            print(pad("", 2) + pad("median ms", 11) + pad("min–max ms", 18) + pad("steps/s", 12) + pad("GFLOP/s", 9) + pad("faults/call", 12) + "  configuration")
        }
        for c in chosen {
            let r = try Benchmark.run(c, registry: registry, warmup: warmup, repeats: repeats, model: loaded, api: api)
            results.append(r)
            if !json {
                print(pad(c.name, 2) + pad(fmt(r.median * 1e3, 3), 11)
                      + pad(fmt(r.min * 1e3, 3) + "–" + fmt(r.max * 1e3, 3), 18)
                      + pad(fmt(r.stepsPerSecond, 0), 12) + pad(fmt(r.gflops, 1), 9) + pad(fmt(r.faultsPerCall, 0), 12) + "  " + c.summary)
            }
        }
        if json { print(try jsonLine(results)) }
    }

    /// Peak memory of one inference forward per configuration, in MB, next to its parts.
    func memoryReport(_ chosen: [BenchConfig], registry: PluginRegistry) throws {
        var rows: [ForwardMemory] = []
        if !json {
            print("peak of one cold inference forward (VmHWM growth), MB; chunk = steps per plugin call (SEQCELL_CHUNK_ROWS; whole for cells whose workspace does not grow with T)")
            print(pad("", 2) + pad("params", 9) + pad("input", 9) + pad("output", 9) + pad("chunk", 7) + pad("ws chunk", 10)
                  + pad("ws whole", 10) + pad("between", 9) + pad("bound", 9) + pad("peak", 9))
        }
        func mb(_ b: Int) -> String { fmt(Double(b) / 1e6, 2) }
        for c in chosen {
            let m = try Benchmark.forwardMemory(c, registry: registry)
            rows.append(m)
            if !json {
                // The bound: parameters, input and output, and one chunk's workspaces (plus what a
                // stacked or bidirectional model holds between layers).
                let bound = m.parameterBytes + m.inputBytes + m.outputBytes + m.chunkWorkspaceBytes + m.intermediateBytes
                print(pad(c.name, 2) + pad(mb(m.parameterBytes), 9) + pad(mb(m.inputBytes), 9) + pad(mb(m.outputBytes), 9)
                      + pad(String(m.chunkSteps), 7) + pad(mb(m.chunkWorkspaceBytes), 10) + pad(mb(m.wholeWorkspaceBytes), 10)
                      + pad(mb(m.intermediateBytes), 9) + pad(mb(bound), 9) + pad(mb(m.peakBytes), 9))
            }
        }
        if json {
            let data = try JSONEncoder().encode(rows)
            print(String(decoding: data, as: UTF8.self))
        }
    }

    func serveLoop(registry: PluginRegistry, api: BenchAPI) throws {
        var runners: [String: BenchRunner] = [:]
        func reply(_ object: [String: Any]) {
            let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
            print(String(decoding: data, as: UTF8.self))
            fflush(nil)
        }
        while let line = readLine() {
            let words = line.split(separator: " ").map(String.init)
            guard let cmd = words.first else { continue }
            do {
                switch cmd {
                case "threads":
                    guard words.count == 2, let n = Int(words[1]) else { throw CLIError("threads N") }
                    Benchmark.setThreads(n)
                    reply(["ok": true, "threads": Benchmark.threads])
                case "load":
                    guard words.count >= 2, let c = BenchConfig.named(words[1]) else { throw CLIError("load NAME [CHECKPOINT]") }
                    let m = try words.count > 2 ? Checkpoint.load(from: words[2], registry: registry).model : nil
                    runners[words[1]] = try BenchRunner(config: c, registry: registry, model: m, api: api)
                    reply(["ok": true])
                case "run":
                    guard words.count == 3, let r = runners[words[1]], let n = Int(words[2]) else {
                        throw CLIError("run NAME REPEATS (after load NAME)")
                    }
                    reply(["ok": true, "times": try r.measure(warmup: 0, repeats: n)])
                case "quit":
                    return
                default:
                    throw CLIError("unknown command '\(cmd)'")
                }
            } catch {
                reply(["ok": false, "error": "\(error)"])
            }
        }
    }

    /// Load and save times of one checkpoint (save includes the fsync and rename).
    func checkpointIO(_ path: String, registry: PluginRegistry) throws {
        let bytes = (try FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.doubleValue ?? 0
        var ckpt = try Checkpoint.load(from: path, registry: registry)
        for _ in 0..<warmup { ckpt = try Checkpoint.load(from: path, registry: registry) }
        var loads: [Double] = []
        for _ in 0..<repeats {
            let t0 = monotonicSeconds()
            ckpt = try Checkpoint.load(from: path, registry: registry)
            loads.append(monotonicSeconds() - t0)
        }
        let target = path + ".bench-save.h5"
        defer { try? FileManager.default.removeItem(atPath: target) }
        var saves: [Double] = []
        for _ in 0..<repeats {
            let t0 = monotonicSeconds()
            try ckpt.save(to: target)
            saves.append(monotonicSeconds() - t0)
        }
        let params = Double(ckpt.model.parameterCount)
        func med(_ x: [Double]) -> Double { x.sorted()[x.count / 2] }
        if json {
            let obj: [String: Any] = ["file": path, "bytes": bytes, "parameters": params, "load": loads, "save": saves,
                                      "load_median": med(loads), "save_median": med(saves)]
            let data = try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            print("\(path): \(fmt(bytes / 1e6, 1)) MB, \(Int(params)) parameters")
            print("load  median \(fmt(med(loads) * 1e3, 1)) ms (\(fmt(bytes / med(loads) / 1e6, 0)) MB/s), min–max \(fmt(loads.min()! * 1e3, 1))–\(fmt(loads.max()! * 1e3, 1)) ms")
            print("save  median \(fmt(med(saves) * 1e3, 1)) ms (\(fmt(bytes / med(saves) / 1e6, 0)) MB/s), min–max \(fmt(saves.min()! * 1e3, 1))–\(fmt(saves.max()! * 1e3, 1)) ms (atomic: temp file, fsync, rename)")
        }
    }

    func jsonLine(_ results: [BenchResult]) throws -> String {
        let rows: [[String: Any]] = results.map { r in
            ["name": r.name, "summary": r.summary, "threads": r.threads, "warmup": r.warmup, "times": r.times,
             "median": r.median, "min": r.min, "max": r.max, "steps_per_second": r.stepsPerSecond,
             "gflops": r.gflops, "flops_per_call": r.flopsPerCall, "faults_per_call": r.faultsPerCall]
        }
        let data = try JSONSerialization.data(withJSONObject: rows, options: [.sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }
}

private func fmt(_ x: Double, _ digits: Int) -> String { String(format: "%.\(digits)f", x) }
private func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count) }

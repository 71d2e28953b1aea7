import CBLAS
import Foundation

#if canImport(Glibc)
import Glibc
#endif
import SeqCellBase
import SeqCellHost
import SeqCellModel
import SeqCellFormats

/// One benchmark configuration: a model shape, a batch and a sequence length,
/// run forward in inference mode, or (`training`) as a whole SGD training step.
public struct BenchConfig: Sendable, Equatable {
    public var name: String
    public var cell: String
    public var layers: Int
    public var bidirectional: Bool
    public var inputSize: Int
    public var hiddenSize: Int
    public var batch: Int
    public var seqLen: Int
    /// Forward, MSE on all outputs, backward, clip global norm to 1.0, SGD step.
    public var training: Bool
    public var note: String

    public init(name: String, cell: String, layers: Int = 1, bidirectional: Bool = false, inputSize: Int,
                hiddenSize: Int, batch: Int, seqLen: Int, training: Bool = false, note: String = "") {
        self.name = name
        self.cell = cell
        self.layers = layers
        self.bidirectional = bidirectional
        self.inputSize = inputSize
        self.hiddenSize = hiddenSize
        self.batch = batch
        self.seqLen = seqLen
        self.training = training
        self.note = note
    }

    /// The standard configurations A–F (docs/PERFORMANCE.md).
    public static let standard: [BenchConfig] = [
        BenchConfig(name: "A", cell: "lstm", inputSize: 256, hiddenSize: 256, batch: 32, seqLen: 100, note: "LSTM"),
        BenchConfig(name: "B", cell: "lstm", layers: 2, bidirectional: true, inputSize: 128, hiddenSize: 256, batch: 16,
                    seqLen: 200, note: "LSTM, 2 layers, bidirectional"),
        BenchConfig(name: "C", cell: "gru", inputSize: 512, hiddenSize: 512, batch: 64, seqLen: 50, note: "GRU"),
        BenchConfig(name: "D", cell: "rnn", inputSize: 128, hiddenSize: 128, batch: 1, seqLen: 1000,
                    note: "RNN tanh, batch 1 (latency-bound)"),
        BenchConfig(name: "E", cell: "lstm", inputSize: 1024, hiddenSize: 1024, batch: 64, seqLen: 20,
                    note: "LSTM (GEMM-bound)"),
        BenchConfig(name: "F", cell: "lstm", inputSize: 256, hiddenSize: 256, batch: 32, seqLen: 100, training: true,
                    note: "training step on A: MSE, backward, clip 1.0, SGD"),
    ]

    public static func named(_ name: String) -> BenchConfig? { standard.first { $0.name == name.uppercased() } }

    /// Gate blocks of the configuration's cell, read from its parameter layout through the
    /// registry: the rows of its input weight over the hidden size (4 for an LSTM's [4H, I],
    /// 3 for a GRU's, 1 for an Elman RNN's), 1 for a cell that declares no input weight.
    public func gates(registry: PluginRegistry) throws -> Int {
        let probe = try registry.cellType(cell).instantiate(inputSize: inputSize, hiddenSize: hiddenSize)
        return BenchConfig.gates(of: probe)
    }

    /// Gate blocks of a configured cell: its input weight's rows over its hidden size.
    static func gates(of cell: Cell) -> Int {
        guard let w = cell.params.first(where: { $0.role == .inputWeight }), let rows = w.shape.first,
              cell.hiddenSize > 0, rows >= cell.hiddenSize else { return 1 }
        return rows / cell.hiddenSize
    }

    /// Floating-point operations of one call: 2·T·B·G·H·(I+H) per layer and direction (the
    /// input width of layers after the first is H·directions); a training step counts 3×.
    public func flopsPerCall(gates: Int) -> Double {
        let dirs = bidirectional ? 2 : 1
        var total = 0.0
        var width = inputSize
        for _ in 0..<layers {
            total += Double(dirs) * 2 * Double(seqLen * batch * gates * hiddenSize) * Double(width + hiddenSize)
            width = hiddenSize * dirs
        }
        return training ? 3 * total : total
    }

    /// The layer specs for `Model.build`.
    public var layerSpecs: [LayerSpec] {
        (0..<layers).map { _ in LayerSpec(cell: cell, hiddenSize: hiddenSize, direction: bidirectional ? .bidirectional : .forward) }
    }

    public var summary: String {
        "\(note): I=\(inputSize) H=\(hiddenSize) B=\(batch) T=\(seqLen)" + (layers > 1 ? " layers=\(layers)" : "")
    }
}

/// What an inference configuration times.
public enum BenchAPI: String, CaseIterable, Sendable {
    /// A warmed `InferenceSession` call into a caller-owned output: the allocation-free API
    /// (built once per runner; the default).
    case session
    /// `Model.forward(input:)`, which allocates its buffers and output on every call.
    case model
}

/// Timings of one configuration.
public struct BenchResult: Codable, Sendable {
    public var name: String
    public var summary: String
    public var threads: Int
    public var warmup: Int
    /// Seconds per call, in run order.
    public var times: [Double]
    public var flopsPerCall: Double
    public var stepsPerCall: Int
    /// Minor page faults per timed call (getrusage around the timed calls).
    public var faultsPerCall: Double = 0

    public var median: Double {
        let s = times.sorted()
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }
    public var min: Double { times.min() ?? 0 }
    public var max: Double { times.max() ?? 0 }
    /// T·B per second at the median.
    public var stepsPerSecond: Double { Double(stepsPerCall) / median }
    public var gflops: Double { flopsPerCall / median / 1e9 }
}

/// A configuration made runnable: a model, an input, and for training a trainer and batch,
/// for inference an `InferenceSession` and its output (`BenchAPI.session`). Calls reuse
/// everything they can; only `call()` is timed.
public final class BenchRunner {
    public let config: BenchConfig
    public private(set) var model: Model
    public let input: Tensor
    /// Gate blocks of the model's cell (`BenchConfig.gates(of:)`), for the FLOP count.
    public let gates: Int
    /// What an inference call times (a training configuration ignores it).
    public let api: BenchAPI
    private var trainer: Trainer?
    private let batch: Batch?
    private let session: InferenceSession?
    private var output = Tensor.zeros([0])

    /// - Parameters:
    ///   - model: a model to run (e.g. loaded from a checkpoint); a fresh one (seeded) when
    ///     nil. Its shape must match `config`.
    ///   - api: what an inference call times.
    public init(config: BenchConfig, registry: PluginRegistry, model: Model? = nil, seed: UInt64 = 1,
                api: BenchAPI = .session) throws {
        self.config = config
        self.api = api
        let m = try model ?? Model.build(inputSize: config.inputSize, layers: config.layerSpecs, registry: registry, seed: seed)
        guard m.inputSize == config.inputSize else {
            throw SeqCellError(.shape, "benchmark \(config.name): the model takes \(m.inputSize) inputs, the configuration \(config.inputSize)")
        }
        self.model = m
        // The model's first cell is the configuration's cell (or the one a loaded model uses).
        gates = m.layers.first?.cells.first.map { BenchConfig.gates(of: $0.cell) } ?? 1
        var rng = SplitMix64(seed: seed &+ 17)
        input = rng.uniformTensor([config.seqLen, config.batch, config.inputSize], scale: 1)
        if config.training {
            var tc = TrainingConfig()
            tc.optimizer = "sgd"
            tc.learningRate = 0.01
            tc.clipping = "norm"
            tc.clipValue = 1.0
            tc.loss = "mse"
            tc.target = "all"
            tc.batchSize = config.batch
            trainer = try Trainer(model: m, config: tc)
            let targets = rng.uniformTensor([config.seqLen, config.batch, m.outputSize], scale: 0.5)
            batch = Batch(input: input, targets: targets)
            session = nil
        } else {
            trainer = nil
            batch = nil
            if api == .session {
                let s = try InferenceSession(model: m, steps: config.seqLen, batch: config.batch)
                output = s.makeOutput()
                session = s
            } else {
                session = nil
            }
        }
    }

    /// One call: a forward pass (into the runner's output for `.session`), or one training
    /// step. Returns the output of a forward pass (nil for training); holding it past the
    /// next call makes that call copy the session's output once.
    @discardableResult
    public func call() throws -> Tensor? {
        if let batch {
            // `batch` and `trainer` are set together (a training configuration); mutated in
            // place, so the trainer's model is not copied.
            try trainer!.trainStep(batch)
            return nil
        }
        if let session {
            try session.forward(input: input, into: &output)
            return output
        }
        return try model.forward(input: input).output
    }

    /// Minor page faults per call of the last `measure`.
    public private(set) var faultsPerCall = 0.0

    /// `warmup` untimed calls, then `repeats` timed ones.
    public func measure(warmup: Int, repeats: Int) throws -> [Double] {
        for _ in 0..<warmup { try call() }
        var times: [Double] = []
        times.reserveCapacity(repeats)
        let faults0 = minorFaults()
        for _ in 0..<repeats {
            let t0 = monotonicSeconds()
            try call()
            times.append(monotonicSeconds() - t0)
        }
        faultsPerCall = Double(minorFaults() - faults0) / Double(max(repeats, 1))
        return times
    }
}

public enum Benchmark {
    /// Threads for everything: the host's worker pool (split GEMMs, recurrent steps,
    /// bidirectional directions). OpenBLAS itself stays single-threaded per call
    /// (openblas_set_num_threads(1), see `hostSgemm`) unless SEQCELL_BLAS_THREADS says
    /// otherwise; 0 leaves the defaults (all online CPUs).
    public static func setThreads(_ n: Int) {
        guard n > 0 else { return }
        HostServices.configureBLAS()
        if getenv("SEQCELL_BLAS_THREADS") == nil { openblas_set_num_threads(1) }
        // SEQCELL_HOST_THREADS, when set, overrides the host's share (for A/B measurements).
        if let s = getenv("SEQCELL_HOST_THREADS"), let h = Int(String(cString: s)), h > 0 {
            HostParallelism.setThreads(h)
        } else {
            HostParallelism.setThreads(n)
        }
    }

    /// The host's thread count.
    public static var threads: Int { HostParallelism.threads }

    /// Runs one configuration and collects its timings.
    public static func run(_ config: BenchConfig, registry: PluginRegistry, warmup: Int = 3, repeats: Int = 10,
                           model: Model? = nil, api: BenchAPI = .session) throws -> BenchResult {
        let runner = try BenchRunner(config: config, registry: registry, model: model, api: api)
        let times = try runner.measure(warmup: warmup, repeats: repeats)
        return BenchResult(name: config.name, summary: config.summary, threads: threads, warmup: warmup, times: times,
                           flopsPerCall: config.flopsPerCall(gates: runner.gates), stepsPerCall: config.seqLen * config.batch,
                           faultsPerCall: runner.faultsPerCall)
    }
}

/// This process's minor page faults so far (getrusage).
func minorFaults() -> Int {
    var u = rusage()
    getrusage(RUSAGE_SELF.rawValue, &u)
    return u.ru_minflt
}

/// Seconds on the monotonic clock.
public func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

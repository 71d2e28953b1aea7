import Foundation
import SeqCellBase
import SeqCellHost

/// One batch of training data.
public struct Batch: Sendable {
    /// [T, B, I]; [T, B, 0] when the batch holds `tokens`.
    public var input: Tensor
    public var lengths: [Int32]?
    /// See `computeLoss` for the shapes each loss and target mode take.
    public var targets: Tensor
    /// Token ids [T, B], for a model with an embedding stage.
    public var tokens: TokenIDs?

    public init(input: Tensor, lengths: [Int32]? = nil, targets: Tensor) {
        self.input = input
        self.lengths = lengths
        self.targets = targets
    }

    public init(tokens: TokenIDs, lengths: [Int32]? = nil, targets: Tensor) {
        self.input = Tensor(shape: tokens.shape + [0], data: [])
        self.lengths = lengths
        self.targets = targets
        self.tokens = tokens
    }
}

extension Model {
    /// Forward on a batch: its token ids for a model with an embedding stage, else its features.
    func forward(_ batch: Batch, initialStates: [[[Tensor?]]] = [], training: Bool = false,
                 dropout: Float = 0, seed: UInt64 = 0) throws -> Output {
        if let tokens = batch.tokens {
            return try forward(tokens: tokens, lengths: batch.lengths, initialStates: initialStates, training: training,
                               dropout: dropout, seed: seed)
        }
        return try forward(input: batch.input, lengths: batch.lengths, initialStates: initialStates, training: training,
                           dropout: dropout, seed: seed)
    }
}

/// Everything that decides how a model trains; stored as JSON in checkpoints.
public struct TrainingConfig: Codable, Equatable, Sendable {
    public var optimizer: String = "adam"
    public var learningRate: Double = 1e-3
    public var momentum: Double = 0
    public var weightDecay: Double? = nil
    /// "constant", "step", or "cosine".
    public var schedule: String = "constant"
    public var scheduleStepEvery: Int = 1000
    public var scheduleGamma: Double = 0.5
    public var scheduleTotalSteps: Int = 0
    public var scheduleMinLR: Double = 0
    /// "none", "norm" or "value".
    public var clipping: String = "norm"
    public var clipValue: Double = 1.0
    public var loss: String = "mse"
    public var target: String = "last"
    public var dropout: Double = 0
    public var seed: UInt64 = 0
    /// Carry final states into the next batch as initial states (Keras' stateful,
    /// truncated BPTT over a long stream).
    public var carryState: Bool = false
    /// Samples per batch.
    public var batchSize: Int = 32
    /// Where batches come from: "adding:T" (the built-in adding problem at length T) or
    /// "file:PATH" (an HDF5 dataset file); kept so `--resume` can continue alone.
    public var data: String = ""
    /// The data files with their paths as given, absolute, and relative to the checkpoint
    /// (docs/FORMAT.md); nil in checkpoints written before they were stored, and for tasks.
    public var dataFiles: StoredDataFiles? = nil
    /// Data arrays are [N, T, ...]; nil: not stated (time-major).
    public var batchFirst: Bool? = nil
    /// Validation data files, or the last fraction of the training samples.
    public var validationFiles: StoredDataFiles? = nil
    public var validationSplit: Double? = nil
    /// Log every this many steps (nil: 100); save every this many too (nil or 0: at the end).
    public var logEvery: Int? = nil
    public var saveEvery: Int? = nil
    /// Stop after this many log lines without improvement of `monitor` (default val_loss).
    public var earlyStopping: Int? = nil
    public var monitor: String? = nil
    /// The best monitored value so far, so that a resumed run keeps counting.
    public var monitorState: MonitorState? = nil

    public init() {}

    public func makeOptimizer() throws -> Optimizer {
        guard let kind = OptimizerKind(rawValue: optimizer) else {
            throw SeqCellError(.invalidArgument, "optimizer must be one of sgd, adam, adamw; got '\(optimizer)'")
        }
        let sched: LRSchedule
        switch schedule {
        case "constant": sched = .constant
        case "step": sched = .step(every: scheduleStepEvery, gamma: scheduleGamma)
        case "cosine": sched = .cosine(totalSteps: scheduleTotalSteps, minLR: scheduleMinLR)
        default: throw SeqCellError(.invalidArgument, "schedule must be constant, step or cosine; got '\(schedule)'")
        }
        guard learningRate > 0, learningRate.isFinite else {
            throw SeqCellError(.invalidArgument, "learning rate must be positive, got \(learningRate)")
        }
        return Optimizer(kind: kind, learningRate: learningRate, momentum: momentum, weightDecay: weightDecay, schedule: sched)
    }

    public func makeClipping() throws -> Clipping {
        switch clipping {
        case "none": return .none
        case "norm": return .globalNorm(Float(clipValue))
        case "value": return .value(Float(clipValue))
        default: throw SeqCellError(.invalidArgument, "clipping must be none, norm or value; got '\(clipping)'")
        }
    }

    public func lossKind() throws -> LossKind {
        guard let k = LossKind(rawValue: loss) else {
            throw SeqCellError(.invalidArgument, "loss must be mse or cross_entropy; got '\(loss)'")
        }
        return k
    }

    public func targetMode() throws -> TargetMode {
        guard let m = TargetMode(rawValue: target) else {
            throw SeqCellError(.invalidArgument, "target must be last or all; got '\(target)'")
        }
        return m
    }
}

/// Early stopping's memory: the best monitored value, the step it was reached at, and the
/// log lines since.
public struct MonitorState: Codable, Equatable, Sendable {
    public var best: Double?
    public var bestStep: Int
    public var wait: Int

    public init(best: Double?, bestStep: Int, wait: Int) {
        self.best = best
        self.bestStep = bestStep
        self.wait = wait
    }
}

/// What one training step measured.
public struct StepStats: Sendable {
    public var step: Int
    public var loss: Double
    /// Global gradient norm before clipping.
    public var gradientNorm: Double
    public var clipped: Bool
    public var learningRate: Double
    /// ‖∂L/∂x_t‖ at the first layer's input for t = 0..<T, when asked for: how much
    /// gradient reaches each time step (the vanishing/exploding picture).
    public var stepGradientNorms: [Double]?
    /// The task's metric sums on this batch (training mode: with dropout), when asked for.
    public var metrics: MetricSums?
    /// Seconds this step spent in the communicator's collectives (0 in one process).
    public var communicationSeconds: Double = 0
}

/// Backprop through time through the plugins, with clipping, an optimizer, and state that
/// saves into and resumes from a checkpoint.
public struct Trainer: Sendable {
    public var model: Model
    public private(set) var config: TrainingConfig
    public private(set) var optimizer: Optimizer
    let clipping: Clipping
    let lossKind: LossKind
    let targetMode: TargetMode
    var rng: SplitMix64
    /// States carried between batches when `config.carryState` is on.
    var carried: [[[Tensor?]]] = []
    /// The model's parameter layout, built once (again only if the model's structure changes).
    public private(set) var tree: ParameterTree
    /// The step's flat parameter and gradient buffers, kept between steps.
    var flatParameters: [Float] = []
    var flatGradients: [Float] = []
    /// The processes training this model together (data parallel), or one process alone.
    /// With more than one rank, `trainStep` takes this rank's share of each global batch and
    /// every rank applies the same update: docs/DISTRIBUTED.md.
    public let communicator: any Communicator

    public init(model: Model, config: TrainingConfig, communicator: any Communicator = SingleProcessCommunicator()) throws {
        self.model = model
        self.config = config
        self.communicator = communicator
        optimizer = try config.makeOptimizer()
        clipping = try config.makeClipping()
        lossKind = try config.lossKind()
        targetMode = try config.targetMode()
        rng = SplitMix64(seed: config.seed)
        tree = model.parameterTree
        guard config.dropout >= 0, config.dropout < 1 else {
            throw SeqCellError(.invalidArgument, "dropout must be in [0, 1), got \(config.dropout)")
        }
        guard config.batchSize >= 1 else {
            throw SeqCellError(.invalidArgument, "batch size must be >= 1, got \(config.batchSize)")
        }
    }

    /// The training configuration a checkpoint stores.
    public static func storedConfig(of checkpoint: Checkpoint) throws -> TrainingConfig {
        guard let state = checkpoint.training else {
            throw SeqCellError(.checkpoint, "the checkpoint has no training state to resume from")
        }
        do {
            return try JSONDecoder().decode(TrainingConfig.self, from: Data(state.config.utf8))
        } catch {
            throw SeqCellError(.checkpoint, "the checkpoint's training config is not valid JSON for this SeqCell: \(error)")
        }
    }

    /// Resumes from a checkpoint that carries training state, with its stored configuration
    /// or `config` (the stored one with some options changed: the optimizer kind must stay).
    public init(resuming checkpoint: Checkpoint, config: TrainingConfig? = nil,
                communicator: any Communicator = SingleProcessCommunicator()) throws {
        guard let state = checkpoint.training else {
            throw SeqCellError(.checkpoint, "the checkpoint has no training state to resume from")
        }
        let config = try config ?? Trainer.storedConfig(of: checkpoint)
        guard config.optimizer == state.optimizer || state.slots.isEmpty else {
            throw SeqCellError(.invalidArgument, "the checkpoint's optimizer state is for \(state.optimizer), not \(config.optimizer)")
        }
        try self.init(model: checkpoint.model, config: config, communicator: communicator)
        guard state.rng.count == 8 else {
            throw SeqCellError(.checkpoint, "the checkpoint's rng state is \(state.rng.count) bytes, expected 8")
        }
        rng = SplitMix64(seed: state.rng.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }.littleEndian)
        guard state.step >= 0, state.step < Int.max else {
            throw SeqCellError(.checkpoint, "the checkpoint's training step \(state.step) is out of range")
        }
        // A checkpoint saved before the first step holds no slots: the first step makes them.
        let restored = state.step == 0 && state.slots.isEmpty ? OptimizerState.empty : try optimizer.state { name in
            guard let saved = state.slots[name] else { return nil }
            var flat = [Float](repeating: 0, count: tree.elementCount)
            for e in tree.entries {
                guard let t = saved[e.path] else {
                    throw SeqCellError(.checkpoint, "optimizer slot '\(name)' lacks parameter \(e.path)")
                }
                guard t.shape == e.shape, t.count == e.count else {
                    throw SeqCellError(.checkpoint, "optimizer slot '\(name)' for \(e.path) is \(t.shape); the parameter is \(e.shape)")
                }
                flat.replaceSubrange(e.range, with: t.data)
            }
            return flat
        }
        try optimizer.restore(step: state.step, state: restored)
    }

    public var step: Int { optimizer.step }

    /// The training state to save beside the model.
    public var state: TrainingState {
        let tree = self.tree.fits(model) ? self.tree : model.parameterTree
        var slots: [String: [String: Tensor]] = [:]
        for (name, values) in optimizer.state.namedSlots where values.count == tree.elementCount {
            slots[name] = Dictionary(uniqueKeysWithValues: zip(tree.entries.map(\.path), tree.tensors(values)))
        }
        let configJSON = (try? JSONEncoder().encode(config)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        let seed = rng.state.littleEndian
        return TrainingState(step: optimizer.step, optimizer: optimizer.kind.rawValue, config: configJSON,
                             rng: withUnsafeBytes(of: seed) { Array($0) }, slots: slots)
    }

    public var checkpoint: Checkpoint { Checkpoint(model: model, training: state) }

    /// Records a different data source (e.g. the same data moved to another path) when
    /// resuming; nothing else of the configuration changes.
    public mutating func setDataSource(_ spec: String) { config.data = spec }

    /// Records early stopping's progress (saved with the checkpoint).
    public mutating func setMonitorState(_ state: MonitorState) { config.monitorState = state }

    /// Forget carried states (start of a new stream).
    public mutating func resetState() { carried = [] }

    /// Loss and gradients for a batch, without updating anything.
    public func lossAndGradients(_ batch: Batch, initialStates: [[[Tensor?]]] = [], dropoutSeed: UInt64 = 0,
                                 training: Bool = true) throws -> (LossValue, Model.Output, Model.Gradients) {
        let fwd = try model.forward(batch, initialStates: initialStates, training: true,
                                    dropout: training ? Float(config.dropout) : 0, seed: dropoutSeed)
        if model.outputSteps == .last, targetMode == .lastStep {
            // Keras' return_sequences=False: the loss sees the model's [B, O] last-step output.
            let (loss, grads) = try model.lastStepLossAndGradients(fwd, lengths: batch.lengths) { y, z in
                try computeLoss(lossKind, mode: .lastStep, output: y, targets: batch.targets, lengths: nil,
                                outputActivation: model.head?.activation ?? .linear, preActivation: z)
            }
            return (loss, fwd, grads)
        }
        let loss = try computeLoss(lossKind, mode: targetMode, output: fwd.output, targets: batch.targets, lengths: batch.lengths,
                                   outputActivation: model.head?.activation ?? .linear, preActivation: fwd.headPreActivation)
        let grads = try model.backward(fwd, gradOutput: loss.gradOutput, wantInputGradient: true,
                                       gradOutputIsPreActivation: loss.gradientOfPreActivation)
        return (loss, fwd, grads)
    }

    /// One step: forward, loss, backward through every layer and direction, clipping, update.
    /// A NaN or Inf in the loss or the gradients throws before anything is changed.
    ///
    /// With a communicator of more than one rank, `batch` is this rank's share of the global
    /// batch (`DataParallel.shard`) and the step is data-parallel: one small all-reduce of
    /// (loss sum, item count, metric sums), then each rank's gradient — the gradient of its
    /// own mean loss, scaled by its share of the global item count, so that the sum is the
    /// gradient of the global mean loss exactly as one process over the whole batch computes
    /// it — all-reduced as one flat buffer. Clipping, the NaN/Inf checks and the update then
    /// see the global gradient, the same on every rank, so every rank stops at the same step
    /// or none does. `StepStats.loss` and the metrics are global.
    /// `measureMetrics` adds the task's metric sums on the batch (`StepStats.metrics`).
    @discardableResult
    public mutating func trainStep(_ batch: Batch, measureStepGradients: Bool = false, measureMetrics: Bool = false) throws -> StepStats {
        let stepNumber = optimizer.step + 1
        let parallel = communicator.size > 1
        var seconds = 0.0
        // Rank 0 keeps the one-process random stream; other ranks derive theirs from it.
        let dropoutSeed = DataParallel.dropoutSeed(rng.next(), rank: communicator.rank)
        let (loss, fwd, grads) = try lossAndGradients(batch, initialStates: config.carryState ? carried : [],
                                                      dropoutSeed: dropoutSeed)
        // What the loss read, taken before the update changes the head.
        let seen = measureMetrics ? try model.lossInput(fwd, mode: targetMode, lengths: batch.lengths) : nil
        // The loss accepted these shapes, lengths and class ids.
        var metrics: MetricSums? = nil
        if let seen {
            metrics = MetricSums.measureChecked(lossKind, mode: targetMode, output: seen.output, targets: batch.targets,
                                                lengths: seen.lengths, outputActivation: model.head?.activation ?? .linear)
        }
        var lossValue = loss.value
        var share = 1.0
        if parallel {
            var sums = [loss.value * loss.itemCount, loss.itemCount]
            if let m = metrics { sums += [m.lossSum, m.secondSum, Double(m.count)] }
            try timed(&seconds) { try communicator.allReduceSum(&sums) }
            lossValue = sums[0] / sums[1]
            share = loss.itemCount / sums[1]
            if var m = metrics {
                m.lossSum = sums[2]
                m.secondSum = sums[3]
                m.count = Int(sums[4].rounded())
                metrics = m
            }
        }
        guard lossValue.isFinite else {
            // Over ranks, a NaN's sign depends on the order of the sum: "nan" alone.
            throw SeqCellError(.numeric, "step \(stepNumber): the loss is \(lossValue.isNaN ? "nan" : "\(lossValue)"); stopping before the update (lower the learning rate or clip harder)")
        }
        if !tree.fits(model) { tree = model.parameterTree }
        try tree.gatherGradients(grads, into: &flatGradients)
        if parallel {
            let scale = Float(share)
            flatGradients.withUnsafeMutableBufferPointer { g in for j in g.indices { g[j] *= scale } }
            try timed(&seconds) { try communicator.allReduceSum(&flatGradients) }
        }
        var perStep: [Double]? = nil
        if measureStepGradients, let gx = grads.input, gx.rank == 3, gx.count == gx.shape.reduce(1, *) {
            let (T, B, I) = (gx.shape[0], gx.shape[1], gx.shape[2])
            // Each rank's input gradient is of its own mean loss: scaled by its share, as the
            // parameter gradients are, the squares over ranks add up to the global picture.
            var squares = (0..<T).map { t in
                var s = 0.0
                for i in (t * B * I)..<((t + 1) * B * I) { s += Double(gx.data[i]) * Double(gx.data[i]) }
                return s * share * share
            }
            if parallel { try timed(&seconds) { try communicator.allReduceSum(&squares) } }
            perStep = squares.map { $0.squareRoot() }
        }
        let (norm, clipped) = clip(&flatGradients, clipping)
        guard norm.isFinite else {
            throw SeqCellError(.numeric, "step \(stepNumber): the gradient norm is \(norm) (NaN or Inf in the gradients); stopping before the update")
        }
        let rate = optimizer.currentRate
        try optimizer.check(parameterCount: tree.elementCount, gradientCount: flatGradients.count)
        tree.gatherParameters(of: model, into: &flatParameters)
        optimizer.update(parameters: &flatParameters, gradients: flatGradients)
        try tree.scatterParameters(flatParameters, into: &model)
        if config.carryState {
            carried = fwd.finalStates.map { $0.map { $0.map { Optional($0) } } }
        }
        return StepStats(step: stepNumber, loss: lossValue, gradientNorm: norm, clipped: clipped, learningRate: rate,
                         stepGradientNorms: perStep, metrics: metrics, communicationSeconds: seconds)
    }

    private func timed(_ seconds: inout Double, _ body: () throws -> Void) rethrows {
        let start = DispatchTime.now().uptimeNanoseconds
        try body()
        seconds += Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9
    }

    /// The loss on a batch without training (no dropout, no update).
    public func evaluate(_ batch: Batch) throws -> Double {
        let out = try model.forward(batch)
        let seen = try model.lossInput(out, mode: targetMode, lengths: batch.lengths)
        return try computeLoss(lossKind, mode: targetMode, output: seen.output, targets: batch.targets, lengths: seen.lengths,
                               outputActivation: model.head?.activation ?? .linear, preActivation: seen.preActivation).value
    }
}

// MARK: - Data parallel

extension Trainer {
    /// Compares a digest of the parameters and the step over every rank: throws on every rank
    /// when any rank's parameters differ from rank 0's (replicas that drifted apart). Nothing
    /// to compare in one process.
    public func checkReplicasAgree() throws {
        guard communicator.size > 1 else { return }
        var f = Fingerprint()
        f.add(UInt64(step))
        for p in model.namedParameters { f.add(p.value) }
        let all = try communicator.allGather(withUnsafeBytes(of: f.digest.littleEndian) { Array($0) })
        if let r = all.firstIndex(where: { $0 != all[0] }) {
            throw SeqCellError(.numeric, "step \(step): the parameters on rank \(r) differ from those on rank 0 (the replicas drifted apart); stopping")
        }
    }
}

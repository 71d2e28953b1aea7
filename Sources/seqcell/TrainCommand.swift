import ArgumentParser
import Foundation
import SeqCell

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a checkpoint's model (backprop through time via the plugins), or resume a training run.",
        discussion: """
            Data: --data FILE, an HDF5 file with 'input' [T, N, I], 'targets' ([N, O] or \
            [T, N, O] for mse; class ids [N] or [T, N] for cross_entropy) and optional \
            'lengths' [N]; or --task adding (the built-in adding problem, --seq-len T).
            The output checkpoint carries the training state (optimizer moments, step, RNG, \
            configuration): 'seqcell train --resume OUT.h5 --steps M -o OUT2.h5' continues \
            exactly where it stopped. A NaN or Inf in the loss or gradients stops training \
            with a message naming the step and leaves the last saved checkpoint untouched.
            """)

    @OptionGroup var plugins: PluginOptions

    @Argument(help: "The model to train (a checkpoint, e.g. from 'seqcell new').")
    var model: String?

    @Option(help: "Resume from a checkpoint written by 'seqcell train' (its configuration is reused).")
    var resume: String?

    @Option(name: [.short, .customLong("output")], help: "Checkpoint to write (with training state).")
    var output: String

    @Option(help: "Training data (HDF5).")
    var data: String?

    @Option(help: "A built-in task instead of --data: adding.")
    var task: String?

    @Option(help: "Sequence length for --task adding.")
    var seqLen: Int = 50

    @Option(help: "Steps to run (in addition to those already taken, when resuming).")
    var steps: Int = 1000

    @Option(help: "Samples per batch.")
    var batchSize: Int?

    @Option(help: "sgd, adam or adamw.")
    var optimizer: String?

    @Option(name: .customLong("lr"), help: "Learning rate.")
    var learningRate: Double?

    @Option(help: "SGD momentum.")
    var momentum: Double?

    @Option(help: "Weight decay (L2 for sgd/adam, decoupled for adamw; default 0.01 for adamw).")
    var weightDecay: Double?

    @Option(help: "Learning-rate schedule: constant, step or cosine.")
    var schedule: String?

    @Option(help: "step schedule: multiply the rate by --gamma every this many steps.")
    var stepEvery: Int?

    @Option(help: "step schedule factor.")
    var gamma: Double?

    @Option(help: "cosine schedule: the final learning rate.")
    var minLR: Double?

    @Option(help: "Clip the global gradient norm to this value (default 1.0).")
    var clipNorm: Double?

    @Option(help: "Clip every gradient entry to [-v, v] instead.")
    var clipValue: Double?

    @Flag(help: "No gradient clipping.")
    var noClip = false

    @Option(help: "mse or cross_entropy.")
    var loss: String?

    @Option(help: "last (sequence to one) or all (sequence to sequence, padded steps masked).")
    var target: String?

    @Option(help: "Dropout between stacked layers (PyTorch's dropout).")
    var dropout: Double?

    @Flag(help: "Carry final states into the next batch (truncated BPTT over a stream; Keras' stateful).")
    var carryState = false

    @Option(help: "Random seed (batches, dropout).")
    var seed: UInt64?

    @Option(help: "Log every N steps.")
    var logEvery: Int = 100

    @Option(help: "Save the checkpoint every N steps too (0: only at the end).")
    var saveEvery: Int = 0

    @Flag(help: "At each log line, print ‖∂L/∂x_t‖ for t = T…1: the gradient reaching each time step.")
    var stepGradNorms = false

    func validate() throws {
        guard (model == nil) != (resume == nil) else { throw ValidationError("give a model to train, or --resume CHECKPOINT") }
        guard steps >= 1 else { throw ValidationError("--steps must be at least 1") }
        guard logEvery >= 1 else { throw ValidationError("--log-every must be at least 1") }
        let clips = [clipNorm != nil, clipValue != nil, noClip].filter { $0 }.count
        guard clips <= 1 else { throw ValidationError("give one of --clip-norm, --clip-value, --no-clip") }
        if let task, task != "adding" { throw ValidationError("--task must be 'adding'") }
        guard data == nil || task == nil else { throw ValidationError("give --data or --task, not both") }
    }

    func run() throws {
        let distributed = try DistributedTraining.start()  // one process, or a rank under mpirun
        try distributed.run { try train(distributed) }
    }

    func train(_ distributed: DistributedTraining) throws {
        let registry = plugins.registry()
        var trainer: Trainer
        if let resume {
            trainer = try Trainer(resuming: try Checkpoint.load(from: resume, registry: registry),
                                  communicator: distributed.communicator)
            if data != nil || task != nil { trainer.setDataSource(try dataSpec()) }
            print("resuming \(resume) at step \(trainer.step)")
        } else {
            var config = TrainingConfig()
            config.data = try dataSpec()
            apply(to: &config)
            trainer = try Trainer(model: try Checkpoint.load(from: model!, registry: registry).model, config: config,
                                  communicator: distributed.communicator)
        }
        let source = try distributed.batchSource(spec: trainer.config.data, config: trainer.config)
        try distributed.agree(DistributedTraining.fingerprints(registry: registry, trainer: trainer, data: distributed.dataFingerprint))
        print("training: \(trainer.config.optimizer) lr \(trainer.config.learningRate), clipping \(trainer.config.clipping)"
              + (trainer.config.clipping == "none" ? "" : " \(trainer.config.clipValue)")
              + ", loss \(trainer.config.loss) on \(trainer.config.target) steps, batch \(trainer.config.batchSize), data \(trainer.config.data)")
        let first = trainer.step
        var clipped = 0
        var lossSum = 0.0, count = 0
        let start = Date()
        for s in first..<(first + steps) {
            let batch = source.batch(step: s)
            let logNow = (s + 1 - first) % logEvery == 0 || s == first + steps - 1
            let stats: StepStats
            do {
                stats = try trainer.trainStep(batch, measureStepGradients: stepGradNorms && logNow)
            } catch let e as SeqCellError where e.kind == .numeric {
                let saved = saveEvery > 0 && FileManager.default.fileExists(atPath: output)
                throw CLIError(e.message + (saved ? "; \(output) holds the last good checkpoint" : "; nothing was written"))
            }
            distributed.record(stats)
            if stats.clipped { clipped += 1 }
            lossSum += stats.loss
            count += 1
            if logNow {
                print("step \(stats.step)  loss \(fmt(lossSum / Double(count)))  grad norm \(fmt(stats.gradientNorm))  "
                      + "clipped \(clipped)/\(s + 1 - first)  lr \(fmt(stats.learningRate))  "
                      + String(format: "%.1f s", Date().timeIntervalSince(start)))
                if let g = stats.stepGradientNorms {
                    print("  ‖∂L/∂x_t‖ t=T…1: " + g.reversed().map { String(format: "%.2e", $0) }.joined(separator: " "))
                }
                lossSum = 0
                count = 0
            }
            if saveEvery > 0, (s + 1 - first) % saveEvery == 0 { try distributed.save(trainer, to: output) }
        }
        try distributed.save(trainer, to: output)
        print("wrote \(output) at step \(trainer.step)")
        try distributed.printSummary(trainer)
    }

    func dataSpec() throws -> String {
        if let data { return "file:\(data)" }
        if task == "adding" { return "adding:\(seqLen)" }
        throw ValidationError("give --data FILE or --task adding")
    }

    func apply(to c: inout TrainingConfig) {
        if let v = batchSize { c.batchSize = v }
        if let v = optimizer { c.optimizer = v }
        if let v = learningRate { c.learningRate = v }
        if let v = momentum { c.momentum = v }
        if let v = weightDecay { c.weightDecay = v }
        if let v = schedule { c.schedule = v }
        if let v = stepEvery { c.scheduleStepEvery = v }
        if let v = gamma { c.scheduleGamma = v }
        if let v = minLR { c.scheduleMinLR = v }
        if c.schedule == "cosine" { c.scheduleTotalSteps = steps }
        if noClip { c.clipping = "none" }
        if let v = clipNorm { c.clipping = "norm"; c.clipValue = v }
        if let v = clipValue { c.clipping = "value"; c.clipValue = v }
        if let v = loss { c.loss = v }
        if let v = target { c.target = v }
        if let v = dropout { c.dropout = v }
        if carryState { c.carryState = true }
        if let v = seed { c.seed = v }
    }
}

/// Where batches come from, decided by the data spec stored in the training config.
struct BatchSource {
    let next: (Int) -> Batch

    init(spec: String, config: TrainingConfig) throws {
        if spec.hasPrefix("adding:"), let T = Int(spec.dropFirst("adding:".count)), T >= 2 {
            let task = AddingProblem(seqLen: T, batchSize: config.batchSize)
            let seed = config.seed
            next = { task.batch(seed: seed, step: $0) }
        } else if spec.hasPrefix("file:") {
            let data = try SequenceDataset.read(path: String(spec.dropFirst("file:".count)),
                                                perStepTargets: config.target == "all")
            let (size, seed) = (config.batchSize, config.seed)
            next = { data.batch(size: size, seed: seed, step: $0) }
        } else {
            throw CLIError("unknown data source '\(spec)' (expected file:PATH or adding:T)")
        }
    }

    /// Batches from any function of the step (a rank's shares: DistributedTraining).
    init(next: @escaping (Int) -> Batch) { self.next = next }

    func batch(step: Int) -> Batch { next(step) }
}

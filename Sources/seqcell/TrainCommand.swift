import ArgumentParser
import Foundation
import SeqCell
import SeqCellTools

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a checkpoint's model (backprop through time via the plugins), or resume a training run.",
        discussion: """
            Data (--data FILE): an HDF5 file or a .npz archive with 'input' [T, N, I] (integer token ids [T, N] for a model with an embedding stage), 'targets' \
            and optional 'lengths' [N] (integers); or a .npy input with --targets FILE.npy (and \
            --lengths FILE.npy). Targets: values [N, O] (--target last) or [T, N, O] (--target all) \
            for --loss mse; class ids [N] or [T, N] for --loss cross_entropy, integers of any width \
            (or integral floats) in 0..<O. With --batch-first every array is [N, T, ...] instead; when \
            the shapes fit both layouts and nothing says which, a warning says how it was read \
            (--time-major or --batch-first, or an HDF5 'layout' attribute, settles it). Or --task \
            adding (the built-in adding problem, --seq-len T).
            Validation: --validation FILE (same form as --data) or --validation-split F (the last \
            F of the samples, as Keras: the first floor(N·(1-F)) train). At each log line the metrics \
            (mse and mae for --loss mse; cross_entropy and accuracy for cross_entropy) are printed \
            for the training batches since the last line and, prefixed val_, for the whole \
            validation set. --early-stopping P stops when the --monitor metric (val_loss by default) \
            has not improved for P log lines; OUT.best.h5 (beside -o OUT.h5) then holds the best \
            state and -o the last.
            Every output folder, data file and option is checked before step 1.
            The output checkpoint carries the training state (optimizer moments, step, RNG, \
            configuration, data paths): 'seqcell train --resume OUT.h5 --steps M -o OUT2.h5' \
            continues exactly where it stopped, from any working directory. Options given with \
            --resume apply and are printed as changed (lr, schedule, clipping, batch size, data, \
            validation, log and save cadence, ...), except --loss, --target and --optimizer, \
            which are refused: the optimizer state belongs to them. A cosine schedule given \
            again (--schedule cosine or --min-lr) ends at the last step of the resumed run. A NaN or Inf in the loss or \
            gradients stops training with a message naming the step and leaves the last saved \
            checkpoint untouched.
            Logs: every logged step is a row of OUT.log.csv beside the output checkpoint \
            (appended as training runs; continued when resuming), OUT.loss.svg plots the loss \
            curve, and --logdir DIR adds TensorBoard event files ('tensorboard --logdir DIR').
            """)

    @OptionGroup var plugins: PluginOptions

    @OptionGroup var threadOptions: ThreadOptions

    @Argument(help: "The model to train (a checkpoint, e.g. from 'seqcell new').")
    var model: String?

    @Option(help: "Resume from a checkpoint written by 'seqcell train' (its configuration is reused).")
    var resume: String?

    @Option(name: [.short, .customLong("output")], help: "Checkpoint to write (with training state).")
    var output: String

    @Option(help: "Training data: .h5, .npz, or a .npy input (with --targets).")
    var data: String?

    @Option(help: "Targets (.npy) for a .npy --data.")
    var targets: String?

    @Option(help: "Lengths (.npy, integers [N]) for a .npy --data.")
    var lengths: String?

    @Flag(help: "Data arrays are [N, T, ...] (PyTorch's batch_first, Keras' layout).")
    var batchFirst = false

    @Flag(help: "Data arrays are [T, N, ...] (the default; says so, silencing the layout warning).")
    var timeMajor = false

    @Option(help: "A built-in task instead of --data: adding.")
    var task: String?

    @Option(parsing: .unconditional, help: "Sequence length for --task adding (at least 2).")
    var seqLen: Int = 50

    @Option(parsing: .unconditional, help: "Steps to run (in addition to those already taken, when resuming).")
    var steps: Int = 1000

    @Option(parsing: .unconditional, help: "Samples per batch (1 to the number of training samples; default 32).")
    var batchSize: Int?

    @Option(help: "sgd, adam or adamw.")
    var optimizer: String?

    @Option(name: .customLong("lr"), parsing: .unconditional, help: "Learning rate (> 0).")
    var learningRate: Double?

    @Option(parsing: .unconditional, help: "SGD momentum, in [0, 1).")
    var momentum: Double?

    @Option(parsing: .unconditional, help: "Weight decay, >= 0 (L2 for sgd/adam, decoupled for adamw; default 0.01 for adamw).")
    var weightDecay: Double?

    @Option(help: "Learning-rate schedule: constant, step or cosine.")
    var schedule: String?

    @Option(parsing: .unconditional, help: "step schedule: multiply the rate by --gamma every this many steps (>= 1).")
    var stepEvery: Int?

    @Option(parsing: .unconditional, help: "step schedule factor (> 0).")
    var gamma: Double?

    @Option(name: .customLong("min-lr"), parsing: .unconditional, help: "cosine schedule: the final learning rate (>= 0).")
    var minLR: Double?

    @Option(parsing: .unconditional, help: "Clip the global gradient norm to this value (> 0; default 1.0).")
    var clipNorm: Double?

    @Option(parsing: .unconditional, help: "Clip every gradient entry to [-v, v] instead (v > 0).")
    var clipValue: Double?

    @Flag(help: "No gradient clipping.")
    var noClip = false

    @Option(help: "mse or cross_entropy.")
    var loss: String?

    @Option(help: "last (sequence to one) or all (sequence to sequence, padded steps masked).")
    var target: String?

    @Option(parsing: .unconditional, help: "Dropout between stacked layers (PyTorch's dropout), in [0, 1).")
    var dropout: Double?

    @Flag(help: "Carry final states into the next batch (truncated BPTT over a stream; Keras' stateful).")
    var carryState = false

    @Option(help: "Random seed (batches, dropout).")
    var seed: UInt64?

    @Option(parsing: .unconditional, help: "Log every N steps (>= 1; default 100).")
    var logEvery: Int?

    @Option(parsing: .unconditional, help: "Save the checkpoint every N steps too (0: only at the end, the default).")
    var saveEvery: Int?

    @Option(help: "Validation data (.h5, .npz, or a .npy input with --validation-targets; same layout as --data).")
    var validation: String?

    @Option(help: "Targets (.npy) for a .npy --validation.")
    var validationTargets: String?

    @Option(help: "Lengths (.npy) for a .npy --validation.")
    var validationLengths: String?

    @Option(parsing: .unconditional, help: "Validate on the last F of the --data samples instead (0 < F < 1).")
    var validationSplit: Double?

    @Option(parsing: .unconditional, help: "Stop when the monitored validation metric has not improved for this many log lines (>= 1).")
    var earlyStopping: Int?

    @Option(help: "The metric --early-stopping watches: val_loss (default), val_mse, val_mae, val_cross_entropy or val_accuracy.")
    var monitor: String?

    @Flag(help: "At each log line, print ‖∂L/∂x_t‖ for t = T…1: the gradient reaching each time step.")
    var stepGradNorms = false

    @Option(help: "Also write TensorBoard event files into this folder (created if missing).")
    var logdir: String?

    static let monitors = ["val_loss", "val_mse", "val_mae", "val_cross_entropy", "val_accuracy"]

    func validate() throws {
        guard (model == nil) != (resume == nil) else { throw ValidationError("give a model to train, or --resume CHECKPOINT") }
        func atLeast(_ option: String, _ v: Int?, _ low: Int, _ note: String = "") throws {
            if let v, v < low { throw ValidationError("\(option) must be at least \(low)\(note), got \(v)") }
        }
        func positive(_ option: String, _ v: Double?) throws {
            if let v, !(v > 0 && v.isFinite) { throw ValidationError("\(option) must be a number greater than 0, got \(v)") }
        }
        func inRange(_ option: String, _ v: Double?, _ range: String, _ ok: (Double) -> Bool) throws {
            if let v, !(v.isFinite && ok(v)) { throw ValidationError("\(option) must be in \(range), got \(v)") }
        }
        try atLeast("--steps", steps, 1)
        try atLeast("--log-every", logEvery, 1)
        try atLeast("--save-every", saveEvery, 0, " (0: only at the end)")
        try atLeast("--batch-size", batchSize, 1)
        try atLeast("--seq-len", seqLen, 2)
        try atLeast("--step-every", stepEvery, 1)
        try atLeast("--early-stopping", earlyStopping, 1, " (log lines without improvement)")
        try positive("--lr", learningRate)
        try positive("--gamma", gamma)
        try positive("--clip-norm", clipNorm)
        try positive("--clip-value", clipValue)
        try inRange("--momentum", momentum, "[0, 1)") { $0 >= 0 && $0 < 1 }
        try inRange("--weight-decay", weightDecay, "[0, ∞)") { $0 >= 0 }
        try inRange("--min-lr", minLR, "[0, ∞)") { $0 >= 0 }
        try inRange("--dropout", dropout, "[0, 1)") { $0 >= 0 && $0 < 1 }
        try inRange("--validation-split", validationSplit, "(0, 1)") { $0 > 0 && $0 < 1 }
        let clips = [clipNorm != nil, clipValue != nil, noClip].filter { $0 }.count
        guard clips <= 1 else { throw ValidationError("give one of --clip-norm, --clip-value, --no-clip") }
        if let task, task != "adding" { throw ValidationError("--task must be 'adding', got '\(task)'") }
        guard data == nil || task == nil else { throw ValidationError("give --data or --task, not both") }
        guard !(batchFirst && timeMajor) else { throw ValidationError("give --batch-first or --time-major, not both") }
        guard validation == nil || validationSplit == nil else { throw ValidationError("give --validation or --validation-split, not both") }
        if targets != nil || lengths != nil, data == nil { throw ValidationError("--targets and --lengths go with a .npy --data file") }
        if validationTargets != nil || validationLengths != nil, validation == nil {
            throw ValidationError("--validation-targets and --validation-lengths go with a .npy --validation file")
        }
        if let v = optimizer, OptimizerKind(rawValue: v) == nil { throw ValidationError("--optimizer must be sgd, adam or adamw, got '\(v)'") }
        if let v = schedule, !["constant", "step", "cosine"].contains(v) { throw ValidationError("--schedule must be constant, step or cosine, got '\(v)'") }
        if let v = loss, LossKind(rawValue: v) == nil { throw ValidationError("--loss must be mse or cross_entropy, got '\(v)'") }
        if let v = target, TargetMode(rawValue: v) == nil { throw ValidationError("--target must be last or all, got '\(v)'") }
        if let v = monitor, !Self.monitors.contains(v) { throw ValidationError("--monitor must be one of \(Self.monitors.joined(separator: ", ")), got '\(v)'") }
    }

    /// What `validateBeforeWork` prepared: nothing of it has trained yet.
    struct Prepared {
        var trainer: Trainer
        var source: BatchSource
        /// The training samples `source` draws from (nil for a built-in task).
        var dataset: SequenceDataset?
        var validation: SequenceDataset?
        var changes: [String]
        var dataNote: String
    }

    func run() throws {
        FreedMemory.keepInProcess()
        let distributed = try DistributedTraining.start()  // one process, or a rank under mpirun
        try distributed.run { try train(distributed) }
    }

    func train(_ distributed: DistributedTraining) throws {
        threadOptions.apply()  // --threads, when given, wins over the per-rank default
        let registry = plugins.registry()
        let p = try validateBeforeWork(registry: registry, communicator: distributed.communicator)
        var trainer = p.trainer
        let config = trainer.config
        if let resume {
            print("resuming \(resume) at step \(trainer.step)")
            for c in p.changes { print("  changed: \(c)") }
        }
        let source = try distributed.batchSource(p.source, dataset: p.dataset, config: config)
        try distributed.agree(DistributedTraining.fingerprints(registry: registry, trainer: trainer, data: distributed.dataFingerprint))
        print("training: \(config.optimizer) lr \(config.learningRate), clipping \(config.clipping)"
              + (config.clipping == "none" ? "" : " \(config.clipValue)")
              + ", loss \(config.loss) on \(config.target) steps, batch \(config.batchSize), data \(p.dataNote)")
        let lossKind = try config.lossKind()
        let logEvery = config.logEvery ?? 100, saveEvery = config.saveEvery ?? 0
        let monitorName = config.monitor ?? "val_loss"
        let best = bestPath(output)
        let first = trainer.step
        // Rank 0 alone logs (and prints: other ranks' stdout is closed under mpirun).
        let logger = distributed.rank != 0 ? nil : try TrainingLogger(
            csv: TrainingLogger.companionPath(of: output, "log.csv"), svg: TrainingLogger.companionPath(of: output, "loss.svg"),
            eventDirectory: logdir, title: "seqcell train: \((output as NSString).lastPathComponent)",
            continuing: resume.map { TrainingLogger.companionPath(of: $0, "log.csv") }, resumedStep: first)
        if let logger {
            print("logging to " + ([logger.csvPath, logger.svgPath, logger.eventFilePath].compactMap { $0 }.joined(separator: ", "))
                  + (logger.continuedFrom.map { " (continuing \(logger.continuedRows) rows of \($0))" } ?? ""))
        }
        var clipped = 0, clippedInInterval = 0
        var lossSum = 0.0, count = 0
        var interval = MetricSums(kind: lossKind)
        let start = Date()
        var stoppedEarly: String? = nil
        for s in first..<(first + steps) {
            let batch = source.batch(step: s)
            let logNow = (s + 1 - first) % logEvery == 0 || s == first + steps - 1
            let stats: StepStats
            do {
                stats = try trainer.trainStep(batch, measureStepGradients: stepGradNorms && logNow, measureMetrics: true)
            } catch let e as SeqCellError where e.kind == .numeric {
                let saved = saveEvery > 0 && FileManager.default.fileExists(atPath: output)
                try? logger?.finish()
                throw CLIError(e.message + (saved ? "; \(output) holds the last good checkpoint" : "; nothing was written"))
            }
            distributed.record(stats)
            if stats.clipped { clipped += 1; clippedInInterval += 1 }
            lossSum += stats.loss
            count += 1
            if let m = stats.metrics { interval.add(m) }
            if logNow {
                let elapsed = Date().timeIntervalSince(start)
                var parts = ["step \(stats.step)", "loss \(fmt(lossSum / Double(count)))", "grad norm \(fmt(stats.gradientNorm))",
                             "clipped \(clipped)/\(s + 1 - first)", "lr \(fmt(stats.learningRate))"]
                var scalars: [(String, Double)] = [("loss", lossSum / Double(count)), ("lr", stats.learningRate),
                                                   ("grad_norm", stats.gradientNorm),
                                                   ("clipped_fraction", Double(clippedInInterval) / Double(count))]
                parts += interval.values.map { "\($0.name) \(fmt($0.value))" }
                scalars += interval.values.map { ($0.name, $0.value) }
                let validationSums = try evaluateMetrics(trainer, p.validation)
                if let v = validationSums {
                    parts += v.values.map { "val_\($0.name) \(fmt($0.value))" }
                    scalars += v.values.map { ("val_\($0.name)", $0.value) }
                }
                parts.append(TrainingProgress.describe(elapsed: elapsed, completed: s + 1 - first, total: steps))
                try logger?.record(step: stats.step, elapsed: elapsed, scalars: scalars,
                                  histogram: stats.stepGradientNorms.map { (name: "step_grad_norms", values: $0) })
                clippedInInterval = 0
                print(parts.joined(separator: "  "))
                if let g = stats.stepGradientNorms {
                    print("  ‖∂L/∂x_t‖ t=T…1: " + g.reversed().map { String(format: "%.2e", $0) }.joined(separator: " "))
                }
                lossSum = 0
                count = 0
                interval = MetricSums(kind: lossKind)
                if let patience = config.earlyStopping, let v = validationSums {
                    let metric = monitorName == "val_loss" ? "loss" : String(monitorName.dropFirst(4))
                    // Every rank takes rank 0's value, so all take the same branch below.
                    let current = try distributed.rootValue(v.value(metric) ?? .nan)
                    var state = trainer.config.monitorState ?? MonitorState(best: nil, bestStep: 0, wait: 0)
                    let better = MetricSums.higherIsBetter(metric) ? state.best.map { current > $0 } ?? true
                                                                     : state.best.map { current < $0 } ?? true
                    if current.isFinite && better {
                        state = MonitorState(best: current, bestStep: stats.step, wait: 0)
                        trainer.setMonitorState(state)
                        try distributed.save(trainer, to: best)
                    } else {
                        state.wait += 1
                        trainer.setMonitorState(state)
                    }
                    if state.wait >= patience {
                        stoppedEarly = "early stopping at step \(stats.step): \(monitorName) has not improved for \(patience) log line(s); "
                            + "best \(state.best.map(fmt) ?? "none") at step \(state.bestStep), kept in \(best)"
                    }
                }
            }
            if saveEvery > 0, (s + 1 - first) % saveEvery == 0 { try distributed.save(trainer, to: output) }
            if stoppedEarly != nil { break }
        }
        try distributed.save(trainer, to: output)
        try logger?.finish()
        if let stoppedEarly { print(stoppedEarly) }
        print("wrote \(output) at step \(trainer.step)")
        try distributed.printSummary(trainer)
    }

    /// The metrics on the whole validation set, or nil without one.
    func evaluateMetrics(_ trainer: Trainer, _ validation: SequenceDataset?) throws -> MetricSums? {
        guard let validation else { return nil }
        return try MetricSums.evaluate(trainer.model, on: validation, kind: try trainer.config.lossKind(),
                                       mode: try trainer.config.targetMode(), batchSize: max(trainer.config.batchSize, 64))
    }

    /// Where the best state goes with --early-stopping: OUT.best.h5 beside OUT.h5.
    func bestPath(_ output: String) -> String {
        let ext = (output as NSString).pathExtension
        return ext.isEmpty ? output + ".best.h5" : (output as NSString).deletingPathExtension + ".best." + ext
    }

    /// Everything that can be checked before step 1: output folders (exist, writable), the
    /// model, the configuration (with --resume: what changes, what is refused), every data
    /// file against the model, loss and target mode, batch size against the samples.
    func validateBeforeWork(registry: PluginRegistry, communicator: any Communicator = SingleProcessCommunicator()) throws -> Prepared {
        try checkWritable(output, option: "-o")
        let checkpoint = try Checkpoint.load(from: resume ?? model!, registry: registry)
        let net = checkpoint.model
        var config: TrainingConfig
        var changes: [String] = []
        var files: DataFiles? = nil
        var validationFiles: DataFiles? = nil
        if let resume {
            let old = try Trainer.storedConfig(of: checkpoint)
            (config, changes, files, validationFiles) = try resumeChanges(from: old, resume: resume, startStep: checkpoint.training?.step ?? 0)
        } else {
            config = TrainingConfig()
            apply(to: &config)
            if let data {
                files = DataFiles(input: data, targets: targets, lengths: lengths)
                config.dataFiles = StoredDataFiles(given: files!, resolved: files!, checkpoint: output)
            }
            if let validation {
                validationFiles = DataFiles(input: validation, targets: validationTargets, lengths: validationLengths)
                config.validationFiles = StoredDataFiles(given: validationFiles!, resolved: validationFiles!, checkpoint: output)
            }
        }
        if config.earlyStopping != nil {
            try checkWritable(bestPath(output), option: "-o (the best checkpoint beside it)")
            guard config.validationFiles != nil || config.validationSplit != nil else {
                throw CLIError("--early-stopping needs validation data: give --validation FILE or --validation-split F")
            }
            let monitor = config.monitor ?? "val_loss"
            let names = ["val_loss"] + MetricSums.names(for: try config.lossKind()).map { "val_" + $0 }
            guard names.contains(monitor) else {
                throw CLIError("--monitor \(monitor) is not measured for --loss \(config.loss); give one of \(names.joined(separator: ", "))")
            }
        }
        let lossKind = try config.lossKind(), mode = try config.targetMode()
        let layout = DataLayout(batchFirst: config.batchFirst ?? false, stated: batchFirst || timeMajor || config.batchFirst != nil)
        var validationSet: SequenceDataset? = nil
        let source: BatchSource
        var dataset: SequenceDataset? = nil
        let dataNote: String
        try files?.checkCombination()
        try validationFiles?.checkCombination(option: "--validation", companion: "--validation-")
        if let files {
            let loaded = try TrainingData.load(files, layout: layout, loss: lossKind, target: mode,
                                               inputSize: net.inputSize, outputSize: net.outputSize,
                                               embedding: net.embedding)
            if let w = loaded.layoutWarning { warn(w) }
            var trainSet = loaded.dataset
            var note = "\(files.description) (\(trainSet.count) samples"
            if let f = config.validationSplit {
                let parts = try trainSet.splitLast(fraction: f)
                (trainSet, validationSet) = (parts.train, parts.validation)
                note += ": the first \(parts.train.count) train, the last \(parts.validation.count) validate"
            }
            guard config.batchSize <= trainSet.count else {
                throw CLIError((batchSize != nil ? "--batch-size" : "the batch size") + " \(config.batchSize) is larger than the \(trainSet.count) training samples"
                               + " in \(files.description); give --batch-size 1...\(trainSet.count)")
            }
            source = BatchSource(dataset: trainSet, config: config)
            dataset = trainSet
            dataNote = note + ")"
        } else if config.data.hasPrefix("adding:") {
            if let e = net.embedding {
                throw CLIError("--task adding gives float features; this model starts with an embedding stage (vocabulary \(e.vocabularySize)) and takes token ids: train it with --data FILE")
            }
            guard net.inputSize == 2, net.outputSize == 1, lossKind == .mse, mode == .lastStep else {
                throw CLIError("--task adding feeds 2 features per step and trains 1 output with --loss mse --target last; "
                               + "this model takes \(net.inputSize) and outputs \(net.outputSize)"
                               + (lossKind == .mse && mode == .lastStep ? "" : ", with --loss \(config.loss) --target \(config.target)"))
            }
            guard config.validationSplit == nil else { throw CLIError("--validation-split splits --data; --task adding has no fixed samples") }
            source = try BatchSource(spec: config.data, config: config)
            dataNote = config.data
        } else {
            throw CLIError("give --data FILE or --task adding")
        }
        if let validationFiles {
            let loaded = try TrainingData.load(validationFiles, layout: layout, loss: lossKind, target: mode,
                                               inputSize: net.inputSize, outputSize: net.outputSize,
                                               embedding: net.embedding)
            if let w = loaded.layoutWarning { warn(w) }
            validationSet = loaded.dataset
        }
        let trainer = resume != nil ? try Trainer(resuming: checkpoint, config: config, communicator: communicator)
                                     : try Trainer(model: net, config: config, communicator: communicator)
        let validationNote = validationFiles.map { ", validation \($0.description) (\(validationSet?.count ?? 0) samples)" } ?? ""
        return Prepared(trainer: trainer, source: source, dataset: dataset, validation: validationSet, changes: changes, dataNote: dataNote + validationNote)
    }

    /// The configuration a resumed run trains with: the stored one, with every option given
    /// applied, and what changed ("lr 0.001 -> 0.01"). --loss, --target and --optimizer must
    /// not change: the optimizer state (and the best metric so far) belong to them.
    func resumeChanges(from old: TrainingConfig, resume: String, startStep: Int) throws
        -> (TrainingConfig, [String], DataFiles?, DataFiles?) {
        func refuse(_ option: String, _ was: String, _ now: String) -> CLIError {
            CLIError("\(option) \(now) cannot apply with --resume: \(resume) trains with \(option) \(was) and its optimizer state "
                     + "belongs to that; start a new run from its weights instead (seqcell train \(resume) \(option) \(now) ... -o OUT)")
        }
        if let v = loss, v != old.loss { throw refuse("--loss", old.loss, v) }
        if let v = target, v != old.target { throw refuse("--target", old.target, v) }
        if let v = optimizer, v != old.optimizer { throw refuse("--optimizer", old.optimizer, v) }
        var c = old
        apply(to: &c, resumingAt: startStep)
        var files: DataFiles? = nil
        if let data {
            files = DataFiles(input: data, targets: targets, lengths: lengths)
            c.dataFiles = StoredDataFiles(given: files!, resolved: files!, checkpoint: output)
        } else if task != nil {
            c.dataFiles = nil
        } else if let stored = old.dataFiles {
            files = try stored.resolve(checkpoint: resume)
            c.dataFiles = StoredDataFiles(given: stored.given, resolved: files!, checkpoint: output)
        } else if old.data.hasPrefix("file:") {
            let given = String(old.data.dropFirst("file:".count))
            files = DataFiles(input: try StoredPath.resolveLegacy(given, checkpoint: resume))
            c.dataFiles = StoredDataFiles(given: DataFiles(input: given), resolved: files!, checkpoint: output)
        }
        var validationFiles: DataFiles? = nil
        if let validation {
            validationFiles = DataFiles(input: validation, targets: validationTargets, lengths: validationLengths)
            c.validationFiles = StoredDataFiles(given: validationFiles!, resolved: validationFiles!, checkpoint: output)
            c.validationSplit = nil
        } else if validationSplit != nil {
            c.validationFiles = nil
        } else if let stored = old.validationFiles {
            validationFiles = try stored.resolve(checkpoint: resume)
            c.validationFiles = StoredDataFiles(given: stored.given, resolved: validationFiles!, checkpoint: output)
        }
        // The best value so far belongs to one metric on one validation set.
        if (c.monitor ?? "val_loss") != (old.monitor ?? "val_loss") || validationText(c) != validationText(old) {
            c.monitorState = nil
        }
        var changes: [String] = []
        func note(_ name: String, _ a: String, _ b: String) { if a != b { changes.append("\(name) \(a) -> \(b)") } }
        func opt<T>(_ v: T?, _ none: String = "none") -> String { v.map { "\($0)" } ?? none }
        note("lr", "\(old.learningRate)", "\(c.learningRate)")
        note("momentum", "\(old.momentum)", "\(c.momentum)")
        note("weight decay", opt(old.weightDecay, "default"), opt(c.weightDecay, "default"))
        note("schedule", scheduleText(old), scheduleText(c))
        note("clipping", old.clipping == "none" ? "none" : "\(old.clipping) \(old.clipValue)", c.clipping == "none" ? "none" : "\(c.clipping) \(c.clipValue)")
        note("batch size", "\(old.batchSize)", "\(c.batchSize)")
        note("dropout", "\(old.dropout)", "\(c.dropout)")
        note("carry state", "\(old.carryState)", "\(c.carryState)")
        note("seed", "\(old.seed)", "\(c.seed)")
        note("data", old.dataFiles?.given.description ?? old.data, c.dataFiles?.given.description ?? c.data)
        note("layout", (old.batchFirst ?? false) ? "batch-first" : "time-major", (c.batchFirst ?? false) ? "batch-first" : "time-major")
        note("validation", validationText(old), validationText(c))
        note("log every", "\(old.logEvery ?? 100)", "\(c.logEvery ?? 100)")
        note("save every", "\(old.saveEvery ?? 0)", "\(c.saveEvery ?? 0)")
        note("early stopping", opt(old.earlyStopping), opt(c.earlyStopping))
        note("monitor", old.monitor ?? "val_loss", c.monitor ?? "val_loss")
        return (c, changes, files, validationFiles)
    }

    func scheduleText(_ c: TrainingConfig) -> String {
        switch c.schedule {
        case "step": return "step (every \(c.scheduleStepEvery), gamma \(c.scheduleGamma))"
        case "cosine": return "cosine (to \(c.scheduleMinLR) at step \(c.scheduleTotalSteps))"
        default: return c.schedule
        }
    }

    func validationText(_ c: TrainingConfig) -> String {
        if let f = c.validationFiles { return f.given.description }
        if let s = c.validationSplit { return "split \(s)" }
        return "none"
    }

    /// Applies the options given; `resumingAt` is the step a resumed run starts from (a
    /// cosine schedule given again then ends where this run ends).
    func apply(to c: inout TrainingConfig, resumingAt: Int? = nil) {
        if let v = batchSize { c.batchSize = v }
        if let v = optimizer { c.optimizer = v }
        if let v = learningRate { c.learningRate = v }
        if let v = momentum { c.momentum = v }
        if let v = weightDecay { c.weightDecay = v }
        if let v = schedule { c.schedule = v }
        if let v = stepEvery { c.scheduleStepEvery = v }
        if let v = gamma { c.scheduleGamma = v }
        if let v = minLR { c.scheduleMinLR = v }
        if c.schedule == "cosine" {
            if let resumingAt {
                if schedule != nil || minLR != nil { c.scheduleTotalSteps = resumingAt + steps }
            } else {
                c.scheduleTotalSteps = steps
            }
        }
        if noClip { c.clipping = "none" }
        if let v = clipNorm { c.clipping = "norm"; c.clipValue = v }
        if let v = clipValue { c.clipping = "value"; c.clipValue = v }
        if let v = loss { c.loss = v }
        if let v = target { c.target = v }
        if let v = dropout { c.dropout = v }
        if carryState { c.carryState = true }
        if let v = seed { c.seed = v }
        if let data { c.data = "file:\(data)" }
        if task == "adding" { c.data = "adding:\(seqLen)" }
        if batchFirst { c.batchFirst = true }
        if timeMajor { c.batchFirst = false }
        if let v = logEvery { c.logEvery = v }
        if let v = saveEvery { c.saveEvery = v }
        if let v = validationSplit { c.validationSplit = v }
        if let v = earlyStopping { c.earlyStopping = v }
        if let v = monitor { c.monitor = v }
    }
}

/// Whether `warn` prints: false on the ranks other than 0 under mpirun, which would repeat
/// rank 0's warnings (they read the same data with the same options).
nonisolated(unsafe) var warningsShown = true

/// One line on stderr: `warning: text`.
func warn(_ text: String) {
    guard warningsShown else { return }
    fflush(nil)
    let line = "warning: " + MessageText.oneLine(text, keepingWhole: userArguments) + "\n"
    Array(line.utf8).withUnsafeBytes { _ = writeAll($0, to: STDERR_FILENO) }
}

/// Checks that `path` can be written before any work: its folder exists, is a folder, and
/// takes a new file (one is created and removed); `path` itself is not a folder.
func checkWritable(_ path: String, option: String) throws {
    let parent = (path as NSString).deletingLastPathComponent
    let folder = parent.isEmpty ? "." : parent
    var isFolder: ObjCBool = false
    guard FileManager.default.fileExists(atPath: folder, isDirectory: &isFolder) else {
        throw CLIError("\(option) \(path): the folder '\(folder)' does not exist; nothing was done")
    }
    guard isFolder.boolValue else { throw CLIError("\(option) \(path): '\(folder)' is not a folder; nothing was done") }
    if FileManager.default.fileExists(atPath: path, isDirectory: &isFolder), isFolder.boolValue {
        throw CLIError("\(option) \(path) is a folder; give a file name")
    }
    let probe = (folder as NSString).appendingPathComponent(".seqcell-write-check-\(getpid())")
    let fd = open(probe, O_CREAT | O_EXCL | O_WRONLY, 0o600)
    guard fd >= 0 else {
        let reason = String(cString: strerror(errno))
        throw CLIError("\(option) \(path): cannot create files in the folder '\(folder)' (\(reason.prefix(1).lowercased() + reason.dropFirst())); nothing was done")
    }
    close(fd)
    unlink(probe)
}

/// Where batches come from, decided by the data spec stored in the training config.
struct BatchSource {
    let next: (Int) -> Batch

    init(dataset: SequenceDataset, config: TrainingConfig) {
        let (size, seed) = (config.batchSize, config.seed)
        next = { dataset.batch(size: size, seed: seed, step: $0) }
    }

    init(spec: String, config: TrainingConfig) throws {
        if spec.hasPrefix("adding:"), let T = Int(spec.dropFirst("adding:".count)), T >= 2 {
            let task = AddingProblem(seqLen: T, batchSize: config.batchSize)
            let seed = config.seed
            next = { task.batch(seed: seed, step: $0) }
        } else {
            throw CLIError("unknown data source '\(spec)' (expected adding:T)")
        }
    }

    /// Batches from any function of the step (a rank's shares: DistributedTraining).
    init(next: @escaping (Int) -> Batch) { self.next = next }

    func batch(step: Int) -> Batch { next(step) }
}

import ArgumentParser
import Foundation
import SeqCell

struct EvaluateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "evaluate",
        abstract: "Compute a model's loss and metrics on a data set (no training).",
        discussion: """
            Data as for 'seqcell train --data': an HDF5 file or .npz archive with 'input', \
            'targets' and optional 'lengths', or a .npy input with --targets (and --lengths). \
            --loss and --target default to those the checkpoint was trained with (else mse, last). \
            Metrics: mse and mae for --loss mse; cross_entropy and accuracy for cross_entropy — \
            means over every compared item (each sample's last valid step, or every valid step \
            with --target all), over all samples.
            """)

    @OptionGroup var plugins: PluginOptions

    @OptionGroup var threadOptions: ThreadOptions

    @Argument(help: "The model checkpoint.")
    var model: String

    @Option(help: "The data: .h5, .npz, or a .npy input (with --targets).")
    var data: String

    @Option(help: "Targets (.npy) for a .npy --data.")
    var targets: String?

    @Option(help: "Lengths (.npy, integers [N]) for a .npy --data.")
    var lengths: String?

    @Flag(help: "Data arrays are [N, T, ...].")
    var batchFirst = false

    @Flag(help: "Data arrays are [T, N, ...] (the default; says so, silencing the layout warning).")
    var timeMajor = false

    @Option(help: "mse or cross_entropy (default: the checkpoint's training loss, else mse).")
    var loss: String?

    @Option(help: "last or all (default: the checkpoint's training target, else last).")
    var target: String?

    @Option(parsing: .unconditional, help: "Samples per forward pass (>= 1; changes memory use, not the result).")
    var batchSize: Int = 256

    @Flag(help: "Print JSON.")
    var json = false

    func validate() throws {
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1, got \(batchSize)") }
        guard !(batchFirst && timeMajor) else { throw ValidationError("give --batch-first or --time-major, not both") }
        if let v = loss, LossKind(rawValue: v) == nil { throw ValidationError("--loss must be mse or cross_entropy, got '\(v)'") }
        if let v = target, TargetMode(rawValue: v) == nil { throw ValidationError("--target must be last or all, got '\(v)'") }
    }

    func run() throws {
        threadOptions.apply()
        let registry = plugins.registry()
        let checkpoint = try Checkpoint.load(from: model, registry: registry)
        let stored = checkpoint.training != nil ? try? Trainer.storedConfig(of: checkpoint) : nil
        let lossKind = LossKind(rawValue: loss ?? stored?.loss ?? "mse") ?? .mse
        let mode = TargetMode(rawValue: target ?? stored?.target ?? "last") ?? .lastStep
        let files = DataFiles(input: data, targets: targets, lengths: lengths)
        let loaded = try TrainingData.load(files, layout: DataLayout(batchFirst: batchFirst, stated: batchFirst || timeMajor),
                                           loss: lossKind, target: mode, inputSize: checkpoint.model.inputSize,
                                           outputSize: checkpoint.model.outputSize, embedding: checkpoint.model.embedding)
        if let w = loaded.layoutWarning { warn(w) }
        let sums = try MetricSums.evaluate(checkpoint.model, on: loaded.dataset, kind: lossKind, mode: mode, batchSize: batchSize)
        if json {
            var metrics: [String: Any] = [:]
            for (name, value) in sums.values { metrics[name] = value.isFinite ? value : NSNull() }
            let object: [String: Any] = [
                "model": model, "data": files.description, "samples": loaded.dataset.count, "items": lossKind == .mse ? sums.count / max(checkpoint.model.outputSize, 1) : sums.count,
                "loss": lossKind.rawValue, "target": mode.rawValue, "metrics": metrics,
            ]
            let bytes = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
            print(String(decoding: bytes, as: UTF8.self))
        } else {
            print("evaluated \(model) on \(files.description): \(loaded.dataset.count) samples, loss \(lossKind.rawValue) on \(mode.rawValue) steps")
            for (name, value) in sums.values { print("\(name) \(fmt(value))") }
        }
    }
}

// The adding problem through the library API: build, train, evaluate, save, reload.
//   swift run -c release adding-sample --cell lstm --steps 1500
import ArgumentParser
import Foundation
import SeqCell
import SeqCellTools

@main
struct AddingSample: ParsableCommand {
    @Option(help: "rnn, lstm, gru, or any cell a plugin provides.") var cell = "lstm"
    @Option(help: "Sequence length.") var seqLen = 50
    @Option(help: "Training steps.") var steps = 1500
    @Option(help: "Where to save the trained model.") var output = "out/adding-sample.h5"

    func run() throws {
        let registry = PluginRegistry.standard()
        let model = try Model.build(inputSize: 2, layers: [LayerSpec(cell: cell, hiddenSize: 32)],
                                    head: HeadSpec(outputSize: 1), registry: registry, seed: 1)
        var config = TrainingConfig()
        config.learningRate = 0.01
        config.clipping = "norm"
        config.clipValue = 1
        var trainer = try Trainer(model: model, config: config)
        let task = AddingProblem(seqLen: seqLen, batchSize: 32)
        var rng = SplitMix64(seed: 7)
        let test = AddingProblem(seqLen: seqLen, batchSize: 500).batch(rng: &rng)
        for step in 0..<steps {
            let stats = try trainer.trainStep(task.batch(seed: 1, step: step))
            if (step + 1) % max(steps / 10, 1) == 0 {
                print("step \(step + 1): train MSE \(stats.loss), test MSE \(try trainer.evaluate(test))")
            }
        }
        try FileManager.default.createDirectory(atPath: (output as NSString).deletingLastPathComponent,
                                                withIntermediateDirectories: true)
        try trainer.checkpoint.save(to: output)
        let reloaded = try Trainer(resuming: try Checkpoint.load(from: output, registry: registry))
        print("saved \(output); reloaded test MSE \(try reloaded.evaluate(test)) (baseline \(AddingProblem.baselineMSE))")
    }
}

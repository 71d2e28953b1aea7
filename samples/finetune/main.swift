// Chain layers of two trained checkpoints into a new model and fine-tune it.
//   swift run -c release finetune-sample --steps 300
//
// Model A (lstm:16 + head) and model B (lstm:16 → gru:16 + head) are trained briefly on the
// adding problem and saved. The new model is A's layer 0, then B's layer 1 (a GRU that
// expects 16 features, which A's layer 0 provides), then B's head; it is fine-tuned and its
// test MSE reported before and after.
import ArgumentParser
import Foundation
import SeqCell
import SeqCellTools

@main
struct FinetuneSample: ParsableCommand {
    @Option(help: "Steps for each of the two source models and for the fine-tuning.") var steps = 300
    @Option(help: "Sequence length.") var seqLen = 20
    @Option(help: "Folder for the checkpoints.") var outDir = "out/finetune-sample"

    func run() throws {
        let registry = PluginRegistry.standard()
        try FileManager.default.createDirectory(atPath: outDir, withIntermediateDirectories: true)
        let task = AddingProblem(seqLen: seqLen, batchSize: 32)
        var rng = SplitMix64(seed: 3)
        let test = AddingProblem(seqLen: seqLen, batchSize: 500).batch(rng: &rng)
        var config = TrainingConfig()
        config.learningRate = 0.01

        func trainAndSave(_ specs: [String], seed: UInt64, name: String) throws -> String {
            let model = try Model.build(inputSize: 2, layers: specs.map { try LayerSpec(parsing: $0) },
                                        head: HeadSpec(outputSize: 1), registry: registry, seed: seed)
            var trainer = try Trainer(model: model, config: config)
            for s in 0..<steps { try trainer.trainStep(task.batch(seed: seed, step: s)) }
            let path = (outDir as NSString).appendingPathComponent(name)
            try trainer.checkpoint.save(to: path)
            print("\(name): \(specs.joined(separator: " → ")), test MSE \(try trainer.evaluate(test))")
            return path
        }
        let a = try Checkpoint.load(from: try trainAndSave(["lstm:16"], seed: 1, name: "a.h5"), registry: registry).model
        let b = try Checkpoint.load(from: try trainAndSave(["lstm:16", "gru:16"], seed: 2, name: "b.h5"), registry: registry).model

        let chained = try Model.chain([LayerSource(layer: a.layers[0], origin: "a.h5 layer 0"),
                                       LayerSource(layer: b.layers[1], origin: "b.h5 layer 1")],
                                      head: b.head, headOrigin: "the head of b.h5")
        var trainer = try Trainer(model: chained, config: config)
        print("chained a.h5 layer 0 → b.h5 layer 1 → b.h5 head: test MSE \(try trainer.evaluate(test))")
        for s in 0..<steps { try trainer.trainStep(task.batch(seed: 5, step: s)) }
        let path = (outDir as NSString).appendingPathComponent("chained.h5")
        try trainer.checkpoint.save(to: path)
        print("fine-tuned \(steps) steps: test MSE \(try trainer.evaluate(test)); saved \(path)")
    }
}

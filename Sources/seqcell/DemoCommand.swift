import ArgumentParser
import Foundation
import SeqCell
import SeqCellTools

struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "The main job: train rnn, lstm and gru on the adding problem and show why gated cells exist.",
        discussion: """
            The adding problem (Hochreiter & Schmidhuber 1997): two input channels, a random \
            value and a marker; the target is the sum of the two marked values. Always \
            predicting 1 gives MSE ≈ 0.167. Each cell trains with the same budget and gradient \
            clipping; the table shows the final test MSE, and loss curves and the gradient \
            reaching each time step are drawn to an SVG. Each trained model is saved as a \
            checkpoint (with its training state), and one is reloaded to check it gives the \
            same test MSE.
            """)

    @OptionGroup var plugins: PluginOptions

    @Option(help: "Cells to train, comma-separated.")
    var cells: String = "rnn,lstm,gru"

    @Option(help: "Sequence length T (the distance information must travel).")
    var seqLen: Int = 50

    @Option(help: "Hidden units per cell.")
    var hidden: Int = 32

    @Option(help: "Training steps per cell.")
    var steps: Int = 1500

    @Option(help: "Batch size.")
    var batch: Int = 32

    @Option(help: "Adam learning rate.")
    var learningRate: Double = 0.01

    @Option(help: "Clip the global gradient norm to this value (0: no clipping).")
    var clip: Double = 1.0

    @Option(help: "Progress line every N steps.")
    var logEvery: Int = 250

    @Option(help: "Random seed (data and initialisation).")
    var seed: UInt64 = 1

    @Option(help: "Folder for checkpoints and the picture.")
    var outDir: String = "out/demo"

    func validate() throws {
        guard seqLen >= 2 else { throw ValidationError("--seq-len must be at least 2") }
        guard steps >= 1, batch >= 1, hidden >= 1 else { throw ValidationError("--steps, --batch and --hidden must be positive") }
    }

    func run() throws {
        FreedMemory.keepInProcess()
        let registry = plugins.registry()
        let ids = cells.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }
        for id in ids { _ = try registry.cellType(id) }
        try FileManager.default.createDirectory(atPath: outDir, withIntermediateDirectories: true)
        let task = AddingProblem(seqLen: seqLen, batchSize: batch)
        var testRNG = SplitMix64(seed: seed ^ 0xDEAD_BEEF)
        let testSet = AddingProblem(seqLen: seqLen, batchSize: 1000).batch(rng: &testRNG)
        print("adding problem: T=\(seqLen), batch \(batch), \(steps) steps per cell, hidden \(hidden), "
              + "Adam lr \(learningRate), clip global norm \(clip > 0 ? String(clip) : "off")")
        print("baseline (always predict 1): test MSE \(fmt(AddingProblem.baselineMSE))")

        struct Result {
            var id: String
            var mse: Double
            var seconds: Double
            var clipRate: Double
            var path: String
            var curve: [(x: Double, y: Double)]
            var stepGrads: [Double]
        }
        var results: [Result] = []
        let jobStart = Date()
        for (index, id) in ids.enumerated() {
            var config = TrainingConfig()
            config.optimizer = "adam"
            config.learningRate = learningRate
            config.clipping = clip > 0 ? "norm" : "none"
            config.clipValue = clip
            config.loss = "mse"
            config.target = "last"
            config.seed = seed
            let model = try Model.build(inputSize: 2, layers: [LayerSpec(cell: id, hiddenSize: hidden)],
                                        head: HeadSpec(outputSize: 1), registry: registry, seed: seed)
            var trainer = try Trainer(model: model, config: config)
            var curve: [(x: Double, y: Double)] = []
            var window: [Double] = []
            var clipped = 0
            var stepGrads: [Double] = []
            let start = Date()
            for s in 0..<steps {
                let stats = try trainer.trainStep(task.batch(seed: seed, step: s), measureStepGradients: s == 0)
                if let g = stats.stepGradientNorms { stepGrads = g }
                if stats.clipped { clipped += 1 }
                window.append(stats.loss)
                if window.count == 25 || s == steps - 1 {
                    curve.append((Double(s + 1), window.reduce(0, +) / Double(window.count)))
                    window = []
                }
                if (s + 1) % logEvery == 0 || s == steps - 1 {
                    let test = try trainer.evaluate(testSet)
                    print("  \(id.padding(toLength: 5, withPad: " ", startingAt: 0)) step \(String(s + 1).leftPad(5))  "
                          + "train MSE \(fmt(curve.last!.y))  test MSE \(fmt(test))  grad norm \(fmt(stats.gradientNorm))  "
                          + "clipped \(clipped)/\(s + 1)  "
                          + TrainingProgress.describe(elapsed: Date().timeIntervalSince(jobStart),
                                                      completed: index * steps + s + 1, total: ids.count * steps))
                }
            }
            let seconds = Date().timeIntervalSince(start)
            let mse = try trainer.evaluate(testSet)
            let path = (outDir as NSString).appendingPathComponent("adding-\(id).h5")
            try trainer.checkpoint.save(to: path)
            results.append(Result(id: id, mse: mse, seconds: seconds, clipRate: Double(clipped) / Double(steps), path: path,
                                  curve: curve, stepGrads: stepGrads))
        }

        print("")
        print("cell   test MSE   % of baseline   steps   time (s)   clipped")
        for r in results {
            print("\(r.id.padding(toLength: 6, withPad: " ", startingAt: 0)) \(fmt(r.mse).leftPad(9))   "
                  + "\(String(format: "%12.2f%%", 100 * r.mse / AddingProblem.baselineMSE))   \(String(steps).leftPad(5))   "
                  + "\(String(format: "%8.1f", r.seconds))   \(String(format: "%5.1f%%", r.clipRate * 100))")
        }

        // Reload one checkpoint and check it reproduces its test MSE.
        if let first = results.first {
            let loaded = try Checkpoint.load(from: first.path, registry: registry)
            let again = try Trainer(resuming: loaded).evaluate(testSet)
            guard again == first.mse else {
                throw CLIError("reloaded \(first.path) gives test MSE \(again), not \(first.mse)")
            }
            print("\nreloaded \(first.path): same test MSE (\(fmt(again))), training state at step \(loaded.training?.step ?? 0)")
        }

        let chart = SVGChart(title: "Adding problem, T = \(seqLen): why gated cells exist", panels: [
            SVGChart.Panel(title: "training loss (MSE, mean of 25 steps)", xLabel: "step", yLabel: "MSE", logY: true,
                           series: results.enumerated().map { i, r in
                               SVGChart.Series(name: r.id, points: r.curve, color: SVGChart.palette[i % SVGChart.palette.count])
                           },
                           references: [(AddingProblem.baselineMSE, "predict 1 always (0.167)")]),
            SVGChart.Panel(title: "gradient reaching each time step at initialisation, ‖∂L/∂x_t‖ (loss at t = T)",
                           xLabel: "time step t", yLabel: "gradient norm", logY: true,
                           series: results.enumerated().map { i, r in
                               SVGChart.Series(name: r.id, points: r.stepGrads.enumerated().map { (Double($0), $1) },
                                               color: SVGChart.palette[i % SVGChart.palette.count])
                           }),
        ])
        let svg = (outDir as NSString).appendingPathComponent("adding.svg")
        try writeBytesAtomically(Data(chart.render().utf8), to: svg)
        print("wrote \(svg) and " + results.map(\.path).joined(separator: ", "))
    }
}

func fmt(_ v: Double) -> String {
    if v != 0, abs(v) < 1e-3 || abs(v) >= 1e5 { return String(format: "%.2e", v) }
    return String(format: "%.4f", v)
}

extension String {
    func leftPad(_ n: Int) -> String { count >= n ? self : String(repeating: " ", count: n - count) + self }
}

import Foundation
import XCTest
@testable import SeqCellBase
@testable import SeqCellHost
@testable import SeqCellModel
@testable import SeqCellFormats
@testable import SeqCellConformance
@testable import SeqCellTools
import SeqCellTestSupport

/// Training: losses and heads against finite differences, clipping, optimizer rules against
/// hand computation, NaN handling, and exact resume.
final class TrainingTests: XCTestCase {
    var cellIDs: [String] { requiredBuiltInCells() }

    /// d(loss)/d(params) from the trainer against central differences of the loss itself.
    func checkLossGradients(_ model: Model, _ batch: Batch, config: TrainingConfig, dropoutSeed: UInt64 = 3,
                            file: StaticString = #filePath, line: UInt = #line) throws {
        let trainer = try Trainer(model: model, config: config)
        let (_, _, g) = try trainer.lossAndGradients(batch, dropoutSeed: dropoutSeed)
        var flat = g.params.flatMap { $0.flatMap { $0 } }
        if let h = g.head { flat += [h.weight, h.bias] }
        let named = model.namedParameters
        XCTAssertEqual(flat.count, named.count)
        for (i, p) in named.enumerated() {
            let r = try GradientCheck.compare(name: p.path, values: p.value.data, analytic: flat[i].data, maxEntries: 6) { v in
                var m = model
                var all = named.map(\.value)
                all[i] = Tensor(shape: p.value.shape, data: v)
                try m.setParameters(all)
                let t = try Trainer(model: m, config: config)
                return try t.lossAndGradients(batch, dropoutSeed: dropoutSeed).0.value
            }
            XCTAssert(r.passed, "\(config.loss)/\(config.target): \(r)", file: file, line: line)
        }
    }

    func testLossAndHeadGradientsMatchFiniteDifferences() throws {
        var rng = SplitMix64(seed: 21)
        let (T, B) = (4, 3)
        let lengths: [Int32] = [4, 2, 3]
        for id in cellIDs {
            let specs = [LayerSpec(cell: id, hiddenSize: 3, direction: .bidirectional, mergeMode: .concat),
                         LayerSpec(cell: id, hiddenSize: 3)]
            let x = rng.uniformTensor([T, B, 2], scale: 1)
            for (loss, target) in [("mse", "last"), ("mse", "all"), ("cross_entropy", "last"), ("cross_entropy", "all")] {
                let classes = 3
                let model = try Model.build(inputSize: 2, layers: specs, head: HeadSpec(outputSize: classes),
                                            registry: testRegistry, seed: rng.next())
                let targets: Tensor
                switch (loss, target) {
                case ("mse", "last"): targets = rng.uniformTensor([B, classes], scale: 1)
                case ("mse", _): targets = rng.uniformTensor([T, B, classes], scale: 1)
                case (_, "last"): targets = Tensor(shape: [B], data: (0..<B).map { Float($0 % classes) })
                default: targets = Tensor(shape: [T, B], data: (0..<(T * B)).map { Float(($0 * 7) % classes) })
                }
                var config = TrainingConfig()
                config.loss = loss
                config.target = target
                config.dropout = 0.3
                try checkLossGradients(model, Batch(input: x, lengths: lengths, targets: targets), config: config)
            }
        }
    }

    func testLossValuesByHand() throws {
        // Output [T=2, B=2, O=2]; sample 1 has length 1.
        let out = Tensor(shape: [2, 2, 2], data: [0.5, -1, 2, 0, 1, 3, 9, 9])
        let lengths: [Int32] = [2, 1]
        let mse = try computeLoss(.mse, mode: .lastStep, output: out, targets: Tensor(shape: [2, 2], data: [0, 1, 1, 1]), lengths: lengths)
        // Sample 0 at t=1: (1,3) vs (0,1); sample 1 at t=0: (2,0) vs (1,1). Mean of 1,4,1,1.
        XCTAssertEqual(mse.value, 7.0 / 4.0, accuracy: 1e-9)
        XCTAssertEqual(mse.gradOutput.data, [0, 0, 0.5, -0.5, 0.5, 1, 0, 0])
        let ce = try computeLoss(.crossEntropy, mode: .allSteps, output: out, targets: Tensor(shape: [2, 2], data: [1, 0, 1, 0]), lengths: lengths)
        // Positions (0,0) class 1, (0,1) class 0, (1,0) class 1; (1,1) is padding.
        func nll(_ a: Double, _ b: Double, _ c: Int) -> Double { log(exp(a) + exp(b)) - (c == 0 ? a : b) }
        XCTAssertEqual(ce.value, (nll(0.5, -1, 1) + nll(2, 0, 0) + nll(1, 3, 1)) / 3, accuracy: 1e-6)
        XCTAssertEqual(Array(ce.gradOutput.data[6..<8]), [0, 0], "padded step gets no gradient")
        XCTAssertThrowsError(try computeLoss(.crossEntropy, mode: .lastStep, output: out, targets: Tensor(shape: [2], data: [0, 2]), lengths: nil)) { e in
            XCTAssert("\(e)".contains("not in 0..<2"), "\(e)")
        }
    }

    func testClippingByNormAndByValue() {
        var rng = SplitMix64(seed: 4)
        var grads = [rng.uniformTensor([5, 3], scale: 10), rng.uniformTensor([7], scale: 10)]
        let before = globalNorm(grads)
        let (norm, clipped) = clip(&grads, .globalNorm(1.5))
        XCTAssertEqual(norm, before, accuracy: 1e-9)
        XCTAssertTrue(clipped)
        XCTAssertEqual(globalNorm(grads), 1.5, accuracy: 1.5e-5, "clipped global norm equals the bound")
        var small = [Tensor(shape: [2], data: [0.1, 0.2])]
        XCTAssertFalse(clip(&small, .globalNorm(1.5)).clipped)
        XCTAssertEqual(small[0].data, [0.1, 0.2], "gradients under the bound are untouched")
        var v = [rng.uniformTensor([50], scale: 3)]
        XCTAssertTrue(clip(&v, .value(0.5)).clipped)
        XCTAssert(v[0].data.allSatisfy { abs($0) <= 0.5 }, "value clipping bounds every entry")
        XCTAssert(v[0].data.contains(0.5) || v[0].data.contains(-0.5))
    }

    func testOptimizerRulesByHand() {
        let g1: Float = 0.5, g2: Float = -0.25
        // SGD with momentum 0.9 and weight decay 0.1, lr 0.1 (PyTorch's rule).
        var sgd = Optimizer(kind: .sgd, learningRate: 0.1, momentum: 0.9, weightDecay: 0.1)
        var p = [Tensor(shape: [1], data: [1])]
        sgd.update(&p, [Tensor(shape: [1], data: [g1])])
        var b = Double(g1) + 0.1 * 1.0
        var w = 1.0 - 0.1 * b
        XCTAssertEqual(Double(p[0].data[0]), w, accuracy: 1e-6)
        sgd.update(&p, [Tensor(shape: [1], data: [g2])])
        b = 0.9 * b + (Double(g2) + 0.1 * w)
        w -= 0.1 * b
        XCTAssertEqual(Double(p[0].data[0]), w, accuracy: 1e-6)
        // Adam and AdamW, two steps.
        for kind in [OptimizerKind.adam, .adamw] {
            var opt = Optimizer(kind: kind, learningRate: 0.01, weightDecay: 0.1)
            var q = [Tensor(shape: [1], data: [2])]
            var (m, v, x) = (0.0, 0.0, 2.0)
            for (t, g) in [(1.0, Double(g1)), (2.0, Double(g2))] {
                opt.update(&q, [Tensor(shape: [1], data: [Float(g)])])
                var gg = g
                if kind == .adamw { x -= 0.01 * 0.1 * x } else { gg += 0.1 * x }
                m = 0.9 * m + 0.1 * gg
                v = 0.999 * v + 0.001 * gg * gg
                x -= 0.01 * (m / (1 - pow(0.9, t))) / ((v / (1 - pow(0.999, t))).squareRoot() + 1e-8)
                XCTAssertEqual(Double(q[0].data[0]), x, accuracy: 1e-6, "\(kind) step \(t)")
            }
        }
        XCTAssertEqual(LRSchedule.step(every: 10, gamma: 0.5).rate(base: 1, step: 25), 0.25)
        XCTAssertEqual(LRSchedule.cosine(totalSteps: 100, minLR: 0.1).rate(base: 1, step: 50), 0.55, accuracy: 1e-12)
        XCTAssertEqual(LRSchedule.cosine(totalSteps: 100, minLR: 0.1).rate(base: 1, step: 100), 0.1, accuracy: 1e-12)
    }

    func testNaNStopsTrainingNamingTheStepAndChangesNothing() throws {
        let model = try Model.build(inputSize: 2, layers: [LayerSpec(cell: "rnn", hiddenSize: 3)], head: HeadSpec(outputSize: 1),
                                    registry: testRegistry, seed: 1)
        var trainer = try Trainer(model: model, config: TrainingConfig())
        let task = AddingProblem(seqLen: 5, batchSize: 4)
        try trainer.trainStep(task.batch(seed: 0, step: 0))
        let good = trainer.model.namedParameters.map(\.value)
        var bad = task.batch(seed: 0, step: 1)
        bad.input.data[3] = .nan
        XCTAssertThrowsError(try trainer.trainStep(bad)) { e in
            XCTAssert("\(e)".contains("step 2") && "\(e)".contains("nan"), "\(e)")
        }
        XCTAssertEqual(trainer.model.namedParameters.map(\.value), good)
        XCTAssertEqual(trainer.step, 1)
    }

    func testResumeGivesTheSameParametersAsAnUninterruptedRun() throws {
        let dir = NSTemporaryDirectory() + "seqcell-resume-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let ids = cellIDs
        let model = try Model.build(inputSize: 2, layers: [LayerSpec(cell: ids.last!, hiddenSize: 6), LayerSpec(cell: ids[0], hiddenSize: 4)],
                                    head: HeadSpec(outputSize: 1), registry: testRegistry, seed: 7)
        var config = TrainingConfig()
        config.optimizer = "adamw"
        config.learningRate = 0.01
        config.dropout = 0.2
        config.schedule = "cosine"
        config.scheduleTotalSteps = 20
        config.seed = 99
        let task = AddingProblem(seqLen: 8, batchSize: 5)
        let (N, M) = (6, 5)
        var straight = try Trainer(model: model, config: config)
        for s in 0..<(N + M) { try straight.trainStep(task.batch(seed: config.seed, step: s)) }

        var first = try Trainer(model: model, config: config)
        for s in 0..<N { try first.trainStep(task.batch(seed: config.seed, step: s)) }
        let path = dir + "/mid.h5"
        try first.checkpoint.save(to: path)
        var resumed = try Trainer(resuming: try Checkpoint.load(from: path, registry: testRegistry))
        XCTAssertEqual(resumed.step, N)
        XCTAssertEqual(resumed.config, config)
        for s in N..<(N + M) { try resumed.trainStep(task.batch(seed: config.seed, step: s)) }

        for (a, b) in zip(resumed.model.namedParameters, straight.model.namedParameters) {
            let worst = zip(a.value.data, b.value.data).map { abs($0 - $1) }.max() ?? 0
            XCTAssertLessThanOrEqual(worst, 1e-6, a.path)
        }
        XCTAssertNotEqual(straight.model.namedParameters.map(\.value), model.namedParameters.map(\.value), "training changed nothing")
    }

    func testAddingProblemBaseline() {
        var rng = SplitMix64(seed: 5)
        let b = AddingProblem(seqLen: 20, batchSize: 20000).batch(rng: &rng)
        let mse = b.targets.data.reduce(0.0) { $0 + Double(($1 - 1) * ($1 - 1)) } / Double(b.targets.count)
        XCTAssertEqual(mse, AddingProblem.baselineMSE, accuracy: 0.006)
        let markers = stride(from: 1, to: b.input.count, by: 2).reduce(0) { $0 + Int(b.input.data[$1]) }
        XCTAssertEqual(markers, 2 * 20000, "exactly two markers per sequence")
    }

    func testTrainingLowersTheLoss() throws {
        let model = try Model.build(inputSize: 2, layers: [LayerSpec(cell: cellIDs.last!, hiddenSize: 8)], head: HeadSpec(outputSize: 1),
                                    registry: testRegistry, seed: 3)
        var config = TrainingConfig()
        config.learningRate = 0.02
        var trainer = try Trainer(model: model, config: config)
        let task = AddingProblem(seqLen: 6, batchSize: 32)
        var rng = SplitMix64(seed: 1234)
        let test = AddingProblem(seqLen: 6, batchSize: 500).batch(rng: &rng)
        let before = try trainer.evaluate(test)
        for s in 0..<150 { try trainer.trainStep(task.batch(seed: 1, step: s)) }
        let after = try trainer.evaluate(test)
        XCTAssertLessThan(after, before * 0.5, "loss \(before) → \(after)")
    }

    func testCarriedStateContinuesTheSequence() throws {
        // With carryState, batch 2 starts from batch 1's final states: the model seen by
        // batch 2 is the same as running both chunks as one sequence.
        let model = try Model.build(inputSize: 2, layers: [LayerSpec(cell: cellIDs.last!, hiddenSize: 4)], head: HeadSpec(outputSize: 1),
                                    registry: testRegistry, seed: 8)
        var rng = SplitMix64(seed: 8)
        let x = rng.uniformTensor([6, 2, 2], scale: 1)
        let whole = try model.forward(input: x)
        let first = try model.forward(input: Tensor(shape: [3, 2, 2], data: Array(x.data[0..<12])))
        let carried = first.finalStates.map { $0.map { $0.map { Optional($0) } } }
        let second = try model.forward(input: Tensor(shape: [3, 2, 2], data: Array(x.data[12..<24])), initialStates: carried)
        XCTAssertEqual(Array(whole.output.data[6..<12]), second.output.data)

        var config = TrainingConfig()
        config.carryState = true
        config.target = "all"
        var trainer = try Trainer(model: model, config: config)
        let batch = Batch(input: Tensor(shape: [3, 2, 2], data: Array(x.data[0..<12])), targets: Tensor.zeros([3, 2, 1]))
        try trainer.trainStep(batch)
        XCTAssertEqual(trainer.carried.count, 1)
        XCTAssertEqual(trainer.carried[0][0].compactMap { $0 }, first.finalStates[0][0], "states carried from the step's forward")
        trainer.resetState()
        XCTAssertTrue(trainer.carried.isEmpty)
    }

    func testOrthogonalInitialisation() throws {
        let model = try Model.build(inputSize: 3, layers: [LayerSpec(cell: cellIDs.last!, hiddenSize: 5)], registry: testRegistry,
                                    seed: 2, initialization: .orthogonal)
        let dc = model.layers[0].cells[0]
        for (info, t) in zip(dc.cell.params, dc.params) where info.role == .recurrentWeight {
            let (rows, cols) = (info.shape[0], info.shape[1])
            for block in stride(from: 0, to: rows, by: cols) {
                for i in block..<(block + cols) {
                    for j in block..<(block + cols) {
                        var dot: Float = 0
                        for c in 0..<cols { dot += t.data[i * cols + c] * t.data[j * cols + c] }
                        XCTAssertEqual(dot, i == j ? 1 : 0, accuracy: 1e-5, "\(info.name) rows \(i), \(j)")
                    }
                }
            }
        }
        let bound = 1 / Float(5).squareRoot()
        for (info, t) in zip(dc.cell.params, dc.params) where info.role != .recurrentWeight {
            XCTAssert(t.data.allSatisfy { abs($0) <= bound }, "\(info.name) outside ±1/√H")
        }
    }
}

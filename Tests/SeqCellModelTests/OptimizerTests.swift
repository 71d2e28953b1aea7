import Foundation
import XCTest
@testable import SeqCellBase
@testable import SeqCellHost
@testable import SeqCellModel
@testable import SeqCellFormats
import SeqCellTestSupport

/// The optimizers over several steps against their update rules written out here in Double
/// (PyTorch's SGD, Adam and AdamW), the learning-rate schedules, and the checks on the state.
final class OptimizerTests: XCTestCase {
    /// Two parameter tensors of different shapes and a fixed sequence of gradients.
    let shapes = [[2, 3], [4]]
    func initial() -> [Tensor] {
        var rng = SplitMix64(seed: 11)
        return shapes.map { rng.uniformTensor($0, scale: 1) }
    }
    func gradients(step: Int) -> [Tensor] {
        var rng = SplitMix64(seed: 100 + UInt64(step))
        return shapes.map { rng.uniformTensor($0, scale: 2) }
    }

    /// The reference: each element's trajectory, in Double, from the written-out rules.
    func reference(_ kind: OptimizerKind, lr: (Int) -> Double, momentum: Double, weightDecay: Double, steps: Int) -> [Double] {
        var p = initial().flatMap(\.data).map(Double.init)
        var buf = [Double](repeating: 0, count: p.count)
        var m = buf, v = buf
        let (b1, b2, eps) = (0.9, 0.999, 1e-8)
        for s in 0..<steps {
            let g = gradients(step: s).flatMap(\.data).map(Double.init)
            let rate = lr(s)
            let t = Double(s + 1)
            for j in p.indices {
                switch kind {
                case .sgd:
                    // d = g + λp; b = d on the first step, else μb + d; p −= lr·b (lr·d without momentum)
                    let d = g[j] + weightDecay * p[j]
                    if momentum > 0 {
                        buf[j] = s == 0 ? d : momentum * buf[j] + d
                        p[j] -= rate * buf[j]
                    } else {
                        p[j] -= rate * d
                    }
                case .adam, .adamw:
                    var gj = g[j]
                    if kind == .adamw { p[j] *= 1 - rate * weightDecay } else { gj += weightDecay * p[j] }
                    m[j] = b1 * m[j] + (1 - b1) * gj
                    v[j] = b2 * v[j] + (1 - b2) * gj * gj
                    let mHat = m[j] / (1 - pow(b1, t)), vHat = v[j] / (1 - pow(b2, t))
                    p[j] -= rate * mHat / (vHat.squareRoot() + eps)
                }
            }
        }
        return p
    }

    func run(_ opt: inout Optimizer, steps: Int) -> [Tensor] {
        var p = initial()
        for s in 0..<steps {
            let g = gradients(step: s)
            XCTAssertNoThrow(try opt.check(params: p, grads: g))
            opt.update(&p, g)
        }
        return p
    }

    func assertClose(_ got: [Tensor], _ want: [Double], _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        let flat = got.flatMap(\.data)
        XCTAssertEqual(flat.count, want.count, what, file: file, line: line)
        for (a, b) in zip(flat, want) {
            XCTAssertEqual(Double(a), b, accuracy: 2e-6 * max(1, abs(b)), what, file: file, line: line)
        }
    }

    func testSGDWithoutMomentumWithWeightDecay() {
        var opt = Optimizer(kind: .sgd, learningRate: 0.05, weightDecay: 0.1)
        let p = run(&opt, steps: 5)
        assertClose(p, reference(.sgd, lr: { _ in 0.05 }, momentum: 0, weightDecay: 0.1, steps: 5), "sgd")
        XCTAssertEqual(opt.state, .empty, "plain SGD keeps no state")
        XCTAssertEqual(opt.slotNames, [])
        XCTAssertEqual(opt.step, 5)
    }

    func testSGDWithMomentumAndWeightDecay() {
        for wd in [0.0, 0.05] {
            var opt = Optimizer(kind: .sgd, learningRate: 0.05, momentum: 0.9, weightDecay: wd)
            let p = run(&opt, steps: 6)
            assertClose(p, reference(.sgd, lr: { _ in 0.05 }, momentum: 0.9, weightDecay: wd, steps: 6), "sgd momentum wd \(wd)")
            guard case .momentum(let b) = opt.state else { return XCTFail("SGD with momentum keeps a momentum buffer") }
            XCTAssertEqual(b.count, 10)
            XCTAssertEqual(opt.state.namedSlots.map(\.name), ["momentum"])
        }
    }

    func testAdamAndAdamW() {
        for kind in [OptimizerKind.adam, .adamw] {
            for wd in [0.0, 0.1] {
                var opt = Optimizer(kind: kind, learningRate: 0.01, weightDecay: wd)
                let p = run(&opt, steps: 7)
                assertClose(p, reference(kind, lr: { _ in 0.01 }, momentum: 0, weightDecay: wd, steps: 7), "\(kind) wd \(wd)")
                guard case .adam(let m, let v) = opt.state else { return XCTFail("\(kind) keeps m and v") }
                XCTAssertEqual(m.count, 10)
                XCTAssertEqual(v.count, 10)
                XCTAssert(v.allSatisfy { $0 >= 0 })
                XCTAssertEqual(opt.state.namedSlots.map(\.name), ["m", "v"])
            }
        }
        XCTAssertEqual(Optimizer(kind: .adamw, learningRate: 0.01).weightDecay, 0.01, "AdamW's default decay, as PyTorch")
        XCTAssertEqual(Optimizer(kind: .adam, learningRate: 0.01).weightDecay, 0)
    }

    func testFlatUpdateEqualsTheTensorUpdate() {
        for kind in OptimizerKind.allCases {
            var a = Optimizer(kind: kind, learningRate: 0.02, momentum: 0.5, weightDecay: 0.01)
            var b = a
            var tensors = initial()
            var flat = tensors.flatMap(\.data)
            for s in 0..<3 {
                a.update(&tensors, gradients(step: s))
                b.update(parameters: &flat, gradients: gradients(step: s).flatMap(\.data))
            }
            XCTAssertEqual(tensors.flatMap(\.data), flat, "\(kind)")
            XCTAssertEqual(a.state, b.state, "\(kind)")
        }
    }

    func testSchedules() {
        XCTAssertEqual(LRSchedule.constant.rate(base: 0.3, step: 1000), 0.3)
        // lr · γ^⌊step / every⌋
        for (step, want) in [(0, 1.0), (9, 1.0), (10, 0.5), (25, 0.25), (30, 0.125)] {
            XCTAssertEqual(LRSchedule.step(every: 10, gamma: 0.5).rate(base: 1, step: step), want, "step \(step)")
        }
        // minLR + (lr − minLR)(1 + cos(π s / S)) / 2, then minLR
        for s in [0, 10, 25, 50, 99, 100, 150] {
            let want = 0.1 + (2 - 0.1) * (1 + cos(Double.pi * Double(min(s, 100)) / 100)) / 2
            XCTAssertEqual(LRSchedule.cosine(totalSteps: 100, minLR: 0.1).rate(base: 2, step: s), want, accuracy: 1e-12, "cosine \(s)")
        }
        XCTAssertEqual(LRSchedule.cosine(totalSteps: 100, minLR: 0.1).rate(base: 2, step: 50), 1.05, accuracy: 1e-12)

        // The optimizer uses the schedule's rate of the step it is about to take.
        let sched = LRSchedule.step(every: 2, gamma: 0.1)
        var opt = Optimizer(kind: .sgd, learningRate: 0.5, momentum: 0.9, weightDecay: 0.02, schedule: sched)
        XCTAssertEqual(opt.currentRate, 0.5)
        let p = run(&opt, steps: 5)
        assertClose(p, reference(.sgd, lr: { sched.rate(base: 0.5, step: $0) }, momentum: 0.9, weightDecay: 0.02, steps: 5), "scheduled sgd")
        XCTAssertEqual(opt.currentRate, 0.5 * 0.01, accuracy: 1e-15)
        var adam = Optimizer(kind: .adam, learningRate: 0.1, schedule: .cosine(totalSteps: 4, minLR: 0.01))
        assertClose(run(&adam, steps: 6),
                    reference(.adam, lr: { LRSchedule.cosine(totalSteps: 4, minLR: 0.01).rate(base: 0.1, step: $0) },
                              momentum: 0, weightDecay: 0, steps: 6), "cosine adam")
    }

    func testStateShapeChecksThrow() throws {
        let p = initial(), g = gradients(step: 0)
        var adam = Optimizer(kind: .adam, learningRate: 0.01)
        // Slots of the wrong size (as from another model's checkpoint).
        try adam.restore(step: 3, state: .adam(m: [Float](repeating: 0, count: 9), v: [Float](repeating: 0, count: 9)))
        XCTAssertThrowsError(try adam.check(params: p, grads: g)) { e in
            XCTAssert("\(e)".contains("'m'") && "\(e)".contains("9 values for 10"), "\(e)")
        }
        XCTAssertThrowsError(try adam.check(parameterCount: 10, gradientCount: 10))
        // m and v of different sizes.
        XCTAssertThrowsError(try adam.restore(step: 1, state: .adam(m: [0, 0], v: [0])))
        // State of another optimizer.
        XCTAssertThrowsError(try adam.restore(step: 1, state: .momentum([Float](repeating: 0, count: 10)))) { e in
            XCTAssert("\(e)".contains("adam"), "\(e)")
        }
        var sgd = Optimizer(kind: .sgd, learningRate: 0.1)
        XCTAssertThrowsError(try sgd.restore(step: 1, state: .momentum([Float](repeating: 0, count: 10))), "plain SGD keeps no momentum")
        XCTAssertThrowsError(try sgd.restore(step: -1, state: .empty))
        // Gradients that do not match the parameters.
        let fresh = Optimizer(kind: .sgd, learningRate: 0.1)
        XCTAssertThrowsError(try fresh.check(params: p, grads: [g[0]]))
        XCTAssertThrowsError(try fresh.check(params: p, grads: [g[1], g[0]])) { e in
            XCTAssert("\(e)".contains("gradient 0"), "\(e)")
        }
        XCTAssertThrowsError(try fresh.check(parameterCount: 10, gradientCount: 11))
        XCTAssertNoThrow(try fresh.check(params: p, grads: g))
        // The right size restores and continues as an uninterrupted run.
        var straight = Optimizer(kind: .adam, learningRate: 0.01)
        var a = initial().flatMap(\.data)
        for s in 0..<4 { straight.update(parameters: &a, gradients: gradients(step: s).flatMap(\.data)) }
        var first = Optimizer(kind: .adam, learningRate: 0.01)
        var b = initial().flatMap(\.data)
        for s in 0..<2 { first.update(parameters: &b, gradients: gradients(step: s).flatMap(\.data)) }
        var second = Optimizer(kind: .adam, learningRate: 0.01)
        try second.restore(step: first.step, state: first.state)
        XCTAssertNoThrow(try second.check(parameterCount: b.count, gradientCount: b.count))
        for s in 2..<4 { second.update(parameters: &b, gradients: gradients(step: s).flatMap(\.data)) }
        XCTAssertEqual(a, b)
        XCTAssertEqual(straight.state, second.state)
    }

    func testStateFromCheckpointSlotsNamesWhatIsMissing() throws {
        let adam = Optimizer(kind: .adamw, learningRate: 0.01)
        XCTAssertThrowsError(try adam.state { $0 == "m" ? [1, 2] : nil }) { e in
            XCTAssert("\(e)".contains("slot 'v'"), "\(e)")
        }
        XCTAssertEqual(try adam.state { $0 == "m" ? [1, 2] : [3, 4] }, .adam(m: [1, 2], v: [3, 4]))
        let sgd = Optimizer(kind: .sgd, learningRate: 0.1, momentum: 0.9)
        XCTAssertEqual(try sgd.state { $0 == "momentum" ? [5] : nil }, .momentum([5]))
        XCTAssertEqual(try Optimizer(kind: .sgd, learningRate: 0.1).state { _ in nil }, .empty)
    }

    func testClippingTheFlatBufferEqualsClippingTheTensors() {
        for clipping in [Clipping.none, .globalNorm(0.5), .globalNorm(100), .value(0.3)] {
            var tensors = gradients(step: 3)
            var flat = tensors.flatMap(\.data)
            let a = clip(&tensors, clipping)
            let b = clip(&flat, clipping)
            XCTAssertEqual(a.norm, b.norm, "\(clipping)")
            XCTAssertEqual(a.clipped, b.clipped, "\(clipping)")
            XCTAssertEqual(tensors.flatMap(\.data), flat, "\(clipping)")
        }
        // The norm against its definition.
        let g = gradients(step: 3).flatMap(\.data).map(Double.init)
        XCTAssertEqual(globalNorm(gradients(step: 3).flatMap(\.data)), g.map { $0 * $0 }.reduce(0, +).squareRoot(), accuracy: 1e-9)
    }
}

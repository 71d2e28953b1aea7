import Foundation
import XCTest
@testable import SeqCellBase
@testable import SeqCellHost
@testable import SeqCellModel
@testable import SeqCellFormats
import SeqCellTestSupport

/// Every loss and target mode: the value against its formula written out here, the gradient
/// against the formula and against central finite differences of the loss itself, with
/// padded steps masked by lengths; cross-entropy on a softmax head through its pre-activation.
final class LossTests: XCTestCase {
    let (T, B, O) = (4, 3, 3)
    let lengths: [Int32] = [4, 2, 3]

    func tensor(_ shape: [Int], seed: UInt64, scale: Float = 1) -> Tensor {
        var rng = SplitMix64(seed: seed)
        return rng.uniformTensor(shape, scale: scale)
    }

    /// The (t, b) positions a mode compares under `lengths`.
    func positions(_ mode: TargetMode, _ lengths: [Int32]?) -> [(Int, Int)] {
        (0..<B).flatMap { b -> [(Int, Int)] in
            let len = lengths.map { Int($0[b]) } ?? T
            return mode == .lastStep ? [(len - 1, b)] : (0..<len).map { ($0, b) }
        }
    }

    func classTargets(_ mode: TargetMode) -> Tensor {
        mode == .lastStep ? Tensor(shape: [B], data: [2, 0, 1])
            : Tensor(shape: [T, B], data: (0..<(T * B)).map { Float(($0 * 5 + 1) % O) })
    }

    /// Central differences of `f` with respect to every element of `x`, each step the exact
    /// difference of the Float values evaluated.
    func numericGradient(_ x: Tensor, _ f: (Tensor) throws -> Double) rethrows -> [Double] {
        try x.data.indices.map { i in
            var plus = x, minus = x
            plus.data[i] += 1e-2
            minus.data[i] -= 1e-2
            let h = Double(plus.data[i]) - Double(minus.data[i])
            return (try f(plus) - f(minus)) / h
        }
    }

    func assertGradient(_ analytic: Tensor, _ numeric: [Double], _ what: String, tolerance: Double = 2e-4,
                        file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(analytic.count, numeric.count, what, file: file, line: line)
        for (i, (a, n)) in zip(analytic.data, numeric).enumerated() {
            XCTAssertEqual(Double(a), n, accuracy: tolerance * max(1, abs(n)), "\(what) element \(i)", file: file, line: line)
        }
    }

    func testMSEValueGradientAndMasking() throws {
        for mode in TargetMode.allCases {
            for lens in [nil, lengths] {
                let y = tensor([T, B, O], seed: 1)
                let targets = tensor(mode == .lastStep ? [B, O] : [T, B, O], seed: 2)
                let loss = try computeLoss(.mse, mode: mode, output: y, targets: targets, lengths: lens)
                // (1/n) Σ (y − target)² over the compared positions; gradient 2(y − target)/n there, 0 elsewhere.
                let pos = positions(mode, lens)
                let n = Double(pos.count * O)
                var want = 0.0
                var grad = [Double](repeating: 0, count: y.count)
                for (t, b) in pos {
                    for j in 0..<O {
                        let ti = mode == .lastStep ? b * O + j : (t * B + b) * O + j
                        let d = Double(y.data[(t * B + b) * O + j]) - Double(targets.data[ti])
                        want += d * d / n
                        grad[(t * B + b) * O + j] = 2 * d / n
                    }
                }
                let what = "mse \(mode.rawValue) lengths \(lens != nil)"
                XCTAssertEqual(loss.value, want, accuracy: 1e-12, what)
                XCTAssertEqual(loss.itemCount, n, what)
                XCTAssertFalse(loss.gradientOfPreActivation)
                assertGradient(loss.gradOutput, grad, what + " (formula)", tolerance: 1e-6)
                let numeric = try numericGradient(y) {
                    try computeLoss(.mse, mode: mode, output: $0, targets: targets, lengths: lens).value
                }
                assertGradient(loss.gradOutput, numeric, what + " (finite differences)")
                if lens != nil {
                    // A padded step changes nothing.
                    var padded = y
                    padded.data[(3 * B + 1) * O] += 5  // sample 1 has length 2: step 3 is padding
                    XCTAssertEqual(try computeLoss(.mse, mode: mode, output: padded, targets: targets, lengths: lens).value, loss.value, what)
                    XCTAssertEqual(loss.gradOutput.data[(3 * B + 1) * O], 0, what)
                }
            }
        }
    }

    func testMSENormalizer() throws {
        let y = tensor([T, B, O], seed: 3), targets = tensor([T, B, O], seed: 4)
        let own = try computeLoss(.mse, mode: .allSteps, output: y, targets: targets, lengths: lengths)
        let scaled = try computeLoss(.mse, mode: .allSteps, output: y, targets: targets, lengths: lengths, normalizer: 100)
        XCTAssertEqual(scaled.itemCount, 100)
        XCTAssertEqual(scaled.value * 100, own.value * own.itemCount, accuracy: 1e-9)
        for (a, b) in zip(scaled.gradOutput.data, own.gradOutput.data) {
            XCTAssertEqual(Double(a) * 100, Double(b) * own.itemCount, accuracy: 1e-5)
        }
    }

    func testCrossEntropyOnLogits() throws {
        for mode in TargetMode.allCases {
            for lens in [nil, lengths] {
                let z = tensor([T, B, O], seed: 5, scale: 3)
                let targets = classTargets(mode)
                let loss = try computeLoss(.crossEntropy, mode: mode, output: z, targets: targets, lengths: lens)
                // (1/n) Σ [log Σ_j exp z_j − z_c]; gradient (softmax(z) − onehot(c))/n.
                let pos = positions(mode, lens)
                let n = Double(pos.count)
                var want = 0.0
                var grad = [Double](repeating: 0, count: z.count)
                for (t, b) in pos {
                    let c = Int(targets.data[mode == .lastStep ? b : t * B + b])
                    let row = (0..<O).map { Double(z.data[(t * B + b) * O + $0]) }
                    let logZ = log(row.map { exp($0) }.reduce(0, +))
                    want += (logZ - row[c]) / n
                    for j in 0..<O { grad[(t * B + b) * O + j] = (exp(row[j] - logZ) - (j == c ? 1 : 0)) / n }
                }
                let what = "cross_entropy \(mode.rawValue) lengths \(lens != nil)"
                XCTAssertEqual(loss.value, want, accuracy: 1e-9, what)
                XCTAssertEqual(loss.itemCount, n, what)
                XCTAssertFalse(loss.gradientOfPreActivation, what)
                assertGradient(loss.gradOutput, grad, what + " (formula)", tolerance: 1e-6)
                let numeric = try numericGradient(z) {
                    try computeLoss(.crossEntropy, mode: mode, output: $0, targets: targets, lengths: lens).value
                }
                assertGradient(loss.gradOutput, numeric, what + " (finite differences)")
            }
        }
    }

    /// On a softmax head the loss reads probabilities p = softmax(z) and returns the gradient of
    /// z: p − onehot. Checked against differences of the loss as a function of z.
    func testCrossEntropyOnASoftmaxHeadGivesThePreActivationGradient() throws {
        func softmax(_ z: Tensor) -> Tensor {
            var p = z.data
            for r in 0..<(z.count / O) {
                let row = (0..<O).map { Double(z.data[r * O + $0]) }
                let m = row.max()!
                let s = row.map { exp($0 - m) }.reduce(0, +)
                for j in 0..<O { p[r * O + j] = Float(exp(row[j] - m) / s) }
            }
            return Tensor(shape: z.shape, data: p)
        }
        for mode in TargetMode.allCases {
            let z = tensor([T, B, O], seed: 6, scale: 2)
            let targets = classTargets(mode)
            let viaZ = { (z: Tensor) in
                try computeLoss(.crossEntropy, mode: mode, output: softmax(z), targets: targets, lengths: self.lengths,
                                outputActivation: .softmax, preActivation: z)
            }
            let loss = try viaZ(z)
            XCTAssertTrue(loss.gradientOfPreActivation)
            // The same value and gradient as on the logits z directly.
            let onLogits = try computeLoss(.crossEntropy, mode: mode, output: z, targets: targets, lengths: lengths)
            XCTAssertEqual(loss.value, onLogits.value, accuracy: 1e-9)
            assertGradient(loss.gradOutput, onLogits.gradOutput.data.map(Double.init), "\(mode.rawValue) pre-activation", tolerance: 1e-6)
            assertGradient(loss.gradOutput, try numericGradient(z) { try viaZ($0).value }, "\(mode.rawValue) pre-activation (finite differences)")
            // Without the pre-activation, log p of the probabilities: the same up to rounding.
            let fromP = try computeLoss(.crossEntropy, mode: mode, output: softmax(z), targets: targets, lengths: lengths,
                                        outputActivation: .softmax)
            XCTAssertEqual(fromP.value, loss.value, accuracy: 1e-5)
            XCTAssertTrue(fromP.gradientOfPreActivation)
        }
    }

    func testBadTargetsAndShapesThrow() {
        let z = tensor([T, B, O], seed: 7)
        XCTAssertThrowsError(try computeLoss(.crossEntropy, mode: .lastStep, output: z, targets: Tensor(shape: [B], data: [0, 3, 1]),
                                             lengths: nil)) { e in
            XCTAssert("\(e)".contains("class target 3") && "\(e)".contains("sample 1"), "\(e)")
        }
        XCTAssertThrowsError(try computeLoss(.crossEntropy, mode: .lastStep, output: z, targets: Tensor(shape: [B], data: [0, .nan, 1]),
                                             lengths: nil))
        XCTAssertThrowsError(try computeLoss(.mse, mode: .allSteps, output: z, targets: Tensor.zeros([B, O]), lengths: nil)) { e in
            XCTAssert("\(e)".contains("[4, 3, 3]"), "\(e)")
        }
        XCTAssertThrowsError(try computeLoss(.mse, mode: .lastStep, output: z, targets: Tensor.zeros([B, O]), lengths: [1, 5, 2])) { e in
            XCTAssert("\(e)".contains("lengths[1]"), "\(e)")
        }
    }
}

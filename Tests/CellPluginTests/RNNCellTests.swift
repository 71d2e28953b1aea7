import XCTest
@testable import SeqCellBase
@testable import SeqCellHost
@testable import SeqCellModel
@testable import SeqCellFormats
@testable import SeqCellConformance
import SeqCellTestSupport

/// The rnn plugin against the Elman equations written out here, step by step in Double.
final class RNNCellTests: XCTestCase {
    func reference(x: Tensor, lengths: [Int]?, w: [Tensor], h0: Tensor?, relu: Bool) -> (Tensor, Tensor) {
        let (T, B, I) = (x.shape[0], x.shape[1], x.shape[2])
        let H = w[0].shape[0]
        var h = (0..<B).map { b in (0..<H).map { j in Double(h0?.data[b * H + j] ?? 0) } }
        var out = [Float](repeating: 0, count: T * B * H)
        for t in 0..<T {
            for b in 0..<B where t < (lengths?[b] ?? T) {
                var next = [Double](repeating: 0, count: H)
                for j in 0..<H {
                    var s = Double(w[2].data[j]) + Double(w[3].data[j])
                    for k in 0..<I { s += Double(w[0].data[j * I + k]) * Double(x.data[(t * B + b) * I + k]) }
                    for k in 0..<H { s += Double(w[1].data[j * H + k]) * h[b][k] }
                    next[j] = relu ? max(s, 0) : Foundation.tanh(s)
                }
                h[b] = next
                for j in 0..<H { out[(t * B + b) * H + j] = Float(next[j]) }
            }
        }
        return (Tensor(shape: [T, B, H], data: out), Tensor(shape: [B, H], data: h.flatMap { $0.map(Float.init) }))
    }

    func testForwardMatchesEquations() throws {
        let type = try cellType("rnn")
        var rng = TestRNG(seed: 1)
        for relu in [false, true] {
            let cell = try type.instantiate(inputSize: 3, hiddenSize: 5, options: ["activation": .choice(relu ? "relu" : "tanh")])
            let params = cell.params.map { rng.tensor($0.shape, scale: 0.5) }
            let x = rng.tensor([4, 3, 3])
            let h0 = rng.tensor([3, 5])
            let lengths: [Int32] = [4, 2, 1]
            let r = try cell.forward(input: x, lengths: lengths, params: params, initialStates: [h0])
            let (out, hn) = reference(x: x, lengths: lengths.map(Int.init), w: params, h0: h0, relu: relu)
            assertClose(r.output, out, tol: 1e-5, "output relu=\(relu)")
            assertClose(r.finalStates[0], hn, tol: 1e-5, "h_n relu=\(relu)")
        }
    }
}

final class RNNGradientTests: XCTestCase {
    func testBackwardMatchesFiniteDifferences() throws {
        let type = try cellType("rnn")
        for activation in ["tanh", "relu"] {
            let cell = try type.instantiate(inputSize: 3, hiddenSize: 4, options: ["activation": .choice(activation)])
            for lengths in [nil, [5, 2, 1] as [Int32]] {
                let results = try GradientCheck.checkCell(cell, T: 5, B: 3, lengths: lengths)
                for r in results { XCTAssert(r.passed, "\(activation) lengths=\(String(describing: lengths)): \(r)") }
            }
        }
    }
}

import XCTest
@testable import SeqCellBase
@testable import SeqCellHost
@testable import SeqCellModel
@testable import SeqCellFormats
import SeqCellTestSupport

/// The gru plugin against the GRU equations written out here, step by step in Double, for
/// both placements of the reset gate.
final class GRUCellTests: XCTestCase {
    /// w: weight_ih [3H, I], weight_hh [3H, H], bias_ih [3H], bias_hh [3H]. Returns output, h_n.
    func reference(x: Tensor, lengths: [Int]?, w: [Tensor], h0: Tensor?, resetBefore: Bool) -> (Tensor, Tensor) {
        let (T, B, I) = (x.shape[0], x.shape[1], x.shape[2])
        let H = w[1].shape[1]
        var h = (0..<B).map { b in (0..<H).map { j in Double(h0?.data[b * H + j] ?? 0) } }
        var out = [Float](repeating: 0, count: T * B * H)
        for t in 0..<T {
            for b in 0..<B where t < (lengths?[b] ?? T) {
                let xt = (0..<I).map { Double(x.data[(t * B + b) * I + $0]) }
                let hp = h[b]
                func ix(_ k: Int) -> Double { dotD(rowD(w[0], k), xt) + Double(w[2].data[k]) }  // W_i· x + b_i·
                func hh(_ k: Int, _ v: [Double]) -> Double { dotD(rowD(w[1], k), v) + Double(w[3].data[k]) }  // W_h· v + b_h·
                let r = (0..<H).map { sigmoidD(ix($0) + hh($0, hp)) }
                let z = (0..<H).map { sigmoidD(ix(H + $0) + hh(H + $0, hp)) }
                let rh = (0..<H).map { r[$0] * hp[$0] }
                let n = (0..<H).map { j in
                    resetBefore ? Foundation.tanh(ix(2 * H + j) + hh(2 * H + j, rh))
                                : Foundation.tanh(ix(2 * H + j) + r[j] * hh(2 * H + j, hp))
                }
                h[b] = (0..<H).map { (1 - z[$0]) * n[$0] + z[$0] * hp[$0] }
                for j in 0..<H { out[(t * B + b) * H + j] = Float(h[b][j]) }
            }
        }
        return (Tensor(shape: [T, B, H], data: out), Tensor(shape: [B, H], data: h.flatMap { $0.map(Float.init) }))
    }

    func testForwardMatchesEquations() throws {
        let type = try cellType("gru")
        var rng = TestRNG(seed: 21)
        let (I, H, T, B) = (3, 5, 4, 3)
        for reset in ["after", "before"] {
            let cell = try type.instantiate(inputSize: I, hiddenSize: H, options: ["reset": .choice(reset)])
            let params = cell.params.map { rng.tensor($0.shape, scale: 0.5) }
            let x = rng.tensor([T, B, I])
            let h0 = rng.tensor([B, H])
            for lengths in [[4, 2, 1] as [Int32], nil] {
                let (out, hn) = reference(x: x, lengths: lengths?.map(Int.init), w: params, h0: h0,
                                          resetBefore: reset == "before")
                for training in [false, true] {
                    let what = "reset=\(reset) lengths=\(String(describing: lengths)) training=\(training)"
                    let r = try cell.forward(input: x, lengths: lengths, params: params, initialStates: [h0],
                                             training: training)
                    assertClose(r.output, out, tol: 1e-5, "output \(what)")
                    assertClose(r.finalStates[0], hn, tol: 1e-5, "h_n \(what)")
                }
            }
            let lengths: [Int32] = [2, 4, 1]
            let (out0, hn0) = reference(x: x, lengths: lengths.map(Int.init), w: params, h0: nil,
                                        resetBefore: reset == "before")
            let r0 = try cell.forward(input: x, lengths: lengths, params: params)
            assertClose(r0.output, out0, tol: 1e-5, "output, zero state, reset=\(reset)")
            assertClose(r0.finalStates[0], hn0, tol: 1e-5, "h_n, zero state, reset=\(reset)")
        }
    }

    /// The option is really wired: the same weights and data give different results, and the
    /// default is "after" (PyTorch's GRU).
    func testResetModesDiffer() throws {
        let type = try cellType("gru")
        var rng = TestRNG(seed: 22)
        let after = try type.instantiate(inputSize: 3, hiddenSize: 4, options: ["reset": .choice("after")])
        let before = try type.instantiate(inputSize: 3, hiddenSize: 4, options: ["reset": .choice("before")])
        let byDefault = try type.instantiate(inputSize: 3, hiddenSize: 4)
        let params = after.params.map { rng.tensor($0.shape, scale: 0.8) }
        let x = rng.tensor([4, 2, 3])
        let h0 = rng.tensor([2, 4])
        let a = try after.forward(input: x, params: params, initialStates: [h0])
        let b = try before.forward(input: x, params: params, initialStates: [h0])
        let d = try byDefault.forward(input: x, params: params, initialStates: [h0])
        XCTAssertGreaterThan(maxAbsDiff(a.output, b.output), 1e-3, "reset=after and reset=before gave the same output")
        XCTAssertEqual(d.output, a.output, "the default must be reset=after")
        XCTAssertEqual(byDefault.options["reset"], .choice("after"))
    }

    func testLayout() throws {
        let type = try cellType("gru")
        XCTAssertEqual(type.version, CellVersion(major: 1, minor: 2, patch: 0))
        // reset and bias keep their places; the ONNX options follow (CellOptionsTests).
        XCTAssertEqual(type.options.map(\.name), ["reset", "bias", "gate_activation", "gate_activation_alpha", "gate_activation_beta",
                                                   "candidate_activation", "candidate_activation_alpha", "candidate_activation_beta", "clip"])
        XCTAssertEqual(type.options[0].kind, .choice(["after", "before"]))
        XCTAssertEqual(type.options[0].defaultValue, .choice("after"))
        let (I, H) = (3, 6)
        for reset in ["after", "before"] {
            let cell = try type.instantiate(inputSize: I, hiddenSize: H, options: ["reset": .choice(reset)])
            XCTAssertEqual(cell.params.map(ExpectedParam.init), [
                ExpectedParam("weight_ih", .inputWeight, [3 * H, I], "r,z,n"),
                ExpectedParam("weight_hh", .recurrentWeight, [3 * H, H], "r,z,n"),
                ExpectedParam("bias_ih", .bias, [3 * H], "r,z,n"),
                ExpectedParam("bias_hh", .bias, [3 * H], "r,z,n"),
            ], "reset=\(reset)")
            XCTAssertEqual(cell.states, [StateInfo(name: "h", size: H)], "reset=\(reset)")
            XCTAssertEqual(cell.outputSize, H, "reset=\(reset)")
        }
    }

    func testCreateErrors() throws {
        let type = try cellType("gru")
        for bad: [String: OptionValue] in [["reset": .choice("sideways")], ["reset": .int(1)], ["reset_after": .choice("after")]] {
            XCTAssertThrowsError(try type.instantiate(inputSize: 3, hiddenSize: 4, options: bad), "\(bad) must fail") { error in
                XCTAssert("\(error)".contains("reset"), "the message must name the option: \(error)")
            }
        }
        // The plugin checks its options itself too: an out-of-range choice index past the host.
        XCTAssertThrowsError(try Cell(type: type, inputSize: 3, hiddenSize: 4, options: defaultOptions(type).merging(["reset": .int(2)]) { $1 }),
                             "plugin must reject choice index 2") { error in
            XCTAssert("\(error)".contains("reset"), "\(error)")
        }
    }

    /// Straight through the C ABI: grad_params accumulate, NULL gradient pointers, workspace bounds.
    func testRawABIConventions() throws {
        let type = try cellType("gru")
        for reset in ["after", "before"] {
            let cell = try type.instantiate(inputSize: 3, hiddenSize: 4, options: ["reset": .choice(reset)])
            for lengths in [nil, [3, 1, 2] as [Int32]] {
                try assertRawABIConventions(cell, T: 3, B: 3, lengths: lengths, seed: 31,
                                            "reset=\(reset) lengths=\(String(describing: lengths))")
            }
        }
    }

    func testNullGradientConventions() throws {
        let type = try cellType("gru")
        for reset in ["after", "before"] {
            let cell = try type.instantiate(inputSize: 3, hiddenSize: 4, options: ["reset": .choice(reset)])
            for lengths in [nil, [4, 1, 3] as [Int32]] {
                try assertNullGradientConventions(cell, T: 4, B: 3, lengths: lengths, seed: 23,
                                                  "reset=\(reset) lengths=\(String(describing: lengths))")
            }
        }
    }
}

final class GRUGradientTests: XCTestCase {
    func testBackwardMatchesFiniteDifferences() throws {
        let type = try cellType("gru")
        for reset in ["after", "before"] {
            let cell = try type.instantiate(inputSize: 3, hiddenSize: 4, options: ["reset": .choice(reset)])
            for lengths in [nil, [5, 2, 1] as [Int32]] {
                try assertGradientsMatch(cell, T: 5, B: 3, lengths: lengths,
                                         "reset=\(reset) lengths=\(String(describing: lengths))")
            }
        }
    }
}

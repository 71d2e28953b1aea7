import XCTest
@testable import SeqCellBase
@testable import SeqCellHost
@testable import SeqCellModel
@testable import SeqCellFormats
import SeqCellTestSupport

/// The lstm plugin against the PyTorch LSTM equations written out here, step by step in Double.
final class LSTMCellTests: XCTestCase {
    /// w: weight_ih [4H, I], weight_hh [4H, P], bias_ih [4H], bias_hh [4H], (weight_hr [P, H]).
    /// Returns output [T, B, P], h_n [B, P], c_n [B, H].
    func reference(x: Tensor, lengths: [Int]?, w: [Tensor], h0: Tensor?, c0: Tensor?, hidden H: Int)
        -> (Tensor, Tensor, Tensor)
    {
        let (T, B, I) = (x.shape[0], x.shape[1], x.shape[2])
        let proj = w.count == 5
        let P = proj ? w[4].shape[0] : H
        var h = (0..<B).map { b in (0..<P).map { j in Double(h0?.data[b * P + j] ?? 0) } }
        var c = (0..<B).map { b in (0..<H).map { j in Double(c0?.data[b * H + j] ?? 0) } }
        var out = [Float](repeating: 0, count: T * B * P)
        for t in 0..<T {
            for b in 0..<B where t < (lengths?[b] ?? T) {
                let xt = (0..<I).map { Double(x.data[(t * B + b) * I + $0]) }
                // Pre-activation of row k of the stacked [i; f; g; o] weights.
                func pre(_ k: Int) -> Double {
                    Double(w[2].data[k]) + Double(w[3].data[k]) + dotD(rowD(w[0], k), xt) + dotD(rowD(w[1], k), h[b])
                }
                var cNext = [Double](repeating: 0, count: H)
                var m = [Double](repeating: 0, count: H)
                for j in 0..<H {
                    let i = sigmoidD(pre(j))
                    let f = sigmoidD(pre(H + j))
                    let g = Foundation.tanh(pre(2 * H + j))
                    let o = sigmoidD(pre(3 * H + j))
                    cNext[j] = f * c[b][j] + i * g
                    m[j] = o * Foundation.tanh(cNext[j])
                }
                let hNext = proj ? (0..<P).map { dotD(rowD(w[4], $0), m) } : m
                h[b] = hNext
                c[b] = cNext
                for j in 0..<P { out[(t * B + b) * P + j] = Float(hNext[j]) }
            }
        }
        return (Tensor(shape: [T, B, P], data: out),
                Tensor(shape: [B, P], data: h.flatMap { $0.map(Float.init) }),
                Tensor(shape: [B, H], data: c.flatMap { $0.map(Float.init) }))
    }

    func testForwardMatchesEquations() throws {
        let type = try cellType("lstm")
        var rng = TestRNG(seed: 11)
        let (I, H, T, B) = (3, 5, 4, 3)
        for proj in [0, 2] {
            let P = proj > 0 ? proj : H
            let cell = try type.instantiate(inputSize: I, hiddenSize: H, options: ["proj_size": .int(proj)])
            let params = cell.params.map { rng.tensor($0.shape, scale: 0.5) }
            let x = rng.tensor([T, B, I])
            let h0 = rng.tensor([B, P])
            let c0 = rng.tensor([B, H])
            for lengths in [[4, 2, 1] as [Int32], nil] {
                let (out, hn, cn) = reference(x: x, lengths: lengths?.map(Int.init), w: params, h0: h0, c0: c0, hidden: H)
                for training in [false, true] {
                    let what = "proj_size=\(proj) lengths=\(String(describing: lengths)) training=\(training)"
                    let r = try cell.forward(input: x, lengths: lengths, params: params, initialStates: [h0, c0],
                                             training: training)
                    assertClose(r.output, out, tol: 1e-5, "output \(what)")
                    assertClose(r.finalStates[0], hn, tol: 1e-5, "h_n \(what)")
                    assertClose(r.finalStates[1], cn, tol: 1e-5, "c_n \(what)")
                }
            }
            // No initial states (all zero), and one NULL entry.
            let lengths: [Int32] = [1, 4, 3]
            let (out0, hn0, cn0) = reference(x: x, lengths: lengths.map(Int.init), w: params, h0: nil, c0: nil, hidden: H)
            let r0 = try cell.forward(input: x, lengths: lengths, params: params)
            assertClose(r0.output, out0, tol: 1e-5, "output, zero states, proj_size=\(proj)")
            assertClose(r0.finalStates[0], hn0, tol: 1e-5, "h_n, zero states, proj_size=\(proj)")
            assertClose(r0.finalStates[1], cn0, tol: 1e-5, "c_n, zero states, proj_size=\(proj)")
            let (out1, _, cn1) = reference(x: x, lengths: lengths.map(Int.init), w: params, h0: nil, c0: c0, hidden: H)
            let r1 = try cell.forward(input: x, lengths: lengths, params: params, initialStates: [nil, c0], training: true)
            assertClose(r1.output, out1, tol: 1e-5, "output, h0 NULL, proj_size=\(proj)")
            assertClose(r1.finalStates[1], cn1, tol: 1e-5, "c_n, h0 NULL, proj_size=\(proj)")
        }
    }

    func testLayout() throws {
        let type = try cellType("lstm")
        XCTAssertEqual(type.version, CellVersion(major: 1, minor: 2, patch: 0))
        // proj_size and bias keep their places; the ONNX options follow (CellOptionsTests).
        XCTAssertEqual(type.options.map(\.name), ["proj_size", "bias", "gate_activation", "gate_activation_alpha",
                                                   "gate_activation_beta", "cell_activation", "cell_activation_alpha",
                                                   "cell_activation_beta", "output_activation", "output_activation_alpha",
                                                   "output_activation_beta", "peepholes", "input_forget", "clip"])
        XCTAssertEqual(type.options[0].kind, .int(min: 0, max: 1 << 20))
        XCTAssertEqual(type.options[0].defaultValue, .int(0))

        let (I, H) = (3, 7)
        let plain = try type.instantiate(inputSize: I, hiddenSize: H)
        XCTAssertEqual(plain.params.map(ExpectedParam.init), [
            ExpectedParam("weight_ih", .inputWeight, [4 * H, I], "i,f,g,o"),
            ExpectedParam("weight_hh", .recurrentWeight, [4 * H, H], "i,f,g,o"),
            ExpectedParam("bias_ih", .bias, [4 * H], "i,f,g,o"),
            ExpectedParam("bias_hh", .bias, [4 * H], "i,f,g,o"),
        ])
        XCTAssertEqual(plain.states, [StateInfo(name: "h", size: H), StateInfo(name: "c", size: H)])
        XCTAssertEqual(plain.outputSize, H)

        let P = 4
        let projected = try type.instantiate(inputSize: I, hiddenSize: H, options: ["proj_size": .int(P)])
        XCTAssertEqual(projected.params.map(ExpectedParam.init), [
            ExpectedParam("weight_ih", .inputWeight, [4 * H, I], "i,f,g,o"),
            ExpectedParam("weight_hh", .recurrentWeight, [4 * H, P], "i,f,g,o"),
            ExpectedParam("bias_ih", .bias, [4 * H], "i,f,g,o"),
            ExpectedParam("bias_hh", .bias, [4 * H], "i,f,g,o"),
            ExpectedParam("weight_hr", .other, [P, H], ""),
        ])
        XCTAssertEqual(projected.states, [StateInfo(name: "h", size: P), StateInfo(name: "c", size: H)])
        XCTAssertEqual(projected.outputSize, P)
    }

    func testCreateErrors() throws {
        let type = try cellType("lstm")
        for proj in [5, 6, 1000] {
            XCTAssertThrowsError(try type.instantiate(inputSize: 3, hiddenSize: 5, options: ["proj_size": .int(proj)]),
                                 "proj_size=\(proj) >= hidden_size must fail") { error in
                let message = "\(error)"
                XCTAssert(message.contains("proj_size"), "message must name proj_size: \(message)")
                XCTAssert(message.contains("hidden_size"), "message must say what it must be below: \(message)")
            }
        }
        XCTAssertNoThrow(try type.instantiate(inputSize: 3, hiddenSize: 5, options: ["proj_size": .int(4)]))
        XCTAssertNoThrow(try type.instantiate(inputSize: 3, hiddenSize: 1, options: ["proj_size": .int(0)]))
        // Bad values and names, rejected by the host from the declared options.
        for bad: [String: OptionValue] in [["proj_size": .int(-1)], ["proj_size": .int((1 << 20) + 1)],
                                           ["proj_size": .choice("two")], ["projection": .int(2)]] {
            XCTAssertThrowsError(try type.instantiate(inputSize: 3, hiddenSize: 5, options: bad), "\(bad) must fail")
        }
        // The plugin checks its options itself too: bypass the host's validation.
        for bad in [-1, (1 << 20) + 1] {
            XCTAssertThrowsError(try Cell(type: type, inputSize: 3, hiddenSize: 5, options: defaultOptions(type).merging(["proj_size": .int(bad)]) { $1 }),
                                 "plugin must reject proj_size \(bad)") { error in
                XCTAssert("\(error)".contains("proj_size"), "\(error)")
            }
        }
    }

    /// Straight through the C ABI: grad_params accumulate, NULL gradient pointers, workspace bounds.
    func testRawABIConventions() throws {
        let type = try cellType("lstm")
        for proj in [0, 2] {
            let cell = try type.instantiate(inputSize: 3, hiddenSize: 4, options: ["proj_size": .int(proj)])
            for lengths in [nil, [3, 1, 2] as [Int32]] {
                try assertRawABIConventions(cell, T: 3, B: 3, lengths: lengths, seed: 31,
                                            "proj_size=\(proj) lengths=\(String(describing: lengths))")
            }
        }
    }

    func testNullGradientConventions() throws {
        let type = try cellType("lstm")
        for proj in [0, 2] {
            let cell = try type.instantiate(inputSize: 3, hiddenSize: 4, options: ["proj_size": .int(proj)])
            for lengths in [nil, [4, 1, 3] as [Int32]] {
                try assertNullGradientConventions(cell, T: 4, B: 3, lengths: lengths, seed: 13,
                                                  "proj_size=\(proj) lengths=\(String(describing: lengths))")
            }
        }
    }
}

final class LSTMGradientTests: XCTestCase {
    func testBackwardMatchesFiniteDifferences() throws {
        let type = try cellType("lstm")
        for proj in [0, 2] {
            let cell = try type.instantiate(inputSize: 3, hiddenSize: 4, options: ["proj_size": .int(proj)])
            for lengths in [nil, [5, 2, 1] as [Int32]] {
                try assertGradientsMatch(cell, T: 5, B: 3, lengths: lengths,
                                         "proj_size=\(proj) lengths=\(String(describing: lengths))")
            }
        }
    }
}

import XCTest
@testable import SeqCellBase
@testable import SeqCellHost
@testable import SeqCellModel
@testable import SeqCellFormats
@testable import SeqCellConformance
import SeqCellTestSupport

/// The built-in cells with `bias=false` (PyTorch's bias=False, Keras' use_bias=False): no bias
/// parameters at all, outputs from the cells' equations (written out in Double in the cell
/// tests) with the biases removed, gradients against finite differences, and the conformance
/// kit over every option set.
final class BiasFreeCellTests: TemporaryDirectoryTestCase {
    /// Each cell kind with its other options, so bias=false is checked in every combination.
    static let variants: [(id: String, options: [String: OptionValue])] = [
        ("rnn", ["activation": .choice("tanh")]), ("rnn", ["activation": .choice("relu")]),
        ("lstm", ["proj_size": .int(0)]), ("lstm", ["proj_size": .int(2)]),
        ("gru", ["reset": .choice("after")]), ("gru", ["reset": .choice("before")]),
    ]

    func instantiate(_ id: String, _ options: [String: OptionValue], bias: Bool, I: Int = 3, H: Int = 4) throws -> Cell {
        var o = options
        o["bias"] = .choice(bias ? "true" : "false")
        return try cellType(id).instantiate(inputSize: I, hiddenSize: H, options: o)
    }

    func testLayoutHasNoBiasParameters() throws {
        for (id, options) in Self.variants {
            let type = try cellType(id)
            XCTAssertEqual(type.options.first { $0.name == "bias" }?.defaultValue, .choice("true"), "\(id): bias defaults to true")
            let with = try instantiate(id, options, bias: true)
            let without = try instantiate(id, options, bias: false)
            let what = "\(id) \(options)"
            XCTAssertEqual(with.params.map(\.name).filter { $0.hasPrefix("bias") }, ["bias_ih", "bias_hh"], what)
            XCTAssertEqual(without.params.map(\.name), with.params.map(\.name).filter { !$0.hasPrefix("bias") }, what)
            XCTAssertFalse(without.params.contains { $0.role == .bias }, what)
            // The other parameters keep their shapes and order.
            let kept = with.params.filter { !$0.name.hasPrefix("bias") }
            XCTAssertEqual(without.params.map(\.shape), kept.map(\.shape), what)
            // Today's default (no bias option given) keeps the biases.
            let plain = try type.instantiate(inputSize: 3, hiddenSize: 4, options: options)
            XCTAssertEqual(plain.params.map(\.name), with.params.map(\.name), what)
        }
    }

    /// Forward of a bias-free cell = the equations with zero biases (Double references of the cell tests).
    func testForwardMatchesEquationsWithoutBiases() throws {
        var rng = TestRNG(seed: 71)
        let (I, H, T, B) = (3, 4, 5, 3)
        let lengths: [Int32] = [5, 2, 4]
        for (id, options) in Self.variants {
            let cell = try instantiate(id, options, bias: false, I: I, H: H)
            let params = cell.params.map { rng.tensor($0.shape, scale: 0.5) }
            let x = rng.tensor([T, B, I])
            let states = cell.states.map { rng.tensor([B, $0.size], scale: 0.5) }
            let G = ["rnn": 1, "lstm": 4, "gru": 3][id]!
            // The full parameter list the references take: biases inserted as zeros.
            let full = [params[0], params[1], Tensor.zeros([G * H]), Tensor.zeros([G * H])] + params.dropFirst(2)
            let expected: [Tensor]
            switch id {
            case "rnn":
                let (o, h) = RNNCellTests(name: "reference", testClosure: { _ in }).reference(x: x, lengths: lengths.map(Int.init), w: full, h0: states[0],
                                                      relu: options["activation"] == .choice("relu"))
                expected = [o, h]
            case "lstm":
                let (o, h, c) = LSTMCellTests(name: "reference", testClosure: { _ in }).reference(x: x, lengths: lengths.map(Int.init), w: full, h0: states[0],
                                                          c0: states[1], hidden: H)
                expected = [o, h, c]
            default:
                let (o, h) = GRUCellTests(name: "reference", testClosure: { _ in }).reference(x: x, lengths: lengths.map(Int.init), w: full, h0: states[0],
                                                      resetBefore: options["reset"] == .choice("before"))
                expected = [o, h]
            }
            for training in [false, true] {
                let r = try cell.forward(input: x, lengths: lengths, params: params, initialStates: states, training: training)
                let what = "\(id) \(options) bias=false training=\(training)"
                assertClose(r.output, expected[0], tol: 1e-5, "output \(what)")
                for (s, e) in zip(r.finalStates, expected.dropFirst()) { assertClose(s, e, tol: 1e-5, "final state \(what)") }
            }
            // The biases matter when present: the same weights with nonzero biases differ.
            let biased = try instantiate(id, options, bias: true, I: I, H: H)
            let withBias = [params[0], params[1], rng.tensor([G * H]), rng.tensor([G * H])] + params.dropFirst(2)
            let rb = try biased.forward(input: x, lengths: lengths, params: withBias, initialStates: states)
            XCTAssertGreaterThan(maxAbsDiff(rb.output, expected[0]), 1e-3, "\(id) \(options): biases have no effect?")
        }
    }

    func testBackwardMatchesFiniteDifferences() throws {
        for (id, options) in Self.variants {
            let cell = try instantiate(id, options, bias: false)
            for lengths in [nil, [5, 2, 1] as [Int32]] {
                try assertGradientsMatch(cell, T: 5, B: 3, lengths: lengths,
                                         "\(id) \(options) bias=false lengths=\(String(describing: lengths))")
            }
            try assertNullGradientConventions(cell, T: 4, B: 3, lengths: [4, 1, 3], seed: 17, "\(id) \(options) bias=false")
        }
    }

    /// validate-plugin's kit runs every value of every choice option, bias=false included.
    func testConformanceCoversBiasFree() throws {
        for id in ["rnn", "lstm", "gru"] {
            let type = try cellType(id)
            let sets = PluginConformance.optionSets(type)
            XCTAssertTrue(sets.contains { $0["bias"] == .choice("false") }, "\(id): the conformance kit does not try bias=false")
            let report = PluginConformance.validate(file: type.libraryPath)
            XCTAssert(report.passed, "\(report)")
        }
    }

    /// A checkpoint of bias-free cells saves and loads with no bias datasets, and one written
    /// before the option existed (cell_version 1.0.0, no 'bias' attribute) loads with biases.
    func testCheckpointsWithAndWithoutTheOption() throws {
        var rng = TestRNG(seed: 5)
        for bias in [false, true] {
            let cell = try instantiate("gru", ["reset": .choice("after")], bias: bias)
            let layer = try RecurrentLayer(direction: .forward, cells: [try DirectionalCell(cell: cell, params: cell.params.map { rng.tensor($0.shape) })])
            let file = path("m\(bias).h5")
            try Checkpoint(model: try Model(inputSize: 3, layers: [layer])).save(to: file)
            let group = try H5File(opening: file).root.group("model/layers/00/forward")
            XCTAssertEqual(group.isDataset("bias_ih"), bias)
            XCTAssertEqual(try group.group("options").stringAttribute("bias"), bias ? "true" : "false")
            if bias {
                // As an older SeqCell wrote it: no bias option, cell version 1.0.0.
                _ = try runPython("""
                    import h5py, sys
                    with h5py.File(sys.argv[1], "r+") as f:
                        g = f["model/layers/00/forward"]
                        del g["options"].attrs["bias"]
                        g.attrs["cell_version"] = "1.0.0"
                    """, [file])
            }
            let back = try Checkpoint.load(from: file, registry: testRegistry).model
            XCTAssertEqual(back.layers[0].cells[0].cell.options["bias"], .choice(bias ? "true" : "false"))
            XCTAssertEqual(back.layers[0].cells[0].params.map(\.data), layer.cells[0].params.map(\.data))
        }
    }
}

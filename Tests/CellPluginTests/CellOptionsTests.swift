import Foundation
import XCTest
@testable import SeqCellBase
@testable import SeqCellHost
@testable import SeqCellModel
@testable import SeqCellFormats
@testable import SeqCellConformance
import SeqCellTestSupport

/// The built-in cells' ONNX options (docs/CELLS.md): every activation in every slot, LSTM
/// peepholes, input_forget and clip, GRU in both reset placements. Forward is compared with
/// ONNX Runtime running a single ONNX RNN/LSTM/GRU node built by the `onnx` package from the
/// same weights (gate blocks reordered to ONNX's order), on inputs with lengths and initial
/// states; backward with finite differences; the conformance kit over every choice value;
/// checkpoints written before the options existed load and compute exactly as before.
final class CellOptionsTests: TemporaryDirectoryTestCase {
    /// alpha/beta for each activation, taken literally by the cells and passed to ONNX Runtime.
    static let alphaBeta: [String: (Double, Double)] = [
        "affine": (0.5, 0.2), "leaky_relu": (0.1, 0), "thresholded_relu": (0.3, 0), "scaled_tanh": (1.5, 0.7),
        "hard_sigmoid": (0.2, 0.5), "elu": (0.8, 0),
    ]
    static let activations = ["sigmoid", "tanh", "relu", "affine", "leaky_relu", "thresholded_relu", "scaled_tanh",
                              "hard_sigmoid", "elu", "softsign", "softplus"]

    /// `slot`=NAME plus its alpha and beta.
    static func activation(_ slot: String, _ name: String) -> [String: OptionValue] {
        let (a, b) = alphaBeta[name] ?? (0, 0)
        return [slot: .choice(name), slot + "_alpha": .float(a), slot + "_beta": .float(b)]
    }

    /// Every option configuration the tests cover: each activation in each slot of each cell,
    /// and the structural options alone and combined.
    static let cases: [(id: String, options: [String: OptionValue])] = {
        var c: [(String, [String: OptionValue])] = []
        for a in activations {
            c.append(("rnn", activation("activation", a)))
            for slot in ["gate_activation", "cell_activation", "output_activation"] { c.append(("lstm", activation(slot, a))) }
            for slot in ["gate_activation", "candidate_activation"] {
                c.append(("gru", activation(slot, a)))
                c.append(("gru", activation(slot, a).merging(["reset": .choice("before")]) { $1 }))
            }
        }
        c += [
            ("rnn", ["clip": .float(0.3)]), ("rnn", ["clip": .float(0.4), "activation": .choice("relu")]),
            ("lstm", ["peepholes": .choice("true")]), ("lstm", ["input_forget": .choice("true")]),
            ("lstm", ["clip": .float(0.3)]),
            ("lstm", ["peepholes": .choice("true"), "input_forget": .choice("true"), "clip": .float(0.5)]),
            ("lstm", ["peepholes": .choice("true"), "bias": .choice("false")].merging(activation("cell_activation", "softsign")) { $1 }),
            ("gru", ["clip": .float(0.3)]), ("gru", ["clip": .float(0.3), "reset": .choice("before")]),
            ("gru", ["clip": .float(0.4), "bias": .choice("false")].merging(activation("gate_activation", "hard_sigmoid")) { $1 }),
        ]
        return c
    }()

    static func describe(_ id: String, _ options: [String: OptionValue]) -> String {
        id + " " + options.keys.sorted().map { "\($0)=\(options[$0]!)" }.joined(separator: ",")
    }

    /// Runs `script` with python3 after checking that onnx and onnxruntime import; fails
    /// (never skips) with an install hint when they are missing.
    func runONNXPython(_ script: String, _ arguments: [String]) throws -> String {
        let probe = try runProgram(["python3", "-c", "import onnx, onnxruntime, numpy"], executable: "/usr/bin/env")
        guard probe.status == 0 else {
            let message = "python3 with onnx, onnxruntime and numpy is required for the ONNX option tests: "
                + "scripts/ensure-deps.sh --python, or pip install onnx onnxruntime numpy (python3 said: \(probe.err))"
            XCTFail(message)
            throw PythonFailure(message: message)
        }
        return try runPython(script, arguments)
    }

    /// Builds one ONNX node per case from the cell's own parameters and runs it in ONNX Runtime.
    static let onnxRuntimeScript = """
        import json, sys
        import numpy as np
        import onnx, onnxruntime as ort
        from onnx import helper, TensorProto
        ONNX_NAME = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu", "affine": "Affine", "leaky_relu": "LeakyRelu",
                     "thresholded_relu": "ThresholdedRelu", "scaled_tanh": "ScaledTanh", "hard_sigmoid": "HardSigmoid",
                     "elu": "Elu", "softsign": "Softsign", "softplus": "Softplus"}
        USES_ALPHA = {"affine", "leaky_relu", "thresholded_relu", "scaled_tanh", "hard_sigmoid", "elu"}
        USES_BETA = {"affine", "scaled_tanh", "hard_sigmoid"}
        # ONNX gate orders, as indices of the cell's blocks: LSTM i,o,f,c (cell i,f,g,o); GRU z,r,h (cell r,z,n);
        # peepholes i,o,f (cell i,f,o).
        ORDER = {"rnn": [0], "lstm": [0, 3, 1, 2], "gru": [1, 0, 2]}
        def blocks(a, order):
            parts = np.split(np.asarray(a, dtype=np.float32), len(order))
            return np.concatenate([parts[k] for k in order])
        out = []
        for c in json.load(open(sys.argv[1])):
            cell, o, T, B, I, H = c["cell"], c["options"], c["T"], c["B"], c["I"], c["H"]
            G = len(ORDER[cell])
            p = {k: np.array(v, dtype=np.float32) for k, v in c["params"].items()}
            if cell == "rnn":
                acts = [o.get("activation", "tanh")]; slots = ["activation"]
            elif cell == "lstm":
                slots = ["gate_activation", "cell_activation", "output_activation"]
                acts = [o.get(s, d) for s, d in zip(slots, ["sigmoid", "tanh", "tanh"])]
            else:
                slots = ["gate_activation", "candidate_activation"]
                acts = [o.get(s, d) for s, d in zip(slots, ["sigmoid", "tanh"])]
            alpha = [float(o[s + "_alpha"]) for s, a in zip(slots, acts) if a in USES_ALPHA]
            beta = [float(o[s + "_beta"]) for s, a in zip(slots, acts) if a in USES_BETA]
            attrs = dict(hidden_size=H, activations=[ONNX_NAME[a] for a in acts])
            if alpha: attrs["activation_alpha"] = alpha
            if beta: attrs["activation_beta"] = beta
            if float(o.get("clip", 0)) > 0: attrs["clip"] = float(o["clip"])
            if cell == "lstm" and o.get("input_forget") == "true": attrs["input_forget"] = 1
            if cell == "gru": attrs["linear_before_reset"] = 0 if o.get("reset") == "before" else 1
            feeds = {"X": np.array(c["x"], dtype=np.float32).reshape(T, B, I),
                     "W": blocks(p["weight_ih"].reshape(G * H, I), ORDER[cell])[None],
                     "R": blocks(p["weight_hh"].reshape(G * H, H), ORDER[cell])[None]}
            if "bias_ih" in p:
                feeds["B"] = np.concatenate([blocks(p["bias_ih"], ORDER[cell]), blocks(p["bias_hh"], ORDER[cell])])[None]
            else:
                feeds["B"] = ""
            feeds["sequence_lens"] = np.array(c["lengths"], dtype=np.int32)
            feeds["initial_h"] = np.array(c["states"][0], dtype=np.float32).reshape(1, B, H)
            names = ["X", "W", "R", "B", "sequence_lens", "initial_h"]
            if cell == "lstm":
                feeds["initial_c"] = np.array(c["states"][1], dtype=np.float32).reshape(1, B, H)
                names.append("initial_c")
                if "weight_peephole" in p:
                    feeds["P"] = blocks(p["weight_peephole"], [0, 2, 1])[None]
                    names.append("P")
            outputs = ["Y", "Y_h"] + (["Y_c"] if cell == "lstm" else [])
            given = [n for n in names if not isinstance(feeds[n], str)]
            node = helper.make_node(cell.upper(), [n if n in given else "" for n in names], outputs, **attrs)
            inputs = [helper.make_tensor_value_info(n, TensorProto.INT32 if n == "sequence_lens" else TensorProto.FLOAT, None)
                      for n in given]
            graph = helper.make_graph([node], "cell", inputs,
                                      [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs])
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
            session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
            res = session.run(None, {n: feeds[n] for n in given})
            out.append([r.reshape(-1).astype(float).tolist() for r in res])
        print(json.dumps(out))
        """

    struct ONNXCase: Encodable {
        var cell: String
        var options: [String: String]
        var T: Int, B: Int, I: Int, H: Int
        var params: [String: [Float]]
        var x: [Float]
        var lengths: [Int32]
        var states: [[Float]]
    }

    func testForwardMatchesONNXRuntime() throws {
        var rng = TestRNG(seed: 2026)
        let (T, B, I, H) = (6, 3, 3, 4)
        let lengths: [Int32] = [6, 2, 4]
        var cases: [ONNXCase] = []
        var results: [Cell.ForwardResult] = []
        var names: [String] = []
        for (id, options) in Self.cases {
            let cell = try cellType(id).instantiate(inputSize: I, hiddenSize: H, options: options)
            let params = cell.params.map { rng.tensor($0.shape, scale: 0.7) }
            let x = rng.tensor([T, B, I], scale: 1.5)
            let states = cell.states.map { rng.tensor([B, $0.size], scale: 0.8) }
            var training: [Cell.ForwardResult] = []
            for mode in [false, true] {
                training.append(try cell.forward(input: x, lengths: lengths, params: params, initialStates: states, training: mode))
            }
            // Inference and training compute the same outputs (training also keeps the tape).
            XCTAssertEqual(training[0].output, training[1].output, Self.describe(id, options))
            results.append(training[0])
            names.append(Self.describe(id, options))
            cases.append(ONNXCase(cell: id, options: options.mapValues(\.description), T: T, B: B, I: I, H: H,
                                  params: Dictionary(uniqueKeysWithValues: zip(cell.params.map(\.name), params.map(\.data))),
                                  x: x.data, lengths: lengths, states: states.map(\.data)))
        }
        let file = path("cases.json")
        try JSONEncoder().encode(cases).write(to: URL(fileURLWithPath: file))
        let expected = try JSONDecoder().decode([[[Double]]].self,
                                                from: Data(try runONNXPython(Self.onnxRuntimeScript, [file]).utf8))
        XCTAssertEqual(expected.count, cases.count)
        for (k, (r, e)) in zip(results, expected).enumerated() {
            // ONNX Y is [T, 1, B, H]; Y_h, Y_c [1, B, H]: the same element order as SeqCell's.
            let got = [r.output.data] + r.finalStates.map(\.data)
            XCTAssertEqual(got.count, e.count, names[k])
            for (which, (g, w)) in zip(["Y", "Y_h", "Y_c"], zip(got, e)) {
                XCTAssertEqual(g.count, w.count, "\(names[k]) \(which)")
                let worst = zip(g, w).map { abs(Double($0) - $1) / max(1, abs($1)) }.max() ?? .infinity
                XCTAssert(worst <= 2e-5, "\(names[k]) \(which): max relative difference \(worst) from ONNX Runtime")
            }
            // Each case must be a real test of its option: not a constant or all-zero output.
            XCTAssert(Set(r.output.data).count > 4, "\(names[k]): degenerate output")
        }
    }

    /// A non-default option changes the outputs (the option reaches the kernel), and the
    /// default values given explicitly give exactly today's outputs.
    func testOptionsChangeOutputsAndDefaultsDoNot() throws {
        var rng = TestRNG(seed: 9)
        let (T, B, I, H) = (4, 2, 3, 5)
        for id in ["rnn", "lstm", "gru"] {
            let type = try cellType(id)
            let plain = try type.instantiate(inputSize: I, hiddenSize: H)
            let params = plain.params.map { rng.tensor($0.shape) }
            let x = rng.tensor([T, B, I])
            let base = try plain.forward(input: x, params: params).output
            var defaults: [String: OptionValue] = [:]
            for o in type.options { defaults[o.name] = o.defaultValue }
            let explicit = try type.instantiate(inputSize: I, hiddenSize: H, options: defaults)
            XCTAssertEqual(try explicit.forward(input: x, params: params).output, base, "\(id): explicit defaults")
            for (cid, options) in Self.cases where cid == id && options["peepholes"] == nil {
                let cell = try type.instantiate(inputSize: I, hiddenSize: H, options: options)
                guard cell.params.count == params.count else { continue }  // bias=false cases
                let out = try cell.forward(input: x, params: params).output
                let same = options.allSatisfy { defaults[$0.key] == $0.value }
                if !same { XCTAssertGreaterThan(maxAbsDiff(out, base), 1e-4, "\(Self.describe(id, options)) has no effect") }
            }
        }
    }

    /// Activations with a kink or a jump (and clip): a central difference that straddles one
    /// is wrong by design, not the cell.
    static func hasKink(_ options: [String: OptionValue]) -> Bool {
        let kinked: Set<String> = ["relu", "leaky_relu", "thresholded_relu", "hard_sigmoid", "elu"]
        return options.values.contains { if case .choice(let v) = $0 { return kinked.contains(v) } else { return false } }
            || options["clip"].map { $0 != .float(0) } ?? false
    }

    /// Finite differences (eps 1e-3) of every input, parameter and initial state. Smooth
    /// configurations must pass at the checker's own seed. With a kink, some of the ~100
    /// pre-activations a perturbed weight moves may straddle it; a wrong gradient is wrong at
    /// every seed, a straddle is not, so such a configuration must pass completely at one of
    /// five seeds.
    func assertGradientsMatchAvoidingKinks(_ cell: Cell, _ options: [String: OptionValue], T: Int, B: Int,
                                           lengths: [Int32]?, _ what: String) throws {
        guard Self.hasKink(options) else {
            try assertGradientsMatch(cell, T: T, B: B, lengths: lengths, what)
            return
        }
        var failures: [String] = []
        for seed: UInt64 in [7, 8, 9, 10, 11] {
            let results = try GradientCheck.checkCell(cell, T: T, B: B, lengths: lengths, seed: seed)
            XCTAssertEqual(results.count, 1 + cell.params.count + cell.states.count, what)
            XCTAssert(results.allSatisfy { $0.checked > 0 }, "\(what): a check covered nothing")
            let bad = results.filter { !$0.passed }
            if bad.isEmpty { return }
            failures.append("seed \(seed): " + bad.map(\.description).joined(separator: "; "))
        }
        XCTFail("\(what): gradients differ from finite differences at every seed: \(failures.joined(separator: " | "))")
    }

    func testBackwardMatchesFiniteDifferences() throws {
        for (id, options) in Self.cases {
            let cell = try cellType(id).instantiate(inputSize: 3, hiddenSize: 4, options: options)
            for lengths in [nil, [5, 2, 1] as [Int32]] {
                try assertGradientsMatchAvoidingKinks(cell, options, T: 5, B: 3, lengths: lengths,
                                                      "\(Self.describe(id, options)) lengths=\(String(describing: lengths))")
            }
        }
    }

    /// input_forget: the f rows of the weights are kept but unused, so their gradient is zero.
    func testInputForgetLeavesForgetRowsWithoutGradient() throws {
        var rng = TestRNG(seed: 3)
        let (T, B, I, H) = (4, 2, 3, 4)
        let cell = try cellType("lstm").instantiate(inputSize: I, hiddenSize: H, options: ["input_forget": .choice("true")])
        XCTAssertEqual(cell.params.map(\.name), ["weight_ih", "weight_hh", "bias_ih", "bias_hh"])
        let params = cell.params.map { rng.tensor($0.shape) }
        let x = rng.tensor([T, B, I])
        let fwd = try cell.forward(input: x, params: params, training: true)
        let g = try cell.backward(tape: fwd.tape!, gradOutput: rng.tensor([T, B, H]))
        for (p, grad) in zip(cell.params, g.params) {
            let cols = p.shape.count > 1 ? p.shape[1] : 1
            let rows = { (gate: Int) in grad.data[(gate * H * cols)..<((gate + 1) * H * cols)] }
            XCTAssert(rows(1).allSatisfy { $0 == 0 }, "\(p.name): forget-gate rows have a gradient")
            for gate in [0, 2, 3] { XCTAssert(rows(gate).contains { $0 != 0 }, "\(p.name): gate \(gate) has no gradient") }
        }
    }

    func testPeepholeParameterLayout() throws {
        for proj in [0, 2] {
            let cell = try cellType("lstm").instantiate(inputSize: 3, hiddenSize: 4,
                                                        options: ["peepholes": .choice("true"), "proj_size": .int(proj)])
            let p = try XCTUnwrap(cell.params.last)
            XCTAssertEqual(ExpectedParam(p), ExpectedParam("weight_peephole", .other, [12], "i,f,o"))
            XCTAssertEqual(cell.params.map(\.name).dropLast(),
                           try cellType("lstm").instantiate(inputSize: 3, hiddenSize: 4, options: ["proj_size": .int(proj)])
                               .params.map(\.name)[...])
        }
        // Peepholes with a projection (not expressible in ONNX, but a valid cell) against finite differences.
        let cell = try cellType("lstm").instantiate(inputSize: 3, hiddenSize: 4, options: [
            "peepholes": .choice("true"), "proj_size": .int(2), "clip": .float(0.6)])
        try assertGradientsMatchAvoidingKinks(cell, ["clip": .float(0.6)], T: 4, B: 3, lengths: [4, 1, 3],
                                              "lstm peepholes proj_size=2 clip")
        try assertNullGradientConventions(cell, T: 4, B: 3, lengths: [4, 1, 3], seed: 5, "lstm peepholes proj_size=2")
    }

    /// validate-plugin's kit tries every value of every choice option (each activation, peepholes,
    /// input_forget) and passes.
    func testConformanceCoversTheOptions() throws {
        for id in ["rnn", "lstm", "gru"] {
            let type = try cellType(id)
            let sets = PluginConformance.optionSets(type)
            for name in Self.activations where !(id == "rnn" && name == "tanh") {
                let slot = id == "rnn" ? "activation" : "gate_activation"
                if id == "lstm" || id == "gru" ? name != "sigmoid" : true {
                    XCTAssert(sets.contains { $0[slot] == .choice(name) }, "\(id): the kit does not try \(slot)=\(name)")
                }
            }
            if id == "lstm" {
                XCTAssert(sets.contains { $0["peepholes"] == .choice("true") })
                XCTAssert(sets.contains { $0["input_forget"] == .choice("true") })
            }
            let (status, out, err) = try runProgram(["validate-plugin", type.libraryPath])
            XCTAssertEqual(status, 0, "\(id): validate-plugin failed:\n\(out)\n\(err)")
        }
    }

    /// The conformance kit's per-configuration checks on configurations with float options
    /// (clip, alpha, beta), which validate-plugin's sweep of choice values leaves at their
    /// defaults. (Its finite-difference check is testBackwardMatchesFiniteDifferences here.)
    func testConformanceChecksOnFloatOptions() throws {
        let configs: [(String, [String: OptionValue])] = [
            ("rnn", Self.activation("activation", "scaled_tanh").merging(["clip": .float(0.5)]) { $1 }),
            ("lstm", Self.activation("gate_activation", "hard_sigmoid").merging(
                ["peepholes": .choice("true"), "input_forget": .choice("true"), "clip": .float(0.5)]) { $1 }),
            ("lstm", Self.activation("output_activation", "elu").merging(["peepholes": .choice("true"), "proj_size": .int(2)]) { $1 }),
            ("gru", Self.activation("candidate_activation", "affine").merging(["clip": .float(0.5), "reset": .choice("before")]) { $1 }),
            ("gru", Self.activation("gate_activation", "leaky_relu").merging(["clip": .float(0.7)]) { $1 }),
        ]
        let checks: [(String, (Cell, inout PluginConformance.Findings) throws -> String)] = [
            ("null arguments", PluginConformance.checkNullArguments), ("determinism", PluginConformance.checkDeterminism),
            ("lengths", PluginConformance.checkLengths), ("batch independence", PluginConformance.checkBatchIndependence),
            ("training mode", PluginConformance.checkTrainingMode), ("backward accumulates", PluginConformance.checkAccumulation),
        ]
        for (id, options) in configs {
            let cell = try cellType(id).instantiate(inputSize: PluginConformance.I, hiddenSize: PluginConformance.H, options: options)
            for (name, check) in checks {
                var findings = PluginConformance.Findings()
                _ = try check(cell, &findings)
                XCTAssert(findings.problems.isEmpty, "\(Self.describe(id, options)) \(name): \(findings.problems)")
            }
        }
    }

    /// A checkpoint written before the options existed (no such attributes, cell_version 1.1.0)
    /// loads with the defaults and computes exactly what the same model computes today.
    func testOldCheckpointsLoadWithIdenticalOutputs() throws {
        var rng = TestRNG(seed: 77)
        let (T, B, I) = (5, 2, 3)
        for (id, extra) in [("rnn", [:]), ("lstm", ["proj_size": OptionValue.int(2)]), ("gru", ["reset": .choice("before")]),
                            ("gru", [:]), ("lstm", [:])] as [(String, [String: OptionValue])] {
            let cell = try cellType(id).instantiate(inputSize: I, hiddenSize: 4, options: extra)
            let layer = try RecurrentLayer(direction: .forward, cells: [try DirectionalCell(cell: cell, params: cell.params.map { rng.tensor($0.shape) })])
            let model = try Model(inputSize: I, layers: [layer])
            let file = path("\(id)-old.h5")
            try Checkpoint(model: model).save(to: file)
            let newNames = cell.type.options.map(\.name).filter { !["activation", "bias", "proj_size", "reset"].contains($0) }
            _ = try runPython("""
                import h5py, sys
                with h5py.File(sys.argv[1], "r+") as f:
                    g = f["model/layers/00/forward"]
                    for name in sys.argv[2:]:
                        del g["options"].attrs[name]
                    g.attrs["cell_version"] = "1.1.0"
                """, [file] + newNames)
            let back = try Checkpoint.load(from: file, registry: testRegistry).model
            let loaded = back.layers[0].cells[0].cell
            for name in newNames {
                XCTAssertEqual(loaded.options[name], cell.type.options.first { $0.name == name }?.defaultValue, "\(id) \(name)")
            }
            let x = rng.tensor([T, B, I])
            let a = try model.layers[0].cells[0].cell.forward(input: x, params: model.layers[0].cells[0].params).output
            let b = try loaded.forward(input: x, params: back.layers[0].cells[0].params).output
            XCTAssertEqual(a, b, "\(id) \(extra): outputs differ after loading the old checkpoint")
        }
    }

    /// `seqcell new` takes the options in a layer spec and writes them to the checkpoint.
    func testNewWithOptions() throws {
        let r = try runProgram(["new", "--input-size", "3", "--layer", "lstm:8,peepholes=true,clip=3,cell_activation=softsign",
                                "-o", "m.h5"])
        XCTAssertEqual(r.status, 0, r.err)
        let g = try H5File(opening: path("m.h5")).root.group("model/layers/00/forward")
        XCTAssertEqual(try g.group("options").stringAttribute("peepholes"), "true")
        XCTAssertEqual(try g.group("options").doubleAttribute("clip"), 3)
        XCTAssertEqual(try g.group("options").stringAttribute("cell_activation"), "softsign")
        XCTAssertEqual(try g.dataset("weight_peephole").shape, [24])
        let bad = try runProgram(["new", "--input-size", "3", "--layer", "lstm:8,gate_activation=swish", "-o", "bad.h5"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssert(bad.err.contains("gate_activation"), bad.err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("bad.h5")))
    }

    /// Export to PyTorch or Keras refuses a cell with an ONNX-only option, naming it, and
    /// still accepts the same cells with the options at their defaults.
    func testPyTorchAndKerasExportRefuseONNXOptions() throws {
        var rng = TestRNG(seed: 4)
        let refused: [(String, [String: OptionValue], String)] = [
            ("lstm", ["peepholes": .choice("true")], "peepholes=true"),
            ("lstm", ["input_forget": .choice("true")], "input_forget=true"),
            ("lstm", ["clip": .float(2)], "clip=2.0"),
            ("lstm", ["output_activation": .choice("relu")], "output_activation=relu"),
            ("gru", ["gate_activation": .choice("hard_sigmoid")], "gate_activation=hard_sigmoid"),
            ("gru", ["candidate_activation": .choice("softsign")], "candidate_activation=softsign"),
            ("rnn", ["activation": .choice("elu")], "activation=elu"),
            ("rnn", ["clip": .float(1)], "clip=1.0"),
        ]
        func model(_ id: String, _ options: [String: OptionValue]) throws -> Model {
            let cell = try cellType(id).instantiate(inputSize: 3, hiddenSize: 4, options: options)
            let layer = try RecurrentLayer(direction: .forward,
                                           cells: [try DirectionalCell(cell: cell, params: cell.params.map { rng.tensor($0.shape) })])
            return try Model(inputSize: 3, layers: [layer])
        }
        for (id, options, named) in refused {
            let m = try model(id, options)
            for (framework, export) in [("PyTorch", { _ = try PyTorchExport(model: m) }), ("Keras", { _ = try KerasExport(model: m) })]
                as [(String, () throws -> Void)] {
                do {
                    try export()
                    XCTFail("\(framework) export of \(Self.describe(id, options)) was not refused")
                } catch {
                    XCTAssert("\(error)".contains(named), "\(framework): the refusal does not name \(named): \(error)")
                }
            }
        }
        for (id, options) in [("rnn", ["activation": OptionValue.choice("relu")]), ("lstm", ["clip": .float(0)]),
                              ("gru", ["gate_activation": .choice("sigmoid")])] {
            let m = try model(id, options)
            XCTAssertNoThrow(try PyTorchExport(model: m), Self.describe(id, options))
            XCTAssertNoThrow(try KerasExport(model: m), Self.describe(id, options))
        }
    }
}

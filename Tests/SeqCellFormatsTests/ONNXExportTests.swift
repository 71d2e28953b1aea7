import Foundation
import XCTest
@testable import SeqCellBase
@testable import SeqCellHost
@testable import SeqCellModel
@testable import SeqCellFormats
import SeqCellTestSupport

/// `seqcell export --to onnx`: every exported variant runs in ONNX Runtime on inputs with
/// per-sample lengths and initial states, and gives what `seqcell run` gives (to 1e-5);
/// `onnx.checker.check_model` accepts every graph.
final class ONNXExportTests: TemporaryDirectoryTestCase {
    /// Writes in.h5: random input (or token ids), lengths, and the initial states named in
    /// argv[3] ("h:4:5;c:4:6" = h0 [4, B, 5], c0 [4, B, 6]).
    static let makeInputs = """
        import sys, h5py, numpy as np
        path, shape, states, vocab = sys.argv[1], [int(v) for v in sys.argv[2].split(",")], sys.argv[3], int(sys.argv[4])
        lengths = [int(v) for v in sys.argv[5].split(",")]
        rng = np.random.default_rng(7)
        with h5py.File(path, "w") as f:
            if vocab > 0:
                f["input"] = rng.integers(0, vocab, size=shape).astype(np.int64)
            else:
                f["input"] = rng.uniform(-1, 1, size=shape).astype(np.float32)
            f["lengths"] = np.array(lengths, dtype=np.int32)
            for spec in filter(None, states.split(";")):
                name, n, size = spec.split(":")
                f[name + "0"] = rng.uniform(-1, 1, size=(int(n), len(lengths), int(size))).astype(np.float32)
        """

    /// Checks the model with the ONNX checker, runs it in ONNX Runtime on in.h5 and prints, as
    /// JSON, the graph's input and output names, max |ORT − seqcell run| per output, and the
    /// operators used (Scan bodies included).
    static let compare = """
        import sys, json, h5py, numpy as np, onnx, onnxruntime as ort
        model_path, in_path, out_path = sys.argv[1], sys.argv[2], sys.argv[3]
        model = onnx.load(model_path)
        onnx.checker.check_model(model, full_check=True)
        sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        feeds = {}
        with h5py.File(in_path, "r") as f:
            for n in names:
                feeds[n] = f[n][()]
        results = sess.run(None, feeds)
        def ops(graph):
            found = set()
            for n in graph.node:
                found.add(n.op_type)
                for a in n.attribute:
                    if a.type == onnx.AttributeProto.GRAPH:
                        found |= ops(a.g)
            return found
        diffs = {}
        with h5py.File(out_path, "r") as f:
            for o, value in zip(sess.get_outputs(), results):
                expected = f[o.name][()]
                if expected.shape != value.shape:
                    diffs[o.name] = "shape %s, seqcell run %s" % (value.shape, expected.shape)
                else:
                    diffs[o.name] = float(np.max(np.abs(expected.astype(np.float64) - value)))
        print(json.dumps({"opset": model.opset_import[0].version, "inputs": names,
                          "outputs": [o.name for o in sess.get_outputs()], "diffs": diffs,
                          "ops": sorted(ops(model.graph))}))
        """

    struct Comparison: Decodable {
        var opset: Int
        var inputs: [String]
        var outputs: [String]
        var diffs: [String: Diff]
        var ops: [String]
    }

    enum Diff: Decodable {
        case value(Double)
        case problem(String)
        init(from decoder: Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let v = try? c.decode(Double.self) { self = .value(v) } else { self = .problem(try c.decode(String.self)) }
        }
    }

    func requireONNXRuntime() throws {
        _ = try runPython("""
            try:
                import onnx, onnxruntime
            except ImportError as e:
                raise SystemExit("onnx and onnxruntime are required for the ONNX export tests: "
                                 "scripts/ensure-deps.sh --python (pip install onnx onnxruntime): %s" % e)
            """)
    }

    struct Variant {
        var name: String
        var layers: [String]
        var head: String? = nil
        var embedding: String? = nil
        var batchFirst = false
        var lastStep = false
        /// The ops the graph must use (e.g. "Scan" for proj_size).
        var ops: [String] = []
    }

    static let variants: [Variant] = [
        Variant(name: "lstm 2 layers", layers: ["lstm:5", "lstm:5"], ops: ["LSTM"]),
        Variant(name: "gru reset after, bidirectional", layers: ["gru:4:bi"], ops: ["GRU"]),
        Variant(name: "gru reset before, reverse", layers: ["gru:4:reverse,reset=before"], ops: ["GRU"]),
        Variant(name: "rnn relu bidirectional + rnn tanh", layers: ["rnn:4:bi,activation=relu", "rnn:4:bi"], ops: ["RNN"]),
        Variant(name: "bias=false everywhere", layers: ["lstm:4,bias=false", "gru:4,bias=false", "rnn:4,bias=false"]),
        Variant(name: "mixed stack with head", layers: ["lstm:6", "gru:4:reverse", "rnn:3:bi:sum"], head: "2:tanh"),
        Variant(name: "merge sum, lstm forward gru backward", layers: ["lstm:4:bi:sum,backward_cell=gru"], head: "3:sigmoid"),
        Variant(name: "merge mul", layers: ["gru:4:bi:mul"], head: "3:relu"),
        Variant(name: "merge ave", layers: ["lstm:4:bi:ave"], head: "3:softmax"),
        Variant(name: "concat, different cell and size per direction", layers: ["lstm:4:bi:concat,backward_cell=rnn,backward_hidden=3"], head: "2"),
        Variant(name: "lstm proj_size bidirectional", layers: ["lstm:5:bi,proj_size=3", "lstm:5:bi:ave,proj_size=3"], head: "2", ops: ["Scan", "ReverseSequence"]),
        Variant(name: "mixed cells of one size: h0 without c0", layers: ["lstm:4:bi", "gru:4:bi:sum", "rnn:4:bi:mul"], head: "2"),
        Variant(name: "lstm proj_size reverse, no bias", layers: ["lstm:5:reverse,proj_size=2,bias=false"], ops: ["Scan"]),
        // The ONNX options of the built-in cells: attributes of the operators, or primitive operators in the Scan.
        Variant(name: "rnn leaky_relu clip, affine/softplus per direction",
                layers: ["rnn:4,activation=leaky_relu,activation_alpha=0.2,clip=0.8",
                         "rnn:4:bi,activation=affine,activation_alpha=0.5,activation_beta=0.1,backward.activation=softplus"], ops: ["RNN"]),
        Variant(name: "gru hard_sigmoid softsign clip, thresholded_relu",
                layers: ["gru:4,gate_activation=hard_sigmoid,gate_activation_alpha=0.2,gate_activation_beta=0.5,candidate_activation=softsign,clip=1.5,reset=before",
                         "gru:4:bi,candidate_activation=thresholded_relu,candidate_activation_alpha=0.1"], ops: ["GRU"]),
        Variant(name: "lstm peepholes input_forget clip elu scaled_tanh",
                layers: ["lstm:4:bi,peepholes=true,input_forget=true,clip=1.0,cell_activation=elu,cell_activation_alpha=1.0,"
                         + "output_activation=scaled_tanh,output_activation_alpha=1.5,output_activation_beta=0.7",
                         "lstm:4:bi,peepholes=true,gate_activation=hard_sigmoid,gate_activation_alpha=0.2,gate_activation_beta=0.5"],
                head: "2", ops: ["LSTM"]),
        Variant(name: "lstm proj_size with peepholes, input_forget, clip, activations (Scan)",
                layers: ["lstm:5:bi,proj_size=3,peepholes=true,clip=0.9,cell_activation=softsign,output_activation=relu",
                         "lstm:5:reverse,proj_size=2,input_forget=true,gate_activation=hard_sigmoid,gate_activation_alpha=0.2,"
                         + "gate_activation_beta=0.5,cell_activation=affine,cell_activation_alpha=0.7,cell_activation_beta=-0.1"],
                ops: ["Scan", "Clip"]),
        Variant(name: "batch first", layers: ["lstm:4:bi", "gru:4"], head: "2:softmax", batchFirst: true),
        Variant(name: "embedding", layers: ["gru:4:bi"], head: "3", embedding: "11:3", ops: ["Gather"]),
        Variant(name: "embedding batch first", layers: ["lstm:4,proj_size=2"], embedding: "9:3", batchFirst: true),
    ]

    /// Every variant: the ONNX model run by ONNX Runtime with lengths and initial states gives
    /// `seqcell run`'s output, h_n and c_n.
    func testEveryVariantMatchesSeqCellRunInONNXRuntime() throws {
        try requireONNXRuntime()
        XCTAssertFalse(Self.variants.isEmpty)
        for v in Self.variants {
            try check(v)
        }
    }

    /// Keras-style last-step models (return_sequences=False): output [B, O], a bidirectional
    /// last layer taking its backward direction at step 0.
    func testLastStepModelsMatchSeqCellRun() throws {
        try requireONNXRuntime()
        try check(Variant(name: "last step bidirectional", layers: ["gru:3", "lstm:4:bi:concat"], head: "2:softmax", lastStep: true))
        try check(Variant(name: "last step forward", layers: ["rnn:4"], head: "2", lastStep: true))
        try check(Variant(name: "last step lstm proj bidirectional sum", layers: ["lstm:5:bi:sum,proj_size=3"], lastStep: true))
    }

    func check(_ v: Variant, file: StaticString = #filePath, line: UInt = #line) throws {
        let specs = try v.layers.map { try LayerSpec(parsing: $0) }
        let head = try v.head.map { try HeadSpec(parsing: $0) }
        var model: Model
        if let e = v.embedding {
            model = try Model.build(embedding: try EmbeddingSpec(parsing: e), layers: specs, head: head, registry: testRegistry, seed: 5)
        } else {
            model = try Model.build(inputSize: 3, layers: specs, head: head, registry: testRegistry, seed: 5)
        }
        if v.lastStep { model.outputSteps = .last }
        let ckpt = path("m.h5"), input = path("in.h5"), output = path("out.h5"), onnx = path("m.onnx")
        for p in [ckpt, input, output, onnx] { try? FileManager.default.removeItem(atPath: p) }
        try Checkpoint(model: model).save(to: ckpt)

        let (T, B) = (6, 4)
        let lengths = [6, 3, 1, 5]
        let states = commonStateNames(model).compactMap { name -> String? in
            stackedStates(model.layers.map { $0.cells.map { $0.cell.states.map { Tensor.zeros([1, $0.size]) } } }, model: model, state: name)
                .map { "\(name):\($0.shape[0]):\($0.shape[2])" }
        }
        let shape = (v.batchFirst ? [B, T] : [T, B]) + (v.embedding == nil ? [3] : [])
        _ = try runPython(Self.makeInputs, [input, shape.map(String.init).joined(separator: ","), states.joined(separator: ";"),
                                            String(model.embedding?.vocabularySize ?? 0), lengths.map(String.init).joined(separator: ",")],
                          file: file, line: line)
        let layout = v.batchFirst ? ["--batch-first"] : []
        let run = try runProgram(["run", ckpt, "-i", input, "-o", output] + layout)
        XCTAssertEqual(run.status, 0, "\(v.name): seqcell run: \(run.err)", file: file, line: line)
        let export = try runProgram(["export", ckpt, "-o", onnx, "--lengths"] + (states.isEmpty ? [] : ["--initial-states"]) + layout)
        XCTAssertEqual(export.status, 0, "\(v.name): seqcell export: \(export.err)", file: file, line: line)
        guard run.status == 0, export.status == 0 else { return }
        XCTAssertTrue(export.out.contains("opset 17"), "\(v.name): \(export.out)", file: file, line: line)

        let c = try decodePython(Comparison.self, Self.compare, [onnx, input, output])
        XCTAssertEqual(c.opset, 17, v.name, file: file, line: line)
        XCTAssertEqual(c.inputs, ["input", "lengths"] + states.map { String($0.prefix { $0 != ":" }) + "0" }, v.name, file: file, line: line)
        XCTAssertEqual(c.outputs, ["output"] + states.map { String($0.prefix { $0 != ":" }) + "_n" }, v.name, file: file, line: line)
        XCTAssertEqual(c.diffs.count, c.outputs.count, v.name, file: file, line: line)
        for (name, d) in c.diffs {
            switch d {
            case .value(let x): XCTAssertLessThanOrEqual(x, 1e-5, "\(v.name): \(name) differs from seqcell run by \(x)", file: file, line: line)
            case .problem(let s): XCTFail("\(v.name): \(name): \(s)", file: file, line: line)
            }
        }
        for op in v.ops { XCTAssertTrue(c.ops.contains(op), "\(v.name): the graph should use \(op), has \(c.ops)", file: file, line: line) }
    }

    /// Without --lengths and --initial-states the graph takes `input` alone; batch and time are
    /// dynamic: the same file runs on two shapes.
    func testInputsAloneAndDynamicDimensions() throws {
        try requireONNXRuntime()
        let model = try Model.build(inputSize: 3, layers: [try LayerSpec(parsing: "lstm:4:bi,proj_size=2")], registry: testRegistry, seed: 3)
        let ckpt = path("m.h5"), onnx = path("m.onnx")
        try Checkpoint(model: model).save(to: ckpt)
        let export = try runProgram(["export", ckpt, "--to", "onnx", "-o", onnx])
        XCTAssertEqual(export.status, 0, export.err)
        for (T, B) in [(2, 1), (7, 3)] {
            let x = Tensor(shape: [T, B, 3], data: (0..<(T * B * 3)).map { Float(($0 * 37) % 11) / 11 - 0.5 })
            let expected = try model.forward(input: x)
            let npy = path("x\(T).npy")
            try NPY.write(to: npy, shape: x.shape, floats: x.data)
            let json = try runPython("""
                import sys, json, numpy as np, onnxruntime as ort
                s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
                out = s.run(None, {"input": np.load(sys.argv[2])})
                print(json.dumps({"inputs": [i.name for i in s.get_inputs()], "output": out[0].flatten().tolist(),
                                  "shape": list(out[0].shape), "h_n": out[1].flatten().tolist()}))
                """, [onnx, npy])
            struct R: Decodable { var inputs: [String]; var output: [Float]; var shape: [Int]; var h_n: [Float] }
            let r = try JSONDecoder().decode(R.self, from: Data(json.utf8))
            XCTAssertEqual(r.inputs, ["input"])
            assertClose(Tensor(shape: r.shape, data: r.output), expected.output, tol: 1e-5, "output T=\(T) B=\(B)")
            let hn = stackedStates(expected.finalStates, model: model, state: "h")!
            assertClose(Tensor(shape: hn.shape, data: r.h_n), hn, tol: 1e-5, "h_n T=\(T) B=\(B)")
        }
    }

    func testThirdPartyCellsAndBadFlagsAreRefused() throws {
        let model = try Model.build(inputSize: 3, layers: [try LayerSpec(parsing: "gru:3")], registry: testRegistry, seed: 1)
        let ckpt = path("m.h5")
        try Checkpoint(model: model).save(to: ckpt)
        let r = try runProgram(["export", ckpt, "-o", path("m.onnx"), "--prefix", "rnn."])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.err.contains("--prefix does not apply to --to onnx"), r.err)
        let r2 = try runProgram(["export", ckpt, "-o", path("m.safetensors"), "--batch-first"])
        XCTAssertNotEqual(r2.status, 0)
        XCTAssertTrue(r2.err.contains("--batch-first applies to --to onnx only"), r2.err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("m.onnx")))
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("m.safetensors")))

        // Initial states that have no PyTorch layout (sizes differ between layers): refused, no file.
        let mixed = try Model.build(inputSize: 3, layers: [try LayerSpec(parsing: "lstm:4"), try LayerSpec(parsing: "gru:3")],
                                    registry: testRegistry, seed: 1)
        try Checkpoint(model: mixed).save(to: path("mixed.h5"))
        let noStates = try runProgram(["export", path("mixed.h5"), "-o", path("mixed.onnx"), "--initial-states"])
        XCTAssertEqual(noStates.status, 1)
        XCTAssertTrue(noStates.err.contains("cannot export initial states"), noStates.err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("mixed.onnx")))
        // Without them it exports, and says how each direction is written.
        let ok = try runProgram(["export", path("mixed.h5"), "--to", "onnx", "-o", path("mixed.onnx"), "--lengths"])
        XCTAssertEqual(ok.status, 0, ok.err)
        XCTAssertTrue(ok.out.contains("layer 0 forward: LSTM") && ok.out.contains("layer 1 forward: GRU"), ok.out)
        XCTAssertTrue(ok.out.contains("[output] = session.run(None, {\"input\": input, \"lengths\": lengths})"), ok.out)

        // A model with a third-party cell (the sample MGU plugin, loaded through the registry).
        let mgu = try buildMGU(in: try temporaryFolder())
        let made = try runProgram(["new", "--plugin-path", mgu, "--input-size", "3", "--layer", "lstm:4", "--layer", "mgu:3:bi",
                                   "-o", path("mgu.h5")])
        XCTAssertEqual(made.status, 0, made.err)
        let refused = try runProgram(["export", "--plugin-path", mgu, path("mgu.h5"), "-o", path("mgu.onnx")])
        XCTAssertEqual(refused.status, 1)
        XCTAssertTrue(refused.err.contains("layer 1 forward uses cell 'mgu'"), refused.err)
        XCTAssertEqual(refused.err.split(separator: "\n").count, 1, refused.err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("mgu.onnx")))
    }
}

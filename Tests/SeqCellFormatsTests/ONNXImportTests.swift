import Foundation
import XCTest
@testable import SeqCellBase
@testable import SeqCellHost
@testable import SeqCellModel
@testable import SeqCellFormats
import SeqCellTestSupport

/// The fixtures of Fixtures/onnx/ (written by make_onnx_fixtures.py there).
struct ONNXFixtureCase: Decodable {
    var name: String
    var batch_first: Bool
    var needs: [String]
    var note: String
}

func onnxFixture(_ name: String) -> String { fixturePath("onnx/\(name)") }

func onnxFixtureCases() throws -> [ONNXFixtureCase] {
    struct Manifest: Decodable { var cases: [ONNXFixtureCase] }
    let data = try Data(contentsOf: URL(fileURLWithPath: onnxFixture("manifest.json")))
    return try JSONDecoder().decode(Manifest.self, from: data).cases
}

/// `seqcell import model.onnx` then `seqcell run` on every fixture, compared with what
/// onnxruntime, PyTorch or the ONNX package's own test data give.
final class ONNXImportTests: TemporaryDirectoryTestCase {
    /// Which contract options each of the three built-in plugins declares.
    func declaredOptions() throws -> [String: Set<String>] {
        let registry = PluginRegistry()
        registry.load(path: buildProductsDir)
        var out: [String: Set<String>] = [:]
        for id in ["rnn", "lstm", "gru"] { out[id] = Set(try registry.cellType(id).options.map(\.name)) }
        return out
    }

    func cellOf(_ c: ONNXFixtureCase) -> String {
        c.name.contains("lstm") ? "lstm" : c.name.contains("gru") ? "gru" : "rnn"
    }

    /// Imports and runs one case and compares every expected dataset.
    func check(_ c: ONNXFixtureCase, file: StaticString = #filePath, line: UInt = #line) throws {
        let dir = onnxFixture(c.name)
        let ckpt = path("\(c.name).h5"), out = path("\(c.name)-y.h5")
        let imp = try runProgram(["import", "\(dir)/model.onnx", "-o", ckpt], file: file, line: line)
        XCTAssertEqual(imp.status, 0, "\(c.name): import failed: \(imp.err)", file: file, line: line)
        guard imp.status == 0 else { return }
        let run = try runProgram(["run", ckpt, "-i", "\(dir)/x.h5", "-o", out] + (c.batch_first ? ["--batch-first"] : ["--time-major"]),
                                 file: file, line: line)
        XCTAssertEqual(run.status, 0, "\(c.name): run failed: \(run.err)", file: file, line: line)
        guard run.status == 0 else { return }
        let expected = "\(dir)/expected.h5"
        var compared = 0
        for name in ["output", "h_n", "c_n"] where try hasDataset(expected, name) {
            let (got, want) = (try readTensor(out, name), try readTensor(expected, name))
            XCTAssertEqual(got.shape, want.shape, "\(c.name) \(name): shapes differ", file: file, line: line)
            guard got.shape == want.shape else { continue }
            // 1e-5, relative to the value where it exceeds 1 (an unbounded activation's large outputs).
            let worst = zip(got.data, want.data).enumerated().max { abs($0.1.0 - $0.1.1) / max(1, abs($0.1.1)) < abs($1.1.0 - $1.1.1) / max(1, abs($1.1.1)) }
            if let w = worst {
                let err = abs(w.element.0 - w.element.1) / max(1, abs(w.element.1))
                XCTAssert(err <= 1e-5, "\(c.name) \(name): error \(err) at \(w.offset) (\(w.element.0) vs \(w.element.1))", file: file, line: line)
            }
            compared += 1
        }
        XCTAssertGreaterThan(compared, 0, "\(c.name): no expected dataset", file: file, line: line)
    }

    func testEveryFixtureOfTodaysCellOptionsMatchesOnnxRuntime() throws {
        let cases = try onnxFixtureCases().filter { $0.needs.isEmpty }
        XCTAssertGreaterThanOrEqual(cases.count, 50, "the manifest lists too few cases")
        // Each source is present: the PyTorch exporter, onnx.helper nodes, the ONNX package's tests.
        for prefix in ["torch_", "node_", "backend_", "last_"] {
            XCTAssert(cases.contains { $0.name.hasPrefix(prefix) }, "no \(prefix) case")
        }
        for c in cases { try check(c) }
    }

    /// Attributes that need the ONNX cell options (peepholes, clip, input_forget, activations):
    /// compared where the plugins declare the option; refused by name where they do not.
    func testAttributesNeedingCellOptionsMatchOrAreRefusedByName() throws {
        let cases = try onnxFixtureCases().filter { !$0.needs.isEmpty }
        XCTAssertGreaterThanOrEqual(cases.count, 20)
        let declared = try declaredOptions()
        var missing: [String] = []
        for c in cases {
            let cell = cellOf(c)
            if c.needs.allSatisfy({ declared[cell]?.contains($0) == true }) {
                try check(c)
                continue
            }
            let ckpt = path("\(c.name).h5")
            let r = try runProgram(["import", "\(onnxFixture(c.name))/model.onnx", "-o", ckpt])
            XCTAssertEqual(r.status, 1, "\(c.name): \(r.out)")
            XCTAssert(r.err.contains("LSTM") || r.err.contains("GRU") || r.err.contains("RNN"), "\(c.name): \(r.err)")
            XCTAssert(r.err.contains("attribute") || r.err.contains("input P"), "\(c.name) does not name the attribute: \(r.err)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: ckpt), "\(c.name): a checkpoint was written")
            missing.append(c.name)
        }
        if !missing.isEmpty {
            throw XCTSkip("the built-in plugins do not declare the ONNX cell options yet; refused by name: \(missing.joined(separator: ", "))")
        }
    }

    func testImportNotesMapInputsAndOutputs() throws {
        let r = try runProgram(["import", onnxFixture("torch_lstm_2layer_states/model.onnx"), "-o", path("m.h5")])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssert(r.out.contains("ONNX opset 14: LSTM(hidden_size=4) → LSTM(hidden_size=4)"), r.out)
        XCTAssert(r.out.contains("'h_n'") && r.out.contains("dataset h_n"), r.out)
        XCTAssert(r.out.contains("'c_n'") && r.out.contains("dataset c_n"), r.out)
        let bf = try runProgram(["import", onnxFixture("torch_gru_batch_first_softmax_head/model.onnx"), "-o", path("g.h5")])
        XCTAssertEqual(bf.status, 0, bf.err)
        XCTAssert(bf.out.contains("--batch-first"), bf.out)
        XCTAssert(bf.out.contains("head: linear 6 → 3, softmax"), bf.out)
        // Another extension with --from onnx; PyTorch/Keras options refused.
        try FileManager.default.copyItem(atPath: onnxFixture("torch_gru_3layer_h0/model.onnx"), toPath: path("model.bin"))
        let other = try runProgram(["import", path("model.bin"), "--from", "onnx", "-o", path("o.h5")])
        XCTAssertEqual(other.status, 0, other.err)
        XCTAssert(other.out.contains("input 'h0' → run's h0 ([L·D, B, H]"), other.out)
        let flag = try runProgram(["import", onnxFixture("torch_gru_3layer_h0/model.onnx"), "--head", "fc", "-o", path("f.h5")])
        XCTAssertEqual(flag.status, 1)
        XCTAssert(flag.err.contains("--head does not apply to ONNX models"), flag.err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("f.h5")))
        let last = try runProgram(["import", onnxFixture("last_gru_bidirectional_matmul_softmax/model.onnx"), "-o", path("l.h5")])
        XCTAssertEqual(last.status, 0, last.err)
        XCTAssert(last.out.contains("return_sequences=False"), last.out)
    }

    func testTheONNXPackagesOwnTestDataIsCommitted() throws {
        // The operator test models as the package writes them, beside the bound copies.
        for name in ["test_lstm_defaults", "test_gru_seq_length", "test_simple_rnn_with_initial_bias", "test_lstm_batchwise"] {
            let d = onnxFixture("backend/\(name)")
            XCTAssert(FileManager.default.fileExists(atPath: "\(d)/model.onnx"), name)
            XCTAssert(FileManager.default.fileExists(atPath: "\(d)/test_data_set_0/output_0.pb"), name)
        }
        // Their W, R, B are graph inputs: import refuses them, naming the node and input.
        let r = try runProgram(["import", onnxFixture("backend/test_lstm_defaults/model.onnx"), "-o", path("m.h5")])
        XCTAssertEqual(r.status, 1)
        XCTAssert(r.err.contains("(LSTM)") && r.err.contains("input W 'W'") && r.err.contains("initializer"), r.err)
    }
}

/// Bad ONNX files: each refused with a message naming what and where, exit 1, no output.
final class ONNXImportErrorTests: TemporaryDirectoryTestCase {
    func base(_ name: String = "node_lstm_forward") throws -> Onnx_ModelProto {
        try Onnx_ModelProto(serializedBytes: Data(contentsOf: URL(fileURLWithPath: onnxFixture("\(name)/model.onnx"))))
    }

    /// Writes `model` (or `bytes`), imports it and checks the refusal.
    func refuse(_ model: Onnx_ModelProto? = nil, bytes: Data? = nil, file name: String = "bad.onnx", _ needles: [String],
                file: StaticString = #filePath, line: UInt = #line) throws {
        let data = try bytes ?? model!.serializedData()
        try data.write(to: URL(fileURLWithPath: path(name)))
        let out = path("out.h5")
        let r = try runProgram(["import", path(name), "-o", out], file: file, line: line)
        XCTAssertEqual(r.status, 1, "exit status; stderr: \(r.err)", file: file, line: line)
        for n in needles { XCTAssert(r.err.contains(n), "'\(n)' missing from: \(r.err)", file: file, line: line) }
        XCTAssertFalse(FileManager.default.fileExists(atPath: out), "an output file was written", file: file, line: line)
        XCTAssertFalse(r.err.contains("Fatal error") || r.err.contains("SwiftProtobuf"), r.err, file: file, line: line)
        XCTAssertEqual(r.err.split(separator: "\n").count, 1, "one line: \(r.err)", file: file, line: line)
    }

    func testTruncatedAndInvalidProtobufs() throws {
        let good = try base().serializedData()
        try refuse(bytes: good.prefix(good.count / 2), ["does not decode"])
        try refuse(bytes: Data([0x08, 0x07, 0x12, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F]), ["does not decode"])
        try refuse(bytes: Data(), ["empty"])
        var noGraph = try base()
        noGraph.clearGraph()
        try refuse(noGraph, ["no graph"])
        var oldOpset = try base()
        oldOpset.opsetImport = [Onnx_OperatorSetIdProto.with { $0.domain = ""; $0.version = 5 }]
        try refuse(oldOpset, ["opset 5"])
    }

    func testCyclesAndUnknownOps() throws {
        var cyc = try base()
        cyc.graph.node.append(Onnx_NodeProto.with { $0.opType = "Identity"; $0.name = "loop_a"; $0.input = ["b"]; $0.output = ["a"] })
        cyc.graph.node.append(Onnx_NodeProto.with { $0.opType = "Identity"; $0.name = "loop_b"; $0.input = ["a"]; $0.output = ["b"] })
        try refuse(cyc, ["cycle", "loop_"])
        var unknown = try base()
        unknown.graph.node.append(Onnx_NodeProto.with { $0.opType = "Conv"; $0.name = "conv1"; $0.input = ["Y"]; $0.output = ["z"] })
        try refuse(unknown, ["node 'conv1' (Conv)", "operator 'Conv'"])
        var dangling = try base()
        dangling.graph.node[0].input[1] = "nowhere"
        try refuse(dangling, ["reads 'nowhere'"])
        var logsm = try base("torch_rnn_relu_3layer_head")
        logsm.graph.node.append(Onnx_NodeProto.with { $0.opType = "LogSoftmax"; $0.name = "lsm"; $0.input = [logsm.graph.output[0].name]; $0.output = ["p"] })
        try refuse(logsm, ["node 'lsm' (LogSoftmax)"])
    }

    func testShapeMismatchesAndDtypes() throws {
        var m = try base()
        let w = m.graph.initializer.firstIndex { $0.name == "R" }!
        m.graph.initializer[w].dims = [1, 16, 3]
        m.graph.initializer[w].floatData = Array(repeating: 0, count: 48)
        m.graph.initializer[w].clearRawData()
        try refuse(m, ["(LSTM)", "input R 'R'", "[1, 16, 3]"])
        var count = try base()
        count.graph.initializer[0].dims = [1, 16, 4]
        try refuse(count, ["initializer '\(count.graph.initializer[0].name)'", "[1, 16, 4]"])
        var half = try base()
        half.graph.initializer[0].dataType = 10  // float16
        try refuse(half, ["initializer '\(half.graph.initializer[0].name)'", "data type 10"])
        var huge = try base()
        huge.graph.initializer[0].dims = [1 << 20, 1 << 20, 1 << 20]
        try refuse(huge, ["initializer '\(huge.graph.initializer[0].name)'"])
        var hidden = try base()
        hidden.graph.node[0].attribute = hidden.graph.node[0].attribute.map { a in
            var a = a
            if a.name == "hidden_size" { a.i = 5 }
            return a
        }
        try refuse(hidden, ["(LSTM)", "hidden_size = 5"])
        var dir = try base()
        dir.graph.node[0].attribute = dir.graph.node[0].attribute.map { a in
            var a = a
            if a.name == "direction" { a.s = Data("sideways".utf8) }
            return a
        }
        try refuse(dir, ["(LSTM)", "'sideways'"])
    }

    /// External data is read only inside the model's folder, size-checked.
    func testExternalDataStaysInsideTheModelsFolder() throws {
        let model = try base()
        let k = model.graph.initializer.firstIndex { $0.name == "W" }!
        let w = model.graph.initializer[k]
        var bytes = Data()
        for f in w.floatData.isEmpty ? [] : w.floatData { withUnsafeBytes(of: f.bitPattern.littleEndian) { bytes.append(contentsOf: $0) } }
        if bytes.isEmpty { bytes = w.rawData }
        XCTAssertEqual(bytes.count, 1 * 16 * 3 * 4)
        try bytes.write(to: URL(fileURLWithPath: path("w.bin")))
        func external(_ location: String, offset: Int? = nil, length: Int? = nil) -> Onnx_ModelProto {
            var m = model
            var t = w
            t.floatData = []
            t.clearRawData()
            t.dataLocation = .external
            t.externalData = [Onnx_StringStringEntryProto.with { $0.key = "location"; $0.value = location }]
            if let offset { t.externalData.append(.with { $0.key = "offset"; $0.value = String(offset) }) }
            if let length { t.externalData.append(.with { $0.key = "length"; $0.value = String(length) }) }
            m.graph.initializer[k] = t
            return m
        }
        // Inside the folder: imports and gives the same model as the inline weights.
        try external("w.bin").serializedData().write(to: URL(fileURLWithPath: path("ext.onnx")))
        let ok = try runProgram(["import", path("ext.onnx"), "-o", path("ext.h5")])
        XCTAssertEqual(ok.status, 0, ok.err)
        let inline = try runProgram(["import", onnxFixture("node_lstm_forward/model.onnx"), "-o", path("inline.h5")])
        XCTAssertEqual(inline.status, 0, inline.err)
        let a = try Checkpoint.load(from: path("ext.h5"), registry: registry()).model
        let b = try Checkpoint.load(from: path("inline.h5"), registry: registry()).model
        XCTAssertEqual(a.layers[0].cells[0].params, b.layers[0].cells[0].params)

        try refuse(external("../w.bin"), ["initializer 'W'", "'..'"])
        try refuse(external("/etc/passwd"), ["initializer 'W'", "absolute path"])
        try refuse(external("w.bin", offset: 8), ["initializer 'W'", "beyond its end"])
        try refuse(external("w.bin", length: 12), ["initializer 'W'", "length 12"])
        try refuse(external("missing.bin"), ["initializer 'W'", "'missing.bin'"])
        let outside = FileManager.default.temporaryDirectory.appendingPathComponent("seqcell-onnx-outside-\(UUID().uuidString).bin")
        try bytes.write(to: outside)
        defer { try? FileManager.default.removeItem(at: outside) }
        try FileManager.default.createSymbolicLink(atPath: path("link.bin"), withDestinationPath: outside.path)
        try refuse(external("link.bin"), ["initializer 'W'", "outside the model's folder"])
    }

    func registry() -> PluginRegistry {
        let r = PluginRegistry()
        r.load(path: buildProductsDir)
        return r
    }

    func testGraphsSeqCellCannotExpressAreRefusedNamingTheNode() throws {
        // Two readers of the input: not a chain.
        var fork = try base()
        var second = fork.graph.node[0]
        second.name = "second_lstm"
        second.output = ["Y2", "", ""]
        fork.graph.node.append(second)
        try refuse(fork, ["node 'second_lstm' (LSTM)", "chain"])
        // A non-zero constant initial state.
        var initial = try base()
        initial.graph.initializer.append(Onnx_TensorProto.with { $0.name = "h0c"; $0.dataType = 1; $0.dims = [1, 3, 4]; $0.floatData = Array(repeating: 0.5, count: 12) })
        while initial.graph.node[0].input.count < 6 { initial.graph.node[0].input.append("") }
        initial.graph.node[0].input[5] = "h0c"
        try refuse(initial, ["(LSTM)", "initial_h 'h0c'", "non-zero constant"])
        // Weights as graph inputs.
        var winput = try base()
        winput.graph.initializer.removeAll { $0.name == "W" }
        winput.graph.input.append(Onnx_ValueInfoProto.with { $0.name = "W" })
        try refuse(winput, ["(LSTM)", "input W 'W'"])
        // The head and a further layer both read the first layer's output.
        var branch = try base("torch_rnn_relu_3layer_head")
        let firstRNN = branch.graph.node.first { $0.opType == "RNN" }!
        var matmul = branch.graph.node.first { $0.opType == "MatMul" }!
        let secondRNN = branch.graph.node.filter { $0.opType == "RNN" }[1]
        matmul.name = "early_head"
        matmul.input[0] = secondRNN.input[0]
        matmul.output = ["early"]
        // Right after the node writing that output, so it is read before the second layer.
        let at = branch.graph.node.firstIndex { $0.output.contains(secondRNN.input[0]) }! + 1
        branch.graph.node.insert(matmul, at: at)
        _ = firstRNN
        try refuse(branch, ["node 'early_head' (MatMul)"])
        var late = branch
        late.graph.node.remove(at: at)
        late.graph.node.append(matmul)
        try refuse(late, ["node 'early_head' (MatMul)"])
        // An unknown attribute.
        var attr = try base()
        attr.graph.node[0].attribute.append(Onnx_AttributeProto.with { $0.name = "zoneout"; $0.type = .float; $0.f = 0.1 })
        try refuse(attr, ["(LSTM)", "'zoneout'"])
    }
}

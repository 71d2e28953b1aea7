import Foundation
import XCTest
@testable import SeqCellBase
@testable import SeqCellHost
@testable import SeqCellModel
@testable import SeqCellFormats
import SeqCellTestSupport

/// Export to PyTorch and Keras: round trips are exact, the files have the frameworks' own
/// names and layouts, and what a framework cannot express is refused with the reason.
final class InteropExportTests: TemporaryDirectoryTestCase {
    func assertSameParameters(_ a: Model, _ b: Model, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.namedParameters.map(\.path), b.namedParameters.map(\.path), what, file: file, line: line)
        XCTAssertEqual(a.namedParameters.map(\.value), b.namedParameters.map(\.value), "\(what): parameters differ", file: file, line: line)
        XCTAssertEqual(a.layers.map { $0.cells.map { $0.cell.options } }, b.layers.map { $0.cells.map { $0.cell.options } }, what, file: file, line: line)
        XCTAssertEqual(a.layers.map(\.direction), b.layers.map(\.direction), what, file: file, line: line)
        XCTAssertEqual(a.head?.activation, b.head?.activation, what, file: file, line: line)
    }

    func pytorchRoundTrip(_ model: Model, _ what: String) throws -> Model {
        let e = try PyTorchExport(model: model)
        let st = path("rt.safetensors"), json = path("rt.json")
        try e.write(to: st, jsonPath: json)
        let back = try PyTorchImporter.importFile(st, registry: testRegistry)
        XCTAssertTrue(back.notes.allSatisfy { !$0.contains("assumed") }, "\(what): the file's metadata should answer everything: \(back.notes)")
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: json))) as? [String: Any]
        XCTAssertEqual(config?["module"] as? String, "torch.nn.\(e.module)", what)
        return back.model
    }

    func testSeqCellToPyTorchToSeqCellIsExact() throws {
        let cases: [(String, [LayerSpec], HeadSpec?)] = [
            ("rnn relu bi", [LayerSpec(cell: "rnn", hiddenSize: 4, direction: .bidirectional, options: ["activation": "relu"]),
                             LayerSpec(cell: "rnn", hiddenSize: 4, direction: .bidirectional, options: ["activation": "relu"])], nil),
            ("lstm proj + head", [LayerSpec(cell: "lstm", hiddenSize: 5, options: ["proj_size": "3"]),
                                  LayerSpec(cell: "lstm", hiddenSize: 5, options: ["proj_size": "3"])], HeadSpec(outputSize: 2, activation: .softmax)),
            ("gru", [LayerSpec(cell: "gru", hiddenSize: 3)], HeadSpec(outputSize: 1)),
        ]
        for (what, specs, head) in cases {
            let model = try Model.build(inputSize: 3, layers: specs, head: head, registry: testRegistry, seed: 11)
            assertSameParameters(try pytorchRoundTrip(model, what), model, what)
        }
        for fx in try InteropFixture.all() where fx.framework == "pytorch" {
            let model = try fx.importModel().model
            assertSameParameters(try pytorchRoundTrip(model, fx.file), model, fx.file)
        }
    }

    /// Export writes PyTorch's own names: the tensors of a PyTorch file come back unchanged.
    func testPyTorchExportReproducesTheStateDict() throws {
        for name in ["torch_rnn_tanh_2layer", "torch_lstm_2layer_bidir_packed", "torch_rnn_relu_bidir"] {
            let original = try SafeTensorsFile(path: interopFixture("\(name).safetensors"))
            let model = try PyTorchImporter.importFile(original.path, options: .init(activation: name.contains("relu") ? "relu" : nil),
                                                       registry: testRegistry).model
            let out = path("\(name).safetensors")
            try PyTorchExport(model: model).write(to: out, jsonPath: path("\(name).json"))
            let exported = try SafeTensorsFile(path: out)
            XCTAssertEqual(exported.names, original.names, name)
            for n in original.names { XCTAssertEqual(try exported.tensor(n), try original.tensor(n), "\(name): \(n)") }
        }
        let withHead = try PyTorchImporter.importFile(interopFixture("torch_lstm_with_head.safetensors"),
                                                      options: .init(head: "fc", headActivation: .tanh), registry: testRegistry).model
        // The module's own names come back (lstm., fc.); a model built in SeqCell gets rnn. and head.
        XCTAssertEqual(try PyTorchExport(model: withHead).tensors.map(\.name),
                       ["lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.bias_ih_l0", "lstm.bias_hh_l0", "fc.weight", "fc.bias"])
        var anonymous = withHead
        anonymous.source = nil
        let e = try PyTorchExport(model: anonymous)
        XCTAssertEqual(e.tensors.map(\.name), ["rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0", "rnn.bias_hh_l0", "head.weight", "head.bias"])
        XCTAssertTrue(e.pythonSnippet(file: "m.safetensors").contains("torch.tanh(y)"))
        XCTAssertEqual(e.constructor, "nn.LSTM(input_size=3, hidden_size=4, num_layers=1, bias=True, batch_first=False, bidirectional=False)")
    }

    func testPyTorchExportRefusesWhatPyTorchCannotExpress() throws {
        let cases: [(String, [LayerSpec], String)] = [
            ("reverse", [LayerSpec(cell: "lstm", hiddenSize: 3, direction: .reverse)], "layer 0 is a reverse layer"),
            ("sum", [LayerSpec(cell: "gru", hiddenSize: 3, direction: .bidirectional, mergeMode: .sum)], "merges its directions with 'sum'"),
            ("mixed cells", [LayerSpec(cell: "lstm", hiddenSize: 3), LayerSpec(cell: "gru", hiddenSize: 3)], "layer 1 forward is 'gru'"),
            ("mixed sizes", [LayerSpec(cell: "rnn", hiddenSize: 3), LayerSpec(cell: "rnn", hiddenSize: 4)], "hidden size 4"),
            ("mixed directions", [LayerSpec(cell: "rnn", hiddenSize: 3), LayerSpec(cell: "rnn", hiddenSize: 3, direction: .bidirectional)],
             "bidirectional in every layer or in none"),
            ("backward cell", [LayerSpec(cell: "lstm", hiddenSize: 3, direction: .bidirectional, backwardCell: "gru")], "layer 0 backward is 'gru'"),
            ("reset before", [LayerSpec(cell: "gru", hiddenSize: 3, options: ["reset": "before"])], "reset=before"),
        ]
        for (what, specs, message) in cases {
            let model = try Model.build(inputSize: 2, layers: specs, registry: testRegistry, seed: 1)
            let error = assertThrows(SeqCellError.self, try PyTorchExport(model: model))
            XCTAssertTrue(error?.message.contains(message) == true, "\(what): \(error?.message ?? "no error")")
            XCTAssertTrue(error?.message.hasPrefix("cannot export to PyTorch") == true, what)
        }
    }

    /// Keras export writes exactly Keras' own `.weights.h5` layout and values: exporting a model
    /// imported from a Keras file reproduces every dataset of that file.
    func testKerasExportReproducesKerasWeightsFiles() throws {
        for fx in try InteropFixture.all() where fx.file.hasSuffix(".weights.h5") {
            let model = try fx.importModel().model
            let out = path("\(fx.name).weights.h5"), json = path("\(fx.name).json")
            try KerasExport(model: model).write(to: out, jsonPath: json)
            let original = interopFixture(fx.file)
            let paths = try datasetPaths(original, under: "layers")
            XCTAssertEqual(try datasetPaths(out, under: "layers"), paths, fx.file)
            for p in paths {
                XCTAssertEqual(try readTensor(out, "layers/\(p)"), try readTensor(original, "layers/\(p)"), "\(fx.file): layers/\(p)")
            }
            // And the JSON written beside it is a config SeqCell (and Keras) reads back.
            let back = try KerasImporter.importFile(out, options: .init(configPath: json), registry: testRegistry).model
            assertSameParameters(back, model, "\(fx.file) via Keras")
        }
    }

    /// A SeqCell model with both biases non-zero goes to Keras' single bias and still computes the same.
    func testKerasExportOfSeqCellModelsKeepsOutputs() throws {
        let specs = [
            LayerSpec(cell: "gru", hiddenSize: 3, direction: .bidirectional, mergeMode: .ave, options: ["reset": "before"]),
            LayerSpec(cell: "lstm", hiddenSize: 4, direction: .bidirectional, mergeMode: .concat, backwardCell: "rnn", backwardHiddenSize: 2),
            LayerSpec(cell: "gru", hiddenSize: 3),
            LayerSpec(cell: "rnn", hiddenSize: 2, options: ["activation": "relu"]),
        ]
        let model = try Model.build(inputSize: 3, layers: specs, head: HeadSpec(outputSize: 2, activation: .sigmoid), registry: testRegistry, seed: 5)
        let out = path("m.weights.h5"), json = path("m.json")
        let e = try KerasExport(model: model)
        try e.write(to: out, jsonPath: json)
        XCTAssertEqual(try H5File(opening: out).root.group("layers").memberNames(), ["bidirectional", "bidirectional_1", "dense", "gru", "simple_rnn"])
        let back = try KerasImporter.importFile(out, options: .init(configPath: json), registry: testRegistry).model
        var rng = SplitMix64(seed: 2)
        let x = rng.uniformTensor([6, 2, 3], scale: 1)
        let d = maxAbsDifference(try back.forward(input: x).output, try model.forward(input: x).output)
        XCTAssertLessThanOrEqual(d ?? .infinity, 1e-5)
    }

    func testKerasExportRefusesWhatKerasCannotExpress() throws {
        let cases: [(LayerSpec, String)] = [
            (LayerSpec(cell: "lstm", hiddenSize: 3, direction: .reverse), "reverse layer"),
            (LayerSpec(cell: "lstm", hiddenSize: 3, options: ["proj_size": "2"]), "proj_size=2"),
        ]
        for (spec, message) in cases {
            let model = try Model.build(inputSize: 2, layers: [spec], registry: testRegistry, seed: 1)
            let error = assertThrows(SeqCellError.self, try KerasExport(model: model))
            XCTAssertTrue(error?.message.contains(message) == true, error?.message ?? "")
        }
    }

    func testExportCommand() throws {
        let ckpt = path("m.h5")
        let model = try Model.build(inputSize: 3, layers: [LayerSpec(cell: "lstm", hiddenSize: 4, direction: .bidirectional)],
                                    head: HeadSpec(outputSize: 2), registry: testRegistry, seed: 3)
        try Checkpoint(model: model).save(to: ckpt)
        let r = try runSeqCell(["export", ckpt, "-o", path("m.safetensors")])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("model.load_state_dict(load_file("), r.stdout)
        XCTAssertTrue(FileManager.default.fileExists(atPath: path("m.json")))
        let back = path("back.h5")
        XCTAssertEqual(try runSeqCell(["import", path("m.safetensors"), "-o", back]).status, 0)
        assertSameParameters(try Checkpoint.load(from: back, registry: testRegistry).model, model, "CLI round trip")
        let k = try runSeqCell(["export", ckpt, "-o", path("k.weights.h5")])
        XCTAssertEqual(k.status, 0, k.stderr)
        XCTAssertTrue(k.stdout.contains("keras.models.model_from_json"), k.stdout)
        // Refused: nothing written.
        let rev = path("rev.h5")
        try Checkpoint(model: try Model.build(inputSize: 2, layers: [LayerSpec(cell: "rnn", hiddenSize: 2, direction: .reverse)],
                                              registry: testRegistry)).save(to: rev)
        let bad = try runSeqCell(["export", rev, "-o", path("rev.safetensors")])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.stderr.contains("reverse layer"), bad.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("rev.safetensors")))
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("rev.json")))
    }
}

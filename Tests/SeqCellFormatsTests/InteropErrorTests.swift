import Foundation
import XCTest
@testable import SeqCellBase
@testable import SeqCellHost
@testable import SeqCellModel
@testable import SeqCellFormats
import SeqCellTestSupport

/// Every bad input of the issue: a clear error naming the tensor or layer, and no output file.
final class InteropErrorTests: TemporaryDirectoryTestCase {
    /// Runs `seqcell import ARGS -o out.h5`, expects failure with every `fragment` in the
    /// message, and checks that nothing was written.
    func assertImportFails(_ arguments: [String], _ fragments: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let out = path("out.h5")
        let r = try runSeqCell(["import"] + arguments + ["-o", out])
        XCTAssertNotEqual(r.status, 0, "import \(arguments) succeeded: \(r.stdout)", file: file, line: line)
        for f in fragments {
            XCTAssertTrue(r.stderr.contains(f), "message lacks '\(f)': \(r.stderr)", file: file, line: line)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: out), "the output file was created", file: file, line: line)
        XCTAssertEqual(try directoryContents().filter { $0.contains("out.h5") }, [], "leftovers", file: file, line: line)
    }

    /// A copy of a fixture's state_dict with some tensors changed, as safetensors.
    func stateDict(from fixture: String, _ edit: (inout [String: Tensor]) -> Void) throws -> String {
        let source = try TensorDictionary.safetensors(path: interopFixture(fixture))
        var tensors = source.tensors
        edit(&tensors)
        let p = path("edited.safetensors")
        try SafeTensorsFile.write(tensors.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }, to: p)
        return p
    }

    func testPicklesAreRefusedWithTheSafetensorsAdvice() throws {
        for f in ["bad_torch_save.pt", "bad_torch_save_legacy.pth"] {
            try assertImportFails([interopFixture(f)], ["'\(interopFixture(f))'", "pickle", "never unpickles",
                                                        "safetensors.torch.save_file(model.state_dict()"])
            try assertImportFails([interopFixture(f), "--from", "pytorch"], ["never unpickles"])
            try assertImportFails([interopFixture(f), "--from", "keras"], ["never unpickles"])
        }
        // Renamed, it is still recognised by its bytes.
        let renamed = path("weights.safetensors")
        try FileManager.default.copyItem(atPath: interopFixture("bad_torch_save.pt"), toPath: renamed)
        try assertImportFails([renamed], ["PyTorch zip pickle"])
    }

    func testFileNotWhatItsFlagSays() throws {
        try assertImportFails([interopFixture("keras_stack.keras"), "--from", "pytorch"], ["zip archive, not PyTorch weights"])
        try assertImportFails([interopFixture("torch_rnn_relu_bidir.safetensors"), "--from", "keras"], ["not a Keras model"])
        try assertImportFails([interopFixture("keras_stack.io.h5"), "--from", "keras"], ["not Keras weights"])
        try assertImportFails([interopFixture("keras_stack.legacy.h5"), "--from", "pytorch"], ["no tensor named weight_ih_l0"])
        try assertImportFails([interopFixture("keras_stack.json")], ["JSON file, not a model file"])
        let text = path("notes.txt")
        try "just text".write(toFile: text, atomically: true, encoding: .utf8)
        try assertImportFails([text, "--from", "pytorch"], ["'\(text)'", "not PyTorch weights"])
        try assertImportFails([interopFixture("torch_rnn_relu_bidir.safetensors"), "--keras-config", "x.json"], ["--keras-config applies to Keras files"])
    }

    func testStateDictMissingExtraAndInconsistentTensors() throws {
        let lstm = "torch_lstm_2layer_bidir_packed.safetensors"
        try assertImportFails([try stateDict(from: lstm) { $0["weight_hh_l1_reverse"] = nil }], ["missing tensor 'weight_hh_l1_reverse'"])
        try assertImportFails([try stateDict(from: lstm) { $0["bias_hh_l0"] = nil }], ["missing tensor 'bias_hh_l0'"])
        try assertImportFails([try stateDict(from: lstm) { $0["running_mean"] = .zeros([4]) }], ["unexpected tensor 'running_mean'"])
        try assertImportFails([try stateDict(from: lstm) { $0["weight_ih_l2"] = .zeros([16, 8]) }], ["missing tensor 'weight_hh_l2'"])
        try assertImportFails([try stateDict(from: lstm) { $0["weight_ih_l1"] = .zeros([16, 5]) }],
                              ["tensor 'weight_ih_l1' is [16, 5] but [16, 8] is expected", "layer 1 reads 2×4 = 8 features"])
        try assertImportFails([try stateDict(from: lstm) { $0["bias_ih_l0_reverse"] = .zeros([12]) }], ["tensor 'bias_ih_l0_reverse' is [12]"])
        try assertImportFails([try stateDict(from: lstm) { $0["weight_hh_l0"] = .zeros([16, 3]) }], ["'weight_hh_l0'"])
        try assertImportFails([interopFixture(lstm), "--cell", "gru"], ["--cell gru disagrees with the weights", "'weight_hh_l0' is [16, 4]"])
        try assertImportFails([interopFixture("torch_rnn_relu_bidir.safetensors"), "--activation", "sigmoid"], ["--activation must be tanh or relu"])
        try assertImportFails([interopFixture("torch_lstm_with_head.safetensors")], ["unexpected tensors 'fc.bias', 'fc.weight'", "--head NAME"])
        try assertImportFails([interopFixture("torch_lstm_with_head.safetensors"), "--head", "out"], ["unexpected tensors 'fc.bias', 'fc.weight'"])
        try assertImportFails([interopFixture("torch_lstm_proj.state_dict.h5")], ["cannot tell whether", "--group"])
        try assertImportFails([interopFixture("torch_lstm_proj.state_dict.h5"), "--from", "pytorch"], ["no tensor named weight_ih_l0"])
        try assertImportFails([interopFixture("torch_lstm_proj.state_dict.h5"), "--group", "model/decoder"], ["no group '/model/decoder'"])
        let proj = try TensorDictionary.hdf5(path: interopFixture("torch_lstm_proj.state_dict.h5"), group: "model/encoder")
        var t = proj.tensors
        t["weight_hr_l1"] = nil
        let error = assertThrows(SeqCellError.self, try PyTorchImporter.build(TensorDictionary(origin: "p.h5", tensors: t), registry: testRegistry))
        XCTAssertEqual(error?.message, "'p.h5': missing tensor 'weight_hr_l1'")
    }

    func testUnsupportedKerasLayersAndOptionsNameTheLayer() throws {
        try assertImportFails([interopFixture("bad_hard_sigmoid.keras")], ["LSTM layer 'lstm'", "recurrent_activation 'hard_sigmoid' is not supported"])
        try assertImportFails([interopFixture("bad_simplernn_sigmoid.keras")], ["SimpleRNN layer 'simple_rnn'", "activation 'sigmoid' is not supported"])
        try assertImportFails([interopFixture("bad_conv1d.keras")], ["Conv1D layer 'conv1d' is not supported"])
        try assertImportFails([interopFixture("bad_go_backwards.keras")], ["GRU layer 'gru'", "go_backwards=True outside Bidirectional"])
        try assertImportFails([interopFixture("bad_stateful.keras")], ["LSTM layer 'lstm'", "stateful=True is not supported"])
        try assertImportFails([interopFixture("keras_stack.weights.h5")], ["their order is not stored in the file", "--keras-config"])
        // Configs edited from a real one: custom activations, other layers, bad orders.
        let json = try String(contentsOfFile: interopFixture("keras_lstm_dense_softmax.json"), encoding: .utf8)
        let weights = interopFixture("keras_lstm_dense_softmax.weights.h5")
        func edited(_ from: String, _ to: String) throws -> String {
            XCTAssertTrue(json.contains(from), "the fixture config has no \(from)")
            let p = path("edited.json")
            try json.replacingOccurrences(of: from, with: to).write(toFile: p, atomically: true, encoding: .utf8)
            return p
        }
        try assertImportFails([weights, "--keras-config", try edited("\"activation\": \"softmax\"", "\"activation\": \"gelu\"")],
                              ["Dense layer 'dense'", "activation 'gelu' is not supported"])
        try assertImportFails([weights, "--keras-config", try edited("\"activation\": \"tanh\"", "\"activation\": {\"class_name\": \"MyAct\", \"config\": {}}")],
                              ["LSTM layer 'lstm'", "custom activation"])
        try assertImportFails([weights, "--keras-config", try edited("\"unroll\": false", "\"unroll\": false, \"time_major\": true")],
                              ["LSTM layer 'lstm'", "time_major=True"])
        try assertImportFails([weights, "--keras-config", try edited("\"class_name\": \"Sequential\"", "\"class_name\": \"Functional\"")],
                              ["functional model", "LSTM layer 'lstm' is not connected to anything"])
        try assertImportFails([weights, "--keras-config", try edited("\"units\": 4", "\"units\": 5")],
                              ["LSTM layer 'lstm'", "kernel is [3, 16], expected [input, 20]"])
        try assertImportFails([weights, "--keras-config", try edited("\"class_name\": \"LSTM\"", "\"class_name\": \"GRU\"")],
                              ["no weights for GRU layer 'lstm'"])
        // unroll=True changes only how Keras computes: imported, with a note.
        let out = path("unrolled.h5")
        let r = try runSeqCell(["import", weights, "--keras-config", try edited("\"unroll\": false", "\"unroll\": true"), "-o", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("unroll=True"), r.stdout)
    }

    func testRunGradientFileErrors() throws {
        let fx = try XCTUnwrap(try InteropFixture.all().first { $0.name == "torch_lstm_with_head" })
        let ckpt = path("m.h5")
        try Checkpoint(model: try fx.importModel().model).save(to: ckpt)
        let grads = path("g.h5")
        try writeHDF5Atomically(to: grads) { f in try f.root.writeDataset("grad_output", shape: [5, 2, 3], floats: [Float](repeating: 0, count: 30)) }
        let r = try runSeqCell(["run", ckpt, "-i", interopFixture(fx.io), "-o", path("o.h5"), "--grad-output", grads])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("grad_output must be shaped like output, [5, 2, 2]"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("o.h5")))
        try writeHDF5Atomically(to: grads) { f in
            try f.root.writeDataset("grad_output", shape: [5, 2, 2], floats: [Float](repeating: 0, count: 20))
            try f.root.writeDataset("grad_c_n", shape: [2, 2, 4], floats: [Float](repeating: 0, count: 16))
        }
        let s = try runSeqCell(["run", ckpt, "-i", interopFixture(fx.io), "-o", path("o.h5"), "--grad-output", grads])
        XCTAssertTrue(s.stderr.contains("grad_c_n must be [1, 2, 4]"), s.stderr)
        try writeHDF5Atomically(to: grads) { f in try f.root.writeDataset("other", shape: [1], floats: [0]) }
        let t = try runSeqCell(["run", ckpt, "-i", interopFixture(fx.io), "-o", path("o.h5"), "--grad-output", grads])
        XCTAssertTrue(t.stderr.contains("has no dataset 'grad_output'"), t.stderr)
    }
}

import Foundation
import XCTest
@testable import SeqCellBase
@testable import SeqCellHost
@testable import SeqCellModel
@testable import SeqCellFormats
import SeqCellTestSupport

/// Every PyTorch and Keras fixture imports and gives the framework's own outputs (within
/// 1e-5 absolute) and, for PyTorch, torch.autograd.grad's gradients (within 1e-4 relative).
final class InteropFixtureTests: TemporaryDirectoryTestCase {
    /// Each format the issue lists has a fixture; a fixture dropped from the manifest fails here.
    func testManifestCoversEveryFormat() throws {
        let files = Set(try InteropFixture.all().map(\.file))
        let required = [
            "torch_rnn_tanh_2layer.safetensors", "torch_rnn_tanh_2layer.state_dict.h5", "torch_rnn_relu_bidir.safetensors",
            "torch_lstm_2layer_bidir_packed.safetensors", "torch_lstm_proj.state_dict.h5", "torch_gru_nobias_batchfirst.safetensors",
            "torch_lstm_with_head.safetensors",
            "keras_simplernn_relu.keras", "keras_lstm_dense_softmax.keras", "keras_lstm_dense_softmax.weights.h5",
            "keras_lstm_dense_softmax.legacy.h5", "keras_gru_reset_after.bare.weights.h5", "keras_gru_reset_before.legacy.h5",
            "keras_bidir_lstm_concat.keras", "keras_bidir_gru_sum.keras", "keras_bidir_rnn_ave.keras",
            "keras_bidir_backward_layer_mul.keras", "keras_stack.keras", "keras_stack.weights.h5", "keras_stack.legacy.h5",
            "keras_lstm_last_step.keras", "keras2_stack.h5",
        ]
        for f in required {
            XCTAssertTrue(files.contains(f), "manifest.json lacks \(f)")
            XCTAssertTrue(FileManager.default.fileExists(atPath: interopFixture(f)), "\(f) is missing")
        }
    }

    func testPyTorchFixturesMatchOutputsStatesAndGradients() throws {
        let fixtures = try InteropFixture.all().filter { $0.framework == "pytorch" }
        XCTAssertEqual(fixtures.count, 7)
        for fx in fixtures {
            let model = try fx.importModel().model
            let io = interopFixture(fx.io)
            let inputs = try RunInputs.read(path: io, batchFirst: fx.batch_first, model: model)
            let shape = [inputs.input.shape[0], inputs.input.shape[1], model.outputSize]
            let grads = try RunGradientInputs.read(path: io, batchFirst: fx.batch_first, model: model, outputShape: shape)
            let r = try model.runWithGradients(inputs, grads)
            var figures: [String] = []
            func check(_ got: Tensor?, _ name: String, gradient: Bool) throws {
                let expected = try readTensor(io, "expected/\(name)")
                guard let got else { return XCTFail("\(fx.file): no \(name) computed") }
                let value = gradient ? maxRelativeDifference(got, expected) : maxAbsDifference(got, expected)
                guard let value else { return XCTFail("\(fx.file): \(name) is \(got.shape), PyTorch's \(expected.shape)") }
                XCTAssertLessThanOrEqual(value, gradient ? 1e-4 : 1e-5, "\(fx.file): \(name)")
                figures.append(String(format: "%@ %.1e", name, value))
            }
            let layout = { (t: Tensor) in fx.batch_first ? swapFirstTwoAxes(t) : t }
            try check(layout(r.forward.output), "output", gradient: false)
            try check(stackedStates(r.forward.finalStates, model: model, state: "h"), "h_n", gradient: false)
            try check(r.gradients.input.map(layout), "grad_input", gradient: true)
            try check(stackedStates(r.gradients.initialStates, model: model, state: "h"), "grad_h0", gradient: true)
            if try hasDataset(io, "expected/c_n") {
                try check(stackedStates(r.forward.finalStates, model: model, state: "c"), "c_n", gradient: false)
                try check(stackedStates(r.gradients.initialStates, model: model, state: "c"), "grad_c0", gradient: true)
            }
            let torchParams = try datasetPaths(io, under: "expected/grad_params")
            var compared = 0
            var worst: Float = 0
            for (path, g) in model.namedGradients(r.gradients) {
                guard torchParams.contains(path) else {
                    XCTFail("\(fx.file): PyTorch has no gradient for \(path)")
                    continue
                }
                let expected = try readTensor(io, "expected/grad_params/\(path)")
                guard let d = maxRelativeDifference(g, expected) else { XCTFail("\(fx.file): \(path) shape"); continue }
                XCTAssertLessThanOrEqual(d, 1e-4, "\(fx.file): gradient of \(path)")
                worst = max(worst, d)
                compared += 1
            }
            XCTAssertEqual(compared, torchParams.count, "\(fx.file): every PyTorch parameter gradient is compared")
            figures.append(String(format: "grad_params(%d) %.1e", compared, worst))
            print("interop figures \(fx.file): " + figures.joined(separator: ", "))
        }
    }

    func testKerasFixturesMatchOutputs() throws {
        let fixtures = try InteropFixture.all().filter { $0.framework == "keras" }
        XCTAssertEqual(fixtures.count, 15)
        for fx in fixtures {
            let imported = try fx.importModel()
            let model = imported.model
            let io = interopFixture(fx.io)
            let inputs = try RunInputs.read(path: io, batchFirst: true, model: model)
            let out = try model.forward(input: inputs.input, lengths: inputs.lengths).output
            let expected = try readTensor(io, "expected/output")
            var got = swapFirstTwoAxes(out)
            if expected.rank == 2 {
                // return_sequences=False: Keras' output is the last step.
                let (T, B, O) = (out.shape[0], out.shape[1], out.shape[2])
                got = Tensor(shape: [B, O], data: Array(out.data[((T - 1) * B * O)...]))
            }
            guard let d = maxAbsDifference(got, expected) else {
                XCTFail("\(fx.file): output \(got.shape), Keras' \(expected.shape)")
                continue
            }
            XCTAssertLessThanOrEqual(d, 1e-5, "\(fx.file) (\(imported.source))")
            print(String(format: "interop figures %@: output %.1e  [%@]", fx.file, d, imported.source))
        }
    }

    /// The structure read from each file is the one the framework built.
    func testImportedStructures() throws {
        func model(_ file: String) throws -> Model {
            try XCTUnwrap(try InteropFixture.all().first { $0.file == file }, file).importModel().model
        }
        let packed = try model("torch_lstm_2layer_bidir_packed.safetensors")
        XCTAssertEqual(packed.layers.map(\.direction), [.bidirectional, .bidirectional])
        XCTAssertEqual(packed.layers[1].inputSize, 8)
        let proj = try model("torch_lstm_proj.state_dict.h5")
        XCTAssertEqual(proj.layers[0].cells[0].cell.options["proj_size"], .int(2))
        XCTAssertEqual(proj.layers[0].cells[0].cell.hiddenSize, 5)
        XCTAssertEqual(try model("torch_rnn_relu_bidir.safetensors").layers[0].cells[0].cell.options["activation"], .choice("relu"))
        let noBias = try model("torch_gru_nobias_batchfirst.safetensors")
        XCTAssertEqual(noBias.layers[0].cells[0].cell.options["bias"], .choice("false"))
        XCTAssertEqual(noBias.layers[0].cells[0].params.count, 2, "bias=False: weight_ih and weight_hh only")
        let head = try model("torch_lstm_with_head.safetensors")
        XCTAssertEqual(head.head?.activation, .tanh)
        XCTAssertEqual(try model("keras_gru_reset_before.legacy.h5").layers[0].cells[0].cell.options["reset"], .choice("before"))
        XCTAssertEqual(try model("keras_gru_reset_after.bare.weights.h5").layers[0].cells[0].cell.options["reset"], .choice("after"))
        let mul = try model("keras_bidir_backward_layer_mul.keras")
        XCTAssertEqual(mul.layers[0].mergeMode, .mul)
        XCTAssertEqual(mul.layers[0].cells.map { $0.cell.type.id }, ["lstm", "gru"])
        let stack = try model("keras2_stack.h5")
        XCTAssertEqual(stack.layers.map(\.summary), ["lstm(4) forward", "gru(3) bidirectional ave gru(3)", "rnn(3) forward"])
        XCTAssertEqual(stack.layers[2].cells[0].cell.options["activation"], .choice("relu"))
        XCTAssertEqual(stack.head?.outputSize, 2)
    }

    /// The same through the command line: import, then run with --grad-output, then compare.
    func testCommandLineImportRunAndGradients() throws {
        for fx in try InteropFixture.all() where ["torch_lstm_2layer_bidir_packed", "torch_gru_nobias_batchfirst", "keras_stack"].contains(fx.name) {
            let ckpt = path("\(fx.name).h5"), out = path("\(fx.name).out.h5")
            let imp = try runSeqCell(["import", interopFixture(fx.file), "-o", ckpt] + fx.cliFlags)
            XCTAssertEqual(imp.status, 0, "\(fx.file): \(imp.stderr)")
            XCTAssertTrue(imp.stdout.contains("wrote \(ckpt)"), imp.stdout)
            let io = interopFixture(fx.io)
            var args = ["run", ckpt, "-i", io, "-o", out] + (fx.batch_first ? ["--batch-first"] : [])
            if fx.gradients { args += ["--grad-output", io] }
            let run = try runSeqCell(args)
            XCTAssertEqual(run.status, 0, "\(fx.file): \(run.stderr)")
            var names = ["output"]
            if fx.gradients {
                names += ["h_n", "grad_input", "grad_h0"]
                if try hasDataset(io, "expected/c_n") { names += ["c_n", "grad_c0"] }
                names += try datasetPaths(io, under: "expected/grad_params").map { "grad_params/\($0)" }
            }
            for name in names {
                let got = try readTensor(out, name), expected = try readTensor(io, "expected/\(name)")
                let d = name.hasPrefix("grad") ? maxRelativeDifference(got, expected) : maxAbsDifference(got, expected)
                XCTAssertNotNil(d, "\(fx.file): \(name) shape \(got.shape) vs \(expected.shape)")
                XCTAssertLessThanOrEqual(d ?? .infinity, name.hasPrefix("grad") ? 1e-4 : 1e-5, "\(fx.file): \(name)")
            }
        }
    }
}

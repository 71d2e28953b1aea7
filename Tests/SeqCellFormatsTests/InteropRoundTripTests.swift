import Foundation
import XCTest
@testable import SeqCellBase
@testable import SeqCellHost
@testable import SeqCellModel
@testable import SeqCellFormats
import SeqCellTestSupport

/// One entry of Fixtures/interop/roundtrip.json (written by generate.py's roundtrip_fixtures).
struct RoundTripFixture: Decodable {
    struct StateDictEntry: Decodable, Equatable {
        var name: String
        var shape: [Int]
        var dtype: String
    }

    var file: String
    var io: String
    var flags: [String]?
    var source: String
    var state_dict: [StateDictEntry]?
    var output_shape: [Int]?

    static func load() throws -> (torch: [String: RoundTripFixture], keras: [String: RoundTripFixture]) {
        let data = try Data(contentsOf: interopFixtures.appendingPathComponent("roundtrip.json"))
        let all = try JSONDecoder().decode([String: [String: RoundTripFixture]].self, from: data)
        return (all["torch"] ?? [:], all["keras"] ?? [:])
    }

    static func torch(_ name: String) throws -> RoundTripFixture {
        try XCTUnwrap(try load().torch[name], "roundtrip.json lacks \(name): run generate.py roundtrip")
    }

    static func keras(_ name: String) throws -> RoundTripFixture {
        try XCTUnwrap(try load().keras[name], "roundtrip.json lacks \(name): run generate.py roundtrip")
    }

    func value(_ flag: String) -> String? {
        guard let flags, let i = flags.firstIndex(of: flag), i + 1 < flags.count else { return nil }
        return flags[i + 1]
    }

    func importTorch() throws -> ImportResult {
        try PyTorchImporter.importFile(interopFixture(file), options: PyTorchImportOptions(
            activation: value("--activation"), head: value("--head"),
            headActivation: value("--head-activation").flatMap(HeadActivation.init(rawValue:)) ?? .linear), registry: testRegistry)
    }

    func importKeras() throws -> ImportResult {
        try KerasImporter.importFile(interopFixture(file), registry: testRegistry)
    }
}

/// A safetensors file's header: name → (dtype, shape), in file order of the JSON object.
func safetensorsHeader(_ path: String) throws -> [String: (dtype: String, shape: [Int])] {
    let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
    let n = bytes.prefix(8).enumerated().reduce(0) { $0 | (Int($1.element) << (8 * $1.offset)) }
    let header = try XCTUnwrap(try JSONSerialization.jsonObject(with: bytes.subdata(in: 8..<(8 + n))) as? [String: Any])
    var out: [String: (String, [Int])] = [:]
    for (k, v) in header where k != "__metadata__" {
        let d = try XCTUnwrap(v as? [String: Any])
        out[k] = (try XCTUnwrap(d["dtype"] as? String), try XCTUnwrap(d["shape"] as? [Int]))
    }
    return out
}

/// PyTorch and Keras models there and back: bias-free cells stay bias-free, a module's own names
/// come back so `load_state_dict(strict=True)` works, Keras' last-step outputs (Bidirectional
/// included) and `return_sequences` survive, and cross_entropy on a softmax head is Keras' loss.
final class InteropRoundTripTests: TemporaryDirectoryTestCase {
    /// torch's parameter name (as in the io file: "encoder/weight_ih_l0", "fc/weight",
    /// "weight_hh_l0_reverse") → the checkpoint path of the same tensor.
    func checkpointPath(torchName: String, head: String?) -> String {
        var name = torchName
        if let head, name.hasPrefix(head + "/") { return "head/" + name.dropFirst(head.count + 1) }
        if let slash = name.lastIndex(of: "/") { name = String(name[name.index(after: slash)...]) }
        var direction = "forward"
        if name.hasSuffix("_reverse") { name = String(name.dropLast("_reverse".count)); direction = "backward" }
        let r = name.range(of: "_l", options: .backwards)!
        let layer = Int(name[r.upperBound...])!
        return String(format: "layers/%02d/%@/%@", layer, direction, String(name[..<r.lowerBound]))
    }

    /// Outputs, final states and every gradient against torch's (1e-5 absolute, 1e-4 relative).
    func assertMatchesTorch(_ fx: RoundTripFixture, _ model: Model, head: String?) throws {
        let io = interopFixture(fx.io)
        let inputs = try RunInputs.read(path: io, model: model)
        let shape = [inputs.input.shape[0], inputs.input.shape[1], model.outputSize]
        let grads = try RunGradientInputs.read(path: io, batchFirst: false, model: model, outputShape: shape)
        let r = try model.runWithGradients(inputs, grads)
        func check(_ got: Tensor?, _ name: String, gradient: Bool) throws {
            let expected = try readTensor(io, "expected/\(name)")
            let got = try XCTUnwrap(got, "\(fx.file): no \(name)")
            let d = gradient ? maxRelativeDifference(got, expected) : maxAbsDifference(got, expected)
            XCTAssertLessThanOrEqual(d ?? .infinity, gradient ? 1e-4 : 1e-5, "\(fx.file): \(name) (\(got.shape) vs \(expected.shape))")
        }
        try check(r.forward.output, "output", gradient: false)
        try check(stackedStates(r.forward.finalStates, model: model, state: "h"), "h_n", gradient: false)
        try check(r.gradients.input, "grad_input", gradient: true)
        try check(stackedStates(r.gradients.initialStates, model: model, state: "h"), "grad_h0", gradient: true)
        if try hasDataset(io, "expected/c_n") {
            try check(stackedStates(r.forward.finalStates, model: model, state: "c"), "c_n", gradient: false)
            try check(stackedStates(r.gradients.initialStates, model: model, state: "c"), "grad_c0", gradient: true)
        }
        // Every parameter SeqCell has is one torch has (no stand-in biases), and the reverse.
        let ours = Dictionary(uniqueKeysWithValues: model.namedGradients(r.gradients).map { ($0.path, $0.value) })
        let torchNames = try datasetPaths(io, under: "expected/grad_torch_params")
        XCTAssertEqual(Set(torchNames.map { checkpointPath(torchName: $0, head: head) }), Set(ours.keys), fx.file)
        for name in torchNames {
            let path = checkpointPath(torchName: name, head: head)
            try check(ours[path], "grad_torch_params/\(name)", gradient: true)
        }
    }

    // MARK: PyTorch bias=False

    func testBiasFreeTorchModulesImportWithoutBiasesAndMatchTorch() throws {
        let net = try RoundTripFixture.torch("rt_torch_net")
        let imported = try net.importTorch()
        let model = imported.model
        for layer in model.layers {
            for dc in layer.cells {
                XCTAssertEqual(dc.cell.options["bias"], .choice("false"))
                XCTAssertEqual(dc.cell.params.map(\.name), ["weight_ih", "weight_hh"])
            }
        }
        XCTAssertTrue(imported.source.contains("bias=False"), imported.source)
        try assertMatchesTorch(net, model, head: "fc")

        let rnn = try RoundTripFixture.torch("rt_torch_rnn_nobias")
        let rm = try rnn.importTorch().model
        XCTAssertEqual(rm.layers[0].direction, .bidirectional)
        XCTAssertEqual(rm.layers[0].cells.map { $0.cell.options["bias"] }, [.choice("false"), .choice("false")])
        try assertMatchesTorch(rnn, rm, head: nil)
    }

    /// Training a bias-free import keeps it bias-free, and export writes bias=False.
    func testTrainingKeepsTheModelBiasFree() throws {
        let model = try RoundTripFixture.torch("rt_torch_net").importTorch().model
        var config = TrainingConfig()
        config.learningRate = 0.05
        var trainer = try Trainer(model: model, config: config)
        var rng = TestRNG(seed: 3)
        let batch = Batch(input: rng.tensor([5, 4, 3]), targets: rng.tensor([4, 3], scale: 0.5))
        for _ in 0..<3 { try trainer.trainStep(batch) }
        let tuned = trainer.model
        XCTAssertEqual(tuned.namedParameters.map(\.path), model.namedParameters.map(\.path))
        XCTAssertFalse(tuned.namedParameters.contains { $0.path.contains("bias_") })
        XCTAssertNotEqual(tuned.namedParameters[0].value.data, model.namedParameters[0].value.data, "training changed nothing")
        let e = try PyTorchExport(model: tuned)
        XCTAssertTrue(e.arguments.contains { $0.name == "bias" && $0.value == "False" }, "\(e.arguments)")
        XCTAssertTrue(e.constructor.contains("bias=False"), e.constructor)
    }

    // MARK: PyTorch module names

    /// Export writes exactly Net().state_dict()'s names, shapes and dtypes (recorded by the
    /// generator from torch), through a saved checkpoint and the command line, and the values
    /// are torch's own bits.
    func testExportGivesBackTheModulesStateDict() throws {
        let fx = try RoundTripFixture.torch("rt_torch_net")
        let expected = try XCTUnwrap(fx.state_dict)
        let ckpt = path("net.h5"), out = path("back.safetensors")
        let imp = try runSeqCell(["import", interopFixture(fx.file), "-o", ckpt] + (fx.flags ?? []))
        XCTAssertEqual(imp.status, 0, imp.stderr)
        let loaded = try Checkpoint.load(from: ckpt, registry: testRegistry).model
        XCTAssertEqual(loaded.source, ModelSource(framework: "pytorch", prefix: "encoder.", headName: "fc"))
        let inspect = try runSeqCell(["inspect", ckpt])
        XCTAssertTrue(inspect.stdout.contains("imported from: framework 'pytorch', prefix 'encoder.', head_name 'fc'"), inspect.stdout)
        let exp = try runSeqCell(["export", ckpt, "-o", out])
        XCTAssertEqual(exp.status, 0, exp.stderr)
        XCTAssertTrue(exp.stdout.contains("self.encoder = nn.LSTM(") && exp.stdout.contains("self.fc = nn.Linear(4, 3)"), exp.stdout)
        XCTAssertTrue(exp.stdout.contains("strict=True"), exp.stdout)
        let header = try safetensorsHeader(out)
        XCTAssertEqual(Set(header.keys), Set(expected.map(\.name)))
        for entry in expected {
            let got = try XCTUnwrap(header[entry.name], entry.name)
            XCTAssertEqual(got.shape, entry.shape, entry.name)
            XCTAssertEqual(entry.dtype, "float32")
            XCTAssertEqual(got.dtype, "F32", entry.name)
        }
        // The order PyTorch's state_dict has, in the API's list.
        XCTAssertEqual(try PyTorchExport(model: loaded).tensors.map(\.name), expected.map(\.name))
        let original = try TensorDictionary.safetensors(path: interopFixture(fx.file))
        let back = try TensorDictionary.safetensors(path: out)
        for name in expected.map(\.name) {
            XCTAssertEqual(back.tensors[name]?.data, original.tensors[name]?.data, "\(name): not the same bits")
        }
        // Importing the export needs no flags (its metadata names the head and the activation).
        let again = try PyTorchImporter.importFile(out, registry: testRegistry)
        XCTAssertEqual(again.model.head?.activation, .tanh)
        XCTAssertEqual(again.model.source?.prefix, "encoder.")
    }

    /// An nn.Embedding keeps its own name too (`tok.weight` here, found by its shape).
    func testEmbeddingNameComesBack() throws {
        let original = try TensorDictionary.safetensors(path: interopFixture("torch_embedding_lstm.safetensors"))
        let renamed = original.names.map { (name: $0 == "embed.weight" ? "tok.weight" : $0, tensor: original.tensors[$0]!) }
        let file = path("tok.safetensors")
        try SafeTensorsFile.write(renamed, to: file)
        let model = try PyTorchImporter.importFile(file, options: PyTorchImportOptions(prefix: "lstm.", head: "fc"), registry: testRegistry).model
        XCTAssertEqual(model.source?.embeddingName, "tok")
        try Checkpoint(model: model).save(to: path("tok.h5"))
        let e = try PyTorchExport(model: try Checkpoint.load(from: path("tok.h5"), registry: testRegistry).model)
        XCTAssertEqual(Set(e.tensors.map(\.name)), Set(renamed.map(\.name)))
        XCTAssertTrue(e.pythonSnippet(file: "m.safetensors").contains("self.tok = nn.Embedding(7, 3)"), e.pythonSnippet(file: "m.safetensors"))
    }

    func testPrefixAndHeadNameOverride() throws {
        let model = try RoundTripFixture.torch("rt_torch_net").importTorch().model
        let e = try PyTorchExport(model: model, prefix: "rnn.", headName: "head")
        XCTAssertEqual(e.tensors.map(\.name), ["rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.weight_ih_l1", "rnn.weight_hh_l1",
                                               "head.weight", "head.bias"])
        let nested = try PyTorchExport(model: model, prefix: "model.encoder.", headName: "decoder.out")
        XCTAssertEqual(nested.tensors.last?.name, "decoder.out.bias")
        XCTAssertTrue(nested.pythonSnippet(file: "m.safetensors").contains("load it into your own module"))
        let ckpt = path("net.h5")
        try Checkpoint(model: model).save(to: ckpt)
        let out = path("o.safetensors")
        let r = try runSeqCell(["export", ckpt, "-o", out, "--prefix", "lstm.", "--head-name", "classifier"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(Set(try safetensorsHeader(out).keys),
                       ["lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.weight_ih_l1", "lstm.weight_hh_l1", "classifier.weight", "classifier.bias"])
        for (flags, words) in [(["--prefix", "lstm"], ["prefix", "ending in '.'"]), (["--head-name", "fc."], ["head name"]),
                               (["--prefix", "fc.", "--head-name", "fc"], ["clashes"])] {
            let bad = path("bad.safetensors")
            let f = try runSeqCell(["export", ckpt, "-o", bad] + flags)
            XCTAssertEqual(f.status, 1, "\(flags)")
            for w in words { XCTAssertTrue(f.stderr.contains(w), "\(flags): \(f.stderr)") }
            XCTAssertFalse(FileManager.default.fileExists(atPath: bad), "\(flags): a file was written")
        }
        let keras = try runSeqCell(["export", ckpt, "-o", path("k.weights.h5"), "--prefix", "x."])
        XCTAssertEqual(keras.status, 1)
        XCTAssertTrue(keras.stderr.contains("--prefix applies to --to pytorch only"), keras.stderr)
    }

    /// PyTorch has one bias setting per module: a model mixing bias-free and biased cells is
    /// refused naming the option; Keras takes it (use_bias per layer).
    func testMixedBiasSettingsAreRefusedByPyTorchNamingTheOption() throws {
        let model = try Model.build(inputSize: 2, layers: [LayerSpec(cell: "gru", hiddenSize: 3, options: ["bias": "false"]),
                                                           LayerSpec(cell: "gru", hiddenSize: 3)], registry: testRegistry, seed: 1)
        XCTAssertThrowsError(try PyTorchExport(model: model)) { e in
            XCTAssertTrue("\(e)".contains("layer 1 forward has option bias=true (layer 0: false)"), "\(e)")
        }
        let json = try KerasExport(model: model).json
        XCTAssertEqual(json.components(separatedBy: "\"use_bias\": false").count - 1, 1, json)
    }

    // MARK: Keras use_bias=False

    func testKerasUseBiasFalseIsKeptBothWays() throws {
        let fx = try RoundTripFixture.keras("rt_keras_nobias")
        let model = try fx.importKeras().model
        XCTAssertEqual(model.layers.flatMap { $0.cells.map { $0.cell.options["bias"] } }, Array(repeating: .choice("false"), count: 3))
        let io = interopFixture(fx.io)
        let x = try RunInputs.read(path: io, batchFirst: true, model: model).input
        let got = swapFirstTwoAxes(try model.forward(input: x).output)
        XCTAssertLessThanOrEqual(maxAbsDifference(got, try readTensor(io, "expected/output")) ?? .infinity, 1e-5)
        // Export: use_bias false in the config, two variables per cell, and it reads back the same.
        let e = try KerasExport(model: model)
        XCTAssertEqual(e.json.components(separatedBy: "\"use_bias\": false").count - 1, 3, e.json)
        try e.write(to: path("m.weights.h5"), jsonPath: path("m.json"))
        let vars = try H5File(opening: path("m.weights.h5")).root.group("layers/lstm/cell/vars").memberNames()
        XCTAssertEqual(vars, ["0", "1"])
        let back = try KerasImporter.importFile(path("m.weights.h5"), options: KerasImportOptions(configPath: path("m.json")), registry: testRegistry).model
        XCTAssertEqual(back.namedParameters.map(\.path), model.namedParameters.map(\.path))
        XCTAssertEqual(back.namedParameters.map(\.value.data), model.namedParameters.map(\.value.data))
    }

    // MARK: Keras return_sequences=False

    /// Bidirectional(..., return_sequences=False): the forward direction after each sample's last
    /// step merged with the backward direction after step 0, as Keras computes it.
    func testKerasLastStepModelsMatchKeras() throws {
        let names = ["rt_keras_bidir_last_gru_concat", "rt_keras_bidir_last_lstm_sum_dense", "rt_keras_bidir_last_backward_layer_ave",
                     "rt_keras_softmax_loss", "keras2_bidir_last", "keras2_functional_bidir_states"]
        for name in names {
            let fx = try RoundTripFixture.keras(name)
            let model = try fx.importKeras().model
            XCTAssertEqual(model.outputSteps, .last, name)
            let io = interopFixture(fx.io)
            let x = try RunInputs.read(path: io, batchFirst: true, model: model).input
            let fwd = try model.forward(input: x)
            let got = try model.lastStepOutput(fwd, lengths: nil)
            let expected = try readTensor(io, "expected/output")
            XCTAssertEqual(got.shape, fx.output_shape, name)
            XCTAssertLessThanOrEqual(maxAbsDifference(got, expected) ?? .infinity, 1e-5, name)
            if model.layers.last?.direction == .bidirectional {
                // Not what every-step SeqCell gives at the last step: the backward direction differs.
                let T = fwd.output.shape[0], B = fwd.output.shape[1], O = fwd.output.shape[2]
                let naive = Tensor(shape: [B, O], data: Array(fwd.output.data[((T - 1) * B * O)...]))
                XCTAssertGreaterThan(maxAbsDifference(naive, expected) ?? 0, 1e-3, "\(name): the fixture does not tell the two apart")
            }
            // The command line: run writes Keras' [B, O] as output.
            let ckpt = path("\(name).h5"), out = path("\(name).out.h5")
            XCTAssertEqual(try runSeqCell(["import", interopFixture(fx.file), "-o", ckpt]).status, 0)
            let run = try runSeqCell(["run", ckpt, "-i", io, "--batch-first", "-o", out])
            XCTAssertEqual(run.status, 0, run.stderr)
            XCTAssertTrue(run.stdout.contains("the last step"), run.stdout)
            XCTAssertTrue(try runSeqCell(["inspect", ckpt]).stdout.contains("output: the last step"), name)
            XCTAssertLessThanOrEqual(maxAbsDifference(try readTensor(out, "output"), expected) ?? .infinity, 1e-5, "\(name): run")
        }
    }

    /// Lengths: the forward direction stops at each sample's last valid step, the backward one
    /// starts there, so the last-step output equals that of each sample run alone, cut to its length.
    func testLastStepOutputRespectsLengths() throws {
        let model = try RoundTripFixture.keras("rt_keras_bidir_last_lstm_sum_dense").importKeras().model
        var rng = TestRNG(seed: 9)
        let (T, B, I) = (5, 2, model.inputSize)
        let x = rng.tensor([T, B, I])
        let lengths: [Int32] = [5, 3]
        let batched = try model.lastStepOutput(try model.forward(input: x, lengths: lengths), lengths: lengths)
        for b in 0..<B {
            let len = Int(lengths[b])
            var rows: [Float] = []
            for t in 0..<len { rows += x.data[((t * B + b) * I)..<((t * B + b + 1) * I)] }
            let alone = Tensor(shape: [len, 1, I], data: rows)
            let single = try model.lastStepOutput(try model.forward(input: alone), lengths: nil)
            let O = single.shape[1]
            let got = Tensor(shape: [1, O], data: Array(batched.data[(b * O)..<((b + 1) * O)]))
            XCTAssertLessThanOrEqual(maxAbsDifference(got, single) ?? .infinity, 1e-6, "sample \(b)")
        }
    }

    /// Export keeps each layer's return_sequences: the config read back has the last layer's
    /// False (so the rebuilt model predicts [B, k]) and every other True.
    func testKerasExportKeepsReturnSequences() throws {
        let fx = try RoundTripFixture.keras("rt_keras_bidir_last_lstm_sum_dense")
        let model = try fx.importKeras().model
        let e = try KerasExport(model: model)
        let plan = try KerasConfigReader.plan(json: e.json, origin: "export")
        XCTAssertEqual(plan.layers.map(\.returnsSequences), [true, false, true])  // LSTM, Bidirectional, Dense
        try e.write(to: path("m.weights.h5"), jsonPath: path("m.json"))
        let back = try KerasImporter.importFile(path("m.weights.h5"), options: KerasImportOptions(configPath: path("m.json")), registry: testRegistry).model
        XCTAssertEqual(back.outputSteps, .last)
        let io = interopFixture(fx.io)
        let x = try RunInputs.read(path: io, batchFirst: true, model: back).input
        let got = try back.lastStepOutput(try back.forward(input: x), lengths: nil)
        XCTAssertLessThanOrEqual(maxAbsDifference(got, try readTensor(io, "expected/output")) ?? .infinity, 1e-5)
        // Survives swapping a layer (same shape) and a checkpoint too.
        let swapped = try model.replacingLayer(0, with: model.layers[0])
        XCTAssertEqual(swapped.outputSteps, .last)
        XCTAssertEqual(swapped.source, model.source)
        try Checkpoint(model: model).save(to: path("c.h5"))
        XCTAssertEqual(try Checkpoint.load(from: path("c.h5"), registry: testRegistry).model.outputSteps, .last)
        // PyTorch has no last-step module: refused, naming why.
        let lastStep = try RoundTripFixture.keras("rt_keras_softmax_loss").importKeras().model
        XCTAssertThrowsError(try PyTorchExport(model: lastStep)) { XCTAssertTrue("\($0)".contains("last step"), "\($0)") }
    }

    // MARK: cross_entropy on a softmax head

    /// The loss on a Keras model ending in Dense(3, softmax) equals Keras'
    /// SparseCategoricalCrossentropy / CategoricalCrossentropy on its probabilities (recorded by
    /// the generator). Keras clips probabilities to [1e-7, 1 − 1e-7] first; these are far from
    /// both ends (checked below), so the clip changes nothing and 1e-6 relative is float rounding.
    func testCrossEntropyOnSoftmaxHeadIsKerasLoss() throws {
        let fx = try RoundTripFixture.keras("rt_keras_softmax_loss")
        let model = try fx.importKeras().model
        XCTAssertEqual(model.head?.activation, .softmax)
        let io = interopFixture(fx.io)
        let x = try RunInputs.read(path: io, batchFirst: true, model: model).input
        let targets = try readTensor(io, "targets")
        let fwd = try model.forward(input: x)
        let loss = try computeLoss(.crossEntropy, mode: .lastStep, output: fwd.output, targets: targets, lengths: nil,
                                   outputActivation: .softmax, preActivation: fwd.headPreActivation)
        XCTAssertTrue(loss.gradientOfPreActivation)
        let keras = Double(try readTensor(io, "expected/sparse_categorical_crossentropy").data[0])
        XCTAssertEqual(Double(try readTensor(io, "expected/categorical_crossentropy").data[0]), keras, accuracy: 1e-6)
        XCTAssertEqual(loss.value, keras, accuracy: 1e-6 * keras)
        // Independently: −mean log p[target] from Keras' own predicted probabilities, in Double.
        let p = try readTensor(io, "expected/output")
        XCTAssertTrue(p.data.allSatisfy { $0 > 1e-4 && $0 < 1 - 1e-4 }, "Keras' clipping would matter")
        let B = targets.count
        let direct = (0..<B).map { -log(Double(p.data[$0 * 3 + Int(targets.data[$0])])) }.reduce(0, +) / Double(B)
        XCTAssertEqual(loss.value, direct, accuracy: 1e-5 * direct)
        // Without the probabilities: log of the output (no pre-activation) gives the same value.
        let fromProbabilities = try computeLoss(.crossEntropy, mode: .lastStep, output: fwd.output, targets: targets, lengths: nil,
                                                outputActivation: .softmax)
        XCTAssertEqual(fromProbabilities.value, keras, accuracy: 1e-5 * keras)
        // The old reading (a second softmax over the probabilities) is a different number.
        let twice = try computeLoss(.crossEntropy, mode: .lastStep, output: fwd.output, targets: targets, lengths: nil)
        XCTAssertGreaterThan(abs(twice.value - keras), 0.05)
        // The trainer uses the same loss, and the training metrics agree with it (accuracy from
        // the probabilities' argmax, checked against Keras' predictions).
        var config = TrainingConfig()
        config.loss = "cross_entropy"
        var trainer = try Trainer(model: model, config: config)
        let batch = Batch(input: x, targets: targets)
        XCTAssertEqual(try trainer.evaluate(batch), keras, accuracy: 1e-6 * keras)
        let seen = try model.lossInput(fwd, mode: .lastStep, lengths: nil)
        let sums = try MetricSums.measure(.crossEntropy, mode: .lastStep, output: seen.output, targets: targets, lengths: seen.lengths,
                                          outputActivation: .softmax)
        XCTAssertEqual(sums.loss, keras, accuracy: 1e-5 * keras)
        let accuracy = (0..<B).filter { b in
            let row = p.data[(b * 3)..<(b * 3 + 3)]
            return row.firstIndex(of: row.max()!)! - b * 3 == Int(targets.data[b])
        }.count
        XCTAssertEqual(sums.value("accuracy") ?? -1, Double(accuracy) / Double(B), accuracy: 1e-12, "\(sums.values)")
        let stats = try trainer.trainStep(batch, measureMetrics: true)
        XCTAssertEqual(stats.metrics?.loss ?? .nan, stats.loss, accuracy: 1e-5 * stats.loss, "the step's metric is its loss")
    }

    /// Gradients of that loss against central finite differences of the loss (Double sums of
    /// float32 forwards), for the head and for a recurrent weight, through the trainer's path.
    func testSoftmaxCrossEntropyGradientMatchesFiniteDifferences() throws {
        for softmaxModel in [true, false] {
            var model: Model
            if softmaxModel {
                model = try RoundTripFixture.keras("rt_keras_softmax_loss").importKeras().model
            } else {
                // `seqcell new --head 3:softmax`'s model: an every-step rnn with a softmax head.
                var rng = TestRNG(seed: 2)
                let cell = try cellType("rnn").instantiate(inputSize: 3, hiddenSize: 4, options: [:])
                let layer = try RecurrentLayer(direction: .forward, cells: [try DirectionalCell(cell: cell, params: cell.params.map { rng.tensor($0.shape, scale: 0.5) })])
                model = try Model(inputSize: 3, layers: [layer], head: try LinearHead(weight: rng.tensor([3, 4]), bias: rng.tensor([3]), activation: .softmax))
            }
            var rng = TestRNG(seed: 4)
            let x = rng.tensor([5, 3, 3])
            let batch = Batch(input: x, lengths: [5, 2, 4], targets: Tensor(shape: [3], data: [2, 0, 1]))
            var config = TrainingConfig()
            config.loss = "cross_entropy"
            let trainer = try Trainer(model: model, config: config)
            let (loss, _, grads) = try trainer.lossAndGradients(batch, training: false)
            let named = model.namedGradients(grads)
            XCTAssertEqual(loss.value, try trainer.evaluate(batch), accuracy: 1e-9)
            // A training step keeps it a softmax model: probabilities out, rows summing to 1.
            var stepped = trainer
            try stepped.trainStep(batch)
            XCTAssertEqual(stepped.model.head?.activation, .softmax)
            let p = try stepped.model.forward(input: x).output
            for r in 0..<(p.count / 3) { XCTAssertEqual(p.data[(3 * r)..<(3 * r + 3)].reduce(0, +), 1, accuracy: 1e-5) }
            let params = model.namedParameters
            for target in ["head/weight", "head/bias", "layers/00/forward/weight_hh"] {
                let k = try XCTUnwrap(params.firstIndex { $0.path == target }, target)
                let analytic = try XCTUnwrap(named.first { $0.path == target }).value
                for i in stride(from: 0, to: params[k].value.count, by: 3) {
                    let eps: Float = 1e-2
                    func lossWith(_ delta: Float) throws -> Double {
                        var values = params.map(\.value)
                        values[k].data[i] += delta
                        var m = model
                        try m.setParameters(values)
                        return try Trainer(model: m, config: config).evaluate(batch)
                    }
                    let numeric = (try lossWith(eps) - lossWith(-eps)) / Double(2 * eps)
                    XCTAssertEqual(Double(analytic.data[i]), numeric, accuracy: 2e-3 + 1e-2 * abs(numeric),
                                   "\(softmaxModel ? "keras" : "new") \(target)[\(i)]")
                }
            }
        }
    }
}

extension InteropRoundTripTests {
    /// A last-step model with a bidirectional last layer trains on Keras' [B, O] output: the
    /// trainer's loss is the loss of that output (checked against Keras' own predictions) and
    /// its gradients match central finite differences of the loss, for every merge mode used.
    func testLastStepBidirectionalModelsTrainOnKerasOutput() throws {
        let cases: [(String, String, Tensor)] = [
            ("rt_keras_bidir_last_lstm_sum_dense", "cross_entropy", Tensor(shape: [2], data: [1, 0])),
            ("rt_keras_bidir_last_gru_concat", "mse", Tensor(shape: [2, 6], data: (0..<12).map { Float($0 % 5) * 0.1 - 0.2 })),
            ("rt_keras_bidir_last_backward_layer_ave", "mse", Tensor(shape: [2, 3], data: [0.1, -0.2, 0.3, 0, 0.2, -0.1])),
        ]
        for (name, lossName, targets) in cases {
            let fx = try RoundTripFixture.keras(name)
            let model = try fx.importKeras().model
            let io = interopFixture(fx.io)
            let x = try RunInputs.read(path: io, batchFirst: true, model: model).input
            var config = TrainingConfig()
            config.loss = lossName
            let trainer = try Trainer(model: model, config: config)
            // The loss of Keras' own prediction, computed here in Double.
            let keras = try readTensor(io, "expected/output")
            let O = keras.shape[1]
            var expected = 0.0
            for b in 0..<2 {
                if lossName == "mse" {
                    for j in 0..<O { let d = Double(keras.data[b * O + j]) - Double(targets.data[b * O + j]); expected += d * d / Double(2 * O) }
                } else {
                    expected -= log(Double(keras.data[b * O + Int(targets.data[b])])) / 2
                }
            }
            for lengths in [nil, [5, 3] as [Int32]?] {
                let batch = Batch(input: x, lengths: lengths, targets: targets)
                let (loss, _, grads) = try trainer.lossAndGradients(batch, training: false)
                if lengths == nil { XCTAssertEqual(loss.value, expected, accuracy: 1e-5 * max(1, expected), name) }
                XCTAssertEqual(loss.value, try trainer.evaluate(batch), accuracy: 1e-9, name)
                let named = model.namedGradients(grads)
                let params = model.namedParameters
                let last = String(format: "layers/%02d/backward/weight_hh", model.layers.count - 1)
                for target in [last, params[0].path] + (model.head == nil ? [] : ["head/weight"]) {
                    let k = try XCTUnwrap(params.firstIndex { $0.path == target }, target)
                    let analytic = try XCTUnwrap(named.first { $0.path == target }).value
                    XCTAssertTrue(analytic.data.contains { $0 != 0 }, "\(name) \(target): zero gradient")
                    for i in stride(from: 0, to: params[k].value.count, by: 5) {
                        let eps: Float = 1e-2
                        func lossWith(_ delta: Float) throws -> Double {
                            var values = params.map(\.value)
                            values[k].data[i] += delta
                            var m = model
                            try m.setParameters(values)
                            return try Trainer(model: m, config: config).evaluate(batch)
                        }
                        let numeric = (try lossWith(eps) - lossWith(-eps)) / Double(2 * eps)
                        XCTAssertEqual(Double(analytic.data[i]), numeric, accuracy: 1e-3 + 1e-2 * abs(numeric),
                                       "\(name) lengths=\(String(describing: lengths)) \(target)[\(i)]")
                    }
                }
            }
        }
    }
}

extension InteropRoundTripTests {
    /// Against Keras itself: the loss and the gradient of every weight of LSTM →
    /// Bidirectional(LSTM, return_sequences=False, sum) → Dense(softmax), which Keras (torch
    /// backend) computed with torch.autograd in the generator. Keras' kernels are SeqCell's
    /// weights transposed, and its one bias is SeqCell's bias_ih (bias_hh gets the same gradient).
    func testLastStepGradientsMatchKeras() throws {
        let fx = try RoundTripFixture.keras("rt_keras_bidir_last_lstm_sum_dense")
        let model = try fx.importKeras().model
        let io = interopFixture(fx.io)
        let x = try RunInputs.read(path: io, batchFirst: true, model: model).input
        var config = TrainingConfig()
        config.loss = "cross_entropy"
        let trainer = try Trainer(model: model, config: config)
        let (loss, _, grads) = try trainer.lossAndGradients(Batch(input: x, targets: try readTensor(io, "targets")), training: false)
        let keras = Double(try readTensor(io, "expected/sparse_categorical_crossentropy").data[0])
        XCTAssertEqual(loss.value, keras, accuracy: 1e-6 * keras)
        let ours = Dictionary(uniqueKeysWithValues: model.namedGradients(grads).map { ($0.path, $0.value) })
        let mapping: [(String, Bool)] = [
            ("layers/00/forward/weight_ih", true), ("layers/00/forward/weight_hh", true), ("layers/00/forward/bias_ih", false),
            ("layers/01/forward/weight_ih", true), ("layers/01/forward/weight_hh", true), ("layers/01/forward/bias_ih", false),
            ("layers/01/backward/weight_ih", true), ("layers/01/backward/weight_hh", true), ("layers/01/backward/bias_ih", false),
            ("head/weight", true), ("head/bias", false),
        ]
        let names = try datasetPaths(io, under: "expected/keras_grads")
        XCTAssertEqual(names.count, mapping.count)
        var worst: Float = 0
        defer { print(String(format: "interop figures last-step Bidirectional vs Keras: loss %.1e, gradients %.1e relative",
                             abs(loss.value - keras), worst)) }
        for (name, (path, transposed)) in zip(names, mapping) {
            let expected = try readTensor(io, "expected/keras_grads/\(name)")
            var got = try XCTUnwrap(ours[path], path)
            if transposed { got = KerasImporter.transpose(got) }
            let d = maxRelativeDifference(got, expected) ?? .infinity
            worst = max(worst, d)
            XCTAssertLessThanOrEqual(d, 1e-4, "\(path) vs Keras' \(name)")
            if path.hasSuffix("bias_ih") {
                XCTAssertEqual(ours[path.replacingOccurrences(of: "bias_ih", with: "bias_hh")]?.data, ours[path]?.data)
            }
        }
    }

    /// /model/source and @output_steps are untrusted like the rest of a checkpoint: bad values
    /// are errors naming the object, exit 1, and nothing is written.
    func testBadSourceAndOutputStepsAttributesAreRefused() throws {
        let model = try RoundTripFixture.torch("rt_torch_net").importTorch().model
        let cases: [(String, String)] = [
            ("g = f['model/source']; g.attrs['prefix'] = 'enc\\x1b[31m.'", "/model/source"),
            ("g = f['model/source']; g.attrs['head_name'] = 'x' * 5000", "at most 1024 bytes"),
            ("del f['model/source'].attrs['framework']", "'framework'"),
            ("f['model'].attrs['output_steps'] = 'sideways'", "output_steps 'sideways' is not all or last"),
        ]
        for (k, (edit, words)) in cases.enumerated() {
            let file = path("bad\(k).h5")
            try Checkpoint(model: model).save(to: file)
            _ = try runPython("import h5py, sys\nwith h5py.File(sys.argv[1], 'r+') as f:\n    \(edit)\n", [file])
            XCTAssertThrowsError(try Checkpoint.load(from: file, registry: testRegistry), edit) { XCTAssertTrue("\($0)".contains(words), "\($0)") }
            let out = path("out\(k).safetensors")
            let r = try runSeqCell(["export", file, "-o", out])
            XCTAssertEqual(r.status, 1, edit)
            XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
            XCTAssertFalse(r.stderr.contains("\u{1b}"), "control characters reach the terminal: \(r.stderr)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: out), edit)
        }
    }
}

/// Keras functional models that are chains of supported layers, return_state outputs included:
/// each output Keras computed is in `seqcell run`'s file under the dataset the import names.
final class InteropKerasFunctionalTests: TemporaryDirectoryTestCase {
    func testFunctionalChainsAndStateOutputsMatchKeras() throws {
        let expectedMaps = [
            "rt_keras_functional_chain": ["output"],
            "rt_keras_functional_states": ["output", "final_states/layers/01/forward/h", "final_states/layers/01/forward/c"],
            "rt_keras_functional_bidir_states": ["output", "final_states/layers/00/forward/h", "final_states/layers/00/forward/c",
                                                 "final_states/layers/00/backward/h", "final_states/layers/00/backward/c"],
            // tf-keras (Keras 2) model.save("m.h5"): the legacy config and weights layout.
            "keras2_functional_bidir_states": ["output", "final_states/layers/01/forward/h", "final_states/layers/01/backward/h"],
        ]
        for (name, map) in expectedMaps.sorted(by: { $0.key < $1.key }) {
            let fx = try RoundTripFixture.keras(name)
            let imported = try fx.importKeras()
            XCTAssertEqual(imported.outputDatasets, map, name)
            XCTAssertTrue(imported.notes.contains { $0.contains("output 0 → 'output'") }, "\(name): \(imported.notes)")
            let ckpt = path("\(name).h5"), out = path("\(name).out.h5")
            let imp = try runSeqCell(["import", interopFixture(fx.file), "-o", ckpt])
            XCTAssertEqual(imp.status, 0, imp.stderr)
            XCTAssertTrue(imp.stderr.contains("functional model: output 0") || imp.stdout.contains("functional model: output 0"), imp.stdout + imp.stderr)
            let io = interopFixture(fx.io)
            let run = try runSeqCell(["run", ckpt, "-i", io, "--batch-first", "-o", out])
            XCTAssertEqual(run.status, 0, run.stderr)
            for (k, dataset) in map.enumerated() {
                let expected = try readTensor(io, "expected/output_\(k)")
                let got = try readTensor(out, dataset)
                XCTAssertLessThanOrEqual(maxAbsDifference(got, expected) ?? .infinity, 1e-5,
                                         "\(name): output \(k) (\(dataset)) \(got.shape) vs Keras \(expected.shape)")
            }
        }
    }

    func testGraphsThatAreNotChainsAreRefusedNamingTheLayer() throws {
        let out = path("b.h5")
        let r = try runSeqCell(["import", interopFixture("bad_functional_branch.keras"), "-o", out])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("Concatenate layer 'concatenate' takes 2 inputs"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
        // Hand-made configs for the other shapes a graph can take.
        func config(_ layers: String, outputs: String) -> String {
            """
            {"class_name": "Functional", "config": {"name": "m", "input_layers": ["in", 0, 0], "output_layers": \(outputs), "layers": [
              {"class_name": "InputLayer", "name": "in", "config": {"name": "in", "batch_shape": [null, 5, 3]}, "inbound_nodes": []},
              \(layers)]}}
            """
        }
        func node(_ from: String, _ tensor: Int = 0) -> String {
            "[{\"args\": [{\"class_name\": \"__keras_tensor__\", \"config\": {\"keras_history\": [\"\(from)\", 0, \(tensor)]}}], \"kwargs\": {}}]"
        }
        let lstm = "{\"class_name\": \"LSTM\", \"name\": \"a\", \"config\": {\"name\": \"a\", \"units\": 2, \"return_sequences\": true, \"return_state\": true}, \"inbound_nodes\": \(node("in"))}"
        let cases: [(String, String, String)] = [
            (lstm + ", {\"class_name\": \"Dense\", \"name\": \"d\", \"config\": {\"name\": \"d\", \"units\": 2}, \"inbound_nodes\": \(node("a", 1))}",
             "[\"d\", 0, 0]", "reads output 1 of 'a'"),
            (lstm + ", {\"class_name\": \"Dense\", \"name\": \"d\", \"config\": {\"name\": \"d\", \"units\": 2}, \"inbound_nodes\": \(node("in"))}",
             "[\"d\", 0, 0]", "reads 'in', not 'a'"),
            (lstm + ", {\"class_name\": \"Dense\", \"name\": \"d\", \"config\": {\"name\": \"d\", \"units\": 2}, \"inbound_nodes\": \(node("a"))}",
             "[[\"d\", 0, 0], [\"a\", 0, 0]]", "layer 'a' is an output but so is the chain's last layer 'd'"),
            (lstm + ", {\"class_name\": \"Dense\", \"name\": \"d\", \"config\": {\"name\": \"d\", \"units\": 2}, \"inbound_nodes\": \(node("a")), \"x\": 1}",
             "[[\"d\", 0, 0], [\"d\", 0, 1]]", "output 1 of Dense layer 'd'"),
        ]
        for (layers, outputs, words) in cases {
            XCTAssertThrowsError(try KerasConfigReader.plan(json: config(layers, outputs: outputs), origin: "m.json"), words) { e in
                XCTAssertTrue("\(e)".contains(words), "\(e)")
            }
        }
    }
}

import Foundation
import XCTest
@testable import SeqCell

/// The embedding input stage: lookup, gradient (finite differences), training, the checkpoint's
/// format 1.1, and token inputs through `seqcell new/inspect/run/train`.
final class EmbeddingTests: TemporaryDirectoryTestCase {
    /// A model with an embedding stage (vocabulary 6, dimension 4, padding_idx 0), a GRU and a head.
    func tokenModel(padding: Int? = 0, seed: UInt64 = 3) throws -> Model {
        try Model.build(embedding: EmbeddingSpec(vocabularySize: 6, dimension: 4, paddingIndex: padding),
                        layers: [LayerSpec(cell: "gru", hiddenSize: 3)], head: HeadSpec(outputSize: 2),
                        registry: testRegistry, seed: seed)
    }

    let tokens = TokenIDs(shape: [4, 3], ids: [1, 2, 0, 3, 3, 5, 0, 4, 1, 2, 2, 2])

    func testForwardIsARowLookupBeforeTheFirstLayer() throws {
        let model = try tokenModel()
        let e = try XCTUnwrap(model.embedding)
        XCTAssertEqual(e.weight.shape, [6, 4])
        XCTAssertEqual(Array(e.weight.data[0..<4]), [0, 0, 0, 0], "the padding row starts at zero, as nn.Embedding(padding_idx=0)")
        XCTAssertEqual(model.inputSize, 4)
        XCTAssertEqual(model.parameterCount, 6 * 4 + (3 * 3 * 4 + 3 * 3 * 3 + 2 * 9) + (2 * 3 + 2))
        // The same layers fed the table's rows by hand.
        var rows: [Float] = []
        for id in tokens.ids { rows += e.weight.data[(Int(id) * 4)..<(Int(id) * 4 + 4)] }
        let plain = try Model(inputSize: 4, layers: model.layers, head: model.head)
        let lengths: [Int32] = [4, 2, 3]
        let expected = try plain.forward(input: Tensor(shape: [4, 3, 4], data: rows), lengths: lengths)
        let got = try model.forward(tokens: tokens, lengths: lengths)
        XCTAssertEqual(got.output, expected.output)
        XCTAssertEqual(got.finalStates, expected.finalStates)
    }

    func testOutOfVocabularyIdsAndWrongInputKindsAreRefused() throws {
        let model = try tokenModel()
        let bad = TokenIDs(shape: [2, 2], ids: [1, 2, 3, 6])
        let e = assertThrows(SeqCellError.self, try model.forward(tokens: bad))
        XCTAssertEqual(e?.message, "token ids[1, 1] = 6 is outside the vocabulary 0...5")
        let f = assertThrows(SeqCellError.self, try model.forward(input: Tensor.zeros([2, 2, 4])))
        XCTAssert(f?.message.contains("takes integer token ids") == true, "\(f?.message ?? "")")
        let plain = try Model(inputSize: 4, layers: model.layers)
        let g = assertThrows(SeqCellError.self, try plain.forward(tokens: tokens))
        XCTAssert(g?.message.contains("has no embedding stage") == true, "\(g?.message ?? "")")
        let negative = assertThrows(SeqCellError.self, try TokenIDs.checked(shape: [2, 3], values: [0, 1, 2, 3, -1, 0],
                                                                             vocabularySize: 6, batchFirst: true, what: "ids"))
        XCTAssertEqual(negative?.message, "ids[1, 1] = -1 is outside the vocabulary 0...5 (the model's embedding has 6 rows)")
    }

    /// d/dW of L = Σ output ⊙ G, against central differences of L in each table entry; the
    /// padding row's gradient is zero (nn.Embedding), although L depends on it.
    func testTableGradientMatchesFiniteDifferences() throws {
        var model = try tokenModel()
        var rng = TestRNG(seed: 11)
        // Move the padding row off zero so that L depends on it.
        model.embedding!.weight = rng.tensor([6, 4], scale: 0.8)
        let lengths: [Int32] = [4, 2, 3]
        let G = rng.tensor([4, 3, 2])
        func loss(_ m: Model) throws -> Double {
            let out = try m.forward(tokens: tokens, lengths: lengths).output
            return zip(out.data, G.data).reduce(0) { $0 + Double($1.0) * Double($1.1) }
        }
        let fwd = try model.forward(tokens: tokens, lengths: lengths, training: true)
        let grads = try model.backward(fwd, gradOutput: G)
        let dW = try XCTUnwrap(grads.embedding)
        XCTAssertEqual(dW.shape, [6, 4])
        XCTAssertEqual(grads.flat.count, model.namedParameters.count)
        XCTAssertEqual(model.namedParameters.last?.path, "embedding/weight")
        let eps: Float = 1e-2
        var worst: Float = 0
        var paddingDependence: Double = 0
        for i in 0..<24 {
            var plus = model, minus = model
            plus.embedding!.weight.data[i] += eps
            minus.embedding!.weight.data[i] -= eps
            let fd = Float((try loss(plus) - loss(minus)) / Double(2 * eps))
            if i < 4 {
                paddingDependence += Double(abs(fd))
                XCTAssertEqual(dW.data[i], 0, "padding row entry \(i) gets no gradient")
            } else {
                worst = max(worst, abs(fd - dW.data[i]))
            }
        }
        XCTAssertGreaterThan(paddingDependence, 1e-3, "the loss depends on the padding row: its zero gradient is the rule, not a zero function")
        XCTAssertLessThan(worst, 2e-3, "embedding gradient vs central differences")
        // Id 5 appears once, id 2 four times: both rows get gradient, and without padding_idx row 0 does too.
        XCTAssertNotEqual(dW.data[20..<24].map { abs($0) }.reduce(0, +), 0)
        var unpadded = model
        unpadded.embedding!.paddingIndex = nil
        let g2 = try unpadded.backward(try unpadded.forward(tokens: tokens, lengths: lengths, training: true), gradOutput: G)
        XCTAssertNotEqual(g2.embedding!.data[0..<4].map { abs($0) }.reduce(0, +), 0)
    }

    func testTrainingUpdatesTheTableButNotThePaddingRow() throws {
        let model = try tokenModel()
        var config = TrainingConfig()
        config.loss = "cross_entropy"
        config.target = "all"
        config.learningRate = 0.05
        var trainer = try Trainer(model: model, config: config)
        // Predict the next id of a fixed cycle.
        let ids: [Int32] = [1, 2, 3, 4, 5, 1, 2, 3, 0, 0, 0, 0]
        let targets = Tensor(shape: [4, 3], data: [1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 0, 0])
        let batch = Batch(tokens: TokenIDs(shape: [4, 3], ids: ids), lengths: [4, 4, 2], targets: targets)
        let first = try trainer.trainStep(batch).loss
        var last = first
        for _ in 0..<60 { last = try trainer.trainStep(batch).loss }
        XCTAssertLessThan(last, first * 0.5, "training on token ids lowers the loss")
        let before = try XCTUnwrap(model.embedding).weight, after = try XCTUnwrap(trainer.model.embedding).weight
        XCTAssertNotEqual(Array(before.data[4...]), Array(after.data[4...]), "the table trains")
        XCTAssertEqual(Array(after.data[0..<4]), [0, 0, 0, 0], "the padding row stays zero")
        // The optimizer's state for the table is saved and resumed.
        let path = self.path("trained.h5")
        try trainer.checkpoint.save(to: path)
        let resumed = try Trainer(resuming: try Checkpoint.load(from: path, registry: testRegistry))
        XCTAssertEqual(resumed.model.embedding?.weight, after)
        XCTAssertEqual(resumed.state.slots["m"]?["embedding/weight"], trainer.state.slots["m"]?["embedding/weight"])
    }

    func testCheckpointIsFormat11WithoutInputSizeAndOldFilesStay10() throws {
        let model = try tokenModel(padding: 2)
        let path = self.path("tok.h5")
        try Checkpoint(model: model).save(to: path)
        let root = try H5File(opening: path).root
        XCTAssertEqual(try root.intArrayAttribute("format_version"), [1, 1])
        XCTAssertEqual(try root.stringArrayAttribute("requires"), ["embedding"])
        // A format 1.0 reader needs /model@input_size: without it, it refuses the file instead of
        // running the layers on features and ignoring the table.
        XCTAssertFalse(try root.group("model").hasAttribute("input_size"))
        let eg = try root.group("model").group("embedding")
        XCTAssertEqual(try eg.intAttribute("vocab_size"), 6)
        XCTAssertEqual(try eg.intAttribute("padding_idx"), 2)
        let loaded = try Checkpoint.load(from: path, registry: testRegistry)
        XCTAssertEqual(loaded.formatVersion, [1, 1])
        XCTAssertEqual(loaded.model.embedding?.weight, model.embedding?.weight)
        XCTAssertEqual(loaded.model.embedding?.paddingIndex, 2)
        XCTAssertEqual(try loaded.model.forward(tokens: tokens).output, try model.forward(tokens: tokens).output)

        let plainPath = self.path("plain.h5")
        try Checkpoint(model: try Model(inputSize: 4, layers: model.layers)).save(to: plainPath)
        let plainRoot = try H5File(opening: plainPath).root
        XCTAssertEqual(try plainRoot.intArrayAttribute("format_version"), [1, 0], "a file without an embedding stays 1.0")
        XCTAssertFalse(try plainRoot.hasAttribute("requires"))
    }

    /// The token-model recipe of docs/FORMAT.md, written by h5py, loads and looks up rows.
    func testTheHandWrittenTokenCheckpointOfFormatMdLoads() throws {
        let file = path("tokens.h5")
        _ = try runPython("""
            import h5py, numpy as np, sys, os
            os.chdir(os.path.dirname(sys.argv[1]))
            rng = np.random.default_rng(0)
            def param(*shape):
                return rng.uniform(-0.5, 0.5, size=shape).astype("float32")
            with h5py.File("tokens.h5", "w") as f:
                f.attrs["format"] = "seqcell-checkpoint"
                f.attrs["format_version"] = np.array([1, 1], dtype="int64")
                f.attrs["requires"] = ["embedding"]
                m = f.create_group("model")
                m.attrs["num_layers"] = 1
                e = m.create_group("embedding")
                e.attrs["kind"] = "embedding"
                e.attrs["padding_idx"] = 0
                e["weight"] = param(65, 8)             # 65 token ids, 8-wide vectors
                d = m.create_group("layers/00")
                d.attrs["direction"] = "forward"
                d = d.create_group("forward")
                d.attrs["cell"] = "gru"
                d.attrs["cell_version"] = "1.0.0"
                d.attrs["input_size"] = 8
                d.attrs["hidden_size"] = 4
                d["weight_ih"] = param(12, 8)
                d["weight_hh"] = param(12, 4)
                d["bias_ih"] = param(12)
                d["bias_hh"] = param(12)
            """, [file])
        let model = try Checkpoint.load(from: file, registry: testRegistry).model
        let e = try XCTUnwrap(model.embedding)
        XCTAssertEqual(e.weight.shape, [65, 8])
        XCTAssertEqual(e.paddingIndex, 0)
        let ids = TokenIDs(shape: [2, 1], ids: [64, 3])
        let viaRows = try Model(inputSize: 8, layers: model.layers).forward(
            input: Tensor(shape: [2, 1, 8], data: Array(e.weight.data[(64 * 8)..<(65 * 8)] + e.weight.data[24..<32])))
        XCTAssertEqual(try model.forward(tokens: ids).output, viaRows.output)
    }

    func testAFileRequiringAnUnknownFeatureIsRefusedByName() throws {
        let path = self.path("future.h5")
        try Checkpoint(model: try tokenModel()).save(to: path)
        do {
            let file = try H5File(opening: path, mode: .readWrite)
            try file.root.setAttribute("requires", ["embedding", "attention"])
        }
        let e = assertThrows(SeqCellError.self, try Checkpoint.load(from: path, registry: testRegistry))
        XCTAssertEqual(e?.message, "'\(path)' needs 'attention', which this SeqCell (format 1.2) cannot read: the file was written by a newer SeqCell; upgrade to read it")
        XCTAssertNotNil(assertThrows(SeqCellError.self, try CheckpointDocument.read(path: path)))
    }

    func testPaddedStepsAreZeroBeforeTheHeadAndTheHeadOfZeroAfter() throws {
        var model = try tokenModel()
        model.head!.activation = .tanh
        let lengths: [Int32] = [4, 2, 3]
        let out = try model.forward(tokens: tokens, lengths: lengths)
        let bias = model.head!.bias.data.map { tanhf($0) }
        for b in 0..<3 {
            for t in Int(lengths[b])..<4 {
                XCTAssertEqual(Array(out.recurrentOutput.data[((t * 3 + b) * 3)..<((t * 3 + b) * 3 + 3)]), [0, 0, 0])
                XCTAssertEqual(Array(out.output.data[((t * 3 + b) * 2)..<((t * 3 + b) * 2 + 2)]), bias,
                               "padded step \(t) of sample \(b) is tanh(bias), as nn.Linear + tanh on pad_packed_sequence's zeros")
            }
        }
    }

    // MARK: CLI

    /// Writes an HDF5 run input with h5py: token ids of `dtype`, optional lengths.
    func writeTokens(_ name: String, _ ids: [[Int]], dtype: String, lengths: [Int]? = nil) throws -> String {
        let file = path(name)
        let lengthsCode = lengths.map { "f['lengths'] = np.array(\($0), dtype='int64')" } ?? ""
        _ = try runPython("""
            import h5py, numpy as np, sys
            with h5py.File(sys.argv[1], 'w') as f:
                f['input'] = np.array(\(ids), dtype='\(dtype)')
                \(lengthsCode)
            """, [file])
        return file
    }

    func testNewInspectRunWithTokenIdsOfAnyIntegerType() throws {
        let model = path("tok.h5")
        var r = try runProgram(["new", "--embedding", "6:4,padding_idx=0", "--layer", "lstm:3", "--head", "2", "-o", model])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssert(r.out.contains("embedding: vocabulary 6 → 4, padding_idx 0"), r.out)
        r = try runProgram(["inspect", model])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssert(r.out.contains("format 1.1"), r.out)
        XCTAssert(r.out.contains("input: integer token ids, vocabulary 6"), r.out)
        XCTAssert(r.out.contains("embedding: weight [6, 4] float32 (24), padding_idx 0"), r.out)
        let loaded = try Checkpoint.load(from: model, registry: testRegistry).model
        let ids = [[1, 5, 0], [2, 2, 3], [4, 0, 1]]  // [T, B]
        let flat = TokenIDs(shape: [3, 3], ids: ids.flatMap { $0.map(Int32.init) })
        let expected = try loaded.forward(tokens: flat, lengths: [3, 2, 3])
        for dtype in ["uint8", "int16", "int32", "int64", "uint64"] {
            let input = try writeTokens("in-\(dtype).h5", ids, dtype: dtype, lengths: [3, 2, 3])
            let out = path("out-\(dtype).h5")
            r = try runProgram(["run", model, "-i", input, "-o", out])
            XCTAssertEqual(r.status, 0, "\(dtype): \(r.err)")
            XCTAssertEqual(try readTensor(out, "output"), expected.output, dtype)
        }
        // Batch-first [B, T].
        let transposed = (0..<3).map { b in (0..<3).map { t in ids[t][b] } }
        let bf = try writeTokens("bf.h5", transposed, dtype: "int32", lengths: [3, 2, 3])
        r = try runProgram(["run", model, "-i", bf, "--batch-first", "-o", path("bf-out.h5")])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertEqual(try readTensor(path("bf-out.h5"), "output"), swapFirstTwoAxes(expected.output))
        // --last-step: each sample's output at t = length − 1, [B, O].
        r = try runProgram(["run", model, "-i", path("in-int64.h5"), "--last-step", "-o", path("last.h5")])
        XCTAssertEqual(r.status, 0, r.err)
        let last = try readTensor(path("last.h5"), "output")
        XCTAssertEqual(last.shape, [3, 2])
        for (b, len) in [3, 2, 3].enumerated() {
            let t = len - 1
            XCTAssertEqual(Array(last.data[(b * 2)..<(b * 2 + 2)]), Array(expected.output.data[((t * 3 + b) * 2)..<((t * 3 + b) * 2 + 2)]))
        }
        XCTAssertEqual(try readTensor(path("last.h5"), "recurrent_output").shape, [3, 3])
        // A .npy of int64 ids.
        let npy = path("ids.npy")
        _ = try runPython("import numpy as np, sys; np.save(sys.argv[1], np.array(\(ids), dtype='int64'))", [npy])
        r = try runProgram(["run", model, "-i", npy, "-o", path("npy-out.h5")])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertEqual(try readTensor(path("npy-out.h5"), "output"), try loaded.forward(tokens: flat).output)
    }

    func testRunRefusesBadIdsAndTheWrongInputKindClearly() throws {
        let model = path("tok.h5"), plain = path("plain.h5")
        XCTAssertEqual(try runProgram(["new", "--embedding", "6:4", "--layer", "gru:3", "-o", model]).status, 0)
        XCTAssertEqual(try runProgram(["new", "--input-size", "4", "--layer", "gru:3", "-o", plain]).status, 0)
        let bad = try writeTokens("bad.h5", [[1, 2], [3, 9]], dtype: "int32")
        var r = try runProgram(["run", model, "-i", bad, "-o", path("o.h5")])
        XCTAssertNotEqual(r.status, 0)
        XCTAssert(r.err.contains("'\(bad)': dataset 'input'[1, 1] = 9 is outside the vocabulary 0...5"), r.err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("o.h5")))
        r = try runProgram(["run", plain, "-i", bad, "-o", path("o.h5")])
        XCTAssertNotEqual(r.status, 0)
        XCTAssert(r.err.contains("holds integer values (int32, shape [2, 2]); this model has no embedding stage"), r.err)
        let floats = path("f.h5")
        _ = try runPython("import h5py, numpy as np, sys; h5py.File(sys.argv[1], 'w')['input'] = np.zeros((2, 2, 4), dtype='float32')", [floats])
        r = try runProgram(["run", model, "-i", floats, "-o", path("o.h5")])
        XCTAssertNotEqual(r.status, 0)
        XCTAssert(r.err.contains("holds float values [2, 2, 4]; this model starts with an embedding stage (vocabulary 6) and takes integer token ids [T, B]"), r.err)
        r = try runProgram(["new", "--embedding", "6:4", "--input-size", "4", "--layer", "gru:3", "-o", path("x.h5")])
        XCTAssertNotEqual(r.status, 0)
        XCTAssert(r.err.contains("not both"), r.err)
        r = try runProgram(["new", "--embedding", "6:4,padding_idx=6", "--layer", "gru:3", "-o", path("x.h5")])
        XCTAssertNotEqual(r.status, 0)
        XCTAssert(r.err.contains("padding_idx '6' is not an integer in -6...5"), r.err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("x.h5")))
    }

    func testSwapKeepsAndComposeTakesTheEmbeddingStage() throws {
        let model = path("tok.h5")
        XCTAssertEqual(try runProgram(["new", "--embedding", "6:4", "--layer", "gru:3", "--layer", "gru:3", "-o", model]).status, 0)
        var r = try runProgram(["swap", model, "--layer", "1", "--cell", "lstm:3", "-o", path("swapped.h5")])
        XCTAssertEqual(r.status, 0, r.err)
        let original = try Checkpoint.load(from: model, registry: testRegistry).model
        XCTAssertEqual(try Checkpoint.load(from: path("swapped.h5"), registry: testRegistry).model.embedding?.weight, original.embedding?.weight)
        r = try runProgram(["compose", "-o", path("plain.h5"), "\(model):0"])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssert(r.out.contains("has an embedding stage, which is not carried over (add --embedding-from"), r.out)
        XCTAssertNil(try Checkpoint.load(from: path("plain.h5"), registry: testRegistry).model.embedding)
        r = try runProgram(["compose", "-o", path("c.h5"), "\(model):0", "--embedding-from", model])
        XCTAssertEqual(r.status, 0, r.err)
        let composed = try Checkpoint.load(from: path("c.h5"), registry: testRegistry).model
        XCTAssertEqual(composed.embedding?.weight, original.embedding?.weight)
        XCTAssertEqual(composed.layers.count, 1)
    }

    func testTrainOnTokenIdsUpdatesTheEmbedding() throws {
        let model = path("tok.h5")
        XCTAssertEqual(try runProgram(["new", "--embedding", "5:4", "--layer", "gru:8", "--head", "5", "-o", model]).status, 0)
        // Next-id prediction on cycles 0→1→2→3→4→0, int16 ids, int64 targets.
        _ = try runPython("""
            import h5py, numpy as np, sys
            T, N = 6, 16
            start = np.arange(N) % 5
            ids = (start[None, :] + np.arange(T)[:, None]) % 5
            with h5py.File(sys.argv[1], 'w') as f:
                f['input'] = ids.astype('int16')
                f['targets'] = ((ids + 1) % 5).astype('int64')
            """, [path("data.h5")])
        let r = try runProgram(["train", model, "--data", path("data.h5"), "--loss", "cross_entropy", "--target", "all",
                                "--steps", "150", "--lr", "0.05", "--log-every", "150", "--batch-size", "16", "-o", path("trained.h5")])
        XCTAssertEqual(r.status, 0, r.err)
        let lossText = try XCTUnwrap(r.out.split(separator: "\n").last { $0.hasPrefix("step 150") }, r.out)
        let loss = try XCTUnwrap(Double(lossText.split(separator: " ")[3]))
        XCTAssertLessThan(loss, 0.2, "a deterministic cycle is learnt: \(lossText)")
        let before = try Checkpoint.load(from: model, registry: testRegistry).model.embedding!.weight
        let after = try Checkpoint.load(from: path("trained.h5"), registry: testRegistry).model.embedding!.weight
        XCTAssertGreaterThan(zip(before.data, after.data).map { abs($0 - $1) }.max()!, 0.01)
        // Out-of-vocabulary ids and float data are refused before training starts.
        _ = try runPython("""
            import h5py, numpy as np, sys
            with h5py.File(sys.argv[1], 'w') as f:
                f['input'] = np.array([[0, 1], [2, 7]], dtype='int32')
                f['targets'] = np.zeros((2, 2), dtype='int64')
            with h5py.File(sys.argv[2], 'w') as f:
                f['input'] = np.zeros((2, 2, 5), dtype='float32')
                f['targets'] = np.zeros((2, 2), dtype='float32')
            """, [path("bad.h5"), path("float.h5")])
        var bad = try runProgram(["train", model, "--data", path("bad.h5"), "--loss", "cross_entropy", "--target", "all",
                                  "--steps", "2", "-o", path("never.h5")])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssert(bad.err.contains("input[1, 1] = 7 is outside the vocabulary 0...4"), bad.err)
        bad = try runProgram(["train", model, "--data", path("float.h5"), "--loss", "cross_entropy", "--target", "all",
                              "--steps", "2", "-o", path("never.h5")])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssert(bad.err.contains("the model starts with an embedding stage (vocabulary 5)"), bad.err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("never.h5")))
    }

    /// Token ids through the data readers of `train` and `evaluate`: a `.npz` archive, batch-first
    /// and time-major copies of the same ids giving the same loss lines, a validation split that
    /// keeps the ids, and `evaluate`'s accuracy equal to the argmax of `run`'s outputs.
    func testTokenIdsInNpzBatchFirstWithValidationSplitAndEvaluate() throws {
        let model = path("tok.h5")
        XCTAssertEqual(try runProgram(["new", "--embedding", "6:4", "--layer", "gru:8", "--head", "2", "-o", model]).status, 0)
        _ = try runPython("""
            import numpy as np, sys, h5py
            r = np.random.default_rng(3); N, T = 40, 7
            x = r.integers(0, 6, (N, T)).astype('uint8')
            y = (x[:, -1] >= 3).astype('int32')
            np.savez(sys.argv[1], input=x, targets=y)
            np.savez(sys.argv[2], input=np.ascontiguousarray(x.T).astype('int64'), targets=y)
            with h5py.File(sys.argv[3], 'w') as f:
                f['input'] = np.ascontiguousarray(x.T).astype('int32')
            """, [path("bf.npz"), path("tm.npz"), path("ids.h5")])
        let common = ["--loss", "cross_entropy", "--validation-split", "0.25", "--steps", "30", "--log-every", "15",
                      "--lr", "0.05", "--batch-size", "10"]
        let bf = try runProgram(["train", model, "--data", path("bf.npz"), "--batch-first", "-o", path("bf.h5")] + common)
        XCTAssertEqual(bf.status, 0, bf.err)
        let tm = try runProgram(["train", model, "--data", path("tm.npz"), "--time-major", "-o", path("tm.h5")] + common)
        XCTAssertEqual(tm.status, 0, tm.err)
        func stepLines(_ out: String) -> [String] {
            out.split(separator: "\n").filter { $0.hasPrefix("step ") }.map { line in
                String(line[..<(line.range(of: "  elapsed")?.lowerBound ?? line.endIndex)])
            }
        }
        XCTAssertEqual(stepLines(bf.out).count, 2, bf.out)
        XCTAssertEqual(stepLines(bf.out), stepLines(tm.out), "the same ids in either layout train the same")
        XCTAssert(bf.out.contains("the first 30 train, the last 10 validate"), bf.out)
        XCTAssert(bf.out.contains("val_accuracy"), bf.out)
        let ev = try runProgram(["evaluate", path("bf.h5"), "--data", path("bf.npz"), "--batch-first", "--json"])
        XCTAssertEqual(ev.status, 0, ev.err)
        struct Report: Decodable { var metrics: [String: Double] }
        let accuracy = try XCTUnwrap(JSONDecoder().decode(Report.self, from: Data(ev.out.utf8)).metrics["accuracy"])
        let run = try runProgram(["run", path("bf.h5"), "--input", path("ids.h5"), "--last-step", "-o", path("y.h5")])
        XCTAssertEqual(run.status, 0, run.err)
        let expected = try runPython("""
            import h5py, numpy as np, sys
            out = h5py.File(sys.argv[1], 'r')['output'][()]
            y = (np.load(sys.argv[2])['input'][:, -1] >= 3)
            print(float(np.mean(np.argmax(out, axis=-1) == y)))
            """, [path("y.h5"), path("bf.npz")])
        XCTAssertEqual(accuracy, try XCTUnwrap(Double(expected.trimmingCharacters(in: .whitespacesAndNewlines))), accuracy: 1e-9)
    }
}

/// Keras `Embedding` and PyTorch `nn.Embedding` models, imported and exported; the fixtures and
/// the frameworks' outputs come from Fixtures/interop/generate_embedding.py.
final class EmbeddingInteropTests: TemporaryDirectoryTestCase {
    func assertMatches(_ out: String, _ expected: String, _ names: [(String, String)], tol: Float = 1e-5,
                       file: StaticString = #filePath, line: UInt = #line) throws {
        for (got, want) in names {
            let a = try readTensor(out, got), b = try readTensor(expected, "expected/" + want)
            XCTAssertEqual(a.shape, b.shape, got, file: file, line: line)
            let d = try XCTUnwrap(maxAbsDifference(a, b), got, file: file, line: line)
            XCTAssertLessThanOrEqual(d, tol, "\(got): max |diff| \(d)", file: file, line: line)
        }
    }

    func testPyTorchEmbeddingLSTMLinearMatchesTorchOutputsAndGradients() throws {
        let weights = interopFixture("torch_embedding_lstm.safetensors"), io = interopFixture("torch_embedding_lstm.io.h5")
        var r = try runProgram(["import", weights, "--prefix", "lstm.", "--head", "fc", "--embedding", "embed", "--padding-idx", "0",
                                "-o", path("m.h5")])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssert(r.out.contains("nn.Embedding(7, 3, padding_idx=0) + nn.LSTM(3, 4, num_layers=1) + nn.Linear(4, 2)"), r.out)
        r = try runProgram(["run", path("m.h5"), "-i", io, "--grad-output", io, "-o", path("out.h5")])
        XCTAssertEqual(r.status, 0, r.err)
        // Padded steps: PyTorch's fc on pad_packed_sequence's zeros is fc.bias; SeqCell's head(0) is too.
        try assertMatches(path("out.h5"), io, [("output", "output"), ("h_n", "h_n"), ("c_n", "c_n"),
                                               ("grad_params/embedding/weight", "grad_params/embedding/weight"),
                                               ("grad_params/layers/00/forward/weight_ih", "grad_params/layers/00/forward/weight_ih"),
                                               ("grad_params/head/bias", "grad_params/head/bias")])
        XCTAssertEqual(Array(try readTensor(path("out.h5"), "grad_params/embedding/weight").data[0..<3]), [0, 0, 0],
                       "the padding row gets no gradient")
        XCTAssertFalse(try hasDataset(path("out.h5"), "grad_input"), "token ids have no gradient")

        // Without --embedding the table is found by its shape (and padding_idx is said to be unknown).
        r = try runProgram(["import", weights, "--head", "fc", "-o", path("found.h5")])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssert(r.out.contains("'embed.weight' [7, 3] imported as the embedding stage (nn.Embedding), found by its shape"), r.out)
        XCTAssert(r.out.contains("does not record nn.Embedding's padding_idx"), r.out)
        r = try runProgram(["run", path("found.h5"), "-i", io, "-o", path("found-out.h5")])
        XCTAssertEqual(r.status, 0, r.err)
        try assertMatches(path("found-out.h5"), io, [("output", "output")])

        r = try runProgram(["import", weights, "--head", "fc", "--embedding", "encoder", "-o", path("x.h5")])
        XCTAssertNotEqual(r.status, 0)
        XCTAssert(r.err.contains("no tensor 'encoder' or 'encoder.weight' for the embedding (tensors ending in .weight: 'embed.weight', 'fc.weight')"), r.err)
    }

    func testPyTorchExportOfAnEmbeddingModelImportsBackWithoutFlags() throws {
        let weights = interopFixture("torch_embedding_lstm.safetensors"), io = interopFixture("torch_embedding_lstm.io.h5")
        XCTAssertEqual(try runProgram(["import", weights, "--prefix", "lstm.", "--head", "fc", "--padding-idx", "0", "-o", path("m.h5")]).status, 0)
        var r = try runProgram(["export", path("m.h5"), "-o", path("m.safetensors")])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssert(r.out.contains("self.embed = nn.Embedding(7, 3, padding_idx=0)"), r.out)
        XCTAssert(r.out.contains("x = self.embed(x)"), r.out)
        let st = try TensorDictionary.safetensors(path: path("m.safetensors"))
        // The imported module's own names come back (docs/INTEROP.md, "Your own module, there and back").
        XCTAssertEqual(st.names, ["embed.weight", "fc.bias", "fc.weight", "lstm.bias_hh_l0", "lstm.bias_ih_l0", "lstm.weight_hh_l0", "lstm.weight_ih_l0"])
        XCTAssertEqual(st.tensors["embed.weight"], try TensorDictionary.safetensors(path: weights).tensors["embed.weight"])
        r = try runProgram(["import", path("m.safetensors"), "-o", path("back.h5")])
        XCTAssertEqual(r.status, 0, r.err)
        let back = try Checkpoint.load(from: path("back.h5"), registry: testRegistry).model
        XCTAssertEqual(back.embedding?.paddingIndex, 0)
        r = try runProgram(["run", path("back.h5"), "-i", io, "-o", path("out.h5")])
        XCTAssertEqual(r.status, 0, r.err)
        try assertMatches(path("out.h5"), io, [("output", "output"), ("h_n", "h_n")])
    }

    func testKerasEmbeddingGRUDenseMatchesKeras() throws {
        let model = interopFixture("keras_embedding_gru.keras"), io = interopFixture("keras_embedding_gru.io.h5")
        var r = try runProgram(["import", model, "-o", path("k.h5")])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssert(r.out.contains("keras.Sequential([Embedding(7, 3), GRU(4), Dense(2, activation='linear')])"), r.out)
        r = try runProgram(["run", path("k.h5"), "-i", io, "-o", path("out.h5")])
        XCTAssertEqual(r.status, 0, r.err)
        try assertMatches(path("out.h5"), io, [("output", "output")])
        // The same model saved as a legacy .h5 (model_weights/embedding/…/embeddings).
        r = try runProgram(["import", interopFixture("keras_embedding_gru.legacy.h5"), "-o", path("legacy.h5")])
        XCTAssertEqual(r.status, 0, r.err)
        r = try runProgram(["run", path("legacy.h5"), "-i", io, "-o", path("legacy-out.h5")])
        XCTAssertEqual(r.status, 0, r.err)
        try assertMatches(path("legacy-out.h5"), io, [("output", "output")])

        // Export back to Keras 3 weights + JSON, and import those: the same model.
        r = try runProgram(["export", path("k.h5"), "-o", path("k.weights.h5")])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssert(r.out.contains("keras.Sequential([Embedding(7, 3), GRU(4)"), r.out)
        XCTAssertEqual(try readTensor(path("k.weights.h5"), "layers/embedding/vars/0").shape, [7, 3])
        r = try runProgram(["import", path("k.weights.h5"), "--keras-config", path("k.json"), "-o", path("back.h5")])
        XCTAssertEqual(r.status, 0, r.err)
        r = try runProgram(["run", path("back.h5"), "-i", io, "-o", path("back-out.h5")])
        XCTAssertEqual(r.status, 0, r.err)
        try assertMatches(path("back-out.h5"), io, [("output", "output")])
    }

    func testKerasMaskZeroIsRefusedWithTheReason() throws {
        let r = try runProgram(["import", interopFixture("bad_embedding_mask_zero.keras"), "-o", path("m.h5")])
        XCTAssertNotEqual(r.status, 0)
        XCTAssert(r.err.contains("mask_zero=True is not supported: Keras then skips every step whose id is 0"), r.err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("m.h5")))
    }
}

import Foundation
import XCTest
@testable import SeqCellBase
@testable import SeqCellHost
@testable import SeqCellModel
@testable import SeqCellFormats
import SeqCellTestSupport

/// The parameter tree: its order, paths and flat layout for a stacked bidirectional model
/// with a head and an embedding stage, the round trip through a checkpoint, and a training
/// run resumed from a checkpoint bit for bit.
final class ParameterTreeTests: XCTestCase {
    var folder = ""

    override func setUpWithError() throws {
        folder = NSTemporaryDirectory() + "seqcell-ptree-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: folder)
    }

    /// Embedding (vocabulary 7, dimension 3) → bidirectional lstm|gru 4 → reverse rnn 2 → head 5.
    func stackedModel(seed: UInt64 = 3) throws -> Model {
        _ = requiredBuiltInCells()
        return try Model.build(embedding: EmbeddingSpec(vocabularySize: 7, dimension: 3, paddingIndex: 0),
                               layers: [LayerSpec(cell: "lstm", hiddenSize: 4, direction: .bidirectional, backwardCell: "gru"),
                                        LayerSpec(cell: "rnn", hiddenSize: 2, direction: .reverse)],
                               head: HeadSpec(outputSize: 5, activation: .softmax), registry: testRegistry, seed: seed)
    }

    func testOrderPathsAndContiguousOffsets() throws {
        let model = try stackedModel()
        let tree = model.parameterTree
        // The cells' own parameter names and shapes, in their order, from their descriptors.
        let lstm = model.layers[0].cells[0].cell.params, gru = model.layers[0].cells[1].cell.params
        let rnn = model.layers[1].cells[0].cell.params
        var want: [(ParameterKey, String, [Int])] = []
        for (p, info) in lstm.enumerated() { want.append((.cell(layer: 0, direction: 0, parameter: p), "layers/00/forward/\(info.name)", info.shape)) }
        for (p, info) in gru.enumerated() { want.append((.cell(layer: 0, direction: 1, parameter: p), "layers/00/backward/\(info.name)", info.shape)) }
        for (p, info) in rnn.enumerated() { want.append((.cell(layer: 1, direction: 0, parameter: p), "layers/01/backward/\(info.name)", info.shape)) }
        want += [(.headWeight, "head/weight", [5, 2]), (.headBias, "head/bias", [5]), (.embedding, "embedding/weight", [7, 3])]
        XCTAssertEqual(tree.entries.map(\.key), want.map(\.0))
        XCTAssertEqual(tree.entries.map(\.path), want.map(\.1))
        XCTAssertEqual(tree.entries.map(\.shape), want.map(\.2))
        // The LSTM's first input weight is [4H, I] = [16, 3] with four gate blocks.
        XCTAssertEqual(tree.entries[0].shape, [16, 3])
        XCTAssertEqual(tree.entries[0].info?.role, .inputWeight)
        XCTAssertEqual(tree.entries[0].gateCount, 4)
        XCTAssertEqual(tree.entry(.headBias)?.gateCount, 1)
        XCTAssertNil(tree.entry(.headWeight)?.info)
        // Contiguous: each entry starts where the previous ends; the total is the model's count.
        var offset = 0
        for e in tree.entries {
            XCTAssertEqual(e.offset, offset, e.path)
            XCTAssertEqual(e.count, e.shape.reduce(1, *), e.path)
            offset += e.count
        }
        XCTAssertEqual(tree.elementCount, offset)
        XCTAssertEqual(tree.elementCount, model.parameterCount)
        // namedParameters is the tree with the values.
        XCTAssertEqual(model.namedParameters.map(\.path), tree.entries.map(\.path))
        XCTAssertEqual(tree.entry(path: "layers/01/backward/\(rnn[0].name)")?.key, .cell(layer: 1, direction: 0, parameter: 0))
        XCTAssertNil(tree.entry(path: "layers/01/forward/\(rnn[0].name)"))
        XCTAssertEqual(tree.entries(layer: 0, direction: 1).map(\.path), gru.map { "layers/00/backward/\($0.name)" })
    }

    func testFlatBufferRoundTripAndFit() throws {
        var model = try stackedModel()
        let tree = model.parameterTree
        let flat = tree.flatParameters(of: model)
        XCTAssertEqual(flat.count, tree.elementCount)
        // Each entry's values sit at its offset.
        for (e, p) in zip(tree.entries, model.namedParameters) {
            XCTAssertEqual(Array(flat[e.range]), p.value.data, e.path)
        }
        XCTAssertEqual(tree.tensors(flat), model.namedParameters.map(\.value))
        // Scatter writes every parameter back where it belongs.
        let changed = flat.indices.map { Float($0) }
        try tree.scatterParameters(changed, into: &model)
        XCTAssertEqual(model.head?.bias.data, Array(changed[tree.entry(.headBias)!.range]))
        XCTAssertEqual(model.embedding?.weight.data, Array(changed[tree.entry(.embedding)!.range]))
        XCTAssertEqual(model.layers[1].cells[0].params[1].data,
                       Array(changed[tree.entry(.cell(layer: 1, direction: 0, parameter: 1))!.range]))
        XCTAssertEqual(tree.flatParameters(of: model), changed)
        XCTAssertThrowsError(try tree.scatterParameters(Array(changed.dropLast()), into: &model))
        // setParameters goes through the same layout.
        var other = model
        try other.setParameters(tree.tensors(flat))
        XCTAssertEqual(tree.flatParameters(of: other), flat)
        XCTAssertThrowsError(try other.setParameters(Array(tree.tensors(flat).dropLast())))
        // A model of another structure no longer fits.
        XCTAssertTrue(tree.fits(model))
        var headless = model
        headless.head = nil
        XCTAssertFalse(tree.fits(headless))
        XCTAssertFalse(tree.fits(try stackedModel().withoutEmbedding()))
        XCTAssertThrowsError(try tree.scatterParameters(changed, into: &headless))
    }

    func testGradientsAreLaidOutByKey() throws {
        let model = try stackedModel()
        let tree = model.parameterTree
        let tokens = TokenIDs(shape: [3, 2], ids: [1, 2, 3, 4, 5, 6])
        let fwd = try model.forward(tokens: tokens, training: true)
        var rng = SplitMix64(seed: 9)
        let g = try model.backward(fwd, gradOutput: rng.uniformTensor(fwd.output.shape, scale: 1))
        var flat: [Float] = []
        try tree.gatherGradients(g, into: &flat)
        XCTAssertEqual(flat.count, tree.elementCount)
        XCTAssertEqual(Array(flat[tree.entry(.embedding)!.range]), g.embedding?.data)
        XCTAssertEqual(Array(flat[tree.entry(.headWeight)!.range]), g.head?.weight.data)
        XCTAssertEqual(Array(flat[tree.entry(.cell(layer: 0, direction: 1, parameter: 2))!.range]), g.params[0][1][2].data)
        XCTAssertEqual(model.namedGradients(g).map(\.path), tree.entries.map(\.path))
        XCTAssertEqual(tree.tensors(flat), g.flat)
        // A gradient of the wrong shape is refused, naming the parameter.
        var bad = g
        bad.params[1][0][0] = Tensor.zeros([1])
        XCTAssertThrowsError(try tree.gatherGradients(bad, into: &flat)) { e in
            XCTAssert("\(e)".contains("layers/01/backward/"), "\(e)")
        }
    }

    func testCheckpointRoundTripKeepsTheTree() throws {
        let model = try stackedModel()
        let path = folder + "/m.h5"
        try Checkpoint(model: model).save(to: path)
        let loaded = try Checkpoint.load(from: path, registry: testRegistry).model
        XCTAssertEqual(loaded.parameterTree, model.parameterTree)
        XCTAssertEqual(loaded.parameterTree.flatParameters(of: loaded), model.parameterTree.flatParameters(of: model))
        // Each parameter is the dataset at its path under /model.
        let file = try H5File(opening: path)
        let root = try file.root.group("model")
        for e in model.parameterTree.entries {
            let parts = e.path.split(separator: "/").map(String.init)
            var g = root
            for p in parts.dropLast() { g = try g.group(p) }
            XCTAssertEqual(try g.dataset(parts.last!).readFloats(), Array(model.parameterTree.flatParameters(of: model)[e.range]), e.path)
        }
    }

    /// Training k steps, saving, loading and training m more gives exactly the parameters and
    /// optimizer state of k + m uninterrupted steps, for every optimizer.
    func testResumeIsBitIdenticalForEveryOptimizer() throws {
        let model = try stackedModel(seed: 17)
        let ids: [Int32] = [1, 2, 3, 4, 5, 6, 2, 3, 0, 6, 1, 0]
        let batch = Batch(tokens: TokenIDs(shape: [4, 3], ids: ids), lengths: [4, 3, 2],
                          targets: Tensor(shape: [4, 3], data: [1, 2, 3, 4, 0, 1, 2, 3, 0, 4, 0, 0]))
        for (kind, momentum) in [("sgd", 0.0), ("sgd", 0.9), ("adam", 0.0), ("adamw", 0.0)] {
            var config = TrainingConfig()
            config.optimizer = kind
            config.momentum = momentum
            config.learningRate = 0.05
            config.weightDecay = 0.01
            config.loss = "cross_entropy"
            config.target = "all"
            config.dropout = 0.25
            config.seed = 5
            config.clipping = "norm"
            config.clipValue = 0.5
            let (k, m) = (3, 4)
            var straight = try Trainer(model: model, config: config)
            for _ in 0..<(k + m) { try straight.trainStep(batch) }
            var first = try Trainer(model: model, config: config)
            for _ in 0..<k { try first.trainStep(batch) }
            let path = folder + "/\(kind)-\(momentum).h5"
            try first.checkpoint.save(to: path)
            var resumed = try Trainer(resuming: try Checkpoint.load(from: path, registry: testRegistry))
            XCTAssertEqual(resumed.optimizer.state, first.optimizer.state, "\(kind) \(momentum): state after loading")
            for _ in 0..<m { try resumed.trainStep(batch) }
            let what = "\(kind) momentum \(momentum)"
            XCTAssertEqual(resumed.step, k + m, what)
            XCTAssertEqual(resumed.tree.flatParameters(of: resumed.model), straight.tree.flatParameters(of: straight.model), what)
            XCTAssertEqual(resumed.optimizer.state, straight.optimizer.state, what)
            XCTAssertNotEqual(straight.tree.flatParameters(of: straight.model), model.parameterTree.flatParameters(of: model),
                              "\(what): training changed nothing")
            // The file keeps the slots' names and paths (docs/FORMAT.md).
            let names = try H5File(opening: path).root.group("training").group("slots").memberNames()
            XCTAssertEqual(names, kind == "sgd" ? (momentum > 0 ? ["momentum"] : []) : ["m", "v"], what)
            if let slot = first.state.slots[names.first ?? ""] {
                XCTAssertEqual(Set(slot.keys), Set(model.parameterTree.entries.map(\.path)), what)
            }
        }
    }

    /// A checkpoint saved before the first step has no optimizer slots; resuming it starts them.
    func testResumeBeforeTheFirstStep() throws {
        let model = try stackedModel()
        var config = TrainingConfig()
        config.loss = "cross_entropy"
        config.target = "all"
        let path = folder + "/zero.h5"
        try Trainer(model: model, config: config).checkpoint.save(to: path)
        var resumed = try Trainer(resuming: try Checkpoint.load(from: path, registry: testRegistry))
        XCTAssertEqual(resumed.optimizer.state, .empty)
        let batch = Batch(tokens: TokenIDs(shape: [2, 2], ids: [1, 2, 3, 4]), targets: Tensor(shape: [2, 2], data: [1, 2, 3, 4]))
        try resumed.trainStep(batch)
        XCTAssertEqual(resumed.optimizer.state.elementCount, model.parameterCount)
    }
}

private extension Model {
    func withoutEmbedding() throws -> Model { try Model(inputSize: inputSize, layers: layers, head: head) }
}

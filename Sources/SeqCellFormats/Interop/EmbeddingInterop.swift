import Foundation
import SeqCellBase
import SeqCellHost
import SeqCellModel

// The embedding stage in PyTorch and Keras files: import of `nn.Embedding` (by name or found in
// a state_dict) and Keras `Embedding` (the first layer of a Sequential), and what export writes.

// MARK: PyTorch

extension PyTorchImporter {
    /// Builds the model from a state_dict; an `nn.Embedding`'s table (`--embedding NAME`, the
    /// name recorded by SeqCell's export, or the one `NAME.weight` that fits, found by shape)
    /// becomes the model's embedding stage, the rest is read as `nn.RNN`/`nn.LSTM`/`nn.GRU`
    /// (and the head).
    public static func build(_ dict: TensorDictionary, options: PyTorchImportOptions = .init(), registry: PluginRegistry) throws -> ImportResult {
        guard let (name, table) = try findEmbedding(dict, options: options) else {
            return try buildRecurrent(dict, options: options, registry: registry)
        }
        func fail(_ message: String) -> SeqCellError { SeqCellError(.invalidArgument, escapingControls("'\(dict.origin)': \(message)")) }
        var rest = dict
        rest.tensors[name] = nil
        rest.metadata["seqcell.embedding"] = nil
        var result = try buildRecurrent(rest, options: options, registry: registry)
        guard table.rank == 2, table.shape[0] >= 1, table.shape[1] >= 1, table.shape[0] <= Int(Int32.max) else {
            throw fail("tensor '\(name)' is \(table.shape); an nn.Embedding's weight is [num_embeddings, embedding_dim]")
        }
        guard table.shape[1] == result.model.inputSize else {
            throw fail("tensor '\(name)' is \(table.shape): it gives \(table.shape[1])-wide vectors but the recurrent module takes \(result.model.inputSize) inputs")
        }
        var padding = options.paddingIndex
        if padding == nil, let p = dict.metadata["seqcell.padding_idx"].flatMap({ Int($0) }) { padding = p }
        if let p = padding, p < 0, p >= -table.shape[0] { padding = p + table.shape[0] }
        if let p = padding, !(0..<table.shape[0]).contains(p) {
            throw fail("padding_idx \(p) is outside the vocabulary 0...\(table.shape[0] - 1) of '\(name)'")
        }
        var notes = result.notes
        if options.embedding == nil, dict.metadata["seqcell.embedding"] == nil {
            notes.append("'\(name)' \(table.shape) imported as the embedding stage (nn.Embedding), found by its shape; name it with --embedding NAME")
        }
        if padding == nil, dict.metadata["seqcell.embedding"] == nil {
            notes.append("a state_dict does not record nn.Embedding's padding_idx: none assumed (pass --padding-idx N to keep row N out of training)")
        }
        let m = result.model
        result.model = try Model(embedding: try Embedding(weight: table, paddingIndex: padding), layers: m.layers, head: m.head)
        result.model.outputSteps = m.outputSteps
        result.model.source = m.source
        result.model.source?.embeddingName = name.hasSuffix(".weight") ? String(name.dropLast(".weight".count)) : name
        result.source = "nn.Embedding(\(table.shape[0]), \(table.shape[1])\(padding.map { ", padding_idx=\($0)" } ?? "")) + " + result.source
        result.notes = notes
        return result
    }

    /// The embedding table's name and tensor, or nil when the state_dict has none.
    static func findEmbedding(_ dict: TensorDictionary, options: PyTorchImportOptions) throws -> (String, Tensor)? {
        func fail(_ message: String) -> SeqCellError { SeqCellError(.invalidArgument, escapingControls("'\(dict.origin)': \(message)")) }
        if let given = options.embedding ?? dict.metadata["seqcell.embedding"] {
            for name in [given, given + ".weight"] {
                if let t = dict.tensors[name] { return (name, t) }
            }
            let candidates = dict.names.filter { $0.hasSuffix(".weight") }.prefix(12).map { displayName($0) }
            throw fail("no tensor '\(given)' or '\(given).weight' for the embedding (tensors ending in .weight: \(candidates.isEmpty ? "none" : candidates.joined(separator: ", ")))")
        }
        // Found by shape: an `X.weight` [V, D] with no `X.bias` (an nn.Embedding has none), not the
        // head's, whose D is what the recurrent module takes.
        let inputs = Set(dict.names.filter { $0.hasSuffix("weight_ih_l0") }.compactMap { dict.tensors[$0]?.shape.last })
        let headWeight = options.head.map { "\($0).weight" }
        let candidates = dict.names.filter { name in
            guard name.hasSuffix(".weight"), name != headWeight, let t = dict.tensors[name], t.rank == 2 else { return false }
            return dict.tensors[String(name.dropLast("weight".count)) + "bias"] == nil && inputs.contains(t.shape[1])
        }
        guard !candidates.isEmpty else { return nil }
        guard candidates.count == 1 else {
            throw fail("several tensors could be an nn.Embedding's table (\(candidates.prefix(12).map { displayName($0) }.joined(separator: ", "))): name it with --embedding NAME")
        }
        return (candidates[0], dict.tensors[candidates[0]]!)
    }
}

// MARK: Keras

/// A Keras `Embedding` layer's config: the first layer of a Sequential model.
struct KerasEmbeddingConfig: Sendable, Equatable {
    var name: String
    var inputDim: Int
    var outputDim: Int

    /// Reads the config; `mask_zero=True` is refused with the reason.
    static func parse(_ cfg: [String: Any], origin: String) throws -> KerasEmbeddingConfig {
        let name = cfg["name"] as? String ?? "embedding"
        func fail(_ m: String) -> SeqCellError { SeqCellError(.unsupported, escapingControls("\(origin): Embedding layer '\(name)': \(m)")) }
        guard let v = cfg["input_dim"] as? Int, v >= 1, v <= Int(Int32.max) else { throw fail("no input_dim in 1...\(Int32.max) in its config") }
        guard let d = cfg["output_dim"] as? Int, d >= 1, d <= KerasConfigReader.maximumUnits else {
            throw fail("no output_dim in 1...\(KerasConfigReader.maximumUnits) in its config")
        }
        guard Boundary.elementCount([v, d]) != nil, v * d <= 1 << 32 else { throw fail("a table of \(v) × \(d) is more than SeqCell imports") }
        if cfg["mask_zero"] as? Bool == true {
            throw fail("mask_zero=True is not supported: Keras then skips every step whose id is 0, wherever it is, "
                       + "which SeqCell does not do; SeqCell takes per-sample lengths instead. Rebuild the model with mask_zero=False "
                       + "(the same weights load) and give 'lengths' (the number of ids before the padding) to seqcell run")
        }
        return KerasEmbeddingConfig(name: name, inputDim: v, outputDim: d)
    }

    /// The table [input_dim, output_dim] from a Keras file: `layers/embedding/vars/0` (Keras 3)
    /// or the legacy layer group's one weight.
    func table(_ layout: KerasWeightsLayout, path: String) throws -> (Tensor, String) {
        let ds: H5Dataset
        switch layout {
        case .keras3(let layers):
            guard layers.isGroup("embedding"), try layers.group("embedding").isGroup("vars"),
                  try layers.group("embedding").group("vars").isDataset("0") else {
                throw SeqCellError(.invalidArgument, "'\(path)': no weights for Embedding layer '\(name)' (expected /layers/embedding/vars/0)")
            }
            ds = try layers.group("embedding").group("vars").dataset("0")
        case .legacy(let root):
            guard root.isGroup(name) else {
                throw SeqCellError(.invalidArgument, "'\(path)': no weights for Embedding layer '\(name)' under \(root.path)")
            }
            let g = try root.group(name)
            let names = try g.hasAttribute("weight_names") ? try g.stringArrayAttribute("weight_names") : []
            guard names.count == 1, g.isDataset(names[0]) else {
                throw SeqCellError(.invalidArgument, "'\(path)': Embedding layer '\(name)' should have one weight (embeddings), the file lists \(names.count)")
            }
            ds = try g.dataset(names[0])
        }
        let location = "'\(path)':\(ds.path)"
        guard ds.elementKind.isFloatingPoint else {
            throw SeqCellError(.unsupported, "\(location) is \(ds.elementKind); Keras weights must be floating-point")
        }
        guard ds.shape == [inputDim, outputDim] else {
            throw SeqCellError(.shape, "\(location): Embedding layer '\(name)' table is \(ds.shape), expected [\(inputDim), \(outputDim)] (input_dim, output_dim)")
        }
        return (try Tensor.checked(shape: ds.shape, data: try ds.readFloats(), what: location), location)
    }

    /// `model` with this embedding stage before its first layer.
    func attach(to model: Model, layout: KerasWeightsLayout, path: String) throws -> Model {
        let (table, location) = try self.table(layout, path: path)
        guard outputDim == model.inputSize else {
            throw SeqCellError(.shape, "\(location): Embedding layer '\(name)' gives \(outputDim)-wide vectors but the first recurrent layer takes \(model.inputSize)")
        }
        return try Model(embedding: try Embedding(weight: table), layers: model.layers, head: model.head)
    }
}

extension KerasExport {
    /// The InputLayer and Embedding items of the model's JSON for a model with an embedding stage.
    static func embeddingJSON(_ e: Embedding) -> [String] {
        [
            "{\"module\": \"keras.layers\", \"class_name\": \"InputLayer\", \"config\": {\"name\": \"input_layer\", \"batch_shape\": [null, null], \"dtype\": \"int32\"}}",
            "{\"module\": \"keras.layers\", \"class_name\": \"Embedding\", \"config\": {\"name\": \"embedding\", \"input_dim\": \(e.vocabularySize), \"output_dim\": \(e.dimension), \"mask_zero\": false}}",
        ]
    }

    /// Writes `layers/embedding/vars/0`, the table as Keras 3 stores it ([input_dim, output_dim]).
    static func writeEmbedding(_ e: Embedding, into layers: H5Group) throws {
        let v = try layers.createGroup("embedding").createGroup("vars")
        try v.setAttribute("name", "embedding")
        try v.writeDataset("0", shape: e.weight.shape, floats: e.weight.data)
    }
}

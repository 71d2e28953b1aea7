import Foundation
import SeqCellBase
import SeqCellHost
import SeqCellModel

/// A model as a Keras 3 `keras.Sequential` of SimpleRNN / LSTM / GRU / Bidirectional layers and
/// a final Dense: the `.weights.h5` that `model.load_weights` reads, and the model's JSON for
/// `keras.models.model_from_json`.
public struct KerasExport: Sendable {
    struct Direction: Sendable {
        var className: String
        var units: Int
        var config: [(String, String)]
        /// kernel [I, G·H], recurrent_kernel [H, G·H], bias
        var vars: [Tensor]
    }

    enum Layer: Sendable {
        case recurrent(name: String, Direction)
        case bidirectional(name: String, merge: MergeMode, forward: Direction, backward: Direction)
        case dense(name: String, units: Int, activation: HeadActivation, kernel: Tensor, bias: Tensor)
    }

    let inputSize: Int
    let layers: [Layer]
    let embedding: Embedding?

    static let classNames = ["rnn": "SimpleRNN", "lstm": "LSTM", "gru": "GRU"]

    /// The Keras form of `model`, or an error saying why Keras cannot express it.
    public init(model: Model) throws {
        func refuse(_ why: String) -> SeqCellError { SeqCellError(.unsupported, "cannot export to Keras: \(why)") }
        func direction(_ dc: DirectionalCell, _ where_: String, backward: Bool, returnSequences: Bool) throws -> Direction {
            let c = dc.cell
            guard let cls = Self.classNames[c.type.id] else {
                throw refuse("\(where_) uses cell '\(c.type.id)'; Keras has SimpleRNN, LSTM and GRU (cells rnn, lstm, gru)")
            }
            if case .int(let p)? = c.options["proj_size"], p > 0 {
                throw refuse("\(where_) is an LSTM with proj_size=\(p); Keras' LSTM has no projection")
            }
            if let option = onnxOnlyOption(c) {
                throw refuse("\(where_) uses the ONNX option \(option), which Keras' \(cls) cannot express")
            }
            let H = c.hiddenSize
            let p = Dictionary(uniqueKeysWithValues: zip(c.params.map(\.name), dc.params))
            let useBias = c.options["bias"] != .choice("false")
            guard let wih = p["weight_ih"], let whh = p["weight_hh"] else {
                throw refuse("\(where_): cell '\(c.type.id)' lacks weight_ih/weight_hh")
            }
            let bih: Tensor, bhh: Tensor
            if useBias {
                guard let i = p["bias_ih"], let h = p["bias_hh"] else { throw refuse("\(where_): cell '\(c.type.id)' lacks bias_ih/bias_hh") }
                (bih, bhh) = (i, h)
            } else {
                (bih, bhh) = (.zeros([wih.shape[0]]), .zeros([wih.shape[0]]))
            }
            var config: [(String, String)] = [("units", String(H)), ("return_sequences", returnSequences ? "true" : "false")]
            if !useBias { config.append(("use_bias", "false")) }
            var kernel = wih, recurrent = whh
            var bias: Tensor
            switch c.type.id {
            case "gru":
                kernel = KerasImporter.reorderRowBlocks(wih, block: H, order: KerasImporter.gruOrder)
                recurrent = KerasImporter.reorderRowBlocks(whh, block: H, order: KerasImporter.gruOrder)
                let ri = KerasImporter.reorderRowBlocks(bih, block: H, order: KerasImporter.gruOrder)
                let rh = KerasImporter.reorderRowBlocks(bhh, block: H, order: KerasImporter.gruOrder)
                if c.options["reset"] == .choice("before") {
                    bias = Tensor(shape: [3 * H], data: zip(ri.data, rh.data).map { $0 + $1 })
                    config.append(("reset_after", "false"))
                } else {
                    bias = Tensor(shape: [2, 3 * H], data: ri.data + rh.data)
                    config.append(("reset_after", "true"))
                }
                config.append(("activation", "\"tanh\""))
                config.append(("recurrent_activation", "\"sigmoid\""))
            case "rnn":
                guard case .choice(let act)? = c.options["activation"] else { throw refuse("\(where_): rnn cell without an activation option") }
                config.append(("activation", jsonString(act)))
                bias = Tensor(shape: bih.shape, data: zip(bih.data, bhh.data).map { $0 + $1 })
            default:
                config.append(("activation", "\"tanh\""))
                config.append(("recurrent_activation", "\"sigmoid\""))
                bias = Tensor(shape: bih.shape, data: zip(bih.data, bhh.data).map { $0 + $1 })
            }
            if backward { config.append(("go_backwards", "true")) }
            return Direction(className: cls, units: H, config: config,
                             vars: [KerasImporter.transpose(kernel), KerasImporter.transpose(recurrent)] + (useBias ? [bias] : []))
        }
        var used: [String: Int] = [:]
        func name(_ cls: String) -> String {
            let base = KerasConfigReader.snakeCase(cls)
            let n = used[base].map { $0 + 1 } ?? 0
            used[base] = n
            return n == 0 ? base : "\(base)_\(n)"
        }
        var layers: [Layer] = []
        for (k, layer) in model.layers.enumerated() {
            // Each layer's return_sequences as the model had it: only the last layer of a model
            // whose output is the last step returns one step.
            let sequences = !(model.outputSteps == .last && k == model.layers.count - 1)
            switch layer.direction {
            case .forward:
                let d = try direction(layer.cells[0], "layer \(k)", backward: false, returnSequences: sequences)
                layers.append(.recurrent(name: name(d.className), d))
            case .reverse:
                throw refuse("layer \(k) is a reverse layer; Keras' go_backwards=True returns outputs in reversed time order, so only Bidirectional layers read backward")
            case .bidirectional:
                let f = try direction(layer.cells[0], "layer \(k) forward", backward: false, returnSequences: sequences)
                let b = try direction(layer.cells[1], "layer \(k) backward", backward: true, returnSequences: sequences)
                layers.append(.bidirectional(name: name("Bidirectional"), merge: layer.mergeMode, forward: f, backward: b))
            }
        }
        if let h = model.head {
            layers.append(.dense(name: name("Dense"), units: h.outputSize, activation: h.activation,
                                 kernel: KerasImporter.transpose(h.weight), bias: h.bias))
        }
        self.inputSize = model.inputSize
        self.layers = layers
        self.embedding = model.embedding
    }

    /// `keras.Sequential([LSTM(4), Dense(2)])`-style summary.
    public var summary: String {
        let parts = layers.map { l -> String in
            switch l {
            case .recurrent(_, let d): "\(d.className)(\(d.units))"
            case .bidirectional(_, let m, let f, let b):
                "Bidirectional(\(f.className)(\(f.units))"
                    + (f.className == b.className && f.units == b.units ? "" : ", backward_layer=\(b.className)(\(b.units))")
                    + ", merge_mode='\(m.rawValue)')"
            case .dense(_, let u, let a, _, _): "Dense(\(u), activation='\(a.rawValue)')"
            }
        }
        let first = embedding.map { ["Embedding(\($0.vocabularySize), \($0.dimension))"] } ?? []
        return "keras.Sequential([" + (first + parts).joined(separator: ", ") + "])"
    }

    /// The model's JSON, as `keras.models.model_from_json` reads it (Keras fills in defaults).
    public var json: String {
        func direction(_ name: String, _ d: Direction) -> String {
            let cfg = ([("name", jsonString(name))] + d.config).map { "\(jsonString($0.0)): \($0.1)" }.joined(separator: ", ")
            return "{\"module\": \"keras.layers\", \"class_name\": \(jsonString(d.className)), \"config\": {\(cfg)}}"
        }
        var items = embedding.map(Self.embeddingJSON)
            ?? ["{\"module\": \"keras.layers\", \"class_name\": \"InputLayer\", \"config\": {\"name\": \"input_layer\", \"batch_shape\": [null, null, \(inputSize)]}}"]
        for l in layers {
            switch l {
            case .recurrent(let name, let d): items.append(direction(name, d))
            case .bidirectional(let name, let m, let f, let b):
                items.append("{\"module\": \"keras.layers\", \"class_name\": \"Bidirectional\", \"config\": {\"name\": \(jsonString(name)), \"merge_mode\": \(jsonString(m.rawValue)), "
                             + "\"layer\": \(direction("forward_" + KerasConfigReader.snakeCase(f.className), f)), "
                             + "\"backward_layer\": \(direction("backward_" + KerasConfigReader.snakeCase(b.className), b))}}")
            case .dense(let name, let u, let a, _, _):
                items.append("{\"module\": \"keras.layers\", \"class_name\": \"Dense\", \"config\": {\"name\": \(jsonString(name)), \"units\": \(u), \"activation\": \(jsonString(a.rawValue))}}")
            }
        }
        return "{\"module\": \"keras\", \"class_name\": \"Sequential\", \"config\": {\"name\": \"sequential\", \"layers\": [\n  "
            + items.joined(separator: ",\n  ") + "\n]}}\n"
    }

    public func pythonSnippet(weightsFile: String, jsonFile: String) -> String {
        """
        import keras
        model = keras.models.model_from_json(open(\(jsonString(jsonFile))).read())
        model.load_weights(\(jsonString(weightsFile)))
        """
    }

    /// Writes the `.weights.h5` (Keras 3's layout: layers/<name>/cell/vars/0,1,2, Bidirectional
    /// under forward_layer/ and backward_layer/, Dense under vars/) and the JSON beside it.
    public func write(to path: String, jsonPath: String) throws {
        try writeHDF5Atomically(to: path) { file in
            let root = try file.root
            try root.createGroup("vars").setAttribute("name", "sequential")
            let lg = try root.createGroup("layers")
            if let embedding { try Self.writeEmbedding(embedding, into: lg) }
            func writeVars(_ g: H5Group, name: String, _ tensors: [Tensor]) throws {
                let v = try g.createGroup("vars")
                try v.setAttribute("name", name)
                for (i, t) in tensors.enumerated() { try v.writeDataset(String(i), shape: t.shape, floats: t.data) }
            }
            func writeDirection(_ g: H5Group, name: String, _ d: Direction) throws {
                try writeVars(g, name: name, [])
                try writeVars(try g.createGroup("cell"), name: KerasConfigReader.snakeCase(d.className) + "_cell", d.vars)
            }
            for l in layers {
                switch l {
                case .recurrent(let name, let d):
                    try writeDirection(try lg.createGroup(name), name: name, d)
                case .bidirectional(let name, _, let f, let b):
                    let g = try lg.createGroup(name)
                    try writeVars(g, name: name, [])
                    try writeDirection(try g.createGroup("forward_layer"), name: "forward_" + KerasConfigReader.snakeCase(f.className), f)
                    try writeDirection(try g.createGroup("backward_layer"), name: "backward_" + KerasConfigReader.snakeCase(b.className), b)
                case .dense(let name, _, _, let k, let b):
                    try writeVars(try lg.createGroup(name), name: name, [k, b])
                }
            }
        }
        try writeFileAtomically(Data(json.utf8), to: jsonPath)
    }
}

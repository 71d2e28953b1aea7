import Foundation
import SeqCellBase
import SeqCellHost
import SeqCellModel

/// One recurrent layer of a Keras model, as its config describes it.
struct KerasRecurrentConfig: Sendable, Equatable {
    /// "SimpleRNN", "LSTM" or "GRU".
    var className: String
    /// The layer's name in the config (for messages).
    var name: String
    var units: Int
    /// SeqCell cell id: rnn, lstm, gru.
    var cell: String
    /// SimpleRNN: tanh or relu.
    var activation: String
    var useBias: Bool
    /// GRU only; nil when the config does not say (then the bias shape decides).
    var resetAfter: Bool?
    var returnSequences: Bool
    var goBackwards: Bool
    /// unroll=True changes how Keras computes, not what: imported as usual, with a note.
    var unroll: Bool = false
}

/// A layer of a Keras Sequential model that SeqCell can represent.
enum KerasLayerPlan: Sendable, Equatable {
    case recurrent(KerasRecurrentConfig)
    case bidirectional(name: String, forward: KerasRecurrentConfig, backward: KerasRecurrentConfig, merge: MergeMode)
    case dense(name: String, units: Int, activation: HeadActivation, useBias: Bool)

    var name: String {
        switch self {
        case .recurrent(let r): r.name
        case .bidirectional(let n, _, _, _): n
        case .dense(let n, _, _, _): n
        }
    }

    /// false for a recurrent or Bidirectional layer with return_sequences=False.
    var returnsSequences: Bool {
        switch self {
        case .recurrent(let r): r.returnSequences
        case .bidirectional(_, let f, _, _): f.returnSequences
        case .dense: true
        }
    }

    /// Keras' class name, whose snake case names the layer's group in a `.weights.h5`.
    var className: String {
        switch self {
        case .recurrent(let r): r.className
        case .bidirectional: "Bidirectional"
        case .dense: "Dense"
        }
    }
}

/// A Keras model config reduced to what SeqCell needs: the layers in order, the input width
/// when the config states it, and notes on what was ignored.
struct KerasModelPlan: Sendable {
    var layers: [KerasLayerPlan]
    var inputSize: Int?
    /// A functional model's outputs, in order: (layer name, output index of that layer).
    /// Empty for Sequential models (one output, the last layer's).
    var outputs: [(layer: String, tensor: Int)] = []
    var notes: [String]
    /// Names of layers skipped, with why (Dropout is the identity at inference).
    var skipped: [String]
    /// An Embedding first layer (token inputs); the recurrent layers follow it.
    var embedding: KerasEmbeddingConfig? = nil
}

/// Reads Keras model configs: `model.to_json()`, the `config.json` of a `.keras` archive, and
/// the `model_config` attribute of a legacy `.h5` — Keras 3 and Keras 2 (tf.keras) alike.
enum KerasConfigReader {
    static let recurrentCells = ["SimpleRNN": "rnn", "LSTM": "lstm", "GRU": "gru"]

    /// Limits on a config document: a Keras Sequential config of a recurrent model is a few
    /// KB, nested about ten levels.
    static let jsonLimits = JSONLimits(maxDepth: 100, maxContainerCount: 100_000, maxValues: 2_000_000, maxStringBytes: 1 << 20)
    /// Units (and Dense outputs) above this are refused before anything is sized from them.
    static let maximumUnits = 1 << 20

    static func plan(json text: String, origin: String) throws -> KerasModelPlan {
        guard text.utf8.count <= KerasImporter.maximumConfigSize else {
            throw SeqCellError(.invalidArgument, "\(origin): the Keras model config is larger than \(KerasImporter.maximumConfigSize) bytes")
        }
        let value: JSONValue
        do {
            value = try BoundedJSONParser(limits: jsonLimits).parse(text.utf8)
        } catch let e as JSONParseError {
            throw SeqCellError(.invalidArgument, "\(origin): the Keras model config is not valid JSON: \(e)")
        }
        guard let top = value.foundationObject as? [String: Any] else {
            throw SeqCellError(.invalidArgument, "\(origin): the Keras model config is not a JSON object")
        }
        return try plan(top, origin: origin)
    }

    static func plan(_ top: [String: Any], origin: String) throws -> KerasModelPlan {
        func fail(_ m: String) -> SeqCellError { SeqCellError(.unsupported, escapingControls("\(origin): \(m)")) }
        let className = top["class_name"] as? String ?? "?"
        var plan = KerasModelPlan(layers: [], inputSize: nil, notes: [], skipped: [])
        let layerList: [Any]
        switch className {
        case "Sequential":
            // Keras 2.2 stored the layer list as the config itself.
            if let cfg = top["config"] as? [String: Any], let l = cfg["layers"] as? [Any] {
                layerList = l
            } else if let l = top["config"] as? [Any] {
                layerList = l
            } else {
                throw fail("the Sequential config has no 'layers' list")
            }
        case "Functional", "Model":
            (layerList, plan.outputs) = try functionalChain(top, origin: origin)
        default:
            throw fail("the top-level object is '\(className)', not a Keras Sequential or functional model")
        }
        if let build = top["build_config"] as? [String: Any], let shape = build["input_shape"] as? [Any], let last = shape.last as? Int, last >= 1 {
            plan.inputSize = last
        }
        for (index, item) in layerList.enumerated() {
            guard let layer = item as? [String: Any], let cls = layer["class_name"] as? String else {
                throw fail("layer \(index) of the config is not {class_name, config}")
            }
            let cfg = layer["config"] as? [String: Any] ?? [:]
            let name = cfg["name"] as? String ?? "layer \(index)"
            if let shape = (cfg["batch_shape"] ?? cfg["batch_input_shape"]) as? [Any], let last = shape.last as? Int, last >= 1 {
                plan.inputSize = plan.inputSize ?? last
            }
            switch cls {
            case "InputLayer":
                continue
            case "Embedding":
                guard plan.layers.isEmpty, plan.embedding == nil else {
                    throw fail("Embedding layer '\(name)' is not the first layer: SeqCell's embedding stage comes before the first recurrent layer")
                }
                plan.embedding = try KerasEmbeddingConfig.parse(cfg, origin: origin)
            case "Dropout", "SpatialDropout1D", "GaussianDropout", "AlphaDropout", "GaussianNoise":
                plan.skipped.append("\(cls) layer '\(name)' (the identity at inference)")
            case "SimpleRNN", "LSTM", "GRU":
                plan.layers.append(.recurrent(try recurrent(cls, cfg, origin: origin, insideBidirectional: false)))
            case "Bidirectional":
                guard let inner = cfg["layer"] as? [String: Any], let innerClass = inner["class_name"] as? String,
                      let innerCfg = inner["config"] as? [String: Any] else {
                    throw fail("Bidirectional layer '\(name)' has no wrapped 'layer' in its config")
                }
                guard recurrentCells[innerClass] != nil else {
                    throw fail("Bidirectional layer '\(name)' wraps a \(innerClass); SeqCell supports SimpleRNN, LSTM and GRU")
                }
                let forward = try recurrent(innerClass, innerCfg, origin: origin, insideBidirectional: true)
                var backward = forward
                if let b = cfg["backward_layer"] as? [String: Any] {
                    guard let bClass = b["class_name"] as? String, recurrentCells[bClass] != nil, let bCfg = b["config"] as? [String: Any] else {
                        throw fail("Bidirectional layer '\(name)': backward_layer must be a SimpleRNN, LSTM or GRU")
                    }
                    backward = try recurrent(bClass, bCfg, origin: origin, insideBidirectional: true)
                }
                let mergeName = cfg["merge_mode"] as? String
                guard let mergeName, let merge = MergeMode(rawValue: mergeName) else {
                    throw fail("Bidirectional layer '\(name)': merge_mode \(mergeName.map { "'\($0)'" } ?? "None") is not supported (SeqCell merges with concat, sum, ave or mul)")
                }
                guard forward.returnSequences == backward.returnSequences else {
                    throw fail("Bidirectional layer '\(name)': the forward layer has return_sequences=\(forward.returnSequences ? "True" : "False") but the backward layer \(backward.returnSequences ? "True" : "False")")
                }
                plan.layers.append(.bidirectional(name: name, forward: forward, backward: backward, merge: merge))
            case "Dense":
                guard let units = cfg["units"] as? Int, units >= 1 else { throw fail("Dense layer \(displayName(name)) has no positive 'units'") }
                guard units <= maximumUnits else { throw fail("Dense layer \(displayName(name)) has \(units) units (at most \(maximumUnits))") }
                let actName = try activationName(cfg["activation"], layer: "Dense layer '\(name)'", origin: origin)
                guard let act = HeadActivation(rawValue: actName) else {
                    throw fail("Dense layer '\(name)': activation '\(actName)' is not supported (SeqCell's head has linear, tanh, sigmoid, relu, softmax)")
                }
                plan.layers.append(.dense(name: name, units: units, activation: act, useBias: cfg["use_bias"] as? Bool ?? true))
            case "Masking":
                throw fail("Masking layer '\(name)' is not supported: SeqCell takes per-sample lengths instead (give 'lengths' to seqcell run); remove the layer")
            default:
                throw fail("\(cls) layer '\(name)' is not supported: SeqCell imports SimpleRNN, LSTM, GRU, Bidirectional and a final Dense")
            }
        }
        if let e = plan.embedding { plan.inputSize = e.outputDim }  // the input shape counts ids, not features
        try validateOrder(plan, origin: origin)
        return plan
    }

    /// A functional model's layers in chain order, and its outputs: refused unless the graph is
    /// a chain — one input, each layer called once on the whole output (index 0) of the one
    /// before it — whose outputs are the last layer's output and states of recurrent layers
    /// with return_state=True. Reads Keras 3 (`inbound_nodes` of `{args, kwargs}` with
    /// `keras_history`) and Keras 2 (`[[name, node, tensor, kwargs], …]`) configs.
    static func functionalChain(_ top: [String: Any], origin: String) throws -> (layers: [Any], outputs: [(layer: String, tensor: Int)]) {
        func fail(_ m: String) -> SeqCellError { SeqCellError(.unsupported, escapingControls("\(origin): functional model: \(m)")) }
        guard let cfg = top["config"] as? [String: Any], let list = cfg["layers"] as? [Any] else {
            throw fail("the config has no 'layers' list")
        }
        /// [name, node, tensor] references: one, or a list of them (Keras 2 nests a level more).
        func references(_ v: Any?) -> [(String, Int, Int)] {
            if let a = v as? [Any], a.count >= 3, let n = a[0] as? String, let i = a[1] as? Int, let t = a[2] as? Int { return [(n, i, t)] }
            if let a = v as? [Any] { return a.flatMap { references($0) } }
            return []
        }
        /// Every keras_history inside a Keras 3 node's args or kwargs.
        func histories(_ v: Any) -> [(String, Int, Int)] {
            if let d = v as? [String: Any] {
                if (d["class_name"] as? String) == "__keras_tensor__", let c = d["config"] as? [String: Any] {
                    return references(c["keras_history"])
                }
                return d.values.flatMap { histories($0) }
            }
            if let a = v as? [Any] { return a.flatMap { histories($0) } }
            return []
        }
        var names: [String] = []
        var position: [String: Int] = [:]
        var inputOf: [String: (String, Int, Int)] = [:]
        var inputLayers: [String] = []
        for (index, item) in list.enumerated() {
            guard let layer = item as? [String: Any], let cls = layer["class_name"] as? String else {
                throw fail("layer \(index) of the config is not {class_name, config}")
            }
            let name = layer["name"] as? String ?? (layer["config"] as? [String: Any])?["name"] as? String ?? "layer \(index)"
            guard position[name] == nil else { throw fail("two layers are named '\(name)'") }
            position[name] = names.count
            names.append(name)
            let nodes = layer["inbound_nodes"] as? [Any] ?? []
            if cls == "InputLayer" {
                inputLayers.append(name)
                continue
            }
            guard nodes.count == 1 else {
                throw fail(nodes.isEmpty ? "\(cls) layer '\(name)' is not connected to anything"
                                         : "\(cls) layer '\(name)' is called \(nodes.count) times (a shared layer); SeqCell imports chains of layers each used once")
            }
            var inputs: [(String, Int, Int)]
            if let node = nodes[0] as? [String: Any] {
                inputs = histories(node["args"] ?? [])
                let fromKwargs = histories(node["kwargs"] ?? [:])
                guard fromKwargs.isEmpty else {
                    throw fail("\(cls) layer '\(name)' takes tensors as keyword arguments (e.g. initial_state from '\(fromKwargs[0].0)'); SeqCell imports chains without them (give initial states to seqcell run)")
                }
            } else {
                inputs = references(nodes[0])
                if let entries = nodes[0] as? [Any], entries.contains(where: { e in
                    ((e as? [Any])?.last as? [String: Any]).map { !references(Array($0.values)).isEmpty } ?? false
                }) {
                    throw fail("\(cls) layer '\(name)' takes tensors as keyword arguments (e.g. initial_state); SeqCell imports chains without them (give initial states to seqcell run)")
                }
            }
            guard inputs.count == 1 else {
                throw fail("\(cls) layer '\(name)' takes \(inputs.count) inputs (\(inputs.map { "'\($0.0)'" }.joined(separator: ", "))); SeqCell imports chains where each layer reads the one before it")
            }
            inputOf[name] = inputs[0]
        }
        guard inputLayers.count == 1 else {
            throw fail("the model has \(inputLayers.count) inputs (\(inputLayers.joined(separator: ", "))); SeqCell models have one")
        }
        // The chain, in the config's (topological) order: each layer reads output 0 of the previous one.
        var previous = inputLayers[0]
        for name in names where name != inputLayers[0] {
            let (from, _, tensor) = inputOf[name]!
            guard from == previous else {
                throw fail("layer '\(name)' reads '\(from)', not '\(previous)' (the layer before it): the graph branches or merges, and SeqCell imports chains of layers")
            }
            guard tensor == 0 else {
                throw fail("layer '\(name)' reads output \(tensor) of '\(from)' (a state from return_state=True); SeqCell chains pass the sequence output (output 0) on")
            }
            previous = name
        }
        let last = previous
        let outputs = references(cfg["output_layers"])
        guard !outputs.isEmpty else { throw fail("the config lists no output_layers") }
        for (layer, _, tensor) in outputs {
            guard let at = position[layer] else { throw fail("output layer '\(layer)' is not in the model") }
            guard tensor >= 0 else { throw fail("output \(tensor) of layer '\(layer)' does not exist") }
            if tensor == 0 {
                guard layer == last else {
                    throw fail("layer '\(layer)' is an output but so is the chain's last layer '\(last)'; SeqCell models output the last layer (and recurrent states)")
                }
            } else {
                let item = list[at] as? [String: Any] ?? [:]
                let cls = item["class_name"] as? String ?? "?"
                let c = item["config"] as? [String: Any] ?? [:]
                let inner = cls == "Bidirectional" ? (c["layer"] as? [String: Any])?["config"] as? [String: Any] ?? [:] : c
                guard recurrentCells[cls] != nil || cls == "Bidirectional", inner["return_state"] as? Bool == true || c["return_state"] as? Bool == true else {
                    throw fail("output \(tensor) of \(cls) layer '\(layer)' is an output; SeqCell maps only the states of recurrent layers with return_state=True")
                }
            }
        }
        return (list, outputs.map { ($0.0, $0.2) })
    }

    /// A Dense head only at the end; return_sequences=False only on the last recurrent layer.
    static func validateOrder(_ plan: KerasModelPlan, origin: String) throws {
        func fail(_ m: String) -> SeqCellError { SeqCellError(.unsupported, escapingControls("\(origin): \(m)")) }
        guard plan.layers.contains(where: { if case .dense = $0 { false } else { true } }) else {
            throw fail("the model has no SimpleRNN, LSTM, GRU or Bidirectional layer")
        }
        for (i, layer) in plan.layers.enumerated() {
            if case .dense(let name, _, _, _) = layer, i != plan.layers.count - 1 {
                throw fail("Dense layer '\(name)' is followed by '\(plan.layers[i + 1].name)': SeqCell models end with at most one Dense layer (the linear head)")
            }
            if !layer.returnsSequences {
                let later = plan.layers[(i + 1)...].contains { if case .dense = $0 { false } else { true } }
                if later {
                    throw fail("\(layer.className) layer '\(layer.name)' has return_sequences=False but another recurrent layer follows it")
                }
            }
        }
    }

    /// The activation's name: a string, or Keras 3's serialized {class_name: "function", config: "tanh"}.
    static func activationName(_ value: Any?, layer: String, origin: String) throws -> String {
        if value == nil || value is NSNull { return "linear" }
        if let s = value as? String { return s }
        if let d = value as? [String: Any], let cfg = d["config"] as? String,
           (d["class_name"] as? String) == "function", (d["module"] as? String ?? "keras.activations").hasPrefix("keras") {
            return cfg
        }
        throw SeqCellError(.unsupported, "\(origin): \(layer) has a custom activation (\(displayName(String(describing: value), limit: 120))); SeqCell supports Keras' built-in ones only")
    }

    static func recurrent(_ cls: String, _ cfg: [String: Any], origin: String, insideBidirectional: Bool) throws -> KerasRecurrentConfig {
        let name = cfg["name"] as? String ?? cls
        let what = "\(cls) layer '\(name)'"
        func fail(_ m: String) -> SeqCellError { SeqCellError(.unsupported, escapingControls("\(origin): \(what): \(m)")) }
        guard let units = cfg["units"] as? Int, units >= 1 else { throw fail("no positive 'units' in its config") }
        guard units <= maximumUnits else { throw fail("units=\(units) is more than SeqCell imports (\(maximumUnits))") }
        if cfg["stateful"] as? Bool == true {
            throw fail("stateful=True is not supported (SeqCell does not carry states between calls; pass initial states to seqcell run instead)")
        }
        if cfg["time_major"] as? Bool == true {
            throw fail("time_major=True is not supported; save the model with time_major=False")
        }
        let goBackwards = cfg["go_backwards"] as? Bool ?? false
        if goBackwards, !insideBidirectional {
            throw fail("go_backwards=True outside Bidirectional is not supported: Keras then returns the outputs in reversed time order, which no SeqCell layer does (wrap the layer in Bidirectional, or use a SeqCell reverse layer and flip the outputs yourself)")
        }
        guard let cell = recurrentCells[cls] else { throw fail("not a recurrent layer SeqCell imports") }
        let act = try activationName(cfg["activation"] ?? "tanh", layer: what, origin: origin)
        switch cls {
        case "SimpleRNN":
            guard act == "tanh" || act == "relu" else {
                throw fail("activation '\(act)' is not supported (SeqCell's rnn cell has tanh and relu)")
            }
        default:
            guard act == "tanh" else { throw fail("activation '\(act)' is not supported (SeqCell's \(cell) cell uses tanh)") }
            let rec = try activationName(cfg["recurrent_activation"] ?? "sigmoid", layer: what, origin: origin)
            guard rec == "sigmoid" else {
                throw fail("recurrent_activation '\(rec)' is not supported: SeqCell's \(cell) cell uses the logistic sigmoid"
                           + (rec == "hard_sigmoid" ? " (hard_sigmoid is a piecewise-linear approximation and gives different outputs; retrain with recurrent_activation='sigmoid')" : ""))
            }
        }
        return KerasRecurrentConfig(
            className: cls, name: name, units: units, cell: cell, activation: act, useBias: cfg["use_bias"] as? Bool ?? true,
            resetAfter: cls == "GRU" ? cfg["reset_after"] as? Bool : nil,
            returnSequences: cfg["return_sequences"] as? Bool ?? false, goBackwards: goBackwards,
            unroll: cfg["unroll"] as? Bool ?? false)
    }

    /// Keras' snake case of a class name, as `.weights.h5` names layer groups: "SimpleRNN" → "simple_rnn".
    static func snakeCase(_ name: String) -> String {
        // keras.src.utils.naming.to_snake_case: two regex passes, then lowercase.
        let chars = Array(name)
        var out = ""
        for (i, c) in chars.enumerated() {
            if c.isUppercase, i > 0 {
                let prev = chars[i - 1]
                let nextLower = i + 1 < chars.count && chars[i + 1].isLowercase
                if prev.isLowercase || prev.isNumber || (prev.isUppercase && nextLower) { out += "_" }
            }
            out.append(c)
        }
        return out.lowercased()
    }
}

import Foundation

/// A model as PyTorch sees it: the state_dict tensors under their PyTorch names, the module's
/// constructor arguments, and the metadata SeqCell writes into the safetensors header so that
/// importing the file back needs no flags.
public struct PyTorchExport: Sendable {
    /// "RNN", "LSTM" or "GRU".
    public var module: String
    /// Constructor keyword arguments, Python literals as text (e.g. "bidirectional": "True").
    public var arguments: [(name: String, value: String)]
    /// state_dict entries, in PyTorch's order.
    public var tensors: [(name: String, tensor: Tensor)]
    /// Prefix of the recurrent module's names: "" without a head, "rnn." with one.
    public var prefix: String
    public var head: LinearHead?
    public var metadata: [String: String]
    /// The embedding stage, exported as `embed.weight` (an `nn.Embedding`).
    public var embedding: Embedding? = nil

    /// `nn.LSTM(input_size=3, hidden_size=4, ...)`.
    public var constructor: String {
        "nn.\(module)(" + arguments.map { "\($0.name)=\($0.value)" }.joined(separator: ", ") + ")"
    }

    /// Python that rebuilds the module and loads the file.
    public func pythonSnippet(file: String) -> String {
        var lines = ["import torch, torch.nn as nn", "from safetensors.torch import load_file", ""]
        if head != nil || embedding != nil {
            let act: String = switch head?.activation ?? .linear {
            case .linear: "y"
            case .tanh: "torch.tanh(y)"
            case .sigmoid: "torch.sigmoid(y)"
            case .relu: "torch.relu(y)"
            case .softmax: "torch.softmax(y, dim=-1)"
            }
            lines += [
                "class Model(nn.Module):",
                "    def __init__(self):",
                "        super().__init__()",
            ] + (embedding.map { e in
                ["        self.embed = nn.Embedding(\(e.vocabularySize), \(e.dimension)\(e.paddingIndex.map { ", padding_idx=\($0)" } ?? ""))"]
            } ?? []) + ["        self.rnn = \(constructor)"] + (head.map { h in
                ["        self.head = nn.Linear(\(h.inputSize), \(h.outputSize))"]
            } ?? []) + [
                "    def forward(self, x, state=None):",
            ] + (embedding == nil ? [] : ["        x = self.embed(x)  # token ids [T, B] -> [T, B, \(embedding!.dimension)]"]) + [
                "        out, state = self.rnn(x, state)",
            ] + (head == nil ? ["        return out, state"] : ["        y = self.head(out)", "        return \(act), state"]) + [
                "",
                "model = Model()",
            ]
        } else {
            lines.append("model = \(constructor)")
        }
        lines.append("model.load_state_dict(load_file(\(jsonString(file))))")
        return lines.joined(separator: "\n")
    }

    /// The constructor arguments and names as JSON (written beside the safetensors file).
    public var json: String {
        var fields = ["\"module\": \(jsonString("torch.nn." + module))"]
        let args = arguments.map { arg -> String in
            let v: String = switch arg.value {
            case "True": "true"
            case "False": "false"
            default: Int(arg.value) != nil ? arg.value : jsonString(arg.value.trimmingCharacters(in: CharacterSet(charactersIn: "'")))
            }
            return "\(jsonString(arg.name)): \(v)"
        }
        fields.append("\"arguments\": {\(args.joined(separator: ", "))}")
        fields.append("\"prefix\": \(jsonString(prefix))")
        if let head {
            fields.append("\"head\": {\"module\": \"torch.nn.Linear\", \"prefix\": \"head.\", \"in_features\": \(head.inputSize), "
                          + "\"out_features\": \(head.outputSize), \"activation\": \(jsonString(head.activation.rawValue))}")
        } else {
            fields.append("\"head\": null")
        }
        if let e = embedding {
            fields.append("\"embedding\": {\"module\": \"torch.nn.Embedding\", \"prefix\": \"embed.\", \"num_embeddings\": \(e.vocabularySize), "
                          + "\"embedding_dim\": \(e.dimension), \"padding_idx\": \(e.paddingIndex.map(String.init) ?? "null")}")
        }
        fields.append("\"state_dict\": [\(tensors.map { "{\"name\": \(jsonString($0.name)), \"shape\": [\($0.tensor.shape.map(String.init).joined(separator: ", "))]}" }.joined(separator: ", "))]")
        return "{\n  " + fields.joined(separator: ",\n  ") + "\n}\n"
    }
}

extension PyTorchExport {
    static let modules: [String: String] = ["rnn": "RNN", "lstm": "LSTM", "gru": "GRU"]

    /// The PyTorch form of `model`, or an error saying why PyTorch's nn.RNN/nn.LSTM/nn.GRU
    /// cannot express it: one cell kind with the same hidden size and options in every layer
    /// and direction, all layers forward or all bidirectional with concat.
    public init(model: Model) throws {
        func refuse(_ why: String) -> SeqCellError {
            SeqCellError(.unsupported, "cannot export to PyTorch: \(why)")
        }
        let first = model.layers[0].cells[0].cell
        guard let module = Self.modules[first.type.id] else {
            throw refuse("layer 0 uses cell '\(first.type.id)'; PyTorch has nn.RNN, nn.LSTM and nn.GRU (cells rnn, lstm, gru)")
        }
        let bidirectional = model.layers[0].direction == .bidirectional
        for (k, layer) in model.layers.enumerated() {
            switch layer.direction {
            case .reverse:
                throw refuse("layer \(k) is a reverse layer; PyTorch layers are forward or bidirectional")
            case .bidirectional where layer.mergeMode != .concat:
                throw refuse("layer \(k) merges its directions with '\(layer.mergeMode.rawValue)'; PyTorch's bidirectional layers concatenate")
            default: break
            }
            guard (layer.direction == .bidirectional) == bidirectional else {
                throw refuse("layer 0 is \(model.layers[0].direction.rawValue) but layer \(k) is \(layer.direction.rawValue); a PyTorch module is bidirectional in every layer or in none")
            }
            for (d, dc) in layer.cells.enumerated() {
                let c = dc.cell
                let which = "layer \(k) \(layer.directionName(d))"
                guard c.type.id == first.type.id else {
                    throw refuse("\(which) is '\(c.type.id)' but layer 0 is '\(first.type.id)'; a PyTorch module has one cell kind")
                }
                guard c.hiddenSize == first.hiddenSize else {
                    throw refuse("\(which) has hidden size \(c.hiddenSize) but layer 0 has \(first.hiddenSize); PyTorch uses one hidden_size")
                }
                guard c.options == first.options else {
                    throw refuse("\(which) has options \(c.options) but layer 0 has \(first.options); PyTorch uses one setting for all layers")
                }
            }
        }
        if first.type.id == "gru", first.options["reset"] == .choice("before") {
            throw refuse("the GRU cells apply the reset gate before the recurrent product (reset=before); PyTorch's nn.GRU applies it after")
        }
        var args: [(String, String)] = [
            ("input_size", String(model.inputSize)), ("hidden_size", String(first.hiddenSize)),
            ("num_layers", String(model.layers.count)),
        ]
        var metadata: [String: String] = ["format": "pt", "seqcell.module": "torch.nn.\(module)"]
        if first.type.id == "rnn", case .choice(let act)? = first.options["activation"] {
            args.append(("nonlinearity", "'\(act)'"))
            metadata["nonlinearity"] = act
        }
        args.append(("bias", "True"))
        args.append(("batch_first", "False"))
        args.append(("bidirectional", bidirectional ? "True" : "False"))
        if first.type.id == "lstm", case .int(let p)? = first.options["proj_size"], p > 0 {
            args.append(("proj_size", String(p)))
        }
        let prefix = model.head == nil && model.embedding == nil ? "" : "rnn."
        var tensors: [(String, Tensor)] = []
        if let e = model.embedding {
            tensors.append(("embed.weight", e.weight))
            metadata["seqcell.prefix"] = prefix
            metadata["seqcell.embedding"] = "embed"
            if let p = e.paddingIndex { metadata["seqcell.padding_idx"] = String(p) }
        }
        for (k, layer) in model.layers.enumerated() {
            for (d, dc) in layer.cells.enumerated() {
                for (info, t) in zip(dc.cell.params, dc.params) {
                    tensors.append(("\(prefix)\(info.name)_l\(k)\(d == 1 ? "_reverse" : "")", t))
                }
            }
        }
        if let head = model.head {
            tensors.append(("head.weight", head.weight))
            tensors.append(("head.bias", head.bias))
            metadata["seqcell.prefix"] = prefix
            metadata["seqcell.head"] = "head"
            metadata["seqcell.head_activation"] = head.activation.rawValue
        }
        self.module = module
        self.arguments = args
        self.tensors = tensors
        self.prefix = prefix
        self.head = model.head
        self.metadata = metadata
        self.embedding = model.embedding
    }

    /// Writes the safetensors file and, beside it, the JSON description (`jsonPath`).
    public func write(to path: String, jsonPath: String) throws {
        try SafeTensorsFile.write(tensors, metadata: metadata, to: path)
        try writeFileAtomically(Data(json.utf8), to: jsonPath)
    }
}

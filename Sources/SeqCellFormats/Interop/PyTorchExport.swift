import Foundation
import SeqCellBase
import SeqCellHost
import SeqCellModel

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
    /// Prefix of the recurrent module's names: the imported module's own (e.g. "encoder."),
    /// else "" without a head and "rnn." with one.
    public var prefix: String
    public var head: LinearHead?
    /// The head's module name: the imported module's own (e.g. "fc"), else "head".
    public var headName: String
    /// The embedding stage, exported as `<embeddingName>.weight` (an `nn.Embedding`).
    public var embedding: Embedding? = nil
    /// The embedding's module name: the imported module's own, else "embed".
    public var embeddingName: String = "embed"
    public var metadata: [String: String]

    /// `nn.LSTM(input_size=3, hidden_size=4, ...)`.
    public var constructor: String {
        "nn.\(module)(" + arguments.map { "\($0.name)=\($0.value)" }.joined(separator: ", ") + ")"
    }

    /// Python that rebuilds the module and loads the file.
    public func pythonSnippet(file: String) -> String {
        var lines = ["import torch, torch.nn as nn", "from safetensors.torch import load_file", ""]
        let attribute = prefix.hasSuffix(".") ? String(prefix.dropLast()) : prefix
        let names = [attribute] + (head == nil ? [] : [headName]) + (embedding == nil ? [] : [embeddingName])
        if head == nil, embedding == nil, prefix.isEmpty {
            lines.append("model = \(constructor)")
        } else if !names.allSatisfy(Self.isIdentifier) || Set(names).count != names.count {
            // Nested module paths (model.encoder.): only the user's own class has them.
            lines += ["# the state_dict keeps your module's names (" + names.map { "\($0).…" }.joined(separator: ", ") + "):",
                      "# load it into your own module: model.load_state_dict(load_file(\(jsonString(file))), strict=True)"]
            return lines.joined(separator: "\n")
        } else {
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
                ["        self.\(embeddingName) = nn.Embedding(\(e.vocabularySize), \(e.dimension)\(e.paddingIndex.map { ", padding_idx=\($0)" } ?? ""))"]
            } ?? []) + ["        self.\(attribute) = \(constructor)"] + (head.map { h in
                ["        self.\(headName) = nn.Linear(\(h.inputSize), \(h.outputSize))"]
            } ?? []) + [
                "    def forward(self, x, state=None):",
            ] + (embedding == nil ? [] : ["        x = self.\(embeddingName)(x)  # token ids [T, B] -> [T, B, \(embedding!.dimension)]"]) + [
                "        out, state = self.\(attribute)(x, state)",
            ] + (head == nil ? ["        return out, state"] : ["        y = self.\(headName)(out)", "        return \(act), state"]) + [
                "",
                "model = Model()",
            ]
        }
        lines.append("model.load_state_dict(load_file(\(jsonString(file))), strict=True)")
        return lines.joined(separator: "\n")
    }

    /// A Python identifier (ASCII): a module attribute name usable in the printed class.
    static func isIdentifier(_ s: String) -> Bool {
        guard let first = s.unicodeScalars.first, first == "_" || (first.isASCII && first.properties.isAlphabetic) else { return false }
        return s.unicodeScalars.allSatisfy { $0 == "_" || ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0))) }
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
            fields.append("\"head\": {\"module\": \"torch.nn.Linear\", \"prefix\": \(jsonString(headName + ".")), \"in_features\": \(head.inputSize), "
                          + "\"out_features\": \(head.outputSize), \"activation\": \(jsonString(head.activation.rawValue))}")
        } else {
            fields.append("\"head\": null")
        }
        if let e = embedding {
            fields.append("\"embedding\": {\"module\": \"torch.nn.Embedding\", \"prefix\": \(jsonString(embeddingName + ".")), \"num_embeddings\": \(e.vocabularySize), "
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
    /// - Parameters:
    ///   - prefix: the recurrent module's prefix ("" or ending in "."); default: the one the
    ///     model was imported with, else "" without a head and "rnn." with one.
    ///   - headName: the head's module name; default: the imported one, else "head".
    ///   The embedding stage, if any, is written under the imported module's name, else "embed".
    public init(model: Model, prefix givenPrefix: String? = nil, headName givenHead: String? = nil) throws {
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
                    let differing = Set(c.options.keys).union(first.options.keys).filter { c.options[$0] != first.options[$0] }.sorted()
                    let shown = differing.map { "\($0)=\(c.options[$0].map { "\($0)" } ?? "none") (layer 0: \(first.options[$0].map { "\($0)" } ?? "none"))" }
                    throw refuse("\(which) has option \(shown.joined(separator: ", ")); PyTorch uses one setting for all layers and directions")
                }
            }
        }
        if model.outputSteps == .last {
            throw refuse("the model outputs only the last step (Keras return_sequences=False); nn.RNN/nn.LSTM/nn.GRU return every step: "
                         + "take output[-1] (or h_n) in your module instead")
        }
        if let option = onnxOnlyOption(first) {
            throw refuse("the \(first.type.id) cells use the ONNX option \(option), which nn.\(module) cannot express")
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
        args.append(("bias", first.options["bias"] == .choice("false") ? "False" : "True"))
        args.append(("batch_first", "False"))
        args.append(("bidirectional", bidirectional ? "True" : "False"))
        if first.type.id == "lstm", case .int(let p)? = first.options["proj_size"], p > 0 {
            args.append(("proj_size", String(p)))
        }
        let source = model.source?.framework == "pytorch" ? model.source : nil
        let prefix = givenPrefix ?? source?.prefix ?? (model.head == nil && model.embedding == nil ? "" : "rnn.")
        let headName = givenHead ?? source?.headName ?? "head"
        let embeddingName = source?.embeddingName ?? "embed"
        guard prefix.isEmpty || (prefix.hasSuffix(".") && prefix.count > 1), !prefix.hasPrefix("."), !prefix.contains("..") else {
            throw SeqCellError(.invalidArgument, "the PyTorch prefix must be empty or a module path ending in '.', e.g. 'encoder.'; got '\(escapingControls(prefix))'")
        }
        guard !headName.isEmpty, !headName.hasPrefix("."), !headName.hasSuffix("."), !headName.contains("..") else {
            throw SeqCellError(.invalidArgument, "the PyTorch head name must be a module path like 'fc' or 'decoder.out'; got '\(escapingControls(headName))'")
        }
        for name in [prefix, headName, embeddingName] where name.utf8.count > ModelSource.maximumNameLength || name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
            throw SeqCellError(.invalidArgument, "PyTorch module names must be at most \(ModelSource.maximumNameLength) bytes without control characters")
        }
        if model.head != nil || model.embedding != nil, prefix.isEmpty {
            throw SeqCellError(.invalidArgument, "a model with a head or an embedding needs a prefix for its recurrent module (e.g. --prefix rnn.), or its names would mix with theirs")
        }
        var tensors: [(String, Tensor)] = []
        if let e = model.embedding {
            if prefix == embeddingName + "." || prefix.hasPrefix(embeddingName + ".") || (model.head != nil && embeddingName == headName) {
                throw SeqCellError(.invalidArgument, "the embedding's name '\(escapingControls(embeddingName))' clashes with the recurrent module's or the head's")
            }
            tensors.append(("\(embeddingName).weight", e.weight))
            metadata["seqcell.embedding"] = embeddingName
            if let p = e.paddingIndex { metadata["seqcell.padding_idx"] = String(p) }
        }
        // PyTorch's names: <name>_l<k>, and _reverse for the backward direction.
        model.parameterTree.forEachParameter(of: model) { e, t in
            if case .cell(let k, let d, _) = e.key, let info = e.info {
                tensors.append(("\(prefix)\(info.name)_l\(k)\(d == 1 ? "_reverse" : "")", t))
            }
        }
        if !prefix.isEmpty { metadata["seqcell.prefix"] = prefix }
        if let head = model.head {
            if prefix == headName + "." || prefix.hasPrefix(headName + ".") {
                throw SeqCellError(.invalidArgument, "the head's name '\(escapingControls(headName))' clashes with the recurrent module's prefix '\(escapingControls(prefix))'")
            }
            tensors.append(("\(headName).weight", head.weight))
            tensors.append(("\(headName).bias", head.bias))
            metadata["seqcell.head"] = headName
            metadata["seqcell.head_activation"] = head.activation.rawValue
        }
        self.module = module
        self.arguments = args
        self.tensors = tensors
        self.prefix = prefix
        self.head = model.head
        self.headName = headName
        self.embedding = model.embedding
        self.embeddingName = embeddingName
        self.metadata = metadata
    }

    /// Writes the safetensors file and, beside it, the JSON description (`jsonPath`).
    public func write(to path: String, jsonPath: String) throws {
        try SafeTensorsFile.write(tensors, metadata: metadata, to: path)
        try writeFileAtomically(Data(json.utf8), to: jsonPath)
    }
}

/// The first option of a built-in cell that only ONNX can express (docs/CELLS.md), as
/// `name=value`: an activation other than the cell's own (RNN: other than tanh or relu),
/// peepholes, input_forget or clip. nil when there is none. (alpha and beta matter only with
/// such an activation.)
func onnxOnlyOption(_ cell: Cell) -> String? {
    let names = ["activation", "gate_activation", "cell_activation", "output_activation", "candidate_activation",
                 "peepholes", "input_forget", "clip"]
    for name in names {
        guard let value = cell.options[name],
              let declared = cell.type.options.first(where: { $0.name == name }) else { continue }
        if name == "activation", cell.type.id == "rnn", value == .choice("tanh") || value == .choice("relu") { continue }
        if value != declared.defaultValue { return "\(name)=\(value)" }
    }
    return nil
}

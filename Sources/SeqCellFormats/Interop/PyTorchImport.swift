import Foundation
import SeqCellBase
import SeqCellHost
import SeqCellModel

/// How to read a PyTorch `nn.RNN` / `nn.LSTM` / `nn.GRU` state_dict. Everything the names and
/// shapes determine is inferred; these fill in or check the rest.
public struct PyTorchImportOptions: Sendable {
    /// "rnn", "lstm" or "gru"; inferred from the shapes when nil, checked against them when given.
    public var cell: String?
    /// `nn.RNN`'s nonlinearity, "tanh" or "relu" (weights cannot tell; default tanh, PyTorch's).
    public var activation: String?
    /// Prefix of the recurrent module's tensors, e.g. "lstm." for `model.lstm`. When nil, the
    /// one prefix under which `weight_ih_l0` exists is used. With an explicit prefix, tensors
    /// outside it (other than the head's) are ignored; without one, they are errors.
    public var prefix: String?
    /// Prefix of an `nn.Linear` applied after the recurrent module, e.g. "fc" for
    /// `fc.weight`/`fc.bias`; it becomes the model's linear head.
    public var head: String?
    public var headActivation: HeadActivation
    /// HDF5 only: the group holding the tensors (default: the root).
    public var group: String?
    /// An `nn.Embedding` before the recurrent module: its name (`embed` or `embed.weight`);
    /// when nil, the one fitting `NAME.weight` is found by shape (see `build`).
    public var embedding: String? = nil
    /// The embedding's `padding_idx`, which a state_dict does not record.
    public var paddingIndex: Int? = nil

    public init(cell: String? = nil, activation: String? = nil, prefix: String? = nil, head: String? = nil,
                headActivation: HeadActivation = .linear, group: String? = nil) {
        self.cell = cell
        self.activation = activation
        self.prefix = prefix
        self.head = head
        self.headActivation = headActivation
        self.group = group
    }
}

/// A model built from another framework's weights, with what the importer had to assume.
public struct ImportResult: Sendable {
    public var model: Model
    /// A one-line description of the source architecture, e.g. "nn.LSTM(3, 4, num_layers=2, ...)".
    public var source: String
    /// Assumptions and conversions worth telling the user.
    public var notes: [String]
    /// A Keras functional model's outputs, in order: the dataset of `seqcell run`'s output file
    /// holding each ("output", "final_states/layers/01/forward/h", …); empty otherwise.
    public var outputDatasets: [String] = []
}

/// Builds SeqCell models from PyTorch `state_dict` tensors.
public enum PyTorchImporter {
    static let kinds: [String: Int] = ["rnn": 1, "gru": 3, "lstm": 4]
    /// Hidden, projection and input sizes above this are refused.
    static let maximumSize = 1 << 24
    static let moduleNames: [String: String] = ["rnn": "nn.RNN", "lstm": "nn.LSTM", "gru": "nn.GRU"]

    /// Reads a safetensors or HDF5 file (by its signature) and builds the model.
    public static func importFile(_ path: String, options: PyTorchImportOptions = .init(), registry: PluginRegistry) throws -> ImportResult {
        try InteropFile.refusePickle(path)
        let dict: TensorDictionary
        switch try InteropFile.kind(of: path) {
        case .safetensors: dict = try .safetensors(path: path)
        case .hdf5: dict = try .hdf5(path: path, group: options.group)
        case .zip:
            throw SeqCellError(.invalidArgument,
                "'\(path)' is a zip archive, not PyTorch weights (a Keras .keras archive? use --from keras); PyTorch weights come as safetensors: \(InteropFile.safetensorsAdvice)")
        case let other:
            throw SeqCellError(.invalidArgument,
                "'\(path)' is \(other.rawValue), not PyTorch weights: give a safetensors file (safetensors.torch.save_file(model.state_dict(), \"model.safetensors\")) or an HDF5 file of state_dict tensors")
        }
        if options.group != nil, try InteropFile.kind(of: path) != .hdf5 {
            throw SeqCellError(.invalidArgument, "--group applies to HDF5 files; '\(path)' is a safetensors file")
        }
        return try build(dict, options: options, registry: registry)
    }

    /// One parameter name parsed: `weight_hh_l1_reverse` → ("weight_hh", 1, true).
    struct ParsedName: Hashable {
        var param: String
        var layer: Int
        var reverse: Bool

        init(_ param: String, layer: Int, reverse: Bool = false) {
            self.param = param
            self.layer = layer
            self.reverse = reverse
        }

        init?(_ name: String) {
            var rest = Substring(name)
            reverse = rest.hasSuffix("_reverse")
            if reverse { rest = rest.dropLast("_reverse".count) }
            guard let l = rest.range(of: "_l", options: .backwards) else { return nil }
            let digits = rest[l.upperBound...]
            guard !digits.isEmpty, digits.allSatisfy(\.isASCII), digits.allSatisfy(\.isNumber), let k = Int(digits), k < 100_000 else { return nil }
            param = String(rest[..<l.lowerBound])
            guard ["weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"].contains(param) else { return nil }
            layer = k
        }

        var text: String { "\(param)_l\(layer)\(reverse ? "_reverse" : "")" }
    }

    /// Builds the recurrent module (and head) from a state_dict; `build` takes an embedding off first.
    static func buildRecurrent(_ dict: TensorDictionary, options given: PyTorchImportOptions = .init(), registry: PluginRegistry) throws -> ImportResult {
        let origin = dict.origin
        func fail(_ message: String) -> SeqCellError { SeqCellError(.invalidArgument, escapingControls("'\(origin)': \(message)")) }
        var options = given
        var notes = dict.notes
        // Our own export records what weights cannot say.
        let meta = dict.metadata
        if options.prefix == nil, let p = meta["seqcell.prefix"] { options.prefix = p }
        if options.head == nil, let h = meta["seqcell.head"], !h.isEmpty {
            options.head = h
            if given.headActivation == .linear, let a = meta["seqcell.head_activation"].flatMap(HeadActivation.init(rawValue:)) {
                options.headActivation = a
            }
        }
        if options.activation == nil, let a = meta["nonlinearity"] { options.activation = a }

        // The recurrent module's prefix.
        let prefix: String
        let explicitPrefix = given.prefix != nil
        if let p = options.prefix {
            prefix = p
            guard dict.tensors["\(p)weight_ih_l0"] != nil else {
                let found = dict.names.filter { $0.hasSuffix("weight_ih_l0") }
                throw fail("no tensor '\(p)weight_ih_l0' under prefix '\(p)'"
                           + (found.isEmpty ? "" : " (found: \(found.prefix(12).map { displayName($0) }.joined(separator: ", ")))"))
            }
        } else {
            let candidates = dict.names.filter { $0.hasSuffix("weight_ih_l0") }.map { String($0.dropLast("weight_ih_l0".count)) }
            guard !candidates.isEmpty else {
                throw fail("no tensor named weight_ih_l0 (or PREFIX.weight_ih_l0): not an nn.RNN/nn.LSTM/nn.GRU state_dict (tensors: \(dict.names.prefix(12).map { displayName($0) }.joined(separator: ", "))\(dict.names.count > 12 ? ", …" : ""))")
            }
            guard candidates.count == 1 else {
                throw fail("several recurrent modules (prefixes \(candidates.prefix(12).map { displayName($0) }.joined(separator: ", "))): choose one with --prefix")
            }
            prefix = candidates[0]
        }

        // Sort every tensor into the recurrent module, the head, or the leftovers.
        var parsed: [ParsedName: Tensor] = [:]
        var extra: [String] = []
        let headNames = options.head.map { h in (weight: "\(h).weight", bias: "\(h).bias") }
        for name in dict.names {
            if let h = headNames, name == h.weight || name == h.bias { continue }
            if name.hasPrefix(prefix), let p = ParsedName(String(name.dropFirst(prefix.count))) {
                parsed[p] = dict.tensors[name]
            } else if !(explicitPrefix && !name.hasPrefix(prefix)) {
                extra.append(name)
            }
        }
        guard extra.isEmpty else {
            let linearHint = extra.contains { $0.hasSuffix(".weight") } ? "; an nn.Linear after the recurrent module is imported with --head NAME" : ""
            throw fail("unexpected tensor\(extra.count == 1 ? "" : "s") \(extra.prefix(12).map { displayName($0) }.joined(separator: ", "))\(extra.count > 12 ? ", …" : ""): "
                       + "not a parameter of nn.RNN/nn.LSTM/nn.GRU (weight_ih_lK, weight_hh_lK, bias_ih_lK, bias_hh_lK, weight_hr_lK, each optionally _reverse)\(linearHint)")
        }
        func tensor(_ p: ParsedName) -> Tensor? { parsed[p] }
        func label(_ p: ParsedName) -> String { displayName(prefix + p.text) }

        // Structure: layers, directions, projection, bias.
        let numLayers = (parsed.keys.map(\.layer).max() ?? 0) + 1
        let bidirectional = parsed.keys.contains { $0.reverse }
        let D = bidirectional ? 2 : 1
        let hasProjection = parsed.keys.contains { $0.param == "weight_hr" }
        let hasBias = parsed.keys.contains { $0.param.hasPrefix("bias") }
        let first = ParsedName("weight_hh", layer: 0)
        guard let whh0 = tensor(first) else { throw fail("missing tensor \(label(first))") }
        guard whh0.rank == 2, whh0.shape[0] > 0, whh0.shape[1] > 0 else {
            throw fail("tensor \(label(first)) must be 2-D [gates×hidden, hidden], got \(whh0.shape)")
        }

        // Cell kind and sizes.
        var hidden: Int
        let projSize: Int
        var kind: String
        if hasProjection {
            let hr = ParsedName("weight_hr", layer: 0)
            guard let whr = tensor(hr) else { throw fail("missing tensor \(label(hr)) (other layers have weight_hr)") }
            guard whr.rank == 2 else { throw fail("tensor \(label(hr)) must be 2-D [proj_size, hidden], got \(whr.shape)") }
            projSize = whr.shape[0]
            hidden = whr.shape[1]
            kind = "lstm"
            if let c = options.cell, c != "lstm" {
                throw fail("--cell \(c) disagrees with the weights: \(label(hr)) exists, which only nn.LSTM with proj_size has")
            }
        } else {
            projSize = 0
            hidden = whh0.shape[1]
            if let c = options.cell {
                guard let g = kinds[c] else { throw fail("--cell must be rnn, lstm or gru, got '\(c)'") }
                guard whh0.shape[0] == g * hidden else {
                    throw fail("--cell \(c) disagrees with the weights: \(label(first)) is \(whh0.shape); \(moduleNames[c] ?? c) with hidden size \(hidden) has [\(g * hidden), \(hidden)]")
                }
                kind = c
            } else {
                let rows = whh0.shape[0]
                guard rows % hidden == 0, let k = kinds.first(where: { $0.value == rows / hidden })?.key else {
                    throw fail("tensor \(label(first)) is \(whh0.shape): its rows are not 1, 3 or 4 times its columns (nn.RNN, nn.GRU, nn.LSTM)")
                }
                kind = k
            }
        }
        // Sizes come from shapes, which an empty tensor can make arbitrarily large: bound them
        // before any arithmetic uses them.
        guard hidden > 0, hidden <= Self.maximumSize, projSize >= 0, projSize <= Self.maximumSize else {
            throw fail("tensor \(label(hasProjection ? ParsedName("weight_hr", layer: 0) : first)) gives hidden size \(hidden)"
                       + (hasProjection ? " and proj_size \(projSize)" : "") + ": sizes must be between 1 and \(Self.maximumSize)")
        }
        guard let G = kinds[kind] else { throw fail("--cell must be rnn, lstm or gru, got '\(kind)'") }
        let moduleName = moduleNames[kind] ?? kind
        let P = projSize > 0 ? projSize : hidden
        guard projSize == 0 || projSize < hidden else {
            throw fail("proj_size \(projSize) (from \(label(ParsedName("weight_hr", layer: 0)))) must be smaller than the hidden size \(hidden)")
        }

        // Cell options.
        var cellOptions: [String: String] = [:]
        // bias=False: cells without bias parameters, so training keeps the model bias-free.
        if !hasBias { cellOptions["bias"] = "false" }
        switch kind {
        case "rnn":
            let act = options.activation ?? "tanh"
            guard act == "tanh" || act == "relu" else { throw fail("--activation must be tanh or relu for nn.RNN, got '\(act)'") }
            cellOptions["activation"] = act
            if options.activation == nil {
                notes.append("nn.RNN's nonlinearity is not in the weights: assumed tanh (PyTorch's default); pass --activation relu for nonlinearity='relu'")
            }
        case "lstm":
            if projSize > 0 { cellOptions["proj_size"] = String(projSize) }
            if options.activation != nil { throw fail("--activation applies to nn.RNN only; these are nn.LSTM weights") }
        default:
            cellOptions["reset"] = "after"
            if options.activation != nil { throw fail("--activation applies to nn.RNN only; these are nn.GRU weights") }
        }

        // Every expected tensor, checked, in layer order.
        let type = try registry.cellType(kind)
        let parsedOptions = try type.parseOptions(cellOptions)
        var layers: [RecurrentLayer] = []
        var inputSize = 0
        var expectedNames = Set<ParsedName>()
        for k in 0..<numLayers {
            var cells: [DirectionalCell] = []
            for d in 0..<D {
                let rev = d == 1
                func name(_ p: String) -> ParsedName { ParsedName(p, layer: k, reverse: rev) }
                func require(_ p: String, _ shape: [Int?]) throws -> Tensor {
                    let n = name(p)
                    expectedNames.insert(n)
                    guard let t = tensor(n) else { throw fail("missing tensor \(label(n))") }
                    let matches = t.rank == shape.count && zip(t.shape, shape).allSatisfy { $1 == nil || $0 == $1 }
                    guard matches else {
                        let want = "[" + shape.map { $0.map(String.init) ?? "_" }.joined(separator: ", ") + "]"
                        throw fail("tensor \(label(n)) is \(t.shape) but \(want) is expected for \(moduleName) with hidden_size \(hidden)"
                                   + (projSize > 0 ? ", proj_size \(projSize)" : "") + (k > 0 ? " (layer \(k) reads \(D)×\(P) = \(D * P) features)" : ""))
                    }
                    return t
                }
                let wih = try require("weight_ih", [G * hidden, k == 0 ? nil : D * P])
                if k == 0 && d == 0 { inputSize = wih.shape[1] }
                if k == 0 && d == 1, wih.shape[1] != inputSize {
                    throw fail("tensor \(label(name("weight_ih"))) takes \(wih.shape[1]) inputs but \(label(ParsedName("weight_ih", layer: 0))) takes \(inputSize)")
                }
                var values: [String: Tensor] = ["weight_ih": wih, "weight_hh": try require("weight_hh", [G * hidden, P])]
                if hasBias {
                    values["bias_ih"] = try require("bias_ih", [G * hidden])
                    values["bias_hh"] = try require("bias_hh", [G * hidden])
                }
                if projSize > 0 { values["weight_hr"] = try require("weight_hr", [projSize, hidden]) }
                let cell = try type.instantiate(inputSize: wih.shape[1], hiddenSize: hidden, options: parsedOptions)
                var params: [Tensor] = []
                for info in cell.params {
                    guard let v = values[info.name] else {
                        throw SeqCellError(.plugin, "the '\(kind)' plugin declares parameter '\(info.name)', which PyTorch's \(moduleName) does not have")
                    }
                    params.append(v)
                }
                cells.append(try DirectionalCell(cell: cell, params: params))
            }
            layers.append(try RecurrentLayer(direction: bidirectional ? .bidirectional : .forward, mergeMode: .concat, cells: cells))
        }
        if let stray = parsed.keys.filter({ !expectedNames.contains($0) }).sorted(by: { $0.text < $1.text }).first {
            throw fail("unexpected tensor \(label(stray)): the other tensors describe \(moduleName) with "
                       + "\(numLayers) layer(s)\(bidirectional ? ", bidirectional" : "")\(hasBias ? "" : ", bias=False")\(projSize > 0 ? ", proj_size=\(projSize)" : "")")
        }
        if !hasBias { notes.append("no bias tensors (bias=False): imported as cells without biases (option bias=false), which training keeps bias-free") }

        // The head.
        var head: LinearHead? = nil
        if let h = headNames, let hname = options.head {
            guard let w = dict.tensors[h.weight] else {
                throw fail("missing tensor '\(h.weight)' for the head '\(hname)' (an nn.Linear's weight)")
            }
            let width = layers.last!.outputSize
            guard w.rank == 2, w.shape[1] == width else {
                throw fail("tensor '\(h.weight)' is \(w.shape) but the head takes the recurrent output, [_, \(width)] is expected")
            }
            var b = Tensor.zeros([w.shape[0]])
            if let bt = dict.tensors[h.bias] {
                guard bt.shape == [w.shape[0]] else { throw fail("tensor '\(h.bias)' is \(bt.shape), expected [\(w.shape[0])]") }
                b = bt
            } else {
                notes.append("the head '\(hname)' has no bias (bias=False): imported with a zero bias")
            }
            head = try LinearHead(weight: w, bias: b, activation: options.headActivation)
        }
        var model = try Model(inputSize: inputSize, layers: layers, head: head)
        // Remembered so that export writes the module's own names back (load_state_dict(strict=True)).
        model.source = ModelSource(framework: "pytorch", prefix: prefix, headName: head == nil ? nil : options.head)
        var args = "\(moduleName)(\(inputSize), \(hidden), num_layers=\(numLayers)"
        if kind == "rnn" { args += ", nonlinearity='\(cellOptions["activation"] ?? "tanh")'" }
        if !hasBias { args += ", bias=False" }
        if bidirectional { args += ", bidirectional=True" }
        if projSize > 0 { args += ", proj_size=\(projSize)" }
        args += ")"
        if let head { args += " + nn.Linear(\(head.inputSize), \(head.outputSize))" + (head.activation == .linear ? "" : " + \(head.activation.rawValue)") }
        return ImportResult(model: model, source: args, notes: notes)
    }
}

import Foundation
import ZIPFoundation
import SeqCellBase
import SeqCellHost
import SeqCellModel

/// What a Keras import needs beyond the file: the architecture for a bare `.weights.h5`,
/// and for files with no config at all, what the weights cannot tell.
public struct KerasImportOptions: Sendable {
    /// `model.to_json()` output; required for a `.weights.h5` with more than one recurrent
    /// layer, and overrides the config stored in a `.keras` or legacy `.h5` when given.
    public var configPath: String?
    /// Without a config: a SimpleRNN's activation (tanh or relu; default tanh).
    public var activation: String?
    /// Without a config: a Bidirectional layer's merge mode (default concat).
    public var mergeMode: MergeMode?
    /// Without a config: the Dense layer's activation (default linear).
    public var headActivation: HeadActivation?

    public init(configPath: String? = nil, activation: String? = nil, mergeMode: MergeMode? = nil, headActivation: HeadActivation? = nil) {
        self.configPath = configPath
        self.activation = activation
        self.mergeMode = mergeMode
        self.headActivation = headActivation
    }
}

/// Builds SeqCell models from Keras files: Keras 3 `.keras` archives and `.weights.h5`, and
/// legacy `model.save("m.h5")` files of Keras 3 and Keras 2 (tf.keras).
public enum KerasImporter {
    public static func importFile(_ path: String, options: KerasImportOptions = .init(), registry: PluginRegistry) throws -> ImportResult {
        try InteropFile.refusePickle(path)
        var notes: [String] = []
        let givenConfig = try options.configPath.map { try readConfigFile($0) }
        switch try InteropFile.kind(of: path) {
        case .zip:
            let (config, weights) = try readKerasArchive(path)
            var origin = "'\(path)':config.json"
            if let p = options.configPath {
                notes.append("used --keras-config instead of the archive's config.json")
                origin = "'\(p)'"
            }
            let shown = "\(path):model.weights.h5"
            let file = try openWeightsMember(bytes: weights, displayName: shown)
            return try build(file: file, shownPath: shown, config: givenConfig ?? config, configOrigin: origin,
                             options: options, notes: notes, registry: registry)
        case .hdf5:
            let file = try H5File(opening: path)
            let root = try file.root
            var config = givenConfig
            var origin = options.configPath.map { "'\($0)'" } ?? ""
            if try root.hasAttribute("model_config") {
                if config == nil {
                    config = try root.stringAttribute("model_config")
                    origin = "'\(path)'@model_config"
                } else {
                    notes.append("used --keras-config instead of the file's model_config")
                }
            }
            return try build(file: file, shownPath: path, config: config, configOrigin: origin,
                             options: options, notes: notes, registry: registry)
        case let other:
            throw SeqCellError(.invalidArgument,
                "'\(path)' is \(other.rawValue), not a Keras model: give a .keras archive, a .weights.h5, or a model saved as .h5")
        }
    }

    /// Largest config JSON read (a recurrent model's is a few KB).
    static let maximumConfigSize = 16 << 20

    /// The text of a `--keras-config` file, at most `maximumConfigSize` bytes.
    static func readConfigFile(_ p: String) throws -> String {
        guard let handle = FileHandle(forReadingAtPath: p) else {
            throw SeqCellError(.io, "cannot read the Keras config '\(p)': " + (FileManager.default.fileExists(atPath: p) ? "not readable" : "no such file"))
        }
        defer { try? handle.close() }
        let data: Data
        do {
            data = try handle.read(upToCount: maximumConfigSize + 1) ?? Data()
        } catch {
            throw SeqCellError(.io, "cannot read the Keras config '\(p)' (is it a directory?)")
        }
        guard data.count <= maximumConfigSize else {
            throw SeqCellError(.io, "the Keras config '\(p)' is larger than \(maximumConfigSize) bytes")
        }
        guard let s = String(data: data, encoding: .utf8) else {
            throw SeqCellError(.invalidArgument, "the Keras config '\(p)' is not UTF-8 text")
        }
        return s
    }

    /// The archive's config.json text and the bytes of its model.weights.h5, read into memory
    /// with sizes capped and CRCs checked (nothing is written to disk).
    static func readKerasArchive(_ path: String) throws -> (config: String, weights: [UInt8]) {
        let zip = try ZipMembers(path: path)
        guard zip.contains("config.json"), zip.contains("model.weights.h5") else {
            let names = zip.names(limit: 9).map { displayName($0, limit: 60) }
            throw SeqCellError(.invalidArgument,
                "'\(path)' is a zip archive but not a Keras 3 .keras file: it needs config.json and model.weights.h5 (it has \(names.prefix(8).joined(separator: ", "))\(names.count > 8 ? ", …" : ""))")
        }
        guard let configBytes = try zip.read("config.json", limit: maximumConfigSize),
              let weights = try zip.read("model.weights.h5") else {
            throw SeqCellError(.io, "cannot read '\(path)': a member disappeared while reading")
        }
        guard let config = String(validating: configBytes, as: UTF8.self) else {
            throw SeqCellError(.invalidArgument, "'\(path)': config.json is not UTF-8 text")
        }
        return (config, weights)
    }

    /// Opens the HDF5 bytes of an archive's weights member from memory (checked like any
    /// untrusted HDF5 file); nothing is written to disk and errors name `displayName`.
    static func openWeightsMember(bytes: [UInt8], displayName: String) throws -> H5File {
        try H5File(image: bytes, displayName: displayName)
    }

    static func build(file: H5File, shownPath: String, config: String?, configOrigin: String,
                      options: KerasImportOptions, notes given: [String], registry: PluginRegistry) throws -> ImportResult {
        var notes = given
        let layout = try KerasWeightsLayout.detect(try file.root, path: shownPath)
        var plan: KerasModelPlan
        if let config {
            plan = try KerasConfigReader.plan(json: config, origin: configOrigin)
        } else {
            guard case .keras3(let layers) = layout else {
                throw SeqCellError(.invalidArgument,
                    "'\(shownPath)' holds legacy Keras weights without a model config: give the architecture with --keras-config model.json (from model.to_json())")
            }
            plan = try inferPlan(layers, path: shownPath, options: options)
        }
        notes += plan.notes
        notes += plan.skipped.map { "skipped \($0)" }
        let reader = try KerasWeightsReader(layout: layout, path: shownPath, plan: plan)
        var layers: [RecurrentLayer] = []
        var head: LinearHead? = nil
        var width = plan.inputSize
        var summary: [String] = []
        /// Plan layer name → SeqCell layer index (recurrent and Bidirectional layers).
        var layerIndex: [String: Int] = [:]
        for (i, layer) in plan.layers.enumerated() {
            if case .dense = layer {} else { layerIndex[layer.name] = layers.count }
            switch layer {
            case .recurrent(let r):
                let w = try reader.recurrentWeights(i, layer)[0]
                let cell = try convert(r, w, inputWidth: &width, registry: registry, notes: &notes)
                layers.append(try RecurrentLayer(direction: .forward, cells: [cell]))
                summary.append("\(r.className)(\(r.units))")
                if !r.returnSequences {
                    notes.append("\(r.className) layer '\(r.name)' has return_sequences=False: the model's output is the last step, which `seqcell run` writes as 'output' [B, F]")
                }
            case .bidirectional(let name, let f, let b, let merge):
                let w = try reader.recurrentWeights(i, layer)
                var backWidth = width
                let fc = try convert(f, w[0], inputWidth: &width, registry: registry, notes: &notes)
                let bc = try convert(b, w[1], inputWidth: &backWidth, registry: registry, notes: &notes)
                do {
                    layers.append(try RecurrentLayer(direction: .bidirectional, mergeMode: merge, cells: [fc, bc]))
                } catch let e as SeqCellError {
                    throw SeqCellError(e.kind, "\(shownPath): Bidirectional layer '\(name)': \(e.message)")
                }
                if !f.returnSequences {
                    notes.append("Bidirectional layer '\(name)' has return_sequences=False: the model's output is the forward direction's last step merged with the backward direction's step 0 (what Keras returns), which `seqcell run` writes as 'output' [B, F]")
                }
                summary.append("Bidirectional(\(f.className)(\(f.units))\(b.className == f.className && b.units == f.units ? "" : ", backward_layer=\(b.className)(\(b.units))"), merge_mode='\(merge.rawValue)')")
            case .dense(let name, let units, let act, let useBias):
                let (kernel, bias, location) = try reader.denseWeights(i, name: name, useBias: useBias)
                let d = layers.last?.outputSize ?? 0
                guard kernel.shape == [d, units] else {
                    throw SeqCellError(.shape, "\(location): Dense layer '\(name)' kernel is \(kernel.shape), expected [\(d), \(units)] (the previous layer outputs \(d) features)")
                }
                if let bias, bias.shape != [units] {
                    throw SeqCellError(.shape, "\(location): Dense layer '\(name)' bias is \(bias.shape), expected [\(units)]")
                }
                if bias == nil { notes.append("Dense layer '\(name)' has use_bias=False: imported with a zero bias") }
                head = try LinearHead(weight: transpose(kernel), bias: bias ?? .zeros([units]), activation: act)
                summary.append("Dense(\(units), activation='\(act.rawValue)')")
            }
            if let last = layers.last { width = last.outputSize }
        }
        guard let first = layers.first else { throw SeqCellError(.invalidArgument, "\(shownPath): no recurrent layer") }
        var model = try Model(inputSize: first.inputSize, layers: layers, head: head)
        if let e = plan.embedding {
            model = try e.attach(to: model, layout: layout, path: shownPath)
            summary.insert("Embedding(\(e.inputDim), \(e.outputDim))", at: 0)
        }
        model.source = ModelSource(framework: "keras")
        if plan.layers.contains(where: { !$0.returnsSequences }) { model.outputSteps = .last }
        var datasets: [String] = []
        if !plan.outputs.isEmpty {
            datasets = try outputMap(plan, layers: layers, layerIndex: layerIndex, shownPath: shownPath)
            notes.append("functional model: " + datasets.enumerated().map { "output \($0.offset) → '\($0.element)'" }.joined(separator: ", ")
                         + " (datasets of seqcell run's output file)")
        }
        let kind = plan.outputs.isEmpty ? "keras.Sequential" : "keras functional chain"
        var result = ImportResult(model: model, source: "\(kind)([" + summary.joined(separator: ", ") + "])", notes: notes)
        result.outputDatasets = datasets
        return result
    }

    /// Where each output of a functional model is in `seqcell run`'s file: the last layer's
    /// output is `output`; a state output (return_state=True) is that layer's final state,
    /// `final_states/layers/NN/<direction>/<state>` — Keras orders them [output, h, c] for an
    /// LSTM, [output, h] for a GRU or SimpleRNN, and the forward layer's before the backward
    /// layer's for a Bidirectional one.
    static func outputMap(_ plan: KerasModelPlan, layers: [RecurrentLayer], layerIndex: [String: Int], shownPath: String) throws -> [String] {
        try plan.outputs.map { output in
            guard output.tensor > 0 else { return "output" }
            guard let k = layerIndex[output.layer] else {
                throw SeqCellError(.unsupported, "\(shownPath): output \(output.tensor) of layer '\(output.layer)' is not a recurrent state")
            }
            let layer = layers[k]
            var states: [String] = []
            for (d, dc) in layer.cells.enumerated() {
                states += dc.cell.states.map { "final_states/" + ParameterTree.cellPath(layer: k, of: layers.count, direction: layer.directionName(d), name: $0.name) }
            }
            guard output.tensor - 1 < states.count else {
                throw SeqCellError(.unsupported, "\(shownPath): layer '\(output.layer)' has \(states.count) state output(s); output \(output.tensor) does not exist")
            }
            return states[output.tensor - 1]
        }
    }

    /// [R, C] → [C, R].
    static func transpose(_ t: Tensor) -> Tensor {
        let (r, c) = (t.shape[0], t.shape[1])
        var out = [Float](repeating: 0, count: t.count)
        for i in 0..<r { for j in 0..<c { out[j * r + i] = t.data[i * c + j] } }
        return Tensor(shape: [c, r], data: out)
    }

    /// Rows regrouped: the row blocks of `t` (each `block` rows) taken in `order`.
    static func reorderRowBlocks(_ t: Tensor, block: Int, order: [Int]) -> Tensor {
        let width = t.count / t.shape[0]
        var out: [Float] = []
        out.reserveCapacity(t.count)
        for b in order { out += t.data[(b * block * width)..<((b + 1) * block * width)] }
        return Tensor(shape: t.shape, data: out)
    }

    /// Keras GRU gate blocks z, r, h ↔ SeqCell/PyTorch r, z, n (the permutation is its own inverse).
    static let gruOrder = [1, 0, 2]

    /// One Keras direction as a SeqCell cell: kernels transposed, GRU gates reordered, the
    /// bias split into bias_ih / bias_hh.
    static func convert(_ r: KerasRecurrentConfig, _ w: KerasCellWeights, inputWidth: inout Int?, registry: PluginRegistry,
                        notes: inout [String]) throws -> DirectionalCell {
        let what = "\(w.location): \(r.className) layer '\(r.name)'"
        guard let G = ["rnn": 1, "gru": 3, "lstm": 4][r.cell] else {
            throw SeqCellError(.unsupported, "\(what): no SeqCell cell for '\(r.cell)'")
        }
        let H = r.units
        guard w.kernel.rank == 2, w.kernel.shape[1] == G * H else {
            throw SeqCellError(.shape, "\(what): kernel is \(w.kernel.shape), expected [input, \(G * H)] for units=\(H)")
        }
        if let expected = inputWidth, w.kernel.shape[0] != expected {
            throw SeqCellError(.shape, "\(what): kernel is \(w.kernel.shape) but the layer receives \(expected) features, expected [\(expected), \(G * H)]")
        }
        let I = w.kernel.shape[0]
        inputWidth = I
        guard w.recurrentKernel.shape == [H, G * H] else {
            throw SeqCellError(.shape, "\(what): recurrent_kernel is \(w.recurrentKernel.shape), expected [\(H), \(G * H)]")
        }
        var options: [String: String] = [:]
        var biasIH = Tensor.zeros([G * H]), biasHH = Tensor.zeros([G * H])
        switch r.cell {
        case "rnn":
            options["activation"] = r.activation
        case "gru":
            var resetAfter = r.resetAfter ?? true
            if let b = w.bias {
                let shapeSaysAfter: Bool
                if b.shape == [2, 3 * H] { shapeSaysAfter = true } else if b.shape == [3 * H] { shapeSaysAfter = false } else {
                    throw SeqCellError(.shape, "\(what): bias is \(b.shape), expected [2, \(3 * H)] (reset_after=True) or [\(3 * H)] (reset_after=False)")
                }
                if let given = r.resetAfter, given != shapeSaysAfter {
                    throw SeqCellError(.shape, "\(what): the config says reset_after=\(given ? "True" : "False") but the bias is \(b.shape)")
                }
                resetAfter = shapeSaysAfter
            } else if r.resetAfter == nil {
                notes.append("\(r.className) layer '\(r.name)': reset_after not stated and no bias to tell: assumed True (Keras' default)")
            }
            options["reset"] = resetAfter ? "after" : "before"
        default:
            break
        }
        if let b = w.bias {
            switch r.cell {
            case "gru" where b.rank == 2:
                biasIH = reorderRowBlocks(Tensor(shape: [3 * H], data: Array(b.data[0..<(3 * H)])), block: H, order: gruOrder)
                biasHH = reorderRowBlocks(Tensor(shape: [3 * H], data: Array(b.data[(3 * H)...])), block: H, order: gruOrder)
            case "gru":
                biasIH = reorderRowBlocks(b, block: H, order: gruOrder)
            default:
                guard b.shape == [G * H] else { throw SeqCellError(.shape, "\(what): bias is \(b.shape), expected [\(G * H)]") }
                biasIH = b
            }
        } else {
            options["bias"] = "false"
            notes.append("\(r.className) layer '\(r.name)' has use_bias=False: imported as a cell without biases (option bias=false)")
        }
        if r.unroll { notes.append("\(r.className) layer '\(r.name)' has unroll=True, which changes how Keras computes, not the result: imported as usual") }
        var wih = transpose(w.kernel), whh = transpose(w.recurrentKernel)
        if r.cell == "gru" {
            wih = reorderRowBlocks(wih, block: H, order: gruOrder)
            whh = reorderRowBlocks(whh, block: H, order: gruOrder)
        }
        let type = try registry.cellType(r.cell)
        let cell = try type.instantiate(inputSize: I, hiddenSize: H, options: try type.parseOptions(options))
        let values = ["weight_ih": wih, "weight_hh": whh, "bias_ih": biasIH, "bias_hh": biasHH]
        let params = try cell.params.map { info -> Tensor in
            guard let v = values[info.name] else {
                throw SeqCellError(.plugin, "the '\(r.cell)' plugin declares parameter '\(info.name)', which Keras' \(r.className) does not have")
            }
            return v
        }
        return try DirectionalCell(cell: cell, params: params)
    }

    /// A plan from a Keras 3 `.weights.h5` alone: possible for one recurrent (or Bidirectional)
    /// layer and an optional Dense; the rest comes from flags, with notes for each default.
    static func inferPlan(_ layers: H5Group, path: String, options: KerasImportOptions) throws -> KerasModelPlan {
        func stripCounter(_ s: String) -> String {
            guard let u = s.lastIndex(of: "_"), s[s.index(after: u)...].allSatisfy(\.isNumber), s.index(after: u) != s.endIndex else { return s }
            return String(s[..<u])
        }
        var groups = try layers.memberNames().filter { layers.isGroup($0) }
        groups = try groups.filter { g in
            let grp = try layers.group(g)
            if grp.isGroup("cell") || grp.isGroup("forward_layer") { return true }
            return grp.isGroup("vars") ? try !grp.group("vars").memberNames().isEmpty : false
        }
        let recurrentGroups = groups.filter { ["simple_rnn", "lstm", "gru", "bidirectional"].contains(stripCounter($0)) }
        let denseGroups = groups.filter { stripCounter($0) == "dense" }
        let others = groups.filter { !recurrentGroups.contains($0) && !denseGroups.contains($0) }
        let ask = "give the architecture with --keras-config model.json (from model.to_json())"
        guard others.isEmpty else {
            throw SeqCellError(.unsupported, "'\(path)': layer group(s) \(others.map { "/layers/\($0)" }.joined(separator: ", ")) are not layers SeqCell imports")
        }
        guard recurrentGroups.count == 1, denseGroups.count <= 1 else {
            throw SeqCellError(.invalidArgument,
                "'\(path)' is a bare .weights.h5 with layers \(groups.joined(separator: ", ")): their order is not stored in the file; \(ask)")
        }
        var notes: [String] = []
        func cellConfig(_ g: H5Group, className: String?, name: String) throws -> KerasRecurrentConfig {
            guard g.isGroup("cell"), try g.group("cell").isGroup("vars") else {
                throw SeqCellError(.invalidArgument, "'\(path)':\(g.path) has no cell/vars group")
            }
            let v = try g.group("cell").group("vars")
            let count = try v.memberNames().count
            guard v.isDataset("1") else { throw SeqCellError(.invalidArgument, "'\(path)':\(v.path) has no recurrent kernel '1'") }
            let rk = try v.dataset("1").shape
            guard rk.count == 2, rk[0] > 0, rk[0] <= KerasConfigReader.maximumUnits, rk[1] % rk[0] == 0, let cls = className ?? [1: "SimpleRNN", 3: "GRU", 4: "LSTM"][rk[1] / rk[0]] else {
                throw SeqCellError(.invalidArgument, "'\(path)':\(v.path)/1 is \(rk): not the recurrent kernel of a SimpleRNN, GRU or LSTM; \(ask)")
            }
            var act = "tanh"
            if cls == "SimpleRNN" {
                act = options.activation ?? "tanh"
                guard act == "tanh" || act == "relu" else {
                    throw SeqCellError(.invalidArgument, "--activation must be tanh or relu for a SimpleRNN, got '\(act)'")
                }
                if options.activation == nil { notes.append("no model config: SimpleRNN activation assumed tanh (pass --activation relu otherwise)") }
            }
            guard let cell = KerasConfigReader.recurrentCells[cls] else {
                throw SeqCellError(.unsupported, "'\(path)':\(g.path): \(cls) is not a layer SeqCell imports")
            }
            return KerasRecurrentConfig(className: cls, name: name, units: rk[0], cell: cell,
                                        activation: act, useBias: count >= 3, resetAfter: nil, returnSequences: true, goBackwards: false)
        }
        var plan = KerasModelPlan(layers: [], inputSize: nil, notes: [], skipped: [])
        let rg = recurrentGroups[0]
        let g = try layers.group(rg)
        switch stripCounter(rg) {
        case "bidirectional":
            for sub in ["forward_layer", "backward_layer"] where !g.isGroup(sub) {
                throw SeqCellError(.invalidArgument, "'\(path)':\(g.path) has no '\(sub)' group")
            }
            let f = try cellConfig(try g.group("forward_layer"), className: nil, name: "\(rg) forward")
            let b = try cellConfig(try g.group("backward_layer"), className: nil, name: "\(rg) backward")
            let merge = options.mergeMode ?? .concat
            if options.mergeMode == nil { notes.append("no model config: Bidirectional merge_mode assumed concat (pass --merge-mode otherwise)") }
            plan.layers.append(.bidirectional(name: rg, forward: f, backward: b, merge: merge))
        default:
            let cls = ["simple_rnn": "SimpleRNN", "lstm": "LSTM", "gru": "GRU"][stripCounter(rg)]
            plan.layers.append(.recurrent(try cellConfig(g, className: cls, name: rg)))
        }
        if let dg = denseGroups.first {
            let v = try layers.group(dg).group("vars")
            guard v.isDataset("0") else { throw SeqCellError(.invalidArgument, "'\(path)':\(v.path) has no kernel '0'") }
            let k = try v.dataset("0").shape
            guard k.count == 2, k[1] >= 1, k[1] <= KerasConfigReader.maximumUnits else {
                throw SeqCellError(.invalidArgument, "'\(path)':\(v.path)/0 is \(k), not a Dense kernel")
            }
            let act = options.headActivation ?? .linear
            if options.headActivation == nil { notes.append("no model config: Dense activation assumed linear (pass --head-activation otherwise)") }
            plan.layers.append(.dense(name: dg, units: k[1], activation: act, useBias: try v.memberNames().count >= 2))
        }
        plan.notes = notes
        return plan
    }
}

import Foundation
import SeqCellBase
import SeqCellHost
import SeqCellModel

/// The weights of one Keras layer direction, as Keras stores them.
struct KerasCellWeights {
    /// [I, G·H]
    var kernel: Tensor
    /// [H, G·H]
    var recurrentKernel: Tensor
    /// [G·H], or [2, G·H] for GRU with reset_after=True; nil with use_bias=False.
    var bias: Tensor?
    /// Where they were read, for messages.
    var location: String
}

/// Where a Keras file keeps its weights.
enum KerasWeightsLayout {
    /// Keras 3's `.weights.h5` (also inside `.keras`): `layers/<class_snake>[_N]/…/vars/0,1,2`.
    case keras3(H5Group)
    /// Legacy HDF5 (Keras 2, and Keras 3's `model.save("m.h5")`): `<group>/<layer name>` with a
    /// `weight_names` attribute listing its datasets in order.
    case legacy(H5Group)

    /// The layout of an open file: `model_weights/` or a root with `layer_names` is legacy;
    /// a root with `layers/` is Keras 3.
    static func detect(_ root: H5Group, path: String) throws -> KerasWeightsLayout {
        if root.isGroup("model_weights") { return .legacy(try root.group("model_weights")) }
        if try root.hasAttribute("layer_names") { return .legacy(root) }
        if root.isGroup("layers") { return .keras3(try root.group("layers")) }
        throw SeqCellError(.invalidArgument,
            "'\(path)' is an HDF5 file but not Keras weights: it has neither 'layers/' (Keras 3 .weights.h5) nor 'model_weights/' (model.save(\"m.h5\"))")
    }
}

/// Reads each planned layer's weights from a Keras file.
struct KerasWeightsReader {
    let layout: KerasWeightsLayout
    let path: String
    /// Keras 3: the group name of each layer, in plan order.
    private var keras3Names: [String] = []

    init(layout: KerasWeightsLayout, path: String, plan: KerasModelPlan) throws {
        self.layout = layout
        self.path = path
        if case .keras3(let layers) = layout {
            // saving_lib names a container's members by class, counting repeats: lstm, lstm_1, …
            var used: [String: Int] = [:]
            for layer in plan.layers {
                let base = KerasConfigReader.snakeCase(layer.className)
                let n = used[base].map { $0 + 1 } ?? 0
                used[base] = n
                keras3Names.append(n == 0 ? base : "\(base)_\(n)")
            }
            let present = Set(try layers.memberNames())
            for (layer, group) in zip(plan.layers, keras3Names) where !present.contains(group) {
                throw SeqCellError(.invalidArgument,
                    "'\(path)': no weights for \(layer.className) layer '\(layer.name)' (expected group /layers/\(group); the file has \(present.sorted().joined(separator: ", "))): the config does not describe this file")
            }
            let expected = Set(keras3Names + (plan.embedding == nil ? [] : ["embedding"]))
            if let extra = present.subtracting(expected).sorted().first(where: { (try? hasVariables(layers.group($0))) == true }) {
                throw SeqCellError(.invalidArgument,
                    "'\(path)': the file has weights for a layer '/layers/\(extra)' that the model config does not list")
            }
        }
    }

    /// Whether a group holds any dataset, at any depth.
    private func hasVariables(_ g: H5Group) throws -> Bool {
        for name in try g.memberNames() {
            if g.isDataset(name) { return true }
            if g.isGroup(name), try hasVariables(try g.group(name)) { return true }
        }
        return false
    }

    private func float32(_ g: H5Group, _ name: String) throws -> Tensor {
        let ds = try g.dataset(name)
        let where_ = "'\(path)':\(ds.path)"
        guard ds.elementKind == .float32 || ds.elementKind == .float64 || ds.elementKind == .otherFloat(bytes: 2) else {
            throw SeqCellError(.unsupported, "\(where_) is \(ds.elementKind); Keras weights must be floating-point")
        }
        return try Tensor.checked(shape: ds.shape, data: try ds.readFloats(), what: where_)
    }

    /// The `vars` datasets 0, 1, … of a Keras 3 group, in order.
    private func vars(_ g: H5Group) throws -> [Tensor] {
        guard g.isGroup("vars") else { return [] }
        let v = try g.group("vars")
        let names = try v.memberNames()
        var out: [Tensor] = []
        for i in 0..<names.count {
            guard v.isDataset(String(i)) else {
                throw SeqCellError(.invalidArgument, "'\(path)':\(v.path) holds \(names.joined(separator: ", ")); expected datasets 0…\(names.count - 1)")
            }
            out.append(try float32(v, String(i)))
        }
        return out
    }

    /// Legacy: the datasets named by `weight_names`, in order, with their names.
    private func legacyWeights(_ layerName: String) throws -> [(name: String, tensor: Tensor)] {
        guard case .legacy(let root) = layout else { return [] }
        guard root.isGroup(layerName) else {
            let names = (try? root.stringArrayAttribute("layer_names")) ?? []
            throw SeqCellError(.invalidArgument,
                "'\(path)': no weights for layer '\(layerName)' under \(root.path) (layers with weights: \(names.joined(separator: ", ")))")
        }
        let g = try root.group(layerName)
        let names = try g.hasAttribute("weight_names") ? try g.stringArrayAttribute("weight_names") : []
        return try names.map { n in
            guard g.isDataset(n) else {
                throw SeqCellError(.invalidArgument, "'\(path)': \(g.path)@weight_names lists '\(n)' but there is no such dataset")
            }
            return (n, try float32(g, n))
        }
    }

    /// Sorts a direction's weights by their last name part: kernel, recurrent_kernel, bias.
    private func cellWeights(_ named: [(name: String, tensor: Tensor)], _ rec: KerasRecurrentConfig, at location: String) throws -> KerasCellWeights {
        func role(_ n: String) -> String {
            var last = n.split(separator: "/").last.map(String.init) ?? n
            if let colon = last.firstIndex(of: ":") { last = String(last[..<colon]) }
            return last
        }
        var byRole: [String: Tensor] = [:]
        for (n, t) in named {
            let r = role(n)
            guard ["kernel", "recurrent_kernel", "bias"].contains(r), byRole[r] == nil else {
                throw SeqCellError(.invalidArgument, "\(location): unexpected weight '\(n)' for \(rec.className) layer '\(rec.name)'")
            }
            byRole[r] = t
        }
        guard let k = byRole["kernel"], let rk = byRole["recurrent_kernel"] else {
            throw SeqCellError(.invalidArgument, "\(location): \(rec.className) layer '\(rec.name)' needs kernel and recurrent_kernel, found \(named.map(\.name).joined(separator: ", "))")
        }
        return KerasCellWeights(kernel: k, recurrentKernel: rk, bias: byRole["bias"], location: location)
    }

    /// The weights of planned layer `index`: one entry per direction.
    func recurrentWeights(_ index: Int, _ plan: KerasLayerPlan) throws -> [KerasCellWeights] {
        switch layout {
        case .keras3(let layers):
            let g = try layers.group(keras3Names[index])
            func direction(_ group: H5Group, _ rec: KerasRecurrentConfig) throws -> KerasCellWeights {
                guard group.isGroup("cell") else {
                    throw SeqCellError(.invalidArgument, "'\(path)':\(group.path) has no 'cell' group for \(rec.className) layer '\(rec.name)'")
                }
                let v = try vars(try group.group("cell"))
                let expected = rec.useBias ? 3 : 2
                guard v.count == expected else {
                    throw SeqCellError(.invalidArgument,
                        "'\(path)':\(group.path)/cell/vars holds \(v.count) variables; \(rec.className) layer '\(rec.name)' with use_bias=\(rec.useBias ? "True" : "False") has \(expected)")
                }
                return KerasCellWeights(kernel: v[0], recurrentKernel: v[1], bias: rec.useBias ? v[2] : nil,
                                        location: "'\(path)':\(group.path)")
            }
            switch plan {
            case .recurrent(let r): return [try direction(g, r)]
            case .bidirectional(_, let f, let b, _):
                for sub in ["forward_layer", "backward_layer"] where !g.isGroup(sub) {
                    throw SeqCellError(.invalidArgument, "'\(path)':\(g.path) has no '\(sub)' group")
                }
                return [try direction(try g.group("forward_layer"), f), try direction(try g.group("backward_layer"), b)]
            case .dense: return []
            }
        case .legacy:
            let named = try legacyWeights(plan.name)
            let location = "'\(path)': layer '\(plan.name)'"
            switch plan {
            case .recurrent(let r):
                return [try cellWeights(named, r, at: location)]
            case .bidirectional(_, let f, let b, _):
                // Keras lists the forward layer's weights, then the backward layer's.
                let nf = f.useBias ? 3 : 2
                let nb = b.useBias ? 3 : 2
                guard named.count == nf + nb else {
                    throw SeqCellError(.invalidArgument,
                        "\(location): Bidirectional layer '\(plan.name)' should have \(nf) + \(nb) weights, the file lists \(named.count) (\(named.map(\.name).joined(separator: ", ")))")
                }
                return [try cellWeights(Array(named[..<nf]), f, at: location + " (forward)"),
                        try cellWeights(Array(named[nf...]), b, at: location + " (backward)")]
            case .dense: return []
            }
        }
    }

    /// A Dense layer's kernel [D, O] and bias [O] (nil with use_bias=False).
    func denseWeights(_ index: Int, name: String, useBias: Bool) throws -> (kernel: Tensor, bias: Tensor?, location: String) {
        let named: [(name: String, tensor: Tensor)]
        let location: String
        switch layout {
        case .keras3(let layers):
            let g = try layers.group(keras3Names[index])
            named = try vars(g).enumerated().map { ($0.offset == 0 ? "kernel" : "bias", $0.element) }
            location = "'\(path)':\(g.path)"
        case .legacy:
            named = try legacyWeights(name)
            location = "'\(path)': layer '\(name)'"
        }
        let expected = useBias ? 2 : 1
        guard named.count == expected else {
            throw SeqCellError(.invalidArgument, "\(location): Dense layer '\(name)' should have \(expected) weights, found \(named.count)")
        }
        return (named[0].tensor, useBias ? named[1].tensor : nil, location)
    }
}

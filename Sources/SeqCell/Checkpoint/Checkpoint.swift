import Foundation

/// Training state a checkpoint may carry beside the model (docs/FORMAT.md, `/training`).
public struct TrainingState: Equatable, Sendable {
    /// Optimizer steps taken so far.
    public var step: Int
    /// The optimizer's name, e.g. "adam".
    public var optimizer: String
    /// The training configuration as JSON text.
    public var config: String
    /// The random generator's state, opaque bytes.
    public var rng: [UInt8]
    /// Per-parameter optimizer slots: slot name (e.g. "m", "v") → parameter path → tensor.
    public var slots: [String: [String: Tensor]]

    public init(step: Int, optimizer: String, config: String, rng: [UInt8], slots: [String: [String: Tensor]] = [:]) {
        self.step = step
        self.optimizer = optimizer
        self.config = config
        self.rng = rng
        self.slots = slots
    }
}

/// A loaded checkpoint.
public struct Checkpoint: Sendable {
    public var model: Model
    public var training: TrainingState?
    /// [major, minor] of the file's format.
    public var formatVersion: [Int]
    public var creator: String

    public init(model: Model, training: TrainingState? = nil) {
        self.model = model
        self.training = training
        formatVersion = [CheckpointFormat.major, CheckpointFormat.minor]
        creator = SeqCellInfo.creator
    }
}

/// The SeqCell checkpoint format (docs/FORMAT.md): names and rules in one place.
public enum CheckpointFormat {
    public static let name = "seqcell-checkpoint"
    public static let major = 1
    /// The newest minor this SeqCell reads and writes. 1.1 added the embedding stage
    /// (`/model/embedding`, `/@requires`); 1.2 `/model@output_steps` (a model whose output is
    /// its last step) and the optional `/model/source`; a file that uses nothing newer is
    /// written as 1.0.
    public static let minor = 2

    /// Features a reader must understand to read a file, listed in its root attribute
    /// `requires`; a reader refuses a file that lists one it does not know.
    public static let knownRequirements: Set<String> = ["embedding", "output_steps"]

    /// The version and requirements a file holding `model` is written with: the oldest that
    /// can describe it, so readers of older minors keep reading what they can. A last-step
    /// model requires `output_steps` (an older reader would compute another output); the
    /// source names are informational and need nothing.
    static func version(for model: Model) -> (version: [Int], requires: [String]) {
        var minor = 0
        var requires: [String] = []
        if model.embedding != nil { minor = 1; requires.append("embedding") }
        if model.outputSteps != .all { minor = 2; requires.append("output_steps") }
        return ([major, minor], requires)
    }

    /// Layer group name: zero-padded so HDF5's alphabetical listing is numeric order.
    static func layerName(_ k: Int, count: Int) -> String {
        let width = max(2, String(max(count - 1, 0)).count)
        let s = String(k)
        return String(repeating: "0", count: max(0, width - s.count)) + s
    }

    static func roleName(_ r: ParamInfo.Role) -> String {
        switch r {
        case .inputWeight: return "input_weight"
        case .recurrentWeight: return "recurrent_weight"
        case .bias: return "bias"
        case .other: return "other"
        }
    }
}

extension Model {
    /// Every parameter with its checkpoint path, in a fixed order: layers, directions,
    /// the cell's parameter order, then the head (`head/weight`, `head/bias`), then the
    /// embedding table (`embedding/weight`).
    public var namedParameters: [(path: String, value: Tensor)] {
        var out: [(String, Tensor)] = []
        for (k, layer) in layers.enumerated() {
            let lname = CheckpointFormat.layerName(k, count: layers.count)
            for (d, dc) in layer.cells.enumerated() {
                for (info, t) in zip(dc.cell.params, dc.params) {
                    out.append(("layers/\(lname)/\(layer.directionName(d))/\(info.name)", t))
                }
            }
        }
        if let head {
            out.append(("head/weight", head.weight))
            out.append(("head/bias", head.bias))
        }
        if let embedding { out.append(("embedding/weight", embedding.weight)) }
        return out
    }

    /// Replaces every parameter, in `namedParameters` order; shapes must match.
    public mutating func setParameters(_ values: [Tensor]) throws {
        let current = namedParameters
        guard values.count == current.count else {
            throw SeqCellError(.shape, "\(values.count) parameter tensors for a model with \(current.count)")
        }
        for (v, c) in zip(values, current) where v.shape != c.value.shape {
            throw SeqCellError(.shape, "parameter \(c.path) must be \(c.value.shape), got \(v.shape)")
        }
        var i = 0
        for k in layers.indices {
            for d in layers[k].cells.indices {
                for p in layers[k].cells[d].params.indices {
                    layers[k].cells[d].params[p] = values[i]
                    i += 1
                }
            }
        }
        if head != nil {
            head!.weight = values[i]
            head!.bias = values[i + 1]
            i += 2
        }
        if embedding != nil { embedding!.weight = values[i] }
    }
}

extension Checkpoint {
    // MARK: Save

    /// Writes the checkpoint atomically: a temporary file beside `path` is written, flushed,
    /// fsynced and renamed over `path`, so `path` always holds either the old file or the
    /// complete new one.
    public func save(to path: String) throws {
        try writeHDF5Atomically(to: path) { file in
            let root = try file.root
            try root.setAttribute("format", CheckpointFormat.name)
            let (version, requires) = CheckpointFormat.version(for: model)
            try root.setAttribute("format_version", version)
            if !requires.isEmpty { try root.setAttribute("requires", requires) }
            try root.setAttribute("creator", SeqCellInfo.creator)
            try root.setAttribute("created", ISO8601DateFormatter().string(from: Date()))
            try Checkpoint.writeModel(model, into: try root.createGroup("model"))
            if let training { try Checkpoint.writeTraining(training, into: try root.createGroup("training")) }
        }
    }

    static func writeModel(_ model: Model, into g: H5Group) throws {
        // A model with an embedding stage takes token ids, not features: no input_size (which is
        // also what makes a format 1.0 reader refuse the file instead of running it without
        // the embedding).
        if let e = model.embedding {
            let eg = try g.createGroup("embedding")
            try eg.setAttribute("kind", "embedding")
            try eg.setAttribute("vocab_size", e.vocabularySize)
            try eg.setAttribute("embedding_dim", e.dimension)
            if let p = e.paddingIndex { try eg.setAttribute("padding_idx", p) }
            try eg.writeDataset("weight", shape: e.weight.shape, floats: e.weight.data)
        } else {
            try g.setAttribute("input_size", model.inputSize)
        }
        try g.setAttribute("num_layers", model.layers.count)
        try g.setAttribute("output_size", model.outputSize)
        if model.outputSteps != .all { try g.setAttribute("output_steps", model.outputSteps.rawValue) }
        if let s = model.source {
            let sg = try g.createGroup("source")
            try sg.setAttribute("framework", s.framework)
            if let p = s.prefix { try sg.setAttribute("prefix", p) }
            if let h = s.headName { try sg.setAttribute("head_name", h) }
            if let e = s.embeddingName { try sg.setAttribute("embedding_name", e) }
        }
        let layersGroup = try g.createGroup("layers")
        for (k, layer) in model.layers.enumerated() {
            let lg = try layersGroup.createGroup(CheckpointFormat.layerName(k, count: model.layers.count))
            try lg.setAttribute("direction", layer.direction.rawValue)
            try lg.setAttribute("merge_mode", layer.mergeMode.rawValue)
            try lg.setAttribute("input_size", layer.inputSize)
            try lg.setAttribute("output_size", layer.outputSize)
            for (d, dc) in layer.cells.enumerated() {
                let cg = try lg.createGroup(layer.directionName(d))
                let cell = dc.cell
                try cg.setAttribute("cell", cell.type.id)
                try cg.setAttribute("cell_version", cell.type.version.description)
                try cg.setAttribute("input_size", cell.inputSize)
                try cg.setAttribute("hidden_size", cell.hiddenSize)
                try cg.setAttribute("output_size", cell.outputSize)
                try cg.setAttribute("state_names", cell.states.map(\.name))
                try cg.setAttribute("state_sizes", cell.states.map(\.size))
                let og = try cg.createGroup("options")
                for o in cell.type.options {
                    // `CellType.instantiate` fills in every declared option's default, so this
                    // holds for every cell; a file is never written without one of them.
                    guard let value = cell.options[o.name] else {
                        throw SeqCellError(.invalidArgument, "cell '\(cell.type.id)' has no value for its option '\(o.name)'")
                    }
                    switch value {
                    case .int(let v): try og.setAttribute(o.name, v)
                    case .float(let v): try og.setAttribute(o.name, v)
                    case .choice(let v): try og.setAttribute(o.name, v)
                    }
                }
                for (info, t) in zip(cell.params, dc.params) {
                    let ds = try t.data.withUnsafeBufferPointer { try cg.writeDataset(info.name, shape: t.shape, floats: $0) }
                    try ds.setAttribute("gate_order", info.gateOrder)
                    try ds.setAttribute("role", CheckpointFormat.roleName(info.role))
                }
            }
        }
        if let head = model.head {
            let hg = try g.createGroup("head")
            try hg.setAttribute("kind", "linear")
            try hg.setAttribute("activation", head.activation.rawValue)
            try hg.writeDataset("weight", shape: head.weight.shape, floats: head.weight.data)
            try hg.writeDataset("bias", shape: head.bias.shape, floats: head.bias.data)
        }
    }

    static func writeTraining(_ t: TrainingState, into g: H5Group) throws {
        try g.setAttribute("step", t.step)
        try g.setAttribute("optimizer", t.optimizer)
        try g.setAttribute("config", t.config)
        try g.writeDataset("rng", shape: [t.rng.count], bytes: t.rng)
        let slots = try g.createGroup("slots")
        for (name, tensors) in t.slots.sorted(by: { $0.key < $1.key }) {
            let sg = try slots.createGroup(name)
            for (path, tensor) in tensors.sorted(by: { $0.key < $1.key }) {
                var parent = sg
                let parts = path.split(separator: "/").map(String.init)
                guard let leaf = parts.last else {
                    throw SeqCellError(.invalidArgument, "optimizer slot '\(name)' has a tensor with an empty parameter path")
                }
                for p in parts.dropLast() { parent = parent.contains(p) ? try parent.group(p) : try parent.createGroup(p) }
                try parent.writeDataset(leaf, shape: tensor.shape, floats: tensor.data)
            }
        }
    }

    // MARK: Load

    /// Reads a checkpoint: the file is parsed into a `CheckpointDocument` (no plugin needed)
    /// and bound through `registry`, cells found by id and version. Never loads code.
    public static func load(from path: String, registry: PluginRegistry) throws -> Checkpoint {
        try CheckpointDocument.read(path: path).bind(registry: registry)
    }
}

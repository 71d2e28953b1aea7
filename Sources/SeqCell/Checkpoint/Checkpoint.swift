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
    /// Every parameter with its checkpoint path, in the parameter tree's order (layers,
    /// directions, the cell's parameter order, then `head/weight`, `head/bias`, then
    /// `embedding/weight`): a convenience built from `parameterTree`.
    public var namedParameters: [(path: String, value: Tensor)] {
        var out: [(path: String, value: Tensor)] = []
        parameterTree.forEachParameter(of: self) { e, t in out.append((e.path, t)) }
        return out
    }

    /// Replaces every parameter, in `namedParameters` order; shapes must match.
    public mutating func setParameters(_ values: [Tensor]) throws {
        let tree = parameterTree
        try tree.scatterParameters(tree.flatten(values, what: "parameter"), into: &self)
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
                    switch cell.options[o.name]! {
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
        for name in t.slots.keys.sorted() {
            let sg = try slots.createGroup(name)
            for path in t.slots[name]!.keys.sorted() {
                let tensor = t.slots[name]![path]!
                var parent = sg
                let parts = path.split(separator: "/").map(String.init)
                for p in parts.dropLast() { parent = parent.contains(p) ? try parent.group(p) : try parent.createGroup(p) }
                try parent.writeDataset(parts.last!, shape: tensor.shape, floats: tensor.data)
            }
        }
    }

    // MARK: Load

    /// Reads a checkpoint; cells come from `registry` by id and version. Never loads code.
    public static func load(from path: String, registry: PluginRegistry) throws -> Checkpoint {
        let file = try H5File(opening: path)
        let root = try file.root
        let version = try readHeader(root, path: path)
        try checkRequirements(root, path: path)
        let model = try readModel(try root.group("model"), registry: registry, path: path)
        let training = try optionalGroup(root, "training", path: path).map { try readTraining($0, model: model, path: path) }
        var c = Checkpoint(model: model, training: training)
        c.formatVersion = version
        c.creator = try optionalString(root, "creator") ?? ""
        return c
    }

    /// Group `name` of `g`, or `nil` when there is no such member. A member that is present but
    /// damaged, not a hard link, or not a group is an error, never taken as absent.
    static func optionalGroup(_ g: H5Group, _ name: String, path: String) throws -> H5Group? {
        switch try g.member(name) {
        case nil: return nil
        case .group: return try g.group(name)
        case .dataset?, .other?:
            throw checkpointError(path, g.memberPath(name), "is not a group")
        }
    }

    /// A string attribute that may be absent (or of another type: `nil`); damage throws.
    static func optionalString(_ object: some H5Object, _ name: String) throws -> String? {
        guard try object.hasAttribute(name) else { return nil }
        do {
            return try object.stringAttribute(name)
        } catch let error as HDF5Error where error.code == .wrongType {
            return nil
        }
    }

    /// Checks the root attributes; returns [major, minor].
    static func readHeader(_ root: H5Group, path: String) throws -> [Int] {
        guard let name = try optionalString(root, "format"), name == CheckpointFormat.name else {
            throw SeqCellError(.checkpoint,
                "'\(path)' is an HDF5 file but not a SeqCell checkpoint: the root attribute 'format' must be '\(CheckpointFormat.name)'")
        }
        let version = try root.intArrayAttribute("format_version")
        guard version.count == 2 else {
            throw SeqCellError(.checkpoint, "'\(path)': format_version must be [major, minor], got \(version)")
        }
        guard version[0] == CheckpointFormat.major else {
            let newer = version[0] > CheckpointFormat.major
            throw SeqCellError(.checkpoint,
                "'\(path)' is format \(version[0]).\(version[1]); this SeqCell reads format \(CheckpointFormat.major).x"
                + (newer ? " (the file was written by a newer SeqCell: upgrade to read it)" : ""))
        }
        return version
    }

    /// Refuses a file whose root `requires` lists a feature this reader does not know.
    static func checkRequirements(_ root: H5Group, path: String) throws {
        guard try root.hasAttribute("requires") else { return }
        let listed = try root.stringArrayAttribute("requires")
        let unknown = listed.filter { !CheckpointFormat.knownRequirements.contains($0) }
        guard unknown.isEmpty else {
            throw SeqCellError(.checkpoint,
                "'\(path)' needs \(unknown.map { "'\($0)'" }.joined(separator: ", ")), which this SeqCell (format "
                + "\(CheckpointFormat.major).\(CheckpointFormat.minor)) cannot read: the file was written by a newer SeqCell; upgrade to read it")
        }
    }

    /// The embedding stage under `/model/embedding`, or nil when the group is absent.
    static func readEmbedding(_ g: H5Group, path: String) throws -> Embedding? {
        guard let eg = try optionalGroup(g, "embedding", path: path) else { return nil }
        let at = "/model/embedding"
        let weight = try readFloat32(eg, "weight", at: at, path: path)
        guard weight.rank == 2, weight.shape[0] >= 1, weight.shape[1] >= 1 else {
            throw checkpointError(path, "\(at)/weight", "shape \(weight.shape) is not [vocab_size, embedding_dim] with both >= 1")
        }
        for (name, value) in [("vocab_size", weight.shape[0]), ("embedding_dim", weight.shape[1])] where try eg.hasAttribute(name) {
            let stated = try eg.intAttribute(name)
            guard stated == value else {
                throw checkpointError(path, at, "\(name) is \(stated) but weight is \(weight.shape)")
            }
        }
        var padding: Int? = nil
        if try eg.hasAttribute("padding_idx") {
            let p = try eg.intAttribute("padding_idx")
            guard (0..<weight.shape[0]).contains(p) else {
                throw checkpointError(path, at, "padding_idx \(p) is outside the vocabulary 0...\(weight.shape[0] - 1)")
            }
            padding = p
        }
        return try Embedding(weight: weight, paddingIndex: padding)
    }

    static func checkpointError(_ path: String, _ where_: String, _ message: String) -> SeqCellError {
        SeqCellError(.checkpoint, "'\(path)' \(where_): \(message)")
    }

    static func readModel(_ g: H5Group, registry: PluginRegistry, path: String) throws -> Model {
        let embedding = try readEmbedding(g, path: path)
        let inputSize: Int
        if let embedding {
            inputSize = try g.hasAttribute("input_size") ? try g.intAttribute("input_size") : embedding.dimension
            guard inputSize == embedding.dimension else {
                throw checkpointError(path, "/model", "input_size is \(inputSize) but the embedding gives \(embedding.dimension)-wide vectors")
            }
        } else {
            inputSize = try g.intAttribute("input_size")
        }
        let numLayers = try g.intAttribute("num_layers")
        guard inputSize >= 1 else { throw checkpointError(path, "/model", "input_size must be >= 1, got \(inputSize)") }
        let lg = try g.group("layers")
        let names = try lg.memberNames()
        guard numLayers >= 1, names.count == numLayers else {
            throw checkpointError(path, "/model", "num_layers is \(numLayers) but /model/layers has \(names.count) groups (\(names.joined(separator: ", ")))")
        }
        var layers: [RecurrentLayer] = []
        for k in 0..<numLayers {
            let lname = CheckpointFormat.layerName(k, count: numLayers)
            // A present but damaged group throws "damaged" from the lookup; only absence is "missing".
            guard let layerGroup = try optionalGroup(lg, lname, path: path) else {
                throw checkpointError(path, "/model/layers", "layer group '\(lname)' is missing (groups: \(names.joined(separator: ", ")))")
            }
            layers.append(try readLayer(layerGroup, at: "/model/layers/\(lname)", registry: registry, path: path))
        }
        var head: LinearHead? = nil
        if let hg = try optionalGroup(g, "head", path: path) {
            let actName = try hg.stringAttribute("activation")
            guard let act = HeadActivation(rawValue: actName) else {
                throw checkpointError(path, "/model/head", "unknown activation '\(actName)'")
            }
            head = try LinearHead(weight: try readFloat32(hg, "weight", at: "/model/head", path: path),
                                  bias: try readFloat32(hg, "bias", at: "/model/head", path: path), activation: act)
        }
        var model: Model
        do {
            if let embedding {
                model = try Model(embedding: embedding, layers: layers, head: head)
            } else {
                model = try Model(inputSize: inputSize, layers: layers, head: head)
            }
        } catch let e as SeqCellError {
            throw checkpointError(path, "/model", e.message)
        }
        if let steps = try optionalString(g, "output_steps") {
            guard let s = OutputSteps(rawValue: steps) else {
                throw checkpointError(path, "/model", "output_steps '\(escapingControls(steps))' is not all or last")
            }
            model.outputSteps = s
        }
        if let sg = try optionalGroup(g, "source", path: path) {
            guard let framework = try optionalString(sg, "framework") else {
                throw checkpointError(path, "/model/source", "needs a string attribute 'framework'")
            }
            let source = ModelSource(framework: framework, prefix: try optionalString(sg, "prefix"),
                                     headName: try optionalString(sg, "head_name"), embeddingName: try optionalString(sg, "embedding_name"))
            for (name, value) in [("framework", source.framework), ("prefix", source.prefix), ("head_name", source.headName),
                                  ("embedding_name", source.embeddingName)] {
                guard let value else { continue }
                guard value.utf8.count <= ModelSource.maximumNameLength, !value.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
                    throw checkpointError(path, "/model/source", "'\(name)' must be at most \(ModelSource.maximumNameLength) bytes without control characters")
                }
            }
            model.source = source
        }
        return model
    }

    static func readLayer(_ g: H5Group, at where_: String, registry: PluginRegistry, path: String) throws -> RecurrentLayer {
        let dirName = try g.stringAttribute("direction")
        guard let direction = Direction(rawValue: dirName) else {
            throw checkpointError(path, where_, "direction '\(dirName)' is not forward, reverse or bidirectional")
        }
        var merge = MergeMode.concat
        if try g.hasAttribute("merge_mode") {
            let m = try g.stringAttribute("merge_mode")
            guard let mm = MergeMode(rawValue: m) else {
                throw checkpointError(path, where_, "merge_mode '\(m)' is not concat, sum, mul or ave")
            }
            merge = mm
        }
        let groups: [String] = switch direction {
        case .forward: ["forward"]
        case .reverse: ["backward"]
        case .bidirectional: ["forward", "backward"]
        }
        var cells: [DirectionalCell] = []
        for name in groups {
            guard let cellGroup = try optionalGroup(g, name, path: path) else {
                throw checkpointError(path, where_, "a \(direction.rawValue) layer needs a '\(name)' group")
            }
            cells.append(try readCell(cellGroup, at: "\(where_)/\(name)", registry: registry, path: path))
        }
        do {
            return try RecurrentLayer(direction: direction, mergeMode: merge, cells: cells)
        } catch let e as SeqCellError {
            throw checkpointError(path, where_, e.message)
        }
    }

    static func readCell(_ g: H5Group, at where_: String, registry: PluginRegistry, path: String) throws -> DirectionalCell {
        let id = try g.stringAttribute("cell")
        let versionText = try g.stringAttribute("cell_version")
        guard let version = CellVersion(versionText) else {
            throw checkpointError(path, where_, "cell_version '\(versionText)' is not MAJOR.MINOR.PATCH")
        }
        let type: CellType
        do {
            type = try registry.cellType(id, satisfying: version)
        } catch let e as SeqCellError {
            throw checkpointError(path, where_, e.message)
        }
        let inputSize = try g.intAttribute("input_size")
        let hiddenSize = try g.intAttribute("hidden_size")
        var options: [String: OptionValue] = [:]
        if let og = try optionalGroup(g, "options", path: path) {
            for name in try og.attributeNames() {
                guard let o = type.options.first(where: { $0.name == name }) else {
                    let known = type.options.map(\.name).joined(separator: ", ")
                    throw checkpointError(path, "\(where_)/options",
                        "cell '\(id)' has no option '\(name)' (its options: \(known.isEmpty ? "none" : known))")
                }
                switch o.kind {
                case .int: options[name] = .int(try og.intAttribute(name))
                case .float: options[name] = .float(try og.doubleAttribute(name))
                case .choice: options[name] = .choice(try og.stringAttribute(name))
                }
            }
        }
        let cell: Cell
        do {
            cell = try type.instantiate(inputSize: inputSize, hiddenSize: hiddenSize, options: options)
        } catch let e as SeqCellError {
            throw checkpointError(path, where_, e.message)
        }
        let expected = Set(cell.params.map(\.name))
        for name in try g.memberNames() where name != "options" && !expected.contains(name) {
            throw checkpointError(path, where_,
                "unexpected '\(name)': cell '\(id)' with these options has parameters \(cell.params.map(\.name).joined(separator: ", "))")
        }
        var params: [Tensor] = []
        for info in cell.params {
            // An optional parameter (ABI 1.2) a file omits stands for its constant (or zeros).
            if info.optional, try g.member(info.name) == nil {
                params.append(Tensor(shape: info.shape, data: [Float](repeating: info.omittedValue, count: info.count)))
                continue
            }
            params.append(try readFloat32(g, info.name, at: where_, path: path, expected: info.shape,
                                          cellNote: " cell '\(id)' (input \(inputSize), hidden \(hiddenSize))"))
        }
        return try DirectionalCell(cell: cell, params: params)
    }

    /// A float32 dataset; any other element type is an error naming it. With `expected`,
    /// the shape is checked before anything is read or allocated.
    static func readFloat32(_ g: H5Group, _ name: String, at where_: String, path: String,
                            expected: [Int]? = nil, cellNote: String = "") throws -> Tensor {
        switch try g.member(name) {
        case .dataset?: break
        case nil: throw checkpointError(path, where_, "dataset '\(name)' is missing")
        case .group?, .other?: throw checkpointError(path, "\(where_)/\(name)", "is not a dataset")
        }
        let ds = try g.dataset(name)
        guard ds.elementKind == .float32 else {
            throw checkpointError(path, "\(where_)/\(name)",
                "dtype is \(ds.elementKind); SeqCell checkpoints store float32 (in h5py: dtype='float32')")
        }
        guard let expected else { return Tensor(shape: ds.shape, data: try ds.readFloats()) }
        guard ds.shape == expected else {
            throw checkpointError(path, "\(where_)/\(name)", "shape \(ds.shape) does not match\(cellNote): expected \(expected)")
        }
        // Uninitialised: HDF5 writes every element, so zero-filling first would touch the
        // memory twice (loading ran at half h5py's speed with it; docs/PERFORMANCE.md).
        let data = try [Float](unsafeUninitializedCapacity: ds.count) { buffer, initialized in
            try ds.readFloats(into: buffer)
            initialized = buffer.count
        }
        return Tensor(shape: ds.shape, data: data)
    }

    static func readTraining(_ g: H5Group, model: Model, path: String) throws -> TrainingState {
        var slots: [String: [String: Tensor]] = [:]
        if let sg = try optionalGroup(g, "slots", path: path) {
            let tree = model.parameterTree
            for slot in try sg.memberNames() {
                let one = try sg.group(slot)
                var tensors: [String: Tensor] = [:]
                for p in tree.entries {
                    let parts = p.path.split(separator: "/").map(String.init)
                    var parent = one
                    var found = true
                    for part in parts.dropLast() {
                        guard let next = try optionalGroup(parent, part, path: path) else { found = false; break }
                        parent = next
                    }
                    guard found, let last = parts.last, try parent.member(last) != nil else { continue }
                    tensors[p.path] = try readFloat32(
                        parent, parts.last!, at: "/training/slots/\(slot)/" + parts.dropLast().joined(separator: "/"), path: path,
                        expected: p.shape, cellNote: " its parameter")
                }
                slots[slot] = tensors
            }
        }
        return TrainingState(
            step: try g.intAttribute("step"), optimizer: try g.stringAttribute("optimizer"),
            config: try g.stringAttribute("config"),
            rng: try g.member("rng") != nil ? try g.dataset("rng").readBytes() : [], slots: slots)
    }
}

import Foundation

/// A checkpoint file as a plain value (docs/FORMAT.md): everything the file says, parsed and
/// checked against the format, with every format default applied, and no plugin involved.
///
/// This is the one checkpoint reader. `seqcell inspect` prints a document; binding
/// (`bind(registry:)`, `bindLayer`, …) turns it into a `Model` through the plugin registry,
/// which is where the file meets the cells: cell lookup by id and version, the options'
/// kinds, and the parameters' names and shapes against each cell's `ParamInfo`.
///
/// What the parser checks is what the file alone can tell: the root attributes and
/// `@requires`, the presence and types of required attributes, every layer group and direction
/// group the layer's direction needs, float32 parameter datasets, the embedding table's shape
/// and padding index, the head's activation, `output_steps` and the source names. Messages name
/// the file and the HDF5 path as `Checkpoint.load` always has.
public struct CheckpointDocument: Sendable {
    /// The root attributes.
    public struct Header: Sendable, Equatable {
        /// [major, minor]
        public var formatVersion: [Int]
        /// `@creator`, "" when absent.
        public var creator: String
        /// `@created`, "" when absent.
        public var created: String
        /// `@requires`, [] when absent.
        public var requires: [String]
    }

    /// One dataset of a direction group: a cell parameter as the file stores it.
    public struct Parameter: Sendable, Equatable {
        public var name: String
        public var value: Tensor
        /// `@gate_order`, "" when absent (informational).
        public var gateOrder: String
        /// `@role`, "" when absent (informational).
        public var role: String
    }

    /// An attribute of a direction's `options` group, typed as stored; the cell's declaration
    /// says which kind it must be (checked when binding).
    public enum OptionAttribute: Sendable, Equatable {
        case string(String)
        case integer(Int)
        case number(Double)

        /// The value as text ("relu", "16", "0.5").
        public var text: String {
            switch self {
            case .string(let s): return s
            case .integer(let v): return String(v)
            case .number(let v): return String(v)
            }
        }
    }

    /// One direction of a layer: a complete description of one configured cell.
    public struct CellEntry: Sendable {
        /// "forward" or "backward": the group's name.
        public var name: String
        /// `@cell`, the cell id.
        public var cell: String
        /// `@cell_version` as written.
        public var cellVersionText: String
        public var cellVersion: CellVersion
        public var inputSize: Int
        public var hiddenSize: Int
        /// The `options` group's attributes, sorted by name; [] without the group.
        public var options: [(name: String, value: OptionAttribute)]
        /// Every dataset of the group, in the file's (alphabetical) order.
        public var parameters: [Parameter]
        /// Members that are neither `options` nor datasets (a group, say): never parameters.
        public var otherMembers: [String]
    }

    public struct Layer: Sendable {
        /// The group name, "00", "01", …
        public var name: String
        public var direction: Direction
        /// `@merge_mode`; `concat` when absent.
        public var mergeMode: MergeMode
        /// One entry per direction, forward first.
        public var cells: [CellEntry]

        /// As `RecurrentLayer.summary` describes the bound layer: "lstm(64) bidirectional concat gru(64)".
        public var summary: String {
            let texts = cells.map { "\($0.cell)(\($0.hiddenSize))" }
            switch direction {
            case .forward: return "\(texts[0]) forward"
            case .reverse: return "\(texts[0]) reverse"
            case .bidirectional: return "\(texts[0]) bidirectional \(mergeMode.rawValue) \(texts[1])"
            }
        }
    }

    public struct Head: Sendable {
        public var activation: HeadActivation
        public var weight: Tensor
        public var bias: Tensor
    }

    public struct EmbeddingTable: Sendable {
        /// [vocabulary, dimension]
        public var weight: Tensor
        public var paddingIndex: Int?
    }

    /// `/training` as read; slots are those stored at the paths of this document's parameters.
    public struct Training: Sendable {
        public var step: Int
        public var optimizer: String
        public var config: String
        public var rng: [UInt8]
        public var slots: [String: [String: Tensor]]
    }

    /// The file as named by the caller; every message names it.
    public var path: String
    public var header: Header
    /// Width of each input step; with an embedding stage, the table's dimension.
    public var inputSize: Int
    public var layers: [Layer]
    public var head: Head?
    public var embedding: EmbeddingTable?
    /// `/model@output_steps`; `.all` when absent.
    public var outputSteps: OutputSteps
    public var source: ModelSource?
    public var training: Training?

    /// Every parameter with its checkpoint path, in the file's order: layers, directions,
    /// datasets, then `head/weight`, `head/bias`, `embedding/weight`.
    public var parameters: [(path: String, value: Tensor)] {
        var out: [(String, Tensor)] = []
        for l in layers {
            for c in l.cells {
                for p in c.parameters { out.append(("layers/\(l.name)/\(c.name)/\(p.name)", p.value)) }
            }
        }
        if let head {
            out.append(("head/weight", head.weight))
            out.append(("head/bias", head.bias))
        }
        if let embedding { out.append(("embedding/weight", embedding.weight)) }
        return out
    }

    /// The number of values in all parameter datasets.
    public var parameterCount: Int { parameters.reduce(0) { $0 + $1.value.count } }

    /// The non-finite values of every parameter dataset of the file, in `parameters` order
    /// (layers, head, embedding): what `seqcell inspect` shows, with no plugin needed.
    public var nonFiniteParameters: [(path: String, count: NonFiniteCount)] {
        parameters.map { ($0.path, NonFiniteCount(of: $0.value.data)) }
    }
}

// MARK: Reading

extension CheckpointDocument {
    /// Parses the checkpoint at `path`. The file goes through the HDF5 pre-check (a child
    /// process) as every HDF5 file SeqCell opens; no plugin is needed or loaded.
    public static func read(path: String) throws -> CheckpointDocument {
        let file = try H5File(opening: path)
        let root = try file.root
        let r = Reader(path: path)
        let header = try r.header(root)
        let m = try root.group("model")
        let embedding = try r.embedding(m)
        let inputSize: Int
        if let embedding {
            let dimension = embedding.weight.shape[1]
            inputSize = try m.hasAttribute("input_size") ? try m.intAttribute("input_size") : dimension
            guard inputSize == dimension else {
                throw r.error("/model", "input_size is \(inputSize) but the embedding gives \(dimension)-wide vectors")
            }
        } else {
            inputSize = try m.intAttribute("input_size")
        }
        let numLayers = try m.intAttribute("num_layers")
        guard inputSize >= 1 else { throw r.error("/model", "input_size must be >= 1, got \(inputSize)") }
        let lg = try m.group("layers")
        let names = try lg.memberNames()
        guard numLayers >= 1, names.count == numLayers else {
            throw r.error("/model", "num_layers is \(numLayers) but /model/layers has \(names.count) groups (\(names.joined(separator: ", ")))")
        }
        var layers: [Layer] = []
        for k in 0..<numLayers {
            let lname = CheckpointFormat.layerName(k, count: numLayers)
            // A present but damaged group throws "damaged" from the lookup; only absence is "missing".
            guard let layerGroup = try r.optionalGroup(lg, lname) else {
                throw r.error("/model/layers", "layer group '\(lname)' is missing (groups: \(names.joined(separator: ", ")))")
            }
            layers.append(try r.layer(layerGroup, name: lname, at: "/model/layers/\(lname)"))
        }
        var head: Head? = nil
        if let hg = try r.optionalGroup(m, "head") {
            let actName = try hg.stringAttribute("activation")
            guard let act = HeadActivation(rawValue: actName) else {
                throw r.error("/model/head", "unknown activation '\(actName)'")
            }
            head = Head(activation: act, weight: try r.float32(hg, "weight", at: "/model/head"),
                        bias: try r.float32(hg, "bias", at: "/model/head"))
        }
        var outputSteps = OutputSteps.all
        if let steps = try Reader.optionalString(m, "output_steps") {
            guard let s = OutputSteps(rawValue: steps) else {
                throw r.error("/model", "output_steps '\(escapingControls(steps))' is not all or last")
            }
            outputSteps = s
        }
        let source = try r.source(m)
        var document = CheckpointDocument(
            path: path, header: header, inputSize: inputSize, layers: layers, head: head, embedding: embedding,
            outputSteps: outputSteps, source: source, training: nil)
        if let tg = try r.optionalGroup(root, "training") {
            document.training = try r.training(tg, parameters: document.parameters)
        }
        return document
    }

    /// The reading rules of docs/FORMAT.md for one file.
    struct Reader {
        var path: String

        func error(_ where_: String, _ message: String) -> SeqCellError {
            SeqCellError(.checkpoint, "'\(path)' \(where_): \(message)")
        }

        /// Group `name` of `g`, or `nil` when there is no such member. A member that is present but
        /// damaged, not a hard link, or not a group is an error, never taken as absent.
        func optionalGroup(_ g: H5Group, _ name: String) throws -> H5Group? {
            switch try g.member(name) {
            case nil: return nil
            case .group: return try g.group(name)
            case .dataset?, .other?:
                throw error(g.memberPath(name), "is not a group")
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

        /// The root attributes: format name, version (major 1), `requires` (all known).
        func header(_ root: H5Group) throws -> Header {
            guard let name = try Reader.optionalString(root, "format"), name == CheckpointFormat.name else {
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
            var requires: [String] = []
            if try root.hasAttribute("requires") {
                requires = try root.stringArrayAttribute("requires")
                let unknown = requires.filter { !CheckpointFormat.knownRequirements.contains($0) }
                guard unknown.isEmpty else {
                    throw SeqCellError(.checkpoint,
                        "'\(path)' needs \(unknown.map { "'\($0)'" }.joined(separator: ", ")), which this SeqCell (format "
                        + "\(CheckpointFormat.major).\(CheckpointFormat.minor)) cannot read: the file was written by a newer SeqCell; upgrade to read it")
                }
            }
            return Header(formatVersion: version, creator: try Reader.optionalString(root, "creator") ?? "",
                          created: try Reader.optionalString(root, "created") ?? "", requires: requires)
        }

        /// The embedding stage under `/model/embedding`, or nil when the group is absent.
        func embedding(_ g: H5Group) throws -> EmbeddingTable? {
            guard let eg = try optionalGroup(g, "embedding") else { return nil }
            let at = "/model/embedding"
            let weight = try float32(eg, "weight", at: at)
            guard weight.rank == 2, weight.shape[0] >= 1, weight.shape[1] >= 1 else {
                throw error("\(at)/weight", "shape \(weight.shape) is not [vocab_size, embedding_dim] with both >= 1")
            }
            for (name, value) in [("vocab_size", weight.shape[0]), ("embedding_dim", weight.shape[1])] where try eg.hasAttribute(name) {
                let stated = try eg.intAttribute(name)
                guard stated == value else {
                    throw error(at, "\(name) is \(stated) but weight is \(weight.shape)")
                }
            }
            var padding: Int? = nil
            if try eg.hasAttribute("padding_idx") {
                let p = try eg.intAttribute("padding_idx")
                guard (0..<weight.shape[0]).contains(p) else {
                    throw error(at, "padding_idx \(p) is outside the vocabulary 0...\(weight.shape[0] - 1)")
                }
                padding = p
            }
            return EmbeddingTable(weight: weight, paddingIndex: padding)
        }

        func layer(_ g: H5Group, name: String, at where_: String) throws -> Layer {
            let dirName = try g.stringAttribute("direction")
            guard let direction = Direction(rawValue: dirName) else {
                throw error(where_, "direction '\(dirName)' is not forward, reverse or bidirectional")
            }
            var merge = MergeMode.concat
            if try g.hasAttribute("merge_mode") {
                let m = try g.stringAttribute("merge_mode")
                guard let mm = MergeMode(rawValue: m) else {
                    throw error(where_, "merge_mode '\(m)' is not concat, sum, mul or ave")
                }
                merge = mm
            }
            let groups: [String] = switch direction {
            case .forward: ["forward"]
            case .reverse: ["backward"]
            case .bidirectional: ["forward", "backward"]
            }
            var cells: [CellEntry] = []
            for dname in groups {
                guard let cellGroup = try optionalGroup(g, dname) else {
                    throw error(where_, "a \(direction.rawValue) layer needs a '\(dname)' group")
                }
                cells.append(try cell(cellGroup, name: dname, at: "\(where_)/\(dname)"))
            }
            return Layer(name: name, direction: direction, mergeMode: merge, cells: cells)
        }

        func cell(_ g: H5Group, name: String, at where_: String) throws -> CellEntry {
            let id = try g.stringAttribute("cell")
            let versionText = try g.stringAttribute("cell_version")
            guard let version = CellVersion(versionText) else {
                throw error(where_, "cell_version '\(versionText)' is not MAJOR.MINOR.PATCH")
            }
            let inputSize = try g.intAttribute("input_size")
            let hiddenSize = try g.intAttribute("hidden_size")
            var options: [(String, OptionAttribute)] = []
            if let og = try optionalGroup(g, "options") {
                for option in try og.attributeNames() { options.append((option, try optionAttribute(og, option))) }
            }
            var parameters: [Parameter] = []
            var others: [String] = []
            for member in try g.memberNames() where member != "options" {
                guard try g.member(member) == .dataset else { others.append(member); continue }
                let value = try float32(g, member, at: where_)
                let ds = try g.dataset(member)
                parameters.append(Parameter(name: member, value: value,
                                            gateOrder: try Reader.optionalString(ds, "gate_order") ?? "",
                                            role: try Reader.optionalString(ds, "role") ?? ""))
            }
            return CellEntry(name: name, cell: id, cellVersionText: versionText, cellVersion: version,
                             inputSize: inputSize, hiddenSize: hiddenSize, options: options,
                             parameters: parameters, otherMembers: others)
        }

        /// An option attribute: a string, an integer or a number; another type or shape is an
        /// error naming the attribute (the message of the last reading tried).
        func optionAttribute(_ og: H5Group, _ name: String) throws -> OptionAttribute {
            func typed<T>(_ read: () throws -> T) throws -> T? {
                do { return try read() } catch let e as HDF5Error where e.code == .wrongType { return nil }
            }
            if let s = try typed({ try og.stringAttribute(name) }) { return .string(s) }
            if let i = try typed({ try og.intAttribute(name) }) { return .integer(i) }
            return .number(try og.doubleAttribute(name))
        }

        /// A float32 dataset; any other element type is an error naming it.
        func float32(_ g: H5Group, _ name: String, at where_: String) throws -> Tensor {
            switch try g.member(name) {
            case .dataset?: break
            case nil: throw error(where_, "dataset '\(name)' is missing")
            case .group?, .other?: throw error("\(where_)/\(name)", "is not a dataset")
            }
            let ds = try g.dataset(name)
            guard ds.elementKind == .float32 else {
                throw error("\(where_)/\(name)",
                    "dtype is \(ds.elementKind); SeqCell checkpoints store float32 (in h5py: dtype='float32')")
            }
            // Uninitialised: HDF5 writes every element, so zero-filling first would touch the
            // memory twice (loading ran at half h5py's speed with it; docs/PERFORMANCE.md).
            let data = try [Float](unsafeUninitializedCapacity: ds.count) { buffer, initialized in
                try ds.readFloats(into: buffer)
                initialized = buffer.count
            }
            return Tensor(shape: ds.shape, data: data)
        }

        func source(_ m: H5Group) throws -> ModelSource? {
            guard let sg = try optionalGroup(m, "source") else { return nil }
            guard let framework = try Reader.optionalString(sg, "framework") else {
                throw error("/model/source", "needs a string attribute 'framework'")
            }
            let source = ModelSource(framework: framework, prefix: try Reader.optionalString(sg, "prefix"),
                                     headName: try Reader.optionalString(sg, "head_name"),
                                     embeddingName: try Reader.optionalString(sg, "embedding_name"))
            for (name, value) in [("framework", source.framework), ("prefix", source.prefix), ("head_name", source.headName),
                                  ("embedding_name", source.embeddingName)] {
                guard let value else { continue }
                guard value.utf8.count <= ModelSource.maximumNameLength,
                      !value.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
                    throw error("/model/source", "'\(name)' must be at most \(ModelSource.maximumNameLength) bytes without control characters")
                }
            }
            return source
        }

        /// `/training`; a slot tensor is read where a parameter of the document has its path, and
        /// must have that parameter's shape.
        func training(_ g: H5Group, parameters: [(path: String, value: Tensor)]) throws -> Training {
            var slots: [String: [String: Tensor]] = [:]
            if let sg = try optionalGroup(g, "slots") {
                for slot in try sg.memberNames() {
                    let one = try sg.group(slot)
                    var tensors: [String: Tensor] = [:]
                    for p in parameters {
                        let parts = p.path.split(separator: "/").map(String.init)
                        guard let last = parts.last else { continue }
                        var parent = one
                        var found = true
                        for part in parts.dropLast() {
                            guard let next = try optionalGroup(parent, part) else { found = false; break }
                            parent = next
                        }
                        guard found, try parent.member(last) != nil else { continue }
                        let at = "/training/slots/\(slot)/" + parts.dropLast().joined(separator: "/")
                        let t = try float32(parent, last, at: at)
                        guard t.shape == p.value.shape else {
                            throw error("\(at)/\(last)", "shape \(t.shape) does not match its parameter: expected \(p.value.shape)")
                        }
                        tensors[p.path] = t
                    }
                    slots[slot] = tensors
                }
            }
            return Training(
                step: try g.intAttribute("step"), optimizer: try g.stringAttribute("optimizer"),
                config: try g.stringAttribute("config"),
                rng: try g.member("rng") != nil ? try g.dataset("rng").readBytes() : [], slots: slots)
        }
    }
}

// MARK: Binding

extension CheckpointDocument {
    func error(_ where_: String, _ message: String) -> SeqCellError {
        SeqCellError(.checkpoint, "'\(path)' \(where_): \(message)")
    }

    /// The checkpoint this document describes: every cell from `registry` by id and version.
    public func bind(registry: PluginRegistry) throws -> Checkpoint {
        let model = try bindModel(registry: registry)
        var c = Checkpoint(model: model, training: training.map(bindTraining))
        c.formatVersion = header.formatVersion
        c.creator = header.creator
        return c
    }

    /// The model, every layer bound.
    public func bindModel(registry: PluginRegistry) throws -> Model {
        try model(layers: try layers.indices.map { try bindLayer($0, registry: registry) })
    }

    /// Layer `k` with its cells from `registry`: the cell found by id and version, the
    /// options checked against its declaration, the datasets against its parameters.
    public func bindLayer(_ k: Int, registry: PluginRegistry) throws -> RecurrentLayer {
        precondition(layers.indices.contains(k), "layer \(k) of a document with \(layers.count)")
        let layer = layers[k]
        let where_ = "/model/layers/\(layer.name)"
        let cells = try layer.cells.map { try bindCell($0, at: "\(where_)/\($0.name)", registry: registry) }
        do {
            return try RecurrentLayer(direction: layer.direction, mergeMode: layer.mergeMode, cells: cells)
        } catch let e as SeqCellError {
            throw error(where_, e.message)
        }
    }

    func bindCell(_ entry: CellEntry, at where_: String, registry: PluginRegistry) throws -> DirectionalCell {
        let id = entry.cell
        let type: CellType
        do {
            type = try registry.cellType(id, satisfying: entry.cellVersion)
        } catch let e as SeqCellError {
            throw error(where_, e.message)
        }
        var options: [String: OptionValue] = [:]
        for (name, value) in entry.options {
            guard let o = type.options.first(where: { $0.name == name }) else {
                let known = type.options.map(\.name).joined(separator: ", ")
                throw error("\(where_)/options", "cell '\(id)' has no option '\(name)' (its options: \(known.isEmpty ? "none" : known))")
            }
            switch (o.kind, value) {
            case (.int, .integer(let v)): options[name] = .int(v)
            case (.float, .number(let v)): options[name] = .float(v)
            case (.float, .integer(let v)): options[name] = .float(Double(v))
            case (.choice, .string(let v)): options[name] = .choice(v)
            case (.int, _), (.float, _), (.choice, _):
                let expected = switch o.kind { case .int: "an integer"; case .float: "a number"; case .choice: "a string" }
                throw error("\(where_)/options", "option '\(name)' of cell '\(id)' must be \(expected), got '\(escapingControls(value.text))'")
            }
        }
        let cell: Cell
        do {
            cell = try type.instantiate(inputSize: entry.inputSize, hiddenSize: entry.hiddenSize, options: options)
        } catch let e as SeqCellError {
            throw error(where_, e.message)
        }
        let expected = Set(cell.params.map(\.name))
        for name in entry.parameters.map(\.name) + entry.otherMembers where !expected.contains(name) {
            throw error(where_, "unexpected '\(name)': cell '\(id)' with these options has parameters \(cell.params.map(\.name).joined(separator: ", "))")
        }
        var params: [Tensor] = []
        for info in cell.params {
            guard let stored = entry.parameters.first(where: { $0.name == info.name }) else {
                if entry.otherMembers.contains(info.name) { throw error("\(where_)/\(info.name)", "is not a dataset") }
                // An optional parameter (ABI 1.2) a file omits stands for its constant (or zeros).
                guard info.optional else { throw error(where_, "dataset '\(info.name)' is missing") }
                params.append(Tensor(shape: info.shape, data: [Float](repeating: info.omittedValue, count: info.count)))
                continue
            }
            guard stored.value.shape == info.shape else {
                throw error("\(where_)/\(info.name)", "shape \(stored.value.shape) does not match cell '\(id)' "
                            + "(input \(entry.inputSize), hidden \(entry.hiddenSize)): expected \(info.shape)")
            }
            params.append(stored.value)
        }
        return try DirectionalCell(cell: cell, params: params)
    }

    /// The head, or nil when the file has none.
    public func bindHead() throws -> LinearHead? {
        try head.map { try LinearHead(weight: $0.weight, bias: $0.bias, activation: $0.activation) }
    }

    /// The embedding stage, or nil when the file has none.
    public func bindEmbedding() throws -> Embedding? {
        try embedding.map { try Embedding(weight: $0.weight, paddingIndex: $0.paddingIndex) }
    }

    /// The model of `layers` (bound from this document, or some of them replaced) with this
    /// document's head, embedding stage, output steps and source; joins are checked.
    public func model(layers: [RecurrentLayer]) throws -> Model {
        let embedding = try bindEmbedding()
        let head = try bindHead()
        var model: Model
        do {
            if let embedding {
                model = try Model(embedding: embedding, layers: layers, head: head)
            } else {
                model = try Model(inputSize: inputSize, layers: layers, head: head)
            }
        } catch let e as SeqCellError {
            throw error("/model", e.message)
        }
        model.outputSteps = outputSteps
        model.source = source
        return model
    }

    /// The training state; slots were read at the document's parameter paths, which binding
    /// found to be the model's (an optional parameter the file omits has no slot).
    func bindTraining(_ t: Training) -> TrainingState {
        TrainingState(step: t.step, optimizer: t.optimizer, config: t.config, rng: t.rng, slots: t.slots)
    }
}

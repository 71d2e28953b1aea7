import SeqCellBase
import SeqCellHost
import SeqCellModel

/// What a checkpoint holds, read without any plugin: enough to describe a file whose cells
/// are not installed here.
public struct CheckpointSummary: Sendable {
    public struct Dataset: Sendable {
        public var name: String
        public var shape: [Int]
        public var dtype: String
        public var gateOrder: String
        public var count: Int { shape.reduce(1, *) }
    }

    public struct Direction: Sendable {
        public var name: String
        public var cell: String
        public var cellVersion: String
        public var inputSize: Int
        public var hiddenSize: Int
        public var options: [(name: String, value: String)]
        public var datasets: [Dataset]
    }

    public struct Layer: Sendable {
        public var name: String
        public var direction: String
        public var mergeMode: String
        public var directions: [Direction]
    }

    public var path: String
    public var formatVersion: [Int]
    public var creator: String
    public var created: String
    public var inputSize: Int
    public var layers: [Layer]
    public var head: (activation: String, weight: [Int], bias: [Int])?
    /// The embedding stage: its weight's shape [vocabulary, dimension] and padding index.
    public var embedding: (weight: [Int], paddingIndex: Int?)?
    public var trainingStep: Int?
    public var trainingOptimizer: String?
    /// `/model@output_steps` ("all" when absent).
    public var outputSteps: String = "all"
    /// `/model/source` attributes (framework, prefix, head_name), as stored.
    public var source: [(name: String, value: String)] = []

    public var parameterCount: Int {
        layers.reduce(0) { $0 + $1.directions.reduce(0) { $0 + $1.datasets.reduce(0) { $0 + $1.count } } }
            + (head.map { $0.weight.reduce(1, *) + $0.bias.reduce(1, *) } ?? 0)
            + (embedding.map { $0.weight.reduce(1, *) } ?? 0)
    }

    /// Reads the structure; errors name the file and object as `Checkpoint.load` does.
    public static func read(path: String) throws -> CheckpointSummary {
        let file = try H5File(opening: path)
        let root = try file.root
        let version = try Checkpoint.readHeader(root, path: path)
        try Checkpoint.checkRequirements(root, path: path)
        let m = try root.group("model")
        var embedding: ([Int], Int?)? = nil
        if let e = try Checkpoint.optionalGroup(m, "embedding", path: path) {
            embedding = (try e.dataset("weight").shape, try e.hasAttribute("padding_idx") ? try e.intAttribute("padding_idx") : nil)
        }
        let lg = try m.group("layers")
        var layers: [Layer] = []
        // Damage and non-hard links throw (from `member`, `optionalGroup`); only absence and
        // other object kinds are skipped.
        for lname in try lg.memberNames() where try lg.member(lname) == .group {
            let g = try lg.group(lname)
            var dirs: [Direction] = []
            for dname in ["forward", "backward"] {
                guard let d = try Checkpoint.optionalGroup(g, dname, path: path) else { continue }
                var options: [(String, String)] = []
                if let og = try Checkpoint.optionalGroup(d, "options", path: path) {
                    for o in try og.attributeNames() {
                        options.append((o, try optionText(og, o)))
                    }
                }
                var datasets: [Dataset] = []
                for name in try d.memberNames() where try d.member(name) == .dataset {
                    let ds = try d.dataset(name)
                    let gates = try Checkpoint.optionalString(ds, "gate_order") ?? ""
                    datasets.append(Dataset(name: name, shape: ds.shape, dtype: "\(ds.elementKind)", gateOrder: gates))
                }
                dirs.append(Direction(
                    name: dname, cell: try d.stringAttribute("cell"), cellVersion: try d.stringAttribute("cell_version"),
                    inputSize: try d.intAttribute("input_size"), hiddenSize: try d.intAttribute("hidden_size"),
                    options: options, datasets: datasets))
            }
            let merge = try g.hasAttribute("merge_mode") ? try g.stringAttribute("merge_mode") : "concat"
            layers.append(Layer(name: lname, direction: try g.stringAttribute("direction"), mergeMode: merge, directions: dirs))
        }
        var head: (String, [Int], [Int])? = nil
        if let h = try Checkpoint.optionalGroup(m, "head", path: path) {
            head = (try h.stringAttribute("activation"), try h.dataset("weight").shape, try h.dataset("bias").shape)
        }
        var step: Int? = nil, optimizer: String? = nil
        if let t = try Checkpoint.optionalGroup(root, "training", path: path) {
            step = try t.hasAttribute("step") ? try t.intAttribute("step") : nil
            optimizer = try Checkpoint.optionalString(t, "optimizer")
        }
        var summary = CheckpointSummary(
            path: path, formatVersion: version, creator: try Checkpoint.optionalString(root, "creator") ?? "",
            created: try Checkpoint.optionalString(root, "created") ?? "",
            inputSize: try embedding.flatMap { e in try m.hasAttribute("input_size") ? nil : e.0.last } ?? m.intAttribute("input_size"),
            layers: layers, head: head, embedding: embedding, trainingStep: step, trainingOptimizer: optimizer)
        summary.outputSteps = try Checkpoint.optionalString(m, "output_steps") ?? "all"
        if let sg = try Checkpoint.optionalGroup(m, "source", path: path) {
            for name in ["framework", "prefix", "head_name", "embedding_name"] {
                if let value = try Checkpoint.optionalString(sg, name) { summary.source.append((name, value)) }
            }
        }
        return summary
    }
}

/// An option attribute as text: a string, an integer or a number (another type reads "?");
/// a damaged attribute throws.
private func optionText(_ group: H5Group, _ name: String) throws -> String {
    func typed<T>(_ read: () throws -> T) throws -> T? {
        do { return try read() } catch let error as HDF5Error where error.code == .wrongType { return nil }
    }
    if let text = try typed({ try group.stringAttribute(name) }) { return text }
    if let value = try typed({ try group.intAttribute(name) }) { return String(value) }
    if let value = try typed({ try group.doubleAttribute(name) }) { return String(value) }
    return "?"
}

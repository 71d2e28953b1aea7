import SeqCellBase
import SeqCellHost

/// Which parameter of a model an entry is: typed, so nothing needs to parse a path.
public enum ParameterKey: Hashable, Sendable, CustomStringConvertible {
    /// Parameter `parameter` (the cell's own order) of direction `direction` (0: forward, or
    /// the only direction; 1: backward) of layer `layer`.
    case cell(layer: Int, direction: Int, parameter: Int)
    /// The linear head's weight [O, D] and bias [O].
    case headWeight, headBias
    /// The embedding table [vocabulary, dimension].
    case embedding

    public var description: String {
        switch self {
        case .cell(let k, let d, let p): return "layer \(k) direction \(d) parameter \(p)"
        case .headWeight: return "head weight"
        case .headBias: return "head bias"
        case .embedding: return "embedding table"
        }
    }
}

/// One parameter of a model: where it is (typed key and checkpoint path), its shape, and
/// where its values sit in the model's flat parameter layout.
public struct ParameterEntry: Equatable, Sendable {
    public let key: ParameterKey
    /// The checkpoint path under `/model` (and under each `/training/slots/<slot>`), e.g.
    /// `layers/00/forward/W_ih`, `head/weight`, `embedding/weight`.
    public let path: String
    public let shape: [Int]
    /// First element in the flat layout.
    public let offset: Int
    /// Number of elements.
    public let count: Int
    /// The cell's description of the parameter (role, gate order); nil for the head and the
    /// embedding.
    public let info: ParamInfo?

    /// The elements of the flat layout this parameter occupies.
    public var range: Range<Int> { offset..<(offset + count) }

    /// Number of gate blocks its rows split into (`info.gateOrder`), 1 when it has one block
    /// or is not a cell parameter.
    public var gateCount: Int {
        guard let order = info?.gateOrder, !order.isEmpty else { return 1 }
        return order.split(separator: ",").count
    }
}

/// A model's parameters as one keyed, ordered structure, built once per model structure:
/// layers in order, each layer's directions (forward, then backward), each cell's parameters
/// in the cell's own order, then the head (weight, bias), then the embedding table.
///
/// The order, the checkpoint paths and the flat layout (one contiguous run of Float per
/// parameter, in order, no gaps) are written here only. Parameters, gradients and optimizer
/// slots are all laid out by it, so clipping, the all-reduce and the optimizer run over one
/// buffer each; checkpoints, parameter health and the exporters take their order and names
/// from it.
public struct ParameterTree: Equatable, Sendable {
    public let entries: [ParameterEntry]
    /// Elements in the flat layout (the sum of every entry's count).
    public let elementCount: Int

    /// The tree of `model`'s current structure.
    public init(_ model: Model) {
        var entries: [ParameterEntry] = []
        var offset = 0
        func add(_ key: ParameterKey, _ path: String, _ shape: [Int], _ info: ParamInfo?) {
            let n = shape.reduce(1, *)
            entries.append(ParameterEntry(key: key, path: path, shape: shape, offset: offset, count: n, info: info))
            offset += n
        }
        for k in model.layers.indices {
            let layer = model.layers[k]
            for d in layer.cells.indices {
                let dc = layer.cells[d]
                for p in dc.params.indices {
                    let info = p < dc.cell.params.count ? dc.cell.params[p] : nil
                    add(.cell(layer: k, direction: d, parameter: p),
                        Self.cellPath(layer: k, of: model.layers.count, direction: layer.directionName(d), name: info?.name ?? "\(p)"),
                        dc.params[p].shape, info)
                }
            }
        }
        if let head = model.head {
            add(.headWeight, Self.headWeightPath, head.weight.shape, nil)
            add(.headBias, Self.headBiasPath, head.bias.shape, nil)
        }
        if let e = model.embedding { add(.embedding, Self.embeddingPath, e.weight.shape, nil) }
        self.entries = entries
        self.elementCount = offset
    }

    // MARK: Paths (the one place they are spelled)

    /// `layers/<NN>/<forward|backward>/<name>`: the checkpoint path of a cell parameter (and,
    /// with another final name, of a cell's group members such as its states).
    public static func cellPath(layer k: Int, of layerCount: Int, direction: String, name: String) -> String {
        "layers/\(CheckpointFormat.layerName(k, count: layerCount))/\(direction)/\(name)"
    }

    public static let headWeightPath = "head/weight"
    public static let headBiasPath = "head/bias"
    public static let embeddingPath = "embedding/weight"

    // MARK: Look-up

    /// Entry of a checkpoint path, or nil.
    public func entry(path: String) -> ParameterEntry? { entries.first { $0.path == path } }

    /// Entry of a key, or nil.
    public func entry(_ key: ParameterKey) -> ParameterEntry? { entries.first { $0.key == key } }

    /// The entries of one layer direction, in the cell's parameter order.
    public func entries(layer k: Int, direction d: Int) -> [ParameterEntry] {
        entries.filter {
            if case .cell(let l, let dd, _) = $0.key { return l == k && dd == d }
            return false
        }
    }

    /// Whether `model` still has this structure (the same parameters with the same shapes),
    /// without building a path.
    public func fits(_ model: Model) -> Bool {
        var i = 0
        func next(_ key: ParameterKey, _ shape: [Int]) -> Bool {
            guard i < entries.count, entries[i].key == key, entries[i].shape == shape else { return false }
            i += 1
            return true
        }
        for k in model.layers.indices {
            for d in model.layers[k].cells.indices {
                for (p, t) in model.layers[k].cells[d].params.enumerated() where !next(.cell(layer: k, direction: d, parameter: p), t.shape) {
                    return false
                }
            }
        }
        if let h = model.head, !next(.headWeight, h.weight.shape) || !next(.headBias, h.bias.shape) { return false }
        if let e = model.embedding, !next(.embedding, e.weight.shape) { return false }
        return i == entries.count
    }

    // MARK: Flat layout

    /// Visits every parameter tensor of `model` with its entry, in order. `model` must fit.
    package func forEachParameter(of model: Model, _ body: (ParameterEntry, Tensor) -> Void) {
        for e in entries {
            switch e.key {
            case .cell(let k, let d, let p): body(e, model.layers[k].cells[d].params[p])
            case .headWeight: body(e, model.head!.weight)
            case .headBias: body(e, model.head!.bias)
            case .embedding: body(e, model.embedding!.weight)
            }
        }
    }

    /// Copies `model`'s parameters into `flat` (resized to `elementCount` if needed). `model`
    /// must fit (`fits`).
    public func gatherParameters(of model: Model, into flat: inout [Float]) {
        if flat.count != elementCount { flat = [Float](repeating: 0, count: elementCount) }
        flat.withUnsafeMutableBufferPointer { out in
            forEachParameter(of: model) { e, t in Self.copy(t.data, into: out, at: e) }
        }
    }

    /// The model's parameters as one flat buffer.
    public func flatParameters(of model: Model) -> [Float] {
        var flat: [Float] = []
        gatherParameters(of: model, into: &flat)
        return flat
    }

    /// Writes `flat` (this layout) back into `model`'s parameter tensors, in place.
    public func scatterParameters(_ flat: [Float], into model: inout Model) throws {
        guard flat.count == elementCount else {
            throw SeqCellError(.shape, "\(flat.count) parameter values for a model with \(elementCount)")
        }
        guard fits(model) else { throw SeqCellError(.shape, "the model's parameters no longer have this layout") }
        flat.withUnsafeBufferPointer { src in
            for e in entries {
                switch e.key {
                case .cell(let k, let d, let p): Self.copy(src, at: e, into: &model.layers[k].cells[d].params[p].data)
                case .headWeight: Self.copy(src, at: e, into: &model.head!.weight.data)
                case .headBias: Self.copy(src, at: e, into: &model.head!.bias.data)
                case .embedding: Self.copy(src, at: e, into: &model.embedding!.weight.data)
                }
            }
        }
    }

    /// Copies the parameter gradients of `g` into `flat` (resized to `elementCount` if needed),
    /// checking each against its parameter's shape; a missing head or embedding gradient
    /// counts as zero.
    public func gatherGradients(_ g: Model.Gradients, into flat: inout [Float]) throws {
        if flat.count != elementCount { flat = [Float](repeating: 0, count: elementCount) }
        try flat.withUnsafeMutableBufferPointer { out in
            for e in entries {
                guard let t = Self.gradient(of: e, in: g) else {
                    if case .cell = e.key { throw SeqCellError(.shape, "no gradient for \(e.path)") }
                    for j in e.range { out[j] = 0 }
                    continue
                }
                guard t.shape == e.shape, t.count == e.count else {
                    throw SeqCellError(.shape, "the gradient of \(e.path) is \(t.shape); the parameter is \(e.shape)")
                }
                Self.copy(t.data, into: out, at: e)
            }
        }
    }

    /// The gradient of entry `e` in `g`, or nil when `g` has none.
    public static func gradient(of e: ParameterEntry, in g: Model.Gradients) -> Tensor? {
        switch e.key {
        case .cell(let k, let d, let p):
            return k < g.params.count && d < g.params[k].count && p < g.params[k][d].count ? g.params[k][d][p] : nil
        case .headWeight: return g.head?.weight
        case .headBias: return g.head?.bias
        case .embedding: return g.embedding
        }
    }

    /// The flat buffer split into one tensor per entry, in order.
    public func tensors(_ flat: [Float]) -> [Tensor] {
        precondition(flat.count == elementCount, "a flat buffer of \(flat.count) values for a layout of \(elementCount)")
        return entries.map { Tensor(shape: $0.shape, data: Array(flat[$0.range])) }
    }

    /// One flat buffer from one tensor per entry, in order; shapes must match.
    public func flatten(_ tensors: [Tensor], what: String) throws -> [Float] {
        guard tensors.count == entries.count else {
            throw SeqCellError(.shape, "\(what): \(tensors.count) tensors for \(entries.count) parameters")
        }
        var flat = [Float](repeating: 0, count: elementCount)
        try flat.withUnsafeMutableBufferPointer { out in
            for (e, t) in zip(entries, tensors) {
                guard t.shape == e.shape, t.count == e.count else {
                    throw SeqCellError(.shape, "\(what) for \(e.path) is \(t.shape); the parameter is \(e.shape)")
                }
                Self.copy(t.data, into: out, at: e)
            }
        }
        return flat
    }

    private static func copy(_ src: [Float], into out: UnsafeMutableBufferPointer<Float>, at e: ParameterEntry) {
        precondition(src.count == e.count && e.offset >= 0 && e.offset + e.count <= out.count)
        src.withUnsafeBufferPointer { s in
            guard let sb = s.baseAddress, let ob = out.baseAddress, e.count > 0 else { return }
            (ob + e.offset).update(from: sb, count: e.count)
        }
    }

    private static func copy(_ src: UnsafeBufferPointer<Float>, at e: ParameterEntry, into dst: inout [Float]) {
        precondition(dst.count == e.count && e.offset >= 0 && e.offset + e.count <= src.count)
        dst.withUnsafeMutableBufferPointer { d in
            guard let db = d.baseAddress, let sb = src.baseAddress, e.count > 0 else { return }
            db.update(from: sb + e.offset, count: e.count)
        }
    }
}

extension Model {
    /// The parameter tree of the model's current structure (built on each call: keep it while
    /// the structure stays, as the trainer does).
    public var parameterTree: ParameterTree { ParameterTree(self) }
}

import SeqCellBase
import SeqCellHost

/// One layer of a model spec, written `CELL:HIDDEN[:DIRECTION[:MERGE]][,key=value…]`:
///
///     lstm:64
///     gru:32:bidirectional:sum,reset=before
///     lstm:32:bi:concat,proj_size=16,backward_cell=gru,backward_hidden=24
///
/// DIRECTION is forward (f, fwd), reverse (r, rev) or bidirectional (b, bi); MERGE is
/// concat (default), sum, mul or ave. Options apply to the forward cell, and to the backward
/// cell too unless `backward_cell` names another kind; `backward.NAME=value` sets an option
/// of the backward cell alone.
public struct LayerSpec: Equatable, Sendable, CustomStringConvertible {
    public var cell: String
    public var hiddenSize: Int
    public var direction: Direction
    public var mergeMode: MergeMode
    public var options: [String: String]
    public var backwardCell: String?
    public var backwardHiddenSize: Int?
    public var backwardOptions: [String: String]

    public init(cell: String, hiddenSize: Int, direction: Direction = .forward, mergeMode: MergeMode = .concat,
                options: [String: String] = [:], backwardCell: String? = nil, backwardHiddenSize: Int? = nil,
                backwardOptions: [String: String] = [:]) {
        self.cell = cell
        self.hiddenSize = hiddenSize
        self.direction = direction
        self.mergeMode = mergeMode
        self.options = options
        self.backwardCell = backwardCell
        self.backwardHiddenSize = backwardHiddenSize
        self.backwardOptions = backwardOptions
    }

    public init(parsing text: String) throws {
        func bad(_ why: String) -> SeqCellError {
            SeqCellError(.invalidArgument, "layer spec '\(text)': \(why) (form: CELL:HIDDEN[:DIRECTION[:MERGE]][,option=value...])")
        }
        let parts = text.split(separator: ",", omittingEmptySubsequences: false).map { String($0).trimmed }
        let head = parts[0].split(separator: ":", omittingEmptySubsequences: false).map { String($0).trimmed }
        guard head.count >= 2, head.count <= 4, !head[0].isEmpty else { throw bad("expected CELL:HIDDEN") }
        guard let h = Int(head[1]), h >= 1 else { throw bad("hidden size '\(head[1])' is not a positive integer") }
        cell = head[0]
        hiddenSize = h
        direction = .forward
        mergeMode = .concat
        if head.count >= 3 {
            switch head[2] {
            case "forward", "fwd", "f": direction = .forward
            case "reverse", "rev", "r": direction = .reverse
            case "bidirectional", "bi", "b": direction = .bidirectional
            default: throw bad("direction '\(head[2])' is not forward, reverse or bidirectional")
            }
        }
        if head.count == 4 {
            guard direction == .bidirectional else { throw bad("a merge mode needs a bidirectional layer") }
            guard let m = MergeMode(rawValue: head[3]) else { throw bad("merge mode '\(head[3])' is not concat, sum, mul or ave") }
            mergeMode = m
        }
        options = [:]
        backwardOptions = [:]
        backwardCell = nil
        backwardHiddenSize = nil
        for kv in parts.dropFirst() {
            let pair = kv.split(separator: "=", maxSplits: 1).map { String($0).trimmed }
            guard pair.count == 2, !pair[0].isEmpty, !pair[1].isEmpty else { throw bad("'\(kv)' is not option=value") }
            switch pair[0] {
            case "backward_cell": backwardCell = pair[1]
            case "backward_hidden":
                guard let v = Int(pair[1]), v >= 1 else { throw bad("backward_hidden '\(pair[1])' is not a positive integer") }
                backwardHiddenSize = v
            case let k where k.hasPrefix("backward."): backwardOptions[String(k.dropFirst("backward.".count))] = pair[1]
            default: options[pair[0]] = pair[1]
            }
        }
        if direction != .bidirectional, backwardCell != nil || backwardHiddenSize != nil || !backwardOptions.isEmpty {
            throw bad("backward_cell, backward_hidden and backward.* need a bidirectional layer")
        }
    }

    /// The canonical text of this spec.
    public var description: String {
        var s = "\(cell):\(hiddenSize):\(direction.rawValue)"
        if direction == .bidirectional { s += ":\(mergeMode.rawValue)" }
        for (k, v) in options.sorted(by: { $0.key < $1.key }) { s += ",\(k)=\(v)" }
        if let b = backwardCell { s += ",backward_cell=\(b)" }
        if let b = backwardHiddenSize { s += ",backward_hidden=\(b)" }
        for (k, v) in backwardOptions.sorted(by: { $0.key < $1.key }) { s += ",backward.\(k)=\(v)" }
        return s
    }

    /// (cell id, hidden size, textual options) for direction `i` of the layer.
    func directionConfig(_ i: Int) -> (String, Int, [String: String]) {
        guard direction == .bidirectional, i == 1 else { return (cell, hiddenSize, options) }
        let id = backwardCell ?? cell
        var opts = backwardCell == nil || backwardCell == cell ? options : [:]
        opts.merge(backwardOptions) { _, new in new }
        return (id, backwardHiddenSize ?? hiddenSize, opts)
    }
}

/// An optional linear head: `SIZE[:ACTIVATION]`, e.g. `1` or `10:softmax`.
public struct HeadSpec: Equatable, Sendable {
    public var outputSize: Int
    public var activation: HeadActivation

    public init(outputSize: Int, activation: HeadActivation = .linear) {
        self.outputSize = outputSize
        self.activation = activation
    }

    public init(parsing text: String) throws {
        let p = text.split(separator: ":").map { String($0).trimmed }
        guard (1...2).contains(p.count), let n = Int(p[0]), n >= 1 else {
            throw SeqCellError(.invalidArgument, "head spec '\(text)': expected SIZE[:ACTIVATION], e.g. 1 or 10:softmax")
        }
        var act = HeadActivation.linear
        if p.count == 2 {
            guard let a = HeadActivation(rawValue: p[1]) else {
                throw SeqCellError(.invalidArgument,
                    "head spec '\(text)': activation must be one of \(HeadActivation.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            act = a
        }
        self = HeadSpec(outputSize: n, activation: act)
    }
}

/// How fresh parameters are drawn.
public enum Initialization: String, Sendable, CaseIterable {
    /// Every parameter U(−1/√H, 1/√H), H the cell's hidden size: PyTorch's RNN/LSTM/GRU init.
    case uniform
    /// As `uniform`, but recurrent weights get orthogonal blocks (per H×H gate block).
    case orthogonal
}

extension Model {
    /// A freshly initialised model from specs, with cells looked up in `registry`.
    public static func build(
        inputSize: Int, layers specs: [LayerSpec], head: HeadSpec? = nil, registry: PluginRegistry,
        seed: UInt64 = 0, initialization: Initialization = .uniform
    ) throws -> Model {
        guard inputSize >= 1 else { throw SeqCellError(.invalidArgument, "input size must be >= 1, got \(inputSize)") }
        var rng = SplitMix64(seed: seed)
        var layers: [RecurrentLayer] = []
        var width = inputSize
        for (k, spec) in specs.enumerated() {
            do {
                var cells: [DirectionalCell] = []
                for d in 0..<spec.direction.count {
                    let (id, hidden, opts) = spec.directionConfig(d)
                    let type = try registry.cellType(id)
                    let cell = try type.instantiate(inputSize: width, hiddenSize: hidden, options: try type.parseOptions(opts))
                    cells.append(try DirectionalCell(cell: cell, params: initialParameters(cell, rng: &rng, initialization)))
                }
                let layer = try RecurrentLayer(direction: spec.direction, mergeMode: spec.mergeMode, cells: cells)
                layers.append(layer)
                width = layer.outputSize
            } catch let e as SeqCellError {
                throw SeqCellError(e.kind, "layer \(k) (\(spec)): \(e.message)")
            }
        }
        var linear: LinearHead? = nil
        if let head {
            let bound = 1 / Float(width).squareRoot()
            linear = try LinearHead(weight: rng.uniformTensor([head.outputSize, width], scale: bound),
                                    bias: rng.uniformTensor([head.outputSize], scale: bound), activation: head.activation)
        }
        return try Model(inputSize: inputSize, layers: layers, head: linear)
    }

    /// A freshly initialised model that takes token ids: an embedding stage (N(0, 1) entries, the
    /// padding row zero, as PyTorch's `nn.Embedding`) before layers built as `build` does with
    /// the embedding's dimension as input size.
    public static func build(
        embedding spec: EmbeddingSpec, layers specs: [LayerSpec], head: HeadSpec? = nil, registry: PluginRegistry,
        seed: UInt64 = 0, initialization: Initialization = .uniform
    ) throws -> Model {
        let base = try build(inputSize: spec.dimension, layers: specs, head: head, registry: registry, seed: seed,
                             initialization: initialization)
        var rng = SplitMix64(seed: seed ^ 0x656D_6265_6464_696E)  // its own stream: the layers draw as without it
        let table = try Embedding.initialized(vocabularySize: spec.vocabularySize, dimension: spec.dimension,
                                              paddingIndex: spec.paddingIndex, rng: &rng)
        return try Model(embedding: table, layers: base.layers, head: base.head)
    }

    /// Fresh parameters for one cell: U(−1/√H, 1/√H) for all, as PyTorch; optionally
    /// orthogonal square blocks for recurrent weights. A parameter whose cell declares its own
    /// initialisation (ABI 1.2: a uniform range or a constant) gets that instead.
    public static func initialParameters(_ cell: Cell, rng: inout SplitMix64, _ initialization: Initialization = .uniform) -> [Tensor] {
        let bound = 1 / Float(cell.hiddenSize).squareRoot()
        return cell.params.map { info in
            switch info.initializer {
            case .uniform(let lower, let upper):
                return Tensor(shape: info.shape, data: (0..<info.count).map { _ in rng.uniform(Float(lower), Float(upper)) })
            case .constant(let value):
                return Tensor(shape: info.shape, data: [Float](repeating: Float(value), count: info.count))
            case .role:
                break
            }
            if initialization == .orthogonal, info.role == .recurrentWeight, info.shape.count == 2 {
                return orthogonalBlocks(rows: info.shape[0], cols: info.shape[1], rng: &rng)
            }
            return rng.uniformTensor(info.shape, scale: bound)
        }
    }

    /// Stacked orthogonal blocks of `cols` columns (Gram–Schmidt on Gaussian rows).
    static func orthogonalBlocks(rows: Int, cols: Int, rng: inout SplitMix64) -> Tensor {
        var out = [Float](repeating: 0, count: rows * cols)
        var start = 0
        while start < rows {
            let n = min(cols, rows - start)
            var block = (0..<(n * cols)).map { _ in Double(rng.normal()) }
            for i in 0..<n {
                for j in 0..<i {
                    var dot = 0.0
                    for c in 0..<cols { dot += block[i * cols + c] * block[j * cols + c] }
                    for c in 0..<cols { block[i * cols + c] -= dot * block[j * cols + c] }
                }
                var norm = 0.0
                for c in 0..<cols { norm += block[i * cols + c] * block[i * cols + c] }
                norm = max(norm.squareRoot(), 1e-12)
                for c in 0..<cols { block[i * cols + c] /= norm }
            }
            for i in 0..<n { for c in 0..<cols { out[(start + i) * cols + c] = Float(block[i * cols + c]) } }
            start += n
        }
        return Tensor(shape: [rows, cols], data: out)
    }
}

extension String {
    var trimmed: String {
        var s = Substring(self)
        while s.first?.isWhitespace == true { s = s.dropFirst() }
        while s.last?.isWhitespace == true { s = s.dropLast() }
        return String(s)
    }
}

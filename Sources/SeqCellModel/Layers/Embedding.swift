import SeqCellBase
import SeqCellHost

/// Token ids, time-major `[T, B]`: what a model with an embedding stage takes as input.
/// Values index the rows of the embedding table; `Embedding.forward` checks every one.
public struct TokenIDs: Equatable, Sendable {
    /// [T, B]
    public let shape: [Int]
    /// Row-major: the id of sample b at step t is `ids[t * B + b]`.
    public let ids: [Int32]

    /// `ids.count` must equal T·B (a programming error otherwise; use `checked` for outside data).
    public init(shape: [Int], ids: [Int32]) {
        precondition(shape.count == 2 && Boundary.elementCount(shape) == ids.count,
                     "TokenIDs shape \(shape) does not hold \(ids.count) ids")
        self.shape = shape
        self.ids = ids
    }

    public var steps: Int { shape[0] }
    public var batch: Int { shape[1] }

    /// Ids from outside (a file, any integer width): the shape must be 2-D and non-empty, and every
    /// id in 0..<`vocabularySize`; a bad one is reported with its position and exact value, as
    /// `what[t, b] = 70 is outside the vocabulary 0...64` (positions in `layout` order: with
    /// `batchFirst`, `values` is [B, T] and positions read [b, t]). Returns time-major ids.
    public static func checked(shape: [Int], values: [Int64], vocabularySize: Int, batchFirst: Bool = false,
                               what: String) throws -> TokenIDs {
        let layout = batchFirst ? "[B, T]" : "[T, B]"
        guard shape.count == 2 else {
            throw SeqCellError(.shape, "\(what): token ids must be 2-D \(layout), got shape \(shape)")
        }
        guard shape[0] >= 1, shape[1] >= 1 else {
            throw SeqCellError(.shape, "\(what): token ids \(layout) = \(shape) are empty; T and B must be >= 1")
        }
        guard Boundary.elementCount(shape) == values.count else {
            throw SeqCellError(.shape, "\(what): shape \(shape) needs \(Boundary.elementCount(shape) ?? -1) ids, found \(values.count)")
        }
        let width = shape[1]
        if let bad = values.firstIndex(where: { $0 < 0 || $0 >= Int64(vocabularySize) }) {
            throw SeqCellError(.invalidArgument,
                "\(what)[\(bad / width), \(bad % width)] = \(values[bad]) is outside the vocabulary 0...\(vocabularySize - 1) "
                + "(the model's embedding has \(vocabularySize) rows)")
        }
        let narrow = values.map { Int32(truncatingIfNeeded: $0) }
        guard batchFirst else { return TokenIDs(shape: shape, ids: narrow) }
        let (B, T) = (shape[0], shape[1])
        var out = [Int32](repeating: 0, count: narrow.count)
        for b in 0..<B { for t in 0..<T { out[t * B + b] = narrow[b * T + t] } }
        return TokenIDs(shape: [T, B], ids: out)
    }

    /// The samples at `indices` (columns), in order.
    public func selecting(_ indices: [Int]) -> TokenIDs {
        let (T, B) = (steps, batch)
        var out = [Int32](repeating: 0, count: T * indices.count)
        for t in 0..<T { for (j, n) in indices.enumerated() { out[t * indices.count + j] = ids[t * B + n] } }
        return TokenIDs(shape: [T, indices.count], ids: out)
    }
}

/// A trainable lookup table from token ids to vectors, placed before a model's first recurrent
/// layer: PyTorch's `nn.Embedding` and Keras' `Embedding`. Id `k` becomes row `k` of `weight`.
/// With a `paddingIndex`, that row is initialised to zero and receives no gradient, as
/// `nn.Embedding(padding_idx=...)` does (its output is still the row, whatever it holds).
public struct Embedding: Sendable {
    /// [vocabularySize, dimension]
    public var weight: Tensor
    /// A row in 0..<vocabularySize that gets no gradient, or nil.
    public var paddingIndex: Int?

    public init(weight: Tensor, paddingIndex: Int? = nil) throws {
        self.weight = weight
        self.paddingIndex = paddingIndex
        try checkSelf()
    }

    public var vocabularySize: Int { weight.shape.first ?? 0 }
    public var dimension: Int { weight.rank == 2 ? weight.shape[1] : 0 }
    public var parameterCount: Int { weight.count }

    /// Checks the settable table and padding index.
    func checkSelf() throws {
        guard weight.rank == 2, weight.shape[0] >= 1, weight.shape[1] >= 1 else {
            throw SeqCellError(.shape, "embedding: weight must be [vocabulary, dimension] with both >= 1, got \(weight.shape)")
        }
        try Boundary.checkConsistent(weight, "embedding weight")
        if let p = paddingIndex, !(0..<weight.shape[0]).contains(p) {
            throw SeqCellError(.invalidArgument, "embedding: padding_idx \(p) is outside the vocabulary 0...\(weight.shape[0] - 1)")
        }
    }

    /// A fresh table as PyTorch draws it: every entry N(0, 1), the padding row zero.
    public static func initialized(vocabularySize: Int, dimension: Int, paddingIndex: Int? = nil,
                                   rng: inout SplitMix64) throws -> Embedding {
        guard vocabularySize >= 1, dimension >= 1, Boundary.elementCount([vocabularySize, dimension]) != nil,
              vocabularySize <= Int(Int32.max) else {
            throw SeqCellError(.invalidArgument, "embedding: vocabulary \(vocabularySize) and dimension \(dimension) must be >= 1 (vocabulary at most \(Int32.max))")
        }
        var data = (0..<(vocabularySize * dimension)).map { _ in rng.normal() }
        if let p = paddingIndex, (0..<vocabularySize).contains(p) {
            for j in 0..<dimension { data[p * dimension + j] = 0 }
        }
        return try Embedding(weight: Tensor(shape: [vocabularySize, dimension], data: data), paddingIndex: paddingIndex)
    }

    /// Checks every id against the vocabulary; the message names the position and value.
    package func check(_ tokens: TokenIDs, _ what: String = "token ids") throws {
        let V = vocabularySize
        if let bad = tokens.ids.firstIndex(where: { $0 < 0 || Int($0) >= V }) {
            throw SeqCellError(.invalidArgument,
                "\(what)[\(bad / tokens.batch), \(bad % tokens.batch)] = \(tokens.ids[bad]) is outside the vocabulary 0...\(V - 1)")
        }
    }

    /// tokens [T, B] → vectors [T, B, dimension]: row `id` of the table for every id.
    public func forward(_ tokens: TokenIDs) throws -> Tensor {
        try checkSelf()
        try check(tokens)
        let D = dimension
        var out = [Float](repeating: 0, count: tokens.ids.count * D)
        out.withUnsafeMutableBufferPointer { op in
            weight.data.withUnsafeBufferPointer { wp in
                // Every id is in 0..<V (checked above) and the table holds V·D values.
                guard let o = op.baseAddress, let w = wp.baseAddress else { return }
                for (i, id) in tokens.ids.enumerated() { (o + i &* D).update(from: w + Int(id) &* D, count: D) }
            }
        }
        return Tensor(shape: tokens.shape + [D], data: out)
    }

    /// The gradient of the table from the gradient reaching its output [T, B, dimension]:
    /// each step's gradient added to its id's row; the padding row stays zero.
    public func weightGradient(_ tokens: TokenIDs, gradOutput g: Tensor) throws -> Tensor {
        try checkSelf()
        try check(tokens)
        let D = dimension
        guard g.shape == tokens.shape + [D] else {
            throw SeqCellError(.shape, "embedding backward: the gradient is \(g.shape); the output was \(tokens.shape + [D])")
        }
        try Boundary.checkConsistent(g, "embedding output gradient")
        var dW = [Float](repeating: 0, count: weight.count)
        for (i, id) in tokens.ids.enumerated() where Int(id) != paddingIndex {
            let row = Int(id) * D, src = i * D
            for j in 0..<D { dW[row + j] += g.data[src + j] }
        }
        return Tensor(shape: weight.shape, data: dW)
    }
}

/// An embedding stage spec, `VOCAB:DIM[,padding_idx=N]`, e.g. `65:16` or `1000:32,padding_idx=0`.
/// A negative padding_idx counts from the end, as in PyTorch.
public struct EmbeddingSpec: Equatable, Sendable {
    public var vocabularySize: Int
    public var dimension: Int
    public var paddingIndex: Int?

    public init(vocabularySize: Int, dimension: Int, paddingIndex: Int? = nil) {
        self.vocabularySize = vocabularySize
        self.dimension = dimension
        self.paddingIndex = paddingIndex
    }

    public init(parsing text: String) throws {
        func bad(_ why: String) -> SeqCellError {
            SeqCellError(.invalidArgument, "embedding spec '\(text)': \(why) (form: VOCAB:DIM[,padding_idx=N], e.g. 65:16)")
        }
        let parts = text.split(separator: ",", omittingEmptySubsequences: false).map { String($0).trimmed }
        let sizes = parts[0].split(separator: ":", omittingEmptySubsequences: false).map { String($0).trimmed }
        guard sizes.count == 2 else { throw bad("expected VOCAB:DIM") }
        guard let v = Int(sizes[0]), v >= 1, v <= Int(Int32.max) else {
            throw bad("vocabulary size '\(sizes[0])' is not an integer in 1...\(Int32.max)")
        }
        guard let d = Int(sizes[1]), d >= 1, d <= 1 << 20 else { throw bad("dimension '\(sizes[1])' is not an integer in 1...\(1 << 20)") }
        vocabularySize = v
        dimension = d
        paddingIndex = nil
        for kv in parts.dropFirst() {
            let pair = kv.split(separator: "=", maxSplits: 1).map { String($0).trimmed }
            guard pair.count == 2, pair[0] == "padding_idx" else { throw bad("'\(kv)' is not padding_idx=N") }
            guard let p = Int(pair[1]), (-v..<v).contains(p) else {
                throw bad("padding_idx '\(pair[1])' is not an integer in \(-v)...\(v - 1)")
            }
            paddingIndex = p < 0 ? p + v : p
        }
    }
}

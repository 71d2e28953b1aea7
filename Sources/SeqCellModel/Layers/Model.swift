#if canImport(Glibc)
import Glibc
#endif
import SeqCellBase
import SeqCellHost

/// The activation a linear head applies after its affine map.
public enum HeadActivation: String, CaseIterable, Sendable {
    case linear, tanh, sigmoid, relu, softmax
}

/// A dense layer applied to every time step: y = act(x W^T + b).
public struct LinearHead: Sendable {
    /// [outputSize, inputSize]
    public var weight: Tensor
    /// [outputSize]
    public var bias: Tensor
    public var activation: HeadActivation

    public init(weight: Tensor, bias: Tensor, activation: HeadActivation = .linear) throws {
        guard weight.rank == 2, bias.shape == [weight.shape[0]] else {
            throw SeqCellError(.shape, "head: weight must be [O, D] and bias [O], got \(weight.shape) and \(bias.shape)")
        }
        self.weight = weight
        self.bias = bias
        self.activation = activation
    }

    public var inputSize: Int { weight.shape[1] }
    public var outputSize: Int { weight.shape[0] }

    /// Checks the head's own tensors (settable after init).
    func checkSelf() throws {
        guard weight.rank == 2, bias.shape == [weight.shape[0]] else {
            throw SeqCellError(.shape, "head: weight must be [O, D] and bias [O], got \(weight.shape) and \(bias.shape)")
        }
        try Boundary.checkConsistent(weight, "head weight")
        try Boundary.checkConsistent(bias, "head bias")
    }

    /// x: [..., inputSize] → [..., outputSize]
    public func forward(_ x: Tensor) throws -> Tensor {
        try forward(x, keepingPreActivation: false).output
    }

    /// The output and, when asked, the pre-activation x Wᵀ + b (the softmax's input).
    func forward(_ x: Tensor, keepingPreActivation: Bool) throws -> (output: Tensor, preActivation: Tensor?) {
        try checkSelf()
        let (D, O) = (inputSize, outputSize)
        guard x.rank >= 1, x.shape[x.rank - 1] == D else {
            throw SeqCellError(.shape, "head: input must be [..., \(D)], got \(x.shape)")
        }
        try Boundary.checkConsistent(x, "head input")
        let rows = D == 0 ? 0 : x.count / D
        guard let total = Boundary.elementCount([rows, O]) else {
            throw SeqCellError(.shape, "head: output [\(rows), \(O)] is too large")
        }
        var y = [Float](repeating: 0, count: total)
        y.withUnsafeMutableBufferPointer { yp in
            bias.data.withUnsafeBufferPointer { bp in
                // y holds rows·O values and bias O (checked above).
                guard let yb = yp.baseAddress, let bb = bp.baseAddress else { return }
                for r in 0..<rows { (yb + r &* O).update(from: bb, count: O) }
            }
        }
        if rows > 0, O > 0, D > 0 {
            // Every buffer below holds rows·D, O·D or rows·O > 0 values: base addresses exist.
            x.data.withUnsafeBufferPointer { xp in
                weight.data.withUnsafeBufferPointer { wp in
                    y.withUnsafeMutableBufferPointer { yp in
                        hostSgemm(transA: false, transB: true, m: rows, n: O, k: D, a: xp.baseAddress!, lda: D,
                                  b: wp.baseAddress!, ldb: D, beta: 1, c: yp.baseAddress!, ldc: O)
                    }
                }
            }
        }
        let shape = Array(x.shape.dropLast()) + [O]
        let z = keepingPreActivation ? Tensor(shape: shape, data: y) : nil
        activate(&y, rows: rows, width: O)
        return (Tensor(shape: shape, data: y), z)
    }

    func activate(_ y: inout [Float], rows: Int, width: Int) {
        y.withUnsafeMutableBufferPointer { activate($0, rows: rows, width: width) }
    }

    /// The activation over rows·width values in place.
    func activate(_ y: UnsafeMutableBufferPointer<Float>, rows: Int, width: Int) {
        switch activation {
        case .linear: break
        case .tanh: for i in y.indices { y[i] = tanhf(y[i]) }
        case .sigmoid: for i in y.indices { y[i] = 1 / (1 + expf(-y[i])) }
        case .relu: for i in y.indices where y[i] < 0 { y[i] = 0 }  // NaN stays NaN, as torch.relu
        case .softmax:
            for r in 0..<rows {
                let s = r * width
                var m = -Float.infinity
                for j in 0..<width { m = max(m, y[s + j]) }
                var total: Float = 0
                for j in 0..<width { y[s + j] = expf(y[s + j] - m); total += y[s + j] }
                for j in 0..<width { y[s + j] /= total }
            }
        }
    }

    /// Gradients of the head from its output `y` and the gradient `g` reaching it — or, with
    /// `gradIsPreActivation`, reaching its pre-activation (the activation is then skipped).
    /// Returns (dx, dW, db).
    public func backward(input x: Tensor, output y: Tensor, gradOutput g: Tensor,
                         gradIsPreActivation: Bool = false) throws -> (Tensor, Tensor, Tensor) {
        try checkSelf()
        let (D, O) = (inputSize, outputSize)
        guard x.rank >= 1, x.shape.last == D, y.shape == Array(x.shape.dropLast()) + [O], g.shape == y.shape else {
            throw SeqCellError(.shape, "head backward: input \(x.shape), output \(y.shape) and output gradient \(g.shape) "
                               + "do not fit a head from \(D) to \(O) features")
        }
        try Boundary.checkConsistent(x, "head input")
        try Boundary.checkConsistent(y, "head output")
        try Boundary.checkConsistent(g, "head output gradient")
        let rows = D == 0 ? 0 : x.count / D
        var dz = g.data
        switch gradIsPreActivation ? .linear : activation {
        case .linear: break
        case .tanh: for i in dz.indices { dz[i] *= 1 - y.data[i] * y.data[i] }
        case .sigmoid: for i in dz.indices { dz[i] *= y.data[i] * (1 - y.data[i]) }
        case .relu: for i in dz.indices where y.data[i] <= 0 { dz[i] = 0 }  // a NaN output passes its gradient, as torch
        case .softmax:
            for r in 0..<rows {
                var dot: Float = 0
                for j in 0..<O { dot += g.data[r * O + j] * y.data[r * O + j] }
                for j in 0..<O { dz[r * O + j] = y.data[r * O + j] * (g.data[r * O + j] - dot) }
            }
        }
        var dx = [Float](repeating: 0, count: rows * D)
        var dW = [Float](repeating: 0, count: O * D)
        var db = [Float](repeating: 0, count: O)
        for r in 0..<rows { for j in 0..<O { db[j] += dz[r * O + j] } }
        // Every buffer below holds rows·O, O·D or rows·D > 0 values: base addresses exist.
        if rows > 0, O > 0, D > 0 { dz.withUnsafeBufferPointer { dzp in
            weight.data.withUnsafeBufferPointer { wp in
                dx.withUnsafeMutableBufferPointer { dxp in
                    hostSgemm(transA: false, transB: false, m: rows, n: D, k: O, a: dzp.baseAddress!, lda: O,
                              b: wp.baseAddress!, ldb: D, beta: 0, c: dxp.baseAddress!, ldc: D)
                }
            }
            x.data.withUnsafeBufferPointer { xp in
                dW.withUnsafeMutableBufferPointer { dwp in
                    hostSgemm(transA: true, transB: false, m: O, n: D, k: rows, a: dzp.baseAddress!, lda: O,
                              b: xp.baseAddress!, ldb: D, beta: 0, c: dwp.baseAddress!, ldc: D)
                }
            }
        } }
        return (Tensor(shape: x.shape, data: dx), Tensor(shape: weight.shape, data: dW), Tensor(shape: [O], data: db))
    }
}

/// A stack of recurrent layers, each with its own cell kind and direction, an optional
/// linear head applied at every step, and an optional embedding stage before the first layer
/// (the model then takes token ids instead of feature vectors).
public struct Model: Sendable {
    /// Width of each step's features entering the first layer (the embedding's dimension when
    /// the model has an embedding stage).
    public let inputSize: Int
    public var layers: [RecurrentLayer]
    public var head: LinearHead?
    /// Token ids → vectors before layer 0; nil for a model that takes features.
    public var embedding: Embedding?
    /// Where an imported model came from (PyTorch module names), or nil.
    public var source: ModelSource?
    /// `.last`: the model's output is each sample's last step, [B, O] (Keras
    /// return_sequences=False); `run` writes that, and training on the last step uses it.
    public var outputSteps: OutputSteps = .all

    /// Checks every join: layer k's input size must equal layer k−1's output size.
    public init(inputSize: Int, layers: [RecurrentLayer], head: LinearHead? = nil) throws {
        try Model.checkJoins(inputSize: inputSize, layers: layers, head: head)
        self.init(joinsChecked: inputSize, layers: layers, head: head)
    }

    /// A model whose joins the caller has checked (`checkJoins` or `badJoin`).
    init(joinsChecked inputSize: Int, layers: [RecurrentLayer], head: LinearHead?) {
        self.inputSize = inputSize
        self.layers = layers
        self.head = head
    }

    /// The first join that does not fit: layer `k` (the head when k == layers.count) takes
    /// `takes` features but receives `gets`; nil when every join fits. The one place joins are
    /// compared; `checkJoins`, `chain` and `replacingLayer` word the error for their callers.
    static func badJoin(inputSize: Int, layers: [RecurrentLayer], head: LinearHead?) -> (k: Int, takes: Int, gets: Int)? {
        var width = inputSize
        for (k, l) in layers.enumerated() {
            if l.inputSize != width { return (k, l.inputSize, width) }
            width = l.outputSize
        }
        if let head, head.inputSize != width { return (layers.count, head.inputSize, width) }
        return nil
    }

    /// Throws when the model has no layer or a join does not fit, naming the join.
    static func checkJoins(inputSize: Int, layers: [RecurrentLayer], head: LinearHead?) throws {
        guard !layers.isEmpty else { throw SeqCellError(.invalidArgument, "a model needs at least one layer") }
        guard let bad = badJoin(inputSize: inputSize, layers: layers, head: head) else { return }
        if bad.k == layers.count {
            throw SeqCellError(.shape, "the head takes \(bad.takes) inputs but layer \(layers.count - 1) outputs \(bad.gets) features")
        }
        let from = bad.k == 0 ? "the model input is \(bad.gets) wide" : "layer \(bad.k - 1) outputs \(bad.gets) features"
        throw SeqCellError(.shape, "layer \(bad.k) (\(layers[bad.k].cells.first?.cell.type.id ?? "no cell")) takes \(bad.takes) inputs but \(from)")
    }

    /// A model that takes token ids: `embedding` maps them to vectors of its dimension, which
    /// layer 0 must take.
    public init(embedding: Embedding, layers: [RecurrentLayer], head: LinearHead? = nil) throws {
        try embedding.checkSelf()
        if let first = layers.first, first.inputSize != embedding.dimension {
            throw SeqCellError(.shape, "layer 0 (\(first.cells[0].cell.type.id)) takes \(first.inputSize) inputs but the embedding gives \(embedding.dimension)-wide vectors")
        }
        try self.init(inputSize: embedding.dimension, layers: layers, head: head)
        self.embedding = embedding
    }

    /// Width of the last recurrent layer's output.
    public var recurrentOutputSize: Int { layers.last?.outputSize ?? 0 }
    /// Width of what `forward` returns as `output`: the head's, or the last layer's.
    public var outputSize: Int { head?.outputSize ?? recurrentOutputSize }

    public var parameterCount: Int {
        layers.reduce(0) { $0 + $1.cells.reduce(0) { $0 + $1.cell.parameterCount } }
            + (head.map { $0.weight.count + $0.bias.count } ?? 0) + (embedding?.parameterCount ?? 0)
    }

    /// What this model takes, for messages: "token ids (vocabulary 65)" or "features [T, B, 3]".
    public var inputDescription: String {
        if let e = embedding { return "integer token ids [T, B] (vocabulary 0...\(e.vocabularySize - 1))" }
        return "float features [T, B, \(inputSize)]"
    }

    public struct Output {
        /// [T, B, outputSize]: the head's output if there is a head, else the last layer's.
        public var output: Tensor
        /// The last recurrent layer's output, [T, B, recurrentOutputSize].
        public var recurrentOutput: Tensor
        /// A softmax head's input, [T, B, outputSize] (the logits `cross_entropy` uses); nil otherwise.
        public var headPreActivation: Tensor? = nil
        /// finalStates[layer][direction][state], each [B, size].
        public var finalStates: [[[Tensor]]]
        var layerOutputs: [RecurrentLayer.Output]
        var layerInputs: [Tensor]
        /// Dropout masks applied to layer outputs 0..<L−1 (already scaled by 1/(1−p)).
        var dropoutMasks: [[Float]]
        /// The token ids the embedding stage looked up, for its gradient.
        var tokens: TokenIDs? = nil
    }

    /// Runs the model.
    /// - Parameters:
    ///   - input: [T, B, inputSize]
    ///   - lengths: per-sample lengths in 1...T, or nil
    ///   - initialStates: empty (all zero) or initialStates[layer][direction][state]
    ///   - dropout: probability of zeroing each output of every layer but the last, as
    ///     PyTorch's `dropout` argument (survivors scaled by 1/(1−p)); masks come from `seed`.
    /// Everything is checked before any layer runs (input shape, every length against T,
    /// initial-state shapes, the model's own settable layers and head); a problem throws a
    /// `SeqCellError` naming the tensor, e.g. "lengths[1] = 9 is outside 1...5".
    public func forward(input: Tensor, lengths: [Int32]? = nil, initialStates: [[[Tensor?]]] = [],
                        training: Bool = false, dropout: Float = 0, seed: UInt64 = 0) throws -> Output {
        try refuseFeaturesIfEmbedded()
        let (T, B) = try Boundary.checkSequence(input, width: inputSize, "input", taker: "this model")
        let checked = try lengths.map { try SequenceLengths.checked($0, T: T, B: B) }
        return try forwardChecked(input: input, T: T, B: B, lengths: checked, initialStates: initialStates,
                                  training: training, dropout: dropout, seed: seed)
    }

    /// `forward` with lengths of any integer width (e.g. read from an int64 dataset): each is
    /// checked against 1...T and reported with its exact value.
    public func forward(input: Tensor, lengths: [Int], initialStates: [[[Tensor?]]] = [],
                        training: Bool = false, dropout: Float = 0, seed: UInt64 = 0) throws -> Output {
        try refuseFeaturesIfEmbedded()
        let (T, B) = try Boundary.checkSequence(input, width: inputSize, "input", taker: "this model")
        let checked = try SequenceLengths.checked(lengths, T: T, B: B)
        return try forwardChecked(input: input, T: T, B: B, lengths: checked, initialStates: initialStates,
                                  training: training, dropout: dropout, seed: seed)
    }

    func refuseFeaturesIfEmbedded() throws {
        if let e = embedding {
            throw SeqCellError(.invalidArgument,
                "this model starts with an embedding stage (vocabulary \(e.vocabularySize)) and takes integer token ids [T, B], not float features")
        }
    }

    /// Runs a model with an embedding stage on token ids [T, B]: every id is checked against the
    /// vocabulary (the message names its position and value), then looked up and run as `forward`.
    public func forward(tokens: TokenIDs, lengths: [Int32]? = nil, initialStates: [[[Tensor?]]] = [],
                        training: Bool = false, dropout: Float = 0, seed: UInt64 = 0) throws -> Output {
        guard let embedding else {
            throw SeqCellError(.invalidArgument,
                "this model has no embedding stage and takes float features [T, B, \(inputSize)], not token ids")
        }
        try checkStructure()
        let x = try embedding.forward(tokens)
        let checked = try lengths.map { try SequenceLengths.checked($0, T: tokens.steps, B: tokens.batch) }
        var out = try forwardChecked(input: x, T: tokens.steps, B: tokens.batch, lengths: checked, initialStates: initialStates,
                                     training: training, dropout: dropout, seed: seed, structureChecked: true)
        out.tokens = tokens
        return out
    }

    /// Checks the model's structure (layers and head are settable after init, so the joins
    /// checked by `init` may no longer hold).
    func checkStructure() throws {
        guard !layers.isEmpty else { throw SeqCellError(.invalidArgument, "a model needs at least one layer") }
        if let embedding {
            try embedding.checkSelf()
            guard embedding.dimension == inputSize else {
                throw SeqCellError(.shape, "the embedding gives \(embedding.dimension)-wide vectors but the model's input is \(inputSize) wide")
            }
        }
        try Model.checkJoins(inputSize: inputSize, layers: layers, head: head)
        if let head { try head.checkSelf() }
    }

    func forwardChecked(input: Tensor, T: Int, B: Int, lengths: [Int32]?, initialStates: [[[Tensor?]]],
                        training: Bool, dropout: Float, seed: UInt64, structureChecked: Bool = false) throws -> Output {
        if !structureChecked { try checkStructure() }
        guard initialStates.isEmpty || initialStates.count == layers.count else {
            throw SeqCellError(.shape, "initial states for \(initialStates.count) layers; the model has \(layers.count)")
        }
        guard (0..<1).contains(dropout) else {
            throw SeqCellError(.invalidArgument, "dropout must be in [0, 1), got \(dropout)")
        }
        var x = input
        var outs: [RecurrentLayer.Output] = []
        var inputs: [Tensor] = []
        var masks: [[Float]] = []
        var rng = SplitMix64(seed: seed)
        for (k, layer) in layers.enumerated() {
            inputs.append(x)
            do {
                let o = try layer.forwardChecked(input: x, T: T, B: B, lengths: lengths,
                                                 initialStates: initialStates.isEmpty ? [] : initialStates[k], training: training)
                outs.append(o)
                x = o.output
            } catch let e as SeqCellError {
                throw SeqCellError(e.kind, "layer \(k): \(e.message)")
            }
            if dropout > 0, k + 1 < layers.count {
                let keep = 1 / (1 - dropout)
                let mask = (0..<x.count).map { _ in rng.uniform(0, 1) < dropout ? Float(0) : keep }
                x.data = zip(x.data, mask).map { $0 * $1 }
                masks.append(mask)
            }
        }
        var y = x
        var z: Tensor? = nil
        if let head { (y, z) = try head.forward(x, keepingPreActivation: head.activation == .softmax) }
        return Output(output: y, recurrentOutput: x, headPreActivation: z, finalStates: outs.map(\.finalStates), layerOutputs: outs,
                      layerInputs: inputs, dropoutMasks: masks)
    }

    public struct Gradients {
        public var input: Tensor?
        /// initialStates[layer][direction][state]
        public var initialStates: [[[Tensor]]]
        /// params[layer][direction][param]
        public var params: [[[Tensor]]]
        /// (weight, bias) of the head.
        public var head: (weight: Tensor, bias: Tensor)?
        /// The embedding table's gradient, [vocabulary, dimension].
        public var embedding: Tensor? = nil

        /// Every parameter gradient in `Model.namedParameters` order (for a model whose
        /// head and embedding, if any, have gradients; `ParameterTree.gatherGradients` lays
        /// them out by key).
        public var flat: [Tensor] {
            var out: [Tensor] = params.flatMap { $0.flatMap { $0 } }
            if let h = head { out += [h.weight, h.bias] }
            if let e = embedding { out.append(e) }
            return out
        }
    }

    /// Backward through the head and every layer after a training-mode `forward`.
    /// - Parameters:
    ///   - gradOutput: gradient of `output`, [T, B, outputSize], or nil
    ///   - gradFinalStates: empty, or [layer][direction][state] (nil = zero)
    ///   - gradOutputIsPreActivation: `gradOutput` is the gradient of the head's pre-activation
    ///     (`LossValue.gradientOfPreActivation`: cross_entropy on a softmax head)
    public func backward(_ fwd: Output, gradOutput: Tensor?, gradFinalStates: [[[Tensor?]]] = [],
                         wantInputGradient: Bool = true, gradOutputIsPreActivation: Bool = false) throws -> Gradients {
        try checkStructure()
        guard fwd.layerOutputs.count == layers.count else {
            throw SeqCellError(.invalidArgument,
                               "this forward result has \(fwd.layerOutputs.count) layers; the model has \(layers.count): it comes from another model")
        }
        guard fwd.recurrentOutput.rank == 3, fwd.recurrentOutput.shape[2] == recurrentOutputSize,
              fwd.output.rank == 3, fwd.output.shape[2] == outputSize
        else {
            throw SeqCellError(.invalidArgument, "this forward result (output \(fwd.output.shape)) comes from another model")
        }
        if let go = gradOutput { try Boundary.checkGradient(go, shape: fwd.output.shape, "output gradient") }
        guard gradFinalStates.isEmpty || gradFinalStates.count == layers.count else {
            throw SeqCellError(.shape, "final-state gradients for \(gradFinalStates.count) layers; the model has \(layers.count)")
        }
        guard (embedding == nil) == (fwd.tokens == nil) else {
            throw SeqCellError(.invalidArgument, "this forward result comes from another model (with\(embedding == nil ? "" : "out") an embedding stage)")
        }
        var g = gradOutput
        var headGrads: (Tensor, Tensor)? = nil
        if let head, let go = gradOutput {
            let (dx, dW, db) = try head.backward(input: fwd.recurrentOutput, output: fwd.output, gradOutput: go,
                                                 gradIsPreActivation: gradOutputIsPreActivation)
            g = dx
            headGrads = (dW, db)
        }
        var states = [[[Tensor]]](repeating: [], count: layers.count)
        var params = [[[Tensor]]](repeating: [], count: layers.count)
        for k in stride(from: layers.count - 1, through: 0, by: -1) {
            let lg: RecurrentLayer.Gradients
            do {
                lg = try layers[k].backward(fwd.layerOutputs[k], gradOutput: g,
                                            gradFinalStates: gradFinalStates.isEmpty ? [] : gradFinalStates[k],
                                            wantInputGradient: k > 0 || wantInputGradient || embedding != nil)
            } catch let e as SeqCellError {
                throw SeqCellError(e.kind, "layer \(k): \(e.message)")
            }
            states[k] = lg.initialStates
            params[k] = lg.params
            g = lg.input
            if k > 0, k - 1 < fwd.dropoutMasks.count, let gi = g {
                let mask = fwd.dropoutMasks[k - 1]
                guard mask.count == gi.count else {
                    throw SeqCellError(.invalidArgument, "layer \(k - 1)'s dropout mask does not fit its output gradient")
                }
                g = Tensor(shape: gi.shape, data: zip(gi.data, mask).map { $0 * $1 })
            }
        }
        var embeddingGrad: Tensor? = nil
        if let embedding, let tokens = fwd.tokens {
            let D = embedding.dimension
            embeddingGrad = try embedding.weightGradient(tokens, gradOutput: g ?? Tensor.zeros(tokens.shape + [D]))
        }
        return Gradients(input: wantInputGradient ? g : nil, initialStates: states, params: params, head: headGrads,
                         embedding: embeddingGrad)
    }
}

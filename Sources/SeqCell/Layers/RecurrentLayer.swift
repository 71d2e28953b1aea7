/// Which way a layer reads its sequence.
public enum Direction: String, CaseIterable, Sendable {
    /// t = 0 … len−1.
    case forward
    /// t = len−1 … 0 per sample; outputs are kept in the original time order.
    case reverse
    /// Both, merged with a `MergeMode` (the backward direction as `reverse`).
    case bidirectional

    /// Number of directions (PyTorch's D): 1 or 2.
    public var count: Int { self == .bidirectional ? 2 : 1 }
}

/// How a bidirectional layer combines its two directions' outputs (Keras' `merge_mode`).
public enum MergeMode: String, CaseIterable, Sendable {
    /// [forward; backward] along features (PyTorch's only mode, Keras' default).
    case concat
    case sum
    case mul
    /// (forward + backward) / 2.
    case ave
}

/// One direction of a layer: a configured cell and its parameter values.
public struct DirectionalCell: Sendable {
    public var cell: Cell
    /// One tensor per `cell.params` entry, in order.
    public var params: [Tensor]

    public init(cell: Cell, params: [Tensor]) throws {
        guard params.count == cell.params.count else {
            throw SeqCellError(.shape, "cell '\(cell.type.id)' has \(cell.params.count) parameters, \(params.count) given")
        }
        for (p, info) in zip(params, cell.params) where p.shape != info.shape {
            throw SeqCellError(.shape, "cell '\(cell.type.id)': parameter '\(info.name)' must be \(info.shape), got \(p.shape)")
        }
        self.cell = cell
        self.params = params
    }
}

/// A recurrent layer: one cell run forward or reversed, or two cells (which may be of
/// different kinds, as Keras' `backward_layer`) run both ways and merged.
public struct RecurrentLayer: Sendable {
    public let direction: Direction
    public let mergeMode: MergeMode
    /// The cells in PyTorch's direction order: [forward], [backward] or [forward, backward].
    public var cells: [DirectionalCell]

    public init(direction: Direction, mergeMode: MergeMode = .concat, cells: [DirectionalCell]) throws {
        guard cells.count == direction.count else {
            throw SeqCellError(.invalidArgument, "a \(direction.rawValue) layer needs \(direction.count) cell(s), got \(cells.count)")
        }
        if direction == .bidirectional {
            let (f, b) = (cells[0].cell, cells[1].cell)
            guard f.inputSize == b.inputSize else {
                throw SeqCellError(.shape, "bidirectional layer: forward cell takes \(f.inputSize) inputs, backward cell \(b.inputSize)")
            }
            guard mergeMode == .concat || f.outputSize == b.outputSize else {
                throw SeqCellError(.shape,
                    "bidirectional layer: merge mode \(mergeMode.rawValue) needs equal output sizes, got \(f.outputSize) and \(b.outputSize)")
            }
        }
        self.direction = direction
        self.mergeMode = mergeMode
        self.cells = cells
    }

    public var inputSize: Int { cells[0].cell.inputSize }

    /// Width of the layer's output: the cell's, or for `concat` the sum of both.
    public var outputSize: Int {
        direction == .bidirectional && mergeMode == .concat
            ? cells[0].cell.outputSize + cells[1].cell.outputSize : cells[0].cell.outputSize
    }

    /// Whether cells[i] runs reversed in time.
    func isReversed(_ i: Int) -> Bool { direction == .reverse || (direction == .bidirectional && i == 1) }

    /// Names of the direction groups, as in checkpoints: "forward" / "backward".
    public func directionName(_ i: Int) -> String { isReversed(i) ? "backward" : "forward" }

    // MARK: Forward

    public struct Output {
        /// [T, B, outputSize]
        public var output: Tensor
        /// finalStates[d][s]: direction d, state s, [B, size].
        public var finalStates: [[Tensor]]
        var tapes: [Cell.Tape?]
        var directionOutputs: [Tensor]
    }

    /// Runs the layer over `input` [T, B, inputSize].
    /// - Parameter initialStates: empty, or per direction an array (empty = zero) of [B, size] states.
    public func forward(input: Tensor, lengths: [Int32]? = nil, initialStates: [[Tensor?]] = [],
                        training: Bool = false) throws -> Output {
        guard initialStates.isEmpty || initialStates.count == cells.count else {
            throw SeqCellError(.shape, "\(initialStates.count) sets of initial states for a layer with \(cells.count) direction(s)")
        }
        // The directions of a bidirectional layer are independent: they run concurrently
        // (HostParallelism.threads > 1), each call with its own workspace (the ABI allows it).
        var results = [Result<Cell.ForwardResult, Error>?](repeating: nil, count: cells.count)
        results.withUnsafeMutableBufferPointer { slots in
            HostParallelism.forEach(cells.count) { i in
                let dc = cells[i]
                let rev = isReversed(i)
                slots[i] = Result {
                    let x = rev ? reverseSequences(input, lengths: lengths) : input
                    var r = try dc.cell.forward(input: x, lengths: lengths, params: dc.params,
                                                initialStates: initialStates.isEmpty ? [] : initialStates[i], training: training)
                    if rev { r.output = reverseSequences(r.output, lengths: lengths) }
                    return r
                }
            }
        }
        var outs: [Tensor] = []
        var finals: [[Tensor]] = []
        var tapes: [Cell.Tape?] = []
        for r in results {
            let r = try r!.get()
            outs.append(r.output)
            finals.append(r.finalStates)
            tapes.append(r.tape)
        }
        let merged = direction == .bidirectional ? merge(outs[0], outs[1]) : outs[0]
        return Output(output: merged, finalStates: finals, tapes: tapes, directionOutputs: outs)
    }

    func merge(_ a: Tensor, _ b: Tensor) -> Tensor {
        let (T, B) = (a.shape[0], a.shape[1])
        switch mergeMode {
        case .concat:
            let (fa, fb) = (a.shape[2], b.shape[2])
            let rows = T * B, w = fa + fb
            let out = [Float](unsafeUninitializedCapacity: rows * w) { dst, n in
                a.data.withUnsafeBufferPointer { pa in
                    b.data.withUnsafeBufferPointer { pb in
                        for r in 0..<rows {
                            (dst.baseAddress! + r * w).initialize(from: pa.baseAddress! + r * fa, count: fa)
                            (dst.baseAddress! + r * w + fa).initialize(from: pb.baseAddress! + r * fb, count: fb)
                        }
                    }
                }
                n = rows * w
            }
            return Tensor(shape: [T, B, w], data: out)
        case .sum: return Tensor(shape: a.shape, data: zip(a.data, b.data).map { $0 + $1 })
        case .mul: return Tensor(shape: a.shape, data: zip(a.data, b.data).map { $0 * $1 })
        case .ave: return Tensor(shape: a.shape, data: zip(a.data, b.data).map { ($0 + $1) * 0.5 })
        }
    }

    // MARK: Backward

    public struct Gradients {
        /// [T, B, inputSize], when asked for.
        public var input: Tensor?
        /// initialStates[d][s]
        public var initialStates: [[Tensor]]
        /// params[d][p]
        public var params: [[Tensor]]
    }

    /// Backward through the layer after a training-mode `forward`.
    /// - Parameters:
    ///   - gradOutput: [T, B, outputSize] or nil (zero)
    ///   - gradFinalStates: empty, or per direction an array (empty = zero) of [B, size]
    public func backward(_ fwd: Output, gradOutput: Tensor?, gradFinalStates: [[Tensor?]] = [],
                         wantInputGradient: Bool = true) throws -> Gradients {
        guard fwd.tapes.allSatisfy({ $0 != nil }) else {
            throw SeqCellError(.invalidArgument, "backward needs a forward run with training on")
        }
        if let g = gradOutput, g.shape != fwd.output.shape {
            throw SeqCellError(.shape, "layer output gradient must be \(fwd.output.shape), got \(g.shape)")
        }
        let lengths = fwd.tapes[0]!.lengths
        let perDirection = gradOutput.map { splitGradient($0, outputs: fwd.directionOutputs) }
        var gradInput: Tensor? = nil
        var gradStates: [[Tensor]] = []
        var gradParams: [[Tensor]] = []
        for (i, dc) in cells.enumerated() {
            let rev = isReversed(i)
            let gOut = perDirection.map { rev ? reverseSequences($0[i], lengths: lengths) : $0[i] }
            let g = try dc.cell.backward(tape: fwd.tapes[i]!, gradOutput: gOut,
                                         gradFinalStates: gradFinalStates.isEmpty ? [] : gradFinalStates[i],
                                         wantInputGradient: wantInputGradient)
            if let gx = g.input {
                let gxi = rev ? reverseSequences(gx, lengths: lengths) : gx
                gradInput = gradInput.map { Tensor(shape: $0.shape, data: zip($0.data, gxi.data).map { $0 + $1 }) } ?? gxi
            }
            gradStates.append(g.initialStates)
            gradParams.append(g.params)
        }
        return Gradients(input: gradInput, initialStates: gradStates, params: gradParams)
    }

    /// The gradient reaching each direction's output from the merged output's gradient.
    func splitGradient(_ g: Tensor, outputs: [Tensor]) -> [Tensor] {
        guard direction == .bidirectional else { return [g] }
        let (T, B) = (g.shape[0], g.shape[1])
        switch mergeMode {
        case .concat:
            let (fa, fb) = (outputs[0].shape[2], outputs[1].shape[2])
            var ga = [Float](repeating: 0, count: T * B * fa), gb = [Float](repeating: 0, count: T * B * fb)
            for r in 0..<(T * B) {
                for j in 0..<fa { ga[r * fa + j] = g.data[r * (fa + fb) + j] }
                for j in 0..<fb { gb[r * fb + j] = g.data[r * (fa + fb) + fa + j] }
            }
            return [Tensor(shape: [T, B, fa], data: ga), Tensor(shape: [T, B, fb], data: gb)]
        case .sum:
            return [g, g]
        case .ave:
            let h = Tensor(shape: g.shape, data: g.data.map { $0 * 0.5 })
            return [h, h]
        case .mul:
            return [Tensor(shape: g.shape, data: zip(g.data, outputs[1].data).map { $0 * $1 }),
                    Tensor(shape: g.shape, data: zip(g.data, outputs[0].data).map { $0 * $1 })]
        }
    }
}

/// Reverses each sample's valid prefix in time: y[t, b] = x[len_b − 1 − t, b] for t < len_b;
/// rows at t ≥ len_b are copied unchanged. Applying it twice gives back `x`.
/// - Parameter x: [T, B, F]
public func reverseSequences(_ x: Tensor, lengths: [Int32]?) -> Tensor {
    let (T, B, F) = (x.shape[0], x.shape[1], x.shape[2])
    let out = [Float](unsafeUninitializedCapacity: x.count) { dst, n in
        x.data.withUnsafeBufferPointer { src in
            let s = src.baseAddress!, d = dst.baseAddress!
            if lengths == nil {
                // Whole time steps ([B, F] blocks) swap places.
                for t in 0..<T { (d + t * B * F).initialize(from: s + (T - 1 - t) * B * F, count: B * F) }
            } else {
                for b in 0..<B {
                    let len = Int(lengths![b])
                    for t in 0..<len { (d + (t * B + b) * F).initialize(from: s + ((len - 1 - t) * B + b) * F, count: F) }
                    for t in len..<T { (d + (t * B + b) * F).initialize(from: s + (t * B + b) * F, count: F) }
                }
            }
        }
        n = x.count
    }
    return Tensor(shape: x.shape, data: out)
}

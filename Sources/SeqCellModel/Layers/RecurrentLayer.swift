import SeqCellBase
import SeqCellHost

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

    /// Width of the layer's input (0 if `cells`, which is settable, has been emptied).
    public var inputSize: Int { cells.first?.cell.inputSize ?? 0 }

    /// Width of the layer's output: the cell's, or for `concat` the sum of both.
    public var outputSize: Int {
        guard let first = cells.first?.cell else { return 0 }
        guard direction == .bidirectional, mergeMode == .concat, cells.count > 1 else { return first.outputSize }
        return first.outputSize + cells[1].cell.outputSize
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
    /// - Parameters:
    ///   - lengths: per-sample lengths in 1...T, or nil for all T.
    ///   - initialStates: empty, or per direction an array (empty = zero) of [B, size] states.
    /// Every argument is checked before anything is reversed or run: bad shapes or lengths
    /// throw a `SeqCellError` naming the tensor.
    public func forward(input: Tensor, lengths: [Int32]? = nil, initialStates: [[Tensor?]] = [],
                        training: Bool = false) throws -> Output {
        let (T, B) = try Boundary.checkSequence(input, width: inputSize, "input")
        let lengths = try lengths.map { try SequenceLengths.checked($0, T: T, B: B) }
        return try forwardChecked(input: input, T: T, B: B, lengths: lengths, initialStates: initialStates, training: training)
    }

    /// `forward` with lengths of any integer width (e.g. read from an int64 dataset): each is
    /// checked against 1...T and reported with its exact value.
    public func forward(input: Tensor, lengths: [Int], initialStates: [[Tensor?]] = [],
                        training: Bool = false) throws -> Output {
        let (T, B) = try Boundary.checkSequence(input, width: inputSize, "input")
        let checked = try SequenceLengths.checked(lengths, T: T, B: B)
        return try forwardChecked(input: input, T: T, B: B, lengths: checked, initialStates: initialStates, training: training)
    }

    /// Checks the layer's own state (its cells' parameters, which are settable) and the
    /// initial states; `input` and `lengths` are already checked against (T, B).
    func forwardChecked(input: Tensor, T: Int, B: Int, lengths: [Int32]?, initialStates: [[Tensor?]],
                        training: Bool) throws -> Output {
        guard initialStates.isEmpty || initialStates.count == cells.count else {
            throw SeqCellError(.shape, "\(initialStates.count) sets of initial states for a layer with \(cells.count) direction(s)")
        }
        try checkCells()
        for (i, dc) in cells.enumerated() where !initialStates.isEmpty {
            try Boundary.checkStates(initialStates[i], cell: dc.cell, B: B, "\(directionName(i)) initial state")
        }
        // The directions of a bidirectional layer are independent: they run concurrently
        // (HostParallelism.threads > 1), each call with its own workspace (the ABI allows it).
        var results = [Result<Cell.ForwardResult, Error>?](repeating: nil, count: cells.count)
        results.withUnsafeMutableBufferPointer { slots in
            HostParallelism.forEach(cells.count) { i in
                let dc = cells[i]
                let rev = isReversed(i)
                slots[i] = Result {
                    // Input, lengths, parameters and states were checked above: the cell
                    // gets them as checked values and does not check them again.
                    let x = rev ? reversedSequences(input, lengths: lengths) : input
                    let call = CellCallInputs(validated: x, T: T, B: B, lengths: lengths, params: dc.params,
                                              initialStates: initialStates.isEmpty ? [] : initialStates[i])
                    var r = try dc.cell.forward(call, training: training)
                    if rev { r.output = reversedSequences(r.output, lengths: lengths) }
                    return r
                }
            }
        }
        var outs: [Tensor] = []
        var finals: [[Tensor]] = []
        var tapes: [Cell.Tape?] = []
        for slot in results {
            guard let slot else { throw SeqCellError(.invalidArgument, "a direction of the layer did not run") }
            let r = try slot.get()
            guard r.output.rank == 3, r.output.shape[0] == T, r.output.shape[1] == B else {
                throw SeqCellError(.cell, "a cell returned output shape \(r.output.shape) for input [\(T), \(B), \(inputSize)]")
            }
            outs.append(r.output)
            finals.append(r.finalStates)
            tapes.append(r.tape)
        }
        let merged = direction == .bidirectional ? try merge(outs[0], outs[1]) : outs[0]
        return Output(output: merged, finalStates: finals, tapes: tapes, directionOutputs: outs)
    }

    /// Checks the layer's structure and parameters, which are public and settable after init.
    func checkCells() throws {
        guard cells.count == direction.count else {
            throw SeqCellError(.invalidArgument, "a \(direction.rawValue) layer needs \(direction.count) cell(s), has \(cells.count)")
        }
        if direction == .bidirectional {
            let (f, b) = (cells[0].cell, cells[1].cell)
            guard f.inputSize == b.inputSize, mergeMode == .concat || f.outputSize == b.outputSize else {
                throw SeqCellError(.shape, "bidirectional layer: the forward cell (\(f.inputSize) in, \(f.outputSize) out) and "
                                   + "the backward cell (\(b.inputSize) in, \(b.outputSize) out) do not fit merge mode \(mergeMode.rawValue)")
            }
        }
        for (i, dc) in cells.enumerated() { try Boundary.checkParams(dc, "\(directionName(i)) cell") }
    }

    func merge(_ a: Tensor, _ b: Tensor) throws -> Tensor {
        let (T, B) = (a.shape[0], a.shape[1])
        guard b.shape[0] == T, b.shape[1] == B, mergeMode == .concat || a.shape == b.shape else {
            throw SeqCellError(.shape, "cannot merge direction outputs \(a.shape) and \(b.shape) (\(mergeMode.rawValue))")
        }
        switch mergeMode {
        case .concat:
            let (fa, fb) = (a.shape[2], b.shape[2])
            let rows = T * B, w = fa + fb
            let out = [Float](unsafeUninitializedCapacity: rows * w) { dst, n in
                a.data.withUnsafeBufferPointer { pa in
                    b.data.withUnsafeBufferPointer { pb in
                        // rows·w = a.count + b.count, both checked above: no index leaves a buffer.
                        guard let d = dst.baseAddress, let sa = pa.baseAddress, let sb = pb.baseAddress else { return }
                        for r in 0..<rows {
                            (d + r &* w).initialize(from: sa + r &* fa, count: fa)
                            (d + r &* w + fa).initialize(from: sb + r &* fb, count: fb)
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
        guard fwd.tapes.count == cells.count, fwd.directionOutputs.count == cells.count else {
            throw SeqCellError(.invalidArgument,
                               "this forward result has \(fwd.tapes.count) direction(s); the layer has \(cells.count): it comes from another layer")
        }
        let tapes = try fwd.tapes.map { tape -> Cell.Tape in
            guard let tape else { throw SeqCellError(.invalidArgument, "backward needs a forward run with training on") }
            return tape
        }
        try checkCells()
        if let g = gradOutput { try Boundary.checkGradient(g, shape: fwd.output.shape, "layer output gradient") }
        guard gradFinalStates.isEmpty || gradFinalStates.count == cells.count else {
            throw SeqCellError(.shape, "\(gradFinalStates.count) sets of final-state gradients for a layer with \(cells.count) direction(s)")
        }
        let B = fwd.output.shape[1]
        for (i, dc) in cells.enumerated() where !gradFinalStates.isEmpty {
            try Boundary.checkStates(gradFinalStates[i], cell: dc.cell, B: B, "\(directionName(i)) final-state gradient")
        }
        let lengths = tapes[0].lengths
        let perDirection = try gradOutput.map { try splitGradient($0, outputs: fwd.directionOutputs) }
        var gradInput: Tensor? = nil
        var gradStates: [[Tensor]] = []
        var gradParams: [[Tensor]] = []
        for (i, dc) in cells.enumerated() {
            let rev = isReversed(i)
            // The lengths are the tape's, checked by the forward that made it.
            let gOut = perDirection.map { rev ? reversedSequences($0[i], lengths: lengths) : $0[i] }
            let g = try dc.cell.backward(tape: tapes[i], gradOutput: gOut,
                                         gradFinalStates: gradFinalStates.isEmpty ? [] : gradFinalStates[i],
                                         wantInputGradient: wantInputGradient)
            if let gx = g.input {
                let gxi = rev ? reversedSequences(gx, lengths: lengths) : gx
                if let sum = gradInput {
                    guard sum.shape == gxi.shape else {
                        throw SeqCellError(.cell, "the directions' input gradients differ in shape: \(sum.shape) and \(gxi.shape)")
                    }
                    gradInput = Tensor(shape: sum.shape, data: zip(sum.data, gxi.data).map { $0 + $1 })
                } else {
                    gradInput = gxi
                }
            }
            gradStates.append(g.initialStates)
            gradParams.append(g.params)
        }
        return Gradients(input: gradInput, initialStates: gradStates, params: gradParams)
    }

    /// The gradient reaching each direction's output from the merged output's gradient.
    func splitGradient(_ g: Tensor, outputs: [Tensor]) throws -> [Tensor] {
        guard direction == .bidirectional else { return [g] }
        let (T, B) = (g.shape[0], g.shape[1])
        switch mergeMode {
        case .concat:
            let (fa, fb) = (outputs[0].shape[2], outputs[1].shape[2])
            guard g.shape[2] == fa + fb else {
                throw SeqCellError(.shape, "layer output gradient is \(g.shape[2]) wide; the directions output \(fa) + \(fb)")
            }
            let rows = T * B, w = fa + fb
            var ga = [Float](repeating: 0, count: rows * fa), gb = [Float](repeating: 0, count: rows * fb)
            g.data.withUnsafeBufferPointer { src in
                ga.withUnsafeMutableBufferPointer { pa in
                    gb.withUnsafeMutableBufferPointer { pb in
                        // g holds rows·(fa + fb) values (checked by the caller): no index leaves a buffer.
                        guard let s = src.baseAddress, let a = pa.baseAddress, let b = pb.baseAddress else { return }
                        for r in 0..<rows {
                            (a + r &* fa).update(from: s + r &* w, count: fa)
                            (b + r &* fb).update(from: s + r &* w + fa, count: fb)
                        }
                    }
                }
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
/// - Parameter x: [T, B, F]; `lengths`, if given, one per sample in 1...T (checked: a bad
///   shape or length throws before anything is copied).
public func reverseSequences(_ x: Tensor, lengths: [Int32]?) throws -> Tensor {
    guard x.rank == 3 else { throw SeqCellError(.shape, "reverseSequences needs [T, B, F], got shape \(x.shape)") }
    try Boundary.checkConsistent(x, "reverseSequences input")
    let (T, B) = (x.shape[0], x.shape[1])
    let lens = try lengths.map { try SequenceLengths.checked($0, T: T, B: B) }
    return reversedSequences(x, lengths: lens)
}

/// `reverseSequences` on a tensor and lengths checked already: `x` [T, B, F] holds its
/// values, and every length is in 1...T with one per sample.
func reversedSequences(_ x: Tensor, lengths lens: [Int32]?) -> Tensor {
    let (T, B, F) = (x.shape[0], x.shape[1], x.shape[2])
    assert(Boundary.elementCount(x.shape) == x.count && (lens.map { l in l.count == B && l.allSatisfy { $0 >= 1 && Int($0) <= T } } ?? true),
           "reversedSequences: unchecked tensor or lengths")
    let out = [Float](unsafeUninitializedCapacity: x.count) { dst, n in
        n = 0
        x.data.withUnsafeBufferPointer { src in
            // Every offset below is < T·B·F = x.count, with 1 <= len <= T checked above.
            guard let s = src.baseAddress, let d = dst.baseAddress else { return }
            let row = B &* F
            if let lens {
                for b in 0..<B {
                    let len = Int(lens[b])
                    for t in 0..<len { (d + (t &* B &+ b) &* F).initialize(from: s + ((len &- 1 &- t) &* B &+ b) &* F, count: F) }
                    for t in len..<T { (d + (t &* B &+ b) &* F).initialize(from: s + (t &* B &+ b) &* F, count: F) }
                }
            } else {
                // Whole time steps ([B, F] blocks) swap places.
                for t in 0..<T { (d + t &* row).initialize(from: s + (T &- 1 &- t) &* row, count: row) }
            }
        }
        n = x.count
    }
    return Tensor(shape: x.shape, data: out)
}

#if canImport(Glibc)
import Glibc
#endif
import SeqCellBase
import SeqCellHost

/// A model made ready for repeated inference on batches of one size: every buffer a forward
/// call needs (each cell's workspace for one chunk of steps, state buffers, the layers'
/// intermediate outputs, reversed copies for backward directions) is allocated once, here,
/// and the output is written into a tensor the caller owns. A warmed-up `forward` allocates
/// nothing (ForwardMemoryTests counts).
///
/// ```swift
/// let session = try InferenceSession(model: model, steps: 100, batch: 32)
/// var y = session.makeOutput()            // [100, 32, model.outputSize], reused
/// for x in batches { try session.forward(input: x, into: &y) }
/// ```
///
/// Peak memory of a call: the parameters, the input, the output, and per cell its
/// workspace: for the built-in LSTM and GRU a ring of a few projected steps and the packed
/// weights whatever T is; for other cells the projection of one chunk of steps
/// (`Cell.inferenceChunkSteps`) plus what the plugin keeps besides; stacked and bidirectional models add the
/// intermediate layer outputs and reversed copies (`bufferBytes`).
///
/// The model is copied in: later changes to the caller's model do not reach the session.
/// So each cell's calls carry a `params_epoch` of their own (ABI 1.3): the built-in LSTM and
/// GRU pack their weights on the first call and reuse the packs in later ones.
/// Initial states are zero; models with an embedding stage take `Model.forward(tokens:)`.
/// Not for concurrent use: one session per thread.
///
/// The two directions of a bidirectional layer run side by side when the host has two
/// threads or more (`HostParallelism.threads`), one thread each, the backward direction
/// reversing its input in its own task; the plugins' per-step regions then run on the
/// direction's thread (nested regions are serial), so no step waits on a hand-off. The
/// worker pool runs one job at a time, so beyond two threads the rest stay idle during a
/// bidirectional layer. `SEQCELL_SESSION_DIRECTIONS=serial` runs them one after the other
/// instead, each step split over the host's threads by the plugin (docs/PERFORMANCE.md
/// has the measurements). The side-by-side job is built once, by init, and reads the
/// layer it runs from the session, so a call hands it off without allocating.
public final class InferenceSession {
    public let model: Model
    /// The largest T a call may have.
    public let steps: Int
    /// The batch size every call has.
    public let batch: Int

    /// Per layer, per direction.
    private let runners: [[CellInferenceRunner]]
    /// Two [steps, B, widest layer output] buffers the layers alternate between.
    private let activations: [UnsafeMutablePointer<Float>]
    /// [steps, B, widest input or output] for reversed inputs and reversed outputs.
    private let reversedInput: UnsafeMutablePointer<Float>?
    private let directionOutputs: [UnsafeMutablePointer<Float>]
    /// Where the last recurrent layer's output of the last call is (a buffer of `activations`,
    /// or the caller's output when there is no head), and its T.
    private var lastRecurrent: UnsafeMutablePointer<Float>? = nil
    private var lastSteps = 0
    /// Per layer: input width, output width, and each direction's cell output width (read
    /// once here: a call reads no computed property that could allocate).
    private let inputWidths: [Int]
    private let outputWidths: [Int]
    private let cellWidths: [[Int]]
    private let outputSize: Int
    /// Whether bidirectional layers may run their directions side by side
    /// (`SEQCELL_SESSION_DIRECTIONS` is not `serial`).
    private let sideBySide: Bool
    /// The side-by-side job (index = direction), built once so a call creates no closure,
    /// and what it reads: the layer, T, its input and the lengths, set before each hand-off.
    private var directionJob: ((Int) -> Void)? = nil
    private var jobLayer = 0
    private var jobSteps = 0
    private var jobInput: UnsafePointer<Float>? = nil
    private var jobLengths: UnsafePointer<Int32>? = nil
    /// What each direction of the job threw.
    private var forwardError: Error? = nil
    private var backwardError: Error? = nil
    /// Bytes the session holds besides the runners' workspaces.
    public let bufferBytes: Int
    /// Bytes of the cells' workspaces (one chunk each).
    public var workspaceBytes: Int { runners.joined().reduce(0) { $0 + $1.workspaceBytes } }

    /// - Parameters:
    ///   - steps: the longest sequence a call will have (calls may be shorter).
    ///   - batch: the batch size of every call.
    ///   - chunkSteps: time steps per plugin call (each cell's workspace holds the input
    ///     projection of that many steps); nil for `Cell.inferenceChunkSteps`' choice
    ///     (`SEQCELL_CHUNK_ROWS` rows, default 2048, or the whole call for a cell whose
    ///     workspace does not grow with T).
    public init(model: Model, steps: Int, batch: Int, chunkSteps: Int? = nil) throws {
        guard steps >= 1, batch >= 1 else {
            throw SeqCellError(.shape, "an inference session needs steps >= 1 and batch >= 1, got steps \(steps), batch \(batch)")
        }
        if let e = model.embedding {
            throw SeqCellError(.invalidArgument,
                "an inference session runs models that take float features; this one starts with an embedding stage (vocabulary \(e.vocabularySize)): use Model.forward(tokens:)")
        }
        try model.checkStructure()
        for (k, layer) in model.layers.enumerated() {
            do { try layer.checkCells() } catch let e as SeqCellError { throw SeqCellError(e.kind, "layer \(k): \(e.message)") }
        }
        if let head = model.head { try head.checkSelf() }
        self.model = model
        self.steps = steps
        self.batch = batch
        inputWidths = model.layers.map(\.inputSize)
        outputWidths = model.layers.map(\.outputSize)
        cellWidths = model.layers.map { $0.cells.map(\.cell.outputSize) }
        outputSize = model.outputSize
        runners = try model.layers.map { layer in
            try layer.cells.map { try CellInferenceRunner(cell: $0.cell, maxSteps: steps, batch: batch, chunk: chunkSteps, fixedParams: true) }
        }
        let L = model.layers.count
        // Layer k's output goes to the caller's output when it is the last layer and there is
        // no head; otherwise to activations[k % 2].
        let widest = model.layers.map(\.outputSize).max() ?? 0
        let needsActivations = L > 1 || model.head != nil
        let activationCount = needsActivations ? (L > 1 && model.head != nil || L > 2 ? 2 : 1) : 0
        let rows = steps * batch
        func buffer(_ width: Int) throws -> UnsafeMutablePointer<Float> {
            let n = try PluginLimits.floatCount([steps, batch, max(width, 1)], what: "inference buffer [T, B, \(width)]")
            let p = UnsafeMutablePointer<Float>.allocate(capacity: n)
            p.initialize(repeating: 0, count: n)
            return p
        }
        activations = try (0..<activationCount).map { _ in try buffer(widest) }
        let reversing = model.layers.contains { $0.direction != .forward }
        let widestInput = model.layers.map(\.inputSize).max() ?? 0
        reversedInput = reversing ? try buffer(widestInput) : nil
        let widestCell = model.layers.flatMap { $0.cells.map(\.cell.outputSize) }.max() ?? 0
        let bidirectional = model.layers.contains { $0.direction == .bidirectional }
        directionOutputs = try (0..<(bidirectional ? 2 : reversing ? 1 : 0)).map { _ in try buffer(widestCell) }
        bufferBytes = 4 * rows * (activationCount * max(widest, 1) + (reversing ? max(widestInput, 1) : 0)
                                  + directionOutputs.count * max(widestCell, 1))
        sideBySide = getenv("SEQCELL_SESSION_DIRECTIONS").map { String(cString: $0) != "serial" } ?? true
        if bidirectional {
            // Unowned: the session owns the job.
            directionJob = { [unowned self] d in self.runDirection(d) }
        }
    }

    deinit {
        for p in activations + directionOutputs { p.deallocate() }
        reversedInput?.deallocate()
    }

    /// A tensor shaped for the output of a call of `steps` steps, to pass to `forward(into:)`.
    public func makeOutput(steps T: Int? = nil) -> Tensor {
        Tensor.zeros([T ?? steps, batch, model.outputSize])
    }

    /// Runs the model on `input` [T, B, inputSize] (1 <= T <= `steps`, B = `batch`) and writes
    /// the output, [T, B, outputSize], into `output`. When `output` already has that shape
    /// and holds its values (and does not share them with another array), it is written in
    /// place and nothing is allocated; otherwise it is replaced by a new tensor.
    /// - Parameter lengths: per-sample lengths in 1...T, or nil. Past a sample's length the
    ///   recurrent output is zero, as `Model.forward` gives.
    /// Bad shapes or lengths throw a `SeqCellError` naming the tensor before anything runs.
    public func forward(input: Tensor, lengths: [Int32]? = nil, into output: inout Tensor) throws {
        // The checks of `Boundary.checkSequence`, written without the loops that allocate in
        // an unoptimised build.
        let shape = input.shape
        guard shape.count == 3 else { throw SeqCellError(.shape, "input must be [T, B, \(model.inputSize)], got shape \(shape)") }
        let (T, B, I) = (shape[0], shape[1], shape[2])
        guard T >= 1 else { throw SeqCellError(.shape, "input has \(T) time steps (shape \(shape)); T must be >= 1") }
        guard B >= 1 else { throw SeqCellError(.shape, "input has a batch of \(B) (shape \(shape)); B must be >= 1") }
        guard I >= 0, T <= steps, B <= batch, T * B * I == input.data.count else {
            if T > steps {
                throw SeqCellError(.shape, "input has \(T) time steps (shape \(shape)); this inference session takes at most \(steps)")
            }
            if B > batch {
                throw SeqCellError(.shape, "input has a batch of \(B) (shape \(shape)); this inference session was made for batch \(batch)")
            }
            throw SeqCellError(.shape, "input: shape \(shape) does not hold its \(input.data.count) values")
        }
        guard I == model.inputSize else {
            throw SeqCellError(.shape, "input has \(I) features per step (shape \(shape)); this model takes \(model.inputSize)")
        }
        guard B == batch else {
            throw SeqCellError(.shape, "input has a batch of \(B) (shape \(input.shape)); this inference session was made for batch \(batch)")
        }
        guard T <= steps else {
            throw SeqCellError(.shape, "input has \(T) time steps (shape \(input.shape)); this inference session takes at most \(steps)")
        }
        if let lengths {
            guard lengths.count == B else {
                throw SeqCellError(.shape, "lengths holds \(lengths.count) values for a batch of \(B)")
            }
            for b in 0..<B where lengths[b] < 1 || Int(lengths[b]) > T {
                throw SeqCellError(.invalidArgument, "lengths[\(b)] = \(lengths[b]) is outside 1...\(T) (the input has T = \(T) steps)")
            }
        }
        let O = outputSize
        if output.rank != 3 || output.shape[0] != T || output.shape[1] != B || output.shape[2] != O
            || output.data.count != T * B * O {
            output = Tensor.zeros([T, B, O])
        }
        try input.data.withUnsafeBufferPointer { x in
            try withOptionalArray(lengths) { lens in
                try output.data.withUnsafeMutableBufferPointer { y in
                    // Both hold T·B·I and T·B·O >= 1 values (checked above): their base addresses exist.
                    try run(T: T, input: x.baseAddress!, lengths: lens, output: y.baseAddress!)
                }
            }
        }
        lastSteps = T
        if model.head == nil { lastRecurrent = nil }
    }

    private func run(T: Int, input: UnsafePointer<Float>, lengths: UnsafePointer<Int32>?,
                     output: UnsafeMutablePointer<Float>) throws {
        let L = model.layers.count
        var x = input
        var k = 0
        while k < L {
            let y: UnsafeMutablePointer<Float> = k == L - 1 && model.head == nil ? output : activations[k % activations.count]
            do {
                try runLayer(k, model.layers[k], T: T, input: x, lengths: lengths, output: y)
            } catch let e as SeqCellError {
                throw SeqCellError(e.kind, "layer \(k): \(e.message)")
            }
            x = UnsafePointer(y)
            k += 1
        }
        if let head = model.head {
            lastRecurrent = UnsafeMutablePointer(mutating: x)
            try head.forward(x, rows: T * batch, into: output)
        }
    }

    private func runLayer(_ k: Int, _ layer: RecurrentLayer, T: Int, input: UnsafePointer<Float>,
                          lengths: UnsafePointer<Int32>?, output: UnsafeMutablePointer<Float>) throws {
        let B = batch
        switch layer.direction {
        case .forward:
            try runners[k][0].run(T: T, input: input, lengths: lengths, params: layer.cells[0].params, initialStates: nil,
                                  output: output)
        case .reverse:
            // `reversedInput` is allocated by init whenever a layer runs reversed or bidirectional.
            let I = inputWidths[k], O = cellWidths[k][0]
            reverseRows(input, into: reversedInput!, T: T, B: B, width: I, lengths: lengths)
            try runners[k][0].run(T: T, input: reversedInput!, lengths: lengths, params: layer.cells[0].params,
                                  initialStates: nil, output: directionOutputs[0])
            reverseRows(directionOutputs[0], into: output, T: T, B: B, width: O, lengths: lengths)
        case .bidirectional:
            // `directionJob` is built by init whenever a layer is bidirectional.
            (jobLayer, jobSteps, jobInput, jobLengths) = (k, T, input, lengths)
            forwardError = nil
            backwardError = nil
            if sideBySide && HostParallelism.threads >= 2 {
                HostParallelism.runJob(2, directionJob!)
            } else {
                runDirection(0)
                runDirection(1)
            }
            jobInput = nil
            jobLengths = nil
            if let e = forwardError { throw e }
            if let e = backwardError { throw e }
            mergeDirections(k, layer.mergeMode, T: T, lengths: lengths, output: output)
        }
    }

    /// Runs direction `d` of the bidirectional layer `jobLayer` on `jobInput` into
    /// `directionOutputs[d]`; the backward direction reverses its input first. Records what
    /// it throws (`forwardError`, `backwardError`). The two directions touch disjoint buffers
    /// and runners, so they may run on two threads at once.
    private func runDirection(_ d: Int) {
        let k = jobLayer, T = jobSteps, lengths = jobLengths
        // Set by runLayer before the job runs.
        let input = jobInput!
        do {
            if d == 0 {
                try runners[k][0].run(T: T, input: input, lengths: lengths, params: model.layers[k].cells[0].params,
                                      initialStates: nil, output: directionOutputs[0])
            } else {
                // `reversedInput` is allocated by init whenever a layer runs reversed or bidirectional.
                // Here rather than on the caller's thread before the hand-off: it then overlaps
                // the forward direction's first steps (B, 2 threads: 1.03× in one A/B run).
                reverseRows(input, into: reversedInput!, T: T, B: batch, width: inputWidths[k], lengths: lengths)
                try runners[k][1].run(T: T, input: reversedInput!, lengths: lengths, params: model.layers[k].cells[1].params,
                                      initialStates: nil, output: directionOutputs[1])
            }
        } catch {
            if d == 0 { forwardError = error } else { backwardError = error }
        }
    }

    /// Merges the forward output (time order) and the backward output (reversed order) of a
    /// bidirectional layer into `output`, by the layer's merge mode.
    private func mergeDirections(_ k: Int, _ mode: MergeMode, T: Int, lengths: UnsafePointer<Int32>?,
                                 output: UnsafeMutablePointer<Float>) {
        let B = batch
        let fa = cellWidths[k][0], fb = cellWidths[k][1]
        let a = directionOutputs[0], b = directionOutputs[1]
        let w = outputWidths[k]
        for t in 0..<T {
            for s in 0..<B {
                let len = lengths.map { Int($0[s]) } ?? T
                // The backward direction's step for time t sits at len−1−t in its own order.
                let tb = t < len ? len &- 1 &- t : t
                let row = t &* B &+ s
                let pa = a + row &* fa, pb = b + (tb &* B &+ s) &* fb, dst = output + row &* w
                switch mode {
                case .concat:
                    dst.update(from: pa, count: fa)
                    (dst + fa).update(from: pb, count: fb)
                case .sum: for j in 0..<w { dst[j] = pa[j] + pb[j] }
                case .mul: for j in 0..<w { dst[j] = pa[j] * pb[j] }
                case .ave: for j in 0..<w { dst[j] = (pa[j] + pb[j]) * 0.5 }
                }
            }
        }
    }

    /// Final state `state` of `direction` of `layer` after the last call, [B, size].
    public func finalState(layer: Int, direction: Int, state: Int) -> Tensor {
        runners[layer][direction].finalState(state)
    }

    /// Every final state after the last call, [layer][direction][state], each [B, size].
    public var finalStates: [[[Tensor]]] {
        runners.map { $0.map { r in r.cell.states.indices.map(r.finalState) } }
    }

    /// The last call's result as `Model.forward` gives it (output, the last layer's output,
    /// final states), for code written against `Model.Output`. Copies.
    public func modelOutput(_ output: Tensor) -> Model.Output {
        var recurrent = output
        if model.head != nil, let p = lastRecurrent {
            let w = model.recurrentOutputSize
            recurrent = Tensor(shape: [lastSteps, batch, w],
                               data: Array(UnsafeBufferPointer(start: p, count: lastSteps * batch * w)))
        }
        return Model.Output(output: output, recurrentOutput: recurrent, finalStates: finalStates, layerOutputs: [],
                            layerInputs: [], dropoutMasks: [])
    }
}

/// Reverses each sample's first len steps (the rest stay in place), rows of `width` values:
/// `reverseSequences` into a caller's buffer.
func reverseRows(_ src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>, T: Int, B: Int, width F: Int,
                 lengths: UnsafePointer<Int32>?) {
    if let lengths {
        for b in 0..<B {
            let len = Int(lengths[b])
            for t in 0..<len { (dst + (t &* B &+ b) &* F).update(from: src + ((len &- 1 &- t) &* B &+ b) &* F, count: F) }
            for t in len..<T { (dst + (t &* B &+ b) &* F).update(from: src + (t &* B &+ b) &* F, count: F) }
        }
    } else {
        let row = B &* F
        for t in 0..<T { (dst + t &* row).update(from: src + (T &- 1 &- t) &* row, count: row) }
    }
}

extension LinearHead {
    /// `forward` on `rows` rows of `x` [rows, inputSize] into `y` [rows, outputSize], both
    /// owned by the caller; allocates nothing. The head was checked (`checkSelf`) by the caller.
    func forward(_ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>) throws {
        let (D, O) = (inputSize, outputSize)
        guard rows > 0, O > 0 else { return }
        bias.data.withUnsafeBufferPointer { bp in
            guard let bb = bp.baseAddress else { return }
            for r in 0..<rows { (y + r &* O).update(from: bb, count: O) }
        }
        if D > 0 {
            // weight is [O, D] with O, D >= 1 (checkSelf): its base address exists.
            weight.data.withUnsafeBufferPointer { wp in
                hostSgemm(transA: false, transB: true, m: rows, n: O, k: D, a: x, lda: D, b: wp.baseAddress!, ldb: D,
                          beta: 1, c: y, ldc: O)
            }
        }
        activate(UnsafeMutableBufferPointer(start: y, count: rows * O), rows: rows, width: O)
    }
}

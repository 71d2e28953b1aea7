import Synchronization
import CSeqCell

#if canImport(Glibc)
import Glibc
#endif
import SeqCellBase

// Inference forwards into caller-owned memory, in chunks of time steps.
//
// A cell may project the input of every step of a call at once (one large GEMM into its
// workspace, [T, B, gates]); for a long sequence that buffer is the largest thing a forward
// call holds. An inference forward of such a cell therefore calls the plugin on chunks of
// steps, each chunk's final states the next chunk's initial states, so the workspace holds
// the projection of one chunk only. A cell whose inference workspace does not grow with T
// (the built-in LSTM and GRU project chunks of steps themselves) runs each call whole:
// chunking would only re-pack its weights. The result is the same computation: a step sees the same
// state whatever chunk it falls in. Samples that ended before a chunk starts (per-sample
// lengths) are run for one step and their output rows and states put back afterwards, so
// any plugin that keeps the ABI's rules gives the same answer chunked as whole.

extension Cell {
    /// Rows (steps × batch) of input projection per plugin call of an inference forward:
    /// `SEQCELL_CHUNK_ROWS`, default 2048; 0 runs every call whole. A chunk re-packs the
    /// recurrent weights once; at 2048 rows that is well under 1% of the chunk's work.
    static let inferenceChunkRows: Int = inferenceChunkRowsSet ?? 2048

    /// SEQCELL_CHUNK_ROWS when set (then it applies to every cell, growing workspace or not).
    static let inferenceChunkRowsSet: Int? = {
        if let s = getenv("SEQCELL_CHUNK_ROWS"), let n = Int(String(cString: s)), n >= 0 { return n }
        return nil
    }()

    /// A call runs whole when its workspace is at most this many times one chunk's.
    static let wholeCallWorkspaceRatio = 1.25

    /// Steps per plugin call for an inference forward of T steps at batch B.
    package static func inferenceChunk(T: Int, B: Int) -> Int {
        let rows = inferenceChunkRows
        guard rows > 0, B > 0 else { return max(T, 1) }
        return min(max(T, 1), max(1, (rows + B - 1) / B))
    }

    /// Steps per plugin call of this cell's inference forward of T steps at batch B:
    /// `inferenceChunk(T:B:)`, or T when the whole call's workspace is at most 1.25× one
    /// chunk's (the cell's workspace does not grow with T, so chunks would only re-pack its
    /// weights). A SEQCELL_CHUNK_ROWS setting applies as given.
    package func inferenceChunkSteps(T: Int, B: Int) -> Int {
        let chunk = Cell.inferenceChunk(T: T, B: B)
        guard chunk < T, Cell.inferenceChunkRowsSet == nil,
              let whole = try? requiredWorkspace(T: T, B: B, training: false),
              let part = try? requiredWorkspace(T: chunk, B: B, training: false) else { return chunk }
        return Double(whole) <= Cell.wholeCallWorkspaceRatio * Double(part) ? T : chunk
    }
}

/// Nonzero `params_epoch` values (ABI 1.3), each handed out once per process.
package enum ParamsEpoch {
    private static let counter = Atomic<UInt64>(0)
    package static func next() -> UInt64 { counter.add(1, ordering: .relaxed).newValue }
}

/// What one cell needs to run inference forwards of up to `maxSteps` steps at batch `batch`
/// without allocating: the workspace of one chunk, two sets of state buffers, the final
/// states, a chunk's lengths and the pointer tables of the ABI call. Built once, reused by
/// every call; not for concurrent use.
package final class CellInferenceRunner {
    package let cell: Cell
    let maxSteps: Int
    let batch: Int
    /// Steps per plugin call.
    let chunk: Int
    package let workspaceBytes: Int
    private let workspace: AlignedBuffer
    /// [B, size] per state: two sets the chunks alternate between, and the final states.
    private let ping: [UnsafeMutablePointer<Float>]
    private let pong: [UnsafeMutablePointer<Float>]
    let finals: [UnsafeMutablePointer<Float>]
    private let stateSizes: [Int]
    private let chunkLengths: UnsafeMutablePointer<Int32>
    private let paramTable: UnsafeMutablePointer<UnsafePointer<Float>?>
    private let stateTable: UnsafeMutablePointer<UnsafePointer<Float>?>
    private let finalTable: UnsafeMutablePointer<UnsafeMutablePointer<Float>?>
    private var error = ErrorBuffer()
    /// The ABI 1.3 `params_epoch` of every call (0: none).
    private let paramsEpoch: UInt64

    /// - Parameters:
    ///   - chunk: steps per call; `Cell.inferenceChunkSteps` when nil.
    ///   - fixedParams: the owner passes the same parameter tensors, unchanged, to every
    ///     `run` (an `InferenceSession`, whose model is its own copy): the calls then carry a
    ///     `params_epoch` of their own, so a cell may keep what it derives from the
    ///     parameters (packed weights) in this runner's workspace from call to call.
    package init(cell: Cell, maxSteps: Int, batch: Int, chunk: Int? = nil, fixedParams: Bool = false) throws {
        guard maxSteps >= 1, batch >= 1 else {
            throw SeqCellError(.shape, "\(cell.summaryForErrors): an inference run needs T >= 1 and B >= 1, got T = \(maxSteps), B = \(batch)")
        }
        for s in cell.states {
            _ = try PluginLimits.floatCount([batch, s.size], what: "cell '\(cell.type.id)': state '\(s.name)' [B, size]")
        }
        self.cell = cell
        paramsEpoch = fixedParams ? ParamsEpoch.next() : 0
        self.maxSteps = maxSteps
        self.batch = batch
        self.chunk = min(max(chunk ?? cell.inferenceChunkSteps(T: maxSteps, B: batch), 1), maxSteps)
        workspaceBytes = try cell.requiredWorkspace(T: self.chunk, B: batch, training: false)
        workspace = try cell.takeWorkspace(bytes: workspaceBytes)
        let sizes = cell.states.map(\.size)
        stateSizes = sizes
        func states() -> [UnsafeMutablePointer<Float>] {
            sizes.map { size in
                let p = UnsafeMutablePointer<Float>.allocate(capacity: batch * size)
                p.initialize(repeating: 0, count: batch * size)
                return p
            }
        }
        ping = states()
        pong = states()
        finals = states()
        chunkLengths = .allocate(capacity: batch)
        chunkLengths.initialize(repeating: 1, count: batch)
        paramTable = .allocate(capacity: max(cell.params.count, 1))
        paramTable.initialize(repeating: nil, count: max(cell.params.count, 1))
        stateTable = .allocate(capacity: max(sizes.count, 1))
        stateTable.initialize(repeating: nil, count: max(sizes.count, 1))
        finalTable = .allocate(capacity: max(sizes.count, 1))
        finalTable.initialize(repeating: nil, count: max(sizes.count, 1))
    }

    deinit {
        for p in ping + pong + finals { p.deallocate() }
        chunkLengths.deallocate()
        paramTable.deallocate()
        stateTable.deallocate()
        finalTable.deallocate()
        cell.recycle(workspace)
    }

    /// Runs the cell over `input` [T, B, inputSize] into `output` [T, B, outputSize]; the
    /// final states land in `finals`. The caller has checked T (1...maxSteps), `lengths`
    /// (B values in 1...T, or nil), `params` (the cell's shapes) and `initialStates` (nil:
    /// zero; else one pointer per state, each [B, size] or nil).
    package func run(T: Int, input: UnsafePointer<Float>, lengths: UnsafePointer<Int32>?, params: [Tensor],
             initialStates: UnsafePointer<UnsafePointer<Float>?>?, output: UnsafeMutablePointer<Float>) throws {
        precondition(T >= 1 && T <= maxSteps, "CellInferenceRunner: T = \(T) outside 1...\(maxSteps)")
        let status = ABICall.pin(params.count, { params[$0].data }, into: paramTable) {
            runChunks(T: T, input: input, lengths: lengths, initialStates: initialStates, output: output)
        }
        guard status == SEQCELL_OK else {
            throw SeqCellError(.cell, "cell '\(cell.type.id)' forward failed: \(error.message(status: status))")
        }
    }

    private func runChunks(T: Int, input: UnsafePointer<Float>, lengths: UnsafePointer<Int32>?,
                           initialStates: UnsafePointer<UnsafePointer<Float>?>?,
                           output: UnsafeMutablePointer<Float>) -> seqcell_status {
        let B = batch, I = cell.inputSize, O = cell.outputSize
        var t0 = 0
        var source = initialStates
        var toPing = true
        while t0 < T {
            let n = min(chunk, T &- t0)
            let last = t0 &+ n == T
            let target = last ? finals : (toPing ? ping : pong)
            for s in 0..<stateSizes.count { finalTable[s] = target[s] }
            // This chunk's lengths: a sample's remaining steps, clamped to 1...n; a sample
            // that already ended runs one step that is undone below.
            var chunkLens: UnsafePointer<Int32>? = nil
            var anyEnded = false
            if let lengths {
                if t0 == 0 && last {
                    chunkLens = lengths
                } else {
                    for b in 0..<B {
                        let remaining = Int(lengths[b]) &- t0
                        if remaining <= 0 { anyEnded = true }
                        chunkLengths[b] = Int32(min(max(remaining, 1), n))
                    }
                    chunkLens = UnsafePointer(chunkLengths)
                }
            }
            var args = ABICall.forwardArgs(T: n, B: B, training: false, input: input + t0 &* B &* I, lengths: chunkLens,
                                           params: UnsafePointer(paramTable), initialStates: source,
                                           output: output + t0 &* B &* O, finalStates: UnsafePointer(finalTable),
                                           workspace: workspace.pointer, workspaceBytes: workspaceBytes,
                                           paramsEpoch: paramsEpoch)
            let status = cell.rawForward(&args, error: &error)
            guard status == SEQCELL_OK else { return status }
            if anyEnded, let lengths, let source {
                // t0 > 0 here (every length is >= 1), so `source` is the previous chunk's states.
                for b in 0..<B where Int(lengths[b]) <= t0 {
                    for s in 0..<stateSizes.count {
                        let size = stateSizes[s]
                        if let from = source[s] {
                            (target[s] + b &* size).update(from: from + b &* size, count: size)
                        }
                    }
                    for t in t0..<(t0 &+ n) { (output + (t &* B &+ b) &* O).update(repeating: 0, count: O) }
                }
            }
            for s in 0..<stateSizes.count { stateTable[s] = UnsafePointer(target[s]) }
            source = UnsafePointer(stateTable)
            toPing.toggle()
            t0 &+= n
        }
        return SEQCELL_OK
    }

    /// Final state `s` as a new tensor [B, size].
    package func finalState(_ s: Int) -> Tensor {
        let n = batch * stateSizes[s]
        return Tensor(shape: [batch, stateSizes[s]], data: Array(UnsafeBufferPointer(start: finals[s], count: n)))
    }
}

extension Cell {
    /// `forward` in inference mode, chunked over time (see `CellInferenceRunner`).
    func forwardChunked(_ call: CellCallInputs) throws -> ForwardResult {
        let (T, B) = (call.T, call.B)
        let count = try PluginLimits.floatCount([T, B, outputSize], what: "cell '\(type.id)': output [T, B, O]")
        let runner = try CellInferenceRunner(cell: self, maxSteps: T, batch: B)
        // [initial states]: the table `run` takes, NULL where a state is not given.
        let S = call.initialStates.count
        let stateTable = StableBuffer<UnsafePointer<Float>?>(repeating: nil, count: S)
        var thrown: Error? = nil
        let data = [Float](unsafeUninitializedCapacity: count) { y, initialized in
            do {
                // The input has T·B·I >= 1 values and y T·B·O >= 1 places (T, B, I, O >= 1).
                guard let yBase = y.baseAddress else { throw SeqCellError(.shape, "cell '\(type.id)': empty output buffer") }
                try call.input.data.withUnsafeBufferPointer { x in
                    guard let xBase = x.baseAddress else { throw SeqCellError(.shape, "cell '\(type.id)': empty input") }
                    try withOptionalArray(call.lengths) { lens in
                        try ABICall.pin(S, { call.initialStates[$0]?.data }, into: stateTable.pointer) {
                            Result {
                                try runner.run(T: T, input: xBase, lengths: lens, params: call.params,
                                               initialStates: S == 0 ? nil : stateTable.constPointer, output: yBase)
                            }
                        }.get()
                    }
                }
            } catch {
                thrown = error
                y.initialize(repeating: 0)
            }
            initialized = count
        }
        if let thrown { throw thrown }
        return ForwardResult(output: Tensor(shape: [T, B, outputSize], data: data),
                             finalStates: states.indices.map(runner.finalState), tape: nil)
    }
}

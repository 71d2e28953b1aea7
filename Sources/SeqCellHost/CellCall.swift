import CSeqCell

#if canImport(Glibc)
import Glibc
#endif
import SeqCellBase

// The plumbing of calls into a plugin: host memory of stable address, the caller-owned error
// buffer, and `ABICall`, the one place the host fills `seqcell_forward_args` and
// `seqcell_backward_args`. `Cell` (forward, training forward, backward), the chunked
// inference runner, the conformance kit's raw harness and the tests all build their argument
// structs here.

// MARK: - Stable storage

/// Host memory of fixed address: allocated once, freed with its owner. An ABI argument struct
/// may point into it for as long as the owner lives, without a closure pinning anything.
package final class StableBuffer<Element> {
    package let pointer: UnsafeMutablePointer<Element>
    let count: Int

    package init(_ values: [Element]) {
        count = values.count
        pointer = .allocate(capacity: max(values.count, 1))
        values.withUnsafeBufferPointer { src in
            if let base = src.baseAddress { pointer.initialize(from: base, count: src.count) }
        }
    }

    package init(repeating value: Element, count: Int) {
        precondition(count >= 0, "StableBuffer: negative count \(count)")
        self.count = count
        pointer = .allocate(capacity: max(count, 1))
        pointer.initialize(repeating: value, count: count)
    }

    package var values: [Element] { Array(UnsafeBufferPointer(start: pointer, count: count)) }

    subscript(i: Int) -> Element {
        get {
            precondition(i >= 0 && i < count, "StableBuffer: index \(i) outside 0..<\(count)")
            return pointer[i]
        }
        set {
            precondition(i >= 0 && i < count, "StableBuffer: index \(i) outside 0..<\(count)")
            pointer[i] = newValue
        }
    }

    package func assign(_ values: [Element]) {
        precondition(values.count == count, "StableBuffer: \(values.count) values for \(count) places")
        values.withUnsafeBufferPointer { src in
            if let base = src.baseAddress { pointer.update(from: base, count: src.count) }
        }
    }

    /// The address as the ABI's `const T *` fields take it.
    package var constPointer: UnsafePointer<Element> { UnsafePointer(pointer) }

    deinit {
        pointer.deinitialize(count: count)
        pointer.deallocate()
    }
}

/// A 64-byte-aligned block of bytes owned by the host.
public final class AlignedBuffer: @unchecked Sendable {
    package let pointer: UnsafeMutableRawPointer?
    let bytes: Int

    package init(bytes: Int) throws {
        self.bytes = bytes
        if bytes == 0 {
            pointer = nil
            return
        }
        var p: UnsafeMutableRawPointer? = nil
        guard posix_memalign(&p, 64, bytes) == 0, let p else {
            throw SeqCellError(.numeric, "cannot allocate a workspace of \(bytes) bytes")
        }
        pointer = p
    }

    deinit { free(pointer) }
}

/// Zeroed float buffers the plugin writes into, with their pointer table; turned into tensors
/// after the call.
package final class OutputBuffers {
    package let buffers: [StableBuffer<Float>]
    /// One pointer per buffer, as `final_states`, `grad_initial_states` and `grad_params` take it.
    let table: StableBuffer<UnsafeMutablePointer<Float>?>
    private let shapes: [[Int]]

    package init(shapes: [[Int]]) {
        self.shapes = shapes
        buffers = shapes.map { StableBuffer(repeating: 0, count: $0.reduce(1, *)) }
        table = StableBuffer(buffers.map { Optional($0.pointer) })
    }

    package func tensor(_ i: Int) -> Tensor { Tensor(shape: shapes[i], data: buffers[i].values) }

    package var tensors: [Tensor] { shapes.indices.map(tensor) }

    /// The pointer table as the ABI takes it.
    package var pointers: UnsafePointer<UnsafeMutablePointer<Float>?> { table.constPointer }

    /// A copy of the pointer table with the entries in `nilAt` NULL.
    func table(nilAt: Set<Int>) -> StableBuffer<UnsafeMutablePointer<Float>?> {
        let copy = StableBuffer(table.values)
        for i in nilAt where i >= 0 && i < copy.count { copy[i] = nil }
        return copy
    }
}

// MARK: - Errors

/// A caller-owned error buffer for one plugin call (seqcell.h: no allocation crosses).
package struct ErrorBuffer {
    static let capacity = 1024
    var bytes = [CChar](repeating: 0, count: ErrorBuffer.capacity)

    package init() {}

    package mutating func call(_ body: (UnsafeMutablePointer<CChar>, Int) -> seqcell_status) -> seqcell_status {
        bytes.withUnsafeMutableBufferPointer { buf in
            // `bytes` has `capacity` (> 0) elements, so its base address exists.
            guard let base = buf.baseAddress else { return SEQCELL_ERR_INTERNAL }
            return body(base, buf.count)
        }
    }

    func message(status: seqcell_status) -> String {
        let name = statusName(status)
        return text.isEmpty ? "\(name) (no message)" : "\(text) [\(name)]"
    }

    /// The message the plugin wrote (empty if none), read up to the first NUL or the end of
    /// the buffer: the plugin may have filled it without one.
    package var text: String {
        bytes.withUnsafeBufferPointer { buf in
            let n = buf.firstIndex(of: 0) ?? buf.count
            return String(decoding: UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: buf[..<n])), as: UTF8.self)
        }
    }
}

package func statusName(_ status: seqcell_status) -> String {
    switch status {
    case SEQCELL_OK: return "ok"
    case SEQCELL_ERR_INVALID_ARGUMENT: return "invalid argument"
    case SEQCELL_ERR_UNSUPPORTED: return "unsupported"
    case SEQCELL_ERR_NO_MEMORY: return "out of memory"
    case SEQCELL_ERR_VERSION: return "version mismatch"
    case SEQCELL_ERR_INTERNAL: return "internal error"
    default: return "status \(status)"
    }
}

// MARK: - A call's inputs, checked once

/// The input, lengths, parameters and initial states of one cell call, checked against the
/// cell's layout once: by `init(checking:…)` at a public entry point, or taken as checked by a
/// caller that validated them at its own boundary (a layer checks its input, lengths,
/// parameters and states before any direction runs).
package struct CellCallInputs: @unchecked Sendable {
    let input: Tensor
    /// Steps and batch: `input` is [T, B, cell.inputSize].
    let T: Int
    let B: Int
    /// B values in 1...T, or nil (all T).
    let lengths: [Int32]?
    /// One tensor per parameter, shaped as the cell declares.
    let params: [Tensor]
    /// Empty (all zero) or one entry per state, nil (zero) or [B, size].
    let initialStates: [Tensor?]

    /// Values a caller has checked against `cell` already.
    package init(validated input: Tensor, T: Int, B: Int, lengths: [Int32]?, params: [Tensor], initialStates: [Tensor?]) {
        self.input = input
        self.T = T
        self.B = B
        self.lengths = lengths
        self.params = params
        self.initialStates = initialStates
    }

    /// Checks the shapes of a call's tensors against `cell`; errors name the tensor.
    init(checking cell: Cell, input: Tensor, lengths: [Int32]?, params: [Tensor], initialStates: [Tensor?]) throws {
        let id = cell.type.id
        guard input.rank == 3 else {
            throw SeqCellError(.shape, "cell '\(id)': input must be [T, B, I], got shape \(input.shape)")
        }
        try Boundary.checkConsistent(input, "cell '\(id)': input")
        let (T, B, I) = (input.shape[0], input.shape[1], input.shape[2])
        guard T >= 1 else { throw SeqCellError(.shape, "cell '\(id)': sequence length T must be >= 1, got \(T)") }
        guard B >= 1 else { throw SeqCellError(.shape, "cell '\(id)': batch size B must be >= 1, got \(B)") }
        guard I == cell.inputSize else {
            throw SeqCellError(.shape, "cell '\(id)': input width is \(I), this cell expects \(cell.inputSize)")
        }
        if let lengths {
            guard lengths.count == B else {
                throw SeqCellError(.shape, "cell '\(id)': \(lengths.count) lengths for a batch of \(B)")
            }
            if let (b, l) = lengths.enumerated().first(where: { $0.element < 1 || Int($0.element) > T }) {
                throw SeqCellError(.invalidArgument, "cell '\(id)': lengths[\(b)] = \(l) is outside 1...\(T)")
            }
        }
        guard params.count == cell.params.count else {
            throw SeqCellError(.shape, "cell '\(id)': \(params.count) parameter tensors given, it has \(cell.params.count)")
        }
        for (p, info) in zip(params, cell.params) {
            guard p.shape == info.shape else {
                throw SeqCellError(.shape, "cell '\(id)': parameter '\(info.name)' must be \(info.shape), got \(p.shape)")
            }
            try Boundary.checkConsistent(p, "cell '\(id)': parameter '\(info.name)'")
        }
        guard initialStates.isEmpty || initialStates.count == cell.states.count else {
            throw SeqCellError(.shape, "cell '\(id)': \(initialStates.count) initial states given, it has \(cell.states.count)")
        }
        for (s, info) in zip(initialStates, cell.states) {
            if let s {
                guard s.shape == [B, info.size] else {
                    throw SeqCellError(.shape, "cell '\(id)': initial state '\(info.name)' must be [\(B), \(info.size)], got \(s.shape)")
                }
                try Boundary.checkConsistent(s, "cell '\(id)': initial state '\(info.name)'")
            }
        }
        self.init(validated: input, T: T, B: B, lengths: lengths, params: params, initialStates: initialStates)
    }
}

// MARK: - The argument structs

/// Builds the argument structs of plugin calls. Every host-side call into a plugin's
/// `forward` or `backward` gets its struct from `forwardArgs`/`backwardArgs`; `forward` and
/// `backward` run a `Cell`'s call from Swift values, pinning every tensor into one table of
/// addresses so the ABI's pointer tables are slices of it.
package enum ABICall {
    /// The `struct_size` the host writes. Neither struct has grown since ABI 1.0, and a plugin
    /// checks `struct_size >=` its own size, so a 1.0, 1.1 or 1.2 plugin accepts it.
    static let forwardArgsSize = UInt32(MemoryLayout<seqcell_forward_args>.size)
    static let backwardArgsSize = UInt32(MemoryLayout<seqcell_backward_args>.size)

    /// Forward arguments (seqcell.h documents each field).
    @inline(__always)
    package static func forwardArgs(T: Int, B: Int, training: Bool, input: UnsafePointer<Float>?, lengths: UnsafePointer<Int32>?,
                            params: UnsafePointer<UnsafePointer<Float>?>?,
                            initialStates: UnsafePointer<UnsafePointer<Float>?>?,
                            output: UnsafeMutablePointer<Float>?,
                            finalStates: UnsafePointer<UnsafeMutablePointer<Float>?>?,
                            workspace: UnsafeMutableRawPointer?, workspaceBytes: Int,
                            paramsEpoch: UInt64 = 0) -> seqcell_forward_args {
        var a = seqcell_forward_args()
        a.struct_size = forwardArgsSize
        a.mode = training ? SEQCELL_MODE_TRAINING : SEQCELL_MODE_INFERENCE
        a.seq_len = Int64(T)
        a.batch = Int64(B)
        a.input = input
        a.lengths = lengths
        a.params = params
        a.initial_states = initialStates
        a.output = output
        a.final_states = finalStates
        a.workspace = workspace
        a.workspace_size = workspaceBytes
        a.params_epoch = training ? 0 : paramsEpoch
        return a
    }

    /// Backward arguments (seqcell.h documents each field).
    @inline(__always)
    package static func backwardArgs(T: Int, B: Int, input: UnsafePointer<Float>?, lengths: UnsafePointer<Int32>?,
                             params: UnsafePointer<UnsafePointer<Float>?>?,
                             initialStates: UnsafePointer<UnsafePointer<Float>?>?,
                             output: UnsafePointer<Float>?, gradOutput: UnsafePointer<Float>?,
                             gradFinalStates: UnsafePointer<UnsafePointer<Float>?>?,
                             gradInput: UnsafeMutablePointer<Float>?,
                             gradInitialStates: UnsafePointer<UnsafeMutablePointer<Float>?>?,
                             gradParams: UnsafePointer<UnsafeMutablePointer<Float>?>?,
                             workspace: UnsafeMutableRawPointer?, workspaceBytes: Int) -> seqcell_backward_args {
        var a = seqcell_backward_args()
        a.struct_size = backwardArgsSize
        a.seq_len = Int64(T)
        a.batch = Int64(B)
        a.input = input
        a.lengths = lengths
        a.params = params
        a.initial_states = initialStates
        a.output = output
        a.grad_output = gradOutput
        a.grad_final_states = gradFinalStates
        a.grad_input = gradInput
        a.grad_initial_states = gradInitialStates
        a.grad_params = gradParams
        a.workspace = workspace
        a.workspace_size = workspaceBytes
        return a
    }

    /// Calls `body` with `table[i]` pointing at `array(i)`'s values (NULL when nil) for every
    /// i in 0..<count, without allocating.
    static func pin<R>(_ count: Int, _ array: (Int) -> [Float]?, into table: UnsafeMutablePointer<UnsafePointer<Float>?>,
                       from i: Int = 0, _ body: () -> R) -> R {
        if i == count { return body() }
        guard let values = array(i) else {
            table[i] = nil
            return pin(count, array, into: table, from: i + 1, body)
        }
        return values.withUnsafeBufferPointer { buf in
            table[i] = buf.baseAddress
            return pin(count, array, into: table, from: i + 1, body)
        }
    }

    /// One forward call of `cell` on checked inputs, writing `output` [T, B, O] and the final
    /// states in `finalStates`; returns the plugin's status.
    static func forward(_ cell: Cell, _ call: CellCallInputs, training: Bool, output: UnsafeMutablePointer<Float>?,
                        finalStates: OutputBuffers, workspace: AlignedBuffer, workspaceBytes: Int,
                        error: inout ErrorBuffer) -> seqcell_status {
        // [input | params | initial states]
        let P = call.params.count, S = call.initialStates.count
        let table = StableBuffer<UnsafePointer<Float>?>(repeating: nil, count: 1 + P + S)
        let base = table.pointer
        return withOptionalArray(call.lengths) { lens in
            pin(1 + P + S, { i in i == 0 ? call.input.data : i <= P ? call.params[i - 1].data : call.initialStates[i - 1 - P]?.data },
                into: base) {
                var args = forwardArgs(T: call.T, B: call.B, training: training, input: base[0], lengths: lens,
                                       params: UnsafePointer(base + 1), initialStates: S == 0 ? nil : UnsafePointer(base + 1 + P),
                                       output: output, finalStates: finalStates.pointers,
                                       workspace: workspace.pointer, workspaceBytes: workspaceBytes)
                return cell.rawForward(&args, error: &error)
            }
        }
    }

    /// One backward call of `cell` after the training forward that made `tape`. Entries of
    /// `frozen` get NULL in `grad_params` only when the cell accepts that (ABI 1.2,
    /// `SEQCELL_CELL_FROZEN_GRADIENTS`); any other cell writes them into `gradParams` as usual.
    static func backward(_ cell: Cell, tape: Cell.Tape, gradOutput: Tensor?, gradFinalStates: [Tensor?],
                         gradInput: UnsafeMutablePointer<Float>?, gradInitialStates: OutputBuffers,
                         gradParams: OutputBuffers, frozen: Set<Int>, error: inout ErrorBuffer) -> seqcell_status {
        let call = tape.call
        // [input | params | initial states | output | grad output | grad final states]
        let P = call.params.count, S = call.initialStates.count, G = gradFinalStates.count
        let outputAt = 1 + P + S
        let table = StableBuffer<UnsafePointer<Float>?>(repeating: nil, count: outputAt + 2 + G)
        let base = table.pointer
        let gradParamTable = gradParams.table(nilAt: cell.acceptsFrozenGradients ? frozen : [])
        return withOptionalArray(call.lengths) { lens in
            pin(outputAt + 2 + G, { i -> [Float]? in
                if i == 0 { return call.input.data }
                if i <= P { return call.params[i - 1].data }
                if i < outputAt { return call.initialStates[i - 1 - P]?.data }
                if i == outputAt { return tape.output.data }
                if i == outputAt + 1 { return gradOutput?.data }
                return gradFinalStates[i - outputAt - 2]?.data
            }, into: base) {
                var args = backwardArgs(T: call.T, B: call.B, input: base[0], lengths: lens, params: UnsafePointer(base + 1),
                                        initialStates: S == 0 ? nil : UnsafePointer(base + 1 + P),
                                        output: base[outputAt], gradOutput: base[outputAt + 1],
                                        gradFinalStates: G == 0 ? nil : UnsafePointer(base + outputAt + 2),
                                        gradInput: gradInput, gradInitialStates: gradInitialStates.pointers,
                                        gradParams: gradParamTable.constPointer,
                                        workspace: tape.workspace.pointer, workspaceBytes: tape.workspace.bytes)
                return cell.rawBackward(&args, error: &error)
            }
        }
    }
}

extension Cell {
    /// One plugin forward call with arguments the caller built; returns the plugin's status.
    package func rawForward(_ args: inout seqcell_forward_args, error: inout ErrorBuffer) -> seqcell_status {
        error.call { desc.forward(instance, &args, $0, $1) }
    }

    /// One plugin backward call with arguments the caller built; returns the plugin's status.
    package func rawBackward(_ args: inout seqcell_backward_args, error: inout ErrorBuffer) -> seqcell_status {
        error.call { desc.backward(instance, &args, $0, $1) }
    }
}

package func withOptionalArray<T, R>(_ array: [T]?, _ body: (UnsafePointer<T>?) throws -> R) rethrows -> R {
    guard let array else { return try body(nil) }
    return try array.withUnsafeBufferPointer { try body($0.baseAddress) }
}

// SeqCellPluginKit: the C functions of every kit descriptor (create, destroy, layout, workspace,
// forward, backward): they check each argument and call the cell's Swift kernel.

import CSeqCell

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Boxes a kernel for the C side: the opaque instance pointer is an Unmanaged<KernelBox>.
final class KernelBox {
    let kernel: any CellKernel
    init(_ kernel: any CellKernel) { self.kernel = kernel }
}

@inline(__always)
func kernel(_ instance: UnsafeRawPointer) -> any CellKernel {
    Unmanaged<KernelBox>.fromOpaque(instance).takeUnretainedValue().kernel
}

/// The body of a C `create` function: hands the kernel `make` builds to the host.
func createInstance(
    _ instance: UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
    error errorBuffer: UnsafeMutablePointer<CChar>?, capacity: Int,
    make: () throws(CellError) -> any CellKernel
) -> seqcell_status {
    guard let instance else {
        writeError("instance output pointer is NULL", into: errorBuffer, capacity: capacity)
        return SEQCELL_ERR_INVALID_ARGUMENT
    }
    do throws(CellError) {
        let k = try make()
        instance.pointee = Unmanaged.passRetained(KernelBox(k)).toOpaque()
        return SEQCELL_OK
    } catch {
        writeError(error.message, into: errorBuffer, capacity: capacity)
        return error.status
    }
}

let kitDestroy: @convention(c) (UnsafeMutableRawPointer?) -> Void = { instance in
    guard let instance else { return }
    Unmanaged<KernelBox>.fromOpaque(instance).release()
}

let kitLayout: @convention(c) (UnsafeRawPointer?) -> UnsafePointer<seqcell_layout>? = { instance in
    guard let instance else { return nil }
    return UnsafePointer(kernel(instance).layout.pointer)
}

let kitWorkspaceSize: @convention(c) (UnsafeRawPointer?, Int64, Int64, Int32) -> Int = { instance, t, b, mode in
    guard let instance, t >= 1, b >= 1 else { return 0 }
    return kernel(instance).workspaceBytes(T: Int(t), B: Int(b), training: mode == SEQCELL_MODE_TRAINING)
}

let kitWorkspaceSizeChecked: @convention(c) (
    UnsafeRawPointer?, Int64, Int64, Int32, UnsafeMutablePointer<Int>?, UnsafeMutablePointer<CChar>?, Int
) -> seqcell_status = { instance, t, b, mode, bytes, error, capacity in
    guard let instance else { return fail(.invalid("instance is NULL"), error, capacity) }
    guard let bytes else { return fail(.invalid("bytes is NULL"), error, capacity) }
    guard t >= 1, b >= 1 else { return fail(.invalid("seq_len and batch must be >= 1 (got \(t), \(b))"), error, capacity) }
    guard mode == SEQCELL_MODE_INFERENCE || mode == SEQCELL_MODE_TRAINING else {
        return fail(.invalid("unknown mode \(mode)"), error, capacity)
    }
    // Int64 to Int is exact on the 64-bit platforms the kit builds for.
    let n = kernel(instance).workspaceBytes(T: Int(t), B: Int(b), training: mode == SEQCELL_MODE_TRAINING)
    guard n != Int.max else {
        return fail(.invalid("the workspace for seq_len \(t), batch \(b) overflows a 64-bit byte count"), error, capacity)
    }
    bytes.pointee = n
    return SEQCELL_OK
}

/// Checks what every cell needs of a call: sizes, pointers, lengths, workspace. Returns the
/// first problem found, or nil.
func checkCommon(
    _ k: any CellKernel, T: Int64, B: Int64, input: UnsafePointer<Float>?, lengths: UnsafePointer<Int32>?,
    params: UnsafePointer<UnsafePointer<Float>?>?, workspace: UnsafeMutableRawPointer?, workspaceSize: Int,
    training: Bool
) -> CellError? {
    guard T >= 1 else { return .invalid("seq_len must be >= 1 (got \(T))") }
    guard B >= 1 else { return .invalid("batch must be >= 1 (got \(B))") }
    guard input != nil else { return .invalid("input is NULL") }
    guard let params else { return .invalid("params is NULL") }
    for (i, p) in k.layout.params.enumerated() where params[i] == nil {
        return .invalid("parameter '\(p.name)' is NULL")
    }
    if let lengths {
        for b in 0..<Int(B) {
            let l = lengths[b]
            guard l >= 1, Int64(l) <= T else {
                return .invalid("lengths[\(b)] = \(l) is outside 1...\(T)")
            }
        }
    }
    let need = k.workspaceBytes(T: Int(T), B: Int(B), training: training)
    guard workspaceSize >= need, need == 0 || workspace != nil else {
        return .invalid("workspace is \(workspaceSize) bytes; this call needs \(need)")
    }
    return nil
}

/// Reports `error` through the caller's buffer and returns its status.
func fail(_ error: CellError, _ buffer: UnsafeMutablePointer<CChar>?, _ capacity: Int) -> seqcell_status {
    writeError(error.message, into: buffer, capacity: capacity)
    return error.status
}

/// `seqcell_forward_args`' size up to `workspace_size`: what a 1.2 host passes (1.3 appended
/// `params_epoch`).
let forwardArgsSize12 = MemoryLayout<seqcell_forward_args>.offset(of: \seqcell_forward_args.params_epoch)!

let kitForward: @convention(c) (
    UnsafeRawPointer?, UnsafePointer<seqcell_forward_args>?, UnsafeMutablePointer<CChar>?, Int
) -> seqcell_status = { instance, args, errorBuffer, capacity in
    guard let instance else { return fail(.invalid("instance is NULL"), errorBuffer, capacity) }
    guard let args else { return fail(.invalid("forward args are NULL"), errorBuffer, capacity) }
    // A 1.2 host's struct ends before params_epoch (ABI 1.3): copy what the host gave into a
    // zeroed struct, so a field it lacks reads as 0 and nothing past its struct is read.
    let given = Int(UnsafeRawPointer(args).load(as: UInt32.self))
    guard given >= forwardArgsSize12 else {
        return fail(.invalid("forward args struct_size \(given) is smaller than its ABI 1.2 size \(forwardArgsSize12)"),
                    errorBuffer, capacity)
    }
    var a = seqcell_forward_args()
    withUnsafeMutableBytes(of: &a) { dst in
        dst.copyMemory(from: UnsafeRawBufferPointer(start: args, count: min(given, MemoryLayout<seqcell_forward_args>.size)))
    }
    let k = kernel(instance)
    let training = a.mode == SEQCELL_MODE_TRAINING
    guard a.mode == SEQCELL_MODE_INFERENCE || training else {
        return fail(.invalid("unknown mode \(a.mode)"), errorBuffer, capacity)
    }
    if let e = checkCommon(k, T: a.seq_len, B: a.batch, input: a.input, lengths: a.lengths, params: a.params,
                           workspace: a.workspace, workspaceSize: a.workspace_size, training: training) {
        return fail(e, errorBuffer, capacity)
    }
    guard let input = a.input else { return fail(.invalid("input is NULL"), errorBuffer, capacity) }
    guard let output = a.output else { return fail(.invalid("output is NULL"), errorBuffer, capacity) }
    let (T, B, lengths, workspace) = (Int(a.seq_len), Int(a.batch), a.lengths, a.workspace ?? placeholderBlock)
    let epoch = training ? 0 : a.params_epoch
    withUnsafePointer(to: &a) { copied in
        k.forward(ForwardCall(T: T, B: B, training: training, input: input, lengths: lengths, args: copied,
                              output: output, workspace: workspace, paramsEpoch: epoch))
    }
    return SEQCELL_OK
}

let kitBackward: @convention(c) (
    UnsafeRawPointer?, UnsafePointer<seqcell_backward_args>?, UnsafeMutablePointer<CChar>?, Int
) -> seqcell_status = { instance, args, errorBuffer, capacity in
    guard let instance else { return fail(.invalid("instance is NULL"), errorBuffer, capacity) }
    guard let args else { return fail(.invalid("backward args are NULL"), errorBuffer, capacity) }
    let a = args.pointee
    guard a.struct_size >= UInt32(MemoryLayout<seqcell_backward_args>.size) else {
        return fail(.invalid("backward args struct_size \(a.struct_size) is smaller than this cell's \(MemoryLayout<seqcell_backward_args>.size)"),
                    errorBuffer, capacity)
    }
    let k = kernel(instance)
    if let e = checkCommon(k, T: a.seq_len, B: a.batch, input: a.input, lengths: a.lengths, params: a.params,
                           workspace: a.workspace, workspaceSize: a.workspace_size, training: true) {
        return fail(e, errorBuffer, capacity)
    }
    guard let input = a.input else { return fail(.invalid("input is NULL"), errorBuffer, capacity) }
    // ABI 1.2: a NULL entry of grad_params is a frozen parameter; the call view hands it to the
    // cell as nil, and the cell computes nothing of that parameter's gradient.
    guard a.grad_params != nil else { return fail(.invalid("grad_params is NULL"), errorBuffer, capacity) }
    k.backward(BackwardCall(T: Int(a.seq_len), B: Int(a.batch), input: input, lengths: a.lengths, args: args,
                            workspace: a.workspace ?? placeholderBlock))
    return SEQCELL_OK
}

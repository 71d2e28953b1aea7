// SeqCellPluginKit: what every Swift cell plugin needs to speak seqcell.h.
//
// This module is linked statically into each built-in cell's .so and never into the host,
// so each plugin has its own copy and no Swift type ever crosses the plugin boundary: the
// host sees only the C structs declared in seqcell.h.
//
// A cell implements `CellKernel`, describes itself with a `CellRegistration` passed to
// `makePlugin`, and writes one `@_cdecl("seqcell_plugin_entry")` function that calls
// `pluginEntry`. Everything else (descriptor tables, the C `create` functions, argument
// validation, error buffers, workspace sizing) is here.

import CSeqCell

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

// MARK: - Errors

/// A failure inside a cell, reported to the host as a status code and a message.
public struct CellError: Error {
    public var status: seqcell_status
    public var message: String

    public init(_ status: seqcell_status = SEQCELL_ERR_INVALID_ARGUMENT, _ message: String) {
        self.status = status
        self.message = message
    }

    public static func invalid(_ message: String) -> CellError {
        CellError(SEQCELL_ERR_INVALID_ARGUMENT, message)
    }
}

/// Copies `message` into a caller-owned buffer, truncating and always NUL-terminating.
public func writeError(_ message: String, into buffer: UnsafeMutablePointer<CChar>?, capacity: Int) {
    guard let buffer, capacity > 0 else { return }
    var utf8 = Array(message.utf8.prefix(capacity - 1))
    utf8.append(0)
    utf8.withUnsafeBufferPointer { src in
        src.withMemoryRebound(to: CChar.self) { buffer.update(from: $0.baseAddress!, count: $0.count) }
    }
}

// MARK: - Host services

/// The host's services table, set once by `pluginEntry`.
nonisolated(unsafe) public private(set) var hostServices: UnsafePointer<seqcell_host>? = nil

/// Row-major single-precision GEMM through the host: C = alpha·op(A)·op(B) + beta·C.
@inline(__always)
public func sgemm(
    transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float = 1,
    a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
    beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
) {
    if m == 0 || n == 0 { return }
    let host = hostServices!.pointee
    host.sgemm(
        host.context, transA ? Int32(SEQCELL_TRANS) : Int32(SEQCELL_NO_TRANS),
        transB ? Int32(SEQCELL_TRANS) : Int32(SEQCELL_NO_TRANS),
        Int64(m), Int64(n), Int64(k), alpha, a, Int64(lda), b, Int64(ldb), beta, c, Int64(ldc))
}

/// Logs through the host (level SEQCELL_LOG_*).
public func hostLog(_ level: Int32, _ message: String) {
    guard let host = hostServices?.pointee, let log = host.log else { return }
    log(host.context, level, message)
}

// MARK: - Descriptor building (allocated once, kept for the life of the process)

/// A C string that lives for the life of the process.
public func permanentCString(_ s: String) -> UnsafePointer<CChar> {
    UnsafePointer(strdup(s)!)
}

public struct OptionSpec: Sendable {
    public enum Kind: Sendable { case int(min: Int, max: Int), float(min: Double, max: Double), choice([String]) }
    public var name: String
    public var description: String
    public var kind: Kind
    public var defaultValue: Double

    public init(name: String, description: String, kind: Kind, defaultValue: Double) {
        self.name = name
        self.description = description
        self.kind = kind
        self.defaultValue = defaultValue
    }
}

public struct ParamSpec: Sendable {
    public var name: String
    public var role: Int32
    public var shape: [Int]
    public var gateOrder: String
    public var description: String

    public init(_ name: String, role: Int32, shape: [Int], gateOrder: String = "", description: String) {
        self.name = name
        self.role = role
        self.shape = shape
        self.gateOrder = gateOrder
        self.description = description
    }
}

public struct StateSpec: Sendable {
    public var name: String
    public var size: Int
    public init(_ name: String, size: Int) {
        self.name = name
        self.size = size
    }
}

/// Builds a cell descriptor for one registration. Its `create_cell` (ABI 1.2) finds the
/// registration through the descriptor's `user_data`, so a library holds any number of cells;
/// the kit supplies destroy/layout/workspace/forward/backward.
func makeCellDescriptor(_ r: CellRegistration) -> UnsafePointer<seqcell_cell_desc> {
    let options = r.options
    let opts = UnsafeMutablePointer<seqcell_option_desc>.allocate(capacity: max(options.count, 1))
    for (i, o) in options.enumerated() {
        var d = seqcell_option_desc()
        d.struct_size = UInt32(MemoryLayout<seqcell_option_desc>.size)
        d.name = permanentCString(o.name)
        d.description = permanentCString(o.description)
        d.default_value = o.defaultValue
        switch o.kind {
        case .int(let lo, let hi):
            d.kind = SEQCELL_OPTION_INT
            d.min_value = Double(lo)
            d.max_value = Double(hi)
        case .float(let lo, let hi):
            d.kind = SEQCELL_OPTION_FLOAT
            d.min_value = lo
            d.max_value = hi
        case .choice(let names):
            d.kind = SEQCELL_OPTION_CHOICE
            d.min_value = 0
            d.max_value = Double(names.count - 1)
            d.choices = permanentCString(names.joined(separator: ","))
        }
        (opts + i).initialize(to: d)
    }
    var c = seqcell_cell_desc()
    c.struct_size = UInt32(MemoryLayout<seqcell_cell_desc>.size)
    c.version_major = r.version.0
    c.version_minor = r.version.1
    c.version_patch = r.version.2
    c.id = permanentCString(r.id)
    c.description = permanentCString(r.description)
    c.num_options = Int32(options.count)
    c.options = UnsafePointer(opts)
    c.create = nil  // a kit plugin needs a 1.2 host (pluginEntry refuses older ones): create_cell serves
    c.destroy = kitDestroy
    c.layout = kitLayout
    c.workspace_size = kitWorkspaceSize
    c.forward = kitForward
    c.backward = kitBackward
    c.create_cell = kitCreateCell
    // Kept for the life of the process, like the descriptor that points to it.
    c.user_data = Unmanaged.passRetained(RegistrationBox(r)).toOpaque()
    c.workspace_size_checked = kitWorkspaceSizeChecked
    c.flags = UInt64(SEQCELL_CELL_FROZEN_GRADIENTS)
    let p = UnsafeMutablePointer<seqcell_cell_desc>.allocate(capacity: 1)
    p.initialize(to: c)
    return UnsafePointer(p)
}

/// One cell a Swift plugin provides: its descriptor fields and how to build a kernel from a
/// checked configuration.
public struct CellRegistration: Sendable {
    public var id: String
    public var version: (UInt32, UInt32, UInt32)
    public var description: String
    public var options: [OptionSpec]
    public var make: @Sendable (CellConfig) throws(CellError) -> any CellKernel

    public init(id: String, version: (UInt32, UInt32, UInt32), description: String, options: [OptionSpec],
                make: @escaping @Sendable (CellConfig) throws(CellError) -> any CellKernel) {
        self.id = id
        self.version = version
        self.description = description
        self.options = options
        self.make = make
    }
}

/// A registration kept behind a descriptor's `user_data`.
final class RegistrationBox {
    let registration: CellRegistration
    init(_ registration: CellRegistration) { self.registration = registration }
}

private let kitCreateCell: @convention(c) (
    UnsafePointer<seqcell_cell_desc>?, UnsafeMutableRawPointer?, UnsafePointer<seqcell_config>?,
    UnsafeMutablePointer<UnsafeMutableRawPointer?>?, UnsafeMutablePointer<CChar>?, Int
) -> seqcell_status = { _, userData, config, instance, error, capacity in
    guard let userData else {
        writeError("create_cell: user_data is NULL (not a descriptor of this library)", into: error, capacity: capacity)
        return SEQCELL_ERR_INVALID_ARGUMENT
    }
    let r = Unmanaged<RegistrationBox>.fromOpaque(userData).takeUnretainedValue().registration
    return createInstance(instance, error: error, capacity: capacity) { () throws(CellError) in
        try r.make(try CellConfig(config, specs: r.options, cellID: r.id))
    }
}

/// Builds the library descriptor returned by the entry point: one cell descriptor per
/// registration, as many as the library likes.
public func makePlugin(name: String, cells: [CellRegistration]) -> UnsafePointer<seqcell_plugin> {
    let list = UnsafeMutablePointer<UnsafePointer<seqcell_cell_desc>?>.allocate(capacity: max(cells.count, 1))
    for (i, c) in cells.enumerated() {
        (list + i).initialize(to: makeCellDescriptor(c))
    }
    var p = seqcell_plugin()
    p.struct_size = UInt32(MemoryLayout<seqcell_plugin>.size)
    p.abi_major = SEQCELL_ABI_MAJOR
    p.abi_minor = SEQCELL_ABI_MINOR
    p.num_cells = Int32(cells.count)
    p.name = permanentCString(name)
    p.cells = UnsafePointer(list)
    let out = UnsafeMutablePointer<seqcell_plugin>.allocate(capacity: 1)
    out.initialize(to: p)
    return UnsafePointer(out)
}

/// The body of every Swift plugin's `seqcell_plugin_entry`: negotiates the ABI, keeps the
/// host table, and hands back the descriptor built (once) by `build`.
public func pluginEntry(
    hostMajor: UInt32, hostMinor: UInt32, host: UnsafePointer<seqcell_host>?,
    out: UnsafeMutablePointer<UnsafePointer<seqcell_plugin>?>?,
    error: UnsafeMutablePointer<CChar>?, capacity: Int,
    build: () -> UnsafePointer<seqcell_plugin>
) -> seqcell_status {
    guard hostMajor == SEQCELL_ABI_MAJOR else {
        writeError("this plugin speaks SeqCell ABI \(SEQCELL_ABI_MAJOR).x; the host speaks \(hostMajor).\(hostMinor)",
                   into: error, capacity: capacity)
        return SEQCELL_ERR_VERSION
    }
    // The kit's descriptors create cells through create_cell, which hosts of ABI 1.2 call.
    guard hostMinor >= 2 else {
        writeError("this plugin needs a host of SeqCell ABI 1.2 or newer; the host speaks \(hostMajor).\(hostMinor)",
                   into: error, capacity: capacity)
        return SEQCELL_ERR_VERSION
    }
    guard let host, let out else {
        writeError("host table and output pointer must not be NULL", into: error, capacity: capacity)
        return SEQCELL_ERR_INVALID_ARGUMENT
    }
    let hostSize = Int(host.pointee.struct_size)
    let needed = MemoryLayout<seqcell_host>.offset(of: \seqcell_host.log)! + MemoryLayout<UnsafeRawPointer>.size
    guard hostSize >= needed, host.pointee.sgemm != nil, host.pointee.aligned_alloc != nil,
          host.pointee.aligned_free != nil
    else {
        writeError("host services table is too small (\(hostSize) bytes) or lacks sgemm/aligned_alloc/aligned_free",
                   into: error, capacity: capacity)
        return SEQCELL_ERR_VERSION
    }
    hostServices = host
    out.pointee = build()
    return SEQCELL_OK
}

// MARK: - Layout

/// Owns a `seqcell_layout` and the strings and arrays it points to.
public final class LayoutStorage {
    public let pointer: UnsafeMutablePointer<seqcell_layout>
    public let params: [ParamSpec]
    public let states: [StateSpec]
    public let outputSize: Int
    private var strings: [UnsafeMutablePointer<CChar>] = []
    private let paramArray: UnsafeMutablePointer<seqcell_param_desc>
    private let stateArray: UnsafeMutablePointer<seqcell_state_desc>

    public init(params: [ParamSpec], states: [StateSpec], outputSize: Int) {
        self.params = params
        self.states = states
        self.outputSize = outputSize
        paramArray = .allocate(capacity: max(params.count, 1))
        stateArray = .allocate(capacity: max(states.count, 1))
        pointer = .allocate(capacity: 1)
        func keep(_ s: String) -> UnsafePointer<CChar> {
            let p = strdup(s)!
            strings.append(p)
            return UnsafePointer(p)
        }
        for (i, p) in params.enumerated() {
            var d = seqcell_param_desc()
            d.struct_size = UInt32(MemoryLayout<seqcell_param_desc>.size)
            d.role = p.role
            d.name = keep(p.name)
            d.rank = Int32(p.shape.count)
            d.shape.0 = Int64(p.shape[0])
            d.shape.1 = p.shape.count > 1 ? Int64(p.shape[1]) : 0
            d.gate_order = keep(p.gateOrder)
            d.description = keep(p.description)
            (paramArray + i).initialize(to: d)
        }
        for (i, s) in states.enumerated() {
            var d = seqcell_state_desc()
            d.struct_size = UInt32(MemoryLayout<seqcell_state_desc>.size)
            d.name = keep(s.name)
            d.size = Int64(s.size)
            (stateArray + i).initialize(to: d)
        }
        var l = seqcell_layout()
        l.struct_size = UInt32(MemoryLayout<seqcell_layout>.size)
        l.num_params = Int32(params.count)
        l.num_states = Int32(states.count)
        l.output_size = Int64(outputSize)
        l.params = UnsafePointer(paramArray)
        l.states = UnsafePointer(stateArray)
        pointer.initialize(to: l)
    }

    deinit {
        for s in strings { free(s) }
        paramArray.deallocate()
        stateArray.deallocate()
        pointer.deallocate()
    }

    /// Number of floats in parameter `i`.
    public func paramCount(_ i: Int) -> Int { params[i].shape.reduce(1, *) }
}

// MARK: - Options

/// The configuration a cell's `create` receives, checked against its option specs.
public struct CellConfig {
    /// The largest input or hidden size a kit cell accepts: 2^24.
    public static let maxSize = 1 << 24
    public let inputSize: Int
    public let hiddenSize: Int
    public let options: [Double]

    /// Reads and checks a `seqcell_config` against `specs`; throws with a clear message.
    public init(_ config: UnsafePointer<seqcell_config>?, specs: [OptionSpec], cellID: String) throws(CellError) {
        guard let config else { throw .invalid("\(cellID): config is NULL") }
        let size = MemoryLayout<seqcell_config>.size
        guard Int(config.pointee.struct_size) >= size else {
            throw .invalid("\(cellID): config struct_size \(config.pointee.struct_size) is smaller than \(size)")
        }
        let c = config.pointee
        // The upper bound keeps every size a cell derives (4·H, 4·H·I, packed panels) far from
        // Int overflow; a layer that large could not be allocated anyway (W_hh alone would be
        // 2^48 floats at the bound).
        guard c.input_size >= 1, c.input_size <= CellConfig.maxSize else {
            throw .invalid("\(cellID): input_size must be in 1...\(CellConfig.maxSize) (got \(c.input_size))")
        }
        guard c.hidden_size >= 1, c.hidden_size <= CellConfig.maxSize else {
            throw .invalid("\(cellID): hidden_size must be in 1...\(CellConfig.maxSize) (got \(c.hidden_size))")
        }
        guard Int(c.num_options) == specs.count else {
            throw .invalid("\(cellID): expected \(specs.count) option values, got \(c.num_options)")
        }
        guard specs.isEmpty || c.options != nil else { throw .invalid("\(cellID): options is NULL") }
        var values: [Double] = []
        for (i, spec) in specs.enumerated() {
            let v = c.options![i]
            switch spec.kind {
            case .int(let lo, let hi):
                guard v == v.rounded(), v >= Double(lo), v <= Double(hi) else {
                    throw .invalid("\(cellID): option '\(spec.name)' must be an integer in \(lo)...\(hi) (got \(v))")
                }
            case .float(let lo, let hi):
                guard v.isFinite, v >= lo, v <= hi else {
                    throw .invalid("\(cellID): option '\(spec.name)' must be in \(lo)...\(hi) (got \(v))")
                }
            case .choice(let names):
                // Compared as Double: Int(v) would trap on ±inf or a huge value.
                guard v == v.rounded(), v >= 0, v < Double(names.count) else {
                    throw .invalid("\(cellID): option '\(spec.name)' must be one of \(names.joined(separator: ", ")) (got index \(v))")
                }
            }
            values.append(v)
        }
        inputSize = Int(c.input_size)
        hiddenSize = Int(c.hidden_size)
        options = values
    }
}

// MARK: - Kernels

/// Typed view of a forward call, already validated against the cell's layout.
public struct ForwardCall {
    public let T: Int
    public let B: Int
    public let training: Bool
    public let input: UnsafePointer<Float>
    /// nil: every sample has length T.
    public let lengths: UnsafePointer<Int32>?
    public let args: UnsafePointer<seqcell_forward_args>
    public let output: UnsafeMutablePointer<Float>
    public let workspace: UnsafeMutableRawPointer

    @inline(__always) public func param(_ i: Int) -> UnsafePointer<Float> { args.pointee.params[i]! }
    /// nil means zero.
    @inline(__always) public func initialState(_ i: Int) -> UnsafePointer<Float>? { args.pointee.initial_states?[i] }
    @inline(__always) public func finalState(_ i: Int) -> UnsafeMutablePointer<Float>? { args.pointee.final_states?[i] }
    @inline(__always) public func length(_ b: Int) -> Int { lengths.map { Int($0[b]) } ?? T }
}

/// Typed view of a backward call, already validated against the cell's layout.
public struct BackwardCall {
    public let T: Int
    public let B: Int
    public let input: UnsafePointer<Float>
    public let lengths: UnsafePointer<Int32>?
    public let args: UnsafePointer<seqcell_backward_args>
    public let workspace: UnsafeMutableRawPointer

    @inline(__always) public func param(_ i: Int) -> UnsafePointer<Float> { args.pointee.params[i]! }
    @inline(__always) public func initialState(_ i: Int) -> UnsafePointer<Float>? { args.pointee.initial_states?[i] }
    /// nil means zero.
    @inline(__always) public var gradOutput: UnsafePointer<Float>? { args.pointee.grad_output }
    @inline(__always) public func gradFinalState(_ i: Int) -> UnsafePointer<Float>? { args.pointee.grad_final_states?[i] }
    @inline(__always) public var gradInput: UnsafeMutablePointer<Float>? { args.pointee.grad_input }
    @inline(__always) public func gradInitialState(_ i: Int) -> UnsafeMutablePointer<Float>? { args.pointee.grad_initial_states?[i] }
    @inline(__always) public func gradParam(_ i: Int) -> UnsafeMutablePointer<Float> { args.pointee.grad_params[i]! }
    @inline(__always) public func length(_ b: Int) -> Int { lengths.map { Int($0[b]) } ?? T }
}

/// What a Swift cell implements. Instances are immutable after creation (the ABI lets
/// the host call forward/backward concurrently on one instance).
public protocol CellKernel: AnyObject {
    var layout: LayoutStorage { get }
    var inputSize: Int { get }
    /// Bytes of workspace for (T, B); `training` adds what backward needs.
    func workspaceBytes(T: Int, B: Int, training: Bool) -> Int
    /// Forward and backward cannot fail: the kit has checked every argument before calling
    /// them. (They are deliberately not `throws`: Swift 6.3 at -O can return from a throwing
    /// function that ends in a memory copy with its error register still set — see
    /// swiftlang/swift#90477 — so the hot paths stay non-throwing.)
    func forward(_ call: ForwardCall)
    func backward(_ call: BackwardCall)
}

/// Hands out 64-byte-aligned float arrays from one workspace block, in a fixed order.
/// With no base it only measures, so one function can both size and carve a workspace.
/// Sizes saturate: a request whose size overflows makes `bytes` Int.max, which no host can
/// allocate, so the call is refused (with a workspace-size error) instead of trapping.
public struct WorkspaceCarver {
    public private(set) var bytes: Int = 0
    private let base: UnsafeMutableRawPointer?

    public init(base: UnsafeMutableRawPointer?) { self.base = base }

    /// `factors`' product floats (e.g. `floats(T, B, 4 * H)`), multiplied without trapping.
    public mutating func floats(_ factors: Int...) -> UnsafeMutablePointer<Float> {
        var count = 1
        for f in factors {
            let (p, overflow) = count.multipliedReportingOverflow(by: max(f, 0))
            count = overflow ? Int.max : p
        }
        return floats(count: count)
    }

    public mutating func floats(count: Int) -> UnsafeMutablePointer<Float> {
        let (padded, o1) = bytes.addingReportingOverflow(63)
        let start = o1 ? Int.max : padded & ~63
        let (size, o2) = max(count, 0).multipliedReportingOverflow(by: MemoryLayout<Float>.stride)
        let (end, o3) = start.addingReportingOverflow(size)
        bytes = o1 || o2 || o3 ? Int.max : end
        // Only reached with a base once the host has allocated `bytes`, so start is in range.
        guard let base, bytes != Int.max else { return UnsafeMutablePointer(bitPattern: 64)! }
        return (base + start).assumingMemoryBound(to: Float.self)
    }
}

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

private let kitDestroy: @convention(c) (UnsafeMutableRawPointer?) -> Void = { instance in
    guard let instance else { return }
    Unmanaged<KernelBox>.fromOpaque(instance).release()
}

private let kitLayout: @convention(c) (UnsafeRawPointer?) -> UnsafePointer<seqcell_layout>? = { instance in
    guard let instance else { return nil }
    return UnsafePointer(kernel(instance).layout.pointer)
}

private let kitWorkspaceSize: @convention(c) (UnsafeRawPointer?, Int64, Int64, Int32) -> Int = { instance, t, b, mode in
    guard let instance, t >= 1, b >= 1 else { return 0 }
    return kernel(instance).workspaceBytes(T: Int(t), B: Int(b), training: mode == SEQCELL_MODE_TRAINING)
}

private let kitWorkspaceSizeChecked: @convention(c) (
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

private let kitForward: @convention(c) (
    UnsafeRawPointer?, UnsafePointer<seqcell_forward_args>?, UnsafeMutablePointer<CChar>?, Int
) -> seqcell_status = { instance, args, errorBuffer, capacity in
    guard let instance else { return fail(.invalid("instance is NULL"), errorBuffer, capacity) }
    guard let args else { return fail(.invalid("forward args are NULL"), errorBuffer, capacity) }
    let a = args.pointee
    guard a.struct_size >= UInt32(MemoryLayout<seqcell_forward_args>.size) else {
        return fail(.invalid("forward args struct_size \(a.struct_size) is smaller than this cell's \(MemoryLayout<seqcell_forward_args>.size)"),
                    errorBuffer, capacity)
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
    guard let output = a.output else { return fail(.invalid("output is NULL"), errorBuffer, capacity) }
    k.forward(ForwardCall(
        T: Int(a.seq_len), B: Int(a.batch), training: training, input: a.input!, lengths: a.lengths,
        args: args, output: output, workspace: a.workspace ?? UnsafeMutableRawPointer(bitPattern: 64)!))
    return SEQCELL_OK
}

private let kitBackward: @convention(c) (
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
    guard let grads = a.grad_params else { return fail(.invalid("grad_params is NULL"), errorBuffer, capacity) }
    let workspace = a.workspace ?? UnsafeMutableRawPointer(bitPattern: 64)!
    let frozen = k.layout.params.indices.filter { grads[$0] == nil }
    if frozen.isEmpty {
        k.backward(BackwardCall(T: Int(a.seq_len), B: Int(a.batch), input: a.input!, lengths: a.lengths, args: args,
                                workspace: workspace))
        return SEQCELL_OK
    }
    // ABI 1.2: a NULL entry is a frozen parameter. The kernels write every gradient, so a
    // frozen one goes to scratch that is thrown away.
    var scratch: [UnsafeMutablePointer<Float>] = []
    defer { for p in scratch { p.deallocate() } }
    var table: [UnsafeMutablePointer<Float>?] = []
    for i in k.layout.params.indices {
        if let g = grads[i] {
            table.append(g)
        } else {
            let n = max(k.layout.paramCount(i), 1)
            let p = UnsafeMutablePointer<Float>.allocate(capacity: n)
            p.initialize(repeating: 0, count: n)
            scratch.append(p)
            table.append(p)
        }
    }
    table.withUnsafeBufferPointer { t in
        var copy = a
        copy.grad_params = t.baseAddress
        withUnsafePointer(to: &copy) { args in
            k.backward(BackwardCall(T: Int(a.seq_len), B: Int(a.batch), input: a.input!, lengths: a.lengths,
                                    args: args, workspace: workspace))
        }
    }
    return SEQCELL_OK
}

// SeqCellPluginKit: what every Swift cell plugin needs to speak seqcell.h.
//
// This module is linked statically into each built-in cell's .so and never into the host,
// so each plugin has its own copy and no Swift type ever crosses the plugin boundary: the
// host sees only the C structs declared in seqcell.h. (The test bundle links one more copy
// for the kit's unit tests; the plugins' exported symbols are protected, so no plugin can
// bind to it.)
//
// A cell implements `CellKernel` (usually through `CarvedWorkspace`), describes itself with a
// `CellRegistration` passed to `makePlugin`, and writes the entry point as a forwarder of one
// statement to `pluginEntry`:
//
//     @_cdecl("seqcell_plugin_entry")
//     public func seqcell_plugin_entry(_ major: UInt32, _ minor: UInt32, _ host: HostTable?, _ out: PluginSlot?,
//                                      _ error: MessageBuffer?, _ capacity: Int) -> seqcell_status {
//         pluginEntry(major, minor, host, out, error, capacity, plugin: plugin)
//     }
//
// The forwarder stays in each cell because Swift exports a C name only through `@_cdecl` on a
// function compiled into the image: an entry defined here would need a second `@_cdecl` hook
// in every cell to find its registrations (docs/PLUGIN_ABI.md, "Writing a cell in Swift").
//
// The files, by concern:
//   PluginKit.swift     errors, descriptors and registration (options, parameters, states),
//                       option checking (CellConfig)
//   PluginEntry.swift   the entry point's body: version negotiation, the host's services
//   CallViews.swift     typed views of forward and backward calls; the CellKernel protocol
//   Workspace.swift     the workspace carver and CarvedWorkspace
//   Trampolines.swift   the descriptors' C functions: argument checks, then the Swift kernel
//   BackwardTail.swift  the gate-matrix backward tail (dX, dW_ih, dW_hh, bias sums)
//   Kernels.swift, Math.swift   vector kernels, the recurrent product, activations

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
    var n = 0
    for byte in message.utf8.prefix(capacity - 1) {
        buffer[n] = CChar(bitPattern: byte)
        n += 1
    }
    buffer[n] = 0
}

// MARK: - Descriptor building (allocated once, kept for the life of the process)

/// A C string that lives for the life of the process.
public func permanentCString(_ s: String) -> UnsafePointer<CChar> {
    UnsafePointer(newCString(s))
}

/// A NUL-terminated copy of `s` on the heap (freed with `deallocate`). Swift's allocator
/// traps on exhaustion, where strdup would return NULL.
func newCString(_ s: String) -> UnsafeMutablePointer<CChar> {
    let utf8 = Array(s.utf8)
    let p = UnsafeMutablePointer<CChar>.allocate(capacity: utf8.count + 1)
    for (i, byte) in utf8.enumerated() { p[i] = CChar(bitPattern: byte) }
    p[utf8.count] = 0
    return p
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
    /// How the host initialises the parameter (ABI 1.2 `init`, `init_a`, `init_b`).
    public enum Initializer: Sendable, Equatable {
        /// By role, as before ABI 1.2 (SEQCELL_INIT_ROLE).
        case role
        /// Every entry drawn from U(lower, upper) (SEQCELL_INIT_UNIFORM).
        case uniform(lower: Double, upper: Double)
        /// Every entry equal to the value (SEQCELL_INIT_CONSTANT).
        case constant(Double)
    }

    public var name: String
    public var role: Int32
    public var shape: [Int]
    public var gateOrder: String
    public var description: String
    public var initializer: Initializer
    /// A checkpoint may omit it (SEQCELL_PARAM_OPTIONAL; ABI 1.2).
    public var optional: Bool

    public init(_ name: String, role: Int32, shape: [Int], gateOrder: String = "", description: String,
                initializer: Initializer = .role, optional: Bool = false) {
        self.name = name
        self.role = role
        self.shape = shape
        self.gateOrder = gateOrder
        self.description = description
        self.initializer = initializer
        self.optional = optional
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
            let p = newCString(s)
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
            switch p.initializer {
            case .role:
                d.`init` = SEQCELL_INIT_ROLE
            case .uniform(let lower, let upper):
                d.`init` = SEQCELL_INIT_UNIFORM
                d.init_a = lower
                d.init_b = upper
            case .constant(let value):
                d.`init` = SEQCELL_INIT_CONSTANT
                d.init_a = value
            }
            d.flags = p.optional ? Int32(SEQCELL_PARAM_OPTIONAL) : 0
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
        for s in strings { s.deallocate() }
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
        var values: [Double] = []
        for (i, spec) in specs.enumerated() {
            guard let given = c.options else { throw .invalid("\(cellID): options is NULL") }
            let v = given[i]
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


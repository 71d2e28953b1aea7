import CSeqCell

#if canImport(Glibc)
import Glibc
#endif
import SeqCellBase

/// How the host reads what a plugin hands it (docs/PLUGIN_ABI.md, "Reading plugin data").
///
/// Every struct a plugin fills (`seqcell_plugin`, `seqcell_cell_desc`, `seqcell_layout` and
/// the option, parameter and state descriptors) is checked against its **ABI 1.0 size** — a
/// constant of this file, never today's `MemoryLayout` size — and copied into a zeroed host
/// struct (`min(struct_size, host size)` bytes), so a field an older plugin lacks reads as
/// zero/NULL and a newer plugin's appended fields are ignored. Arrays of descriptor structs
/// are walked with the stride the plugin declared: the `struct_size` of element 0, which
/// every element must repeat. Strings are read only up to a bound.
enum PluginABI {
    /// Sizes of the plugin-filled structs in the ABI 1.0 header
    /// (Tests/Fixtures/abi/seqcell_abi_1_0.h, LP64). Fixed forever in major 1.
    enum Size10 {
        static let plugin = 32
        static let cellDesc = 96
        static let optionDesc = 56
        static let paramDesc = 56
        static let stateDesc = 24
        static let layout = 40
        /// The call structs the host fills (`ABICall` writes at least these sizes).
        static let forwardArgs = 88
        static let backwardArgs = 120
    }

    /// The largest `struct_size` accepted for any plugin-filled struct: far beyond anything
    /// a minor version will append, small enough that a garbage value is caught.
    static let maxStructSize = 4096

    /// Longest string read from a plugin: ids, names, gate orders and choice lists.
    static let maxNameBytes = 256
    /// Longest description read from a plugin.
    static let maxTextBytes = 16 * 1024

    /// Checks a declared struct size and copies the struct into a zeroed host value.
    /// - Parameters:
    ///   - pointer: where the plugin's struct starts
    ///   - minimum: the struct's ABI 1.0 size
    ///   - what: names the struct in errors ("cell 0: descriptor")
    static func copy<T>(_ type: T.Type, from pointer: UnsafeRawPointer, minimum: Int, what: String) throws -> T {
        let declared = Int(pointer.load(as: UInt32.self))
        guard declared >= minimum else {
            throw SeqCellError(.plugin, "\(what) struct_size is \(declared), smaller than its ABI 1.0 size \(minimum)")
        }
        guard declared <= maxStructSize else {
            throw SeqCellError(.plugin, "\(what) struct_size is \(declared), more than \(maxStructSize) (not a descriptor)")
        }
        return copyUnchecked(type, from: pointer, bytes: declared)
    }

    /// Copies `min(bytes, MemoryLayout<T>.size)` bytes into a zeroed T.
    static func copyUnchecked<T>(_ type: T.Type, from pointer: UnsafeRawPointer, bytes: Int) -> T {
        let size = MemoryLayout<T>.size
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: max(size, 1), alignment: MemoryLayout<T>.alignment)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0, count: size)
        buffer.copyMemory(from: pointer, byteCount: min(bytes, size))
        return buffer.load(as: T.self)
    }

    /// Reads `count` descriptor structs from a plugin's array.
    ///
    /// The rule (seqcell.h, docs/PLUGIN_ABI.md): the element stride is the `struct_size` of
    /// element 0; every element must declare the same `struct_size`; it must be at least the
    /// struct's ABI 1.0 size and a multiple of its alignment (8). A plugin built against a
    /// later minor whose descriptors grew therefore still reads correctly, and each element
    /// is copied into a zeroed host struct like a single descriptor.
    static func array<T>(_ type: T.Type, from base: UnsafeRawPointer, count: Int, minimum: Int,
                         what: String) throws -> [T] {
        guard count > 0 else { return [] }
        let stride = Int(base.load(as: UInt32.self))
        guard stride >= minimum, stride <= maxStructSize else {
            throw SeqCellError(.plugin,
                "\(what) 0 declares struct_size \(stride); array elements need \(minimum)...\(maxStructSize) (ABI 1.0 size up)")
        }
        let alignment = MemoryLayout<T>.alignment
        guard stride % alignment == 0 else {
            throw SeqCellError(.plugin,
                "\(what) 0 declares struct_size \(stride), not a multiple of \(alignment): it cannot be an array stride")
        }
        var out: [T] = []
        out.reserveCapacity(count)
        for i in 0..<count {
            let element = base + i * stride
            let declared = Int(element.load(as: UInt32.self))
            guard declared == stride else {
                throw SeqCellError(.plugin,
                    "\(what) \(i) declares struct_size \(declared) but element 0 declares \(stride); every element of an array must declare the same size")
            }
            out.append(copyUnchecked(type, from: element, bytes: stride))
        }
        return out
    }

    /// A plugin's NUL-terminated string, read at most `limit` bytes far. Throws when no NUL
    /// comes within the bound; invalid UTF-8 is repaired.
    static func string(_ pointer: UnsafePointer<CChar>, limit: Int, what: String) throws -> String {
        let length = strnlen(pointer, limit + 1)
        guard length <= limit else {
            throw SeqCellError(.plugin, "\(what) is not NUL-terminated within \(limit) bytes")
        }
        let bytes = UnsafeRawBufferPointer(start: UnsafeRawPointer(pointer), count: length)
        return String(decoding: bytes, as: UTF8.self)
    }

    /// An optional string (NULL reads as "").
    static func optionalString(_ pointer: UnsafePointer<CChar>?, limit: Int, what: String) throws -> String {
        guard let pointer else { return "" }
        return try string(pointer, limit: limit, what: what)
    }
}

/// Caps on sizes a plugin declares, checked with overflow-checked arithmetic before the host
/// allocates anything from them.
public enum PluginLimits {
    /// The largest dimension of a parameter, a state width or an output width: the host's
    /// BLAS takes 32-bit sizes.
    public static let maxDimension = Int(Int32.max)
    /// The largest single buffer (a parameter tensor, a workspace, an output) in bytes: 1 TiB.
    public static let maxBufferBytes = 1 << 40

    /// `factors` multiplied and then by `elementBytes`, or nil on overflow.
    static func bytes(_ factors: [Int], elementBytes: Int = 4) -> Int? {
        var total = elementBytes
        for f in factors {
            guard f >= 0 else { return nil }
            let (p, overflow) = total.multipliedReportingOverflow(by: f)
            if overflow { return nil }
            total = p
        }
        return total
    }

    /// This machine's physical memory in bytes (nil if unknown).
    static let physicalMemory: Int? = {
        let pages = sysconf(Int32(_SC_PHYS_PAGES)), size = sysconf(Int32(_SC_PAGESIZE))
        guard pages > 0, size > 0 else { return nil }
        let (bytes, overflow) = pages.multipliedReportingOverflow(by: size)
        return overflow ? nil : bytes
    }()

    /// Checks that a float buffer of `factors` elements can be allocated now; returns its
    /// element count. The buffer must fit in `maxBufferBytes` and in this machine's memory
    /// (Swift traps when an array allocation fails; this turns that into an error).
    /// `what` names the buffer in the error ("cell 'x': output [T, B, O]").
    package static func floatCount(_ factors: [Int], what: String) throws -> Int {
        let shown = factors.map(String.init).joined(separator: " × ")
        guard let b = bytes(factors) else {
            throw SeqCellError(.numeric, "\(what) of \(shown) floats is too large: its size in bytes overflows a 64-bit integer")
        }
        guard b <= maxBufferBytes else {
            throw SeqCellError(.numeric, "\(what) of \(shown) floats needs \(b) bytes, more than the \(maxBufferBytes)-byte (1 TiB) limit")
        }
        if let memory = physicalMemory, b > memory {
            throw SeqCellError(.numeric, "\(what) of \(shown) floats needs \(b) bytes, more than this machine's memory (\(memory) bytes)")
        }
        return b / 4
    }
}

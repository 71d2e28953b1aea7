// SeqCellPluginKit: the entry point's body — ABI version negotiation and the host's services.

import CSeqCell

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

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
    // A cell exists only after the entry point kept the table, so this cannot fail from a host.
    guard let host = hostServices?.pointee else { preconditionFailure("sgemm called before seqcell_plugin_entry") }
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

// MARK: - The entry point

/// The C types of `seqcell_plugin_entry`'s parameters, so a cell's forwarder is short:
///
///     @_cdecl("seqcell_plugin_entry")
///     public func seqcell_plugin_entry(_ major: UInt32, _ minor: UInt32, _ host: HostTable?, _ out: PluginSlot?,
///                                      _ error: MessageBuffer?, _ capacity: Int) -> seqcell_status {
///         pluginEntry(major, minor, host, out, error, capacity, plugin: plugin)
///     }
public typealias HostTable = UnsafePointer<seqcell_host>
public typealias PluginSlot = UnsafeMutablePointer<UnsafePointer<seqcell_plugin>?>
public typealias MessageBuffer = UnsafeMutablePointer<CChar>

/// The body of every Swift plugin's `seqcell_plugin_entry`: negotiates the ABI (the major
/// version must match; the kit needs a host of minor 1.2 or newer and a host table reaching
/// `log`), keeps the host table, and hands back `plugin`, which is evaluated only once the
/// negotiation succeeded (a cell's descriptor is a lazily built global, built on first use).
public func pluginEntry(
    _ hostMajor: UInt32, _ hostMinor: UInt32, _ host: HostTable?, _ out: PluginSlot?, _ error: MessageBuffer?,
    _ capacity: Int, plugin: @autoclosure () -> UnsafePointer<seqcell_plugin>
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
    out.pointee = plugin()
    return SEQCELL_OK
}


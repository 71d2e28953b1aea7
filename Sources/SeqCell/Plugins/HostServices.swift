import CBLAS
import CSeqCell
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// The services table every plugin receives (seqcell.h, `seqcell_host`): GEMM from
/// OpenBLAS, aligned allocation, and logging through swift-log. Built once, never freed.
enum HostServices {
    static let logger = Logger(label: "seqcell.plugin")

    /// Heap-allocated once so no `&global` is handed to C.
    nonisolated(unsafe) static let table: UnsafePointer<seqcell_host> = {
        var h = seqcell_host()
        h.struct_size = UInt32(MemoryLayout<seqcell_host>.size)
        h.abi_major = SEQCELL_ABI_MAJOR
        h.abi_minor = SEQCELL_ABI_MINOR
        h.context = nil
        h.sgemm = { _, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc in
            hostSgemm(transA: transA != 0, transB: transB != 0, m: Int(m), n: Int(n), k: Int(k), alpha: alpha,
                      a: a!, lda: Int(lda), b: b!, ldb: Int(ldb), beta: beta, c: c!, ldc: Int(ldc))
        }
        h.aligned_alloc = { _, alignment, size in
            var p: UnsafeMutableRawPointer? = nil
            let align = max(alignment, MemoryLayout<UnsafeRawPointer>.size)
            return posix_memalign(&p, align, max(size, 1)) == 0 ? p : nil
        }
        h.aligned_free = { _, p in free(p) }
        h.log = { _, level, message in
            let text = message.map { String(cString: $0) } ?? ""
            switch level {
            case Int32(SEQCELL_LOG_DEBUG): HostServices.logger.debug("\(text)")
            case Int32(SEQCELL_LOG_INFO): HostServices.logger.info("\(text)")
            case Int32(SEQCELL_LOG_WARNING): HostServices.logger.warning("\(text)")
            default: HostServices.logger.error("\(text)")
            }
        }
        let p = UnsafeMutablePointer<seqcell_host>.allocate(capacity: 1)
        p.initialize(to: h)
        return UnsafePointer(p)
    }()
}

/// Row-major SGEMM, C = alpha·op(A)·op(B) + beta·C, through OpenBLAS. Used by the host's
/// own math (heads, merges) and handed to plugins as `seqcell_host.sgemm`.
@inline(__always)
func hostSgemm(
    transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float = 1,
    a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
    beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
) {
    if m == 0 || n == 0 { return }
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                blasint(m), blasint(n), blasint(k), alpha, a, blasint(lda), b, blasint(ldb), beta, c, blasint(ldc))
}

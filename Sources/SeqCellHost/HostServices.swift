import CBLAS
import CSeqCell
import Logging

#if canImport(Glibc)
import Glibc
#endif
import SeqCellBase

/// The services table every plugin receives (seqcell.h, `seqcell_host`): GEMM from
/// OpenBLAS, aligned allocation, and logging through swift-log. Built once, never freed.
package enum HostServices {
    static let logger = Logger(label: "seqcell.plugin")

    /// Heap-allocated once so no `&global` is handed to C.
    nonisolated(unsafe) static let table: UnsafePointer<seqcell_host> = {
        var h = seqcell_host()
        h.struct_size = UInt32(MemoryLayout<seqcell_host>.size)
        h.abi_major = SEQCELL_ABI_MAJOR
        h.abi_minor = SEQCELL_ABI_MINOR
        h.context = nil
        h.sgemm = { _, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc in
            // A plugin's arguments are checked before OpenBLAS sees them: a bad call is
            // logged and its output, when there is one, set to NaN so the mistake shows.
            let limit = Int64(Int32.max)
            func refuse(_ why: String) {
                HostServices.logger.error("a plugin called seqcell_host.sgemm with \(why) (m=\(m), n=\(n), k=\(k), lda=\(lda), ldb=\(ldb), ldc=\(ldc)); the product was not computed and C is set to NaN")
                if let c, m > 0, n > 0, m <= limit, n <= limit, ldc >= n, ldc <= limit {
                    for i in 0..<Int(m) { (c + i * Int(ldc)).update(repeating: .nan, count: Int(n)) }
                }
            }
            guard m >= 0, n >= 0, k >= 0, m <= limit, n <= limit, k <= limit else { return refuse("a size outside 0...2^31-1") }
            if m == 0 || n == 0 { return }
            let aCols = transA != 0 ? m : k, bCols = transB != 0 ? k : n
            guard lda >= max(1, aCols), ldb >= max(1, bCols), ldc >= max(1, n), lda <= limit, ldb <= limit, ldc <= limit else {
                return refuse("a leading dimension smaller than its matrix's row")
            }
            guard let c, k == 0 || (a != nil && b != nil) else { return refuse("a NULL matrix") }
            if k == 0 {
                // C = beta * C (BLAS semantics), no A or B needed.
                for i in 0..<Int(m) {
                    let row = c + i * Int(ldc)
                    for j in 0..<Int(n) { row[j] = beta == 0 ? 0 : beta * row[j] }
                }
                return
            }
            guard let a, let b else { return refuse("a NULL matrix") }
            hostSgemm(transA: transA != 0, transB: transB != 0, m: Int(m), n: Int(n), k: Int(k), alpha: alpha,
                      a: a, lda: Int(lda), b: b, ldb: Int(ldb), beta: beta, c: c, ldc: Int(ldc))
        }
        h.aligned_alloc = { _, alignment, size in
            var p: UnsafeMutableRawPointer? = nil
            let align = max(alignment, MemoryLayout<UnsafeRawPointer>.size)
            return posix_memalign(&p, align, max(size, 1)) == 0 ? p : nil
        }
        h.aligned_free = { _, p in free(p) }
        h.log = { _, level, message in
            // Read at most 64 KiB: a message without its NUL must not run the host off the end.
            let text = message.map { m in
                String(decoding: UnsafeRawBufferPointer(start: UnsafeRawPointer(m), count: strnlen(m, 1 << 16)), as: UTF8.self)
            } ?? ""
            switch level {
            case Int32(SEQCELL_LOG_DEBUG): HostServices.logger.debug("\(text)")
            case Int32(SEQCELL_LOG_INFO): HostServices.logger.info("\(text)")
            case Int32(SEQCELL_LOG_WARNING): HostServices.logger.warning("\(text)")
            default: HostServices.logger.error("\(text)")
            }
        }
        h.parallel_for = { _, count, fn, arg in
            guard count > 0, let fn else { return }
            HostParallelism.forEach(Int(count)) { i in fn(arg, Int64(i)) }
        }
        h.parallel_threads = { _ in Int32(HostParallelism.available) }
        let p = UnsafeMutablePointer<seqcell_host>.allocate(capacity: 1)
        p.initialize(to: h)
        return UnsafePointer(p)
    }()
}

/// Row-major SGEMM, C = alpha·op(A)·op(B) + beta·C, through OpenBLAS. Used by the host's
/// own math (heads, merges) and handed to plugins as `seqcell_host.sgemm`.
///
/// OpenBLAS runs single-threaded (`HostServices.configureBLAS`); a large product is split
/// by rows of C over the host's worker pool, each part one single-threaded OpenBLAS call.
/// That keeps one set of threads for the whole process: OpenBLAS's own workers spin for
/// ~0.1 s after each threaded call and took a core from the recurrent steps that follow
/// the input projection (measured on configuration A: 1.28× slower with both pools).
@inline(__always)
package func hostSgemm(
    transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float = 1,
    a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
    beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
) {
    if m == 0 || n == 0 { return }
    HostServices.configureBLAS()
    let threads = HostParallelism.available
    if threads > 1, m >= 32, m * n * k >= HostServices.splitMACs {
        // Big products get two chunks per thread, taken dynamically (a shared machine).
        let chunks = min(threads * (m * n * k >= 1 << 26 ? 2 : 1), m / 16)
        let per = ((m + chunks - 1) / chunks + 15) / 16 * 16
        HostParallelism.forEach(chunks) { i in
            let lo = min(i * per, m), hi = min(lo + per, m)
            guard hi > lo else { return }
            cblasSgemm(transA: transA, transB: transB, m: hi - lo, n: n, k: k, alpha: alpha,
                       a: transA ? a + lo : a + lo * lda, lda: lda, b: b, ldb: ldb, beta: beta, c: c + lo * ldc, ldc: ldc)
        }
        return
    }
    cblasSgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb,
               beta: beta, c: c, ldc: ldc)
}

@inline(__always)
func cblasSgemm(
    transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
    a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
    beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
) {
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                blasint(m), blasint(n), blasint(k), alpha, a, blasint(lda), b, blasint(ldb), beta, c, blasint(ldc))
}

extension HostServices {
    /// Products smaller than this many multiply-adds run in one call (splitting costs a
    /// hand-off of a few µs).
    static let splitMACs = 1 << 21

    /// Puts OpenBLAS in single-threaded mode once, before the first product; the host
    /// parallelises instead. SEQCELL_BLAS_THREADS=N keeps N OpenBLAS threads.
    package static func configureBLAS() { _ = blasConfigured }

    private static let blasConfigured: Bool = {
        if let s = getenv("SEQCELL_BLAS_THREADS"), let n = Int32(String(cString: s)), n > 0 {
            openblas_set_num_threads(n)
        } else {
            openblas_set_num_threads(1)
        }
        return true
    }()
}

// Vector kernels for the Swift cells (Sources/CSeqCellKernels): activations and fused gate
// rows with run-time ISA dispatch, and the small-batch recurrent product.

import CSeqCellKernels

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The best kernel table for this CPU (AVX2+FMA or x86-64 baseline), chosen once.
public nonisolated(unsafe) let vectorKernels: sck_table = sck_best().pointee

/// The recurrent product of one step, y[B, n] = (accumulate ? y : 0) + h[B, k] · Wᵀ with
/// W [n, k] row-major. Batches up to `packedBatchLimit` use a packed kernel (W packed once
/// per call into the workspace, then read from cache every step); larger ones the host's
/// sgemm. Measured on issue 6's configuration D (B = 1, H = 128): OpenBLAS 0.3.21's sgemm
/// spends ~6 µs per step there (it packs both operands every call), the packed kernel well
/// under 1 µs.
public struct RecurrentProduct {
    /// SEQCELL_PACKED_BATCH_MAX overrides (0 disables the packed kernel).
    public static let packedBatchLimit: Int = {
        if let s = getenv("SEQCELL_PACKED_BATCH_MAX"), let v = Int(String(cString: s)) { return max(v, 0) }
        return 4
    }()

    public let w: UnsafePointer<Float>
    public let n: Int
    public let k: Int
    let packed: UnsafeMutablePointer<Float>?

    /// Floats of workspace the packed weights need at batch B (0 when BLAS is used).
    public static func workspaceFloats(B: Int, n: Int, k: Int) -> Int {
        B <= packedBatchLimit ? Int(sck_packed_floats(Int64(n), Int64(k))) : 0
    }

    /// `scratch` holds `workspaceFloats(B:n:k:)` floats; W is packed into it when that is > 0.
    public init(w: UnsafePointer<Float>, n: Int, k: Int, B: Int, scratch: UnsafeMutablePointer<Float>) {
        self.w = w
        self.n = n
        self.k = k
        if RecurrentProduct.workspaceFloats(B: B, n: n, k: k) > 0 {
            sck_pack_wt(w, Int64(k), Int64(n), Int64(k), scratch)
            packed = scratch
        } else {
            packed = nil
        }
    }

    @inline(__always)
    public func apply(_ h: UnsafePointer<Float>, ldh: Int, rows: Int, into y: UnsafeMutablePointer<Float>, ldy: Int,
                      accumulate: Bool) {
        if let packed {
            vectorKernels.gemm_packed(h, Int64(rows), Int64(ldh), packed, Int64(n), Int64(k), y, Int64(ldy),
                                      accumulate ? 1 : 0)
        } else {
            sgemm(transA: false, transB: true, m: rows, n: n, k: k, a: h, lda: ldh, b: w, ldb: k,
                  beta: accumulate ? 1 : 0, c: y, ldc: ldy)
        }
    }
}

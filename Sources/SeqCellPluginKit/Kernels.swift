// Vector kernels for the Swift cells (Sources/CSeqCellKernels): activations and fused gate
// rows with run-time ISA dispatch, and the small-batch recurrent product.

import CSeqCell
import CSeqCellKernels

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The best kernel table for this CPU (AVX-512, AVX2+FMA or x86-64 baseline; SEQCELL_ISA caps
/// it), chosen once per process.
public let vectorKernels: sck_table = sck_best().pointee

/// The recurrent product of one step, y[B, n] = (accumulate ? y : 0) + h[B, k] · Wᵀ with
/// W [n, k] row-major. W is packed once per call into the workspace (or once per
/// `params_epoch`, `PackCache`) and the packed kernel reads it every step; OpenBLAS 0.3.21's
/// sgemm re-packs W on every call, which at these
/// shapes (one step: B rows) costs it 10–50% (at B = 1, H = 128: ~7 µs vs <1 µs), and
/// measured single-threaded the packed kernel is ahead at every benchmark shape
/// (benchmarks/, docs/PERFORMANCE.md). Batches above `packedBatchLimit` use the host's sgemm.
public struct RecurrentProduct {
    /// SEQCELL_PACKED_BATCH_MAX overrides (0: always the host's sgemm).
    public static let packedBatchLimit: Int = {
        if let s = getenv("SEQCELL_PACKED_BATCH_MAX"), let v = Int(String(cString: s)) { return max(v, 0) }
        return Int.max
    }()

    public let w: UnsafePointer<Float>
    public let n: Int
    public let k: Int
    public let transposed: Bool
    let packed: UnsafeMutablePointer<Float>?

    /// Floats of workspace the packed weights need at batch B (0 when BLAS is used).
    public static func workspaceFloats(B: Int, n: Int, k: Int) -> Int {
        B <= packedBatchLimit ? Int(sck_packed_floats(Int64(n), Int64(k))) : 0
    }

    /// `scratch` holds `workspaceFloats(B:n:k:)` floats; W is packed into it when that is > 0.
    /// `transposed`: W is given as its transpose, a row-major [k, n] matrix.
    /// `usePacked: false` always calls the host's sgemm (and needs no scratch).
    /// `prepacked`: `scratch` already holds this W's pack (`PackCache`), so it is not packed again.
    public init(w: UnsafePointer<Float>, n: Int, k: Int, B: Int, scratch: UnsafeMutablePointer<Float>,
                transposed: Bool = false, usePacked: Bool = true, prepacked: Bool = false) {
        self.w = w
        self.n = n
        self.k = k
        self.transposed = transposed
        if usePacked && RecurrentProduct.workspaceFloats(B: B, n: n, k: k) > 0 {
            let (rs, cs) = transposed ? (1, n) : (k, 1)
            if !prepacked { RecurrentProduct.pack(w, rs: rs, cs: cs, n: n, k: k, into: scratch) }
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
            sgemm(transA: false, transB: !transposed, m: rows, n: n, k: k, a: h, lda: ldh, b: w, ldb: transposed ? n : k,
                  beta: accumulate ? 1 : 0, c: y, ldc: ldy)
        }
    }
}

extension RecurrentProduct {
    /// Packs W [n, k] (element (j, q) at w[j·rs + q·cs]) into `scratch`; packing reads all of W
    /// once per call, so a large W is shared out over the host's threads by blocks.
    static func pack(_ w: UnsafePointer<Float>, rs: Int, cs: Int, n: Int, k: Int, into scratch: UnsafeMutablePointer<Float>) {
        let blocks = Int(sck_packed_blocks(Int64(n)))
        let threads = n * k >= 1 << 18 ? min(hostParallelThreads(), blocks) : 1
        if threads > 1 {
            hostParallelFor(threads) { c in
                sck_pack_strided_blocks(w, Int64(rs), Int64(cs), Int64(n), Int64(k), scratch,
                                        Int64(c * blocks / threads), Int64((c + 1) * blocks / threads))
            }
        } else {
            sck_pack_strided(w, Int64(rs), Int64(cs), Int64(n), Int64(k), scratch)
        }
    }

    /// Whether `applyUnits` can split this product by hidden units: packed, and each of
    /// `chunks` ranges of `hidden` units whole 16-column blocks.
    public func canSplitUnits(hidden: Int, chunks: Int) -> Bool {
        packed != nil && chunks > 1 && hidden % (16 * chunks) == 0 && !RecurrentProduct.splitRowsOnly
    }

    /// Chunks of hidden units to split a step into (0: split by rows instead). Large steps
    /// get several chunks per thread, taken dynamically, so a thread that loses its core for
    /// a while (a shared machine) does not hold the step up. `threads`: `stepChunks`' answer.
    public func unitChunks(hidden: Int, macs: Int, threads: Int) -> Int {
        guard threads > 1, canSplitUnits(hidden: hidden, chunks: threads) else { return 0 }
        let per = RecurrentProduct.chunksPerThread ?? (macs >= 1 << 25 ? 4 : macs >= 1 << 23 ? 2 : 1)
        var c = threads * per
        while c > threads && hidden % (16 * c) != 0 { c /= 2 }
        return canSplitUnits(hidden: hidden, chunks: c) ? c : threads
    }

    /// SEQCELL_CHUNKS_PER_THREAD=N fixes the unit chunks per thread (for A/B measurements).
    static let chunksPerThread: Int? = getenv("SEQCELL_CHUNKS_PER_THREAD").flatMap { Int(String(cString: $0)) }

    /// SEQCELL_SPLIT=rows: always split steps by rows (for A/B measurements).
    static let splitRowsOnly: Bool = forcedSplit == "rows"

    /// The columns of hidden units `units` in each of `gates` gate blocks of width `hidden`
    /// (needs `canSplitUnits`): y[:, g·hidden + units] (+)= h · W[g·hidden + units, :]ᵀ.
    @inline(__always)
    public func applyUnits(_ h: UnsafePointer<Float>, ldh: Int, rows: Int, into y: UnsafeMutablePointer<Float>, ldy: Int,
                           accumulate: Bool, gates: Int, hidden: Int, units: Range<Int>) {
        for g in 0..<gates {
            vectorKernels.gemm_packed_blocks(h, Int64(rows), Int64(ldh), packed!, Int64(n), Int64(k), y, Int64(ldy),
                                             accumulate ? 1 : 0, Int64((g * hidden + units.lowerBound) / 16),
                                             Int64((g * hidden + units.upperBound) / 16))
        }
    }
}

/// Hidden units [lo, hi) of chunk c of `chunks` (hidden a multiple of 16·chunks).
@inline(__always)
public func chunkUnits(_ c: Int, of chunks: Int, hidden: Int) -> Range<Int> {
    (c * hidden / chunks)..<((c + 1) * hidden / chunks)
}

// MARK: - Host parallelism (ABI 1.1)

/// Threads the host's parallel_for would use now (1 on a 1.0 host, inside host
/// parallelism, or when the host runs single-threaded).
public func hostParallelThreads() -> Int {
    guard let host = hostServices, hostHasParallelFor, let f = host.pointee.parallel_threads else { return 1 }
    return max(Int(f(host.pointee.context)), 1)
}

/// Whether the host table reaches the ABI 1.1 functions.
var hostHasParallelFor: Bool {
    guard let host = hostServices else { return false }
    let needed = MemoryLayout<seqcell_host>.offset(of: \seqcell_host.parallel_threads)! + MemoryLayout<UnsafeRawPointer>.size
    return Int(host.pointee.struct_size) >= needed && host.pointee.parallel_for != nil
}

/// Runs body(0..<count) through the host's parallel_for, or serially without one.
public func hostParallelFor(_ count: Int, _ body: (Int) -> Void) {
    guard count > 1, let host = hostServices, hostHasParallelFor, let pf = host.pointee.parallel_for else {
        for i in 0..<count { body(i) }
        return
    }
    withoutActuallyEscaping(body) { b in
        var closure = b
        withUnsafeMutablePointer(to: &closure) { ctx in
            pf(host.pointee.context, Int64(count), { arg, i in
                arg!.assumingMemoryBound(to: ((Int) -> Void).self).pointee(Int(i))
            }, UnsafeMutableRawPointer(ctx))
        }
    }
}

/// How many row chunks to split one step of `rows` rows into, for a step costing about
/// `macs` multiply-adds: one per host thread when the step is big enough to pay for the
/// hand-off (measured: a few µs per parallel_for), else 1.
public func stepChunks(rows: Int, macs: Int) -> Int {
    guard rows >= 4, macs >= stepSplitMACs else { return 1 }
    return max(1, min(hostParallelThreads(), rows / 2))
}

/// SEQCELL_SPLIT=batch|units|rows fixes how an inference forward shares out its work (for A/B
/// measurements and tests): `batch` splits the whole sequence by batch rows whenever there are
/// two threads and two rows, `units` and `rows` split every step (by hidden units where the
/// packed blocks allow, resp. always by rows). Other values leave the rule.
let forcedSplit: String? = getenv("SEQCELL_SPLIT").map { String(cString: $0) }

/// How many chunks of batch rows an INFERENCE forward of `steps` steps and `rows` rows, whose
/// recurrent weights hold `weights` floats (W_hh: gates·hidden × its input), runs its whole
/// sequence in (1: no such split; the steps are then split one by one as `stepChunks` says).
/// Without backward the rows are independent for the whole sequence, so each chunk runs every
/// step of its rows (its rows of the chunked input projection, of the recurrent product and
/// of the gates) in ONE parallel region: one hand-off per call instead of one per step, and
/// h_t never crosses cores. Each thread then reads all of W_hh every step instead of its
/// share, so the rule (measured, docs/PERFORMANCE.md "Inference split by batch rows") splits
/// when every thread gets at least `batchSplitRowsPerThread` rows (8, the AVX-512 packed
/// kernel's row tile), W_hh is at most `batchSplitMaxWeights` floats (4 MB: config C's 3 MB
/// gained, E's 16 MB lost 10% against the per-step split by hidden units), the call is worth
/// one hand-off, and the kernels are the AVX-512 path (there a chunk's rows of the input
/// projection run on W_ih's pack; on AVX2 and baseline they are one small sgemm per step,
/// which re-packs W_ih every time: A on the AVX2 path was 1.17× faster split per step).
public func sequenceChunks(rows: Int, steps: Int, weights: Int) -> Int {
    let threads = hostParallelThreads()
    guard threads > 1, rows >= 2 else { return 1 }
    switch forcedSplit {
    case "batch": return min(threads, rows)
    case "units", "rows": return 1
    default:
        guard vectorKernels.isa == Int32(SCK_ISA_AVX512), rows >= batchSplitRowsPerThread * 2,
              weights <= batchSplitMaxWeights, steps * rows * weights >= 1 << 20 else { return 1 }
        return min(threads, rows / batchSplitRowsPerThread)
    }
}

/// The fewest rows per thread for which `sequenceChunks` splits by default.
let batchSplitRowsPerThread = 8

/// The most recurrent weights, in floats, for which `sequenceChunks` splits by default: 1<<20 (4 MB).
let batchSplitMaxWeights = 1 << 20

/// Rows [lo, hi) of chunk c of `chunks` near-equal chunks over `rows` rows (a chunk of
/// `sequenceChunks`).
@inline(__always)
public func batchChunkRows(_ c: Int, of chunks: Int, rows: Int) -> Range<Int> {
    (c * rows / chunks)..<((c + 1) * rows / chunks)
}

/// An inference call split by batch rows for the whole sequence (`chunks`: `sequenceChunks`'
/// answer, > 1): one parallel region, each chunk of rows running every step, first its rows of
/// the chunked input projection when a projection chunk starts, then `step(t, rows)`.
@inline(__always)
public func runBatchChunks(_ chunks: Int, rows: Int, steps: Int, projection: ChunkedInputProjection,
                           _ step: (Int, Range<Int>) -> Void) {
    hostParallelFor(chunks) { c in
        let r = batchChunkRows(c, of: chunks, rows: rows)
        for t in 0..<steps {
            if projection.startsChunk(t) { projection.project(chunkAt: t, rows: r) }
            step(t, r)
        }
    }
}

/// The smallest step, in multiply-adds, that `stepChunks` splits: 1<<20;
/// SEQCELL_STEP_SPLIT_MACS=N sets it (for A/B measurements).
let stepSplitMACs: Int = {
    if let s = getenv("SEQCELL_STEP_SPLIT_MACS"), let v = Int(String(cString: s)) { return max(v, 0) }
    return 1 << 20
}()

/// Rows [lo, hi) of chunk c of `chunks` over `rows` rows, in multiples of 6 where possible
/// (the packed kernel's row tile).
@inline(__always)
public func chunkRows(_ c: Int, of chunks: Int, rows: Int) -> Range<Int> {
    if chunks == 1 { return 0..<rows }
    let per = ((rows + chunks - 1) / chunks + 5) / 6 * 6
    let lo = min(c * per, rows), hi = c == chunks - 1 ? rows : min(lo + per, rows)
    return lo..<hi
}

// MARK: - Input projection

/// The input projection of a whole call, y[rows, n] += x[rows, k] · Wᵀ (W [n, k] row-major, y
/// already holding the biases): one large product per layer and direction. On the AVX-512
/// kernel path it runs on the packed kernel (W packed once into `scratch`, the rows shared
/// out over the host's threads in panels of `panelRows`); otherwise on the host's sgemm
/// (OpenBLAS). The rule is measured, not a guess (`benchmarks/proj_micro.c`, one core,
/// docs/PERFORMANCE.md): on a Zen 5 core the AVX-512 packed kernel ran these products at
/// 170–190 GFLOP/s against OpenBLAS 0.3.21's ~100 at every benchmark shape (rows 1280–3200,
/// n 1024–4096, k 128–1024), while the AVX2 packed kernel (81–95) was slower than OpenBLAS.
public enum InputProjection {
    /// SEQCELL_PROJECTION=blas or =packed fixes the choice (for A/B measurements and tests;
    /// other values leave the rule).
    static let forced: String? = getenv("SEQCELL_PROJECTION").map { String(cString: $0) }

    /// Rows of x per packed call (each block pair reads them again: 256 KB at k = 256, 1 MB at
    /// E's k = 1024, whose k is one slice since the whole-k change, docs/PERFORMANCE.md).
    static let panelRows = 256

    /// Whether the packed kernel runs a projection of `rows` rows: on the AVX-512 path for at
    /// least 64 rows (packing W, n·k strided copies, is then well under 2% of the product).
    public static func usesPacked(rows: Int, n: Int, k: Int) -> Bool {
        if forced == "packed" { return true }
        if forced == "blas" { return false }
        return vectorKernels.isa == Int32(SCK_ISA_AVX512) && rows >= 64
    }

    /// Floats of workspace the packed weights need (0 when the host's sgemm runs it). The
    /// buffer is free again once `apply` returns (a cell may share it with W_hh's pack).
    public static func workspaceFloats(rows: Int, n: Int, k: Int) -> Int {
        usesPacked(rows: rows, n: n, k: k) ? Int(sck_packed_floats(Int64(n), Int64(k))) : 0
    }

    /// y[r, :] += x[r, :] · Wᵀ for r < rows. `scratch` holds `workspaceFloats(rows:n:k:)` floats.
    public static func apply(_ x: UnsafePointer<Float>, ldx: Int, rows: Int, w: UnsafePointer<Float>, n: Int, k: Int,
                             into y: UnsafeMutablePointer<Float>, ldy: Int, scratch: UnsafeMutablePointer<Float>) {
        if rows == 0 || n == 0 { return }
        let packed = usesPacked(rows: rows, n: n, k: k) && k > 0
            ? RecurrentProduct(w: w, n: n, k: k, B: 0, scratch: scratch) : nil
        applyRows(x, ldx: ldx, rows: rows, w: w, n: n, k: k, into: y, ldy: ldy, packed: packed)
    }

    /// y[r, :] += x[r, :] · Wᵀ for r < rows with W already packed (`packed`), or on the host's
    /// sgemm when `packed` is nil; rows shared out over the host's threads in panels when large.
    static func applyRows(_ x: UnsafePointer<Float>, ldx: Int, rows: Int, w: UnsafePointer<Float>, n: Int, k: Int,
                          into y: UnsafeMutablePointer<Float>, ldy: Int, packed: RecurrentProduct?) {
        guard let packed else {
            sgemm(transA: false, transB: true, m: rows, n: n, k: k, a: x, lda: ldx, b: w, ldb: k, beta: 1, c: y, ldc: ldy)
            return
        }
        let panels = (rows + panelRows - 1) / panelRows
        let threads = rows * n * k >= 1 << 21 ? min(hostParallelThreads(), panels) : 1
        // Two tasks per thread for large products, taken dynamically by the pool's threads.
        let tasks = threads > 1 ? min(panels, threads * 2) : 1
        func run(_ task: Int) {
            let lo = task * panels / tasks * panelRows, hi = min((task + 1) * panels / tasks * panelRows, rows)
            var r = lo
            while r < hi {
                let m = min(panelRows, hi - r)
                packed.apply(x + r * ldx, ldh: ldx, rows: m, into: y + r * ldy, ldy: ldy, accumulate: true)
                r += m
            }
        }
        if tasks == 1 { run(0) } else { hostParallelFor(tasks) { run($0) } }
    }
}

// MARK: - Chunked input projection (inference)

/// The input projection of an inference forward, computed inside the step loop in chunks of
/// `steps` steps into a ring buffer [steps, B, n]: before step t with t % steps == 0,
/// gates[t..<t+steps) = X[t..<t+steps) · Wᵀ + bias1 + bias2. The cell's workspace then no
/// longer grows with T (training keeps the whole-call projection: backward needs every
/// step's gates). On the packed path (AVX-512, as `InputProjection`) W is packed once per
/// call into its own buffer, beside W_hh's pack, and a step split over threads by hidden
/// units projects the same units of the chunk inside the same parallel region. On AVX2 and
/// baseline the chunk runs on the host's sgemm (split by the same units when the step is).
public struct ChunkedInputProjection {
    /// SEQCELL_PROJ_STEPS=N (N >= 1) fixes the steps per chunk (for A/B measurements and tests).
    static let forcedSteps: Int? = getenv("SEQCELL_PROJ_STEPS").flatMap { Int(String(cString: $0)) }.flatMap { $0 >= 1 ? $0 : nil }

    /// Ring budget: a chunk's gates stay within 512 KB (they are read back within a few steps),
    /// but a chunk has at least 256 rows so that the product still runs at GEMM speed.
    static let budgetBytes = 512 * 1024
    static let minimumRows = 256

    /// Steps per chunk for a call of T steps at batch B, gate width n.
    public static func steps(T: Int, B: Int, n: Int) -> Int {
        let T = max(T, 1)
        if let s = forcedSteps { return min(s, T) }
        let fit = budgetBytes / max(B * n * MemoryLayout<Float>.size, 1)
        let least = (minimumRows + max(B, 1) - 1) / max(B, 1)
        return min(max(fit, least, 1), T)
    }

    @inline(__always)
    static func roundUp16(_ x: Int) -> Int { (x + 15) / 16 * 16 }

    static func usesPacked(T: Int, B: Int, n: Int, k: Int) -> Bool {
        k > 0 && n > 0 && InputProjection.usesPacked(rows: steps(T: T, B: B, n: n) * B, n: n, k: k)
    }

    /// Floats of workspace: the ring, the bias row, then W's pack on the packed path (each
    /// rounded up to 16 floats, so the pack starts 64-byte aligned as the carver's buffers do).
    public static func workspaceFloats(T: Int, B: Int, n: Int, k: Int) -> Int {
        roundUp16(steps(T: T, B: B, n: n) * B * n) + roundUp16(n) + (usesPacked(T: T, B: B, n: n, k: k) ? Int(sck_packed_floats(Int64(n), Int64(k))) : 0)
    }

    public let steps: Int
    let x: UnsafePointer<Float>
    let w: UnsafePointer<Float>
    /// bias1 + bias2, the first term of every projected row.
    let bias: UnsafeMutablePointer<Float>
    let T: Int, B: Int, n: Int, k: Int
    let ring: UnsafeMutablePointer<Float>
    let packed: RecurrentProduct?

    /// x [T, B, k], W [n, k]; `scratch` holds `workspaceFloats(T:B:n:k:)` floats. The rows'
    /// bias is bias1 (all n columns) + bias2 (its first `bias2Columns` columns, default n);
    /// either may be nil. `prepacked`: W's pack is already in `scratch` (`PackCache`).
    public init(x: UnsafePointer<Float>, w: UnsafePointer<Float>, n: Int, k: Int, T: Int, B: Int,
                bias1: UnsafePointer<Float>?, bias2: UnsafePointer<Float>?, bias2Columns: Int? = nil,
                scratch: UnsafeMutablePointer<Float>, prepacked: Bool = false) {
        let s = ChunkedInputProjection.steps(T: T, B: B, n: n)
        (self.x, self.w, self.n, self.k, self.T, self.B, steps, ring) = (x, w, n, k, T, B, s, scratch)
        bias = scratch + ChunkedInputProjection.roundUp16(s * B * n)
        let b2 = min(bias2Columns ?? n, n)
        for j in 0..<n { bias[j] = (bias1?[j] ?? 0) + (j < b2 ? bias2?[j] ?? 0 : 0) }
        packed = ChunkedInputProjection.usesPacked(T: T, B: B, n: n, k: k)
            ? RecurrentProduct(w: w, n: n, k: k, B: 0, scratch: bias + ChunkedInputProjection.roundUp16(n), prepacked: prepacked)
            : nil
    }

    /// Step t's gate rows [B, n] in the ring.
    @inline(__always)
    public func gates(step t: Int) -> UnsafeMutablePointer<Float> { ring + (t % steps) * B * n }

    /// Whether step t starts a chunk (its projection is due before the step's product).
    @inline(__always)
    public func startsChunk(_ t: Int) -> Bool { t % steps == 0 }

    /// Whether `project(chunkAt:gates:hidden:units:)` can run the units of `chunks` chunks
    /// (packed: whole 16-column blocks per chunk; the host's sgemm takes any columns).
    public func canSplitUnits(hidden: Int, chunks: Int) -> Bool {
        packed.map { $0.canSplitUnits(hidden: hidden, chunks: chunks) } ?? (chunks > 1)
    }

    /// Projects the chunk starting at step t (every column), over the host's threads when large.
    public func project(chunkAt t: Int) {
        let rows = min(steps, T - t) * B
        guard rows > 0 else { return }
        for r in 0..<rows { (ring + r * n).update(from: bias, count: n) }
        InputProjection.applyRows(x + t * B * k, ldx: k, rows: rows, w: w, n: n, k: k, into: ring, ldy: n, packed: packed)
    }

    /// Projects batch rows `r` of every step of the chunk starting at step t (all columns): the
    /// caller's share of a call split by batch rows (`sequenceChunks`). The rows of one step
    /// are contiguous in x [T, B, k] and in the ring [steps, B, n], so one product per step.
    public func project(chunkAt t: Int, rows r: Range<Int>) {
        let count = min(steps, T - t)
        guard count > 0, !r.isEmpty else { return }
        for s in 0..<count {
            let y = ring + (s * B + r.lowerBound) * n
            for i in 0..<r.count { (y + i * n).update(from: bias, count: n) }
            let xs = x + ((t + s) * B + r.lowerBound) * k
            if let packed {
                packed.apply(xs, ldh: k, rows: r.count, into: y, ldy: n, accumulate: true)
            } else {
                sgemm(transA: false, transB: true, m: r.count, n: n, k: k, a: xs, lda: k, b: w, ldb: k, beta: 1, c: y, ldc: n)
            }
        }
    }

    /// Projects hidden units `units` of each of `gates` gate blocks of width `hidden` for the
    /// chunk starting at step t (needs `canSplitUnits`): the caller's share of a step split by units.
    public func project(chunkAt t: Int, gates: Int, hidden: Int, units: Range<Int>) {
        let rows = min(steps, T - t) * B
        guard rows > 0, !units.isEmpty else { return }
        for r in 0..<rows {
            let y = ring + r * n
            for g in 0..<gates {
                let lo = g * hidden + units.lowerBound
                (y + lo).update(from: bias + lo, count: units.count)
            }
        }
        let xc = x + t * B * k
        guard let packed else {
            for g in 0..<gates {
                let lo = g * hidden + units.lowerBound
                sgemm(transA: false, transB: true, m: rows, n: units.count, k: k, a: xc, lda: k, b: w + lo * k, ldb: k,
                      beta: 1, c: ring + lo, ldc: n)
            }
            return
        }
        var r = 0
        while r < rows {
            let m = min(InputProjection.panelRows, rows - r)
            packed.applyUnits(xc + r * k, ldh: k, rows: m, into: ring + r * n, ldy: n, accumulate: true, gates: gates,
                              hidden: hidden, units: units)
            r += m
        }
    }
}

import CBLAS
import CSeqCellKernels
import Foundation
import XCTest
@testable import SeqCellBase
@testable import SeqCellHost
@testable import SeqCellModel
@testable import SeqCellFormats
import SeqCellTestSupport

/// The plugins' vector kernels (Sources/CSeqCellKernels), every ISA build this CPU runs:
/// activations against libm over dense ranges, fused gate rows against scalar Double
/// references, the packed small-batch GEMM against OpenBLAS. No timing here.
final class KernelTests: XCTestCase {
    var tables: [sck_table] {
        [SCK_ISA_BASELINE, SCK_ISA_AVX2, SCK_ISA_AVX512].compactMap { sck_kernels(Int32($0))?.pointee }
    }

    func testBaselineAlwaysAvailableAndBestIsOneOfThem() {
        XCTAssertNotNil(sck_kernels(Int32(SCK_ISA_BASELINE)))
        let best = sck_best()!.pointee.isa
        XCTAssert(tables.contains { $0.isa == best })
    }

    func testSigmoidMatchesLibmOverADenseRange() {
        let n = 400_001
        let xs = (0..<n).map { Float(-60 + 120 * Double($0) / Double(n - 1)) }
        for t in tables {
            var y = xs
            t.sigmoid(&y, Int64(n))
            var worstRel = 0.0, worstAbs = 0.0
            for (x, v) in zip(xs, y) {
                let ref = 1 / (1 + exp(-Double(x)))
                let d = abs(Double(v) - ref)
                worstAbs = max(worstAbs, d)
                if ref > 1e-30 { worstRel = max(worstRel, d / ref) }
                XCTAssert(v >= 0 && v <= 1, "sigmoid(\(x)) = \(v)")
            }
            XCTAssertLessThan(worstAbs, 2e-7, "isa \(t.isa)")
            XCTAssertLessThan(worstRel, 1e-6, "isa \(t.isa)")
            // Extremes stay finite and saturate.
            var ext: [Float] = [-Float.greatestFiniteMagnitude, -1000, -88, 0, 88, 1000, .greatestFiniteMagnitude, 3]
            t.sigmoid(&ext, Int64(ext.count))
            XCTAssertEqual(ext[0], 0, accuracy: 1e-30)
            XCTAssertEqual(ext[3], 0.5)
            XCTAssertEqual(ext[6], 1)
            XCTAssert(ext.allSatisfy(\.isFinite))
        }
    }

    func testTanhMatchesLibmOverADenseRange() {
        let n = 400_001
        let xs = (0..<n).map { Float(-20 + 40 * Double($0) / Double(n - 1)) } + [0, 1e-8, -1e-8, 3e-4, 5e-4, 1e-3]
        for t in tables {
            var y = xs
            t.tanh(&y, Int64(y.count))
            var worstAbs = 0.0, worstRel = 0.0
            for (x, v) in zip(xs, y) {
                let ref = tanh(Double(x))
                let d = abs(Double(v) - ref)
                worstAbs = max(worstAbs, d)
                if ref != 0 { worstRel = max(worstRel, d / abs(ref)) }
                XCTAssert(abs(v) <= 1, "tanh(\(x)) = \(v)")
            }
            XCTAssertLessThan(worstAbs, 5e-7, "isa \(t.isa)")
            XCTAssertLessThan(worstRel, 1e-6, "isa \(t.isa)")
            var copy = [Float](repeating: 9, count: 13), copy2 = [Float](repeating: 9, count: 13)
            t.tanh_copy(xs, &copy, &copy2, 13)
            XCTAssertEqual(copy, Array(y.prefix(13)))
            XCTAssertEqual(copy2, Array(y.prefix(13)))
        }
    }

    func testLSTMRowMatchesScalarReference() {
        var rng = SplitMix64(seed: 5)
        for H in [1, 7, 8, 13, 64] {
            let gates = (0..<4 * H).map { _ in rng.uniform(-4, 4) }
            let cPrev = (0..<H).map { _ in rng.uniform(-2, 2) }
            for t in tables {
                var g = gates, c = [Float](repeating: 0, count: H), h = c, h2 = c
                t.lstm_row(&g, Int64(H), cPrev, &c, &h, &h2, 1)
                for j in 0..<H {
                    let i = sigmoidD(Double(gates[j])), f = sigmoidD(Double(gates[H + j]))
                    let gg = tanh(Double(gates[2 * H + j])), o = sigmoidD(Double(gates[3 * H + j]))
                    let cv = f * Double(cPrev[j]) + i * gg
                    XCTAssertEqual(Double(c[j]), cv, accuracy: 1e-6)
                    XCTAssertEqual(Double(h[j]), o * tanh(cv), accuracy: 1e-6)
                    XCTAssertEqual(h2[j], h[j])
                    XCTAssertEqual(Double(g[j]), i, accuracy: 1e-6)
                    XCTAssertEqual(Double(g[2 * H + j]), gg, accuracy: 1e-6)
                }
                // Without storing, the pre-activations stay; in place (c_next == c_prev) works.
                var g2 = gates, cc = cPrev, hh = [Float](repeating: 0, count: H)
                t.lstm_row(&g2, Int64(H), cc, &cc, &hh, nil, 0)
                XCTAssertEqual(g2, gates)
                XCTAssertEqual(cc, c)
                XCTAssertEqual(hh, h)
            }
        }
    }

    func testGRURowMatchesScalarReference() {
        var rng = SplitMix64(seed: 6)
        for H in [1, 5, 8, 17] {
            let gx = (0..<3 * H).map { _ in rng.uniform(-3, 3) }
            let gh = (0..<3 * H).map { _ in rng.uniform(-3, 3) }
            let bhn = (0..<H).map { _ in rng.uniform(-1, 1) }
            let hp = (0..<H).map { _ in rng.uniform(-1, 1) }
            for t in tables {
                var x = gx, out = [Float](repeating: 0, count: H)
                t.gru_row(&x, gh, bhn, hp, &out, nil, Int64(H), 1)
                for j in 0..<H {
                    let r = sigmoidD(Double(gx[j] + gh[j])), z = sigmoidD(Double(gx[H + j] + gh[H + j]))
                    let n = tanh(Double(gx[2 * H + j]) + r * Double(gh[2 * H + j] + bhn[j]))
                    XCTAssertEqual(Double(out[j]), (1 - z) * n + z * Double(hp[j]), accuracy: 1e-6)
                    XCTAssertEqual(Double(x[H + j]), z, accuracy: 1e-6)
                }
            }
        }
    }

    func testPackedGemmMatchesOpenBLAS() {
        var rng = SplitMix64(seed: 7)
        for (m, n, k) in [(1, 128, 128), (1, 1, 1), (2, 33, 5), (3, 100, 64), (4, 1024, 256), (5, 31, 17), (1, 70, 129)] {
            let ldx = k + 3, ldy = n + 2
            let w = (0..<n * k).map { _ in rng.uniform(-1, 1) }
            let x = (0..<m * ldx).map { _ in rng.uniform(-1, 1) }
            let y0 = (0..<m * ldy).map { _ in rng.uniform(-1, 1) }
            var packed = [Float](repeating: .nan, count: Int(sck_packed_floats(Int64(n), Int64(k))))
            sck_pack_wt(w, Int64(k), Int64(n), Int64(k), &packed)
            for accumulate in [false, true] {
                var ref = y0
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, blasint(m), blasint(n), blasint(k), 1, x, blasint(ldx),
                            w, blasint(k), accumulate ? 1 : 0, &ref, blasint(ldy))
                for t in tables {
                    var y = y0
                    t.gemm_packed(x, Int64(m), Int64(ldx), packed, Int64(n), Int64(k), &y, Int64(ldy), accumulate ? 1 : 0)
                    var worst: Float = 0
                    for r in 0..<m { for j in 0..<n { worst = max(worst, abs(y[r * ldy + j] - ref[r * ldy + j])) } }
                    XCTAssertLessThan(worst, 1e-4 * Float(k).squareRoot(), "m=\(m) n=\(n) k=\(k) acc=\(accumulate) isa \(t.isa)")
                    for r in 0..<m { for j in n..<ldy { XCTAssertEqual(y[r * ldy + j], y0[r * ldy + j], "padding untouched") } }
                }
            }
        }
    }
}

extension KernelTests {
    /// The transposed-x packed GEMM (weight gradients dW += dᵀ·S, S packed as W = Sᵀ) on every
    /// ISA path against OpenBLAS's sgemm(transA) and a Double reference: row counts around
    /// the row tiles (1-3, 8, 9, 17, 64), an odd and a partial last block, k past one and two
    /// 256-step slices, a leading dimension wider than m, both accumulate modes; split by
    /// blocks and by rows it gives the same bits as one call (threads may split it either way).
    func testTransposedPackedGemmMatchesOpenBLAS() {
        var rng = SplitMix64(seed: 31)
        for (m, n, k) in [(1, 16, 7), (2, 33, 300), (3, 100, 64), (8, 64, 257), (9, 80, 20), (17, 48, 600),
                          (64, 256, 520), (13, 17, 33)] {
            let ldx = m + 5, ldy = n + 3
            let s = (0..<k * n).map { _ in rng.uniform(-1, 1) }       // S [k, n]
            let d = (0..<k * ldx).map { _ in rng.uniform(-1, 1) }     // d [k, ldx], m columns used
            let y0 = (0..<m * ldy).map { _ in rng.uniform(-1, 1) }
            var packed = [Float](repeating: .nan, count: Int(sck_packed_floats(Int64(n), Int64(k))))
            sck_pack_strided(s, 1, Int64(n), Int64(n), Int64(k), &packed)
            let blocks = sck_packed_blocks(Int64(n))
            for accumulate: Int32 in [0, 1] {
                var ref = y0
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, blasint(m), blasint(n), blasint(k), 1, d, blasint(ldx),
                            s, blasint(n), accumulate == 1 ? 1 : 0, &ref, blasint(ldy))
                XCTAssertEqual(tables.count, [SCK_ISA_BASELINE, SCK_ISA_AVX2, SCK_ISA_AVX512]
                    .filter { sck_kernels(Int32($0)) != nil }.count)
                for t in tables {
                    var y = y0
                    t.gemm_packed_xt_blocks(d, Int64(m), Int64(ldx), packed, Int64(n), Int64(k), &y, Int64(ldy),
                                            accumulate, 0, blocks)
                    var worst: Float = 0, worstD = 0.0
                    for r in 0..<m {
                        for j in 0..<n {
                            worst = max(worst, abs(y[r * ldy + j] - ref[r * ldy + j]))
                            var e = accumulate == 1 ? Double(y0[r * ldy + j]) : 0
                            for q in 0..<k { e += Double(d[q * ldx + r]) * Double(s[q * n + j]) }
                            worstD = max(worstD, abs(Double(y[r * ldy + j]) - e))
                        }
                        for j in n..<ldy { XCTAssertEqual(y[r * ldy + j], y0[r * ldy + j], "padding untouched") }
                    }
                    let tol = 2e-6 * Float(k).squareRoot()
                    XCTAssertLessThan(worst, tol, "xt m=\(m) n=\(n) k=\(k) acc=\(accumulate) isa \(t.isa) vs OpenBLAS")
                    XCTAssertLessThan(worstD, Double(tol), "xt m=\(m) n=\(n) k=\(k) acc=\(accumulate) isa \(t.isa) vs Double")
                    // Split by blocks, and by rows (x offset by the rows, y by their rows): same bits.
                    var yb = y0
                    for (lo, hi) in [(Int64(0), blocks / 2), (blocks / 2, blocks)] {
                        t.gemm_packed_xt_blocks(d, Int64(m), Int64(ldx), packed, Int64(n), Int64(k), &yb, Int64(ldy),
                                                accumulate, lo, hi)
                    }
                    XCTAssertEqual(yb, y, "xt by blocks m=\(m) n=\(n) k=\(k) isa \(t.isa)")
                    var yr = y0
                    let cut = m / 2
                    yr.withUnsafeMutableBufferPointer { yp in
                        d.withUnsafeBufferPointer { dp in
                            for (lo, hi) in [(0, cut), (cut, m)] where hi > lo {
                                t.gemm_packed_xt_blocks(dp.baseAddress! + lo, Int64(hi - lo), Int64(ldx), packed, Int64(n),
                                                        Int64(k), yp.baseAddress! + lo * ldy, Int64(ldy), accumulate, 0, blocks)
                            }
                        }
                    }
                    XCTAssertEqual(yr, y, "xt by rows m=\(m) n=\(n) k=\(k) isa \(t.isa)")
                }
            }
        }
    }
}

/// Every kernel on every ISA path this CPU runs against the baseline build and a plain
/// Double reference; a path the CPU cannot run fails no test but is skipped by name. The
/// tolerances (docs/PERFORMANCE.md, "Instruction sets"): activations within 4e-7 of the
/// baseline (same polynomials; FMA contraction is the only difference), gate rows within
/// 2e-6, the packed GEMM within 2e-6·√k·max|x||w| of the baseline and of the reference. AVX-512 and
/// AVX2 run the same operations with FMA, element by element in the same order (the
/// GEMM's row tiles differ, its per-element k order does not, except where the 8-float tiling
/// leaves a 1- or 2-row remainder, which splits k), so they agree bit for bit.
extension sck_table {
    typealias Fn = @convention(c) (UnsafeMutablePointer<Float>?, Int64) -> Void
}

final class KernelISATests: XCTestCase {
    static let paths: [(name: String, isa: Int32)] = [("avx2", Int32(SCK_ISA_AVX2)), ("avx512", Int32(SCK_ISA_AVX512))]

    func table(_ name: String) throws -> sck_table {
        let isa = Self.paths.first { $0.name == name }!.isa
        guard let t = sck_kernels(isa) else {
            throw XCTSkip("ISA path \(name): this CPU (or its OS) cannot run it, so its kernels are not tested here")
        }
        return t.pointee
    }

    var baseline: sck_table { sck_kernels(Int32(SCK_ISA_BASELINE))!.pointee }

    func testAVX2KernelsMatchBaselineAndReference() throws { try checkAll(try table("avx2"), name: "avx2") }

    func testAVX512KernelsMatchBaselineAndReference() throws { try checkAll(try table("avx512"), name: "avx512") }

    /// The packed GEMM past 256-step k (E's k = 1024 is one slice, k > 1024 runs in slices of
    /// 1024), on every path: against a Double reference and the baseline path, by blocks (two
    /// calls) bit for bit equal to the whole product, both accumulate modes; on the AVX-512
    /// path by rows too (its row tiles are all of 3 to 8 rows; the 8-float paths give a 1- or
    /// 2-row remainder its own k order).
    func checkLargeK(_ t: sck_table, name: String) {
        var rng = SplitMix64(seed: 33)
        let b = baseline
        for (m, n, k) in [(64, 96, 1024), (20, 80, 1100), (3, 48, 2100), (9, 40, 1025)] {
            let ldx = k + 5, ldy = n + 1
            let w = (0..<n * k).map { _ in rng.uniform(-1, 1) }, x = (0..<m * ldx).map { _ in rng.uniform(-1, 1) }
            let y0 = (0..<m * ldy).map { _ in rng.uniform(-1, 1) }
            var packed = [Float](repeating: .nan, count: Int(sck_packed_floats(Int64(n), Int64(k))))
            sck_pack_wt(w, Int64(k), Int64(n), Int64(k), &packed)
            let tol = 2e-6 * Double(k).squareRoot()
            let blocks = sck_packed_blocks(Int64(n))
            for accumulate: Int32 in [0, 1] {
                var y = y0, yb = y0, yk = y0, yr = y0
                t.gemm_packed(x, Int64(m), Int64(ldx), packed, Int64(n), Int64(k), &y, Int64(ldy), accumulate)
                b.gemm_packed(x, Int64(m), Int64(ldx), packed, Int64(n), Int64(k), &yb, Int64(ldy), accumulate)
                for (lo, hi) in [(Int64(0), blocks / 2 + 1), (blocks / 2 + 1, blocks)] {
                    t.gemm_packed_blocks(x, Int64(m), Int64(ldx), packed, Int64(n), Int64(k), &yk, Int64(ldy), accumulate, lo, hi)
                }
                XCTAssertEqual(yk, y, "\(name) gemm by blocks m=\(m) n=\(n) k=\(k) acc=\(accumulate)")
                if m >= 6 && t.isa == Int32(SCK_ISA_AVX512) {
                    let half = m / 2
                    x.withUnsafeBufferPointer { xp in
                        yr.withUnsafeMutableBufferPointer { yp in
                            for (r0, rows) in [(0, half), (half, m - half)] {
                                t.gemm_packed(xp.baseAddress! + r0 * ldx, Int64(rows), Int64(ldx), packed, Int64(n), Int64(k),
                                              yp.baseAddress! + r0 * ldy, Int64(ldy), accumulate)
                            }
                        }
                    }
                    XCTAssertEqual(yr, y, "\(name) gemm by rows m=\(m) n=\(n) k=\(k) acc=\(accumulate)")
                }
                var worstRef = 0.0, worstBase: Float = 0
                for r in 0..<m {
                    for j in 0..<n {
                        var ref = accumulate == 1 ? Double(y0[r * ldy + j]) : 0
                        for q in 0..<k { ref += Double(x[r * ldx + q]) * Double(w[j * k + q]) }
                        worstRef = max(worstRef, abs(Double(y[r * ldy + j]) - ref))
                        worstBase = max(worstBase, abs(y[r * ldy + j] - yb[r * ldy + j]))
                    }
                    for j in n..<ldy { XCTAssertEqual(y[r * ldy + j], y0[r * ldy + j], "\(name): padding untouched") }
                }
                XCTAssertLessThan(worstRef, tol, "\(name) gemm m=\(m) n=\(n) k=\(k) acc=\(accumulate) vs reference")
                XCTAssertLessThan(Double(worstBase), tol, "\(name) gemm m=\(m) n=\(n) k=\(k) acc=\(accumulate) vs baseline")
            }
        }
    }

    func testLargeKPackedGemmBaseline() { checkLargeK(baseline, name: "baseline") }

    func testLargeKPackedGemmAVX2() throws { checkLargeK(try table("avx2"), name: "avx2") }

    func testLargeKPackedGemmAVX512() throws { checkLargeK(try table("avx512"), name: "avx512") }

    func testAVX512AndAVX2AgreeBitForBit() throws {
        let a = try table("avx512"), b = try table("avx2")
        var rng = SplitMix64(seed: 21)
        let xs = (0..<10_007).map { _ in rng.uniform(-12, 12) }
        var ya = xs, yb = xs
        a.tanh(&ya, Int64(xs.count)); b.tanh(&yb, Int64(xs.count))
        XCTAssertEqual(ya, yb)
        ya = xs; yb = xs
        a.sigmoid(&ya, Int64(xs.count)); b.sigmoid(&yb, Int64(xs.count))
        XCTAssertEqual(ya, yb)
        let (m, n, k) = (29, 77, 131)
        let w = (0..<n * k).map { _ in rng.uniform(-1, 1) }, x = (0..<m * k).map { _ in rng.uniform(-1, 1) }
        var packed = [Float](repeating: 0, count: Int(sck_packed_floats(Int64(n), Int64(k))))
        sck_pack_wt(w, Int64(k), Int64(n), Int64(k), &packed)
        var ga = [Float](repeating: 0, count: m * n), gb = ga
        a.gemm_packed(x, Int64(m), Int64(k), packed, Int64(n), Int64(k), &ga, Int64(n), 0)
        b.gemm_packed(x, Int64(m), Int64(k), packed, Int64(n), Int64(k), &gb, Int64(n), 0)
        XCTAssertEqual(ga, gb)
    }

    /// The chosen path: the best this CPU runs, capped by SEQCELL_ISA (unset in the suite).
    func testBestIsTheHighestRunnablePath() throws {
        let runnable = [SCK_ISA_BASELINE, SCK_ISA_AVX2, SCK_ISA_AVX512].filter { sck_kernels(Int32($0)) != nil }
        let limit = sck_isa_limit()
        XCTAssertEqual(sck_best()!.pointee.isa, Int32(runnable.filter { Int32($0) <= limit }.max()!))
        XCTAssertEqual(sck_isa_named("avx512"), Int32(SCK_ISA_AVX512))
        XCTAssertEqual(sck_isa_named("avx2"), Int32(SCK_ISA_AVX2))
        XCTAssertEqual(sck_isa_named("baseline"), Int32(SCK_ISA_BASELINE))
        XCTAssertEqual(sck_isa_named("AVX9"), -1)
        XCTAssertEqual(String(cString: sck_isa_name(Int32(SCK_ISA_AVX512))), "avx512")
    }

    /// The host's report (seqcell bench / plugins) and the kernels' choice read the CPU the same
    /// way, and both agree with the kernel's own /proc/cpuinfo flags.
    func testHostReportMatchesKernelsAndProcCpuinfo() throws {
        let kernels = CPUFeatures(bits: sck_cpu_features())
        XCTAssertEqual(CPUFeatures.current, kernels)
        XCTAssertEqual(kernels.avx2FMA, sck_kernels(Int32(SCK_ISA_AVX2)) != nil)
        XCTAssertEqual(kernels.avx512, sck_kernels(Int32(SCK_ISA_AVX512)) != nil)
        guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let line = info.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else {
            throw XCTSkip("/proc/cpuinfo has no flags line here: the cross-check against the OS is not made")
        }
        let flags = Set(line.split(separator: ":").last!.split(separator: " ").map(String.init))
        XCTAssertEqual(kernels.avx2FMA, flags.contains("avx2") && flags.contains("fma"))
        XCTAssertEqual(kernels.avx512, ["avx512f", "avx512bw", "avx512vl", "avx512dq"].allSatisfy(flags.contains))
        XCTAssertEqual(kernels.avx512BF16, flags.contains("avx512_bf16"))
        XCTAssertEqual(kernels.avx512VNNI, flags.contains("avx512_vnni"))
    }

    func checkAll(_ t: sck_table, name: String) throws {
        let b = baseline
        var rng = SplitMix64(seed: 17)
        // Activations over a dense range, tails of every length.
        let dense: [Float] = (0..<40_001).map { (i: Int) -> Float in Float(-25 + 50 * Double(i) / 40_000) }
        let specials: [Float] = [0, -0, 1e-9, .infinity, -.infinity]
        let xs = dense + specials
        let fns: [(String, sck_table.Fn, sck_table.Fn)] = [("sigmoid", t.sigmoid!, b.sigmoid!), ("tanh", t.tanh!, b.tanh!)]
        for (label, f, g) in fns {
            for n in [xs.count, 1, 7, 15, 17, 31] {
                var y = Array(xs.suffix(n)), yb = y
                f(&y, Int64(n)); g(&yb, Int64(n))
                let worst = zip(y, yb).map { abs($0 - $1) }.max()!
                XCTAssertLessThanOrEqual(worst, 4e-7, "\(name) \(label) n=\(n) vs baseline")
            }
        }
        var co = [Float](repeating: 0, count: 21), co2 = co, cb = co
        t.tanh_copy(xs, &co, &co2, 21); b.tanh_copy(xs, &cb, nil, 21)
        XCTAssertEqual(co, co2)
        XCTAssertLessThanOrEqual(zip(co, cb).map { abs($0 - $1) }.max()!, 4e-7, "\(name) tanh_copy")

        for H in [1, 5, 8, 16, 23, 37, 64] {
            // LSTM row, whole and in ranges, against the baseline and a Double reference.
            let gates = (0..<4 * H).map { _ in rng.uniform(-5, 5) }, cPrev = (0..<H).map { _ in rng.uniform(-2, 2) }
            var g1 = gates, g2 = gates, g3 = gates
            var c1 = [Float](repeating: 0, count: H), c2 = c1, c3 = c1, h1 = c1, h2 = c1, h3 = c1, hh = c1
            t.lstm_row(&g1, Int64(H), cPrev, &c1, &h1, &hh, 1)
            b.lstm_row(&g2, Int64(H), cPrev, &c2, &h2, nil, 1)
            let cut = H / 3
            t.lstm_row_range(&g3, Int64(H), 0, Int64(cut), cPrev, &c3, &h3, nil, 1)
            t.lstm_row_range(&g3, Int64(H), Int64(cut), Int64(H), cPrev, &c3, &h3, nil, 1)
            XCTAssertEqual(hh, h1)
            XCTAssertEqual(h3, h1, "\(name) lstm_row_range H=\(H)")
            XCTAssertEqual(g3, g1, "\(name) lstm_row_range acts H=\(H)")
            for j in 0..<H {
                let i = sigmoidD(Double(gates[j])), f = sigmoidD(Double(gates[H + j]))
                let gg = tanh(Double(gates[2 * H + j])), o = sigmoidD(Double(gates[3 * H + j]))
                let cv = f * Double(cPrev[j]) + i * gg
                XCTAssertEqual(Double(c1[j]), cv, accuracy: 2e-6, "\(name) lstm c H=\(H)")
                XCTAssertEqual(Double(h1[j]), o * tanh(cv), accuracy: 2e-6, "\(name) lstm h H=\(H)")
                XCTAssertEqual(h1[j], h2[j], accuracy: 2e-6, "\(name) lstm h vs baseline H=\(H)")
                XCTAssertEqual(c1[j], c2[j], accuracy: 2e-6)
            }
            // LSTM backward row.
            let dm = (0..<H).map { _ in rng.uniform(-1, 1) }, dc0 = (0..<H).map { _ in rng.uniform(-1, 1) }
            var a1 = g1, a2 = g2, d1 = dc0, d2 = dc0
            t.lstm_row_backward(&a1, Int64(H), c1, cPrev, &d1, dm)
            b.lstm_row_backward(&a2, Int64(H), c2, cPrev, &d2, dm)
            for j in 0..<4 * H { XCTAssertEqual(a1[j], a2[j], accuracy: 2e-6, "\(name) lstm backward H=\(H)") }
            for j in 0..<H {
                XCTAssertEqual(d1[j], d2[j], accuracy: 2e-6)
                let i = Double(g1[j]), f = Double(g1[H + j]), tc = tanh(Double(c1[j])), o = Double(g1[3 * H + j])
                let dct = Double(dc0[j]) + Double(dm[j]) * o * (1 - tc * tc)
                XCTAssertEqual(Double(d1[j]), dct * f, accuracy: 2e-6, "\(name) lstm backward dc H=\(H)")
                XCTAssertEqual(Double(a1[2 * H + j]), dct * i * (1 - Double(g1[2 * H + j]) * Double(g1[2 * H + j])), accuracy: 2e-6)
            }
            // GRU row, whole and in ranges.
            let gx = (0..<3 * H).map { _ in rng.uniform(-3, 3) }, gh = (0..<3 * H).map { _ in rng.uniform(-3, 3) }
            let bhn = (0..<H).map { _ in rng.uniform(-1, 1) }, hp = (0..<H).map { _ in rng.uniform(-1, 1) }
            var x1 = gx, x2 = gx, x3 = gx
            var o1 = [Float](repeating: 0, count: H), o2 = o1, o3 = o1
            t.gru_row(&x1, gh, bhn, hp, &o1, nil, Int64(H), 1)
            b.gru_row(&x2, gh, bhn, hp, &o2, nil, Int64(H), 1)
            t.gru_row_range(&x3, gh, bhn, hp, &o3, nil, Int64(H), 0, Int64(cut), 1)
            t.gru_row_range(&x3, gh, bhn, hp, &o3, nil, Int64(H), Int64(cut), Int64(H), 1)
            XCTAssertEqual(o3, o1, "\(name) gru_row_range H=\(H)")
            XCTAssertEqual(x3, x1)
            for j in 0..<H {
                let r = sigmoidD(Double(gx[j] + gh[j])), z = sigmoidD(Double(gx[H + j] + gh[H + j]))
                let nn = tanh(Double(gx[2 * H + j]) + r * Double(gh[2 * H + j] + bhn[j]))
                XCTAssertEqual(Double(o1[j]), (1 - z) * nn + z * Double(hp[j]), accuracy: 2e-6, "\(name) gru H=\(H)")
                XCTAssertEqual(o1[j], o2[j], accuracy: 2e-6, "\(name) gru vs baseline H=\(H)")
            }
            // GRU backward row (reset after), with and without an output gradient, against the
            // baseline and the equations in Double.
            let dhIn = (0..<H).map { _ in rng.uniform(-1, 1) }, gyIn = (0..<H).map { _ in rng.uniform(-1, 1) }
            for withOutput in [true, false] {
                var ac1 = x1, ac2 = x1
                var gh1 = gh.map { $0 * 0.7 }, gh2 = gh1
                let ghIn = gh1
                var acc1 = [Float](repeating: .nan, count: H), acc2 = acc1
                t.gru_row_backward(&ac1, &gh1, bhn, hp, dhIn, withOutput ? gyIn : nil, &acc1, Int64(H))
                b.gru_row_backward(&ac2, &gh2, bhn, hp, dhIn, withOutput ? gyIn : nil, &acc2, Int64(H))
                for j in 0..<H {
                    let r = Double(x1[j]), z = Double(x1[H + j]), n = Double(x1[2 * H + j])
                    let up = Double(dhIn[j]) + (withOutput ? Double(gyIn[j]) : 0)
                    let dn = up * (1 - z) * (1 - n * n)
                    let dr = dn * (Double(ghIn[2 * H + j]) + Double(bhn[j])) * r * (1 - r)
                    let dz = up * (Double(hp[j]) - n) * z * (1 - z)
                    let want: [(Float, Double)] = [(ac1[j], dr), (ac1[H + j], dz), (ac1[2 * H + j], dn), (gh1[j], dr),
                                                   (gh1[H + j], dz), (gh1[2 * H + j], dn * r), (acc1[j], up * z)]
                    for (k, (got, ref)) in want.enumerated() {
                        XCTAssertEqual(Double(got), ref, accuracy: 2e-6, "\(name) gru backward H=\(H) item \(k)")
                    }
                    let base: [Float] = [ac2[j], ac2[H + j], ac2[2 * H + j], gh2[j], gh2[H + j], gh2[2 * H + j], acc2[j]]
                    for (k, (got, _)) in want.enumerated() {
                        XCTAssertEqual(got, base[k], accuracy: 2e-6, "\(name) gru backward vs baseline H=\(H) item \(k)")
                    }
                }
            }
        }

        // Packed GEMM: row counts around the row tiles (6, 8 and 12), ragged n and k, both
        // accumulate modes, whole and by blocks, against the baseline and a Double reference.
        // AVX-512 pairs of full blocks (mk32) in row tiles of at most 8: 3, 8, 9 (5 + 4), 17
        // (6 + 6 + 5) rows, an odd last block (n = 80, 100) and a partial one, k past a slice.
        for (m, n, k) in [(1, 128, 128), (2, 33, 5), (3, 100, 64), (7, 50, 19), (12, 64, 300), (13, 17, 33),
                          (16, 256, 256), (25, 48, 257), (32, 96, 40), (1, 70, 129), (8, 64, 20), (9, 80, 7),
                          (17, 80, 300)] {
            let ldx = k + 1, ldy = n + 3
            let w = (0..<n * k).map { _ in rng.uniform(-1, 1) }, x = (0..<m * ldx).map { _ in rng.uniform(-1, 1) }
            let y0 = (0..<m * ldy).map { _ in rng.uniform(-1, 1) }
            var packed = [Float](repeating: .nan, count: Int(sck_packed_floats(Int64(n), Int64(k))))
            sck_pack_wt(w, Int64(k), Int64(n), Int64(k), &packed)
            let tol = 2e-6 * Double(k).squareRoot()
            for accumulate: Int32 in [0, 1] {
                var y = y0, yb = y0, yk = y0
                t.gemm_packed(x, Int64(m), Int64(ldx), packed, Int64(n), Int64(k), &y, Int64(ldy), accumulate)
                b.gemm_packed(x, Int64(m), Int64(ldx), packed, Int64(n), Int64(k), &yb, Int64(ldy), accumulate)
                let blocks = sck_packed_blocks(Int64(n))
                for (lo, hi) in [(Int64(0), blocks / 2), (blocks / 2, blocks)] {
                    t.gemm_packed_blocks(x, Int64(m), Int64(ldx), packed, Int64(n), Int64(k), &yk, Int64(ldy), accumulate, lo, hi)
                }
                XCTAssertEqual(yk, y, "\(name) gemm_packed_blocks m=\(m) n=\(n) k=\(k)")
                var worstRef = 0.0, worstBase: Float = 0
                for r in 0..<m {
                    for j in 0..<n {
                        var ref = accumulate == 1 ? Double(y0[r * ldy + j]) : 0
                        for q in 0..<k { ref += Double(x[r * ldx + q]) * Double(w[j * k + q]) }
                        worstRef = max(worstRef, abs(Double(y[r * ldy + j]) - ref))
                        worstBase = max(worstBase, abs(y[r * ldy + j] - yb[r * ldy + j]))
                    }
                    for j in n..<ldy { XCTAssertEqual(y[r * ldy + j], y0[r * ldy + j], "\(name): padding untouched") }
                }
                XCTAssertLessThan(worstRef, tol, "\(name) gemm m=\(m) n=\(n) k=\(k) acc=\(accumulate) vs reference")
                XCTAssertLessThan(Double(worstBase), tol, "\(name) gemm m=\(m) n=\(n) k=\(k) acc=\(accumulate) vs baseline")
            }
        }
    }
}

/// The built-in cells through the CLI on every ISA path (SEQCELL_ISA caps the kernels'
/// choice): `seqcell run --grad-output` per path, outputs and gradients compared with the
/// baseline path's run; plus the variable's report and its bad values.
final class KernelISACLITests: TemporaryDirectoryTestCase {
    func readAll(_ file: String) throws -> [String: [Float]] {
        let root = try H5File(opening: file).root
        var out: [String: [Float]] = ["output": try root.dataset("output").readFloats(),
                                      "grad_input": try root.dataset("grad_input").readFloats()]
        let pg = try root.group("grad_params").group("layers").group("00").group("forward")
        for name in try pg.memberNames() { out[name] = try pg.dataset(name).readFloats() }
        return out
    }

    func testEveryCellGivesTheSameResultsOnEveryISAPath() throws {
        let paths = runnableISAPaths()
        // H = 37: vector tails at 8 and 16 floats; B = 13: one row past the 12-row tile.
        let (T, B, I) = (5, 13, 6)
        for spec in ["rnn:37", "lstm:37", "gru:37", "lstm:37,proj_size=9", "gru:37,reset=before"] {
            let model = try Model.build(inputSize: I, layers: [try LayerSpec(parsing: spec)], registry: testRegistry, seed: 4)
            var rng = SplitMix64(seed: 8)
            let x = rng.uniformTensor([T, B, I], scale: 1.5)
            let g = rng.uniformTensor([T, B, model.outputSize], scale: 1)
            let m = path("m.h5"), xin = path("x.h5"), gin = path("g.h5")
            try Checkpoint(model: model).save(to: m)
            let xf = try H5File(creating: xin)
            try xf.root.writeDataset("input", shape: x.shape, floats: x.data)
            try xf.close()
            let gf = try H5File(creating: gin)
            try gf.root.writeDataset("grad_output", shape: g.shape, floats: g.data)
            try gf.close()
            var results: [String: [String: [Float]]] = [:]
            for isa in paths {
                let out = path("y-\(isa).h5")
                let r = try runProgram(["run", m, "--input", xin, "--grad-output", gin, "-o", out], environment: ["SEQCELL_ISA": isa])
                XCTAssertEqual(r.status, 0, "\(spec) SEQCELL_ISA=\(isa): \(r.err)")
                guard r.status == 0 else { continue }
                results[isa] = try readAll(out)
            }
            guard let base = results["baseline"] else { return XCTFail("\(spec): the baseline run failed") }
            for (isa, res) in results where isa != "baseline" {
                XCTAssertEqual(Set(res.keys), Set(base.keys))
                for (name, v) in res {
                    let b = base[name]!
                    XCTAssertEqual(v.count, b.count)
                    let scale = max(1, b.map { abs($0) }.max() ?? 1)
                    let worst = zip(v, b).map { abs($0 - $1) }.max() ?? 0
                    XCTAssertLessThanOrEqual(worst, 2e-5 * scale, "\(spec) \(name): SEQCELL_ISA=\(isa) vs baseline")
                }
            }
            // The variable reaches the plugins: the baseline (no FMA) and an FMA path do not
            // round every value the same way (reset=before runs no vector kernel: no check).
            if !spec.contains("reset=before"), let fma = results["avx512"] ?? results["avx2"] {
                XCTAssert(fma["output"] != base["output"] || fma["grad_input"] != base["grad_input"],
                          "\(spec): SEQCELL_ISA=baseline made no difference to the results")
            }
        }
        let missing = ["avx2", "avx512"].filter { !paths.contains($0) }
        if !missing.isEmpty {
            throw XCTSkip("ISA path(s) not run on this CPU: \(missing.joined(separator: ", ")) (the others passed)")
        }
    }

    /// The input projection on the packed kernel (the AVX-512 path's choice) against OpenBLAS
    /// (SEQCELL_PROJECTION forces either): 520 rows of T·B, three 256-row panels shared over two
    /// threads, a ragged input width; outputs and every gradient agree within 2e-5 (relative to
    /// the largest value), for every cell and both directions of a bidirectional layer.
    func testPackedInputProjectionMatchesOpenBLAS() throws {
        let (T, B, I) = (40, 13, 33)
        for spec in ["rnn:48", "lstm:48", "gru:48", "lstm:37,proj_size=9", "gru:40,reset=before", "lstm:32:bidirectional"] {
            let model = try Model.build(inputSize: I, layers: [try LayerSpec(parsing: spec)], registry: testRegistry, seed: 5)
            var rng = SplitMix64(seed: 9)
            let x = rng.uniformTensor([T, B, I], scale: 1.5)
            let g = rng.uniformTensor([T, B, model.outputSize], scale: 1)
            let m = path("m.h5"), xin = path("x.h5"), gin = path("g.h5")
            try Checkpoint(model: model).save(to: m)
            let xf = try H5File(creating: xin)
            try xf.root.writeDataset("input", shape: x.shape, floats: x.data)
            try xf.close()
            let gf = try H5File(creating: gin)
            try gf.root.writeDataset("grad_output", shape: g.shape, floats: g.data)
            try gf.close()
            var results: [String: [String: [Float]]] = [:]
            for mode in ["blas", "packed"] {
                let out = path("y-\(mode).h5")
                let r = try runProgram(["run", m, "--input", xin, "--grad-output", gin, "-o", out, "--threads", "2"],
                                       environment: ["SEQCELL_PROJECTION": mode])
                XCTAssertEqual(r.status, 0, "\(spec) SEQCELL_PROJECTION=\(mode): \(r.err)")
                guard r.status == 0 else { continue }
                results[mode] = try readAll(out)
            }
            guard let blas = results["blas"], let packed = results["packed"] else { return XCTFail("\(spec): a run failed") }
            XCTAssertEqual(Set(packed.keys), Set(blas.keys))
            XCTAssertGreaterThan(packed["output"]?.count ?? 0, 0, spec)
            for (name, v) in packed {
                let b = blas[name]!
                XCTAssertEqual(v.count, b.count, "\(spec) \(name)")
                let scale = max(1, b.map { abs($0) }.max() ?? 1)
                let worst = zip(v, b).map { abs($0 - $1) }.max() ?? .infinity
                XCTAssertLessThanOrEqual(worst, 2e-5 * scale, "\(spec) \(name): packed projection vs OpenBLAS")
            }
        }
    }

    /// The backward tail (dX, dW_ih, dW_hh) on the packed kernel against OpenBLAS
    /// (SEQCELL_BACKWARD_GEMM forces either), on every ISA path this CPU runs: 520 rows of T·B
    /// (nine 64-row panels of dW over two threads, three 256-row panels of dX), a ragged input
    /// width; every gradient agrees within 2e-5 of the largest value, for every cell, a GRU with
    /// the reset gate before (two recurrent blocks), a projecting LSTM and both directions.
    func testPackedBackwardTailMatchesOpenBLAS() throws {
        let (T, B, I) = (40, 13, 33)
        let paths = runnableISAPaths()
        XCTAssertTrue(paths.contains("baseline"))
        for spec in ["rnn:48", "lstm:48", "gru:48", "lstm:37,proj_size=9", "gru:40,reset=before", "lstm:32:bidirectional"] {
            let model = try Model.build(inputSize: I, layers: [try LayerSpec(parsing: spec)], registry: testRegistry, seed: 5)
            var rng = SplitMix64(seed: 9)
            let x = rng.uniformTensor([T, B, I], scale: 1.5)
            let g = rng.uniformTensor([T, B, model.outputSize], scale: 1)
            let m = path("m.h5"), xin = path("x.h5"), gin = path("g.h5")
            try Checkpoint(model: model).save(to: m)
            let xf = try H5File(creating: xin)
            try xf.root.writeDataset("input", shape: x.shape, floats: x.data)
            try xf.close()
            let gf = try H5File(creating: gin)
            try gf.root.writeDataset("grad_output", shape: g.shape, floats: g.data)
            try gf.close()
            var results: [String: [String: [Float]]] = [:]
            for mode in ["blas"] + paths.map({ "packed-\($0)" }) {
                let out = path("y-\(mode).h5")
                var env = ["SEQCELL_BACKWARD_GEMM": mode == "blas" ? "blas" : "packed"]
                if mode != "blas" { env["SEQCELL_ISA"] = String(mode.dropFirst("packed-".count)) }
                let r = try runProgram(["run", m, "--input", xin, "--grad-output", gin, "-o", out, "--threads", "2"],
                                       environment: env)
                XCTAssertEqual(r.status, 0, "\(spec) \(mode): \(r.err)")
                guard r.status == 0 else { continue }
                results[mode] = try readAll(out)
            }
            guard let blas = results["blas"] else { return XCTFail("\(spec): the OpenBLAS run failed") }
            XCTAssertGreaterThan(blas["grad_input"]?.count ?? 0, 0, spec)
            XCTAssertGreaterThan(blas.keys.filter { $0.hasPrefix("weight_hh") }.count, 0, "\(spec): a recurrent weight gradient")
            for mode in paths.map({ "packed-\($0)" }) {
                guard let packed = results[mode] else { XCTFail("\(spec) \(mode): the run failed"); continue }
                XCTAssertEqual(Set(packed.keys), Set(blas.keys))
                for (name, v) in packed {
                    let b = blas[name]!
                    XCTAssertEqual(v.count, b.count, "\(spec) \(name)")
                    let scale = max(1, b.map { abs($0) }.max() ?? 1)
                    let worst = zip(v, b).map { abs($0 - $1) }.max() ?? .infinity
                    XCTAssertLessThanOrEqual(worst, 2e-5 * scale, "\(spec) \(mode) \(name): packed backward tail vs OpenBLAS")
                }
            }
        }
    }

    /// The recurrent part of backward (dh_{t-1} = dgates_t · W_hh) on W_hh packed transposed
    /// once per call, against the host's sgemm (SEQCELL_PACKED_BATCH_MAX=0 turns the packed
    /// products off), on every ISA path this CPU runs: rnn (tanh, relu) and gru (reset after;
    /// reset before keeps sgemm and is checked as a control), with per-sample lengths (four
    /// samples shorter than T, one of length 1), forward and reverse, a gradient of the final
    /// state, and once with every step split over two threads by rows; every output and
    /// gradient agrees within 2e-5 of the largest value.
    func testPackedRecurrentBackwardMatchesSgemm() throws {
        let (T, B, I) = (23, 11, 7)
        let paths = runnableISAPaths()
        XCTAssertTrue(paths.contains("baseline"))
        let lengths: [Int64] = [23, 5, 23, 2, 17, 23, 23, 1, 23, 23, 9]
        XCTAssertEqual(lengths.count, B)
        for spec in ["rnn:48", "rnn:40:reverse", "rnn:32,activation=relu", "gru:48", "gru:40:reverse", "gru:32,bias=false",
                     "gru:24,reset=before"] {
            let model = try Model.build(inputSize: I, layers: [try LayerSpec(parsing: spec)], registry: testRegistry, seed: 3)
            var rng = SplitMix64(seed: 11)
            let x = rng.uniformTensor([T, B, I], scale: 1.5)
            let g = rng.uniformTensor([T, B, model.outputSize], scale: 1)
            let gh = rng.uniformTensor([1, B, model.outputSize], scale: 1)
            let m = path("rb-m.h5"), xin = path("rb-x.h5"), gin = path("rb-g.h5")
            try Checkpoint(model: model).save(to: m)
            let xf = try H5File(creating: xin)
            try xf.root.writeDataset("input", shape: x.shape, floats: x.data)
            try xf.root.writeDataset("lengths", shape: [B], int64s: lengths)
            try xf.close()
            let gf = try H5File(creating: gin)
            try gf.root.writeDataset("grad_output", shape: g.shape, floats: g.data)
            try gf.root.writeDataset("grad_h_n", shape: gh.shape, floats: gh.data)
            try gf.close()
            var results: [String: [String: [Float]]] = [:]
            // split: every step split over the two threads by rows (SEQCELL_STEP_SPLIT_MACS=0).
            let packedModes = paths.map { "packed-\($0)" } + ["split-\(paths.last!)"]
            for mode in ["sgemm"] + packedModes {
                let out = path("rb-y-\(mode).h5")
                var env = ["SEQCELL_PACKED_BATCH_MAX": mode == "sgemm" ? "0" : "1000000"]
                if mode != "sgemm" { env["SEQCELL_ISA"] = String(mode.split(separator: "-")[1]) }
                if mode.hasPrefix("split-") { env["SEQCELL_STEP_SPLIT_MACS"] = "0" }
                let r = try runProgram(["run", m, "--input", xin, "--grad-output", gin, "-o", out, "--threads", "2"],
                                       environment: env)
                XCTAssertEqual(r.status, 0, "\(spec) \(mode): \(r.err)")
                guard r.status == 0 else { continue }
                results[mode] = try readAllDirections(out)
            }
            guard let reference = results["sgemm"] else { return XCTFail("\(spec): the sgemm run failed") }
            XCTAssertGreaterThan(reference["grad_input"]?.count ?? 0, 0, spec)
            XCTAssertGreaterThan(reference["grad_h0"]?.count ?? 0, 0, spec)
            XCTAssertGreaterThan(reference.keys.filter { $0.contains("weight_hh") }.count, 0, "\(spec): a recurrent weight gradient")
            XCTAssertGreaterThan(reference["grad_input"]?.map { abs($0) }.max() ?? 0, 0, "\(spec): gradients not all zero")
            for mode in packedModes {
                guard let packed = results[mode] else { XCTFail("\(spec) \(mode): the run failed"); continue }
                XCTAssertEqual(Set(packed.keys), Set(reference.keys))
                for (name, v) in packed {
                    let b = reference[name]!
                    XCTAssertEqual(v.count, b.count, "\(spec) \(name)")
                    let scale = max(1, b.map { abs($0) }.max() ?? 1)
                    let worst = zip(v, b).map { abs($0 - $1) }.max() ?? .infinity
                    XCTAssertLessThanOrEqual(worst, 2e-5 * scale, "\(spec) \(mode) \(name): packed recurrent backward vs sgemm")
                }
            }
        }
    }

    /// Output, input and initial-state gradients and every direction's parameter gradients.
    func readAllDirections(_ file: String) throws -> [String: [Float]] {
        let root = try H5File(opening: file).root
        var out: [String: [Float]] = ["output": try root.dataset("output").readFloats(),
                                      "grad_input": try root.dataset("grad_input").readFloats(),
                                      "grad_h0": try root.dataset("grad_h0").readFloats()]
        let layer = try root.group("grad_params").group("layers").group("00")
        for direction in try layer.memberNames() {
            let pg = try layer.group(direction)
            for name in try pg.memberNames() { out["\(direction)/\(name)"] = try pg.dataset(name).readFloats() }
        }
        return out
    }

    func testPluginsReportsTheISAAndSEQCELL_ISACapsIt() throws {
        let cpu = CPUFeatures.current
        let r = try runProgram(["plugins"], environment: ["SEQCELL_ISA": ""])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssert(r.out.contains("kernels: \(cpu.bestISA);"), r.out)
        XCTAssert(r.out.contains("AVX512_BF16 \(cpu.avx512BF16 ? "yes" : "no")"), r.out)
        XCTAssert(r.out.contains("AVX512_VNNI \(cpu.avx512VNNI ? "yes" : "no")"), r.out)
        let forced = try runProgram(["plugins"], environment: ["SEQCELL_ISA": "baseline"])
        XCTAssert(forced.out.contains("kernels: baseline (SEQCELL_ISA=baseline)"), forced.out)
        if cpu.avx2FMA {
            let avx2 = try runProgram(["plugins"], environment: ["SEQCELL_ISA": "avx2"])
            XCTAssert(avx2.out.contains("kernels: avx2 (SEQCELL_ISA=avx2)"), avx2.out)
        }
    }

    func testUnknownSEQCELL_ISAIsAnError() throws {
        let r = try runProgram(["plugins"], environment: ["SEQCELL_ISA": "avx1024"])
        XCTAssertEqual(r.status, 1)
        XCTAssert(r.err.contains("SEQCELL_ISA is 'avx1024'; use one of avx512, avx2, baseline"), r.err)
        XCTAssertFalse(r.err.contains("/tmp"), r.err)
    }
}

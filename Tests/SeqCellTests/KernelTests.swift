import CBLAS
import CSeqCellKernels
import Foundation
import XCTest
@testable import SeqCell

/// The plugins' vector kernels (Sources/CSeqCellKernels), every ISA build this CPU runs:
/// activations against libm over dense ranges, fused gate rows against scalar Double
/// references, the packed small-batch GEMM against OpenBLAS. No timing here.
final class KernelTests: XCTestCase {
    var tables: [sck_table] {
        [SCK_ISA_BASELINE, SCK_ISA_AVX2].compactMap { sck_kernels(Int32($0))?.pointee }
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

import CSeqCellKernels
import Foundation
import XCTest
@testable import SeqCellBase
@testable import SeqCellHost
@testable import SeqCellModel
@testable import SeqCellFormats
import SeqCellTestSupport

/// The chunked input projection of the LSTM and GRU inference forwards
/// (`ChunkedInputProjection`) against the training path's whole-call projection, through the
/// CLI on every ISA path this CPU runs (SEQCELL_ISA caps it): `seqcell run` (an inference
/// forward) with chunks of 1, 3, T and the default number of steps (SEQCELL_PROJ_STEPS), on
/// the packed projection kernel and on OpenBLAS (SEQCELL_PROJECTION), against
/// `seqcell run --grad-output` (a training forward: every step projected at once) on the same
/// path. Per-sample lengths, both directions of a bidirectional layer, B and H not multiples
/// of 16, a projecting LSTM, a GRU with the reset gate before, and a shape whose steps are
/// split over two threads by hidden units (the chunk's projection then split the same way).
final class ChunkedProjectionTests: TemporaryDirectoryTestCase {

    func testChunkedProjectionMatchesTheWholeCallProjectionOnEveryISAPath() throws {
        let paths = runnableISAPaths()
        XCTAssertTrue(paths.contains("baseline"))
        // (spec, T, B, I): B = 13, 70 and 90 and H = 37 not multiples of 16; lstm:64 at B = 70
        // and gru:64 at B = 90 are big enough for a step to be split by hidden units over two
        // threads.
        let cases: [(String, Int, Int, Int)] = [
            ("lstm:37", 11, 13, 33), ("gru:37", 11, 13, 33), ("gru:37,reset=before", 11, 13, 33),
            ("lstm:37,proj_size=9", 11, 13, 33), ("lstm:32:bidirectional", 11, 13, 33), ("gru:48:bidirectional", 11, 13, 33),
            ("lstm:64", 9, 70, 20), ("gru:64", 9, 90, 20),
        ]
        for (spec, T, B, I) in cases {
            let model = try Model.build(inputSize: I, layers: [try LayerSpec(parsing: spec)], registry: testRegistry, seed: 6)
            var rng = SplitMix64(seed: 10)
            let x = rng.uniformTensor([T, B, I], scale: 1.5)
            let g = rng.uniformTensor([T, B, model.outputSize], scale: 1)
            // Lengths from T down to 1 (sample 1 ends after one step; the rest vary).
            let lengths = (0..<B).map { Int32($0 == 1 ? 1 : T - (($0 * 5) % T)) }
            let m = path("m.h5"), xin = path("x.h5"), gin = path("g.h5")
            try Checkpoint(model: model).save(to: m)
            let xf = try H5File(creating: xin)
            try xf.root.writeDataset("input", shape: x.shape, floats: x.data)
            try xf.root.writeDataset("lengths", shape: [B], int32s: lengths)
            try xf.close()
            let gf = try H5File(creating: gin)
            try gf.root.writeDataset("grad_output", shape: g.shape, floats: g.data)
            try gf.close()
            for isa in paths {
                let ref = path("ref-\(isa).h5")
                let r = try runProgram(["run", m, "--input", xin, "--grad-output", gin, "-o", ref, "--threads", "2"],
                                       environment: ["SEQCELL_ISA": isa])
                XCTAssertEqual(r.status, 0, "\(spec) \(isa) training forward: \(r.err)")
                guard r.status == 0 else { continue }
                let want = try runOutputs(ref)
                XCTAssertEqual(want.output.count, T * B * model.outputSize)
                let scale = max(1, want.output.map { abs($0) }.max() ?? 1)
                // The AVX-512 path packs by default; the others are forced onto the packed kernel.
                let other = isa == "avx512" ? "blas" : "packed"
                for steps in ["1", "3", "\(T)", ""] {
                    for projection in ["", other] {
                        var env = ["SEQCELL_ISA": isa, "SEQCELL_PROJ_STEPS": steps]
                        if !projection.isEmpty { env["SEQCELL_PROJECTION"] = projection }
                        let what = "\(spec) SEQCELL_ISA=\(isa) SEQCELL_PROJ_STEPS=\(steps) SEQCELL_PROJECTION=\(projection)"
                        let out = path("y.h5")
                        let s = try runProgram(["run", m, "--input", xin, "-o", out, "--threads", "2"], environment: env)
                        XCTAssertEqual(s.status, 0, "\(what): \(s.err)")
                        guard s.status == 0 else { continue }
                        let got = try runOutputs(out)
                        XCTAssertEqual(got.output.count, want.output.count, what)
                        let worst = zip(got.output, want.output).map { abs($0 - $1) }.max() ?? .infinity
                        XCTAssertLessThanOrEqual(worst, 1e-5 * scale, "\(what): output vs the training forward")
                        XCTAssertEqual(Set(got.finals.keys), Set(want.finals.keys), what)
                        for (name, v) in got.finals {
                            let w = want.finals[name] ?? []
                            XCTAssertEqual(v.count, w.count, "\(what) \(name)")
                            let fw = zip(v, w).map { abs($0 - $1) }.max() ?? .infinity
                            XCTAssertLessThanOrEqual(fw, 1e-5 * max(1, w.map { abs($0) }.max() ?? 1), "\(what) \(name)")
                        }
                        // Past a sample's length the output is zero (sample 1 has length 1).
                        let O = model.outputSize
                        XCTAssertTrue((1..<T).allSatisfy { t in (0..<O).allSatisfy { got.output[(t * B + 1) * O + $0] == 0 } }, what)
                    }
                }
            }
        }
        let missing = ["avx2", "avx512"].filter { !paths.contains($0) }
        if !missing.isEmpty {
            throw XCTSkip("ISA path(s) not run on this CPU: \(missing.joined(separator: ", ")) (the others passed)")
        }
    }
}

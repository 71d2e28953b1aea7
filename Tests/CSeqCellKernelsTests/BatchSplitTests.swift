import CSeqCellKernels
import Foundation
import XCTest
@testable import SeqCellBase
@testable import SeqCellHost
@testable import SeqCellModel
@testable import SeqCellFormats
import SeqCellTestSupport

/// The LSTM and GRU inference forwards split by batch rows for the whole sequence
/// (`sequenceChunks`, SEQCELL_SPLIT=batch: one parallel region per call, each chunk of rows
/// running every step, its rows of the chunked input projection included) against the same
/// forward on one thread (no split at all) and split step by step (SEQCELL_SPLIT=units and
/// =rows), through the CLI on every ISA path this CPU runs (SEQCELL_ISA caps it), on the packed
/// projection kernel and on OpenBLAS (SEQCELL_PROJECTION), with projection chunks of 3 steps
/// and the default. Per-sample lengths, reverse layers, both directions of a bidirectional
/// layer (run one after the other, SEQCELL_SESSION_DIRECTIONS=serial, so that each is split),
/// initial states, and B = 13, 37, 70, 90 (not multiples of 8). A projecting LSTM and a GRU with
/// the reset gate before keep the per-step split; they are run too.
final class BatchSplitTests: TemporaryDirectoryTestCase {

    func worst(_ a: [Float], _ b: [Float]) -> Float {
        a.count == b.count ? zip(a, b).map { abs($0 - $1) }.max() ?? 0 : .infinity
    }

    func testBatchSplitInferenceMatchesOneThreadAndTheStepSplitOnEveryISAPath() throws {
        let paths = runnableISAPaths()
        XCTAssertTrue(paths.contains("baseline"))
        // (spec, T, B, I, initial states)
        let cases: [(String, Int, Int, Int, Bool)] = [
            ("lstm:37", 11, 13, 33, false), ("gru:37", 11, 13, 33, true),
            ("lstm:32:bidirectional", 9, 37, 20, true), ("gru:48:bidirectional", 9, 37, 20, false),
            ("lstm:64", 9, 70, 20, false), ("gru:64", 9, 90, 20, true), ("lstm:64", 7, 37, 20, true),
            ("lstm:48:reverse", 9, 37, 20, true), ("gru:32:reverse", 9, 37, 20, false),
            ("lstm:37,proj_size=9", 7, 37, 33, false), ("gru:37,reset=before", 7, 37, 33, false),
        ]
        for (spec, T, B, I, withStates) in cases {
            let model = try Model.build(inputSize: I, layers: [try LayerSpec(parsing: spec)], registry: testRegistry, seed: 8)
            var rng = SplitMix64(seed: 12)
            let x = rng.uniformTensor([T, B, I], scale: 1.5)
            // Lengths from T down to 1 (sample 1 ends after one step; the rest vary).
            let lengths = (0..<B).map { Int32($0 == 1 ? 1 : T - (($0 * 5) % T)) }
            let m = path("m.h5"), xin = path("x.h5")
            try Checkpoint(model: model).save(to: m)
            let xf = try H5File(creating: xin)
            try xf.root.writeDataset("input", shape: x.shape, floats: x.data)
            try xf.root.writeDataset("lengths", shape: [B], int32s: lengths)
            if withStates {
                let D = spec.contains("bidirectional") ? 2 : 1
                let H = Int(spec.split(separator: ":")[1].split(separator: ",")[0])!
                let h0 = rng.uniformTensor([D, B, H], scale: 0.8)
                try xf.root.writeDataset("h0", shape: h0.shape, floats: h0.data)
                if spec.hasPrefix("lstm") {
                    let c0 = rng.uniformTensor([D, B, H], scale: 0.8)
                    try xf.root.writeDataset("c0", shape: c0.shape, floats: c0.data)
                }
            }
            try xf.close()
            for isa in paths {
                let ref = path("ref-\(isa).h5")
                let r = try runProgram(["run", m, "--input", xin, "-o", ref, "--threads", "1"],
                                       environment: ["SEQCELL_ISA": isa, "SEQCELL_SPLIT": "units", "SEQCELL_SESSION_DIRECTIONS": "serial"])
                XCTAssertEqual(r.status, 0, "\(spec) \(isa) one thread: \(r.err)")
                guard r.status == 0 else { continue }
                let want = try runOutputs(ref)
                XCTAssertEqual(want.output.count, T * B * model.outputSize)
                let other = isa == "avx512" ? "blas" : "packed"
                var variants: [[String: String]] = [["SEQCELL_SPLIT": "units"], ["SEQCELL_SPLIT": "rows"]]
                for steps in ["3", ""] {
                    for projection in ["", other] {
                        var env = ["SEQCELL_SPLIT": "batch", "SEQCELL_PROJ_STEPS": steps]
                        if !projection.isEmpty { env["SEQCELL_PROJECTION"] = projection }
                        variants.append(env)
                    }
                }
                for v in variants {
                    var env = v
                    env["SEQCELL_ISA"] = isa
                    // A session runs a bidirectional layer's directions side by side, each on one
                    // thread; one after the other, each direction gets both threads to split.
                    env["SEQCELL_SESSION_DIRECTIONS"] = "serial"
                    let what = "\(spec) B=\(B) " + env.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
                    // The one-thread reference on the same projection path.
                    var wantHere = want
                    if let p = v["SEQCELL_PROJECTION"] {
                        let ref1 = path("ref1.h5")
                        let s1 = try runProgram(["run", m, "--input", xin, "-o", ref1, "--threads", "1"],
                                                environment: ["SEQCELL_ISA": isa, "SEQCELL_SPLIT": "units", "SEQCELL_PROJECTION": p,
                                                             "SEQCELL_SESSION_DIRECTIONS": "serial"])
                        XCTAssertEqual(s1.status, 0, "\(what) one thread: \(s1.err)")
                        guard s1.status == 0 else { continue }
                        wantHere = try runOutputs(ref1)
                    }
                    let out = path("y.h5")
                    let s = try runProgram(["run", m, "--input", xin, "-o", out, "--threads", "2"], environment: env)
                    XCTAssertEqual(s.status, 0, "\(what): \(s.err)")
                    guard s.status == 0 else { continue }
                    let got = try runOutputs(out)
                    let scale = max(1, wantHere.output.map { abs($0) }.max() ?? 1)
                    XCTAssertLessThanOrEqual(worst(got.output, wantHere.output), 1e-6 * scale, "\(what): output vs one thread")
                    XCTAssertEqual(Set(got.finals.keys), Set(wantHere.finals.keys), what)
                    for (name, v) in got.finals {
                        let w = wantHere.finals[name] ?? []
                        XCTAssertLessThanOrEqual(worst(v, w), 1e-6 * max(1, w.map { abs($0) }.max() ?? 1), "\(what) \(name)")
                    }
                    // Past a sample's length the output is zero (sample 1 has length 1).
                    let O = model.outputSize
                    XCTAssertTrue((1..<T).allSatisfy { t in (0..<O).allSatisfy { got.output[(t * B + 1) * O + $0] == 0 } }, what)
                }
            }
        }
        let missing = ["avx2", "avx512"].filter { !paths.contains($0) }
        if !missing.isEmpty {
            throw XCTSkip("ISA path(s) not run on this CPU: \(missing.joined(separator: ", ")) (the others passed)")
        }
    }
}

import CSeqCellKernels
import Foundation
@testable import SeqCellFormats

/// The kernels' ISA paths this CPU runs, by the names SEQCELL_ISA takes (the tests that run
/// the CLI once per path; a path the CPU cannot run is left out, and those tests say so).
func runnableISAPaths() -> [String] {
    [("baseline", SCK_ISA_BASELINE), ("avx2", SCK_ISA_AVX2), ("avx512", SCK_ISA_AVX512)]
        .filter { sck_kernels(Int32($0.1)) != nil }.map(\.0)
}

/// A `seqcell run` output file's `output` and its final states (the datasets ending in `_n`).
func runOutputs(_ file: String) throws -> (output: [Float], finals: [String: [Float]]) {
    let root = try H5File(opening: file).root
    var finals: [String: [Float]] = [:]
    for name in try root.memberNames() where name.hasSuffix("_n") { finals[name] = try root.dataset(name).readFloats() }
    return (try root.dataset("output").readFloats(), finals)
}

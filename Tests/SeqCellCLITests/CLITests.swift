import Foundation
import XCTest
@testable import SeqCellBase
@testable import SeqCellHost
@testable import SeqCellModel
@testable import SeqCellFormats
import SeqCellTestSupport

/// The `seqcell` executable end to end: what it lists, what it writes, and that bad input
/// gives a message and a non-zero exit, never a crash.
final class CLITests: TemporaryDirectoryTestCase {
    /// Runs the CLI; returns (exit status, stdout, stderr).
    @discardableResult
    func seqcell(_ args: [String]) throws -> (status: Int32, out: String, err: String) {
        try runProgram(args)
    }

    func assertFails(_ args: [String], _ fragments: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try seqcell(args)
        XCTAssertNotEqual(r.status, 0, "seqcell \(args) should fail", file: file, line: line)
        for f in fragments { XCTAssert(r.err.contains(f), "expected '\(f)' in stderr: \(r.err)", file: file, line: line) }
    }

    func testPluginsListsBuiltInCellsAndAddedPaths() throws {
        let r = try seqcell(["plugins"])
        XCTAssertEqual(r.status, 0)
        for id in ["rnn 1.2.0", "lstm 1.2.0", "gru 1.2.0"] { XCTAssert(r.out.contains(id), r.out) }
        XCTAssert(r.out.contains("option proj_size") && r.out.contains("param weight_hh [64, 16]  gates i,f,g,o"), r.out)
        let mgu = try buildMGU(in: try temporaryFolder())
        let withPath = try seqcell(["plugins", "--path", mgu])
        XCTAssert(withPath.out.contains("mgu 1.0.0") && withPath.out.contains(mgu), withPath.out)
    }

    /// A folder in SEQCELL_PLUGIN_PATH holding another build of a built-in cell overrides the
    /// executable's own, as documented: no warning on every command (that would also break
    /// the one-line error contract), only a note with --verbose.
    func testCellOverriddenThroughThePluginPathIsNotAWarning() throws {
        let folder = try temporaryFolder()
        let own = (buildProductsDir as NSString).appendingPathComponent("libseqcell_rnn.so")
        try FileManager.default.copyItem(atPath: own, toPath: (folder as NSString).appendingPathComponent("libseqcell_rnn.so"))
        // `plugins` lists every problem on stdout, shadowed cells included.
        let listed = try runProgram(["plugins"], environment: ["SEQCELL_PLUGIN_PATH": folder])
        XCTAssertEqual(listed.status, 0, listed.err)
        XCTAssert(listed.out.contains("cell 'rnn' ignored: already provided by"), listed.out)
        // Other commands: nothing on stderr, a debug note with --verbose.
        _ = try runProgram(["new", "--input-size", "2", "--layer", "rnn:3", "-o", "m.h5"])
        let quiet = try runProgram(["inspect", "m.h5"], environment: ["SEQCELL_PLUGIN_PATH": folder])
        XCTAssertEqual(quiet.status, 0, quiet.err)
        XCTAssertEqual(quiet.err, "")
        let verbose = try runProgram(["inspect", "m.h5", "--verbose"], environment: ["SEQCELL_PLUGIN_PATH": folder])
        XCTAssert(verbose.err.contains("cell 'rnn' ignored: already provided by"), verbose.err)
        let failing = try runProgram(["inspect", "absent.h5"], environment: ["SEQCELL_PLUGIN_PATH": folder])
        XCTAssertEqual(failing.status, 1)
        XCTAssertEqual(failing.err.split(separator: "\n").count, 1, failing.err)
    }

    func testNewRunAndPyTorchShapes() throws {
        XCTAssertEqual(try seqcell(["new", "--input-size", "3", "--layer", "lstm:4:bi", "--layer", "lstm:4:bi", "-o", "m.h5"]).status, 0)
        let model = try Checkpoint.load(from: path("m.h5"), registry: testRegistry).model
        var rng = SplitMix64(seed: 1)
        let x = rng.uniformTensor([5, 2, 3], scale: 1)
        let lengths: [Int32] = [5, 3]
        let h0 = rng.uniformTensor([4, 2, 4], scale: 0.5)
        let file = try H5File(creating: path("x.h5"))
        try file.root.writeDataset("input", shape: x.shape, floats: x.data)
        try file.root.writeDataset("lengths", shape: [2], int32s: lengths)
        try file.root.writeDataset("h0", shape: h0.shape, floats: h0.data)
        try file.close()
        let r = try seqcell(["run", "m.h5", "--input", "x.h5", "-o", "y.h5"])
        XCTAssertEqual(r.status, 0, r.err)
        let y = try H5File(opening: path("y.h5")).root
        XCTAssertEqual(try y.dataset("output").shape, [5, 2, 8])
        XCTAssertEqual(try y.dataset("h_n").shape, [4, 2, 4], "h_n is [layers·directions, B, H]")
        XCTAssertEqual(try y.dataset("c_n").shape, [4, 2, 4])
        // The same through the library, with h0 split as PyTorch stacks it (index layer·2 + direction).
        let split: [[[Tensor?]]] = (0..<2).map { l in (0..<2).map { d in
            [Tensor(shape: [2, 4], data: Array(h0.data[((l * 2 + d) * 8)..<((l * 2 + d) * 8 + 8)])), nil]
        } }
        let expected = try model.forward(input: x, lengths: lengths, initialStates: split)
        XCTAssertEqual(try y.dataset("output").readFloats(), expected.output.data)
        XCTAssertEqual(try y.dataset("h_n").readFloats(), stackedStates(expected.finalStates, model: model, state: "h")!.data)
        // .npy input and batch-first layout.
        try NPY.write(to: path("x.npy"), shape: [2, 5, 3], floats: swapFirstTwoAxes(x).data)
        XCTAssertEqual(try seqcell(["run", "m.h5", "--input", "x.npy", "--batch-first", "-o", "z.h5"]).status, 0)
        let z = try H5File(opening: path("z.h5")).root.dataset("output")
        XCTAssertEqual(z.shape, [2, 5, 8])
        XCTAssertEqual(try z.readFloats(), swapFirstTwoAxes(try model.forward(input: x).output).data)
    }

    func testSwapAndComposeProduceRunnableFilesMatchingLayersByHand() throws {
        XCTAssertEqual(try seqcell(["new", "--input-size", "2", "--layer", "gru:4", "--layer", "rnn:3:reverse", "--head", "1", "--seed", "1", "-o", "a.h5"]).status, 0)
        XCTAssertEqual(try seqcell(["new", "--input-size", "4", "--layer", "lstm:3:bi:sum", "--seed", "2", "-o", "b.h5"]).status, 0)
        let swap = try seqcell(["swap", "a.h5", "--layer", "1", "--from", "b.h5", "--from-layer", "0", "-o", "s.h5"])
        XCTAssertEqual(swap.status, 0, swap.err)
        let compose = try seqcell(["compose", "a.h5:0", "bi(b.h5:0,a.h5:1,ave)", "--head-from", "a.h5", "-o", "c.h5"])
        XCTAssertNotEqual(compose.status, 0, "b.h5 layer 0 is bidirectional and cannot be paired")
        XCTAssert(compose.err.contains("already bidirectional"), compose.err)
        let compose2 = try seqcell(["compose", "a.h5:0", "b.h5:0", "--head-from", "a.h5", "-o", "c.h5"])
        XCTAssertEqual(compose2.status, 0, compose2.err)

        let a = try Checkpoint.load(from: path("a.h5"), registry: testRegistry).model
        let b = try Checkpoint.load(from: path("b.h5"), registry: testRegistry).model
        var rng = SplitMix64(seed: 4)
        let x = rng.uniformTensor([6, 2, 2], scale: 1)
        let file = try H5File(creating: path("x.h5"))
        try file.root.writeDataset("input", shape: x.shape, floats: x.data)
        try file.close()
        let byHand = try a.head!.forward(try b.layers[0].forward(input: try a.layers[0].forward(input: x).output).output)
        for name in ["s.h5", "c.h5"] {
            XCTAssertEqual(try seqcell(["run", name, "--input", "x.h5", "-o", "out-\(name)"]).status, 0)
            XCTAssertEqual(try H5File(opening: path("out-\(name)")).root.dataset("output").readFloats(), byHand.data, name)
        }
        try assertFails(["compose", "a.h5:0", "a.h5:0", "-o", "bad.h5"], ["a.h5 layer 0", "outputs 4 features", "takes 2"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("bad.h5")))
    }

    func testInspectShowsStructureAndPluginAvailability() throws {
        let mgu = try buildMGU(in: try temporaryFolder())
        let made = try seqcell(["new", "--path", mgu, "--input-size", "3", "--layer", "mgu:4:bi:sum,backward_cell=lstm",
                                "--layer", "gru:2,reset=before", "--head", "2:softmax", "-o", "m.h5"])
        XCTAssertEqual(made.status, 0, made.err)
        let with = try seqcell(["inspect", "--path", mgu, "m.h5"])
        XCTAssertEqual(with.status, 0, with.err)
        for fragment in ["format 1.0", "input size 3, 2 layer(s)", "layer 00: bidirectional (merge sum)",
                         "forward: mgu 1.0.0 input 3 hidden 4", "backward: lstm 1.2.0 input 3 hidden 4",
                         "weight_ih [16, 3] float32 (48)  gates i,f,g,o", "reset=before", "plugin available: mgu 1.0.0",
                         "head: linear [2, 2] + bias [2], activation softmax"] {
            XCTAssert(with.out.contains(fragment), "missing '\(fragment)' in:\n\(with.out)")
        }
        let without = try seqcell(["inspect", "m.h5"])
        XCTAssertEqual(without.status, 0)
        XCTAssert(without.out.contains("forward: mgu 1.0.0 input 3 hidden 4") && without.out.contains("PLUGIN NOT FOUND"), without.out)
    }

    func testValidatePluginSurvivesAPluginThatCrashes() throws {
        let folder = try temporaryFolder()
        let good = try seqcell(["validate-plugin", try buildMGU(in: folder)])
        XCTAssertEqual(good.status, 0, good.out)
        XCTAssert(good.out.hasSuffix("checks passed\n"), good.out)
        let crashy = try buildFixture("crash_backward.c", in: folder, as: "libseqcell_crashy.so")
        let r = try seqcell(["validate-plugin", crashy])
        XCTAssertEqual(r.status, 1)
        XCTAssert(r.out.contains("the plugin crashed the checker with signal 11 (SIGSEGV)") && r.out.contains("FAIL"), r.out)
    }

    func testBadInputIsAMessageAndANonZeroExit() throws {
        try assertFails(["new", "--input-size", "3", "--layer", "nosuch:4", "-o", "m.h5"], ["no plugin provides cell 'nosuch'"])
        try assertFails(["new", "--input-size", "3", "--layer", "rnn:4,colour=red", "-o", "m.h5"], ["has no option 'colour'"])
        try assertFails(["new", "--input-size", "3", "--layer", "lstm:4,proj_size=9", "-o", "m.h5"], ["proj_size"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("m.h5")))
        XCTAssertEqual(try seqcell(["new", "--input-size", "3", "--layer", "rnn:4", "-o", "m.h5"]).status, 0)
        let file = try H5File(creating: path("wide.h5"))
        try file.root.writeDataset("input", shape: [2, 1, 5], floats: [Float](repeating: 0, count: 10))
        try file.close()
        try assertFails(["run", "m.h5", "--input", "wide.h5", "-o", "y.h5"], ["5 features", "takes 3"])
        try assertFails(["run", "m.h5", "--input", "missing.h5", "-o", "y.h5"], ["missing.h5"])
        try Data("junk".utf8).write(to: URL(fileURLWithPath: path("junk.h5")))
        try assertFails(["inspect", "junk.h5"], ["junk.h5", "not an HDF5 file"])
        try Data("junk".utf8).write(to: URL(fileURLWithPath: path("libseqcell_junk.so")))
        let r = try seqcell(["plugins", "--path", path("libseqcell_junk.so")])
        XCTAssertEqual(r.status, 0, "a broken library is reported, not fatal")
        XCTAssert(r.out.contains("libseqcell_junk.so: cannot load as a shared library"), r.out)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("y.h5")))
    }

    func testTrainResumeAndNaNKeepsTheLastGoodCheckpoint() throws {
        XCTAssertEqual(try seqcell(["new", "--input-size", "2", "--layer", "gru:4", "--head", "1", "-o", "m.h5"]).status, 0)
        let t = try seqcell(["train", "m.h5", "--task", "adding", "--seq-len", "6", "--steps", "6", "--log-every", "3",
                             "--step-grad-norms", "-o", "t.h5"])
        XCTAssertEqual(t.status, 0, t.err)
        XCTAssert(t.out.contains("step 6") && t.out.contains("‖∂L/∂x_t‖ t=T…1:") && t.out.contains("clipped"), t.out)
        let r = try seqcell(["train", "--resume", "t.h5", "--steps", "2", "-o", "t2.h5"])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertEqual(try Checkpoint.load(from: path("t2.h5"), registry: testRegistry).training?.step, 8)

        // Data with a NaN: training stops naming the step; the existing output is untouched.
        let f = try H5File(creating: path("nan.h5"))
        var x = [Float](repeating: 0.5, count: 4 * 3 * 2)
        x[7] = .nan
        try f.root.writeDataset("input", shape: [4, 3, 2], floats: x)
        try f.root.writeDataset("targets", shape: [3, 1], floats: [1, 2, 3])
        try f.close()
        let before = try Data(contentsOf: URL(fileURLWithPath: path("t.h5")))
        try assertFails(["train", "m.h5", "--data", "nan.h5", "--batch-size", "3", "--steps", "3", "-o", "t.h5"],
                        ["step 1", "nan", "nothing was written"])
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path("t.h5"))), before)
    }
}

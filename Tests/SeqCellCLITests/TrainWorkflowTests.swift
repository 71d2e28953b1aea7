import Foundation
import XCTest
@testable import SeqCellBase
@testable import SeqCellHost
@testable import SeqCellModel
@testable import SeqCellFormats
import SeqCellTestSupport

/// The training workflow through the CLI: resume that applies or refuses options, checks
/// before step 1, data formats and layouts, validation, metrics, early stopping, `evaluate`,
/// `--threads`, and option errors that name the option and its range.
final class TrainWorkflowTests: TemporaryDirectoryTestCase {
    /// Runs the CLI in `folder` (the test's directory when nil).
    @discardableResult
    func seqcell(_ args: [String], in folder: String? = nil, file: StaticString = #filePath, line: UInt = #line) throws
        -> (status: Int32, out: String, err: String) {
        try runProgram(args, folder: folder, file: file, line: line)
    }

    func assertFails(_ args: [String], _ fragments: [String], noStep: Bool = true, file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try seqcell(args)
        XCTAssertNotEqual(r.status, 0, "seqcell \(args) should fail: \(r.out)", file: file, line: line)
        for f in fragments { XCTAssert(r.err.contains(f), "expected '\(f)' in stderr: \(r.err)", file: file, line: line) }
        if noStep { XCTAssertFalse(r.out.contains("step "), "work started before the error: \(r.out)", file: file, line: line) }
        XCTAssertFalse(r.err.contains(".tmp") || r.err.contains("write-check"), "a temporary path in the message: \(r.err)", file: file, line: line)
    }

    func new(_ args: [String], _ name: String) throws {
        let r = try seqcell(["new"] + args + ["-o", name])
        XCTAssertEqual(r.status, 0, r.err)
    }

    /// Writes a classification data set with numpy/h5py: N samples of T steps, 3 features; the
    /// class is whether the first feature sums positive. `files` lists (kind, name): h5tm (time
    /// major HDF5), h5bf (batch-first HDF5), npz (batch-first), npy (x.npy, y.npy batch-first).
    func writeClassData(N: Int = 40, T: Int = 5, dtype: String = "int64", prefix: String = "d") throws {
        _ = try runPython("""
            import sys, numpy as np, h5py
            d, N, T, dt, p = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
            rng = np.random.default_rng(7)
            x = rng.standard_normal((N, T, 3)).astype('f4')
            y = (x[:, :, 0].sum(1) > 0).astype(dt)
            with h5py.File(f'{d}/{p}_tm.h5', 'w') as f:
                f['input'] = x.transpose(1, 0, 2).copy(); f['targets'] = y
            with h5py.File(f'{d}/{p}_bf.h5', 'w') as f:
                f['input'] = x; f['targets'] = y
            np.savez(f'{d}/{p}.npz', input=x, targets=y)
            np.save(f'{d}/{p}_x.npy', x); np.save(f'{d}/{p}_y.npy', y)
            """, [directory.path, String(N), String(T), dtype, prefix])
    }

    // MARK: resume

    func testResumeAppliesOptionsRefusesLossAndWorksFromAnotherFolder() throws {
        try FileManager.default.createDirectory(atPath: path("data"), withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: path("runs"), withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: path("elsewhere/deeper"), withIntermediateDirectories: true)
        let f = try H5File(creating: path("data/sine.h5"))
        var rng = TestRNG(seed: 3)
        try f.root.writeDataset("input", shape: [6, 20, 2], floats: rng.tensor([6, 20, 2]).data)
        try f.root.writeDataset("targets", shape: [20, 1], floats: rng.tensor([20, 1]).data)
        try f.close()
        try new(["--input-size", "2", "--layer", "gru:4", "--head", "1"], "m.h5")
        let t = try seqcell(["train", "m.h5", "--data", "data/sine.h5", "--steps", "4", "--log-every", "2", "--batch-size", "5",
                             "-o", "runs/t.h5"])
        XCTAssertEqual(t.status, 0, t.err)

        // From another working directory, with relative paths that only make sense there:
        // the data path stored in the checkpoint still resolves; options given apply and are shown.
        let r = try seqcell(["train", "--resume", "../../runs/t.h5", "--steps", "3", "--lr", "0.01", "--batch-size", "4",
                             "--log-every", "3", "--clip-value", "0.5", "-o", "t2.h5"], in: path("elsewhere/deeper"))
        XCTAssertEqual(r.status, 0, r.err)
        for change in ["lr 0.001 -> 0.01", "batch size 5 -> 4", "log every 2 -> 3", "clipping norm 1.0 -> value 0.5"] {
            XCTAssert(r.out.contains("changed: \(change)"), "'\(change)' not reported: \(r.out)")
        }
        XCTAssert(r.out.contains("training: adam lr 0.01, clipping value 0.5") && r.out.contains("batch 4"), r.out)
        XCTAssert(r.out.contains("step 7") && !r.out.contains("step 6 "), "log cadence 3 not applied: \(r.out)")
        let resumed = try Checkpoint.load(from: path("elsewhere/deeper/t2.h5"), registry: testRegistry)
        XCTAssertEqual(resumed.training?.step, 7)
        let config = try Trainer.storedConfig(of: resumed)
        XCTAssertEqual(config.learningRate, 0.01)
        XCTAssertEqual(config.dataFiles?.input.given, "data/sine.h5")
        XCTAssertEqual(config.dataFiles?.input.absolute, absolutePath(path("data/sine.h5")))
        XCTAssertEqual(config.dataFiles?.input.relativeToCheckpoint, "../../data/sine.h5")

        // The whole tree moved: the absolute path is gone, the path relative to the checkpoint works.
        try FileManager.default.moveItem(atPath: directory.path, toPath: directory.path + "-moved")
        defer { try? FileManager.default.moveItem(atPath: directory.path + "-moved", toPath: directory.path) }
        let moved = try seqcell(["train", "--resume", "elsewhere/deeper/t2.h5", "--steps", "1", "-o", "t3.h5"], in: directory.path + "-moved")
        XCTAssertEqual(moved.status, 0, moved.err)
        XCTAssert(moved.out.contains("step 8"), moved.out)

        // Changing the objective of a run with optimizer state is refused by name, before any work.
        let refused = try seqcell(["train", "--resume", "elsewhere/deeper/t2.h5", "--loss", "cross_entropy", "--steps", "1", "-o", "t4.h5"],
                                  in: directory.path + "-moved")
        XCTAssertEqual(refused.status, 1)
        XCTAssert(refused.err.contains("--loss cross_entropy cannot apply with --resume") && refused.err.contains("--loss mse"), refused.err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory.path + "-moved/t4.h5"))
    }

    /// A checkpoint whose configuration stores the data path as given (older SeqCell) still
    /// resumes when run from another folder: the path is tried beside the checkpoint too.
    func testOldCheckpointWithRelativeDataPathResumesFromItsFolder() throws {
        try FileManager.default.createDirectory(atPath: path("run"), withIntermediateDirectories: true)
        let f = try H5File(creating: path("run/d.h5"))
        try f.root.writeDataset("input", shape: [3, 4, 2], floats: [Float](repeating: 0.1, count: 24))
        try f.root.writeDataset("targets", shape: [4, 1], floats: [1, 2, 3, 4])
        try f.close()
        try new(["--input-size", "2", "--layer", "rnn:3", "--head", "1"], "m.h5")
        var config = TrainingConfig()
        config.data = "file:d.h5"
        config.batchSize = 2
        var trainer = try Trainer(model: try Checkpoint.load(from: path("m.h5"), registry: testRegistry).model, config: config)
        try trainer.trainStep(Batch(input: Tensor(shape: [3, 2, 2], data: [Float](repeating: 0.1, count: 12)),
                                    targets: Tensor(shape: [2, 1], data: [1, 2])))
        try trainer.checkpoint.save(to: path("run/old.h5"))
        let r = try seqcell(["train", "--resume", "run/old.h5", "--steps", "1", "-o", "new.h5"])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssert(r.out.contains("step 2"), r.out)
        XCTAssertEqual(try Trainer.storedConfig(of: try Checkpoint.load(from: path("new.h5"), registry: testRegistry)).dataFiles?.input.given, "d.h5")
    }

    // MARK: checks before work

    func testMissingOrUnwritableOutputFolderFailsBeforeStepOne() throws {
        try new(["--input-size", "2", "--layer", "gru:4", "--head", "1"], "m.h5")
        try assertFails(["train", "m.h5", "--task", "adding", "--seq-len", "5", "--steps", "3", "-o", "no/such/folder/t.h5"],
                        ["-o no/such/folder/t.h5", "the folder 'no/such/folder' does not exist"])
        // An unwritable folder: a read-only one for ordinary users; root writes anywhere but /proc.
        let locked: String
        if geteuid() == 0 {
            locked = "/proc"
        } else {
            try FileManager.default.createDirectory(atPath: path("locked"), withIntermediateDirectories: true)
            try FileManager.default.setAttributes([.posixPermissions: 0o555], ofItemAtPath: path("locked"))
            locked = path("locked")
        }
        defer { try? FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: path("locked")) }
        try assertFails(["train", "m.h5", "--task", "adding", "--seq-len", "5", "--steps", "3", "-o", locked + "/t.h5"],
                        ["cannot create files in the folder '\(locked)'"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: locked + "/t.h5"))
        // The best checkpoint's place is checked too, and a data file that does not fit the model.
        let f = try H5File(creating: path("d.h5"))
        try f.root.writeDataset("input", shape: [3, 4, 5], floats: [Float](repeating: 0, count: 60))
        try f.root.writeDataset("targets", shape: [4, 1], floats: [0, 0, 0, 0])
        try f.close()
        try assertFails(["train", "m.h5", "--data", "d.h5", "--steps", "3", "-o", "t.h5"], ["has 5 features per step", "the model takes 2"])
        try assertFails(["train", "m.h5", "--data", "d.h5", "--steps", "3", "--early-stopping", "2", "-o", "t.h5"],
                        ["--early-stopping needs validation data"])
        XCTAssertEqual(try directoryContents().filter { $0 != "locked" }, ["d.h5", "m.h5"])
    }

    // MARK: data

    func testIntegerLabelsOfEveryWidthAndTheirRange() throws {
        try new(["--input-size", "3", "--layer", "gru:6", "--head", "2"], "m.h5")
        for dtype in ["int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"] {
            try writeClassData(N: 12, dtype: dtype, prefix: dtype)
            let r = try seqcell(["train", "m.h5", "--data", "\(dtype)_tm.h5", "--loss", "cross_entropy", "--steps", "2",
                                 "--batch-size", "4", "-o", "t-\(dtype).h5"])
            XCTAssertEqual(r.status, 0, "\(dtype): \(r.err)")
            XCTAssert(r.out.contains("accuracy"), r.out)
            let n = try seqcell(["train", "m.h5", "--data", "\(dtype)_x.npy", "--targets", "\(dtype)_y.npy", "--batch-first",
                                 "--loss", "cross_entropy", "--steps", "1", "--batch-size", "4", "-o", "n-\(dtype).h5"])
            XCTAssertEqual(n.status, 0, "\(dtype) .npy: \(n.err)")
        }
        _ = try runPython("""
            import sys, numpy as np, h5py
            with h5py.File(sys.argv[1] + '/bad.h5', 'w') as f:
                f['input'] = np.zeros((4, 6, 3), 'f4'); f['targets'] = np.array([0, 1, 1, 0, 7, 1], 'int16')
            with h5py.File(sys.argv[1] + '/neg.h5', 'w') as f:
                f['input'] = np.zeros((4, 6, 3), 'f4'); f['targets'] = np.array([[0, 1, 1, -2, 0, 1]] * 4, 'int64')
            """, [directory.path])
        try assertFails(["train", "m.h5", "--data", "bad.h5", "--loss", "cross_entropy", "--steps", "1", "-o", "b.h5"],
                        ["'bad.h5': targets: class id 7 at sample 4 is not in 0..<2"])
        try assertFails(["train", "m.h5", "--data", "neg.h5", "--loss", "cross_entropy", "--target", "all", "--steps", "1", "-o", "b.h5"],
                        ["class id -2 at step 0, sample 3 is not in 0..<2"])
    }

    func testBatchFirstNPZAndNPYPairsTrainAlikeAndAmbiguityWarns() throws {
        try new(["--input-size", "3", "--layer", "gru:6", "--head", "2"], "m.h5")
        try writeClassData()
        let args = ["--loss", "cross_entropy", "--steps", "3", "--batch-size", "8", "--log-every", "3"]
        let tm = try seqcell(["train", "m.h5", "--data", "d_tm.h5", "-o", "a.h5"] + args)
        let bf = try seqcell(["train", "m.h5", "--data", "d_bf.h5", "--batch-first", "-o", "b.h5"] + args)
        let npz = try seqcell(["train", "m.h5", "--data", "d.npz", "--batch-first", "-o", "c.h5"] + args)
        let npy = try seqcell(["train", "m.h5", "--data", "d_x.npy", "--targets", "d_y.npy", "--batch-first", "-o", "e.h5"] + args)
        for r in [tm, bf, npz, npy] { XCTAssertEqual(r.status, 0, r.err); XCTAssertEqual(r.err, "") }
        // The same samples in every layout and format: the same losses.
        func stepLine(_ out: String) -> String { out.split(separator: "\n").first { $0.hasPrefix("step 3") }.map { String($0.prefix(60)) } ?? "none" }
        XCTAssertEqual(stepLine(tm.out), stepLine(bf.out))
        XCTAssertEqual(stepLine(tm.out), stepLine(npz.out))
        XCTAssertEqual(stepLine(tm.out), stepLine(npy.out))
        try assertFails(["train", "m.h5", "--data", "d_x.npy", "--batch-first", "-o", "x.h5"] + args,
                        ["--data d_x.npy is a .npy file: give its targets with --targets FILE.npy"])
        let validated = try seqcell(["train", "m.h5", "--data", "d.npz", "--batch-first", "--validation", "d_x.npy",
                                     "--validation-targets", "d_y.npy", "-o", "v.h5"] + args)
        XCTAssertEqual(validated.status, 0, validated.err)
        XCTAssert(validated.out.contains("validation d_x.npy + d_y.npy (40 samples)") && validated.out.contains("val_accuracy"), validated.out)
        // Batch-first data without the flag: refused with the fix, not trained on the wrong axis.
        try assertFails(["train", "m.h5", "--data", "d_bf.h5", "-o", "x.h5"] + args, ["read as [N, T, I]: pass --batch-first"])
        // Square data (T == N): either layout fits, so a one-line warning says how it was read.
        try writeClassData(N: 5, T: 5, prefix: "sq")
        let sq = try seqcell(["train", "m.h5", "--data", "sq_tm.h5", "-o", "s.h5"] + args.dropLast(4) + ["--batch-size", "5"])
        XCTAssertEqual(sq.status, 0, sq.err)
        XCTAssert(sq.err.hasPrefix("warning: sq_tm.h5: input [5, 5, 3] reads as [T, N, I] and as [N, T, I]"), sq.err)
        XCTAssertEqual(sq.err.split(separator: "\n").count, 1, sq.err)
        let stated = try seqcell(["train", "m.h5", "--data", "sq_tm.h5", "--time-major", "-o", "s.h5"] + args.dropLast(4) + ["--batch-size", "5"])
        XCTAssertEqual(stated.err, "")
        // A file that says its layout ('layout' attribute, as `seqcell run` writes) needs no flag,
        // and a flag that contradicts it is refused.
        _ = try runPython("import sys, h5py; h5py.File(sys.argv[1] + '/sq_bf.h5', 'a').attrs['layout'] = 'batch_first'", [directory.path])
        let said = try seqcell(["train", "m.h5", "--data", "sq_bf.h5", "-o", "s2.h5"] + args.dropLast(4) + ["--batch-size", "5"])
        XCTAssertEqual(said.status, 0, said.err)
        XCTAssertEqual(said.err, "")
        try assertFails(["train", "m.h5", "--data", "sq_bf.h5", "--time-major", "-o", "s3.h5"] + args,
                        ["'sq_bf.h5' says its layout is batch_first; pass --batch-first"])
        _ = try runPython("import sys, h5py; del h5py.File(sys.argv[1] + '/sq_bf.h5', 'a').attrs['layout']", [directory.path])
        for command in ["evaluate"] {
            let e = try seqcell([command, "s.h5", "--data", "sq_bf.h5"])
            XCTAssertEqual(e.status, 0, e.err)
            XCTAssert(e.err.contains("warning: sq_bf.h5: input [5, 5, 3]"), e.err)
        }
        // run: input alone fits both layouts: warned, unless a flag says which.
        let x = try H5File(creating: path("x.h5"))
        try x.root.writeDataset("input", shape: [4, 2, 3], floats: [Float](repeating: 0.5, count: 24))
        try x.close()
        let run = try seqcell(["run", "m.h5", "--input", "x.h5", "-o", "y.h5"])
        XCTAssertEqual(run.status, 0, run.err)
        XCTAssert(run.err.contains("warning: 'x.h5': input [4, 2, 3] reads as [T, B, I] and as [B, T, I]"), run.err)
        XCTAssertEqual(try seqcell(["run", "m.h5", "--input", "x.h5", "--time-major", "-o", "y.h5"]).err, "")
        XCTAssertEqual(try seqcell(["run", "m.h5", "--input", "x.h5", "--batch-first", "-o", "y.h5"]).err, "")
    }

    // MARK: validation, metrics, early stopping, evaluate

    /// `evaluate --json` against numpy computing MSE/MAE and cross-entropy/accuracy from the
    /// model's own outputs (written by `seqcell run`), and the last log line's validation
    /// metrics against `evaluate` of the final checkpoint on the same samples.
    func testMetricsMatchNumpyAndValidationLinesMatchEvaluate() throws {
        try new(["--input-size", "3", "--layer", "lstm:5", "--head", "2"], "m.h5")
        try writeClassData(N: 30, T: 4)
        // Classification with lengths, target last.
        _ = try runPython("""
            import sys, h5py, numpy as np
            d = sys.argv[1]
            with h5py.File(f'{d}/d_tm.h5', 'a') as f:
                f['lengths'] = (np.arange(30) % 4 + 1).astype('int32')
            """, [directory.path])
        let t = try seqcell(["train", "m.h5", "--data", "d_tm.h5", "--loss", "cross_entropy", "--steps", "6", "--log-every", "3",
                             "--batch-size", "6", "--validation-split", "0.2", "-o", "c.h5"])
        XCTAssertEqual(t.status, 0, t.err)
        XCTAssert(t.out.contains("(30 samples: the first 24 train, the last 6 validate)"), t.out)
        let ev = try seqcell(["evaluate", "c.h5", "--data", "d_tm.h5", "--json"])
        XCTAssertEqual(ev.status, 0, ev.err)
        struct Report: Decodable { let samples: Int; let loss: String; let metrics: [String: Double] }
        let report = try JSONDecoder().decode(Report.self, from: Data(ev.out.utf8))
        XCTAssertEqual(report.samples, 30)
        XCTAssertEqual(report.loss, "cross_entropy")
        XCTAssertEqual(try seqcell(["run", "c.h5", "--input", "d_tm.h5", "--time-major", "-o", "out.h5"]).status, 0)
        let expected = try decodePython([String: Double].self, """
            import sys, json, h5py, numpy as np
            d = sys.argv[1]
            with h5py.File(f'{d}/out.h5') as f: out = f['output'][()].astype('f8')
            with h5py.File(f'{d}/d_tm.h5') as f: y = f['targets'][()]; L = f['lengths'][()]
            logits = out[L - 1, np.arange(len(y))]
            m = logits.max(1, keepdims=True)
            logp = logits - m - np.log(np.exp(logits - m).sum(1, keepdims=True))
            ce = -logp[np.arange(len(y)), y].mean()
            acc = (logits.argmax(1) == y).mean()
            lv, yv, Lv = logits[24:], y[24:], L[24:]
            mv = lv.max(1, keepdims=True)
            cev = -(lv - mv - np.log(np.exp(lv - mv).sum(1, keepdims=True)))[np.arange(6), yv].mean()
            print(json.dumps({'cross_entropy': ce, 'accuracy': acc, 'val_cross_entropy': cev, 'val_accuracy': (lv.argmax(1) == yv).mean()}))
            """, [directory.path])
        XCTAssertEqual(report.metrics["cross_entropy"]!, expected["cross_entropy"]!, accuracy: 1e-5)
        XCTAssertEqual(report.metrics["accuracy"]!, expected["accuracy"]!, accuracy: 1e-12)
        let last = t.out.split(separator: "\n").first { $0.hasPrefix("step 6") }.map(String.init) ?? ""
        XCTAssert(last.contains(String(format: "val_cross_entropy %.4f", expected["val_cross_entropy"]!)), "\(last) vs \(expected)")
        XCTAssert(last.contains(String(format: "val_accuracy %.4f", expected["val_accuracy"]!)), "\(last) vs \(expected)")

        // Regression, per-step targets, batch-first: mse and mae.
        try new(["--input-size", "3", "--layer", "gru:4", "--head", "2"], "r.h5")
        _ = try runPython("""
            import sys, numpy as np
            rng = np.random.default_rng(1)
            np.savez(sys.argv[1] + '/reg.npz', input=rng.standard_normal((7, 5, 3)).astype('f4'),
                     targets=rng.standard_normal((7, 5, 2)).astype('f8'))
            np.save(sys.argv[1] + '/reg_x.npy', np.load(sys.argv[1] + '/reg.npz')['input'])
            """, [directory.path])
        let r = try seqcell(["evaluate", "r.h5", "--data", "reg.npz", "--batch-first", "--target", "all", "--json", "--batch-size", "3"])
        XCTAssertEqual(r.status, 0, r.err)
        let reg = try JSONDecoder().decode(Report.self, from: Data(r.out.utf8))
        XCTAssertEqual(try seqcell(["run", "r.h5", "--input", "reg_x.npy", "--batch-first", "-o", "rout.h5"]).status, 0)
        let want = try decodePython([String: Double].self, """
            import sys, json, h5py, numpy as np
            d = sys.argv[1]
            with h5py.File(f'{d}/rout.h5') as f: out = f['output'][()].astype('f8')
            e = out - np.load(f'{d}/reg.npz')['targets']
            print(json.dumps({'mse': (e ** 2).mean(), 'mae': np.abs(e).mean()}))
            """, [directory.path])
        XCTAssertEqual(reg.metrics["mse"]!, want["mse"]!, accuracy: 1e-5)
        XCTAssertEqual(reg.metrics["mae"]!, want["mae"]!, accuracy: 1e-5)
        let text = try seqcell(["evaluate", "r.h5", "--data", "reg.npz", "--batch-first", "--target", "all"])
        XCTAssert(text.out.contains(String(format: "mse %.4f", want["mse"]!)) && text.out.contains("7 samples"), text.out)
    }

    /// With a learning rate too small to change any prediction, validation accuracy never
    /// improves on the first log line: patience 2 stops two lines later, the best state
    /// (from the first line) is kept beside the output, the output holds the last.
    func testEarlyStoppingKeepsTheBestCheckpoint() throws {
        try new(["--input-size", "3", "--layer", "gru:4", "--head", "2"], "m.h5")
        try writeClassData(N: 20, T: 3)
        let r = try seqcell(["train", "m.h5", "--data", "d_tm.h5", "--loss", "cross_entropy", "--lr", "1e-12", "--steps", "100",
                             "--log-every", "2", "--batch-size", "4", "--validation", "d_bf.h5", "--batch-first",
                             "--early-stopping", "2", "--monitor", "val_accuracy", "-o", "t.h5"])
        // d_bf.h5 is batch-first like --batch-first says, but so must the training data be.
        XCTAssertNotEqual(r.status, 0)
        let ok = try seqcell(["train", "m.h5", "--data", "d.npz", "--loss", "cross_entropy", "--lr", "1e-12", "--steps", "100",
                              "--log-every", "2", "--batch-size", "4", "--validation", "d_bf.h5", "--batch-first",
                              "--early-stopping", "2", "--monitor", "val_accuracy", "-o", "t.h5"])
        XCTAssertEqual(ok.status, 0, ok.err)
        XCTAssert(ok.out.contains("early stopping at step 6: val_accuracy has not improved for 2 log line(s)"), ok.out)
        XCTAssert(ok.out.contains("at step 2, kept in t.best.h5"), ok.out)
        XCTAssertFalse(ok.out.contains("step 8 "), ok.out)
        XCTAssertEqual(try Checkpoint.load(from: path("t.best.h5"), registry: testRegistry).training?.step, 2)
        XCTAssertEqual(try Checkpoint.load(from: path("t.h5"), registry: testRegistry).training?.step, 6)
    }

    /// The training metrics on a log line are over the batches since the previous line: with
    /// every sample in every batch and a learning rate too small to change anything, they are
    /// the metrics of the whole set, which `evaluate` (checked against numpy above) gives.
    func testTrainingMetricsCoverTheLoggedInterval() throws {
        try new(["--input-size", "3", "--layer", "rnn:4", "--head", "2"], "m.h5")
        try writeClassData(N: 8, T: 3)
        let t = try seqcell(["train", "m.h5", "--data", "d_tm.h5", "--loss", "cross_entropy", "--lr", "1e-12", "--batch-size", "8",
                             "--steps", "4", "--log-every", "2", "-o", "t.h5"])
        XCTAssertEqual(t.status, 0, t.err)
        let e = try seqcell(["evaluate", "t.h5", "--data", "d_tm.h5"])
        XCTAssertEqual(e.status, 0, e.err)
        let lines = e.out.split(separator: "\n").map(String.init)
        guard let ce = lines.first(where: { $0.hasPrefix("cross_entropy ") }), let acc = lines.first(where: { $0.hasPrefix("accuracy ") }) else {
            return XCTFail("no metrics in: \(e.out)")
        }
        for step in ["step 2  ", "step 4  "] {
            let line = t.out.split(separator: "\n").first { $0.hasPrefix(step) }.map(String.init) ?? ""
            XCTAssert(line.contains("  \(ce)  ") && line.contains("  \(acc)  "), "\(line) vs \(ce), \(acc)")
        }
    }

    // MARK: threads and option errors

    func testThreadsOnRunTrainEvaluate() throws {
        try new(["--input-size", "2", "--layer", "gru:4", "--head", "1"], "m.h5")
        XCTAssertEqual(try seqcell(["train", "m.h5", "--task", "adding", "--seq-len", "4", "--steps", "1", "--threads", "1", "-o", "t.h5"]).status, 0)
        let x = try H5File(creating: path("x.h5"))
        try x.root.writeDataset("input", shape: [4, 2, 2], floats: [Float](repeating: 0.5, count: 16))
        try x.root.writeDataset("targets", shape: [2, 1], floats: [1, 2])
        try x.close()
        XCTAssertEqual(try seqcell(["run", "m.h5", "--input", "x.h5", "--threads", "2", "-o", "y.h5"]).status, 0)
        XCTAssertEqual(try seqcell(["evaluate", "m.h5", "--data", "x.h5", "--threads", "1"]).status, 0)
        for command in [["run", "m.h5", "--input", "x.h5", "-o", "y.h5"], ["evaluate", "m.h5", "--data", "x.h5"],
                        ["train", "m.h5", "--task", "adding", "-o", "t.h5"], ["bench"]] {
            try assertFails(command + ["--threads", "-1"], ["--threads must be at least 0 (0: the default), got -1"])
        }
    }

    func testOptionErrorsNameTheOptionAndTheRange() throws {
        try new(["--input-size", "2", "--layer", "gru:4", "--head", "1"], "m.h5")
        let base = ["train", "m.h5", "--task", "adding", "-o", "t.h5"]
        try assertFails(base + ["--steps", "-5"], ["--steps must be at least 1, got -5"])
        try assertFails(base + ["--lr", "-1"], ["--lr must be a number greater than 0, got -1.0"])
        try assertFails(base + ["--batch-size", "0"], ["--batch-size must be at least 1, got 0"])
        try assertFails(base + ["--dropout", "1.5"], ["--dropout must be in [0, 1), got 1.5"])
        try assertFails(base + ["--validation-split", "1"], ["--validation-split must be in (0, 1), got 1.0"])
        // More samples asked for than there are: refused, not silently cut.
        let f = try H5File(creating: path("d.h5"))
        try f.root.writeDataset("input", shape: [3, 512, 2], floats: [Float](repeating: 0.1, count: 3 * 512 * 2))
        try f.root.writeDataset("targets", shape: [512, 1], floats: [Float](repeating: 1, count: 512))
        try f.close()
        try assertFails(["train", "m.h5", "--data", "d.h5", "--batch-size", "5000", "-o", "t.h5"],
                        ["--batch-size 5000 is larger than the 512 training samples", "give --batch-size 1...512"])
        // Class ids without --loss cross_entropy, or a model without a head: the message says which option.
        _ = try runPython("""
            import sys, numpy as np, h5py
            with h5py.File(sys.argv[1] + '/cls.h5', 'w') as f:
                f['input'] = np.zeros((3, 8, 2), 'f4'); f['targets'] = np.arange(8) % 3
            with h5py.File(sys.argv[1] + '/two.h5', 'w') as f:
                f['input'] = np.zeros((3, 8, 2), 'f4'); f['targets'] = np.zeros((8, 1), 'f4')
            with h5py.File(sys.argv[1] + '/seq.h5', 'w') as f:
                f['input'] = np.zeros((3, 8, 2), 'f4'); f['targets'] = np.zeros((3, 8, 1), 'f4')
            """, [directory.path])
        try new(["--input-size", "2", "--layer", "gru:4", "--head", "3"], "c.h5")
        try assertFails(["train", "c.h5", "--data", "cls.h5", "-o", "t.h5"], ["they look like class ids: use --loss cross_entropy"])
        try new(["--input-size", "2", "--layer", "gru:4"], "nohead.h5")
        try assertFails(["train", "nohead.h5", "--data", "two.h5", "--batch-size", "4", "-o", "t.h5"],
                        ["the model outputs 4: give the model a head of size 1", "--head 1"])
        try assertFails(["train", "m.h5", "--data", "seq.h5", "--batch-size", "4", "-o", "t.h5"], ["they are per step: use --target all"])
        try assertFails(["train", "m.h5", "--data", "cls.h5", "--loss", "cross_entropy", "-o", "t.h5"],
                        ["--loss cross_entropy needs one output per class", "--head C"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("t.h5")))
    }
}

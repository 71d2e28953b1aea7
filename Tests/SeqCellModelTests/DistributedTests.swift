import Foundation
import XCTest
@testable import SeqCellBase
@testable import SeqCellHost
@testable import SeqCellModel
@testable import SeqCellFormats
@testable import SeqCellTools
import SeqCellTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// Data-parallel training: shards, the replica check, and `seqcell train` under Open MPI's
/// `mpirun` with 2 ranks and 3 oversubscribed ranks, compared with one process.
/// The mpirun tests skip, by name, only when mpirun is not installed; scripts/test.sh installs
/// it (scripts/ensure-deps.sh --mpi), so the suite runs them.
final class DistributedTests: TemporaryDirectoryTestCase {

    // MARK: - Without MPI

    func testShardsPartitionTheGlobalBatch() throws {
        var rng = SplitMix64(seed: 4)
        let global = Batch(input: rng.uniformTensor([3, 6, 2], scale: 1), lengths: [3, 1, 2, 3, 2, 1],
                           targets: rng.uniformTensor([3, 6, 4], scale: 1))
        let parts = try (0..<3).map { r in
            global.samples(try DataParallel.shard(globalBatch: 6, rank: r, size: 3), perStepTargets: true)
        }
        // Rank r holds samples 2r and 2r+1: every value of the global batch, once, in order.
        for (r, p) in parts.enumerated() {
            XCTAssertEqual(p.input.shape, [3, 2, 2])
            XCTAssertEqual(p.targets.shape, [3, 2, 4])
            XCTAssertEqual(p.lengths, Array(global.lengths![(2 * r)..<(2 * r + 2)]))
            for t in 0..<3 { for j in 0..<2 {
                for k in 0..<2 { XCTAssertEqual(p.input.data[(t * 2 + j) * 2 + k], global.input.data[(t * 6 + 2 * r + j) * 2 + k]) }
                for k in 0..<4 { XCTAssertEqual(p.targets.data[(t * 2 + j) * 4 + k], global.targets.data[(t * 6 + 2 * r + j) * 4 + k]) }
            } }
        }
        XCTAssertThrowsError(try DataParallel.shard(globalBatch: 7, rank: 0, size: 2)) { e in
            XCTAssert("\(e)".contains("not divisible by the 2 ranks"), "\(e)")
        }
        XCTAssertThrowsError(try DataParallel.shard(globalBatch: 2, rank: 0, size: 3)) { e in
            XCTAssert("\(e)".contains("smaller than the 3 ranks"), "\(e)")
        }
        XCTAssertEqual(DataParallel.dropoutSeed(99, rank: 0), 99, "rank 0 keeps the single-process dropout stream")
        XCTAssertNotEqual(DataParallel.dropoutSeed(99, rank: 1), DataParallel.dropoutSeed(99, rank: 2))
    }

    /// The loss gradient of a shard, normalised by the global count, summed over the shards,
    /// equals the one-process mean-loss gradient, with padded steps masked (target `all`).
    func testShardLossGradientsSumToTheWholeBatchGradient() throws {
        var rng = SplitMix64(seed: 8)
        let output = rng.uniformTensor([4, 6, 3], scale: 2)
        let lengths: [Int32] = [4, 1, 3, 2, 4, 1]
        let classes = Tensor(shape: [4, 6], data: (0..<24).map { Float($0 % 3) })
        let whole = try computeLoss(.crossEntropy, mode: .allSteps, output: output, targets: classes, lengths: lengths)
        XCTAssertEqual(whole.itemCount, Double(lengths.reduce(0) { $0 + Int($1) }))
        let global = Batch(input: output, lengths: lengths, targets: classes)
        var lossSum = 0.0
        for r in 0..<2 {
            let range = try DataParallel.shard(globalBatch: 6, rank: r, size: 2)
            let part = global.samples(range, perStepTargets: true)
            let g = try computeLoss(.crossEntropy, mode: .allSteps, output: part.input, targets: part.targets,
                                    lengths: part.lengths, normalizer: whole.itemCount)
            lossSum += g.value
            for t in 0..<4 { for j in 0..<3 { for k in 0..<3 {
                XCTAssertEqual(g.gradOutput.data[(t * 3 + j) * 3 + k], whole.gradOutput.data[(t * 6 + range.lowerBound + j) * 3 + k],
                               accuracy: 1e-7)
            } } }
        }
        XCTAssertEqual(lossSum, whole.value, accuracy: 1e-12)
    }

    func testReplicasThatDriftApartAreAnError() throws {
        try newModel("m.h5", ["--layer", "gru:3"])
        let model = try Checkpoint.load(from: path("m.h5"), registry: testRegistry).model
        let same = try Trainer(model: model, config: TrainingConfig(), communicator: ScriptedPeers(drifted: false))
        XCTAssertNoThrow(try same.checkReplicasAgree())
        let drifted = try Trainer(model: model, config: TrainingConfig(), communicator: ScriptedPeers(drifted: true))
        XCTAssertThrowsError(try drifted.checkReplicasAgree()) { e in
            XCTAssert("\(e)".contains("parameters on rank 2 differ from those on rank 0"), "\(e)")
        }
    }

    /// The Swift API: three `Trainer`s on three threads, each given its shard and a
    /// communicator of one group, end where one `Trainer` on the whole batches ends.
    func testTrainersSharingACommunicatorMatchOneTrainer() throws {
        try newModel("m.h5", ["--layer", "lstm:4", "--head", "1"])
        let model = try Checkpoint.load(from: path("m.h5"), registry: testRegistry).model
        var config = TrainingConfig()
        config.optimizer = "adam"
        config.learningRate = 0.02
        config.batchSize = 6
        let task = AddingProblem(seqLen: 8, batchSize: 6)
        var alone = try Trainer(model: model, config: config)
        var losses: [Double] = []
        for s in 0..<4 { losses.append(try alone.trainStep(task.batch(seed: 0, step: s)).loss) }
        let shared = config
        let results = try ThreadGroup.run(ranks: 3) { comm in
            var t = try Trainer(model: model, config: shared, communicator: comm)
            let mine = try DataParallel.shard(globalBatch: 6, rank: comm.rank, size: comm.size)
            var seen: [Double] = []
            for s in 0..<4 { seen.append(try t.trainStep(task.batch(seed: 0, step: s).samples(mine, perStepTargets: false)).loss) }
            try t.checkReplicasAgree()
            return (t.model.namedParameters.map(\.value), seen)
        }
        for (rank, r) in results.enumerated() {
            let (params, seen) = try r.get()
            for (i, l) in seen.enumerated() { XCTAssertEqual(l, losses[i], accuracy: 1e-6 * abs(losses[i]), "rank \(rank) step \(i + 1)") }
            for (p, q) in zip(params, alone.model.namedParameters) {
                for i in 0..<p.count {
                    XCTAssert(abs(p.data[i] - q.value.data[i]) <= 1e-5 * max(abs(p.data[i]), abs(q.value.data[i])) + 1e-7,
                              "rank \(rank) \(q.path)[\(i)]: \(p.data[i]) vs \(q.value.data[i])")
                }
            }
            XCTAssertNotEqual(params.map(\.data), model.namedParameters.map(\.value.data), "training moved the parameters")
        }
    }

    /// A NaN in one rank's shard stops every rank at the same step, before any update.
    func testNaNOnOneThreadRankStopsAllRanks() throws {
        try newModel("m.h5", ["--layer", "gru:3", "--head", "1"])
        let model = try Checkpoint.load(from: path("m.h5"), registry: testRegistry).model
        var config = TrainingConfig()
        config.batchSize = 4
        let shared = config
        let results = try ThreadGroup.run(ranks: 2) { comm in
            var t = try Trainer(model: model, config: shared, communicator: comm)
            var batch = AddingProblem(seqLen: 5, batchSize: 4).batch(seed: 1, step: 0)
                .samples(try DataParallel.shard(globalBatch: 4, rank: comm.rank, size: 2), perStepTargets: false)
            if comm.rank == 1 { batch.input.data[3] = .nan }
            _ = try t.trainStep(batch)
            return (t.model.namedParameters.map(\.value), [Double]())
        }
        for (rank, r) in results.enumerated() {
            XCTAssertThrowsError(try r.get(), "rank \(rank)") { e in
                XCTAssertEqual((e as? SeqCellError)?.kind, .numeric, "rank \(rank): \(e)")
                XCTAssert("\(e)".contains("step 1: the loss is nan"), "rank \(rank): \(e)")
            }
        }
    }

    // MARK: - seqcell train under mpirun

    func testSGDOnTwoRanksMatchesOneProcess() throws {
        // Sequence to sequence with padding: the loss divides by the global count of valid steps.
        try writeData("d.h5", samples: 12, classes: 3)
        try newModel("m.h5", ["--layer", "lstm:6", "--head", "3"])
        let args = ["m.h5", "--data", "d.h5", "--loss", "cross_entropy", "--target", "all", "--optimizer", "sgd",
                    "--lr", "0.5", "--momentum", "0.9", "--clip-norm", "0.05", "--batch-size", "8", "--steps", "6",
                    "--log-every", "3", "--seed", "5", "--validation-split", "0.25"]
        let one = try runProgram(["train"] + args + ["-o", "one.h5"], environment: Self.environment)
        XCTAssertEqual(one.status, 0, one.err)
        let two = try mpirun(2, ["train"] + args + ["-o", "two.h5"])
        XCTAssertEqual(two.status, 0, two.err)
        XCTAssert(two.out.contains("clipped 6/6"), "global-norm clipping is active in this run: \(two.out)")
        XCTAssertEqual(Self.lossLines(two.out).count, 2, "rank 0 alone prints the log: \(two.out)")
        try assertSameParameters("two.h5", "one.h5")
        // The logged loss is the global mean: the one process's value; so are the training
        // metrics (summed over ranks) and the validation metrics.
        XCTAssertEqual(Self.lossLines(two.out), Self.lossLines(one.out))
        let metrics = Self.metricValues(two.out)
        XCTAssertEqual(metrics.count, 2 * 4, two.out)
        for (a, b) in zip(metrics, Self.metricValues(one.out)) {
            XCTAssertEqual(a.name, b.name)
            XCTAssertEqual(a.value, b.value, accuracy: 1e-4 * max(1, abs(b.value)), a.name)
        }
    }

    func testAdamOnThreeOversubscribedRanksMatchesOneProcess() throws {
        try newModel("m.h5", ["--layer", "gru:5", "--head", "1"])
        let args = ["m.h5", "--task", "adding", "--seq-len", "12", "--optimizer", "adam", "--lr", "0.01",
                    "--batch-size", "6", "--steps", "5", "--log-every", "5"]
        let one = try runProgram(["train"] + args + ["-o", "one.h5"], environment: Self.environment)
        XCTAssertEqual(one.status, 0, one.err)
        let three = try mpirun(3, ["train"] + args + ["-o", "three.h5"])
        XCTAssertEqual(three.status, 0, three.err)
        try assertSameParameters("three.h5", "one.h5")
    }

    func testResumeWithAnotherRankCountContinuesTheSameRun() throws {
        try newModel("m.h5", ["--layer", "lstm:4", "--head", "1"])
        let common = ["--optimizer", "adam", "--lr", "0.02"]
        let straight = try runProgram(["train", "m.h5", "--task", "adding", "--seq-len", "8", "--batch-size", "6", "--steps", "6",
                                       "-o", "straight.h5"] + common, environment: Self.environment)
        XCTAssertEqual(straight.status, 0, straight.err)
        let first = try mpirun(2, ["train", "m.h5", "--task", "adding", "--seq-len", "8", "--batch-size", "6", "--steps", "3",
                                   "-o", "half.h5"] + common)
        XCTAssertEqual(first.status, 0, first.err)
        let second = try mpirun(3, ["train", "--resume", "half.h5", "--steps", "3", "-o", "resumed.h5"])
        XCTAssertEqual(second.status, 0, second.err)
        XCTAssert(second.out.contains("resuming half.h5 at step 3"), second.out)
        try assertSameParameters("resumed.h5", "straight.h5")
        XCTAssertEqual(try Checkpoint.load(from: path("resumed.h5"), registry: testRegistry).training?.step, 6)
    }

    func testDropoutStreamsPerRankResumeExactlyWithTheSameRankCount() throws {
        try newModel("m.h5", ["--layer", "lstm:5", "--layer", "lstm:5", "--head", "1"])
        let args = ["--task", "adding", "--seq-len", "8", "--batch-size", "4", "--dropout", "0.4", "--seed", "3"]
        // `try` outside the assertion: a skip thrown by `mpirun` (not installed) must reach XCTest
        // as a skip, not be recorded by XCTAssertEqual as a failure.
        let straight = try mpirun(2, ["train", "m.h5", "--steps", "4", "-o", "straight.h5"] + args)
        XCTAssertEqual(straight.status, 0, straight.err)
        let half = try mpirun(2, ["train", "m.h5", "--steps", "2", "-o", "half.h5"] + args)
        XCTAssertEqual(half.status, 0, half.err)
        let resumed = try mpirun(2, ["train", "--resume", "half.h5", "--steps", "2", "-o", "resumed.h5"])
        XCTAssertEqual(resumed.status, 0, resumed.err)
        let a = try Checkpoint.load(from: path("resumed.h5"), registry: testRegistry).model.namedParameters
        let b = try Checkpoint.load(from: path("straight.h5"), registry: testRegistry).model.namedParameters
        for (x, y) in zip(a, b) { XCTAssertEqual(x.value.data, y.value.data, "\(x.path): resume must be exact") }
        // Each rank draws its own masks: two ranks do not train as one process does.
        XCTAssertEqual(try runProgram(["train", "m.h5", "--steps", "4", "-o", "one.h5"] + args, environment: Self.environment).status, 0)
        let c = try Checkpoint.load(from: path("one.h5"), registry: testRegistry).model.namedParameters
        XCTAssertNotEqual(a.map(\.value.data), c.map(\.value.data))
    }

    func testNaNOnOneRankStopsEveryRankAtTheSameStepWithOneMessage() throws {
        // Every batch holds all 4 samples (batch 4 of 4): sample 3, on rank 1, is NaN.
        try writeData("d.h5", samples: 4, classes: 0, nanSample: 3)
        try newModel("m.h5", ["--layer", "rnn:3", "--head", "1"])
        try Data("earlier".utf8).write(to: URL(fileURLWithPath: path("out.h5")))
        let r = try mpirun(2, ["train", "m.h5", "--data", "d.h5", "--batch-size", "4", "--steps", "3", "-o", "out.h5"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertEqual(r.err.components(separatedBy: "step 1: the loss is nan").count - 1, 1, r.err)
        XCTAssertFalse(r.err.contains("rank 1:"), r.err)
        XCTAssertEqual(try String(contentsOfFile: path("out.h5"), encoding: .utf8), "earlier", "no checkpoint is overwritten")
    }

    func testBadInputIsReportedOnceByRankZeroAndNothingIsOverwritten() throws {
        try writeData("d.h5", samples: 6, classes: 0)
        try writeData("other.h5", samples: 6, classes: 0, seed: 99)
        try writeData("tiny.h5", samples: 2, classes: 0)
        try newModel("m.h5", ["--layer", "lstm:3", "--head", "1"])
        try newModel("m2.h5", ["--layer", "lstm:3", "--head", "1"], seed: 7)
        let plugin = try buildSamplePlugin()
        try Data("earlier".utf8).write(to: URL(fileURLWithPath: path("out.h5")))
        let exe = cli
        let train = { (extra: [String]) in [exe, "train", "--steps", "2", "-o", "out.h5"] + extra }
        let cases: [(args: [String], np: Int, message: String)] = [
            (train(["m.h5", "--data", "d.h5", "--batch-size", "5"]), 2,
             "the global batch size 5 is not divisible by the 2 ranks"),
            // A global batch of at least one sample per rank is no larger than the data, so
            // data with fewer samples than ranks fails the batch-size check first.
            (train(["m.h5", "--data", "tiny.h5", "--batch-size", "3"]), 3,
             "--batch-size 3 is larger than the 2 training samples in tiny.h5"),
            (train(["m.h5", "--data", "d.h5", "--batch-size", "4"]) + [":", "-np", "1"] + train(["m.h5", "--data", "other.h5", "--batch-size", "4"]), 1,
             "rank 1 has different training data than rank 0"),
            (train(["m.h5", "--data", "d.h5", "--batch-size", "4"]) + [":", "-np", "1"] + train(["m2.h5", "--data", "d.h5", "--batch-size", "4"]), 1,
             "rank 1 has a different model, checkpoint or training configuration than rank 0"),
            (train(["m.h5", "--data", "d.h5", "--batch-size", "4"]) + [":", "-np", "1"]
                + train(["m.h5", "--data", "d.h5", "--batch-size", "4", "--plugin-path", plugin]), 1,
             "rank 1 has a different set of cells (plugins) than rank 0"),
            (train(["m.h5", "--data", "d.h5", "--batch-size", "4"]) + [":", "-np", "1"] + train(["absent.h5", "--data", "d.h5", "--batch-size", "4"]), 1,
             "rank 1: "),
        ]
        for c in cases {
            let r = try mpirun(c.np, c.args, rawArguments: true)
            XCTAssertNotEqual(r.status, 0, "\(c.args)")
            XCTAssertEqual(r.err.components(separatedBy: c.message).count - 1, 1, "one message from rank 0 for \(c.args): \(r.err)")
            XCTAssertEqual(r.err.components(separatedBy: "Error: ").count - 1, 1, "one message for \(c.args): \(r.err)")
            XCTAssertEqual(try String(contentsOfFile: path("out.h5"), encoding: .utf8), "earlier", "\(c.args) overwrote the checkpoint")
        }
    }

    func testWithoutOpenMPILibraryOneProcessRunsAndRanksFailClearly() throws {
        try newModel("m.h5", ["--layer", "rnn:3", "--head", "1"])
        let args = ["train", "m.h5", "--task", "adding", "--seq-len", "5", "--batch-size", "4", "--steps", "1", "-o", "out.h5"]
        let missing = "/nonexistent/libmpi.so.40"
        // One process never loads MPI.
        let one = try runProgram(args, environment: ["SEQCELL_MPI_LIBRARY": missing])
        XCTAssertEqual(one.status, 0, one.err)
        // MPICH's launcher (another ABI) is refused by name, not half-run.
        let foreign = try runProgram(args, environment: ["PMI_SIZE": "2", "PMI_RANK": "0"])
        XCTAssertEqual(foreign.status, 1)
        XCTAssert(foreign.err.hasPrefix("Error: started by an MPI launcher other than Open MPI's mpirun (2 ranks)"), foreign.err)
        let r = try mpirun(2, args, mpirunOptions: ["-x", "SEQCELL_MPI_LIBRARY=\(missing)"])
        XCTAssertNotEqual(r.status, 0)
        let message = "started by mpirun with 2 ranks, but MPI: cannot load Open MPI's library \(missing)"
        XCTAssertEqual(r.err.components(separatedBy: message).count - 1, 1, r.err)
    }

    func testKillingARankEndsTheJobAndTheLastCheckpointLoads() throws {
        let mpirunPath = try mpirunOrSkip()
        try newModel("m.h5", ["--layer", "lstm:16", "--head", "1"])
        let p = Process()
        p.executableURL = URL(fileURLWithPath: mpirunPath)
        p.arguments = ["-np", "2", cli, "train", "m.h5", "--task", "adding", "--seq-len", "20", "--batch-size", "8",
                       "--steps", "1000000", "--save-every", "5", "--log-every", "1000", "-o", "out.h5"]
        p.currentDirectoryURL = directory
        p.environment = ProcessInfo.processInfo.environment.merging(Self.environment) { $1 }
        _ = FileManager.default.createFile(atPath: path("mpirun.err"), contents: nil)
        p.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        p.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: path("mpirun.err")))
        try p.run()
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        // Wait for a checkpoint, then for a later one, so the kill lands mid-run.
        let deadline = Date().addingTimeInterval(120)
        while !FileManager.default.fileExists(atPath: path("out.h5")), p.isRunning, Date() < deadline { usleep(50_000) }
        XCTAssert(FileManager.default.fileExists(atPath: path("out.h5")), "no checkpoint was written")
        usleep(300_000)
        let victim = try XCTUnwrap(Self.rankProcess(1, under: p.processIdentifier), "rank 1 not found")
        let killedAt = Date()
        XCTAssertEqual(kill(victim, SIGKILL), 0)
        while p.isRunning, Date().timeIntervalSince(killedAt) < 60 { usleep(50_000) }
        let took = Date().timeIntervalSince(killedAt)
        XCTAssertFalse(p.isRunning, "mpirun still running \(took) s after rank 1 was killed")
        XCTAssertLessThan(took, 30)
        XCTAssertNotEqual(p.terminationStatus, 0)
        let saved = try Checkpoint.load(from: path("out.h5"), registry: testRegistry)
        let step = try XCTUnwrap(saved.training?.step)
        XCTAssert(step > 0 && step % 5 == 0, "the checkpoint is one of the periodic saves, got step \(step)")
    }

    // MARK: - Helpers

    /// One thread per rank, and what Open MPI needs to run as root in a container.
    static let environment = ["SEQCELL_THREADS": "1", "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
                              "OMPI_MCA_btl_vader_single_copy_mechanism": "none"]

    func mpirunOrSkip() throws -> String {
        let dirs = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":")
        for d in dirs where FileManager.default.isExecutableFile(atPath: "\(d)/mpirun") { return "\(d)/mpirun" }
        throw XCTSkip("Open MPI's mpirun is not installed, so the data-parallel tests did not run (scripts/ensure-deps.sh --mpi installs it)")
    }

    /// `mpirun -np N [--oversubscribe] options seqcell args` (or the raw arguments given), with
    /// a time limit: a hang is a failure, not a stuck suite.
    func mpirun(_ np: Int, _ args: [String], mpirunOptions: [String] = [], rawArguments: Bool = false,
                timeout: TimeInterval = 180, file: StaticString = #filePath, line: UInt = #line) throws -> (status: Int32, out: String, err: String) {
        let program = try mpirunOrSkip()
        let p = Process()
        p.executableURL = URL(fileURLWithPath: program)
        p.arguments = ["-np", "\(np)", "--oversubscribe"] + mpirunOptions + (rawArguments ? args : [cli] + args)
        p.currentDirectoryURL = directory
        p.environment = ProcessInfo.processInfo.environment.merging(Self.environment) { $1 }
        let (outPath, errPath) = (path("mpirun-\(UUID().uuidString).out"), path("mpirun-\(UUID().uuidString).err"))
        _ = FileManager.default.createFile(atPath: outPath, contents: nil)
        _ = FileManager.default.createFile(atPath: errPath, contents: nil)
        p.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: outPath))
        p.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: errPath))
        try p.run()
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning, Date() < deadline { usleep(20_000) }
        if p.isRunning {
            kill(p.processIdentifier, SIGTERM)
            p.waitUntilExit()
            XCTFail("mpirun \(args) did not finish within \(timeout) s", file: file, line: line)
        }
        p.waitUntilExit()
        defer { try? FileManager.default.removeItem(atPath: outPath); try? FileManager.default.removeItem(atPath: errPath) }
        return (p.terminationStatus, try String(contentsOfFile: outPath, encoding: .utf8), try String(contentsOfFile: errPath, encoding: .utf8))
    }

    /// The process of rank `rank` among `parent`'s children (by OMPI_COMM_WORLD_RANK).
    static func rankProcess(_ rank: Int, under parent: Int32) -> Int32? {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return nil }
        for e in entries {
            guard let pid = Int32(e), let stat = try? String(contentsOfFile: "/proc/\(e)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 2, Int32(fields[1]) == parent,
                  let env = FileManager.default.contents(atPath: "/proc/\(e)/environ") else { continue }
            if env.split(separator: 0).contains(where: { String(decoding: $0, as: UTF8.self) == "OMPI_COMM_WORLD_RANK=\(rank)" }) {
                return pid
            }
        }
        return nil
    }

    /// The training and validation metrics of every log line, in order.
    static func metricValues(_ out: String) -> [(name: String, value: Double)] {
        let names: Set<String> = ["cross_entropy", "accuracy", "val_cross_entropy", "val_accuracy"]
        return out.split(separator: "\n").filter { $0.hasPrefix("step ") }.flatMap { line -> [(name: String, value: Double)] in
            let words = line.split(separator: " ").map(String.init)
            return words.indices.dropLast().compactMap { i in
                names.contains(words[i]) ? Double(words[i + 1]).map { (name: words[i], value: $0) } : nil
            }
        }
    }

    static func lossLines(_ out: String) -> [String] {
        out.split(separator: "\n").filter { $0.hasPrefix("step ") }.map { line in
            String(line.split(separator: " ", omittingEmptySubsequences: true).prefix(4).joined(separator: " "))
        }
    }

    func newModel(_ name: String, _ layers: [String], seed: Int = 1) throws {
        let r = try runProgram(["new", "--input-size", "2"] + layers + ["--seed", "\(seed)", "-o", name])
        XCTAssertEqual(r.status, 0, r.err)
    }

    /// input [T=6, N, 2]; lengths 1...6; targets: class ids [T, N] (classes > 0, for target all)
    /// or values [N, 1].
    func writeData(_ name: String, samples n: Int, classes: Int, nanSample: Int? = nil, seed: UInt64 = 2) throws {
        var rng = SplitMix64(seed: seed)
        var x = rng.uniformTensor([6, n, 2], scale: 1)
        if let s = nanSample { for t in 0..<6 { x.data[(t * n + s) * 2] = .nan } }
        let file = try H5File(creating: path(name))
        try file.root.writeDataset("input", shape: x.shape, floats: x.data)
        try file.root.writeDataset("lengths", shape: [n], int32s: (0..<n).map { Int32(6 - $0 % 6) })
        if classes > 0 {
            try file.root.writeDataset("targets", shape: [6, n], floats: (0..<(6 * n)).map { _ in Float(rng.next() % UInt64(classes)) })
        } else {
            try file.root.writeDataset("targets", shape: [n, 1], floats: (0..<n).map { _ in rng.uniform(0, 1) })
        }
        try file.close()
    }

    /// Parameters agree to 1e-5 relative (with a 1e-7 floor for values near zero).
    func assertSameParameters(_ a: String, _ b: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let x = try Checkpoint.load(from: path(a), registry: testRegistry)
        let y = try Checkpoint.load(from: path(b), registry: testRegistry)
        XCTAssertEqual(x.training?.step, y.training?.step, file: file, line: line)
        let (px, py) = (x.model.namedParameters, y.model.namedParameters)
        XCTAssertEqual(px.map(\.path), py.map(\.path), file: file, line: line)
        var moved = false
        let initial = try Checkpoint.load(from: path("m.h5"), registry: testRegistry).model.namedParameters
        for ((p, q), p0) in zip(zip(px, py), initial) {
            for i in 0..<p.value.count {
                let (u, v) = (p.value.data[i], q.value.data[i])
                XCTAssert(abs(u - v) <= 1e-5 * max(abs(u), abs(v)) + 1e-7,
                          "\(p.path)[\(i)]: \(u) vs \(v)", file: file, line: line)
                if u != p0.value.data[i] { moved = true }
            }
        }
        XCTAssert(moved, "training changed no parameter", file: file, line: line)
    }

    /// The sample MGU cell (samples/mgu), built with cc: a plugin set the other ranks lack.
    func buildSamplePlugin() throws -> String {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("samples/mgu/build.sh").path
        let r = try runProgram([path("mgu")], executable: script)
        XCTAssertEqual(r.status, 0, r.err)
        return path("mgu/libseqcell_mgu.so")
    }
}

/// Rank 0 of a pretend group of 3 whose all-gather returns rank 0's bytes for every rank, with
/// rank 2's changed when `drifted`.
final class ScriptedPeers: Communicator {
    let drifted: Bool
    init(drifted: Bool) { self.drifted = drifted }
    var rank: Int { 0 }
    var size: Int { 3 }
    func allReduceSum(_ values: inout [Float]) throws {}
    func allReduceSum(_ values: inout [Double]) throws {}
    func allGather(_ bytes: [UInt8]) throws -> [[UInt8]] {
        var other = bytes
        if drifted { other[0] ^= 1 }
        return [bytes, bytes, other]
    }
    func broadcast(_ bytes: inout [UInt8], root: Int) throws {}
    func barrier() throws {}
}

/// Ranks as threads of one process: a `Communicator` for testing the trainer's data-parallel
/// path without MPI. Each collective is a rendezvous: the last rank to arrive combines every
/// rank's contribution (in rank order) and all ranks return the result.
final class ThreadGroup: @unchecked Sendable {
    let size: Int
    private let condition = NSCondition()
    private var generation = 0
    private var arrived = 0
    private var contributions: [Any?]
    private var result: Any?

    init(size: Int) {
        self.size = size
        contributions = Array(repeating: nil, count: size)
    }

    func exchange<T>(_ rank: Int, _ value: T, _ combine: ([T]) -> T) -> T {
        condition.lock()
        defer { condition.unlock() }
        let mine = generation
        contributions[rank] = value
        arrived += 1
        if arrived == size {
            result = combine(contributions.map { $0 as! T })
            arrived = 0
            generation += 1
            condition.broadcast()
        } else {
            while generation == mine { condition.wait() }
        }
        return result as! T
    }

    /// Runs `body` on `ranks` threads, one communicator each; returns each rank's outcome.
    static func run(ranks: Int, _ body: @escaping @Sendable (ThreadRank) throws -> ([Tensor], [Double]))
        throws -> [Result<([Tensor], [Double]), any Error>] {
        let group = ThreadGroup(size: ranks)
        let lock = NSLock()
        nonisolated(unsafe) var results = [Result<([Tensor], [Double]), any Error>?](repeating: nil, count: ranks)
        let done = DispatchSemaphore(value: 0)
        for r in 0..<ranks {
            let thread = Thread {
                let outcome = Result { try body(ThreadRank(group: group, rank: r)) }
                lock.lock()
                results[r] = outcome
                lock.unlock()
                done.signal()
            }
            thread.stackSize = 8 << 20
            thread.start()
        }
        for _ in 0..<ranks {
            guard done.wait(timeout: .now() + 120) == .success else { throw SeqCellError(.io, "a thread rank did not finish") }
        }
        return lock.withLock { results.map { $0! } }
    }
}

final class ThreadRank: Communicator, @unchecked Sendable {
    let group: ThreadGroup
    let rank: Int
    var size: Int { group.size }

    init(group: ThreadGroup, rank: Int) {
        self.group = group
        self.rank = rank
    }

    func allReduceSum(_ values: inout [Float]) throws {
        values = group.exchange(rank, values) { parts in
            (0..<parts[0].count).map { i in parts.reduce(Float(0)) { $0 + $1[i] } }
        }
    }

    func allReduceSum(_ values: inout [Double]) throws {
        values = group.exchange(rank, values) { parts in
            (0..<parts[0].count).map { i in parts.reduce(0.0) { $0 + $1[i] } }
        }
    }

    func allGather(_ bytes: [UInt8]) throws -> [[UInt8]] {
        group.exchange(rank, [bytes]) { $0.flatMap { $0 } }
    }

    func broadcast(_ bytes: inout [UInt8], root: Int) throws {
        bytes = group.exchange(rank, bytes) { $0[root] }
    }

    func barrier() throws { _ = group.exchange(rank, 0) { _ in 0 } }
}

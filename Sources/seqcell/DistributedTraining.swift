import ArgumentParser
import Foundation
import SeqCell

#if canImport(Glibc)
import Glibc
#endif

/// How one `seqcell train` process takes part in training: alone, or as one rank of a job
/// started by Open MPI's `mpirun` (docs/DISTRIBUTED.md).
///
/// Failures are of two sorts. Those every rank sees alike (a bad option, a global batch the
/// ranks cannot share, ranks that disagree at the start, a NaN in the all-reduced loss or
/// gradients, replicas that drifted) are reported once, by rank 0, and every rank exits 1.
/// A failure of one rank alone once training has started (a plugin error, a full disk on rank
/// 0) is printed by that rank and ends the job through MPI_Abort; a rank that dies is noticed
/// by mpirun, which ends the others. Either way the last checkpoint written stays intact.
final class DistributedTraining {
    let communicator: any Communicator
    /// Set once the ranks have compared their start records.
    private var started = false

    var rank: Int { communicator.rank }
    var size: Int { communicator.size }

    private init(communicator: any Communicator) {
        self.communicator = communicator
    }

    /// One process, unless started by `mpirun` with more than one rank: then Open MPI is loaded
    /// and initialised, ranks other than 0 print nothing on stdout, and the host's threads are
    /// shared among the ranks on this node (unless SEQCELL_THREADS says otherwise).
    static func start() throws -> DistributedTraining {
        if let launch = MPICommunicator.launch, launch.size > 1 {
            let mpi: MPICommunicator
            do {
                mpi = try MPICommunicator.initialize()
            } catch {
                // Every rank fails alike: rank 0 says so, the others exit after it.
                guard launch.rank == 0 else { usleep(grace); throw ExitCode.failure }
                throw CLIError("started by mpirun with \(launch.size) ranks, but \(errorText(error))")
            }
            if mpi.rank != 0 {
                warningsShown = false
                let null = open("/dev/null", O_WRONLY)
                if null >= 0 { fflush(nil); dup2(null, STDOUT_FILENO); close(null) }
            }
            let env = ProcessInfo.processInfo.environment
            if env["SEQCELL_THREADS"] == nil, let local = env["OMPI_COMM_WORLD_LOCAL_SIZE"].flatMap(Int.init), local > 1 {
                HostParallelism.setThreads(max(1, HostParallelism.threads / local))
            }
            return DistributedTraining(communicator: mpi)
        }
        if let n = MPICommunicator.foreignLaunchSize, n > 1 {
            throw CLIError("started by an MPI launcher other than Open MPI's mpirun (\(n) ranks); data-parallel training needs Open MPI's mpirun (docs/DISTRIBUTED.md)")
        }
        return DistributedTraining(communicator: SingleProcessCommunicator())
    }

    /// Runs `body` (the whole training run) and ends this rank as described above.
    func run(_ body: () throws -> Void) throws {
        guard let mpi = communicator as? MPICommunicator else { return try body() }
        do {
            try body()
        } catch {
            let agreed: Bool
            if !started {
                // This rank failed before the start comparison: it still takes part in it, so
                // every rank learns of the failure and rank 0 reports it.
                do { try compareStart(nil, failure: error) } catch { try stop(mpi, agreedError: error) }
                agreed = false
            } else {
                agreed = error is CLIError || (error as? SeqCellError)?.kind == .numeric
            }
            if agreed { try stop(mpi, agreedError: error) }
            let text = "Error: rank \(rank): " + MessageText.oneLine(errorText(error), keepingWhole: userArguments) + "\n"
            fflush(nil)
            _ = Array(text.utf8).withUnsafeBytes { writeAll($0, to: STDERR_FILENO) }
            mpi.abort(code: 1)
        }
        try mpi.finalize()
    }

    /// Every rank stops for the same reason: rank 0 reports it, every rank exits 1. Rank 0
    /// writes its message before any rank exits (mpirun ends the job at the first non-zero
    /// exit), and the others leave a moment after it.
    private func stop(_ mpi: MPICommunicator, agreedError error: any Error) throws -> Never {
        if rank == 0 { Self.report(error) }
        // Should a rank have failed alone after all, the others are not at this barrier:
        // this rank then leaves after 10 s, and mpirun ends the job.
        DispatchQueue.global().asyncAfter(deadline: .now() + 10) { _exit(ExitCode.failure.rawValue) }
        try? mpi.barrier()
        try? mpi.finalize()
        if rank != 0 { usleep(Self.grace) }
        exit(ExitCode.failure.rawValue)
    }

    /// How long ranks other than 0 wait before exiting on a failure every rank saw, so that
    /// rank 0's message is out first (µs).
    static let grace: UInt32 = 500_000

    /// The CLI's one-line error, as `exitReporting` writes it.
    private static func report(_ error: any Error) {
        let text = "Error: " + MessageText.oneLine(errorText(error), keepingWhole: userArguments) + "\n"
        fflush(nil)
        _ = Array(text.utf8).withUnsafeBytes { writeAll($0, to: STDERR_FILENO) }
    }

    /// What ranks compare before training: all must run the same SeqCell with the same cells,
    /// on the same model (or resumed checkpoint) and training configuration, and the same data.
    struct Fingerprints {
        var version: UInt64
        var plugins: UInt64
        var model: UInt64
        var data: UInt64
    }

    static func fingerprints(registry: PluginRegistry, trainer: Trainer, data: UInt64) -> Fingerprints {
        var v = Fingerprint()
        v.add(SeqCellInfo.version)
        var p = Fingerprint()
        for c in registry.cellTypes.sorted(by: { $0.id < $1.id }) { p.add("\(c.id) \(c.version)") }
        var m = Fingerprint()
        var config = trainer.config
        // The same data may sit at another path on another node: its contents are compared
        // (`data`), not where it was read from.
        config.data = ""
        config.dataFiles = nil
        config.validationFiles = nil
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys  // the same text on every rank
        m.add((try? encoder.encode(config)).map { String(decoding: $0, as: UTF8.self) } ?? "")
        m.add(UInt64(trainer.step))
        for param in trainer.model.namedParameters {
            m.add(param.path)
            m.add(param.value)
        }
        for slot in trainer.optimizer.state.namedSlots.sorted(by: { $0.name < $1.name }) { m.add(slot.values) }
        return Fingerprints(version: v.digest, plugins: p.digest, model: m.digest, data: data)
    }

    /// Compares every rank's start record; throws on every rank alike when a rank failed to set
    /// up or differs from rank 0. Call once, on every rank, before the first step.
    func agree(_ mine: @autoclosure () -> Fingerprints) throws {
        try compareStart(size > 1 ? mine() : nil, failure: nil)
        startTime = Date()
    }

    private static let messageBytes = 480

    private func compareStart(_ mine: Fingerprints?, failure: (any Error)?) throws {
        started = true
        guard size > 1 else { return }
        var record = [UInt8](repeating: 0, count: 8 + 32 + Self.messageBytes)
        if let mine {
            record[0] = 1
            for (k, v) in [mine.version, mine.plugins, mine.model, mine.data].enumerated() {
                withUnsafeBytes(of: v.littleEndian) { record.replaceSubrange((8 + 8 * k)..<(16 + 8 * k), with: $0) }
            }
        } else {
            let text = Array(MessageText.oneLine(failure.map(errorText) ?? "failed", keepingWhole: userArguments).utf8.prefix(Self.messageBytes))
            record.replaceSubrange(40..<(40 + text.count), with: text)
        }
        let all = try communicator.allGather(record)
        if let bad = all.firstIndex(where: { $0[0] != 1 }) {
            let text = String(decoding: all[bad][40...].prefix { $0 != 0 }, as: UTF8.self)
            throw CLIError(bad == 0 ? text : "rank \(bad): \(text)")
        }
        let what = ["a different SeqCell version", "a different set of cells (plugins)",
                    "a different model, checkpoint or training configuration", "different training data"]
        for (k, name) in what.enumerated() {
            let field = { (r: [UInt8]) in r[(8 + 8 * k)..<(16 + 8 * k)] }
            let differing = all.indices.filter { field(all[$0]) != field(all[0]) }
            if !differing.isEmpty {
                throw CLIError("rank\(differing.count > 1 ? "s" : "") \(differing.map(String.init).joined(separator: ", ")) "
                               + "\(differing.count > 1 ? "have" : "has") \(name) than rank 0; every rank must train the same thing (docs/DISTRIBUTED.md)")
            }
        }
    }

    /// Saves the checkpoint from rank 0 only (atomically, as in one process), after checking on
    /// every rank that the replicas still agree.
    func save(_ trainer: Trainer, to path: String) throws {
        try trainer.checkReplicasAgree()
        if rank == 0 { try trainer.checkpoint.save(to: path) }
    }

    private var steps = 0
    private var communicationSeconds = 0.0
    /// When the ranks agreed to start (the first step starts then).
    private var startTime = Date()

    /// Counts a step's time in collectives.
    func record(_ stats: StepStats) {
        steps += 1
        communicationSeconds += stats.communicationSeconds
    }

    /// With more than one rank: rank 0's time in collectives per step (waiting for the slowest
    /// rank included) and its share of the steps' wall time, then the time of one all-reduce
    /// of a gradient-sized buffer alone (every rank takes part; rank 0 alone prints).
    func printSummary(_ trainer: Trainer) throws {
        guard size > 1, steps > 0 else { return }
        let wall = Date().timeIntervalSince(startTime)
        var buffer = [Float](repeating: 0, count: trainer.tree.elementCount)
        try communicator.barrier()
        let repeats = 10
        let start = Date()
        for _ in 0..<repeats { try communicator.allReduceSum(&buffer) }
        let alone = Date().timeIntervalSince(start) / Double(repeats)
        print(String(format: "data parallel: %d ranks, %.3f ms per step, %.3f ms of it in collectives (%.1f%%); "
                     + "the gradient all-reduce (%d floats) alone takes %.3f ms",
                     size, wall / Double(steps) * 1e3, communicationSeconds / Double(steps) * 1e3,
                     100 * communicationSeconds / max(wall, 1e-9), buffer.count, alone * 1e3))
    }

    /// A digest of the training data (set by `batchSource`; compared across ranks).
    private(set) var dataFingerprint: UInt64 = 0

    /// This process's batches: in one process `whole` itself; on rank r of N its share of the
    /// same global batch — of `dataset`'s samples, or of the built-in task's batch.
    func batchSource(_ whole: BatchSource, dataset: SequenceDataset?, config: TrainingConfig) throws -> BatchSource {
        guard size > 1 else { return whole }
        let (size, seed) = (config.batchSize, config.seed)
        guard let data = dataset else {
            let mine = try DataParallel.shard(globalBatch: max(size, 1), rank: rank, size: self.size)
            return BatchSource { whole.batch(step: $0).samples(mine, perStepTargets: false) }
        }
        guard data.count >= self.size else {
            throw CLIError("the training data holds \(data.count) sample\(data.count == 1 ? "" : "s"), fewer than the \(self.size) ranks: every rank needs at least one sample per batch")
        }
        // A batch larger than the data is the whole data, as in one process.
        let mine = try DataParallel.shard(globalBatch: min(max(size, 1), data.count), rank: rank, size: self.size)
        dataFingerprint = data.fingerprint
        return BatchSource { data.select(Array(data.batchIndices(size: size, seed: seed, step: $0)[mine])) }
    }

    /// Rank 0's `value` on every rank (itself in one process): for decisions every rank must
    /// take alike, such as early stopping on a validation metric.
    func rootValue(_ value: Double) throws -> Double {
        guard size > 1 else { return value }
        var bytes = withUnsafeBytes(of: value.bitPattern.littleEndian) { Array($0) }
        try communicator.broadcast(&bytes, root: 0)
        return Double(bitPattern: UInt64(littleEndian: bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }))
    }
}

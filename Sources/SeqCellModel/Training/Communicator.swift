import CSeqCellMPI
import Foundation
import SeqCellBase
import SeqCellHost

/// What data-parallel training needs from a group of processes: rank and size, an in-place
/// sum over every rank of a flat buffer, an all-gather of a few bytes, a broadcast and a
/// barrier. MPI (`MPICommunicator`) backs it today; NCCL or Gloo could back it the same way.
///
/// Every collective must be called by every rank in the same order with the same sizes; a
/// communicator reports a failure by throwing `SeqCellError(.io)`.
public protocol Communicator: AnyObject, Sendable {
    /// This process's index in 0..<size.
    var rank: Int { get }
    /// How many processes train together.
    var size: Int { get }
    /// Replaces `values` with their elementwise sum over every rank (same count on each).
    func allReduceSum(_ values: inout [Float]) throws
    /// The same, in double precision (losses, counts, diagnostics).
    func allReduceSum(_ values: inout [Double]) throws
    /// `bytes` from every rank, in rank order; every rank gives the same number of bytes.
    func allGather(_ bytes: [UInt8]) throws -> [[UInt8]]
    /// Rank `root`'s `bytes` on every rank (every rank passes a buffer of the same size).
    func broadcast(_ bytes: inout [UInt8], root: Int) throws
    /// Returns when every rank has called it.
    func barrier() throws
}

/// One process alone: every collective is the identity. The default for `Trainer`.
public final class SingleProcessCommunicator: Communicator {
    public init() {}
    public var rank: Int { 0 }
    public var size: Int { 1 }
    public func allReduceSum(_ values: inout [Float]) throws {}
    public func allReduceSum(_ values: inout [Double]) throws {}
    public func allGather(_ bytes: [UInt8]) throws -> [[UInt8]] { [bytes] }
    public func broadcast(_ bytes: inout [UInt8], root: Int) throws {}
    public func barrier() throws {}
}

/// MPI_COMM_WORLD of Open MPI, loaded at run time (Sources/CSeqCellMPI): SeqCell builds and
/// runs without MPI; only a process started by `mpirun` loads `libmpi.so.40` (or the file named
/// by SEQCELL_MPI_LIBRARY). Open MPI's ABI, not MPICH's: docs/DISTRIBUTED.md.
public final class MPICommunicator: Communicator {
    public let rank: Int
    public let size: Int

    /// The rank and size Open MPI's launcher gave this process (OMPI_COMM_WORLD_RANK and
    /// OMPI_COMM_WORLD_SIZE), or nil when it was not started by Open MPI's `mpirun`.
    public static var launch: (rank: Int, size: Int)? {
        let env = ProcessInfo.processInfo.environment
        guard let s = env["OMPI_COMM_WORLD_SIZE"].flatMap(Int.init), let r = env["OMPI_COMM_WORLD_RANK"].flatMap(Int.init),
              s >= 1, r >= 0, r < s else { return nil }
        return (r, s)
    }

    /// The size another MPI launcher (MPICH, Intel MPI: PMI_SIZE) announced, when this process
    /// was not started by Open MPI's.
    public static var foreignLaunchSize: Int? {
        let env = ProcessInfo.processInfo.environment
        guard launch == nil, let s = env["PMI_SIZE"].flatMap(Int.init) else { return nil }
        return s
    }

    private static let lock = NSLock()
    nonisolated(unsafe) private static var world: MPICommunicator?

    /// Loads Open MPI and initialises MPI (once per process); later calls return the same
    /// communicator.
    public static func initialize() throws -> MPICommunicator {
        lock.lock()
        defer { lock.unlock() }
        if let world { return world }
        let library = ProcessInfo.processInfo.environment["SEQCELL_MPI_LIBRARY"]
        try call(hint: "install Open MPI (Debian: apt-get install openmpi-bin libopenmpi-dev), or set SEQCELL_MPI_LIBRARY to its libmpi.so.40") { err, cap in
            if let library { return library.withCString { sc_mpi_load($0, err, cap) } }
            return sc_mpi_load(nil, err, cap)
        }
        var r: Int32 = 0, s: Int32 = 0
        try call { sc_mpi_init(&r, &s, $0, $1) }
        let made = MPICommunicator(rank: Int(r), size: Int(s))
        world = made
        return made
    }

    private init(rank: Int, size: Int) {
        self.rank = rank
        self.size = size
    }

    public func allReduceSum(_ values: inout [Float]) throws {
        try values.withUnsafeMutableBufferPointer { b in
            try Self.call { sc_mpi_allreduce_sum_f32(b.baseAddress, Int64(b.count), $0, $1) }
        }
    }

    public func allReduceSum(_ values: inout [Double]) throws {
        try values.withUnsafeMutableBufferPointer { b in
            try Self.call { sc_mpi_allreduce_sum_f64(b.baseAddress, Int64(b.count), $0, $1) }
        }
    }

    public func allGather(_ bytes: [UInt8]) throws -> [[UInt8]] {
        guard bytes.count <= Int(Int32.max) / max(size, 1) else {
            throw SeqCellError(.invalidArgument, "all-gather of \(bytes.count) bytes per rank is too large")
        }
        var out = [UInt8](repeating: 0, count: bytes.count * size)
        try bytes.withUnsafeBytes { send in
            try out.withUnsafeMutableBytes { recv in
                try Self.call { sc_mpi_allgather_bytes(send.baseAddress, recv.baseAddress, Int32(bytes.count), $0, $1) }
            }
        }
        return (0..<size).map { Array(out[($0 * bytes.count)..<(($0 + 1) * bytes.count)]) }
    }

    public func broadcast(_ bytes: inout [UInt8], root: Int) throws {
        guard bytes.count <= Int(Int32.max), root >= 0, root < size else {
            throw SeqCellError(.invalidArgument, "broadcast from rank \(root) of \(bytes.count) bytes is out of range")
        }
        try bytes.withUnsafeMutableBytes { b in
            try Self.call { sc_mpi_bcast_bytes(b.baseAddress, Int32(b.count), Int32(root), $0, $1) }
        }
    }

    public func barrier() throws { try Self.call { sc_mpi_barrier($0, $1) } }

    /// MPI_Finalize: call once, on every rank, when no collective is outstanding.
    public func finalize() throws { try Self.call { sc_mpi_finalize($0, $1) } }

    /// MPI_Abort: ends every rank of the job (mpirun reports it) with `code`.
    public func abort(code: Int32) -> Never {
        sc_mpi_abort(code)
        exit(code)
    }

    private static func call(hint: String? = nil, _ body: (UnsafeMutablePointer<CChar>, Int) -> Int32) throws {
        var buffer = [CChar](repeating: 0, count: 600)
        let rc = buffer.withUnsafeMutableBufferPointer { body($0.baseAddress!, $0.count) }
        guard rc == 0 else {
            let text = buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            throw SeqCellError(.io, "MPI: " + text + (hint.map { "; \($0)" } ?? ""))
        }
    }
}

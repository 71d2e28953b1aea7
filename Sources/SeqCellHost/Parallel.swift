import CSeqCellHost
import Synchronization

#if canImport(Glibc)
import Glibc
#endif
import SeqCellBase

/// The host's own parallelism: the two directions of a bidirectional layer, and the
/// row chunks of a recurrent step that plugins hand to `seqcell_host.parallel_for`.
///
/// A recurrent step is short (tens of µs) and comes T times per call, so hand-off latency
/// matters more than anything: work goes to a small pool of persistent workers that spin
/// briefly on an atomic job counter before sleeping, not to a fresh dispatch per step
/// (GCD's wake-up cost several µs per step in measurements; docs/PERFORMANCE.md).
public enum HostParallelism {
    private static let limit = Atomic<Int>(0)

    /// Threads the host may use (the caller's included); defaults to SEQCELL_THREADS or the
    /// online CPUs.
    public static var threads: Int {
        let n = limit.load(ordering: .relaxed)
        return n > 0 ? n : onlineCPUs
    }

    public static func setThreads(_ n: Int) { limit.store(max(n, 1), ordering: .relaxed) }

    /// SEQCELL_THREADS, else the online CPUs.
    static let onlineCPUs: Int = {
        if let s = getenv("SEQCELL_THREADS"), let n = Int(String(cString: s)), n > 0 { return n }
        return max(Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))), 1)
    }()

    /// Threads a `forEach` started now from this thread would use: 1 inside another
    /// `forEach` (nested parallelism runs serially), else `threads`.
    static var available: Int { insideRegion ? 1 : threads }

    /// Whether this thread is running a `forEach` body.
    static var insideRegion: Bool { pthread_getspecific(regionKey) != nil }

    static let regionKey: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()

    /// Runs `body(0)` … `body(count-1)`, concurrently when threads allow (never nested);
    /// returns when all are done.
    package static func forEach(_ count: Int, _ body: (Int) -> Void) {
        let n = available
        if count <= 1 || n <= 1 {
            for i in 0..<count { body(i) }
            return
        }
        // `b` itself goes to the pool: wrapping it in a new closure would allocate that
        // closure's context on every call (every step of a plugin's parallel_for).
        withoutActuallyEscaping(body) { b in
            if !WorkerPool.shared.run(count: count, workers: n - 1, b) {
                for i in 0..<count { b(i) }  // the pool is busy with another caller's job
            }
        }
    }
}

extension HostParallelism {
    /// `forEach` for a job the caller built once and keeps (an escaping closure stored
    /// beside the state it reads): the hand-off wraps nothing, so it allocates nothing even
    /// in an unoptimised build, which `forEach`'s conversion of a non-escaping body does not
    /// promise. Same rules: concurrent when threads allow, serial inside another region or
    /// when the pool is busy; returns when all indices are done.
    package static func runJob(_ count: Int, _ job: @escaping (Int) -> Void) {
        let n = available
        if count <= 1 || n <= 1 || !WorkerPool.shared.run(count: count, workers: n - 1, job) {
            for i in 0..<count { job(i) }
        }
    }
}

/// Persistent workers that take indices of one job at a time. The job's generation, its
/// size and the next index share one atomic word: a worker claims an index with one
/// compare-exchange and only then reads the job's body, which cannot change while any
/// claimed index is outstanding.
final class WorkerPool: @unchecked Sendable {
    static let shared = WorkerPool()

    /// generation (24 bits) << 40 | count (20 bits) << 20 | next index (20 bits)
    private let ticket = Atomic<UInt64>(0)
    private let remaining = Atomic<Int>(0)
    private let busy = Atomic<Bool>(false)
    private let started = Atomic<Int>(0)
    /// Address of the current job's body closure (valid while an index is claimed).
    private let body = Atomic<UInt>(0)
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let cond: UnsafeMutablePointer<pthread_cond_t>
    private nonisolated(unsafe) var sleepers = 0
    /// Spin iterations before a worker sleeps (roughly 50–100 µs); `SEQCELL_POOL_SPINS`
    /// sets another count (for measurements; 0: sleep at once).
    static let spins: Int = {
        if let s = getenv("SEQCELL_POOL_SPINS"), let n = Int(String(cString: s)), n >= 0 { return n }
        return 20_000
    }()
    static let maxCount = (1 << 20) - 1

    private init() {
        mutex = .allocate(capacity: 1)
        cond = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(cond, nil)
    }

    /// Runs the job with up to `workers` helpers; false (nothing run) if another job is
    /// running or the job is too large for the ticket.
    func run(count: Int, workers: Int, _ work: @escaping (Int) -> Void) -> Bool {
        guard count <= WorkerPool.maxCount,
              busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else { return false }
        defer { busy.store(false, ordering: .releasing) }
        ensureWorkers(min(workers, 63))
        // In a struct, the closure keeps its own representation: a pointer to a bare closure
        // is generic storage, and converting to and from it allocates a thunk's context in an
        // unoptimised build.
        var closure = JobBody(call: work)
        withUnsafeMutablePointer(to: &closure) { ptr in
            body.store(UInt(bitPattern: ptr), ordering: .relaxed)
            remaining.store(count, ordering: .relaxed)
            let gen = ((ticket.load(ordering: .relaxed) >> 40) &+ 1) & 0xFF_FFFF
            ticket.store(gen << 40 | UInt64(count) << 20, ordering: .releasing)
            pthread_mutex_lock(mutex)
            if sleepers > 0 { pthread_cond_broadcast(cond) }
            pthread_mutex_unlock(mutex)
            claimAndRun(generation: gen)
            while remaining.load(ordering: .acquiring) > 0 { seqcell_spin_pause() }
        }
        return true
    }

    /// Claims and runs indices of job `generation` until none are left.
    private func claimAndRun(generation: UInt64) {
        let key = HostParallelism.regionKey
        let outer = pthread_getspecific(key)
        pthread_setspecific(key, UnsafeRawPointer(bitPattern: 1))
        defer { pthread_setspecific(key, outer) }
        while true {
            let v = ticket.load(ordering: .acquiring)
            let count = (v >> 20) & 0xF_FFFF, next = v & 0xF_FFFF
            guard v >> 40 == generation, next < count else { return }
            guard ticket.compareExchange(expected: v, desired: v + 1, ordering: .acquiringAndReleasing).exchanged else {
                continue
            }
            WorkerPool.invoke(body.load(ordering: .acquiring), Int(next))
            // Only now, with every reference the call took released, may the caller go on.
            remaining.subtract(1, ordering: .releasing)
        }
    }

    /// Calls the job body at `address` (the caller's closure variable). Not inlined: the
    /// copy of the closure a call takes (and its context's retain) must be released before
    /// this returns, that is before the index is counted done, or the caller could free the
    /// context while a worker still releases it.
    @inline(never)
    private static func invoke(_ address: UInt, _ index: Int) {
        // `address` is the non-zero address of the caller's closure, alive until the call counts done.
        UnsafeMutablePointer<JobBody>(bitPattern: address)!.pointee.call(index)
    }

    /// A job's body as the caller's variable holds it.
    private struct JobBody {
        var call: (Int) -> Void
    }

    private func ensureWorkers(_ n: Int) {
        while started.load(ordering: .relaxed) < n {
            started.add(1, ordering: .relaxed)
            var tid = pthread_t()
            let me = Unmanaged.passUnretained(self).toOpaque()
            pthread_create(&tid, nil, { arg in
                Unmanaged<WorkerPool>.fromOpaque(arg!).takeUnretainedValue().workerLoop()  // arg is `me`, never NULL
                return nil
            }, me)
            pthread_detach(tid)
        }
    }

    private func workerLoop() {
        var seen = ticket.load(ordering: .acquiring) >> 40
        let limit = WorkerPool.spins
        while true {
            var spins = 0
            var gen = ticket.load(ordering: .acquiring) >> 40
            while gen == seen && spins < limit {
                seqcell_spin_pause()
                spins += 1
                gen = ticket.load(ordering: .acquiring) >> 40
            }
            if gen == seen {
                pthread_mutex_lock(mutex)
                sleepers += 1
                while ticket.load(ordering: .acquiring) >> 40 == seen { pthread_cond_wait(cond, mutex) }
                sleepers -= 1
                pthread_mutex_unlock(mutex)
                gen = ticket.load(ordering: .acquiring) >> 40
            }
            seen = gen
            claimAndRun(generation: gen)
        }
    }
}


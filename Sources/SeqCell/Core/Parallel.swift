import Dispatch
import Synchronization

/// How many threads the host's own parallelism (the two directions of a bidirectional
/// layer) may use. Defaults to the number of online CPUs; `Benchmark.setThreads` and
/// `HostParallelism.setThreads` change it for the process.
public enum HostParallelism {
    private static let limit = Atomic<Int>(0)

    /// 1 runs everything on the calling thread.
    public static var threads: Int {
        let n = limit.load(ordering: .relaxed)
        return n > 0 ? n : onlineCPUs
    }

    public static func setThreads(_ n: Int) { limit.store(max(n, 1), ordering: .relaxed) }

    static let onlineCPUs: Int = {
        #if canImport(Glibc)
        return max(Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))), 1)
        #else
        return 1
        #endif
    }()

    /// Runs `body(0)` … `body(count-1)`, concurrently when threads allow; returns when all are done.
    static func forEach(_ count: Int, _ body: (Int) -> Void) {
        if count <= 1 || threads <= 1 {
            for i in 0..<count { body(i) }
            return
        }
        withoutActuallyEscaping(body) { b in
            let box = UncheckedSendable(b)
            DispatchQueue.concurrentPerform(iterations: count) { box.value($0) }
        }
    }
}

/// Hands a value to another thread when the caller guarantees the accesses do not race.
struct UncheckedSendable<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

#if canImport(Glibc)
import Glibc
#endif

import CSeqCellHost
import Foundation

#if canImport(Glibc)
import Glibc
#endif
import SeqCellBase
import SeqCellHost

/// Running the conformance kit in a child process: what `seqcell validate-plugin` does.
///
/// The parent starts the child (the same executable, told to run the checks in-process and
/// stream them) and reads one line per event from the child's standard output: a check
/// started, a check finished. It prints each finished check's line at once, so a report cut
/// short still shows what passed. A watchdog gives every check `checkTimeout` seconds; a
/// check running longer is reported by name and the child killed. A child that ends before
/// the last check — a crash (signal), or the plugin calling `exit()` — is reported naming the
/// check it was in. The child asks the kernel to kill it when the parent dies
/// (PR_SET_PDEATHSIG), so no checker child outlives `seqcell validate-plugin`.
extension PluginConformance {
    /// Default seconds each check may run before the watchdog stops the child.
    public static let defaultCheckTimeout: Double = 60

    /// What a child-process run found.
    public struct IsolatedResult: Sendable {
        /// True when the child ran every check and every check passed.
        public let passed: Bool
        /// Every line printed (the header, one per check, the summary).
        public let lines: [String]
    }

    // MARK: - Child side

    /// The child side: makes this process die with `parentPID`, runs every check on `file`
    /// and streams events on standard output (anything the plugin itself prints to
    /// standard output goes to standard error). Returns true when every check passed.
    public static func runAsChild(file: String, parentPID: Int32) -> Bool {
        switch sc_die_with_parent(parentPID) {
        case 0: exit(3)  // the parent is already gone: nobody would read the report
        case -1: FileHandle.standardError.write(Data("seqcell: cannot arm PR_SET_PDEATHSIG; the checker may outlive its parent\n".utf8))
        default: break
        }
        // The protocol gets its own descriptor; fd 1 becomes a copy of stderr for the plugin.
        fflush(nil)  // every C stream (stdout is not concurrency-safe to name in Swift 6)
        let channel = dup(1)
        if channel >= 0 { dup2(2, 1) }
        let out = channel >= 0 ? channel : 1
        let progress = ConformanceProgress(
            started: { name in writeLine(out, "S\t" + field(name)) },
            finished: { check in
                writeLine(out, "F\t\(check.passed ? 1 : 0)\t" + field(check.qualifiedName) + "\t" + field(check.detail))
            })
        let report = validate(file: file, progress: progress)
        writeLine(out, "E\t\(report.passed ? 1 : 0)\t" + field(report.file))
        return report.passed
    }

    /// One protocol field: no tabs, no line breaks.
    private static func field(_ s: String) -> String {
        String(s.map { $0 == "\t" || $0 == "\n" || $0 == "\r" ? " " : $0 })
    }

    /// Writes a whole line with write(2), retrying on short writes.
    private static func writeLine(_ fd: Int32, _ line: String) {
        var bytes = Array((line + "\n").utf8)
        var done = 0
        while done < bytes.count {
            // `bytes` holds at least the newline, so its base address exists.
            let n = bytes.withUnsafeMutableBytes { write(fd, $0.baseAddress! + done, $0.count - done) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }
            done += n
        }
    }

    // MARK: - Parent side

    /// Runs the checks on `file` in a child process and reports as they finish.
    /// - Parameters:
    ///   - executable: the program to start (normally this one, `/proc/self/exe`)
    ///   - childArguments: its arguments, which must make it call `runAsChild(file:parentPID:)`
    ///     with this process's pid
    ///   - checkTimeout: seconds each check may take before the child is killed
    ///   - emit: receives each line of the report the moment it is known
    ///
    /// Call it from a thread that outlives the run (the main thread, as the CLI does): Linux
    /// delivers PR_SET_PDEATHSIG when the *thread* that started the child exits.
    public static func validateInChildProcess(file: String, executable: String, childArguments: [String],
                                              checkTimeout: Double = defaultCheckTimeout,
                                              emit: (String) -> Void) throws -> IsolatedResult {
        var lines: [String] = []
        func say(_ line: String) {
            lines.append(line)
            emit(line)
        }
        say("SeqCell plugin conformance: \(PluginRegistry.realPath(file))")

        let child = Process()
        child.executableURL = URL(fileURLWithPath: executable)
        child.arguments = childArguments
        // A crash is reported by check name here; the Swift runtime's multi-page backtrace of
        // the child would only bury it (SWIFT_BACKTRACE set by the user is kept).
        var environment = ProcessInfo.processInfo.environment
        if environment["SWIFT_BACKTRACE"] == nil { environment["SWIFT_BACKTRACE"] = "enable=no" }
        child.environment = environment
        let pipe = Pipe()
        child.standardOutput = pipe
        try child.run()
        try? pipe.fileHandleForWriting.close()
        let fd = pipe.fileHandleForReading.fileDescriptor

        var results: [(name: String, passed: Bool)] = []
        var current: String? = nil       // the check running now
        var lastFinished: String? = nil
        var ended = false                // the child sent its end line
        var timedOut: String? = nil
        var pending: [UInt8] = []
        var deadline = Date().addingTimeInterval(checkTimeout)
        var buffer = [UInt8](repeating: 0, count: 65536)

        func handle(_ line: String) {
            let parts = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            switch parts.first {
            case "S" where parts.count >= 2:
                current = parts[1]
                deadline = Date().addingTimeInterval(checkTimeout)
            case "F" where parts.count >= 4:
                let passed = parts[1] == "1"
                results.append((parts[2], passed))
                say("  \(passed ? "✓" : "✗") \(parts[2]): \(parts[3...].joined(separator: " "))")
                lastFinished = parts[2]
                current = nil
                deadline = Date().addingTimeInterval(checkTimeout)
            case "E":
                ended = true
            default:
                break  // not ours: ignore
            }
        }

        readLoop: while true {
            let wait = max(0, deadline.timeIntervalSinceNow)
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&pfd, 1, Int32(min(wait, 0.25) * 1000))
            if ready < 0 {
                if errno == EINTR { continue }
                break
            }
            if ready == 0 {
                // Gone without closing the pipe (a process it started may hold it): as EOF.
                if !child.isRunning { break }
                if Date() >= deadline {
                    timedOut = current ?? lastFinished.map { "after '\($0)'" } ?? "load"
                    if child.isRunning { kill(child.processIdentifier, SIGKILL) }
                    break
                }
                continue
            }
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }  // a non-empty buffer
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }  // EOF: the child is gone (or closed its output)
            pending += buffer[0..<n]
            while let nl = pending.firstIndex(of: 10) {
                handle(String(decoding: pending[..<nl], as: UTF8.self))
                pending.removeSubrange(...nl)
                if ended { break readLoop }
            }
        }
        // After the end line, or EOF without it, the child has a moment to exit (a plugin's
        // exit handler could hang too); then it is killed.
        var killedAfterEnd = false
        if timedOut == nil {
            let grace = Date().addingTimeInterval(5)
            while child.isRunning && Date() < grace { usleep(10_000) }
            if child.isRunning {
                kill(child.processIdentifier, SIGKILL)
                killedAfterEnd = ended
            }
        }
        child.waitUntilExit()

        let passedCount = results.filter(\.passed).count
        let failed = results.filter { !$0.passed }.map(\.name)
        if let name = timedOut {
            let limit = checkTimeout == checkTimeout.rounded() ? String(Int(checkTimeout)) : String(checkTimeout)
            say("  ✗ \(name): did not finish within \(limit) s; the checker killed it. A cell call must always return "
                + "(raise the limit with --check-timeout if the cell is just slow)")
            say("FAIL: '\(name)' hung (\(passedCount) of \(results.count + 1) checks passed before it)")
            return IsolatedResult(passed: false, lines: lines)
        }
        if !ended {
            let name = current ?? lastFinished.map { "after '\($0)'" } ?? "load"
            let how: String
            if child.terminationReason == .uncaughtSignal {
                let signal = child.terminationStatus
                how = "the plugin crashed the checker with signal \(signal)\(signalName(signal))"
            } else {
                how = "the plugin ended the checker process with exit status \(child.terminationStatus) (it called exit())"
            }
            say("  ✗ \(name): \(how) during this check. A cell must never crash, exit or abort on any call, "
                + "whatever its arguments: run 'seqcell validate-plugin --in-process \(file)' under gdb to see which call")
            say("FAIL: the plugin \(child.terminationReason == .uncaughtSignal ? "crashed" : "exited") during '\(name)' "
                + "(\(passedCount) of \(results.count + 1) checks passed before it)")
            return IsolatedResult(passed: false, lines: lines)
        }
        if killedAfterEnd {
            say("  ✗ exit: the checker process did not exit within 5 s after the last check (a plugin's exit "
                + "handler or thread keeps it alive); the checker killed it")
            say("FAIL: \(failed.count + 1) of \(results.count + 1) checks failed (\((failed + ["exit"]).joined(separator: ", ")))")
            return IsolatedResult(passed: false, lines: lines)
        }
        let passed = !results.isEmpty && failed.isEmpty
        say(passed
            ? "PASS: all \(results.count) checks passed"
            : "FAIL: \(failed.count) of \(results.count) checks failed (\(failed.joined(separator: ", ")))")
        return IsolatedResult(passed: passed, lines: lines)
    }

    private static func signalName(_ signal: Int32) -> String {
        switch signal {
        case SIGSEGV: return " (SIGSEGV)"
        case SIGABRT: return " (SIGABRT)"
        case SIGBUS: return " (SIGBUS)"
        case SIGFPE: return " (SIGFPE)"
        case SIGILL: return " (SIGILL)"
        case SIGKILL: return " (SIGKILL)"
        case SIGTRAP: return " (SIGTRAP)"
        default: return ""
        }
    }
}

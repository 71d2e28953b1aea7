import Foundation
import XCTest
@testable import SeqCellBase
@testable import SeqCellHost
@testable import SeqCellModel
@testable import SeqCellFormats
import SeqCellTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// `seqcell validate-plugin` against plugins that exit, abort or hang (issue 9): each is
/// reported naming the check it was in, the lines of the checks before it are printed as
/// they finish, a hung check is stopped by the watchdog, and the checker's child never
/// outlives the checker.
final class ValidatePluginTests: TemporaryDirectoryTestCase {
    /// A running `seqcell` whose standard output is read as it comes.
    final class Running {
        let process = Process()
        private let pipe = Pipe()
        private(set) var out = ""

        init(_ cli: String, _ args: [String]) throws {
            guard FileManager.default.isExecutableFile(atPath: cli) else {
                XCTFail("\(cli) not found: build the package first (swift build)")
                throw SeqCellError(.io, "no CLI")
            }
            process.executableURL = URL(fileURLWithPath: cli)
            process.arguments = args
            process.standardOutput = pipe
            process.standardError = FileHandle.nullDevice
            try process.run()
        }

        /// Reads until `text` has appeared or `seconds` passed (or the output ended); true if seen.
        @discardableResult
        func read(until text: String?, seconds: Double) -> Bool {
            let fd = pipe.fileHandleForReading.fileDescriptor
            let deadline = Date().addingTimeInterval(seconds)
            var buffer = [UInt8](repeating: 0, count: 4096)
            while text.map({ !out.contains($0) }) ?? true {
                let left = deadline.timeIntervalSinceNow
                if left <= 0 { return false }
                var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                if poll(&p, 1, Int32(min(left, 0.2) * 1000)) <= 0 { continue }
                let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress!, $0.count) }
                if n <= 0 { return text.map { out.contains($0) } ?? true }
                out += String(decoding: buffer[0..<n], as: UTF8.self)
            }
            return true
        }

        /// Reads everything and waits for the exit; fails the test past `seconds`.
        func finish(seconds: Double, file: StaticString = #filePath, line: UInt = #line) -> Int32 {
            read(until: nil, seconds: seconds)
            let deadline = Date().addingTimeInterval(5)
            while process.isRunning && Date() < deadline { usleep(10_000) }
            if process.isRunning {
                XCTFail("seqcell did not finish in time; output so far:\n\(out)", file: file, line: line)
                kill(process.processIdentifier, SIGKILL)
            }
            process.waitUntilExit()
            return process.terminationStatus
        }
    }

    /// The live (not zombie) children of `pid`.
    func liveChildren(of pid: Int32) -> [Int32] {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        return tasks.flatMap { task -> [Int32] in
            let text = (try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/children", encoding: .utf8)) ?? ""
            return text.split(separator: " ").compactMap { Int32($0) }
        }.filter(isAlive)
    }

    /// True while `pid` exists and is not a zombie.
    func isAlive(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return false }
        let state = stat[stat.index(close, offsetBy: 2)...].first
        return state != "Z" && state != "X"
    }

    func testEntryPointCallingExitIsReportedAsTheLoadCheck() throws {
        let lib = try buildFixture("misbehaves.c", defines: ["FX_ENTRY_EXITS"], in: try temporaryFolder(), as: "libseqcell_rogue.so")
        let run = try Running(cli, ["validate-plugin", lib])
        XCTAssertEqual(run.finish(seconds: 60), 1, run.out)
        XCTAssert(run.out.hasPrefix("SeqCell plugin conformance: "), run.out)
        XCTAssert(run.out.contains("  ✗ load: the plugin ended the checker process with exit status 0 (it called exit()) during this check"), run.out)
        XCTAssert(run.out.contains("FAIL: the plugin exited during 'load'"), run.out)
    }

    func testForwardCallingAbortIsReportedNamingTheCheckAfterTheChecksThatPassed() throws {
        let lib = try buildFixture("misbehaves.c", defines: ["FX_FORWARD_ABORTS"], in: try temporaryFolder(), as: "libseqcell_rogue.so")
        let run = try Running(cli, ["validate-plugin", lib])
        XCTAssertEqual(run.finish(seconds: 60), 1, run.out)
        let lines = run.out.split(separator: "\n").map(String.init)
        let passed = try XCTUnwrap(lines.firstIndex { $0.hasPrefix("  ✓ load: 1 cell (rogue 1.0.0)") }, run.out)
        let crashed = try XCTUnwrap(lines.firstIndex {
            $0.hasPrefix("  ✗ rogue: ") && $0.contains("the plugin crashed the checker with signal 6 (SIGABRT) during this check")
        }, run.out)
        XCTAssertLessThan(passed, crashed)
        XCTAssert(lines.last?.hasPrefix("FAIL: the plugin crashed during 'rogue: ") == true, run.out)
    }

    func testForwardCallingExitIsReportedNamingTheCheck() throws {
        let lib = try buildFixture("misbehaves.c", defines: ["FX_FORWARD_EXITS"], in: try temporaryFolder(), as: "libseqcell_rogue.so")
        let run = try Running(cli, ["validate-plugin", lib])
        XCTAssertEqual(run.finish(seconds: 60), 1, run.out)
        XCTAssert(run.out.contains("  ✓ load: "), run.out)
        XCTAssert(run.out.contains("  ✗ rogue: instantiate: the plugin ended the checker process with exit status 3 (it called exit()) during this check"),
                  run.out)
        XCTAssert(run.out.contains("FAIL: the plugin exited during 'rogue: instantiate'"), run.out)
    }

    func testForwardThatNeverReturnsIsStoppedByTheWatchdogAndNamed() throws {
        let lib = try buildFixture("misbehaves.c", defines: ["FX_FORWARD_LOOPS"], in: try temporaryFolder(), as: "libseqcell_rogue.so")
        let started = Date()
        let run = try Running(cli, ["validate-plugin", "--check-timeout", "1", lib])
        XCTAssertEqual(run.finish(seconds: 60), 1, run.out)
        XCTAssertLessThan(Date().timeIntervalSince(started), 30, "the watchdog stops a hung check")
        XCTAssert(run.out.contains("  ✓ load: "), run.out)
        XCTAssert(run.out.contains("  ✗ rogue: instantiate: did not finish within 1 s; the checker killed it"), run.out)
        XCTAssert(run.out.contains("FAIL: 'rogue: instantiate' hung"), run.out)
    }

    func testTheCheckerChildDiesWithItsParent() throws {
        let lib = try buildFixture("misbehaves.c", defines: ["FX_FORWARD_LOOPS"], in: try temporaryFolder(), as: "libseqcell_rogue.so")
        let run = try Running(cli, ["validate-plugin", "--check-timeout", "600", lib])
        // The load line arrives while the child spins in the next check: lines are streamed.
        XCTAssert(run.read(until: "  ✓ load: ", seconds: 60), "no streamed load line: \(run.out)")
        XCTAssert(run.process.isRunning)
        let children = liveChildren(of: run.process.processIdentifier)
        XCTAssertEqual(children.count, 1, "one checker child")
        kill(run.process.processIdentifier, SIGKILL)
        run.process.waitUntilExit()
        let deadline = Date().addingTimeInterval(10)
        while children.contains(where: isAlive) && Date() < deadline { usleep(20_000) }
        for child in children where isAlive(child) {
            XCTFail("checker child \(child) still runs after its parent was killed")
            kill(child, SIGKILL)
        }
    }

    func testCheckTimeoutMustBePositive() throws {
        let run = try Running(cli, ["validate-plugin", "--check-timeout", "0", "x.so"])
        XCTAssertNotEqual(run.finish(seconds: 30), 0)
    }
}

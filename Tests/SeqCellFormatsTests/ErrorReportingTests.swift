import Foundation
import XCTest
@testable import SeqCellBase
@testable import SeqCellHost
@testable import SeqCellModel
@testable import SeqCellFormats
import SeqCellTestSupport

/// How errors reach people (issue 9, "Errors" and "Disk full"): written whole, values from files
/// escaped and shortened, the user's paths named (never temporary files), a full disk is one
/// sentence and exit 1 (it used to segfault at exit), and temporary files of killed writes are
/// removed by the next write into their folder.
final class ErrorReportingTests: TemporaryDirectoryTestCase {
    /// Runs `executable` (the CLI unless given) in the test's directory; (exit status, stdout, stderr).
    @discardableResult
    func run(_ args: [String], executable: String? = nil) throws -> (status: Int32, out: String, err: String) {
        try runProgram(args, executable: executable)
    }

    /// Every name in `folder`, hidden ones included.
    func allNames(in folder: String) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: folder).sorted()
    }

    // MARK: Message text

    func testMessageTextEscapesControlCharactersAndShortensLongValues() {
        XCTAssertEqual(MessageText.oneLine("cell 'evil\u{1B}[31mRED\nline2\tend\u{7}'"),
                       "cell 'evil\\u{1B}[31mRED\\nline2\\tend\\u{7}'")
        XCTAssertEqual(MessageText.escaped("a\r\u{7F}\u{9B}b\u{202E}c\u{2028}"), "a\\r\\u{7F}\\u{9B}b\\u{202E}c\\u{2028}")
        XCTAssertEqual(MessageText.oneLine("plain 'text', é ü 中"), "plain 'text', é ü 中")

        let long = String(repeating: "x", count: 1 << 20)
        let shown = MessageText.oneLine("no plugin provides cell '\(long)' (found: rnn)")
        XCTAssertEqual(shown, "no plugin provides cell '\(String(repeating: "x", count: 100))… (1048576 bytes)' (found: rnn)")
        XCTAssertEqual(MessageText.oneLine(shown), shown, "shown twice, still the original's byte count")

        // Unquoted words, an unclosed quote, a letter with a million combining marks.
        let word = MessageText.oneLine("group \(long) is damaged")
        XCTAssert(word.hasPrefix("group xxxx") && word.hasSuffix("… (1048576 bytes) is damaged"), word)
        XCTAssertLessThan(MessageText.oneLine("name '\(long)").utf8.count, 200)
        let zalgo = "a" + String(repeating: "\u{301}", count: 1 << 20)
        XCTAssertLessThan(MessageText.oneLine("cell '\(zalgo)'").utf8.count, 400)
        // A value cut after its escape: control characters in the kept part are escaped.
        XCTAssertEqual(MessageText.value("\u{1B}" + long, limit: 3), "\\u{1B}xx… (1048577 bytes)")
        // Apostrophes in prose are not quotes: nothing here is a value to cut.
        let prose = "cannot tell whether 'w.h5' holds PyTorch or Keras weights: it has neither Keras' "
            + "model_config/model_weights/layers nor PyTorch's tensors named weight_ih_l0…; pass --from pytorch "
            + "(with --group NAME when the tensors are in a group)"
        XCTAssertEqual(MessageText.oneLine(prose), prose)
        // The user's own paths (the CLI's arguments) are kept whole, quoted or not.
        let userPath = "/home/someone/" + String(repeating: "deep-folder/", count: 20) + "model.h5"
        XCTAssertEqual(MessageText.oneLine("cannot open '\(userPath)': no such file", keepingWhole: [userPath]),
                       "cannot open '\(userPath)': no such file")
        XCTAssertEqual(MessageText.oneLine("searched: \(userPath), /usr/lib", keepingWhole: [userPath]),
                       "searched: \(userPath), /usr/lib")
        XCTAssert(MessageText.oneLine("cannot open '\(userPath)'").contains("… (\(userPath.utf8.count) bytes)'"))
        // Many long values still make a bounded message.
        let many = (0..<1000).map { _ in "'\(String(repeating: "y", count: 500))'" }.joined(separator: " ")
        XCTAssertLessThan(MessageText.oneLine(many).unicodeScalars.count, MessageText.messageLimit + 50)
    }

    func testSeqCellErrorDescriptionIsOneEscapedLine() {
        let e = SeqCellError(.checkpoint, "cell 'a\u{1B}]0;title\u{7}\nForged: line'")
        XCTAssertEqual(e.description, "cell 'a\\u{1B}]0;title\\u{7}\\nForged: line'")
        XCTAssert(e.message.contains("\n"), "message keeps the raw text for programs")
    }

    // MARK: The CLI's printer

    /// A checkpoint whose every `@cell` attribute is `cellID` repeated `times` times, written by
    /// h5py (a command line argument holds at most 128 KiB, so python repeats it).
    func checkpointWithCellID(_ cellID: String, times: Int = 1, name: String) throws {
        XCTAssertEqual(try run(["new", "--input-size", "3", "--layer", "lstm:4", "-o", name]).status, 0)
        _ = try runPython("""
            import h5py, sys
            with h5py.File(sys.argv[1], "r+") as f:
                def visit(name, obj):
                    if "cell" in obj.attrs:
                        obj.attrs["cell"] = sys.argv[2] * int(sys.argv[3])
                f.visititems(visit)
            """, [path(name), cellID, String(times)])
    }

    func testCellIDWithAnEscapeSequenceAndANewlineIsPrintedEscapedOnOneLine() throws {
        try checkpointWithCellID("evil\u{1B}[31mRED\nForged: ok", name: "evil.h5")
        let runR = try run(["run", "evil.h5", "--input", "x.npy", "-o", "y.h5"])
        XCTAssertEqual(runR.status, 1, runR.err)
        XCTAssertFalse(runR.err.contains("\u{1B}"), "raw escape printed: \(runR.err.debugDescription)")
        XCTAssertEqual(runR.err.filter { $0 == "\n" }.count, 1, "one line: \(runR.err.debugDescription)")
        XCTAssert(runR.err.hasPrefix("Error: ") && runR.err.contains("'evil\\u{1B}[31mRED\\nForged: ok'"),
                  runR.err.debugDescription)
        XCTAssert(runR.err.contains("evil.h5"), runR.err)
    }

    func testMegabyteCellIDIsReportedShortAndInOneWrite() throws {
        try checkpointWithCellID("x", times: 1 << 20, name: "big.h5")
        let args = ["run", "big.h5", "--input", "x.npy", "-o", "y.h5"]
        let r = try run(args)
        XCTAssertEqual(r.status, 1)
        XCTAssertLessThan(r.err.utf8.count, 1000, "the 1 MB value is shortened")
        XCTAssertEqual(r.err.filter { $0 == "\n" }.count, 1, r.err)
        XCTAssert(r.err.contains("'" + String(repeating: "x", count: 100) + "… (1048576 bytes)'"), r.err)

        // The message is one write(2) (ArgumentParser's printer made one per byte).
        guard let strace = ["/usr/bin/strace", "/bin/strace"].first(where: FileManager.default.isExecutableFile) else {
            print("testMegabyteCellIDIsReportedShortAndInOneWrite: skipped counting write() calls: strace is not installed")
            return
        }
        let log = path("strace.txt")
        let traced = try run(["-f", "-e", "trace=write", "-o", log, cli] + args, executable: strace)
        XCTAssertEqual(traced.status, 1)
        let writesToStderr = try String(contentsOfFile: log, encoding: .utf8)
            .split(separator: "\n").filter { $0.contains("write(2,") }
        XCTAssertEqual(writesToStderr.count, 1, writesToStderr.joined(separator: "\n"))
    }

    func testTheUsersLongPathsArePrintedWhole() throws {
        let folder = String(repeating: "a-long-folder-name/", count: 10)
        try FileManager.default.createDirectory(atPath: path(folder), withIntermediateDirectories: true)
        XCTAssertEqual(try run(["new", "--input-size", "3", "--layer", "rnn:2", "-o", folder + "m.h5"]).status, 0)
        let missing = folder + "missing-input.npy"
        let r = try run(["run", folder + "m.h5", "--input", missing, "-o", folder + "y.h5"])
        XCTAssertEqual(r.status, 1)
        XCTAssert(r.err.contains("'\(missing)'") || r.err.contains(path(missing)), r.err)
        XCTAssertFalse(r.err.contains(" bytes)"), r.err)
    }

    // MARK: Atomic writes

    func testAtomicWriteErrorsNameTheTargetNotTheTemporaryFile() throws {
        let target = path("m.h5")
        let error = assertThrows(HDF5Error.self, try writeHDF5Atomically(to: target) { file in
            _ = try file.root.dataset("missing")
        })
        XCTAssertEqual(error?.description, "cannot open dataset '/missing' in '\(target)': no such dataset")
        XCTAssertEqual(try allNames(in: directory.path), [], "the temporary file is removed")

        let nowhere = path("no/such/folder/m.h5")
        let missing = assertThrows(HDF5Error.self, try writeHDF5Atomically(to: nowhere) { _ in })
        XCTAssertEqual(missing?.description, "cannot write '\(nowhere)': no such file or directory")
        let bytes = assertThrows(SeqCellError.self, try writeBytesAtomically(Data([1, 2, 3]), to: nowhere))
        XCTAssertEqual(bytes?.description, "cannot write '\(nowhere)': no such file or directory")

        try writeBytesAtomically(Data([1, 2, 3]), to: target)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: target)), Data([1, 2, 3]))
        XCTAssertEqual(try allNames(in: directory.path), ["m.h5"])
    }

    func testTemporaryNamesCarryThePidAndThisHostsTag() throws {
        let name = AtomicTarget(path("out.h5")).newTemporaryPath()
        let file = (name as NSString).lastPathComponent
        XCTAssert(file.hasPrefix(".out.h5.tmp-\(getpid())-" + AtomicTarget.hostTag), file)
        let parsed = try XCTUnwrap(AtomicTarget.parseTemporaryName(file))
        XCTAssertEqual(parsed.pid, getpid())
        XCTAssertEqual(parsed.tag.count, 16)
        for other in ["out.h5.tmp-12-0123456789abcdef", ".tmp-12-0123456789abcdef", ".out.h5.tmp-x-0123456789abcdef",
                      ".out.h5.tmp-12-0123456789ABCDEF", ".out.h5.tmp-0-01", ".out.h5.tmp-12", ".out.h5"] {
            XCTAssertNil(AtomicTarget.parseTemporaryName(other), other)
        }
        // A very long target name still gives a temporary name the file system takes.
        let long = String(repeating: "é", count: 120) + ".h5" // 243 bytes of the 255 a name may have
        try writeBytesAtomically(Data([1]), to: path(long))
        XCTAssertEqual(try allNames(in: directory.path), [long])
    }

    /// A pid that no process has: a child that has exited and been reaped.
    func deadPid() throws -> pid_t {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/true")
        try p.run()
        p.waitUntilExit()
        XCTAssertEqual(kill(p.processIdentifier, 0), -1)
        return p.processIdentifier
    }

    func testStaleTemporaryFilesOfKilledWritesAreRemovedByTheNextWrite() throws {
        let dead = try deadPid()
        let here = AtomicTarget.hostTag
        let elsewhere = here == "00000000" ? "11111111" : "00000000"
        let stale = [
            ".m.h5.tmp-\(dead)-\(here)0badf00d",                   // killed write on this host
            ".other.weights.h5.tmp-\(dead)-\(here)00000001",       // any target name in the folder
            ".old.h5.tmp-\(dead)-\(elsewhere)00000002",            // another host's, untouched for 2 days
            ".legacy.h5.tmp-\(dead)-3fa9c",                        // an older SeqCell's name, 2 days old
        ]
        let kept = [
            ".m.h5.tmp-\(getpid())-\(here)00000003",              // a live writer (this process)
            ".m.h5.tmp-1-\(here)00000004",                         // a live writer (pid 1)
            ".fresh.h5.tmp-\(dead)-\(elsewhere)00000005",          // another host's, recent: maybe live there
            ".m.h5.tmp-\(dead)",                                   // not SeqCell's pattern
            "m.h5.tmp-\(dead)-\(here)00000006",                    // not hidden: not SeqCell's
            ".notes.txt",
        ]
        for name in stale + kept {
            try Data("partial".utf8).write(to: URL(fileURLWithPath: path(name)))
        }
        let twoDaysAgo = Date(timeIntervalSinceNow: -2 * 24 * 3600)
        for name in [stale[2], stale[3]] {
            try FileManager.default.setAttributes([.modificationDate: twoDaysAgo], ofItemAtPath: path(name))
        }
        // A folder named like a temporary file is not a file: kept.
        let folder = ".dir.h5.tmp-\(dead)-\(here)00000007"
        try FileManager.default.createDirectory(atPath: path(folder), withIntermediateDirectories: false)
        // A symbolic link named like one: kept, and so is what it points to.
        let link = ".link.h5.tmp-\(dead)-\(here)00000008"
        try FileManager.default.createSymbolicLink(atPath: path(link), withDestinationPath: path(".notes.txt"))

        let model = try Model.build(inputSize: 2, layers: [try LayerSpec(parsing: "rnn:3")], head: nil,
                                    registry: testRegistry, seed: 1, initialization: .uniform)
        try Checkpoint(model: model).save(to: path("m.h5"))

        XCTAssertEqual(try allNames(in: directory.path), (kept + [folder, link, "m.h5"]).sorted())
    }

    /// The issue's repro: a write killed midway leaves its hidden temporary file; the next write
    /// into the folder removes it.
    func testAWriteKilledMidwayLeavesATemporaryFileThatTheNextWriteRemoves() throws {
        var left: String?
        for _ in 0..<3 where left == nil {
            // About 34 MB: the temporary file lives long enough (writing, fsync) to be seen.
            let p = Process()
            p.executableURL = URL(fileURLWithPath: cli)
            p.arguments = ["new", "--input-size", "1024", "--layer", "lstm:1024", "-o", "big.h5"]
            p.currentDirectoryURL = directory
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            while p.isRunning {
                if let temporary = try allNames(in: directory.path).first(where: { $0.hasPrefix(".big.h5.tmp-") }) {
                    kill(p.processIdentifier, SIGKILL)
                    left = temporary
                    break
                }
                usleep(200)
            }
            p.waitUntilExit()
            if left == nil { try? FileManager.default.removeItem(atPath: path("big.h5")) }
        }
        guard let left else {
            throw XCTSkip("testAWriteKilledMidwayLeavesATemporaryFileThatTheNextWriteRemoves: skipped: "
                          + "the write finished three times before it could be killed")
        }
        XCTAssertEqual(try allNames(in: directory.path), [left], "the killed write left its temporary file, no big.h5")
        XCTAssertEqual(try run(["new", "--input-size", "2", "--layer", "rnn:2", "-o", "small.h5"]).status, 0)
        XCTAssertEqual(try allNames(in: directory.path), ["small.h5"])
    }

    // MARK: Disk full

    /// How the test fills the disk: a small tmpfs mounted on a folder, or a file-size limit.
    enum FullDisk {
        case tmpfs(folder: String)
        case fileSizeLimit(folder: String)

        var folder: String {
            switch self {
            case .tmpfs(let f), .fileSizeLimit(let f): return f
            }
        }

        /// The reason the CLI must give.
        var reason: String {
            switch self {
            case .tmpfs: return "no space left on device"
            case .fileSizeLimit: return "file too large"
            }
        }
    }

    /// A folder where writes past 64 KiB fail: a 64 KiB tmpfs when this process may mount one
    /// (root), otherwise a folder where the CLI runs under `ulimit -f` with SIGXFSZ ignored.
    /// SEQCELL_TEST_FULL_DISK=fsize chooses the file-size limit even as root.
    func fullDisk(_ test: String) throws -> FullDisk {
        let folder = path("full")
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: false)
        let mount = Process()
        let forced = ProcessInfo.processInfo.environment["SEQCELL_TEST_FULL_DISK"] == "fsize"
        mount.executableURL = URL(fileURLWithPath: "/bin/mount")
        mount.arguments = ["-t", "tmpfs", "-o", "size=64k", "tmpfs", folder]
        mount.standardError = FileHandle.nullDevice
        if !forced, FileManager.default.isExecutableFile(atPath: "/bin/mount"), (try? mount.run()) != nil {
            mount.waitUntilExit()
            if mount.terminationStatus == 0 {
                addTeardownBlock {
                    let umount = Process()
                    umount.executableURL = URL(fileURLWithPath: "/bin/umount")
                    umount.arguments = [folder]
                    try? umount.run()
                    umount.waitUntilExit()
                }
                return .tmpfs(folder: folder)
            }
        }
        guard FileManager.default.isExecutableFile(atPath: "/bin/sh") else {
            throw XCTSkip("\(test): skipped: cannot mount a tmpfs and there is no /bin/sh for ulimit -f")
        }
        print("\(test): no tmpfs (mount refused, or SEQCELL_TEST_FULL_DISK=fsize); using a file-size limit (RLIMIT_FSIZE) instead")
        return .fileSizeLimit(folder: folder)
    }

    /// Runs the CLI so that writing into `disk.folder` fails once a file passes 64 KiB.
    func runOnFullDisk(_ disk: FullDisk, _ args: [String]) throws -> (status: Int32, out: String, err: String) {
        switch disk {
        case .tmpfs:
            return try run(args)
        case .fileSizeLimit:
            // dash counts 512-byte blocks, bash 1024: 128 blocks is at most 128 KiB either way.
            return try run(["-c", "trap '' XFSZ; ulimit -f 128; exec \"$0\" \"$@\"", cli] + args, executable: "/bin/sh")
        }
    }

    /// The output of a write that failed on a full disk: exit 1, one sentence naming the
    /// user's path, no temporary path, no temporary file left, the previous file intact.
    func assertCleanDiskFullFailure(
        _ r: (status: Int32, out: String, err: String), disk: FullDisk, output: String, previous: Data?,
        file: StaticString = #filePath, line: UInt = #line
    ) throws {
        XCTAssertEqual(r.status, 1, "stderr: \(r.err)", file: file, line: line)
        XCTAssertEqual(r.err, "Error: cannot write '\(output)': \(disk.reason)\n", file: file, line: line)
        XCTAssertFalse(r.err.contains(".tmp-"), file: file, line: line)
        let names = try allNames(in: disk.folder)
        XCTAssertFalse(names.contains { $0.contains(".tmp-") }, "temporary file left: \(names)", file: file, line: line)
        if let previous {
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path(output))), previous,
                           "the previous \(output) changed", file: file, line: line)
        } else {
            XCTAssertFalse(names.contains((output as NSString).lastPathComponent), file: file, line: line)
        }
    }

    /// A checkpoint too big for the full disk (about 400 KB).
    func bigModel(_ name: String, inputSize: Int = 8) throws {
        let r = try run(["new", "--input-size", String(inputSize), "--layer", "lstm:64", "--layer", "lstm:64", "--head", "1",
                         "-o", name])
        XCTAssertEqual(r.status, 0, r.err)
    }

    func testNewIntoAFullDiskFailsWithOneSentenceAndKeepsThePreviousFile() throws {
        let disk = try fullDisk(#function)
        XCTAssertEqual(try run(["new", "--input-size", "8", "--layer", "rnn:2", "-o", "full/m.h5"]).status, 0)
        let previous = try Data(contentsOf: URL(fileURLWithPath: path("full/m.h5")))
        let r = try runOnFullDisk(disk, ["new", "--input-size", "8", "--layer", "lstm:64", "--layer", "lstm:64", "-o", "full/m.h5"])
        try assertCleanDiskFullFailure(r, disk: disk, output: "full/m.h5", previous: previous)
        // And without a previous file.
        let fresh = try runOnFullDisk(disk, ["new", "--input-size", "8", "--layer", "lstm:64", "--layer", "lstm:64",
                                             "-o", "full/n.h5"])
        try assertCleanDiskFullFailure(fresh, disk: disk, output: "full/n.h5", previous: nil)
    }

    func testTrainIntoAFullDiskFailsWithOneSentenceAndKeepsThePreviousFile() throws {
        let disk = try fullDisk(#function)
        try bigModel("big.h5", inputSize: 2)
        XCTAssertEqual(try run(["new", "--input-size", "8", "--layer", "rnn:2", "-o", "full/t.h5"]).status, 0)
        let previous = try Data(contentsOf: URL(fileURLWithPath: path("full/t.h5")))
        let r = try runOnFullDisk(disk, ["train", "big.h5", "--task", "adding", "--seq-len", "5", "--steps", "2",
                                         "--batch-size", "4", "-o", "full/t.h5"])
        XCTAssert(r.out.contains("step 2"), "trained before writing: \(r.out)")
        try assertCleanDiskFullFailure(r, disk: disk, output: "full/t.h5", previous: previous)
    }

    func testExportIntoAFullDiskFailsWithOneSentenceAndKeepsThePreviousFile() throws {
        let disk = try fullDisk(#function)
        try bigModel("big.h5")
        for output in ["full/e.weights.h5", "full/e.safetensors", "full/e.onnx"] {
            try Data("previous".utf8).write(to: URL(fileURLWithPath: path(output)))
            let r = try runOnFullDisk(disk, ["export", "big.h5", "-o", output])
            try assertCleanDiskFullFailure(r, disk: disk, output: output, previous: Data("previous".utf8))
            XCTAssertFalse(FileManager.default.fileExists(atPath: path("full/e.json")), "nothing written beside it")
        }
    }
}

import CSeqCell
import Dispatch
import Foundation
import Synchronization
import XCTest
@testable import SeqCellBase
@testable import SeqCellHost
@testable import SeqCellModel
@testable import SeqCellFormats
import SeqCellTestSupport

/// The registry against broken libraries built from Fixtures/plugins/*.c: each is reported
/// with its exact reason, never crashes the process, and never stops a good library.
final class RegistryTests: XCTestCase {
    /// One broken library: how to build it and what its problem must say.
    struct Broken {
        /// The library is libseqcell_<name>.so.
        let name: String
        /// The fixture source, or nil for a file of random bytes.
        let source: String?
        var defines: [String] = []
        /// Substrings the problem's reason must contain.
        let reason: [String]
    }

    static let broken: [Broken] = [
        Broken(name: "garbage", source: nil, reason: ["cannot load as a shared library"]),
        Broken(name: "no_entry", source: "no_entry.c", reason: ["not a SeqCell plugin: no 'seqcell_plugin_entry' symbol"]),
        Broken(name: "refuses_version", source: "refuses_version.c",
               reason: ["the plugin refused to load", "fixture needs SeqCell ABI 9.x, host speaks 1.\(SEQCELL_ABI_MINOR)", "[version mismatch]"]),
        Broken(name: "abi_major2", source: "abi_major2.c", reason: ["speaks SeqCell ABI 2.0; this host speaks 1.\(SEQCELL_ABI_MINOR)"]),
        Broken(name: "small_cell_descriptor", source: "small_descriptor.c",
               reason: ["cell 0: descriptor struct_size is \(cellDescriptorBytesBeforeBackward), "
                        + "smaller than its ABI 1.0 size 96"]),
        Broken(name: "small_plugin_descriptor", source: "small_descriptor.c", defines: ["FX_SMALL_PLUGIN"],
               reason: ["plugin descriptor struct_size is 8, smaller than its ABI 1.0 size 32"]),
        Broken(name: "no_backward", source: "no_backward.c",
               reason: ["cell 'nobackward': required functions missing: backward"]),
        Broken(name: "bad_id", source: "bad_id.c", reason: ["cell 0: id 'LSTM!' must match [a-z][a-z0-9_]*"]),
        Broken(name: "zero_sized_param", source: "bad_layout.c", defines: ["FX_ZERO_SIZED"],
               reason: ["cell 'badlayout': invalid layout: parameter 'bias' has shape [0]"]),
        Broken(name: "duplicate_param", source: "bad_layout.c",
               reason: ["cell 'badlayout': invalid layout: parameter 'weight' declared twice"]),
        Broken(name: "long_id", source: "bad_strings.c", reason: ["cell 0: id is not NUL-terminated within 256 bytes"]),
        Broken(name: "null_option_name", source: "bad_strings.c", defines: ["FX_NULL_OPTION_NAME"],
               reason: ["cell 'strings': option 0 has no name (NULL)"]),
        Broken(name: "many_options", source: "bad_strings.c", defines: ["FX_MANY_OPTIONS"],
               reason: ["cell 'strings': bad option table (num_options 1073741824; 0...64 allowed)"]),
        Broken(name: "null_state_name", source: "bad_strings.c", defines: ["FX_NULL_STATE_NAME"],
               reason: ["cell 'strings': invalid layout: state 0 has no name (NULL)"]),
        Broken(name: "huge_param", source: "huge_sizes.c", defines: ["FX_HUGE_PARAM"],
               reason: ["cell 'huge': invalid layout: parameter 'weight' has shape [4611686018427387904, 4611686018427387904]"]),
        Broken(name: "huge_workspace", source: "huge_sizes.c", defines: ["FX_HUGE_WORKSPACE"],
               reason: ["cell 'huge': workspace_size(T=1, B=1, training) asks for 18446744073709551615 bytes"]),
        Broken(name: "mixed_descriptor_sizes", source: "future_minor.c", defines: ["FX_MIXED_SIZES"],
               reason: ["every element of an array must declare the same size"]),
    ]

    /// Builds `b` into `folder` and returns its path.
    func build(_ b: Broken, in folder: String) throws -> String {
        let name = "libseqcell_\(b.name).so"
        guard let source = b.source else {
            var rng = SplitMix64(seed: 1)
            let bytes = (0..<4096).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            let path = folder + "/" + name
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            return path
        }
        return try buildFixture(source, defines: b.defines, in: folder, as: name)
    }

    /// Loads `b` alone, checks its problem, then loads its folder, which holds a good MGU.
    func assertReported(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let b = try XCTUnwrap(Self.broken.first { $0.name == name })
        let folder = try temporaryFolder()
        let path = try build(b, in: folder)
        try buildMGU(in: folder)
        let registry = PluginRegistry()
        let problems = registry.load(path: path)
        XCTAssertEqual(problems.count, 1, "\(problems)", file: file, line: line)
        XCTAssertEqual(registry.problems, problems, file: file, line: line)
        XCTAssertEqual(problems.first?.path, PluginRegistry.realPath(path), file: file, line: line)
        for s in b.reason {
            XCTAssert(problems.first?.reason.contains(s) == true, "'\(problems.first?.reason ?? "no problem")' lacks '\(s)'",
                      file: file, line: line)
        }
        XCTAssert(registry.cellTypes.isEmpty, "\(registry.cellTypes)", file: file, line: line)
        XCTAssertEqual(registry.load(path: folder), [], "the broken file is not retried", file: file, line: line)
        XCTAssertEqual(try registry.cellType("mgu").id, "mgu", file: file, line: line)
    }

    func testNotASharedObject() throws { try assertReported("garbage") }
    func testNoEntrySymbol() throws { try assertReported("no_entry") }
    func testEntryRefusesVersion() throws { try assertReported("refuses_version") }
    func testPluginClaimsABIMajor2() throws { try assertReported("abi_major2") }
    func testCellDescriptorTooSmall() throws { try assertReported("small_cell_descriptor") }
    func testPluginDescriptorTooSmall() throws { try assertReported("small_plugin_descriptor") }
    func testCellWithoutBackward() throws { try assertReported("no_backward") }
    func testInvalidCellID() throws { try assertReported("bad_id") }
    func testZeroSizedParameter() throws { try assertReported("zero_sized_param") }
    func testDuplicateParameterName() throws { try assertReported("duplicate_param") }
    func testCellIDNotTerminatedWithinItsBound() throws { try assertReported("long_id") }
    func testOptionWithoutAName() throws { try assertReported("null_option_name") }
    func testAbsurdOptionCount() throws { try assertReported("many_options") }
    func testStateWithoutAName() throws { try assertReported("null_state_name") }

    func testOneBrokenLibraryDoesNotStopTheOthers() throws {
        let folder = try temporaryFolder()
        var paths: [String: Broken] = [:]
        for b in Self.broken { paths[PluginRegistry.realPath(try build(b, in: folder))] = b }
        try buildMGU(in: folder)
        let registry = PluginRegistry()
        let problems = registry.load(path: folder)
        XCTAssertEqual(registry.cellTypes.map(\.id), ["mgu"])
        XCTAssertEqual(Set(problems.map(\.path)), Set(paths.keys), "one problem per broken library")
        XCTAssertEqual(problems.count, Self.broken.count)
        for p in problems {
            let b = try XCTUnwrap(paths[p.path])
            for s in b.reason { XCTAssert(p.reason.contains(s), "\(b.name): '\(p.reason)' lacks '\(s)'") }
        }
    }

    func testFolderScanLoadsOnlySeqCellLibraries() throws {
        let folder = try temporaryFolder()
        try buildMGU(in: folder)
        // Valid plugins and junk under other names: a folder scan must not even open them.
        try buildFixture("dup.c", in: folder, as: "libother_dup.so")
        try buildFixture("dup.c", in: folder, as: "libseqcell_dup.so.1")
        try buildFixture("dup.c", in: folder, as: "seqcell_dup.so")
        try Data(repeating: 0x42, count: 100).write(to: URL(fileURLWithPath: folder + "/libseqcell_junk.txt"))
        let registry = PluginRegistry()
        XCTAssertEqual(registry.load(path: folder), [])
        XCTAssertEqual(registry.cellTypes.map(\.id), ["mgu"])
        XCTAssertEqual(registry.problems, [])
        // Given by path, a library loads whatever its name.
        XCTAssertEqual(registry.load(path: folder + "/libother_dup.so"), [])
        XCTAssertEqual(registry.cellTypes.map(\.id), ["mgu", "dup"])
    }

    func testFirstLibraryProvidingAnIDWins() throws {
        let folder = try temporaryFolder()
        let first = PluginRegistry.realPath(try buildFixture("dup.c", in: folder, as: "libseqcell_dup_a.so"))
        let second = PluginRegistry.realPath(try buildFixture("dup.c", in: folder, as: "libseqcell_dup_b.so"))
        let registry = PluginRegistry()
        let problems = registry.load(path: folder)
        XCTAssertEqual(try registry.cellType("dup").libraryPath, first)
        XCTAssertEqual(problems.count, 1, "\(problems)")
        XCTAssertEqual(problems.first?.path, second)
        let reason = problems.first?.reason ?? ""
        XCTAssert(reason.contains("cell 'dup' ignored") && reason.contains(first), reason)
    }

    func testConcurrentLookupsWhileLoading() throws {
        let folder = try temporaryFolder()
        let mgu = try buildMGU(in: folder)
        let late = try buildFixture("dup.c", in: folder, as: "libseqcell_dup.so")
        let lateBroken = try build(Self.broken[1], in: folder)
        let registry = PluginRegistry()
        _ = try registry.loadOrThrow(file: mgu)
        let failures = Mutex<[String]>([])
        let loaded = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            registry.load(path: late)
            registry.load(path: lateBroken)
            registry.load(path: folder)
            loaded.signal()
        }
        DispatchQueue.concurrentPerform(iterations: 2000) { i in
            do {
                let t = try registry.cellType("mgu")
                if t.id != "mgu" { failures.withLock { $0.append("lookup \(i) returned \(t.id)") } }
            } catch {
                failures.withLock { $0.append("lookup \(i): \(error)") }
            }
            // Present or not yet: either answer is fine, as long as nothing breaks.
            if let dup = try? registry.cellType("dup"), dup.id != "dup" {
                failures.withLock { $0.append("lookup \(i) of dup returned \(dup.id)") }
            }
            _ = registry.cellTypes
            _ = registry.problems
        }
        loaded.wait()
        XCTAssertEqual(failures.withLock { $0 }, [])
        XCTAssertEqual(try registry.cellType("dup").id, "dup")
        XCTAssertEqual(registry.cellTypes.map(\.id), ["mgu", "dup"])
        XCTAssertEqual(registry.problems.count, 1, "\(registry.problems)")
    }

    func testUnknownCellNamesTheFoldersSearched() throws {
        let withMGU = try temporaryFolder()
        let empty = try temporaryFolder()
        try buildMGU(in: withMGU)
        let registry = PluginRegistry()
        registry.load(path: withMGU)
        registry.load(path: empty)
        XCTAssertThrowsError(try registry.cellType("lstm_peephole")) { error in
            let message = "\(error)"
            for s in ["'lstm_peephole'", "found: mgu", withMGU, empty, "SEQCELL_PLUGIN_PATH"] {
                XCTAssert(message.contains(s), "'\(message)' lacks '\(s)'")
            }
        }
    }
}

/// What small_descriptor.c declares as its cell descriptor's struct_size.
private let cellDescriptorBytesBeforeBackward = MemoryLayout<seqcell_cell_desc>.offset(of: \seqcell_cell_desc.backward)!

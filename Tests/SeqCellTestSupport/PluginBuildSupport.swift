import Foundation
import XCTest
import SeqCellBase
import SeqCellHost
import SeqCellModel
import SeqCellFormats

/// The repository root, found from this file (Tests/SeqCellTestSupport/PluginBuildSupport.swift).
package let repositoryRoot = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

/// The test fixtures shared by every test target (Tests/Fixtures).
package let fixturesFolder = repositoryRoot + "/Tests/Fixtures"

/// The C sources of the broken plugins the registry and conformance tests build.
package let pluginFixtures = fixturesFolder + "/plugins"

/// The sample cell written in C.
package let mguSource = repositoryRoot + "/samples/mgu/mgu.c"

/// The sample cell the conformance and ABI tests build with defines that break it.
package let indrnnSource = repositoryRoot + "/samples/indrnn/indrnn.c"

/// A test-setup failure already reported with XCTFail; thrown to stop the test.
package struct TestSetupError: Error, CustomStringConvertible {
    package let description: String
}

/// The first executable named `name` on PATH.
package func executableOnPath(_ name: String) -> String? {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
    return path.split(separator: ":").map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
}

/// Compiles one C99 source into a shared library with `cc`, as a plugin author would
/// (-std=c99 -pedantic -Wall -Wextra -Werror, seqcell.h on the include path, -lm).
/// `defines` are macro names or NAME=VALUE pairs. Fails the test with cc's output when the
/// build fails, and says so plainly when there is no `cc`.
@discardableResult
package func compileC(source: String, defines: [String] = [], output: String,
              file: StaticString = #filePath, line: UInt = #line) throws -> String {
    guard let cc = executableOnPath("cc") else {
        let why = "no C compiler: `cc` is not on PATH; these tests build plugins from C and need one (apt install gcc)"
        XCTFail(why, file: file, line: line)
        throw TestSetupError(description: why)
    }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: cc)
    process.arguments = ["-std=c99", "-pedantic", "-O2", "-fPIC", "-shared", "-Wall", "-Wextra", "-Werror",
                         "-I\(repositoryRoot)/Sources/CSeqCell/include"]
        + defines.map { "-D\($0)" } + [source, "-o", output, "-lm"]
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let log = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        let why = "cc failed (status \(process.terminationStatus)) on \(source):\n\(log)"
        XCTFail(why, file: file, line: line)
        throw TestSetupError(description: why)
    }
    return output
}

extension XCTestCase {
    /// A fresh folder, removed when the test ends.
    package func temporaryFolder() throws -> String {
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("seqcell-test-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        return dir
    }

    /// Builds samples/mgu/mgu.c into `folder` as `name` (with optional test-only macros).
    @discardableResult
    package func buildMGU(in folder: String, name: String = "libseqcell_mgu.so", defines: [String] = [],
                  file: StaticString = #filePath, line: UInt = #line) throws -> String {
        try compileC(source: mguSource, defines: defines, output: folder + "/" + name, file: file, line: line)
    }

    /// Builds one fixture from Tests/Fixtures/plugins into `folder`.
    @discardableResult
    package func buildFixture(_ source: String, defines: [String] = [], in folder: String, as name: String,
                      file: StaticString = #filePath, line: UInt = #line) throws -> String {
        try compileC(source: pluginFixtures + "/" + source, defines: defines, output: folder + "/" + name,
                     file: file, line: line)
    }
}

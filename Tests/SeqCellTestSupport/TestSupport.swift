import Foundation
import XCTest
import SeqCellBase
import SeqCellHost
import SeqCellModel
import SeqCellFormats

/// The registry every test uses: the built plugin .so files next to the test bundle
/// (.build/<config>/), or the folders in SEQCELL_PLUGIN_PATH. Nothing links a cell.
package let testRegistry: PluginRegistry = {
    let r = PluginRegistry.standard()
    return r
}()

/// The built-in cells every cell-looping test covers. A plugin that is not found fails the
/// asking test by name: a loop over the cells never passes by checking nothing.
package func requiredBuiltInCells(file: StaticString = #filePath, line: UInt = #line) -> [String] {
    let ids = ["rnn", "lstm", "gru"]
    for id in ids where (try? testRegistry.cellType(id)) == nil {
        XCTFail("the built-in cell plugin '\(id)' was not found: build the package (swift build) before running the tests",
                file: file, line: line)
    }
    return ids
}

/// The folder holding the built products (plugins, the CLI, the test bundle).
package let buildProductsDir: String = {
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    return (exe as NSString).deletingLastPathComponent
}()

package func cellType(_ id: String, file: StaticString = #filePath, line: UInt = #line) throws -> CellType {
    do {
        return try testRegistry.cellType(id)
    } catch {
        XCTFail("cell '\(id)' not found: build the package first (swift build). \(error)", file: file, line: line)
        throw error
    }
}

/// A deterministic generator for test data (SplitMix64).
package struct TestRNG {
    package var state: UInt64
    package init(seed: UInt64) { state = seed }
    package mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [-scale, scale).
    package mutating func uniform(_ scale: Float = 1) -> Float {
        Float(Double(next() >> 11) / Double(1 << 53) * 2 - 1) * scale
    }
    package mutating func tensor(_ shape: [Int], scale: Float = 1) -> Tensor {
        Tensor(shape: shape, data: (0..<shape.reduce(1, *)).map { _ in uniform(scale) })
    }
}

package func assertClose(_ a: Tensor, _ b: Tensor, tol: Float = 1e-5, _ what: String = "",
                 file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(a.shape, b.shape, "\(what): shapes differ", file: file, line: line)
    guard a.shape == b.shape else { return }
    var worst: (Int, Float) = (0, 0)
    for i in 0..<a.count {
        let d = abs(a.data[i] - b.data[i])
        if !(d <= worst.1) { worst = (i, d) }
    }
    XCTAssert(worst.1 <= tol, "\(what): max |diff| \(worst.1) at \(worst.0) (\(a.data[worst.0]) vs \(b.data[worst.0])) > \(tol)",
              file: file, line: line)
}

/// A test case with a fresh temporary directory per test, removed in tearDown.
open class TemporaryDirectoryTestCase: XCTestCase {
    package private(set) var directory = URL(fileURLWithPath: "/nonexistent")

    override open func setUpWithError() throws {
        try super.setUpWithError()
        directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("SeqCellTests-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override open func tearDownWithError() throws {
        try FileManager.default.removeItem(at: directory)
        try super.tearDownWithError()
    }

    /// The path of `name` inside the test's directory.
    package func path(_ name: String) -> String {
        directory.appendingPathComponent(name).path
    }

    /// The built `seqcell` executable, next to the test bundle.
    package var cli: String { (buildProductsDir as NSString).appendingPathComponent("seqcell") }

    /// Runs `executable` (the CLI unless given) in `folder` (the test's directory unless given)
    /// with `environment` added to this process's; returns (exit status, stdout, stderr). Fails
    /// the test when the program is missing or died of a signal.
    @discardableResult
    package func runProgram(_ args: [String], executable: String? = nil, environment: [String: String] = [:], folder: String? = nil,
                    file: StaticString = #filePath, line: UInt = #line) throws -> (status: Int32, out: String, err: String) {
        let program = executable ?? cli
        guard FileManager.default.isExecutableFile(atPath: program) else {
            XCTFail("\(program) not found: build the package first (swift build)", file: file, line: line)
            throw SeqCellError(.io, "no executable")
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: program)
        p.arguments = args
        p.currentDirectoryURL = folder.map { URL(fileURLWithPath: $0) } ?? directory
        if !environment.isEmpty { p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationReason, .exit, "\(program) \(args) died of signal \(p.terminationStatus)", file: file, line: line)
        return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
    }

    /// The names in the test's directory, sorted.
    package func directoryContents() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
    }

    /// Runs `python3 -c script arguments...` and returns its stdout. Fails the test with an
    /// install hint when python3, h5py or numpy is missing: these interop tests never skip.
    package func runPython(_ script: String, _ arguments: [String] = [], file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let probe = try python("import h5py, numpy", [])
        guard probe.status == 0 else {
            let message = "python3 with h5py and numpy is required for the interop tests: "
                + "pip install h5py numpy (python3 said: \(probe.stderr))"
            XCTFail(message, file: file, line: line)
            throw PythonFailure(message: message)
        }
        let run = try python(script, arguments)
        guard run.status == 0 else {
            let message = "python3 script failed with status \(run.status): \(run.stderr)"
            XCTFail(message, file: file, line: line)
            throw PythonFailure(message: message)
        }
        return run.stdout
    }

    /// Decodes the JSON that a python script printed.
    package func decodePython<T: Decodable>(_ type: T.Type, _ script: String, _ arguments: [String] = []) throws -> T {
        try JSONDecoder().decode(type, from: Data(runPython(script, arguments).utf8))
    }

    private func python(_ script: String, _ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script] + arguments
        let stdout = Pipe()
        let stderr = Pipe()
        process.standardOutput = stdout
        process.standardError = stderr
        try process.run()
        let out = stdout.fileHandleForReading.readDataToEndOfFile()
        let err = stderr.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: out, as: UTF8.self), String(decoding: err, as: UTF8.self))
    }
}

package struct PythonFailure: Error, CustomStringConvertible {
    package var message: String
    package init(message: String) { self.message = message }
    package var description: String { message }
}

/// Asserts that `body` throws an error of type `E`, and returns it for further checks.
package func assertThrows<E: Error, T>(
    _ errorType: E.Type, _ body: @autoclosure () throws -> T, file: StaticString = #filePath, line: UInt = #line
) -> E? {
    do {
        _ = try body()
        XCTFail("expected \(E.self) to be thrown", file: file, line: line)
    } catch let error as E {
        return error
    } catch {
        XCTFail("expected \(E.self), got \(type(of: error)): \(error)", file: file, line: line)
    }
    return nil
}

/// Runs a program and returns its standard output; fails with its standard error.
@discardableResult
package func runProcess(_ exe: String, _ args: [String]) throws -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: exe)
    p.arguments = args
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let o = out.fileHandleForReading.readDataToEndOfFile()
    let e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    guard p.terminationStatus == 0 else {
        throw SeqCellError(.io, "\(args.prefix(2).joined(separator: " ")) failed (\(p.terminationStatus)): \(String(decoding: e, as: UTF8.self))")
    }
    return String(decoding: o, as: UTF8.self)
}

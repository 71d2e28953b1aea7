import Foundation
import XCTest

/// A test case with a fresh temporary directory per test, removed in tearDown.
class TemporaryDirectoryTestCase: XCTestCase {
    private(set) var directory = URL(fileURLWithPath: "/nonexistent")

    override func setUpWithError() throws {
        try super.setUpWithError()
        directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("SeqCellTests-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try FileManager.default.removeItem(at: directory)
        try super.tearDownWithError()
    }

    /// The path of `name` inside the test's directory.
    func path(_ name: String) -> String {
        directory.appendingPathComponent(name).path
    }

    /// The names in the test's directory, sorted.
    func directoryContents() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
    }

    /// Runs `python3 -c script arguments...` and returns its stdout. Fails the test with an
    /// install hint when python3, h5py or numpy is missing: these interop tests never skip.
    func runPython(_ script: String, _ arguments: [String] = [], file: StaticString = #filePath, line: UInt = #line) throws -> String {
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
    func decodePython<T: Decodable>(_ type: T.Type, _ script: String, _ arguments: [String] = []) throws -> T {
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

struct PythonFailure: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

/// Asserts that `body` throws an error of type `E`, and returns it for further checks.
func assertThrows<E: Error, T>(
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

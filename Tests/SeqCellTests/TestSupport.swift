import Foundation
import XCTest
@testable import SeqCell

/// The registry every test uses: the built plugin .so files next to the test bundle
/// (.build/<config>/), or the folders in SEQCELL_PLUGIN_PATH. Nothing links a cell.
let testRegistry: PluginRegistry = {
    let r = PluginRegistry.standard()
    return r
}()

/// The folder holding the built products (plugins, the CLI, the test bundle).
let buildProductsDir: String = {
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    return (exe as NSString).deletingLastPathComponent
}()

func cellType(_ id: String, file: StaticString = #filePath, line: UInt = #line) throws -> CellType {
    do {
        return try testRegistry.cellType(id)
    } catch {
        XCTFail("cell '\(id)' not found: build the package first (swift build). \(error)", file: file, line: line)
        throw error
    }
}

/// A deterministic generator for test data (SplitMix64).
struct TestRNG {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [-scale, scale).
    mutating func uniform(_ scale: Float = 1) -> Float {
        Float(Double(next() >> 11) / Double(1 << 53) * 2 - 1) * scale
    }
    mutating func tensor(_ shape: [Int], scale: Float = 1) -> Tensor {
        Tensor(shape: shape, data: (0..<shape.reduce(1, *)).map { _ in uniform(scale) })
    }
}

func assertClose(_ a: Tensor, _ b: Tensor, tol: Float = 1e-5, _ what: String = "",
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

import Foundation
import XCTest
import SeqCellBase
import SeqCellHost
import SeqCellModel
import SeqCellFormats

/// The committed interop fixtures (Fixtures/interop, made by generate.py with the real frameworks).
package let interopFixtures: URL = URL(fileURLWithPath: fixturesFolder, isDirectory: true)
    .appendingPathComponent("interop", isDirectory: true)

package func interopFixture(_ name: String) -> String { interopFixtures.appendingPathComponent(name).path }

/// One entry of Fixtures/interop/manifest.json.
package struct InteropFixture: Decodable {
    package var name: String
    package var framework: String
    package var file: String
    package var io: String
    package var flags: [String]
    package var batch_first: Bool
    package var gradients: Bool
    package var source: String

    package static func all() throws -> [InteropFixture] {
        let data = try Data(contentsOf: interopFixtures.appendingPathComponent("manifest.json"))
        return try JSONDecoder().decode([InteropFixture].self, from: data)
    }

    /// The flag's value in `flags`, e.g. value("--cell").
    package func value(_ flag: String) -> String? {
        guard let i = flags.firstIndex(of: flag), i + 1 < flags.count else { return nil }
        return flags[i + 1]
    }

    /// Imports the fixture through the Swift API with the options its flags name.
    package func importModel() throws -> ImportResult {
        let path = interopFixture(file)
        if framework == "pytorch" {
            return try PyTorchImporter.importFile(path, options: PyTorchImportOptions(
                cell: value("--cell"), activation: value("--activation"), prefix: value("--prefix"), head: value("--head"),
                headActivation: value("--head-activation").flatMap(HeadActivation.init(rawValue:)) ?? .linear,
                group: value("--group")), registry: testRegistry)
        }
        return try KerasImporter.importFile(path, options: KerasImportOptions(
            configPath: value("--keras-config").map(interopFixture)), registry: testRegistry)
    }

    /// CLI arguments for `seqcell import`, with fixture-relative files made absolute.
    package var cliFlags: [String] {
        flags.map { $0.hasSuffix(".json") ? interopFixture($0) : $0 }
    }
}

/// A float dataset of an HDF5 file as a tensor.
package func readTensor(_ path: String, _ name: String) throws -> Tensor {
    let file = try H5File(opening: path)
    let ds = try file.root.dataset(name)
    return Tensor(shape: ds.shape, data: try ds.readFloats())
}

package func hasDataset(_ path: String, _ name: String) throws -> Bool {
    try H5File(opening: path).root.isDataset(name)
}

/// Every dataset path under `group` of an HDF5 file (relative to it), sorted.
package func datasetPaths(_ path: String, under group: String) throws -> [String] {
    let file = try H5File(opening: path)
    var out: [String] = []
    func walk(_ g: H5Group, _ prefix: String) throws {
        for name in try g.memberNames() {
            if g.isDataset(name) { out.append(prefix + name) } else if g.isGroup(name) { try walk(try g.group(name), prefix + name + "/") }
        }
    }
    try walk(try file.root.group(group), "")
    return out.sorted()
}

/// max |a − b|, or nil when shapes differ.
package func maxAbsDifference(_ a: Tensor, _ b: Tensor) -> Float? {
    guard a.shape == b.shape else { return nil }
    return zip(a.data, b.data).reduce(Float(0)) { max($0, abs($1.0 - $1.1)) }
}

/// max |a − b| / max(max |b|, 1e-6): the relative error of a gradient.
package func maxRelativeDifference(_ a: Tensor, _ b: Tensor) -> Float? {
    guard let d = maxAbsDifference(a, b) else { return nil }
    let scale = b.data.reduce(Float(0)) { max($0, abs($1)) }
    return d / max(scale, 1e-6)
}

/// Runs the built `seqcell` executable.
package func runSeqCell(_ arguments: [String], file: StaticString = #filePath, line: UInt = #line) throws -> (status: Int32, stdout: String, stderr: String) {
    let cli = (buildProductsDir as NSString).appendingPathComponent("seqcell")
    guard FileManager.default.isExecutableFile(atPath: cli) else {
        XCTFail("\(cli) not found: build the package first (swift build)", file: file, line: line)
        throw PythonFailure(message: "no seqcell executable")
    }
    let p = Process()
    p.executableURL = URL(fileURLWithPath: cli)
    p.arguments = arguments
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let o = out.fileHandleForReading.readDataToEndOfFile()
    let e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
}

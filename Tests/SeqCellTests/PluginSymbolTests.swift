import Foundation
import XCTest
@testable import SeqCell

/// Every built-in plugin exports exactly one global symbol: the ABI's entry point. (The
/// linker version script Plugins/exports.map makes everything else local.)
final class PluginSymbolTests: XCTestCase {
    func testBuiltInPluginsExportOnlyTheEntryPoint() throws {
        let files = Set(testRegistry.cellTypes.filter { ["rnn", "lstm", "gru"].contains($0.id) }.map(\.libraryPath))
        XCTAssertEqual(files.count, 3, "built-in plugins missing: build the package first (swift build)")
        for file in files.sorted() {
            let out = try runProcess("/usr/bin/env", ["nm", "-D", "--defined-only", file])
            // nm prints global symbols with an upper-case type letter, local ones lower-case.
            let globals = out.split(separator: "\n").compactMap { line -> String? in
                let f = line.split(separator: " ")
                guard f.count == 3, let t = f[1].first, t.isUppercase else { return nil }
                return String(f[2])
            }
            XCTAssertEqual(globals, [SEQCELL_ENTRY_SYMBOL_NAME], "\(file) exports \(globals)")
        }
    }
}

private let SEQCELL_ENTRY_SYMBOL_NAME = "seqcell_plugin_entry"

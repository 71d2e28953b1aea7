import Foundation
import XCTest
import CSeqCellHost
@testable import SeqCellBase
@testable import SeqCellHost
@testable import SeqCellModel
@testable import SeqCellFormats
import SeqCellTestSupport

/// What the built-in plugins export, and that nothing they export can interpose on another
/// image's code or be interposed on (docs/PLUGIN_ABI.md, "Symbol visibility"). Package.swift
/// has no linker version script (an unsafe flag); instead Swift gives every symbol it exports
/// protected visibility, and the cells' C kernels are hidden by their header.
final class PluginSymbolTests: XCTestCase {
    /// The three built-in plugin files, as the registry found them.
    private func builtInFiles() -> [String] {
        let files = Set(testRegistry.cellTypes.filter { ["rnn", "lstm", "gru"].contains($0.id) }.map(\.libraryPath))
        XCTAssertEqual(files.count, 3, "built-in plugins missing: build the package first (swift build)")
        return files.sorted()
    }

    /// The entry point is exported, found in the file itself (not in something it links),
    /// and — opened RTLD_LOCAL as the registry opens it — is not visible to the rest of the
    /// process.
    func testEntryPointIsExportedFromItsOwnFileAndStaysLocal() throws {
        for file in builtInFiles() {
            guard let handle = dlopen(file, RTLD_NOW | RTLD_LOCAL) else {
                XCTFail("\(file): dlopen failed: \(String(cString: dlerror()))")
                continue
            }
            guard let entry = dlsym(handle, entrySymbol) else {
                XCTFail("\(file) does not export \(entrySymbol)")
                continue
            }
            var buffer = [CChar](repeating: 0, count: 4096)
            XCTAssertEqual(sc_file_defining(entry, &buffer, buffer.count), 1, "\(file): dladdr found no image for the entry point")
            let definer = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            XCTAssertEqual(realPath(definer), realPath(file), "\(file): its entry point is defined by \(definer)")
        }
        // The registry opened every plugin RTLD_LOCAL: no plugin's entry point (or anything
        // else of a plugin) is in the process's global scope, where it could satisfy another
        // image's references.
        XCTAssertNil(dlsym(nil, entrySymbol), "a plugin's entry point is visible process-wide (RTLD_GLOBAL?)")
    }

    /// Every defined dynamic symbol is protected (references from inside the plugin always
    /// bind to the plugin's own definition, whatever else is loaded), except the linker's
    /// section markers, which nothing references. No C symbol but the entry point is exported:
    /// the kernels' unmangled names (sck_*) stay inside the file. Swift symbols are mangled
    /// with their module's name (SeqCellPluginKit, the cell's own module).
    func testNothingExportedCanBeInterposed() throws {
        for file in builtInFiles() {
            let symbols = try exportedSymbols(file)
            XCTAssertTrue(symbols.contains { $0.name == entrySymbol }, "\(file) does not export \(entrySymbol)")
            let preemptible = symbols.filter { $0.visibility != "PROTECTED" && !linkerMarkers.contains($0.name) }
            XCTAssertEqual(preemptible.map(\.name), [], "\(file) exports symbols other images could interpose on")
            let cNames = symbols.map(\.name).filter {
                !$0.hasPrefix("$s") && $0 != entrySymbol && !linkerMarkers.contains($0)
            }
            XCTAssertEqual(cNames, [], "\(file) exports C symbols besides the entry point")
        }
    }

    /// Nothing in the test process's global scope (the host: the test bundle, which links the
    /// kernels statically, and every library loaded at start-up) defines a name a plugin
    /// exports, so even a preemptible export would have nothing to bind to.
    func testHostDefinesNoPluginSymbol() throws {
        for file in builtInFiles() {
            let clashes = try exportedSymbols(file).map(\.name)
                .filter { !linkerMarkers.contains($0) && dlsym(nil, $0) != nil }
            XCTAssertEqual(clashes, [], "\(file): the host process also defines these")
        }
    }
}

private let entrySymbol = "seqcell_plugin_entry"
/// Symbols the static linker defines in every shared object (ends of sections).
private let linkerMarkers: Set<String> = ["_edata", "_end", "__bss_start"]

private struct DynamicSymbol { var name: String; var visibility: String }

/// The defined global and weak symbols of `file`'s dynamic symbol table, from `readelf`.
private func exportedSymbols(_ file: String) throws -> [DynamicSymbol] {
    let out = try runProcess("/usr/bin/env", ["readelf", "--dyn-syms", "--wide", file])
    // "   Num:    Value          Size Type    Bind   Vis      Ndx Name"
    let symbols = out.split(separator: "\n").compactMap { line -> DynamicSymbol? in
        let f = line.split(separator: " ", omittingEmptySubsequences: true)
        guard f.count >= 8, f[0].hasSuffix(":"), f[6] != "UND", f[4] == "GLOBAL" || f[4] == "WEAK" else { return nil }
        return DynamicSymbol(name: String(f[7]), visibility: String(f[5]))
    }
    XCTAssertFalse(symbols.isEmpty, "readelf listed no symbols for \(file)")
    return symbols
}

private func realPath(_ path: String) -> String {
    URL(fileURLWithPath: path).resolvingSymlinksInPath().path
}

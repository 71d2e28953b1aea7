import CSeqCell
import CSeqCellHost
import Foundation
import Synchronization
import SeqCellBase

/// A library the registry could not use, and why.
public struct PluginProblem: Equatable, Sendable, CustomStringConvertible {
    public let path: String
    public let reason: String
    /// The library works but provides a cell id that a library found earlier already
    /// provides (say, `SEQCELL_PLUGIN_PATH` naming another build of the built-in cells): the
    /// earlier one is used, as the search order promises. Not a fault of either library.
    public let isShadowedCell: Bool

    init(path: String, reason: String, isShadowedCell: Bool = false) {
        self.path = path
        self.reason = reason
        self.isShadowedCell = isShadowedCell
    }

    public var description: String { "\(path): \(reason)" }
}

/// Finds, validates and keeps cell plugins, and hands out cell types by id.
///
/// Libraries come only from the places the user configured: files and folders given
/// through `load(path:)` (the CLI's `--path`), the folders of `SEQCELL_PLUGIN_PATH`
/// (colon-separated), and the folder of the running executable. In a folder, files named
/// `libseqcell_*.so` are loaded; a file given by path is loaded whatever its name. When two
/// libraries provide the same cell id, the one loaded first wins and the other is recorded
/// in `problems`, naming both files. Loaded libraries are never unloaded (`dlclose` is
/// unsafe for libraries holding Swift code). All methods are safe from many threads.
public final class PluginRegistry: Sendable {
    private struct State {
        var types: [String: CellType] = [:]
        var order: [String] = []
        var loadedFiles: Set<String> = []
        var problems: [PluginProblem] = []
        var searched: [String] = []
    }

    private let state = Mutex(State())

    /// An empty registry; add libraries with `load(path:)` or `loadDefaultLocations()`.
    public init() {}

    /// A registry that has searched, in order: `extraPaths`, `SEQCELL_PLUGIN_PATH`, and the
    /// executable's folder.
    public static func standard(extraPaths: [String] = []) -> PluginRegistry {
        let r = PluginRegistry()
        for p in extraPaths { r.load(path: p) }
        r.loadDefaultLocations()
        return r
    }

    /// The folders searched by default: `SEQCELL_PLUGIN_PATH` entries, then the folder of
    /// the running executable.
    public static var defaultLocations: [String] {
        var dirs: [String] = []
        if let env = ProcessInfo.processInfo.environment["SEQCELL_PLUGIN_PATH"] {
            dirs += env.split(separator: ":").map(String.init).filter { !$0.isEmpty }
        }
        if let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            dirs.append((exe as NSString).deletingLastPathComponent)
        }
        return dirs
    }

    public func loadDefaultLocations() {
        for d in Self.defaultLocations { load(path: d) }
    }

    /// Loads a plugin file, or every `libseqcell_*.so` in a folder. Problems are recorded,
    /// not thrown, so one broken library never stops the others; the returned list holds
    /// the problems this call found.
    @discardableResult
    public func load(path: String) -> [PluginProblem] {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            let p = PluginProblem(path: path, reason: "no such file or folder")
            state.withLock {
                $0.searched.append(path)
                $0.problems.append(p)
            }
            return [p]
        }
        state.withLock { $0.searched.append(path) }
        guard isDir.boolValue else { return loadFile(path) }
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted()
        return names.filter { $0.hasPrefix("libseqcell_") && $0.hasSuffix(".so") }
            .flatMap { loadFile((path as NSString).appendingPathComponent($0)) }
    }

    /// Loads one library file; throws the problem instead of recording only.
    public func loadOrThrow(file: String) throws -> [CellType] {
        let before = Set(cellTypes.map(\.id))
        let problems = load(path: file)
        if let first = problems.first {
            throw SeqCellError(.plugin, first.description)
        }
        let real = Self.realPath(file)
        return cellTypes.filter { $0.libraryPath == real && !before.contains($0.id) }
    }

    private func loadFile(_ path: String) -> [PluginProblem] {
        let real = Self.realPath(path)
        let isNew = state.withLock { $0.loadedFiles.insert(real).inserted }
        guard isNew else { return [] }
        do {
            let (types, shadowed) = try PluginLoader.load(file: real)
            var found: [PluginProblem] = shadowed.map { PluginProblem(path: real, reason: $0) }
            state.withLock { s in
                for t in types {
                    if let existing = s.types[t.id] {
                        found.append(PluginProblem(
                            path: real,
                            reason: "cell '\(t.id)' ignored: already provided by \(existing.libraryPath), which was found first",
                            isShadowedCell: true))
                    } else {
                        s.types[t.id] = t
                        s.order.append(t.id)
                    }
                }
                s.problems += found
            }
            return found
        } catch {
            let p = PluginProblem(path: real, reason: "\(error)")
            state.withLock { $0.problems.append(p) }
            return [p]
        }
    }

    package static func realPath(_ path: String) -> String {
        guard let r = realpath(path, nil) else { return path }
        defer { free(r) }
        return String(cString: r)
    }

    /// Every cell type found, in load order.
    public var cellTypes: [CellType] { state.withLock { s in s.order.compactMap { s.types[$0] } } }

    /// Libraries and cells that could not be used, with reasons.
    public var problems: [PluginProblem] { state.withLock { $0.problems } }

    /// The paths searched so far, in order.
    public var searchedPaths: [String] { state.withLock { $0.searched } }

    /// The cell type with this id; the error names the folders searched.
    public func cellType(_ id: String) throws -> CellType {
        if let t = state.withLock({ $0.types[id] }) { return t }
        let known = cellTypes.map(\.id)
        let searched = searchedPaths
        throw SeqCellError(.plugin,
            "no plugin provides cell '\(id)' (found: \(known.isEmpty ? "none" : known.joined(separator: ", ")); "
            + "searched: \(searched.isEmpty ? "nothing" : searched.joined(separator: ", ")). "
            + "Add a folder with SEQCELL_PLUGIN_PATH or --plugin-path)")
    }

    /// The cell type with this id whose version can read files written by `required`.
    public func cellType(_ id: String, satisfying required: CellVersion) throws -> CellType {
        let t = try cellType(id)
        guard t.version.satisfies(required) else {
            throw SeqCellError(.plugin,
                "cell '\(id)' here is version \(t.version) (\(t.libraryPath)); the model needs \(required.major).\(required.minor) or a later \(required.major).x")
        }
        return t
    }
}

/// dlopen, entry-point negotiation and descriptor validation for one library file.
enum PluginLoader {
    typealias Loaded = (types: [CellType], problems: [String])

    /// Each library's entry point runs once per process (seqcell.h's promise to plugins);
    /// every registry that loads the same file gets the same cell types, or the same error.
    private static let cache = Mutex<[String: Result<Loaded, SeqCellError>]>([:])

    static func load(file: String) throws -> Loaded {
        try cache.withLock { c in
            if let r = c[file] { return try r.get() }
            let r: Result<Loaded, SeqCellError>
            do {
                r = .success(try loadUncached(file: file))
            } catch let e as SeqCellError {
                r = .failure(e)
            } catch {
                r = .failure(SeqCellError(.plugin, "\(error)"))
            }
            c[file] = r
            return try r.get()
        }
    }

    private static func loadUncached(file: String) throws -> Loaded {
        guard let handle = dlopen(file, RTLD_NOW | RTLD_LOCAL) else {
            let why = dlerror().map { String(cString: $0) } ?? "unknown dlopen error"
            throw SeqCellError(.plugin, "cannot load as a shared library: \(why)")
        }
        // Never dlclose: a library holding Swift code cannot be unloaded safely.
        guard let sym = dlsym(handle, SEQCELL_ENTRY_SYMBOL) else {
            throw SeqCellError(.plugin, "not a SeqCell plugin: no '\(SEQCELL_ENTRY_SYMBOL)' symbol")
        }
        var fname = [CChar](repeating: 0, count: 4096)
        if sc_file_defining(sym, &fname, fname.count) != 0 {
            let from = PluginRegistry.realPath(fname.withUnsafeBufferPointer { buf in
                // 4096 bytes; sc_file_defining NUL-terminates within them.
                buf.baseAddress.map { String(cString: $0) } ?? ""
            })
            guard from == file else {
                throw SeqCellError(.plugin,
                    "'\(SEQCELL_ENTRY_SYMBOL)' resolves to \(from), not to this file: the library does not define it")
            }
        }
        let entry = unsafeBitCast(sym, to: seqcell_entry_fn.self)
        var plugin: UnsafePointer<seqcell_plugin>? = nil
        var error = ErrorBuffer()
        let status = error.call { entry(SEQCELL_ABI_MAJOR, SEQCELL_ABI_MINOR, HostServices.table, &plugin, $0, $1) }
        guard status == SEQCELL_OK else {
            throw SeqCellError(.plugin, "the plugin refused to load: \(error.message(status: status))")
        }
        guard let pluginPointer = plugin else { throw SeqCellError(.plugin, "the entry point returned no descriptor") }
        let p = try PluginABI.copy(seqcell_plugin.self, from: UnsafeRawPointer(pluginPointer),
                                   minimum: PluginABI.Size10.plugin, what: "plugin descriptor")
        guard p.abi_major == SEQCELL_ABI_MAJOR else {
            throw SeqCellError(.plugin, "speaks SeqCell ABI \(p.abi_major).\(p.abi_minor); this host speaks \(SEQCELL_ABI_MAJOR).\(SEQCELL_ABI_MINOR)")
        }
        guard p.num_cells >= 1, p.num_cells <= 256, let cells = p.cells else {
            throw SeqCellError(.plugin, "plugin declares \(p.num_cells) cells (1...256 allowed)\(p.cells == nil ? " and its cell table is NULL" : "")")
        }
        var types: [CellType] = []
        var problems: [String] = []
        for i in 0..<Int(p.num_cells) {
            do {
                let t = try validateCell(cells[i], index: i, file: file, abi: (p.abi_major, p.abi_minor))
                if types.contains(where: { $0.id == t.id }) {
                    problems.append("cell '\(t.id)' declared twice in this library; the first is used")
                } else {
                    types.append(t)
                }
            } catch {
                problems.append("\(error)")
            }
        }
        if types.isEmpty {
            throw SeqCellError(.plugin, problems.joined(separator: "; "))
        }
        return (types, problems)
    }

    static func validateCell(_ ptr: UnsafePointer<seqcell_cell_desc>?, index: Int, file: String,
                             abi: (UInt32, UInt32)) throws -> CellType {
        guard let ptr else { throw SeqCellError(.plugin, "cell \(index): descriptor is NULL") }
        let d = try PluginABI.copy(seqcell_cell_desc.self, from: UnsafeRawPointer(ptr),
                                   minimum: PluginABI.Size10.cellDesc, what: "cell \(index): descriptor")
        guard let idPtr = d.id else { throw SeqCellError(.plugin, "cell \(index): no id") }
        let id = try PluginABI.string(idPtr, limit: PluginABI.maxNameBytes, what: "cell \(index): id")
        guard isIdentifier(id), let first = id.utf8.first, (0x61...0x7a).contains(first) else {
            throw SeqCellError(.plugin, "cell \(index): id '\(id)' must match [a-z][a-z0-9_]*")
        }
        var missing: [String] = []
        if d.create == nil && d.create_cell == nil { missing.append("create (or create_cell)") }
        if d.destroy == nil { missing.append("destroy") }
        if d.layout == nil { missing.append("layout") }
        if d.workspace_size == nil && d.workspace_size_checked == nil {
            missing.append("workspace_size (or workspace_size_checked)")
        }
        if d.forward == nil { missing.append("forward") }
        if d.backward == nil { missing.append("backward") }
        guard missing.isEmpty else {
            throw SeqCellError(.plugin, "cell '\(id)': required functions missing: \(missing.joined(separator: ", "))")
        }
        guard d.num_options >= 0, d.num_options <= 64, d.num_options == 0 || d.options != nil else {
            throw SeqCellError(.plugin, "cell '\(id)': bad option table (num_options \(d.num_options)\(d.options == nil ? ", options NULL" : ""); 0...64 allowed)")
        }
        let optionDescs = try d.options.map {
            try PluginABI.array(seqcell_option_desc.self, from: UnsafeRawPointer($0), count: Int(d.num_options),
                                minimum: PluginABI.Size10.optionDesc, what: "cell '\(id)': option descriptor")
        } ?? []
        var options: [CellOption] = []
        for (j, o) in optionDescs.enumerated() {
            options.append(try validateOption(o, index: j, cellID: id))
        }
        guard Set(options.map(\.name)).count == options.count else {
            throw SeqCellError(.plugin, "cell '\(id)': option names are not unique")
        }
        let summary = try PluginABI.optionalString(d.description, limit: PluginABI.maxTextBytes,
                                                   what: "cell '\(id)': description")
        let type = CellType(descriptor: d, pointer: ptr, id: id, summary: summary, options: options, libraryPath: file, abiVersion: abi)
        // A sane parameter spec: the cell must configure itself for small sizes with its
        // default options and describe a valid layout whose sizes the host can allocate.
        let probe = try type.instantiate(inputSize: 3, hiddenSize: 4)
        _ = try probe.requiredWorkspace(T: 1, B: 1, training: true)
        _ = try probe.requiredWorkspace(T: 1, B: 1, training: false)
        return type
    }

    static func validateOption(_ o: seqcell_option_desc, index: Int, cellID: String) throws -> CellOption {
        guard let namePtr = o.name else {
            throw SeqCellError(.plugin, "cell '\(cellID)': option \(index) has no name (NULL)")
        }
        let name = try PluginABI.string(namePtr, limit: PluginABI.maxNameBytes, what: "cell '\(cellID)': option \(index) name")
        func bad(_ why: String) -> SeqCellError { SeqCellError(.plugin, "cell '\(cellID)': option '\(name)': \(why)") }
        guard isIdentifier(name) else { throw bad("name must match [a-z0-9_]+") }
        let description = try PluginABI.optionalString(o.description, limit: PluginABI.maxTextBytes,
                                                       what: "cell '\(cellID)': option '\(name)' description")
        let dv = o.default_value
        switch o.kind {
        case SEQCELL_OPTION_INT:
            guard o.min_value <= o.max_value, dv == dv.rounded(), dv >= o.min_value, dv <= o.max_value,
                  abs(o.min_value) < 9e15, abs(o.max_value) < 9e15 || o.max_value.isInfinite
            else { throw bad("integer bounds or default are inconsistent") }
            let hi = o.max_value.isInfinite ? Int.max : Int(o.max_value)
            return CellOption(name: name, description: description, kind: .int(min: Int(o.min_value), max: hi),
                              defaultValue: .int(Int(dv)))
        case SEQCELL_OPTION_FLOAT:
            guard o.min_value <= o.max_value, dv >= o.min_value, dv <= o.max_value, dv.isFinite else {
                throw bad("bounds or default are inconsistent")
            }
            return CellOption(name: name, description: description, kind: .float(min: o.min_value, max: o.max_value),
                              defaultValue: .float(dv))
        case SEQCELL_OPTION_CHOICE:
            guard let c = o.choices else { throw bad("a choice option needs choices") }
            let names = try PluginABI.string(c, limit: PluginABI.maxTextBytes, what: "cell '\(cellID)': option '\(name)' choices").split(separator: ",").map { String($0) }
            guard !names.isEmpty, names.allSatisfy(isIdentifier), Set(names).count == names.count else {
                throw bad("choices must be unique [a-z0-9_]+ names")
            }
            guard dv == dv.rounded(), dv >= 0, Int(dv) < names.count else { throw bad("default index out of range") }
            return CellOption(name: name, description: description, kind: .choice(names),
                              defaultValue: .choice(names[Int(dv)]))
        default:
            throw bad("unknown kind \(o.kind)")
        }
    }
}

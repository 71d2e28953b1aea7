import CSeqCell
import SeqCellBase

/// A value for one of a cell's options.
public enum OptionValue: Equatable, Hashable, Sendable, CustomStringConvertible {
    case int(Int)
    case float(Double)
    case choice(String)

    public var description: String {
        switch self {
        case .int(let v): return String(v)
        case .float(let v): return String(v)
        case .choice(let v): return v
        }
    }
}

/// One option a cell declares (seqcell.h, `seqcell_option_desc`).
public struct CellOption: Equatable, Sendable {
    public enum Kind: Equatable, Sendable {
        case int(min: Int, max: Int)
        case float(min: Double, max: Double)
        case choice([String])
    }

    public let name: String
    public let description: String
    public let kind: Kind
    public let defaultValue: OptionValue

    /// Parses a value given as text (a CLI flag, a spec, a checkpoint attribute).
    public func parse(_ text: String, cellID: String) throws -> OptionValue {
        switch kind {
        case .int:
            guard let v = Int(text) else {
                throw SeqCellError(.invalidArgument, "cell '\(cellID)': option '\(name)' takes an integer, got '\(text)'")
            }
            return try validated(.int(v), cellID: cellID)
        case .float:
            guard let v = Double(text) else {
                throw SeqCellError(.invalidArgument, "cell '\(cellID)': option '\(name)' takes a number, got '\(text)'")
            }
            return try validated(.float(v), cellID: cellID)
        case .choice:
            return try validated(.choice(text), cellID: cellID)
        }
    }

    /// Checks a value's kind and range; ints are accepted for float options.
    public func validated(_ value: OptionValue, cellID: String) throws -> OptionValue {
        switch (kind, value) {
        case (.int(let lo, let hi), .int(let v)):
            guard (lo...hi).contains(v) else {
                throw SeqCellError(.invalidArgument, "cell '\(cellID)': option '\(name)' must be in \(lo)...\(hi), got \(v)")
            }
            return value
        case (.float(let lo, let hi), .float(let v)):
            guard v.isFinite, v >= lo, v <= hi else {
                throw SeqCellError(.invalidArgument, "cell '\(cellID)': option '\(name)' must be in \(lo)...\(hi), got \(v)")
            }
            return value
        case (.float, .int(let v)):
            return try validated(.float(Double(v)), cellID: cellID)
        case (.choice(let names), .choice(let v)):
            guard names.contains(v) else {
                throw SeqCellError(.invalidArgument,
                    "cell '\(cellID)': option '\(name)' must be one of \(names.joined(separator: ", ")), got '\(v)'")
            }
            return value
        default:
            throw SeqCellError(.invalidArgument, "cell '\(cellID)': option '\(name)' cannot take \(value)")
        }
    }

    /// The number passed through the ABI (`seqcell_config.options`).
    package func abiValue(_ value: OptionValue) -> Double {
        switch (kind, value) {
        case (.choice(let names), .choice(let v)): return Double(names.firstIndex(of: v) ?? 0)
        case (_, .int(let v)): return Double(v)
        case (_, .float(let v)): return v
        default: return 0
        }
    }
}

/// A cell kind found by the registry: its descriptor and where it came from.
///
/// `@unchecked Sendable`: the descriptor it points to is immutable and lives for the life of
/// the process (libraries are never unloaded), and the ABI makes every cell call thread-safe.
public final class CellType: @unchecked Sendable, CustomStringConvertible {
    public let id: String
    public let version: CellVersion
    public let summary: String
    public let options: [CellOption]
    /// The library file the cell came from (for reports; models never refer to it).
    public let libraryPath: String
    public let abiVersion: (major: UInt32, minor: UInt32)
    /// The plugin's cell descriptor, copied into a zeroed host struct when the library was
    /// loaded (PluginABI.copy): fields an older plugin lacks read as zero/NULL.
    package let desc: seqcell_cell_desc
    /// The plugin's own descriptor, as listed in its library descriptor: what `create_cell`
    /// (ABI 1.2) is told it creates.
    let descPointer: UnsafePointer<seqcell_cell_desc>

    init(descriptor: seqcell_cell_desc, pointer: UnsafePointer<seqcell_cell_desc>, id: String, summary: String,
         options: [CellOption], libraryPath: String, abiVersion: (UInt32, UInt32)) {
        self.desc = descriptor
        self.descPointer = pointer
        self.id = id
        self.version = CellVersion(major: Int(descriptor.version_major), minor: Int(descriptor.version_minor),
                                   patch: Int(descriptor.version_patch))
        self.summary = summary
        self.options = options
        self.libraryPath = libraryPath
        self.abiVersion = abiVersion
    }

    public var description: String { "\(id) \(version) (\(libraryPath))" }

    /// The plugin's create call, raw: `create_cell` with this descriptor and its user data
    /// when the plugin has it (ABI 1.2), `create` otherwise.
    package func rawCreate(_ config: UnsafePointer<seqcell_config>?, _ instance: UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
                   _ error: UnsafeMutablePointer<CChar>?, _ capacity: Int) -> seqcell_status {
        if let createCell = desc.create_cell {
            return createCell(descPointer, desc.user_data, config, instance, error, capacity)
        }
        guard let create = desc.create else { return SEQCELL_ERR_INTERNAL }
        return create(config, instance, error, capacity)
    }

    /// The full option set for a configuration: defaults, overridden by `given`. Unknown
    /// names and bad values are errors that name the cell and the option.
    public func resolveOptions(_ given: [String: OptionValue]) throws -> [String: OptionValue] {
        for name in given.keys where !options.contains(where: { $0.name == name }) {
            let known = options.isEmpty ? "it has none" : "it has: " + options.map(\.name).joined(separator: ", ")
            throw SeqCellError(.invalidArgument, "cell '\(id)' has no option '\(name)' (\(known))")
        }
        var out: [String: OptionValue] = [:]
        for o in options {
            out[o.name] = try given[o.name].map { try o.validated($0, cellID: id) } ?? o.defaultValue
        }
        return out
    }

    /// Parses textual option values (`name=value` from the CLI or a spec).
    public func parseOptions(_ given: [String: String]) throws -> [String: OptionValue] {
        var out: [String: OptionValue] = [:]
        for (name, text) in given {
            guard let o = options.first(where: { $0.name == name }) else {
                _ = try resolveOptions([name: .int(0)])  // throws the unknown-option error
                continue
            }
            out[name] = try o.parse(text, cellID: id)
        }
        return try resolveOptions(out)
    }

    /// Configures the cell for the given sizes and options.
    public func instantiate(inputSize: Int, hiddenSize: Int, options given: [String: OptionValue] = [:]) throws -> Cell {
        guard inputSize >= 1 else {
            throw SeqCellError(.invalidArgument, "cell '\(id)': input size must be >= 1, got \(inputSize)")
        }
        guard hiddenSize >= 1 else {
            throw SeqCellError(.invalidArgument, "cell '\(id)': hidden size must be >= 1, got \(hiddenSize)")
        }
        let resolved = try resolveOptions(given)
        return try Cell(type: self, inputSize: inputSize, hiddenSize: hiddenSize, options: resolved)
    }
}

/// A cell's own semantic version. A file written with x.y.z loads with any cell x.w, w >= y.
public struct CellVersion: Comparable, Sendable, CustomStringConvertible {
    public var major: Int
    public var minor: Int
    public var patch: Int

    public init(major: Int, minor: Int, patch: Int) {
        self.major = major
        self.minor = minor
        self.patch = patch
    }

    /// Parses "1", "1.2" or "1.2.3".
    public init?(_ text: String) {
        let parsed = text.split(separator: ".", omittingEmptySubsequences: false).map { Int($0) }
        let parts = parsed.compactMap { $0 }
        guard (1...3).contains(parsed.count), parts.count == parsed.count, parts.allSatisfy({ $0 >= 0 }) else { return nil }
        major = parts[0]
        minor = parts.count > 1 ? parts[1] : 0
        patch = parts.count > 2 ? parts[2] : 0
    }

    public var description: String { "\(major).\(minor).\(patch)" }

    /// True when a cell of this version can read parameters written by `required`.
    public func satisfies(_ required: CellVersion) -> Bool {
        major == required.major && (minor, patch) >= (required.minor, required.patch)
    }

    public static func < (a: CellVersion, b: CellVersion) -> Bool {
        (a.major, a.minor, a.patch) < (b.major, b.minor, b.patch)
    }
}

import SeqCellBase
import SeqCellHost

// What a conformance run reports: one line per check, and the whole report.

/// One named check of a conformance run and what it found.
public struct ConformanceCheck: Sendable, CustomStringConvertible {
    /// The cell checked, or nil for the library-wide "load" check.
    public let cell: String?
    /// One of `PluginConformance.checkNames`.
    public let name: String
    public let passed: Bool
    /// What was verified or, on failure, the specific discrepancies found.
    public let detail: String

    /// "mgu: backward", or "load".
    public var qualifiedName: String { cell.map { "\($0): \(name)" } ?? name }

    public var description: String { "\(passed ? "✓" : "✗") \(qualifiedName): \(detail)" }
}

/// Every check `PluginConformance.validate` ran on one library file.
public struct ConformanceReport: Sendable, CustomStringConvertible {
    /// The library, as resolved by the registry.
    public let file: String
    public let checks: [ConformanceCheck]

    /// True when every check passed.
    public var passed: Bool { !checks.isEmpty && checks.allSatisfy(\.passed) }

    public var failures: [ConformanceCheck] { checks.filter { !$0.passed } }

    /// The check named `name` for `cell` (nil: the library-wide check of that name).
    public func check(_ name: String, cell: String? = nil) -> ConformanceCheck? {
        checks.first { $0.name == name && $0.cell == cell }
    }

    /// One line per check and a summary line.
    public var description: String {
        var lines = ["SeqCell plugin conformance: \(file)"]
        lines += checks.map { "  \($0)" }
        let failed = failures
        lines.append(failed.isEmpty
            ? "PASS: all \(checks.count) checks passed"
            : "FAIL: \(failed.count) of \(checks.count) checks failed (\(failed.map(\.qualifiedName).joined(separator: ", ")))")
        return lines.joined(separator: "\n")
    }
}

/// Hears of each conformance check as it starts and finishes (see `PluginConformance.validate`).
public struct ConformanceProgress: Sendable {
    public var started: @Sendable (_ qualifiedName: String) -> Void
    public var finished: @Sendable (_ check: ConformanceCheck) -> Void

    public init(started: @escaping @Sendable (String) -> Void, finished: @escaping @Sendable (ConformanceCheck) -> Void) {
        self.started = started
        self.finished = finished
    }
}

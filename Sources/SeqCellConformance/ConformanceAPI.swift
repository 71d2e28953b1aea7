import SeqCellBase
import SeqCellHost

/// The conformance kit for a cell author's own test suite.
///
/// ```swift
/// let report = ConformanceRunner().validate(library: ".build/debug/libseqcell_mycell.so")
/// XCTAssert(report.passed, "\(report)")
/// ```
///
/// `validate` runs every check `seqcell validate-plugin` runs, in this process;
/// `checkBackward` runs the exact backward check alone on a configured cell, with settings
/// of the caller's choosing (docs/PLUGIN_ABI.md, "The backward check").
public struct ConformanceRunner: Sendable {
    /// The backward check's settings for `checkBackward`.
    public var settings: GradientCheckSettings

    public init(settings: GradientCheckSettings = .standard) {
        self.settings = settings
    }

    /// Every check on one library file, loaded into `registry` (default: a fresh one).
    public func validate(library path: String, registry: PluginRegistry = PluginRegistry(),
                         progress: ConformanceProgress? = nil) -> ConformanceReport {
        PluginConformance.validate(file: path, registry: registry, progress: progress)
    }

    /// The backward check on `cell` over T steps of B samples (optionally with lengths):
    /// one result per input, parameter and initial state; each failed probe names the
    /// direction or entry, the point, the step and the tolerance.
    public func checkBackward(_ cell: Cell, T: Int = 5, B: Int = 3, lengths: [Int32]? = nil,
                              seed: UInt64 = 7) throws -> [GradientCheckResult] {
        try GradientCheck.checkCell(cell, T: T, B: B, lengths: lengths, seed: seed, settings: settings)
    }
}

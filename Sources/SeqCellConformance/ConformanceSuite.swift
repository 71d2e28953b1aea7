import CSeqCell
import Dispatch
import Foundation
import Synchronization
import SeqCellBase
import SeqCellHost

/// The plugin conformance kit: checks that a cell library keeps every promise of seqcell.h.
///
/// Loading goes through `PluginRegistry` (dlopen, entry point, ABI, descriptors, options,
/// layout). Each cell is then configured and called, both through `Cell` and, for what the
/// wrapper would refuse to pass, through the raw C function pointers. `validate` runs the
/// checks in this process, where a plugin that crashes, exits or hangs takes the caller with
/// it; `validateInChildProcess` runs them in a child process with a per-check watchdog and
/// reports such a plugin by the check it was in.
public enum PluginConformance {
    /// The checks, in the order they run: "load" once per library, the rest per cell.
    public static let checkNames = [
        "load", "instantiate", "bad config", "forward arguments", "backward arguments", "null arguments",
        "determinism", "lengths", "batch independence", "training mode", "backward", "backward accumulates",
    ]

    /// Loads `file` (one library) into `registry` and checks every cell it provides. Give the
    /// host's registry to also catch a cell id already taken by another library; the default,
    /// an empty registry, checks the file on its own. Takes well under a second per cell.
    ///
    /// `progress` hears of each check as it starts (its qualified name, "load" or
    /// "mgu: backward") and as it finishes, in order; `validateInChildProcess` streams these.
    public static func validate(file: String, registry: PluginRegistry = PluginRegistry(),
                                progress: ConformanceProgress? = nil) -> ConformanceReport {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: file, isDirectory: &isDir), isDir.boolValue {
            let check = ConformanceCheck(cell: nil, name: "load", passed: false, detail: "\(file) is a folder; give one library file")
            progress?.started("load")
            progress?.finished(check)
            return ConformanceReport(file: file, checks: [check])
        }
        // The entry point runs inside registry.load: that is part of the "load" check.
        progress?.started("load")
        registry.load(path: file)
        let real = PluginRegistry.realPath(file)
        let problems = registry.problems.filter { $0.path == real || $0.path == file }
        let types = registry.cellTypes.filter { $0.libraryPath == real }
        var checks = [loadCheck(types: types, problems: problems)]
        progress?.finished(checks[0])
        for type in types { checks += checkCell(type, progress: progress) }
        return ConformanceReport(file: real, checks: checks)
    }

    // MARK: - Running checks

    /// Sizes every check uses unless it says otherwise.
    static let I = 3, H = 4, T = 5, B = 3
    /// Unsorted, with a full-length sample and a length-1 sample.
    static let lengths: [Int32] = [2, 5, 1]

    /// The discrepancies one check found; none means it passed.
    struct Findings {
        private(set) var problems: [String] = []
        /// Prepended to every problem (the option set being checked).
        var prefix = ""

        mutating func add(_ problem: String) { problems.append(prefix + problem) }
    }

    /// Runs one check; `body` records problems and returns the detail reported on success.
    static func run(_ name: String, cell: String?, progress: ConformanceProgress? = nil,
                    _ body: (inout Findings) throws -> String) -> ConformanceCheck {
        progress?.started(cell.map { "\($0): \(name)" } ?? name)
        let check = runQuietly(name, cell: cell, body)
        progress?.finished(check)
        return check
    }

    static func runQuietly(_ name: String, cell: String?, _ body: (inout Findings) throws -> String) -> ConformanceCheck {
        var findings = Findings()
        var detail = ""
        do {
            detail = try body(&findings)
        } catch {
            findings.add("\(error)")
        }
        let problems = findings.problems
        guard !problems.isEmpty else { return ConformanceCheck(cell: cell, name: name, passed: true, detail: detail) }
        let shown = problems.prefix(4).joined(separator: "; ")
        let more = problems.count > 4 ? " (and \(problems.count - 4) more)" : ""
        return ConformanceCheck(cell: cell, name: name, passed: false, detail: shown + more)
    }

    static func loadCheck(types: [CellType], problems: [PluginProblem]) -> ConformanceCheck {
        runQuietly("load", cell: nil) { f in
            for p in problems { f.add(p.reason) }
            if types.isEmpty && problems.isEmpty { f.add("the library provides no cell") }
            let abi = types.first.map { "ABI \($0.abiVersion.major).\($0.abiVersion.minor)" } ?? ""
            return "\(types.count) cell\(types.count == 1 ? "" : "s") (\(types.map { "\($0.id) \($0.version)" }.joined(separator: ", "))), "
                + "\(abi); entry point, descriptors, options and layout are valid"
        }
    }

    /// Default options, then each other value of each choice option.
    static func optionSets(_ type: CellType) -> [[String: OptionValue]] {
        var sets: [[String: OptionValue]] = [[:]]
        for o in type.options {
            guard case .choice(let names) = o.kind else { continue }
            for n in names where OptionValue.choice(n) != o.defaultValue { sets.append([o.name: .choice(n)]) }
        }
        return sets
    }

    static func checkCell(_ type: CellType, progress: ConformanceProgress? = nil) -> [ConformanceCheck] {
        let id = type.id
        let sets = optionSets(type)
        var checks = [
            run("instantiate", cell: id, progress: progress) { try checkInstantiate(type, optionSets: sets, &$0) },
            run("bad config", cell: id, progress: progress) { checkBadConfig(type, &$0) },
        ]
        let cells: [Cell]
        do {
            cells = try sets.map { try type.instantiate(inputSize: I, hiddenSize: H, options: $0) }
        } catch {
            // Every check after "load", "instantiate" and "bad config" needs a configured cell.
            let skipped = checkNames.dropFirst(3).map {
                ConformanceCheck(cell: id, name: $0, passed: false,
                                 detail: "not run: the cell cannot be configured with I=\(I), H=\(H): \(error)")
            }
            for check in skipped {
                progress?.started(check.qualifiedName)
                progress?.finished(check)
            }
            return checks + skipped
        }
        // Argument checks do not depend on options: the default set is enough.
        checks.append(run("forward arguments", cell: id, progress: progress) { try checkForwardArguments(cells[0], &$0) })
        checks.append(run("backward arguments", cell: id, progress: progress) { try checkBackwardArguments(cells[0], &$0) })
        let perOptionSet: [(String, (Cell, inout Findings) throws -> String)] = [
            ("null arguments", checkNullArguments),
            ("determinism", checkDeterminism),
            ("lengths", checkLengths),
            ("batch independence", checkBatchIndependence),
            ("training mode", checkTrainingMode),
            ("backward", checkBackward),
            ("backward accumulates", checkAccumulation),
        ]
        for (name, body) in perOptionSet {
            checks.append(run(name, cell: id, progress: progress) { f in
                var detail = ""
                for cell in cells {
                    let label = cell.options.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", ")
                    f.prefix = cells.count > 1 ? "[\(label)] " : ""
                    do {
                        detail = try body(cell, &f)
                    } catch {
                        f.add("\(error)")
                    }
                }
                return cells.count > 1 ? detail + " (each of \(cells.count) option sets)" : detail
            })
        }
        return checks
    }

    // MARK: - Data

    /// Random inputs, parameters and initial states for one cell (uniform, seeded).
    struct Inputs {
        var x: Tensor
        var params: [Tensor]
        var h0: [Tensor]

        init(_ cell: Cell, T: Int, B: Int, seed: UInt64) {
            var rng = SplitMix64(seed: seed)
            x = rng.uniformTensor([T, B, cell.inputSize], scale: 1)
            params = cell.params.map { rng.uniformTensor($0.shape, scale: 0.5) }
            h0 = cell.states.map { rng.uniformTensor([B, $0.size], scale: 0.5) }
        }
    }

    static func forward(_ cell: Cell, _ x: Tensor, _ inputs: Inputs, h0: [Tensor?]? = nil, lengths: [Int32]?,
                        training: Bool = false) throws -> Cell.ForwardResult {
        try cell.forward(input: x, lengths: lengths, params: inputs.params, initialStates: h0 ?? inputs.h0,
                         training: training)
    }

    /// A training forward followed by backward.
    static func gradients(_ cell: Cell, _ x: Tensor, _ inputs: Inputs, lengths: [Int32]?, gradOutput: Tensor?,
                          gradFinalStates: [Tensor?], wantInput: Bool = true) throws -> Cell.Gradients {
        let fwd = try forward(cell, x, inputs, lengths: lengths, training: true)
        guard let tape = fwd.tape else { throw SeqCellError(.cell, "a training forward kept no tape") }
        return try cell.backward(tape: tape, gradOutput: gradOutput, gradFinalStates: gradFinalStates,
                                 wantInputGradient: wantInput)
    }

    /// Sample b's first `steps` rows of a [T, B, W] tensor, as [steps, 1, W].
    static func sample(_ t: Tensor, _ b: Int, steps: Int) -> Tensor {
        let (batch, w) = (t.shape[1], t.shape[2])
        var rows: [Float] = []
        for s in 0..<steps {
            let start = (s * batch + b) * w
            rows += t.data[start..<(start + w)]
        }
        return Tensor(shape: [steps, 1, w], data: rows)
    }

    /// Row b of a [B, W] tensor, as [1, W].
    static func row(_ t: Tensor, _ b: Int) -> Tensor {
        let w = t.shape[1]
        return Tensor(shape: [1, w], data: Array(t.data[(b * w)..<(b * w + w)]))
    }

    // MARK: - Comparing

    enum Match {
        case bitwise
        case equal
        /// |a - b| <= tolerance · (1 + max(|a|, |b|))
        case close(Float)

        func same(_ a: Float, _ b: Float) -> Bool {
            switch self {
            case .bitwise: return a.bitPattern == b.bitPattern
            case .equal: return a == b
            case .close(let tol): return abs(a - b) <= tol * (1 + max(abs(a), abs(b)))
            }
        }
    }

    /// The first index where `a` and `b` differ, if any.
    static func firstMismatch(_ a: [Float], _ b: [Float], _ match: Match) -> Int? {
        guard a.count == b.count else { return 0 }
        return a.indices.first { !match.same(a[$0], b[$0]) }
    }

    /// "sample 1 at t=3 [2]" for index i of a [T, B, W] tensor.
    static func place(_ i: Int, batch: Int, width: Int) -> String {
        "sample \(i / width % batch) at t=\(i / (width * batch)) [\(i % width)]"
    }

    /// Compares two forward results (output, then every final state) and records the first
    /// mismatch of each as "<what>: <place> is a vs b".
    static func compare(_ a: Cell.ForwardResult, _ b: Cell.ForwardResult, cell: Cell, _ match: Match,
                        _ what: String, _ f: inout Findings) {
        let batch = a.output.shape[1]
        if let i = firstMismatch(a.output.data, b.output.data, match) {
            f.add("\(what): output of \(place(i, batch: batch, width: cell.outputSize)) is \(a.output.data[i]) vs \(b.output.data[i])")
        }
        for (s, info) in cell.states.enumerated() {
            if let i = firstMismatch(a.finalStates[s].data, b.finalStates[s].data, match) {
                f.add("\(what): final state '\(info.name)' of sample \(i / info.size) [\(i % info.size)] is "
                    + "\(a.finalStates[s].data[i]) vs \(b.finalStates[s].data[i])")
            }
        }
    }

    /// Compares two sets of gradients tensor by tensor.
    static func compare(_ a: Cell.Gradients, _ b: Cell.Gradients, cell: Cell, _ match: Match, _ what: String,
                        _ f: inout Findings) {
        if let ga = a.input, let gb = b.input, let i = firstMismatch(ga.data, gb.data, match) {
            f.add("\(what): grad_input of \(place(i, batch: ga.shape[1], width: cell.inputSize)) is \(ga.data[i]) vs \(gb.data[i])")
        }
        for (p, info) in cell.params.enumerated() {
            if let i = firstMismatch(a.params[p].data, b.params[p].data, match) {
                f.add("\(what): gradient of '\(info.name)'[\(i)] is \(a.params[p].data[i]) vs \(b.params[p].data[i])")
            }
        }
        for (s, info) in cell.states.enumerated() {
            if let i = firstMismatch(a.initialStates[s].data, b.initialStates[s].data, match) {
                f.add("\(what): gradient of initial state '\(info.name)'[\(i)] is "
                    + "\(a.initialStates[s].data[i]) vs \(b.initialStates[s].data[i])")
            }
        }
    }

    static func allFinite(_ tensors: [Tensor]) -> Bool { tensors.allSatisfy { $0.data.allSatisfy(\.isFinite) } }
}

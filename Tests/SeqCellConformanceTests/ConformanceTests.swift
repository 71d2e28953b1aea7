import CSeqCell
import Foundation
import XCTest
@testable import SeqCellBase
@testable import SeqCellHost
@testable import SeqCellModel
@testable import SeqCellFormats
@testable import SeqCellConformance
import SeqCellTestSupport

/// The plugin conformance kit: passes on good cells, names the check a broken one fails.
final class ConformanceTests: XCTestCase {
    func testBuiltInCellsPass() throws {
        // The built-in cells the test registry uses: from the build folder, or from
        // SEQCELL_PLUGIN_PATH when the suite runs against another build (e.g. release).
        let builtIn = testRegistry.cellTypes.filter { ["rnn", "lstm", "gru"].contains($0.id) }
        XCTAssertEqual(Set(builtIn.map(\.id)), ["rnn", "lstm", "gru"],
                       "built-in cells missing: build the package first (swift build). \(testRegistry.problems)")
        for file in Set(builtIn.map(\.libraryPath)).sorted() {
            let report = PluginConformance.validate(file: file)
            XCTAssert(report.passed, "\(report)")
            XCTAssertEqual(report.checks.count, 1 + (PluginConformance.checkNames.count - 1) * Set(report.checks.compactMap(\.cell)).count)
        }
    }

    func testMGUPasses() throws {
        let file = try buildMGU(in: try temporaryFolder())
        let report = PluginConformance.validate(file: file)
        XCTAssert(report.passed, "\(report)")
        XCTAssertEqual(report.checks.map(\.qualifiedName),
                       ["load"] + PluginConformance.checkNames.dropFirst().map { "mgu: \($0)" })
        let text = report.description
        XCTAssert(text.hasPrefix("SeqCell plugin conformance: \(PluginRegistry.realPath(file))"), text)
        XCTAssert(text.contains("\n  ✓ mgu: backward: "), text)
        XCTAssert(text.hasSuffix("PASS: all \(report.checks.count) checks passed"), text)
    }

    func testWrongBackwardFailsTheBackwardCheck() throws {
        let file = try buildMGU(in: try temporaryFolder(), defines: ["SEQCELL_MGU_BROKEN_BACKWARD"])
        let report = PluginConformance.validate(file: file)
        XCTAssertFalse(report.passed)
        XCTAssertEqual(report.failures.map(\.qualifiedName), ["mgu: backward"], "\(report)")
        let backward = try XCTUnwrap(report.check("backward", cell: "mgu"))
        for s in ["without lengths, backward disagrees with central differences for ", "with lengths [2, 5, 1], ",
                  "initial state h: ", "analytic ", "step 0.002", "> tolerance "] {
            XCTAssert(backward.detail.contains(s), "'\(backward.detail)' lacks '\(s)'")
        }
        XCTAssert(report.description.contains("  ✗ mgu: backward: "), report.description)
        XCTAssert(report.description.hasSuffix("FAIL: 1 of \(report.checks.count) checks failed (mgu: backward)"),
                  report.description)
    }

    func testIgnoringLengthsFailsTheLengthsCheck() throws {
        let file = try buildMGU(in: try temporaryFolder(), defines: ["SEQCELL_MGU_IGNORE_LENGTHS"])
        let report = PluginConformance.validate(file: file)
        XCTAssertFalse(report.passed)
        XCTAssertEqual(report.failures.map(\.qualifiedName), ["mgu: lengths"], "\(report)")
        let lengths = try XCTUnwrap(report.check("lengths", cell: "mgu"))
        XCTAssert(lengths.detail.contains("sample 0 output at t=2 [0] is "), lengths.detail)
        XCTAssert(lengths.detail.contains("expected 0 (padded step, length 2)"), lengths.detail)
    }

    func testLibraryThatDoesNotLoadFailsLoad() throws {
        let folder = try temporaryFolder()
        let file = try buildFixture("no_backward.c", in: folder, as: "libseqcell_nobackward.so")
        let report = PluginConformance.validate(file: file)
        XCTAssertFalse(report.passed)
        XCTAssertEqual(report.checks.map(\.qualifiedName), ["load"])
        XCTAssert(report.checks[0].detail.contains("required functions missing: backward"), "\(report)")
        XCTAssertFalse(PluginConformance.validate(file: folder).passed, "a folder is not a library file")
    }

    func testValidatesAgainstAGivenRegistry() throws {
        let folder = try temporaryFolder()
        let file = try buildMGU(in: folder)
        let registry = PluginRegistry()
        registry.load(path: folder)
        XCTAssert(PluginConformance.validate(file: file, registry: registry).passed)
        // Another library providing the same id is shadowed, and the report says by whom.
        let other = try buildMGU(in: try temporaryFolder())
        let report = PluginConformance.validate(file: other, registry: registry)
        XCTAssertFalse(report.passed)
        XCTAssert(report.checks[0].detail.contains("already provided by \(PluginRegistry.realPath(file))"), "\(report)")
    }
}

/// The C sample cell against the MGU equations, written out here step by step in Double.
final class MGUCellTests: XCTestCase {
    func mguType() throws -> CellType {
        let file = try buildMGU(in: try temporaryFolder())
        return try XCTUnwrap(try PluginRegistry().loadOrThrow(file: file).first)
    }

    func reference(x: Tensor, lengths: [Int32]?, w: [Tensor], h0: Tensor?) -> (Tensor, Tensor) {
        let (T, B, I) = (x.shape[0], x.shape[1], x.shape[2])
        let H = w[0].shape[0] / 2
        let (wih, whh, bih, bhh) = (w[0].data.map(Double.init), w[1].data.map(Double.init),
                                    w[2].data.map(Double.init), w[3].data.map(Double.init))
        var h = (0..<B).map { b in (0..<H).map { j in Double(h0?.data[b * H + j] ?? 0) } }
        var out = [Float](repeating: 0, count: T * B * H)
        for t in 0..<T {
            for b in 0..<B where t < Int(lengths?[b] ?? Int32(T)) {
                let xt = (0..<I).map { Double(x.data[(t * B + b) * I + $0]) }
                func input(_ row: Int) -> Double { (0..<I).reduce(bih[row]) { $0 + wih[row * I + $1] * xt[$1] } }
                func recurrent(_ row: Int, _ v: [Double]) -> Double {
                    (0..<H).reduce(bhh[row]) { $0 + whh[row * H + $1] * v[$1] }
                }
                let f = (0..<H).map { j in 1 / (1 + Foundation.exp(-(input(j) + recurrent(j, h[b])))) }
                let fh = (0..<H).map { f[$0] * h[b][$0] }
                let n = (0..<H).map { j in Foundation.tanh(input(H + j) + recurrent(H + j, fh)) }
                h[b] = (0..<H).map { (1 - f[$0]) * h[b][$0] + f[$0] * n[$0] }
                for j in 0..<H { out[(t * B + b) * H + j] = Float(h[b][j]) }
            }
        }
        return (Tensor(shape: [T, B, H], data: out), Tensor(shape: [B, H], data: h.flatMap { $0.map(Float.init) }))
    }

    func testLayout() throws {
        let cell = try mguType().instantiate(inputSize: 3, hiddenSize: 5)
        XCTAssertEqual(cell.type.version, CellVersion(major: 1, minor: 0, patch: 0))
        XCTAssertEqual(cell.params.map(\.name), ["weight_ih", "weight_hh", "bias_ih", "bias_hh"])
        XCTAssertEqual(cell.params.map(\.shape), [[10, 3], [10, 5], [10], [10]])
        XCTAssertEqual(cell.params.map(\.role), [.inputWeight, .recurrentWeight, .bias, .bias])
        XCTAssert(cell.params.allSatisfy { $0.gateOrder == "f,n" })
        XCTAssertEqual(cell.states, [StateInfo(name: "h", size: 5)])
        XCTAssertEqual(cell.outputSize, 5)
    }

    func testForwardMatchesEquations() throws {
        let cell = try mguType().instantiate(inputSize: 3, hiddenSize: 5)
        var rng = TestRNG(seed: 3)
        let params = cell.params.map { rng.tensor($0.shape, scale: 0.5) }
        let x = rng.tensor([6, 4, 3])
        let h0 = rng.tensor([4, 5])
        for lengths in [nil, [6, 2, 1, 4] as [Int32]] {
            for initial in [nil, h0] {
                for training in [false, true] {
                    let r = try cell.forward(input: x, lengths: lengths, params: params, initialStates: [initial],
                                             training: training)
                    let (out, hn) = reference(x: x, lengths: lengths, w: params, h0: initial)
                    let what = "lengths \(lengths.map { "\($0)" } ?? "nil"), h0 \(initial == nil ? "zero" : "given"), training \(training)"
                    assertClose(r.output, out, tol: 1e-5, "output, \(what)")
                    assertClose(r.finalStates[0], hn, tol: 1e-5, "h_n, \(what)")
                }
            }
        }
    }

    func testBackwardMatchesFiniteDifferences() throws {
        let type = try mguType()
        for (i, h) in [(3, 4), (1, 1), (2, 6)] {
            let cell = try type.instantiate(inputSize: i, hiddenSize: h)
            for lengths in [nil, [5, 2, 1] as [Int32]] {
                for r in try GradientCheck.checkCell(cell, T: 5, B: 3, lengths: lengths) {
                    XCTAssert(r.passed, "I=\(i), H=\(h), lengths \(lengths.map { "\($0)" } ?? "nil"): \(r)")
                }
            }
        }
    }

    /// The entry point refuses another ABI major with SEQCELL_ERR_VERSION and a message.
    func testEntryRefusesAnotherABIMajor() throws {
        let file = try buildMGU(in: try temporaryFolder())
        let handle = try XCTUnwrap(dlopen(file, RTLD_NOW | RTLD_LOCAL), String(cString: dlerror()))
        let entry = unsafeBitCast(try XCTUnwrap(dlsym(handle, SEQCELL_ENTRY_SYMBOL)), to: seqcell_entry_fn.self)
        var plugin: UnsafePointer<seqcell_plugin>? = nil
        var error = [CChar](repeating: 0, count: 256)
        let status = entry(SEQCELL_ABI_MAJOR + 1, 0, HostServices.table, &plugin, &error, error.count)
        XCTAssertEqual(status, SEQCELL_ERR_VERSION)
        XCTAssertNil(plugin)
        let message = error.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        XCTAssertEqual(message, "mgu speaks SeqCell ABI 1.x; the host speaks 2.0")
    }
}

// MARK: - The IndRNN sample (samples/indrnn): an exact backward check

/// The IndRNN sample, a relu cell written from docs/PLUGIN_ABI.md alone: it passes every
/// check, and a backward with any one parameter's gradient scaled by 1.01 fails the backward
/// check naming that parameter.
final class IndRNNConformanceTests: XCTestCase {

    func buildIndRNN(defines: [String] = [], file: StaticString = #filePath, line: UInt = #line) throws -> String {
        try compileC(source: indrnnSource, defines: defines,
                     output: try temporaryFolder() + "/libseqcell_indrnn.so", file: file, line: line)
    }

    func indrnnType() throws -> CellType {
        let registry = PluginRegistry()
        XCTAssertEqual(registry.load(path: try buildIndRNN()), [])
        return try registry.cellType("indrnn")
    }

    func testIndRNNPassesEveryCheck() throws {
        let report = PluginConformance.validate(file: try buildIndRNN())
        XCTAssert(report.passed, "\(report)")
        XCTAssertEqual(report.checks.map(\.qualifiedName),
                       ["load"] + PluginConformance.checkNames.dropFirst().map { "indrnn: \($0)" })
        let backward = try XCTUnwrap(report.check("backward", cell: "indrnn"))
        XCTAssert(backward.detail.contains("relative tolerance 0.0025"), backward.detail)
        // ABI 1.2: the NULL grad_params entries of frozen parameters are accepted and checked.
        let arguments = try XCTUnwrap(report.check("backward arguments", cell: "indrnn"))
        XCTAssert(arguments.detail.contains("accepts a NULL grad_params entry"), arguments.detail)
    }

    func testEachGradientScaledByOnePercentFailsNamingItsParameter() throws {
        let names = ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
        for (k, name) in names.enumerated() {
            let report = PluginConformance.validate(file: try buildIndRNN(defines: ["SEQCELL_INDRNN_SCALE_GRAD=\(k)"]))
            XCTAssertEqual(report.failures.map(\.qualifiedName), ["indrnn: backward"], "gradient of \(name) × 1.01: \(report)")
            let detail = try XCTUnwrap(report.check("backward", cell: "indrnn")).detail
            XCTAssert(detail.contains("param \(name): "), "gradient of \(name) × 1.01 not named: \(detail)")
            for other in names where other != name {
                XCTAssertFalse(detail.contains("param \(other): "), "gradient of \(name) × 1.01 blamed \(other): \(detail)")
            }
            // Per-entry reports carry the step and the tolerance.
            XCTAssert(detail.contains("step 0.002"), detail)
            XCTAssert(detail.contains("> tolerance "), detail)
        }
    }

    /// h' = relu(W_ih x + b_ih + u ⊙ h + b_hh), computed here in Double.
    func testForwardMatchesTheEquations() throws {
        let cell = try indrnnType().instantiate(inputSize: 3, hiddenSize: 4)
        var rng = TestRNG(seed: 11)
        let p = cell.params.map { rng.tensor($0.shape, scale: 0.7) }
        let (T, B, I, H) = (5, 2, 3, 4)
        let x = rng.tensor([T, B, I])
        let lengths: [Int32] = [5, 3]
        let r = try cell.forward(input: x, lengths: lengths, params: p, initialStates: [nil])
        var h = [[Double]](repeating: [Double](repeating: 0, count: H), count: B)
        var out = [Float](repeating: 0, count: T * B * H)
        for t in 0..<T {
            for b in 0..<B where t < Int(lengths[b]) {
                h[b] = (0..<H).map { j in
                    var a = Double(p[2].data[j]) + Double(p[3].data[j]) + Double(p[1].data[j]) * h[b][j]
                    for i in 0..<I { a += Double(p[0].data[j * I + i]) * Double(x.data[(t * B + b) * I + i]) }
                    return max(a, 0)
                }
                for j in 0..<H { out[(t * B + b) * H + j] = Float(h[b][j]) }
            }
        }
        for (i, (a, e)) in zip(r.output.data, out).enumerated() {
            XCTAssertEqual(a, e, accuracy: 1e-5, "output[\(i)]")
        }
        XCTAssertEqual(r.finalStates[0].data.map(Double.init), h.flatMap { $0 }, accuracy: 1e-5)
    }
}

private func XCTAssertEqual(_ a: [Double], _ b: [Double], accuracy: Double, file: StaticString = #filePath,
                            line: UInt = #line) {
    XCTAssertEqual(a.count, b.count, file: file, line: line)
    for (x, y) in zip(a, b) { XCTAssertEqual(x, y, accuracy: accuracy, file: file, line: line) }
}

/// The backward check's verdict does not hang on a lucky point: over many seeds and sizes a
/// correct relu cell always passes and a 1 % wrong one always fails.
final class GradientCheckStabilityTests: XCTestCase {
    func testVerdictsHoldOverManySeeds() throws {
        func type(_ defines: [String]) throws -> CellType {
            let file = try compileC(source: indrnnSource, defines: defines,
                                    output: try temporaryFolder() + "/libseqcell_indrnn.so")
            let registry = PluginRegistry()
            XCTAssertEqual(registry.load(path: file), [])
            return try registry.cellType("indrnn")
        }
        let runner = ConformanceRunner()
        let good = try type([])
        var redrawn = 0
        for (i, h) in [(3, 4), (2, 7), (5, 3)] {
            let cell = try good.instantiate(inputSize: i, hiddenSize: h)
            for seed in UInt64(1)...12 {
                for lengths in [nil, [5, 2, 1] as [Int32]] {
                    for r in try runner.checkBackward(cell, lengths: lengths, seed: seed) {
                        XCTAssert(r.passed, "correct IndRNN, I=\(i) H=\(h) seed \(seed) lengths \(String(describing: lengths)): \(r)")
                        redrawn += r.resampled
                    }
                }
            }
        }
        XCTAssertGreaterThan(redrawn, 0, "relu kinks were never met: the kink test is not exercised")
        // weight_hh (u) has the smallest gradient of the four; 1 % of it must still show.
        let wrong = try type(["SEQCELL_INDRNN_SCALE_GRAD=1"]).instantiate(inputSize: 3, hiddenSize: 4)
        for seed in UInt64(1)...12 {
            let results = try runner.checkBackward(wrong, seed: seed)
            let failed = results.filter { !$0.passed }.map(\.name)
            XCTAssertEqual(failed, ["param weight_hh"], "seed \(seed): \(results)")
        }
    }
}

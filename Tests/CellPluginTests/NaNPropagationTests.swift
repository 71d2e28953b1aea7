import CSeqCellKernels
import Foundation
import XCTest
@testable import SeqCellBase
@testable import SeqCellHost
@testable import SeqCellModel
@testable import SeqCellFormats
import SeqCellTestSupport

/// Every ISA build of the plugins' kernels this CPU can run, by name; the ones it cannot run
/// are listed so a test can say by name which path it skipped.
enum KernelPaths {
    static let all: [(name: String, isa: Int32)] = [("baseline", Int32(SCK_ISA_BASELINE)), ("avx2", Int32(SCK_ISA_AVX2)), ("avx512", Int32(SCK_ISA_AVX512))]
    static var runnable: [(name: String, table: sck_table)] {
        all.compactMap { p in sck_kernels(p.isa).map { (p.name, $0.pointee) } }
    }
    static var skipped: [String] { all.filter { sck_kernels($0.isa) == nil }.map(\.name) }
}

/// NaN propagates as in PyTorch (issue 9: the fast activations clamped NaN away): kernel by
/// kernel on every ISA path, and through every cell kind forward and backward.
final class NaNKernelTests: XCTestCase {
    func reportSkipped() throws {
        if !KernelPaths.skipped.isEmpty {
            throw XCTSkip("ISA path(s) not run on this CPU: \(KernelPaths.skipped.joined(separator: ", ")) (the others passed)")
        }
    }

    /// NaN, ±inf, huge and saturating values, against libm; the array is longer than one
    /// vector so both the vector body and the tail see them.
    func testActivationsOnNaNInfinityAndLargeValuesMatchLibm() throws {
        let specials: [Float] = [.nan, -.nan, .infinity, -.infinity, 1e30, -1e30, .greatestFiniteMagnitude, -.greatestFiniteMagnitude,
                                 88.5, -88.5, 100, -100, 9.5, -9.5, 20, -20, 0, -0.0, 5, -5, 1e-6]
        for (name, t) in KernelPaths.runnable {
            var s = specials, th = specials, copy = [Float](repeating: 7, count: specials.count)
            t.sigmoid(&s, Int64(s.count))
            t.tanh(&th, Int64(th.count))
            t.tanh_copy(specials, &copy, nil, Int64(specials.count))
            for (i, x) in specials.enumerated() {
                if x.isNaN {
                    XCTAssert(s[i].isNaN, "\(name): sigmoid(NaN) = \(s[i])")
                    XCTAssert(th[i].isNaN, "\(name): tanh(NaN) = \(th[i])")
                    XCTAssert(copy[i].isNaN, "\(name): tanh_copy(NaN) = \(copy[i])")
                    continue
                }
                let sRef = 1 / (1 + Foundation.exp(-Double(x))), tRef = Foundation.tanh(Double(x))
                XCTAssertEqual(Double(s[i]), sRef, accuracy: 2e-7, "\(name): sigmoid(\(x))")
                XCTAssertEqual(Double(th[i]), tRef, accuracy: 5e-7, "\(name): tanh(\(x))")
                XCTAssertEqual(copy[i].bitPattern, th[i].bitPattern, "\(name): tanh_copy(\(x))")
                // Where libm's float result is exactly 0 or ±1, so is ours (PyTorch: tanh(inf) = 1,
                // sigmoid(-inf) = 0).
                if abs(x) >= 9.02 { XCTAssertEqual(th[i], Float(tRef), "\(name): tanh(\(x)) saturates exactly") }
                if x == .infinity || x == -.infinity { XCTAssertEqual(s[i], Float(sRef), "\(name): sigmoid(\(x))") }
            }
        }
        try reportSkipped()
    }

    func testLSTMRowForwardAndBackwardCarryNaN() throws {
        let H = 13  // one full vector of 8 and a tail of 5
        var rng = SplitMix64(seed: 11)
        let gates = (0..<4 * H).map { _ in rng.uniform(-2, 2) }
        let cPrev = (0..<H).map { _ in rng.uniform(-1, 1) }
        let dmIn = (0..<H).map { _ in rng.uniform(-1, 1) }
        for (name, t) in KernelPaths.runnable {
            var refG = gates, refC = [Float](repeating: 0, count: H), refH = refC
            t.lstm_row(&refG, Int64(H), cPrev, &refC, &refH, nil, 1)
            // NaN in the input gate of unit 2 (vector body) and the forget gate of unit 10 (tail).
            var g = gates
            g[2] = .nan
            g[H + 10] = .nan
            var c = [Float](repeating: 0, count: H), h = c
            t.lstm_row(&g, Int64(H), cPrev, &c, &h, nil, 1)
            for j in 0..<H {
                if j == 2 || j == 10 {
                    XCTAssert(c[j].isNaN && h[j].isNaN, "\(name): unit \(j) c = \(c[j]) h = \(h[j])")
                } else {
                    XCTAssertEqual(c[j], refC[j], "\(name): unit \(j)")
                    XCTAssertEqual(h[j], refH[j], "\(name): unit \(j)")
                }
            }
            // Backward: NaN in dm of unit 3 and in c of unit 12 reach every gate gradient of
            // that unit and its dc, and nothing else.
            var acts = refG, dc = [Float](repeating: 0.5, count: H), dm = dmIn, cc = refC
            dm[3] = .nan
            cc[12] = .nan
            t.lstm_row_backward(&acts, Int64(H), cc, cPrev, &dc, dm)
            for j in 0..<H {
                let unit = [acts[j], acts[H + j], acts[2 * H + j], acts[3 * H + j], dc[j]]
                if j == 3 || j == 12 {
                    XCTAssert(unit[0].isNaN && unit[2].isNaN && unit[3].isNaN && dc[j].isNaN, "\(name): unit \(j) \(unit)")
                } else {
                    XCTAssert(unit.allSatisfy(\.isFinite), "\(name): unit \(j) \(unit)")
                }
            }
        }
        try reportSkipped()
    }

    func testGRURowCarriesNaN() throws {
        let H = 11
        var rng = SplitMix64(seed: 12)
        let gx = (0..<3 * H).map { _ in rng.uniform(-2, 2) }
        let gh = (0..<3 * H).map { _ in rng.uniform(-2, 2) }
        let bhn = (0..<H).map { _ in rng.uniform(-1, 1) }
        let hp = (0..<H).map { _ in rng.uniform(-1, 1) }
        for (name, t) in KernelPaths.runnable {
            var x = gx, g = gh, b = bhn, prev = hp, out = [Float](repeating: 0, count: H)
            g[1] = .nan        // r of unit 1
            x[H + 6] = .nan    // z of unit 6
            b[9] = .nan        // b_hn of unit 9 (tail)
            prev[4] = .nan     // h_prev of unit 4
            t.gru_row(&x, g, b, prev, &out, nil, Int64(H), 1)
            for j in 0..<H {
                if [1, 4, 6, 9].contains(j) { XCTAssert(out[j].isNaN, "\(name): unit \(j) = \(out[j])") }
                else { XCTAssert(out[j].isFinite, "\(name): unit \(j) = \(out[j])") }
            }
        }
        try reportSkipped()
    }

    func testPackedGemmCarriesNaN() throws {
        var rng = SplitMix64(seed: 13)
        for (m, n, k) in [(1, 20, 9), (2, 20, 9), (3, 33, 17), (7, 20, 300)] {
            let w = (0..<n * k).map { _ in rng.uniform(-1, 1) }
            let x = (0..<m * k).map { _ in rng.uniform(-1, 1) }
            for (name, t) in KernelPaths.runnable {
                // NaN in x row 0 → all of y's row 0; NaN in W row 5 → y column 5 in every row,
                // even where x is zero (0 · NaN = NaN, as in BLAS and PyTorch).
                var xn = x, wn = w
                xn[k / 2] = .nan
                wn[5 * k + k - 1] = .nan
                if m > 1 { xn[k + k - 1] = 0 }
                var packed = [Float](repeating: 0, count: Int(sck_packed_floats(Int64(n), Int64(k))))
                sck_pack_wt(wn, Int64(k), Int64(n), Int64(k), &packed)
                var y = [Float](repeating: 0, count: m * n)
                t.gemm_packed(xn, Int64(m), Int64(k), packed, Int64(n), Int64(k), &y, Int64(n), 0)
                for r in 0..<m {
                    for j in 0..<n {
                        let v = y[r * n + j]
                        if r == 0 || j == 5 { XCTAssert(v.isNaN, "\(name) m=\(m): y[\(r), \(j)] = \(v)") }
                        else { XCTAssert(v.isFinite, "\(name) m=\(m): y[\(r), \(j)] = \(v)") }
                    }
                }
            }
        }
        try reportSkipped()
    }
}

/// NaN through whole cells, forward and backward, per cell kind: in process (this CPU's best
/// kernels) and through `seqcell run --grad-output` in a child per ISA path
/// (SEQCELL_ISA=baseline|avx2|avx512 caps the path).
final class NaNCellTests: TemporaryDirectoryTestCase {
    static let specs = ["rnn:12", "rnn:12,activation=relu", "lstm:12", "lstm:12,proj_size=5", "gru:12", "gru:12,reset=before"]
    static let (T, B, I) = (4, 2, 3)

    enum Scenario: String, CaseIterable {
        /// x[0, 0, 1] = NaN: sample 0 goes NaN, sample 1 stays finite.
        case input
        /// weight_hh[0, 0] = NaN: everything from step 0 on (0 · NaN = NaN).
        case parameter
    }

    struct Results {
        var output: [Float]
        var gradInput: [Float]
        /// name → gradient values
        var gradParams: [String: [Float]]
    }

    func makeCase(_ spec: String, _ scenario: Scenario) throws -> (Model, Tensor, Tensor) {
        var model = try Model.build(inputSize: Self.I, layers: [try LayerSpec(parsing: spec)], registry: testRegistry, seed: 9)
        var rng = SplitMix64(seed: 10)
        var x = rng.uniformTensor([Self.T, Self.B, Self.I], scale: 1)
        if scenario == .input { x.data[1] = .nan }
        if scenario == .parameter {
            var params = model.namedParameters.map(\.value)
            let i = try XCTUnwrap(model.namedParameters.firstIndex { $0.path.hasSuffix("weight_hh") })
            params[i].data[0] = .nan
            try model.setParameters(params)
        }
        let g = rng.uniformTensor([Self.T, Self.B, model.outputSize], scale: 1)
        return (model, x, g)
    }

    func check(_ r: Results, spec: String, scenario: Scenario, path: String, file: StaticString = #filePath, line: UInt = #line) {
        let (T, B) = (Self.T, Self.B)
        let O = r.output.count / (T * B), I = Self.I
        let what = "\(spec) NaN \(scenario.rawValue) [\(path)]"
        func out(_ t: Int, _ b: Int) -> ArraySlice<Float> { r.output[((t * B + b) * O)..<((t * B + b + 1) * O)] }
        func gin(_ t: Int, _ b: Int) -> ArraySlice<Float> { r.gradInput[((t * B + b) * I)..<((t * B + b + 1) * I)] }
        let relu = spec.contains("relu")
        switch scenario {
        case .input:
            for t in 0..<T {
                XCTAssert(out(t, 0).allSatisfy(\.isNaN), "\(what): output[\(t), 0] = \(Array(out(t, 0)))", file: file, line: line)
                XCTAssert(out(t, 1).allSatisfy(\.isFinite), "\(what): sample 1 must stay finite: \(Array(out(t, 1)))", file: file, line: line)
                XCTAssert(gin(t, 1).allSatisfy(\.isFinite), "\(what): grad_input of sample 1 must stay finite", file: file, line: line)
            }
            for (name, g) in r.gradParams {
                // relu passes the gradient through a NaN output (torch's threshold_backward), so
                // its biases' gradients stay finite; every other gradient meets a NaN.
                if relu && name.hasPrefix("bias") {
                    XCTAssert(g.allSatisfy(\.isFinite), "\(what): \(name) gradient should be finite (threshold_backward)", file: file, line: line)
                } else {
                    XCTAssert(g.contains(where: \.isNaN), "\(what): \(name) gradient has no NaN", file: file, line: line)
                }
            }
        case .parameter:
            for b in 0..<B {
                XCTAssert(out(T - 1, b).allSatisfy(\.isNaN), "\(what): output[\(T - 1), \(b)] = \(Array(out(T - 1, b)))", file: file, line: line)
            }
            XCTAssert(r.gradInput.contains(where: \.isNaN), "\(what): grad_input has no NaN", file: file, line: line)
            for (name, g) in r.gradParams {
                XCTAssert(g.contains(where: \.isNaN), "\(what): \(name) gradient has no NaN", file: file, line: line)
            }
        }
    }

    func testNaNPropagatesThroughEveryCellInProcess() throws {
        for spec in Self.specs {
            for scenario in Scenario.allCases {
                let (model, x, g) = try makeCase(spec, scenario)
                let fwd = try model.forward(input: x, training: true)
                let grads = try model.backward(fwd, gradOutput: g)
                let names = model.layers[0].cells[0].cell.params.map(\.name)
                let r = Results(output: fwd.output.data, gradInput: try XCTUnwrap(grads.input).data,
                                gradParams: Dictionary(uniqueKeysWithValues: zip(names, grads.params[0][0].map(\.data))))
                check(r, spec: spec, scenario: scenario, path: "in process, isa \(sck_best()!.pointee.isa)")
            }
        }
    }

    func testNaNPropagatesThroughEveryCellOnEveryISAPathThroughTheCLI() throws {
        let cli = (buildProductsDir as NSString).appendingPathComponent("seqcell")
        guard FileManager.default.isExecutableFile(atPath: cli) else { return XCTFail("\(cli) not found: build the package first") }
        for (k, spec) in Self.specs.enumerated() {
            for scenario in Scenario.allCases {
                let (model, x, g) = try makeCase(spec, scenario)
                let m = path("m\(k)\(scenario).h5"), xin = path("x\(k)\(scenario).h5"), gin = path("g\(k)\(scenario).h5")
                try Checkpoint(model: model).save(to: m)
                let xf = try H5File(creating: xin)
                try xf.root.writeDataset("input", shape: x.shape, floats: x.data)
                try xf.close()
                let gf = try H5File(creating: gin)
                try gf.root.writeDataset("grad_output", shape: g.shape, floats: g.data)
                try gf.close()
                for (isaName, _) in KernelPaths.runnable {
                    let out = path("y\(k)\(scenario)\(isaName).h5")
                    let p = Process()
                    p.executableURL = URL(fileURLWithPath: cli)
                    p.arguments = ["run", m, "--input", xin, "--grad-output", gin, "-o", out]
                    var env = ProcessInfo.processInfo.environment
                    env["SEQCELL_ISA"] = isaName
                    p.environment = env
                    let err = Pipe()
                    p.standardError = err
                    try p.run()
                    let e = err.fileHandleForReading.readDataToEndOfFile()
                    p.waitUntilExit()
                    XCTAssertEqual(p.terminationStatus, 0, "\(spec) \(isaName): \(String(decoding: e, as: UTF8.self))")
                    guard p.terminationStatus == 0 else { continue }
                    let root = try H5File(opening: out).root
                    let pg = try root.group("grad_params").group("layers").group("00").group("forward")
                    var params: [String: [Float]] = [:]
                    for name in try pg.memberNames() { params[name] = try pg.dataset(name).readFloats() }
                    let r = Results(output: try root.dataset("output").readFloats(),
                                    gradInput: try root.dataset("grad_input").readFloats(), gradParams: params)
                    check(r, spec: spec, scenario: scenario, path: "seqcell run, isa \(isaName)")
                }
            }
        }
        if !KernelPaths.skipped.isEmpty {
            throw XCTSkip("ISA path(s) not run on this CPU: \(KernelPaths.skipped.joined(separator: ", ")) (the others passed)")
        }
    }
}

/// `seqcell inspect` counts NaN and ±inf per parameter and in total; zero shows as 0.
final class InspectNonFiniteTests: TemporaryDirectoryTestCase {
    func testInspectReportsNonFiniteParameterCounts() throws {
        var model = try Model.build(inputSize: 3, layers: [LayerSpec(cell: "gru", hiddenSize: 4)],
                                    head: HeadSpec(outputSize: 2), registry: testRegistry, seed: 1)
        try Checkpoint(model: model).save(to: path("clean.h5"))
        var params = model.namedParameters.map(\.value)
        let names = model.namedParameters.map(\.path)
        let hh = try XCTUnwrap(names.firstIndex { $0.hasSuffix("weight_hh") })
        params[hh].data[0] = .nan
        params[hh].data[3] = .infinity
        params[hh].data[5] = .nan
        let hw = try XCTUnwrap(names.firstIndex { $0.hasPrefix("head") && $0.hasSuffix("weight") })
        params[hw].data[1] = -.infinity
        try model.setParameters(params)
        XCTAssertEqual(model.nonFiniteParameters.map(\.count.total).reduce(0, +), 4)
        try Checkpoint(model: model).save(to: path("bad.h5"))

        let cli = (buildProductsDir as NSString).appendingPathComponent("seqcell")
        func inspect(_ file: String) throws -> String {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: cli)
            p.arguments = ["inspect", file]
            let out = Pipe()
            p.standardOutput = out
            p.standardError = Pipe()
            try p.run()
            let o = out.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            XCTAssertEqual(p.terminationStatus, 0)
            return String(decoding: o, as: UTF8.self)
        }
        let clean = try inspect(path("clean.h5"))
        XCTAssert(clean.contains("weight_hh [12, 4] float32 (48)  gates r,z,n  non-finite 0"), clean)
        XCTAssert(clean.contains("non-finite parameter values: 0\n"), clean)
        let bad = try inspect(path("bad.h5"))
        XCTAssert(bad.contains("weight_hh [12, 4] float32 (48)  gates r,z,n  non-finite 3 (2 NaN, 1 inf)"), bad)
        XCTAssert(bad.contains("weight_ih [12, 3] float32 (36)  gates r,z,n  non-finite 0"), bad)
        XCTAssert(bad.contains("weight non-finite 1 (0 NaN, 1 inf), bias non-finite 0"), bad)
        XCTAssert(bad.contains("non-finite parameter values: 4 (2 NaN, 2 inf) in layers/00/forward/weight_hh, head/weight"), bad)
    }
}

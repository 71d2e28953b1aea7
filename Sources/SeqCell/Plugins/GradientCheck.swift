/// Backward against central finite differences.
///
/// The loss is a fixed random linear function of everything a call produces,
/// L = Σ R_out ⊙ output + Σ_s R_s ⊙ final_state_s, so its gradient with respect to the
/// outputs is exactly R. Each checked coordinate is perturbed by ±eps and the difference
/// quotient (accumulated in Double) is compared with the analytic gradient.
public struct GradientCheckResult: Sendable, CustomStringConvertible {
    /// What was checked, e.g. "input", "param weight_hh", "initial state c".
    public let name: String
    public let checked: Int
    public let worstAbsoluteError: Double
    public let worstAnalytic: Double
    public let worstNumeric: Double
    public let passed: Bool

    public var description: String {
        let verdict = passed ? "ok  " : "FAIL"
        return "\(verdict) \(name): \(checked) entries, worst |analytic - numeric| = \(fmt(worstAbsoluteError))"
            + (passed ? "" : " (analytic \(fmt(worstAnalytic)), numeric \(fmt(worstNumeric)))")
    }
}

private func fmt(_ v: Double) -> String {
    let s = String(v)
    return s.count > 10 ? String(format6(v)) : s
}

private func format6(_ v: Double) -> String {
    // Six significant digits without Foundation's String(format:).
    if v == 0 || !v.isFinite { return String(v) }
    var exp = 0
    var m = abs(v)
    while m >= 10 { m /= 10; exp += 1 }
    while m < 1 { m *= 10; exp -= 1 }
    let digits = (m * 100_000).rounded() / 100_000
    return (v < 0 ? "-" : "") + String(digits) + (exp == 0 ? "" : "e\(exp)")
}

public enum GradientCheck {
    /// Tolerances for float32 central differences with eps = 1e-3.
    public static let absoluteTolerance = 2e-3
    public static let relativeTolerance = 2e-2

    static func close(_ a: Double, _ n: Double) -> Bool {
        abs(a - n) <= absoluteTolerance + relativeTolerance * max(abs(a), abs(n))
    }

    /// Compares `analytic` with central differences of `loss` around `values` at up to
    /// `maxEntries` coordinates (spread evenly). `loss` receives the perturbed values.
    public static func compare(
        name: String, values: [Float], analytic: [Float], maxEntries: Int = 24, eps: Float = 1e-3,
        loss: ([Float]) throws -> Double
    ) rethrows -> GradientCheckResult {
        precondition(values.count == analytic.count)
        let n = values.count
        let step = max(1, n / max(maxEntries, 1))
        var worst = (err: 0.0, a: 0.0, num: 0.0)
        var passed = true
        var checked = 0
        var v = values
        for i in stride(from: 0, to: n, by: step).prefix(maxEntries) {
            let orig = v[i]
            v[i] = orig + eps
            let up = try loss(v)
            v[i] = orig - eps
            let down = try loss(v)
            v[i] = orig
            let numeric = (up - down) / (2 * Double(eps))
            let a = Double(analytic[i])
            let err = abs(a - numeric)
            if !close(a, numeric) { passed = false }
            if err > worst.err || !err.isFinite { worst = (err, a, numeric) }
            checked += 1
        }
        return GradientCheckResult(name: name, checked: checked, worstAbsoluteError: worst.err,
                                   worstAnalytic: worst.a, worstNumeric: worst.num, passed: passed)
    }

    /// Checks one cell's backward: input, every parameter, every initial state.
    /// Parameters and inputs are uniform in ±0.5 (seeded), so results are reproducible.
    public static func checkCell(
        _ cell: Cell, T: Int, B: Int, lengths: [Int32]? = nil, seed: UInt64 = 7, maxEntries: Int = 24,
        eps: Float = 1e-3
    ) throws -> [GradientCheckResult] {
        var rng = SplitMix64(seed: seed)
        let x = rng.uniformTensor([T, B, cell.inputSize], scale: 1)
        let params = cell.params.map { rng.uniformTensor($0.shape, scale: 0.5) }
        let h0 = cell.states.map { rng.uniformTensor([B, $0.size], scale: 0.5) }
        let rOut = rng.uniformTensor([T, B, cell.outputSize], scale: 1)
        let rStates = cell.states.map { rng.uniformTensor([B, $0.size], scale: 1) }

        func loss(x: Tensor, params: [Tensor], h0: [Tensor]) throws -> Double {
            let r = try cell.forward(input: x, lengths: lengths, params: params, initialStates: h0)
            var s = 0.0
            for i in 0..<r.output.count { s += Double(r.output.data[i]) * Double(rOut.data[i]) }
            for (f, w) in zip(r.finalStates, rStates) {
                for i in 0..<f.count { s += Double(f.data[i]) * Double(w.data[i]) }
            }
            return s
        }

        let fwd = try cell.forward(input: x, lengths: lengths, params: params, initialStates: h0, training: true)
        let g = try cell.backward(tape: fwd.tape!, gradOutput: rOut, gradFinalStates: rStates)

        var results: [GradientCheckResult] = []
        results.append(try compare(name: "input", values: x.data, analytic: g.input!.data, maxEntries: maxEntries, eps: eps) {
            try loss(x: Tensor(shape: x.shape, data: $0), params: params, h0: h0)
        })
        for (i, info) in cell.params.enumerated() {
            results.append(try compare(name: "param \(info.name)", values: params[i].data, analytic: g.params[i].data,
                                       maxEntries: maxEntries, eps: eps) {
                var p = params
                p[i] = Tensor(shape: info.shape, data: $0)
                return try loss(x: x, params: p, h0: h0)
            })
        }
        for (i, info) in cell.states.enumerated() {
            results.append(try compare(name: "initial state \(info.name)", values: h0[i].data,
                                       analytic: g.initialStates[i].data, maxEntries: maxEntries, eps: eps) {
                var s = h0
                s[i] = Tensor(shape: [B, info.size], data: $0)
                return try loss(x: x, params: params, h0: s)
            })
        }
        return results
    }
}

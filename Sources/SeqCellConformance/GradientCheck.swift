import SeqCellBase
import SeqCellHost

/// Backward against finite differences.
///
/// The loss is a fixed random linear function of everything a call produces,
/// L = Σ R_out ⊙ output + Σ_s R_s ⊙ final_state_s (summed in Double), so its gradient with
/// respect to the outputs is exactly R. `compare` is the plain per-coordinate central
/// difference; `checkCell` is the conformance kit's exact check (docs/PLUGIN_ABI.md,
/// "The backward check"): several random points, directional and per-entry probes, kinks of
/// piecewise-linear cells detected and the point resampled, a tolerance that a 1 % error in
/// any one gradient exceeds.
public struct GradientCheckResult: Sendable, CustomStringConvertible {
    /// What was checked, e.g. "input", "param weight_hh", "initial state c".
    public let name: String
    public let checked: Int
    public let worstAbsoluteError: Double
    public let worstAnalytic: Double
    public let worstNumeric: Double
    public let passed: Bool
    /// The probes that failed (`checkCell` only), worst first.
    public var failures: [GradientProbe] = []
    /// Points drawn again because a probe straddled a kink (`checkCell` only).
    public var resampled: Int = 0
    /// Probes skipped because they straddled a kink (`checkCell` only; per-entry probes).
    public var skipped: Int = 0

    public var description: String {
        let verdict = passed ? "ok  " : "FAIL"
        var s = "\(verdict) \(name): \(checked) entries, worst |analytic - numeric| = \(fmt(worstAbsoluteError))"
        if !passed {
            s += failures.isEmpty
                ? " (analytic \(fmt(worstAnalytic)), numeric \(fmt(worstNumeric)))"
                : ": " + failures.prefix(3).map(\.description).joined(separator: "; ")
        }
        return s
    }
}

/// One finite-difference probe of `GradientCheck.checkCell`: a directional derivative of the
/// loss along `direction` at one random point, analytic (from backward) and numeric.
public struct GradientProbe: Sendable, CustomStringConvertible {
    /// "entry 7", "along the gradient" or "along a random direction".
    public let direction: String
    /// Which random point (0-based, counting resampled ones).
    public let point: Int
    public let analytic: Double
    public let numeric: Double
    /// The finite-difference step h (the central difference uses ±h).
    public let step: Double
    public let tolerance: Double
    public var error: Double { abs(analytic - numeric) }
    public var passed: Bool { error <= tolerance }

    public var description: String {
        "\(direction) at point \(point): analytic \(fmt(analytic)) vs numeric \(fmt(numeric)) "
            + "(|difference| \(fmt(error)) > tolerance \(fmt(tolerance)), step \(fmt(step)))"
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

/// The parameters of `GradientCheck.checkCell` (documented in docs/PLUGIN_ABI.md).
public struct GradientCheckSettings: Sendable {
    /// Random points (inputs, parameters, initial states, loss weights) accepted per tensor.
    public var points = 3
    /// Extra points drawn, per tensor, when a directional probe straddles a kink.
    public var maxResamples = 16
    /// Finite-difference step h along a unit direction (the kink test also evaluates ±h/2).
    public var step = 2e-3
    /// Relative tolerance: 0.25 %, so a gradient scaled by 1.01 fails.
    public var relativeTolerance = 2.5e-3
    /// Absolute tolerance, in units of float32 rounding of the loss divided by the step:
    /// `noiseFactor · 2^-24 · Σ|R ⊙ outputs| / h`.
    public var noiseFactor = 4.0
    /// Per-entry probes per tensor and point (coordinates spread over the tensor).
    public var entriesPerTensor = 8
    /// A probe straddles a kink when its kink signal exceeds this fraction of its tolerance.
    public var kinkFraction = 1.0 / 3
    /// The settings `seqcell validate-plugin` uses.
    public static let standard = GradientCheckSettings()

    public init() {}
}

public enum GradientCheck {
    /// Tolerances of `compare` (float32 central differences with eps = 1e-3).
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

    /// One random point: every input of a call, the loss weights, and backward's gradients.
    struct Point {
        /// input, then each parameter, then each initial state.
        var tensors: [Tensor]
        var gradients: [Tensor]
        var rOut: Tensor
        var rStates: [Tensor]
        var loss0: Double
        /// Σ|R ⊙ outputs|: the scale of the loss's float32 rounding.
        var scale: Double
    }

    /// Checks one cell's backward: input, every parameter, every initial state.
    ///
    /// For each tensor, at `settings.points` random points (inputs uniform in ±1, parameters
    /// and initial states in ±0.5, seeded), it compares backward's directional derivative of
    /// the loss with the central difference (L(p + h·d) − L(p − h·d)) / 2h along the gradient
    /// itself, along a random unit direction, and along `entriesPerTensor` coordinates. The
    /// analytic side uses the displacement actually stored in float32, so rounding the
    /// perturbed values costs nothing. A probe straddles a kink (a relu switching, say) when
    /// the loss along the line, evaluated also at ±h/2, is not smooth: the odd and even
    /// third-order combinations of the four values, minus the linear part, exceed
    /// `kinkFraction` of the tolerance. A directional probe at a kink draws a new point; a
    /// per-entry probe at a kink is skipped. A probe fails when |analytic − numeric| exceeds
    /// `relativeTolerance · max(|analytic|, |numeric|)` plus the float32 noise floor.
    public static func checkCell(
        _ cell: Cell, T: Int, B: Int, lengths: [Int32]? = nil, seed: UInt64 = 7,
        settings: GradientCheckSettings = .standard
    ) throws -> [GradientCheckResult] {
        let names = ["input"] + cell.params.map { "param \($0.name)" } + cell.states.map { "initial state \($0.name)" }
        let shapes = [[T, B, cell.inputSize]] + cell.params.map(\.shape) + cell.states.map { [B, $0.size] }

        func loss(_ point: Point, replacing k: Int, with values: [Float]) throws -> Double {
            var t = point.tensors
            t[k] = Tensor(shape: shapes[k], data: values)
            let p = 1 + cell.params.count
            let r = try cell.forward(input: t[0], lengths: lengths, params: Array(t[1..<p]), initialStates: Array(t[p...]))
            var s = 0.0
            for i in 0..<r.output.count { s += Double(r.output.data[i]) * Double(point.rOut.data[i]) }
            for (f, w) in zip(r.finalStates, point.rStates) {
                for i in 0..<f.count { s += Double(f.data[i]) * Double(w.data[i]) }
            }
            return s
        }

        var cache: [Int: Point] = [:]
        func point(_ n: Int) throws -> Point {
            if let p = cache[n] { return p }
            var rng = SplitMix64(seed: seed &+ UInt64(n) &* 0x9E37_79B9_7F4A_7C15)
            let x = rng.uniformTensor([T, B, cell.inputSize], scale: 1)
            let params = cell.params.map { rng.uniformTensor($0.shape, scale: 0.5) }
            let h0 = cell.states.map { rng.uniformTensor([B, $0.size], scale: 0.5) }
            let rOut = rng.uniformTensor([T, B, cell.outputSize], scale: 1)
            let rStates = cell.states.map { rng.uniformTensor([B, $0.size], scale: 1) }
            let fwd = try cell.forward(input: x, lengths: lengths, params: params, initialStates: h0, training: true)
            guard let tape = fwd.tape else { throw SeqCellError(.cell, "a training forward kept no tape") }
            let g = try cell.backward(tape: tape, gradOutput: rOut, gradFinalStates: rStates)
            guard let gx = g.input else { throw SeqCellError(.cell, "backward returned no input gradient") }
            var loss0 = 0.0, scale = 0.0
            for i in 0..<fwd.output.count {
                let v = Double(fwd.output.data[i]) * Double(rOut.data[i])
                loss0 += v
                scale += abs(v)
            }
            for (f, w) in zip(fwd.finalStates, rStates) {
                for i in 0..<f.count {
                    let v = Double(f.data[i]) * Double(w.data[i])
                    loss0 += v
                    scale += abs(v)
                }
            }
            let p = Point(tensors: [x] + params + h0, gradients: [gx] + g.params + g.initialStates,
                          rOut: rOut, rStates: rStates, loss0: loss0, scale: scale)
            cache[n] = p
            return p
        }

        let h = settings.step
        /// A probe along `direction` (unit length), or nil when it straddles a kink.
        func probe(_ pt: Point, _ k: Int, _ direction: [Double], label: String, index: Int) throws -> GradientProbe? {
            let v = pt.tensors[k].data
            let g = pt.gradients[k].data
            var f: [Double] = []
            var lin: [Double] = []
            for t in [h, -h, h / 2, -h / 2] {
                var moved = v
                var dot = 0.0
                for i in v.indices where direction[i] != 0 {
                    moved[i] = Float(Double(v[i]) + t * direction[i])
                    dot += Double(g[i]) * (Double(moved[i]) - Double(v[i]))
                }
                f.append(try loss(pt, replacing: k, with: moved))
                lin.append(dot)
            }
            let analytic = (lin[0] - lin[1]) / (2 * h)
            let numeric = (f[0] - f[1]) / (2 * h)
            let noise = settings.noiseFactor * 0x1p-24 * pt.scale / h
            let tolerance = noise + settings.relativeTolerance * max(abs(analytic), abs(numeric))
            // The residual r(t) = L(t) − L(0) − g·Δ(t) of a smooth loss is O(t²); its odd and even
            // third-order combinations over ±h, ±h/2 are O(h³), while a kink within ±h makes
            // at least one of them O(h · slope jump).
            let r = f.indices.map { f[$0] - pt.loss0 - lin[$0] }
            let odd = (r[0] - r[1]) - 2 * (r[2] - r[3])
            let even = (r[0] + r[1]) - 4 * (r[2] + r[3])
            let kink = (abs(odd) + abs(even)) / (2 * h)
            guard kink <= settings.kinkFraction * tolerance, numeric.isFinite else { return nil }
            return GradientProbe(direction: label, point: index, analytic: analytic, numeric: numeric, step: h,
                                 tolerance: tolerance)
        }

        var results: [GradientCheckResult] = []
        for k in names.indices {
            var probes: [GradientProbe] = []
            var accepted = 0, attempt = 0, resampled = 0, skipped = 0
            let count = shapes[k].reduce(1, *)
            while accepted < settings.points && attempt < settings.points + settings.maxResamples {
                let n = attempt
                attempt += 1
                let pt = try point(n)
                var rng = SplitMix64(seed: seed ^ (UInt64(k) << 32) ^ UInt64(n))
                var directions: [(String, [Double])] = []
                let g = pt.gradients[k].data.map(Double.init)
                let gNorm = g.reduce(0) { $0 + $1 * $1 }.squareRoot()
                if gNorm > 0 { directions.append(("along the gradient", g.map { $0 / gNorm })) }
                var random = (0..<count).map { _ in Double(rng.normal()) }
                let rNorm = max(random.reduce(0) { $0 + $1 * $1 }.squareRoot(), 1e-300)
                random = random.map { $0 / rNorm }
                directions.append(("along a random direction", random))
                var found: [GradientProbe] = []
                var atKink = false
                for (label, d) in directions {
                    guard let p = try probe(pt, k, d, label: label, index: n) else { atKink = true; break }
                    found.append(p)
                }
                if atKink {
                    resampled += 1
                    continue
                }
                accepted += 1
                probes += found
                let stride = max(1, count / max(settings.entriesPerTensor, 1))
                for j in 0..<min(settings.entriesPerTensor, count) {
                    let i = (j * stride + n) % count
                    var e = [Double](repeating: 0, count: count)
                    e[i] = 1
                    if let p = try probe(pt, k, e, label: "entry \(i)", index: n) {
                        probes.append(p)
                    } else {
                        skipped += 1
                    }
                }
            }
            let failures = probes.filter { !$0.passed }.sorted { $0.error / $0.tolerance > $1.error / $1.tolerance }
            let worst = probes.max { $0.error < $1.error }
            var result = GradientCheckResult(
                name: names[k], checked: probes.count, worstAbsoluteError: worst?.error ?? 0,
                worstAnalytic: worst?.analytic ?? 0, worstNumeric: worst?.numeric ?? 0,
                passed: failures.isEmpty && accepted == settings.points)
            result.failures = failures
            result.resampled = resampled
            result.skipped = skipped
            if accepted < settings.points {
                result.failures.append(GradientProbe(
                    direction: "only \(accepted) of \(settings.points) points away from kinks after \(attempt) tries",
                    point: attempt - 1, analytic: .nan, numeric: .nan, step: h, tolerance: 0))
            }
            results.append(result)
        }
        return results
    }
}

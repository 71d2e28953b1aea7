#if canImport(Glibc)
import Glibc
#endif
import SeqCellBase
import SeqCellHost

/// Gradient clipping, as PyTorch's `clip_grad_norm_` / `clip_grad_value_` (Keras'
/// `global_clipnorm` / `clipvalue`).
public enum Clipping: Equatable, Sendable {
    case none
    /// Scale all gradients by max / (‖g‖ + 1e-6) when the global L2 norm ‖g‖ exceeds max.
    case globalNorm(Float)
    /// Clamp every entry to [−v, v].
    case value(Float)
}

/// The global L2 norm of a set of gradients (accumulated in Double).
public func globalNorm(_ grads: [Tensor]) -> Double {
    var s = 0.0
    for g in grads { s += sumOfSquares(g.data) }
    return s.squareRoot()
}

/// The L2 norm of one flat gradient buffer (accumulated in Double, in order: the same value
/// as `globalNorm` of its tensors).
public func globalNorm(_ flat: [Float]) -> Double { sumOfSquares(flat).squareRoot() }

private func sumOfSquares(_ values: [Float]) -> Double {
    values.withUnsafeBufferPointer { p in
        var s = 0.0
        for v in p { s += Double(v) * Double(v) }
        return s
    }
}

/// Applies `clipping` in place to one flat gradient buffer; returns the norm before clipping
/// and whether it changed anything (the same values as `clip` over its tensors).
@discardableResult
public func clip(_ flat: inout [Float], _ clipping: Clipping) -> (norm: Double, clipped: Bool) {
    let norm = globalNorm(flat)
    switch clipping {
    case .none:
        return (norm, false)
    case .globalNorm(let maxNorm):
        let coef = Double(maxNorm) / (norm + 1e-6)
        guard coef < 1 else { return (norm, false) }
        flat.withUnsafeMutableBufferPointer { g in
            for j in g.indices { g[j] = Float(Double(g[j]) * coef) }
        }
        return (norm, true)
    case .value(let v):
        var changed = false
        flat.withUnsafeMutableBufferPointer { g in
            for j in g.indices {
                let c = min(max(g[j], -v), v)
                if c != g[j] { changed = true; g[j] = c }
            }
        }
        return (norm, changed)
    }
}

/// Applies `clipping` in place; returns the norm before clipping and whether it changed anything.
@discardableResult
public func clip(_ grads: inout [Tensor], _ clipping: Clipping) -> (norm: Double, clipped: Bool) {
    let norm = globalNorm(grads)
    switch clipping {
    case .none:
        return (norm, false)
    case .globalNorm(let maxNorm):
        let coef = Double(maxNorm) / (norm + 1e-6)
        guard coef < 1 else { return (norm, false) }
        for i in grads.indices { grads[i].data = grads[i].data.map { Float(Double($0) * coef) } }
        return (norm, true)
    case .value(let v):
        var changed = false
        for i in grads.indices {
            grads[i].data = grads[i].data.map { x in
                let c = min(max(x, -v), v)
                if c != x { changed = true }
                return c
            }
        }
        return (norm, changed)
    }
}

/// Learning-rate schedules, as PyTorch's StepLR and CosineAnnealingLR.
public enum LRSchedule: Equatable, Sendable {
    case constant
    /// lr · gamma^(step / every)
    case step(every: Int, gamma: Double)
    /// minLR + (lr − minLR)(1 + cos(π · step / totalSteps)) / 2, then minLR.
    case cosine(totalSteps: Int, minLR: Double)

    public func rate(base: Double, step: Int) -> Double {
        switch self {
        case .constant: return base
        case .step(let every, let gamma): return base * pow(gamma, Double(step / max(every, 1)))
        case .cosine(let total, let minLR):
            let s = min(step, total)
            return minLR + (base - minLR) * (1 + cos(Double.pi * Double(s) / Double(max(total, 1)))) / 2
        }
    }
}

public enum OptimizerKind: String, Sendable, CaseIterable {
    case sgd, adam, adamw
}

/// An optimizer's per-parameter state, laid out as the parameters' flat buffer
/// (`ParameterTree`): typed, one case per kind of optimizer.
public enum OptimizerState: Equatable, Sendable {
    /// Nothing kept: no step taken yet, or SGD without momentum.
    case empty
    /// SGD's momentum buffer.
    case momentum([Float])
    /// Adam's and AdamW's first and second moment estimates.
    case adam(m: [Float], v: [Float])

    /// The slots under the names a checkpoint stores them by (docs/FORMAT.md,
    /// `/training/slots/<name>`), in that order.
    public var namedSlots: [(name: String, values: [Float])] {
        switch self {
        case .empty: return []
        case .momentum(let b): return [(OptimizerState.momentumName, b)]
        case .adam(let m, let v): return [(OptimizerState.firstMomentName, m), (OptimizerState.secondMomentName, v)]
        }
    }

    /// The checkpoint's names of the slots.
    public static let momentumName = "momentum"
    public static let firstMomentName = "m"
    public static let secondMomentName = "v"

    /// Number of values each slot holds (0 when empty).
    public var elementCount: Int {
        switch self {
        case .empty: return 0
        case .momentum(let b): return b.count
        case .adam(let m, _): return m.count
        }
    }
}

/// SGD with momentum, Adam and AdamW, with PyTorch's update rules and defaults.
public struct Optimizer: Sendable {
    public var kind: OptimizerKind
    public var learningRate: Double
    public var momentum: Double = 0
    public var beta1: Double = 0.9
    public var beta2: Double = 0.999
    public var epsilon: Double = 1e-8
    /// L2 penalty added to the gradient (sgd, adam); decoupled decay for adamw.
    public var weightDecay: Double
    public var schedule: LRSchedule = .constant
    /// Steps taken.
    public private(set) var step: Int = 0
    /// Per-parameter state, in the parameters' flat layout.
    public private(set) var state: OptimizerState = .empty

    public init(kind: OptimizerKind, learningRate: Double, momentum: Double = 0, weightDecay: Double? = nil,
                schedule: LRSchedule = .constant) {
        self.kind = kind
        self.learningRate = learningRate
        self.momentum = momentum
        self.weightDecay = weightDecay ?? (kind == .adamw ? 0.01 : 0)
        self.schedule = schedule
    }

    /// The checkpoint names of the slots this optimizer keeps once it has stepped.
    public var slotNames: [String] {
        switch kind {
        case .sgd: return momentum > 0 ? [OptimizerState.momentumName] : []
        case .adam, .adamw: return [OptimizerState.firstMomentName, OptimizerState.secondMomentName]
        }
    }

    /// The learning rate the next step will use.
    public var currentRate: Double { schedule.rate(base: learningRate, step: step) }

    /// The state this optimizer keeps, from slots by checkpoint name (`slot(name)` gives a
    /// slot's flat values or nil when the checkpoint lacks it). Throws naming a missing slot.
    public func state(fromSlots slot: (String) throws -> [Float]?) throws -> OptimizerState {
        func need(_ name: String) throws -> [Float] {
            guard let v = try slot(name) else {
                throw SeqCellError(.checkpoint, "the checkpoint's optimizer state lacks slot '\(name)'")
            }
            return v
        }
        switch kind {
        case .sgd: return momentum > 0 ? .momentum(try need(OptimizerState.momentumName)) : .empty
        case .adam, .adamw:
            return .adam(m: try need(OptimizerState.firstMomentName), v: try need(OptimizerState.secondMomentName))
        }
    }

    /// Restores the step counter and the state saved in a checkpoint; the state must be of
    /// this optimizer's kind (`.empty` is always accepted: the first step creates it).
    public mutating func restore(step: Int, state: OptimizerState) throws {
        guard step >= 0, step < Int.max else {
            throw SeqCellError(.invalidArgument, "optimizer step \(step) is out of range")
        }
        switch (kind, state) {
        case (_, .empty), (.sgd, .momentum) where momentum > 0, (.adam, .adam), (.adamw, .adam): break
        default: throw SeqCellError(.invalidArgument, "optimizer state \(state.namedSlots.map(\.name)) does not belong to \(kind.rawValue)")
        }
        if case .adam(let m, let v) = state, m.count != v.count {
            throw SeqCellError(.shape, "optimizer slots 'm' and 'v' hold \(m.count) and \(v.count) values")
        }
        self.step = step
        self.state = state
    }

    /// Checks that `parameterCount` parameter values, `gradientCount` gradient values and the
    /// state (restored from a checkpoint) agree, so `update` indexes nothing out of range.
    public func check(parameterCount: Int, gradientCount: Int) throws {
        guard gradientCount == parameterCount else {
            throw SeqCellError(.shape, "optimizer: \(gradientCount) gradient values for \(parameterCount) parameter values")
        }
        if state != .empty, state.elementCount != parameterCount {
            throw SeqCellError(.shape, "optimizer slots \(state.namedSlots.map { "'\($0.name)'" }.joined(separator: ", ")) hold \(state.elementCount) values for \(parameterCount) parameter values")
        }
        guard step < Int.max else { throw SeqCellError(.invalidArgument, "optimizer step counter is at its maximum") }
    }

    /// Checks that `grads` match `params` in count and shapes, and the state their total size.
    public func check(params: [Tensor], grads: [Tensor]) throws {
        guard grads.count == params.count else {
            throw SeqCellError(.shape, "optimizer: \(grads.count) gradients for \(params.count) parameters")
        }
        for (i, (p, g)) in zip(params, grads).enumerated() {
            guard g.shape == p.shape, g.count == p.count, Boundary.elementCount(p.shape) == p.count else {
                throw SeqCellError(.shape, "optimizer: gradient \(i) is \(g.shape) for a parameter \(p.shape)")
            }
        }
        let n = params.reduce(0) { $0 + $1.count }
        try check(parameterCount: n, gradientCount: n)
    }

    /// One update of the tensors `params` with `grads` (same order and shapes: `check` says
    /// whether they are); the state is laid out as the tensors one after another.
    public mutating func update(_ params: inout [Tensor], _ grads: [Tensor]) {
        var flat = params.flatMap(\.data)
        update(parameters: &flat, gradients: grads.flatMap(\.data))
        var offset = 0
        for i in params.indices {
            let n = params[i].count
            params[i].data = Array(flat[offset..<(offset + n)])
            offset += n
        }
    }

    /// One update of the flat parameter buffer with the flat gradient buffer (same layout;
    /// `check(parameterCount:gradientCount:)` says whether they fit). Float arithmetic as
    /// PyTorch's single-precision optimizers; the per-step scalars are computed in Double.
    public mutating func update(parameters p: inout [Float], gradients g: [Float]) {
        precondition(p.count == g.count && (state == .empty || state.elementCount == p.count),
                     "optimizer: parameters, gradients and state differ in size")
        let lr = currentRate
        step += 1
        let n = p.count
        let wd = Float(weightDecay)
        switch kind {
        case .sgd:
            let rate = Float(lr)
            guard momentum > 0 else {
                p.withUnsafeMutableBufferPointer { p in
                    g.withUnsafeBufferPointer { g in
                        for j in 0..<n { p[j] -= rate * (g[j] + wd * p[j]) }
                    }
                }
                return
            }
            let mu = Float(momentum)
            var fresh = false
            var buf: [Float]
            if case .momentum(let b) = state { buf = b } else { buf = [Float](repeating: 0, count: n); fresh = true }
            state = .empty  // buf is the only reference while it is updated
            p.withUnsafeMutableBufferPointer { p in
                g.withUnsafeBufferPointer { g in
                    buf.withUnsafeMutableBufferPointer { b in
                        for j in 0..<n {
                            let d = g[j] + wd * p[j]
                            b[j] = fresh ? d : mu * b[j] + d
                            p[j] -= rate * b[j]
                        }
                    }
                }
            }
            state = .momentum(buf)
        case .adam, .adamw:
            var m: [Float], v: [Float]
            if case .adam(let m0, let v0) = state { (m, v) = (m0, v0) } else {
                m = [Float](repeating: 0, count: n)
                v = [Float](repeating: 0, count: n)
            }
            state = .empty
            let t = Double(step)
            let b1 = Float(beta1), b2 = Float(beta2)
            let stepSize = Float(lr / (1 - pow(beta1, t)))
            let c2Root = Float((1 - pow(beta2, t)).squareRoot())
            let eps = Float(epsilon)
            let decoupled = kind == .adamw
            let shrink = Float(1 - lr * weightDecay)
            p.withUnsafeMutableBufferPointer { p in
                g.withUnsafeBufferPointer { g in
                    m.withUnsafeMutableBufferPointer { m in
                        v.withUnsafeMutableBufferPointer { v in
                            for j in 0..<n {
                                var pj = p[j]
                                var gj = g[j]
                                if decoupled { pj *= shrink } else { gj += wd * pj }
                                let mj = b1 * m[j] + (1 - b1) * gj
                                let vj = b2 * v[j] + (1 - b2) * gj * gj
                                m[j] = mj
                                v[j] = vj
                                p[j] = pj - stepSize * mj / (vj.squareRoot() / c2Root + eps)
                            }
                        }
                    }
                }
            }
            state = .adam(m: m, v: v)
        }
    }
}

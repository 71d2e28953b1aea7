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
    for g in grads { for v in g.data { s += Double(v) * Double(v) } }
    return s.squareRoot()
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
    /// Slot tensors per parameter: "momentum" (sgd), "m" and "v" (adam, adamw).
    public var slots: [String: [Tensor]] = [:]

    public init(kind: OptimizerKind, learningRate: Double, momentum: Double = 0, weightDecay: Double? = nil,
                schedule: LRSchedule = .constant) {
        self.kind = kind
        self.learningRate = learningRate
        self.momentum = momentum
        self.weightDecay = weightDecay ?? (kind == .adamw ? 0.01 : 0)
        self.schedule = schedule
    }

    public var slotNames: [String] { kind == .sgd ? (momentum > 0 ? ["momentum"] : []) : ["m", "v"] }

    /// The learning rate the next step will use.
    public var currentRate: Double { schedule.rate(base: learningRate, step: step) }

    /// Restores the step counter and slots saved in a checkpoint.
    public mutating func restore(step: Int, slots: [String: [Tensor]]) {
        self.step = step
        self.slots = slots
    }

    /// Checks that `grads` and the slots (restored from a checkpoint, or settable) match
    /// `params` in count and shapes, so `update` indexes nothing out of range.
    public func check(params: [Tensor], grads: [Tensor]) throws {
        guard grads.count == params.count else {
            throw SeqCellError(.shape, "optimizer: \(grads.count) gradients for \(params.count) parameters")
        }
        for (i, (p, g)) in zip(params, grads).enumerated() {
            guard g.shape == p.shape, g.count == p.count, Boundary.elementCount(p.shape) == p.count else {
                throw SeqCellError(.shape, "optimizer: gradient \(i) is \(g.shape) for a parameter \(p.shape)")
            }
        }
        for name in slotNames {
            guard let slot = slots[name] else { continue }
            guard slot.count == params.count else {
                throw SeqCellError(.shape, "optimizer slot '\(name)' holds \(slot.count) tensors for \(params.count) parameters")
            }
            for (i, (s, p)) in zip(slot, params).enumerated() where s.shape != p.shape || s.count != p.count {
                throw SeqCellError(.shape, "optimizer slot '\(name)' tensor \(i) is \(s.shape) for a parameter \(p.shape)")
            }
        }
        guard step < Int.max else { throw SeqCellError(.invalidArgument, "optimizer step counter is at its maximum") }
    }

    /// One update of `params` with `grads` (same order and shapes: `check` says whether they are).
    public mutating func update(_ params: inout [Tensor], _ grads: [Tensor]) {
        let lr = currentRate
        step += 1
        for name in slotNames where slots[name] == nil {
            slots[name] = params.map { Tensor.zeros($0.shape) }
        }
        let t = Double(step)
        for i in params.indices {
            var p = params[i].data
            let g = grads[i].data
            switch kind {
            case .sgd:
                if momentum > 0 {
                    var buf = slots["momentum"]![i].data
                    for j in p.indices {
                        let gj = Double(g[j]) + weightDecay * Double(p[j])
                        let b = step == 1 ? gj : momentum * Double(buf[j]) + gj
                        buf[j] = Float(b)
                        p[j] = Float(Double(p[j]) - lr * b)
                    }
                    slots["momentum"]![i].data = buf
                } else {
                    for j in p.indices { p[j] = Float(Double(p[j]) - lr * (Double(g[j]) + weightDecay * Double(p[j]))) }
                }
            case .adam, .adamw:
                var m = slots["m"]![i].data, v = slots["v"]![i].data
                let c1 = 1 - pow(beta1, t), c2 = 1 - pow(beta2, t)
                for j in p.indices {
                    var pj = Double(p[j])
                    var gj = Double(g[j])
                    if kind == .adamw { pj -= lr * weightDecay * pj } else { gj += weightDecay * pj }
                    let mj = beta1 * Double(m[j]) + (1 - beta1) * gj
                    let vj = beta2 * Double(v[j]) + (1 - beta2) * gj * gj
                    m[j] = Float(mj)
                    v[j] = Float(vj)
                    pj -= lr * (mj / c1) / ((vj / c2).squareRoot() + epsilon)
                    p[j] = Float(pj)
                }
                slots["m"]![i].data = m
                slots["v"]![i].data = v
            }
            params[i].data = p
        }
    }
}

// Element-wise helpers shared by the Swift cells.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

@inlinable @inline(__always) public func sigmoid(_ x: Float) -> Float { 1 / (1 + expf(-x)) }
@inlinable @inline(__always) public func tanhActivation(_ x: Float) -> Float { tanhf(x) }

/// dst[r, :] = bias1 + bias2 (either may be nil) for `rows` rows of width `n`.
public func fillRows(
    _ dst: UnsafeMutablePointer<Float>, rows: Int, n: Int,
    bias1: UnsafePointer<Float>?, bias2: UnsafePointer<Float>?
) {
    guard rows > 0 else { return }
    for j in 0..<n { dst[j] = (bias1?[j] ?? 0) + (bias2?[j] ?? 0) }
    for r in 1..<max(rows, 1) { (dst + r * n).update(from: dst, count: n) }
}

/// acc[j] += Σ_r src[r, j] for a [rows, n] matrix.
public func addColumnSums(_ src: UnsafePointer<Float>, rows: Int, n: Int, into acc: UnsafeMutablePointer<Float>) {
    for r in 0..<rows {
        let s = src + r * n
        for j in 0..<n { acc[j] += s[j] }
    }
}

/// Copies `count` floats, or writes zeros when `src` is nil.
@inline(__always)
public func copyOrZero(_ src: UnsafePointer<Float>?, to dst: UnsafeMutablePointer<Float>, count: Int) {
    if let src { dst.update(from: src, count: count) } else { dst.update(repeating: 0, count: count) }
}

// MARK: - ONNX activations (the cells' non-default options)

/// The activation functions of ONNX's recurrent operators (RNN, GRU, LSTM), with ONNX's
/// formulas; alpha and beta are taken literally (no defaults are filled in here).
/// Used only on the cells' general path, never by their default fused kernels.
public enum ActivationKind: String, CaseIterable, Sendable {
    case sigmoid, tanh, relu, affine
    case leakyRelu = "leaky_relu", thresholdedRelu = "thresholded_relu", scaledTanh = "scaled_tanh"
    case hardSigmoid = "hard_sigmoid", elu, softsign, softplus

    /// The choice names in the order options list them (sigmoid, tanh, relu, affine, ...).
    public static let onnxOrder: [String] = allCases.map(\.rawValue)
}

/// One configured activation: f(x) and its derivative f'(x), from the pre-activation x.
public struct Activation: Sendable {
    public let kind: ActivationKind
    public let alpha: Float
    public let beta: Float

    public init(_ kind: ActivationKind, alpha: Float = 0, beta: Float = 0) {
        self.kind = kind
        self.alpha = alpha
        self.beta = beta
    }

    /// The activation named `choices[index]` (a choice option's value) with its alpha and beta.
    public init(choice index: Double, of choices: [String], alpha: Double, beta: Double) {
        self.init(ActivationKind(rawValue: choices[Int(index)])!, alpha: Float(alpha), beta: Float(beta))
    }

    @inline(__always)
    public func callAsFunction(_ x: Float) -> Float {
        switch kind {
        case .sigmoid: return sigmoid(x)
        case .tanh: return tanhf(x)
        case .relu: return x < 0 ? 0 : x  // relu(NaN) = NaN
        case .affine: return alpha * x + beta
        case .leakyRelu: return x >= 0 ? x : alpha * x
        case .thresholdedRelu: return x > alpha ? x : 0
        case .scaledTanh: return alpha * tanhf(beta * x)
        case .hardSigmoid: return max(0, min(1, alpha * x + beta))
        case .elu: return x >= 0 ? x : alpha * (expf(x) - 1)
        case .softsign: return x / (1 + abs(x))
        // log(1 + e^x) without overflow: x + log(1 + e^-x) for large x.
        case .softplus: return x > 0 ? x + log1pf(expf(-x)) : log1pf(expf(x))
        }
    }

    /// f'(x). At a kink the side the forward formula takes for x (relu: 0 at x = 0, as torch).
    @inline(__always)
    public func derivative(_ x: Float) -> Float {
        switch kind {
        case .sigmoid: let s = sigmoid(x); return s * (1 - s)
        case .tanh: let t = tanhf(x); return 1 - t * t
        case .relu: return x > 0 ? 1 : 0
        case .affine: return alpha
        case .leakyRelu: return x >= 0 ? 1 : alpha
        case .thresholdedRelu: return x > alpha ? 1 : 0
        case .scaledTanh: let t = tanhf(beta * x); return alpha * beta * (1 - t * t)
        case .hardSigmoid: let v = alpha * x + beta; return v > 0 && v < 1 ? alpha : 0
        case .elu: return x >= 0 ? 1 : alpha * expf(x)
        case .softsign: let d = 1 + abs(x); return 1 / (d * d)
        case .softplus: return sigmoid(x)
        }
    }
}

/// ONNX's `clip` of the recurrent operators: each activation's input is bounded to
/// [-clip, clip]; 0 means no clipping.
public struct Clip: Sendable {
    public let bound: Float
    public init(_ bound: Double) { self.bound = Float(bound) }
    public var isActive: Bool { bound > 0 }

    @inline(__always)
    public func callAsFunction(_ x: Float) -> Float {
        bound > 0 ? min(max(x, -bound), bound) : x
    }

    /// d clip(x)/dx: 1 inside [-clip, clip] (bounds included, as torch.clamp), else 0.
    @inline(__always)
    public func derivative(_ x: Float) -> Float {
        bound > 0 && (x < -bound || x > bound) ? 0 : 1
    }
}

/// The option specs of one activation: `name` (a choice of every ONNX activation, `first`
/// listed first so existing indices stay) and `name_alpha`, `name_beta`.
public func activationOptionSpecs(_ name: String, choices: [String], defaultIndex: Int, what: String) -> [OptionSpec] {
    let bound = Double(Float.greatestFiniteMagnitude)
    return [
        OptionSpec(name: name, description: "\(what): \(choices.joined(separator: ", ")) (default \(choices[defaultIndex])); "
                       + "ONNX's formulas, with \(name)_alpha and \(name)_beta",
                   kind: .choice(choices), defaultValue: Double(defaultIndex)),
        OptionSpec(name: name + "_alpha", description: "alpha of \(name) (affine, leaky_relu, thresholded_relu, scaled_tanh, "
                       + "hard_sigmoid, elu), taken literally; default 0",
                   kind: .float(min: -bound, max: bound), defaultValue: 0),
        OptionSpec(name: name + "_beta", description: "beta of \(name) (affine, scaled_tanh, hard_sigmoid), taken literally; default 0",
                   kind: .float(min: -bound, max: bound), defaultValue: 0),
    ]
}

/// The `clip` option spec (ONNX's cell clip; 0: none).
public func clipOptionSpec() -> OptionSpec {
    OptionSpec(name: "clip", description: "ONNX's cell clip: each activation's input is bounded to [-clip, clip]; 0 (default): none",
               kind: .float(min: 0, max: Double(Float.greatestFiniteMagnitude)), defaultValue: 0)
}

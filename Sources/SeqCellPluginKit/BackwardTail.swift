// SeqCellPluginKit: what every gate-matrix cell does once its backward steps are done — the
// input gradient and the weight and bias gradients, computed from the pre-activation gradients
// of all steps with a few whole-sequence GEMMs — and the per-step pieces the cells share.

/// Rows of a recurrent weight and what their gradient is made of: dW[rows] += dᵀ · S, with d
/// the gradients of the pre-activations those rows produce ([T·B, rows.count], leading
/// dimension `leadingDimension`) and S what the rows multiply at every step ([T·B, width]:
/// h_{t-1}, or for a GRU with the reset gate before W_hn, r ⊙ h_{t-1}).
public struct RecurrentGradientBlock {
    public var gradients: UnsafePointer<Float>
    public var leadingDimension: Int
    public var rows: Range<Int>
    public var inputs: UnsafePointer<Float>
    public var width: Int

    public init(gradients: UnsafePointer<Float>, leadingDimension: Int, rows: Range<Int>, inputs: UnsafePointer<Float>,
                width: Int) {
        self.gradients = gradients
        self.leadingDimension = leadingDimension
        self.rows = rows
        self.inputs = inputs
        self.width = width
    }

    /// All G rows of a recurrent weight [G, width], from gradients [T·B, G].
    public static func all(_ gradients: UnsafePointer<Float>, gates G: Int, inputs: UnsafePointer<Float>,
                           width: Int) -> RecurrentGradientBlock {
        RecurrentGradientBlock(gradients: gradients, leadingDimension: G, rows: 0..<G, inputs: inputs, width: width)
    }
}

/// Where a gate-matrix cell keeps its weights among its parameters. The built-in cells use
/// PyTorch's order: weight_ih, weight_hh, then (with bias) bias_ih, bias_hh.
public struct GateParameterIndices: Sendable {
    public var inputWeight: Int
    public var recurrentWeight: Int
    /// nil: the cell has no biases (bias=false).
    public var biases: (ih: Int, hh: Int)?

    public init(inputWeight: Int = 0, recurrentWeight: Int = 1, biases: (ih: Int, hh: Int)?) {
        self.inputWeight = inputWeight
        self.recurrentWeight = recurrentWeight
        self.biases = biases
    }

    /// PyTorch's order, with or without the two bias vectors.
    public static func pytorch(bias: Bool) -> GateParameterIndices {
        GateParameterIndices(biases: bias ? (2, 3) : nil)
    }
}

extension BackwardCall {
    /// The backward tail of a gate-matrix cell, from `dGates` [T·B, G], the gradients of the
    /// input part of every step's pre-activations (W_ih x + b_ih):
    ///
    ///     dX     = dGates · W_ih                         (when the host asks for dX)
    ///     dW_ih += dGatesᵀ · X
    ///     dW_hh[block.rows] += block.gradientsᵀ · block.inputs     for each block
    ///     db_ih += Σ_rows dGates,  db_hh += Σ_rows recurrentBias   (when the cell has biases)
    ///
    /// `recurrentBias` [T·B, G] is the gradient of the recurrent part's pre-activations
    /// (W_hh h + b_hh): `dGates` itself unless the two differ (a GRU's reset gate scales
    /// W_hn h + b_hn). A frozen parameter (a NULL `grad_params` entry, ABI 1.2) is skipped.
    /// The GEMMs accumulate with beta = 1 in the order listed, so the result does not depend
    /// on which other parameters are frozen.
    public func accumulateGateGradients(
        dGates: UnsafePointer<Float>, gates G: Int, inputSize I: Int, parameters p: GateParameterIndices,
        recurrent blocks: [RecurrentGradientBlock], recurrentBias: UnsafePointer<Float>? = nil
    ) {
        let rows = T * B
        if let gx = gradInput {
            sgemm(transA: false, transB: false, m: rows, n: I, k: G, a: dGates, lda: G, b: param(p.inputWeight), ldb: I,
                  beta: 0, c: gx, ldc: I)
        }
        if let dWih = gradParam(p.inputWeight) {
            sgemm(transA: true, transB: false, m: G, n: I, k: rows, a: dGates, lda: G, b: input, ldb: I,
                  beta: 1, c: dWih, ldc: I)
        }
        if let dWhh = gradParam(p.recurrentWeight) {
            for block in blocks {
                sgemm(transA: true, transB: false, m: block.rows.count, n: block.width, k: rows, a: block.gradients,
                      lda: block.leadingDimension, b: block.inputs, ldb: block.width,
                      beta: 1, c: dWhh + block.rows.lowerBound * block.width, ldc: block.width)
            }
        }
        guard let biases = p.biases else { return }
        let dbih = gradParam(biases.ih), dbhh = gradParam(biases.hh)
        let hhSource = recurrentBias ?? dGates
        if hhSource == dGates, let dbih, let dbhh {
            addColumnSums(dGates, rows: rows, n: G, into: dbih, and: dbhh)
            return
        }
        if let dbih { addColumnSums(dGates, rows: rows, n: G, into: dbih) }
        if let dbhh { addColumnSums(hhSource, rows: rows, n: G, into: dbhh) }
    }

    /// The state gradient carried to step t−1: rows `rows` (all samples by default) of
    /// `source` [B, width] are copied into `carried` [B, width] for the samples still running
    /// at step t; a sample that has ended keeps its gradient unchanged.
    @inline(__always)
    public func carryActiveRows(step t: Int, from source: UnsafePointer<Float>, into carried: UnsafeMutablePointer<Float>,
                                width: Int, rows: Range<Int>? = nil) {
        for b in rows ?? 0..<B where t < length(b) {
            (carried + b * width).update(from: source + b * width, count: width)
        }
    }
}

/// acc1[j] += Σ_r src[r, j] and acc2[j] += Σ_r src[r, j] for a [rows, n] matrix, in one pass
/// (each accumulator sums in the same order as two `addColumnSums` calls would).
func addColumnSums(_ src: UnsafePointer<Float>, rows: Int, n: Int, into acc1: UnsafeMutablePointer<Float>,
                   and acc2: UnsafeMutablePointer<Float>) {
    for r in 0..<rows {
        let s = src + r * n
        for j in 0..<n {
            acc1[j] += s[j]
            acc2[j] += s[j]
        }
    }
}

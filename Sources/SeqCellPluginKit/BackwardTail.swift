// SeqCellPluginKit: what every gate-matrix cell does once its backward steps are done — the
// input gradient and the weight and bias gradients, computed from the pre-activation gradients
// of all steps with a few whole-sequence GEMMs — and the per-step pieces the cells share.

import CSeqCellKernels

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

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
    ///
    /// `scratch` (`GateGradientProduct.workspaceFloats`, carved from the cell's workspace) lets
    /// the three products run on the packed kernel when the rule picks it; nil always calls
    /// the host's sgemm. Either way each weight-gradient element sums its T·B terms in one
    /// fixed order, whatever the host's thread count.
    public func accumulateGateGradients(
        dGates: UnsafePointer<Float>, gates G: Int, inputSize I: Int, parameters p: GateParameterIndices,
        recurrent blocks: [RecurrentGradientBlock], recurrentBias: UnsafePointer<Float>? = nil,
        scratch: UnsafeMutablePointer<Float>? = nil
    ) {
        let rows = T * B
        let packed = scratch != nil && GateGradientProduct.usesPacked(rows: rows)
        if let gx = gradInput {
            if packed, let scratch {
                GateGradientProduct.inputGradient(dGates, rows: rows, gates: G, w: param(p.inputWeight), inputSize: I,
                                                  into: gx, scratch: scratch)
            } else {
                sgemm(transA: false, transB: false, m: rows, n: I, k: G, a: dGates, lda: G, b: param(p.inputWeight),
                      ldb: I, beta: 0, c: gx, ldc: I)
            }
        }
        if let dWih = gradParam(p.inputWeight) {
            if packed, let scratch {
                GateGradientProduct.weightGradient(dGates, ld: G, outputs: G, inputs: input, width: I, rows: rows,
                                                   into: dWih, scratch: scratch)
            } else {
                sgemm(transA: true, transB: false, m: G, n: I, k: rows, a: dGates, lda: G, b: input, ldb: I,
                      beta: 1, c: dWih, ldc: I)
            }
        }
        if let dWhh = gradParam(p.recurrentWeight) {
            for block in blocks {
                let out = dWhh + block.rows.lowerBound * block.width
                if packed, let scratch {
                    GateGradientProduct.weightGradient(block.gradients, ld: block.leadingDimension,
                                                       outputs: block.rows.count, inputs: block.inputs,
                                                       width: block.width, rows: rows, into: out, scratch: scratch)
                } else {
                    sgemm(transA: true, transB: false, m: block.rows.count, n: block.width, k: rows, a: block.gradients,
                          lda: block.leadingDimension, b: block.inputs, ldb: block.width,
                          beta: 1, c: out, ldc: block.width)
                }
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

/// The backward tail's three big products on the packed kernel: dX = dGates · W_ih (W_ih
/// packed transposed) and dW += dᵀ · S (S [T·B, width] packed as W = Sᵀ, the gradients d read
/// transposed by `gemm_packed_xt_blocks`). The rule is measured like `InputProjection`'s: on the
/// AVX-512 path the packed kernel beats OpenBLAS 0.3.21 at these shapes (docs/PERFORMANCE.md,
/// "What each change bought"); elsewhere the host's sgemm runs them.
public enum GateGradientProduct {
    /// SEQCELL_BACKWARD_GEMM=blas or =packed fixes the choice (A/B measurements and tests).
    static let forced: String? = getenv("SEQCELL_BACKWARD_GEMM").map { String(cString: $0) }

    /// Output rows per task of a weight gradient: a 256-step slice of their gradients (64 KB)
    /// stays in L2 while the packed S streams past it.
    static let panelRows = 64

    /// Rows of dX per task.
    static let inputPanelRows = 256

    public static func usesPacked(rows: Int) -> Bool {
        if forced == "packed" { return true }
        if forced == "blas" { return false }
        return vectorKernels.isa == Int32(SCK_ISA_AVX512) && rows >= 64
    }

    /// Floats of workspace the packed tail needs for T·B = `rows` (0 when the host's sgemm runs
    /// it): W_ih packed for dX, or one S packed for a weight gradient (one at a time).
    /// `widths`: the widths of the recurrent blocks' inputs.
    public static func workspaceFloats(rows: Int, gates G: Int, inputSize I: Int, widths: [Int]) -> Int {
        guard usesPacked(rows: rows) else { return 0 }
        var n = Int(sck_packed_floats(Int64(I), Int64(G)))
        for w in [I] + widths { n = max(n, Int(sck_packed_floats(Int64(w), Int64(rows)))) }
        return n
    }

    /// Packs W [n, k] (element (j, q) at w[j·rs + q·cs]) into `scratch` (RecurrentProduct's packing).
    static func pack(_ w: UnsafePointer<Float>, rs: Int, cs: Int, n: Int, k: Int, into scratch: UnsafeMutablePointer<Float>) {
        RecurrentProduct.pack(w, rs: rs, cs: cs, n: n, k: k, into: scratch)
    }

    /// Runs `body(0..<tasks)` over the host's threads (serially for small products).
    static func share(_ tasks: Int, macs: Int, _ body: (Int) -> Void) {
        if tasks > 1 && macs >= 1 << 21 && hostParallelThreads() > 1 {
            hostParallelFor(tasks, body)
        } else {
            for t in 0..<tasks { body(t) }
        }
    }

    /// gx[rows, I] = dGates[rows, G] · W_ih[G, I] (overwrites gx).
    static func inputGradient(_ dGates: UnsafePointer<Float>, rows: Int, gates G: Int, w: UnsafePointer<Float>,
                              inputSize I: Int, into gx: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>) {
        if rows == 0 || I == 0 { return }
        if G == 0 { gx.update(repeating: 0, count: rows * I); return }
        pack(w, rs: 1, cs: I, n: I, k: G, into: scratch)
        let tasks = (rows + inputPanelRows - 1) / inputPanelRows
        share(tasks, macs: rows * I * G) { t in
            let lo = t * inputPanelRows, m = min(inputPanelRows, rows - lo)
            vectorKernels.gemm_packed(dGates + lo * G, Int64(m), Int64(G), scratch, Int64(I), Int64(G),
                                      gx + lo * I, Int64(I), 0)
        }
    }

    /// dW[outputs, width] += dᵀ · S: d the gradients [rows, ≥ outputs] (leading dimension `ld`),
    /// S the inputs [rows, width] (contiguous).
    static func weightGradient(_ d: UnsafePointer<Float>, ld: Int, outputs: Int, inputs s: UnsafePointer<Float>,
                               width: Int, rows: Int, into dW: UnsafeMutablePointer<Float>,
                               scratch: UnsafeMutablePointer<Float>) {
        if rows == 0 || outputs == 0 || width == 0 { return }
        pack(s, rs: 1, cs: width, n: width, k: rows, into: scratch)
        let blocks = sck_packed_blocks(Int64(width))
        let tasks = (outputs + panelRows - 1) / panelRows
        share(tasks, macs: rows * outputs * width) { t in
            let lo = t * panelRows, m = min(panelRows, outputs - lo)
            vectorKernels.gemm_packed_xt_blocks(d + lo, Int64(m), Int64(ld), scratch, Int64(width), Int64(rows),
                                                dW + lo * width, Int64(width), 1, 0, blocks)
        }
    }
}

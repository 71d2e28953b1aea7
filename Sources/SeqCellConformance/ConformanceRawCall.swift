import CSeqCell
import SeqCellBase
import SeqCellHost

// MARK: - Raw calls

/// A status and message from a raw plugin call.
struct RawResult {
    let status: seqcell_status
    let message: String
}

/// Every buffer of one forward/backward pair, passed to the plugin's C functions exactly as
/// built, so a check can hand over what `Cell` would refuse (NULLs, bad sizes, small
/// workspaces) or what it always hides (pre-filled gradient buffers).
final class RawCall {
    let cell: Cell
    let T: Int
    let B: Int
    let lengths: StableBuffer<Int32>?
    let input: StableBuffer<Float>
    let params: [StableBuffer<Float>]
    let initialStates: [StableBuffer<Float>]
    let output: StableBuffer<Float>
    let finalStates: [StableBuffer<Float>]
    let gradOutput: StableBuffer<Float>
    let gradInput: StableBuffer<Float>
    let gradInitialStates: [StableBuffer<Float>]
    let gradParams: [StableBuffer<Float>]
    let paramPointers: StableBuffer<UnsafePointer<Float>?>
    let initialPointers: StableBuffer<UnsafePointer<Float>?>
    let finalPointers: StableBuffer<UnsafeMutablePointer<Float>?>
    let gradInitialPointers: StableBuffer<UnsafeMutablePointer<Float>?>
    let gradParamPointers: StableBuffer<UnsafeMutablePointer<Float>?>
    let workspace: AlignedBuffer
    let trainingBytes: Int
    let inferenceBytes: Int

    init(_ cell: Cell, inputs: PluginConformance.Inputs, lengths: [Int32]?) throws {
        let (T, B) = (inputs.x.shape[0], inputs.x.shape[1])
        self.cell = cell
        self.T = T
        self.B = B
        self.lengths = lengths.map { StableBuffer($0) }
        input = StableBuffer(inputs.x.data)
        params = inputs.params.map { StableBuffer($0.data) }
        initialStates = inputs.h0.map { StableBuffer($0.data) }
        output = StableBuffer([Float](repeating: 0, count: T * B * cell.outputSize))
        finalStates = cell.states.map { StableBuffer([Float](repeating: 0, count: B * $0.size)) }
        var rng = SplitMix64(seed: 99)
        gradOutput = StableBuffer(rng.uniformTensor([T, B, cell.outputSize], scale: 1).data)
        gradInput = StableBuffer([Float](repeating: 0, count: T * B * cell.inputSize))
        gradInitialStates = cell.states.map { StableBuffer([Float](repeating: 0, count: B * $0.size)) }
        gradParams = cell.params.map { StableBuffer([Float](repeating: 0, count: $0.count)) }
        paramPointers = StableBuffer(params.map { UnsafePointer($0.pointer) })
        initialPointers = StableBuffer(initialStates.map { UnsafePointer($0.pointer) })
        finalPointers = StableBuffer(finalStates.map { $0.pointer })
        gradInitialPointers = StableBuffer(gradInitialStates.map { $0.pointer })
        gradParamPointers = StableBuffer(gradParams.map { $0.pointer })
        trainingBytes = try cell.requiredWorkspace(T: T, B: B, training: true)
        inferenceBytes = try cell.requiredWorkspace(T: T, B: B, training: false)
        workspace = try AlignedBuffer(bytes: max(trainingBytes, inferenceBytes))
    }

    /// A copy of the parameter table with entry `i` NULL, or nil if there is no entry `i`.
    func paramTable(nullAt i: Int) -> StableBuffer<UnsafePointer<Float>?>? {
        guard i < params.count else { return nil }
        var table = paramPointers.values
        table[i] = nil
        return StableBuffer(table)
    }

    /// A copy of the parameter-gradient table with entry `i` NULL, or nil if there is none.
    func gradParamTable(nullAt i: Int) -> StableBuffer<UnsafeMutablePointer<Float>?>? {
        guard i < gradParams.count else { return nil }
        var table = gradParamPointers.values
        table[i] = nil
        return StableBuffer(table)
    }

    /// Valid arguments for a forward over every buffer here.
    func forwardArgs(training: Bool) -> seqcell_forward_args {
        ABICall.forwardArgs(T: T, B: B, training: training, input: input.constPointer, lengths: lengths?.constPointer,
                            params: paramPointers.constPointer, initialStates: initialPointers.constPointer,
                            output: output.pointer, finalStates: finalPointers.constPointer,
                            workspace: workspace.pointer, workspaceBytes: training ? trainingBytes : inferenceBytes)
    }

    /// Valid arguments for the backward after a training forward.
    func backwardArgs() -> seqcell_backward_args {
        ABICall.backwardArgs(T: T, B: B, input: input.constPointer, lengths: lengths?.constPointer,
                             params: paramPointers.constPointer, initialStates: initialPointers.constPointer,
                             output: output.constPointer, gradOutput: gradOutput.constPointer, gradFinalStates: nil,
                             gradInput: gradInput.pointer, gradInitialStates: gradInitialPointers.constPointer,
                             gradParams: gradParamPointers.constPointer,
                             workspace: workspace.pointer, workspaceBytes: trainingBytes)
    }

    /// The plugin's forward on `forwardArgs(training:)` as `adjust` leaves them.
    func forward(training: Bool, _ adjust: (inout seqcell_forward_args) -> Void = { _ in }) -> RawResult {
        var args = forwardArgs(training: training)
        adjust(&args)
        var error = ErrorBuffer()
        let status = cell.rawForward(&args, error: &error)
        return RawResult(status: status, message: error.text)
    }

    /// The plugin's backward on `backwardArgs()` as `adjust` leaves them.
    func backward(_ adjust: (inout seqcell_backward_args) -> Void = { _ in }) -> RawResult {
        var args = backwardArgs()
        adjust(&args)
        var error = ErrorBuffer()
        let status = cell.rawBackward(&args, error: &error)
        return RawResult(status: status, message: error.text)
    }

    /// The gradient buffers' contents.
    struct GradientValues {
        var input: [Float]
        var initialStates: [[Float]]
        var params: [[Float]]
    }

    var gradients: GradientValues {
        GradientValues(input: gradInput.values, initialStates: gradInitialStates.map(\.values),
                       params: gradParams.map(\.values))
    }

    /// What `prefillGradients(seed:)` writes: random parameter gradients, and values far
    /// from any real gradient in the buffers backward must overwrite.
    func prefilled(seed: UInt64) -> GradientValues {
        var rng = SplitMix64(seed: seed)
        return GradientValues(
            input: gradInput.values.map { _ in 1000 + rng.uniform(0, 1) },
            initialStates: gradInitialStates.map { $0.values.map { _ in -1000 + rng.uniform(0, 1) } },
            params: gradParams.map { $0.values.map { _ in rng.uniform(-1, 1) } })
    }

    func prefillGradients(seed: UInt64) {
        let p = prefilled(seed: seed)
        gradInput.assign(p.input)
        for (buffer, values) in zip(gradInitialStates, p.initialStates) { buffer.assign(values) }
        for (buffer, values) in zip(gradParams, p.params) { buffer.assign(values) }
    }
}

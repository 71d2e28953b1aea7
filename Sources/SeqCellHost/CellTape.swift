import Synchronization
import SeqCellBase

// What a cell call returns: the forward result, the training tape backward consumes, and
// the gradients.

extension Cell {
    /// What a training-mode forward keeps for backward. One backward per tape: a cell may
    /// use the workspace as scratch during backward.
    public final class Tape: @unchecked Sendable {
        private let used = Mutex(false)
        /// The `token` of the cell whose forward made this tape, and that cell's description.
        let cellToken: UInt64
        let cellDescription: String

        /// Marks the tape used; false if it already was.
        func claim() -> Bool { used.withLock { u in defer { u = true }; return !u } }

        /// The forward's checked inputs (immutable: what backward passes back to the plugin).
        let call: CellCallInputs
        /// [T, B, outputSize]
        let output: Tensor
        let workspace: AlignedBuffer
        /// Gets the workspace back for reuse when the tape is released.
        private weak var owner: Cell?

        var input: Tensor { call.input }
        package var lengths: [Int32]? { call.lengths }
        var params: [Tensor] { call.params }
        var initialStates: [Tensor?] { call.initialStates }

        init(call: CellCallInputs, output: Tensor, workspace: AlignedBuffer, owner: Cell) {
            self.cellToken = owner.token
            self.cellDescription = owner.summaryForErrors
            self.call = call
            self.output = output
            self.workspace = workspace
            self.owner = owner
        }

        deinit { owner?.recycle(workspace) }
    }

    public struct ForwardResult {
        /// [T, B, outputSize]
        public var output: Tensor
        /// One [B, size] tensor per state.
        public var finalStates: [Tensor]
        /// Set when the call ran in training mode.
        public var tape: Tape?
    }

    public struct Gradients {
        /// [T, B, inputSize], or nil when not asked for.
        public var input: Tensor?
        /// One [B, size] tensor per state.
        public var initialStates: [Tensor]
        /// One tensor per parameter, shaped like it.
        public var params: [Tensor]

        package init(input: Tensor?, initialStates: [Tensor], params: [Tensor]) {
            self.input = input
            self.initialStates = initialStates
            self.params = params
        }
    }
}

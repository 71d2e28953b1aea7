import SeqCellBase
import SeqCellHost

// The boundary checks that need a cell: states and parameters against its layout.
extension Boundary {
    /// Checks one direction's initial states (or final-state gradients): none, or one entry
    /// per state of `cell`, each nil or [B, size].
    package static func checkStates(_ states: [Tensor?], cell: Cell, B: Int, _ what: @autoclosure () -> String) throws {
        guard states.isEmpty || states.count == cell.states.count else {
            throw SeqCellError(.shape, "\(what()): \(states.count) tensors for cell '\(cell.type.id)', which has \(cell.states.count) state(s) ("
                               + cell.states.map(\.name).joined(separator: ", ") + ")")
        }
        for (s, info) in zip(states, cell.states) {
            guard let s else { continue }
            try checkConsistent(s, "\(what()) '\(info.name)'")
            guard s.shape == [B, info.size] else {
                throw SeqCellError(.shape, "\(what()) '\(info.name)' must be [\(B), \(info.size)], got \(s.shape)")
            }
        }
    }

    /// Checks one direction's parameter tensors against its cell's layout.
    package static func checkParams(_ dc: DirectionalCell, _ what: @autoclosure () -> String) throws {
        guard dc.params.count == dc.cell.params.count else {
            throw SeqCellError(.shape, "\(what()): cell '\(dc.cell.type.id)' has \(dc.cell.params.count) parameters, \(dc.params.count) given")
        }
        for (p, info) in zip(dc.params, dc.cell.params) {
            guard p.shape == info.shape else {
                throw SeqCellError(.shape, "\(what()): parameter '\(info.name)' must be \(info.shape), got \(p.shape)")
            }
            try checkConsistent(p, "\(what()): parameter '\(info.name)'")
        }
    }
}

import Foundation
import SeqCellBase
import SeqCellHost

// What a checkpoint holds, as values: the model core makes and consumes them (the trainer
// saves and resumes through them, parameters are named by their checkpoint paths); reading
// and writing the HDF5 file is SeqCellFormats' (Checkpoint/Checkpoint.swift).

/// Training state a checkpoint may carry beside the model (docs/FORMAT.md, `/training`).
public struct TrainingState: Equatable, Sendable {
    /// Optimizer steps taken so far.
    public var step: Int
    /// The optimizer's name, e.g. "adam".
    public var optimizer: String
    /// The training configuration as JSON text.
    public var config: String
    /// The random generator's state, opaque bytes.
    public var rng: [UInt8]
    /// Per-parameter optimizer slots: slot name (e.g. "m", "v") → parameter path → tensor.
    public var slots: [String: [String: Tensor]]

    public init(step: Int, optimizer: String, config: String, rng: [UInt8], slots: [String: [String: Tensor]] = [:]) {
        self.step = step
        self.optimizer = optimizer
        self.config = config
        self.rng = rng
        self.slots = slots
    }
}

/// A loaded checkpoint.
public struct Checkpoint: Sendable {
    public var model: Model
    public var training: TrainingState?
    /// [major, minor] of the file's format.
    public var formatVersion: [Int]
    public var creator: String

    public init(model: Model, training: TrainingState? = nil) {
        self.model = model
        self.training = training
        formatVersion = [CheckpointFormat.major, CheckpointFormat.minor]
        creator = SeqCellInfo.creator
    }
}

/// The SeqCell checkpoint format (docs/FORMAT.md): names and rules in one place.
public enum CheckpointFormat {
    public static let name = "seqcell-checkpoint"
    public static let major = 1
    /// The newest minor this SeqCell reads and writes. 1.1 added the embedding stage
    /// (`/model/embedding`, `/@requires`); 1.2 `/model@output_steps` (a model whose output is
    /// its last step) and the optional `/model/source`; a file that uses nothing newer is
    /// written as 1.0.
    public static let minor = 2

    /// Features a reader must understand to read a file, listed in its root attribute
    /// `requires`; a reader refuses a file that lists one it does not know.
    public static let knownRequirements: Set<String> = ["embedding", "output_steps"]

    /// The version and requirements a file holding `model` is written with: the oldest that
    /// can describe it, so readers of older minors keep reading what they can. A last-step
    /// model requires `output_steps` (an older reader would compute another output); the
    /// source names are informational and need nothing.
    package static func version(for model: Model) -> (version: [Int], requires: [String]) {
        var minor = 0
        var requires: [String] = []
        if model.embedding != nil { minor = 1; requires.append("embedding") }
        if model.outputSteps != .all { minor = 2; requires.append("output_steps") }
        return ([major, minor], requires)
    }

    /// Layer group name: zero-padded so HDF5's alphabetical listing is numeric order.
    package static func layerName(_ k: Int, count: Int) -> String {
        let width = max(2, String(max(count - 1, 0)).count)
        let s = String(k)
        return String(repeating: "0", count: max(0, width - s.count)) + s
    }

    package static func roleName(_ r: ParamInfo.Role) -> String {
        switch r {
        case .inputWeight: return "input_weight"
        case .recurrentWeight: return "recurrent_weight"
        case .bias: return "bias"
        case .other: return "other"
        }
    }
}

extension Model {
    /// Every parameter with its checkpoint path, in the parameter tree's order (layers,
    /// directions, the cell's parameter order, then `head/weight`, `head/bias`, then
    /// `embedding/weight`): a convenience built from `parameterTree`.
    public var namedParameters: [(path: String, value: Tensor)] {
        var out: [(path: String, value: Tensor)] = []
        parameterTree.forEachParameter(of: self) { e, t in out.append((e.path, t)) }
        return out
    }

    /// Replaces every parameter, in `namedParameters` order; shapes must match.
    public mutating func setParameters(_ values: [Tensor]) throws {
        let tree = parameterTree
        try tree.scatterParameters(tree.flatten(values, what: "parameter"), into: &self)
    }
}

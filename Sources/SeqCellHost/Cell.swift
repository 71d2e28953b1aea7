import CSeqCell
import Synchronization

#if canImport(Glibc)
import Glibc
#endif
import SeqCellBase

/// A parameter tensor a configured cell declares.
public struct ParamInfo: Equatable, Sendable {
    public enum Role: Int32, Sendable { case other = 0, inputWeight = 1, recurrentWeight = 2, bias = 3 }
    public let name: String
    public let role: Role
    public let shape: [Int]
    /// How rows split into gate blocks, e.g. "i,f,g,o"; "" when the cell has one block.
    public let gateOrder: String
    public let description: String
    /// How the host initialises it (ABI 1.2; `.role` for older plugins).
    public var initializer: ParamInitializer = .role
    /// A checkpoint may omit it (ABI 1.2, `SEQCELL_PARAM_OPTIONAL`): it then reads as
    /// `initializer`'s constant, or zeros.
    public var optional: Bool = false
    public var count: Int { shape.reduce(1, *) }

    /// The values a checkpoint that omits this optional parameter stands for.
    public var omittedValue: Float {
        if case .constant(let v) = initializer { return Float(v) }
        return 0
    }
}

/// How a parameter is initialised (seqcell.h, `SEQCELL_INIT_*`).
public enum ParamInitializer: Equatable, Sendable, CustomStringConvertible {
    /// By role: the host's scheme (U(−1/√H, 1/√H), or orthogonal recurrent weights).
    case role
    /// Every entry from U(lower, upper).
    case uniform(lower: Double, upper: Double)
    /// Every entry equal to the value.
    case constant(Double)

    public var description: String {
        switch self {
        case .role: return "by role"
        case .uniform(let a, let b): return "uniform in [\(a), \(b)]"
        case .constant(let v): return "constant \(v)"
        }
    }
}

/// A state tensor a configured cell carries from step to step ([B, size] per call).
public struct StateInfo: Equatable, Sendable {
    public let name: String
    public let size: Int
}

/// A cell configured for one input size, hidden size and option set: an instance of the
/// plugin (`create`d once, `destroy`ed in deinit). Immutable and safe to share: the ABI lets
/// forward and backward run concurrently, each call with its own workspace.
public final class Cell: @unchecked Sendable {
    public let type: CellType
    public let inputSize: Int
    public let hiddenSize: Int
    public let options: [String: OptionValue]
    public let params: [ParamInfo]
    public let states: [StateInfo]
    public let outputSize: Int
    /// The plugin's instance, for raw ABI calls (the conformance kit's bad-argument checks).
    package let instance: UnsafeMutableRawPointer
    let desc: seqcell_cell_desc
    /// Workspaces of finished calls, reused by later ones so a warmed-up cell allocates no
    /// workspace per call. Each call takes one out (threads never share one) and gives it
    /// back after an inference call, or when its training tape is released.
    private let workspacePool = Mutex<[AlignedBuffer]>([])
    /// How many idle workspaces a cell keeps (enough for a few concurrent callers).
    static let workspacePoolLimit = 4
    /// Identifies this instance in the tapes its forward calls make (never reused, unlike
    /// an object address), so `backward` refuses a tape from another cell.
    let token: UInt64
    private static let tokens = Atomic<UInt64>(0)

    init(type: CellType, inputSize: Int, hiddenSize: Int, options: [String: OptionValue]) throws {
        self.type = type
        self.inputSize = inputSize
        self.hiddenSize = hiddenSize
        self.options = options
        let desc = type.desc
        self.desc = desc
        self.token = Cell.tokens.add(1, ordering: .relaxed).newValue
        let values = try type.options.map { option in
            guard let value = options[option.name] else {
                throw SeqCellError(.invalidArgument, "cell '\(type.id)': option '\(option.name)' has no value")
            }
            return option.abiValue(value)
        }
        var error = ErrorBuffer()
        var inst: UnsafeMutableRawPointer? = nil
        let status = values.withUnsafeBufferPointer { vals in
            var config = seqcell_config()
            config.struct_size = UInt32(MemoryLayout<seqcell_config>.size)
            config.num_options = Int32(values.count)
            config.input_size = Int64(inputSize)
            config.hidden_size = Int64(hiddenSize)
            config.options = vals.baseAddress
            return error.call { type.rawCreate(&config, &inst, $0, $1) }
        }
        guard status == SEQCELL_OK, let inst else {
            throw SeqCellError(.cell, "cell '\(type.id)' rejected input size \(inputSize), hidden size \(hiddenSize), "
                + "options \(Cell.format(options)): \(error.message(status: status))")
        }
        instance = inst
        do {
            (params, states, outputSize) = try Cell.readLayout(desc.layout(inst), cellID: type.id)
        } catch {
            desc.destroy(inst)
            throw error
        }
    }

    deinit { desc.destroy(instance) }

    /// A workspace of at least `bytes`, from the pool when one is big enough.
    func takeWorkspace(bytes: Int) throws -> AlignedBuffer {
        if bytes == 0 { return try AlignedBuffer(bytes: 0) }
        let reused: AlignedBuffer? = workspacePool.withLock { pool in
            // The smallest idle buffer that fits.
            var best: (index: Int, bytes: Int)? = nil
            for (i, b) in pool.enumerated() where b.bytes >= bytes {
                if best.map({ b.bytes < $0.bytes }) ?? true { best = (i, b.bytes) }
            }
            return best.map { pool.remove(at: $0.index) }
        }
        return try reused ?? AlignedBuffer(bytes: bytes)
    }

    /// Returns a workspace to the pool (dropping the smallest idle one when full).
    func recycle(_ buffer: AlignedBuffer) {
        guard buffer.bytes > 0 else { return }
        workspacePool.withLock { pool in
            pool.append(buffer)
            if pool.count > Cell.workspacePoolLimit, let i = pool.indices.min(by: { pool[$0].bytes < pool[$1].bytes }) {
                pool.remove(at: i)
            }
        }
    }

    /// Idle workspaces held for reuse (tests).
    var pooledWorkspaces: Int { workspacePool.withLock { $0.count } }

    package static func format(_ options: [String: OptionValue]) -> String {
        options.isEmpty ? "{}" : "{" + options.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", ") + "}"
    }

    /// Reads and checks a layout: positive shapes within `PluginLimits`, unique names, at
    /// least one state. The layout struct and its descriptor arrays are read by the rules of
    /// `PluginABI` (ABI 1.0 minimum sizes, the declared stride), every size is checked with
    /// overflow-checked arithmetic before anything is allocated from it.
    static func readLayout(_ layout: UnsafePointer<seqcell_layout>?, cellID: String) throws
        -> ([ParamInfo], [StateInfo], Int)
    {
        func bad(_ why: String) -> SeqCellError { SeqCellError(.plugin, "cell '\(cellID)': invalid layout: \(why)") }
        guard let layout else { throw bad("layout() returned NULL") }
        let l: seqcell_layout
        do {
            l = try PluginABI.copy(seqcell_layout.self, from: UnsafeRawPointer(layout),
                                   minimum: PluginABI.Size10.layout, what: "layout")
        } catch let e as SeqCellError { throw bad(e.message) }
        guard l.num_params >= 0, l.num_params <= 64, l.num_params == 0 || l.params != nil else {
            throw bad("num_params \(l.num_params) with params \(l.params == nil ? "NULL" : "set") (0...64 parameters allowed)")
        }
        guard l.num_states >= 1, l.num_states <= 16, let statesPtr = l.states else {
            throw bad("a cell needs 1...16 states, declares \(l.num_states)\(l.states == nil ? " (states NULL)" : "")")
        }
        let maxDim = PluginLimits.maxDimension
        guard l.output_size >= 1, l.output_size <= Int64(maxDim) else {
            throw bad("output_size must be in 1...\(maxDim), got \(l.output_size)")
        }
        let paramDescs: [seqcell_param_desc]
        let stateDescs: [seqcell_state_desc]
        do {
            paramDescs = try l.params.map {
                try PluginABI.array(seqcell_param_desc.self, from: UnsafeRawPointer($0), count: Int(l.num_params),
                                    minimum: PluginABI.Size10.paramDesc, what: "parameter descriptor")
            } ?? []
            stateDescs = try PluginABI.array(seqcell_state_desc.self, from: UnsafeRawPointer(statesPtr),
                                             count: Int(l.num_states), minimum: PluginABI.Size10.stateDesc,
                                             what: "state descriptor")
        } catch let e as SeqCellError { throw bad(e.message) }
        var params: [ParamInfo] = []
        var totalBytes = 0
        for (i, p) in paramDescs.enumerated() {
            guard let namePtr = p.name else { throw bad("parameter \(i) has no name (NULL)") }
            let name: String
            do {
                name = try PluginABI.string(namePtr, limit: PluginABI.maxNameBytes, what: "parameter \(i) name")
            } catch let e as SeqCellError { throw bad(e.message) }
            guard isIdentifier(name) else { throw bad("parameter name '\(name)' is not [a-z0-9_]+") }
            guard !params.contains(where: { $0.name == name }) else { throw bad("parameter '\(name)' declared twice") }
            guard p.rank == 1 || p.rank == 2 else { throw bad("parameter '\(name)' has rank \(p.rank); 1 or 2 allowed") }
            let raw = p.rank == 1 ? [p.shape.0] : [p.shape.0, p.shape.1]
            let shown = "[" + raw.map(String.init).joined(separator: ", ") + "]"
            guard raw.allSatisfy({ $0 >= 1 && $0 <= Int64(maxDim) }) else {
                throw bad("parameter '\(name)' has shape \(shown); every dimension must be in 1...\(maxDim)")
            }
            let shape = raw.map { Int($0) }
            guard let bytes = PluginLimits.bytes(shape), bytes <= PluginLimits.maxBufferBytes else {
                throw bad("parameter '\(name)' has shape \(shown): \(PluginLimits.bytes(shape).map { "\($0) bytes" } ?? "a byte size that overflows 64 bits"), more than the \(PluginLimits.maxBufferBytes)-byte (1 TiB) limit")
            }
            totalBytes += bytes  // at most 64 × 2^40: no overflow
            guard totalBytes <= PluginLimits.maxBufferBytes else {
                throw bad("the parameters up to '\(name)' need \(totalBytes) bytes, more than the \(PluginLimits.maxBufferBytes)-byte (1 TiB) limit")
            }
            let gateOrder: String, description: String
            do {
                gateOrder = try PluginABI.optionalString(p.gate_order, limit: PluginABI.maxNameBytes,
                                                         what: "parameter '\(name)' gate order")
                description = try PluginABI.optionalString(p.description, limit: PluginABI.maxTextBytes,
                                                           what: "parameter '\(name)' description")
            } catch let e as SeqCellError { throw bad(e.message) }
            // ABI 1.2 fields (zero, i.e. by role and required, for an older plugin's descriptor).
            let initializer: ParamInitializer
            switch p.`init` {
            case SEQCELL_INIT_ROLE: initializer = .role
            case SEQCELL_INIT_UNIFORM:
                guard p.init_a.isFinite, p.init_b.isFinite, p.init_a <= p.init_b else {
                    throw bad("parameter '\(name)' asks for a uniform initialisation in [\(p.init_a), \(p.init_b)]; "
                        + "the bounds must be finite with init_a <= init_b")
                }
                initializer = .uniform(lower: p.init_a, upper: p.init_b)
            case SEQCELL_INIT_CONSTANT:
                guard p.init_a.isFinite else {
                    throw bad("parameter '\(name)' asks for the constant \(p.init_a); it must be finite")
                }
                initializer = .constant(p.init_a)
            default:
                throw bad("parameter '\(name)' has init \(p.`init`); known: 0 (by role), 1 (uniform), 2 (constant)")
            }
            guard p.flags & ~Int32(SEQCELL_PARAM_OPTIONAL) == 0 else {
                throw bad("parameter '\(name)' has unknown flags 0x\(String(UInt32(bitPattern: p.flags), radix: 16))")
            }
            params.append(ParamInfo(
                name: name, role: ParamInfo.Role(rawValue: p.role) ?? .other, shape: shape,
                gateOrder: gateOrder, description: description, initializer: initializer,
                optional: p.flags & Int32(SEQCELL_PARAM_OPTIONAL) != 0))
        }
        var states: [StateInfo] = []
        for (i, s) in stateDescs.enumerated() {
            guard let namePtr = s.name else { throw bad("state \(i) has no name (NULL)") }
            let name: String
            do {
                name = try PluginABI.string(namePtr, limit: PluginABI.maxNameBytes, what: "state \(i) name")
            } catch let e as SeqCellError { throw bad(e.message) }
            guard isIdentifier(name), !states.contains(where: { $0.name == name }) else {
                throw bad("state name '\(name)' is not a unique [a-z0-9_]+ name")
            }
            guard s.size >= 1, s.size <= Int64(maxDim) else {
                throw bad("state '\(name)' has size \(s.size); it must be in 1...\(maxDim)")
            }
            states.append(StateInfo(name: name, size: Int(s.size)))
        }
        return (params, states, Int(l.output_size))
    }

    /// Total number of parameter values.
    public var parameterCount: Int { params.reduce(0) { $0 + $1.count } }

    /// Bytes of workspace the plugin asks for, or -1 when its answer is not a size the host
    /// can allocate (`requiredWorkspace` throws the reason).
    public func workspaceSize(T: Int, B: Int, training: Bool) -> Int {
        (try? requiredWorkspace(T: T, B: B, training: training)) ?? -1
    }

    /// Bytes of workspace the plugin asks for, checked: a size above
    /// `PluginLimits.maxBufferBytes` (SIZE_MAX included) is an error naming the cell, the
    /// call and the number of bytes.
    public func requiredWorkspace(T: Int, B: Int, training: Bool) throws -> Int {
        let mode = training ? SEQCELL_MODE_TRAINING : SEQCELL_MODE_INFERENCE
        let raw: Int
        if let checked = desc.workspace_size_checked {
            // ABI 1.2: the plugin can say that no size fits (an overflow) instead of a number.
            var answer = 0
            var error = ErrorBuffer()
            let status = error.call { checked(instance, Int64(T), Int64(B), mode, &answer, $0, $1) }
            guard status == SEQCELL_OK else {
                throw SeqCellError(.plugin,
                    "cell '\(type.id)': workspace_size(T=\(T), B=\(B), \(training ? "training" : "inference")) failed: "
                    + error.message(status: status))
            }
            raw = answer
        } else {
            guard let legacy = desc.workspace_size else { throw SeqCellError(.plugin, "cell '\(type.id)': no workspace_size") }
            raw = legacy(instance, Int64(T), Int64(B), mode)
        }
        // size_t arrives as Int; read it back as the unsigned count of bytes it is.
        let bytes = UInt(bitPattern: raw)
        guard bytes <= UInt(PluginLimits.maxBufferBytes) else {
            throw SeqCellError(.plugin,
                "cell '\(type.id)': workspace_size(T=\(T), B=\(B), \(training ? "training" : "inference")) asks for \(bytes) bytes, "
                + "more than the \(PluginLimits.maxBufferBytes)-byte (1 TiB) limit; the plugin's size computation is wrong or overflows")
        }
        return Int(bytes)
    }

    // MARK: - Calls

    /// "cell 'lstm' (input 3, hidden 4, options {…})", for errors that must tell cells apart.
    var summaryForErrors: String {
        "cell '\(type.id)' (input \(inputSize), hidden \(hiddenSize), options \(Cell.format(options)))"
    }

    /// Runs the cell forward in time over a whole sequence.
    /// - Parameters:
    ///   - input: [T, B, inputSize]
    ///   - lengths: per-sample lengths in 1...T, or nil for all T
    ///   - params: one tensor per `params` entry, in order
    ///   - initialStates: empty (all zero) or one entry per state, nil meaning zero
    ///   - training: keep what `backward` needs
    public func forward(input: Tensor, lengths: [Int32]? = nil, params: [Tensor], initialStates: [Tensor?] = [],
                        training: Bool = false) throws -> ForwardResult {
        let call = try CellCallInputs(checking: self, input: input, lengths: lengths, params: params,
                                      initialStates: initialStates)
        return try forward(call, training: training)
    }

    /// `forward` on inputs checked against this cell already (by `CellCallInputs(checking:)`
    /// or at a layer's boundary).
    package func forward(_ call: CellCallInputs, training: Bool) throws -> ForwardResult {
        let (T, B) = (call.T, call.B)
        // Inference over more steps than one chunk: the plugin is called chunk by chunk, so
        // the workspace holds one chunk's input projection (CellInference.swift), unless the
        // cell's workspace does not grow with T.
        if !training, inferenceChunkSteps(T: T, B: B) < T {
            return try forwardChunked(call)
        }
        let count = try PluginLimits.floatCount([T, B, outputSize], what: "cell '\(type.id)': output [T, B, O]")
        for s in states {
            _ = try PluginLimits.floatCount([B, s.size], what: "cell '\(type.id)': final state '\(s.name)' [B, size]")
        }
        let wsBytes = try requiredWorkspace(T: T, B: B, training: training)
        let finals = OutputBuffers(shapes: states.map { [B, $0.size] })
        let workspace = try takeWorkspace(bytes: wsBytes)
        var error = ErrorBuffer()
        var status = SEQCELL_OK
        // The ABI has the cell write every output row (zeros past a sample's length), so the
        // output starts uninitialised: no zero fill of [T, B, O] per call.
        let outputData = [Float](unsafeUninitializedCapacity: count) { y, initialized in
            status = ABICall.forward(self, call, training: training, output: y.baseAddress, finalStates: finals,
                                     workspace: workspace, workspaceBytes: wsBytes, error: &error)
            if status != SEQCELL_OK { y.initialize(repeating: 0) }
            initialized = count
        }
        guard status == SEQCELL_OK else {
            recycle(workspace)
            throw SeqCellError(.cell, "cell '\(type.id)' forward failed: \(error.message(status: status))")
        }
        let output = Tensor(shape: [T, B, outputSize], data: outputData)
        let tape: Tape?
        if training {
            tape = Tape(call: call, output: output, workspace: workspace, owner: self)
        } else {
            tape = nil
            recycle(workspace)
        }
        return ForwardResult(output: output, finalStates: finals.tensors, tape: tape)
    }

    /// Backward through time after a training-mode forward.
    /// - Parameters:
    ///   - gradOutput: [T, B, outputSize], or nil for zero
    ///   - gradFinalStates: empty (zero) or one entry per state ([B, size] or nil)
    ///   - wantInputGradient: compute the gradient with respect to the input
    ///   - frozenParams: indices of parameters whose gradients are not wanted (their entries
    ///     in the result are zeros). A cell declaring `SEQCELL_CELL_FROZEN_GRADIENTS` (ABI 1.2)
    ///     gets NULL for them; any other gets a scratch buffer that is thrown away.
    /// The tape's own tensors are not checked again: it is immutable and made by this cell's
    /// forward (its token says so), which checked them.
    public func backward(tape: Tape, gradOutput: Tensor?, gradFinalStates: [Tensor?] = [],
                         wantInputGradient: Bool = true, frozenParams: Set<Int> = []) throws -> Gradients {
        if let bad = frozenParams.first(where: { !params.indices.contains($0) }) {
            throw SeqCellError(.invalidArgument, "cell '\(type.id)': frozen parameter index \(bad) is outside 0..<\(params.count)")
        }
        guard tape.cellToken == token else {
            throw SeqCellError(.invalidArgument,
                "\(summaryForErrors): this tape comes from a forward call of another cell instance, \(tape.cellDescription); "
                + "backward must run on the cell whose forward made the tape")
        }
        let (T, B) = (tape.call.T, tape.call.B)
        if let g = gradOutput, g.shape != [T, B, outputSize] {
            throw SeqCellError(.shape, "cell '\(type.id)': output gradient must be [\(T), \(B), \(outputSize)], got \(g.shape)")
        }
        guard gradFinalStates.isEmpty || gradFinalStates.count == states.count else {
            throw SeqCellError(.shape, "cell '\(type.id)': \(gradFinalStates.count) final-state gradients, it has \(states.count) states")
        }
        if let g = gradOutput { try Boundary.checkConsistent(g, "cell '\(type.id)': output gradient") }
        for (g, info) in zip(gradFinalStates, states) {
            if let g {
                guard g.shape == [B, info.size] else {
                    throw SeqCellError(.shape, "cell '\(type.id)': gradient of final state '\(info.name)' must be [\(B), \(info.size)], got \(g.shape)")
                }
                try Boundary.checkConsistent(g, "cell '\(type.id)': gradient of final state '\(info.name)'")
            }
        }
        guard tape.claim() else {
            throw SeqCellError(.invalidArgument,
                "cell '\(type.id)': this forward's tape was already used by a backward call (backward may reuse the workspace); run forward again")
        }
        if wantInputGradient {
            _ = try PluginLimits.floatCount([T, B, inputSize], what: "cell '\(type.id)': input gradient [T, B, I]")
        }
        var gradInput = wantInputGradient ? Tensor.zeros([T, B, inputSize]) : Tensor.zeros([0])
        let gradStates = OutputBuffers(shapes: states.map { [B, $0.size] })
        let gradParams = OutputBuffers(shapes: params.map(\.shape))
        var error = ErrorBuffer()
        let status = gradInput.data.withUnsafeMutableBufferPointer { gx in
            ABICall.backward(self, tape: tape, gradOutput: gradOutput, gradFinalStates: gradFinalStates,
                             gradInput: wantInputGradient ? gx.baseAddress : nil, gradInitialStates: gradStates,
                             gradParams: gradParams, frozen: frozenParams, error: &error)
        }
        guard status == SEQCELL_OK else {
            throw SeqCellError(.cell, "cell '\(type.id)' backward failed: \(error.message(status: status))")
        }
        var paramGradients = gradParams.tensors
        for i in frozenParams { paramGradients[i] = Tensor.zeros(params[i].shape) }
        return Gradients(input: wantInputGradient ? gradInput : nil, initialStates: gradStates.tensors,
                         params: paramGradients)
    }

    /// Whether the plugin accepts NULL `grad_params` entries (ABI 1.2,
    /// `SEQCELL_CELL_FROZEN_GRADIENTS`).
    public var acceptsFrozenGradients: Bool {
        desc.flags & UInt64(SEQCELL_CELL_FROZEN_GRADIENTS) != 0
    }
}

func isIdentifier(_ s: String) -> Bool {
    !s.isEmpty && s.utf8.allSatisfy { (0x61...0x7a).contains($0) || (0x30...0x39).contains($0) || $0 == 0x5f }
}

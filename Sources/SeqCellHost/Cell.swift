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
        let values = type.options.map { $0.abiValue(options[$0.name]!) }
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
            var best: Int? = nil
            for (i, b) in pool.enumerated() where b.bytes >= bytes {
                if best == nil || b.bytes < pool[best!].bytes { best = i }
            }
            return best.map { pool.remove(at: $0) }
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
        options.isEmpty ? "{}" : "{" + options.keys.sorted().map { "\($0)=\(options[$0]!)" }.joined(separator: ", ") + "}"
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

    /// What a training-mode forward keeps for backward. One backward per tape: a cell may
    /// use the workspace as scratch during backward.
    public final class Tape: @unchecked Sendable {
        private let used = Mutex(false)
        /// The `token` of the cell whose forward made this tape, and that cell's description.
        let cellToken: UInt64
        let cellDescription: String

        /// Marks the tape used; false if it already was.
        func claim() -> Bool { used.withLock { u in defer { u = true }; return !u } }

        let input: Tensor
        package let lengths: [Int32]?
        let params: [Tensor]
        let initialStates: [Tensor?]
        let output: Tensor
        let workspace: AlignedBuffer
        /// Gets the workspace back for reuse when the tape is released.
        private weak var owner: Cell?
        init(input: Tensor, lengths: [Int32]?, params: [Tensor], initialStates: [Tensor?], output: Tensor,
             workspace: AlignedBuffer, owner: Cell) {
            self.cellToken = owner.token
            self.cellDescription = owner.summaryForErrors
            self.input = input
            self.lengths = lengths
            self.params = params
            self.initialStates = initialStates
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

    /// Checks the shapes of a call's tensors against this cell; errors name the tensor.
    func checkCall(input: Tensor, lengths: [Int32]?, params: [Tensor], initialStates: [Tensor?]) throws -> (T: Int, B: Int) {
        let id = type.id
        guard input.rank == 3 else {
            throw SeqCellError(.shape, "cell '\(id)': input must be [T, B, I], got shape \(input.shape)")
        }
        try Boundary.checkConsistent(input, "cell '\(id)': input")
        let (T, B, I) = (input.shape[0], input.shape[1], input.shape[2])
        guard T >= 1 else { throw SeqCellError(.shape, "cell '\(id)': sequence length T must be >= 1, got \(T)") }
        guard B >= 1 else { throw SeqCellError(.shape, "cell '\(id)': batch size B must be >= 1, got \(B)") }
        guard I == inputSize else {
            throw SeqCellError(.shape, "cell '\(id)': input width is \(I), this cell expects \(inputSize)")
        }
        if let lengths {
            guard lengths.count == B else {
                throw SeqCellError(.shape, "cell '\(id)': \(lengths.count) lengths for a batch of \(B)")
            }
            if let (b, l) = lengths.enumerated().first(where: { $0.element < 1 || Int($0.element) > T }) {
                throw SeqCellError(.invalidArgument, "cell '\(id)': lengths[\(b)] = \(l) is outside 1...\(T)")
            }
        }
        guard params.count == self.params.count else {
            throw SeqCellError(.shape, "cell '\(id)': \(params.count) parameter tensors given, it has \(self.params.count)")
        }
        for (p, info) in zip(params, self.params) {
            guard p.shape == info.shape else {
                throw SeqCellError(.shape, "cell '\(id)': parameter '\(info.name)' must be \(info.shape), got \(p.shape)")
            }
            try Boundary.checkConsistent(p, "cell '\(id)': parameter '\(info.name)'")
        }
        guard initialStates.isEmpty || initialStates.count == states.count else {
            throw SeqCellError(.shape, "cell '\(id)': \(initialStates.count) initial states given, it has \(states.count)")
        }
        for (s, info) in zip(initialStates, states) {
            if let s {
                guard s.shape == [B, info.size] else {
                    throw SeqCellError(.shape, "cell '\(id)': initial state '\(info.name)' must be [\(B), \(info.size)], got \(s.shape)")
                }
                try Boundary.checkConsistent(s, "cell '\(id)': initial state '\(info.name)'")
            }
        }
        return (T, B)
    }

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
        let (T, B) = try checkCall(input: input, lengths: lengths, params: params, initialStates: initialStates)
        // Inference over more steps than one chunk: the plugin is called chunk by chunk, so
        // the workspace holds one chunk's input projection (CellInference.swift).
        if !training, Cell.inferenceChunk(T: T, B: B) < T {
            return try forwardChunked(input: input, T: T, B: B, lengths: lengths, params: params, initialStates: initialStates)
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
          status = withPointers(params) { paramPtrs in
            withOptionalPointers(initialStates) { statePtrs in
                finals.withPointers { finalPtrs in
                    input.data.withUnsafeBufferPointer { x in
                            withOptionalArray(lengths) { lens in
                                var args = seqcell_forward_args()
                                args.struct_size = UInt32(MemoryLayout<seqcell_forward_args>.size)
                                args.mode = training ? SEQCELL_MODE_TRAINING : SEQCELL_MODE_INFERENCE
                                args.seq_len = Int64(T)
                                args.batch = Int64(B)
                                args.input = x.baseAddress
                                args.lengths = lens
                                args.params = paramPtrs
                                args.initial_states = initialStates.isEmpty ? nil : statePtrs
                                args.output = y.baseAddress
                                args.final_states = finalPtrs
                                args.workspace = workspace.pointer
                                args.workspace_size = wsBytes
                                return error.call { desc.forward(instance, &args, $0, $1) }
                            }
                    }
                }
            }
          }
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
            tape = Tape(input: input, lengths: lengths, params: params, initialStates: initialStates, output: output,
                        workspace: workspace, owner: self)
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
    public func backward(tape: Tape, gradOutput: Tensor?, gradFinalStates: [Tensor?] = [],
                         wantInputGradient: Bool = true, frozenParams: Set<Int> = []) throws -> Gradients {
        if let bad = frozenParams.first(where: { !params.indices.contains($0) }) {
            throw SeqCellError(.invalidArgument, "cell '\(type.id)': frozen parameter index \(bad) is outside 0..<\(params.count)")
        }
        let T = tape.input.shape[0], B = tape.input.shape[1]
        guard tape.cellToken == token else {
            throw SeqCellError(.invalidArgument,
                "\(summaryForErrors): this tape comes from a forward call of another cell instance, \(tape.cellDescription); "
                + "backward must run on the cell whose forward made the tape")
        }
        // Defence in depth: the tape's tensors must fit this cell's layout.
        _ = try checkCall(input: tape.input, lengths: tape.lengths, params: tape.params, initialStates: tape.initialStates)
        guard tape.output.shape == [T, B, outputSize] else {
            throw SeqCellError(.shape, "\(summaryForErrors): the tape's output is \(tape.output.shape), expected [\(T), \(B), \(outputSize)]")
        }
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
        let status = withPointers(tape.params) { paramPtrs in
            withOptionalPointers(tape.initialStates) { statePtrs in
                withOptionalPointers(gradFinalStates) { gradFinalPtrs in
                    gradStates.withPointers { gradStatePtrs in
                        gradParams.withPointers(nilAt: acceptsFrozenGradients ? frozenParams : []) { gradParamPtrs in
                            tape.input.data.withUnsafeBufferPointer { x in
                                tape.output.data.withUnsafeBufferPointer { y in
                                    gradInput.data.withUnsafeMutableBufferPointer { gx in
                                        withOptionalArray(gradOutput?.data) { gy in
                                            withOptionalArray(tape.lengths) { lens in
                                                var args = seqcell_backward_args()
                                                args.struct_size = UInt32(MemoryLayout<seqcell_backward_args>.size)
                                                args.seq_len = Int64(T)
                                                args.batch = Int64(B)
                                                args.input = x.baseAddress
                                                args.lengths = lens
                                                args.params = paramPtrs
                                                args.initial_states = tape.initialStates.isEmpty ? nil : statePtrs
                                                args.output = y.baseAddress
                                                args.grad_output = gy
                                                args.grad_final_states = gradFinalStates.isEmpty ? nil : gradFinalPtrs
                                                args.grad_input = wantInputGradient ? gx.baseAddress : nil
                                                args.grad_initial_states = gradStatePtrs
                                                args.grad_params = gradParamPtrs
                                                args.workspace = tape.workspace.pointer
                                                args.workspace_size = tape.workspace.bytes
                                                return error.call { desc.backward(instance, &args, $0, $1) }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
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

// MARK: - Pointer plumbing for the C calls

/// A caller-owned error buffer for one plugin call (seqcell.h: no allocation crosses).
package struct ErrorBuffer {
    static let capacity = 1024
    package var bytes = [CChar](repeating: 0, count: ErrorBuffer.capacity)

    package init() {}

    package mutating func call(_ body: (UnsafeMutablePointer<CChar>, Int) -> seqcell_status) -> seqcell_status {
        bytes.withUnsafeMutableBufferPointer { body($0.baseAddress!, $0.count) }
    }

    func message(status: seqcell_status) -> String {
        // The plugin may have filled the whole buffer without a NUL: read at most its size.
        let text = bytes.withUnsafeBufferPointer { buf in
            let n = buf.firstIndex(of: 0) ?? buf.count
            return String(decoding: UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: buf[..<n])), as: UTF8.self)
        }
        let name = statusName(status)
        return text.isEmpty ? "\(name) (no message)" : "\(text) [\(name)]"
    }
}

package func statusName(_ status: seqcell_status) -> String {
    switch status {
    case SEQCELL_OK: return "ok"
    case SEQCELL_ERR_INVALID_ARGUMENT: return "invalid argument"
    case SEQCELL_ERR_UNSUPPORTED: return "unsupported"
    case SEQCELL_ERR_NO_MEMORY: return "out of memory"
    case SEQCELL_ERR_VERSION: return "version mismatch"
    case SEQCELL_ERR_INTERNAL: return "internal error"
    default: return "status \(status)"
    }
}

/// A 64-byte-aligned block of bytes owned by the host.
public final class AlignedBuffer: @unchecked Sendable {
    package let pointer: UnsafeMutableRawPointer?
    let bytes: Int

    package init(bytes: Int) throws {
        self.bytes = bytes
        if bytes == 0 {
            pointer = nil
            return
        }
        var p: UnsafeMutableRawPointer? = nil
        guard posix_memalign(&p, 64, bytes) == 0, let p else {
            throw SeqCellError(.numeric, "cannot allocate a workspace of \(bytes) bytes")
        }
        pointer = p
    }

    deinit { free(pointer) }
}

package func withPointers<R>(_ tensors: [Tensor], _ body: (UnsafePointer<UnsafePointer<Float>?>) -> R) -> R {
    var ptrs = [UnsafePointer<Float>?]()
    ptrs.reserveCapacity(tensors.count)
    func recurse(_ i: Int) -> R {
        if i == tensors.count { return ptrs.withUnsafeBufferPointer { body($0.baseAddress ?? UnsafePointer(bitPattern: 8)!) } }
        return tensors[i].data.withUnsafeBufferPointer { buf in
            ptrs.append(buf.baseAddress)
            return recurse(i + 1)
        }
    }
    return recurse(0)
}

package func withOptionalPointers<R>(_ tensors: [Tensor?], _ body: (UnsafePointer<UnsafePointer<Float>?>) -> R) -> R {
    var ptrs = [UnsafePointer<Float>?]()
    func recurse(_ i: Int) -> R {
        if i == tensors.count { return ptrs.withUnsafeBufferPointer { body($0.baseAddress ?? UnsafePointer(bitPattern: 8)!) } }
        guard let t = tensors[i] else {
            ptrs.append(nil)
            return recurse(i + 1)
        }
        return t.data.withUnsafeBufferPointer { buf in
            ptrs.append(buf.baseAddress)
            return recurse(i + 1)
        }
    }
    return recurse(0)
}

/// Zeroed float buffers the plugin writes into, turned into tensors after the call.
package final class OutputBuffers {
    package private(set) var pointers: [UnsafeMutablePointer<Float>?]
    private let shapes: [[Int]]

    package init(shapes: [[Int]]) {
        self.shapes = shapes
        pointers = shapes.map { shape in
            let n = shape.reduce(1, *)
            let p = UnsafeMutablePointer<Float>.allocate(capacity: max(n, 1))
            p.initialize(repeating: 0, count: max(n, 1))
            return p
        }
    }

    deinit { for p in pointers { p?.deallocate() } }

    package func tensor(_ i: Int) -> Tensor {
        let n = shapes[i].reduce(1, *)
        return Tensor(shape: shapes[i], data: Array(UnsafeBufferPointer(start: pointers[i], count: n)))
    }

    package var tensors: [Tensor] { shapes.indices.map(tensor) }

    package func withPointers<R>(_ body: (UnsafePointer<UnsafeMutablePointer<Float>?>) -> R) -> R {
        pointers.withUnsafeBufferPointer { body($0.baseAddress ?? UnsafePointer(bitPattern: 8)!) }
    }

    /// The pointer table with the entries in `nilAt` NULL.
    func withPointers<R>(nilAt: Set<Int>, _ body: (UnsafePointer<UnsafeMutablePointer<Float>?>) -> R) -> R {
        guard !nilAt.isEmpty else { return withPointers(body) }
        var table = pointers
        for i in nilAt where table.indices.contains(i) { table[i] = nil }
        return table.withUnsafeBufferPointer { body($0.baseAddress ?? UnsafePointer(bitPattern: 8)!) }
    }
}

package func withOptionalArray<T, R>(_ array: [T]?, _ body: (UnsafePointer<T>?) throws -> R) rethrows -> R {
    guard let array else { return try body(nil) }
    return try array.withUnsafeBufferPointer { try body($0.baseAddress) }
}

func isIdentifier(_ s: String) -> Bool {
    !s.isEmpty && s.utf8.allSatisfy { (0x61...0x7a).contains($0) || (0x30...0x39).contains($0) || $0 == 0x5f }
}

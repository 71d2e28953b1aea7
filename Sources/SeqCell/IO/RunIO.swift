import Foundation

/// Inputs for running a model, read from an HDF5 or .npy file with PyTorch's conventions.
public struct RunInputs: Sendable {
    /// [T, B, I], time-major; [T, B, 0] when the inputs are `tokens`.
    public var input: Tensor
    public var lengths: [Int32]?
    /// initialStates[layer][direction][state], or empty for zeros.
    public var initialStates: [[[Tensor?]]]
    /// Token ids [T, B] for a model with an embedding stage, else nil.
    public var tokens: TokenIDs?

    public init(input: Tensor, lengths: [Int32]? = nil, initialStates: [[[Tensor?]]] = []) {
        self.input = input
        self.lengths = lengths
        self.initialStates = initialStates
    }

    public init(tokens: TokenIDs, lengths: [Int32]? = nil, initialStates: [[[Tensor?]]] = []) {
        self.input = Tensor(shape: tokens.shape + [0], data: [])
        self.lengths = lengths
        self.initialStates = initialStates
        self.tokens = tokens
    }

    public var steps: Int { tokens?.steps ?? input.shape[0] }
    public var batch: Int { tokens?.batch ?? input.shape[1] }
}

extension Model {
    /// Runs the model on what `RunInputs.read` gave: token ids or features.
    public func forward(_ inputs: RunInputs) throws -> Output {
        if let tokens = inputs.tokens {
            return try forward(tokens: tokens, lengths: inputs.lengths, initialStates: inputs.initialStates)
        }
        return try forward(input: inputs.input, lengths: inputs.lengths, initialStates: inputs.initialStates)
    }
}

/// [T, B, F] ↔ [B, T, F]. `x` must be 3-D and hold its shape's values (a programming error
/// otherwise, as for `Tensor.init`; the readers check both before calling this).
public func swapFirstTwoAxes(_ x: Tensor) -> Tensor {
    precondition(x.rank == 3 && Boundary.elementCount(x.shape) == x.count,
                 "swapFirstTwoAxes needs a consistent [A, B, F] tensor, got shape \(x.shape) holding \(x.count) values")
    let (a, b, f) = (x.shape[0], x.shape[1], x.shape[2])
    var out = [Float](repeating: 0, count: x.count)
    out.withUnsafeMutableBufferPointer { dst in
        x.data.withUnsafeBufferPointer { src in
            // Both hold a·b·f values (checked above).
            guard let d = dst.baseAddress, let s = src.baseAddress else { return }
            for i in 0..<a { for j in 0..<b { (d + (j &* a &+ i) &* f).update(from: s + (i &* b &+ j) &* f, count: f) } }
        }
    }
    return Tensor(shape: [b, a, f], data: out)
}

/// PyTorch's stacking of final (or initial) states: one [L·D, B, size] tensor per state
/// name, index layer·D + direction — possible when every layer has the same number of
/// directions and the state has the same size everywhere. Otherwise nil.
public func stackedStates(_ states: [[[Tensor]]], model: Model, state: String) -> Tensor? {
    guard let D = model.layers.first?.cells.count, states.count == model.layers.count else { return nil }
    guard model.layers.allSatisfy({ $0.cells.count == D }) else { return nil }
    var slices: [Tensor] = []
    for (layer, ls) in zip(model.layers, states) {
        guard ls.count == layer.cells.count else { return nil }
        for (dc, ds) in zip(layer.cells, ls) {
            guard let i = dc.cell.states.firstIndex(where: { $0.name == state }), i < ds.count else { return nil }
            slices.append(ds[i])
        }
    }
    guard let first = slices.first, slices.allSatisfy({ $0.shape == first.shape }) else { return nil }
    return Tensor(shape: [slices.count] + first.shape, data: slices.flatMap(\.data))
}

/// The names of states every layer and direction has, in the first cell's order ("h", "c").
public func commonStateNames(_ model: Model) -> [String] {
    guard let first = model.layers.first?.cells.first?.cell.states.map(\.name) else { return [] }
    return first.filter { name in model.layers.allSatisfy { $0.cells.allSatisfy { $0.cell.states.contains { $0.name == name } } } }
}

extension RunInputs {
    /// Reads `input` (or `dataset`) from an HDF5 file, with optional `lengths`, and initial
    /// states as PyTorch stacks them (`h0`, `c0`: [L·D, B, size]); or a `.npy` file holding
    /// the input alone. With `batchFirst`, the input is [B, T, I].
    ///
    /// Everything is checked here, before the model sees it: the input's rank, shape and
    /// type, `lengths`' type, shape and every value (1...T, reported exactly: an int64 2^40 is
    /// "1099511627776"), and the initial states' shapes. Messages name the file and dataset.
    public static func read(path: String, dataset: String = "input", batchFirst: Bool = false, model: Model) throws -> RunInputs {
        var input = Tensor(shape: [0], data: [])
        var rawTokens: (values: [Int64], shape: [Int], dtype: String)? = nil
        var rawLengths: (values: [Int64], shape: [Int], saturated: Bool)? = nil
        var stacked: [String: Tensor] = [:]
        let inputName: String
        if path.hasSuffix(".npy") {
            inputName = "'\(path)'"
            do {
                // Integer arrays are token ids (ids fit in Int32: a vocabulary has at most 2^31 − 1 rows).
                let ints = try NPY.readInt32s(from: path)
                rawTokens = (ints.values.map(Int64.init), ints.shape, "integer")
            } catch let e as NPYError where e.field == "descr" {
                let a = try NPY.readFloats(from: path)
                input = try Tensor.checked(shape: a.shape, data: a.floats, what: inputName)
            }
        } else {
            inputName = "'\(path)': dataset '\(dataset)'"
            let file = try H5File(opening: path)
            let root = try file.root
            guard root.isDataset(dataset) else {
                throw SeqCellError(.io, "'\(path)' has no dataset '\(dataset)' (members: \((try? root.memberNames())?.joined(separator: ", ") ?? "?"))")
            }
            let ds = try root.dataset(dataset)
            if ds.elementKind.isInteger, model.embedding != nil {
                let ids = try ds.readInt64s()
                rawTokens = (ids, ds.shape, "\(ds.elementKind)")
                if ds.elementKind == .unsignedInteger(bytes: 8), let b = ids.firstIndex(of: .max) {
                    throw SeqCellError(.invalidArgument, "\(inputName): element \(b) is \(Int64.max) or more, outside the vocabulary")
                }
            } else if ds.elementKind.isInteger {
                rawTokens = ([], ds.shape, "\(ds.elementKind)")  // refused below, unread
            } else {
                guard ds.elementKind.isFloatingPoint else {
                    throw SeqCellError(.io, "\(inputName) must hold floating-point values (features) or integers (token ids), found \(ds.elementKind)")
                }
                input = try Tensor.checked(shape: ds.shape, data: try ds.readFloats(), what: inputName)
            }
            if root.isDataset("lengths") {
                let l = try root.dataset("lengths")
                guard l.elementKind.isInteger else {
                    throw SeqCellError(.io, "'\(path)': lengths must hold integers (int32 or int64), found \(l.elementKind)")
                }
                let values = try l.readInt64s()
                // HDF5 saturates uint64 values above Int64.max on conversion: say so rather than
                // print the saturated number as if it were the file's.
                let saturated = l.elementKind == .unsignedInteger(bytes: 8) && values.contains(.max)
                rawLengths = (values, l.shape, saturated)
            }
            for name in commonStateNames(model) where root.isDataset("\(name)0") {
                let s = try root.dataset("\(name)0")
                guard s.elementKind.isFloatingPoint else {
                    throw SeqCellError(.io, "'\(path)': \(name)0 must hold floating-point values, found \(s.elementKind)")
                }
                stacked[name] = try Tensor.checked(shape: s.shape, data: try s.readFloats(), what: "'\(path)': \(name)0")
            }
        }
        var tokens: TokenIDs? = nil
        let T: Int, B: Int
        switch (model.embedding, rawTokens) {
        case (let e?, let raw?):
            let ids = try TokenIDs.checked(shape: raw.shape, values: raw.values, vocabularySize: e.vocabularySize,
                                           batchFirst: batchFirst, what: inputName)
            tokens = ids
            (T, B) = (ids.steps, ids.batch)
        case (let e?, nil):
            throw SeqCellError(.io, "\(inputName) holds float values \(input.shape); this model starts with an embedding stage "
                               + "(vocabulary \(e.vocabularySize)) and takes integer token ids \(batchFirst ? "[B, T]" : "[T, B]") (any integer dtype)")
        case (nil, let raw?):
            throw SeqCellError(.io, "\(inputName) holds integer values (\(raw.dtype), shape \(raw.shape)); this model has no embedding stage "
                               + "and takes float features \(batchFirst ? "[B, T, \(model.inputSize)]" : "[T, B, \(model.inputSize)]") "
                               + "(token ids need a model made with 'seqcell new --embedding VOCAB:DIM')")
        case (nil, nil):
            guard input.rank == 3 else {
                throw SeqCellError(.shape, "\(inputName): input must be 3-D ([T, B, I]\(batchFirst ? " as [B, T, I]" : "")), got \(input.shape)")
            }
            if batchFirst { input = swapFirstTwoAxes(input) }
            let I = input.shape[2]
            (T, B) = (input.shape[0], input.shape[1])
            let layout = batchFirst ? "[B, T, I] = \([B, T, I])" : "[T, B, I] = \([T, B, I])"
            guard T >= 1, B >= 1 else {
                throw SeqCellError(.shape, "\(inputName): input \(layout) is empty; T and B must be >= 1")
            }
            guard I == model.inputSize else {
                throw SeqCellError(.shape, "\(inputName): input \(layout) has \(I) features per step; this model takes \(model.inputSize)")
            }
        }
        var lengths: [Int32]? = nil
        if let raw = rawLengths {
            guard raw.shape == [B] else {
                throw SeqCellError(.shape, "'\(path)': lengths must be [B] = [\(B)] (one per sample), got shape \(raw.shape)")
            }
            if raw.saturated, let b = raw.values.firstIndex(of: .max) {
                throw SeqCellError(.invalidArgument,
                                   "'\(path)': lengths[\(b)] = \(Int64.max) or more is outside 1...\(T) (the input has T = \(T) steps)")
            }
            lengths = try SequenceLengths.checked(raw.values, T: T, B: B, what: "'\(path)': lengths")
        }
        var initial: [[[Tensor?]]] = []
        if !stacked.isEmpty {
            initial = try unstackStates(stacked, model: model, batch: B, path: path)
        }
        if let tokens { return RunInputs(tokens: tokens, lengths: lengths, initialStates: initial) }
        return RunInputs(input: input, lengths: lengths, initialStates: initial)
    }

    /// Splits [L·D, B, size] stacks into [layer][direction][state]; messages name the
    /// datasets `<prefix><state><suffix>` (h0, c0 — or grad_h_n, grad_c_n).
    static func unstackStates(_ stacked: [String: Tensor], model: Model, batch B: Int, path: String,
                              suffix: String = "0", prefix: String = "") throws -> [[[Tensor?]]] {
        let LD = model.layers.reduce(0) { $0 + $1.cells.count }
        var out: [[[Tensor?]]] = []
        var index = 0
        for layer in model.layers {
            var dirs: [[Tensor?]] = []
            for dc in layer.cells {
                var states: [Tensor?] = []
                for st in dc.cell.states {
                    guard let s = stacked[st.name] else { states.append(nil); continue }
                    guard s.shape == [LD, B, st.size] else {
                        throw SeqCellError(.shape, "'\(path)': \(prefix)\(st.name)\(suffix) must be [\(LD), \(B), \(st.size)] (layers × directions, batch, size), got \(s.shape)")
                    }
                    let n = B * st.size
                    states.append(Tensor(shape: [B, st.size], data: Array(s.data[(index * n)..<((index + 1) * n)])))
                }
                dirs.append(states)
                index += 1
            }
            out.append(dirs)
        }
        return out
    }
}

/// Each sample's row at its last valid step: x [T, B, F] → [B, F], row b taken at
/// t = lengths[b] − 1 (t = T − 1 without lengths). `lengths` must be checked (1...T).
public func lastValidSteps(_ x: Tensor, lengths: [Int32]?) -> Tensor {
    precondition(x.rank == 3 && Boundary.elementCount(x.shape) == x.count, "lastValidSteps needs a consistent [T, B, F] tensor")
    let (T, B, F) = (x.shape[0], x.shape[1], x.shape[2])
    var out = [Float](repeating: 0, count: B * F)
    for b in 0..<B {
        let t = lengths.map { Int($0[b]) - 1 } ?? (T - 1)
        precondition((0..<T).contains(t), "length \(t + 1) outside 1...\(T)")
        for f in 0..<F { out[b * F + f] = x.data[(t * B + b) * F + f] }
    }
    return Tensor(shape: [B, F], data: out)
}

/// Writes what `seqcell run` produces: `output` [T, B, O] (or [B, T, O] batch-first),
/// PyTorch-stacked final states (`h_n`, `c_n`, …) where the model allows, and every final
/// state under `final_states/layers/NN/<direction>/<state>`.
///
/// With `lastStep` (the run's checked lengths, or nil for full-length samples inside
/// `.some`), `output` (and `recurrent_output`) are instead [B, O]: each sample's row at its
/// last valid step, as `lastValidSteps` takes it. A model whose output is the last step
/// (`outputSteps == .last`, Keras return_sequences=False) always writes [B, O], Keras' value
/// (`Model.lastStepOutput`: for a bidirectional last layer the backward direction's step 0),
/// and `@output_steps = "last"`; pass the run's lengths as `lastStep`.
public func writeRunOutputs(path: String, model: Model, result: Model.Output, batchFirst: Bool,
                            lastStep givenLastStep: [Int32]?? = nil, extra: (H5File) throws -> Void = { _ in }) throws {
    let lastStep: [Int32]?? = givenLastStep ?? (model.outputSteps == .last ? .some(nil) : nil)
    guard result.finalStates.count == model.layers.count,
          zip(result.finalStates, model.layers).allSatisfy({ $0.count == $1.cells.count }) else {
        throw SeqCellError(.invalidArgument, "'\(path)': the run result does not come from this model")
    }
    try writeHDF5Atomically(to: path) { file in
        let root = try file.root
        try root.setAttribute("creator", SeqCellInfo.creator)
        if let lengths = lastStep, model.outputSteps == .last {
            try root.setAttribute("layout", "last_step")
            try root.setAttribute("output_steps", OutputSteps.last.rawValue)
            let out = try model.lastStepOutput(result, lengths: lengths)
            try root.writeDataset("output", shape: out.shape, floats: out.data)
            if model.head != nil {
                let m = try model.lastStepMerged(result, lengths: lengths).merged
                try root.writeDataset("recurrent_output", shape: [m.shape[1], m.shape[2]], floats: m.data)
            }
        } else if let lengths = lastStep {
            try root.setAttribute("layout", "last_step")
            let out = lastValidSteps(result.output, lengths: lengths)
            try root.writeDataset("output", shape: out.shape, floats: out.data)
            if model.head != nil {
                let r = lastValidSteps(result.recurrentOutput, lengths: lengths)
                try root.writeDataset("recurrent_output", shape: r.shape, floats: r.data)
            }
        } else {
            try root.setAttribute("layout", batchFirst ? "batch_first" : "time_major")
            let out = batchFirst ? swapFirstTwoAxes(result.output) : result.output
            try root.writeDataset("output", shape: out.shape, floats: out.data)
            if model.head != nil {
                let r = batchFirst ? swapFirstTwoAxes(result.recurrentOutput) : result.recurrentOutput
                try root.writeDataset("recurrent_output", shape: r.shape, floats: r.data)
            }
        }
        for name in commonStateNames(model) {
            if let s = stackedStates(result.finalStates, model: model, state: name) {
                try root.writeDataset("\(name)_n", shape: s.shape, floats: s.data)
            }
        }
        let fs = try root.createGroup("final_states")
        let lg = try fs.createGroup("layers")
        for (k, layer) in model.layers.enumerated() {
            let g = try lg.createGroup(CheckpointFormat.layerName(k, count: model.layers.count))
            for (d, dc) in layer.cells.enumerated() {
                let dg = try g.createGroup(layer.directionName(d))
                for (st, t) in zip(dc.cell.states, result.finalStates[k][d]) {
                    try dg.writeDataset(st.name, shape: t.shape, floats: t.data)
                }
            }
        }
        try extra(file)
    }
}

import Foundation

/// Inputs for running a model, read from an HDF5 or .npy file with PyTorch's conventions.
public struct RunInputs: Sendable {
    /// [T, B, I], time-major.
    public var input: Tensor
    public var lengths: [Int32]?
    /// initialStates[layer][direction][state], or empty for zeros.
    public var initialStates: [[[Tensor?]]]

    public init(input: Tensor, lengths: [Int32]? = nil, initialStates: [[[Tensor?]]] = []) {
        self.input = input
        self.lengths = lengths
        self.initialStates = initialStates
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
        var input: Tensor
        var rawLengths: (values: [Int64], shape: [Int], saturated: Bool)? = nil
        var stacked: [String: Tensor] = [:]
        let inputName: String
        if path.hasSuffix(".npy") {
            inputName = "'\(path)'"
            let a = try NPY.readFloats(from: path)
            input = try Tensor.checked(shape: a.shape, data: a.floats, what: inputName)
        } else {
            inputName = "'\(path)': dataset '\(dataset)'"
            let file = try H5File(opening: path)
            let root = try file.root
            guard root.isDataset(dataset) else {
                throw SeqCellError(.io, "'\(path)' has no dataset '\(dataset)' (members: \((try? root.memberNames())?.joined(separator: ", ") ?? "?"))")
            }
            let ds = try root.dataset(dataset)
            guard ds.elementKind.isFloatingPoint else {
                throw SeqCellError(.io, "\(inputName) must hold floating-point values, found \(ds.elementKind)")
            }
            input = try Tensor.checked(shape: ds.shape, data: try ds.readFloats(), what: inputName)
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
        guard input.rank == 3 else {
            throw SeqCellError(.shape, "\(inputName): input must be 3-D ([T, B, I]\(batchFirst ? " as [B, T, I]" : "")), got \(input.shape)")
        }
        if batchFirst { input = swapFirstTwoAxes(input) }
        let (T, B, I) = (input.shape[0], input.shape[1], input.shape[2])
        let layout = batchFirst ? "[B, T, I] = \([B, T, I])" : "[T, B, I] = \([T, B, I])"
        guard T >= 1, B >= 1 else {
            throw SeqCellError(.shape, "\(inputName): input \(layout) is empty; T and B must be >= 1")
        }
        guard I == model.inputSize else {
            throw SeqCellError(.shape, "\(inputName): input \(layout) has \(I) features per step; this model takes \(model.inputSize)")
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

/// Writes what `seqcell run` produces: `output` [T, B, O] (or [B, T, O] batch-first),
/// PyTorch-stacked final states (`h_n`, `c_n`, …) where the model allows, and every final
/// state under `final_states/layers/NN/<direction>/<state>`. A model whose output is the last
/// step (`outputSteps == .last`, Keras return_sequences=False) gets `output` [B, O], Keras'
/// value (`Model.lastStepOutput`, which needs the run's `lengths`), and `@output_steps = "last"`.
public func writeRunOutputs(path: String, model: Model, result: Model.Output, batchFirst: Bool, lengths: [Int32]? = nil,
                            extra: (H5File) throws -> Void = { _ in }) throws {
    guard result.finalStates.count == model.layers.count,
          zip(result.finalStates, model.layers).allSatisfy({ $0.count == $1.cells.count }) else {
        throw SeqCellError(.invalidArgument, "'\(path)': the run result does not come from this model")
    }
    try writeHDF5Atomically(to: path) { file in
        let root = try file.root
        try root.setAttribute("creator", SeqCellInfo.creator)
        try root.setAttribute("layout", batchFirst ? "batch_first" : "time_major")
        if model.outputSteps == .last {
            let out = try model.lastStepOutput(result, lengths: lengths)
            try root.setAttribute("output_steps", OutputSteps.last.rawValue)
            try root.writeDataset("output", shape: out.shape, floats: out.data)
        } else {
            let out = batchFirst ? swapFirstTwoAxes(result.output) : result.output
            try root.writeDataset("output", shape: out.shape, floats: out.data)
        }
        if model.head != nil {
            let r = batchFirst ? swapFirstTwoAxes(result.recurrentOutput) : result.recurrentOutput
            try root.writeDataset("recurrent_output", shape: r.shape, floats: r.data)
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

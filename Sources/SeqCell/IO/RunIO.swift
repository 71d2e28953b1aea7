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

/// [T, B, F] ↔ [B, T, F].
public func swapFirstTwoAxes(_ x: Tensor) -> Tensor {
    let (a, b, f) = (x.shape[0], x.shape[1], x.shape[2])
    var out = [Float](repeating: 0, count: x.count)
    for i in 0..<a { for j in 0..<b { for k in 0..<f { out[(j * a + i) * f + k] = x.data[(i * b + j) * f + k] } } }
    return Tensor(shape: [b, a, f], data: out)
}

/// PyTorch's stacking of final (or initial) states: one [L·D, B, size] tensor per state
/// name, index layer·D + direction — possible when every layer has the same number of
/// directions and the state has the same size everywhere. Otherwise nil.
public func stackedStates(_ states: [[[Tensor]]], model: Model, state: String) -> Tensor? {
    let D = model.layers[0].cells.count
    guard model.layers.allSatisfy({ $0.cells.count == D }) else { return nil }
    var slices: [Tensor] = []
    for (layer, ls) in zip(model.layers, states) {
        for (dc, ds) in zip(layer.cells, ls) {
            guard let i = dc.cell.states.firstIndex(where: { $0.name == state }) else { return nil }
            slices.append(ds[i])
        }
    }
    guard let first = slices.first, slices.allSatisfy({ $0.shape == first.shape }) else { return nil }
    return Tensor(shape: [slices.count] + first.shape, data: slices.flatMap(\.data))
}

/// The names of states every layer and direction has, in the first cell's order ("h", "c").
public func commonStateNames(_ model: Model) -> [String] {
    let first = model.layers[0].cells[0].cell.states.map(\.name)
    return first.filter { name in model.layers.allSatisfy { $0.cells.allSatisfy { $0.cell.states.contains { $0.name == name } } } }
}

extension RunInputs {
    /// Reads `input` (or `dataset`) from an HDF5 file, with optional `lengths`, and initial
    /// states as PyTorch stacks them (`h0`, `c0`: [L·D, B, size]); or a `.npy` file holding
    /// the input alone. With `batchFirst`, the input is [B, T, I].
    public static func read(path: String, dataset: String = "input", batchFirst: Bool = false, model: Model) throws -> RunInputs {
        var input: Tensor
        var lengths: [Int32]? = nil
        var stacked: [String: Tensor] = [:]
        if path.hasSuffix(".npy") {
            let a = try NPY.readFloats(from: path)
            input = try Tensor.checked(shape: a.shape, data: a.floats, what: path)
        } else {
            let file = try H5File(opening: path)
            let root = try file.root
            guard root.isDataset(dataset) else {
                throw SeqCellError(.io, "'\(path)' has no dataset '\(dataset)' (members: \((try? root.memberNames())?.joined(separator: ", ") ?? "?"))")
            }
            let ds = try root.dataset(dataset)
            input = try Tensor.checked(shape: ds.shape, data: try ds.readFloats(), what: "\(path):/\(dataset)")
            if root.isDataset("lengths") {
                lengths = try root.dataset("lengths").readInt32s()
            }
            for name in commonStateNames(model) where root.isDataset("\(name)0") {
                let s = try root.dataset("\(name)0")
                stacked[name] = try Tensor.checked(shape: s.shape, data: try s.readFloats(), what: "\(path):/\(name)0")
            }
        }
        guard input.rank == 3 else {
            throw SeqCellError(.shape, "'\(path)': input must be 3-D ([T, B, I]\(batchFirst ? " as [B, T, I]" : "")), got \(input.shape)")
        }
        if batchFirst { input = swapFirstTwoAxes(input) }
        let B = input.shape[1]
        if let l = lengths, l.count != B {
            throw SeqCellError(.shape, "'\(path)': \(l.count) lengths for a batch of \(B)")
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
/// state under `final_states/layers/NN/<direction>/<state>`.
public func writeRunOutputs(path: String, model: Model, result: Model.Output, batchFirst: Bool,
                            extra: (H5File) throws -> Void = { _ in }) throws {
    try writeHDF5Atomically(to: path) { file in
        let root = try file.root
        try root.setAttribute("creator", SeqCellInfo.creator)
        try root.setAttribute("layout", batchFirst ? "batch_first" : "time_major")
        let out = batchFirst ? swapFirstTwoAxes(result.output) : result.output
        try root.writeDataset("output", shape: out.shape, floats: out.data)
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

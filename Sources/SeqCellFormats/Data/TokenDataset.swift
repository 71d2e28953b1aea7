import SeqCellBase
import SeqCellHost
import SeqCellModel

extension SequenceDataset {
    /// Training data whose `input` holds integer token ids [T, N] (any integer dtype): read
    /// exactly, range-checked against a model by `check(against:source:)`.
    static func readTokens(_ root: H5Group, path: String, perStepTargets: Bool) throws -> SequenceDataset {
        let ds = try root.dataset("input")
        guard ds.shape.count == 2, ds.shape[0] >= 1, ds.shape[1] >= 1 else {
            throw SeqCellError(.shape, "'\(path)': token ids in 'input' must be [T, N] with T, N >= 1, got \(ds.shape)")
        }
        let values = try ds.readInt64s()
        if ds.elementKind == .unsignedInteger(bytes: 8), let i = values.firstIndex(of: .max) {
            throw SeqCellError(.invalidArgument, "'\(path)': input[\(i / ds.shape[1]), \(i % ds.shape[1])] is \(Int64.max) or more, outside any vocabulary")
        }
        if let i = values.firstIndex(where: { $0 < 0 || $0 > Int64(Int32.max) }) {
            throw SeqCellError(.invalidArgument, "'\(path)': input[\(i / ds.shape[1]), \(i % ds.shape[1])] = \(values[i]) is not a token id (0...\(Int32.max))")
        }
        let tokens = TokenIDs(shape: ds.shape, ids: values.map { Int32($0) })
        guard root.isDataset("targets") else {
            throw SeqCellError(.io, "'\(path)' has no dataset 'targets' (training data needs input, targets and optionally lengths)")
        }
        let t = try root.dataset("targets")
        guard t.elementKind.isFloatingPoint || t.elementKind.isInteger else {
            throw SeqCellError(.io, "'\(path)': targets must hold numbers, found \(t.elementKind)")
        }
        let targetValues = t.elementKind.isInteger ? try t.readInt64s().map { Float($0) } : try t.readFloats()
        let targets = try Tensor.checked(shape: t.shape, data: targetValues, what: "'\(path)': targets")
        var lengths: [Int64]? = nil
        if root.isDataset("lengths") {
            let l = try root.dataset("lengths")
            guard l.elementKind.isInteger, l.shape.count == 1 else {
                throw SeqCellError(.io, "'\(path)': lengths must be integers [N] (one per sample), found \(l.elementKind) \(l.shape)")
            }
            lengths = try l.readInt64s()
        }
        var data = try SequenceDataset(input: Tensor(shape: tokens.shape + [0], data: []), targets: targets, wideLengths: lengths,
                                       perStepTargets: perStepTargets, source: path)
        data.tokens = tokens
        return data
    }

    /// Checks that the data fits the model's input: token ids (each in its vocabulary, the
    /// message naming the position and value) for a model with an embedding stage, float
    /// features of its width otherwise.
    public func check(against model: Model, source: String) throws {
        switch (model.embedding, tokens) {
        case (let e?, let t?):
            try e.check(t, "'\(source)': input")
        case (let e?, nil):
            throw SeqCellError(.invalidArgument,
                "'\(source)': input holds float features \(input.shape); the model starts with an embedding stage (vocabulary \(e.vocabularySize)) and trains on integer token ids [T, N] (any integer dtype)")
        case (nil, let t?):
            throw SeqCellError(.invalidArgument,
                "'\(source)': input holds integer token ids \(t.shape); the model has no embedding stage and trains on float features [T, N, \(model.inputSize)] (token ids need a model made with 'seqcell new --embedding VOCAB:DIM')")
        case (nil, nil):
            guard input.shape[2] == model.inputSize else {
                throw SeqCellError(.shape, "'\(source)': input \(input.shape) has \(input.shape[2]) features per step; the model takes \(model.inputSize)")
            }
        }
    }
}

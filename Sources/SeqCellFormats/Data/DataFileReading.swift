import Foundation
import SeqCellBase
import SeqCellModel
import SeqCellHost

// Reading training data from files (HDF5, .npy, .npz): the file side of the data types the
// model core defines (DataFiles, TrainingData, SequenceDataset).

extension DataFiles {
    /// Reads input, targets and lengths (not yet checked against each other), and the
    /// file's `layout` attribute ("time_major" or "batch_first") when an HDF5 file has one.
    public func readArrays() throws -> (input: DataArray, targets: DataArray, lengths: DataArray?, layout: String?) {
        try checkCombination()
        if isNPYPair, let targets {
            let x = try NPY.readNumbers(from: input)
            let y = try NPY.readNumbers(from: targets)
            let l = try lengths.map { try NPY.readNumbers(from: $0) }
            return (DataArray(shape: x.shape, values: x.values, what: "'\(input)'"),
                    DataArray(shape: y.shape, values: y.values, what: "'\(targets)'"),
                    l.map { DataArray(shape: $0.shape, values: $0.values, what: "'\(lengths!)'") }, nil)
        }
        if isNPZ {
            let zip = try ZipMembers(path: input)
            func member(_ name: String, required: Bool) throws -> DataArray? {
                guard let bytes = try zip.read("\(name).npy") else {
                    guard !required else {
                        throw SeqCellError(.io, "'\(input)' has no array '\(name)' (a .npz data file holds input, targets and optionally lengths)")
                    }
                    return nil
                }
                let a = try NPY.readNumbers(bytes: bytes, path: "\(input):\(name).npy")
                return DataArray(shape: a.shape, values: a.values, what: "'\(input)': \(name)")
            }
            return (try member("input", required: true)!, try member("targets", required: true)!,
                    try member("lengths", required: false), nil)
        }
        let root = try H5File(opening: input).root
        func array(_ name: String) throws -> DataArray {
            guard root.isDataset(name) else {
                throw SeqCellError(.io, "'\(input)' has no dataset '\(name)' (training data needs input, targets and optionally lengths)")
            }
            let ds = try root.dataset(name)
            let what = "'\(input)': \(name)"
            if ds.elementKind.isFloatingPoint {
                return DataArray(shape: ds.shape, values: .floats(try ds.readFloats()), what: what)
            }
            guard ds.elementKind.isInteger else {
                throw SeqCellError(.io, "\(what) must hold numbers (floating-point or integer), found \(ds.elementKind)")
            }
            let values = try ds.readInt64s()
            // HDF5 saturates uint64 values above Int64.max: say so rather than show a made-up number.
            if ds.elementKind == .unsignedInteger(bytes: 8), let i = values.firstIndex(of: .max) {
                throw SeqCellError(.invalidArgument, "\(what)[\(i)] is \(Int64.max) or more, out of range")
            }
            return DataArray(shape: ds.shape, values: .integers(values), what: what)
        }
        let layout = (try? root.hasAttribute("layout")) == true ? try? root.stringAttribute("layout") : nil
        return (try array("input"), try array("targets"), root.isDataset("lengths") ? try array("lengths") : nil, layout)
    }
}

extension TrainingData {
    /// Reads `files` and checks them against a model taking `inputSize` features and giving
    /// `outputSize` outputs, for `loss` on `target` steps: input rank, type and features;
    /// targets' shape (with a hint naming the option to change when they fit another loss,
    /// target mode or head); lengths; every class id (in 0..<outputSize, named by value and
    /// position). `layout` picks [T, N, ·] or [N, T, ·].
    /// With an `embedding` (the model's input stage), `input` must hold integer token ids
    /// [T, N] ([N, T] batch-first), each checked against its vocabulary.
    public static func load(_ files: DataFiles, layout: DataLayout, loss: LossKind, target: TargetMode,
                            inputSize: Int, outputSize: Int, embedding: Embedding? = nil) throws -> LoadedData {
        let raw = try files.readArrays()
        var layout = layout
        if !layout.stated, let stated = raw.layout {
            guard stated == "time_major" || stated == "batch_first" else {
                throw SeqCellError(.invalidArgument, "'\(files.input)': attribute layout must be time_major or batch_first, got \(MessageText.value(stated))")
            }
            layout = DataLayout(batchFirst: stated == "batch_first", stated: true)
        } else if layout.stated, let stated = raw.layout, (stated == "batch_first") != layout.batchFirst,
                  stated == "time_major" || stated == "batch_first" {
            throw SeqCellError(.invalidArgument, "'\(files.input)' says its layout is \(stated); "
                               + (layout.batchFirst ? "drop --batch-first" : "pass --batch-first"))
        }
        return try check(input: raw.input, targets: raw.targets, lengths: raw.lengths, layout: layout, loss: loss,
                         target: target, inputSize: inputSize, outputSize: outputSize, source: files.description,
                         embedding: embedding)
    }
}

extension SequenceDataset {
    public static func read(path: String, perStepTargets: Bool) throws -> SequenceDataset {
        let root = try H5File(opening: path).root
        if root.isDataset("input"), try root.dataset("input").elementKind.isInteger {
            return try readTokens(root, path: path, perStepTargets: perStepTargets)
        }
        func floats(_ name: String) throws -> Tensor {
            guard root.isDataset(name) else {
                throw SeqCellError(.io, "'\(path)' has no dataset '\(name)' (training data needs input, targets and optionally lengths)")
            }
            let ds = try root.dataset(name)
            // Class ids may be integers of any width (converted exactly below 2^24).
            if name == "targets", ds.elementKind.isInteger {
                return try Tensor.checked(shape: ds.shape, data: try ds.readInt64s().map { Float($0) }, what: "'\(path)': \(name)")
            }
            guard ds.elementKind.isFloatingPoint else {
                throw SeqCellError(.io, "'\(path)': \(name) must hold floating-point values" + (name == "targets" ? " or integer class ids" : "")
                                   + ", found \(ds.elementKind)")
            }
            return try Tensor.checked(shape: ds.shape, data: try ds.readFloats(), what: "'\(path)': \(name)")
        }
        var lengths: [Int64]? = nil
        if root.isDataset("lengths") {
            let l = try root.dataset("lengths")
            guard l.elementKind.isInteger else {
                throw SeqCellError(.io, "'\(path)': lengths must hold integers (int32 or int64), found \(l.elementKind)")
            }
            guard l.shape.count == 1 else {
                throw SeqCellError(.shape, "'\(path)': lengths must be [N] (one per sample), got shape \(l.shape)")
            }
            lengths = try l.readInt64s()
        }
        return try SequenceDataset(input: try floats("input"), targets: try floats("targets"), wideLengths: lengths,
                                   perStepTargets: perStepTargets, source: path)
    }
}

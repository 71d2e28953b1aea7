import Foundation
import SeqCellBase
import SeqCellHost

/// A numeric array read from a data file, floating-point or integer, with its shape and the
/// name messages use for it ("'train.h5': targets").
public struct DataArray: Sendable {
    public enum Values: Sendable {
        case floats([Float])
        case integers([Int64])
    }

    public var shape: [Int]
    public var values: Values
    public var what: String

    public init(shape: [Int], values: Values, what: String) {
        self.shape = shape
        self.values = values
        self.what = what
    }

    public var isInteger: Bool {
        if case .integers = values { return true }
        return false
    }

    /// The elements as floats (integers converted).
    public var floats: [Float] {
        switch values {
        case .floats(let f): return f
        case .integers(let i): return i.map { Float($0) }
        }
    }
}

/// The files one data set is read from: an HDF5 file or a `.npz` archive holding `input`,
/// `targets` and optional `lengths`; or a `.npy` input with `.npy` targets and lengths beside it.
public struct DataFiles: Codable, Equatable, Sendable {
    public var input: String
    public var targets: String?
    public var lengths: String?

    public init(input: String, targets: String? = nil, lengths: String? = nil) {
        self.input = input
        self.targets = targets
        self.lengths = lengths
    }

    /// "a.h5", or "x.npy + y.npy (+ lengths l.npy)".
    public var description: String {
        guard let targets else { return input }
        return "\(input) + \(targets)" + (lengths.map { " + \($0)" } ?? "")
    }

    public var isNPYPair: Bool { input.lowercased().hasSuffix(".npy") }
    public var isNPZ: Bool { input.lowercased().hasSuffix(".npz") }

    /// Checks the combination before anything is read.
    /// `option` names the input's option (--data, --validation); `companion` prefixes the
    /// targets and lengths options ("--" gives --targets, "--validation-" --validation-targets).
    public func checkCombination(option: String = "--data", companion: String = "--") throws {
        if isNPYPair {
            guard targets != nil else {
                throw SeqCellError(.invalidArgument, "\(option) \(input) is a .npy file: give its targets with \(companion)targets FILE.npy (and optionally \(companion)lengths FILE.npy)")
            }
        } else if targets != nil || lengths != nil {
            throw SeqCellError(.invalidArgument, "\(companion)targets and \(companion)lengths go with a .npy \(option) file; '\(input)' holds its own targets and lengths")
        }
    }
}

/// How a data file's first two axes are read.
public struct DataLayout: Sendable, Equatable {
    /// [N, T, ·] rather than [T, N, ·].
    public var batchFirst: Bool
    /// Whether the user (a flag) or the file (a `layout` attribute) said so; an unstated
    /// layout that the shapes cannot decide gets a warning.
    public var stated: Bool

    public init(batchFirst: Bool, stated: Bool) {
        self.batchFirst = batchFirst
        self.stated = stated
    }
}

/// What training and evaluation read: a data set checked against a model, loss and target mode.
public struct LoadedData: Sendable {
    public var dataset: SequenceDataset
    /// Set when the data could be read in either layout and nothing said which.
    public var layoutWarning: String?
}

public enum TrainingData {
    /// The checks of `load` on arrays already read.
    public static func check(input: DataArray, targets: DataArray, lengths: DataArray?, layout: DataLayout, loss: LossKind,
                             target: TargetMode, inputSize: Int, outputSize: Int, source: String,
                             embedding: Embedding? = nil) throws -> LoadedData {
        switch (embedding, input.isInteger) {
        case (let e?, false):
            throw SeqCellError(.invalidArgument,
                "\(input.what) holds float features \(input.shape); the model starts with an embedding stage (vocabulary \(e.vocabularySize)) and takes integer token ids [T, N] (any integer dtype)")
        case (nil, true) where input.shape.count == 2:
            throw SeqCellError(.invalidArgument,
                "\(input.what) holds integer token ids \(input.shape); the model has no embedding stage and takes float features [T, N, \(inputSize)] (token ids need a model made with 'seqcell new --embedding VOCAB:DIM')")
        case (nil, true):
            throw SeqCellError(.io, "\(input.what) must hold floating-point values, found integers")
        case (.some, true):
            guard input.shape.count == 2, input.shape.allSatisfy({ $0 >= 1 }) else {
                throw SeqCellError(.shape, "\(input.what): token ids must be 2-D, [T, N] (or [N, T] with --batch-first), with no empty axis; got \(input.shape)")
            }
        case (nil, false):
            guard input.shape.count == 3, input.shape.allSatisfy({ $0 >= 1 }) else {
                throw SeqCellError(.shape, "\(input.what) must be 3-D, [T, N, I] (or [N, T, I] with --batch-first), with no empty axis; got \(input.shape)")
            }
            let I = input.shape[2]
            guard I == inputSize else {
                throw SeqCellError(.shape, "\(input.what) has \(I) features per step (shape \(input.shape)); the model takes \(inputSize)")
            }
        }
        let (A, B) = (input.shape[0], input.shape[1])
        if loss == .crossEntropy, outputSize < 2 {
            throw SeqCellError(.shape, "--loss cross_entropy needs one output per class (at least 2); the model outputs \(outputSize): "
                               + "give it a head with one output per class (seqcell new ... --head C), or use --loss mse")
        }
        func fits(_ batchFirst: Bool) -> Bool {
            let (T, N) = batchFirst ? (B, A) : (A, B)
            return targets.shape == expectedTargets(loss: loss, target: target, T: T, N: N, O: outputSize, batchFirst: batchFirst)
                && (lengths == nil || lengths!.shape == [N])
        }
        let chosen = layout.batchFirst
        var warning: String? = nil
        if fits(chosen) {
            if fits(!chosen), !layout.stated {
                warning = "\(source): input \(input.shape) reads as [T, N, I] and as [N, T, I] (the targets\(lengths == nil ? "" : " and lengths") fit both); "
                    + "reading it \(chosen ? "batch-first" : "time-major"): pass \(chosen ? "--batch-first" : "--time-major") to say so, or \(chosen ? "--time-major" : "--batch-first") for the other"
            }
        } else if fits(!chosen) {
            throw SeqCellError(.shape, "\(source): targets \(targets.shape)" + (lengths.map { " and lengths \($0.shape)" } ?? "")
                               + " fit input \(input.shape) read as " + (chosen ? "[T, N, I]: drop --batch-first (or pass --time-major)" : "[N, T, I]: pass --batch-first"))
        } else {
            let (T, N) = chosen ? (B, A) : (A, B)
            if let l = lengths, l.shape != [N] {
                throw SeqCellError(.shape, "\(l.what) must be [N] = [\(N)] (one per sample), got \(l.shape)")
            }
            throw SeqCellError(.shape, targetMismatch(targets, loss: loss, target: target, T: T, N: N, O: outputSize, batchFirst: chosen))
        }
        let (T, N) = chosen ? (B, A) : (A, B)
        var xt: Tensor
        var tokens: TokenIDs? = nil
        switch input.values {
        case .floats(let x):
            xt = Tensor(shape: input.shape, data: x)
            if chosen { xt = swapFirstTwoAxes(xt) }
        case .integers(let ids):
            // `embedding` is set here (checked above); ids become time-major [T, N].
            tokens = try TokenIDs.checked(shape: input.shape, values: ids, vocabularySize: embedding?.vocabularySize ?? 0,
                                          batchFirst: chosen, what: input.what)
            xt = Tensor(shape: [T, N, 0], data: [])
        }
        var y = targets.floats
        if loss == .crossEntropy {
            try checkClassIDs(targets, classes: outputSize, batchFirst: chosen, perStep: target == .allSteps)
        }
        var yShape = targets.shape
        if chosen, target == .allSteps {
            // [N, T, ...] → [T, N, ...]
            let inner = targets.shape.dropFirst(2).reduce(1, *)
            var out = [Float](repeating: 0, count: y.count)
            for n in 0..<N { for t in 0..<T { for k in 0..<inner { out[(t * N + n) * inner + k] = y[(n * T + t) * inner + k] } } }
            y = out
            yShape = [T, N] + targets.shape.dropFirst(2)
        }
        var wide: [Int64]? = nil
        if let l = lengths {
            guard case .integers(let v) = l.values else {
                throw SeqCellError(.io, "\(l.what) must hold integers (one length per sample), found floating-point values")
            }
            wide = v
        }
        var ds = try SequenceDataset(input: xt, targets: Tensor(shape: yShape, data: y), wideLengths: wide,
                                     perStepTargets: target == .allSteps, source: source)
        ds.tokens = tokens
        return LoadedData(dataset: ds, layoutWarning: warning)
    }

    /// The targets shape `loss` on `target` steps needs, in the file's layout.
    static func expectedTargets(loss: LossKind, target: TargetMode, T: Int, N: Int, O: Int, batchFirst: Bool) -> [Int] {
        let steps = batchFirst ? [N, T] : [T, N]
        switch (loss, target) {
        case (.mse, .lastStep): return [N, O]
        case (.mse, .allSteps): return steps + [O]
        case (.crossEntropy, .lastStep): return [N]
        case (.crossEntropy, .allSteps): return steps
        }
    }

    /// Why `targets` do not fit, and which option to change.
    static func targetMismatch(_ targets: DataArray, loss: LossKind, target: TargetMode, T: Int, N: Int, O: Int, batchFirst: Bool) -> String {
        let s = targets.shape
        let steps = batchFirst ? [N, T] : [T, N]
        let need = expectedTargets(loss: loss, target: target, T: T, N: N, O: O, batchFirst: batchFirst)
        let base = "\(targets.what) are \(s); --loss \(loss.rawValue) --target \(target.rawValue) needs \(need)"
        let hint: String
        switch loss {
        case .mse:
            if s == [N] || (s == steps && target == .allSteps) {
                hint = "they look like class ids: use --loss cross_entropy (with a head of one output per class)"
            } else if target == .lastStep, s.count == 3, Array(s.prefix(2)) == steps {
                hint = "they are per step: use --target all"
            } else if target == .allSteps, s.count == 2, s[0] == N {
                hint = "they are per sample: use --target last"
            } else if target == .lastStep, s.count == 2, s[0] == N {
                hint = "they have \(s[1]) values per sample and the model outputs \(O): give the model a head of size \(s[1]) (seqcell new ... --head \(s[1]))"
            } else if target == .allSteps, s.count == 3, Array(s.prefix(2)) == steps {
                hint = "they have \(s[2]) values per step and the model outputs \(O): give the model a head of size \(s[2]) (seqcell new ... --head \(s[2]))"
            } else if target == .lastStep, s.count == 2, s == steps {
                hint = "they look like per-step class ids: use --loss cross_entropy --target all"
            } else {
                hint = "check --target and the data's layout (--batch-first)"
            }
        case .crossEntropy:
            if target == .lastStep, s.count == 2, s[0] == N, s != steps {
                hint = "they hold \(s[1]) values per sample, not one class id: use --loss mse, or store class ids [N]"
            } else if target == .lastStep, s == steps {
                hint = "they are class ids per step: use --target all"
            } else if target == .allSteps, s == [N] {
                hint = "they are one class id per sample: use --target last"
            } else if target == .allSteps, s.count == 3, Array(s.prefix(2)) == steps {
                hint = "they hold \(s[2]) values per step, not class ids: use --loss mse"
            } else {
                hint = "check --target and the data's layout (--batch-first)"
            }
        }
        return base + ": " + hint
    }

    /// Every class id must be an integer in 0..<classes; the first that is not is named with
    /// its value and position (in the file's own layout).
    static func checkClassIDs(_ targets: DataArray, classes: Int, batchFirst: Bool, perStep: Bool) throws {
        func position(_ i: Int) -> String {
            guard perStep else { return "sample \(i)" }
            let inner = targets.shape[1]
            let (a, b) = (i / inner, i % inner)
            return batchFirst ? "sample \(a), step \(b)" : "step \(a), sample \(b)"
        }
        func fail(_ value: String, _ i: Int) -> SeqCellError {
            SeqCellError(.invalidArgument, "\(targets.what): class id \(value) at \(position(i)) is not in 0..<\(classes) "
                         + "(the model outputs \(classes) class scores; a model for more classes needs a larger head, seqcell new ... --head C)")
        }
        switch targets.values {
        case .integers(let v):
            if let i = v.firstIndex(where: { $0 < 0 || $0 >= Int64(classes) }) { throw fail(String(v[i]), i) }
        case .floats(let v):
            if let i = v.firstIndex(where: { c in Int(exactly: c).map { $0 < 0 || $0 >= classes } ?? true }) {
                throw fail("\(v[i])", i)
            }
        }
    }
}

/// A data path as stored in a checkpoint's training configuration, so that `--resume` finds
/// the file from any working directory.
public struct StoredPath: Codable, Equatable, Sendable {
    /// The path as the user gave it.
    public var given: String
    /// Absolute, resolved against the working directory at the time.
    public var absolute: String
    /// From the folder of the checkpoint that stores it.
    public var relativeToCheckpoint: String

    /// `given` as the user wrote it, found at `resolved` (the same, or where a stored path
    /// resolved to), stored for a checkpoint written at `checkpoint`.
    public init(given: String, resolved: String, checkpoint: String) {
        self.given = given
        absolute = absolutePath(resolved)
        relativeToCheckpoint = relativePath(from: (absolutePath(checkpoint) as NSString).deletingLastPathComponent, to: absolute)
    }

    /// The first of: the absolute path, the path relative to `checkpoint`'s folder, the path as
    /// given (from the working directory), that exists.
    public func resolve(checkpoint: String) throws -> String {
        let folder = (absolutePath(checkpoint) as NSString).deletingLastPathComponent
        let candidates = [absolute, (folder as NSString).appendingPathComponent(relativeToCheckpoint), given]
        if let found = candidates.first(where: { FileManager.default.fileExists(atPath: $0) }) { return found }
        throw SeqCellError(.io, "the data file '\(given)' recorded in '\(checkpoint)' is not at \(absolute), "
                           + "nor at \(relativeToCheckpoint) beside the checkpoint: give it again with --data")
    }

    /// A path as stored by older checkpoints (as given): from the working directory, else
    /// from the checkpoint's folder.
    public static func resolveLegacy(_ given: String, checkpoint: String) throws -> String {
        if FileManager.default.fileExists(atPath: given) || given.hasPrefix("/") { return given }
        let beside = ((absolutePath(checkpoint) as NSString).deletingLastPathComponent as NSString).appendingPathComponent(given)
        if FileManager.default.fileExists(atPath: beside) { return beside }
        throw SeqCellError(.io, "the data file '\(given)' recorded in '\(checkpoint)' is neither in the working directory nor beside the checkpoint: give it again with --data")
    }
}

/// The data files of a run, stored with `StoredPath`s.
public struct StoredDataFiles: Codable, Equatable, Sendable {
    public var input: StoredPath
    public var targets: StoredPath?
    public var lengths: StoredPath?

    public init(given: DataFiles, resolved: DataFiles, checkpoint: String) {
        input = StoredPath(given: given.input, resolved: resolved.input, checkpoint: checkpoint)
        targets = zip2(given.targets, resolved.targets).map { StoredPath(given: $0, resolved: $1, checkpoint: checkpoint) }
        lengths = zip2(given.lengths, resolved.lengths).map { StoredPath(given: $0, resolved: $1, checkpoint: checkpoint) }
    }

    public func resolve(checkpoint: String) throws -> DataFiles {
        DataFiles(input: try input.resolve(checkpoint: checkpoint), targets: try targets?.resolve(checkpoint: checkpoint),
                  lengths: try lengths?.resolve(checkpoint: checkpoint))
    }

    /// What the user gave.
    public var given: DataFiles { DataFiles(input: input.given, targets: targets?.given, lengths: lengths?.given) }
}

/// `path` made absolute against the working directory, with `.` and `..` removed.
public func absolutePath(_ path: String) -> String {
    URL(fileURLWithPath: path).standardizedFileURL.path
}

/// The relative path from folder `from` to `to` (both absolute).
public func relativePath(from: String, to: String) -> String {
    let a = from.split(separator: "/", omittingEmptySubsequences: true)
    let b = to.split(separator: "/", omittingEmptySubsequences: true)
    var common = 0
    while common < a.count, common < b.count, a[common] == b[common] { common += 1 }
    let parts = Array(repeating: "..", count: a.count - common) + b[common...].map(String.init)
    return parts.isEmpty ? "." : parts.joined(separator: "/")
}

private func zip2(_ a: String?, _ b: String?) -> (String, String)? {
    guard let a, let b else { return nil }
    return (a, b)
}

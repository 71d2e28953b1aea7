import Foundation
import SeqCellBase
import SeqCellHost
import SeqCellModel

/// Named float32 tensors read from a file — a PyTorch `state_dict` as saved with safetensors
/// or written into an HDF5 group — with the file (and group) they came from, for messages.
public struct TensorDictionary: Sendable {
    /// e.g. "model.safetensors" or "weights.h5:/encoder".
    public var origin: String
    public var tensors: [String: Tensor]
    /// The safetensors `__metadata__` map (empty for HDF5).
    public var metadata: [String: String]
    /// Notes about conversions made while reading (e.g. float64 rounded to float32).
    public var notes: [String]

    public init(origin: String, tensors: [String: Tensor], metadata: [String: String] = [:], notes: [String] = []) {
        self.origin = origin
        self.tensors = tensors
        self.metadata = metadata
        self.notes = notes
    }

    public var names: [String] { tensors.keys.sorted() }

    /// Every tensor of a safetensors file, converted to float32 (F64, F16, BF16 are accepted
    /// and converted; any integer or boolean tensor is an error naming it).
    public static func safetensors(path: String) throws -> TensorDictionary {
        try InteropFile.refusePickle(path)
        let file = try SafeTensorsFile(path: path)
        var tensors: [String: Tensor] = [:]
        var converted: [String] = []
        for e in file.entries {
            tensors[e.name] = try file.tensor(e.name)
            if e.dtype != .f32 { converted.append("\(e.name) (\(e.dtype.rawValue))") }
        }
        let notes = converted.isEmpty ? [] : ["converted to float32: " + converted.joined(separator: ", ")]
        return TensorDictionary(origin: path, tensors: tensors, metadata: file.metadata, notes: notes)
    }

    /// The datasets directly inside `group` (default: the root) of an HDF5 file, each a
    /// floating-point array, converted to float32. Subgroups are not part of the dictionary.
    public static func hdf5(path: String, group: String? = nil) throws -> TensorDictionary {
        try InteropFile.refusePickle(path)
        let file = try H5File(opening: path)
        var g = try file.root
        let where_ = group.map { $0.hasPrefix("/") ? $0 : "/" + $0 } ?? "/"
        if let group {
            guard g.isGroup(group) else {
                throw SeqCellError(.io, "'\(path)' has no group '\(where_)' (root members: \((try? g.memberNames())?.joined(separator: ", ") ?? "?"))")
            }
            g = try g.group(group)
        }
        var tensors: [String: Tensor] = [:]
        var converted: [String] = []
        for name in try g.memberNames() where g.isDataset(name) {
            let ds = try g.dataset(name)
            switch ds.elementKind {
            case .float32: break
            case .float64, .otherFloat: converted.append("\(name) (\(ds.elementKind))")
            default:
                throw SeqCellError(.unsupported,
                    "'\(path)': dataset '\(g.path == "/" ? "" : g.path)/\(name)' is \(ds.elementKind); state_dict tensors must be floating-point")
            }
            tensors[name] = try Tensor.checked(shape: ds.shape, data: try ds.readFloats(), what: "'\(path)':\(ds.path)")
        }
        let notes = converted.isEmpty ? [] : ["converted to float32: " + converted.joined(separator: ", ")]
        return TensorDictionary(origin: where_ == "/" ? path : "\(path):\(where_)", tensors: tensors, notes: notes)
    }
}

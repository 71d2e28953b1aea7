import Foundation
import SeqCellBase
import SeqCellHost
import SeqCellModel

/// What a file is, judged from its first bytes (never from running anything in it).
public enum InteropFileKind: String, Sendable {
    case hdf5 = "an HDF5 file"
    case zip = "a zip archive"
    case pickle = "a Python pickle"
    case safetensors = "a safetensors file"
    case json = "a JSON file"
    case unknown = "of unknown type"
}

/// Which framework a model file comes from.
public enum InteropFramework: String, Sendable, CaseIterable {
    case pytorch, keras
}

/// File sniffing shared by the importers.
public enum InteropFile {
    /// The advice every pickle refusal gives.
    public static let safetensorsAdvice =
        "SeqCell never unpickles files (unpickling can run arbitrary code): save it with "
        + "safetensors.torch.save_file(model.state_dict(), \"model.safetensors\") and import that"

    /// The kind of `path` from its signature.
    public static func kind(of path: String) throws -> InteropFileKind {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
                throw SeqCellError(.io, "cannot read '\(path)'" + (isDirectory.boolValue ? ": it is a directory" : ""))
            }
            throw SeqCellError(.io, "cannot read '\(path)': no such file")
        }
        defer { try? handle.close() }
        let head = [UInt8]((try? handle.read(upToCount: 16)) ?? Data())
        let size = (try? handle.seekToEnd()) ?? UInt64(head.count)
        if let k = kind(head: head, fileSize: size) { return k }
        if let first = head.first(where: { ![0x20, 0x09, 0x0A, 0x0D].contains($0) }), first == UInt8(ascii: "{") { return .json }
        // HDF5 allows a user block before the signature (512, 1024, … bytes).
        if H5File.isHDF5(path) { return .hdf5 }
        return .unknown
    }

    /// The kind told by the first bytes and the file's size, or nil when they do not say.
    ///
    /// A safetensors file is recognised by its structure first (an 8-byte little-endian header
    /// length that fits the file, then `{`), before any pickle sniffing: its first byte is the
    /// header length's low byte, which is 0x80 for headers of 640, 896, 1152, 1408… bytes, and
    /// its second byte then looks like a pickle protocol number.
    static func kind(head: [UInt8], fileSize: UInt64) -> InteropFileKind? {
        if head.starts(with: [0x89, 0x48, 0x44, 0x46, 0x0D, 0x0A, 0x1A, 0x0A]) { return .hdf5 }
        if head.starts(with: [0x50, 0x4B, 0x03, 0x04]) || head.starts(with: [0x50, 0x4B, 0x05, 0x06]) { return .zip }
        if head.count >= 9, head[8] == UInt8(ascii: "{") {
            let n = (0..<8).reduce(UInt64(0)) { $0 | UInt64(head[$1]) << (8 * UInt64($1)) }
            if n >= 2, fileSize >= 8, n <= fileSize - 8 { return .safetensors }
        }
        if head.count >= 2, head[0] == 0x80, (2...5).contains(head[1]) { return .pickle }
        // A damaged safetensors file (its header length does not fit) is still one, unless
        // its first bytes are JSON's leading white space.
        if head.count >= 9, head[8] == UInt8(ascii: "{"), !head[0..<8].allSatisfy({ [0x20, 0x09, 0x0A, 0x0D].contains($0) }) {
            return .safetensors
        }
        return nil
    }

    /// Throws the safetensors advice if `path` is a PyTorch pickle: a raw pickle (legacy
    /// `torch.save`) or a zip holding `data.pkl` (`torch.save` since PyTorch 1.6).
    public static func refusePickle(_ path: String) throws {
        switch try kind(of: path) {
        case .pickle:
            throw SeqCellError(.unsupported, "'\(path)' is a Python pickle (torch.save); \(safetensorsAdvice)")
        case .zip:
            let names = (try? zipEntryNames(path)) ?? []
            if names.contains(where: { $0 == "data.pkl" || $0.hasSuffix("/data.pkl") }) {
                throw SeqCellError(.unsupported, "'\(path)' is a PyTorch zip pickle (torch.save); \(safetensorsAdvice)")
            }
        default:
            break
        }
    }

    /// The names of a zip archive's entries.
    static func zipEntryNames(_ path: String) throws -> [String] {
        try ZipMembers(path: path).names()
    }

    /// The framework a file comes from: the extension first (.safetensors, .pt/.pth/.bin →
    /// pytorch; .keras, .weights.h5 → keras), then, for other HDF5 files, its contents
    /// (Keras writes `model_config`/`model_weights`/`layers`; a state_dict has `weight_ih_l0`).
    public static func framework(of path: String, group: String? = nil) throws -> InteropFramework {
        let lower = path.lowercased()
        if lower.hasSuffix(".safetensors") || lower.hasSuffix(".pt") || lower.hasSuffix(".pth") || lower.hasSuffix(".bin") {
            return .pytorch
        }
        if lower.hasSuffix(".keras") || lower.hasSuffix(".weights.h5") { return .keras }
        let kind = try kind(of: path)
        switch kind {
        case .pickle: return .pytorch
        case .safetensors: return .pytorch
        case .zip:
            let names = try zipEntryNames(path)
            if names.contains("config.json") { return .keras }
            return .pytorch
        case .hdf5:
            let file = try H5File(opening: path)
            let root = try file.root
            if try root.hasAttribute("model_config") || root.hasAttribute("keras_version") || root.isGroup("model_weights") {
                return .keras
            }
            if root.isGroup("layers") || root.isGroup("_layer_checkpoint_dependencies") { return .keras }
            if group != nil { return .pytorch }  // --group is a PyTorch option
            if try root.memberNames().contains(where: { $0.contains("weight_ih_l") || $0.contains("weight_hh_l") }) { return .pytorch }
            throw SeqCellError(.invalidArgument,
                "cannot tell whether '\(path)' holds PyTorch or Keras weights: it has neither Keras' model_config/model_weights/layers nor tensors named weight_ih_l0…; pass --from pytorch (with --group) or --from keras")
        case .json, .unknown:
            throw SeqCellError(.invalidArgument,
                "'\(path)' is \(kind.rawValue), not a model file SeqCell imports (safetensors, HDF5, a .keras archive, or an ONNX model: .onnx or --from onnx)")
        }
    }
}

extension H5File {
    /// Whether libhdf5 recognises `path` as HDF5 (which also finds a signature after a user block).
    static func isHDF5(_ path: String) -> Bool {
        (try? H5File(opening: path)) != nil
    }
}

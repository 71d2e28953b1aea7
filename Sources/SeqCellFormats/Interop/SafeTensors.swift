import Foundation
import SeqCellBase
import SeqCellHost
import SeqCellModel

/// The element types a safetensors file may declare. SeqCell reads the floating-point ones
/// (F32 as is; F64, F16 and BF16 converted to float32) and refuses the rest by name.
public enum SafeTensorsDType: String, Sendable, CaseIterable {
    case f64 = "F64", f32 = "F32", f16 = "F16", bf16 = "BF16"
    case i64 = "I64", i32 = "I32", i16 = "I16", i8 = "I8"
    case u64 = "U64", u32 = "U32", u16 = "U16", u8 = "U8"
    case bool = "BOOL", f8e5m2 = "F8_E5M2", f8e4m3 = "F8_E4M3"

    /// Bytes per element.
    public var size: Int {
        switch self {
        case .f64, .i64, .u64: 8
        case .f32, .i32, .u32: 4
        case .f16, .bf16, .i16, .u16: 2
        case .i8, .u8, .bool, .f8e5m2, .f8e4m3: 1
        }
    }

    /// Whether SeqCell converts this type to float32 on reading.
    public var isReadable: Bool { self == .f32 || self == .f64 || self == .f16 || self == .bf16 }
}

/// A safetensors file (https://github.com/huggingface/safetensors): an 8-byte little-endian
/// header length N, N bytes of JSON `{name: {"dtype", "shape", "data_offsets": [begin, end]},
/// "__metadata__": {str: str}}`, then the tensors' raw little-endian bytes, offsets relative
/// to the end of the header.
///
/// Reading is strict, as the reference implementation: the header must fit the file, be
/// valid JSON, every entry must have a known dtype, a shape whose element count times the
/// dtype's size is exactly its byte range, and the ranges must tile the data area with no
/// gap, overlap or trailing bytes. Nothing in the file is executed.
public struct SafeTensorsFile: Sendable {
    public struct Entry: Sendable, Equatable {
        public var name: String
        public var dtype: SafeTensorsDType
        public var shape: [Int]
        /// Byte range within the data area.
        public var begin: Int
        public var end: Int
    }

    public let path: String
    /// The `__metadata__` map, if any.
    public let metadata: [String: String]
    /// Every tensor, sorted by name.
    public let entries: [Entry]
    private let data: [UInt8]
    /// Position of each name in `entries`.
    private let index: [String: Int]

    /// Headers above this size are refused, as the reference implementation does.
    static let maximumHeaderSize = 100_000_000
    /// More tensors than this in one file are refused (a recurrent model has tens).
    static let maximumEntries = 100_000
    /// Tensor names longer than this (in UTF-8 bytes) are refused.
    static let maximumNameLength = 4096
    /// A dimension larger than this is refused (an empty tensor could otherwise declare any).
    static let maximumDimension = Int(Int32.max)
    /// Shapes of more dimensions than this are refused.
    static let maximumRank = 64

    public init(path: String) throws {
        guard let contents = FileManager.default.contents(atPath: path) else {
            throw SeqCellError(.io, "cannot read '\(path)': no such file or not readable")
        }
        try self.init(bytes: [UInt8](contents), path: path)
    }

    /// Parses and validates the whole file: the header in time linear in its length, every
    /// entry's dtype, shape and byte range checked with overflow-checked arithmetic against
    /// the data area, and the ranges tiling it exactly.
    public init(bytes: [UInt8], path: String) throws {
        func bad(_ message: String) -> SeqCellError { SeqCellError(.io, "'\(path)' is not a valid safetensors file: \(message)") }
        guard bytes.count >= 8 else { throw bad("it has \(bytes.count) bytes, fewer than the 8-byte header length") }
        let n = (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[$1]) << (8 * UInt64($1)) }
        guard n <= UInt64(Self.maximumHeaderSize) else { throw bad("header length \(n) is larger than the limit of \(Self.maximumHeaderSize) bytes") }
        let headerLength = Int(n)
        guard headerLength <= bytes.count - 8 else {
            throw bad("header length \(headerLength) runs past the end of the \(bytes.count)-byte file")
        }
        guard headerLength >= 2, bytes[8] == UInt8(ascii: "{") else { throw bad("the header does not start with '{'") }
        let parser = BoundedJSONParser(limits: JSONLimits(
            maxDepth: 4, maxContainerCount: Self.maximumEntries + 1, maxValues: 16 * (Self.maximumEntries + 1),
            maxStringBytes: max(Self.maximumNameLength, 65536)))
        let json: JSONValue
        do {
            // The reference writer pads the header with trailing spaces; JSON allows them.
            json = try parser.parse(bytes[8..<(8 + headerLength)])
        } catch let e as JSONParseError {
            if e.message.hasPrefix("an object has more than"), bytes.count > 8 + e.offset, e.offset > 0 {
                // Only the top level can be that large within the depth limit of a valid header.
                throw bad("the header lists more than \(Self.maximumEntries) tensors")
            }
            throw bad("the header is not valid JSON: \(e.message) at byte \(8 + e.offset)")
        }
        guard case .object(let members) = json else { throw bad("the header is not a JSON object") }
        let dataSize = bytes.count - 8 - headerLength
        var metadata: [String: String] = [:]
        var entries: [Entry] = []
        entries.reserveCapacity(members.count)
        for (name, info) in members {
            if name == "__metadata__" {
                guard case .object(let pairs) = info else { throw bad("__metadata__ is \(info.kindDescription), not an object of strings") }
                for (k, v) in pairs {
                    guard case .string(let s) = v else {
                        throw bad("__metadata__ entry \(displayName(k)) is \(v.kindDescription), not a string")
                    }
                    metadata[k] = s
                }
                continue
            }
            guard entries.count < Self.maximumEntries else { throw bad("more than \(Self.maximumEntries) tensors") }
            let shown = displayName(name)
            guard !name.isEmpty, name.utf8.count <= Self.maximumNameLength else {
                throw bad(name.isEmpty ? "a tensor has an empty name" : "tensor \(shown) has a name longer than \(Self.maximumNameLength) bytes")
            }
            guard case .object(let fields) = info else { throw bad("tensor \(shown) is \(info.kindDescription), not {dtype, shape, data_offsets}") }
            var dtypeValue: JSONValue?, shapeValue: JSONValue?, offsetsValue: JSONValue?
            for (k, v) in fields {
                switch k {
                case "dtype": dtypeValue = v
                case "shape": shapeValue = v
                case "data_offsets": offsetsValue = v
                default: break
                }
            }
            guard let dtypeValue else { throw bad("tensor \(shown) has no 'dtype'") }
            guard case .string(let dtypeName) = dtypeValue else { throw bad("tensor \(shown): dtype is \(dtypeValue.kindDescription), not a string") }
            guard let dtype = SafeTensorsDType(rawValue: dtypeName) else {
                throw bad("tensor \(shown): unknown dtype \(displayName(dtypeName, limit: 32))")
            }
            guard let shapeValue else { throw bad("tensor \(shown) has no 'shape'") }
            guard case .array(let dims) = shapeValue else { throw bad("tensor \(shown): shape is \(shapeValue.kindDescription), not an array") }
            guard dims.count <= Self.maximumRank else { throw bad("tensor \(shown): shape has \(dims.count) dimensions (at most \(Self.maximumRank))") }
            var shape: [Int] = []
            shape.reserveCapacity(dims.count)
            var count = 1
            var overflow = false
            for d in dims {
                guard let v = d.nonNegativeInteger else {
                    if case .number(let t) = d, t.hasPrefix("-") { throw bad("tensor \(shown): negative dimension in shape (\(t.prefix(24)))") }
                    throw bad("tensor \(shown): shape holds \(d.kindDescription), not a non-negative integer")
                }
                guard v <= Self.maximumDimension else {
                    throw bad("tensor \(shown): dimension \(v) in its shape is larger than \(Self.maximumDimension)")
                }
                shape.append(v)
                let (p, o) = count.multipliedReportingOverflow(by: v)
                overflow = overflow || o
                count = p
            }
            guard let offsetsValue else { throw bad("tensor \(shown) has no 'data_offsets'") }
            guard case .array(let offsets) = offsetsValue, offsets.count == 2 else {
                throw bad("tensor \(shown): data_offsets is \(offsetsValue.kindDescription), not [begin, end]")
            }
            guard let begin = offsets[0].nonNegativeInteger, let end = offsets[1].nonNegativeInteger else {
                throw bad("tensor \(shown): data_offsets hold \(offsets[0].kindDescription) and \(offsets[1].kindDescription), not two non-negative integers")
            }
            guard begin <= end, end <= dataSize else {
                throw bad("tensor \(shown): data_offsets [\(begin), \(end)] lie outside the \(dataSize)-byte data area")
            }
            guard !overflow else { throw bad("tensor \(shown): shape \(shape) has more elements than can be addressed") }
            let (byteCount, o) = count.multipliedReportingOverflow(by: dtype.size)
            guard !o, byteCount == end - begin else {
                throw bad("tensor \(shown): shape \(shape) of \(dtype.rawValue) needs \(count) × \(dtype.size) bytes, data_offsets give \(end - begin)")
            }
            entries.append(Entry(name: name, dtype: dtype, shape: shape, begin: begin, end: end))
        }
        // The ranges must tile the data area exactly: no overlap, no hole, nothing after.
        // Empty tensors take no bytes and may sit anywhere in the data area.
        var position = 0
        var previous: Entry?
        for e in entries.sorted(by: { ($0.begin, $0.end) < ($1.begin, $1.end) }) where e.end > e.begin {
            if e.begin < position {
                throw bad("tensor \(displayName(e.name)) overlaps \(previous.map { displayName($0.name) } ?? "another tensor") (bytes \(e.begin)..<\(e.end))")
            }
            if e.begin > position { throw bad("bytes \(position)..<\(e.begin) of the data area belong to no tensor (before \(displayName(e.name)))") }
            position = e.end
            previous = e
        }
        guard position == dataSize else {
            throw bad("\(dataSize - position) bytes after the last tensor belong to no tensor")
        }
        self.path = path
        self.metadata = metadata
        self.entries = entries.sorted { $0.name < $1.name }
        self.index = Dictionary(uniqueKeysWithValues: self.entries.enumerated().map { ($1.name, $0) })
        self.data = Array(bytes[(8 + headerLength)...])
    }

    public var names: [String] { entries.map(\.name) }

    public func entry(_ name: String) -> Entry? { index[name].map { entries[$0] } }

    /// The tensor `name` as float32. F64 is rounded to nearest; F16 and BF16 convert exactly.
    public func tensor(_ name: String) throws -> Tensor {
        guard let e = entry(name) else { throw SeqCellError(.io, "'\(path)' has no tensor \(displayName(name))") }
        guard e.dtype.isReadable else {
            throw SeqCellError(.unsupported,
                "'\(path)': tensor \(displayName(name)) is \(e.dtype.rawValue); SeqCell reads floating-point weights (F32, or F64/F16/BF16 converted to float32)")
        }
        let count = e.shape.reduce(1, *)
        var out = [Float](repeating: 0, count: count)
        data.withUnsafeBytes { raw in
            let base = e.begin
            for i in 0..<count {
                switch e.dtype {
                case .f32:
                    out[i] = Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: base + 4 * i, as: UInt32.self)))
                case .f64:
                    out[i] = Float(Double(bitPattern: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: base + 8 * i, as: UInt64.self))))
                case .f16:
                    out[i] = Float(Float16(bitPattern: UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: base + 2 * i, as: UInt16.self))))
                case .bf16:
                    let bits = UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: base + 2 * i, as: UInt16.self))
                    out[i] = Float(bitPattern: UInt32(bits) << 16)
                default:
                    break
                }
            }
        }
        return Tensor(shape: e.shape, data: out)
    }

    /// The bytes of a safetensors file holding `tensors` as F32, in the given order, with the
    /// header padded with spaces to a multiple of 8 bytes (as the reference writer does).
    public static func encode(_ tensors: [(name: String, tensor: Tensor)], metadata: [String: String] = [:]) throws -> [UInt8] {
        var seen = Set<String>()
        for (name, _) in tensors {
            guard !name.isEmpty, name != "__metadata__", seen.insert(name).inserted else {
                throw SeqCellError(.invalidArgument, "safetensors: tensor name '\(name)' is empty, reserved or repeated")
            }
        }
        var header = "{"
        var parts: [String] = []
        if !metadata.isEmpty {
            let m = metadata.sorted { $0.key < $1.key }.map { "\(jsonString($0.key)):\(jsonString($0.value))" }.joined(separator: ",")
            parts.append("\"__metadata__\":{\(m)}")
        }
        var offset = 0
        for (name, t) in tensors {
            let end = offset + 4 * t.count
            parts.append("\(jsonString(name)):{\"dtype\":\"F32\",\"shape\":[\(t.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(end)]}")
            offset = end
        }
        header += parts.joined(separator: ",") + "}"
        var headerBytes = Array(header.utf8)
        while headerBytes.count % 8 != 0 { headerBytes.append(UInt8(ascii: " ")) }
        var out: [UInt8] = []
        out.reserveCapacity(8 + headerBytes.count + offset)
        let n = UInt64(headerBytes.count)
        out += (0..<8).map { UInt8(truncatingIfNeeded: n >> (8 * UInt64($0))) }
        out += headerBytes
        for (_, t) in tensors {
            t.data.map { $0.bitPattern.littleEndian }.withUnsafeBytes { out += $0 }
        }
        return out
    }

    /// Writes `tensors` as F32 to `path` atomically (a temporary file renamed over it).
    public static func write(_ tensors: [(name: String, tensor: Tensor)], metadata: [String: String] = [:], to path: String) throws {
        let bytes = try encode(tensors, metadata: metadata)
        try writeFileAtomically(Data(bytes), to: path)
    }
}

/// A JSON string literal for `s`.
func jsonString(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case _ where u.value < 0x20: out += String(format: "\\u%04x", u.value)
        default: out.unicodeScalars.append(u)
        }
    }
    return out + "\""
}

/// Writes `data` so that `path` holds either its old content or all of `data`.
func writeFileAtomically(_ data: Data, to path: String) throws {
    try writeBytesAtomically(data, to: path)
}

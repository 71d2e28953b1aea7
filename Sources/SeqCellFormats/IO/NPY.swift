import Glibc
import SeqCellBase
import SeqCellHost
import SeqCellModel

/// A `.npy` file that cannot be read or written, naming the file and, for a bad header, the
/// header field, e.g. `cannot read 'w.npy': header field 'descr': big-endian '>f4' is not supported`.
public struct NPYError: Error, CustomStringConvertible {
    public var path: String
    /// `read` or `write`.
    public var operation: String
    /// The header part at fault (`magic`, `version`, `header length`, `descr`, `fortran_order`,
    /// `shape`, `header`), or nil for the data or the file itself.
    public var field: String?
    public var message: String

    public var description: String {
        "cannot \(operation) '\(path)': " + (field.map { "header field '\($0)': " } ?? "") + message
    }
}

/// Reads and writes NumPy `.npy` files: format versions 1.0, 2.0 and 3.0, little-endian
/// `<f4`, `<f8`, `<i4`, `<i8`, C order. Shapes list the outermost dimension first; `[]` is a
/// scalar (one element).
public enum NPY {
    /// Headers longer than this are refused (NumPy's own reader stops at 10,000 bytes by default).
    public static let maximumHeaderLength = 1 << 20
    /// Arrays of more dimensions than this are refused.
    public static let maximumRank = 64

    /// Reads a float or integer array, converting its elements to `Float`.
    public static func readFloats(from path: String) throws -> (shape: [Int], floats: [Float]) {
        let array = try NPYArray(path: path)
        let floats: [Float] = array.elements { dtype, raw, offset in
            switch dtype {
            case .f4: Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
            case .f8: Float(Double(bitPattern: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: UInt64.self))))
            case .i4: Float(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: Int32.self)))
            case .i8: Float(Int64(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: Int64.self)))
            default: Float.nan  // not allowed by `NPYArray(path:)`'s default dtypes
            }
        }
        return (array.shape, floats)
    }

    /// Reads a float (`<f4`, `<f8`) or integer array of any width (`|i1`, `|u1`, `<i2`, `<u2`,
    /// `<i4`, `<u4`, `<i8`, `<u8`): floats as `Float`, integers exactly as `Int64` (a `<u8`
    /// value above `Int64.max` is refused, naming it).
    public static func readNumbers(from path: String) throws -> (shape: [Int], values: DataArray.Values) {
        try numbers(try NPYArray(path: path, allowed: NPYDType.allCases), path: path)
    }

    /// The same, from a file's bytes (a `.npz` member); `path` names it in messages.
    public static func readNumbers(bytes: [UInt8], path: String) throws -> (shape: [Int], values: DataArray.Values) {
        try numbers(try NPYArray(bytes: bytes, path: path, allowed: NPYDType.allCases), path: path)
    }

    private static func numbers(_ array: NPYArray, path: String) throws -> (shape: [Int], values: DataArray.Values) {
        func load<T: FixedWidthInteger>(_: T.Type, _ raw: UnsafeRawBufferPointer, _ offset: Int) -> T {
            T(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: T.self))
        }
        switch array.dtype {
        case .f4, .f8:
            return (array.shape, .floats(try readFloatsChecked(array)))
        case .u8:
            let wide: [UInt64] = array.elements { _, raw, offset in load(UInt64.self, raw, offset) }
            if let i = wide.firstIndex(where: { $0 > UInt64(Int64.max) }) {
                throw NPYError(path: path, operation: "read", field: nil, message: "element \(i) (\(wide[i])) does not fit in Int64")
            }
            return (array.shape, .integers(wide.map { Int64($0) }))
        default:
            let values: [Int64] = array.elements { dtype, raw, offset in
                switch dtype {
                case .i1: Int64(Int8(bitPattern: raw[offset]))
                case .u1: Int64(raw[offset])
                case .i2: Int64(load(Int16.self, raw, offset))
                case .u2: Int64(load(UInt16.self, raw, offset))
                case .i4: Int64(load(Int32.self, raw, offset))
                case .u4: Int64(load(UInt32.self, raw, offset))
                default: load(Int64.self, raw, offset)
                }
            }
            return (array.shape, .integers(values))
        }
    }

    private static func readFloatsChecked(_ array: NPYArray) throws -> [Float] {
        array.elements { dtype, raw, offset in
            dtype == .f4 ? Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
                : Float(Double(bitPattern: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: UInt64.self))))
        }
    }

    /// Reads an `<i4` or `<i8` array; `<i8` values must fit in `Int32`.
    public static func readInt32s(from path: String) throws -> (shape: [Int], values: [Int32]) {
        let array = try NPYArray(path: path)
        guard array.dtype == .i4 || array.dtype == .i8 else {
            throw NPYError(
                path: path, operation: "read", field: "descr",
                message: "expected an integer array ('<i4' or '<i8'), found '\(array.dtype.rawValue)'")
        }
        let wide: [Int64] = array.elements { dtype, raw, offset in
            dtype == .i4
                ? Int64(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: Int32.self)))
                : Int64(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: Int64.self))
        }
        if let index = wide.firstIndex(where: { Int32(exactly: $0) == nil }) {
            throw NPYError(
                path: path, operation: "read", field: nil,
                message: "element \(index) (\(wide[index])) does not fit in Int32")
        }
        return (array.shape, wide.map { Int32($0) })
    }

    /// Writes `floats`, row-major, as a `<f4` array of `shape`, which must hold exactly
    /// `floats.count` elements.
    public static func write(to path: String, shape: [Int], floats: [Float]) throws {
        let count = shape.reduce(Int?(1)) { product, dim in
            guard let product, dim >= 0 else { return nil }
            let (next, overflow) = product.multipliedReportingOverflow(by: dim)
            return overflow ? nil : next
        }
        guard count == floats.count else {
            throw NPYError(
                path: path, operation: "write", field: "shape",
                message: "shape \(shape) does not hold the \(floats.count) elements given")
        }
        let tuple = shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
        var header = Array("{'descr': '<f4', 'fortran_order': False, 'shape': \(tuple), }".utf8)
        // Version 1.0 holds header lengths below 65536; the preamble plus header is padded with
        // spaces and a final newline to a multiple of 64 bytes.
        let preamble = 10 + header.count + 64 < 65536 ? 10 : 12
        header += Array(repeating: UInt8(ascii: " "), count: (64 - (preamble + header.count + 1) % 64) % 64)
        header.append(UInt8(ascii: "\n"))
        var bytes: [UInt8] = [0x93] + Array("NUMPY".utf8) + [preamble == 10 ? 1 : 2, 0]
        let length = UInt32(header.count)
        bytes += (0..<(preamble - 8)).map { UInt8(truncatingIfNeeded: length >> (8 * $0)) }
        bytes += header
        floats.map { $0.bitPattern.littleEndian }.withUnsafeBytes { bytes += $0 }
        try writeFile(path, bytes)
    }
}

/// The element types this reader supports (`readFloats` and `readInt32s` the first four).
private enum NPYDType: String, CaseIterable {
    case f4 = "<f4", f8 = "<f8", i4 = "<i4", i8 = "<i8"
    case i1 = "|i1", u1 = "|u1", i2 = "<i2", u2 = "<u2", u4 = "<u4", u8 = "<u8"

    static let common: [NPYDType] = [.f4, .f8, .i4, .i8]

    var size: Int {
        switch self {
        case .i1, .u1: 1
        case .i2, .u2: 2
        case .f4, .i4, .u4: 4
        case .f8, .i8, .u8: 8
        }
    }
}

/// A validated `.npy` file: header parsed, data size checked against the shape.
private struct NPYArray {
    let dtype: NPYDType
    let shape: [Int]
    let count: Int
    let bytes: [UInt8]
    let dataOffset: Int

    init(path: String, allowed: [NPYDType] = NPYDType.common) throws {
        try self.init(bytes: try readFile(path), path: path, allowed: allowed)
    }

    init(bytes: [UInt8], path: String, allowed: [NPYDType] = NPYDType.common) throws {
        func fail(_ field: String?, _ message: String) -> NPYError {
            NPYError(path: path, operation: "read", field: field, message: message)
        }
        guard bytes.starts(with: [0x93] + Array("NUMPY".utf8)) else {
            throw fail("magic", "not a .npy file (no \\x93NUMPY magic)")
        }
        guard bytes.count >= 8 else { throw fail("version", "file ends inside the preamble") }
        let (major, minor) = (bytes[6], bytes[7])
        guard (1...3).contains(major), minor == 0 else {
            throw fail("version", "format version \(major).\(minor) is not supported (need 1.0, 2.0 or 3.0)")
        }
        let lengthBytes = major == 1 ? 2 : 4
        guard bytes.count >= 8 + lengthBytes else { throw fail("header length", "file ends inside the preamble") }
        let headerLength = (0..<lengthBytes).reduce(0) { $0 | Int(bytes[8 + $1]) << (8 * $1) }
        let headerStart = 8 + lengthBytes
        guard headerLength <= NPY.maximumHeaderLength else {
            throw fail("header length", "header of \(headerLength) bytes is longer than the limit of \(NPY.maximumHeaderLength)")
        }
        guard headerStart + headerLength <= bytes.count else {
            throw fail("header length", "header of \(headerLength) bytes runs past the end of the \(bytes.count)-byte file")
        }
        var parser = NPYHeaderParser(bytes: bytes[headerStart..<headerStart + headerLength])
        let fields = try parser.parse { fail($0, $1) }

        guard Set(fields.keys) == ["descr", "fortran_order", "shape"] else {
            throw fail("header", "expected keys descr, fortran_order, shape; found \(fields.keys.sorted().map { displayName($0, limit: 40) }.joined(separator: ", "))")
        }
        guard case .string(let descr)? = fields["descr"] else { throw fail("descr", "expected a dtype string") }
        // NumPy writes one-byte types as '|i1'; '<i1' means the same.
        let normalized = descr == "<i1" ? "|i1" : descr == "<u1" ? "|u1" : descr
        guard let dtype = NPYDType(rawValue: normalized), allowed.contains(dtype) else {
            throw fail("descr", descr.hasPrefix(">")
                ? "big-endian \(displayName(descr, limit: 40)) is not supported"
                : "dtype \(displayName(descr, limit: 40)) is not supported (need "
                    + allowed.map { "'\($0.rawValue)'" }.dropLast().joined(separator: ", ") + " or '\(allowed.last!.rawValue)')")
        }
        guard case .bool(let fortranOrder)? = fields["fortran_order"] else {
            throw fail("fortran_order", "expected True or False")
        }
        guard !fortranOrder else { throw fail("fortran_order", "Fortran-order arrays are not supported") }
        guard case .tuple(let shape)? = fields["shape"] else { throw fail("shape", "expected a tuple of integers") }
        guard shape.count <= NPY.maximumRank else { throw fail("shape", "\(shape.count) dimensions (at most \(NPY.maximumRank))") }
        var count = 1
        for dim in shape {
            let (next, overflow) = count.multipliedReportingOverflow(by: dim)
            guard !overflow else { throw fail("shape", "shape \(shape) is too large") }
            count = next
        }
        let dataOffset = headerStart + headerLength
        let (dataSize, overflow) = count.multipliedReportingOverflow(by: dtype.size)
        guard !overflow, dataSize == bytes.count - dataOffset else {
            throw fail(nil, "shape \(shape) of '\(descr)' needs \(overflow ? "too many" : String(dataSize)) data bytes, file has \(bytes.count - dataOffset)")
        }
        (self.bytes, self.dtype, self.shape, self.count, self.dataOffset) = (bytes, dtype, shape, count, dataOffset)
    }

    /// Decodes every element with `decode(dtype, bytes, byteOffset)`.
    func elements<T>(_ decode: (NPYDType, UnsafeRawBufferPointer, Int) -> T) -> [T] {
        bytes.withUnsafeBytes { raw in
            (0..<count).map { decode(dtype, raw, dataOffset + $0 * dtype.size) }
        }
    }
}

/// Parses the header, a Python dict literal such as
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`, padded with spaces and `\n`.
private struct NPYHeaderParser {
    enum Value {
        case string(String)
        case bool(Bool)
        case tuple([Int])
    }

    let bytes: ArraySlice<UInt8>
    var index: Int

    init(bytes: ArraySlice<UInt8>) {
        self.bytes = bytes
        self.index = bytes.startIndex
    }

    /// Parses the dict; `fail(field, message)` makes the errors.
    mutating func parse(_ fail: (String, String) -> NPYError) throws -> [String: Value] {
        var fields: [String: Value] = [:]
        guard consume("{") else { throw fail("header", "expected '{' at header start") }
        while !consume("}") {
            guard let key = string() else { throw fail("header", "expected a quoted key at byte \(index)") }
            let shownKey = displayName(key, limit: 40)
            let shownField = String(shownKey.dropFirst().dropLast())
            guard fields[key] == nil else { throw fail(shownField, "the key appears twice") }
            guard consume(":") else { throw fail(shownField, "expected ':' after the key") }
            guard let value = value() else { throw fail(shownField, "unsupported value at byte \(index)") }
            fields[key] = value
            guard consume(",") || peek("}") else { throw fail(shownField, "expected ',' or '}' after the value") }
        }
        skipSpace()
        guard index == bytes.endIndex else { throw fail("header", "unexpected bytes after the closing '}'") }
        return fields
    }

    private mutating func value() -> Value? {
        if let text = string() { return .string(text) }
        if consume("True") { return .bool(true) }
        if consume("False") { return .bool(false) }
        guard consume("(") else { return nil }
        var dims: [Int] = []
        while !consume(")") {
            guard let dim = integer() else { return nil }
            dims.append(dim)
            guard consume(",") || peek(")") else { return nil }
        }
        return .tuple(dims)
    }

    /// A single- or double-quoted string without escapes.
    private mutating func string() -> String? {
        skipSpace()
        guard index < bytes.endIndex, bytes[index] == UInt8(ascii: "'") || bytes[index] == UInt8(ascii: "\"") else {
            return nil
        }
        let quote = bytes[index]
        guard let end = bytes[(index + 1)...].firstIndex(of: quote) else { return nil }
        defer { index = end + 1 }
        return String(decoding: bytes[(index + 1)..<end], as: UTF8.self)
    }

    /// A non-negative decimal integer, with Python 2's optional `L` suffix.
    private mutating func integer() -> Int? {
        skipSpace()
        var value = 0
        let start = index
        while index < bytes.endIndex, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index]) {
            let (times10, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (next, overflow2) = times10.addingReportingOverflow(Int(bytes[index] - UInt8(ascii: "0")))
            guard !overflow1, !overflow2 else { return nil }
            value = next
            index += 1
        }
        guard index > start else { return nil }
        if index < bytes.endIndex, bytes[index] == UInt8(ascii: "L") { index += 1 }
        return value
    }

    private mutating func consume(_ token: String) -> Bool {
        guard peek(token) else { return false }
        index += token.utf8.count
        return true
    }

    private mutating func peek(_ token: String) -> Bool {
        skipSpace()
        return bytes[index...].starts(with: token.utf8)
    }

    private mutating func skipSpace() {
        while index < bytes.endIndex, [UInt8(ascii: " "), UInt8(ascii: "\n"), UInt8(ascii: "\t")].contains(bytes[index]) {
            index += 1
        }
    }
}

private func readFile(_ path: String) throws -> [UInt8] {
    func fail(_ call: String) -> NPYError {
        // One sentence for people: the reason, not the system call ("no such file or directory").
        let reason = String(cString: strerror(errno))
        return NPYError(path: path, operation: "read", field: nil, message: reason.prefix(1).lowercased() + reason.dropFirst())
    }
    let descriptor = open(path, O_RDONLY)
    guard descriptor >= 0 else { throw fail("open") }
    defer { close(descriptor) }
    var status = stat()
    guard fstat(descriptor, &status) == 0 else { throw fail("fstat") }
    var bytes = [UInt8](repeating: 0, count: Int(status.st_size))
    var filled = 0
    while filled < bytes.count {
        let got = bytes.withUnsafeMutableBytes { raw in
            raw.baseAddress.map { read(descriptor, $0 + filled, raw.count - filled) } ?? 0
        }
        if got < 0, errno == EINTR { continue }
        guard got >= 0 else { throw fail("read") }
        guard got > 0 else { break }
        filled += got
    }
    return Array(bytes.prefix(filled))
}

/// Writes atomically (`writeBytesAtomically`): `path` holds its old content or the whole new
/// array, never a part; errors name `path`, never the temporary file.
private func writeFile(_ path: String, _ bytes: [UInt8]) throws {
    try writeBytesAtomically(bytes, to: path)
}

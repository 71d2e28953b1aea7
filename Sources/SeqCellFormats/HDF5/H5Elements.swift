import CHDF5
import Glibc
import SeqCellBase
import SeqCellHost
import SeqCellModel

/// The element type of a dataset or attribute, as stored in the file.
public enum H5ElementKind: Sendable, Hashable, CustomStringConvertible {
    case float32
    case float64
    /// A floating-point type other than IEEE single and double (e.g. float16).
    case otherFloat(bytes: Int)
    case signedInteger(bytes: Int)
    case unsignedInteger(bytes: Int)
    /// A fixed- or variable-length string.
    case string
    /// Any other HDF5 type class, e.g. `compound`, `enum`, `opaque`.
    case other(String)

    init(type: hid_t) {
        let size = Int(H5Tget_size(type))
        switch H5Tget_class(type) {
        case H5T_FLOAT where size == 4: self = .float32
        case H5T_FLOAT where size == 8: self = .float64
        case H5T_FLOAT: self = .otherFloat(bytes: size)
        case H5T_INTEGER where H5Tget_sign(type) == H5T_SGN_NONE: self = .unsignedInteger(bytes: size)
        case H5T_INTEGER: self = .signedInteger(bytes: size)
        case H5T_STRING: self = .string
        case H5T_COMPOUND: self = .other("compound")
        case H5T_ENUM: self = .other("enum")
        case H5T_OPAQUE: self = .other("opaque")
        case H5T_ARRAY: self = .other("array")
        case H5T_VLEN: self = .other("variable-length sequence")
        case H5T_REFERENCE: self = .other("reference")
        case H5T_BITFIELD: self = .other("bitfield")
        default: self = .other("unknown")
        }
    }

    var isInteger: Bool {
        switch self {
        case .signedInteger, .unsignedInteger: true
        default: false
        }
    }

    var isFloatingPoint: Bool {
        switch self {
        case .float32, .float64, .otherFloat: true
        default: false
        }
    }

    public var description: String {
        switch self {
        case .float32: "float32"
        case .float64: "float64"
        case .otherFloat(let bytes): "float\(bytes * 8)"
        case .signedInteger(let bytes): "int\(bytes * 8)"
        case .unsignedInteger(let bytes): "uint\(bytes * 8)"
        case .string: "string"
        case .other(let name): name
        }
    }
}

/// A simple dataspace of `shape` (`[]` is a scalar). The caller closes it.
func makeDataspace(_ shape: [Int], _ site: H5Site, _ operation: String) throws -> hid_t {
    if shape.isEmpty { return try site.check(H5Screate(H5S_SCALAR), operation) }
    let dims = shape.map { hsize_t($0) }
    return try site.check(H5Screate_simple(Int32(dims.count), dims, nil), operation)
}

/// The shape (`[]` for a scalar or a null dataspace) and element count of a dataspace.
func extent(of space: hid_t, _ site: H5Site, _ operation: String) throws -> (shape: [Int], count: Int) {
    let rank = try site.check(H5Sget_simple_extent_ndims(space), operation)
    var dims = [hsize_t](repeating: 0, count: Int(rank))
    try site.check(H5Sget_simple_extent_dims(space, &dims, nil), operation)
    let count = try site.check(H5Sget_simple_extent_npoints(space), operation)
    return (dims.map { Int($0) }, Int(count))
}

/// Checks that `shape` holds exactly `count` elements (`[]`, a scalar, holds one).
func validate(shape: [Int], count: Int, _ site: H5Site, _ operation: String) throws {
    var product = 1
    for dim in shape {
        let (next, overflow) = product.multipliedReportingOverflow(by: dim)
        guard dim >= 0, !overflow else {
            throw site.error(.invalidArgument, operation, "invalid shape \(shape)")
        }
        product = next
    }
    guard product == count else {
        throw site.error(
            .invalidArgument, operation, "shape \(shape) holds \(product) elements, data has \(count)")
    }
}

/// A variable-length UTF-8 string type, the kind h5py reads as `str`. The caller closes it.
func makeVariableStringType(_ site: H5Site, _ operation: String) throws -> hid_t {
    let type = try site.check(H5Tcopy(sc_h5t_c_s1()), operation)
    guard H5Tset_size(type, sc_h5t_variable()) >= 0, H5Tset_cset(type, H5T_CSET_UTF8) >= 0 else {
        let error = site.libraryError(operation)
        H5Tclose(type)
        throw error
    }
    return type
}

/// Runs `body` with NUL-terminated copies of `strings`, as HDF5 variable-length strings expect.
func withCStrings<R>(
    _ strings: [String], _ body: ([UnsafeMutablePointer<CChar>?]) throws -> R
) rethrows -> R {
    let pointers = strings.map { strdup($0) }
    defer { pointers.forEach { free($0) } }
    return try body(pointers)
}

/// The elements of an open dataset or attribute, read whole: the one reading path both share.
struct H5Elements {
    let site: H5Site
    /// The operation named in errors, e.g. `read dataset`.
    let operation: String
    /// The file type and dataspace, owned by the caller.
    let type: hid_t
    let space: hid_t
    let kind: H5ElementKind
    /// `[]` for a scalar or an empty (null) dataspace.
    let shape: [Int]
    let count: Int
    /// Reads every element, converted to the given memory type, into the buffer.
    let read: (_ memoryType: hid_t, _ buffer: UnsafeMutableRawPointer) -> herr_t

    init(
        site: H5Site, operation: String, type: hid_t, space: hid_t,
        read: @escaping (hid_t, UnsafeMutableRawPointer) -> herr_t
    ) throws {
        self.site = site
        self.operation = operation
        self.type = type
        self.space = space
        self.kind = H5ElementKind(type: type)
        (self.shape, self.count) = try extent(of: space, site, operation)
        self.read = read
    }

    /// Refuses to allocate for an extent no file of this size can hold, as a corrupt
    /// dimension in a damaged file would otherwise ask for. The bound allows data stored
    /// compressed up to 1000:1, and never less than 1 GiB.
    func checkPlausibleSize(bytesPerElement: Int) throws {
        var st = stat()
        let fileSize = stat(site.file, &st) == 0 ? Int(st.st_size) : 0
        let limit = max(fileSize.multipliedReportingOverflow(by: 1000).overflow ? Int.max : fileSize * 1000, 1 << 30)
        let (bytes, overflow) = count.multipliedReportingOverflow(by: max(bytesPerElement, 1))
        guard !overflow, bytes <= limit else {
            throw site.error(.invalidArgument, operation,
                             "claims \(count) elements of \(kind) (shape \(shape)), more than a \(fileSize)-byte file can hold: the file is damaged")
        }
    }

    func wrongType(expected: String) -> HDF5Error {
        site.error(.wrongType, operation, "expected \(expected), found \(kind)")
    }

    /// Reads all elements as `T`, which HDF5 converts to from any type `accepts` lets through.
    func values<T: BitwiseCopyable>(
        as _: T.Type, memoryType: hid_t, expected: String, accepts: (H5ElementKind) -> Bool
    ) throws -> [T] {
        guard accepts(kind) else { throw wrongType(expected: expected) }
        try checkPlausibleSize(bytesPerElement: max(MemoryLayout<T>.stride, Int(H5Tget_size(type))))
        return try [T](unsafeUninitializedCapacity: count) { buffer, initialized in
            if let base = buffer.baseAddress {
                try site.check(read(memoryType, base), operation)
            }
            initialized = count
        }
    }

    /// Reads a fixed- or variable-length string of either character set. Fixed-length values
    /// end at their first NUL; space-padded ones lose their trailing spaces.
    func strings(expected: String) throws -> [String] {
        guard kind == .string else { throw wrongType(expected: expected) }
        guard count > 0 else { return [] }
        try checkPlausibleSize(bytesPerElement: max(Int(H5Tget_size(type)), MemoryLayout<UnsafeRawPointer>.stride))
        if try site.check(H5Tis_variable_str(type), operation) > 0 {
            let memoryType = try makeVariableStringType(site, operation)
            defer { H5Tclose(memoryType) }
            try site.check(H5Tset_cset(memoryType, H5Tget_cset(type)), operation)
            var pointers = [UnsafeMutablePointer<CChar>?](repeating: nil, count: count)
            try pointers.withUnsafeMutableBytes { raw in
                if let base = raw.baseAddress { try site.check(read(memoryType, base), operation) }
            }
            defer { H5Dvlen_reclaim(memoryType, space, sc_h5p_default(), &pointers) }
            return pointers.map { $0.map { String(cString: $0) } ?? "" }
        }
        let size = Int(H5Tget_size(type))
        guard size > 0 else { throw site.libraryError(operation) }
        var bytes = [UInt8](repeating: 0, count: count * size)
        try bytes.withUnsafeMutableBytes { raw in
            if let base = raw.baseAddress { try site.check(read(type, base), operation) }
        }
        let spacePadded = H5Tget_strpad(type) == H5T_STR_SPACEPAD
        return (0..<count).map { index in
            var value = bytes[index * size..<(index + 1) * size]
            if let end = value.firstIndex(of: 0) { value = value[..<end] }
            while spacePadded, value.last == UInt8(ascii: " ") { value = value.dropLast() }
            return String(decoding: value, as: UTF8.self)
        }
    }

    /// The one element of a scalar, or of a 1-D array of length one.
    func scalar<T>(_ values: [T], expected: String) throws -> T {
        guard values.count == 1, shape.count <= 1, let value = values.first else {
            throw site.error(.wrongType, operation, "expected \(expected), found shape \(shape) of \(kind)")
        }
        return value
    }

    /// Checks that the elements form a scalar or a 1-D array.
    func vector<T>(_ values: [T], expected: String) throws -> [T] {
        guard shape.count <= 1 else {
            throw site.error(.wrongType, operation, "expected \(expected), found shape \(shape) of \(kind)")
        }
        return values
    }
}

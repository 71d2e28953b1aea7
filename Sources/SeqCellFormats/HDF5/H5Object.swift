import CHDF5
import SeqCellBase
import SeqCellHost
import SeqCellModel

/// A group or dataset: an open HDF5 object that carries attributes.
///
/// Attributes are written as h5py writes them: `String` as a variable-length UTF-8 scalar
/// (read back by h5py as `str`), `Int` as an int64 scalar, `Double` as a float64 scalar, and
/// arrays as 1-D. Writing an attribute that exists replaces it. The readers also accept what
/// h5py and NumPy write: fixed-length or ASCII strings, integers of any width and sign
/// (converted to int64), and a 1-element 1-D array where a scalar is expected.
public protocol H5Object: AnyObject {
    /// The open HDF5 identifier, valid for the object's lifetime.
    var id: hid_t { get }
    /// The file's path as the caller gave it.
    var filePath: String { get }
    /// The object's absolute path in the file, e.g. `/model/layers/00`.
    var path: String { get }
}

extension H5Object {
    var site: H5Site { H5Site(file: filePath, object: path) }

    /// Names an attribute `<object path>@<name>` in errors.
    func attributeSite(_ name: String) -> H5Site {
        H5Site(file: filePath, object: "\(path)@\(name)")
    }

    public func setAttribute(_ name: String, _ value: String) throws {
        try setStringAttribute(name, [value], shape: [])
    }

    public func setAttribute(_ name: String, _ value: Int) throws {
        try setAttribute(name, [Int64(value)], shape: [], fileType: sc_h5t_std_i64le(), memoryType: sc_h5t_native_int64())
    }

    public func setAttribute(_ name: String, _ value: Double) throws {
        try setAttribute(name, [value], shape: [], fileType: sc_h5t_ieee_f64le(), memoryType: sc_h5t_native_double())
    }

    public func setAttribute(_ name: String, _ values: [Int]) throws {
        try setAttribute(
            name, values.map { Int64($0) }, shape: [values.count],
            fileType: sc_h5t_std_i64le(), memoryType: sc_h5t_native_int64())
    }

    public func setAttribute(_ name: String, _ values: [Double]) throws {
        try setAttribute(
            name, values, shape: [values.count], fileType: sc_h5t_ieee_f64le(), memoryType: sc_h5t_native_double())
    }

    public func setAttribute(_ name: String, _ values: [String]) throws {
        try setStringAttribute(name, values, shape: [values.count])
    }

    /// A string attribute: variable- or fixed-length, ASCII or UTF-8.
    public func stringAttribute(_ name: String) throws -> String {
        let expected = "a string"
        return try withAttribute(name) { try $0.scalar($0.strings(expected: expected), expected: expected) }
    }

    /// An integer attribute of any width and sign.
    public func intAttribute(_ name: String) throws -> Int {
        let expected = "an integer"
        return try withAttribute(name) { Int(try $0.scalar($0.integers(expected: expected), expected: expected)) }
    }

    /// A numeric (integer or floating-point) attribute.
    public func doubleAttribute(_ name: String) throws -> Double {
        let expected = "a number"
        return try withAttribute(name) { try $0.scalar($0.doubles(expected: expected), expected: expected) }
    }

    /// A 1-D integer attribute (a scalar reads as one element).
    public func intArrayAttribute(_ name: String) throws -> [Int] {
        let expected = "a 1-D integer array"
        return try withAttribute(name) { try $0.vector($0.integers(expected: expected), expected: expected).map { Int($0) } }
    }

    /// A 1-D numeric attribute (a scalar reads as one element).
    public func doubleArrayAttribute(_ name: String) throws -> [Double] {
        let expected = "a 1-D numeric array"
        return try withAttribute(name) { try $0.vector($0.doubles(expected: expected), expected: expected) }
    }

    /// A 1-D string attribute (a scalar reads as one element).
    public func stringArrayAttribute(_ name: String) throws -> [String] {
        let expected = "a 1-D string array"
        return try withAttribute(name) { try $0.vector($0.strings(expected: expected), expected: expected) }
    }

    public func hasAttribute(_ name: String) throws -> Bool {
        HDF5Library.enter()
        return try attributeSite(name).check(H5Aexists(id, name), "look up attribute") > 0
    }

    /// The attribute names, sorted.
    public func attributeNames() throws -> [String] {
        HDF5Library.enter()
        var info = H5O_info_t()
        try site.check(H5Oget_info2(id, &info, UInt32(H5O_INFO_NUM_ATTRS)), "list attributes")
        return try (0..<info.num_attrs).map { index in
            guard let name = hdf5String({
                Int(H5Aget_name_by_idx(id, ".", H5_INDEX_NAME, H5_ITER_INC, index, $0, $1, sc_h5p_default()))
            }) else { throw site.libraryError("list attributes") }
            return name
        }.sorted()
    }

    private func setStringAttribute(_ name: String, _ values: [String], shape: [Int]) throws {
        HDF5Library.enter()
        let type = try makeVariableStringType(attributeSite(name), "write attribute")
        defer { H5Tclose(type) }
        try withCStrings(values) { pointers in
            try setAttribute(name, pointers, shape: shape, fileType: type, memoryType: type)
        }
    }

    /// Creates (or replaces) attribute `name` of `shape` and writes `values` into it.
    private func setAttribute<T>(
        _ name: String, _ values: [T], shape: [Int], fileType: hid_t, memoryType: hid_t
    ) throws {
        HDF5Library.enter()
        let site = attributeSite(name)
        let operation = "write attribute"
        if try site.check(H5Aexists(id, name), operation) > 0 {
            try site.check(H5Adelete(id, name), operation)
        }
        let space = try makeDataspace(shape, site, operation)
        defer { H5Sclose(space) }
        let attribute = try site.check(
            H5Acreate2(id, name, fileType, space, sc_h5p_default(), sc_h5p_default()), operation)
        defer { H5Aclose(attribute) }
        try values.withUnsafeBytes { raw in
            if let base = raw.baseAddress { try site.check(H5Awrite(attribute, memoryType, base), operation) }
        }
    }

    /// Opens attribute `name` and hands its elements to `body`.
    private func withAttribute<R>(_ name: String, _ body: (H5Elements) throws -> R) throws -> R {
        HDF5Library.enter()
        let site = attributeSite(name)
        let operation = "read attribute"
        guard try site.check(H5Aexists(id, name), operation) > 0 else {
            throw site.error(.notFound, operation, "no such attribute")
        }
        let attribute = try site.check(H5Aopen(id, name, sc_h5p_default()), operation)
        defer { H5Aclose(attribute) }
        let type = try site.check(H5Aget_type(attribute), operation)
        defer { H5Tclose(type) }
        let space = try site.check(H5Aget_space(attribute), operation)
        defer { H5Sclose(space) }
        return try body(
            H5Elements(site: site, operation: operation, type: type, space: space) { memoryType, buffer in
                H5Aread(attribute, memoryType, buffer)
            })
    }
}

extension H5Elements {
    /// All elements as int64; integer types only.
    func integers(expected: String) throws -> [Int64] {
        try values(as: Int64.self, memoryType: sc_h5t_native_int64(), expected: expected) { $0.isInteger }
    }

    /// All elements as float64; integer or floating-point types.
    func doubles(expected: String) throws -> [Double] {
        try values(as: Double.self, memoryType: sc_h5t_native_double(), expected: expected) {
            $0.isInteger || $0.isFloatingPoint
        }
    }
}

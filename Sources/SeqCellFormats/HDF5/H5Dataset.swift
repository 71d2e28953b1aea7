import CHDF5
import SeqCellBase
import SeqCellHost
import SeqCellModel

/// An open HDF5 dataset. Readers return all elements in row-major order; HDF5 converts them
/// from the stored type where the reader allows it.
public final class H5Dataset: H5Object {
    public let id: hid_t
    public let filePath: String
    public let path: String
    /// The extent, outermost dimension first; `[]` for a scalar.
    public let shape: [Int]
    /// The number of elements: the product of `shape` (1 for a scalar).
    public let count: Int
    public let elementKind: H5ElementKind

    /// Takes ownership of the open dataset `id`, closing it if describing it fails.
    init(id: hid_t, site: H5Site) throws {
        do {
            let type = try site.check(H5Dget_type(id), "open dataset")
            defer { H5Tclose(type) }
            let space = try site.check(H5Dget_space(id), "open dataset")
            defer { H5Sclose(space) }
            (shape, count) = try extent(of: space, site, "open dataset")
            elementKind = H5ElementKind(type: type)
        } catch {
            H5Dclose(id)
            throw error
        }
        self.id = id
        self.filePath = site.file
        self.path = site.object
    }

    deinit {
        HDF5Library.enter()
        H5Dclose(id)
    }

    /// Reads any floating-point dataset as float32.
    public func readFloats() throws -> [Float] {
        try withElements { try $0.values(as: Float.self, memoryType: sc_h5t_native_float(), expected: "floating-point data") { $0.isFloatingPoint } }
    }

    /// Reads any floating-point dataset as float32 straight into `buffer`, which must hold
    /// exactly `count` elements.
    public func readFloats(into buffer: UnsafeMutableBufferPointer<Float>) throws {
        try withElements { elements in
            guard elements.kind.isFloatingPoint else { throw elements.wrongType(expected: "floating-point data") }
            guard buffer.count == elements.count else {
                throw site.error(
                    .invalidArgument, elements.operation,
                    "buffer holds \(buffer.count) floats, dataset has \(elements.count)")
            }
            if let base = buffer.baseAddress {
                try site.check(elements.read(sc_h5t_native_float(), base), elements.operation)
            }
        }
    }

    /// Reads any integer dataset as int32 (HDF5 clamps values out of range).
    public func readInt32s() throws -> [Int32] {
        try withElements { try $0.values(as: Int32.self, memoryType: sc_h5t_native_int32(), expected: "integer data") { $0.isInteger } }
    }

    /// Reads any integer dataset as int64.
    public func readInt64s() throws -> [Int64] {
        try withElements { try $0.integers(expected: "integer data") }
    }

    /// Reads a uint8 dataset's raw bytes.
    public func readBytes() throws -> [UInt8] {
        try withElements { try $0.values(as: UInt8.self, memoryType: sc_h5t_native_uint8(), expected: "uint8 data") { $0 == .unsignedInteger(bytes: 1) } }
    }

    /// Reads a string dataset: variable- or fixed-length, ASCII or UTF-8.
    public func readStrings() throws -> [String] {
        try withElements { try $0.strings(expected: "string data") }
    }

    private func withElements<R>(_ body: (H5Elements) throws -> R) throws -> R {
        HDF5Library.enter()
        let operation = "read dataset"
        let type = try site.check(H5Dget_type(id), operation)
        defer { H5Tclose(type) }
        let space = try site.check(H5Dget_space(id), operation)
        defer { H5Sclose(space) }
        return try body(
            H5Elements(site: site, operation: operation, type: type, space: space) { [id] memoryType, buffer in
                H5Dread(id, memoryType, sc_h5s_all(), sc_h5s_all(), sc_h5p_default(), buffer)
            })
    }
}

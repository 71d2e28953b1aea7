import CHDF5

/// An open HDF5 group. Member names may be relative paths (`layers/00`) or absolute (`/model`).
public final class H5Group: H5Object {
    public let id: hid_t
    public let filePath: String
    public let path: String

    init(id: hid_t, filePath: String, path: String) {
        self.id = id
        self.filePath = filePath
        self.path = path
    }

    deinit {
        HDF5Library.enter()
        H5Gclose(id)
    }

    /// The absolute path of member `name`.
    func memberPath(_ name: String) -> String {
        if name.hasPrefix("/") { return name }
        return path == "/" ? "/\(name)" : "\(path)/\(name)"
    }

    func memberSite(_ name: String) -> H5Site { H5Site(file: filePath, object: memberPath(name)) }

    /// Creates group `name`, whose parent must exist.
    @discardableResult
    public func createGroup(_ name: String) throws -> H5Group {
        HDF5Library.enter()
        let site = memberSite(name)
        let group = try site.check(
            H5Gcreate2(id, name, sc_h5p_default(), sc_h5p_default(), sc_h5p_default()), "create group")
        return H5Group(id: group, filePath: filePath, path: site.object)
    }

    /// Opens the existing group `name`.
    public func group(_ name: String) throws -> H5Group {
        HDF5Library.enter()
        let site = memberSite(name)
        try requireMember(name, type: H5O_TYPE_GROUP, kind: "group", site, "open group")
        let group = try site.check(H5Gopen2(id, name, sc_h5p_default()), "open group")
        return H5Group(id: group, filePath: filePath, path: site.object)
    }

    /// Opens the existing dataset `name`.
    public func dataset(_ name: String) throws -> H5Dataset {
        HDF5Library.enter()
        let site = memberSite(name)
        try requireMember(name, type: H5O_TYPE_DATASET, kind: "dataset", site, "open dataset")
        let dataset = try site.check(H5Dopen2(id, name, sc_h5p_default()), "open dataset")
        return try H5Dataset(id: dataset, site: site)
    }

    /// Whether `name` leads to an existing link; every component of a path is checked.
    public func contains(_ name: String) -> Bool {
        HDF5Library.enter()
        var prefix = name.hasPrefix("/") ? "/" : ""
        for component in name.split(separator: "/") {
            if !prefix.isEmpty, !prefix.hasSuffix("/") { prefix += "/" }
            prefix += component
            guard H5Lexists(id, prefix, sc_h5p_default()) > 0 else { return false }
        }
        return !prefix.isEmpty
    }

    public func isGroup(_ name: String) -> Bool { objectType(name) == H5O_TYPE_GROUP }

    public func isDataset(_ name: String) -> Bool { objectType(name) == H5O_TYPE_DATASET }

    /// The names of the group's direct members, sorted.
    public func memberNames() throws -> [String] {
        HDF5Library.enter()
        var info = H5G_info_t()
        try site.check(H5Gget_info(id, &info), "list group")
        return try (0..<info.nlinks).map { index in
            guard let name = hdf5String({
                Int(H5Lget_name_by_idx(id, ".", H5_INDEX_NAME, H5_ITER_INC, index, $0, $1, sc_h5p_default()))
            }) else { throw site.libraryError("list group") }
            return name
        }.sorted()
    }

    /// Writes a float32 dataset of `shape` (`[]` is a scalar); `floats` holds its elements in
    /// row-major order, exactly as many as `shape` has.
    @discardableResult
    public func writeDataset(_ name: String, shape: [Int], floats: [Float]) throws -> H5Dataset {
        try floats.withUnsafeBufferPointer { try writeDataset(name, shape: shape, floats: $0) }
    }

    @discardableResult
    public func writeDataset(_ name: String, shape: [Int], floats: UnsafeBufferPointer<Float>) throws -> H5Dataset {
        try createDataset(
            name, shape: shape, count: floats.count, fileType: sc_h5t_ieee_f32le(),
            memoryType: sc_h5t_native_float(), data: floats.baseAddress)
    }

    @discardableResult
    public func writeDataset(_ name: String, shape: [Int], int32s: [Int32]) throws -> H5Dataset {
        try int32s.withUnsafeBufferPointer {
            try createDataset(
                name, shape: shape, count: $0.count, fileType: sc_h5t_std_i32le(),
                memoryType: sc_h5t_native_int32(), data: $0.baseAddress)
        }
    }

    @discardableResult
    public func writeDataset(_ name: String, shape: [Int], int64s: [Int64]) throws -> H5Dataset {
        try int64s.withUnsafeBufferPointer {
            try createDataset(
                name, shape: shape, count: $0.count, fileType: sc_h5t_std_i64le(),
                memoryType: sc_h5t_native_int64(), data: $0.baseAddress)
        }
    }

    /// Writes raw bytes (e.g. RNG state) as a uint8 dataset.
    @discardableResult
    public func writeDataset(_ name: String, shape: [Int], bytes: [UInt8]) throws -> H5Dataset {
        try bytes.withUnsafeBufferPointer {
            try createDataset(
                name, shape: shape, count: $0.count, fileType: sc_h5t_std_u8le(),
                memoryType: sc_h5t_native_uint8(), data: $0.baseAddress)
        }
    }

    /// Writes a 1-D dataset of variable-length UTF-8 strings.
    @discardableResult
    public func writeDataset(_ name: String, strings: [String]) throws -> H5Dataset {
        HDF5Library.enter()
        let type = try makeVariableStringType(memberSite(name), "create dataset")
        defer { H5Tclose(type) }
        return try withCStrings(strings) { pointers in
            try pointers.withUnsafeBufferPointer {
                try createDataset(
                    name, shape: [strings.count], count: strings.count, fileType: type, memoryType: type,
                    data: $0.baseAddress)
            }
        }
    }

    /// Creates a contiguous, uncompressed dataset and writes `count` elements from `data`.
    private func createDataset(
        _ name: String, shape: [Int], count: Int, fileType: hid_t, memoryType: hid_t, data: UnsafeRawPointer?
    ) throws -> H5Dataset {
        HDF5Library.enter()
        let site = memberSite(name)
        let operation = "create dataset"
        try validate(shape: shape, count: count, site, operation)
        let space = try makeDataspace(shape, site, operation)
        defer { H5Sclose(space) }
        let id = try site.check(
            H5Dcreate2(self.id, name, fileType, space, sc_h5p_default(), sc_h5p_default(), sc_h5p_default()),
            operation)
        let dataset = try H5Dataset(id: id, site: site)
        if count > 0, let data {
            try site.check(
                H5Dwrite(id, memoryType, sc_h5s_all(), sc_h5s_all(), sc_h5p_default(), data), "write dataset")
        }
        return dataset
    }

    /// Throws `.notFound` or `.wrongType` unless `name` is an object of `type`.
    private func requireMember(
        _ name: String, type: H5O_type_t, kind: String, _ site: H5Site, _ operation: String
    ) throws {
        let found = objectType(name)
        guard found != H5O_TYPE_UNKNOWN else { throw site.error(.notFound, operation, "no such \(kind)") }
        guard found == type else {
            let description = switch found {
            case H5O_TYPE_GROUP: "a group"
            case H5O_TYPE_DATASET: "a dataset"
            case H5O_TYPE_NAMED_DATATYPE: "a named datatype"
            default: "an object of unknown type"
            }
            throw site.error(.wrongType, operation, "expected a \(kind), found \(description)")
        }
    }

    /// The type of the object at `name`, or `H5O_TYPE_UNKNOWN` if there is none.
    private func objectType(_ name: String) -> H5O_type_t {
        HDF5Library.enter()
        guard contains(name) else { return H5O_TYPE_UNKNOWN }
        var info = H5O_info_t()
        guard H5Oget_info_by_name2(id, name, &info, UInt32(H5O_INFO_BASIC), sc_h5p_default()) >= 0 else {
            return H5O_TYPE_UNKNOWN
        }
        return info.type
    }
}

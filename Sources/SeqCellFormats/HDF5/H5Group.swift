import CHDF5
import CSeqCellHDF5Check
import SeqCellBase
import SeqCellHost
import SeqCellModel

/// What a group member is (see `H5Group.member(_:)`).
public enum H5MemberKind: Sendable, Hashable {
    case group
    case dataset
    /// A named datatype or an object of a type SeqCell does not read.
    case other
}

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

    /// Opens the existing group `name`. A member reached through a soft or external link is
    /// refused (`.refused`), a damaged one is `.damaged`, an absent one `.notFound`.
    public func group(_ name: String) throws -> H5Group {
        HDF5Library.enter()
        let site = memberSite(name)
        try requireMember(name, type: .group, kind: "group", site, "open group")
        let group = try site.check(H5Gopen2(id, name, sc_h5p_default()), "open group")
        return H5Group(id: group, filePath: filePath, path: site.object)
    }

    /// Opens the existing dataset `name`, which must satisfy SeqCell's policy for untrusted
    /// files: data stored in the file itself (no external or virtual storage), only filters built
    /// into libhdf5, and storage that holds what the shape declares (a dataset declared but never
    /// written is refused before anything is allocated).
    public func dataset(_ name: String) throws -> H5Dataset {
        HDF5Library.enter()
        let site = memberSite(name)
        let operation = "open dataset"
        try requireMember(name, type: .dataset, kind: "dataset", site, operation)
        let id = try site.check(H5Dopen2(id, name, sc_h5p_default()), operation)
        let dataset = try H5Dataset(id: id, site: site)
        var fileSize: hsize_t = 0
        let file = H5Iget_file_id(id)
        if file >= 0 {
            if H5Fget_filesize(file, &fileSize) < 0 { fileSize = 0 }
            H5Fclose(file)
        }
        var message = [CChar](repeating: 0, count: Int(SC_H5CHECK_TEXT))
        let policy = sc_h5_dataset_policy(id, UInt64(fileSize), &message, message.count)
        if policy < 0 { throw site.libraryError(operation, code: .damaged) }
        if policy > 0 {
            let text = String(decoding: message.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw policy == Int32(SC_H5CHECK_REFUSED)
                ? site.error(.refused, operation, text)
                : site.error(.damaged, operation, "the file is damaged (\(text))")
        }
        return dataset
    }

    /// What member `name` is, or `nil` when it does not exist. Every component of the path must
    /// be a hard link: a soft, external or user-defined link throws `.refused` naming it; a
    /// member whose link or header libhdf5 cannot read throws `.damaged`. Never turns damage
    /// into absence.
    public func member(_ name: String) throws -> H5MemberKind? {
        HDF5Library.enter()
        let site = memberSite(name)
        let operation = "look up"
        var message = [CChar](repeating: 0, count: Int(SC_H5CHECK_TEXT))
        var component = [CChar](repeating: 0, count: Int(SC_H5CHECK_TEXT))
        let found = sc_h5_check_path(id, name, &message, message.count, &component, component.count)
        switch found {
        case 0: break
        case Int32(SC_H5_PATH_MISSING): return nil
        case Int32(SC_H5CHECK_REFUSED):
            let text = { (chars: [CChar]) in
                String(decoding: chars.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            }
            throw H5Site(file: filePath, object: memberPath(text(component))).error(.refused, operation, text(message))
        default:
            var error = site.libraryError(operation, code: .damaged)
            error.message = "the file is damaged (\(error.message))"
            throw error
        }
        var info = H5O_info_t()
        guard H5Oget_info_by_name2(id, name, &info, UInt32(H5O_INFO_BASIC), sc_h5p_default()) >= 0 else {
            var error = site.libraryError(operation, code: .damaged)
            error.message = "the file is damaged (\(error.message))"
            throw error
        }
        switch info.type {
        case H5O_TYPE_GROUP: return .group
        case H5O_TYPE_DATASET: return .dataset
        default: return .other
        }
    }

    /// Whether `name` leads to an existing member. A member that is present but cannot be read
    /// safely (a non-hard link, a damaged link or header) counts as present, so that opening it
    /// reports why; use `member(_:)` to get that error directly.
    public func contains(_ name: String) -> Bool {
        do { return try member(name) != nil } catch { return true }
    }

    /// Whether `name` is a group. Like `contains`, a member that is present but cannot be read
    /// safely answers `true`, so that `group(name)` then reports why instead of the member
    /// being taken as absent.
    public func isGroup(_ name: String) -> Bool {
        do { return try member(name) == .group } catch { return true }
    }

    /// Whether `name` is a dataset; a member present but unreadable answers `true` (see `isGroup`).
    public func isDataset(_ name: String) -> Bool {
        do { return try member(name) == .dataset } catch { return true }
    }

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

    /// Throws `.notFound` or `.wrongType` unless `name` is an object of `type` (and `.refused`
    /// or `.damaged` as `member(_:)` does).
    private func requireMember(
        _ name: String, type: H5MemberKind, kind: String, _ site: H5Site, _ operation: String
    ) throws {
        let found: H5MemberKind?
        do {
            found = try member(name)
        } catch var error as HDF5Error {
            error.operation = operation
            throw error
        }
        guard let found else { throw site.error(.notFound, operation, "no such \(kind)") }
        guard found == type else {
            let description = switch found {
            case .group: "a group"
            case .dataset: "a dataset"
            case .other: "an object of another type"
            }
            throw site.error(.wrongType, operation, "expected a \(kind), found \(description)")
        }
    }
}

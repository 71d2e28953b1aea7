import CHDF5
import Glibc

/// An open HDF5 file. The handle closes in `deinit`, or earlier with `close()`, which reports
/// errors. Groups and datasets opened from it stay usable until they are released.
public final class H5File {
    public enum AccessMode: Sendable {
        case readOnly
        case readWrite
    }

    /// The open HDF5 identifier; negative once closed.
    public private(set) var id: hid_t
    /// The path as the caller gave it.
    public let path: String

    /// Creates the file at `path`, truncating any existing file.
    public init(creating path: String) throws {
        HDF5Library.enter()
        let site = H5Site(file: path, object: "")
        self.id = try site.check(
            H5Fcreate(path, sc_h5f_acc_trunc(), sc_h5p_default(), sc_h5p_default()), "create file")
        self.path = path
    }

    /// Opens the existing HDF5 file at `path`.
    public init(opening path: String, mode: AccessMode = .readOnly) throws {
        HDF5Library.enter()
        let flags = mode == .readOnly ? sc_h5f_acc_rdonly() : sc_h5f_acc_rdwr()
        let id = H5Fopen(path, flags, sc_h5p_default())
        guard id >= 0 else {
            let site = H5Site(file: path, object: "")
            var error = site.libraryError("open file")
            if access(path, F_OK) != 0 {
                error.code = .notFound
                error.message = "no such file"
            } else if H5Fis_hdf5(path) == 0 {
                error.code = .notHDF5
            }
            throw error
        }
        self.id = id
        self.path = path
    }

    deinit {
        if id >= 0 {
            HDF5Library.enter()
            H5Fclose(id)
        }
    }

    /// The root group, `/`.
    public var root: H5Group {
        get throws {
            HDF5Library.enter()
            let site = H5Site(file: path, object: "/")
            let group = try site.check(H5Gopen2(id, "/", sc_h5p_default()), "open group")
            return H5Group(id: group, filePath: path, path: "/")
        }
    }

    /// Writes everything buffered for this file to the operating system.
    public func flush() throws {
        HDF5Library.enter()
        try H5Site(file: path, object: "").check(H5Fflush(id, H5F_SCOPE_LOCAL), "flush file")
    }

    /// Flushes and closes the file. Closing a closed file does nothing.
    public func close() throws {
        guard id >= 0 else { return }
        HDF5Library.enter()
        let site = H5Site(file: path, object: "")
        let flushed = H5Fflush(id, H5F_SCOPE_LOCAL)
        if flushed < 0 {
            let error = site.libraryError("flush file")
            H5Fclose(id)
            id = -1
            throw error
        }
        let closed = H5Fclose(id)
        id = -1
        try site.check(closed, "close file")
    }
}

import CHDF5
import CSeqCellHDF5Check
import Foundation
import Glibc
import SeqCellBase
import SeqCellHost
import SeqCellModel

/// An open HDF5 file. The handle closes in `deinit`, or earlier with `close()`, which reports
/// errors. Groups and datasets opened from it stay usable until they are released.
///
/// Files opened read-only are untrusted data (docs/RELIABILITY.md): the file is read into
/// memory once, and that image is walked whole in a child process with a time and memory limit
/// (so a libhdf5 crash or hang on a damaged file becomes an `HDF5Error`). The walk applies
/// SeqCell's policy (only hard links; no external or virtual storage; only filters built into
/// libhdf5; data bounded by what the file holds) and writes, with libhdf5, a clean copy of what
/// it read, which is what is opened here: this process never gives libhdf5 the untrusted
/// bytes (a damaged file can corrupt libhdf5's memory without crashing it). The copy holds the
/// groups, hard links, attributes and datasets (contiguous, unfiltered) of the types SeqCell
/// reads; references and variable-length sequences are left out.
public final class H5File {
    public enum AccessMode: Sendable {
        case readOnly
        case readWrite
    }

    /// The open HDF5 identifier; negative once closed.
    public private(set) var id: hid_t
    /// The path as the caller gave it (for files opened from memory, the display name).
    public let path: String

    private init(id: hid_t, path: String) {
        self.id = id
        self.path = path
    }

    /// Creates the file at `path`, truncating any existing file.
    ///
    /// Files are written in the HDF5 1.8 file format (superblock 2, version-2 object headers):
    /// its metadata carries checksums, so damage is reported as a checksum error, and every
    /// libhdf5 from 1.8 on (h5py, h5dump) reads it.
    public init(creating path: String) throws {
        HDF5Library.enter()
        let site = H5Site(file: path, object: "")
        let fapl = try site.check(H5Pcreate(sc_h5p_file_access()), "create file")
        defer { H5Pclose(fapl) }
        try site.check(H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_V18), "create file")
        self.id = try site.check(H5Fcreate(path, sc_h5f_acc_trunc(), sc_h5p_default(), fapl), "create file")
        self.path = path
    }

    /// Opens the existing HDF5 file at `path`. Read-only files are checked first (see the type's
    /// documentation); a damaged or refused file throws an error naming the object.
    public convenience init(opening path: String, mode: AccessMode = .readOnly) throws {
        HDF5Library.enter()
        let site = H5Site(file: path, object: "")
        if mode == .readWrite {
            let id = H5Fopen(path, sc_h5f_acc_rdwr(), sc_h5p_default())
            guard id >= 0 else {
                var error = site.libraryError("open file")
                if access(path, F_OK) != 0 {
                    error.code = .notFound
                    error.message = "no such file"
                } else if H5Fis_hdf5(path) == 0 {
                    error.code = .notHDF5
                }
                throw error
            }
            self.init(id: id, path: path)
            return
        }
        let (image, size) = try readWholeFile(path, site)
        self.init(id: try openCheckedImage(image, size: size, site), path: path)
    }

    /// Opens HDF5 file bytes held in memory (e.g. a `.weights.h5` member of a zip archive),
    /// checked exactly as `init(opening:)` checks a file; `displayName` names the file in errors.
    public convenience init(image: [UInt8], displayName: String) throws {
        HDF5Library.enter()
        let site = H5Site(file: displayName, object: "")
        guard !image.isEmpty, let copy = malloc(image.count) else {
            throw site.error(.notHDF5, "open file", "not an HDF5 file: it is empty")
        }
        image.withUnsafeBytes { copy.copyMemory(from: $0.baseAddress!, byteCount: image.count) }
        self.init(id: try openCheckedImage(copy, size: image.count, site), path: displayName)
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

/// Reads the regular file at `path` into a buffer from `malloc` (the caller frees it).
private func readWholeFile(_ path: String, _ site: H5Site) throws -> (UnsafeMutableRawPointer, Int) {
    let operation = "open file"
    let descriptor = open(path, O_RDONLY | O_CLOEXEC)
    guard descriptor >= 0 else {
        let code = errno
        if code == ENOENT || code == ENOTDIR { throw site.error(.notFound, operation, "no such file") }
        throw site.error(
            .system, operation, String(cString: strerror(code)),
            cause: POSIXErrorCode(rawValue: code).map { POSIXError($0) })
    }
    defer { Glibc.close(descriptor) }
    var info = stat()
    guard fstat(descriptor, &info) == 0 else {
        throw site.error(.system, operation, String(cString: strerror(errno)))
    }
    guard (info.st_mode & S_IFMT) == S_IFREG else {
        let what = (info.st_mode & S_IFMT) == S_IFDIR ? "it is a directory" : "it is not a regular file"
        throw site.error(.invalidArgument, operation, what)
    }
    let size = Int(info.st_size)
    guard size > 0 else { throw site.error(.notHDF5, operation, "not an HDF5 file: it is empty") }
    guard let buffer = malloc(size) else {
        throw site.error(.system, operation, "not enough memory to read its \(size) bytes")
    }
    var done = 0
    while done < size {
        let n = read(descriptor, buffer + done, size - done)
        if n < 0, errno == EINTR { continue }
        guard n > 0 else {
            let message = n == 0 ? "the file shrank while it was read" : String(cString: strerror(errno))
            free(buffer)
            throw site.error(.system, operation, message)
        }
        done += n
    }
    return (buffer, size)
}

/// Whether the image has the HDF5 signature where libhdf5 looks for it: at 0, 512, 1024, ….
private func hasHDF5Signature(_ image: UnsafeRawPointer, size: Int) -> Bool {
    let signature: [UInt8] = [0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a]
    var offset = 0
    while offset + signature.count <= size {
        if memcmp(image + offset, signature, signature.count) == 0 { return true }
        offset = offset == 0 ? 512 : offset * 2
    }
    return false
}

/// Checks `image` (from `malloc`; always freed here) in a child process, which writes a clean
/// copy of what it read, and opens that copy. The file id owns the copy: libhdf5 frees it when
/// the file's last object closes.
private func openCheckedImage(_ image: UnsafeMutableRawPointer, size: Int, _ site: H5Site) throws -> hid_t {
    defer { free(image) }
    guard hasHDF5Signature(image, size: size) else {
        throw site.error(.notHDF5, "open file", "not an HDF5 file: file signature not found")
    }
    var limits = sc_h5check_limits()
    sc_h5check_default_limits(&limits, UInt64(size))
    var result = sc_h5check_result()
    var clean: UnsafeMutableRawPointer? = nil
    var cleanSize = 0
    sc_h5check_image(image, size, &limits, &result, &clean, &cleanSize)
    guard result.status == Int32(SC_H5CHECK_OK), let clean else { throw checkError(result, site) }
    // The untrusted image is never given to libhdf5 here: only the copy the child wrote.
    let id = sc_h5_open_image(clean, cleanSize, 1)
    guard id >= 0 else {
        free(clean)
        throw site.libraryError("open file", code: .damaged)
    }
    return id
}

private func text<T>(_ tuple: T) -> String {
    withUnsafeBytes(of: tuple) { raw in
        let bytes = raw.prefix(while: { $0 != 0 })
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// The error for a walk that failed: refusals and damage name the object; crashes, hangs and
/// exhausted memory name the object the walk was reading.
private func checkError(_ result: sc_h5check_result, _ site: H5Site) -> HDF5Error {
    let object = text(result.object)
    let message = text(result.message)
    let reading = object.isEmpty ? "opening it" : "reading '\(object)'"
    switch result.status {
    case Int32(SC_H5CHECK_REFUSED):
        return H5Site(file: site.file, object: object).error(.refused, "read", message)
    case Int32(SC_H5CHECK_DAMAGED):
        return H5Site(file: site.file, object: object).error(.damaged, "read", "the file is damaged (\(message))")
    case Int32(SC_H5CHECK_CRASHED):
        return site.error(.damaged, "read", "the file is damaged (\(reading) crashed the HDF5 library)")
    case Int32(SC_H5CHECK_TIMEOUT):
        return site.error(.damaged, "read", "the file is damaged (\(reading) \(message))")
    case Int32(SC_H5CHECK_MEMORY):
        return site.error(.damaged, "read", "the file is damaged or hostile (\(reading) \(message))")
    default:
        return site.error(.system, "read", "cannot check the file: \(message)")
    }
}

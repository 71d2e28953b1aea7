import Foundation

/// Writes an HDF5 file so that `path` ends up holding either its old content or the complete
/// new file, never a partial one, even across a crash.
///
/// `body` fills a new file created beside the target as `.<basename>.tmp-<pid>-<random>`; the
/// file is then closed, fsynced, renamed over `path`, and the directory is fsynced. If anything
/// before the rename fails, the temporary file is removed and `path` is untouched. `body` must
/// not keep the file or its objects beyond its return.
public func writeHDF5Atomically(to path: String, _ body: (H5File) throws -> Void) throws {
    let directoryPrefix = path.lastIndex(of: "/").map { String(path[...$0]) } ?? ""
    let basename = path.dropFirst(directoryPrefix.count)
    let temporary = "\(directoryPrefix).\(basename).tmp-\(getpid())-\(String(UInt64.random(in: .min ... .max), radix: 16))"
    do {
        let file = try H5File(creating: temporary)
        try body(file)
        try file.close()
        try fsync(temporary, directory: false)
        guard rename(temporary, path) == 0 else {
            throw systemError(errno, "rename '\(temporary)' to", path)
        }
    } catch {
        unlink(temporary)
        throw error
    }
    try fsync(directoryPrefix.isEmpty ? "." : directoryPrefix, directory: true)
}

private func fsync(_ path: String, directory: Bool) throws {
    let descriptor = open(path, directory ? O_RDONLY | O_DIRECTORY : O_RDONLY)
    guard descriptor >= 0 else { throw systemError(errno, "open", path) }
    defer { close(descriptor) }
    guard fsync(descriptor) == 0 else { throw systemError(errno, "fsync", path) }
}

private func systemError(_ code: Int32, _ operation: String, _ path: String) -> HDF5Error {
    H5Site(file: path, object: "").error(
        .system, operation, "\(String(cString: strerror(code))) (errno \(code))",
        cause: POSIXErrorCode(rawValue: code).map { POSIXError($0) })
}

import Foundation
import Glibc
import SeqCellBase
import SeqCellHost
import SeqCellModel

/// Writes an HDF5 file so that `path` ends up holding either its old content or the complete
/// new file, never a partial one, even across a crash.
///
/// `body` fills a new file created beside the target as a hidden temporary file (see
/// `AtomicTarget`); the file is then closed, fsynced, renamed over `path`, and the directory is
/// fsynced. If anything before the rename fails, the temporary file is removed, `path` is
/// untouched, and the error names `path`, never the temporary file: a full disk is
/// `cannot write 'out.h5': no space left on device`. Temporary files left by writes that were
/// killed are removed first. `body` must not keep the file or its objects beyond its return.
public func writeHDF5Atomically(to path: String, _ body: (H5File) throws -> Void) throws {
    let target = AtomicTarget(path)
    target.removeStaleTemporaryFiles()
    let temporary = target.newTemporaryPath()
    do {
        let file = try H5File(creating: temporary)
        do {
            try body(file)
        } catch {
            try? file.close()
            throw error
        }
        try file.close()
        try target.syncFile(temporary)
        try target.rename(temporary)
    } catch {
        unlink(temporary)
        throw target.userFacing(error, temporary: temporary)
    }
    try target.syncDirectory()
}

/// Writes `bytes` so that `path` ends up holding either its old content or all of `bytes`, with
/// the same temporary files, clean-up and errors as `writeHDF5Atomically`. Errors are
/// `SeqCellError`s of kind `.io`.
public func writeBytesAtomically(_ bytes: some ContiguousBytes, to path: String) throws {
    let target = AtomicTarget(path)
    target.removeStaleTemporaryFiles()
    let temporary = target.newTemporaryPath()
    do {
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o666)
        guard descriptor >= 0 else { throw AtomicTarget.SystemError(code: errno) }
        var failure = bytes.withUnsafeBytes { writeAll($0, to: descriptor) }
        if failure == 0, fsync(descriptor) != 0 { failure = errno }
        if close(descriptor) != 0, failure == 0 { failure = errno }
        if failure != 0 { throw AtomicTarget.SystemError(code: failure) }
        try target.rename(temporary)
    } catch {
        unlink(temporary)
        throw SeqCellError(.io, text(of: target.userFacing(error, temporary: temporary)))
    }
    do {
        try target.syncDirectory()
    } catch {
        throw SeqCellError(.io, text(of: error))
    }
}

/// The file an atomic write replaces, and the temporary files written beside it.
///
/// A temporary file is named `.<name>.tmp-<pid>-<tag>`: `<name>` the target's file name (cut to
/// 200 bytes), `<pid>` the writing process, `<tag>` 16 hex digits, the first 8 identifying the
/// host (a hash of its host name), the last 8 random. A write that is killed leaves its temporary
/// file; the next atomic write into the same folder removes every such file that
///
/// - is a regular file owned by this user, named by that pattern, and
/// - was written on this host by a process that no longer exists (`kill(pid, 0)` fails with
///   `ESRCH`), or, whatever host wrote it, has not been modified for 24 hours and names no
///   live process here.
///
/// A live writer's temporary file is never removed: on this host its process exists; on another
/// host sharing the folder (network file systems) its file is being written, so it is recent.
/// Files not named by the pattern, and other users' files, are never touched.
package struct AtomicTarget {
    /// The target as the caller gave it.
    let path: String
    /// The folder part of `path`, with its trailing slash; empty for a bare file name.
    let directoryPrefix: String
    let name: Substring

    init(_ path: String) {
        self.path = path
        directoryPrefix = path.lastIndex(of: "/").map { String(path[...$0]) } ?? ""
        name = path.dropFirst(directoryPrefix.count)
    }

    var directory: String { directoryPrefix.isEmpty ? "." : directoryPrefix }

    /// A POSIX failure of a step of the write.
    struct SystemError: Error {
        var code: Int32
    }

    /// Stale files older than this are removed whichever host wrote them.
    static let staleAge: TimeInterval = 24 * 60 * 60

    /// The first 8 hex digits of every temporary file's tag written on this host.
    static let hostTag: String = {
        var buffer = [CChar](repeating: 0, count: 256)
        let host = gethostname(&buffer, buffer.count) == 0
            ? String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self) : ""
        var hash: UInt32 = 2_166_136_261  // FNV-1a
        for byte in host.utf8 {
            hash ^= UInt32(byte)
            hash = hash &* 16_777_619
        }
        return hex(UInt64(hash), digits: 8)
    }()

    static func hex(_ value: UInt64, digits: Int) -> String {
        let text = String(value, radix: 16)
        return String(repeating: "0", count: max(0, digits - text.count)) + text
    }

    /// A new temporary path beside the target.
    func newTemporaryPath() -> String {
        var base = String(name)
        if base.utf8.count > 200 {
            // Keep whole characters: cut at the last scalar boundary within 200 bytes.
            var end = base.utf8.index(base.utf8.startIndex, offsetBy: 200)
            while end > base.startIndex, end.samePosition(in: base.unicodeScalars) == nil {
                end = base.utf8.index(before: end)
            }
            base = String(base[..<end])
        }
        let tag = Self.hostTag + Self.hex(UInt64(UInt32.random(in: .min ... .max)), digits: 8)
        return "\(directoryPrefix).\(base).tmp-\(getpid())-\(tag)"
    }

    /// If `fileName` is a SeqCell temporary file's name: its pid and tag.
    static func parseTemporaryName(_ fileName: String) -> (pid: pid_t, tag: String)? {
        guard fileName.hasPrefix("."), let marker = fileName.range(of: ".tmp-", options: .backwards),
              marker.lowerBound > fileName.index(after: fileName.startIndex)
        else { return nil }
        let parts = fileName[marker.upperBound...].split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2, (1...10).contains(parts[0].count), parts[0].allSatisfy(\.isASCII),
              let pid = pid_t(parts[0]), pid > 0,
              (1...16).contains(parts[1].count),
              parts[1].allSatisfy({ ("0"..."9").contains($0) || ("a"..."f").contains($0) })
        else { return nil }
        return (pid, String(parts[1]))
    }

    /// Whether process `pid` exists here (an existing process of another user counts).
    static func processExists(_ pid: pid_t) -> Bool {
        kill(pid, 0) == 0 || errno != ESRCH
    }

    /// Removes the temporary files of killed writes from the target's folder (see the type's
    /// documentation). Best effort: a folder that cannot be listed is left alone.
    func removeStaleTemporaryFiles(now: Date = Date()) {
        guard let stream = opendir(directory) else { return }
        defer { closedir(stream) }
        let user = geteuid()
        while let entry = readdir(stream) {
            let fileName = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            guard let parsed = Self.parseTemporaryName(fileName) else { continue }
            let candidate = directoryPrefix + fileName
            var info = stat()
            guard lstat(candidate, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG, info.st_uid == user else {
                continue
            }
            let modified = Date(timeIntervalSince1970: TimeInterval(info.st_mtim.tv_sec))
            let writtenHere = parsed.tag.count == 16 && parsed.tag.hasPrefix(Self.hostTag)
            let old = now.timeIntervalSince(modified) > Self.staleAge
            guard writtenHere || old, !Self.processExists(parsed.pid) else { continue }
            unlink(candidate)
        }
    }

    func syncFile(_ file: String) throws {
        let descriptor = open(file, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw SystemError(code: errno) }
        defer { close(descriptor) }
        guard fsync(descriptor) == 0 else { throw SystemError(code: errno) }
    }

    func rename(_ temporary: String) throws {
        guard Glibc.rename(temporary, path) == 0 else { throw SystemError(code: errno) }
    }

    /// Makes the rename durable. The new file is in place when this fails.
    func syncDirectory() throws {
        let descriptor = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else { throw systemError(errno, operation: "write", suffix: " (syncing its folder)") }
        defer { close(descriptor) }
        guard fsync(descriptor) == 0 else {
            throw systemError(errno, operation: "write", suffix: " (syncing its folder)")
        }
    }

    /// An error naming the target: `cannot write 'out.h5': no space left on device`.
    func systemError(_ code: Int32, operation: String = "write", suffix: String = "") -> HDF5Error {
        H5Site(file: path, object: "").error(
            .system, operation, Self.describe(errno: code) + suffix,
            cause: POSIXErrorCode(rawValue: code).map { POSIXError($0) })
    }

    /// strerror's text starting lower-case, as messages continue after a colon.
    package static func describe(errno code: Int32) -> String {
        let text = String(cString: strerror(code))
        return text.prefix(1).lowercased() + text.dropFirst()
    }

    /// `error`, from writing `temporary`, as the user should see it: a failed system call (on
    /// the temporary file, or inside libhdf5, whose messages carry `errno = N`) becomes
    /// `cannot write '<path>': <reason>`; any other error has the temporary path replaced by
    /// the target's.
    func userFacing(_ error: any Error, temporary: String) -> any Error {
        switch error {
        case let e as SystemError:
            return systemError(e.code)
        case var e as HDF5Error:
            if let code = Self.errnoCode(of: e) { return systemError(code) }
            if e.filePath == temporary { e.filePath = path }
            e.message = e.message.replacingOccurrences(of: temporary, with: path)
            return e
        case var e as SeqCellError:
            e.message = e.message.replacingOccurrences(of: temporary, with: path)
            return e
        default:
            return error
        }
    }

    /// The errno behind an HDF5 error: its POSIX cause, or the `errno = N` libhdf5's file
    /// driver writes into its messages.
    static func errnoCode(of error: HDF5Error) -> Int32? {
        if let cause = error.cause as? POSIXError { return cause.code.rawValue }
        for text in [error.message] + error.stack.map(\.message) {
            guard let range = text.range(of: "errno = ") else { continue }
            let digits = text[range.upperBound...].prefix(while: \.isNumber)
            if let code = Int32(digits), code > 0 { return code }
        }
        return nil
    }
}

/// The text an error shows: Foundation's sentence for its errors, otherwise the description.
private func text(of error: any Error) -> String {
    if let e = error as? CocoaError { return e.localizedDescription }
    return String(describing: error)
}

/// Writes all of `buffer` to `descriptor`, retrying after EINTR and short writes: one
/// `write()` unless the kernel takes less. Returns 0, or the errno of the failed call.
@discardableResult
public func writeAll(_ buffer: UnsafeRawBufferPointer, to descriptor: Int32) -> Int32 {
    guard let base = buffer.baseAddress else { return 0 }
    var done = 0
    while done < buffer.count {
        let n = write(descriptor, base + done, buffer.count - done)
        if n < 0 {
            if errno == EINTR { continue }
            return errno
        }
        done += n
    }
    return 0
}

import Foundation
import Glibc
import ZIPFoundation
import SeqCellBase
import SeqCellHost
import SeqCellModel

/// Reads members of an untrusted zip archive (a Keras `.keras` file) into memory with
/// bounds: nothing is written to disk, a member's size is capped before anything is read
/// (its declared size against a fixed limit and a compression-ratio limit), the bytes
/// produced never exceed the declared size, and the CRC-32 is checked for stored and
/// deflated members alike. Messages name the archive and the member, never ZIPFoundation's
/// error names.
struct ZipMembers {
    /// A member this large (uncompressed) is refused whatever its compression.
    static let defaultLimit = 2 << 30
    /// Members above `ratioFloor` bytes may expand at most this many times their compressed size.
    static let maximumRatio: UInt64 = 100
    static let ratioFloor: UInt64 = 1 << 20

    let path: String
    private let archive: Archive
    private let fileSize: UInt64

    init(path: String) throws {
        self.path = path
        var st = stat()
        guard stat(path, &st) == 0 else {
            throw SeqCellError(.io, "cannot read '\(path)': " + (errno == ENOENT ? "no such file" : String(cString: strerror(errno))))
        }
        fileSize = UInt64(max(0, st.st_size))
        do {
            archive = try Archive(url: URL(fileURLWithPath: path), accessMode: .read)
        } catch {
            throw SeqCellError(.io, "cannot read '\(path)': it is not a readable zip archive (\(Self.describe(error)))")
        }
    }

    /// Every member's name, in the archive's order (at most `limit`).
    func names(limit: Int = 10_000) -> [String] {
        var out: [String] = []
        for entry in archive {
            out.append(entry.path)
            if out.count >= limit { break }
        }
        return out
    }

    func contains(_ name: String) -> Bool { archive[name] != nil }

    /// The bytes of member `name`, or nil when the archive has no such member.
    func read(_ name: String, limit: Int = ZipMembers.defaultLimit) throws -> [UInt8]? {
        guard let entry = archive[name] else { return nil }
        func damaged(_ why: String) -> SeqCellError {
            SeqCellError(.io, "cannot read '\(path)': member \(displayName(name)) is damaged (\(why))")
        }
        guard entry.type == .file else {
            throw SeqCellError(.io, "cannot read '\(path)': member \(displayName(name)) is a \(entry.type == .directory ? "directory" : "symbolic link"), not a file")
        }
        let declared = entry.uncompressedSize
        let compressed = entry.compressedSize
        guard compressed <= fileSize else {
            throw damaged("its compressed size \(compressed) is larger than the \(fileSize)-byte archive")
        }
        guard declared <= UInt64(limit) else {
            throw SeqCellError(.io, "cannot read '\(path)': member \(displayName(name)) is \(declared) bytes uncompressed, more than the limit of \(limit) bytes")
        }
        if declared > Self.ratioFloor, declared / max(compressed, 1) > Self.maximumRatio {
            throw SeqCellError(.io, "cannot read '\(path)': member \(displayName(name)) would expand \(compressed) bytes to \(declared) (more than \(Self.maximumRatio) times; a zip bomb?)")
        }
        let expected = Int(declared)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(min(expected, 64 << 20))
        var overran = false
        let crc: CRC32
        do {
            crc = try archive.extract(entry, skipCRC32: false) { chunk in
                guard bytes.count + chunk.count <= expected else {
                    overran = true
                    throw ArchiveError.invalidEntrySize
                }
                bytes.append(contentsOf: chunk)
            }
        } catch {
            if overran { throw damaged("it expands past its declared size of \(declared) bytes") }
            throw damaged(Self.describe(error))
        }
        guard bytes.count == expected else {
            throw damaged("it holds \(bytes.count) bytes, its header says \(declared)")
        }
        guard crc == entry.checksum else { throw damaged("CRC mismatch") }
        return bytes
    }

    private typealias ArchiveError = Archive.ArchiveError

    /// ZIPFoundation's errors in words.
    static func describe(_ error: any Error) -> String {
        if let e = error as? Archive.ArchiveError {
            switch e {
            case .unreadableArchive: return "the file cannot be read"
            case .missingEndOfCentralDirectoryRecord: return "no end-of-central-directory record"
            case .invalidCentralDirectoryOffset, .invalidCentralDirectorySize, .invalidCentralDirectoryEntryCount:
                return "its central directory is damaged"
            case .invalidLocalHeaderDataOffset, .invalidLocalHeaderSize: return "a local header is damaged"
            case .invalidCompressionMethod: return "an unsupported compression method"
            case .invalidCRC32: return "CRC mismatch"
            case .invalidEntrySize: return "a size field is damaged"
            case .invalidEntryPath: return "a member name is damaged"
            default: return "the archive is damaged"
            }
        }
        let text = String(describing: error)
        if text.contains("corruptedData") || text.contains("invalidStream") { return "its compressed data is corrupt" }
        return "the archive is damaged"
    }
}

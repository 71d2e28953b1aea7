import Foundation
import Glibc
import SwiftProtobuf
import SeqCellBase
import SeqCellHost
import SeqCellModel
import SeqCellFormats

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of TFRecord framing.
/// Table-driven, one byte at a time: event files are small.
enum CRC32C {
    static let table: [UInt32] = (0..<256).map { (n: Int) -> UInt32 in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
        return c
    }

    /// The CRC-32C of `bytes` ("123456789" gives 0xE3069283).
    static func checksum(_ bytes: some Sequence<UInt8>) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for b in bytes { crc = table[Int((crc ^ UInt32(b)) & 0xFF)] ^ (crc >> 8) }
        return crc ^ 0xFFFF_FFFF
    }

    /// TensorFlow's masked CRC (tsl/lib/hash/crc32c.h `Mask`): rotated right by 15 bits plus a
    /// constant, so that a CRC stored inside checksummed data does not checksum to itself.
    static func masked(_ crc: UInt32) -> UInt32 {
        ((crc >> 15) | (crc << 17)) &+ 0xA282_EAD8
    }
}

/// TFRecord framing, the container of TensorBoard event files: for each record, its length as a
/// little-endian uint64, the masked CRC-32C of those 8 bytes, the data, the masked CRC-32C of the
/// data (both CRCs little-endian uint32).
enum TFRecord {
    static func frame(_ data: [UInt8]) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(data.count + 16)
        let length = withUnsafeBytes(of: UInt64(data.count).littleEndian) { Array($0) }
        out += length
        withUnsafeBytes(of: CRC32C.masked(CRC32C.checksum(length)).littleEndian) { out += $0 }
        out += data
        withUnsafeBytes(of: CRC32C.masked(CRC32C.checksum(data)).littleEndian) { out += $0 }
        return out
    }
}

/// A TensorBoard event file being written: `events.out.tfevents.<seconds>.<host>` in a log folder
/// (created with its parents when missing), holding TFRecord-framed `tensorflow.Event` messages.
/// The first event is `file_version: "brain.Event:2"`. Each record is written with one `write()`
/// as it comes, so TensorBoard sees the steps while training runs and a crash keeps all records
/// but possibly a torn last one, which TensorBoard's reader skips.
final class TensorBoardEventFile {
    /// The file's path (the log folder as given, joined with the file name).
    let path: String
    private var descriptor: Int32

    init(directory: String, wallTime: Double) throws {
        try Self.createDirectories(directory)
        var host = [CChar](repeating: 0, count: 256)
        let hostName = gethostname(&host, host.count) == 0
            ? String(decoding: host.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self) : ""
        let safeHost = String(hostName.map { $0 == "/" || $0.isWhitespace ? "_" : $0 })
        let seconds = String(Int(wallTime))
        let base = (directory as NSString).appendingPathComponent(
            "events.out.tfevents." + String(repeating: "0", count: max(0, 10 - seconds.count)) + seconds + "."
                + (safeHost.isEmpty ? "localhost" : safeHost))
        // Another run started in the same second into the same folder: the next free suffix,
        // so the names still sort in the order the runs started (TensorBoard reads them so).
        var candidate = base
        var suffix = 0
        while true {
            let fd = open(candidate, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0o666)
            if fd >= 0 {
                descriptor = fd
                path = candidate
                break
            }
            let code = errno
            guard code == EEXIST, suffix < 999 else {
                throw SeqCellError(.io, "cannot write '\(candidate)': \(AtomicTarget.describe(errno: code))")
            }
            suffix += 1
            let digits = String(suffix)
            candidate = base + "." + String(repeating: "0", count: 3 - digits.count) + digits
        }
        var version = Tensorflow_Event()
        version.wallTime = wallTime
        version.fileVersion = "brain.Event:2"
        try write(version)
    }

    /// Appends one event as one TFRecord.
    func write(_ event: Tensorflow_Event) throws {
        guard descriptor >= 0 else { throw SeqCellError(.io, "cannot write '\(path)': the file is closed") }
        let record = TFRecord.frame(try event.serializedBytes())
        let failure = record.withUnsafeBytes { writeAll($0, to: descriptor) }
        if failure != 0 { throw SeqCellError(.io, "cannot write '\(path)': \(AtomicTarget.describe(errno: failure))") }
    }

    /// Syncs and closes the file; later calls do nothing.
    func close() throws {
        guard descriptor >= 0 else { return }
        var failure: Int32 = fsync(descriptor) == 0 ? 0 : errno
        if Glibc.close(descriptor) != 0, failure == 0 { failure = errno }
        descriptor = -1
        if failure != 0 { throw SeqCellError(.io, "cannot write '\(path)': \(AtomicTarget.describe(errno: failure))") }
    }

    deinit {
        if descriptor >= 0 { _ = Glibc.close(descriptor) }
    }

    /// `mkdir -p`: each missing folder of `directory` in turn; an existing non-folder is an error.
    static func createDirectories(_ directory: String) throws {
        var prefix = directory.hasPrefix("/") ? "/" : ""
        for part in directory.split(separator: "/") {
            prefix += (prefix.isEmpty || prefix.hasSuffix("/") ? "" : "/") + part
            if mkdir(prefix, 0o777) == 0 { continue }
            let code = errno
            var info = stat()
            if code == EEXIST, stat(prefix, &info) == 0, info.st_mode & S_IFMT == S_IFDIR { continue }
            let reason = code == EEXIST ? "'\(prefix)' is not a folder" : AtomicTarget.describe(errno: code)
            throw SeqCellError(.io, "cannot create the log folder '\(directory)': \(reason)")
        }
    }

    /// A summary event of scalar values (stored as float32, TensorBoard's `simple_value`).
    static func scalars(_ values: [(String, Double)], step: Int, wallTime: Double) -> Tensorflow_Event {
        var summary = Tensorflow_Summary()
        summary.value = values.map { name, value in
            var v = Tensorflow_Summary.Value()
            v.tag = name
            v.simpleValue = Float(value)
            return v
        }
        var event = Tensorflow_Event()
        event.wallTime = wallTime
        event.step = Int64(step)
        event.summary = summary
        return event
    }

    /// A summary event of one histogram.
    static func histogram(_ name: String, _ values: [Double], step: Int, wallTime: Double) -> Tensorflow_Event {
        var v = Tensorflow_Summary.Value()
        v.tag = name
        v.histo = TensorBoardHistogram(values).proto
        var event = Tensorflow_Event()
        event.wallTime = wallTime
        event.step = Int64(step)
        event.summary.value = [v]
        return event
    }

    /// `SessionLog START` at `step`: TensorBoard drops the events of earlier files in the folder
    /// at this step and later (steps logged after the checkpoint a run resumes from).
    static func sessionStart(step: Int, wallTime: Double) -> Tensorflow_Event {
        var event = Tensorflow_Event()
        event.wallTime = wallTime
        event.step = Int64(step)
        var log = Tensorflow_SessionLog()
        log.status = .start
        event.sessionLog = log
        return event
    }
}

/// A histogram as TensorFlow's `tsl::histogram::Histogram` builds one: its default bucket limits
/// (±1e-12 · 1.1^k up to ±1e20, 0, ±DBL_MAX), bucket i counting values in
/// [limit(i-1), limit(i)), and runs of empty buckets collapsed into one when encoded, as its
/// `EncodeToProto(preserve_zero_buckets: false)` does. Non-finite values are left out.
struct TensorBoardHistogram {
    static let defaultLimits: [Double] = {
        var positive = [Double]()
        var v = 1.0e-12
        while v < 1.0e20 {
            positive.append(v)
            v *= 1.1
        }
        positive.append(Double.greatestFiniteMagnitude)
        return positive.reversed().map { -$0 } + [0] + positive
    }()

    var min = Double.greatestFiniteMagnitude
    var max = -Double.greatestFiniteMagnitude
    var num = 0.0
    var sum = 0.0
    var sumSquares = 0.0
    var buckets: [Double]

    init(_ values: [Double]) {
        let limits = Self.defaultLimits
        buckets = [Double](repeating: 0, count: limits.count)
        for x in values where x.isFinite {
            // The first limit greater than x (upper_bound).
            var lo = 0, hi = limits.count - 1
            while lo < hi {
                let mid = (lo + hi) / 2
                if limits[mid] > x { hi = mid } else { lo = mid + 1 }
            }
            buckets[lo] += 1
            min = Swift.min(min, x)
            max = Swift.max(max, x)
            num += 1
            sum += x
            sumSquares += x * x
        }
    }

    var proto: Tensorflow_HistogramProto {
        var p = Tensorflow_HistogramProto()
        p.min = min
        p.max = max
        p.num = num
        p.sum = sum
        p.sumSquares = sumSquares
        let limits = Self.defaultLimits
        var i = 0
        while i < buckets.count {
            var end = limits[i]
            var count = buckets[i]
            i += 1
            if count <= 0 {
                while i < buckets.count, buckets[i] <= 0 {
                    end = limits[i]
                    count = buckets[i]
                    i += 1
                }
            }
            p.bucketLimit.append(end)
            p.bucket.append(count)
        }
        return p
    }
}

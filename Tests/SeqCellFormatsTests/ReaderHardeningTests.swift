import Foundation
import XCTest
@testable import SeqCellBase
@testable import SeqCellHost
@testable import SeqCellModel
@testable import SeqCellFormats
import SeqCellTestSupport

/// Regression tests for the non-HDF5 readers on hostile files (issue 9): safetensors headers
/// parse in linear time with caps and are recognised before pickle sniffing; `.keras` zip
/// members are read into memory with size, ratio and CRC checks and nothing unbounded on
/// disk; Keras config JSON and `.npy` headers are bounded; messages never show temp paths.
final class ReaderHardeningTests: TemporaryDirectoryTestCase {
    /// `entries` tensors `t0`, `t1`, … of one F32 each, as a safetensors file.
    func manyEntrySafetensors(_ entries: Int) -> [UInt8] {
        var header: [UInt8] = Array("{".utf8)
        header.reserveCapacity(entries * 64)
        for i in 0..<entries {
            if i > 0 { header.append(UInt8(ascii: ",")) }
            header += Array("\"t\(i)\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[\(4 * i),\(4 * i + 4)]}".utf8)
        }
        header.append(UInt8(ascii: "}"))
        while header.count % 8 != 0 { header.append(UInt8(ascii: " ")) }
        let n = UInt64(header.count)
        var out = (0..<8).map { UInt8(truncatingIfNeeded: n >> (8 * UInt64($0))) } + header
        out += [UInt8](repeating: 0, count: 4 * entries)
        return out
    }

    /// Issue 9: a 40,000-entry header took 3.9 s (quadratic). Reading it, and building the
    /// tensor dictionary the importer uses, is linear now.
    func testSafetensorsWith40000EntriesReadsQuickly() throws {
        let file = path("many.safetensors")
        XCTAssertTrue(FileManager.default.createFile(atPath: file, contents: Data(manyEntrySafetensors(40_000))))
        let start = Date()
        let dict = try TensorDictionary.safetensors(path: file)
        let seconds = Date().timeIntervalSince(start)
        print("safetensors, 40,000-entry header: read in \(String(format: "%.3f", seconds)) s")
        XCTAssertEqual(dict.tensors.count, 40_000)
        XCTAssertEqual(dict.tensors["t39999"]?.shape, [1])
        XCTAssertLessThan(seconds, 5, "a 40,000-entry header must not take seconds")
    }

    /// Issue 9: a 1,000,000-entry header ran past a minute. It is refused (more tensors than
    /// the cap) after reading a bounded part of it.
    func testSafetensorsWithAMillionEntriesIsRefusedQuickly() throws {
        let bytes = manyEntrySafetensors(1_000_000)
        let start = Date()
        let error = assertThrows(SeqCellError.self, try SafeTensorsFile(bytes: bytes, path: "million.safetensors"))
        let seconds = Date().timeIntervalSince(start)
        print("safetensors, 1,000,000-entry header: refused in \(String(format: "%.3f", seconds)) s")
        XCTAssertTrue(error?.message.contains("'million.safetensors' is not a valid safetensors file") == true, error?.message ?? "")
        XCTAssertTrue(error?.message.contains("the header lists more than 100000 tensors") == true, error?.message ?? "")
        XCTAssertLessThan(seconds, 5, "a 1,000,000-entry header must not take seconds")
    }

    /// Headers nested deeply, with huge arrays, long names or huge numbers are refused by name.
    func testSafetensorsHeaderCaps() {
        func file(_ header: String, _ data: [UInt8] = []) -> [UInt8] {
            let h = Array(header.utf8)
            return (0..<8).map { UInt8(truncatingIfNeeded: UInt64(h.count) >> (8 * UInt64($0))) } + h + data
        }
        func refused(_ b: [UInt8], _ fragment: String, line: UInt = #line) {
            let e = assertThrows(SeqCellError.self, try SafeTensorsFile(bytes: b, path: "h.safetensors"), line: line)
            XCTAssertTrue(e?.message.contains(fragment) == true, "expected '\(fragment)' in: \(e?.message ?? "")", line: line)
        }
        refused(file("{\"a\":" + String(repeating: "[", count: 10_000)), "nested deeper than")
        refused(file("{\"a\":{\"dtype\":\"F32\",\"shape\":[" + Array(repeating: "1", count: 70).joined(separator: ",") + "],\"data_offsets\":[0,4]}}"),
                "shape has 70 dimensions")
        refused(file("{\"" + String(repeating: "n", count: 5000) + "\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}"),
                "longer than 4096 bytes")
        refused(file(#"{"a":{"dtype":"F32","shape":[2147483647,2147483647,2147483647],"data_offsets":[0,4]}}"#, [0, 0, 0, 0]),
                "more elements than can be addressed")
        // An empty tensor cannot declare a dimension that later sizes a model.
        refused(file(#"{"a":{"dtype":"F32","shape":[0,4611686018427387904],"data_offsets":[0,0]}}"#),
                "dimension 4611686018427387904 in its shape is larger than 2147483647")
        refused(file(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,18446744073709551620]}}"#, [0, 0, 0, 0]),
                "not two non-negative integers")
        refused(file(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, [0, 0, 0, 0]),
                "appears twice")
        refused(file("{\"a\\u001b[2J\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,8]}}", [0, 0, 0, 0]),
                "tensor 'a\\u{1B}[2J'")
        // Overlapping ranges are refused whatever their order in the header.
        refused(file(#"{"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                     [UInt8](repeating: 0, count: 8)), "overlaps")
    }

    /// Issue 9: a valid safetensors file whose header is 640, 896, 1152 or 1408 bytes starts
    /// with 80 02…80 05 and was refused as "a Python pickle". It is recognised by its
    /// structure and imports.
    func testSafetensorsWhoseLengthLooksLikeAPickleLoads() throws {
        var rng = TestRNG(seed: 9)
        let H = 3, I = 2
        let tensors: [(name: String, tensor: Tensor)] = [
            ("weight_ih_l0", rng.tensor([4 * H, I])), ("weight_hh_l0", rng.tensor([4 * H, H])),
            ("bias_ih_l0", rng.tensor([4 * H])), ("bias_hh_l0", rng.tensor([4 * H])),
        ]
        for target in [640, 896, 1152, 1408] {
            var found: [UInt8]?
            for pad in 0..<1500 {
                let b = try SafeTensorsFile.encode(tensors, metadata: ["pad": String(repeating: "x", count: pad)])
                let n = Int(b[0]) | Int(b[1]) << 8
                if n == target { found = b; break }
            }
            let bytes = try XCTUnwrap(found, "no padding gives a \(target)-byte header")
            XCTAssertEqual(bytes[0], 0x80, "header \(target): first byte")
            XCTAssertTrue((2...5).contains(bytes[1]), "header \(target): second byte looks like a pickle protocol")
            let file = path("h\(target).safetensors")
            XCTAssertTrue(FileManager.default.createFile(atPath: file, contents: Data(bytes)))
            XCTAssertEqual(try InteropFile.kind(of: file), .safetensors, "header \(target)")
            let dict = try TensorDictionary.safetensors(path: file)
            XCTAssertEqual(dict.tensors["weight_hh_l0"], tensors[1].tensor, "header \(target)")
            let run = try runSeqCell(["import", file, "-o", path("h\(target).h5")])
            XCTAssertEqual(run.status, 0, "header \(target): \(run.stderr)")
            XCTAssertTrue(run.stdout.contains("nn.LSTM"), run.stdout)
        }
        // A real pickle is still refused as one.
        let pickle = path("legacy.pt")
        XCTAssertTrue(FileManager.default.createFile(atPath: pickle, contents: Data([0x80, 0x02, 0x7D, 0x71, 0x00, 0x2E])))
        XCTAssertEqual(try InteropFile.kind(of: pickle), .pickle)
        // A damaged safetensors file whose length does not fit is refused as a safetensors file.
        let damaged = Array(try SafeTensorsFile.encode(tensors).prefix(100))
        let bad = path("bad.safetensors")
        XCTAssertTrue(FileManager.default.createFile(atPath: bad, contents: Data(damaged)))
        let e = assertThrows(SeqCellError.self, try TensorDictionary.safetensors(path: bad))
        XCTAssertTrue(e?.message.contains("runs past the end") == true, e?.message ?? "")
    }

    /// Sizes read from empty tensors' shapes are bounded before the importer computes with
    /// them (a [0, 2^30] weight_hr_l0 once made gates × hidden overflow).
    func testPyTorchImportBoundsSizesFromEmptyTensors() throws {
        let file = path("proj.safetensors")
        let header = #"{"weight_ih_l0":{"dtype":"F32","shape":[4,1],"data_offsets":[0,16]},"weight_hh_l0":{"dtype":"F32","shape":[4,1],"data_offsets":[16,32]},"weight_hr_l0":{"dtype":"F32","shape":[0,1073741824],"data_offsets":[32,32]}}"#
        let h = Array(header.utf8)
        let bytes = (0..<8).map { UInt8(truncatingIfNeeded: UInt64(h.count) >> (8 * UInt64($0))) } + h + [UInt8](repeating: 0, count: 32)
        XCTAssertTrue(FileManager.default.createFile(atPath: file, contents: Data(bytes)))
        let e = assertThrows(SeqCellError.self, try PyTorchImporter.importFile(file, registry: testRegistry))
        XCTAssertTrue(e?.message.contains("sizes must be between 1 and 16777216") == true, e?.message ?? "")
        // A layer number at Int.max once overflowed counting the layers (found by the fuzzer).
        let t = #"{"dtype":"F32","shape":[1,1],"data_offsets":[0,4]}"#
        let big = "{\"weight_ih_l0\":\(t),\"weight_hh_l9223372036854775807\":{\"dtype\":\"F32\",\"shape\":[1,1],\"data_offsets\":[4,8]}}"
        let hb = Array(big.utf8)
        let file2 = path("layers.safetensors")
        XCTAssertTrue(FileManager.default.createFile(atPath: file2, contents: Data(
            (0..<8).map { UInt8(truncatingIfNeeded: UInt64(hb.count) >> (8 * UInt64($0))) } + hb + [UInt8](repeating: 0, count: 8))))
        let e2 = assertThrows(SeqCellError.self, try PyTorchImporter.importFile(file2, registry: testRegistry))
        XCTAssertTrue(e2?.message.contains("'weight_hh_l9223372036854775807'") == true, e2?.message ?? "")
    }

    /// Runs a Python script that builds a `.keras` case in the test folder, runs `seqcell
    /// import` on it in a child with its own TMPDIR, and reports exit status, stderr, peak
    /// RSS (getrusage of the child) and what the child left in TMPDIR.
    struct ZipCase: Decodable {
        var status: Int
        var stderr: String
        var maxrss_mb: Double
        var seconds: Double
        var tmp_left: [String]
        var output_exists: Bool
        var archive_bytes: Int
    }

    static let zipCaseScript = #"""
import json, os, resource, struct, subprocess, sys, tempfile, time, zipfile, zlib
seqcell, folder, kind, fixture = sys.argv[1:5]

def local_and_central(name, method, crc, csize, usize, offset):
    n = name.encode()
    local = struct.pack("<IHHHHHIIIHH", 0x04034b50, 20, 0, method, 0, 0x21, crc, csize, usize, len(n), 0) + n
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014b50, 20, 20, 0, method, 0, 0x21, crc, csize, usize,
                          len(n), 0, 0, 0, 0, 0, offset) + n
    return local, central

def write_zip(path, members):
    """members: (name, method, compressed bytes, crc, declared uncompressed size)."""
    out, centrals = b"", b""
    for name, method, data, crc, usize in members:
        local, central = local_and_central(name, method, crc, len(data), usize, len(out))
        out += local + data
        centrals += central
    eocd = struct.pack("<IHHHHIIH", 0x06054b50, 0, 0, len(members), len(members), len(centrals), len(out), 0)
    with open(path, "wb") as f:
        f.write(out + centrals + eocd)

def deflated_zeros(size):
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = b"\0" * (1 << 20)
    parts, crc = [], 0
    for _ in range(size >> 20):
        parts.append(c.compress(chunk))
        crc = zlib.crc32(chunk, crc)
    parts.append(c.flush())
    return b"".join(parts), crc

good = zipfile.ZipFile(fixture)
config, weights = good.read("config.json"), good.read("model.weights.h5")
def stored(name, data):
    return (name, 0, data, zlib.crc32(data), len(data))

case = os.path.join(folder, kind + ".keras")
bomb, bomb_crc = deflated_zeros(1 << 30)
if kind == "config-bomb":
    write_zip(case, [("config.json", 8, bomb, bomb_crc, 1 << 30), stored("model.weights.h5", weights)])
elif kind == "weights-bomb":
    write_zip(case, [stored("config.json", config), ("model.weights.h5", 8, bomb, bomb_crc, 1 << 30)])
elif kind == "weights-bomb-lying":
    # The headers declare 40,000 bytes; the deflate stream expands to 1 GiB.
    write_zip(case, [stored("config.json", config), ("model.weights.h5", 8, bomb, bomb_crc, 40000)])
elif kind == "stored-bad-crc":
    changed = bytearray(weights)
    changed[len(changed) - 100] ^= 0x40  # inside the last dataset's data
    write_zip(case, [stored("config.json", config), ("model.weights.h5", 0, bytes(changed), zlib.crc32(weights), len(weights))])
elif kind == "damaged-weights":
    changed = bytearray(weights)
    changed[0:8] = b"\0" * 8  # no HDF5 signature; CRC matches the changed bytes
    write_zip(case, [stored("config.json", config), stored("model.weights.h5", bytes(changed))])
tmp = tempfile.mkdtemp(dir=folder)
out = os.path.join(folder, kind + ".h5")
start = time.monotonic()
r = subprocess.run([seqcell, "import", case, "-o", out], capture_output=True, env=dict(os.environ, TMPDIR=tmp))
seconds = time.monotonic() - start
print(json.dumps({"status": r.returncode, "stderr": r.stderr.decode("utf-8", "replace"),
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, "seconds": seconds,
                  "tmp_left": os.listdir(tmp), "output_exists": os.path.exists(out), "archive_bytes": os.path.getsize(case)}))
"""#

    func zipCase(_ kind: String, line: UInt = #line) throws -> ZipCase {
        let cli = (buildProductsDir as NSString).appendingPathComponent("seqcell")
        let out = try runPython(Self.zipCaseScript, [cli, directory.path, kind, interopFixture("keras_lstm_dense_softmax.keras")], line: line)
        let result = try JSONDecoder().decode(ZipCase.self, from: Data(out.utf8))
        print("keras \(kind): \(result.archive_bytes)-byte archive, exit \(result.status) in \(String(format: "%.2f", result.seconds)) s, peak RSS \(Int(result.maxrss_mb)) MB: \(result.stderr.trimmingCharacters(in: .whitespacesAndNewlines))")
        XCTAssertEqual(result.status, 1, result.stderr, line: line)
        XCTAssertTrue(result.stderr.hasPrefix("Error: "), result.stderr, line: line)
        XCTAssertTrue(result.stderr.contains("\(kind).keras"), "the message names the archive: \(result.stderr)", line: line)
        XCTAssertFalse(result.stderr.contains(directory.path + "/tmp"), "no temp path: \(result.stderr)", line: line)
        for hidden in ["seqcell-keras-", "ZIPFoundation", "ArchiveError", "invalidCRC32", "invalidEntrySize", "corruptedData"] {
            XCTAssertFalse(result.stderr.contains(hidden), "no '\(hidden)' in: \(result.stderr)", line: line)
        }
        XCTAssertEqual(result.tmp_left, [], "nothing left in TMPDIR", line: line)
        XCTAssertFalse(result.output_exists, "no output file", line: line)
        XCTAssertLessThan(result.maxrss_mb, 400, "peak RSS of the import", line: line)
        XCTAssertLessThan(result.seconds, 10, line: line)
        return result
    }

    /// Issue 9: a 1 MB zip bomb in config.json took 2 GB of memory.
    func testKerasConfigZipBombIsRefused() throws {
        let r = try zipCase("config-bomb")
        XCTAssertLessThan(r.archive_bytes, 2_000_000)
        XCTAssertTrue(r.stderr.contains("member 'config.json'") && r.stderr.contains("more than the limit"), r.stderr)
    }

    /// Issue 9: a 1 MB zip bomb in model.weights.h5 wrote 1 GiB to /tmp.
    func testKerasWeightsZipBombIsRefused() throws {
        let r = try zipCase("weights-bomb")
        XCTAssertTrue(r.stderr.contains("member 'model.weights.h5'") && r.stderr.contains("zip bomb"), r.stderr)
    }

    /// A member whose headers understate its size is cut off at the declared size.
    func testKerasMemberExpandingPastItsDeclaredSizeIsRefused() throws {
        let r = try zipCase("weights-bomb-lying")
        XCTAssertTrue(r.stderr.contains("member 'model.weights.h5' is damaged (it expands past its declared size of 40000 bytes)"), r.stderr)
    }

    /// Issue 9: a stored member with a bad CRC imported with changed weights.
    func testKerasStoredMemberWithBadCRCIsRefused() throws {
        let r = try zipCase("stored-bad-crc")
        XCTAssertTrue(r.stderr.contains("cannot read '") && r.stderr.contains("member 'model.weights.h5' is damaged (CRC mismatch)"), r.stderr)
    }

    /// A weights member that is not HDF5 is refused naming the archive's member, never the
    /// temporary file it was staged in.
    func testKerasDamagedWeightsMemberNamesTheArchive() throws {
        let r = try zipCase("damaged-weights")
        XCTAssertTrue(r.stderr.contains("damaged-weights.keras:model.weights.h5"), r.stderr)
    }

    /// A good archive still imports, leaving nothing in TMPDIR.
    func testKerasArchiveImportLeavesNoTemporaryFiles() throws {
        let tmp = path("tmp")
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        setenv("TMPDIR", tmp, 1)
        defer { unsetenv("TMPDIR") }
        let registry = testRegistry
        let result = try KerasImporter.importFile(interopFixture("keras_lstm_dense_softmax.keras"), registry: registry)
        XCTAssertEqual(result.model.layers.count, 1)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: tmp), [])
    }

    /// Hostile configs: huge units (which overflowed and trapped), deep nesting, huge arrays,
    /// and documents beyond the size cap are refused with messages naming the config.
    func testKerasConfigCaps() throws {
        let good = try String(contentsOfFile: interopFixture("keras_lstm_dense_softmax.json"), encoding: .utf8)
        func refused(_ json: String, _ fragment: String, line: UInt = #line) {
            let e = assertThrows(SeqCellError.self, try KerasConfigReader.plan(json: json, origin: "'m.json'"), line: line)
            XCTAssertTrue(e?.message.hasPrefix("'m.json': ") == true, e?.message ?? "", line: line)
            XCTAssertTrue(e?.message.contains(fragment) == true, "expected '\(fragment)' in: \(e?.message ?? "")", line: line)
        }
        let units = try XCTUnwrap(good.range(of: #""units": \d+"#, options: .regularExpression))
        refused(good.replacingCharacters(in: units, with: "\"units\": 9223372036854775807"), "units=9223372036854775807 is more than")
        refused(good.replacingCharacters(in: units, with: "\"units\": 1e300"), "no positive 'units'")
        refused(String(repeating: "[", count: 100_000), "nested deeper than 100 levels")
        refused("{\"a\": [" + Array(repeating: "0", count: 200_000).joined(separator: ",") + "]}", "more than 100000 items")
        refused(#"{"a": "\ud800"}"#, "unpaired surrogate")
        refused(#"{"a": 1, "a": 2}"#, "appears twice")
        // Names from the file are shown with control characters escaped (found by the fuzzer).
        refused(#"{"class_name": "Seque\u007ftial\u001b[2J", "config": {"layers": []}}"#, "the top-level object is 'Seque\\u{7F}tial\\u{1B}[2J'")
        refused(String(repeating: " ", count: (16 << 20) + 1), "larger than")
        // Linear time: a 10 MB config of one long list is refused or read quickly.
        let big = "{\"class_name\": \"Sequential\", \"config\": {\"layers\": [" + Array(repeating: "{}", count: 90_000).joined(separator: ",") + "]}}"
        let start = Date()
        refused(big, "layer 0 of the config is not {class_name, config}")
        XCTAssertLessThan(Date().timeIntervalSince(start), 5)
    }

    /// `.npy` headers: size and rank caps, repeated keys, and dtype strings with control
    /// characters shown escaped.
    func testNPYDamagedHeaders() throws {
        func npy(_ header: String, major: UInt8 = 1, data: [UInt8] = []) -> [UInt8] {
            let h = Array(header.utf8)
            let length: [UInt8] = major == 1 ? [UInt8(h.count & 0xFF), UInt8(h.count >> 8)]
                : (0..<4).map { UInt8(truncatingIfNeeded: h.count >> (8 * $0)) }
            return [0x93] + Array("NUMPY".utf8) + [major, 0] + length + h + data
        }
        func expect(_ bytes: [UInt8], field: String?, _ fragment: String, line: UInt = #line) {
            let file = path("d.npy")
            XCTAssertTrue(FileManager.default.createFile(atPath: file, contents: Data(bytes)), line: line)
            let e = assertThrows(NPYError.self, try NPY.readFloats(from: file), line: line)
            XCTAssertEqual(e?.field, field, "\(String(describing: e))", line: line)
            XCTAssertTrue(e?.message.contains(fragment) == true, "expected '\(fragment)' in: \(String(describing: e))", line: line)
            XCTAssertTrue(e?.description.hasPrefix("cannot read '\(file)': ") == true, line: line)
        }
        expect(npy("{'descr': '<f4', 'descr': '<f8', 'fortran_order': False, 'shape': (1,), }", data: [0, 0, 0, 0]),
               field: "descr", "the key appears twice")
        expect(npy("{'descr': '\u{1B}[31m<f4', 'fortran_order': False, 'shape': (1,), }", data: [0, 0, 0, 0]),
               field: "descr", "dtype '\\u{1B}[31m<f4' is not supported")
        let dims = Array(repeating: "1", count: 65).joined(separator: ", ")
        expect(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (\(dims)), }", data: [0, 0, 0, 0]),
               field: "shape", "65 dimensions (at most 64)")
        // A version 2.0 header longer than the cap is refused before it is parsed.
        let huge = "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }" + String(repeating: " ", count: (1 << 20) + 10)
        expect(npy(huge, major: 2, data: [0, 0, 0, 0]), field: "header length", "longer than the limit")
        // A version 2.0 header length of 4 GiB - 1 in a tiny file.
        expect([0x93] + Array("NUMPY".utf8) + [2, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x7B], field: "header length", "longer than the limit")
        // A shape whose byte count overflows.
        expect(npy("{'descr': '<f8', 'fortran_order': False, 'shape': (2305843009213693952,), }"),
               field: nil, "needs too many data bytes")
        // Data shorter than the shape says.
        expect(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", data: [0, 0, 0, 0]),
               field: nil, "needs 24 data bytes, file has 4")
    }
}

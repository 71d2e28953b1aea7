import Foundation
import XCTest
@testable import SeqCellBase
@testable import SeqCellHost
@testable import SeqCellModel
@testable import SeqCellFormats
import SeqCellTestSupport

/// The safetensors reader is strict and the writer writes what PyTorch's safetensors reads.
final class SafeTensorsTests: TemporaryDirectoryTestCase {
    /// A file from a header (JSON text, not padded) and a data area.
    func bytes(_ header: String, _ data: [UInt8]) -> [UInt8] {
        let h = Array(header.utf8)
        return (0..<8).map { UInt8(truncatingIfNeeded: UInt64(h.count) >> (8 * UInt64($0))) } + h + data
    }

    func assertInvalid(_ b: [UInt8], _ fragment: String, file: StaticString = #filePath, line: UInt = #line) {
        let error = assertThrows(SeqCellError.self, try SafeTensorsFile(bytes: b, path: "t.safetensors"), file: file, line: line)
        XCTAssertTrue(error?.message.contains(fragment) == true, "expected '\(fragment)' in: \(error?.message ?? "")", file: file, line: line)
        XCTAssertTrue(error?.message.hasPrefix("'t.safetensors' is not a valid safetensors file") == true, file: file, line: line)
    }

    func testRoundTripAndDTypes() throws {
        let a = Tensor(shape: [2, 3], data: [1, -2, 3.5, 0, 1e-3, -7])
        let b = Tensor(shape: [0], data: [])
        let encoded = try SafeTensorsFile.encode([("w", a), ("empty", b)], metadata: ["format": "pt"])
        let headerLength = Int(encoded[0]) | Int(encoded[1]) << 8
        XCTAssertEqual(headerLength % 8, 0, "the header is padded to a multiple of 8 bytes")
        let f = try SafeTensorsFile(bytes: encoded, path: "x")
        XCTAssertEqual(f.names, ["empty", "w"])
        XCTAssertEqual(f.metadata, ["format": "pt"])
        XCTAssertEqual(try f.tensor("w"), a)
        XCTAssertEqual(try f.tensor("empty"), b)
        // F64, F16 and BF16 convert to float32; integers are refused by name.
        let f64: [UInt8] = [1.5, -0.25].flatMap { (d: Double) in withUnsafeBytes(of: d.bitPattern.littleEndian, Array.init) }
        let f16: [UInt8] = [Float16(1.5), Float16(-2)].flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) }
        let bf16: [UInt8] = [Float(3.0), Float(-0.5)].flatMap { withUnsafeBytes(of: UInt16($0.bitPattern >> 16).littleEndian, Array.init) }
        let mixed = try SafeTensorsFile(bytes: bytes(
            #"{"a":{"dtype":"F64","shape":[2],"data_offsets":[0,16]},"b":{"dtype":"F16","shape":[2],"data_offsets":[16,20]},"c":{"dtype":"BF16","shape":[2],"data_offsets":[20,24]},"d":{"dtype":"I32","shape":[1],"data_offsets":[24,28]}}"#,
            f64 + f16 + bf16 + [1, 0, 0, 0]), path: "m")
        XCTAssertEqual(try mixed.tensor("a").data, [1.5, -0.25])
        XCTAssertEqual(try mixed.tensor("b").data, [1.5, -2])
        XCTAssertEqual(try mixed.tensor("c").data, [3, -0.5])
        let e = assertThrows(SeqCellError.self, try mixed.tensor("d"))
        XCTAssertTrue(e?.message.contains("tensor 'd' is I32") == true, e?.message ?? "")
    }

    func testMalformedFilesAreRefused() {
        let four: [UInt8] = [0, 0, 128, 63]
        assertInvalid([1, 2, 3], "fewer than the 8-byte header length")
        assertInvalid([200, 0, 0, 0, 0, 0, 0, 0] + Array("{}".utf8), "header length 200 runs past the end")
        assertInvalid([0, 0, 0, 0, 0, 0, 0, 1], "larger than the limit")
        assertInvalid(bytes("[1]", []), "does not start with '{'")
        assertInvalid(bytes("{\"a\":", []), "not valid JSON")
        assertInvalid(bytes(#"{"a":{"dtype":"F32","shape":[1]}}"#, four), "tensor 'a'")
        assertInvalid(bytes(#"{"a":{"dtype":"F99","shape":[1],"data_offsets":[0,4]}}"#, four), "unknown dtype 'F99'")
        assertInvalid(bytes(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#, four), "shape [2] of F32 needs 2 × 4 bytes, data_offsets give 4")
        assertInvalid(bytes(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,8]}}"#, four), "lie outside the 4-byte data area")
        assertInvalid(bytes(#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#, four), "negative dimension")
        assertInvalid(bytes(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, four),
                      "overlaps")
        assertInvalid(bytes(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, four + four), "bytes 0..<4 of the data area belong to no tensor")
        assertInvalid(bytes(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, four + [0]), "1 bytes after the last tensor")
        assertInvalid(bytes(#"{"__metadata__":{"k":1}}"#, []), "__metadata__")
        assertInvalid(bytes(#"{"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}"#, four), "tensor 'a': shape holds the number 1.5, not a non-negative integer")
    }

    /// A file PyTorch's safetensors wrote reads back as the tensors PyTorch had.
    func testReadsFilesWrittenBySafetensors() throws {
        let f = try SafeTensorsFile(path: interopFixture("torch_lstm_2layer_bidir_packed.safetensors"))
        XCTAssertEqual(f.names.count, 16)
        XCTAssertEqual(f.entry("weight_ih_l1_reverse")?.shape, [16, 8])
        XCTAssertEqual(f.entry("weight_ih_l1_reverse")?.dtype, .f32)
        // A corrupt copy of it is refused: header length beyond the file.
        var b = [UInt8](try Data(contentsOf: URL(fileURLWithPath: f.path)))
        b[0] = 0xFF; b[1] = 0xFF
        let error = assertThrows(SeqCellError.self, try SafeTensorsFile(bytes: b, path: "c"))
        XCTAssertTrue(error?.message.contains("runs past the end") == true, error?.message ?? "")
    }
}

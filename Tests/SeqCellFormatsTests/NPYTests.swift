import Foundation
@testable import SeqCellBase
@testable import SeqCellHost
@testable import SeqCellModel
@testable import SeqCellFormats
import SeqCellTestSupport
import XCTest

final class NPYTests: TemporaryDirectoryTestCase {
    func testReadsEveryDtypeAndVersionNumpyWrites() throws {
        _ = try runPython(
            """
            import sys, numpy as np
            from numpy.lib import format as fmt
            d = sys.argv[1]
            base = np.arange(-3, 9).reshape(3, 4)
            for dtype in ['f4', 'f8', 'i4', 'i8']:
                for major in [1, 2, 3]:
                    with open(f'{d}/{dtype}_v{major}.npy', 'wb') as f:
                        fmt.write_array(f, base.astype('<' + dtype), version=(major, 0))
            np.save(f'{d}/scalar.npy', np.float32(2.5))
            np.save(f'{d}/empty.npy', np.zeros((0, 2), '<f8'))
            np.save(f'{d}/fractions.npy', np.array([0.1, -1e-3, 1e30], '<f8'))
            """, [directory.path])

        let expected = (-3..<9).map { Float($0) }
        for dtype in ["f4", "f8", "i4", "i8"] {
            for major in 1...3 {
                let file = path("\(dtype)_v\(major).npy")
                let (shape, floats) = try NPY.readFloats(from: file)
                XCTAssertEqual(shape, [3, 4], file)
                XCTAssertEqual(floats, expected, file)
                if dtype.hasPrefix("i") {
                    let (intShape, ints) = try NPY.readInt32s(from: file)
                    XCTAssertEqual(intShape, [3, 4], file)
                    XCTAssertEqual(ints, (-3..<9).map { Int32($0) }, file)
                }
            }
        }
        let scalar = try NPY.readFloats(from: path("scalar.npy"))
        XCTAssertEqual(scalar.shape, [])
        XCTAssertEqual(scalar.floats, [2.5])
        let empty = try NPY.readFloats(from: path("empty.npy"))
        XCTAssertEqual(empty.shape, [0, 2])
        XCTAssertEqual(empty.floats, [])
        XCTAssertEqual(try NPY.readFloats(from: path("fractions.npy")).floats, [Float(0.1), Float(-1e-3), Float(1e30)])
    }

    func testNumpyReadsWrittenFiles() throws {
        let values: [Float] = [0.1, -2.5, 3e-8, 1e30, -0.0, 6]
        try NPY.write(to: path("matrix.npy"), shape: [2, 3], floats: values)
        try NPY.write(to: path("scalar.npy"), shape: [], floats: [4.25])
        try NPY.write(to: path("empty.npy"), shape: [0], floats: [])

        struct Loaded: Decodable, Equatable {
            var dtype: String
            var shape: [Int]
            var fortran: Bool
            var values: [Float]
        }
        let loaded = try decodePython(
            [String: Loaded].self,
            """
            import sys, json, numpy as np
            out = {}
            for name in ['matrix', 'scalar', 'empty']:
                a = np.load(f'{sys.argv[1]}/{name}.npy')
                out[name] = {'dtype': a.dtype.str, 'shape': list(a.shape), 'fortran': bool(np.isfortran(a)),
                             'values': [float(x) for x in a.ravel()]}
            print(json.dumps(out))
            """, [directory.path])
        XCTAssertEqual(loaded["matrix"], Loaded(dtype: "<f4", shape: [2, 3], fortran: false, values: values))
        XCTAssertEqual(loaded["scalar"], Loaded(dtype: "<f4", shape: [], fortran: false, values: [4.25]))
        XCTAssertEqual(loaded["empty"], Loaded(dtype: "<f4", shape: [0], fortran: false, values: []))
    }

    func testWriteReadRoundTripAlignsData() throws {
        let file = path("w.npy")
        let values = (0..<60).map { Float($0) * 0.37 - 5 }
        try NPY.write(to: file, shape: [3, 4, 5], floats: values)
        let (shape, floats) = try NPY.readFloats(from: file)
        XCTAssertEqual(shape, [3, 4, 5])
        XCTAssertEqual(floats.map(\.bitPattern), values.map(\.bitPattern))
        let size = try XCTUnwrap(FileManager.default.attributesOfItem(atPath: file)[.size] as? Int)
        XCTAssertEqual((size - 4 * values.count) % 64, 0, "data starts on a 64-byte boundary")
    }

    func testMissingFilesAndFailedWritesAreOneSentenceNamingTheUsersPath() throws {
        let missing = path("absent.npy")
        let readError = assertThrows(NPYError.self, try NPY.readFloats(from: missing))
        XCTAssertEqual(readError?.description, "cannot read '\(missing)': no such file or directory")

        // A write is atomic: into a missing folder it fails naming the target, and leaves
        // nothing; over an existing file that cannot be replaced, the old content stays.
        let nowhere = path("no-such-folder/out.npy")
        XCTAssertThrowsError(try NPY.write(to: nowhere, shape: [1], floats: [1])) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("'\(nowhere)'"), text)
            XCTAssertFalse(text.contains(".tmp-"), "temporary path shown: \(text)")
        }
        let kept = path("kept.npy")
        try NPY.write(to: kept, shape: [2], floats: [1, 2])
        let before = try Data(contentsOf: URL(fileURLWithPath: kept))
        try NPY.write(to: kept, shape: [3], floats: [3, 4, 5])
        XCTAssertEqual(try NPY.readFloats(from: kept).floats, [3, 4, 5])
        XCTAssertNotEqual(try Data(contentsOf: URL(fileURLWithPath: kept)), before)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.contains(".tmp-") }
        XCTAssertEqual(leftovers, [], "temporary files left behind")
    }

    func testWriteRejectsShapeThatDoesNotMatch() throws {
        let file = path("bad.npy")
        let error = assertThrows(NPYError.self, try NPY.write(to: file, shape: [2, 2], floats: [1, 2, 3]))
        XCTAssertEqual(error?.description, "cannot write '\(file)': header field 'shape': shape [2, 2] does not hold the 3 elements given")
        XCTAssertFalse(FileManager.default.fileExists(atPath: file))
    }

    func testRejectsUnsupportedLayoutsAndDtypes() throws {
        _ = try runPython(
            """
            import sys, numpy as np
            d = sys.argv[1]
            np.save(f'{d}/big.npy', np.arange(3, dtype='>f4'))
            np.save(f'{d}/fortran.npy', np.asfortranarray(np.ones((2, 3), '<f4')))
            np.save(f'{d}/u2.npy', np.arange(3, dtype='<u2'))
            np.save(f'{d}/struct.npy', np.zeros(2, dtype=[('a', '<f4'), ('b', '<i4')]))
            np.save(f'{d}/wide.npy', np.array([1, 2**40], '<i8'))
            """, [directory.path])

        func expect(_ name: String, field: String?, _ message: String, read: (String) throws -> Any = NPY.readFloats, line: UInt = #line) {
            let file = path(name)
            let error = assertThrows(NPYError.self, try read(file), line: line)
            XCTAssertEqual(error?.path, file, line: line)
            XCTAssertEqual(error?.field, field, line: line)
            XCTAssertEqual(error?.message.hasPrefix(message), true, "\(String(describing: error))", line: line)
            XCTAssertEqual(error?.description.hasPrefix("cannot read '\(file)': "), true, line: line)
        }
        expect("big.npy", field: "descr", "big-endian '>f4' is not supported")
        expect("fortran.npy", field: "fortran_order", "Fortran-order arrays are not supported")
        expect("u2.npy", field: "descr", "dtype '<u2' is not supported (need '<f4', '<f8', '<i4' or '<i8')")
        expect("struct.npy", field: "descr", "unsupported value")
        expect("wide.npy", field: nil, "element 1 (1099511627776) does not fit in Int32", read: NPY.readInt32s)
        XCTAssertEqual(try NPY.readFloats(from: path("wide.npy")).floats, [1, 1_099_511_627_776])
        try NPY.write(to: path("floats.npy"), shape: [1], floats: [1])
        expect("floats.npy", field: "descr", "expected an integer array ('<i4' or '<i8'), found '<f4'", read: NPY.readInt32s)
    }

    func testTruncatedAndGarbageFilesAreErrors() throws {
        try NPY.write(to: path("good.npy"), shape: [3, 4], floats: (0..<12).map(Float.init))
        let good = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path("good.npy"))))
        XCTAssertEqual(good.count, 128 + 48)

        func expect(_ bytes: [UInt8], field: String?, _ message: String, line: UInt = #line) {
            let file = path("case.npy")
            XCTAssertTrue(FileManager.default.createFile(atPath: file, contents: Data(bytes)))
            let error = assertThrows(NPYError.self, try NPY.readFloats(from: file), line: line)
            XCTAssertEqual(error?.path, file, line: line)
            XCTAssertEqual(error?.field, field, line: line)
            XCTAssertEqual(error?.message, message, line: line)
        }
        /// A version 1.0 file with `header` (unpadded) followed by `data`.
        func npy(_ header: String, data: [UInt8] = []) -> [UInt8] {
            let text = Array(header.utf8) + [UInt8(ascii: "\n")]
            return [0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(text.count & 0xFF), UInt8(text.count >> 8)] + text + data
        }

        expect(Array(good.dropLast(3)), field: nil, "shape [3, 4] of '<f4' needs 48 data bytes, file has 45")
        expect(good + [0], field: nil, "shape [3, 4] of '<f4' needs 48 data bytes, file has 49")
        expect(Array(good.prefix(40)), field: "header length", "header of 118 bytes runs past the end of the 40-byte file")
        expect(Array(good.prefix(9)), field: "header length", "file ends inside the preamble")
        expect(Array(good.prefix(7)), field: "version", "file ends inside the preamble")
        expect([], field: "magic", "not a .npy file (no \\x93NUMPY magic)")
        expect((0..<300).map { _ in UInt8.random(in: 0...0x92) }, field: "magic", "not a .npy file (no \\x93NUMPY magic)")
        var future = good
        future[6] = 4
        expect(future, field: "version", "format version 4.0 is not supported (need 1.0, 2.0 or 3.0)")
        expect(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'extra': 1, }"),
               field: "extra", "unsupported value at byte 75")
        expect(npy("{'descr': '<f4', 'fortran_order': False, }"),
               field: "header", "expected keys descr, fortran_order, shape; found 'descr', 'fortran_order'")
        expect(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }"),
               field: "shape", "unsupported value at byte 61")
        expect(npy("{'descr': '<f4', 'fortran_order': 0, 'shape': (2,), }"),
               field: "fortran_order", "unsupported value at byte 44")
        expect(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,) "),
               field: "shape", "expected ',' or '}' after the value")
        expect(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }"),
               field: "shape", "shape [4294967296, 4294967296] is too large")
        expect(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", data: [UInt8](repeating: 0, count: 8)),
               field: nil, "shape [2, 3] of '<f4' needs 24 data bytes, file has 8")
        expect(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), } trailing"),
               field: "header", "unexpected bytes after the closing '}'")
    }
}

import Foundation
@testable import SeqCellBase
@testable import SeqCellHost
@testable import SeqCellModel
@testable import SeqCellFormats
import SeqCellTestSupport
import XCTest

final class HDF5WrapperTests: TemporaryDirectoryTestCase {
    // MARK: Round trips

    func testAttributesRoundTripOnGroupsAndDatasets() throws {
        let file = path("attrs.h5")
        do {
            let h5 = try H5File(creating: file)
            let group = try h5.root.createGroup("model")
            let dataset = try group.writeDataset("w", shape: [2], floats: [1, 2])
            for object in [group, dataset] as [any H5Object] {
                try object.setAttribute("name", "λ-cell ✓")
                try object.setAttribute("step", 41)
                try object.setAttribute("step", 42)  // replaces
                try object.setAttribute("min", Int(Int64.min))
                try object.setAttribute("lr", 0.001)
                try object.setAttribute("dims", [3, -4, 5])
                try object.setAttribute("betas", [0.9, 0.999])
                try object.setAttribute("names", ["a", "", "ü"])
                try object.setAttribute("none", [Int]())
            }
            try h5.close()
        }
        let h5 = try H5File(opening: file)
        let group = try h5.root.group("model")
        for object in [group, try group.dataset("w")] as [any H5Object] {
            XCTAssertEqual(try object.stringAttribute("name"), "λ-cell ✓")
            XCTAssertEqual(try object.intAttribute("step"), 42)
            XCTAssertEqual(try object.intAttribute("min"), Int(Int64.min))
            XCTAssertEqual(try object.doubleAttribute("lr"), 0.001)
            XCTAssertEqual(try object.doubleAttribute("step"), 42, "integers read as numbers")
            XCTAssertEqual(try object.intArrayAttribute("dims"), [3, -4, 5])
            XCTAssertEqual(try object.intArrayAttribute("step"), [42], "a scalar reads as one element")
            XCTAssertEqual(try object.doubleArrayAttribute("betas"), [0.9, 0.999])
            XCTAssertEqual(try object.stringArrayAttribute("names"), ["a", "", "ü"])
            XCTAssertEqual(try object.intArrayAttribute("none"), [])
            XCTAssertEqual(
                try object.attributeNames(), ["betas", "dims", "lr", "min", "name", "names", "none", "step"])
            XCTAssertTrue(try object.hasAttribute("lr"))
            XCTAssertFalse(try object.hasAttribute("missing"))
        }
    }

    func testDatasetsRoundTrip() throws {
        let file = path("data.h5")
        let weights: [Float] = [0.5, -1.25, 3, .infinity, -0.0, 1e-30]
        do {
            let root = try H5File(creating: file).root
            try root.writeDataset("weights", shape: [2, 3], floats: weights)
            try root.writeDataset("scalar", shape: [], floats: [7.5])
            try root.writeDataset("empty", shape: [0, 4], floats: [])
            _ = try [Float](repeating: 2, count: 4).withUnsafeBufferPointer {
                try root.writeDataset("fromPointer", shape: [4], floats: $0)
            }
            try root.writeDataset("i32", shape: [3], int32s: [.min, 0, .max])
            try root.writeDataset("i64", shape: [1, 2], int64s: [.min, .max])
            try root.writeDataset("rng", shape: [256], bytes: (0...255).map { UInt8($0) })
            try root.writeDataset("vocab", strings: ["", "hello", "ünï😀"])
        }  // released: file closed by deinit

        let root = try H5File(opening: file).root
        let dataset = try root.dataset("weights")
        XCTAssertEqual(dataset.shape, [2, 3])
        XCTAssertEqual(dataset.count, 6)
        XCTAssertEqual(dataset.elementKind, .float32)
        XCTAssertEqual(dataset.path, "/weights")
        XCTAssertEqual(try dataset.readFloats().map(\.bitPattern), weights.map(\.bitPattern))
        var buffer = [Float](repeating: 0, count: 6)
        try buffer.withUnsafeMutableBufferPointer { try dataset.readFloats(into: $0) }
        XCTAssertEqual(buffer.map(\.bitPattern), weights.map(\.bitPattern))

        let scalar = try root.dataset("scalar")
        XCTAssertEqual(scalar.shape, [])
        XCTAssertEqual(try scalar.readFloats(), [7.5])
        let empty = try root.dataset("empty")
        XCTAssertEqual(empty.shape, [0, 4])
        XCTAssertEqual(try empty.readFloats(), [])
        XCTAssertEqual(try root.dataset("fromPointer").readFloats(), [2, 2, 2, 2])

        let int32s = try root.dataset("i32")
        XCTAssertEqual(int32s.elementKind, .signedInteger(bytes: 4))
        XCTAssertEqual(try int32s.readInt32s(), [.min, 0, .max])
        XCTAssertEqual(try int32s.readInt64s(), [Int64(Int32.min), 0, Int64(Int32.max)])
        let int64s = try root.dataset("i64")
        XCTAssertEqual(int64s.elementKind, .signedInteger(bytes: 8))
        XCTAssertEqual(int64s.shape, [1, 2])
        XCTAssertEqual(try int64s.readInt64s(), [.min, .max])
        let rng = try root.dataset("rng")
        XCTAssertEqual(rng.elementKind, .unsignedInteger(bytes: 1))
        XCTAssertEqual(try rng.readBytes(), (0...255).map { UInt8($0) })
        let vocab = try root.dataset("vocab")
        XCTAssertEqual(vocab.elementKind, .string)
        XCTAssertEqual(try vocab.readStrings(), ["", "hello", "ünï😀"])
    }

    func testGroupNavigation() throws {
        let h5 = try H5File(creating: path("groups.h5"))
        let root = try h5.root
        let layers = try root.createGroup("model").createGroup("layers")
        let layer = try layers.createGroup("00")
        XCTAssertEqual(layer.path, "/model/layers/00")
        try layers.createGroup("b")
        try layers.createGroup("a")
        try layers.writeDataset("c", shape: [1], floats: [0])

        XCTAssertEqual(try root.group("model/layers/00").path, "/model/layers/00")
        XCTAssertEqual(try layer.group("/model").path, "/model", "absolute paths resolve from the root")
        XCTAssertEqual(try layers.memberNames(), ["00", "a", "b", "c"])
        XCTAssertEqual(try layer.memberNames(), [])
        XCTAssertTrue(root.contains("model/layers/00"))
        XCTAssertTrue(root.contains("/model"))
        XCTAssertFalse(root.contains("model/nope/deeper"))
        XCTAssertFalse(root.contains("model/layers/c/inside"))
        XCTAssertTrue(layers.isGroup("a"))
        XCTAssertFalse(layers.isGroup("c"))
        XCTAssertTrue(layers.isDataset("c"))
        XCTAssertFalse(layers.isDataset("a"))
        XCTAssertFalse(layers.isDataset("missing"))
    }

    // MARK: Interop with h5py

    func testReadsFileWrittenByH5py() throws {
        let file = path("h5py.h5")
        _ = try runPython(
            """
            import sys, h5py, numpy as np
            with h5py.File(sys.argv[1], 'w') as f:
                g = f.create_group('model')
                g.attrs['name'] = 'lstm ✓'
                g.attrs['fixed'] = np.bytes_(b'fixed bytes')
                g.attrs['fixed_list'] = np.array([b'ab', b'cde'])
                g.attrs['vlen_list'] = ['x', 'yz']
                g.attrs['i32'] = np.int32(-7)
                g.attrs['i64'] = np.int64(1 << 40)
                g.attrs['u8'] = np.uint8(200)
                g.attrs['f64'] = np.float64(0.125)
                g.attrs['f32'] = np.float32(1.5)
                g.attrs['one'] = np.array([5], dtype=np.int16)
                g.attrs['ints'] = np.array([1, 2, 3], dtype=np.int32)
                g.create_dataset('f32', data=(np.arange(6, dtype='f4') / 4).reshape(2, 3))
                g.create_dataset('f64', data=np.array([[1.5, -2.25]], dtype='f8'))
                g.create_dataset('f16', data=np.array([0.5, 2.0], dtype='f2'))
                g.create_dataset('i32', data=np.array([-1, 2], dtype='i4'))
                g.create_dataset('gzip', data=np.ones((4, 4), 'f4'), chunks=(2, 2), compression='gzip')
                g.create_dataset('strs', data=['a', 'β'], dtype=h5py.string_dtype())
                g.create_dataset('scalar', data=np.float64(3.25))
            """, [file])

        let model = try H5File(opening: file).root.group("model")
        XCTAssertEqual(try model.stringAttribute("name"), "lstm ✓")
        XCTAssertEqual(try model.stringAttribute("fixed"), "fixed bytes")
        XCTAssertEqual(try model.stringArrayAttribute("fixed_list"), ["ab", "cde"])
        XCTAssertEqual(try model.stringArrayAttribute("vlen_list"), ["x", "yz"])
        XCTAssertEqual(try model.intAttribute("i32"), -7)
        XCTAssertEqual(try model.intAttribute("i64"), 1 << 40)
        XCTAssertEqual(try model.intAttribute("u8"), 200)
        XCTAssertEqual(try model.doubleAttribute("f64"), 0.125)
        XCTAssertEqual(try model.doubleAttribute("f32"), 1.5)
        XCTAssertEqual(try model.doubleAttribute("i32"), -7)
        XCTAssertEqual(try model.intAttribute("one"), 5)
        XCTAssertEqual(try model.intArrayAttribute("ints"), [1, 2, 3])
        XCTAssertEqual(try model.doubleArrayAttribute("ints"), [1, 2, 3])

        let f32 = try model.dataset("f32")
        XCTAssertEqual(f32.shape, [2, 3])
        XCTAssertEqual(try f32.readFloats(), [0, 0.25, 0.5, 0.75, 1, 1.25])
        let f64 = try model.dataset("f64")
        XCTAssertEqual(f64.elementKind, .float64)
        XCTAssertEqual(f64.shape, [1, 2])
        XCTAssertEqual(try f64.readFloats(), [1.5, -2.25])
        let f16 = try model.dataset("f16")
        XCTAssertEqual(f16.elementKind, .otherFloat(bytes: 2))
        XCTAssertEqual(try f16.readFloats(), [0.5, 2])
        XCTAssertEqual(try model.dataset("i32").readInt32s(), [-1, 2])
        XCTAssertEqual(try model.dataset("gzip").readFloats(), [Float](repeating: 1, count: 16))
        XCTAssertEqual(try model.dataset("strs").readStrings(), ["a", "β"])
        XCTAssertEqual(try model.dataset("scalar").shape, [])
        XCTAssertEqual(try model.dataset("scalar").readFloats(), [3.25])
    }

    func testH5pyReadsFileWrittenByWrapper() throws {
        let file = path("wrapper.h5")
        try writeHDF5Atomically(to: file) { h5 in
            let model = try h5.root.createGroup("model")
            try model.setAttribute("name", "gru ✓")
            try model.setAttribute("step", 1234)
            try model.setAttribute("lr", 0.5)
            try model.setAttribute("dims", [4, 8])
            try model.setAttribute("betas", [0.25, 0.75])
            try model.setAttribute("names", ["in", "ütf"])
            let weights = try model.writeDataset("w", shape: [2, 3], floats: [1, 2, 3, 4, 5, 6.5])
            try weights.setAttribute("role", "weight_ih")
            try model.writeDataset("i32", shape: [2], int32s: [-5, 7])
            try model.writeDataset("i64", shape: [], int64s: [1 << 50])
            try model.writeDataset("rng", shape: [3], bytes: [0, 128, 255])
            try model.writeDataset("vocab", strings: ["a", "β"])
        }

        struct Report: Decodable, Equatable {
            var nameType, name, roleType, role: String
            var namesTypes, names: [String]
            var step: Int
            var stepDtype: String
            var lr: Double
            var dims: [Int]
            var betas: [Double]
            var w: [[Float]]
            var wDtype: String
            var contiguous: Bool
            var compression: String?
            var i32: [Int]
            var i64: Int
            var rng: [Int]
            var rngDtype: String
            var vocab: [String]
        }
        let report = try decodePython(
            Report.self,
            """
            import sys, json, h5py
            with h5py.File(sys.argv[1], 'r') as f:
                g = f['model']
                w = g['w']
                print(json.dumps({
                    'nameType': type(g.attrs['name']).__name__, 'name': g.attrs['name'],
                    'roleType': type(w.attrs['role']).__name__, 'role': w.attrs['role'],
                    'namesTypes': [type(x).__name__ for x in g.attrs['names']],
                    'names': list(g.attrs['names']),
                    'step': int(g.attrs['step']), 'stepDtype': str(g.attrs['step'].dtype),
                    'lr': float(g.attrs['lr']),
                    'dims': g.attrs['dims'].tolist(), 'betas': g.attrs['betas'].tolist(),
                    'w': w[()].tolist(), 'wDtype': str(w.dtype),
                    'contiguous': w.id.get_create_plist().get_layout() == h5py.h5d.CONTIGUOUS,
                    'compression': w.compression,
                    'i32': g['i32'][()].tolist(), 'i64': int(g['i64'][()]),
                    'rng': g['rng'][()].tolist(), 'rngDtype': str(g['rng'].dtype),
                    'vocab': g['vocab'].asstr()[()].tolist(),
                }))
            """, [file])
        XCTAssertEqual(
            report,
            Report(
                nameType: "str", name: "gru ✓", roleType: "str", role: "weight_ih",
                namesTypes: ["str", "str"], names: ["in", "ütf"],
                step: 1234, stepDtype: "int64", lr: 0.5, dims: [4, 8], betas: [0.25, 0.75],
                w: [[1, 2, 3], [4, 5, 6.5]], wDtype: "float32", contiguous: true, compression: nil,
                i32: [-5, 7], i64: 1 << 50, rng: [0, 128, 255], rngDtype: "uint8", vocab: ["a", "β"]))
    }

    // MARK: Errors

    func testOpeningMissingFileThrowsNotFound() throws {
        let file = path("missing.h5")
        let error = assertThrows(HDF5Error.self, try H5File(opening: file))
        XCTAssertEqual(error?.code, .notFound)
        XCTAssertEqual(error?.description, "cannot open file '\(file)': no such file")
    }

    func testOpeningNonHDF5FileThrows() throws {
        let file = path("random.h5")
        XCTAssertTrue(FileManager.default.createFile(atPath: file, contents: Data((0..<4096).map { _ in UInt8.random(in: 0...255) })))
        let error = assertThrows(HDF5Error.self, try H5File(opening: file))
        XCTAssertEqual(error?.code, .notHDF5)
        XCTAssertEqual(error?.filePath, file)
        XCTAssertEqual(error?.description.hasPrefix("cannot open file '\(file)': not an HDF5 file"), true, "\(String(describing: error))")
    }

    func testOpeningTruncatedHDF5FileThrows() throws {
        let file = path("truncated.h5")
        do {
            let root = try H5File(creating: file).root
            try root.writeDataset("w", shape: [4096], floats: [Float](repeating: 1, count: 4096))
        }
        let size = try XCTUnwrap(FileManager.default.attributesOfItem(atPath: file)[.size] as? Int)
        XCTAssertEqual(truncate(file, off_t(size / 2)), 0)
        let error = assertThrows(HDF5Error.self, try H5File(opening: file))
        XCTAssertEqual(error?.code, .damaged)
        XCTAssertEqual(error?.filePath, file)
        XCTAssertTrue(error?.description.contains("'\(file)'") == true)
        XCTAssertTrue(error?.description.contains("truncated") == true, "\(String(describing: error))")
    }

    func testMissingObjectsNameTheFileAndPath() throws {
        let file = path("sparse.h5")
        let model = try H5File(creating: file).root.createGroup("model")

        let group = assertThrows(HDF5Error.self, try model.group("layers/00"))
        XCTAssertEqual(group?.code, .notFound)
        XCTAssertEqual(group?.description, "cannot open group '/model/layers/00' in '\(file)': no such group")
        let dataset = assertThrows(HDF5Error.self, try model.dataset("weight_ih"))
        XCTAssertEqual(dataset?.code, .notFound)
        XCTAssertEqual(dataset?.description, "cannot open dataset '/model/weight_ih' in '\(file)': no such dataset")
        let attribute = assertThrows(HDF5Error.self, try model.intAttribute("step"))
        XCTAssertEqual(attribute?.code, .notFound)
        XCTAssertEqual(attribute?.description, "cannot read attribute '/model@step' in '\(file)': no such attribute")
    }

    func testWrongTypesNameTheObjectAndBothTypes() throws {
        let file = path("types.h5")
        let root = try H5File(creating: file).root
        let ints = try root.writeDataset("ints", shape: [2], int32s: [1, 2])
        let floats = try root.writeDataset("floats", shape: [2], floats: [1, 2])
        let words = try root.writeDataset("words", strings: ["a"])
        try root.createGroup("group")
        try root.setAttribute("name", "x")
        try root.setAttribute("lr", 0.5)
        try root.setAttribute("dims", [1, 2])

        func expectWrongType(_ body: @autoclosure () throws -> Any, _ description: String, line: UInt = #line) {
            let error = assertThrows(HDF5Error.self, try body(), line: line)
            XCTAssertEqual(error?.code, .wrongType, line: line)
            XCTAssertEqual(error?.description, description, line: line)
        }
        let at = "in '\(file)'"
        expectWrongType(try ints.readFloats(), "cannot read dataset '/ints' \(at): expected floating-point data, found int32")
        expectWrongType(try words.readFloats(), "cannot read dataset '/words' \(at): expected floating-point data, found string")
        expectWrongType(try floats.readInt32s(), "cannot read dataset '/floats' \(at): expected integer data, found float32")
        expectWrongType(try ints.readBytes(), "cannot read dataset '/ints' \(at): expected uint8 data, found int32")
        expectWrongType(try floats.readStrings(), "cannot read dataset '/floats' \(at): expected string data, found float32")
        expectWrongType(try root.intAttribute("name"), "cannot read attribute '/@name' \(at): expected an integer, found string")
        expectWrongType(try root.intAttribute("lr"), "cannot read attribute '/@lr' \(at): expected an integer, found float64")
        expectWrongType(try root.doubleAttribute("name"), "cannot read attribute '/@name' \(at): expected a number, found string")
        expectWrongType(try root.stringAttribute("lr"), "cannot read attribute '/@lr' \(at): expected a string, found float64")
        expectWrongType(try root.intAttribute("dims"), "cannot read attribute '/@dims' \(at): expected an integer, found shape [2] of int64")
        expectWrongType(try root.group("ints"), "cannot open group '/ints' \(at): expected a group, found a dataset")
        expectWrongType(try root.dataset("group"), "cannot open dataset '/group' \(at): expected a dataset, found a group")

        var three = [Float](repeating: 0, count: 3)
        let short = assertThrows(HDF5Error.self, try three.withUnsafeMutableBufferPointer { try floats.readFloats(into: $0) })
        XCTAssertEqual(short?.code, .invalidArgument)
        XCTAssertEqual(short?.description, "cannot read dataset '/floats' \(at): buffer holds 3 floats, dataset has 2")
        let shape = assertThrows(HDF5Error.self, try root.writeDataset("bad", shape: [2, 2], floats: [1, 2, 3]))
        XCTAssertEqual(shape?.code, .invalidArgument)
        XCTAssertEqual(shape?.description, "cannot create dataset '/bad' \(at): shape [2, 2] holds 4 elements, data has 3")
    }

    func testClosedFileThrowsInsteadOfCrashing() throws {
        let h5 = try H5File(creating: path("closed.h5"))
        try h5.close()
        try h5.close()  // closing twice does nothing
        let error = assertThrows(HDF5Error.self, try h5.root)
        XCTAssertEqual(error?.code, .library)
        XCTAssertEqual(error?.objectPath, "/")
    }

    /// HDF5 prints its error stack to stderr unless told not to, per thread; the wrapper must
    /// keep every thread quiet.
    func testFailuresPrintNothingToStderr() throws {
        let captured = path("stderr.txt")
        let missing = path("missing.h5")
        let garbage = path("garbage.h5")
        XCTAssertTrue(FileManager.default.createFile(atPath: garbage, contents: Data(repeating: 7, count: 2048)))
        let existing = path("existing.h5")
        _ = try H5File(creating: existing).root.writeDataset("d", shape: [1], floats: [0])
        @Sendable func fail() {
            _ = try? H5File(opening: missing)
            _ = try? H5File(opening: garbage)
            guard let root = try? H5File(opening: existing).root else { return }
            _ = try? root.createGroup("g")  // read-only file
            _ = root.contains("d/inside")  // H5Lexists fails below a dataset
            _ = try? root.dataset("d").readFloats(into: .init(start: nil, count: 0))
        }

        fflush(nil)  // all C streams, stderr included
        let saved = dup(STDERR_FILENO)
        let sink = open(captured, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        dup2(sink, STDERR_FILENO)
        fail()
        let done = DispatchSemaphore(value: 0)
        Thread {
            fail()
            done.signal()
        }.start()
        done.wait()
        fflush(nil)  // all C streams, stderr included
        dup2(saved, STDERR_FILENO)
        close(saved)
        close(sink)

        XCTAssertEqual(try String(contentsOfFile: captured, encoding: .utf8), "")
    }

    // MARK: Atomic writes

    func testAtomicWriteCreatesFileAndLeavesNoTemporary() throws {
        let file = path("ckpt.h5")
        try writeHDF5Atomically(to: file) { try $0.root.setAttribute("version", 1) }
        try writeHDF5Atomically(to: file) { try $0.root.setAttribute("version", 2) }
        XCTAssertEqual(try H5File(opening: file).root.intAttribute("version"), 2)
        XCTAssertEqual(try directoryContents(), ["ckpt.h5"])
    }

    func testAtomicWriteKeepsTargetWhenBodyThrows() throws {
        struct Interrupted: Error {}
        let file = path("ckpt.h5")
        try writeHDF5Atomically(to: file) { try $0.root.setAttribute("version", 1) }
        XCTAssertThrowsError(
            try writeHDF5Atomically(to: file) { h5 in
                try h5.root.setAttribute("version", 2)
                try h5.root.writeDataset("w", shape: [3], floats: [1, 2, 3])
                throw Interrupted()
            }
        ) { XCTAssertTrue($0 is Interrupted) }
        let root = try H5File(opening: file).root
        XCTAssertEqual(try root.intAttribute("version"), 1)
        XCTAssertFalse(root.contains("w"))
        XCTAssertEqual(try directoryContents(), ["ckpt.h5"])
    }

    func testAtomicWriteReportsPOSIXFailureAndRemovesTemporary() throws {
        let target = path("occupied")
        try FileManager.default.createDirectory(atPath: target + "/inside", withIntermediateDirectories: true)
        let error = assertThrows(HDF5Error.self, try writeHDF5Atomically(to: target) { try $0.root.setAttribute("v", 1) })
        XCTAssertEqual(error?.code, .system)
        XCTAssertEqual(error?.filePath, target)
        XCTAssertEqual(error?.description, "cannot write '\(target)': is a directory", "the target, not the temporary file")
        XCTAssertTrue(error?.cause is POSIXError)
        XCTAssertEqual(try directoryContents(), ["occupied"])
    }
}

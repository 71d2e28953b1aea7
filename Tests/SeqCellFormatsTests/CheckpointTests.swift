import Foundation
import XCTest
@testable import SeqCellBase
@testable import SeqCellHost
@testable import SeqCellModel
@testable import SeqCellFormats
import SeqCellTestSupport

/// The checkpoint format: round trips, files written by h5py alone, every way a file can be
/// wrong, atomic saves, swap and compose.
final class CheckpointTests: TemporaryDirectoryTestCase {
    var dir: String { directory.path }

    var builtInCells: [String] { requiredBuiltInCells() }

    func assertRoundTrip(_ model: Model, _ what: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let p = path("rt.h5")
        try Checkpoint(model: model).save(to: p)
        let loaded = try Checkpoint.load(from: p, registry: testRegistry).model
        XCTAssertEqual(loaded.namedParameters.map(\.path), model.namedParameters.map(\.path), what, file: file, line: line)
        XCTAssertEqual(loaded.namedParameters.map(\.value), model.namedParameters.map(\.value), "\(what): parameters differ", file: file, line: line)
        for (a, b) in zip(loaded.layers, model.layers) {
            XCTAssertEqual(a.direction, b.direction, what, file: file, line: line)
            XCTAssertEqual(a.mergeMode, b.mergeMode, what, file: file, line: line)
            XCTAssertEqual(a.cells.map { $0.cell.options }, b.cells.map { $0.cell.options }, what, file: file, line: line)
        }
        var rng = SplitMix64(seed: 5)
        let x = rng.uniformTensor([5, 3, model.inputSize], scale: 1)
        let lengths: [Int32] = [5, 3, 2]
        let a = try model.forward(input: x, lengths: lengths)
        let b = try loaded.forward(input: x, lengths: lengths)
        XCTAssertEqual(a.output, b.output, "\(what): outputs differ after reload", file: file, line: line)
        XCTAssertEqual(a.finalStates, b.finalStates, "\(what): final states differ after reload", file: file, line: line)
    }

    func testRoundTripEveryCellDirectionAndDepth() throws {
        var seed: UInt64 = 0
        for id in builtInCells {
            let optionSets: [[String: String]] = switch id {
            case "rnn": [[:], ["activation": "relu"]]
            case "lstm": [[:], ["proj_size": "2"]]
            case "gru": [[:], ["reset": "before"]]
            default: [[:]]
            }
            for options in optionSets {
                for direction in Direction.allCases {
                    for depth in 1...3 {
                        seed += 1
                        let merge = MergeMode.allCases[Int(seed) % 4]
                        let specs = (0..<depth).map { _ in
                            LayerSpec(cell: id, hiddenSize: 3, direction: direction, mergeMode: merge, options: options)
                        }
                        let model = try Model.build(inputSize: 2, layers: specs, head: depth == 2 ? HeadSpec(outputSize: 2, activation: .tanh) : nil,
                                                    registry: testRegistry, seed: seed)
                        try assertRoundTrip(model, "\(id) \(options) \(direction) depth \(depth)")
                    }
                }
            }
        }
    }

    func testRoundTripTheCSampleCellInEveryDirectionAndDepth() throws {
        let registry = PluginRegistry()
        let mgu = try buildMGU(in: try temporaryFolder())
        XCTAssertEqual(try registry.loadOrThrow(file: mgu).map(\.id), ["mgu"])
        registry.load(path: buildProductsDir)
        for direction in Direction.allCases {
            for depth in 1...3 {
                let specs = (0..<depth).map { k in
                    LayerSpec(cell: "mgu", hiddenSize: 3, direction: direction, mergeMode: .sum,
                              backwardCell: direction == .bidirectional && k == 1 ? "rnn" : nil)
                }
                let model = try Model.build(inputSize: 2, layers: specs, registry: registry, seed: UInt64(depth))
                let p = path("mgu.h5")
                try Checkpoint(model: model).save(to: p)
                let loaded = try Checkpoint.load(from: p, registry: registry).model
                XCTAssertEqual(loaded.namedParameters.map(\.value), model.namedParameters.map(\.value))
                var rng = SplitMix64(seed: 2)
                let x = rng.uniformTensor([4, 2, 2], scale: 1)
                XCTAssertEqual(try loaded.forward(input: x, lengths: [4, 2]).output, try model.forward(input: x, lengths: [4, 2]).output,
                               "mgu \(direction) depth \(depth)")
            }
        }
        // Without the plugin, loading names the cell and where it looked.
        let p = path("mgu.h5")
        XCTAssertThrowsError(try Checkpoint.load(from: p, registry: testRegistry)) { e in
            XCTAssert("\(e)".contains("no plugin provides cell 'mgu'") && "\(e)".contains("searched"), "\(e)")
        }
    }

    func testRoundTripMixedCellsAndTrainingState() throws {
        let cells = builtInCells
        let specs = [
            LayerSpec(cell: cells[0], hiddenSize: 4, direction: .bidirectional, mergeMode: .concat, backwardCell: cells.last!, backwardHiddenSize: 3),
            LayerSpec(cell: cells.last!, hiddenSize: 5, direction: .reverse),
        ]
        let model = try Model.build(inputSize: 3, layers: specs, head: HeadSpec(outputSize: 2), registry: testRegistry, seed: 9)
        try assertRoundTrip(model, "mixed")
        var rng = SplitMix64(seed: 3)
        let slots = Dictionary(uniqueKeysWithValues: model.namedParameters.map { ($0.path, rng.uniformTensor($0.value.shape, scale: 1)) })
        let training = TrainingState(step: 17, optimizer: "adam", config: #"{"lr":0.01}"#, rng: [1, 2, 3, 250], slots: ["m": slots, "v": slots])
        let p = path("train.h5")
        try Checkpoint(model: model, training: training).save(to: p)
        let loaded = try Checkpoint.load(from: p, registry: testRegistry)
        XCTAssertEqual(loaded.training, training)
    }

    // MARK: h5py and h5dump interop

    func testCheckpointWrittenWithH5pyAloneLoadsAndMatchesNumpy() throws {
        guard (try? testRegistry.cellType("gru")) != nil, (try? testRegistry.cellType("lstm")) != nil else {
            XCTFail("the gru and lstm plugins are needed: build the package first (swift build)")
            return
        }
        let script = fixturePath("h5py_checkpoint.py")
        let ckpt = path("hand.h5"), expected = path("expected.h5")
        try runProcess("/usr/bin/env", ["python3", script, ckpt, expected])
        let model = try Checkpoint.load(from: ckpt, registry: testRegistry).model
        let e = try H5File(opening: expected).root
        let x = try e.dataset("input")
        let input = Tensor(shape: x.shape, data: try x.readFloats())
        let lengths = try e.dataset("lengths").readInt32s()
        let out = try e.dataset("output")
        let y = try model.forward(input: input, lengths: lengths)
        assertClose(y.output, Tensor(shape: out.shape, data: try out.readFloats()), tol: 1e-5, "numpy reference")
    }

    func testH5pyAndH5dumpReadSeqCellCheckpoints() throws {
        let model = try Model.build(inputSize: 2, layers: [LayerSpec(cell: "rnn", hiddenSize: 3, direction: .bidirectional, mergeMode: .sum)],
                                    head: HeadSpec(outputSize: 1), registry: testRegistry, seed: 1)
        let p = path("m.h5")
        try Checkpoint(model: model).save(to: p)
        let code = """
            import h5py, json, sys
            f = h5py.File(sys.argv[1], "r")
            d = f["model/layers/00/forward"]
            print(json.dumps({
              "format": f.attrs["format"], "format_type": type(f.attrs["format"]).__name__,
              "version": [int(v) for v in f.attrs["format_version"]],
              "cell": d.attrs["cell"], "cell_type": type(d.attrs["cell"]).__name__,
              "activation": d["options"].attrs["activation"],
              "dtype": str(d["weight_ih"].dtype), "shape": list(d["weight_ih"].shape),
              "w0": float(d["weight_ih"][0, 0]), "gates": d["weight_ih"].attrs["gate_order"]}))
            """
        let out = try runProcess("/usr/bin/env", ["python3", "-c", code, p])
        let json = try JSONSerialization.jsonObject(with: Data(out.utf8)) as! [String: Any]
        XCTAssertEqual(json["format"] as? String, "seqcell-checkpoint")
        XCTAssertEqual(json["format_type"] as? String, "str", "h5py must read SeqCell strings as str")
        XCTAssertEqual(json["cell_type"] as? String, "str")
        XCTAssertEqual(json["version"] as? [Int], [1, 0])
        XCTAssertEqual(json["cell"] as? String, "rnn")
        XCTAssertEqual(json["activation"] as? String, "tanh")
        XCTAssertEqual(json["dtype"] as? String, "float32")
        XCTAssertEqual(json["shape"] as? [Int], [3, 2])
        XCTAssertEqual(json["w0"] as? Double, Double(model.layers[0].cells[0].params[0].data[0]))
        let dump = try runProcess("/usr/bin/env", ["h5dump", "-A", p])
        XCTAssert(dump.contains("seqcell-checkpoint") && dump.contains("weight_ih"), "h5dump output: \(dump.prefix(400))")
    }

    // MARK: Bad files

    func goodCheckpoint() throws -> String {
        let p = path("good.h5")
        let model = try Model.build(inputSize: 2, layers: [LayerSpec(cell: "rnn", hiddenSize: 3)], registry: testRegistry, seed: 2)
        try Checkpoint(model: model).save(to: p)
        return p
    }

    /// Loads `p` expecting an error whose text contains every fragment.
    func assertLoadFails(_ p: String, _ fragments: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try Checkpoint.load(from: p, registry: testRegistry), file: file, line: line) { e in
            for f in fragments { XCTAssert("\(e)".contains(f), "expected '\(f)' in: \(e)", file: file, line: line) }
        }
    }

    /// Edits a copy of the good checkpoint with h5py.
    func edited(_ name: String, _ python: String) throws -> String {
        let p = path(name)
        try FileManager.default.copyItem(atPath: try goodCheckpoint(), toPath: p)
        try runProcess("/usr/bin/env", ["python3", "-c", "import h5py, numpy as np, sys\nf = h5py.File(sys.argv[1], 'r+')\n" + python, p])
        return p
    }

    func testNotHDF5AndTruncatedFilesAreClearErrors() throws {
        let junk = path("junk.h5")
        try Data("this is not an HDF5 file at all".utf8).write(to: URL(fileURLWithPath: junk))
        assertLoadFails(junk, ["junk.h5", "not an HDF5 file"])
        assertLoadFails(path("missing.h5"), ["missing.h5"])
        let good = try goodCheckpoint()
        let data = try Data(contentsOf: URL(fileURLWithPath: good))
        for fraction in [0.25, 0.5, 0.9] {
            let cut = path("cut\(fraction).h5")
            try data.prefix(Int(Double(data.count) * fraction)).write(to: URL(fileURLWithPath: cut))
            assertLoadFails(cut, ["cut\(fraction).h5"])
        }
    }

    func testBitFlipsNeverCrash() throws {
        let good = try goodCheckpoint()
        let data = try Data(contentsOf: URL(fileURLWithPath: good))
        var rng = SplitMix64(seed: 77)
        var failures = 0
        for i in 0..<40 {
            var bytes = [UInt8](data)
            for _ in 0..<4 {
                let at = Int(rng.next() % UInt64(bytes.count))
                bytes[at] ^= UInt8(1 << (rng.next() % 8))
            }
            let p = path("flip\(i).h5")
            try Data(bytes).write(to: URL(fileURLWithPath: p))
            do {
                _ = try Checkpoint.load(from: p, registry: testRegistry)
            } catch {
                failures += 1
                XCTAssert("\(error)".contains("flip\(i).h5"), "error does not name the file: \(error)")
            }
        }
        // Flips that land in float data load fine; the rest must be errors, not crashes.
        XCTAssertGreaterThan(failures, 0, "no flipped file was rejected: the checks are not reading the structure")
    }

    func testSchemaErrorsNameTheObject() throws {
        assertLoadFails(try edited("noformat.h5", "del f.attrs['format']"), ["not a SeqCell checkpoint"])
        assertLoadFails(try edited("v2.h5", "f.attrs['format_version'] = np.array([2, 0])"),
                        ["format 2.0", "reads format 1.x", "newer SeqCell"])
        assertLoadFails(try edited("nodata.h5", "del f['model/layers/00/forward/weight_hh']"),
                        ["/model/layers/00/forward", "weight_hh", "missing"])
        assertLoadFails(try edited("f64.h5", "w = f['model/layers/00/forward/weight_ih'][...]\ndel f['model/layers/00/forward/weight_ih']\nf['model/layers/00/forward/weight_ih'] = w.astype('float64')"),
                        ["/model/layers/00/forward/weight_ih", "float64", "float32"])
        assertLoadFails(try edited("shape.h5", "del f['model/layers/00/forward/bias_ih']\nf['model/layers/00/forward/bias_ih'] = np.zeros(5, dtype='float32')"),
                        ["/model/layers/00/forward/bias_ih", "[5]", "expected [3]"])
        assertLoadFails(try edited("noattr.h5", "del f['model/layers/00/forward'].attrs['hidden_size']"),
                        ["/model/layers/00/forward", "hidden_size"])
        assertLoadFails(try edited("nocell.h5", "f['model/layers/00/forward'].attrs['cell'] = 'nosuchcell'"),
                        ["/model/layers/00/forward", "no plugin provides cell 'nosuchcell'", "searched"])
        assertLoadFails(try edited("opt.h5", "f['model/layers/00/forward/options'].attrs['activation'] = 'swish'"),
                        ["/model/layers/00/forward", "activation", "swish"])
        assertLoadFails(try edited("unknownopt.h5", "f['model/layers/00/forward/options'].attrs['colour'] = 'red'"),
                        ["has no option 'colour'"])
        assertLoadFails(try edited("cellmajor.h5", "f['model/layers/00/forward'].attrs['cell_version'] = '2.0.0'"),
                        ["cell 'rnn'", "needs 2.0"])
        assertLoadFails(try edited("dir.h5", "f['model/layers/00'].attrs['direction'] = 'sideways'"),
                        ["/model/layers/00", "sideways"])
        assertLoadFails(try edited("layers.h5", "f['model'].attrs['num_layers'] = 2"),
                        ["num_layers is 2"])
        assertLoadFails(try edited("extra.h5", "f['model/layers/00/forward/weight_hr'] = np.zeros((3, 3), dtype='float32')"),
                        ["unexpected 'weight_hr'"])
    }

    func testNewerMinorVersionWithUnknownExtrasLoads() throws {
        let p = try edited("minor.h5", "f.attrs['format_version'] = np.array([1, 7])\nf.attrs['future'] = 'x'\nf.create_group('future_group')\nf['model'].attrs['future_attr'] = 3")
        let c = try Checkpoint.load(from: p, registry: testRegistry)
        XCTAssertEqual(c.formatVersion, [1, 7])
    }

    // MARK: Atomic save

    func testFailedSaveLeavesThePreviousFileIntact() throws {
        let good = try goodCheckpoint()
        let before = try Data(contentsOf: URL(fileURLWithPath: good))
        XCTAssertThrowsError(try writeHDF5Atomically(to: good) { file in
            try file.root.setAttribute("format", "half-written")
            throw SeqCellError(.io, "simulated failure mid-save")
        })
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: good)), before)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.contains(".tmp") }
        XCTAssertEqual(leftovers, [], "temporary files left behind")
    }

    func testKillingASavingProcessLeavesThePreviousCheckpointLoadable() throws {
        let cli = (buildProductsDir as NSString).appendingPathComponent("seqcell")
        guard FileManager.default.isExecutableFile(atPath: cli) else {
            XCTFail("\(cli) not found: build the package first (swift build)")
            return
        }
        let target = path("model.h5")
        let original = try Model.build(inputSize: 2, layers: [LayerSpec(cell: "rnn", hiddenSize: 3)], registry: testRegistry, seed: 4)
        try Checkpoint(model: original).save(to: target)
        let before = try Data(contentsOf: URL(fileURLWithPath: target))
        // A model of about 120 MB takes long enough to write that the kill lands mid-save.
        var killedMidWrite = 0
        for attempt in 0..<3 {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: cli)
            p.arguments = ["new", "--input-size", "2000", "--layer", "rnn:5000", "--seed", "\(attempt)", "-o", target]
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            let deadline = Date().addingTimeInterval(60)
            var sawTemp = false
            while Date() < deadline, p.isRunning {
                let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
                if let tmp = names.first(where: { $0.hasPrefix(".model.h5.tmp") }),
                   let size = (try? FileManager.default.attributesOfItem(atPath: path(tmp))[.size] as? Int), size > 1_000_000 {
                    sawTemp = true
                    kill(p.processIdentifier, SIGKILL)
                    break
                }
                usleep(2_000)
            }
            p.waitUntilExit()
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: target)), before, "attempt \(attempt): the checkpoint changed")
            let reloaded = try Checkpoint.load(from: target, registry: testRegistry).model
            XCTAssertEqual(reloaded.namedParameters.map(\.value), original.namedParameters.map(\.value))
            if sawTemp && p.terminationReason == .uncaughtSignal { killedMidWrite += 1 }
            for name in try FileManager.default.contentsOfDirectory(atPath: dir) where name.contains(".tmp") {
                try FileManager.default.removeItem(atPath: path(name))
            }
        }
        XCTAssertGreaterThan(killedMidWrite, 0, "never managed to kill the process while it was writing")
    }

    // MARK: Swap and compose

    func testSwapKeepsOtherLayersAndMatchesLayersRunByHand() throws {
        let cells = builtInCells
        let base = try Model.build(inputSize: 3, layers: [LayerSpec(cell: cells[0], hiddenSize: 4), LayerSpec(cell: cells[0], hiddenSize: 4, direction: .reverse),
                                                          LayerSpec(cell: cells[0], hiddenSize: 2)],
                                   head: HeadSpec(outputSize: 1), registry: testRegistry, seed: 1)
        let fresh = try Model.freshLayer(LayerSpec(cell: cells.last!, hiddenSize: 4, direction: .bidirectional, mergeMode: .ave),
                                         inputSize: 4, registry: testRegistry, seed: 2)
        let swapped = try base.replacingLayer(1, with: fresh)
        let p = path("swapped.h5")
        try Checkpoint(model: swapped).save(to: p)
        let loaded = try Checkpoint.load(from: p, registry: testRegistry).model
        XCTAssertEqual(loaded.layers[0].cells[0].params, base.layers[0].cells[0].params)
        XCTAssertEqual(loaded.layers[2].cells[0].params, base.layers[2].cells[0].params)
        XCTAssertEqual(loaded.head!.weight, base.head!.weight)
        var rng = SplitMix64(seed: 8)
        let x = rng.uniformTensor([4, 2, 3], scale: 1)
        let h0 = try base.layers[0].forward(input: x).output
        let h1 = try fresh.forward(input: h0).output
        let h2 = try base.layers[2].forward(input: h1).output
        XCTAssertEqual(try loaded.forward(input: x).output, try base.head!.forward(h2))
        XCTAssertThrowsError(try base.replacingLayer(1, with: try Model.freshLayer(LayerSpec(cell: "rnn", hiddenSize: 5), inputSize: 4,
                                                                                      registry: testRegistry, seed: 3))) { e in
            XCTAssert("\(e)".contains("outputs 5 features but layer 2 takes 4"), "\(e)")
        }
    }

    func testComposeChainsLayersFromSeveralFilesWithChecks() throws {
        let cells = builtInCells
        let a = try Model.build(inputSize: 3, layers: [LayerSpec(cell: cells[0], hiddenSize: 4), LayerSpec(cell: cells.last!, hiddenSize: 5)],
                                registry: testRegistry, seed: 1)
        let b = try Model.build(inputSize: 5, layers: [LayerSpec(cell: cells.last!, hiddenSize: 6, direction: .bidirectional, mergeMode: .concat),
                                                       LayerSpec(cell: "rnn", hiddenSize: 2)],
                                head: HeadSpec(outputSize: 1), registry: testRegistry, seed: 2)
        try Checkpoint(model: a).save(to: path("a.h5"))
        try Checkpoint(model: b).save(to: path("b.h5"))
        let la = try Checkpoint.load(from: path("a.h5"), registry: testRegistry).model
        let lb = try Checkpoint.load(from: path("b.h5"), registry: testRegistry).model
        let chained = try Model.chain([LayerSource(layer: la.layers[0], origin: "a.h5 layer 0"),
                                       LayerSource(layer: la.layers[1], origin: "a.h5 layer 1"),
                                       LayerSource(layer: lb.layers[0], origin: "b.h5 layer 0")])
        try Checkpoint(model: chained).save(to: path("c.h5"))
        let c = try Checkpoint.load(from: path("c.h5"), registry: testRegistry).model
        var rng = SplitMix64(seed: 9)
        let x = rng.uniformTensor([5, 2, 3], scale: 1)
        let byHand = try b.layers[0].forward(input: try a.layers[1].forward(input: try a.layers[0].forward(input: x).output).output).output
        XCTAssertEqual(try c.forward(input: x).output, byHand)
        // A bidirectional layer paired from two files' one-direction layers.
        let pair = try RecurrentLayer.pairing(forward: LayerSource(layer: la.layers[1], origin: "a.h5 layer 1"),
                                              backward: LayerSource(layer: la.layers[1], origin: "a.h5 layer 1"), mergeMode: .sum)
        XCTAssertEqual(pair.direction, .bidirectional)
        XCTAssertThrowsError(try Model.chain([LayerSource(layer: la.layers[0], origin: "a.h5 layer 0"),
                                              LayerSource(layer: lb.layers[1], origin: "b.h5 layer 1")])) { e in
            XCTAssert("\(e)".contains("a.h5 layer 0") && "\(e)".contains("b.h5 layer 1") && "\(e)".contains("outputs 4 features")
                      && "\(e)".contains("takes 12"), "\(e)")
        }
    }
}

func fixturePath(_ name: String) -> String {
    (fixturesFolder as NSString).appendingPathComponent(name)
}

import Foundation
import XCTest
@testable import SeqCell

/// The checkpoint as a document: parsing needs no plugin and applies the format's defaults
/// (docs/FORMAT.md); binding is where cells are looked up, so a file whose cells are not
/// installed still reads, inspects, and gives up the layers that are.
final class CheckpointDocumentTests: TemporaryDirectoryTestCase {
    /// A file written with h5py alone: one bidirectional layer with no merge_mode whose forward
    /// cell ('notinstalled') no plugin provides and whose backward cell is a GRU without an
    /// options group; a forward RNN layer; a head; no output_steps; a training group with one
    /// optimizer slot. Every value is k/4 (exact in float32), counted per dataset.
    func handWritten(_ name: String) throws -> String {
        let p = path(name)
        _ = try runPython("""
            import h5py, numpy as np, sys
            def q(*shape):
                return (np.arange(int(np.prod(shape))) / 4).reshape(shape).astype("float32")
            with h5py.File(sys.argv[1], "w") as f:
                f.attrs["format"] = "seqcell-checkpoint"
                f.attrs["format_version"] = np.array([1, 0], dtype="int64")
                f.attrs["creator"] = "h5py by hand"
                m = f.create_group("model")
                m.attrs["input_size"] = 3
                m.attrs["num_layers"] = 2
                l0 = m.create_group("layers/00")
                l0.attrs["direction"] = "bidirectional"
                d = l0.create_group("forward")
                d.attrs["cell"] = "notinstalled"
                d.attrs["cell_version"] = "2.1.0"
                d.attrs["input_size"] = 3
                d.attrs["hidden_size"] = 2
                o = d.create_group("options")
                o.attrs["mode"] = "fast"
                o.attrs["width"] = np.int32(7)
                o.attrs["rate"] = 0.5
                d["w"] = q(2, 3)
                d["w"].attrs["gate_order"] = "a,b"
                d = l0.create_group("backward")
                d.attrs["cell"] = "gru"
                d.attrs["cell_version"] = "1.0.0"
                d.attrs["input_size"] = 3
                d.attrs["hidden_size"] = 2
                d["weight_ih"] = q(6, 3)
                d["weight_hh"] = q(6, 2)
                d["bias_ih"] = q(6)
                d["bias_hh"] = q(6)
                l1 = m.create_group("layers/01")
                l1.attrs["direction"] = "forward"
                l1.attrs["merge_mode"] = "sum"
                d = l1.create_group("forward")
                d.attrs["cell"] = "rnn"
                d.attrs["cell_version"] = "1.0.0"
                d.attrs["input_size"] = 4
                d.attrs["hidden_size"] = 2
                d["weight_ih"] = q(2, 4)
                d["weight_hh"] = q(2, 2)
                d["bias_ih"] = q(2)
                d["bias_hh"] = q(2)
                h = m.create_group("head")
                h.attrs["activation"] = "tanh"
                h["weight"] = q(1, 2)
                h["bias"] = q(1)
                t = f.create_group("training")
                t.attrs["step"] = 5
                t.attrs["optimizer"] = "sgd"
                t.attrs["config"] = "{}"
                t["rng"] = np.array([9, 8, 7], dtype="uint8")
                t["slots/momentum/layers/01/forward/weight_hh"] = q(2, 2) * 2
            """, [p])
        return p
    }

    /// k/4 for k = 0..<n, shaped.
    func quarters(_ shape: [Int], times factor: Float = 1) -> Tensor {
        Tensor(shape: shape, data: (0..<shape.reduce(1, *)).map { Float($0) / 4 * factor })
    }

    func testReadingNeedsNoPluginAndAppliesTheFormatDefaults() throws {
        let doc = try CheckpointDocument.read(path: try handWritten("hand.h5"))
        XCTAssertEqual(doc.header, .init(formatVersion: [1, 0], creator: "h5py by hand", created: "", requires: []))
        XCTAssertEqual(doc.inputSize, 3)
        XCTAssertEqual(doc.layers.map(\.name), ["00", "01"])
        XCTAssertEqual(doc.layers.map(\.direction), [.bidirectional, .forward])
        XCTAssertEqual(doc.layers[0].mergeMode, .concat, "merge_mode absent: concat")
        XCTAssertEqual(doc.layers[1].mergeMode, .sum, "as stored (unused by a forward layer)")
        let f = doc.layers[0].cells[0], b = doc.layers[0].cells[1]
        XCTAssertEqual([f.name, b.name], ["forward", "backward"])
        XCTAssertEqual(f.cell, "notinstalled")
        XCTAssertEqual(f.cellVersion, CellVersion(major: 2, minor: 1, patch: 0))
        XCTAssertEqual(f.options.map(\.name), ["mode", "rate", "width"])
        XCTAssertEqual(f.options.map(\.value), [.string("fast"), .number(0.5), .integer(7)])
        XCTAssertEqual(f.parameters.map(\.name), ["w"])
        XCTAssertEqual(f.parameters[0].value, quarters([2, 3]))
        XCTAssertEqual(f.parameters[0].gateOrder, "a,b")
        XCTAssertTrue(b.options.isEmpty, "no options group: none stored (the cell's defaults apply when bound)")
        XCTAssertEqual(b.parameters.map(\.name), ["bias_hh", "bias_ih", "weight_hh", "weight_ih"])
        XCTAssertEqual(b.parameters[3].value, quarters([6, 3]))
        XCTAssertEqual(doc.head?.activation, .tanh)
        XCTAssertEqual(doc.head?.weight, quarters([1, 2]))
        XCTAssertNil(doc.embedding)
        XCTAssertEqual(doc.outputSteps, .all, "output_steps absent: all")
        XCTAssertNil(doc.source)
        XCTAssertEqual(doc.training?.step, 5)
        XCTAssertEqual(doc.training?.optimizer, "sgd")
        XCTAssertEqual(doc.training?.rng, [9, 8, 7])
        XCTAssertEqual(doc.training?.slots, ["momentum": ["layers/01/forward/weight_hh": quarters([2, 2], times: 2)]])
        // 6 + 18 + 12 + 6 + 6 + 8 + 4 + 2 + 2 + 2 + 1
        XCTAssertEqual(doc.parameterCount, 67)
        XCTAssertEqual(doc.parameters.map(\.path).first, "layers/00/forward/w")
        XCTAssertEqual(doc.parameters.map(\.path).suffix(2), ["head/weight", "head/bias"])
    }

    func testBindingLooksUpCellsAndBindsOnlyWhatIsAsked() throws {
        _ = requiredBuiltInCells()
        let doc = try CheckpointDocument.read(path: try handWritten("hand.h5"))
        // The whole model needs the missing cell: the error names it and where it is.
        let e = assertThrows(SeqCellError.self, try doc.bind(registry: testRegistry))
        XCTAssertTrue(e?.message.contains("/model/layers/00/forward") == true && e?.message.contains("'notinstalled'") == true, e?.message ?? "")
        // A registry with no cells at all: reading still works, binding says what is missing.
        XCTAssertThrowsError(try doc.bindLayer(1, registry: PluginRegistry()))
        // Layer 1 alone binds with its file values; the defaults of absent options are the cell's.
        let l1 = try doc.bindLayer(1, registry: testRegistry)
        XCTAssertEqual(l1.cells[0].cell.type.id, "rnn")
        XCTAssertEqual(l1.cells[0].cell.options["activation"], .choice("tanh"))
        XCTAssertEqual(l1.cells[0].params.map(\.shape), [[2, 4], [2, 2], [2], [2]])
        XCTAssertEqual(l1.cells[0].params[0], quarters([2, 4]), "the cell's order (weight_ih first), not the file's")
        XCTAssertEqual(try doc.bindHead()?.inputSize, 2)
    }

    func testSwapAndComposeBindOnlyTheLayersTheyKeep() throws {
        _ = requiredBuiltInCells()
        let hand = try handWritten("hand.h5")
        // Replace the layer whose cell is not installed: the rest binds and the result loads.
        let swapped = try runProgram(["swap", "hand.h5", "--layer", "0", "--cell", "gru:2:bi", "-o", "swapped.h5"])
        XCTAssertEqual(swapped.status, 0, swapped.err)
        XCTAssertTrue(swapped.out.contains("was notinstalled(2) bidirectional concat gru(2)"), swapped.out)
        let model = try Checkpoint.load(from: path("swapped.h5"), registry: testRegistry).model
        XCTAssertEqual(model.layers.map(\.summary), ["gru(2) bidirectional concat gru(2)", "rnn(2) forward"])
        XCTAssertEqual(model.layers[1].cells[0].params[1], quarters([2, 2]), "layer 1 kept its weights")
        XCTAssertEqual(model.head?.activation, .tanh)
        // Take layer 1 of the file into a new model: layer 0 is never bound.
        _ = try runProgram(["new", "--input-size", "4", "--layer", "gru:4", "-o", "base.h5"])
        let composed = try runProgram(["compose", "base.h5", "\(hand):1", "--head-from", hand, "-o", "c.h5"])
        XCTAssertEqual(composed.status, 0, composed.err)
        let c = try Checkpoint.load(from: path("c.h5"), registry: testRegistry).model
        XCTAssertEqual(c.layers.map(\.summary), ["gru(4) forward", "rnn(2) forward"])
        XCTAssertEqual(c.layers[1].cells[0].params[0], quarters([2, 4]))
        // Swapping in the missing layer fails naming it.
        let refused = try runProgram(["swap", "base.h5", "--layer", "0", "--from", "hand.h5", "--from-layer", "0", "-o", "x.h5"])
        XCTAssertEqual(refused.status, 1)
        XCTAssertTrue(refused.err.contains("'notinstalled'"), refused.err)
    }

    /// `seqcell inspect` with no plugin anywhere: the executable copied to a folder holding no
    /// libraries, SEQCELL_PLUGIN_PATH empty. It shows the file whole; every cell is "not found".
    func testInspectWorksWithNoPluginsAtAll() throws {
        let hand = try handWritten("hand.h5")
        let bare = try temporaryFolder()
        let exe = (bare as NSString).appendingPathComponent("seqcell")
        try FileManager.default.copyItem(atPath: cli, toPath: exe)
        let plugins = try runProgram(["plugins"], executable: exe, environment: ["SEQCELL_PLUGIN_PATH": ""])
        XCTAssertFalse(plugins.out.contains("gru "), "the copied executable must find no plugin: \(plugins.out)")
        let r = try runProgram(["inspect", hand], executable: exe, environment: ["SEQCELL_PLUGIN_PATH": ""])
        XCTAssertEqual(r.status, 0, r.err)
        for fragment in ["format 1.0, written by h5py by hand", "input size 3, 2 layer(s), 67 parameters",
                         "layer 00: bidirectional (merge concat)",
                         "forward: notinstalled 2.1.0 input 3 hidden 2 mode=fast rate=0.5 width=7  [PLUGIN NOT FOUND]",
                         "w [2, 3] float32 (6)  gates a,b  non-finite 0",
                         "backward: gru 1.0.0 input 3 hidden 2  [PLUGIN NOT FOUND]",
                         "weight_ih [6, 3] float32 (18)",
                         "head: linear [1, 2] + bias [1], activation tanh  weight non-finite 0, bias non-finite 0",
                         "non-finite parameter values: 0", "training state: step 5, optimizer sgd"] {
            XCTAssertTrue(r.out.contains(fragment), "missing '\(fragment)' in:\n\(r.out)")
        }
        // Loading, which binds, fails with the same executable and names the cell.
        let run = try runProgram(["export", hand, "-o", "x.onnx"], executable: exe, environment: ["SEQCELL_PLUGIN_PATH": ""])
        XCTAssertEqual(run.status, 1)
        XCTAssertTrue(run.err.contains("no plugin provides cell"), run.err)
    }

    func testOptionOfTheWrongKindIsRefusedWhenBinding() throws {
        let p = path("opt.h5")
        let model = try Model.build(inputSize: 2, layers: [LayerSpec(cell: "lstm", hiddenSize: 3)], registry: testRegistry, seed: 1)
        try Checkpoint(model: model).save(to: p)
        _ = try runPython("import h5py, sys\nf = h5py.File(sys.argv[1], 'r+')\nf['model/layers/00/forward/options'].attrs['proj_size'] = 'two'\nf.close()", [p])
        let doc = try CheckpointDocument.read(path: p)
        XCTAssertEqual(doc.layers[0].cells[0].options.first { $0.name == "proj_size" }?.value, .string("two"))
        let e = assertThrows(SeqCellError.self, try doc.bind(registry: testRegistry))
        XCTAssertTrue(e?.message.contains("/model/layers/00/forward/options") == true
                      && e?.message.contains("option 'proj_size' of cell 'lstm' must be an integer") == true, e?.message ?? "")
    }
}

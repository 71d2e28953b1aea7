import Foundation
import XCTest
@testable import SeqCellBase
@testable import SeqCellHost
@testable import SeqCellModel
@testable import SeqCellFormats
import SeqCellTestSupport

/// The model boundary (issue 9): inputs, lengths and states are checked before anything
/// reverses, indexes or allocates from them, through the Swift API and through `seqcell run`.
/// The repro: a reverse or bidirectional model run on lengths > T or < 1 crashed in
/// RecurrentLayer.forward (it reversed sequences before anything looked at the lengths), and
/// an int64 length of 2^40 was reported as "2147483647".
final class BoundaryTests: TemporaryDirectoryTestCase {
    static let T = 5
    /// lengths[1] is the bad one in each case; lengths[0] is fine.
    static let badLengths: [(value: Int64, text: String)] = [
        (Int64(T + 1), "\(T + 1)"), (0, "0"), (-3, "-3"), (1 << 40, "1099511627776"),
    ]

    func model(_ spec: String) throws -> Model {
        try Model.build(inputSize: 3, layers: [try LayerSpec(parsing: spec)], registry: testRegistry, seed: 4)
    }

    let specs = ["lstm:4:reverse", "gru:4:bidirectional", "rnn:4:bi:sum"]

    func testSwiftAPIRefusesBadLengthsOfReverseAndBidirectionalModels() throws {
        var rng = SplitMix64(seed: 1)
        let x = rng.uniformTensor([Self.T, 2, 3], scale: 1)
        for spec in specs {
            let m = try model(spec)
            for (value, text) in Self.badLengths {
                // Int lengths (any width) through Model.forward and RecurrentLayer.forward.
                for (what, call) in [
                    ("Model.forward", { _ = try m.forward(input: x, lengths: [3, Int(value)]) }),
                    ("RecurrentLayer.forward", { _ = try m.layers[0].forward(input: x, lengths: [3, Int(value)], training: true) }),
                ] as [(String, () throws -> Void)] {
                    XCTAssertThrowsError(try call(), "\(spec) \(what) lengths[1] = \(text)") { e in
                        XCTAssert(e is SeqCellError, "\(e)")
                        XCTAssert("\(e)".contains("lengths[1] = \(text) is outside 1...\(Self.T)"), "\(spec) \(what): \(e)")
                    }
                }
                // Int32 lengths, where the value fits.
                if let v32 = Int32(exactly: value) {
                    XCTAssertThrowsError(try m.forward(input: x, lengths: [3, v32], training: true)) { e in
                        XCTAssert("\(e)".contains("lengths[1] = \(text) is outside 1...\(Self.T)"), "\(spec): \(e)")
                    }
                    XCTAssertThrowsError(try reverseSequences(x, lengths: [3, v32])) { e in
                        XCTAssert("\(e)".contains("lengths[1] = \(text)"), "\(e)")
                    }
                }
            }
            XCTAssertThrowsError(try m.forward(input: x, lengths: [3])) { e in
                XCTAssert("\(e)".contains("lengths holds 1 values for a batch of 2"), "\(e)")
            }
            // Good lengths still run, and Int and Int32 lengths agree.
            XCTAssertEqual(try m.forward(input: x, lengths: [3, 5]).output,
                           try m.forward(input: x, lengths: [Int32(3), Int32(5)]).output)
        }
    }

    func testSwiftAPIRefusesInconsistentTensorsStatesAndForeignResults() throws {
        let m = try model("lstm:4:bi")
        var rng = SplitMix64(seed: 2)
        let x = rng.uniformTensor([Self.T, 2, 3], scale: 1)
        // A tensor whose data no longer matches its shape (data is settable).
        var short = x
        short.data.removeLast()
        XCTAssertThrowsError(try m.forward(input: short)) { e in XCTAssert("\(e)".contains("does not hold its 29 values"), "\(e)") }
        // Initial states: wrong count of layers, of directions, of states; wrong shape.
        let h = rng.uniformTensor([2, 4], scale: 1)
        XCTAssertThrowsError(try m.forward(input: x, initialStates: [[[h]], [[h]]])) { e in
            XCTAssert("\(e)".contains("initial states for 2 layers"), "\(e)")
        }
        XCTAssertThrowsError(try m.forward(input: x, initialStates: [[[h]]])) { e in
            XCTAssert("\(e)".contains("1 sets of initial states for a layer with 2"), "\(e)")
        }
        XCTAssertThrowsError(try m.forward(input: x, initialStates: [[[h, nil], [h, h, h]]])) { e in
            XCTAssert("\(e)".contains("3 tensors for cell 'lstm'"), "\(e)")
        }
        XCTAssertThrowsError(try m.forward(input: x, initialStates: [[[rng.uniformTensor([3, 4], scale: 1), nil], []]])) { e in
            XCTAssert("\(e)".contains("initial state 'h' must be [2, 4], got [3, 4]"), "\(e)")
        }
        // A parameter replaced after the model was built.
        var broken = m
        broken.layers[0].cells[1].params[1] = Tensor.zeros([2, 2])
        XCTAssertThrowsError(try broken.forward(input: x)) { e in XCTAssert("\(e)".contains("weight_hh"), "\(e)") }
        var emptied = m
        emptied.layers = []
        XCTAssertThrowsError(try emptied.forward(input: x)) { e in XCTAssert("\(e)".contains("at least one layer"), "\(e)") }
        // Backward: gradient shapes, final-state gradient counts, a result from another model.
        let fwd = try m.forward(input: x, training: true)
        XCTAssertThrowsError(try m.backward(fwd, gradOutput: Tensor.zeros([Self.T, 2, 7]))) { e in
            XCTAssert("\(e)".contains("output gradient must be [5, 2, 8]"), "\(e)")
        }
        XCTAssertThrowsError(try m.backward(fwd, gradOutput: nil, gradFinalStates: [[], []])) { e in
            XCTAssert("\(e)".contains("final-state gradients for 2 layers"), "\(e)")
        }
        XCTAssertThrowsError(try m.backward(fwd, gradOutput: nil, gradFinalStates: [[[h]]])) { e in
            XCTAssert("\(e)".contains("1 sets of final-state gradients"), "\(e)")
        }
        let two = try Model.build(inputSize: 3, layers: [LayerSpec(cell: "lstm", hiddenSize: 4, direction: .bidirectional),
                                                          LayerSpec(cell: "lstm", hiddenSize: 4, direction: .bidirectional)],
                                  registry: testRegistry)
        XCTAssertThrowsError(try two.backward(fwd, gradOutput: nil)) { e in XCTAssert("\(e)".contains("another model"), "\(e)") }
        // The head: an input of the wrong width throws instead of trapping.
        let withHead = try Model.build(inputSize: 3, layers: [LayerSpec(cell: "gru", hiddenSize: 4)],
                                       head: HeadSpec(outputSize: 2), registry: testRegistry)
        XCTAssertThrowsError(try withHead.head!.forward(Tensor.zeros([2, 3]))) { e in XCTAssert("\(e)".contains("[..., 4]"), "\(e)") }
        XCTAssertNoThrow(try withHead.forward(input: x))
    }

    /// Writes `x.h5` with input [T, 2, 3] and int64 lengths [3, value].
    func writeInput(lengths: [Int64], name: String = "x.h5") throws {
        var rng = SplitMix64(seed: 3)
        let x = rng.uniformTensor([Self.T, lengths.count, 3], scale: 1)
        let file = try H5File(creating: path(name))
        try file.root.writeDataset("input", shape: x.shape, floats: x.data)
        try file.root.writeDataset("lengths", shape: [lengths.count], int64s: lengths)
        try file.close()
    }

    func testRunInputsReportsInt64LengthsExactly() throws {
        let m = try model("gru:4:bi")
        for (value, text) in Self.badLengths {
            try writeInput(lengths: [3, value])
            XCTAssertThrowsError(try RunInputs.read(path: path("x.h5"), model: m)) { e in
                XCTAssert("\(e)".contains("lengths[1] = \(text) is outside 1...5"), "\(e)")
                XCTAssert("\(e)".contains(path("x.h5")), "names the file: \(e)")
            }
        }
        // Float lengths and lengths of the wrong shape are refused by name.
        let file = try H5File(creating: path("f.h5"))
        try file.root.writeDataset("input", shape: [Self.T, 2, 3], floats: [Float](repeating: 0, count: Self.T * 6))
        try file.root.writeDataset("lengths", shape: [2], floats: [3, 4])
        try file.close()
        XCTAssertThrowsError(try RunInputs.read(path: path("f.h5"), model: m)) { e in
            XCTAssert("\(e)".contains("lengths must hold integers"), "\(e)")
        }
        let g = try H5File(creating: path("w.h5"))
        try g.root.writeDataset("input", shape: [Self.T, 2, 3], floats: [Float](repeating: 0, count: Self.T * 6))
        try g.root.writeDataset("lengths", shape: [3], int64s: [3, 4, 5])
        try g.close()
        XCTAssertThrowsError(try RunInputs.read(path: path("w.h5"), model: m)) { e in
            XCTAssert("\(e)".contains("lengths must be [B] = [2]"), "\(e)")
        }
    }

    func testTrainingDataReportsLengthsExactly() throws {
        let file = try H5File(creating: path("d.h5"))
        try file.root.writeDataset("input", shape: [4, 2, 3], floats: [Float](repeating: 0, count: 24))
        try file.root.writeDataset("targets", shape: [2, 1], floats: [0, 1])
        try file.root.writeDataset("lengths", shape: [2], int64s: [4, 1 << 40])
        try file.close()
        XCTAssertThrowsError(try SequenceDataset.read(path: path("d.h5"), perStepTargets: false)) { e in
            XCTAssert("\(e)".contains("lengths[1] = 1099511627776 is outside 1...4") && "\(e)".contains("d.h5"), "\(e)")
        }
        XCTAssertThrowsError(try SequenceDataset(input: Tensor.zeros([4, 2, 3]), targets: Tensor.zeros([2, 1]),
                                                 lengths: [4, -3], perStepTargets: false)) { e in
            XCTAssert("\(e)".contains("lengths[1] = -3"), "\(e)")
        }
        // A class target that is NaN or not an integer throws instead of trapping in Int(_:).
        XCTAssertThrowsError(try computeLoss(.crossEntropy, mode: .lastStep, output: Tensor.zeros([2, 1, 3]),
                                             targets: Tensor(shape: [1], data: [.nan]), lengths: nil)) { e in
            XCTAssert("\(e)".contains("not in 0..<3"), "\(e)")
        }
    }
}

/// Sizes a cell derives from its configuration cannot overflow inside a plugin: the kit
/// refuses input and hidden sizes above 2^24 with a message, and a workspace size that
/// would overflow saturates (the host then refuses the allocation) instead of trapping.
final class PluginSizeTests: XCTestCase {
    func testKitCellsRefuseHugeSizesWithAMessage() throws {
        for id in ["rnn", "lstm", "gru"] {
            let t = try cellType(id)
            XCTAssertThrowsError(try t.instantiate(inputSize: 3, hiddenSize: 1 << 40)) { e in
                XCTAssert("\(e)".contains("hidden_size must be in 1...16777216"), "\(id): \(e)")
            }
            XCTAssertThrowsError(try t.instantiate(inputSize: 1 << 62, hiddenSize: 4)) { e in
                XCTAssert("\(e)".contains("input_size must be in 1...16777216"), "\(id): \(e)")
            }
        }
    }
}

/// `seqcell run` on the same bad inputs: exit 1 and a message, never a signal.
final class BoundaryCLITests: TemporaryDirectoryTestCase {

    func run(_ args: [String], environment: [String: String] = [:]) throws -> (status: Int32, out: String, err: String) {
        try runProgram(args, environment: environment)
    }

    func testRunRefusesBadLengthsOfReverseAndBidirectionalModels() throws {
        for (k, spec) in ["lstm:4:reverse", "gru:4:bidirectional"].enumerated() {
            let m = try Model.build(inputSize: 3, layers: [try LayerSpec(parsing: spec)], registry: testRegistry, seed: 4)
            try Checkpoint(model: m).save(to: path("m\(k).h5"))
            for (value, text) in BoundaryTests.badLengths {
                var rng = SplitMix64(seed: 3)
                let x = rng.uniformTensor([BoundaryTests.T, 2, 3], scale: 1)
                let file = try H5File(creating: path("x.h5"))
                try file.root.writeDataset("input", shape: x.shape, floats: x.data)
                try file.root.writeDataset("lengths", shape: [2], int64s: [3, value])
                try file.close()
                let r = try run(["run", "m\(k).h5", "--input", "x.h5", "-o", "y.h5"])
                XCTAssertEqual(r.status, 1, "\(spec) lengths[1] = \(text): \(r.err)")
                XCTAssert(r.err.contains("lengths[1] = \(text) is outside 1...5"), "\(spec): \(r.err)")
                XCTAssertFalse(FileManager.default.fileExists(atPath: path("y.h5")), "no output file")
            }
        }
    }
}

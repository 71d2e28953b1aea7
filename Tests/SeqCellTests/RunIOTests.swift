import Foundation
import XCTest
@testable import SeqCell

/// What `seqcell run` reads and writes (IO/RunIO.swift): PyTorch's [L·D, B, H] stacking of
/// h_n/c_n and h0/c0, the stacks a model cannot have, the output file's datasets in every
/// layout, and the checks on inputs and lengths. Expected values are built here index by
/// index from PyTorch's rule (slice layer·D + direction), not with the functions under test.
final class RunIOTests: TemporaryDirectoryTestCase {
    func model(_ specs: [LayerSpec], inputSize: Int = 2, head: HeadSpec? = nil) throws -> Model {
        _ = requiredBuiltInCells()
        return try Model.build(inputSize: inputSize, layers: specs, head: head, registry: testRegistry, seed: 4)
    }

    /// finalStates[layer][direction][state] where element i of state s of direction d of layer
    /// k is 1000k + 100d + 10s + i / 4 (exact in float32), each [B, size].
    func labelledStates(_ m: Model, batch B: Int) -> [[[Tensor]]] {
        m.layers.enumerated().map { k, layer in
            layer.cells.enumerated().map { d, dc in
                dc.cell.states.enumerated().map { s, st in
                    Tensor(shape: [B, st.size], data: (0..<(B * st.size)).map { Float(1000 * k + 100 * d + 10 * s) + Float($0) / 4 })
                }
            }
        }
    }

    /// PyTorch's stack by its definition: out[layer·D + d, b, j] = state(layer, d)[b, j].
    func expectedStack(_ states: [[[Tensor]]], stateIndex s: Int, D: Int, B: Int, H: Int) -> Tensor {
        let L = states.count
        var out = [Float](repeating: .nan, count: L * D * B * H)
        for k in 0..<L {
            for d in 0..<D {
                for b in 0..<B {
                    for j in 0..<H { out[((k * D + d) * B + b) * H + j] = states[k][d][s].data[b * H + j] }
                }
            }
        }
        return Tensor(shape: [L * D, B, H], data: out)
    }

    func testStackingFollowsPyTorchForUnidirectionalAndBidirectionalStacks() throws {
        for direction in [Direction.forward, .reverse, .bidirectional] {
            let m = try model([LayerSpec(cell: "lstm", hiddenSize: 3, direction: direction),
                               LayerSpec(cell: "lstm", hiddenSize: 3, direction: direction)])
            let D = direction == .bidirectional ? 2 : 1
            let states = labelledStates(m, batch: 2)
            XCTAssertEqual(commonStateNames(m), ["h", "c"])
            let h = try XCTUnwrap(stackedStates(states, model: m, state: "h"), "\(direction)")
            let c = try XCTUnwrap(stackedStates(states, model: m, state: "c"), "\(direction)")
            XCTAssertEqual(h, expectedStack(states, stateIndex: 0, D: D, B: 2, H: 3), "h_n \(direction)")
            XCTAssertEqual(c, expectedStack(states, stateIndex: 1, D: D, B: 2, H: 3), "c_n \(direction)")
            // Spot check the rule on one value: layer 1, last direction, sample 1, unit 2.
            XCTAssertEqual(h.data[((1 * D + (D - 1)) * 2 + 1) * 3 + 2], Float(1000 + 100 * (D - 1)) + Float(5) / 4)
            XCTAssertNil(stackedStates(states, model: m, state: "n"), "a state no cell has")
        }
    }

    func testStacksAModelCannotHaveAreRefusedNotPadded() throws {
        // Hidden sizes 3 then 2: PyTorch has no such module; no h_n (nil), never a padded stack.
        let sizes = try model([LayerSpec(cell: "gru", hiddenSize: 3), LayerSpec(cell: "gru", hiddenSize: 2)])
        XCTAssertNil(stackedStates(labelledStates(sizes, batch: 2), model: sizes, state: "h"))
        // A bidirectional layer under a forward one: directions differ per layer.
        let mixed = try model([LayerSpec(cell: "rnn", hiddenSize: 3, direction: .bidirectional, mergeMode: .sum),
                               LayerSpec(cell: "rnn", hiddenSize: 3)])
        XCTAssertNil(stackedStates(labelledStates(mixed, batch: 2), model: mixed, state: "h"))
        // Cells with different states: only the common one is stacked.
        let cells = try model([LayerSpec(cell: "lstm", hiddenSize: 3), LayerSpec(cell: "gru", hiddenSize: 3)])
        XCTAssertEqual(commonStateNames(cells), ["h"])
        let states = labelledStates(cells, batch: 2)
        XCTAssertEqual(stackedStates(states, model: cells, state: "h"), expectedStack(states, stateIndex: 0, D: 1, B: 2, H: 3))
        XCTAssertNil(stackedStates(states, model: cells, state: "c"))
        // States that do not come from this model (one layer short).
        XCTAssertNil(stackedStates(Array(states.dropLast()), model: cells, state: "h"))
    }

    func testRunOutputFileHoldsOutputStacksAndEveryFinalState() throws {
        let m = try model([LayerSpec(cell: "lstm", hiddenSize: 3, direction: .bidirectional),
                           LayerSpec(cell: "lstm", hiddenSize: 3, direction: .bidirectional)], head: HeadSpec(outputSize: 2))
        var rng = SplitMix64(seed: 8)
        let (T, B) = (4, 3)
        let x = rng.uniformTensor([T, B, 2], scale: 1)
        let lengths: [Int32] = [4, 2, 1]
        let result = try m.forward(input: x, lengths: lengths)
        let file = path("out.h5")
        try writeRunOutputs(path: file, model: m, result: result, batchFirst: false)
        let root = try H5File(opening: file).root
        func read(_ name: String) throws -> Tensor {
            let ds = try root.dataset(name)
            return Tensor(shape: ds.shape, data: try ds.readFloats())
        }
        XCTAssertEqual(try root.stringAttribute("layout"), "time_major")
        XCTAssertEqual(try read("output"), result.output)
        XCTAssertEqual(try read("recurrent_output"), result.recurrentOutput)
        XCTAssertEqual(try read("h_n"), expectedStack(result.finalStates, stateIndex: 0, D: 2, B: B, H: 3))
        XCTAssertEqual(try read("c_n"), expectedStack(result.finalStates, stateIndex: 1, D: 2, B: B, H: 3))
        XCTAssertEqual(try read("final_states/layers/01/backward/c"), result.finalStates[1][1][1])
        XCTAssertEqual(try read("final_states/layers/00/forward/h"), result.finalStates[0][0][0])

        // Batch-first: output[b, t, :] is the time-major output[t, b, :].
        let bf = path("bf.h5")
        try writeRunOutputs(path: bf, model: m, result: result, batchFirst: true)
        let bfRoot = try H5File(opening: bf).root
        XCTAssertEqual(try bfRoot.stringAttribute("layout"), "batch_first")
        let out = try bfRoot.dataset("output")
        XCTAssertEqual(out.shape, [B, T, 2])
        let values = try out.readFloats()
        for t in 0..<T {
            for b in 0..<B {
                for o in 0..<2 { XCTAssertEqual(values[(b * T + t) * 2 + o], result.output.data[(t * B + b) * 2 + o], "[\(b), \(t), \(o)]") }
            }
        }

        // Last step: row b at t = lengths[b] − 1.
        let last = path("last.h5")
        try writeRunOutputs(path: last, model: m, result: result, batchFirst: false, lastStep: .some(lengths))
        let lastRoot = try H5File(opening: last).root
        XCTAssertEqual(try lastRoot.stringAttribute("layout"), "last_step")
        let lastOut = try lastRoot.dataset("output")
        XCTAssertEqual(lastOut.shape, [B, 2])
        let lastValues = try lastOut.readFloats()
        for b in 0..<B {
            let t = Int(lengths[b]) - 1
            for o in 0..<2 { XCTAssertEqual(lastValues[b * 2 + o], result.output.data[(t * B + b) * 2 + o], "sample \(b)") }
        }
        XCTAssertEqual(lastValidSteps(result.output, lengths: nil).data,
                       (0..<B).flatMap { b in (0..<2).map { result.output.data[((T - 1) * B + b) * 2 + $0] } })
    }

    func testMixedHiddenSizesWriteFinalStatesButNoStack() throws {
        let m = try model([LayerSpec(cell: "gru", hiddenSize: 3), LayerSpec(cell: "gru", hiddenSize: 2)])
        var rng = SplitMix64(seed: 9)
        let result = try m.forward(input: rng.uniformTensor([3, 2, 2], scale: 1))
        let file = path("mixed.h5")
        try writeRunOutputs(path: file, model: m, result: result, batchFirst: false)
        let root = try H5File(opening: file).root
        XCTAssertFalse(root.isDataset("h_n"), "no [L·D, B, H] stack exists for hidden sizes 3 and 2")
        XCTAssertEqual(try root.dataset("final_states/layers/00/forward/h").shape, [2, 3])
        XCTAssertEqual(try root.dataset("final_states/layers/01/forward/h").readFloats(), result.finalStates[1][0][0].data)
        // A result from another model is refused before anything is written.
        let other = try model([LayerSpec(cell: "gru", hiddenSize: 3)])
        let e = assertThrows(SeqCellError.self, try writeRunOutputs(path: path("wrong.h5"), model: other, result: result, batchFirst: false))
        XCTAssertTrue(e?.message.contains("does not come from this model") == true, e?.message ?? "")
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("wrong.h5")))
    }

    func testInputsLengthsAndStackedInitialStatesAreReadAsPyTorchStacksThem() throws {
        let m = try model([LayerSpec(cell: "lstm", hiddenSize: 3, direction: .bidirectional),
                           LayerSpec(cell: "lstm", hiddenSize: 3, direction: .bidirectional)])
        let (T, B, LD, H) = (4, 2, 4, 3)
        let x = (0..<(T * B * 2)).map { Float($0) / 8 }
        let h0 = (0..<(LD * B * H)).map { Float($0) / 4 }
        let c0 = (0..<(LD * B * H)).map { -Float($0) / 4 }
        let file = path("in.h5")
        do {
            let f = try H5File(creating: file)
            let root = try f.root
            try root.writeDataset("input", shape: [T, B, 2], floats: x)
            try root.writeDataset("lengths", shape: [B], int64s: [4, 2])
            try root.writeDataset("h0", shape: [LD, B, H], floats: h0)
            try root.writeDataset("c0", shape: [LD, B, H], floats: c0)
            try f.close()
        }
        let inputs = try RunInputs.read(path: file, model: m)
        XCTAssertEqual(inputs.input, Tensor(shape: [T, B, 2], data: x))
        XCTAssertEqual(inputs.lengths, [4, 2])
        XCTAssertEqual(inputs.initialStates.count, 2)
        for k in 0..<2 {
            for d in 0..<2 {
                let i = k * 2 + d
                let slice = Array(h0[(i * B * H)..<((i + 1) * B * H)])
                XCTAssertEqual(inputs.initialStates[k][d][0], Tensor(shape: [B, H], data: slice), "h0 layer \(k) direction \(d)")
                XCTAssertEqual(inputs.initialStates[k][d][1]?.data, slice.map { -$0 }, "c0 layer \(k) direction \(d)")
            }
        }
        // Batch-first input: [B, T, I] read back time-major.
        let bf = path("bf.h5")
        do {
            let f = try H5File(creating: bf)
            try f.root.writeDataset("input", shape: [B, T, 2], floats: x)
            try f.close()
        }
        let swapped = try RunInputs.read(path: bf, batchFirst: true, model: m).input
        XCTAssertEqual(swapped.shape, [T, B, 2])
        for t in 0..<T { for b in 0..<B { for i in 0..<2 {
            XCTAssertEqual(swapped.data[(t * B + b) * 2 + i], x[(b * T + t) * 2 + i])
        } } }
        // The same input as .npy.
        let npy = path("x.npy")
        try NPY.write(to: npy, shape: [T, B, 2], floats: x)
        XCTAssertEqual(try RunInputs.read(path: npy, model: m).input.data, x)
    }

    func testBadLengthsAndStatesNameTheDataset() throws {
        let m = try model([LayerSpec(cell: "gru", hiddenSize: 3, direction: .bidirectional)])
        func file(_ name: String, lengths: [Int64]? = nil, lengthsShape: [Int]? = nil, h0Shape: [Int]? = nil) throws -> String {
            let p = path(name)
            let f = try H5File(creating: p)
            try f.root.writeDataset("input", shape: [3, 2, 2], floats: [Float](repeating: 0.5, count: 12))
            if let lengths { try f.root.writeDataset("lengths", shape: lengthsShape ?? [lengths.count], int64s: lengths) }
            if let h0Shape { try f.root.writeDataset("h0", shape: h0Shape, floats: [Float](repeating: 0, count: h0Shape.reduce(1, *))) }
            try f.close()
            return p
        }
        func assertRefused(_ p: String, _ fragments: [String], line: UInt = #line) {
            let e = assertThrows(SeqCellError.self, try RunInputs.read(path: p, model: m), line: line)
            for f in fragments { XCTAssertTrue(e?.message.contains(f) == true, "expected '\(f)' in: \(e?.message ?? "")", line: line) }
        }
        assertRefused(try file("zero.h5", lengths: [3, 0]), ["zero.h5", "lengths"])
        assertRefused(try file("long.h5", lengths: [3, 4]), ["long.h5", "lengths"])
        assertRefused(try file("count.h5", lengths: [3, 3, 3]), ["lengths must be [B] = [2]", "[3]"])
        assertRefused(try file("h0.h5", h0Shape: [1, 2, 3]), ["h0 must be [2, 2, 3]", "got [1, 2, 3]"])
        let ok = try RunInputs.read(path: try file("fine.h5", lengths: [3, 1]), model: m)
        XCTAssertEqual(ok.lengths, [3, 1])
    }
}

import XCTest
@testable import SeqCellBase
@testable import SeqCellHost
@testable import SeqCellModel
@testable import SeqCellFormats
@testable import SeqCellConformance
import SeqCellTestSupport

/// Layer semantics (reverse, bidirectional, merge modes, lengths, stacks) checked against
/// the cells run by hand one sample at a time, and backward against finite differences.
final class LayerTests: XCTestCase {
    /// Built-in cells present in the build folder (rnn always; lstm and gru when built).
    var cellIDs: [String] { requiredBuiltInCells() }

    func makeCell(_ id: String, input: Int, hidden: Int, rng: inout SplitMix64) throws -> DirectionalCell {
        let cell = try testRegistry.cellType(id).instantiate(inputSize: input, hiddenSize: hidden)
        return try DirectionalCell(cell: cell, params: cell.params.map { rng.uniformTensor($0.shape, scale: 0.6) })
    }

    /// Sample b's steps 0..<len as a [len, 1, F] tensor, optionally reversed in time.
    func sample(_ x: Tensor, b: Int, len: Int, reversed: Bool) -> Tensor {
        let (B, F) = (x.shape[1], x.shape[2])
        var out: [Float] = []
        for s in 0..<len {
            let t = reversed ? len - 1 - s : s
            out += x.data[((t * B + b) * F)..<((t * B + b) * F + F)]
        }
        return Tensor(shape: [len, 1, F], data: out)
    }

    /// Runs one direction for each sample alone and assembles [T, B, O] and final states.
    func byHand(_ dc: DirectionalCell, x: Tensor, lengths: [Int32], reversed: Bool) throws -> (Tensor, [Tensor]) {
        let (T, B) = (x.shape[0], x.shape[1])
        let O = dc.cell.outputSize
        var out = [Float](repeating: 0, count: T * B * O)
        var finals = dc.cell.states.map { [Float](repeating: 0, count: B * $0.size) }
        for b in 0..<B {
            let len = Int(lengths[b])
            let r = try dc.cell.forward(input: sample(x, b: b, len: len, reversed: reversed), params: dc.params)
            for s in 0..<len {
                let t = reversed ? len - 1 - s : s
                for j in 0..<O { out[(t * B + b) * O + j] = r.output.data[s * O + j] }
            }
            for (i, st) in dc.cell.states.enumerated() {
                for j in 0..<st.size { finals[i][b * st.size + j] = r.finalStates[i].data[j] }
            }
        }
        return (Tensor(shape: [T, B, O], data: out), zip(dc.cell.states, finals).map { Tensor(shape: [B, $0.size], data: $1) })
    }

    func testReverseSequencesIsAnInvolutionWithinLengths() throws {
        var rng = SplitMix64(seed: 3)
        let x = rng.uniformTensor([5, 3, 2], scale: 1)
        let lengths: [Int32] = [5, 3, 1]
        let y = try reverseSequences(x, lengths: lengths)
        XCTAssertEqual(Array(y.data[((0 * 3 + 1) * 2)..<((0 * 3 + 1) * 2 + 2)]), Array(x.data[((2 * 3 + 1) * 2)..<((2 * 3 + 1) * 2 + 2)]))
        XCTAssertEqual(Array(y.data[((4 * 3 + 1) * 2)..<((4 * 3 + 1) * 2 + 2)]), Array(x.data[((4 * 3 + 1) * 2)..<((4 * 3 + 1) * 2 + 2)]),
                       "padded rows stay where they are")
        XCTAssertEqual(try reverseSequences(y, lengths: lengths), x)
    }

    func testForwardAndReverseMatchPerSampleRuns() throws {
        var rng = SplitMix64(seed: 11)
        for id in cellIDs {
            let dc = try makeCell(id, input: 3, hidden: 4, rng: &rng)
            let x = rng.uniformTensor([6, 3, 3], scale: 1)
            let lengths: [Int32] = [6, 4, 1]
            for direction in [Direction.forward, .reverse] {
                let layer = try RecurrentLayer(direction: direction, cells: [dc])
                let got = try layer.forward(input: x, lengths: lengths)
                let (out, finals) = try byHand(dc, x: x, lengths: lengths, reversed: direction == .reverse)
                assertClose(got.output, out, tol: 1e-5, "\(id) \(direction) output")
                for (g, e) in zip(got.finalStates[0], finals) { assertClose(g, e, tol: 1e-5, "\(id) \(direction) final state") }
            }
        }
    }

    func testBidirectionalMergeModesWithMixedCells() throws {
        var rng = SplitMix64(seed: 12)
        let ids = cellIDs
        let fwdID = ids[0], bwdID = ids[ids.count - 1]
        let f = try makeCell(fwdID, input: 2, hidden: 3, rng: &rng)
        let b = try makeCell(bwdID, input: 2, hidden: 3, rng: &rng)
        let x = rng.uniformTensor([5, 2, 2], scale: 1)
        let lengths: [Int32] = [3, 5]
        let (fo, ff) = try byHand(f, x: x, lengths: lengths, reversed: false)
        let (bo, bf) = try byHand(b, x: x, lengths: lengths, reversed: true)
        for mode in MergeMode.allCases {
            let layer = try RecurrentLayer(direction: .bidirectional, mergeMode: mode, cells: [f, b])
            let got = try layer.forward(input: x, lengths: lengths)
            let expected: Tensor
            switch mode {
            case .concat:
                var d: [Float] = []
                for r in 0..<10 {
                    let lo = r * 3, hi = r * 3 + 3
                    d.append(contentsOf: fo.data[lo..<hi])
                    d.append(contentsOf: bo.data[lo..<hi])
                }
                expected = Tensor(shape: [5, 2, 6], data: d)
            case .sum: expected = Tensor(shape: fo.shape, data: zip(fo.data, bo.data).map { $0 + $1 })
            case .mul: expected = Tensor(shape: fo.shape, data: zip(fo.data, bo.data).map { $0 * $1 })
            case .ave: expected = Tensor(shape: fo.shape, data: zip(fo.data, bo.data).map { ($0 + $1) / 2 })
            }
            assertClose(got.output, expected, tol: 1e-5, "\(fwdID)/\(bwdID) merge \(mode)")
            assertClose(got.finalStates[0][0], ff[0], tol: 1e-5, "forward final h")
            assertClose(got.finalStates[1][0], bf[0], tol: 1e-5, "backward final h")
        }
    }

    func testPaddedStepsGiveZeroOutputAndDoNotLeak() throws {
        var rng = SplitMix64(seed: 13)
        for id in cellIDs {
            let dc = try makeCell(id, input: 2, hidden: 3, rng: &rng)
            let layer = try RecurrentLayer(direction: .bidirectional, cells: [dc, dc])
            var x = rng.uniformTensor([4, 2, 2], scale: 1)
            let lengths: [Int32] = [2, 4]
            let a = try layer.forward(input: x, lengths: lengths)
            for t in 2..<4 { for j in 0..<6 { XCTAssertEqual(a.output.data[(t * 2 + 0) * 6 + j], 0, "\(id) padded output") } }
            // Garbage in the padding must change nothing.
            for t in 2..<4 { for j in 0..<2 { x.data[(t * 2 + 0) * 2 + j] = 1000 } }
            let b = try layer.forward(input: x, lengths: lengths)
            XCTAssertEqual(a.output, b.output, "\(id): padding content leaked into outputs")
            XCTAssertEqual(a.finalStates, b.finalStates, "\(id): padding content leaked into final states")
        }
    }

    func testStackJoinSizesAreChecked() throws {
        var rng = SplitMix64(seed: 14)
        let l0 = try RecurrentLayer(direction: .bidirectional, cells: [try makeCell("rnn", input: 3, hidden: 4, rng: &rng),
                                                                      try makeCell("rnn", input: 3, hidden: 4, rng: &rng)])
        let l1 = try RecurrentLayer(direction: .forward, cells: [try makeCell("rnn", input: 4, hidden: 2, rng: &rng)])
        XCTAssertThrowsError(try Model(inputSize: 3, layers: [l0, l1])) { e in
            XCTAssert("\(e)".contains("layer 1") && "\(e)".contains("takes 4 inputs") && "\(e)".contains("layer 0 outputs 8"), "\(e)")
        }
        XCTAssertThrowsError(try Model(inputSize: 5, layers: [l0])) { e in
            XCTAssert("\(e)".contains("model input is 5 wide"), "\(e)")
        }
    }

    func testModelRejectsBadInputShapes() throws {
        let model = try Model.build(inputSize: 3, layers: [LayerSpec(cell: "rnn", hiddenSize: 4)], registry: testRegistry)
        var rng = SplitMix64(seed: 1)
        XCTAssertThrowsError(try model.forward(input: rng.uniformTensor([2, 2, 5], scale: 1))) { e in
            XCTAssert("\(e)".contains("5 features") && "\(e)".contains("takes 3"), "\(e)")
        }
        XCTAssertThrowsError(try model.forward(input: Tensor.zeros([0, 2, 3]))) { e in
            XCTAssert("\(e)".contains("T must be >= 1"), "\(e)")
        }
        XCTAssertThrowsError(try model.forward(input: Tensor.zeros([2, 0, 3]))) { e in
            XCTAssert("\(e)".contains("B must be >= 1"), "\(e)")
        }
        XCTAssertThrowsError(try model.forward(input: Tensor.zeros([2, 2, 3]), lengths: [3, 1])) { e in
            XCTAssert("\(e)".contains("lengths[0] = 3") && "\(e)".contains("1...2"), "\(e)")
        }
        XCTAssertThrowsError(try model.forward(input: Tensor.zeros([2, 2, 3]), lengths: [0, 1])) { e in
            XCTAssert("\(e)".contains("lengths[0] = 0"), "\(e)")
        }
    }

    func testSpecParsing() throws {
        let s = try LayerSpec(parsing: "lstm:32:bi:sum,proj_size=8,backward_cell=gru,backward.reset=before")
        XCTAssertEqual(s.cell, "lstm")
        XCTAssertEqual(s.hiddenSize, 32)
        XCTAssertEqual(s.direction, .bidirectional)
        XCTAssertEqual(s.mergeMode, .sum)
        XCTAssertEqual(s.options, ["proj_size": "8"])
        XCTAssertEqual(s.backwardCell, "gru")
        XCTAssertEqual(s.backwardOptions, ["reset": "before"])
        XCTAssertEqual(try LayerSpec(parsing: s.description), s)
        for bad in ["lstm", "lstm:x", "lstm:4:sideways", "lstm:4:f:sum", "lstm:4,proj_size", "rnn:4,backward_cell=gru"] {
            XCTAssertThrowsError(try LayerSpec(parsing: bad), bad)
        }
        XCTAssertThrowsError(try Model.build(inputSize: 2, layers: [try LayerSpec(parsing: "rnn:4,nonsense=1")],
                                             registry: testRegistry)) { e in
            XCTAssert("\(e)".contains("has no option 'nonsense'"), "\(e)")
        }
        XCTAssertThrowsError(try Model.build(inputSize: 2, layers: [try LayerSpec(parsing: "nosuchcell:4")],
                                             registry: testRegistry)) { e in
            XCTAssert("\(e)".contains("no plugin provides cell 'nosuchcell'"), "\(e)")
        }
    }
}

/// Model backward (head, stacks, bidirectional merges, lengths, initial states) against
/// central finite differences of L = Σ R ⊙ output + Σ S ⊙ final states.
final class ModelGradientTests: XCTestCase {
    func check(_ model: Model, T: Int, B: Int, lengths: [Int32]?, seed: UInt64, file: StaticString = #filePath, line: UInt = #line) throws {
        var rng = SplitMix64(seed: seed)
        let x = rng.uniformTensor([T, B, model.inputSize], scale: 1)
        let h0: [[[Tensor?]]] = model.layers.map { l in l.cells.map { dc in dc.cell.states.map { rng.uniformTensor([B, $0.size], scale: 0.5) } } }
        let r = rng.uniformTensor([T, B, model.outputSize], scale: 1)
        let s: [[[Tensor?]]] = model.layers.map { l in l.cells.map { dc in dc.cell.states.map { rng.uniformTensor([B, $0.size], scale: 1) } } }

        func loss(_ m: Model, _ x: Tensor, _ h0: [[[Tensor?]]]) throws -> Double {
            let o = try m.forward(input: x, lengths: lengths, initialStates: h0)
            var total = zip(o.output.data, r.data).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            for (fl, sl) in zip(o.finalStates, s) { for (fd, sd) in zip(fl, sl) { for (f, w) in zip(fd, sd) {
                total += zip(f.data, w!.data).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            } } }
            return total
        }
        let fwd = try model.forward(input: x, lengths: lengths, initialStates: h0, training: true)
        let g = try model.backward(fwd, gradOutput: r, gradFinalStates: s)
        var results = [try GradientCheck.compare(name: "input", values: x.data, analytic: g.input!.data) {
            try loss(model, Tensor(shape: x.shape, data: $0), h0)
        }]
        for (k, layer) in model.layers.enumerated() {
            for (d, dc) in layer.cells.enumerated() {
                for (p, info) in dc.cell.params.enumerated() {
                    results.append(try GradientCheck.compare(name: "layer \(k) dir \(d) \(info.name)", values: dc.params[p].data,
                                                             analytic: g.params[k][d][p].data, maxEntries: 8) {
                        var m = model
                        m.layers[k].cells[d].params[p] = Tensor(shape: info.shape, data: $0)
                        return try loss(m, x, h0)
                    })
                }
                for (si, st) in dc.cell.states.enumerated() {
                    results.append(try GradientCheck.compare(name: "layer \(k) dir \(d) h0 \(st.name)", values: h0[k][d][si]!.data,
                                                             analytic: g.initialStates[k][d][si].data, maxEntries: 8) {
                        var h = h0
                        h[k][d][si] = Tensor(shape: [B, st.size], data: $0)
                        return try loss(model, x, h)
                    })
                }
            }
        }
        if let head = model.head, let hg = g.head {
            results.append(try GradientCheck.compare(name: "head weight", values: head.weight.data, analytic: hg.weight.data) {
                var m = model
                m.head!.weight = Tensor(shape: head.weight.shape, data: $0)
                return try loss(m, x, h0)
            })
            results.append(try GradientCheck.compare(name: "head bias", values: head.bias.data, analytic: hg.bias.data) {
                var m = model
                m.head!.bias = Tensor(shape: head.bias.shape, data: $0)
                return try loss(m, x, h0)
            })
        }
        for res in results { XCTAssert(res.passed, "\(res)", file: file, line: line) }
    }

    func testStacksWithTheCSampleCell() throws {
        let registry = PluginRegistry()
        _ = try registry.loadOrThrow(file: try buildMGU(in: try temporaryFolder()))
        registry.load(path: buildProductsDir)
        let specs = [LayerSpec(cell: "mgu", hiddenSize: 3, direction: .bidirectional, mergeMode: .mul, backwardCell: "rnn"),
                     LayerSpec(cell: "mgu", hiddenSize: 2, direction: .reverse)]
        let model = try Model.build(inputSize: 2, layers: specs, head: HeadSpec(outputSize: 2, activation: .sigmoid),
                                    registry: registry, seed: 31)
        try check(model, T: 5, B: 2, lengths: [5, 3], seed: 31)
    }

    func testStacksOfEveryLayerKind() throws {
        let ids = requiredBuiltInCells()
        var seed: UInt64 = 100
        for (i, id) in ids.enumerated() {
            let other = ids[(i + 1) % ids.count]
            for mode in MergeMode.allCases {
                let specs = [
                    LayerSpec(cell: id, hiddenSize: 3, direction: .bidirectional, mergeMode: mode, backwardCell: other),
                    LayerSpec(cell: other, hiddenSize: 3, direction: .reverse),
                    LayerSpec(cell: id, hiddenSize: 2, direction: .forward),
                ]
                for act in [HeadActivation.linear, .tanh, .softmax] {
                    seed += 1
                    let model = try Model.build(inputSize: 2, layers: specs, head: HeadSpec(outputSize: 3, activation: act),
                                                registry: testRegistry, seed: seed)
                    try check(model, T: 4, B: 3, lengths: [4, 2, 3], seed: seed)
                }
            }
        }
    }
}

import CAllocationCounter
import Foundation
import XCTest
@testable import SeqCellBase
@testable import SeqCellHost
@testable import SeqCellModel
@testable import SeqCellFormats
import SeqCellTestSupport

/// Issue 12's memory targets: a warmed-up inference forward allocates nothing, and the peak
/// memory of a forward call stays within the output plus one chunk of input projection
/// (the parameters and the input are already held by the caller). Allocations are counted
/// by the test bundle's own malloc (Tests/CAllocationCounter), which forwards to glibc's.
final class ForwardMemoryTests: XCTestCase {
    /// Skips, by name, when the counter is not this process's malloc (a sanitizer build), and
    /// fails when it should be but misses an allocation made here.
    func requireCounter() throws {
        guard seqcell_alloc_counter_active() != 0 else {
            throw XCTSkip("ForwardMemoryTests: the allocation counter is not built (sanitizer build); allocations cannot be counted")
        }
        let before = seqcell_alloc_count()
        let p = UnsafeMutableRawPointer.allocate(byteCount: 1000, alignment: 8)
        let b = [Float](repeating: 1, count: 1000)
        p.deallocate()
        XCTAssertEqual(b.count, 1000)
        XCTAssertGreaterThanOrEqual(seqcell_alloc_count() - before, 2,
                                    "the test bundle's malloc does not see this process's allocations; counts below would be meaningless")
    }

    /// Skips, by name, when the cells loaded are unoptimised builds: Swift leaves the plugin
    /// kit's generic code unspecialised there and it allocates per call. scripts/test.sh runs
    /// the suite a second time with the release cells (SEQCELL_PLUGIN_PATH), where this holds.
    func requireOptimisedCells(_ test: String) throws {
        for id in ["rnn", "lstm", "gru"] {
            let path = try cellType(id).libraryPath
            if path.contains("/debug/") {
                throw XCTSkip("ForwardMemoryTests.\(test): cell '\(id)' is a debug build (\(path)); run with the release cells "
                              + "(SEQCELL_PLUGIN_PATH=.build/release, as scripts/test.sh does) to count their allocations")
            }
        }
    }

    func model(_ cell: String, layers: [(Direction, MergeMode)], head: Bool, input: Int = 3, hidden: Int = 5) throws -> Model {
        _ = try cellType(cell)
        return try Model.build(inputSize: input, layers: layers.map { LayerSpec(cell: cell, hiddenSize: hidden, direction: $0.0, mergeMode: $0.1) },
                               head: head ? HeadSpec(outputSize: 2, activation: .tanh) : nil, registry: testRegistry, seed: 7)
    }

    func testCounterSeesAllocations() throws {
        try requireCounter()
        let before = seqcell_alloc_count()
        let arrays = (0..<10).map { [Int](repeating: $0, count: 100 + $0) }
        XCTAssertGreaterThanOrEqual(seqcell_alloc_count() - before, 10)
        XCTAssertEqual(arrays.count, 10)
    }

    /// Every built-in cell, a stack of a forward, a reversed and a bidirectional layer with a
    /// head, run in chunks of 4 steps with per-sample lengths: after two warm-up calls, each
    /// call allocates nothing, and gives what `Model.forward` gives.
    func testWarmedUpSessionForwardAllocatesNothing() throws {
        try requireCounter()
        try requireOptimisedCells("testWarmedUpSessionForwardAllocatesNothing")
        let (T, B) = (23, 6)
        let lengths: [Int32] = [23, 1, 4, 5, 17, 9]
        for cell in ["rnn", "lstm", "gru"] {
            let m = try model(cell, layers: [(.forward, .concat), (.reverse, .concat), (.bidirectional, .concat)], head: true)
            let session = try InferenceSession(model: m, steps: T, batch: B, chunkSteps: 4)
            var rng = TestRNG(seed: 3)
            let x = rng.tensor([T, B, 3])
            var y = session.makeOutput()
            for _ in 0..<2 { try session.forward(input: x, lengths: lengths, into: &y) }
            for call in 0..<3 {
                let before = seqcell_alloc_count()
                try session.forward(input: x, lengths: lengths, into: &y)
                let allocations = seqcell_alloc_count() - before
                XCTAssertEqual(allocations, 0, "\(cell): warmed-up call \(call) allocated \(allocations) times")
            }
            let reference = try m.forward(input: x, lengths: lengths)
            assertClose(y, reference.output, tol: 1e-5, "\(cell): session output vs Model.forward")
            let out = session.modelOutput(y)
            assertClose(out.recurrentOutput, reference.recurrentOutput, tol: 1e-5, "\(cell): last layer's output")
            for (k, layer) in reference.finalStates.enumerated() {
                for (d, states) in layer.enumerated() {
                    for (s, state) in states.enumerated() {
                        assertClose(session.finalState(layer: k, direction: d, state: s), state, tol: 1e-5,
                                    "\(cell): final state \(s) of layer \(k) direction \(d)")
                    }
                }
            }
        }
    }

    /// Bidirectional layers with two host threads run their directions side by side (one
    /// thread each); with one, or with SEQCELL_SESSION_DIRECTIONS=serial, one after the
    /// other. Both give `Model.forward`'s output, and a warmed side-by-side call allocates
    /// nothing (the job is built by init).
    func testBidirectionalDirectionsSideBySide() throws {
        try requireCounter()
        try requireOptimisedCells("testBidirectionalDirectionsSideBySide")
        let threads = HostParallelism.threads
        defer { HostParallelism.setThreads(threads) }
        let (T, B) = (31, 4)
        let lengths: [Int32] = [31, 2, 17, 30]
        for cell in ["rnn", "lstm", "gru"] {
            let m = try model(cell, layers: [(.bidirectional, .concat), (.bidirectional, .sum)], head: false, hidden: 7)
            var rng = TestRNG(seed: 9)
            let x = rng.tensor([T, B, 3])
            for lens in [nil, lengths] {
                let reference = try m.forward(input: x, lengths: lens).output
                var outputs: [Tensor] = []
                for n in [2, 1] {
                    HostParallelism.setThreads(n)
                    let session = try InferenceSession(model: m, steps: T, batch: B, chunkSteps: 8)
                    var y = session.makeOutput()
                    for _ in 0..<2 { try session.forward(input: x, lengths: lens, into: &y) }
                    let before = seqcell_alloc_count()
                    try session.forward(input: x, lengths: lens, into: &y)
                    XCTAssertEqual(seqcell_alloc_count() - before, 0, "\(cell), \(n) threads: a warmed-up call allocated")
                    assertClose(y, reference, tol: 1e-5, "\(cell), \(n) threads: session vs Model.forward")
                    outputs.append(y)
                }
                XCTAssertEqual(outputs[0], outputs[1], "\(cell): side by side vs one after the other")
            }
        }
    }

    /// Chunked calls (1, 3, 7 steps and whole) give the whole-sequence answer for every
    /// cell, direction and merge mode, with lengths that end inside, at and before chunk
    /// boundaries.
    func testChunkedForwardMatchesWholeSequence() throws {
        let (T, B) = (14, 5)
        let lengths: [Int32] = [14, 1, 3, 7, 8]
        let shapes: [[(Direction, MergeMode)]] = [[(.forward, .concat)], [(.reverse, .concat)], [(.bidirectional, .concat)],
                                                  [(.bidirectional, .sum), (.forward, .concat)], [(.bidirectional, .ave)],
                                                  [(.bidirectional, .mul)]]
        for cell in ["rnn", "lstm", "gru"] {
            for layers in shapes {
                let m = try model(cell, layers: layers, head: false, hidden: 6)
                var rng = TestRNG(seed: 11)
                let x = rng.tensor([T, B, 3])
                for lens in [nil, lengths] {
                    // The reference: each cell called once over all T steps.
                    let whole = try InferenceSession(model: m, steps: T, batch: B, chunkSteps: T)
                    var expected = whole.makeOutput()
                    try whole.forward(input: x, lengths: lens, into: &expected)
                    let viaModel = try m.forward(input: x, lengths: lens)
                    assertClose(expected, viaModel.output, tol: 1e-5, "\(cell) \(layers): whole session vs Model.forward")
                    for chunk in [1, 3, 7] {
                        let s = try InferenceSession(model: m, steps: T, batch: B, chunkSteps: chunk)
                        var y = s.makeOutput()
                        try s.forward(input: x, lengths: lens, into: &y)
                        let what = "\(cell) \(layers) chunk \(chunk) lengths \(lens == nil ? "none" : "given")"
                        assertClose(y, expected, tol: 1e-5, what)
                        let got = s.finalStates.flatMap { $0.flatMap { $0.flatMap(\.data) } }
                        let want = whole.finalStates.flatMap { $0.flatMap { $0.flatMap(\.data) } }
                        assertClose(Tensor(shape: [got.count], data: got), Tensor(shape: [want.count], data: want),
                                    tol: 1e-5, "\(what): final states")
                        if lens != nil {
                            // Past a sample's length the output is zero (sample 1 has length 1).
                            for t in 1..<T { for j in 0..<m.outputSize { XCTAssertEqual(y.data[(t * B + 1) * m.outputSize + j], 0, what) } }
                        }
                    }
                }
            }
        }
    }

    /// `Model.forward` in inference mode holds, beyond the parameters and input the caller
    /// has, the output plus the cell's workspace — not the input projection of every step.
    /// The built-in LSTM projects chunks of steps itself (`ChunkedInputProjection`): its
    /// inference workspace does not grow with T, so the host runs the call whole, and that
    /// workspace is one ring of projected steps (≤ 512 KB) and the packed weights.
    func testPeakMemoryOfForwardCallIsOneChunk() throws {
        try requireCounter()
        let (T, B, I, H) = (600, 16, 32, 128)
        let m = try model("lstm", layers: [(.forward, .concat)], head: false, input: I, hidden: H)
        var rng = TestRNG(seed: 5)
        let x = rng.tensor([T, B, I])
        let cell = m.layers[0].cells[0].cell
        XCTAssertLessThan(Cell.inferenceChunk(T: T, B: B), T, "the default chunk should split T = \(T) at B = \(B)")
        XCTAssertEqual(cell.inferenceChunkSteps(T: T, B: B), T, "the LSTM's workspace does not grow with T: one call")
        let workspace = try cell.requiredWorkspace(T: T, B: B, training: false)
        XCTAssertEqual(workspace, try cell.requiredWorkspace(T: 4 * T, B: B, training: false), "inference workspace grows with T")
        // Ring (≤ 512 KB) + bias row + W_ih and W_hh packed + h [2, B, H], c [B, H] + alignment.
        let packs = 4 * H * (I + H) * 4
        let workspaceBound = 512 * 1024 + packs + 3 * B * H * 4 + 64 * 1024
        XCTAssertLessThanOrEqual(workspace, workspaceBound, "inference workspace \(workspace) B")
        // A cell that projects every step at once (the RNN) is still called chunk by chunk.
        let rnn = try model("rnn", layers: [(.forward, .concat)], head: false, input: I, hidden: H).layers[0].cells[0].cell
        XCTAssertLessThan(rnn.inferenceChunkSteps(T: T, B: B), T, "the RNN's workspace grows with T: chunked")
        let outputBytes = T * B * H * 4
        let projectionBytes = T * B * 4 * H * 4
        // Cold call: nothing pooled yet, so the workspace is allocated inside the call.
        let base = seqcell_alloc_current_bytes()
        seqcell_alloc_reset_peak()
        let y = try m.forward(input: x).output
        let peak = Int(seqcell_alloc_peak_bytes() - base)
        XCTAssertEqual(y.shape, [T, B, H])
        // Besides: the final states and their tensors (2 states × [B, H] each), pointer tables
        // and small arrays.
        let slack = 6 * (2 * B * H * 4) + 16 * 1024
        XCTAssertLessThanOrEqual(peak, outputBytes + workspaceBound + slack,
                                 "peak \(peak) B > output \(outputBytes) + workspace bound \(workspaceBound) + \(slack)")
        XCTAssertLessThan(peak, outputBytes + projectionBytes / 8,
                          "peak \(peak) B holds much of the projection of every step (\(projectionBytes) B)")
    }

    /// A session allocated up front: a warmed-up call adds nothing to the heap.
    func testWarmedUpSessionCallAddsNothingToPeak() throws {
        try requireCounter()
        try requireOptimisedCells("testWarmedUpSessionCallAddsNothingToPeak")
        let (T, B, I, H) = (600, 16, 32, 128)
        let m = try model("lstm", layers: [(.forward, .concat)], head: false, input: I, hidden: H)
        var rng = TestRNG(seed: 5)
        let x = rng.tensor([T, B, I])
        let y = try m.forward(input: x).output
        // One host thread: with
        // more, the steps of this model are split over the host's pool, whose hand-off of a
        // Swift closure allocates its context in an unoptimised build.
        let threads = HostParallelism.threads
        HostParallelism.setThreads(1)
        defer { HostParallelism.setThreads(threads) }
        let session = try InferenceSession(model: m, steps: T, batch: B)
        var out = session.makeOutput()
        try session.forward(input: x, into: &out)
        let before = seqcell_alloc_current_bytes()
        let calls = seqcell_alloc_count()
        seqcell_alloc_reset_peak()
        try session.forward(input: x, into: &out)
        XCTAssertEqual(seqcell_alloc_count() - calls, 0, "a warmed-up session call allocated")
        XCTAssertEqual(seqcell_alloc_peak_bytes() - before, 0, "a warmed-up session call raised the heap's peak")
        assertClose(out, y, tol: 1e-5, "session vs Model.forward")
    }

    func testSessionRefusesBadInput() throws {
        let m = try model("gru", layers: [(.forward, .concat)], head: false)
        let session = try InferenceSession(model: m, steps: 10, batch: 4)
        var y = session.makeOutput()
        var rng = TestRNG(seed: 1)
        func message(_ body: () throws -> Void) -> String {
            do { try body(); return "" } catch { return "\(error)" }
        }
        XCTAssert(message { try session.forward(input: rng.tensor([10, 3, 3]), into: &y) }.contains("batch of 3"))
        XCTAssert(message { try session.forward(input: rng.tensor([11, 4, 3]), into: &y) }.contains("at most 10"))
        XCTAssert(message { try session.forward(input: rng.tensor([10, 4, 2]), into: &y) }.contains("takes 3"))
        XCTAssert(message { try session.forward(input: rng.tensor([5, 4, 3]), lengths: [5, 6, 1, 1], into: &y) }
            .contains("lengths[1] = 6 is outside 1...5"))
        XCTAssert(message { try session.forward(input: rng.tensor([5, 4, 3]), lengths: [5, 1], into: &y) }
            .contains("2 values for a batch of 4"))
        XCTAssert(message { _ = try InferenceSession(model: m, steps: 0, batch: 4) }.contains("steps >= 1"))
        // A shorter call than `steps` is fine and reshapes the output.
        try session.forward(input: rng.tensor([6, 4, 3]), into: &y)
        XCTAssertEqual(y.shape, [6, 4, 5])
    }
}

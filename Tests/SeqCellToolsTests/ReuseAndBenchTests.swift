import Foundation
import XCTest
@testable import SeqCellBase
@testable import SeqCellHost
@testable import SeqCellModel
@testable import SeqCellFormats
@testable import SeqCellTools
import SeqCellTestSupport

/// Workspace reuse gives identical results across calls and threads; the packed small-batch
/// path agrees with the BLAS path; bidirectional layers run their directions concurrently
/// with the same results as one at a time; the benchmark library runs a tiny configuration.
final class ReuseAndBenchTests: XCTestCase {
    func testRepeatedAndConcurrentForwardsAreIdentical() throws {
        var rng = SplitMix64(seed: 21)
        for id in ["rnn", "lstm", "gru"] {
            let cell = try testRegistry.cellType(id).instantiate(inputSize: 5, hiddenSize: 9)
            let params = cell.params.map { rng.uniformTensor($0.shape, scale: 0.5) }
            let x = rng.uniformTensor([7, 6, 5], scale: 1)
            let lengths: [Int32] = [7, 1, 4, 7, 2, 6]
            let first = try cell.forward(input: x, lengths: lengths, params: params)
            for _ in 0..<3 {
                let again = try cell.forward(input: x, lengths: lengths, params: params)
                XCTAssertEqual(again.output, first.output, id)
                XCTAssertEqual(again.finalStates, first.finalStates, id)
            }
            XCTAssertEqual(cell.pooledWorkspaces, 1, "\(id): one idle workspace after sequential calls")
            // Training tapes hold their workspace until released, then give it back.
            do {
                let t1 = try cell.forward(input: x, lengths: lengths, params: params, training: true)
                let t2 = try cell.forward(input: x, lengths: lengths, params: params, training: true)
                XCTAssertEqual(t1.output, first.output)
                XCTAssertEqual(t2.output, first.output)
                _ = try cell.backward(tape: t1.tape!, gradOutput: t1.output)
            }
            XCTAssertLessThanOrEqual(cell.pooledWorkspaces, Cell.workspacePoolLimit)
            // Many threads on one cell: every result is the same.
            let outs = Mutex<[Tensor]>([])
            DispatchQueue.concurrentPerform(iterations: 8) { _ in
                let r = try! cell.forward(input: x, lengths: lengths, params: params)
                outs.withLock { $0.append(r.output) }
            }
            XCTAssertEqual(outs.withLock { $0.count }, 8)
            for o in outs.withLock({ $0 }) { XCTAssertEqual(o, first.output, "\(id): concurrent call differs") }
            XCTAssertLessThanOrEqual(cell.pooledWorkspaces, Cell.workspacePoolLimit)
        }
    }

    /// Batches up to RecurrentProduct's limit (4) use the packed kernel, larger ones BLAS:
    /// each sample run alone (packed) must match the batch of 9 (BLAS), per cell and width.
    func testSmallBatchKernelAgreesWithBLASPath() throws {
        var rng = SplitMix64(seed: 22)
        for (id, opts) in [("rnn", [String: String]()), ("lstm", [:]), ("lstm", ["proj_size": "5"]), ("gru", [:]),
                           ("gru", ["reset": "before"])] {
            for hidden in [8, 37] {
                let type = try testRegistry.cellType(id)
                let cell = try type.instantiate(inputSize: 6, hiddenSize: hidden, options: try type.parseOptions(opts))
                let params = cell.params.map { rng.uniformTensor($0.shape, scale: 0.4) }
                let (T, B) = (5, 9)
                let x = rng.uniformTensor([T, B, 6], scale: 1)
                let batch = try cell.forward(input: x, params: params)
                let O = cell.outputSize
                for b in 0..<B {
                    var xb = [Float]()
                    for t in 0..<T { xb += x.data[((t * B + b) * 6)..<((t * B + b) * 6 + 6)] }
                    let one = try cell.forward(input: Tensor(shape: [T, 1, 6], data: xb), params: params)
                    for t in 0..<T {
                        for j in 0..<O {
                            XCTAssertEqual(one.output.data[t * O + j], batch.output.data[(t * B + b) * O + j], accuracy: 2e-5,
                                           "\(id) \(opts) H=\(hidden) b=\(b) t=\(t)")
                        }
                    }
                }
            }
        }
    }

    func testBidirectionalConcurrentMatchesSequential() throws {
        let model = try Model.build(inputSize: 4, layers: [LayerSpec(cell: "lstm", hiddenSize: 6, direction: .bidirectional),
                                                           LayerSpec(cell: "gru", hiddenSize: 5, direction: .bidirectional, mergeMode: .sum)],
                                    registry: testRegistry, seed: 3)
        var rng = SplitMix64(seed: 4)
        let x = rng.uniformTensor([6, 3, 4], scale: 1)
        let lengths: [Int32] = [6, 2, 5]
        let saved = HostParallelism.threads
        defer { HostParallelism.setThreads(saved) }
        HostParallelism.setThreads(1)
        let seq = try model.forward(input: x, lengths: lengths, training: true)
        let gseq = try model.backward(seq, gradOutput: seq.output)
        HostParallelism.setThreads(2)
        let par = try model.forward(input: x, lengths: lengths, training: true)
        let gpar = try model.backward(par, gradOutput: par.output)
        XCTAssertEqual(par.output, seq.output)
        XCTAssertEqual(par.finalStates, seq.finalStates)
        XCTAssertEqual(gpar.input, gseq.input)
        XCTAssertEqual(gpar.params, gseq.params)
    }

    func testBenchmarkRunsATinyConfiguration() throws {
        let c = BenchConfig(name: "tiny", cell: "lstm", layers: 2, bidirectional: true, inputSize: 3, hiddenSize: 4,
                            batch: 2, seqLen: 5)
        let perDirection: Double = 2 * 5 * 2 * 4 * 4  // 2·T·B·G·H
        XCTAssertEqual(try c.gates(registry: testRegistry), 4)  // LSTM: weight_ih is [4H, I]
        XCTAssertEqual(c.flopsPerCall(gates: 4), 2 * perDirection * (3 + 4) + 2 * perDirection * (8 + 4))
        let runner = try BenchRunner(config: c, registry: testRegistry)
        XCTAssertEqual(runner.gates, 4)
        for (cell, gates) in [("gru", 3), ("rnn", 1)] {
            let other = BenchConfig(name: "tiny", cell: cell, inputSize: 3, hiddenSize: 4, batch: 2, seqLen: 5)
            XCTAssertEqual(try other.gates(registry: testRegistry), gates, cell)
        }
        let out = try XCTUnwrap(runner.call())
        XCTAssertEqual(out, try runner.model.forward(input: runner.input).output)
        XCTAssertEqual(out.shape, [5, 2, 8])
        let r = try Benchmark.run(c, registry: testRegistry, warmup: 1, repeats: 3)
        XCTAssertEqual(r.times.count, 3)
        XCTAssert(r.min <= r.median && r.median <= r.max)
        var f = c
        f.training = true
        f.layers = 1
        f.bidirectional = false
        let trainer = try BenchRunner(config: f, registry: testRegistry)
        let before = trainer.model.namedParameters.map(\.value)
        XCTAssertNil(try trainer.call())
        XCTAssertEqual(XCTAssertNoThrowValue(try trainer.measure(warmup: 0, repeats: 2)).count, 2)
        _ = before
        XCTAssertEqual(BenchConfig.standard.map(\.name), ["A", "B", "C", "D", "E", "F"])
        XCTAssertEqual(runner.api, .session)
        let viaModel = try BenchRunner(config: c, registry: testRegistry, api: .model)
        XCTAssertEqual(try viaModel.call(), out)
    }

    /// `seqcell bench` times A–E through a warmed `InferenceSession` by default: its output
    /// is the one `Model.forward` gives (`--api model`), call after call.
    func testSessionAndModelAPIsGiveTheSameOutput() throws {
        for c in BenchConfig.standard where !c.training {
            let session = try BenchRunner(config: c, registry: testRegistry)
            let model = try BenchRunner(config: c, registry: testRegistry, api: .model)
            XCTAssertEqual(model.input, session.input, c.name)
            let want = try XCTUnwrap(model.call(), c.name)
            for call in 0..<2 {
                let got = try XCTUnwrap(session.call(), c.name)
                XCTAssertEqual(got.shape, want.shape, c.name)
                XCTAssertEqual(got, want, "\(c.name): session call \(call) vs Model.forward")
            }
        }
    }
}

private func XCTAssertNoThrowValue<T>(_ body: @autoclosure () throws -> T) -> T {
    do { return try body() } catch { XCTFail("\(error)"); fatalError() }
}

import Synchronization

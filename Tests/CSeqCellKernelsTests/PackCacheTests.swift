import CSeqCell
import CSeqCellKernels
import XCTest
@testable import SeqCellBase
@testable import SeqCellHost
@testable import SeqCellModel
import SeqCellTestSupport

/// ABI 1.3 `params_epoch`: the built-in LSTM and GRU keep their packed weights in an inference
/// workspace between calls of one epoch (`PackCache`). Raw plugin calls on one workspace,
/// loaded through the registry, against `Cell.forward` (epoch 0, a fresh workspace) on the
/// same parameters: a call of the same epoch reuses the packs (shown by changing the weights
/// in place behind the epoch's back: the output stays the old weights'), and every call the
/// cache must not serve — another epoch, another T, another weight pointer, a training call
/// in between, a 1.2 host's shorter struct — packs anew and gives the new weights' output
/// bit for bit. Runs on this CPU's best kernel path (SEQCELL_ISA caps it).
final class PackCacheTests: XCTestCase {

    struct Raw {
        let cell: Cell
        let params: [StableBuffer<Float>]
        let table: StableBuffer<UnsafePointer<Float>?>
        let workspace: AlignedBuffer
        let bytes: Int
        let B: Int

        init(cell: Cell, params: [Tensor], B: Int, maxT: Int) throws {
            self.cell = cell
            self.B = B
            self.params = params.map { StableBuffer($0.data) }
            table = StableBuffer<UnsafePointer<Float>?>(self.params.map { UnsafePointer($0.pointer) })
            bytes = try max(cell.requiredWorkspace(T: maxT, B: B, training: true),
                            cell.requiredWorkspace(T: maxT, B: B, training: false))
            workspace = try AlignedBuffer(bytes: bytes)
        }

        /// The current contents of the parameter buffers as tensors.
        func tensors() -> [Tensor] {
            zip(params, cell.params).map { Tensor(shape: $1.shape, data: $0.values) }
        }

        /// One raw forward on the shared workspace. `structSize`: what the host claims.
        func forward(_ x: Tensor, epoch: UInt64, training: Bool = false, table: StableBuffer<UnsafePointer<Float>?>? = nil,
                     structSize: Int? = nil) throws -> [Float] {
            let T = x.shape[0]
            let y = StableBuffer<Float>(repeating: .nan, count: T * B * cell.outputSize)
            let input = StableBuffer(x.data)
            let finals = cell.states.map { StableBuffer<Float>(repeating: 0, count: B * $0.size) }
            let finalTable = StableBuffer<UnsafeMutablePointer<Float>?>(finals.map { $0.pointer })
            var args = ABICall.forwardArgs(T: T, B: B, training: training, input: input.constPointer, lengths: nil,
                                           params: (table ?? self.table).constPointer, initialStates: nil,
                                           output: y.pointer, finalStates: finalTable.constPointer,
                                           workspace: workspace.pointer, workspaceBytes: bytes, paramsEpoch: epoch)
            if training { args.params_epoch = epoch }  // a host may not send one; the cell must ignore it
            if let structSize { args.struct_size = UInt32(structSize) }
            var error = ErrorBuffer()
            let status = cell.rawForward(&args, error: &error)
            guard status == SEQCELL_OK else { throw SeqCellError(.cell, error.message(status: status)) }
            return y.values
        }
    }

    /// Bit for bit (compact messages: the arrays are long).
    func same(_ a: [Float], _ b: [Float], _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        let worst = a.count == b.count ? zip(a, b).map { abs($0 - $1) }.max() ?? 0 : .infinity
        XCTAssertTrue(a == b, "\(what): differs (worst \(worst))", file: file, line: line)
    }

    func differ(_ a: [Float], _ b: [Float], _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertTrue(a != b, "\(what)", file: file, line: line)
    }

    func reference(_ raw: Raw, _ x: Tensor) throws -> [Float] {
        try raw.cell.forward(input: x, params: raw.tensors()).output.data
    }

    /// `cached`: whether the cell keeps any pack on this CPU's path (the general LSTM does not;
    /// a GRU with the reset gate before packs only W_ih, on the AVX-512 projection).
    func check(_ spec: String, I: Int, B: Int, T: Int, cached: Bool = true) throws {
        let model = try Model.build(inputSize: I, layers: [try LayerSpec(parsing: spec)], registry: testRegistry, seed: 3)
        let cell = model.layers[0].cells[0]
        let raw = try Raw(cell: cell.cell, params: cell.params, B: B, maxT: T)
        var rng = SplitMix64(seed: 5)
        let x = rng.uniformTensor([T, B, I], scale: 1.0)
        let xShort = Tensor(shape: [T - 2, B, I], data: Array(x.data[0..<(T - 2) * B * I]))
        let e1 = ParamsEpoch.next(), e2 = ParamsEpoch.next()
        let old = try reference(raw, x)

        same(try raw.forward(x, epoch: e1), old, "\(spec): first call of an epoch")
        same(try raw.forward(x, epoch: e1), old, "\(spec): second call of an epoch")

        // Change every weight in place, keeping the pointers: the same epoch is now a broken
        // promise, so what the cell returns shows whether it reused its packs.
        func scaleWeights(_ s: Float) {
            for p in raw.params { for i in 0..<p.count { p.pointer[i] *= s } }
        }
        scaleWeights(0.5)
        let new = try reference(raw, x)
        differ(new, old, "\(spec): the changed weights change the output")
        let reused = try raw.forward(x, epoch: e1)
        if cached {
            // The fused built-in cells pack W_hh (and W_ih on the packed projection path): the
            // packs survive; the biases are read anew each call, so the output is neither.
            differ(reused, new, "\(spec): a call of the same epoch packed again (the cache was not used)")
        }

        // Another epoch: packs anew.
        same(try raw.forward(x, epoch: e2), new, "\(spec): a new epoch")
        scaleWeights(2)
        // Another T under the same epoch: packs anew.
        same(try raw.forward(xShort, epoch: e2), try reference(raw, xShort), "\(spec): another T")
        scaleWeights(0.5)
        // A training call on the workspace in between (it may carry an epoch; it is ignored).
        _ = try raw.forward(x, epoch: e2, training: true)
        same(try raw.forward(x, epoch: e2), new, "\(spec): after a training call")
        // Epoch 0: always packs, and leaves nothing a later epoch could take for its own.
        scaleWeights(2)
        same(try raw.forward(x, epoch: 0), old, "\(spec): epoch 0")
        scaleWeights(0.5)
        same(try raw.forward(x, epoch: e2), new, "\(spec): the epoch after an epoch-0 call")
        // The same epoch with other weight pointers (copies of the same values).
        let copies = raw.params.map { StableBuffer($0.values) }
        let moved = StableBuffer<UnsafePointer<Float>?>(copies.map { UnsafePointer($0.pointer) })
        scaleWeights(0.5)
        let quarter = try reference(raw, x)
        same(try raw.forward(x, epoch: e2, table: moved), new, "\(spec): other weight pointers")
        same(try raw.forward(x, epoch: e2), quarter, "\(spec): back to the first pointers")
        // A 1.2 host's struct ends before params_epoch: whatever lies beyond is not read.
        _ = try raw.forward(x, epoch: e1)
        scaleWeights(2)
        let size12 = MemoryLayout<seqcell_forward_args>.offset(of: \seqcell_forward_args.params_epoch)!
        same(try raw.forward(x, epoch: e1, structSize: size12), new, "\(spec): a 1.2 host's arguments")
    }

    func testSameEpochReusesPacksAndEverythingElsePacksAnew() throws {
        // B = 8: the packed recurrent product; I, H multiples of 16 and not.
        try check("lstm:32", I: 24, B: 8, T: 12)
        try check("lstm:37", I: 33, B: 13, T: 9)
        try check("gru:48", I: 40, B: 8, T: 12)
        try check("gru:37,reset=before", I: 33, B: 9, T: 9, cached: sck_best().pointee.isa == Int32(SCK_ISA_AVX512))
        try check("lstm:37,proj_size=9", I: 20, B: 9, T: 9)
        // The general paths (other activations, peepholes) do not cache; they must still be right.
        try check("lstm:16,peepholes=true", I: 12, B: 8, T: 9, cached: false)
    }

    func testForwardArgumentsShorterThanABI12AreRefusedNamingBothSizes() throws {
        // The kit accepts a 1.2 host's struct (it ends before params_epoch) but nothing shorter.
        let model = try Model.build(inputSize: 4, layers: [try LayerSpec(parsing: "lstm:8")], registry: testRegistry, seed: 1)
        let cell = model.layers[0].cells[0]
        let raw = try Raw(cell: cell.cell, params: cell.params, B: 2, maxT: 3)
        let x = Tensor(shape: [3, 2, 4], data: (0..<24).map { Float($0) / 24 })
        let size12 = MemoryLayout<seqcell_forward_args>.offset(of: \seqcell_forward_args.params_epoch)!
        XCTAssertNoThrow(try raw.forward(x, epoch: 0, structSize: size12))
        XCTAssertThrowsError(try raw.forward(x, epoch: 0, structSize: size12 - 8)) { error in
            XCTAssertTrue("\(error)".contains("forward args struct_size \(size12 - 8) is smaller than its ABI 1.2 size \(size12)"),
                          "\(error)")
        }
    }

    func testASessionGivesACellOneEpochAndEachSessionItsOwn() throws {
        let model = try Model.build(inputSize: 20, layers: [try LayerSpec(parsing: "lstm:32")], registry: testRegistry, seed: 4)
        var rng = SplitMix64(seed: 6)
        let x = rng.uniformTensor([10, 8, 20], scale: 1.0)
        let want = try model.forward(input: x).output
        let s1 = try InferenceSession(model: model, steps: 10, batch: 8)
        let s2 = try InferenceSession(model: model, steps: 10, batch: 8)
        var y1 = s1.makeOutput(), y2 = s2.makeOutput()
        for _ in 0..<3 {
            try s1.forward(input: x, into: &y1)
            try s2.forward(input: x, into: &y2)
            XCTAssertEqual(y1.data, want.data)
            XCTAssertEqual(y2.data, want.data)
        }
    }
}

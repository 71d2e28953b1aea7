import CSeqCell
import Foundation
import XCTest
import SeqCellBase
import SeqCellHost
import SeqCellModel
import SeqCellFormats
import SeqCellConformance

/// Shared checks for the gated cells (lstm, gru), all through the registry.

package func sigmoidD(_ x: Double) -> Double { 1 / (1 + Foundation.exp(-x)) }

/// Reads row `r` of a row-major [rows, cols] parameter as Doubles.
package func rowD(_ t: Tensor, _ r: Int) -> [Double] {
    let cols = t.shape[1]
    return (0..<cols).map { Double(t.data[r * cols + $0]) }
}

package func dotD(_ a: [Double], _ b: [Double]) -> Double {
    precondition(a.count == b.count)
    var s = 0.0
    for i in a.indices { s += a[i] * b[i] }
    return s
}

package func maxAbsDiff(_ a: Tensor, _ b: Tensor) -> Float {
    zip(a.data, b.data).reduce(0) { max($0, abs($1.0 - $1.1)) }
}

/// The NULL conventions of backward (seqcell.h): a NULL grad_output, NULL grad_final_states
/// and NULL entries in it all mean zero. Backward is linear in those gradients, so the
/// gradients for (R_out, all R_s) must equal the sum of the gradients for (R_out, NULL) and
/// for (NULL, only R_s) over every state s; and (NULL, NULL) must give exact zeros.
/// Each backward gets its own training forward (backward may reuse the workspace).
package func assertNullGradientConventions(_ cell: Cell, T: Int, B: Int, lengths: [Int32]?, seed: UInt64,
                                   _ what: String, file: StaticString = #filePath, line: UInt = #line) throws {
    var rng = TestRNG(seed: seed)
    let x = rng.tensor([T, B, cell.inputSize])
    let params = cell.params.map { rng.tensor($0.shape, scale: 0.5) }
    let h0: [Tensor?] = cell.states.map { rng.tensor([B, $0.size], scale: 0.5) }
    let rOut = rng.tensor([T, B, cell.outputSize])
    let rStates: [Tensor?] = cell.states.map { rng.tensor([B, $0.size]) }

    func grads(_ gy: Tensor?, _ gs: [Tensor?]) throws -> Cell.Gradients {
        let fwd = try cell.forward(input: x, lengths: lengths, params: params, initialStates: h0, training: true)
        return try cell.backward(tape: fwd.tape!, gradOutput: gy, gradFinalStates: gs)
    }
    func flat(_ g: Cell.Gradients) -> [Float] {
        g.input!.data + g.params.flatMap(\.data) + g.initialStates.flatMap(\.data)
    }

    let full = flat(try grads(rOut, rStates))
    var sum = flat(try grads(rOut, []))
    for s in cell.states.indices {
        var only = [Tensor?](repeating: nil, count: cell.states.count)
        only[s] = rStates[s]
        let part = flat(try grads(nil, only))
        for i in sum.indices { sum[i] += part[i] }
    }
    let worst = zip(full, sum).reduce(Float(0)) { max($0, abs($1.0 - $1.1)) }
    XCTAssert(worst <= 1e-4, "\(what): gradients of the parts do not add up (max diff \(worst))", file: file, line: line)
    let none = flat(try grads(nil, []))
    XCTAssert(none.allSatisfy { $0 == 0 }, "\(what): zero output gradients must give zero gradients", file: file, line: line)
    XCTAssert(full.contains { $0 != 0 }, "\(what): gradients are all zero", file: file, line: line)
}

/// Runs the finite-difference check and fails on every result that does not pass.
package func assertGradientsMatch(_ cell: Cell, T: Int, B: Int, lengths: [Int32]?, _ what: String,
                          file: StaticString = #filePath, line: UInt = #line) throws {
    let results = try GradientCheck.checkCell(cell, T: T, B: B, lengths: lengths)
    let expected = 1 + cell.params.count + cell.states.count
    XCTAssertEqual(results.count, expected, "\(what): unexpected number of checks", file: file, line: line)
    for r in results {
        XCTAssert(r.passed, "\(what): \(r)", file: file, line: line)
        XCTAssertGreaterThan(r.checked, 0, "\(what): \(r.name) checked nothing", file: file, line: line)
    }
}

/// The expected layout of a parameter: name, role, shape, gate order.
package struct ExpectedParam: Equatable, CustomStringConvertible {
    package let name: String
    package let role: ParamInfo.Role
    package let shape: [Int]
    package let gateOrder: String
    package init(_ name: String, _ role: ParamInfo.Role, _ shape: [Int], _ gateOrder: String) {
        self.name = name
        self.role = role
        self.shape = shape
        self.gateOrder = gateOrder
    }
    package init(_ p: ParamInfo) { self.init(p.name, p.role, p.shape, p.gateOrder) }
    package var description: String { "\(name) \(role) \(shape) '\(gateOrder)'" }
}

/// Calls a cell's plugin straight through seqcell.h (not through `Cell`), to check what
/// `Cell.forward`/`backward` cannot show: that backward ADDS into grad_params, that NULL
/// grad_input / grad_initial_states / grad_final_states are accepted, and that the plugin
/// neither reads workspace it has not written (the block is filled with NaN first) nor
/// writes past `workspace_size` (guard bytes after it must stay intact).
package func assertRawABIConventions(_ cell: Cell, T: Int, B: Int, lengths: [Int32]?, seed: UInt64, _ what: String,
                             file: StaticString = #filePath, line: UInt = #line) throws {
    var rng = TestRNG(seed: seed)
    let x = rng.tensor([T, B, cell.inputSize])
    let params = cell.params.map { rng.tensor($0.shape, scale: 0.5) }
    let h0: [Tensor?] = cell.states.map { rng.tensor([B, $0.size], scale: 0.5) }
    let rOut = rng.tensor([T, B, cell.outputSize])
    let prefill = cell.params.map { rng.tensor($0.shape) }

    // What the host path gives (zeroed grad_params, all states' gradients wanted).
    let fwd = try cell.forward(input: x, lengths: lengths, params: params, initialStates: h0, training: true)
    let expected = try cell.backward(tape: fwd.tape!, gradOutput: rOut, gradFinalStates: [])

    let desc = cell.type.desc
    let values = cell.type.options.map { $0.abiValue(cell.options[$0.name]!) }
    var inst: UnsafeMutableRawPointer? = nil
    var error = [CChar](repeating: 0, count: 512)
    let created = values.withUnsafeBufferPointer { vals in
        var config = seqcell_config()
        config.struct_size = UInt32(MemoryLayout<seqcell_config>.size)
        config.num_options = Int32(values.count)
        config.input_size = Int64(cell.inputSize)
        config.hidden_size = Int64(cell.hiddenSize)
        config.options = vals.baseAddress
        return cell.type.rawCreate(&config, &inst, &error, error.count)
    }
    XCTAssertEqual(created, SEQCELL_OK, "\(what): create failed", file: file, line: line)
    guard let inst else { return }
    defer { desc.destroy(inst) }

    let wsBytes = try cell.requiredWorkspace(T: T, B: B, training: true)
    let guardBytes = 256
    var raw: UnsafeMutableRawPointer? = nil
    XCTAssertEqual(posix_memalign(&raw, 64, wsBytes + guardBytes), 0)
    guard let ws = raw else { return }
    defer { free(ws) }
    let nanBits = Float.nan.bitPattern
    for i in 0..<(wsBytes / 4) { ws.storeBytes(of: nanBits, toByteOffset: i * 4, as: UInt32.self) }
    for i in 0..<guardBytes { ws.storeBytes(of: 0xA5, toByteOffset: wsBytes + i, as: UInt8.self) }
    func guardIntact() -> Bool { (0..<guardBytes).allSatisfy { ws.load(fromByteOffset: wsBytes + $0, as: UInt8.self) == 0xA5 } }

    // Every tensor in host memory of fixed address: the argument structs point into it.
    let xBuf = StableBuffer(x.data)
    let lengthBuf = lengths.map { StableBuffer($0) }
    let paramBufs = params.map { StableBuffer($0.data) }
    let paramTable = StableBuffer(paramBufs.map { Optional(UnsafePointer($0.pointer)) })
    let stateBufs = h0.map { $0.map { StableBuffer($0.data) } }
    let stateTable = StableBuffer(stateBufs.map { $0.map { UnsafePointer($0.pointer) } })
    let outputBuf = StableBuffer<Float>(repeating: 0, count: T * B * cell.outputSize)
    let finals = OutputBuffers(shapes: cell.states.map { [B, $0.size] })
    let gradOutBuf = StableBuffer(rOut.data)
    let gradOut = OutputBuffers(shapes: prefill.map(\.shape))
    for (buffer, values) in zip(gradOut.buffers, prefill) { buffer.assign(values.data) }

    var f = ABICall.forwardArgs(T: T, B: B, training: true, input: xBuf.constPointer, lengths: lengthBuf?.constPointer,
                                params: paramTable.constPointer, initialStates: stateTable.constPointer,
                                output: outputBuf.pointer, finalStates: finals.pointers,
                                workspace: ws, workspaceBytes: wsBytes)
    var b = ABICall.backwardArgs(T: T, B: B, input: xBuf.constPointer, lengths: lengthBuf?.constPointer,
                                 params: paramTable.constPointer, initialStates: stateTable.constPointer,
                                 output: outputBuf.constPointer, gradOutput: gradOutBuf.constPointer, gradFinalStates: nil,
                                 gradInput: nil, gradInitialStates: nil, gradParams: gradOut.pointers,
                                 workspace: ws, workspaceBytes: wsBytes)
    let s1 = desc.forward(inst, &f, &error, error.count)
    let status = (s1, s1 == SEQCELL_OK ? desc.backward(inst, &b, &error, error.count) : SEQCELL_OK)
    let output = Tensor(shape: [T, B, cell.outputSize], data: outputBuf.values)
    let gradParams = gradOut.tensors
    let message = error.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    XCTAssertEqual(status.0, SEQCELL_OK, "\(what): forward failed: \(message)", file: file, line: line)
    XCTAssertEqual(status.1, SEQCELL_OK, "\(what): backward failed: \(message)", file: file, line: line)
    XCTAssert(guardIntact(), "\(what): the plugin wrote past its workspace_size", file: file, line: line)
    assertClose(output, fwd.output, tol: 0, "\(what): output with a NaN-filled workspace", file: file, line: line)
    for (s, info) in cell.states.enumerated() {
        assertClose(finals.tensor(s), fwd.finalStates[s], tol: 0, "\(what): final \(info.name)", file: file, line: line)
    }
    for (i, info) in cell.params.enumerated() {
        let added = Tensor(shape: info.shape, data: zip(gradParams[i].data, prefill[i].data).map { $0 - $1 })
        assertClose(added, expected.params[i], tol: 1e-5, "\(what): grad_params must be added to (\(info.name))",
                    file: file, line: line)
    }
}

/// Every option of a cell type at its default (the full set `Cell.init` takes).
package func defaultOptions(_ type: CellType) -> [String: OptionValue] {
    Dictionary(uniqueKeysWithValues: type.options.map { ($0.name, $0.defaultValue) })
}

import CSeqCell
import Dispatch
import Foundation
import Synchronization
import SeqCellBase
import SeqCellHost

extension PluginConformance {
    // MARK: - Checks

    static func checkInstantiate(_ type: CellType, optionSets: [[String: OptionValue]], _ f: inout Findings) throws -> String {
        let sizes = [(1, 1), (3, 4), (5, 2), (2, 7)]
        for options in optionSets {
            for (i, h) in sizes {
                let config = "I=\(i), H=\(h), options \(Cell.format(options))"
                let cell: Cell
                do {
                    cell = try type.instantiate(inputSize: i, hiddenSize: h, options: options)
                } catch {
                    f.add("\(config): \(error)")
                    continue
                }
                let again = try type.instantiate(inputSize: i, hiddenSize: h, options: options)
                if again.params != cell.params || again.states != cell.states || again.outputSize != cell.outputSize {
                    f.add("\(config): two instances describe different layouts")
                }
                let inputs = Inputs(cell, T: 2, B: 2, seed: 3)
                var rng = SplitMix64(seed: 4)
                let gradOutput = rng.uniformTensor([2, 2, cell.outputSize], scale: 1)
                let fwd = try forward(cell, inputs.x, inputs, lengths: nil, training: true)
                let g = try gradients(cell, inputs.x, inputs, lengths: nil, gradOutput: gradOutput, gradFinalStates: [])
                if !allFinite([fwd.output] + fwd.finalStates) { f.add("\(config): forward produced a non-finite value") }
                if !allFinite([g.input].compactMap { $0 } + g.params + g.initialStates) {
                    f.add("\(config): backward produced a non-finite value")
                }
            }
        }
        return "configures at (I, H) = \(sizes.map { "(\($0.0), \($0.1))" }.joined(separator: ", ")) with "
            + "\(optionSets.count) option set\(optionSets.count == 1 ? "" : "s"); layouts are stable; "
            + "forward and backward give finite results"
    }

    /// create() on a configuration the host would never send must fail with a message.
    static func checkBadConfig(_ type: CellType, _ f: inout Findings) -> String {
        let defaults = type.options.map { $0.abiValue($0.defaultValue) }
        let configSize = UInt32(MemoryLayout<seqcell_config>.size)
        var cases: [(label: String, input: Int64, hidden: Int64, values: [Double], count: Int32, size: UInt32)] = [
            ("hidden_size 0", Int64(I), 0, defaults, Int32(defaults.count), configSize),
            ("input_size 0", 0, Int64(H), defaults, Int32(defaults.count), configSize),
            ("hidden_size -1", Int64(I), -1, defaults, Int32(defaults.count), configSize),
            ("num_options \(defaults.count + 1) (it has \(defaults.count))", Int64(I), Int64(H), defaults + [0],
             Int32(defaults.count + 1), configSize),
            ("config struct_size 4", Int64(I), Int64(H), defaults, Int32(defaults.count), 4),
        ]
        for (k, o) in type.options.enumerated() {
            let bad: (String, Double)
            switch o.kind {
            case .choice(let names): bad = ("choice index \(names.count)", Double(names.count))
            case .int(let lo, let hi): bad = hi < Int.max ? ("\(hi + 1)", Double(hi) + 1) : ("\(lo - 1)", Double(lo) - 1)
            case .float: bad = ("NaN", .nan)
            }
            var values = defaults
            values[k] = bad.1
            cases.append(("option '\(o.name)' = \(bad.0)", Int64(I), Int64(H), values, Int32(values.count), configSize))
        }
        // The registry refuses a descriptor without destroy, forward or backward (PluginRegistry).
        let destroy = type.desc.destroy!
        for c in cases {
            var error = ErrorBuffer()
            var instance: UnsafeMutableRawPointer? = nil
            let status = c.values.withUnsafeBufferPointer { values in
                var config = seqcell_config()
                config.struct_size = c.size
                config.num_options = c.count
                config.input_size = c.input
                config.hidden_size = c.hidden
                config.options = values.baseAddress
                return error.call { type.rawCreate(&config, &instance, $0, $1) }
            }
            if status == SEQCELL_OK {
                f.add("create accepted \(c.label)")
                if let instance { destroy(instance) }
            } else if error.text.isEmpty {
                f.add("create rejected \(c.label) (\(statusName(status))) but wrote no message")
            }
        }
        return "create rejects \(cases.map(\.label).joined(separator: ", ")) with a status and a message"
    }

    /// Expects a raw call to fail with a message.
    static func expectRejected(_ r: RawResult, _ call: String, _ label: String, _ f: inout Findings) {
        if r.status == SEQCELL_OK {
            f.add("\(call) accepted \(label) (status ok)")
        } else if r.message.isEmpty {
            f.add("\(call) rejected \(label) (\(statusName(r.status))) but wrote no message")
        }
    }

    static func checkForwardArguments(_ cell: Cell, _ f: inout Findings) throws -> String {
        let raw = try RawCall(cell, inputs: Inputs(cell, T: 4, B: 2, seed: 5), lengths: [4, 2])
        let valid = raw.forward(training: false)
        guard valid.status == SEQCELL_OK else {
            f.add("a valid raw forward failed: \(valid.message) [\(statusName(valid.status))]")
            return ""
        }
        let zeroLength = StableBuffer<Int32>([4, 0])
        let longLength = StableBuffer<Int32>([4, 5])
        let oneNullParam = raw.paramTable(nullAt: 0)
        let need = raw.inferenceBytes
        var cases: [(String, (inout seqcell_forward_args) -> Void)] = [
            ("struct_size 8", { $0.struct_size = 8 }),
            ("mode 7", { $0.mode = 7 }),
            ("seq_len 0", { $0.seq_len = 0 }),
            ("batch 0", { $0.batch = 0 }),
            ("lengths[1] = 0", { $0.lengths = UnsafePointer(zeroLength.pointer) }),
            ("lengths[1] = 5 with T = 4", { $0.lengths = UnsafePointer(longLength.pointer) }),
            ("input NULL", { $0.input = nil }),
            ("params NULL", { $0.params = nil }),
            ("output NULL", { $0.output = nil }),
        ]
        if let oneNullParam {
            cases.append(("params[0] NULL", { $0.params = UnsafePointer(oneNullParam.pointer) }))
        }
        if need > 0 {
            cases.append(("workspace_size \(need - 1) (it asked for \(need))", { $0.workspace_size = need - 1 }))
            cases.append(("workspace NULL", { $0.workspace = nil }))
        }
        for (label, adjust) in cases {
            expectRejected(raw.forward(training: false, adjust), "forward", label, &f)
        }
        // The message must fit the caller's buffer: capacity 8 inside a larger, marked buffer.
        let marker: CChar = 0x5a
        var buffer = [CChar](repeating: marker, count: 64)
        var args = raw.forwardArgs(training: false)
        args.seq_len = 0
        let forwardFn = cell.type.desc.forward!  // non-NULL: the registry refuses a cell without it
        let status = buffer.withUnsafeMutableBufferPointer { forwardFn(cell.instance, &args, $0.baseAddress, 8) }
        if status != SEQCELL_OK {
            if !buffer[..<8].contains(0) { f.add("forward's message is not NUL-terminated within error_capacity 8") }
            if buffer[8...].contains(where: { $0 != marker }) { f.add("forward wrote past error_capacity 8") }
        }
        return "forward rejects \(cases.map(\.0).joined(separator: ", ")) with a status and a message; "
            + "messages respect error_capacity"
    }

    static func checkBackwardArguments(_ cell: Cell, _ f: inout Findings) throws -> String {
        let raw = try RawCall(cell, inputs: Inputs(cell, T: 4, B: 2, seed: 6), lengths: [4, 2])
        let longLength = StableBuffer<Int32>([4, 5])
        let oneNullParam = raw.paramTable(nullAt: 0)
        let oneNullGrad = raw.gradParamTable(nullAt: 0)
        let need = raw.trainingBytes
        var cases: [(String, (inout seqcell_backward_args) -> Void)] = [
            ("struct_size 8", { $0.struct_size = 8 }),
            ("seq_len 0", { $0.seq_len = 0 }),
            ("batch 0", { $0.batch = 0 }),
            ("lengths[1] = 5 with T = 4", { $0.lengths = UnsafePointer(longLength.pointer) }),
            ("input NULL", { $0.input = nil }),
            ("params NULL", { $0.params = nil }),
            ("grad_params NULL", { $0.grad_params = nil }),
        ]
        if let oneNullParam {
            cases.append(("params[0] NULL", { $0.params = UnsafePointer(oneNullParam.pointer) }))
        }
        // From ABI 1.2 a NULL entry is a frozen parameter, which the cell must accept
        // (checkFrozenGradients); before, it is a bad argument.
        if let oneNullGrad, !cell.acceptsFrozenGradients {
            cases.append(("grad_params[0] NULL", { $0.grad_params = UnsafePointer(oneNullGrad.pointer) }))
        }
        if need > 0 {
            cases.append(("workspace_size \(need - 1) (it asked for \(need))", { $0.workspace_size = need - 1 }))
            cases.append(("workspace NULL", { $0.workspace = nil }))
        }
        for (label, adjust) in [("nothing wrong", { (_: inout seqcell_backward_args) in })] + cases {
            // Each backward follows its own training forward: a backward may consume the workspace.
            let fwd = raw.forward(training: true)
            guard fwd.status == SEQCELL_OK else {
                f.add("a valid training forward failed: \(fwd.message) [\(statusName(fwd.status))]")
                return ""
            }
            let r = raw.backward(adjust)
            if label == "nothing wrong" {
                if r.status != SEQCELL_OK { f.add("a valid raw backward failed: \(r.message) [\(statusName(r.status))]") }
            } else {
                expectRejected(r, "backward", label, &f)
            }
        }
        var detail = "backward rejects \(cases.map(\.0).joined(separator: ", ")) with a status and a message"
        if cell.acceptsFrozenGradients && !cell.params.isEmpty {
            try checkFrozenGradients(cell, &f)
            detail += "; accepts a NULL grad_params entry (a frozen parameter, ABI 1.2) for each parameter, "
                + "leaving every other gradient as it is"
        }
        return detail
    }

    /// ABI 1.2: backward with grad_params[i] NULL succeeds and computes every other gradient
    /// exactly as with all entries present.
    static func checkFrozenGradients(_ cell: Cell, _ f: inout Findings) throws {
        let inputs = Inputs(cell, T: 4, B: 2, seed: 8)
        let reference = try RawCall(cell, inputs: inputs, lengths: [4, 2])
        let fwd = reference.forward(training: true)
        let ref = fwd.status == SEQCELL_OK ? reference.backward() : fwd
        guard ref.status == SEQCELL_OK else {
            f.add("a valid raw forward/backward failed: \(ref.message) [\(statusName(ref.status))]")
            return
        }
        let expected = reference.gradients
        for (i, info) in cell.params.enumerated() {
            let raw = try RawCall(cell, inputs: inputs, lengths: [4, 2])
            guard let table = raw.gradParamTable(nullAt: i) else { continue }
            let fwd = raw.forward(training: true)
            let r = fwd.status == SEQCELL_OK ? raw.backward { $0.grad_params = UnsafePointer(table.pointer) } : fwd
            guard r.status == SEQCELL_OK else {
                f.add("backward refused grad_params[\(i)] ('\(info.name)') NULL: \(r.message) [\(statusName(r.status))]; "
                    + "from ABI 1.2 a NULL entry is a frozen parameter and must be accepted")
                continue
            }
            let got = raw.gradients
            for (p, other) in cell.params.enumerated() where p != i {
                if let k = firstMismatch(got.params[p], expected.params[p], .equal) {
                    f.add("with '\(info.name)' frozen, the gradient of '\(other.name)'[\(k)] is \(got.params[p][k]), "
                        + "\(expected.params[p][k]) with none frozen")
                }
            }
            if let k = firstMismatch(got.input, expected.input, .equal) {
                f.add("with '\(info.name)' frozen, grad_input[\(k)] is \(got.input[k]), \(expected.input[k]) with none frozen")
            }
        }
    }

    static func checkNullArguments(_ cell: Cell, _ f: inout Findings) throws -> String {
        let inputs = Inputs(cell, T: T, B: B, seed: 21)
        let zeros = cell.states.map { Tensor.zeros([B, $0.size]) }
        let base = try forward(cell, inputs.x, inputs, h0: zeros, lengths: lengths)
        compare(try forward(cell, inputs.x, inputs, h0: [], lengths: lengths), base, cell: cell, .equal,
                "initial_states NULL vs zeros", &f)
        compare(try forward(cell, inputs.x, inputs, h0: zeros.map { _ -> Tensor? in nil }, lengths: lengths), base, cell: cell,
                .equal, "every initial_states entry NULL vs zeros", &f)
        let full = try forward(cell, inputs.x, inputs, lengths: nil)
        compare(try forward(cell, inputs.x, inputs, lengths: [Int32](repeating: Int32(T), count: B)), full,
                cell: cell, .equal, "lengths NULL vs all T", &f)

        // final_states entries may be NULL (raw: the wrapper always asks for every state).
        let raw = try RawCall(cell, inputs: inputs, lengths: lengths)
        let noFinals = StableBuffer<UnsafeMutablePointer<Float>?>(cell.states.map { _ in nil })
        let r = raw.forward(training: false) { $0.final_states = UnsafePointer(noFinals.pointer) }
        if r.status != SEQCELL_OK {
            f.add("forward with every final_states entry NULL failed: \(r.message) [\(statusName(r.status))]")
        } else {
            let withFinals = try forward(cell, inputs.x, inputs, lengths: lengths)
            if let i = firstMismatch(raw.output.values, withFinals.output.data, .equal) {
                f.add("final_states entries NULL changed the output of \(place(i, batch: B, width: cell.outputSize))")
            }
        }

        var rng = SplitMix64(seed: 22)
        let gradOutput = rng.uniformTensor([T, B, cell.outputSize], scale: 1)
        let gradFinal = cell.states.map { rng.uniformTensor([B, $0.size], scale: 1) }
        let zeroOutputGrad = Tensor.zeros([T, B, cell.outputSize])
        let both = try gradients(cell, inputs.x, inputs, lengths: lengths, gradOutput: gradOutput, gradFinalStates: gradFinal)
        compare(try gradients(cell, inputs.x, inputs, lengths: lengths, gradOutput: gradOutput, gradFinalStates: zeros),
                try gradients(cell, inputs.x, inputs, lengths: lengths, gradOutput: gradOutput, gradFinalStates: []),
                cell: cell, .equal, "grad_final_states zeros vs NULL", &f)
        compare(try gradients(cell, inputs.x, inputs, lengths: lengths, gradOutput: zeroOutputGrad, gradFinalStates: gradFinal),
                try gradients(cell, inputs.x, inputs, lengths: lengths, gradOutput: nil, gradFinalStates: gradFinal),
                cell: cell, .equal, "grad_output zeros vs NULL", &f)
        let noInput = try gradients(cell, inputs.x, inputs, lengths: lengths, gradOutput: gradOutput,
                                    gradFinalStates: gradFinal, wantInput: false)
        compare(Cell.Gradients(input: nil, initialStates: both.initialStates, params: both.params), noInput,
                cell: cell, .equal, "grad_input NULL vs wanted", &f)
        return "NULL initial states and lengths, NULL final_states entries, NULL grad_output, "
            + "grad_final_states and grad_input behave as seqcell.h says"
    }

    static func checkDeterminism(_ cell: Cell, _ f: inout Findings) throws -> String {
        let inputs = Inputs(cell, T: T, B: B, seed: 31)
        let first = try forward(cell, inputs.x, inputs, lengths: lengths)
        compare(try forward(cell, inputs.x, inputs, lengths: lengths), first, cell: cell, .bitwise,
                "second forward vs first", &f)
        var rng = SplitMix64(seed: 32)
        let gradOutput = rng.uniformTensor([T, B, cell.outputSize], scale: 1)
        let g1 = try gradients(cell, inputs.x, inputs, lengths: lengths, gradOutput: gradOutput, gradFinalStates: [])
        let g2 = try gradients(cell, inputs.x, inputs, lengths: lengths, gradOutput: gradOutput, gradFinalStates: [])
        compare(g2, g1, cell: cell, .bitwise, "second backward vs first", &f)

        // One instance, many threads (seqcell.h: instances are immutable after create).
        let threads = 4
        let outputs = Mutex<[Result<[Float], SeqCellError>?]>(Array(repeating: nil, count: threads))
        DispatchQueue.concurrentPerform(iterations: threads) { k in
            let r: Result<[Float], SeqCellError>
            do {
                let fwd = try forward(cell, inputs.x, inputs, lengths: lengths)
                r = .success(fwd.output.data + fwd.finalStates.flatMap(\.data))
            } catch {
                r = .failure(error as? SeqCellError ?? SeqCellError(.cell, "\(error)"))
            }
            outputs.withLock { $0[k] = r }
        }
        let expected = first.output.data + first.finalStates.flatMap(\.data)
        for (k, r) in outputs.withLock({ $0 }).enumerated() {
            switch r {
            case .success(let values):
                if let i = firstMismatch(values, expected, .bitwise) {
                    f.add("concurrent forward \(k) differs at value \(i): \(values[i]) vs \(expected[i])")
                }
            case .failure(let error): f.add("concurrent forward \(k) failed: \(error)")
            case nil: f.add("concurrent forward \(k) did not run")
            }
        }
        try checkParamsEpoch(cell, inputs, &f)
        return "forward and backward are bit-identical across repeated calls, \(threads) concurrent forwards on one instance, and inference calls sharing a params_epoch (ABI 1.3)"
    }

    /// ABI 1.3 `params_epoch`: inference calls on one workspace that share an epoch may reuse
    /// what the cell derived from the parameters; each must still equal a call without one
    /// (`Cell.forward`: epoch 0, a fresh workspace), bit for bit — also at a shorter T under
    /// the same epoch, with new parameter values under a new epoch, and after a training call
    /// used the workspace. Catches a cell that keeps derived data without checking enough.
    static func checkParamsEpoch(_ cell: Cell, _ inputs: Inputs, _ f: inout Findings) throws {
        let raw = try RawCall(cell, inputs: inputs, lengths: nil)
        let T = raw.T, B = raw.B, O = cell.outputSize
        func run(_ epoch: UInt64, steps: Int, training: Bool = false) -> [Float]? {
            raw.output.pointer.update(repeating: .nan, count: T * B * O)
            let r = raw.forward(training: training) {
                $0.params_epoch = epoch
                $0.seq_len = Int64(steps)
            }
            guard r.status == SEQCELL_OK else {
                f.add("forward with params_epoch \(epoch), T = \(steps) failed: \(r.message)")
                return nil
            }
            return Array(raw.output.values[0..<(steps * B * O)])
        }
        func expect(_ got: [Float]?, steps: Int, params: [Tensor], _ label: String) throws {
            guard let got else { return }
            let x = Tensor(shape: [steps, B, cell.inputSize], data: Array(inputs.x.data[0..<(steps * B * cell.inputSize)]))
            let want = try cell.forward(input: x, params: params, initialStates: inputs.h0).output.data
            if let i = firstMismatch(got, want, .bitwise) {
                f.add("\(label): value \(i) is \(got[i]), a call without params_epoch gives \(want[i])")
            }
        }
        let e1 = ParamsEpoch.next(), e2 = ParamsEpoch.next()
        try expect(run(e1, steps: T), steps: T, params: inputs.params, "first inference call of params_epoch \(e1)")
        try expect(run(e1, steps: T), steps: T, params: inputs.params, "second call of the same params_epoch")
        if T > 1 {
            try expect(run(e1, steps: T - 1), steps: T - 1, params: inputs.params, "the same params_epoch at T - 1")
            try expect(run(e1, steps: T), steps: T, params: inputs.params, "the same params_epoch back at T")
        }
        // New values in the same buffers, under a new epoch.
        var changed = inputs.params
        for (k, p) in raw.params.enumerated() {
            for i in 0..<inputs.params[k].data.count { p.pointer[i] *= -0.75 }
            changed[k] = Tensor(shape: inputs.params[k].shape, data: p.values)
        }
        try expect(run(e2, steps: T), steps: T, params: changed, "new parameter values under a new params_epoch")
        _ = run(e2, steps: T, training: true)
        try expect(run(e2, steps: T), steps: T, params: changed, "the same params_epoch after a training call on the workspace")
    }

    static func checkLengths(_ cell: Cell, _ f: inout Findings) throws -> String {
        let inputs = Inputs(cell, T: T, B: B, seed: 41)
        let out = cell.outputSize
        let r = try forward(cell, inputs.x, inputs, lengths: lengths)
        for b in 0..<B {
            padded: for t in Int(lengths[b])..<T {
                for j in 0..<out where r.output.data[(t * B + b) * out + j] != 0 {
                    f.add("sample \(b) output at t=\(t) [\(j)] is \(r.output.data[(t * B + b) * out + j]), "
                        + "expected 0 (padded step, length \(lengths[b]))")
                    break padded
                }
            }
        }
        // Each sample alone, unpadded, with T = its length.
        for b in 0..<B {
            let steps = Int(lengths[b])
            let alone = try forward(cell, sample(inputs.x, b, steps: steps), inputs, h0: inputs.h0.map { row($0, b) },
                                    lengths: nil)
            for t in 0..<steps {
                let padded = Array(r.output.data[((t * B + b) * out)..<((t * B + b) * out + out)])
                let single = Array(alone.output.data[(t * out)..<(t * out + out)])
                if let j = firstMismatch(padded, single, .close(1e-5)) {
                    f.add("sample \(b) output at t=\(t) [\(j)] is \(padded[j]) in the batch, \(single[j]) run alone with T=\(steps)")
                    break
                }
            }
            for (s, info) in cell.states.enumerated() {
                let inBatch = row(r.finalStates[s], b).data
                if let j = firstMismatch(inBatch, alone.finalStates[s].data, .close(1e-5)) {
                    f.add("sample \(b) final state '\(info.name)'[\(j)] is \(inBatch[j]) in the batch, "
                        + "\(alone.finalStates[s].data[j]) run alone with T=\(steps) (the state after step \(steps - 1))")
                }
            }
        }
        // Padded input and padded grad_output must not matter.
        var rng = SplitMix64(seed: 42)
        var x2 = inputs.x
        let gradOutput = rng.uniformTensor([T, B, out], scale: 1)
        var gradOutput2 = gradOutput
        for b in 0..<B {
            for t in Int(lengths[b])..<T {
                for k in 0..<cell.inputSize { x2.data[(t * B + b) * cell.inputSize + k] = rng.uniform(-3, 3) }
                for j in 0..<out { gradOutput2.data[(t * B + b) * out + j] = rng.uniform(-3, 3) }
            }
        }
        compare(try forward(cell, x2, inputs, lengths: lengths), r, cell: cell, .equal,
                "other values in the padded input", &f)
        let g = try gradients(cell, inputs.x, inputs, lengths: lengths, gradOutput: gradOutput, gradFinalStates: [])
        let g2 = try gradients(cell, x2, inputs, lengths: lengths, gradOutput: gradOutput2, gradFinalStates: [])
        compare(g2, g, cell: cell, .equal, "other values in the padded input and grad_output", &f)
        if let gx = g.input {
            let width = cell.inputSize
            for b in 0..<B {
                padded: for t in Int(lengths[b])..<T {
                    for k in 0..<width where gx.data[(t * B + b) * width + k] != 0 {
                        f.add("grad_input of sample \(b) at t=\(t) [\(k)] is \(gx.data[(t * B + b) * width + k]), "
                            + "expected 0 (padded step)")
                        break padded
                    }
                }
            }
        }
        return "with lengths \(lengths) and T=\(T): padded outputs are 0, each sample matches itself run alone "
            + "with T = its length, padded input and grad_output are ignored, grad_input is 0 at padded steps"
    }

    static func checkBatchIndependence(_ cell: Cell, _ f: inout Findings) throws -> String {
        let inputs = Inputs(cell, T: T, B: B, seed: 51)
        let base = try forward(cell, inputs.x, inputs, lengths: lengths)
        var rng = SplitMix64(seed: 52)
        let width = cell.inputSize
        for b in 0..<B {
            var x2 = inputs.x
            var h02 = inputs.h0
            for other in 0..<B where other != b {
                for t in 0..<T { for k in 0..<width { x2.data[(t * B + other) * width + k] = rng.uniform(-1, 1) } }
                for s in h02.indices {
                    let size = h02[s].shape[1]
                    for j in 0..<size { h02[s].data[other * size + j] = rng.uniform(-0.5, 0.5) }
                }
            }
            let r = try forward(cell, x2, inputs, h0: h02, lengths: lengths)
            let out = cell.outputSize
            outer: for t in 0..<T {
                for j in 0..<out where r.output.data[(t * B + b) * out + j] != base.output.data[(t * B + b) * out + j] {
                    let i = (t * B + b) * out + j
                    f.add("sample \(b) output at t=\(t) [\(j)] changed from \(base.output.data[i]) to \(r.output.data[i]) "
                        + "when only the other samples changed")
                    break outer
                }
            }
            for (s, info) in cell.states.enumerated() {
                if let j = firstMismatch(row(r.finalStates[s], b).data, row(base.finalStates[s], b).data, .equal) {
                    f.add("sample \(b) final state '\(info.name)'[\(j)] changed when only the other samples changed")
                }
            }
        }
        return "each sample's outputs and final states are unchanged when the other samples' inputs and initial states change"
    }

    static func checkTrainingMode(_ cell: Cell, _ f: inout Findings) throws -> String {
        let inputs = Inputs(cell, T: T, B: B, seed: 61)
        let inference = try forward(cell, inputs.x, inputs, lengths: lengths)
        let training = try forward(cell, inputs.x, inputs, lengths: lengths, training: true)
        compare(training, inference, cell: cell, .equal, "training vs inference mode", &f)
        return "training-mode and inference-mode forward give identical outputs and final states"
    }

    /// Backward against finite differences (`GradientCheck.checkCell`, settings in
    /// docs/PLUGIN_ABI.md): several random points, directional and per-entry probes, kinks
    /// resampled, with and without lengths.
    static func checkBackward(_ cell: Cell, _ f: inout Findings) throws -> String {
        func g(_ v: Double) -> String { String(format: "%.3g", v) }
        let settings = GradientCheckSettings.standard
        var probes = 0, resampled = 0, skipped = 0
        for lens in [nil, lengths] as [[Int32]?] {
            let results = try GradientCheck.checkCell(cell, T: T, B: B, lengths: lens, settings: settings)
            for r in results {
                probes += r.checked
                resampled += r.resampled
                skipped += r.skipped
            }
            let failed = results.filter { !$0.passed }.map { r in
                "\(r.name): " + r.failures.prefix(2).map(\.description).joined(separator: "; ")
                    + (r.failures.count > 2 ? " (and \(r.failures.count - 2) more)" : "")
            }
            if !failed.isEmpty {
                f.add("\(lens.map { "with lengths \($0)" } ?? "without lengths"), backward disagrees with central "
                    + "differences for " + failed.joined(separator: "; "))
            }
        }
        return "gradients of the input, \(cell.params.count) parameters and \(cell.states.count) initial "
            + "state\(cell.states.count == 1 ? "" : "s") match central differences (step \(g(settings.step)), "
            + "relative tolerance \(g(settings.relativeTolerance))) in \(probes) probes at \(settings.points) points, "
            + "with and without lengths (\(resampled) points redrawn and \(skipped) entries skipped at kinks)"
    }

    /// grad_params are added to; grad_input and grad_initial_states are overwritten.
    static func checkAccumulation(_ cell: Cell, _ f: inout Findings) throws -> String {
        let raw = try RawCall(cell, inputs: Inputs(cell, T: T, B: B, seed: 71), lengths: lengths)
        func pass(prefill: Bool) -> Bool {
            let fwd = raw.forward(training: true)
            if prefill { raw.prefillGradients(seed: 72) }
            let r = fwd.status == SEQCELL_OK ? raw.backward() : fwd
            if r.status != SEQCELL_OK { f.add("a raw forward/backward failed: \(r.message) [\(statusName(r.status))]") }
            return r.status == SEQCELL_OK
        }
        guard pass(prefill: false) else { return "" }
        let fresh = raw.gradients
        guard pass(prefill: true) else { return "" }
        let prefilled = raw.prefilled(seed: 72)
        let after = raw.gradients
        for (p, info) in cell.params.enumerated() {
            let expected = zip(prefilled.params[p], fresh.params[p]).map { $0 + $1 }
            if let i = firstMismatch(after.params[p], expected, .close(1e-5)) {
                f.add("gradient of '\(info.name)'[\(i)] is \(after.params[p][i]) after backward into \(prefilled.params[p][i]); "
                    + "expected \(prefilled.params[p][i]) + \(fresh.params[p][i]) = \(expected[i]) (gradients must be added)")
            }
        }
        if let i = firstMismatch(after.input, fresh.input, .equal) {
            f.add("grad_input[\(i)] is \(after.input[i]) after backward into \(prefilled.input[i]); "
                + "expected \(fresh.input[i]) (grad_input must be overwritten)")
        }
        for (s, info) in cell.states.enumerated() {
            if let i = firstMismatch(after.initialStates[s], fresh.initialStates[s], .equal) {
                f.add("gradient of initial state '\(info.name)'[\(i)] is \(after.initialStates[s][i]) after backward "
                    + "into \(prefilled.initialStates[s][i]); expected \(fresh.initialStates[s][i]) (it must be overwritten)")
            }
        }
        return "backward adds to grad_params and overwrites grad_input and grad_initial_states"
    }
}

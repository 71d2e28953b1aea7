import Foundation
import SeqCellBase
import SeqCellHost
import SeqCellModel

/// Builds SeqCell models from ONNX graphs of `LSTM`, `GRU` and `RNN` nodes.
///
/// The graph is walked in dependency order and each value is tracked symbolically: the
/// sequence entering the recurrent stack, each recurrent node's `Y`/`Y_h`/`Y_c`, the glue the
/// exporters put between layers (Transpose, Squeeze/Unsqueeze, Reshape, Concat, Slice,
/// Identity), zero initial states built from the input's shape (Shape, Gather, Unsqueeze,
/// Concat, ConstantOfShape, Expand), and a trailing MatMul+Add or Gemm with an activation as
/// the head. Every other node, and every use of these ops the model cannot express, is refused
/// naming the node, its op type and why.
public enum ONNXImporter {
    /// Reads `path` and builds the model.
    public static func importFile(_ path: String, registry: PluginRegistry) throws -> ImportResult {
        let graph = try ONNXGraph(path: path)
        var walker = Walker(graph: graph, registry: registry)
        return try walker.run()
    }

    /// What a value of the graph is.
    enum Value {
        /// A constant tensor.
        case constant(ONNXConstant)
        /// A shape-derived integer tensor (from `Shape` of a sequence): known only at run time.
        case dynamicInts
        /// A tensor of zeros of a run-time shape (ConstantOfShape 0 and what follows from it).
        case zeros
        /// The stack's current sequence: [T, B, F] or [B, T, F]. `layers` recurrent layers
        /// have been applied (0 = the graph input).
        case sequence(layers: Int, features: Int, batchFirst: Bool)
        /// A recurrent node's Y: [T, D, B, H] (layout 0) or [B, T, D, H] (layout 1); with
        /// `transposed`, layout 0's Y after Transpose(0, 2, 1, 3): [T, B, D, H].
        case y(layer: Int, batchFirst: Bool, transposed: Bool)
        /// A recurrent node's Y_h (state 0) or Y_c (state 1): [D, B, H] or [B, D, H].
        case state(layer: Int, index: Int, batchFirst: Bool)
        /// The final states of layers `range` stacked along axis 0 (PyTorch's h_n).
        case stackedStates(first: Int, last: Int, index: Int)
        /// The head's affine map applied to the sequence, before bias (MatMul) or with it.
        case head(weight: [Float], outputs: Int, bias: [Float]?, activation: HeadActivation, batchFirst: Bool, last: Bool)
        /// The last layer's last-step output [B, F] (Keras' return_sequences=False as tf2onnx
        /// writes it: Y_h squeezed, or both directions' Y_h side by side); `transposed`: Y_h
        /// after Transpose(1, 0, 2), before its Reshape.
        case lastStep(layer: Int, features: Int, transposed: Bool)
        /// A graph input used as lengths or an initial state.
        case graphInput(String)
        /// Rows start..<end of a graph input (PyTorch's exporter slices h0/c0 [L·D, B, H] per layer).
        case inputSlice(String, start: Int, end: Int)
    }

    /// A recurrent node as read.
    struct Recurrent {
        var node: Int
        var op: String
        var layer: RecurrentLayer
        var hidden: Int
        var directions: Int
        var batchFirst: Bool
    }

    struct Walker {
        let graph: ONNXGraph
        let registry: PluginRegistry
        var values: [String: Value] = [:]
        var layers: [Recurrent] = []
        var notes: [String] = []
        var sequenceInput: String? = nil
        var inputBatchFirst: Bool? = nil
        var inputSize = 0
        var lengthsInput: String? = nil
        var lengthsUsed: [Bool] = []
        var stateInputs: [String: (layer: Int, index: Int, batchFirst: Bool)] = [:]
        /// Graph inputs sliced per layer into initial states: input → (state index, layers reading it).
        var stackedStateInputs: [String: (index: Int, layers: [Int])] = [:]
        /// Which layer's output the stack's sequence was last read from (a chain has one reader).
        var sequenceReaders: [Int: String] = [:]
        var folder: String { URL(fileURLWithPath: graph.path).deletingLastPathComponent().path }

        init(graph: ONNXGraph, registry: PluginRegistry) {
            self.graph = graph
            self.registry = registry
            for (name, c) in graph.initializers { values[name] = .constant(c) }
        }

        func fail(_ message: String) -> SeqCellError { graph.fail(message) }

        func refuse(_ k: Int, _ why: String) -> SeqCellError {
            fail("\(graph.label(k)): \(why)")
        }

        /// The value named `name`, or an error naming the node and its `role` input.
        func value(_ name: String, _ k: Int, _ role: String) throws -> Value {
            if let v = values[name] { return v }
            throw refuse(k, "its input \(role) \(displayName(name)) is not a value this importer tracks")
        }

        func constant(_ name: String, _ k: Int, _ role: String) throws -> ONNXConstant {
            guard case .constant(let c)? = values[name] else {
                throw refuse(k, "its input \(role) \(displayName(name)) must be a constant (an initializer or a Constant node)")
            }
            return c
        }

        func intsOf(_ name: String, _ k: Int, _ role: String) throws -> [Int] {
            let c = try constant(name, k, role)
            guard let v = c.ints else { throw refuse(k, "its input \(role) \(displayName(name)) must be an integer tensor") }
            return try v.map {
                guard let i = Int(exactly: $0), abs(i) < 1 << 40 else { throw refuse(k, "its input \(role) holds \($0), out of range") }
                return i
            }
        }

        mutating func run() throws -> ImportResult {
            let g = graph.graph
            // Graph inputs: the sequence is the float input of rank 3 that a recurrent node or
            // glue reads first; the others are lengths or initial states, told by where they go.
            for (k, node) in graph.nodes.enumerated() {
                try visit(k, node)
            }
            guard !layers.isEmpty else {
                throw fail("the graph has no LSTM, GRU or RNN node: not a recurrent model SeqCell imports")
            }
            // The outputs.
            var head: LinearHead? = nil
            var outputNotes: [String] = []
            var outputSteps = OutputSteps.all
            var mainOutputs = 0
            let L = layers.count
            for o in g.output {
                guard let v = values[o.name] else { throw fail("graph output \(displayName(o.name)) is not computed by the graph") }
                switch v {
                case .sequence(let n, _, let bf):
                    guard n == L else { throw fail("graph output \(displayName(o.name)) is the output of recurrent layer \(n) of \(L); only the last layer's output is a model output") }
                    mainOutputs += 1
                    outputNotes.append("output \(displayName(o.name)) → dataset output" + (bf ? " ([B, T, F]: run with --batch-first)" : ""))
                    try checkLayout(bf, what: "graph output \(displayName(o.name))")
                case .y(let n, let bf, let tr):
                    guard n == L - 1 else { throw fail("graph output \(displayName(o.name)) is Y of recurrent layer \(n) of \(L); only the last layer's output is a model output") }
                    mainOutputs += 1
                    let D = layers[n].directions
                    if tr {
                        outputNotes.append("output \(displayName(o.name)) [T, B, \(D), H] → dataset output [T, B, \(D)·H]")
                    } else if bf {
                        outputNotes.append("output \(displayName(o.name)) (Y, layout 1) [B, T, \(D), H] → dataset output [B, T, \(D)·H] (run with --batch-first)")
                    } else {
                        outputNotes.append("output \(displayName(o.name)) (Y) [T, \(D), B, H] → dataset output [T, B, \(D)·H]: Y[t, d, b, :] = output[t, b, d·H ..< (d+1)·H]")
                    }
                    try checkLayout(bf, what: "graph output \(displayName(o.name))")
                case .lastStep(let n, _, false):
                    guard n == L - 1 else { throw fail("graph output \(displayName(o.name)) is the last step of recurrent layer \(n) of \(L); only the last layer's output is a model output") }
                    mainOutputs += 1
                    outputSteps = .last
                    outputNotes.append("output \(displayName(o.name)) (the last layer's final state, [B, F]) → dataset output [B, F]")
                case .head(let w, let outs, let b, let act, let bf, let last):
                    if last { outputSteps = .last }
                    let F = layers[L - 1].layer.outputSize
                    guard w.count == outs * F else {
                        throw fail("graph output \(displayName(o.name)) is a head on the output of an earlier recurrent layer, not the last")
                    }
                    // MatMul weight is [F, O]; SeqCell's head weight is [O, F].
                    var wt = [Float](repeating: 0, count: outs * F)
                    for f in 0..<F { for j in 0..<outs { wt[j * F + f] = w[f * outs + j] } }
                    head = try LinearHead(weight: Tensor(shape: [outs, F], data: wt),
                                          bias: Tensor(shape: [outs], data: b ?? [Float](repeating: 0, count: outs)), activation: act)
                    if b == nil { notes.append("the head has no bias: imported with a zero bias") }
                    mainOutputs += 1
                    outputNotes.append("output \(displayName(o.name)) → dataset output (the head's output)" + (bf ? " ([B, T, O]: run with --batch-first)" : ""))
                    try checkLayout(bf, what: "graph output \(displayName(o.name))")
                case .state(let n, let i, _):
                    let name = i == 0 ? "h" : "c"
                    outputNotes.append("output \(displayName(o.name)) (\(i == 0 ? "Y_h" : "Y_c") of recurrent layer \(n)) → datasets final_states/layers/\(String(format: "%02d", n))/<direction>/\(name)"
                                       + (L == 1 ? " (together: \(name)_n [\(layers[n].directions), B, H])" : ""))
                case .stackedStates(let a, let b, let i):
                    let name = i == 0 ? "h_n" : "c_n"
                    outputNotes.append("output \(displayName(o.name)) (final states of layers \(a)…\(b)) → dataset \(name)" + (a == 0 && b == L - 1 ? "" : " (its layers \(a)…\(b))"))
                default:
                    throw fail("graph output \(displayName(o.name)) is not the model's output or a final state")
                }
            }
            guard mainOutputs <= 1 else { throw fail("the graph has \(mainOutputs) sequence outputs; a SeqCell model has one") }
            if mainOutputs == 0 && head == nil {
                outputNotes.append("the graph outputs no sequence; dataset output holds the last layer's Y")
            }
            guard let sequenceInput else { throw fail("no graph input feeds the recurrent layers") }
            var model = try Model(inputSize: inputSize, layers: layers.map(\.layer), head: head)
            model.source = ModelSource(framework: "onnx")
            model.outputSteps = outputSteps
            if outputSteps == .last {
                notes.append("the model's output is the last step (Keras' return_sequences=False): run writes output [B, O], each sample's output after its last valid step (a backward direction's after step 0)")
            }
            notes.insert("input \(displayName(sequenceInput)) → run's input" + (inputBatchFirst == true ? " ([B, T, I]: run with --batch-first)" : " ([T, B, I])"), at: 0)
            for (name, s) in stackedStateInputs.sorted(by: { $0.key < $1.key }) {
                guard s.layers == Array(0..<layers.count) else {
                    throw fail("graph input \(displayName(name)) gives the \(s.index == 0 ? "initial_h" : "initial_c") of recurrent layers \(s.layers) but not of all \(layers.count): run's \(s.index == 0 ? "h0" : "c0") sets every layer")
                }
                notes.append("input \(displayName(name)) → run's \(s.index == 0 ? "h0" : "c0") ([L·D, B, H], as PyTorch stacks it)")
            }
            if let lengthsInput { notes.append("input \(displayName(lengthsInput)) (sequence_lens) → run's lengths") }
            for (name, s) in stateInputs.sorted(by: { $0.key < $1.key }) {
                let D = layers[s.layer].directions
                notes.append("input \(displayName(name)) (\(s.index == 0 ? "initial_h" : "initial_c") of recurrent layer \(s.layer)) → run's \(s.index == 0 ? "h0" : "c0")"
                             + (layers.count == 1 ? "" : " rows \(s.layer * D)..<\((s.layer + 1) * D) of [L·D, B, H]")
                             + (s.batchFirst ? " (layout 1 gives it as [B, D, H]; h0/c0 are [D, B, H]: transpose)" : ""))
            }
            notes += outputNotes
            let ops = layers.map { r in "\(r.op)(hidden_size=\(r.hidden)\(r.directions == 2 ? ", bidirectional" : r.layer.direction == .reverse ? ", reverse" : ""))" }
            var source = "ONNX opset \(graph.opset): " + ops.joined(separator: " → ")
            if let head { source += " + linear head \(head.inputSize) → \(head.outputSize)" + (head.activation == .linear ? "" : " + \(head.activation.rawValue)") }
            return ImportResult(model: model, source: source, notes: notes)
        }

        func checkLayout(_ batchFirst: Bool, what: String) throws {
            if let ib = inputBatchFirst, ib != batchFirst {
                throw fail("\(what) is \(batchFirst ? "batch-major [B, T, …]" : "time-major [T, B, …]") but the input is \(ib ? "batch-major" : "time-major"); SeqCell's run reads and writes both in one layout")
            }
        }

        // MARK: nodes

        mutating func visit(_ k: Int, _ node: Onnx_NodeProto) throws {
            guard node.domain.isEmpty || node.domain == "ai.onnx" else {
                throw refuse(k, "operator domain \(displayName(node.domain)) is not the default ONNX domain")
            }
            let attrs = try ONNXAttributes(node, label: graph.label(k), fail: fail)
            func input(_ i: Int) -> String? { i < node.input.count && !node.input[i].isEmpty ? node.input[i] : nil }
            func set(_ v: Value, _ i: Int = 0) { if i < node.output.count, !node.output[i].isEmpty { values[node.output[i]] = v } }
            func onlyAttributes(_ allowed: Set<String>) throws {
                if let a = attrs.names.first(where: { !allowed.contains($0) }) {
                    throw refuse(k, "attribute \(displayName(a)) is not supported here")
                }
            }
            func firstInput() throws -> Value {
                guard let n = input(0) else { throw refuse(k, "it has no input") }
                return try valueOrSequence(n, k)
            }
            switch node.opType {
            case "LSTM", "GRU", "RNN":
                try recurrent(k, node, attrs)
            case "Constant":
                if let t = try attrs.tensor("value", folder: folder) { set(.constant(t)); return }
                if let f = try attrs.float("value_float") { set(.constant(ONNXConstant(shape: [], floats: [f]))); return }
                if let f = try attrs.floats("value_floats") { set(.constant(ONNXConstant(shape: [f.count], floats: f))); return }
                if let i = try attrs.int("value_int") { set(.constant(ONNXConstant(shape: [], ints: [Int64(i)]))); return }
                if let i = try attrs.ints("value_ints") { set(.constant(ONNXConstant(shape: [i.count], ints: i.map { Int64($0) }))); return }
                throw refuse(k, "a Constant without a value, value_float(s) or value_int(s) attribute is not supported")
            case "Identity":
                set(try firstInput())
            case "Shape":
                let v = try firstInput()
                switch v {
                case .sequence, .y, .state, .zeros, .dynamicInts: set(.dynamicInts)
                case .constant(let c): set(.constant(ONNXConstant(shape: [c.shape.count], ints: c.shape.map { Int64($0) })))
                default: throw refuse(k, "Shape of this value is not supported")
                }
            case "Gather", "Cast", "Unsqueeze", "Squeeze", "Concat", "Slice", "Reshape", "Expand", "Transpose":
                try glue(k, node, attrs)
            case "ConstantOfShape":
                let shape = try value(input(0) ?? "", k, "shape")
                var zero = true
                if let t = try attrs.tensor("value", folder: folder) {
                    zero = (t.floats ?? t.ints.map { $0.map { Float($0) } } ?? []).allSatisfy { $0 == 0 }
                }
                guard zero else { throw refuse(k, "ConstantOfShape with a non-zero value: only zero initial states are supported") }
                switch shape {
                case .dynamicInts, .constant: set(.zeros)
                default: throw refuse(k, "its shape input is not a shape")
                }
            case "MatMul":
                guard let a = input(0), let b = input(1) else { throw refuse(k, "MatMul needs two inputs") }
                let x = try valueOrSequence(a, k)
                let (n, F, bf, last): (Int, Int, Bool, Bool)
                switch x {
                case .sequence(let n1, let f1, let b1): (n, F, bf, last) = (n1, f1, b1, false)
                case .lastStep(let l, let f1, false): (n, F, bf, last) = (l + 1, f1, false, true)
                default: (n, F, bf, last) = (-1, 0, false, false)
                }
                guard n == layers.count, n > 0 else {
                    throw refuse(k, "MatMul is read only as the head after the last recurrent layer (its first input must be that layer's output or last step)")
                }
                if let reader = sequenceReaders[n] { throw refuse(k, "the output it reads is read by \(reader) too: SeqCell imports a chain") }
                sequenceReaders[n] = graph.label(k)
                let w = try constant(b, k, "B")
                guard let wf = w.floats, w.shape.count == 2, w.shape[0] == F, w.shape[1] > 0 else {
                    throw refuse(k, "the head's weight \(displayName(b)) must be a float [\(F), O] constant, got \(w.shape)")
                }
                set(.head(weight: wf, outputs: w.shape[1], bias: nil, activation: .linear, batchFirst: bf, last: last))
            case "Add":
                guard let a = input(0), let b = input(1) else { throw refuse(k, "Add needs two inputs") }
                let (va, vb) = (values[a], values[b])
                var headValue: Value? = nil
                var biasName = b
                if case .head? = va { headValue = va } else if case .head? = vb { headValue = vb; biasName = a }
                guard case .head(let w, let outs, nil, .linear, let bf, let last)? = headValue else {
                    throw refuse(k, "Add is read only as the head's bias after its MatMul")
                }
                let bias = try constant(biasName, k, "bias")
                guard let bf2 = bias.floats, bias.count == outs, bias.shape.last == outs, bias.shape.dropLast().allSatisfy({ $0 == 1 }) else {
                    throw refuse(k, "the head's bias \(displayName(biasName)) must be a float [\(outs)] constant, got \(bias.shape)")
                }
                set(.head(weight: w, outputs: outs, bias: bf2, activation: .linear, batchFirst: bf, last: last))
            case "Gemm":
                try onlyAttributes(["alpha", "beta", "transA", "transB"])
                guard let a = input(0), let b = input(1), case .lastStep(let l, let F, false)? = values[a], l + 1 == layers.count else {
                    throw refuse(k, "Gemm is read only as the head on the last recurrent layer's last step [B, F] (MatMul + Add is the sequence head)")
                }
                guard try attrs.float("alpha") ?? 1 == 1, try attrs.float("beta") ?? 1 == 1, try attrs.int("transA") ?? 0 == 0 else {
                    throw refuse(k, "Gemm with alpha or beta other than 1, or transA, is not a dense layer SeqCell imports")
                }
                if let reader = sequenceReaders[l + 1] { throw refuse(k, "the output it reads is read by \(reader) too: SeqCell imports a chain") }
                sequenceReaders[l + 1] = graph.label(k)
                let transB = try attrs.int("transB") ?? 0 != 0
                let w = try constant(b, k, "B")
                guard let wf = w.floats, w.shape.count == 2, w.shape[transB ? 1 : 0] == F, w.shape[transB ? 0 : 1] > 0 else {
                    throw refuse(k, "the head's weight \(displayName(b)) must be a float \(transB ? "[O, \(F)]" : "[\(F), O]") constant, got \(w.shape)")
                }
                let outs = w.shape[transB ? 0 : 1]
                var wFO = wf
                if transB { for f in 0..<F { for j in 0..<outs { wFO[f * outs + j] = wf[j * F + f] } } }
                var bias: [Float]? = nil
                if let c = input(2) {
                    let cb = try constant(c, k, "C")
                    guard let cf = cb.floats, cb.count == outs, cb.shape.last == outs, cb.shape.dropLast().allSatisfy({ $0 == 1 }) else {
                        throw refuse(k, "the head's bias \(displayName(c)) must be a float [\(outs)] constant, got \(cb.shape)")
                    }
                    bias = cf
                }
                set(.head(weight: wFO, outputs: outs, bias: bias, activation: .linear, batchFirst: false, last: true))
            case "Sigmoid", "Tanh", "Relu", "Softmax", "LogSoftmax":
                guard let a = input(0), case .head(let w, let outs, let b, .linear, let bf, let last)? = values[a] else {
                    throw refuse(k, "\(node.opType) is read only as the head's activation, right after its MatMul/Add")
                }
                let act: HeadActivation
                switch node.opType {
                case "Sigmoid": act = .sigmoid
                case "Tanh": act = .tanh
                case "Relu": act = .relu
                case "Softmax":
                    let axis = try attrs.int("axis") ?? (graph.opset >= 13 ? -1 : 1)
                    guard axis == -1 || axis == (last ? 1 : 2) else {
                        throw refuse(k, "Softmax over axis \(axis): the head's softmax is over the features (axis -1)")
                    }
                    act = .softmax
                default:
                    throw refuse(k, "LogSoftmax: SeqCell's head activations are linear, tanh, sigmoid, relu and softmax")
                }
                set(.head(weight: w, outputs: outs, bias: b, activation: act, batchFirst: bf, last: last))
            default:
                throw refuse(k, "operator \(displayName(node.opType)) is not one SeqCell imports (recurrent LSTM/GRU/RNN nodes, exporter glue, and a MatMul+Add head)")
            }
        }

        /// The value of `name`; a graph input not yet seen becomes the sequence input.
        mutating func valueOrSequence(_ name: String, _ k: Int) throws -> Value {
            if let v = values[name] { return v }
            if graph.inputs.contains(name) {
                guard sequenceInput == nil else {
                    throw refuse(k, "it reads graph input \(displayName(name)) as a sequence, but \(displayName(sequenceInput!)) is already the input")
                }
                sequenceInput = name
                let v = Value.sequence(layers: 0, features: -1, batchFirst: false)
                values[name] = v
                return v
            }
            throw refuse(k, "its input \(displayName(name)) is not a value this importer tracks")
        }

        mutating func glue(_ k: Int, _ node: Onnx_NodeProto, _ attrs: ONNXAttributes) throws {
            func input(_ i: Int) -> String? { i < node.input.count && !node.input[i].isEmpty ? node.input[i] : nil }
            func set(_ v: Value) { if let o = node.output.first, !o.isEmpty { values[o] = v } }
            guard let first = input(0) else { throw refuse(k, "it has no input") }
            let op = node.opType
            if op == "Slice", graph.inputs.contains(first), first != sequenceInput {
                // A per-layer slice of stacked initial states.
                switch values[first] {
                case nil, .graphInput?: break
                default: throw refuse(k, "Slice of graph input \(displayName(first)) is not exporter glue SeqCell understands")
                }
                let starts: [Int], ends: [Int], axes: [Int], steps: [Int]
                if graph.opset < 10 {
                    starts = try attrs.ints("starts") ?? []
                    ends = try attrs.ints("ends") ?? []
                    axes = try attrs.ints("axes") ?? [0]
                    steps = [1]
                } else {
                    starts = try intsOf(input(1) ?? "", k, "starts")
                    ends = try intsOf(input(2) ?? "", k, "ends")
                    axes = try input(3).map { try intsOf($0, k, "axes") } ?? [0]
                    steps = try input(4).map { try intsOf($0, k, "steps") } ?? [1]
                }
                guard starts.count == 1, ends.count == 1, axes == [0], steps == [1], starts[0] >= 0, ends[0] > starts[0] else {
                    throw refuse(k, "Slice of graph input \(displayName(first)) must take rows of axis 0 (initial states per layer)")
                }
                values[first] = .graphInput(first)
                set(.inputSlice(first, start: starts[0], end: ends[0]))
                return
            }
            let x = try valueOrSequence(first, k)
            // Axes: an attribute before opset 13 (Squeeze/Unsqueeze) or an input since.
            func axes() throws -> [Int]? {
                if let a = try attrs.ints("axes") { return a }
                if let n = input(1) { return try intsOf(n, k, "axes") }
                return nil
            }
            // Shape arithmetic: zeros and run-time integers stay what they are.
            switch x {
            case .zeros:
                guard ["Unsqueeze", "Squeeze", "Slice", "Reshape", "Expand", "Transpose", "Cast", "Concat"].contains(op) else { break }
                if op == "Concat" {
                    for n in node.input where !n.isEmpty {
                        guard case .zeros? = values[n] else { throw refuse(k, "Concat of zeros with other values is not supported") }
                    }
                }
                set(.zeros)
                return
            case .dynamicInts:
                set(.dynamicInts)
                return
            case .constant(let c):
                if op == "Concat", node.input.contains(where: { if case .dynamicInts? = values[$0] { return true }; return false }) {
                    set(.dynamicInts)
                    return
                }
                if op == "Expand", let s = input(1), case .dynamicInts? = values[s] {
                    guard (c.floats ?? c.ints?.map { Float($0) } ?? []).allSatisfy({ $0 == 0 }) else {
                        throw refuse(k, "Expand of a non-zero constant: only zero initial states are supported")
                    }
                    set(.zeros)
                    return
                }
                set(.constant(try foldConstant(k, node, attrs, c, axes: axes)))
                return
            default:
                break
            }
            switch (op, x) {
            case ("Transpose", .sequence(let n, let F, let bf)):
                guard try attrs.ints("perm") == [1, 0, 2] else { throw refuse(k, "Transpose of the sequence must swap time and batch (perm [1, 0, 2])") }
                set(.sequence(layers: n, features: F, batchFirst: !bf))
            case ("Transpose", .y(let n, false, false)):
                guard try attrs.ints("perm") == [0, 2, 1, 3] else { throw refuse(k, "Transpose of Y must be perm [0, 2, 1, 3] ([T, D, B, H] → [T, B, D, H])") }
                set(.y(layer: n, batchFirst: false, transposed: true))
            case ("Reshape", .y(let n, let bf, let tr)) where tr || bf:
                let shape = try intsOf(input(1) ?? "", k, "shape")
                let F = layers[n].layer.outputSize
                guard shape.count == 3, (shape[0] == 0 || shape[0] == -1), (shape[1] == 0 || shape[1] == -1), shape[2] == F || shape[2] == -1,
                      shape.filter({ $0 == -1 }).count <= 1, try attrs.int("allowzero") ?? 0 == 0 else {
                    throw refuse(k, "Reshape of Y must merge the directions into the features (shape [0, 0, -1] or [0, 0, \(F)]), got \(shape)")
                }
                if layers[n].directions == 2 && layers[n].layer.mergeMode != .concat { throw refuse(k, "unexpected merge") }
                set(.sequence(layers: n + 1, features: F, batchFirst: bf))
            case ("Squeeze", .y(let n, let bf, let tr)):
                let ax = try axes()
                let axis = tr || bf ? 2 : 1
                guard layers[n].directions == 1, ax == [axis] || ax == [axis - 4] else {
                    throw refuse(k, "Squeeze of Y must remove its direction axis \(axis) of a one-direction node")
                }
                set(.sequence(layers: n + 1, features: layers[n].hidden, batchFirst: bf))
            case ("Squeeze", .state(let n, 0, false)) where layers[n].directions == 1:
                guard try axes() == [0] else { throw refuse(k, "Squeeze of Y_h must remove its direction axis 0") }
                set(.lastStep(layer: n, features: layers[n].hidden, transposed: false))
            case ("Transpose", .state(let n, 0, false)):
                guard try attrs.ints("perm") == [1, 0, 2] else { throw refuse(k, "Transpose of Y_h must be perm [1, 0, 2] ([D, B, H] → [B, D, H])") }
                set(.lastStep(layer: n, features: layers[n].layer.outputSize, transposed: true))
            case ("Reshape", .lastStep(let n, let F, true)):
                let shape = try intsOf(input(1) ?? "", k, "shape")
                guard shape.count == 2, shape[0] == 0 || shape[0] == -1, shape[1] == F || (shape[1] == -1 && shape[0] == 0) else {
                    throw refuse(k, "Reshape of Y_h must put the directions side by side (shape [-1, \(F)] or [0, -1]), got \(shape)")
                }
                set(.lastStep(layer: n, features: F, transposed: false))
            case ("Concat", .state(let n, let i, false)):
                guard try attrs.int("axis") == 0 else { throw refuse(k, "Concat of final states must be along axis 0") }
                var last = n
                for name in node.input.dropFirst() where !name.isEmpty {
                    guard case .state(let m, i, false)? = values[name], m == last + 1 else {
                        throw refuse(k, "Concat of final states must stack consecutive layers' \(i == 0 ? "Y_h" : "Y_c") in order")
                    }
                    last = m
                }
                set(.stackedStates(first: n, last: last, index: i))
            case ("Cast", let v):
                guard try attrs.int("to") == 1 else { throw refuse(k, "Cast of a sequence is supported to float only") }
                set(v)
            default:
                throw refuse(k, "\(op) of this value is not exporter glue SeqCell understands")
            }
        }

        /// Constant folding of the glue ops over small integer/float constants.
        func foldConstant(_ k: Int, _ node: Onnx_NodeProto, _ attrs: ONNXAttributes, _ c: ONNXConstant, axes: () throws -> [Int]?) throws -> ONNXConstant {
            let op = node.opType
            switch op {
            case "Unsqueeze", "Squeeze", "Reshape", "Cast":
                var shape = c.shape
                if op == "Unsqueeze" {
                    for a in (try axes() ?? []).sorted() { let p = a < 0 ? a + shape.count + 1 : a; guard p >= 0, p <= shape.count else { throw refuse(k, "axis \(a) out of range") }; shape.insert(1, at: p) }
                } else if op == "Squeeze" {
                    shape = shape.filter { $0 != 1 }
                } else if op == "Reshape" {
                    // Only the element count matters for the small constants folded here.
                    shape = [c.count]
                } else {
                    let to = try attrs.int("to") ?? 1
                    if to == 1 { return ONNXConstant(shape: c.shape, floats: c.floats ?? c.ints!.map { Float($0) }) }
                    if to == 6 || to == 7 { return ONNXConstant(shape: c.shape, ints: c.ints ?? c.floats!.map { Int64($0) }) }
                    throw refuse(k, "Cast to type \(to) is not supported")
                }
                return ONNXConstant(shape: shape, floats: c.floats, ints: c.ints)
            case "Concat":
                var floats: [Float]? = c.floats == nil ? nil : []
                var ints: [Int64]? = c.ints == nil ? nil : []
                for n in node.input where !n.isEmpty {
                    let p = try constant(n, k, "input")
                    guard p.shape.count <= 1 else { throw refuse(k, "Concat of constants is folded for vectors only") }
                    if floats != nil { guard let f = p.floats else { throw refuse(k, "Concat of mixed types") }; floats! += f }
                    if ints != nil { guard let i = p.ints else { throw refuse(k, "Concat of mixed types") }; ints! += i }
                }
                return ONNXConstant(shape: [floats?.count ?? ints?.count ?? 0], floats: floats, ints: ints)
            case "Gather":
                guard c.shape.count == 1 else { throw refuse(k, "Gather is folded for constant vectors only") }
                let idx = try intsOf(node.input.count > 1 ? node.input[1] : "", k, "indices")
                let picked = try idx.map { i -> Int in let p = i < 0 ? i + c.count : i; guard p >= 0, p < c.count else { throw refuse(k, "index \(i) out of range") }; return p }
                let shape = try constant(node.input[1], k, "indices").shape
                return ONNXConstant(shape: shape, floats: c.floats.map { f in picked.map { f[$0] } }, ints: c.ints.map { v in picked.map { v[$0] } })
            default:
                throw refuse(k, "\(op) of a constant is not folded by the importer")
            }
        }

        // MARK: recurrent nodes

        mutating func recurrent(_ k: Int, _ node: Onnx_NodeProto, _ attrs: ONNXAttributes) throws {
            let op = node.opType
            let kind = ["LSTM": "lstm", "GRU": "gru", "RNN": "rnn"][op]!
            let G = ["LSTM": 4, "GRU": 3, "RNN": 1][op]!
            let layerIndex = layers.count
            func input(_ i: Int) -> String? { i < node.input.count && !node.input[i].isEmpty ? node.input[i] : nil }
            let allowed: Set<String> = {
                var s: Set<String> = ["activation_alpha", "activation_beta", "activations", "clip", "direction", "hidden_size", "layout"]
                if op == "LSTM" { s.insert("input_forget") }
                if op == "GRU" { s.insert("linear_before_reset") }
                return s
            }()
            if let a = attrs.names.first(where: { !allowed.contains($0) }) {
                throw refuse(k, "attribute \(displayName(a)) is not an attribute of \(op)")
            }
            let direction = try attrs.string("direction") ?? "forward"
            let D: Int
            switch direction {
            case "forward", "reverse": D = 1
            case "bidirectional": D = 2
            default: throw refuse(k, "attribute 'direction' = \(displayName(direction)) must be forward, reverse or bidirectional")
            }
            let layout = try attrs.int("layout") ?? 0
            guard layout == 0 || layout == 1 else { throw refuse(k, "attribute 'layout' = \(layout) must be 0 or 1") }
            if layout == 1 && graph.opset < 14 { throw refuse(k, "attribute 'layout' exists from opset 14; this model has opset \(graph.opset)") }
            let batchFirst = layout == 1

            // The input sequence: the graph input or the previous layer's output.
            guard let xName = input(0) else { throw refuse(k, "it has no input X") }
            let x = try valueOrSequence(xName, k)
            guard case .sequence(let n, _, let bf) = x else {
                throw refuse(k, "its input X \(displayName(xName)) is not a sequence: the graph input or the previous recurrent layer's output ([T, B, F] after Squeeze, or Transpose + Reshape, of Y)")
            }
            guard n == layerIndex else {
                throw refuse(k, "its input X is the output of recurrent layer \(n), but \(layerIndex) layer(s) come before it: SeqCell imports a chain of recurrent layers")
            }
            if n == 0 {
                // The graph input's flag counts the Transposes applied to it (false = none):
                // its own layout is the node's, undone by them.
                let own = batchFirst != bf
                if let ib = inputBatchFirst, ib != own { throw refuse(k, "the graph input is read in two layouts") }
                inputBatchFirst = own
            } else {
                guard bf == batchFirst else {
                    throw refuse(k, "its input X is \(bf ? "[B, T, F]" : "[T, B, F]") but its layout \(layout) reads \(batchFirst ? "[B, T, F]" : "[T, B, F]")")
                }
            }
            if let reader = sequenceReaders[n] { throw refuse(k, "the sequence it reads is read by \(reader) too: SeqCell imports a chain") }
            sequenceReaders[n] = graph.label(k)

            // Weights.
            guard let wName = input(1), let rName = input(2) else { throw refuse(k, "it needs inputs W and R") }
            func weight(_ name: String, _ role: String) throws -> ONNXConstant {
                guard case .constant(let c)? = values[name] else {
                    throw refuse(k, "its input \(role) \(displayName(name)) is not an initializer or constant (a graph input?): SeqCell imports weights stored in the model")
                }
                guard let _ = c.floats else { throw refuse(k, "its input \(role) \(displayName(name)) must be float32") }
                return c
            }
            let W = try weight(wName, "W"), R = try weight(rName, "R")
            guard W.shape.count == 3, W.shape[0] == D, W.shape[1] > 0, W.shape[1] % G == 0, W.shape[2] > 0 else {
                throw refuse(k, "input W \(displayName(wName)) is \(W.shape) but [\(D), \(G)·hidden_size, input_size] is expected")
            }
            let H = W.shape[1] / G
            if let hs = try attrs.int("hidden_size"), hs != H {
                throw refuse(k, "attribute hidden_size = \(hs) but W \(displayName(wName)) is \(W.shape), which gives \(H)")
            }
            guard H <= PyTorchImporter.maximumSize else { throw refuse(k, "hidden size \(H) is too large") }
            let I = W.shape[2]
            guard R.shape == [D, G * H, H] else { throw refuse(k, "input R \(displayName(rName)) is \(R.shape) but [\(D), \(G * H), \(H)] is expected") }
            var B: ONNXConstant? = nil
            if let bName = input(3) {
                let b = try weight(bName, "B")
                guard b.shape == [D, 2 * G * H] else { throw refuse(k, "input B \(displayName(bName)) is \(b.shape) but [\(D), \(2 * G * H)] is expected") }
                B = b
            }
            if layerIndex == 0 {
                inputSize = I
            } else {
                let F = layers[layerIndex - 1].layer.outputSize
                guard I == F else { throw refuse(k, "input W \(displayName(wName)) reads \(I) features but the layer before writes \(F)") }
            }

            // sequence_lens, initial states.
            if let s = input(4) {
                switch values[s] {
                case nil where graph.inputs.contains(s):
                    if let l = lengthsInput, l != s { throw refuse(k, "its sequence_lens \(displayName(s)) differs from another node's \(displayName(l))") }
                    lengthsInput = s
                    values[s] = .graphInput(s)
                case .graphInput(let g)? where g == lengthsInput:
                    break
                default:
                    throw refuse(k, "its sequence_lens \(displayName(s)) must be a graph input (run's lengths)")
                }
                lengthsUsed.append(true)
            } else {
                if lengthsInput != nil { throw refuse(k, "it has no sequence_lens but an earlier recurrent node has") }
                lengthsUsed.append(false)
            }
            if lengthsUsed.contains(true) && lengthsUsed.contains(false) {
                throw refuse(k, "it has sequence_lens but an earlier recurrent node has none")
            }
            for (slot, index) in [(5, 0), (6, 1)] {
                guard let s = input(slot) else { continue }
                if index == 1 && op != "LSTM" { throw refuse(k, "\(op) has no input initial_c") }
                let role = index == 0 ? "initial_h" : "initial_c"
                switch values[s] {
                case .zeros?: break
                case .constant(let c)? where (c.floats ?? []).allSatisfy({ $0 == 0 }) && c.shape == (batchFirst ? [c.shape.first ?? 0, D, H] : [D, c.shape.count > 1 ? c.shape[1] : 0, H]):
                    break
                case .constant?:
                    throw refuse(k, "its \(role) \(displayName(s)) is a non-zero constant: a SeqCell model holds no initial state (give it as run's \(index == 0 ? "h0" : "c0"))")
                case nil where graph.inputs.contains(s):
                    stateInputs[s] = (layerIndex, index, batchFirst)
                case .inputSlice(let name, let start, let end)?:
                    guard !batchFirst, start == layerIndex * D, end == start + D else {
                        throw refuse(k, "its \(role) \(displayName(s)) is rows \(start)..<\(end) of graph input \(displayName(name)); layer \(layerIndex) reads rows \(layerIndex * D)..<\((layerIndex + 1) * D) of run's [L·D, B, H] \(index == 0 ? "h0" : "c0")")
                    }
                    var entry = stackedStateInputs[name] ?? (index, [])
                    guard entry.index == index else { throw refuse(k, "graph input \(displayName(name)) is sliced into both initial_h and initial_c") }
                    entry.layers.append(layerIndex)
                    stackedStateInputs[name] = entry
                    values[s] = .graphInput(s)
                default:
                    throw refuse(k, "its \(role) \(displayName(s)) must be zeros (ConstantOfShape 0) or a graph input")
                }
            }

            // Attributes → cell options.
            var options: [String: String] = [:]
            if B == nil { options["bias"] = "false" }
            if op == "GRU" { options["reset"] = (try attrs.int("linear_before_reset") ?? 0) != 0 ? "after" : "before" }
            if let clip = try attrs.float("clip") {
                guard clip > 0, clip.isFinite else { throw refuse(k, "attribute 'clip' = \(clip) must be positive") }
                options["clip"] = String(clip)
            }
            if op == "LSTM", let f = try attrs.int("input_forget"), f != 0 { options["input_forget"] = "true" }
            var peepholes: ONNXConstant? = nil
            if op == "LSTM", let p = input(7) {
                let P = try weight(p, "P")
                guard P.shape == [D, 3 * H] else { throw refuse(k, "input P \(displayName(p)) is \(P.shape) but [\(D), \(3 * H)] is expected") }
                if !(P.floats ?? []).allSatisfy({ $0 == 0 }) { options["peepholes"] = "true"; peepholes = P }
            }
            let perDirection = try activationOptions(k, op: op, attrs: attrs, directions: D)

            // Cells.
            let type = try registry.cellType(kind)
            var cells: [DirectionalCell] = []
            for d in 0..<D {
                var opts = options
                for (key, v) in perDirection[d] { opts[key] = v }
                let parsed: [String: OptionValue]
                do {
                    parsed = try type.parseOptions(opts)
                } catch {
                    // The first option the plugin refuses, alone, names the attribute.
                    let which = opts.keys.sorted().first { key in !type.options.contains { $0.name == key } }
                        ?? opts.keys.sorted().first { key in (try? type.parseOptions([key: opts[key]!])) == nil } ?? ""
                    if !which.isEmpty, type.options.contains(where: { $0.name == which }) {
                        throw refuse(k, "its \(onnxAttribute(for: which)) needs \(which)=\(opts[which]!), which the installed '\(kind)' plugin (\(type.version)) refuses: \((error as? SeqCellError)?.message ?? "\(error)")")
                    }
                    throw refuse(k, which.isEmpty ? "the '\(kind)' cell cannot take these options from its attributes (\(opts.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", "))): \((error as? SeqCellError)?.message ?? "\(error)")"
                                 : "its \(onnxAttribute(for: which)) needs the '\(kind)' cell option '\(which)', which the installed '\(kind)' plugin (\(type.version)) does not have")
                }
                let cell = try type.instantiate(inputSize: I, hiddenSize: H, options: parsed)
                // ONNX gate blocks → the plugin's (PyTorch's) order.
                let order: [Int] = op == "LSTM" ? [0, 2, 3, 1] : op == "GRU" ? [1, 0, 2] : [0]
                func blocks(_ c: ONNXConstant, offset: Int, rows: Int, cols: Int, vector: Bool = false) -> Tensor {
                    var out = [Float]()
                    out.reserveCapacity(G * rows * cols)
                    let f = c.floats!
                    for g in order { out += f[(offset + g * rows * cols)..<(offset + (g + 1) * rows * cols)] }
                    return Tensor(shape: vector ? [G * rows] : [G * rows, cols], data: out)
                }
                var values: [String: Tensor] = [
                    "weight_ih": blocks(W, offset: d * G * H * I, rows: H, cols: I),
                    "weight_hh": blocks(R, offset: d * G * H * H, rows: H, cols: H),
                ]
                if let B {
                    values["bias_ih"] = blocks(B, offset: d * 2 * G * H, rows: H, cols: 1, vector: true)
                    values["bias_hh"] = blocks(B, offset: d * 2 * G * H + G * H, rows: H, cols: 1, vector: true)
                }
                if let peepholes {
                    // ONNX's P is i, o, f; the plugin's weight_peephole is i, f, o.
                    let f = peepholes.floats!
                    let base = d * 3 * H
                    var out = [Float]()
                    for g in [0, 2, 1] { out += f[(base + g * H)..<(base + (g + 1) * H)] }
                    values["weight_peephole"] = Tensor(shape: [3 * H], data: out)
                }
                var params: [Tensor] = []
                for info in cell.params {
                    guard let v = values[info.name], v.shape == info.shape else {
                        throw SeqCellError(.plugin, "the '\(kind)' plugin declares parameter '\(info.name)' \(info.shape), which ONNX's \(op) does not map onto")
                    }
                    params.append(v)
                }
                cells.append(try DirectionalCell(cell: cell, params: params))
            }
            let dir: Direction = D == 2 ? .bidirectional : direction == "reverse" ? .reverse : .forward
            let layer = try RecurrentLayer(direction: dir, mergeMode: .concat, cells: cells)
            layers.append(Recurrent(node: k, op: op, layer: layer, hidden: H, directions: D, batchFirst: batchFirst))
            if node.output.count > 0, !node.output[0].isEmpty { values[node.output[0]] = .y(layer: layerIndex, batchFirst: batchFirst, transposed: false) }
            if node.output.count > 1, !node.output[1].isEmpty { values[node.output[1]] = .state(layer: layerIndex, index: 0, batchFirst: batchFirst) }
            if node.output.count > 2, !node.output[2].isEmpty {
                guard op == "LSTM" else { throw refuse(k, "\(op) has two outputs, Y and Y_h") }
                values[node.output[2]] = .state(layer: layerIndex, index: 1, batchFirst: batchFirst)
            }
        }

        func onnxAttribute(for option: String) -> String {
            switch option {
            case "bias": return "absent input B"
            case "clip": return "attribute 'clip'"
            case "input_forget": return "attribute 'input_forget'"
            case "peepholes": return "input P (peepholes)"
            case "reset": return "attribute 'linear_before_reset'"
            default: return "attribute 'activations' (or activation_alpha/beta)"
            }
        }

        /// The contract's activation options per direction, from `activations`,
        /// `activation_alpha` and `activation_beta`. Options equal to the cell's default are
        /// not written, so that models of default activations import into any plugin version.
        func activationOptions(_ k: Int, op: String, attrs: ONNXAttributes, directions D: Int) throws -> [[String: String]] {
            let slots: [(option: String, defaultName: String)] = switch op {
            case "LSTM": [("gate_activation", "sigmoid"), ("cell_activation", "tanh"), ("output_activation", "tanh")]
            case "GRU": [("gate_activation", "sigmoid"), ("candidate_activation", "tanh")]
            default: [("activation", "tanh")]
            }
            let names = try attrs.strings("activations")
            let alphas = try attrs.floats("activation_alpha") ?? []
            let betas = try attrs.floats("activation_beta") ?? []
            var result = [[String: String]](repeating: [:], count: D)
            guard let names else {
                if !alphas.isEmpty || !betas.isEmpty { throw refuse(k, "activation_alpha/activation_beta are given without activations") }
                return result
            }
            guard names.count == slots.count * D || (D == 2 && names.count == slots.count) else {
                throw refuse(k, "attribute 'activations' has \(names.count) names; \(op) with \(D) direction(s) takes \(slots.count * D)")
            }
            let table: [String: (name: String, alpha: Float?, beta: Float?, needs: Bool)] = [
                "sigmoid": ("sigmoid", nil, nil, false), "tanh": ("tanh", nil, nil, false), "relu": ("relu", nil, nil, false),
                "affine": ("affine", nil, nil, true), "leakyrelu": ("leaky_relu", 0.01, nil, false),
                "thresholdedrelu": ("thresholded_relu", 0.0, nil, false), "scaledtanh": ("scaled_tanh", nil, nil, true),
                "hardsigmoid": ("hard_sigmoid", 0.2, 0.5, false), "elu": ("elu", 1.0, nil, false),
                "softsign": ("softsign", nil, nil, false), "softplus": ("softplus", nil, nil, false),
            ]
            // activation_alpha and activation_beta are consumed in the order of the activations,
            // each value by the next activation that uses one (as onnxruntime reads them):
            // [Sigmoid, LeakyRelu] with alpha [0.3] gives LeakyRelu 0.3.
            var ai = 0, bi = 0
            for (j, raw) in names.enumerated() {
                let d = j / slots.count
                let slot = slots[j % slots.count]
                guard let entry = table[raw.lowercased()] else {
                    throw refuse(k, "attribute 'activations' names \(displayName(raw)), not an ONNX activation")
                }
                let usesAlpha = ["affine", "leaky_relu", "thresholded_relu", "scaled_tanh", "hard_sigmoid", "elu"].contains(entry.name)
                let usesBeta = ["affine", "scaled_tanh", "hard_sigmoid"].contains(entry.name)
                var alpha: Float? = entry.alpha, beta: Float? = entry.beta
                if usesAlpha, ai < alphas.count { alpha = alphas[ai]; ai += 1 }
                if usesBeta, bi < betas.count { beta = betas[bi]; bi += 1 }
                if entry.needs && (alpha == nil || beta == nil) {
                    throw refuse(k, "activation \(displayName(raw)) needs activation_alpha and activation_beta (ONNX gives them no default)")
                }
                if entry.name != slot.defaultName { result[d][slot.option] = entry.name }
                if usesAlpha, let alpha { result[d][slot.option + "_alpha"] = String(alpha) }
                if usesBeta, let beta { result[d][slot.option + "_beta"] = String(beta) }
                if D == 2 && names.count == slots.count { result[1] = result[0] }
            }
            return result
        }
    }
}

import Foundation
import SwiftProtobuf
import SeqCellBase
import SeqCellHost
import SeqCellModel

/// What the exported graph takes besides `input`.
public struct ONNXExportOptions: Sendable {
    /// `input` (and `output`) are [B, T, ...] instead of [T, B, ...].
    public var batchFirst = false
    /// Adds the graph input `lengths` [B] (int32, ONNX's `sequence_lens` type): PyTorch's
    /// packed semantics (outputs zero past each length, states from the last valid step).
    public var lengths = false
    /// Adds the graph inputs `h0` (and `c0`) in PyTorch's [L·D, B, H] layout.
    public var initialStates = false

    public init(batchFirst: Bool = false, lengths: Bool = false, initialStates: Bool = false) {
        self.batchFirst = batchFirst
        self.lengths = lengths
        self.initialStates = initialStates
    }
}

/// A model as an ONNX graph (opset `ONNXExport.opset`): the ONNX `RNN`, `GRU` and `LSTM`
/// operators where one can express a direction of a layer, a `Scan` of primitive operators
/// where none can (LSTM with `proj_size`), and primitive operators for everything around them
/// (merge of the two directions, the head and its activation, the embedding lookup).
public struct ONNXExport: @unchecked Sendable {
    /// The opset the graph imports (ai.onnx), fully supported by ONNX Runtime 1.14 and later.
    public static let opset = 17
    /// IR version 8 goes with opset 17.
    public static let irVersion: Int64 = 8

    var proto: Onnx_ModelProto
    /// Graph inputs and outputs, e.g. "input [T, B, 3]".
    public private(set) var inputs: [String] = []
    public private(set) var outputs: [String] = []
    /// How each direction of each layer was written: "layer 0 forward: LSTM", "... Scan".
    public private(set) var layerOps: [String] = []

    public init(model: Model, options: ONNXExportOptions = ONNXExportOptions()) throws {
        var writer = try Writer(model: model, options: options)
        try writer.build()
        var m = Onnx_ModelProto()
        m.irVersion = Self.irVersion
        var opset = Onnx_OperatorSetIdProto()
        opset.domain = ""
        opset.version = Int64(Self.opset)
        m.opsetImport = [opset]
        m.producerName = "seqcell"
        m.producerVersion = SeqCellInfo.version
        m.graph = writer.g.graph
        proto = m
        inputs = writer.inputDescriptions
        outputs = writer.outputDescriptions
        layerOps = writer.layerOps
    }

    /// The serialized model (protobuf).
    public func serialized() throws -> Data {
        try proto.serializedData()
    }

    /// Writes the model atomically (no half-written file on failure).
    public func write(to path: String) throws {
        try writeBytesAtomically(try serialized(), to: path)
    }

    /// The Python that runs the exported model with ONNX Runtime.
    public func pythonSnippet(file: String) -> String {
        let feeds = inputNames.map { "\"\($0)\": \($0)" }.joined(separator: ", ")
        return """
        import numpy as np, onnxruntime as ort
        session = ort.InferenceSession(\(jsonString(file)), providers=["CPUExecutionProvider"])
        # inputs: \(inputs.joined(separator: "; "))
        # outputs: \(outputs.joined(separator: "; "))
        [\(outputNames.joined(separator: ", "))] = session.run(None, {\(feeds)})
        """
    }

    /// The graph's input and output names, in order.
    public var inputNames: [String] { proto.graph.input.map(\.name) }
    public var outputNames: [String] { proto.graph.output.map(\.name) }
}

extension ONNXExport {
    /// The gate-block orders: SeqCell (PyTorch) → ONNX. LSTM i,f,g,o → i,o,f,c; GRU r,z,n → z,r,h.
    static let lstmOrder = [0, 3, 1, 2]
    static let gruOrder = [1, 0, 2]

    /// The options each built-in cell's ONNX form handles (every option the built-in cells have).
    static let handledOptions: [String: Set<String>] = {
        func activation(_ name: String) -> [String] { [name, name + "_alpha", name + "_beta"] }
        return [
            "rnn": Set(["bias", "clip"] + activation("activation")),
            "lstm": Set(["proj_size", "bias", "clip", "peepholes", "input_forget"]
                        + activation("gate_activation") + activation("cell_activation") + activation("output_activation")),
            "gru": Set(["reset", "bias", "clip"] + activation("gate_activation") + activation("candidate_activation")),
        ]
    }()

    /// The activation options of each cell, in ONNX's order (f, g, h), with their defaults.
    static let activationOptions: [String: [(option: String, defaultName: String)]] = [
        "rnn": [("activation", "tanh")],
        "gru": [("gate_activation", "sigmoid"), ("candidate_activation", "tanh")],
        "lstm": [("gate_activation", "sigmoid"), ("cell_activation", "tanh"), ("output_activation", "tanh")],
    ]

    /// SeqCell's activation choices → ONNX's activation names (the RNN/GRU/LSTM `activations`).
    static let onnxActivationNames: [String: String] = [
        "sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu", "affine": "Affine", "leaky_relu": "LeakyRelu",
        "thresholded_relu": "ThresholdedRelu", "scaled_tanh": "ScaledTanh", "hard_sigmoid": "HardSigmoid",
        "elu": "Elu", "softsign": "Softsign", "softplus": "Softplus",
    ]
    static let usesAlpha: Set<String> = ["affine", "leaky_relu", "thresholded_relu", "scaled_tanh", "hard_sigmoid", "elu"]
    static let usesBeta: Set<String> = ["affine", "scaled_tanh", "hard_sigmoid"]

    /// An activation as the cell has it configured.
    struct Activation {
        var name: String
        var alpha: Float
        var beta: Float
    }

    static func activations(of c: Cell) throws -> [Activation] {
        try (activationOptions[c.type.id] ?? []).map { option, defaultName in
            var name = defaultName
            if case .choice(let v)? = c.options[option] { name = v }
            guard onnxActivationNames[name] != nil else {
                throw SeqCellError(.unsupported, "cannot export to ONNX: cell '\(c.type.id)' option \(option)=\(name) has no ONNX activation")
            }
            func number(_ key: String) -> Float {
                switch c.options[key] {
                case .float(let v)?: Float(v)
                case .int(let v)?: Float(v)
                default: 0
                }
            }
            return Activation(name: name, alpha: number(option + "_alpha"), beta: number(option + "_beta"))
        }
    }

    static func clip(of c: Cell) -> Float {
        switch c.options["clip"] {
        case .float(let v)?: Float(v)
        case .int(let v)?: Float(v)
        default: 0
        }
    }

    /// `f(x)` in primitive operators, with ONNX's formulas.
    static func apply(_ a: Activation, _ x: String, in b: ONNXGraphBuilder) -> String {
        switch a.name {
        case "sigmoid": b.op("Sigmoid", [x])
        case "relu": b.op("Relu", [x])
        case "affine": b.op("Add", [b.op("Mul", [x, b.scalar("alpha", a.alpha)]), b.scalar("beta", a.beta)])
        case "leaky_relu": b.op("LeakyRelu", [x], [("alpha", .float(a.alpha))])
        case "thresholded_relu": b.op("ThresholdedRelu", [x], [("alpha", .float(a.alpha))])
        case "scaled_tanh": b.op("Mul", [b.op("Tanh", [b.op("Mul", [x, b.scalar("beta", a.beta)])]), b.scalar("alpha", a.alpha)])
        case "hard_sigmoid": b.op("HardSigmoid", [x], [("alpha", .float(a.alpha)), ("beta", .float(a.beta))])
        case "elu": b.op("Elu", [x], [("alpha", .float(a.alpha))])
        case "softsign": b.op("Softsign", [x])
        case "softplus": b.op("Softplus", [x])
        default: b.op("Tanh", [x])
        }
    }

    struct Writer {
        let model: Model
        let options: ONNXExportOptions
        let g = ONNXGraphBuilder(name: "seqcell")
        var inputDescriptions: [String] = []
        var outputDescriptions: [String] = []
        var layerOps: [String] = []

        // Shared values, made when first needed.
        var shapeOfX = ""
        var batchDim = ""  // [1] int64
        var lengths32 = ""
        var lengths64Value: String? = nil
        var maskValue: String? = nil
        var initialStateInputs: [String: String] = [:]
        /// Which states stack as PyTorch's [L·D, B, size] (name → size).
        var stackable: [String: Int] = [:]

        init(model: Model, options: ONNXExportOptions) throws {
            self.model = model
            self.options = options
            try Self.check(model)
        }

        /// Refuses what the export cannot write, naming the layer, direction, cell and option.
        static func check(_ model: Model) throws {
            for (k, layer) in model.layers.enumerated() {
                for (d, dc) in layer.cells.enumerated() {
                    let c = dc.cell
                    let which = "layer \(k) \(layer.directionName(d))"
                    guard let handled = handledOptions[c.type.id] else {
                        throw SeqCellError(.unsupported,
                            "cannot export to ONNX: \(which) uses cell '\(c.type.id)', which is not a built-in cell; "
                            + "ONNX export writes the built-in cells rnn, lstm and gru")
                    }
                    for opt in c.type.options where !handled.contains(opt.name) {
                        if let v = c.options[opt.name], v != opt.defaultValue {
                            throw SeqCellError(.unsupported,
                                "cannot export to ONNX: \(which) (\(c.type.id)) has option \(opt.name)=\(v), which the ONNX export does not write")
                        }
                    }
                    for name in expectedParams(c) where !c.params.contains(where: { $0.name == name }) {
                        throw SeqCellError(.unsupported,
                            "cannot export to ONNX: \(which) (\(c.type.id)) has no parameter '\(name)'; this is not the built-in cell's layout")
                    }
                }
            }
        }

        static func expectedParams(_ c: Cell) -> [String] {
            var names = ["weight_ih", "weight_hh"]
            if c.options["bias"] != .choice("false") { names += ["bias_ih", "bias_hh"] }
            if c.type.id == "lstm", case .int(let p)? = c.options["proj_size"], p > 0 { names.append("weight_hr") }
            if c.type.id == "lstm", c.options["peepholes"] == .choice("true") { names.append("weight_peephole") }
            return names
        }

        static func param(_ dc: DirectionalCell, _ name: String) -> Tensor? {
            guard let i = dc.cell.params.firstIndex(where: { $0.name == name }) else { return nil }
            return dc.params[i]
        }

        var directionCount: Int { model.layers.reduce(0) { $0 + $1.cells.count } }

        mutating func build() throws {
            let B = ONNXDim.named("B"), T = ONNXDim.named("T")
            // Input.
            var x: String
            if let e = model.embedding {
                g.addInput("input", .int64, options.batchFirst ? [B, T] : [T, B])
                inputDescriptions.append("input \(options.batchFirst ? "[B, T]" : "[T, B]") int64 token ids (vocabulary \(e.vocabularySize))")
                let ids = options.batchFirst ? g.op("Transpose", ["input"], [("perm", .ints([1, 0]))]) : "input"
                let table = g.floats("embedding_weight", e.weight.data, shape: e.weight.shape)
                x = g.op("Gather", [table, ids], [("axis", .int(0))])
            } else {
                g.addInput("input", .float, options.batchFirst ? [B, T, .fixed(model.inputSize)] : [T, B, .fixed(model.inputSize)])
                inputDescriptions.append("input \(options.batchFirst ? "[B, T, \(model.inputSize)]" : "[T, B, \(model.inputSize)]") float")
                x = options.batchFirst ? g.op("Transpose", ["input"], [("perm", .ints([1, 0, 2]))]) : "input"
            }
            shapeOfX = g.op("Shape", [x])
            batchDim = g.op("Slice", [shapeOfX, g.int64s("one", [1]), g.int64s("two", [2]), g.int64s("zero", [0])])
            if options.lengths {
                g.addInput("lengths", .int32, [B])
                inputDescriptions.append("lengths [B] int32 (1...T)")
                lengths32 = "lengths"
            } else {
                let steps = g.op("Gather", [shapeOfX, g.int64s("zero", [0], shape: [])], [("axis", .int(0))])
                lengths32 = g.op("Cast", [g.op("Expand", [steps, batchDim])], [("to", .int(Int(ONNXElement.int32.rawValue)))])
            }
            // Stacked states: those every layer and direction has, with one size.
            let D = model.layers[0].cells.count
            if model.layers.allSatisfy({ $0.cells.count == D }) {
                for name in commonStateNames(model) {
                    let sizes = Set(model.layers.flatMap { $0.cells.compactMap { $0.cell.states.first { $0.name == name }?.size } })
                    if sizes.count == 1 { stackable[name] = sizes.first! }
                }
            }
            if options.initialStates {
                // As `seqcell run` reads them: the states every layer and direction has, with one size.
                let names = model.layers[0].cells[0].cell.states.map(\.name).filter { stackable[$0] != nil }
                guard !names.isEmpty else {
                    throw SeqCellError(.unsupported,
                        "cannot export initial states: no state is in every layer and direction with one size, "
                        + "so none has PyTorch's [L·D, B, H] layout (export without --initial-states)")
                }
                for name in names {
                    g.addInput("\(name)0", .float, [.fixed(directionCount), B, .fixed(stackable[name]!)])
                    inputDescriptions.append("\(name)0 [\(directionCount), B, \(stackable[name]!)] float")
                    initialStateInputs[name] = "\(name)0"
                }
            }
            // Layers.
            var finals: [[String: String]] = []
            var lastDirections: [String] = []
            var index = 0
            for (k, layer) in model.layers.enumerated() {
                var outs: [String] = []
                for (d, dc) in layer.cells.enumerated() {
                    let r = try direction(dc, layer: k, name: layer.directionName(d), reversed: layer.direction != .forward && (layer.direction == .reverse || d == 1),
                                          index: index, input: x)
                    outs.append(r.output)
                    finals.append(r.states)
                    index += 1
                }
                lastDirections = outs
                x = outs.count == 2 ? merge(outs[0], outs[1], layer.mergeMode) : outs[0]
            }
            // Last-step models: each sample's row at its last valid step (a backward direction's at step 0).
            let last = model.layers[model.layers.count - 1]
            if model.outputSteps == .last {
                var picked: [String] = []
                for (d, y) in lastDirections.enumerated() {
                    if last.directionName(d) == "backward", last.direction == .bidirectional {
                        picked.append(g.op("Slice", [y, g.int64s("zero", [0]), g.int64s("one", [1]), g.int64s("zero", [0])]))
                    } else {
                        let lastIndex = g.op("Sub", [lengths64(), g.int64s("one", [1], shape: [])])
                        let column = g.op("Reshape", [lastIndex, g.int64s("shape", [1, -1, 1])])
                        let yShape = g.op("Shape", [y])
                        let width = g.op("Slice", [yShape, g.int64s("two", [2]), g.int64s("three", [3]), g.int64s("zero", [0])])
                        let target = g.op("Concat", [g.int64s("one", [1]), batchDim, width], [("axis", .int(0))])
                        picked.append(g.op("GatherElements", [y, g.op("Expand", [column, target])], [("axis", .int(0))]))
                    }
                }
                x = picked.count == 2 ? merge(picked[0], picked[1], last.mergeMode) : picked[0]
            }
            // Head.
            if let head = model.head {
                var wt = [Float](repeating: 0, count: head.weight.count)
                let (O, Dh) = (head.outputSize, head.inputSize)
                for o in 0..<O { for i in 0..<Dh { wt[i * O + o] = head.weight.data[o * Dh + i] } }
                let w = g.floats("head_weight_t", wt, shape: [Dh, O])
                x = g.op("Add", [g.op("MatMul", [x, w]), g.floats("head_bias", head.bias.data, shape: [O])])
                switch head.activation {
                case .linear: break
                case .tanh: x = g.op("Tanh", [x])
                case .sigmoid: x = g.op("Sigmoid", [x])
                case .relu: x = g.op("Relu", [x])
                case .softmax: x = g.op("Softmax", [x], [("axis", .int(-1))])
                }
            }
            // Outputs.
            let O = model.outputSize
            if model.outputSteps == .last {
                g.node("Squeeze", [x, g.int64s("axes", [0])], named: ["output"])
                g.addOutput("output", .float, [B, .fixed(O)])
                outputDescriptions.append("output [B, \(O)] float (each sample's last step)")
            } else if options.batchFirst {
                g.node("Transpose", [x], named: ["output"], [("perm", .ints([1, 0, 2]))])
                g.addOutput("output", .float, [B, T, .fixed(O)])
                outputDescriptions.append("output [B, T, \(O)] float")
            } else {
                g.node("Identity", [x], named: ["output"])
                g.addOutput("output", .float, [T, B, .fixed(O)])
                outputDescriptions.append("output [T, B, \(O)] float")
            }
            for name in model.layers[0].cells[0].cell.states.map(\.name) {
                guard let size = stackable[name] else { continue }
                g.node("Concat", finals.map { $0[name]! }, named: ["\(name)_n"], [("axis", .int(0))])
                g.addOutput("\(name)_n", .float, [.fixed(directionCount), B, .fixed(size)])
                outputDescriptions.append("\(name)_n [\(directionCount), B, \(size)] float")
            }
        }

        mutating func lengths64() -> String {
            if let v = lengths64Value { return v }
            let v = g.op("Cast", [lengths32], [("to", .int(Int(ONNXElement.int64.rawValue)))])
            lengths64Value = v
            return v
        }

        /// [T, B, 1] bool: step t of sample b is valid (t < lengths[b]).
        mutating func mask() -> String {
            if let m = maskValue { return m }
            let steps = g.op("Gather", [shapeOfX, g.int64s("zero", [0], shape: [])], [("axis", .int(0))])
            let range = g.op("Range", [g.int64s("zero", [0], shape: []), steps, g.int64s("one", [1], shape: [])])
            let column = g.op("Unsqueeze", [range, g.int64s("axes", [1])])
            let row = g.op("Unsqueeze", [lengths64(), g.int64s("axes", [0])])
            let m = g.op("Unsqueeze", [g.op("Less", [column, row]), g.int64s("axes", [2])])
            maskValue = m
            return m
        }

        func merge(_ a: String, _ b: String, _ mode: MergeMode) -> String {
            switch mode {
            case .concat: return g.op("Concat", [a, b], [("axis", .int(2))])
            case .sum: return g.op("Add", [a, b])
            case .mul: return g.op("Mul", [a, b])
            case .ave: return g.op("Mul", [g.op("Add", [a, b]), g.scalar("half", 0.5)])
            }
        }

        /// The initial state `name` of direction `index` as [1, B, size], or nil (zero).
        func initialState(_ name: String, index: Int) -> String? {
            guard let input = initialStateInputs[name] else { return nil }
            return g.op("Slice", [input, g.int64s("start", [Int64(index)]), g.int64s("end", [Int64(index + 1)]), g.int64s("zero", [0])])
        }

        /// Stacks a parameter's gate blocks in `order` (rows of equal blocks).
        static func reorder(_ t: Tensor, blocks: Int, order: [Int]) -> [Float] {
            let rows = t.shape[0] / blocks
            let width = t.rank == 2 ? t.shape[1] : 1
            let n = rows * width
            return order.flatMap { Array(t.data[($0 * n)..<(($0 + 1) * n)]) }
        }

        /// One direction of layer `layer`: its output [T, B, F] (zero past each length, in the
        /// input's time order) and its final states, each [1, B, size].
        mutating func direction(_ dc: DirectionalCell, layer: Int, name: String, reversed: Bool, index: Int,
                                input x: String) throws -> (output: String, states: [String: String]) {
            let c = dc.cell
            let H = c.hiddenSize, I = c.inputSize
            let tag = "l\(layer)_\(name)"
            if c.type.id == "lstm", case .int(let p)? = c.options["proj_size"], p > 0 {
                layerOps.append("layer \(layer) \(name): Scan (lstm with proj_size)")
                return try projectedLSTM(dc, tag: tag, reversed: reversed, index: index, input: x, projection: p)
            }
            let (op, order): (String, [Int]) = switch c.type.id {
            case "lstm": ("LSTM", ONNXExport.lstmOrder)
            case "gru": ("GRU", ONNXExport.gruOrder)
            default: ("RNN", [0])
            }
            layerOps.append("layer \(layer) \(name): \(op)")
            let G = order.count
            let wih = Self.param(dc, "weight_ih")!, whh = Self.param(dc, "weight_hh")!
            let W = g.floats("\(tag)_W", Self.reorder(wih, blocks: G, order: order), shape: [1, G * H, I])
            let R = g.floats("\(tag)_R", Self.reorder(whh, blocks: G, order: order), shape: [1, G * H, H])
            var bias = ""
            if let bih = Self.param(dc, "bias_ih"), let bhh = Self.param(dc, "bias_hh") {
                bias = g.floats("\(tag)_B", Self.reorder(bih, blocks: G, order: order) + Self.reorder(bhh, blocks: G, order: order),
                                shape: [1, 2 * G * H])
            }
            var inputs = [x, W, R, bias, lengths32, initialState("h", index: index) ?? ""]
            if op == "LSTM" { inputs.append(initialState("c", index: index) ?? "") }
            if op == "LSTM", let p = Self.param(dc, "weight_peephole") {
                // SeqCell's i,f,o → ONNX's i,o,f.
                inputs.append(g.floats("\(tag)_P", Self.reorder(p, blocks: 3, order: [0, 2, 1]), shape: [1, 3 * H]))
            }
            while inputs.last == "" { inputs.removeLast() }
            var attributes: [(String, ONNXGraphBuilder.Attribute)] = [
                ("hidden_size", .int(H)), ("direction", .string(reversed ? "reverse" : "forward")),
            ]
            if c.type.id == "gru" {
                attributes.append(("linear_before_reset", .int(c.options["reset"] == .choice("before") ? 0 : 1)))
            }
            // ONNX Runtime gives each activation that uses alpha (beta) the next value of the list.
            let acts = try ONNXExport.activations(of: c)
            attributes.append(("activations", .strings(acts.map { ONNXExport.onnxActivationNames[$0.name]! })))
            let alphas = acts.filter { ONNXExport.usesAlpha.contains($0.name) }.map(\.alpha)
            let betas = acts.filter { ONNXExport.usesBeta.contains($0.name) }.map(\.beta)
            if !alphas.isEmpty { attributes.append(("activation_alpha", .floats(alphas))) }
            if !betas.isEmpty { attributes.append(("activation_beta", .floats(betas))) }
            let clip = ONNXExport.clip(of: c)
            if clip > 0 { attributes.append(("clip", .float(clip))) }
            if c.options["input_forget"] == .choice("true") { attributes.append(("input_forget", .int(1))) }
            let outs = g.node(op, inputs, outputs: op == "LSTM" ? 3 : 2, attributes)
            let y = g.op("Squeeze", [outs[0], g.int64s("axes", [1])])
            var states = ["h": outs[1]]
            if op == "LSTM" { states["c"] = outs[2] }
            return (y, states)
        }

        /// An LSTM direction with a projection (no ONNX operator has one): a Scan over time of
        /// MatMul/Add/Sigmoid/Tanh/Mul, steps past a sample's length leaving the states unchanged
        /// and giving zero output; a reverse direction reverses each sample's valid prefix
        /// (ReverseSequence) before and after.
        mutating func projectedLSTM(_ dc: DirectionalCell, tag: String, reversed: Bool, index: Int, input x: String,
                                    projection P: Int) throws -> (output: String, states: [String: String]) {
            let c = dc.cell
            let H = c.hiddenSize, I = c.inputSize
            func transposed(_ t: Tensor) -> [Float] {
                let (r, w) = (t.shape[0], t.shape[1])
                var out = [Float](repeating: 0, count: t.count)
                for i in 0..<r { for j in 0..<w { out[j * r + i] = t.data[i * w + j] } }
                return out
            }
            let wih = Self.param(dc, "weight_ih")!, whh = Self.param(dc, "weight_hh")!, whr = Self.param(dc, "weight_hr")!
            let WT = g.floats("\(tag)_weight_ih_t", transposed(wih), shape: [I, 4 * H])
            let RT = g.floats("\(tag)_weight_hh_t", transposed(whh), shape: [P, 4 * H])
            let PT = g.floats("\(tag)_weight_hr_t", transposed(whr), shape: [H, P])
            var bias: String? = nil
            if let bih = Self.param(dc, "bias_ih"), let bhh = Self.param(dc, "bias_hh") {
                bias = g.floats("\(tag)_bias", zip(bih.data, bhh.data).map { $0 + $1 }, shape: [4 * H])
            }
            // The body: (h, c, x_t, valid_t) -> (h', c', y_t).
            let body = ONNXGraphBuilder(name: "\(tag)_step", namePrefix: "\(tag)_")
            body.addInput("\(tag)_h", .float, [.named("B"), .fixed(P)])
            body.addInput("\(tag)_c", .float, [.named("B"), .fixed(H)])
            body.addInput("\(tag)_x", .float, [.named("B"), .fixed(I)])
            body.addInput("\(tag)_valid", .bool, [.named("B"), .fixed(1)])
            var gates = body.op("Add", [body.op("MatMul", ["\(tag)_x", WT]), body.op("MatMul", ["\(tag)_h", RT])])
            if let bias { gates = body.op("Add", [gates, bias]) }
            let parts = body.node("Split", [gates], outputs: 4, [("axis", .int(1))])
            let acts = try ONNXExport.activations(of: c)
            let (fAct, gAct, hAct) = (acts[0], acts[1], acts[2])
            let clipValue = ONNXExport.clip(of: c)
            let bounds = clipValue > 0 ? (body.scalar("clip_min", -clipValue), body.scalar("clip_max", clipValue)) : nil
            func clipped(_ v: String) -> String {
                guard let bounds else { return v }
                return body.op("Clip", [v, bounds.0, bounds.1])
            }
            var peep: [String]? = nil
            if let p = Self.param(dc, "weight_peephole") {
                peep = (0..<3).map { k in body.floats("peephole", Array(p.data[(k * H)..<((k + 1) * H)]), shape: [H]) }
            }
            var iPre = parts[0], fPre = parts[1], oPre = parts[3]
            if let peep {
                iPre = body.op("Add", [iPre, body.op("Mul", [peep[0], "\(tag)_c"])])
                fPre = body.op("Add", [fPre, body.op("Mul", [peep[1], "\(tag)_c"])])
            }
            let i = ONNXExport.apply(fAct, clipped(iPre), in: body)
            let f = c.options["input_forget"] == .choice("true")
                ? body.op("Sub", [body.scalar("one", 1), i]) : ONNXExport.apply(fAct, clipped(fPre), in: body)
            let gg = ONNXExport.apply(gAct, clipped(parts[2]), in: body)
            let cNew = body.op("Add", [body.op("Mul", [f, "\(tag)_c"]), body.op("Mul", [i, gg])])
            if let peep { oPre = body.op("Add", [oPre, body.op("Mul", [peep[2], cNew])]) }
            let o = ONNXExport.apply(fAct, clipped(oPre), in: body)
            let hNew = body.op("MatMul", [body.op("Mul", [o, ONNXExport.apply(hAct, cNew, in: body)]), PT])
            let zero = body.scalar("zero", 0)
            body.node("Where", ["\(tag)_valid", hNew, "\(tag)_h"], named: ["\(tag)_h_out"])
            body.node("Where", ["\(tag)_valid", cNew, "\(tag)_c"], named: ["\(tag)_c_out"])
            body.node("Where", ["\(tag)_valid", hNew, zero], named: ["\(tag)_y"])
            body.addOutput("\(tag)_h_out", .float, [.named("B"), .fixed(P)])
            body.addOutput("\(tag)_c_out", .float, [.named("B"), .fixed(H)])
            body.addOutput("\(tag)_y", .float, [.named("B"), .fixed(P)])

            func zeros(_ size: Int) -> String {
                g.op("ConstantOfShape", [g.op("Concat", [batchDim, g.int64s("size", [Int64(size)])], [("axis", .int(0))])])
            }
            func squeezed(_ s: String?) -> String? {
                s.map { g.op("Squeeze", [$0, g.int64s("axes", [0])]) }
            }
            let h0 = squeezed(initialState("h", index: index)) ?? zeros(P)
            let c0 = squeezed(initialState("c", index: index)) ?? zeros(H)
            let valid = mask()
            let xin = reversed ? g.op("ReverseSequence", [x, lengths64()], [("batch_axis", .int(1)), ("time_axis", .int(0))]) : x
            let outs = g.node("Scan", [h0, c0, xin, valid], outputs: 3, [("num_scan_inputs", .int(2)), ("body", .graph(body.graph))])
            let y = reversed ? g.op("ReverseSequence", [outs[2], lengths64()], [("batch_axis", .int(1)), ("time_axis", .int(0))]) : outs[2]
            return (y, ["h": g.op("Unsqueeze", [outs[0], g.int64s("axes", [0])]),
                        "c": g.op("Unsqueeze", [outs[1], g.int64s("axes", [0])])])
        }
    }
}

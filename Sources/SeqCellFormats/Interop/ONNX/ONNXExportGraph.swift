import Foundation
import SwiftProtobuf
import SeqCellBase
import SeqCellHost
import SeqCellModel

/// Element types of ONNX tensors (TensorProto.DataType) that the exporter writes.
enum ONNXElement: Int32 {
    case float = 1
    case int32 = 6
    case int64 = 7
    case bool = 9
}

/// A dimension of a graph input or output: fixed, or named (dynamic).
enum ONNXDim {
    case fixed(Int)
    case named(String)
}

/// Builds one ONNX graph (the main graph or a Scan body): nodes in topological order,
/// initializers, inputs and outputs, with fresh value names.
final class ONNXGraphBuilder {
    private(set) var graph = Onnx_GraphProto()
    private var counter = 0
    private let namePrefix: String

    init(name: String, namePrefix: String = "") {
        graph.name = name
        self.namePrefix = namePrefix
    }

    /// A value name not used before in this graph (`hint` makes graphs readable).
    func fresh(_ hint: String) -> String {
        counter += 1
        return "\(namePrefix)\(hint)_\(counter)"
    }

    static func valueInfo(_ name: String, _ element: ONNXElement, _ dims: [ONNXDim]?) -> Onnx_ValueInfoProto {
        var v = Onnx_ValueInfoProto()
        v.name = name
        var t = Onnx_TypeProto.Tensor()
        t.elemType = element.rawValue
        if let dims {
            var shape = Onnx_TensorShapeProto()
            shape.dim = dims.map { d in
                var dim = Onnx_TensorShapeProto.Dimension()
                switch d {
                case .fixed(let n): dim.dimValue = Int64(n)
                case .named(let s): dim.dimParam = s
                }
                return dim
            }
            t.shape = shape
        }
        var type = Onnx_TypeProto()
        type.tensorType = t
        v.type = type
        return v
    }

    func addInput(_ name: String, _ element: ONNXElement, _ dims: [ONNXDim]?) {
        graph.input.append(Self.valueInfo(name, element, dims))
    }

    func addOutput(_ name: String, _ element: ONNXElement, _ dims: [ONNXDim]?) {
        graph.output.append(Self.valueInfo(name, element, dims))
    }

    /// A float initializer holding `values` in row-major order.
    func floats(_ hint: String, _ values: [Float], shape: [Int]) -> String {
        precondition(shape.reduce(1, *) == values.count, "initializer \(hint): \(values.count) values for shape \(shape)")
        var t = Onnx_TensorProto()
        t.name = fresh(hint)
        t.dataType = ONNXElement.float.rawValue
        t.dims = shape.map(Int64.init)
        t.rawData = values.withUnsafeBufferPointer { Data(buffer: $0) }
        graph.initializer.append(t)
        return t.name
    }

    /// An int64 initializer.
    func int64s(_ hint: String, _ values: [Int64], shape: [Int]? = nil) -> String {
        var t = Onnx_TensorProto()
        t.name = fresh(hint)
        t.dataType = ONNXElement.int64.rawValue
        t.dims = (shape ?? [values.count]).map(Int64.init)
        t.int64Data = values
        graph.initializer.append(t)
        return t.name
    }

    /// A scalar float initializer.
    func scalar(_ hint: String, _ value: Float) -> String {
        floats(hint, [value], shape: [])
    }

    enum Attribute {
        case int(Int)
        case ints([Int])
        case float(Float)
        case floats([Float])
        case string(String)
        case strings([String])
        case graph(Onnx_GraphProto)
    }

    /// Appends a node and returns its output names (fresh ones, `outputs` many, unless `named`).
    @discardableResult
    func node(_ op: String, _ inputs: [String], outputs: Int = 1, named: [String]? = nil,
              _ attributes: [(String, Attribute)] = []) -> [String] {
        var n = Onnx_NodeProto()
        n.opType = op
        n.input = inputs
        n.output = named ?? (0..<outputs).map { _ in fresh(op.lowercased()) }
        n.name = fresh("node_\(op)")
        n.attribute = attributes.map { name, value in
            var a = Onnx_AttributeProto()
            a.name = name
            switch value {
            case .int(let v): a.type = .int; a.i = Int64(v)
            case .ints(let v): a.type = .ints; a.ints = v.map(Int64.init)
            case .float(let v): a.type = .float; a.f = v
            case .floats(let v): a.type = .floats; a.floats = v
            case .string(let v): a.type = .string; a.s = Data(v.utf8)
            case .strings(let v): a.type = .strings; a.strings = v.map { Data($0.utf8) }
            case .graph(let g): a.type = .graph; a.g = g
            }
            return a
        }
        graph.node.append(n)
        return n.output
    }

    /// One-output node.
    func op(_ op: String, _ inputs: [String], _ attributes: [(String, Attribute)] = []) -> String {
        node(op, inputs, outputs: 1, attributes)[0]
    }
}

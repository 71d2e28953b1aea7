import Foundation
import SwiftProtobuf
import SeqCellBase
import SeqCellHost
import SeqCellModel

/// A constant tensor of an ONNX graph (an initializer or a `Constant` node's value), decoded
/// and checked: float tensors as `Float`, integer tensors as `Int64`.
struct ONNXConstant: Sendable {
    var shape: [Int]
    var floats: [Float]?
    var ints: [Int64]?

    var count: Int { floats?.count ?? ints?.count ?? 0 }
    var isFloat: Bool { floats != nil }
}

/// An ONNX model file read with the limits of an untrusted input: its size capped before
/// decoding, every tensor's element count checked against its dims, external data read only
/// inside the model's folder, and the nodes ordered so that each comes after its inputs.
struct ONNXGraph {
    /// Files larger than this are refused before decoding (protobuf's own limit is 2 GiB).
    static let maximumFileSize = 1 << 30
    /// A tensor with more elements than this is refused.
    static let maximumElements = 1 << 28
    /// Graphs with more nodes than this are refused.
    static let maximumNodes = 100_000
    /// The opsets of the default domain the importer reads (LSTM/GRU/RNN exist unchanged in
    /// meaning from 7 to 22).
    static let opsets = 7...22

    let path: String
    let model: Onnx_ModelProto
    var graph: Onnx_GraphProto { model.graph }
    /// The default domain's opset.
    let opset: Int
    /// Nodes in an order where every node follows the nodes producing its inputs.
    let nodes: [Onnx_NodeProto]
    /// Initializers by name.
    let initializers: [String: ONNXConstant]
    /// Names of graph inputs that are not initializers.
    let inputs: [String]

    func fail(_ message: String) -> SeqCellError {
        SeqCellError(.invalidArgument, escapingControls("'\(path)': \(message)"))
    }

    /// `node` for messages: "node 'name' (LSTM)" or "node #3 (LSTM)" when it has no name.
    static func label(_ node: Onnx_NodeProto, index: Int) -> String {
        let op = escapingControls(String(node.opType.prefix(40)))
        return node.name.isEmpty ? "node #\(index) (\(op))" : "node \(displayName(node.name, limit: 80)) (\(op))"
    }

    init(path: String) throws {
        self.path = path
        func fail(_ message: String) -> SeqCellError { SeqCellError(.invalidArgument, escapingControls("'\(path)': \(message)")) }
        let attributes: [FileAttributeKey: Any]
        do { attributes = try FileManager.default.attributesOfItem(atPath: path) } catch {
            throw SeqCellError(.io, escapingControls("cannot read '\(path)': no such file"))
        }
        if (attributes[.type] as? FileAttributeType) == .typeDirectory {
            throw SeqCellError(.io, escapingControls("cannot read '\(path)': it is a directory"))
        }
        let size = (attributes[.size] as? NSNumber)?.intValue ?? 0
        guard size <= Self.maximumFileSize else {
            throw fail("the file is \(size) bytes; ONNX models larger than \(Self.maximumFileSize) bytes are refused (store large weights as external data)")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw SeqCellError(.io, escapingControls("cannot read '\(path)'"))
        }
        guard !data.isEmpty else { throw fail("the file is empty, not an ONNX model") }
        let model: Onnx_ModelProto
        do {
            var options = BinaryDecodingOptions()
            options.messageDepthLimit = 64
            model = try Onnx_ModelProto(serializedBytes: data, options: options)
        } catch {
            throw fail("not a valid ONNX model: the protobuf does not decode (truncated or not an ONNX file)")
        }
        self.model = model
        guard model.hasGraph else { throw fail("not an ONNX model: it has no graph") }

        // Opset of the default domain.
        var opset: Int? = nil
        for o in model.opsetImport where o.domain.isEmpty || o.domain == "ai.onnx" { opset = Int(clamping: o.version) }
        guard let opset else { throw fail("the model imports no opset of the default ONNX domain") }
        guard Self.opsets.contains(opset) else {
            throw fail("opset \(opset) of the default domain: ONNX import reads opsets \(Self.opsets.lowerBound) to \(Self.opsets.upperBound)")
        }
        self.opset = opset
        let graph = model.graph
        guard graph.node.count <= Self.maximumNodes else {
            throw fail("the graph has \(graph.node.count) nodes; at most \(Self.maximumNodes) are read")
        }
        guard graph.sparseInitializer.isEmpty else {
            throw fail("sparse initializer \(displayName(graph.sparseInitializer[0].values.name)): sparse tensors are not supported")
        }

        // Initializers.
        let folder = URL(fileURLWithPath: path).deletingLastPathComponent().path
        var initializers: [String: ONNXConstant] = [:]
        for t in graph.initializer {
            guard initializers[t.name] == nil else { throw fail("initializer \(displayName(t.name)) is given twice") }
            initializers[t.name] = try Self.decode(t, what: "initializer \(displayName(t.name))", folder: folder, fail: fail)
        }
        self.initializers = initializers
        inputs = graph.input.map(\.name).filter { initializers[$0] == nil }

        // Topological order (Kahn), refusing cycles, doubly produced values and inputs that
        // nothing produces.
        var producer: [String: Int] = [:]
        var available = Set(initializers.keys).union(graph.input.map(\.name))
        available.insert("")
        for (k, n) in graph.node.enumerated() {
            for o in n.output where !o.isEmpty {
                if producer[o] != nil || available.contains(o) {
                    throw fail("\(Self.label(n, index: k)) writes \(displayName(o)), which is already produced elsewhere in the graph")
                }
                producer[o] = k
            }
        }
        var pending = [Int](repeating: 0, count: graph.node.count)
        var consumers: [Int: [Int]] = [:]
        for (k, n) in graph.node.enumerated() {
            for i in Set(n.input) where !available.contains(i) {
                guard let p = producer[i] else {
                    throw fail("\(Self.label(n, index: k)) reads \(displayName(i)), which no node, initializer or graph input provides")
                }
                pending[k] += 1
                consumers[p, default: []].append(k)
            }
        }
        var ready = (0..<graph.node.count).filter { pending[$0] == 0 }
        var order: [Int] = []
        order.reserveCapacity(graph.node.count)
        while let k = ready.popLast() {
            order.append(k)
            for c in consumers[k] ?? [] {
                pending[c] -= 1
                if pending[c] == 0 { ready.append(c) }
            }
        }
        if order.count < graph.node.count {
            let k = (0..<graph.node.count).first { pending[$0] > 0 }!
            throw fail("the graph has a cycle: \(Self.label(graph.node[k], index: k)) depends on its own output")
        }
        // Keep the file's order among independent nodes where it is already valid.
        order.sort()
        var seen = available
        var valid = true
        for k in order {
            if !graph.node[k].input.allSatisfy(seen.contains) { valid = false; break }
            for o in graph.node[k].output { seen.insert(o) }
        }
        if !valid {
            // Recompute a stable order: repeatedly take the first ready node.
            var pend = [Int](repeating: 0, count: graph.node.count)
            for (k, n) in graph.node.enumerated() { pend[k] = Set(n.input).filter { !available.contains($0) }.count }
            var taken = [Bool](repeating: false, count: graph.node.count)
            order = []
            var have = available
            while order.count < graph.node.count {
                guard let k = (0..<graph.node.count).first(where: { !taken[$0] && graph.node[$0].input.allSatisfy(have.contains) }) else { break }
                taken[k] = true
                order.append(k)
                for o in graph.node[k].output { have.insert(o) }
            }
        }
        nodes = order.map { graph.node[$0] }
        originalIndex = order
    }

    /// Position in the file of `nodes[k]` (for messages).
    let originalIndex: [Int]

    func label(_ k: Int) -> String { Self.label(nodes[k], index: originalIndex[k]) }

    /// Decodes a tensor: its dims checked, its data (inline or external) checked against them.
    static func decode(_ t: Onnx_TensorProto, what: String, folder: String, fail: (String) -> SeqCellError) throws -> ONNXConstant {
        guard t.dims.count <= 8 else { throw fail("\(what) has \(t.dims.count) dimensions; at most 8 are read") }
        guard t.dims.allSatisfy({ $0 >= 0 && $0 <= Int64(maximumElements) }) else {
            throw fail("\(what) has dims \(t.dims): each must be between 0 and \(maximumElements)")
        }
        let shape = t.dims.map { Int($0) }
        guard let count = Boundary.elementCount(shape), count <= maximumElements else {
            throw fail("\(what) has dims \(shape): more than \(maximumElements) elements")
        }
        guard !t.hasSegment else { throw fail("\(what) is a segment of a tensor; segmented tensors are not supported") }
        let type = Onnx_TensorProto.DataType(rawValue: Int(t.dataType))
        let width: Int
        switch type {
        case .float?, .int32?: width = 4
        case .int64?, .double?: width = 8
        default:
            throw fail("\(what) has data type \(t.dataType) (\(type.map { "\($0)" } ?? "unknown")); ONNX import reads float32 weights (and int32/int64 shapes)")
        }
        var raw: Data? = nil
        if t.dataLocation == .external {
            raw = try readExternal(t, what: what, folder: folder, bytes: count * width, fail: fail)
        } else if t.hasRawData {
            raw = t.rawData
        }
        func checkCount(_ n: Int, _ field: String) throws {
            guard n == count else { throw fail("\(what) has dims \(shape) (\(count) values) but its \(field) holds \(n)") }
        }
        if let raw {
            try checkCount(raw.count / width, "data")
            guard raw.count % width == 0 else { throw fail("\(what): its data is \(raw.count) bytes, not a whole number of \(width)-byte values") }
            switch type {
            case .float?:
                var f = [Float](repeating: 0, count: count)
                raw.withUnsafeBytes { b in for i in 0..<count { f[i] = Float(bitPattern: UInt32(littleEndian: b.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))) } }
                return ONNXConstant(shape: shape, floats: f)
            case .double?:
                var f = [Float](repeating: 0, count: count)
                raw.withUnsafeBytes { b in for i in 0..<count { f[i] = Float(Double(bitPattern: UInt64(littleEndian: b.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self)))) } }
                return ONNXConstant(shape: shape, floats: f)
            case .int32?:
                var v = [Int64](repeating: 0, count: count)
                raw.withUnsafeBytes { b in for i in 0..<count { v[i] = Int64(Int32(bitPattern: UInt32(littleEndian: b.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))) } }
                return ONNXConstant(shape: shape, ints: v)
            default:
                var v = [Int64](repeating: 0, count: count)
                raw.withUnsafeBytes { b in for i in 0..<count { v[i] = Int64(bitPattern: UInt64(littleEndian: b.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))) } }
                return ONNXConstant(shape: shape, ints: v)
            }
        }
        switch type {
        case .float?:
            try checkCount(t.floatData.count, "float_data")
            return ONNXConstant(shape: shape, floats: t.floatData)
        case .double?:
            try checkCount(t.doubleData.count, "double_data")
            return ONNXConstant(shape: shape, floats: t.doubleData.map { Float($0) })
        case .int32?:
            try checkCount(t.int32Data.count, "int32_data")
            return ONNXConstant(shape: shape, ints: t.int32Data.map { Int64($0) })
        default:
            try checkCount(t.int64Data.count, "int64_data")
            return ONNXConstant(shape: shape, ints: t.int64Data)
        }
    }

    /// The bytes of an external-data tensor: its `location` must be a relative path inside the
    /// model's folder (no absolute path, no `..`, no symbolic link out of it), and
    /// `offset`/`length` must lie inside the file and give exactly the bytes the dims need.
    static func readExternal(_ t: Onnx_TensorProto, what: String, folder: String, bytes: Int, fail: (String) -> SeqCellError) throws -> Data {
        var location: String? = nil
        var offset = 0
        var length: Int? = nil
        for e in t.externalData {
            switch e.key {
            case "location": location = e.value
            case "offset":
                guard let v = Int(e.value), v >= 0 else { throw fail("\(what): external data offset \(displayName(e.value)) is not a non-negative integer") }
                offset = v
            case "length":
                guard let v = Int(e.value), v >= 0 else { throw fail("\(what): external data length \(displayName(e.value)) is not a non-negative integer") }
                length = v
            case "checksum": break
            default: throw fail("\(what): unknown external data key \(displayName(e.key))")
            }
        }
        guard let location, !location.isEmpty else { throw fail("\(what) has external data without a location") }
        guard !location.hasPrefix("/"), !location.hasPrefix("\\"), !location.contains("\0") else {
            throw fail("\(what): external data location \(displayName(location)) is an absolute path; only files inside the model's folder are read")
        }
        let parts = location.split(whereSeparator: { $0 == "/" || $0 == "\\" })
        guard !parts.contains(where: { $0 == ".." }) else {
            throw fail("\(what): external data location \(displayName(location)) leaves the model's folder ('..'); only files inside it are read")
        }
        let base = URL(fileURLWithPath: folder).resolvingSymlinksInPath().standardizedFileURL.path
        let target = URL(fileURLWithPath: folder).appendingPathComponent(location).resolvingSymlinksInPath().standardizedFileURL.path
        guard target.hasPrefix(base.hasSuffix("/") ? base : base + "/") else {
            throw fail("\(what): external data location \(displayName(location)) resolves outside the model's folder; only files inside it are read")
        }
        let length2 = length ?? bytes
        guard length2 == bytes else {
            throw fail("\(what): external data length \(length2) but its dims need \(bytes) bytes")
        }
        guard let handle = FileHandle(forReadingAtPath: target) else {
            throw fail("\(what): external data file \(displayName(location)) cannot be read")
        }
        defer { try? handle.close() }
        let size = (try? handle.seekToEnd()) ?? 0
        guard offset <= Int(size), bytes <= Int(size) - offset else {
            throw fail("\(what): external data \(displayName(location)) has \(size) bytes; offset \(offset) + length \(bytes) lies beyond its end")
        }
        do {
            try handle.seek(toOffset: UInt64(offset))
            let d = try handle.read(upToCount: bytes) ?? Data()
            guard d.count == bytes else { throw fail("\(what): external data \(displayName(location)) ended early") }
            return d
        } catch let e as SeqCellError {
            throw e
        } catch {
            throw fail("\(what): external data \(displayName(location)) cannot be read")
        }
    }
}

/// Attribute access for a node, with messages naming the node.
struct ONNXAttributes {
    let node: Onnx_NodeProto
    let label: String
    let fail: (String) -> SeqCellError
    private let byName: [String: Onnx_AttributeProto]

    init(_ node: Onnx_NodeProto, label: String, fail: @escaping (String) -> SeqCellError) throws {
        self.node = node
        self.label = label
        self.fail = fail
        var m: [String: Onnx_AttributeProto] = [:]
        for a in node.attribute {
            guard m[a.name] == nil else { throw fail("\(label): attribute \(displayName(a.name)) is given twice") }
            guard a.refAttrName.isEmpty else { throw fail("\(label): attribute \(displayName(a.name)) refers to a function attribute; not supported") }
            m[a.name] = a
        }
        byName = m
    }

    var names: [String] { Array(byName.keys).sorted() }
    func has(_ name: String) -> Bool { byName[name] != nil }

    func int(_ name: String) throws -> Int? {
        guard let a = byName[name] else { return nil }
        guard a.type == .int || (a.type == .undefined && a.hasI) else { throw fail("\(label): attribute '\(name)' must be an integer") }
        guard let v = Int(exactly: a.i), abs(v) < 1 << 40 else { throw fail("\(label): attribute '\(name)' = \(a.i) is out of range") }
        return v
    }

    func float(_ name: String) throws -> Float? {
        guard let a = byName[name] else { return nil }
        guard a.type == .float || (a.type == .undefined && a.hasF) else { throw fail("\(label): attribute '\(name)' must be a float") }
        return a.f
    }

    func string(_ name: String) throws -> String? {
        guard let a = byName[name] else { return nil }
        guard a.type == .string || (a.type == .undefined && a.hasS) else { throw fail("\(label): attribute '\(name)' must be a string") }
        guard let s = String(data: a.s, encoding: .utf8) else { throw fail("\(label): attribute '\(name)' is not UTF-8") }
        return s
    }

    func ints(_ name: String) throws -> [Int]? {
        guard let a = byName[name] else { return nil }
        guard a.type == .ints || a.type == .undefined else { throw fail("\(label): attribute '\(name)' must be a list of integers") }
        guard a.ints.count <= 64, a.ints.allSatisfy({ abs($0) < 1 << 40 }) else { throw fail("\(label): attribute '\(name)' is out of range") }
        return a.ints.map { Int($0) }
    }

    func floats(_ name: String) throws -> [Float]? {
        guard let a = byName[name] else { return nil }
        guard a.type == .floats || a.type == .undefined else { throw fail("\(label): attribute '\(name)' must be a list of floats") }
        guard a.floats.count <= 64 else { throw fail("\(label): attribute '\(name)' has too many values") }
        return a.floats
    }

    func strings(_ name: String) throws -> [String]? {
        guard let a = byName[name] else { return nil }
        guard a.type == .strings || a.type == .undefined else { throw fail("\(label): attribute '\(name)' must be a list of strings") }
        guard a.strings.count <= 64 else { throw fail("\(label): attribute '\(name)' has too many values") }
        return try a.strings.map {
            guard let s = String(data: $0, encoding: .utf8) else { throw fail("\(label): attribute '\(name)' is not UTF-8") }
            return s
        }
    }

    func tensor(_ name: String, folder: String) throws -> ONNXConstant? {
        guard let a = byName[name] else { return nil }
        guard a.type == .tensor || (a.type == .undefined && a.hasT) else { throw fail("\(label): attribute '\(name)' must be a tensor") }
        return try ONNXGraph.decode(a.t, what: "\(label) attribute '\(name)'", folder: folder, fail: fail)
    }
}

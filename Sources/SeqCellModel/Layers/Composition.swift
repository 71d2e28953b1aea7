import SeqCellBase
import SeqCellHost

/// A layer together with where it came from, for messages at the joins of a chain.
public struct LayerSource: Sendable {
    public var layer: RecurrentLayer
    /// e.g. "a.h5 layer 1"
    public var origin: String

    public init(layer: RecurrentLayer, origin: String) {
        self.layer = layer
        self.origin = origin
    }
}

extension RecurrentLayer {
    /// A short description: "lstm(64) bidirectional concat gru(64)".
    public var summary: String {
        let cellsText = cells.map { "\($0.cell.type.id)(\($0.cell.hiddenSize))" }
        switch direction {
        case .forward: return "\(cellsText[0]) forward"
        case .reverse: return "\(cellsText[0]) reverse"
        case .bidirectional: return "\(cellsText[0]) bidirectional \(mergeMode.rawValue) \(cellsText[1])"
        }
    }

    /// A bidirectional layer from two one-direction layers (e.g. from two checkpoints): the
    /// first's cell reads forward, the second's reads reversed, whatever their own direction was.
    public static func pairing(forward f: LayerSource, backward b: LayerSource, mergeMode: MergeMode) throws -> RecurrentLayer {
        guard f.layer.cells.count == 1 else {
            throw SeqCellError(.invalidArgument, "\(f.origin) is already bidirectional; pair one-direction layers")
        }
        guard b.layer.cells.count == 1 else {
            throw SeqCellError(.invalidArgument, "\(b.origin) is already bidirectional; pair one-direction layers")
        }
        do {
            return try RecurrentLayer(direction: .bidirectional, mergeMode: mergeMode, cells: [f.layer.cells[0], b.layer.cells[0]])
        } catch let e as SeqCellError {
            throw SeqCellError(e.kind, "pairing \(f.origin) with \(b.origin): \(e.message)")
        }
    }
}

extension Model {
    /// Chains layers (from any models or files) into a new model. Each join is checked and
    /// a mismatch names both sides by origin.
    public static func chain(_ sources: [LayerSource], head: LinearHead? = nil, headOrigin: String = "the head") throws -> Model {
        guard let first = sources.first else { throw SeqCellError(.invalidArgument, "nothing to chain: no layers given") }
        let layers = sources.map(\.layer)
        if let bad = Model.badJoin(inputSize: first.layer.inputSize, layers: layers, head: head) {
            // Layer 0 takes the model's input, which is its own width: a bad join is k >= 1.
            guard bad.k < sources.count else {
                throw SeqCellError(.shape,
                    "cannot put \(headOrigin) after \(sources[sources.count - 1].origin): it takes \(bad.takes) features, the layer outputs \(bad.gets)")
            }
            let (a, b) = (sources[bad.k - 1], sources[bad.k])
            throw SeqCellError(.shape,
                "cannot chain \(a.origin) [\(a.layer.summary)] into \(b.origin) [\(b.layer.summary)]: "
                + "the first outputs \(a.layer.outputSize) features, the second takes \(b.layer.inputSize)")
        }
        return Model(joinsChecked: first.layer.inputSize, layers: layers, head: head)
    }

    /// The same model with layer `k` replaced; the new layer must fit both joins.
    public func replacingLayer(_ k: Int, with layer: RecurrentLayer, origin: String = "the new layer") throws -> Model {
        guard layers.indices.contains(k) else {
            throw SeqCellError(.invalidArgument, "layer \(k) does not exist: the model has layers 0...\(layers.count - 1)")
        }
        var copy = self
        copy.layers[k] = layer
        if Model.badJoin(inputSize: inputSize, layers: copy.layers, head: head) != nil {
            // The new layer's own joins are named by its origin; any other (layers are
            // settable) in the model's words.
            try Model.checkJoins(of: layer, at: k, layerCount: layers.count,
                                 width: k == 0 ? inputSize : layers[k - 1].outputSize,
                                 next: k + 1 < layers.count ? layers[k + 1].inputSize : head?.inputSize, origin: origin)
            try Model.checkJoins(inputSize: inputSize, layers: copy.layers, head: head)
        }
        var out = Model(joinsChecked: inputSize, layers: copy.layers, head: head)
        out.embedding = embedding
        // Still the same model around the new layer: its output steps and imported names stay.
        out.outputSteps = outputSteps
        out.source = source
        return out
    }

    /// Checks that `layer`, put at position `k` of a stack of `layerCount`, takes `width`
    /// inputs (the model's input for k = 0, else layer k − 1's output) and outputs what
    /// comes next takes (`next`: layer k + 1's input, the head's, or nil for nothing).
    public static func checkJoins(of layer: RecurrentLayer, at k: Int, layerCount: Int, width: Int, next: Int?,
                                  origin: String) throws {
        guard layer.inputSize == width else {
            let from = k == 0 ? "the model input is \(width) wide" : "layer \(k - 1) outputs \(width) features"
            throw SeqCellError(.shape, "\(origin) takes \(layer.inputSize) inputs but \(from)")
        }
        if let next, layer.outputSize != next {
            let who = k + 1 < layerCount ? "layer \(k + 1)" : "the head"
            throw SeqCellError(.shape, "\(origin) outputs \(layer.outputSize) features but \(who) takes \(next)")
        }
    }

    /// A fresh layer from a spec, sized to take `inputSize` features.
    public static func freshLayer(_ spec: LayerSpec, inputSize: Int, registry: PluginRegistry, seed: UInt64,
                                  initialization: Initialization = .uniform) throws -> RecurrentLayer {
        try Model.build(inputSize: inputSize, layers: [spec], registry: registry, seed: seed,
                        initialization: initialization).layers[0]
    }
}

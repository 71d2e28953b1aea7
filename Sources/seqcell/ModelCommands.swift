import ArgumentParser
import Foundation
import SeqCell

struct NewCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "new",
        abstract: "Create a freshly initialised model and save it as a checkpoint.",
        discussion: """
            Each --layer is CELL:HIDDEN[:DIRECTION[:MERGE]][,option=value...], e.g.
              --layer lstm:64                         forward LSTM, 64 units
              --layer gru:32:bidirectional:sum,reset=before
              --layer lstm:32:bi:concat,backward_cell=gru   (a GRU reads backward)
            DIRECTION: forward | reverse | bidirectional (f, r, bi). MERGE: concat | sum | mul | ave.
            --head SIZE[:ACTIVATION] adds a linear layer applied at every step.
            --embedding VOCAB:DIM[,padding_idx=N] puts an embedding stage (PyTorch's nn.Embedding) \
            before layer 0: the model then takes integer token ids [T, B] and --input-size is not given.
            """)

    @OptionGroup var plugins: PluginOptions

    @Option(name: .long, help: "Features per input step (not with --embedding).")
    var inputSize: Int?

    @Option(help: ArgumentHelp("An embedding stage for token inputs, VOCAB:DIM[,padding_idx=N].", valueName: "spec"))
    var embedding: String?

    @Option(name: .customLong("layer"), help: ArgumentHelp("A layer spec (repeat for a stack, first layer first).", valueName: "spec"))
    var layers: [String]

    @Option(help: ArgumentHelp("An optional linear head, SIZE[:ACTIVATION].", valueName: "spec"))
    var head: String?

    @Option(help: "Random seed for initialisation.")
    var seed: UInt64 = 0

    @Option(help: "uniform (PyTorch's ±1/√H) or orthogonal (recurrent weights orthogonal).")
    var initialization: String = "uniform"

    @Option(name: [.short, .customLong("output")], help: "Checkpoint to write.")
    var output: String

    func run() throws {
        guard let initMode = Initialization(rawValue: initialization) else {
            throw CLIError("--initialization must be uniform or orthogonal, got '\(initialization)'")
        }
        let registry = plugins.registry()
        let specs = try layers.map { try LayerSpec(parsing: $0) }
        let headSpec = try head.map { try HeadSpec(parsing: $0) }
        let model: Model
        switch (inputSize, embedding) {
        case (nil, let e?):
            model = try Model.build(embedding: try EmbeddingSpec(parsing: e), layers: specs, head: headSpec,
                                    registry: registry, seed: seed, initialization: initMode)
        case (let i?, nil):
            model = try Model.build(inputSize: i, layers: specs, head: headSpec, registry: registry, seed: seed, initialization: initMode)
        case (_?, _?):
            throw CLIError("give --input-size (feature inputs) or --embedding VOCAB:DIM (token inputs), not both: the embedding's DIM is the first layer's input size")
        case (nil, nil):
            throw CLIError("give --input-size N (features per step) or --embedding VOCAB:DIM (token ids)")
        }
        try Checkpoint(model: model).save(to: output)
        print("wrote \(output): \(model.layers.count) layer(s), \(model.parameterCount) parameters")
        if let e = model.embedding {
            print("  embedding: vocabulary \(e.vocabularySize) → \(e.dimension)" + (e.paddingIndex.map { ", padding_idx \($0)" } ?? ""))
        }
        for (k, l) in model.layers.enumerated() { print("  layer \(k): \(l.summary)") }
    }
}

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Show a checkpoint's structure, parameter shapes and counts, and whether its cells are available here.")

    @OptionGroup var plugins: PluginOptions

    @Argument(help: "The checkpoint.")
    var file: String

    func run() throws {
        // The file alone, parsed and checked: no plugin is needed to describe it.
        let doc = try CheckpointDocument.read(path: file)
        let registry = plugins.registry()
        // NaN and ±inf per parameter (a model with them computes NaN: it is worth seeing).
        let health = doc.nonFiniteParameters
        let nonFinite = Dictionary(health.map { ($0.path, $0.count) }, uniquingKeysWith: { a, _ in a })
        func finiteNote(_ path: String) -> String { nonFinite[path].map { "  non-finite \($0)" } ?? "" }
        // Values from the file are shown escaped and shortened: a checkpoint is untrusted data.
        func v(_ text: String) -> String { MessageText.value(text) }
        func show(_ line: String) { print(MessageText.escaped(line)) }
        let header = doc.header
        show("\(file): SeqCell checkpoint, format \(header.formatVersion.map(String.init).joined(separator: "."))"
              + (header.creator.isEmpty ? "" : ", written by \(v(header.creator))") + (header.created.isEmpty ? "" : " at \(v(header.created))"))
        if let e = doc.embedding {
            show("input: integer token ids, vocabulary \(e.weight.shape[0]), \(doc.layers.count) layer(s), \(doc.parameterCount) parameters")
            show("embedding: weight \(e.weight.shape) float32 (\(e.weight.count))"
                 + (e.paddingIndex.map { ", padding_idx \($0)" } ?? "") + finiteNote("embedding/weight"))
        } else {
            show("input size \(doc.inputSize), \(doc.layers.count) layer(s), \(doc.parameterCount) parameters")
        }
        for l in doc.layers {
            let merge = l.direction == .bidirectional ? " (merge \(l.mergeMode.rawValue))" : ""
            show("layer \(v(l.name)): \(l.direction.rawValue)\(merge)")
            for d in l.cells {
                let availability: String
                if let t = try? registry.cellType(d.cell, satisfying: d.cellVersion) {
                    availability = "plugin available: \(t.id) \(t.version) (\(t.libraryPath))"
                } else if let t = try? registry.cellType(d.cell) {
                    availability = "PLUGIN VERSION MISMATCH: here \(t.version), file needs \(v(d.cellVersionText))"
                } else {
                    availability = "PLUGIN NOT FOUND"
                }
                let opts = d.options.isEmpty ? "" : " " + d.options.map { "\(v($0.name))=\(v($0.value.text))" }.joined(separator: " ")
                show("  \(v(d.name)): \(v(d.cell)) \(v(d.cellVersionText)) input \(d.inputSize) hidden \(d.hiddenSize)\(opts)  [\(availability)]")
                for p in d.parameters {
                    let gates = p.gateOrder.isEmpty ? "" : "  gates \(v(p.gateOrder))"
                    show("    \(v(p.name)) \(p.value.shape) float32 (\(p.value.count))\(gates)\(finiteNote("layers/\(l.name)/\(d.name)/\(p.name)"))")
                }
            }
        }
        if let h = doc.head {
            show("head: linear \(h.weight.shape) + bias \(h.bias.shape), activation \(h.activation.rawValue)"
                  + "  weight non-finite \(nonFinite["head/weight"]?.description ?? "?")"
                  + ", bias non-finite \(nonFinite["head/bias"]?.description ?? "?")")
        }
        if doc.outputSteps != .all {
            show("output: the \(doc.outputSteps.rawValue) step (return_sequences=False): run writes [B, O]")
        }
        if let s = doc.source {
            let names = [("framework", s.framework), ("prefix", s.prefix), ("head_name", s.headName), ("embedding_name", s.embeddingName)]
            show("imported from: " + names.compactMap { name, value in value.map { "\(name) '\(v($0))'" } }.joined(separator: ", "))
        }
        let total = health.map(\.count).reduce(NonFiniteCount(), +)
        let where_ = health.filter { $0.count.total > 0 }.map(\.path)
        show("non-finite parameter values: \(total)" + (where_.isEmpty ? "" : " in " + where_.joined(separator: ", ")))
        if let t = doc.training {
            show("training state: step \(t.step), optimizer \(v(t.optimizer))")
        }
    }
}

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run a checkpoint's model on sequences and write outputs and final states (PyTorch's shapes).",
        discussion: """
            Input: an HDF5 file with dataset 'input' [T, B, I] (or --dataset NAME), optional \
            'lengths' [B] (int), and optional initial states stacked as PyTorch does ('h0', 'c0': \
            [layers×directions, B, size]); or a .npy file holding the input alone.
            A model with an embedding stage takes integer token ids instead: 'input' [T, B] (any \
            integer dtype; [B, T] with --batch-first), each id checked against the vocabulary.
            Output (HDF5): 'output' [T, B, O]; 'h_n', 'c_n' [layers×directions, B, size] when every \
            layer has them with one size; every final state under final_states/layers/NN/<direction>/.
            With 'lengths', steps past a sample's length are padding: the recurrent output there is \
            zero (as pad_packed_sequence gives) and a head's output is the head applied to zero \
            (its bias, through its activation), as nn.Linear on padded outputs gives. --last-step \
            writes instead each sample's output at its last valid step, 'output' [B, O].
            With --grad-output FILE (datasets 'grad_output' shaped like 'output', optional 'grad_h_n', \
            'grad_c_n' shaped like 'h_n', 'c_n'), also the gradients of sum(output*grad_output) + \
            sum(h_n*grad_h_n) + ... : 'grad_input', 'grad_h0', 'grad_c0', every initial state's under \
            grad_initial_states/, and every parameter's under grad_params/<checkpoint path> \
            (e.g. grad_params/layers/00/forward/weight_ih) — what torch.autograd.grad gives.
            """)

    @OptionGroup var plugins: PluginOptions

    @Argument(help: "The model checkpoint.")
    var model: String

    @Option(name: [.short, .customLong("input")], help: "Input sequences (.h5 or .npy).")
    var input: String

    @Option(help: "Name of the input dataset in an HDF5 input file.")
    var dataset: String = "input"

    @Flag(help: "Input and output are [B, T, F] (PyTorch's batch_first).")
    var batchFirst = false

    @Flag(help: "Input and output are [T, B, F] (the default; says so, silencing the layout warning).")
    var timeMajor = false

    @OptionGroup var threadOptions: ThreadOptions

    @Option(name: [.short, .customLong("output")], help: "Where to write the results (HDF5).")
    var output: String

    @Flag(help: "Write each sample's output at its last valid step (by 'lengths'), 'output' [B, O].")
    var lastStep = false

    @Option(help: ArgumentHelp("Gradients of the outputs (HDF5: grad_output, optional grad_h_n, grad_c_n); writes the input, state and parameter gradients too.", valueName: "file"))
    var gradOutput: String?

    func validate() throws {
        guard !(batchFirst && timeMajor) else { throw ValidationError("give --batch-first or --time-major, not both") }
    }

    func run() throws {
        threadOptions.apply()
        let registry = plugins.registry()
        let ckpt = try Checkpoint.load(from: model, registry: registry)
        let inputs = try RunInputs.read(path: input, dataset: dataset, batchFirst: batchFirst, model: ckpt.model)
        // Said once the outputs are written, so that a failure stays one 'Error:' line.
        let layoutWarning = !batchFirst && !timeMajor ? runLayoutWarning(inputs) : nil
        if let gradOutput {
            guard !lastStep else { throw CLIError("--last-step and --grad-output do not go together: gradients are given for every step's output") }
            try runWithGradients(ckpt.model, inputs, gradientsFile: gradOutput)
            if let layoutWarning { warn(layoutWarning) }
            return
        }
        let result: Model.Output
        if inputs.tokens == nil, inputs.initialStates.isEmpty, ckpt.model.outputSteps != .last {
            // Features from zero states: an inference session, its buffers allocated once and
            // each cell run in chunks of steps (bounded workspace).
            let session = try InferenceSession(model: ckpt.model, steps: inputs.steps, batch: inputs.batch)
            var y = session.makeOutput()
            try session.forward(input: inputs.input, lengths: inputs.lengths, into: &y)
            result = session.modelOutput(y)
        } else {
            result = try ckpt.model.forward(inputs)
        }
        if lastStep || ckpt.model.outputSteps == .last {
            try writeRunOutputs(path: output, model: ckpt.model, result: result, batchFirst: batchFirst, lastStep: .some(inputs.lengths))
            if ckpt.model.outputSteps == .last {
                print("wrote \(output): output \([inputs.batch, ckpt.model.outputSize]) (the last step: the model's last layer has return_sequences=False)")
            } else {
                print("wrote \(output): output \([inputs.batch, ckpt.model.outputSize]) at each sample's last valid step")
            }
            return
        }
        try writeRunOutputs(path: output, model: ckpt.model, result: result, batchFirst: batchFirst)
        let shape = batchFirst ? [result.output.shape[1], result.output.shape[0], result.output.shape[2]] : result.output.shape
        print("wrote \(output): output \(shape)")
        if let layoutWarning { warn(layoutWarning) }
    }
}

extension RunCommand {
    /// A warning when the input reads as well as [B, T, I] as [T, B, I] and nothing says
    /// which: no lengths or initial states whose batch size decides it (or they fit both, T
    /// = B), no `layout` attribute in an HDF5 file.
    func runLayoutWarning(_ inputs: RunInputs) -> String? {
        let (T, B) = (inputs.input.shape[0], inputs.input.shape[1])
        let decided = T != B && (inputs.lengths != nil || !inputs.initialStates.isEmpty)
        guard !decided else { return nil }
        if !input.lowercased().hasSuffix(".npy"), let root = try? H5File(opening: input).root,
           (try? root.hasAttribute("layout")) == true, let layout = try? root.stringAttribute("layout"),
           layout == "time_major" {
            return nil
        }
        return "'\(input)': input [\(T), \(B), \(inputs.input.shape[2])] reads as [T, B, I] and as [B, T, I]; "
            + "reading it time-major (T = \(T)): pass --time-major to say so, or --batch-first for the other"
    }
}

struct SwapCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "swap",
        abstract: "Replace one layer of a checkpoint with another cell kind, keeping every other layer's weights.",
        discussion: """
            Either a fresh layer from a spec (--cell gru:64, same form as 'seqcell new --layer'), \
            or a trained layer from another checkpoint (--from other.h5 --from-layer 1).
            """)

    @OptionGroup var plugins: PluginOptions

    @Argument(help: "The checkpoint to start from.")
    var model: String

    @Option(help: "Index of the layer to replace (0 is the first).")
    var layer: Int

    @Option(help: ArgumentHelp("A layer spec for a freshly initialised replacement.", valueName: "spec"))
    var cell: String?

    @Option(help: "A checkpoint to take the replacement layer from.")
    var from: String?

    @Option(help: "Index of the layer in --from to take.")
    var fromLayer: Int?

    @Option(help: "Random seed for a fresh layer.")
    var seed: UInt64 = 0

    @Option(name: [.short, .customLong("output")], help: "Checkpoint to write.")
    var output: String

    func validate() throws {
        guard (cell != nil) != (from != nil) else { throw ValidationError("give either --cell SPEC or --from FILE --from-layer K") }
        guard (from == nil) == (fromLayer == nil) else { throw ValidationError("--from and --from-layer go together") }
    }

    func run() throws {
        let registry = plugins.registry()
        // Only the layers that stay are bound: the replaced layer's cell need not be installed.
        let base = try CheckpointDocument.read(path: model)
        guard base.layers.indices.contains(layer) else {
            throw CLIError("\(model) has layers 0...\(base.layers.count - 1); there is no layer \(layer)")
        }
        var kept: [Int: RecurrentLayer] = [:]
        for k in base.layers.indices where k != layer { kept[k] = try base.bindLayer(k, registry: registry) }
        let replacement: RecurrentLayer
        let origin: String
        if let cell {
            // Layer k − 1 is bound above whenever k > 0.
            let width = kept[layer - 1]?.outputSize ?? base.inputSize
            replacement = try Model.freshLayer(try LayerSpec(parsing: cell), inputSize: width, registry: registry, seed: seed)
            origin = "the new layer \(cell)"
        } else if let from, let fromLayer {
            let other = try CheckpointDocument.read(path: from)
            guard other.layers.indices.contains(fromLayer) else {
                throw CLIError("\(from) has layers 0...\(other.layers.count - 1); there is no layer \(fromLayer)")
            }
            replacement = try other.bindLayer(fromLayer, registry: registry)
            origin = "\(from) layer \(fromLayer)"
        } else {
            throw ValidationError("give either --cell SPEC or --from FILE --from-layer K")
        }
        try Model.checkJoins(of: replacement, at: layer, layerCount: base.layers.count,
                             width: kept[layer - 1]?.outputSize ?? base.inputSize,
                             next: kept[layer + 1]?.inputSize ?? (try base.bindHead()?.inputSize), origin: origin)
        let stack = base.layers.indices.map { kept[$0] ?? replacement }
        let swapped = try base.model(layers: stack)
        try Checkpoint(model: swapped).save(to: output)
        print("wrote \(output): layer \(layer) is now \(replacement.summary) (was \(base.layers[layer].summary))")
    }
}

struct ComposeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compose",
        abstract: "Chain layers from several checkpoints into a new model.",
        discussion: """
            Each SOURCE is one of:
              FILE            every layer of FILE
              FILE:K          layer K of FILE        FILE:K-M   layers K to M
              bi(FILE:K,FILE:M[,MERGE])   a new bidirectional layer: the first file's layer K \
            reads forward, the second's layer M reads backward (MERGE defaults to concat)
            Sizes are checked at every join. The head is taken with --head-from FILE, an \
            embedding stage (token inputs) with --embedding-from FILE.
            Example: seqcell compose -o new.h5 enc.h5:0-1 'bi(a.h5:0,b.h5:0,sum)' --head-from a.h5
            """)

    @OptionGroup var plugins: PluginOptions

    @Argument(help: "Layer sources, first layer first.")
    var sources: [String]

    @Option(help: "Take the linear head of this checkpoint.")
    var headFrom: String?

    @Option(help: "Take the embedding stage of this checkpoint (the model then takes token ids).")
    var embeddingFrom: String?

    @Option(name: [.short, .customLong("output")], help: "Checkpoint to write.")
    var output: String

    func run() throws {
        let registry = plugins.registry()
        // Each file is read once; only the layers, head and embedding taken from it are bound.
        var cache: [String: CheckpointDocument] = [:]
        func load(_ file: String) throws -> CheckpointDocument {
            if let d = cache[file] { return d }
            let d = try CheckpointDocument.read(path: file)
            cache[file] = d
            return d
        }
        func layers(_ source: String) throws -> [LayerSource] {
            let (file, selector) = splitSource(source)
            let d = try load(file)
            let range: ClosedRange<Int>
            if let selector {
                let ends = selector.split(separator: "-").map { Int($0) }
                guard (1...2).contains(ends.count), let first = ends.first, let last = ends.last,
                      let lo = first, let hi = last, lo <= hi else {
                    throw CLIError("'\(source)': layer selector must be K or K-M")
                }
                range = lo...hi
            } else {
                range = 0...(d.layers.count - 1)
            }
            guard range.lowerBound >= 0, range.upperBound < d.layers.count else {
                throw CLIError("'\(source)': \(file) has layers 0...\(d.layers.count - 1)")
            }
            return try range.map { LayerSource(layer: try d.bindLayer($0, registry: registry), origin: "\(file) layer \($0)") }
        }
        var chain: [LayerSource] = []
        for s in sources {
            if s.hasPrefix("bi("), s.hasSuffix(")") {
                let inner = s.dropFirst(3).dropLast().split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }
                guard inner.count == 2 || inner.count == 3 else {
                    throw CLIError("'\(s)': expected bi(FILE:K,FILE:M[,MERGE])")
                }
                let f = try layers(inner[0]), b = try layers(inner[1])
                guard f.count == 1, b.count == 1 else { throw CLIError("'\(s)': each side of bi(...) names one layer (FILE:K)") }
                let merge = inner.count == 3 ? MergeMode(rawValue: inner[2]) : .concat
                guard let merge else { throw CLIError("'\(s)': merge mode must be concat, sum, mul or ave") }
                chain.append(LayerSource(layer: try RecurrentLayer.pairing(forward: f[0], backward: b[0], mergeMode: merge),
                                         origin: "bi(\(f[0].origin), \(b[0].origin))"))
            } else {
                chain += try layers(s)
            }
        }
        let head = try headFrom.map { file -> LinearHead in
            guard let h = try load(file).bindHead() else { throw CLIError("\(file) has no head") }
            return h
        }
        var model = try Model.chain(chain, head: head, headOrigin: headFrom.map { "the head of \($0)" } ?? "the head")
        if let embeddingFrom {
            guard let e = try load(embeddingFrom).bindEmbedding() else { throw CLIError("\(embeddingFrom) has no embedding stage") }
            guard e.dimension == model.inputSize else {
                throw CLIError("the embedding of \(embeddingFrom) gives \(e.dimension)-wide vectors but the first layer (\(chain[0].origin)) takes \(model.inputSize) inputs")
            }
            model = try Model(embedding: e, layers: model.layers, head: model.head)
        } else if let (file, _) = sources.first.map(splitSource), let first = cache[file], first.embedding != nil {
            print("note: \(file) has an embedding stage, which is not carried over (add --embedding-from \(file)); the new model takes features")
        }
        try Checkpoint(model: model).save(to: output)
        print("wrote \(output): \(model.layers.count) layer(s), \(model.parameterCount) parameters")
        for (k, src) in chain.enumerated() { print("  layer \(k): \(src.layer.summary)  ← \(src.origin)") }
    }

    /// "a.h5:1-2" → ("a.h5", "1-2"); "a.h5" → ("a.h5", nil).
    func splitSource(_ s: String) -> (String, String?) {
        if let colon = s.lastIndex(of: ":"), s[s.index(after: colon)...].allSatisfy({ $0.isNumber || $0 == "-" }),
           colon != s.index(before: s.endIndex) {
            return (String(s[..<colon]), String(s[s.index(after: colon)...]))
        }
        return (s, nil)
    }
}

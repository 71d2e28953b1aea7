import ArgumentParser
import Foundation
import SeqCell

struct ImportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Convert a PyTorch, Keras or ONNX recurrent model into a SeqCell checkpoint.",
        discussion: """
            PyTorch: nn.RNN / nn.LSTM / nn.GRU weights as safetensors \
            (safetensors.torch.save_file(model.state_dict(), "m.safetensors")) or as an HDF5 file of \
            state_dict tensors (weight_ih_l0, ..., at the root or under --group). Layers, directions, \
            sizes, proj_size and bias=False are read from the names and shapes; --activation relu \
            gives nn.RNN's nonlinearity. A model's submodule is found by its prefix (lstm.weight_ih_l0) \
            or chosen with --prefix; an nn.Linear after it becomes the head with --head NAME. The \
            prefix and head name are kept, so 'seqcell export' writes the module's own names back; \
            bias=False gives cells without biases (option bias=false).
            An nn.Embedding before it (NAME.weight [V, D]) becomes the embedding stage: named with \
            --embedding NAME or found by its shape; --padding-idx N gives its padding_idx.
            Keras: a .keras archive, a model saved as .h5 (Keras 2 or 3), or a Keras 3 .weights.h5 \
            with --keras-config model.json (model.to_json()). Sequential models and functional chains \
            of a first Embedding, SimpleRNN, LSTM, GRU, Bidirectional, Dropout and a final Dense are \
            imported (return_state outputs map to run's final-state datasets, listed in a note; \
            return_sequences=False makes run write Keras' [B, O]); anything else is an error naming the layer.
            ONNX: a .onnx model (or --from onnx) of LSTM, GRU and RNN nodes chained with exporter glue, \
            with weights as initializers and an optional MatMul+Add head (+ Sigmoid, Tanh, Relu or \
            Softmax); the notes say which graph input and output map to which run dataset.
            Pickles (.pt, .pth from torch.save) are refused: SeqCell never unpickles.
            Examples:
              seqcell import lstm.safetensors -o lstm.h5
              seqcell import model.keras -o model.h5
              seqcell import m.weights.h5 --keras-config m.json -o model.h5
              seqcell import model.onnx -o model.h5
            """)

    @OptionGroup var plugins: PluginOptions

    @Argument(help: "The file to import.")
    var file: String

    @Option(help: ArgumentHelp("pytorch, keras or onnx (default: from the extension and contents).", valueName: "framework"))
    var from: String?

    @Option(help: ArgumentHelp("PyTorch: rnn, lstm or gru (checked against the shapes).", valueName: "cell"))
    var cell: String?

    @Option(help: ArgumentHelp("nn.RNN nonlinearity / Keras SimpleRNN activation without a config: tanh or relu.", valueName: "name"))
    var activation: String?

    @Option(help: ArgumentHelp("PyTorch: prefix of the recurrent module's tensors, e.g. 'lstm.'.", valueName: "prefix"))
    var prefix: String?

    @Option(help: ArgumentHelp("PyTorch: name of an nn.Linear (NAME.weight, NAME.bias) to import as the head.", valueName: "name"))
    var head: String?

    @Option(help: ArgumentHelp("The head's activation: linear, tanh, sigmoid, relu, softmax.", valueName: "name"))
    var headActivation: String?

    @Option(help: ArgumentHelp("PyTorch HDF5: the group holding the tensors.", valueName: "group"))
    var group: String?

    @Option(help: ArgumentHelp("PyTorch: the nn.Embedding before the recurrent module (NAME or NAME.weight); found by shape when not given.", valueName: "name"))
    var embedding: String?

    @Option(help: ArgumentHelp("PyTorch: the embedding's padding_idx (a state_dict does not record it).", valueName: "n"))
    var paddingIdx: Int?

    @Option(help: ArgumentHelp("Keras: the model's JSON (model.to_json()).", valueName: "file"))
    var kerasConfig: String?

    @Option(help: ArgumentHelp("Keras without a config: a Bidirectional layer's merge mode.", valueName: "mode"))
    var mergeMode: String?

    @Option(name: [.short, .customLong("output")], help: "Checkpoint to write.")
    var output: String

    func run() throws {
        let registry = plugins.registry()
        if from == "onnx" || (from == nil && file.lowercased().hasSuffix(".onnx")) {
            for (flag, value) in [("--cell", cell), ("--activation", activation), ("--prefix", prefix), ("--head", head),
                                  ("--head-activation", headActivation), ("--group", group), ("--embedding", embedding),
                                  ("--padding-idx", paddingIdx.map(String.init)), ("--keras-config", kerasConfig),
                                  ("--merge-mode", mergeMode)] where value != nil {
                throw CLIError("\(flag) does not apply to ONNX models: '\(file)' is imported from its graph")
            }
            let result = try ONNXImporter.importFile(file, registry: registry)
            try save(result, framework: "onnx")
            return
        }
        let framework: InteropFramework
        if let from {
            guard let f = InteropFramework(rawValue: from) else { throw CLIError("--from must be pytorch, keras or onnx, got '\(from)'") }
            framework = f
        } else {
            framework = try InteropFile.framework(of: file, group: group)
        }
        let headAct = try headActivation.map { name -> HeadActivation in
            guard let a = HeadActivation(rawValue: name) else {
                throw CLIError("--head-activation must be one of \(HeadActivation.allCases.map(\.rawValue).joined(separator: ", ")), got '\(name)'")
            }
            return a
        }
        let result: ImportResult
        switch framework {
        case .pytorch:
            for (flag, value) in [("--keras-config", kerasConfig), ("--merge-mode", mergeMode)] where value != nil {
                throw CLIError("\(flag) applies to Keras files; '\(file)' is imported as PyTorch weights")
            }
            var options = PyTorchImportOptions(
                cell: cell, activation: activation, prefix: prefix, head: head, headActivation: headAct ?? .linear, group: group)
            options.embedding = embedding
            options.paddingIndex = paddingIdx
            result = try PyTorchImporter.importFile(file, options: options, registry: registry)
        case .keras:
            for (flag, value) in [("--cell", cell), ("--prefix", prefix), ("--head", head), ("--group", group), ("--embedding", embedding),
                                  ("--padding-idx", paddingIdx.map(String.init))] where value != nil {
                throw CLIError("\(flag) applies to PyTorch weights; '\(file)' is imported as a Keras model")
            }
            let merge = try mergeMode.map { m -> MergeMode in
                guard let mm = MergeMode(rawValue: m) else { throw CLIError("--merge-mode must be concat, sum, mul or ave, got '\(m)'") }
                return mm
            }
            result = try KerasImporter.importFile(file, options: KerasImportOptions(
                configPath: kerasConfig, activation: activation, mergeMode: merge, headActivation: headAct), registry: registry)
        }
        try save(result, framework: framework.rawValue)
    }

    func save(_ result: ImportResult, framework: String) throws {
        try Checkpoint(model: result.model).save(to: output)
        print("imported \(file) (\(framework)): \(result.source)")
        for note in result.notes { print("note: \(note)") }
        print("wrote \(output): \(result.model.layers.count) layer(s), \(result.model.parameterCount) parameters")
        for (k, l) in result.model.layers.enumerated() { print("  layer \(k): \(l.summary)") }
        if let e = result.model.embedding {
            print("  embedding: vocabulary \(e.vocabularySize) → \(e.dimension)" + (e.paddingIndex.map { ", padding_idx \($0)" } ?? "") + " (token-id input)")
        }
        if let h = result.model.head { print("  head: linear \(h.inputSize) → \(h.outputSize), \(h.activation.rawValue)") }
    }
}

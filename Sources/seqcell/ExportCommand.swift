import ArgumentParser
import Foundation
import SeqCell

struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write a SeqCell checkpoint as PyTorch safetensors, Keras 3 weights or an ONNX model.",
        discussion: """
            --to pytorch: a safetensors file with nn.RNN/nn.LSTM/nn.GRU state_dict names (plus \
            head.weight/head.bias, the module under 'rnn.', when the model has a head; a model imported \
            from PyTorch gets its own module's names back, e.g. encoder.* and fc.*, so \
            load_state_dict(strict=True) into the original class works; --prefix/--head-name override), and beside it \
            a JSON file with the constructor arguments; the Python that loads it is printed. Only \
            models PyTorch can express: one cell kind, one hidden size and options, all layers forward \
            or all bidirectional with concat.
            --to keras: a Keras 3 .weights.h5 for the equivalent keras.Sequential of SimpleRNN / LSTM / \
            GRU / Bidirectional layers and a final Dense, and beside it the model's JSON \
            (keras.models.model_from_json) ; the Python that loads it is printed.
            --to onnx: an ONNX model (opset 17) for ONNX Runtime: graph input 'input' [T, B, I] \
            ([B, T, I] with --batch-first; int64 token ids [T, B] for a model with an embedding stage), \
            with --lengths an int32 input 'lengths' [B] (PyTorch's packed semantics), with \
            --initial-states inputs 'h0' (and 'c0') [L·D, B, H]; outputs 'output' and 'h_n'/'c_n' \
            as 'seqcell run' writes them. Any model of the built-in cells rnn, lstm and gru.
            The default for --to is taken from the output's extension (.safetensors, .weights.h5, .onnx).
            """)

    @OptionGroup var plugins: PluginOptions

    @Argument(help: "The checkpoint to export.")
    var model: String

    @Option(help: ArgumentHelp("pytorch, keras or onnx.", valueName: "framework"))
    var to: String?

    @Option(name: [.short, .customLong("output")], help: "The file to write (.safetensors, .weights.h5 or .onnx).")
    var output: String

    @Option(help: ArgumentHelp("Where to write the JSON description (default: beside the output, .json).", valueName: "file"))
    var json: String?

    @Option(help: ArgumentHelp("PyTorch: prefix of the recurrent module's names, e.g. 'encoder.' (default: the imported module's, else 'rnn.' with a head and none without).", valueName: "prefix"))
    var prefix: String?

    @Option(help: ArgumentHelp("PyTorch: module name of the head, e.g. 'fc' (default: the imported module's, else 'head').", valueName: "name"))
    var headName: String?

    @Flag(help: "ONNX: the graph's input and output are [B, T, ...] (PyTorch's batch_first).")
    var batchFirst = false

    @Flag(help: "ONNX: add the graph input 'lengths' [B] (int32), one length per sample.")
    var lengths = false

    @Flag(help: "ONNX: add the graph inputs 'h0' (and 'c0') [layers×directions, B, size].")
    var initialStates = false

    func run() throws {
        let registry = plugins.registry()
        if to == "onnx" || (to == nil && output.hasSuffix(".onnx")) {
            for (flag, value) in [("--prefix", prefix), ("--head-name", headName), ("--json", json)] where value != nil {
                throw CLIError("\(flag) does not apply to --to onnx")
            }
            let m = try CheckpointDocument.read(path: model).bindModel(registry: registry)
            let e = try ONNXExport(model: m, options: ONNXExportOptions(batchFirst: batchFirst, lengths: lengths, initialStates: initialStates))
            try e.write(to: output)
            print("wrote \(output): ONNX opset \(ONNXExport.opset)")
            print("  inputs: " + e.inputs.joined(separator: "; "))
            print("  outputs: " + e.outputs.joined(separator: "; "))
            for line in e.layerOps { print("  \(line)") }
            print("\n" + e.pythonSnippet(file: output))
            return
        }
        for (flag, value) in [("--batch-first", batchFirst), ("--lengths", lengths), ("--initial-states", initialStates)] where value {
            throw CLIError("\(flag) applies to --to onnx only")
        }
        let framework: InteropFramework
        if let to {
            guard let f = InteropFramework(rawValue: to) else { throw CLIError("--to must be pytorch, keras or onnx, got '\(to)'") }
            framework = f
        } else if output.hasSuffix(".safetensors") {
            framework = .pytorch
        } else if output.hasSuffix(".weights.h5") {
            framework = .keras
        } else {
            throw CLIError("cannot tell the format from '\(output)': pass --to pytorch, --to keras or --to onnx")
        }
        if framework != .pytorch {
            for (flag, value) in [("--prefix", prefix), ("--head-name", headName)] where value != nil {
                throw CLIError("\(flag) applies to --to pytorch only")
            }
        }
        let m = try CheckpointDocument.read(path: model).bindModel(registry: registry)
        let base = output.hasSuffix(".safetensors") ? String(output.dropLast(".safetensors".count))
            : output.hasSuffix(".weights.h5") ? String(output.dropLast(".weights.h5".count)) : output
        let jsonPath = json ?? base + ".json"
        switch framework {
        case .pytorch:
            let e = try PyTorchExport(model: m, prefix: prefix, headName: headName)
            try e.write(to: output, jsonPath: jsonPath)
            let embed = e.embedding.map { "nn.Embedding(\($0.vocabularySize), \($0.dimension)) as '\(e.embeddingName).' + " } ?? ""
            print("wrote \(output): \(e.tensors.count) tensors for \(embed)\(e.constructor)" + (e.prefix.isEmpty ? "" : " as '\(e.prefix)'")
                  + (e.head.map { " + nn.Linear(\($0.inputSize), \($0.outputSize)) as '\(e.headName).'" } ?? ""))
            print("wrote \(jsonPath): constructor arguments")
            print("\n" + e.pythonSnippet(file: output))
        case .keras:
            let e = try KerasExport(model: m)
            try e.write(to: output, jsonPath: jsonPath)
            print("wrote \(output): weights for \(e.summary)")
            print("wrote \(jsonPath): the model's JSON")
            print("\n" + e.pythonSnippet(weightsFile: output, jsonFile: jsonPath))
        }
    }
}

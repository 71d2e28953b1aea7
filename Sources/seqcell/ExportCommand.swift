import ArgumentParser
import Foundation
import SeqCell

struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write a SeqCell checkpoint as PyTorch safetensors or Keras 3 weights.",
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
            The default for --to is taken from the output's extension (.safetensors, .weights.h5).
            """)

    @OptionGroup var plugins: PluginOptions

    @Argument(help: "The checkpoint to export.")
    var model: String

    @Option(help: ArgumentHelp("pytorch or keras.", valueName: "framework"))
    var to: String?

    @Option(name: [.short, .customLong("output")], help: "The file to write (.safetensors or .weights.h5).")
    var output: String

    @Option(help: ArgumentHelp("Where to write the JSON description (default: beside the output, .json).", valueName: "file"))
    var json: String?

    @Option(help: ArgumentHelp("PyTorch: prefix of the recurrent module's names, e.g. 'encoder.' (default: the imported module's, else 'rnn.' with a head and none without).", valueName: "prefix"))
    var prefix: String?

    @Option(help: ArgumentHelp("PyTorch: module name of the head, e.g. 'fc' (default: the imported module's, else 'head').", valueName: "name"))
    var headName: String?

    func run() throws {
        let registry = plugins.registry()
        let framework: InteropFramework
        if let to {
            guard let f = InteropFramework(rawValue: to) else { throw CLIError("--to must be pytorch or keras, got '\(to)'") }
            framework = f
        } else if output.hasSuffix(".safetensors") {
            framework = .pytorch
        } else if output.hasSuffix(".weights.h5") {
            framework = .keras
        } else {
            throw CLIError("cannot tell the format from '\(output)': pass --to pytorch or --to keras")
        }
        if framework != .pytorch {
            for (flag, value) in [("--prefix", prefix), ("--head-name", headName)] where value != nil {
                throw CLIError("\(flag) applies to --to pytorch only")
            }
        }
        let m = try Checkpoint.load(from: model, registry: registry).model
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

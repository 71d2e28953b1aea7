import ArgumentParser
import SeqCell

struct PluginsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plugins",
        abstract: "List the cells found: id, version, ABI, file, options and parameter shapes.")

    @OptionGroup var plugins: PluginOptions

    @Option(help: "Input size used to show parameter shapes.")
    var inputSize = 8

    @Option(help: "Hidden size used to show parameter shapes.")
    var hiddenSize = 16

    func run() throws {
        let registry = plugins.registry(logProblems: false)
        let types = registry.cellTypes
        print("Cells found (parameter shapes shown for input size \(inputSize), hidden size \(hiddenSize)):")
        for t in types {
            print("")
            print("\(t.id) \(t.version)  ABI \(t.abiVersion.major).\(t.abiVersion.minor)  \(t.libraryPath)")
            if !t.summary.isEmpty { print("  \(t.summary)") }
            for o in t.options {
                let kind: String
                switch o.kind {
                case .int(let lo, let hi): kind = "int \(lo)...\(hi == Int.max ? "" : String(hi))"
                case .float(let lo, let hi): kind = "float \(lo)...\(hi)"
                case .choice(let names): kind = names.joined(separator: "|")
                }
                print("  option \(o.name) = \(o.defaultValue)  (\(kind)) \(o.description)")
            }
            do {
                let cell = try t.instantiate(inputSize: inputSize, hiddenSize: hiddenSize)
                for p in cell.params {
                    let gates = p.gateOrder.isEmpty ? "" : "  gates \(p.gateOrder)"
                    let initial = p.initializer == .role ? "" : "  initialised \(p.initializer)"
                    let optional = p.optional ? "  optional" : ""
                    print("  param \(p.name) \(p.shape)\(gates)\(initial)\(optional)")
                }
                print("  states " + cell.states.map { "\($0.name)[\($0.size)]" }.joined(separator: ", ")
                      + "  output [\(cell.outputSize)]")
            } catch {
                print("  (cannot show shapes: \(error))")
            }
        }
        if types.isEmpty { print("(none)") }
        let problems = registry.problems
        if !problems.isEmpty {
            print("\nProblems:")
            for p in problems { print("  \(p)") }
        }
        print("\nSearched: " + registry.searchedPaths.joined(separator: ", "))
        print("Built-in cells' " + CPUFeatures.current.summary)
    }
}

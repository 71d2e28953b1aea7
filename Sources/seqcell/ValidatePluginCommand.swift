import ArgumentParser
import SeqCell

struct ValidatePluginCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "validate-plugin",
        abstract: "Check a cell plugin library against the ABI: the conformance kit for cell authors.",
        discussion: """
            Loads the library on its own and, for every cell in it, checks: the descriptor and \
            layout; configuration at several sizes and every choice option; that the plugin \
            itself refuses bad arguments with a status (called through the raw ABI); \
            determinism; inference vs training forward; batch independence; lengths \
            semantics; backward against finite differences, with and without lengths; and \
            that parameter gradients accumulate. Exits non-zero when any check fails.
            """)

    @Argument(help: "The plugin library (.so).")
    var file: String

    func run() throws {
        bootstrapLogging(verbose: false)
        let report = PluginConformance.validate(file: file)
        print(report)
        if !report.passed { throw ExitCode(1) }
    }
}

import ArgumentParser
import Foundation
import Logging
import SeqCell

@main
struct SeqCellCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "seqcell",
        abstract: "Recurrent sequence models whose cells are plugins.",
        discussion: """
            Cells (rnn, lstm, gru, and any third-party cell) are shared libraries found at run \
            time: next to this executable, in SEQCELL_PLUGIN_PATH (colon-separated folders), and \
            at paths given with --plugin-path. Models are HDF5 checkpoints (docs/FORMAT.md).
            """,
        version: SeqCellInfo.version,
        subcommands: [
            DemoCommand.self, TrainCommand.self, NewCommand.self, InspectCommand.self, RunCommand.self,
            SwapCommand.self, ComposeCommand.self, ImportCommand.self, ExportCommand.self, PluginsCommand.self,
            ValidatePluginCommand.self, BenchCommand.self,
        ])
}

/// Options every command that needs cells takes.
struct PluginOptions: ParsableArguments {
    @Option(name: [.customLong("plugin-path"), .customLong("path")], help: ArgumentHelp(
        "A plugin library or a folder of libseqcell_*.so files, searched before the default places (repeatable).",
        valueName: "path"))
    var pluginPaths: [String] = []

    @Flag(name: .customLong("verbose"), help: "Log plugin loading and other details to stderr.")
    var verbose = false

    /// The registry for this invocation: --plugin-path entries first, then the defaults.
    func registry(logProblems: Bool = true) -> PluginRegistry {
        bootstrapLogging(verbose: verbose)
        let r = PluginRegistry.standard(extraPaths: pluginPaths)
        if logProblems {
            let log = Logger(label: "seqcell")
            for p in r.problems { log.warning("plugin problem: \(p)") }
        }
        return r
    }
}

/// swift-log to stderr; warnings by default, everything with --verbose. Safe to call twice.
func bootstrapLogging(verbose: Bool) {
    LoggingBootstrap.once(level: verbose ? .debug : .warning)
}

enum LoggingBootstrap {
    private static let done = NSLock()
    nonisolated(unsafe) private static var bootstrapped = false

    static func once(level: Logger.Level) {
        done.lock()
        defer { done.unlock() }
        guard !bootstrapped else { return }
        bootstrapped = true
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
    }
}

/// An error the CLI reports as `Error: message` with exit code 1.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ message: String) { description = message }
}

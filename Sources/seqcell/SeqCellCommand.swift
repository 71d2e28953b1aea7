import ArgumentParser
import Foundation
import Logging
import SeqCell
import SeqCellTools

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
            DemoCommand.self, TrainCommand.self, EvaluateCommand.self, NewCommand.self, InspectCommand.self, RunCommand.self,
            SwapCommand.self, ComposeCommand.self, ImportCommand.self, ExportCommand.self, PluginsCommand.self,
            ValidatePluginCommand.self, BenchCommand.self,
        ])

    /// Parses and runs the command like `ParsableCommand.main()`, but reports failures with
    /// `exitReporting`: ArgumentParser's own printer writes stderr one byte per `write()`.
    static func main() {
        do {
            var command = try parseAsRoot()
            try CPUFeatures.checkISAEnvironment()
            try command.run()
        } catch {
            exitReporting(error)
        }
    }
}

/// The CLI's one error printer: stdout is flushed, then the whole message goes to stderr in one
/// `write()` and the process exits with ArgumentParser's code for the error (1 for SeqCell's
/// errors, 64 for usage errors, 0 for --help and --version, which print to stdout).
///
/// An error from a command is printed as `Error: <description>` on one line, through
/// `MessageText.oneLine`: values quoted from files are shortened and their control characters
/// and escape sequences escaped, whichever part of SeqCell raised the error; the user's own
/// arguments (paths) are kept whole. Usage errors keep ArgumentParser's lines (error, usage,
/// help hint), each escaped the same way.
func exitReporting(_ error: any Error) -> Never {
    let parserError = isArgumentParserError(error)
    // ArgumentParser's exit code describes the error; SeqCell's errors are 1 without that.
    let code = parserError ? SeqCellCommand.exitCode(for: error) : .failure
    fflush(nil)
    if code == .success {
        let text = SeqCellCommand.fullMessage(for: error)
        if !text.isEmpty { print(text) }
        fflush(nil)
        exit(code.rawValue)
    }
    let text: String
    if parserError {
        text = SeqCellCommand.fullMessage(for: error)
            .split(separator: "\n", omittingEmptySubsequences: false)
            .map { MessageText.oneLine(String($0), keepingWhole: userArguments) }
            .joined(separator: "\n")
    } else {
        text = "Error: " + MessageText.oneLine(errorText(error), keepingWhole: userArguments)
    }
    if !text.isEmpty { _ = Array((text + "\n").utf8).withUnsafeBytes { writeAll($0, to: STDERR_FILENO) } }
    exit(code.rawValue)
}

/// What an error says: its description (HDF5Error, CLIError), Foundation's sentence for
/// Foundation's errors, and a SeqCellError's raw message (its description is already shortened,
/// without knowing which values are the user's paths).
func errorText(_ error: any Error) -> String {
    if let e = error as? SeqCellError { return e.message }
    if let e = error as? HDF5Error { return e.rawDescription }
    if let e = error as? CocoaError { return e.localizedDescription }
    return String(describing: error)
}

/// The command line's arguments, and the values of `--option=value` ones: the user's own paths
/// and values, which messages show whole however long.
let userArguments: Set<String> = {
    var all = Set<String>()
    for argument in CommandLine.arguments.dropFirst() where argument.utf8.count <= 4096 {
        all.insert(argument)
        if argument.hasPrefix("-"), let equals = argument.firstIndex(of: "=") {
            all.insert(String(argument[argument.index(after: equals)...]))
        }
    }
    return all
}()

/// Errors whose text ArgumentParser writes: usage and validation errors, --help, exit codes.
func isArgumentParserError(_ error: any Error) -> Bool {
    error is ValidationError || error is CleanExit || error is ExitCode
        || String(reflecting: type(of: error)).hasPrefix("ArgumentParser.")
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
            // A cell found again later in the search order is the order working as documented
            // (a folder in SEQCELL_PLUGIN_PATH overrides the executable's own): said with --verbose.
            for p in r.problems {
                let text = "plugin problem: \(MessageText.oneLine(String(describing: p), keepingWhole: userArguments))"
                if p.isShadowedCell { log.debug("\(text)") } else { log.warning("\(text)") }
            }
        }
        return r
    }
}

/// `--threads N` for every command that computes (run, train, evaluate, bench): one
/// implementation, `Benchmark.setThreads`.
struct ThreadOptions: ParsableArguments {
    @Option(parsing: .unconditional, help: ArgumentHelp(
        "Threads (0: the default, SEQCELL_THREADS or all online CPUs). The host's worker pool gets N; OpenBLAS is set to 1 thread per call (openblas_set_num_threads) because the host splits large GEMMs itself (SEQCELL_BLAS_THREADS=N keeps OpenBLAS threads).",
        valueName: "n"))
    var threads: Int = 0

    func validate() throws {
        guard threads >= 0 else { throw ValidationError("--threads must be at least 0 (0: the default), got \(threads)") }
    }

    func apply() { Benchmark.setThreads(threads) }
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

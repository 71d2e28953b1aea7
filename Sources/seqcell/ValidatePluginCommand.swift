import ArgumentParser
import Foundation
import SeqCell
import SeqCellConformance

struct ValidatePluginCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "validate-plugin",
        abstract: "Check a cell plugin library against the ABI: the conformance kit for cell authors.",
        discussion: """
            Loads the library on its own and, for every cell in it, checks: the descriptor and \
            layout; configuration at several sizes and every choice option; that the plugin \
            itself refuses bad arguments with a status (called through the raw ABI); \
            determinism; inference vs training forward; batch independence; lengths \
            semantics; backward against finite differences at several random points, with and \
            without lengths, tight enough that a gradient 1% off fails, with points at a kink \
            of a piecewise-linear cell (relu) detected and redrawn; frozen parameters (NULL \
            gradient entries) for cells that declare them; and that parameter gradients \
            accumulate. The checks run in a child process that \
            dies with this one: each check's line is printed as it finishes, a check that runs \
            past --check-timeout seconds is reported by name and the child killed, and a plugin \
            that crashes, aborts or calls exit() is reported naming the check it was in. Exits \
            non-zero when any check fails.
            """)

    @Argument(help: "The plugin library (.so).")
    var file: String

    @Option(help: ArgumentHelp("Seconds each check may run before it is reported as hung and stopped.",
                               valueName: "seconds"))
    var checkTimeout: Double = PluginConformance.defaultCheckTimeout

    /// Runs the checks in this process and prints the whole report at the end (no watchdog).
    @Flag(help: .hidden)
    var inProcess = false

    /// The child of a checking parent: streams check events to it (PluginConformance.runAsChild).
    @Option(help: .hidden)
    var childOf: Int32?

    func validate() throws {
        guard checkTimeout.isFinite, checkTimeout > 0 else {
            throw ValidationError("--check-timeout must be a positive number of seconds, got \(checkTimeout)")
        }
    }

    func run() throws {
        bootstrapLogging(verbose: false)
        if let parent = childOf {
            if !PluginConformance.runAsChild(file: file, parentPID: parent) { throw ExitCode(1) }
            return
        }
        if inProcess {
            let report = PluginConformance.validate(file: file)
            print(report)
            if !report.passed { throw ExitCode(1) }
            return
        }
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        let result = try PluginConformance.validateInChildProcess(
            file: file, executable: exe,
            childArguments: ["validate-plugin", "--child-of", String(getpid()), "--", file],
            checkTimeout: checkTimeout,
            emit: { line in
                print(line)
                fflush(nil)
            })
        if !result.passed { throw ExitCode(1) }
    }
}

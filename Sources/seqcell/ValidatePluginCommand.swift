import ArgumentParser
import Foundation
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
            that parameter gradients accumulate. The checks run in a child process, so a \
            plugin that crashes is reported rather than taking the checker down. Exits \
            non-zero when any check fails.
            """)

    @Argument(help: "The plugin library (.so).")
    var file: String

    @Flag(help: .hidden)
    var inProcess = false

    func run() throws {
        bootstrapLogging(verbose: false)
        if inProcess {
            let report = PluginConformance.validate(file: file)
            print(report)
            if !report.passed { throw ExitCode(1) }
            return
        }
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        let child = Process()
        child.executableURL = URL(fileURLWithPath: exe)
        child.arguments = ["validate-plugin", "--in-process", file]
        try child.run()
        child.waitUntilExit()
        if child.terminationReason == .uncaughtSignal {
            let signal = child.terminationStatus
            let name = signal == SIGSEGV ? " (SIGSEGV)" : signal == SIGABRT ? " (SIGABRT)" : signal == SIGBUS ? " (SIGBUS)" : ""
            print("✗ \(file): the plugin crashed the checker with signal \(signal)\(name) before the checks finished. "
                  + "A cell must never crash on any call, whatever its arguments: run "
                  + "'seqcell validate-plugin --in-process \(file)' under gdb to see which call.")
            print("FAIL: the plugin crashed")
            throw ExitCode(1)
        }
        if child.terminationStatus != 0 { throw ExitCode(child.terminationStatus) }
    }
}

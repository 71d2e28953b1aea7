import Foundation
import SeqCellBase
import SeqCellHost
import SeqCellModel
import SeqCellFormats

/// Peak memory of one inference forward call (issue 12): what the call adds to the process's
/// resident memory at its highest, next to what the bound counts.
public struct ForwardMemory: Codable, Sendable {
    public var name: String
    public var parameterBytes: Int
    public var inputBytes: Int
    public var outputBytes: Int
    /// Steps per plugin call (`Cell.inferenceChunkSteps`, the largest over the cells), and the
    /// workspaces the cells ask for at their chunk and over the whole sequence, summed over
    /// layers and directions.
    public var chunkSteps: Int
    public var chunkWorkspaceBytes: Int
    public var wholeWorkspaceBytes: Int
    /// Outputs of layers before the last, and reversed copies of bidirectional layers, that a
    /// `Model.forward` call holds besides.
    public var intermediateBytes: Int
    /// Growth of the resident high-water mark (VmHWM) during one cold call over the resident
    /// size just before it (the model and input already built and touched).
    public var peakBytes: Int
}

extension Benchmark {
    /// Measures `ForwardMemory` for an inference configuration in this process: builds the
    /// model and input, resets the kernel's high-water mark (/proc/self/clear_refs), runs one
    /// `Model.forward` and reads VmHWM. Run once per process (the call's workspaces stay
    /// pooled afterwards). Chunking follows SEQCELL_CHUNK_ROWS (0: whole sequences).
    public static func forwardMemory(_ config: BenchConfig, registry: PluginRegistry) throws -> ForwardMemory {
        guard !config.training else {
            throw SeqCellError(.invalidArgument, "configuration \(config.name) is a training step; --memory measures inference forwards")
        }
        let runner = try BenchRunner(config: config, registry: registry, api: .model)
        let model = runner.model
        let (T, B) = (config.seqLen, config.batch)
        var chunkWS = 0, wholeWS = 0, intermediate = 0, chunkSteps = 0
        for (k, layer) in model.layers.enumerated() {
            for dc in layer.cells {
                let steps = dc.cell.inferenceChunkSteps(T: T, B: B)
                chunkSteps = max(chunkSteps, steps)
                chunkWS += try dc.cell.requiredWorkspace(T: steps, B: B, training: false)
                wholeWS += try dc.cell.requiredWorkspace(T: T, B: B, training: false)
            }
            if k + 1 < model.layers.count { intermediate += 4 * T * B * layer.outputSize }
            if layer.direction == .bidirectional {
                intermediate += 4 * T * B * (layer.inputSize + layer.cells[0].cell.outputSize + 2 * layer.cells[1].cell.outputSize)
            }
        }
        // Start the worker threads first: their stacks are not the call's memory.
        HostParallelism.forEach(max(threads, 1)) { _ in }
        guard let clear = fopen("/proc/self/clear_refs", "w") else {
            throw SeqCellError(.io, "cannot open /proc/self/clear_refs to reset the resident high-water mark")
        }
        let resetOK = fputs("5", clear) >= 0
        fclose(clear)
        guard resetOK else { throw SeqCellError(.io, "cannot reset the resident high-water mark (/proc/self/clear_refs)") }
        let before = try residentKiB("VmRSS")
        let y = try model.forward(input: runner.input).output
        let peak = try residentKiB("VmHWM")
        return ForwardMemory(
            name: config.name, parameterBytes: 4 * model.parameterCount, inputBytes: 4 * runner.input.count,
            outputBytes: 4 * y.count, chunkSteps: chunkSteps, chunkWorkspaceBytes: chunkWS,
            wholeWorkspaceBytes: wholeWS, intermediateBytes: intermediate, peakBytes: max(peak - before, 0) * 1024)
    }

    /// A field of /proc/self/status in KiB ("VmRSS", "VmHWM").
    static func residentKiB(_ field: String) throws -> Int {
        let text = try String(contentsOfFile: "/proc/self/status", encoding: .utf8)
        for line in text.split(separator: "\n") where line.hasPrefix(field + ":") {
            if let n = Int(line.dropFirst(field.count + 1).split(whereSeparator: { $0 == " " || $0 == "\t" }).first ?? "") {
                return n
            }
        }
        throw SeqCellError(.io, "/proc/self/status has no \(field) line")
    }
}

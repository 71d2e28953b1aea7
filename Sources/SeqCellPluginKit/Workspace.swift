// SeqCellPluginKit: carving one host-allocated workspace block into a cell's arrays.

/// Hands out 64-byte-aligned float arrays from one workspace block, in a fixed order.
/// With no base it only measures, so one function can both size and carve a workspace.
/// Sizes saturate: a request whose size overflows makes `bytes` Int.max, which no host can
/// allocate, so the call is refused (with a workspace-size error) instead of trapping.
public struct WorkspaceCarver {
    public private(set) var bytes: Int = 0
    private let base: UnsafeMutableRawPointer?

    public init(base: UnsafeMutableRawPointer?) { self.base = base }

    /// `factors`' product floats (e.g. `floats(T, B, 4 * H)`), multiplied without trapping.
    public mutating func floats(_ factors: Int...) -> UnsafeMutablePointer<Float> {
        var count = 1
        for f in factors {
            let (p, overflow) = count.multipliedReportingOverflow(by: max(f, 0))
            count = overflow ? Int.max : p
        }
        return floats(count: count)
    }

    public mutating func floats(count: Int) -> UnsafeMutablePointer<Float> {
        let (padded, o1) = bytes.addingReportingOverflow(63)
        let start = o1 ? Int.max : padded & ~63
        let (size, o2) = max(count, 0).multipliedReportingOverflow(by: MemoryLayout<Float>.stride)
        let (end, o3) = start.addingReportingOverflow(size)
        bytes = o1 || o2 || o3 ? Int.max : end
        // Only reached with a base once the host has allocated `bytes`, so start is in range.
        guard let base, bytes != Int.max else { return placeholderBlock.assumingMemoryBound(to: Float.self) }
        return (base + start).assumingMemoryBound(to: Float.self)
    }
}

/// What a measuring carver hands out, and the workspace of a call that needs none: a real
/// 64-byte block nothing writes, so no pointer the kit passes on is NULL or dangling.
nonisolated(unsafe) let placeholderBlock = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 64)

/// A kernel whose workspace is laid out by one function, `carve`: run with a measuring
/// carver it sizes the workspace (`workspaceBytes`), run on a call's block it hands out the
/// same arrays at the same offsets (`buffers`), so size and layout cannot disagree.
public protocol CarvedWorkspace: CellKernel {
    /// The arrays one call uses.
    associatedtype Buffers
    func carve(_ c: inout WorkspaceCarver, T: Int, B: Int, training: Bool) -> Buffers
}

extension CarvedWorkspace {
    public func workspaceBytes(T: Int, B: Int, training: Bool) -> Int {
        var c = WorkspaceCarver(base: nil)
        _ = carve(&c, T: T, B: B, training: training)
        return c.bytes
    }

    /// The arrays of a forward call, carved from its workspace.
    public func buffers(_ f: ForwardCall) -> Buffers {
        var c = WorkspaceCarver(base: f.workspace)
        return carve(&c, T: f.T, B: f.B, training: f.training)
    }

    /// The arrays of a backward call (always a training layout), carved from its workspace.
    public func buffers(_ g: BackwardCall) -> Buffers {
        var c = WorkspaceCarver(base: g.workspace)
        return carve(&c, T: g.T, B: g.B, training: true)
    }
}


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
        guard let base, bytes != Int.max else { return UnsafeMutablePointer(bitPattern: 64)! }
        return (base + start).assumingMemoryBound(to: Float.self)
    }
}


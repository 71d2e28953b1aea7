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


/// Packed weights kept in an inference workspace from one call to the next (ABI 1.3
/// `params_epoch`). A cell reserves `floats` at the start of every workspace layout
/// (training too, so the header is always at offset 0) and, on a call that may reuse:
///
///     let hit = PackCache.check(w.cache, f, instance: self, wih, whh, cacheable: fusedInference)
///     ... pack unless hit ...
///     if fusedInference { PackCache.commit(w.cache, f, instance: self, wih, whh) }
///
/// A hit needs the same nonzero epoch, instance, T, B and weight pointers as the call that
/// committed (the layout, and so where the packs lie, depends on T and B only). Any other call
/// clears the header before it writes the workspace, so a workspace another call (a training
/// forward, another epoch) has used since can never pass for packed.
public enum PackCache {
    /// Floats reserved for the header (64 bytes).
    public static let floats = 16
    static let magic: UInt64 = 0x5345_5143_5041_434B  // "SEQCPACK"

    @inline(__always)
    static func key(_ f: ForwardCall, _ instance: AnyObject, _ w0: UnsafePointer<Float>, _ w1: UnsafePointer<Float>?)
        -> (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) {
        (magic, f.paramsEpoch, UInt64(f.T), UInt64(f.B),
         UInt64(UInt(bitPattern: Unmanaged.passUnretained(instance).toOpaque())),
         UInt64(UInt(bitPattern: w0)), UInt64(UInt(bitPattern: w1)))
    }

    /// Whether the packs the last call left in this workspace are this call's (only when
    /// `cacheable` and the host gave an epoch); otherwise the header is cleared, and the
    /// caller packs.
    public static func check(_ region: UnsafeMutablePointer<Float>, _ f: ForwardCall, instance: AnyObject,
                             _ w0: UnsafePointer<Float>, _ w1: UnsafePointer<Float>?, cacheable: Bool) -> Bool {
        let h = UnsafeMutableRawPointer(region).assumingMemoryBound(to: UInt64.self)
        if cacheable && f.paramsEpoch != 0 {
            let k = key(f, instance, w0, w1)
            if h[0] == k.0 && h[1] == k.1 && h[2] == k.2 && h[3] == k.3 && h[4] == k.4 && h[5] == k.5 && h[6] == k.6 {
                return true
            }
        }
        h[0] = 0
        return false
    }

    /// Records that the workspace now holds this call's packs (after packing them; a no-op
    /// without an epoch).
    public static func commit(_ region: UnsafeMutablePointer<Float>, _ f: ForwardCall, instance: AnyObject,
                              _ w0: UnsafePointer<Float>, _ w1: UnsafePointer<Float>?) {
        guard f.paramsEpoch != 0 else { return }
        let h = UnsafeMutableRawPointer(region).assumingMemoryBound(to: UInt64.self)
        let k = key(f, instance, w0, w1)
        (h[1], h[2], h[3], h[4], h[5], h[6], h[7]) = (k.1, k.2, k.3, k.4, k.5, k.6, 0)
        h[0] = k.0
    }
}

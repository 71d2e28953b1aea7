// The training commands keep freed memory in the process. A step allocates and frees the same
// multi-MB buffers (tapes, gradients, activations) every time; with glibc's defaults each of
// them is its own mmap, so every step faults its pages in again and unmaps them on free
// (docs/PERFORMANCE.md, "Freed memory stays in the process"). Only the commands do this: the
// library leaves its host process's allocator alone.

import CSeqCellHost
import Foundation

enum FreedMemory {
    /// Blocks below 32 MiB come from the heap; the heap's free top goes back to the OS above
    /// 128 MiB. SEQCELL_MALLOC_DEFAULTS=1 keeps glibc's defaults (for A/B measurements).
    static func keepInProcess() {
        if let v = getenv("SEQCELL_MALLOC_DEFAULTS"), String(cString: v) == "1" { return }
        _ = sc_keep_freed_memory(32 << 20, 128 << 20)
    }
}

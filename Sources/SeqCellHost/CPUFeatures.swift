import CSeqCellHost

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import SeqCellBase

/// The instruction sets of this machine as the built-in cells' kernels see them
/// (Sources/CSeqCellKernels chooses AVX-512, AVX2+FMA or the x86-64 baseline at run time),
/// and the `SEQCELL_ISA` variable that caps that choice (docs/PERFORMANCE.md). The host
/// never links the kernels: this is the same CPUID/XGETBV test, for reports.
public struct CPUFeatures: Sendable, Equatable {
    public let avx2FMA: Bool
    /// AVX-512 F/BW/VL/DQ, with the OS saving ZMM and mask state.
    public let avx512: Bool
    /// AVX512_BF16 and AVX512_VNNI: detected and reported, not used by any kernel yet.
    public let avx512BF16: Bool
    public let avx512VNNI: Bool

    public init(bits: UInt32) {
        avx2FMA = bits & 1 != 0
        avx512 = bits & 2 != 0
        avx512BF16 = bits & 4 != 0
        avx512VNNI = bits & 8 != 0
    }

    /// This machine's.
    public static let current = CPUFeatures(bits: sc_cpu_features())

    /// The instruction-set levels of the kernels, lowest first (SEQCELL_ISA's values).
    public static let isaNames = ["baseline", "avx2", "avx512"]

    /// The highest level this CPU runs.
    public var bestISA: String { avx512 ? "avx512" : avx2FMA ? "avx2" : "baseline" }

    /// SEQCELL_ISA, if set and not empty (SEQCELL_KERNEL_ISA is its older name).
    public static var requestedISA: String? {
        for name in ["SEQCELL_ISA", "SEQCELL_KERNEL_ISA"] {
            if let v = getenv(name), v.pointee != 0 { return String(cString: v) }
        }
        return nil
    }

    /// Throws when SEQCELL_ISA names no known level (the kernels would ignore it).
    public static func checkISAEnvironment() throws {
        guard let r = requestedISA, !isaNames.contains(r) else { return }
        throw SeqCellError(.invalidArgument,
                           "SEQCELL_ISA is '\(r)'; use one of \(isaNames.reversed().joined(separator: ", ")) (or leave it unset)")
    }

    /// The level the built-in kernels run at: the best this CPU has, capped by SEQCELL_ISA.
    public var kernelISA: String {
        let best = Self.isaNames.firstIndex(of: bestISA)!  // bestISA is always one of isaNames
        guard let r = Self.requestedISA, let cap = Self.isaNames.firstIndex(of: r) else { return bestISA }
        return Self.isaNames[min(best, cap)]
    }

    /// One line for `seqcell bench` and `seqcell plugins`.
    public var summary: String {
        func yn(_ b: Bool) -> String { b ? "yes" : "no" }
        var s = "kernels: \(kernelISA)"
        if let r = Self.requestedISA { s += " (SEQCELL_ISA=\(r))" }
        s += "; CPU: AVX2+FMA \(yn(avx2FMA)), AVX-512 F/BW/VL/DQ \(yn(avx512)), AVX512_BF16 \(yn(avx512BF16)), AVX512_VNNI \(yn(avx512VNNI))"
        return s
    }
}

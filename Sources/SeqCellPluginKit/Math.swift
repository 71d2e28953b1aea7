// Element-wise helpers shared by the Swift cells.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

@inlinable @inline(__always) public func sigmoid(_ x: Float) -> Float { 1 / (1 + expf(-x)) }
@inlinable @inline(__always) public func tanhActivation(_ x: Float) -> Float { tanhf(x) }

/// dst[r, :] = bias1 + bias2 (either may be nil) for `rows` rows of width `n`.
public func fillRows(
    _ dst: UnsafeMutablePointer<Float>, rows: Int, n: Int,
    bias1: UnsafePointer<Float>?, bias2: UnsafePointer<Float>?
) {
    guard rows > 0 else { return }
    for j in 0..<n { dst[j] = (bias1?[j] ?? 0) + (bias2?[j] ?? 0) }
    for r in 1..<max(rows, 1) { (dst + r * n).update(from: dst, count: n) }
}

/// acc[j] += Σ_r src[r, j] for a [rows, n] matrix.
public func addColumnSums(_ src: UnsafePointer<Float>, rows: Int, n: Int, into acc: UnsafeMutablePointer<Float>) {
    for r in 0..<rows {
        let s = src + r * n
        for j in 0..<n { acc[j] += s[j] }
    }
}

/// Copies `count` floats, or writes zeros when `src` is nil.
@inline(__always)
public func copyOrZero(_ src: UnsafePointer<Float>?, to dst: UnsafeMutablePointer<Float>, count: Int) {
    if let src { dst.update(from: src, count: count) } else { dst.update(repeating: 0, count: count) }
}

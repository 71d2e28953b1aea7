/// [T, B, F] ↔ [B, T, F]. `x` must be 3-D and hold its shape's values (a programming error
/// otherwise, as for `Tensor.init`; the readers check both before calling this).
public func swapFirstTwoAxes(_ x: Tensor) -> Tensor {
    precondition(x.rank == 3 && Boundary.elementCount(x.shape) == x.count,
                 "swapFirstTwoAxes needs a consistent [A, B, F] tensor, got shape \(x.shape) holding \(x.count) values")
    let (a, b, f) = (x.shape[0], x.shape[1], x.shape[2])
    var out = [Float](repeating: 0, count: x.count)
    out.withUnsafeMutableBufferPointer { dst in
        x.data.withUnsafeBufferPointer { src in
            // Both hold a·b·f values (checked above).
            guard let d = dst.baseAddress, let s = src.baseAddress else { return }
            for i in 0..<a { for j in 0..<b { (d + (j &* a &+ i) &* f).update(from: s + (i &* b &+ j) &* f, count: f) } }
        }
    }
    return Tensor(shape: [b, a, f], data: out)
}

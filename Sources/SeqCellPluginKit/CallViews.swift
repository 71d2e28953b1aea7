// SeqCellPluginKit: the typed views of forward and backward calls, and the protocol a cell implements.

import CSeqCell

// MARK: - Kernels

/// Typed view of a forward call, already validated against the cell's layout.
public struct ForwardCall {
    public let T: Int
    public let B: Int
    public let training: Bool
    public let input: UnsafePointer<Float>
    /// nil: every sample has length T.
    public let lengths: UnsafePointer<Int32>?
    public let args: UnsafePointer<seqcell_forward_args>
    public let output: UnsafeMutablePointer<Float>
    public let workspace: UnsafeMutableRawPointer
    /// The host's `params_epoch` (ABI 1.3; 0 from an older host and for training calls):
    /// nonzero means that what the last call with this epoch left in the workspace derived
    /// from the parameters (`PackCache`) is still theirs.
    public let paramsEpoch: UInt64

    /// Parameter `i` (the kit has checked that none is NULL).
    @inline(__always) public func param(_ i: Int) -> UnsafePointer<Float> { args.pointee.params[i]! }
    /// nil means zero.
    @inline(__always) public func initialState(_ i: Int) -> UnsafePointer<Float>? { args.pointee.initial_states?[i] }
    @inline(__always) public func finalState(_ i: Int) -> UnsafeMutablePointer<Float>? { args.pointee.final_states?[i] }
    @inline(__always) public func length(_ b: Int) -> Int { lengths.map { Int($0[b]) } ?? T }
}

/// Typed view of a backward call, already validated against the cell's layout.
public struct BackwardCall {
    public let T: Int
    public let B: Int
    public let input: UnsafePointer<Float>
    public let lengths: UnsafePointer<Int32>?
    public let args: UnsafePointer<seqcell_backward_args>
    public let workspace: UnsafeMutableRawPointer

    /// Parameter `i` (the kit has checked that none is NULL).
    @inline(__always) public func param(_ i: Int) -> UnsafePointer<Float> { args.pointee.params[i]! }
    @inline(__always) public func initialState(_ i: Int) -> UnsafePointer<Float>? { args.pointee.initial_states?[i] }
    /// nil means zero.
    @inline(__always) public var gradOutput: UnsafePointer<Float>? { args.pointee.grad_output }
    @inline(__always) public func gradFinalState(_ i: Int) -> UnsafePointer<Float>? { args.pointee.grad_final_states?[i] }
    @inline(__always) public var gradInput: UnsafeMutablePointer<Float>? { args.pointee.grad_input }
    @inline(__always) public func gradInitialState(_ i: Int) -> UnsafeMutablePointer<Float>? { args.pointee.grad_initial_states?[i] }
    /// Where parameter `i`'s gradient accumulates; nil: the parameter is frozen (ABI 1.2), so
    /// nothing of its gradient needs computing.
    @inline(__always) public func gradParam(_ i: Int) -> UnsafeMutablePointer<Float>? { args.pointee.grad_params[i] }
    @inline(__always) public func length(_ b: Int) -> Int { lengths.map { Int($0[b]) } ?? T }
}

/// What a Swift cell implements. Instances are immutable after creation (the ABI lets
/// the host call forward/backward concurrently on one instance).
public protocol CellKernel: AnyObject {
    var layout: LayoutStorage { get }
    var inputSize: Int { get }
    /// Bytes of workspace for (T, B); `training` adds what backward needs.
    func workspaceBytes(T: Int, B: Int, training: Bool) -> Int
    /// Forward and backward cannot fail: the kit has checked every argument before calling
    /// them. (They are deliberately not `throws`: Swift 6.3 at -O can return from a throwing
    /// function that ends in a memory copy with its error register still set — see
    /// swiftlang/swift#90477 — so the hot paths stay non-throwing.)
    func forward(_ call: ForwardCall)
    func backward(_ call: BackwardCall)
}


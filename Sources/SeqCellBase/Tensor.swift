/// A dense float32 tensor, row-major. A value type: copies share storage until written.
public struct Tensor: Equatable, Sendable, CustomStringConvertible {
    public private(set) var shape: [Int]
    public var data: [Float]

    /// `data.count` must equal the product of `shape` (a programming error otherwise; use
    /// `Tensor.checked` for data that comes from outside).
    public init(shape: [Int], data: [Float]) {
        precondition(Boundary.elementCount(shape) == data.count,
                     "Tensor shape \(shape) does not hold \(data.count) elements")
        self.shape = shape
        self.data = data
    }

    /// A tensor from outside data, with a clear error instead of a trap when sizes disagree.
    public static func checked(shape: [Int], data: [Float], what: String) throws -> Tensor {
        guard let needed = Boundary.elementCount(shape) else {
            throw SeqCellError(.shape, "\(what): shape \(shape) has a negative dimension or more elements than can be addressed")
        }
        guard needed == data.count else {
            throw SeqCellError(.shape, "\(what): shape \(shape) needs \(needed) values, found \(data.count)")
        }
        return Tensor(shape: shape, data: data)
    }

    public static func zeros(_ shape: [Int]) -> Tensor {
        Tensor(shape: shape, data: [Float](repeating: 0, count: shape.reduce(1, *)))
    }

    public var count: Int { data.count }
    public var rank: Int { shape.count }

    public var description: String { "Tensor\(shape)" }
}

/// The one error type of the SeqCell core: a kind for programs, a message for people.
public struct SeqCellError: Error, CustomStringConvertible, Equatable, Sendable {
    public enum Kind: String, Sendable {
        case invalidArgument = "invalid argument"
        case shape = "shape mismatch"
        case plugin = "plugin"
        case cell = "cell"
        case checkpoint = "checkpoint"
        case io = "i/o"
        case unsupported = "unsupported"
        case numeric = "numeric"
    }

    public var kind: Kind
    public var message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    /// `message` as one line for people: control characters from files escaped and long
    /// values shortened (`MessageText.oneLine`). `message` keeps the text as raised.
    public var description: String { MessageText.oneLine(message) }
}

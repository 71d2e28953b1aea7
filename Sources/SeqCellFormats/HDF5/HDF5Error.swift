import CHDF5
import SeqCellBase
import SeqCellHost
import SeqCellModel

/// A failed HDF5 operation: what was attempted, on which object of which file, and why.
///
/// `description` is one line, e.g.
/// `cannot open dataset '/model/x' in 'ckpt.h5': no such dataset`, or for failures libhdf5 reports,
/// `cannot open file 'x.h5': not an HDF5 file: file signature not found`.
public struct HDF5Error: Error, CustomStringConvertible {
    /// The kind of failure, for callers that react to some of them.
    public enum Code: Sendable, Hashable {
        /// The file, group, dataset or attribute does not exist.
        case notFound
        /// The object or its element type is not the kind that was asked for.
        case wrongType
        /// The caller's shape, element count or buffer does not fit.
        case invalidArgument
        /// The file exists but has no HDF5 signature.
        case notHDF5
        /// libhdf5 reported a failure; `stack` holds its messages.
        case library
        /// A POSIX call failed; `cause` holds the errno.
        case system
        /// The file is damaged: libhdf5 failed reading it, crashed or hung on it (in the child
        /// process that checks files), or a size or count in it is impossible.
        case damaged
        /// The file is readable but breaks SeqCell's rules for untrusted files: a soft or external
        /// link, external or virtual storage, a filter not built into libhdf5.
        case refused
    }

    /// One entry of libhdf5's error stack.
    public struct StackEntry: Sendable, Hashable {
        /// The libhdf5 function that pushed the entry, e.g. `H5Dopen2`.
        public var function: String
        /// Its description, e.g. `object 'x' doesn't exist`.
        public var message: String
        /// The major and minor error class messages, e.g. `Dataset` and `Object not found`.
        public var major: String
        public var minor: String
    }

    /// Where in this package the error was raised.
    public struct SourceLocation: Sendable, Hashable {
        public var function: String
        public var file: String
        public var line: Int
    }

    public var code: Code
    /// What was attempted, e.g. `open dataset`.
    public var operation: String
    /// The file's path as the caller gave it.
    public var filePath: String
    /// The HDF5 path of the object, e.g. `/model/layers/00/forward/weight_ih`; an attribute is
    /// named `<object path>@<attribute name>`. Empty for operations on the file itself.
    public var objectPath: String
    /// Why it failed.
    public var message: String
    /// libhdf5's error stack, outermost (API) call first; empty when the wrapper found the problem.
    public var stack: [StackEntry]
    /// The underlying error, e.g. a `POSIXError` for `.system`.
    public var cause: (any Error)?
    public var location: SourceLocation

    /// One line naming the operation, the file and the object, and why, as raised: object
    /// names and values from the file are not escaped here (`description` escapes them).
    /// libhdf5's function names stay in `stack` and never appear here.
    public var rawDescription: String {
        var text = "cannot \(operation) "
        text += objectPath.isEmpty ? "'\(filePath)'" : "'\(objectPath)' in '\(filePath)'"
        text += ": \(message)"
        return text
    }

    /// `rawDescription` as one line for people: control characters from the file escaped and
    /// long values shortened (`MessageText.oneLine`).
    public var description: String { MessageText.oneLine(rawDescription) }
}

/// The file and object an operation works on: what an `HDF5Error` needs besides the failure.
struct H5Site {
    var file: String
    var object: String

    /// An error the wrapper itself detected.
    func error(
        _ code: HDF5Error.Code, _ operation: String, _ message: String, cause: (any Error)? = nil,
        function: String = #function, fileID: String = #fileID, line: Int = #line
    ) -> HDF5Error {
        HDF5Error(
            code: code, operation: operation, filePath: file, objectPath: object, message: message,
            stack: [], cause: cause, location: .init(function: function, file: fileID, line: line))
    }

    /// An error from the calling thread's HDF5 error stack, which this takes and clears. Call it
    /// right after the failing HDF5 call: the next HDF5 API call clears the stack.
    func libraryError(
        _ operation: String, code: HDF5Error.Code = .library,
        function: String = #function, fileID: String = #fileID, line: Int = #line
    ) -> HDF5Error {
        let stack = takeErrorStack()
        var error = self.error(code, operation, "", function: function, fileID: fileID, line: line)
        error.stack = stack
        error.message = Self.summary(of: stack)
        return error
    }

    /// Returns `result` when it is non-negative (HDF5's success convention); otherwise throws
    /// `libraryError(operation)`.
    @discardableResult
    func check<T: BinaryInteger>(
        _ result: T, _ operation: String,
        function: String = #function, fileID: String = #fileID, line: Int = #line
    ) throws -> T {
        guard result < 0 else { return result }
        throw libraryError(operation, function: function, fileID: fileID, line: line)
    }

    /// The innermost entry says what actually went wrong; its minor class is prefixed when it
    /// adds something (`not an HDF5 file: file signature not found`).
    private static func summary(of stack: [HDF5Error.StackEntry]) -> String {
        guard let innermost = stack.last else { return "HDF5 reported an error without details" }
        let minor = innermost.minor.prefix(1).lowercased() + innermost.minor.dropFirst()
        let detail = innermost.message.split(whereSeparator: \.isNewline).joined(separator: " ")
        if minor.isEmpty || detail.lowercased().contains(minor.lowercased()) { return detail }
        return detail.isEmpty ? minor : "\(minor): \(detail)"
    }
}

/// Takes the calling thread's HDF5 error stack, outermost (API) call first, leaving it empty.
private func takeErrorStack() -> [HDF5Error.StackEntry] {
    let stack = H5Eget_current_stack()
    guard stack >= 0 else { return [] }
    defer { H5Eclose_stack(stack) }
    var walked: [(entry: HDF5Error.StackEntry, major: hid_t, minor: hid_t)] = []
    _ = withUnsafeMutablePointer(to: &walked) { walkedPointer in
        H5Ewalk2(stack, H5E_WALK_DOWNWARD, { _, entry, clientData in
            guard let entry = entry?.pointee, let clientData else { return 0 }
            let text = { (pointer: UnsafePointer<CChar>?) in pointer.map { String(cString: $0) } ?? "" }
            clientData.assumingMemoryBound(to: [(entry: HDF5Error.StackEntry, major: hid_t, minor: hid_t)].self)
                .pointee.append((
                    HDF5Error.StackEntry(
                        function: text(entry.func_name), message: text(entry.desc), major: "", minor: ""),
                    entry.maj_num, entry.min_num))
            return 0
        }, walkedPointer)
    }
    // Message look-ups are API calls, so they run after the walk, not inside its callback.
    return walked.map { item in
        var entry = item.entry
        entry.major = hdf5String { Int(H5Eget_msg(item.major, nil, $0, $1)) } ?? ""
        entry.minor = hdf5String { Int(H5Eget_msg(item.minor, nil, $0, $1)) } ?? ""
        return entry
    }
}

/// Reads a string from an HDF5 call that reports the length when given no buffer and fills a
/// buffer of the given size (terminator included) otherwise. `nil` if the call fails.
func hdf5String(_ call: (UnsafeMutablePointer<CChar>?, size_t) -> Int) -> String? {
    let length = call(nil, 0)
    guard length >= 0 else { return nil }
    var buffer = [CChar](repeating: 0, count: length + 1)
    guard call(&buffer, size_t(buffer.count)) >= 0 else { return nil }
    return String(decoding: buffer.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

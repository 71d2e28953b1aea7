import Foundation
import SeqCellBase
import SeqCellHost
import SeqCellModel

/// A JSON value read from an untrusted file. Numbers keep their source text, so integers
/// are read exactly (`integer`) and nothing is rounded on the way.
enum JSONValue: Sendable {
    case null
    case bool(Bool)
    case number(String)
    case string(String)
    case array([JSONValue])
    /// Members in file order; keys are unique (the parser refuses repeats).
    case object([(key: String, value: JSONValue)])

    /// A non-negative integer literal that fits `Int` (no sign, fraction or exponent).
    var nonNegativeInteger: Int? {
        guard case .number(let text) = self, !text.isEmpty, text.utf8.allSatisfy({ (48...57).contains($0) }) else { return nil }
        return Int(text)
    }

    /// What the value is, for messages ("a string", "an array of 3", ...).
    var kindDescription: String {
        switch self {
        case .null: "null"
        case .bool(let b): b ? "true" : "false"
        case .number(let t): "the number \(t.prefix(24))"
        case .string: "a string"
        case .array(let a): "an array of \(a.count)"
        case .object: "an object"
        }
    }

    /// The value as Foundation objects, as `JSONSerialization` gives them: `[String: Any]`,
    /// `[Any]`, `String`, `Bool`, `NSNull`, and numbers as `Int` when the literal is an integer
    /// that fits, else `Double`.
    var foundationObject: Any {
        switch self {
        case .null: return NSNull()
        case .bool(let b): return b
        case .number(let t):
            if let i = Int(t) { return i }
            return Double(t) ?? Double.nan
        case .string(let s): return s
        case .array(let a): return a.map(\.foundationObject)
        case .object(let members):
            var d: [String: Any] = [:]
            d.reserveCapacity(members.count)
            for (k, v) in members { d[k] = v.foundationObject }
            return d
        }
    }
}

/// Limits for `BoundedJSONParser`; every one is checked while parsing, so a hostile document
/// costs at most time linear in the bytes read before the first limit is hit.
struct JSONLimits: Sendable {
    /// Nesting of arrays and objects.
    var maxDepth: Int
    /// Members of one object or items of one array.
    var maxContainerCount: Int
    /// Values in the whole document.
    var maxValues: Int
    /// Bytes of one string (after unescaping).
    var maxStringBytes: Int
}

/// Why a document was refused, with the byte offset where the parser stopped.
struct JSONParseError: Error, CustomStringConvertible {
    var message: String
    var offset: Int
    var description: String { "\(message) at byte \(offset)" }
}

/// A strict JSON parser (RFC 8259) that runs in time linear in its input and refuses
/// documents beyond its limits: used for safetensors headers and Keras configs instead of
/// Foundation's decoders, whose cost and memory on hostile input are not bounded.
struct BoundedJSONParser {
    let limits: JSONLimits

    init(limits: JSONLimits) {
        self.limits = limits
    }

    func parse(_ bytes: some Collection<UInt8>) throws -> JSONValue {
        let array = Array(bytes)
        return try array.withUnsafeBufferPointer { buffer in
            var state = State(bytes: buffer, limits: limits)
            state.skipSpace()
            let value = try state.value(depth: 0)
            state.skipSpace()
            guard state.index == buffer.count else { throw state.error("unexpected bytes after the JSON value") }
            return value
        }
    }

    private struct State {
        let bytes: UnsafeBufferPointer<UInt8>
        let limits: JSONLimits
        var index = 0
        var values = 0

        init(bytes: UnsafeBufferPointer<UInt8>, limits: JSONLimits) {
            self.bytes = bytes
            self.limits = limits
        }

        func error(_ message: String) -> JSONParseError { JSONParseError(message: message, offset: index) }

        mutating func skipSpace() {
            while index < bytes.count {
                switch bytes[index] {
                case 0x20, 0x09, 0x0A, 0x0D: index += 1
                default: return
                }
            }
        }

        mutating func expect(_ literal: StaticString, _ value: JSONValue) throws -> JSONValue {
            let n = literal.utf8CodeUnitCount
            guard bytes.count - index >= n else { throw error("unexpected end of the document") }
            let p = literal.utf8Start
            for k in 0..<n where bytes[index + k] != p[k] { throw error("unexpected character") }
            index += n
            return value
        }

        mutating func value(depth: Int) throws -> JSONValue {
            values += 1
            guard values <= limits.maxValues else { throw error("more than \(limits.maxValues) values") }
            guard index < bytes.count else { throw error("unexpected end of the document") }
            switch bytes[index] {
            case UInt8(ascii: "{"): return try object(depth: depth + 1)
            case UInt8(ascii: "["): return try array(depth: depth + 1)
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "t"): return try expect("true", .bool(true))
            case UInt8(ascii: "f"): return try expect("false", .bool(false))
            case UInt8(ascii: "n"): return try expect("null", .null)
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try number()
            default: throw error("unexpected character")
            }
        }

        mutating func object(depth: Int) throws -> JSONValue {
            guard depth <= limits.maxDepth else { throw error("nested deeper than \(limits.maxDepth) levels") }
            index += 1  // {
            var members: [(key: String, value: JSONValue)] = []
            var seen = Set<String>()
            skipSpace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
                index += 1
                return .object(members)
            }
            while true {
                skipSpace()
                guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { throw error("expected a quoted key") }
                let keyOffset = index
                let key = try string()
                guard seen.insert(key).inserted else {
                    throw JSONParseError(message: "key \(displayName(key)) appears twice in one object", offset: keyOffset)
                }
                skipSpace()
                guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { throw error("expected ':' after a key") }
                index += 1
                skipSpace()
                let v = try value(depth: depth)
                members.append((key, v))
                guard members.count <= limits.maxContainerCount else {
                    throw error("an object has more than \(limits.maxContainerCount) members")
                }
                skipSpace()
                guard index < bytes.count else { throw error("unexpected end of the document") }
                if bytes[index] == UInt8(ascii: ",") { index += 1; continue }
                if bytes[index] == UInt8(ascii: "}") { index += 1; return .object(members) }
                throw error("expected ',' or '}'")
            }
        }

        mutating func array(depth: Int) throws -> JSONValue {
            guard depth <= limits.maxDepth else { throw error("nested deeper than \(limits.maxDepth) levels") }
            index += 1  // [
            var items: [JSONValue] = []
            skipSpace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "]") {
                index += 1
                return .array(items)
            }
            while true {
                skipSpace()
                items.append(try value(depth: depth))
                guard items.count <= limits.maxContainerCount else {
                    throw error("an array has more than \(limits.maxContainerCount) items")
                }
                skipSpace()
                guard index < bytes.count else { throw error("unexpected end of the document") }
                if bytes[index] == UInt8(ascii: ",") { index += 1; continue }
                if bytes[index] == UInt8(ascii: "]") { index += 1; return .array(items) }
                throw error("expected ',' or ']'")
            }
        }

        mutating func number() throws -> JSONValue {
            let start = index
            func digits() -> Int {
                let s = index
                while index < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index]) { index += 1 }
                return index - s
            }
            if bytes[index] == UInt8(ascii: "-") { index += 1 }
            let intStart = index
            guard digits() > 0 else { throw error("a number without digits") }
            if bytes[intStart] == UInt8(ascii: "0"), index - intStart > 1 { throw JSONParseError(message: "a number with a leading zero", offset: start) }
            if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
                index += 1
                guard digits() > 0 else { throw error("a number without digits after '.'") }
            }
            if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
                index += 1
                if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") { index += 1 }
                guard digits() > 0 else { throw error("a number without digits in its exponent") }
            }
            guard index - start <= 64 else { throw JSONParseError(message: "a number of \(index - start) characters", offset: start) }
            return .number(String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self))
        }

        mutating func hex4() throws -> UInt32 {
            guard bytes.count - index >= 4 else { throw error("unexpected end of the document in a \\u escape") }
            var v: UInt32 = 0
            for _ in 0..<4 {
                let c = bytes[index]
                let d: UInt8
                switch c {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): d = c - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): d = c - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): d = c - UInt8(ascii: "A") + 10
                default: throw error("a \\u escape with a non-hex digit")
                }
                v = v << 4 | UInt32(d)
                index += 1
            }
            return v
        }

        mutating func string() throws -> String {
            let start = index
            index += 1  // "
            // Fast path: no escapes.
            var k = index
            while k < bytes.count, bytes[k] != UInt8(ascii: "\""), bytes[k] != UInt8(ascii: "\\"), bytes[k] >= 0x20 { k += 1 }
            if k < bytes.count, bytes[k] == UInt8(ascii: "\"") {
                guard k - index <= limits.maxStringBytes else {
                    throw JSONParseError(message: "a string longer than \(limits.maxStringBytes) bytes", offset: start)
                }
                let slice = UnsafeBufferPointer(rebasing: bytes[index..<k])
                guard let s = String(validating: slice, as: UTF8.self) else {
                    throw JSONParseError(message: "a string that is not valid UTF-8", offset: start)
                }
                index = k + 1
                return s
            }
            var out: [UInt8] = []
            while true {
                guard index < bytes.count else { throw JSONParseError(message: "a string without its closing quote", offset: start) }
                let c = bytes[index]
                if c == UInt8(ascii: "\"") { index += 1; break }
                guard c >= 0x20 else { throw error("a control character inside a string") }
                if c == UInt8(ascii: "\\") {
                    index += 1
                    guard index < bytes.count else { throw error("unexpected end of the document in an escape") }
                    let e = bytes[index]
                    index += 1
                    switch e {
                    case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
                    case UInt8(ascii: "b"): out.append(0x08)
                    case UInt8(ascii: "f"): out.append(0x0C)
                    case UInt8(ascii: "n"): out.append(0x0A)
                    case UInt8(ascii: "r"): out.append(0x0D)
                    case UInt8(ascii: "t"): out.append(0x09)
                    case UInt8(ascii: "u"):
                        var scalar = try hex4()
                        if (0xD800..<0xDC00).contains(scalar) {
                            guard bytes.count - index >= 6, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") else {
                                throw error("an unpaired surrogate in a \\u escape")
                            }
                            index += 2
                            let low = try hex4()
                            guard (0xDC00..<0xE000).contains(low) else { throw error("an unpaired surrogate in a \\u escape") }
                            scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        } else if (0xDC00..<0xE000).contains(scalar) {
                            throw error("an unpaired surrogate in a \\u escape")
                        }
                        guard let u = Unicode.Scalar(scalar) else { throw error("an invalid \\u escape") }
                        out.append(contentsOf: Array(String(Character(u)).utf8))
                    default:
                        throw error("an invalid escape")
                    }
                } else {
                    out.append(c)
                    index += 1
                }
                guard out.count <= limits.maxStringBytes else {
                    throw JSONParseError(message: "a string longer than \(limits.maxStringBytes) bytes", offset: start)
                }
            }
            guard let s = String(validating: out, as: UTF8.self) else {
                throw JSONParseError(message: "a string that is not valid UTF-8", offset: start)
            }
            return s
        }
    }
}

/// `text` quoted for a message: control characters and other invisible characters escaped,
/// and cut to `limit` characters, e.g. `'weight\u{1B}[2J…'`.
func displayName(_ text: String, limit: Int = 120) -> String {
    var out = "'"
    var count = 0
    for u in text.unicodeScalars {
        if count >= limit {
            out += "…"
            break
        }
        switch u.properties.generalCategory {
        case .control, .format, .lineSeparator, .paragraphSeparator, .unassigned, .surrogate, .privateUse:
            out += "\\u{\(String(u.value, radix: 16, uppercase: true))}"
        default:
            if u == "'" || u == "\\" { out += "\\" }
            out.unicodeScalars.append(u)
        }
        count += 1
    }
    return out + "'"
}

/// `text` with control characters (C0, DEL, C1) written as `\u{…}`, for messages that quote
/// names from files.
func escapingControls(_ text: String) -> String {
    guard text.unicodeScalars.contains(where: { $0.value < 0x20 || (0x7F...0x9F).contains($0.value) }) else { return text }
    var out = ""
    for u in text.unicodeScalars {
        if u.value < 0x20 || (0x7F...0x9F).contains(u.value) {
            out += "\\u{\(String(u.value, radix: 16, uppercase: true))}"
        } else {
            out.unicodeScalars.append(u)
        }
    }
    return out
}

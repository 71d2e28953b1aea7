import Glibc

/// Text that came from files (cell ids, names, attribute values), made safe to show in a
/// one-line message on a terminal.
///
/// Messages quote values from untrusted files. Such a value may hold escape sequences that
/// recolour or rewrite the terminal, newlines that forge further lines of output, or a megabyte
/// of text. `oneLine(_:)` is applied where messages are shown (the CLI's error printer and
/// `SeqCellError.description`), so every message is handled the same way:
///
/// - control characters are escaped: tab, newline and carriage return as `\t`, `\n`, `\r`, every
///   other C0/C1 control character and DEL as `\u{1B}`, and so are the Unicode bidirectional
///   controls and line/paragraph separators, which reorder or break the line as shown;
/// - a quoted value longer than `valueLimit` characters is cut to its first `valueLimit`
///   characters followed by `… (N bytes)`, N its length in UTF-8; so is any other run of more
///   than `wordLimit` non-space characters. A quote opens after a non-letter (or at the start)
///   and closes before one (or at the end), so the apostrophes of "Keras' config" or
///   "PyTorch's" are text, not quotes. Values the caller passes in `keepingWhole` (the CLI
///   passes its arguments: the user's own paths) are never cut;
/// - what is left is at most `messageLimit` characters, cut the same way.
///
/// Backslashes are kept as they are, so applying `oneLine` twice gives the same text as once.
public enum MessageText {
    /// Characters of a quoted value that a message keeps.
    public static let valueLimit = 100
    /// Characters of an unquoted word that a message keeps.
    public static let wordLimit = 200
    /// Characters of a whole message.
    public static let messageLimit = 4000

    /// `message` as one line: long values shortened, then control characters escaped.
    public static func oneLine(_ message: String, keepingWhole: Set<String> = []) -> String {
        escaped(shortened(message, keepingWhole: keepingWhole))
    }

    /// A value from a file as a message shows it: escaped, and shortened past `limit` characters.
    /// For code that builds a message around a value without quoting it.
    public static func value(_ text: String, limit: Int = valueLimit) -> String {
        escaped(cut(Substring(text), keeping: limit))
    }

    /// Every control character of `text` escaped (see the type's documentation).
    public static func escaped(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: needsEscape) else { return text }
        var out = String.UnicodeScalarView()
        for scalar in text.unicodeScalars {
            guard needsEscape(scalar) else {
                out.append(scalar)
                continue
            }
            let replacement: String
            switch scalar {
            case "\n": replacement = "\\n"
            case "\r": replacement = "\\r"
            case "\t": replacement = "\\t"
            default: replacement = "\\u{" + String(scalar.value, radix: 16, uppercase: true) + "}"
            }
            out.append(contentsOf: replacement.unicodeScalars)
        }
        return String(out)
    }

    /// Long quoted values and long words cut (see the type's documentation); nothing escaped.
    /// One pass over the message's bytes, whatever it holds (a value may be 100 MB).
    public static func shortened(_ message: String, keepingWhole: Set<String> = []) -> String {
        // Short messages have nothing to cut.
        if message.utf8.count <= valueLimit { return message }
        let whole = Set(keepingWhole.map { Array($0.utf8) })
        var message = message
        let bytes: [UInt8] = message.withUTF8 { text in
            var out: [UInt8] = []
            out.reserveCapacity(min(text.count, 4 * messageLimit))
            var start = 0   // of the current text or quoted value
            var quoted = false
            var search = 0  // where to look for the next quote
            while true {
                let index = next(quote, in: text, from: search)
                guard index < text.count else { break }
                search = index + 1
                if !quoted {
                    // An opening quote: at the start, or after a non-letter.
                    guard index == 0 || !isWordByte(text[index - 1]) else { continue }
                    appendWords(UnsafeBufferPointer(rebasing: text[start..<index]), whole: whole, to: &out)
                } else {
                    // A closing quote: at the end, or before a non-letter.
                    guard index + 1 == text.count || !isWordByte(text[index + 1]) else { continue }
                    appendCut(UnsafeBufferPointer(rebasing: text[start..<index]), keeping: valueLimit, whole: whole, to: &out)
                }
                out.append(quote)
                quoted.toggle()
                start = index + 1
            }
            // An unclosed quote runs to the end.
            let rest = UnsafeBufferPointer(rebasing: text[start...])
            if quoted {
                appendCut(rest, keeping: valueLimit, whole: whole, to: &out)
            } else {
                appendWords(rest, whole: whole, to: &out)
            }
            return out
        }
        return cut(Substring(String(decoding: bytes, as: UTF8.self)), keeping: messageLimit)
    }

    private static let quote = UInt8(ascii: "'")
    private static let space = UInt8(ascii: " ")

    /// ASCII letters and digits, and every byte of a non-ASCII character.
    private static func isWordByte(_ byte: UInt8) -> Bool {
        byte >= 0x80 || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte | 0x20)
            || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
    }

    /// Each run of non-space bytes longer than `wordLimit` characters, cut; a run that is one of
    /// `whole`, give or take the punctuation around it, is kept.
    private static func appendWords(_ text: UnsafeBufferPointer<UInt8>, whole: Set<[UInt8]>, to out: inout [UInt8]) {
        guard text.count > wordLimit else {
            out.append(contentsOf: text)
            return
        }
        var start = 0
        while start <= text.count {
            let index = next(space, in: text, from: start)
            let word = UnsafeBufferPointer(rebasing: text[start..<index])
            if word.count > wordLimit, !whole.isEmpty {
                let trimmed = word.drop(while: { "([\"".utf8.contains($0) }).reversed().drop(while: { ",;:.)]\"".utf8.contains($0) })
                if whole.contains(Array(trimmed.reversed())) {
                    out.append(contentsOf: word)
                } else {
                    appendCut(word, keeping: wordLimit, whole: [], to: &out)
                }
            } else {
                appendCut(word, keeping: wordLimit, whole: [], to: &out)
            }
            if index < text.count { out.append(space) }
            start = index + 1
        }
    }

    /// The index of the first `byte` in `text` at or after `start`; `text.count` if none.
    private static func next(_ byte: UInt8, in text: UnsafeBufferPointer<UInt8>, from start: Int) -> Int {
        guard start < text.count, let base = text.baseAddress,
              let found = memchr(base + start, Int32(byte), text.count - start)
        else { return text.count }
        return base.distance(to: found.assumingMemoryBound(to: UInt8.self))
    }

    /// The UTF-8 `text` when it has at most `limit` Unicode scalars, otherwise its first `limit`
    /// scalars and `… (N bytes)`; a value already cut that way is kept as it is.
    private static func appendCut(
        _ text: UnsafeBufferPointer<UInt8>, keeping limit: Int, whole: Set<[UInt8]> = [], to out: inout [UInt8]
    ) {
        // `end`: where scalar number `limit` (counting from 0) starts, if there is one.
        var scalars = 0
        var end: Int?
        for index in 0..<text.count where text[index] & 0xC0 != 0x80 {
            if scalars == limit {
                end = index
                break
            }
            scalars += 1
        }
        guard let end, whole.isEmpty || text.count > 4096 || !whole.contains(Array(text)) else {
            out.append(contentsOf: text)
            return
        }
        if let marker = cutMarker(in: text), marker <= end {
            out.append(contentsOf: text)
            return
        }
        out.append(contentsOf: text[0..<end])
        out.append(contentsOf: "… (\(text.count) bytes)".utf8)
    }

    /// Where `… (N bytes)` starts when `text` ends with it.
    private static func cutMarker(in text: UnsafeBufferPointer<UInt8>) -> Int? {
        let suffix = Array(" bytes)".utf8), marker = Array("… (".utf8)
        guard text.count >= suffix.count + marker.count + 1,
              text[(text.count - suffix.count)...].elementsEqual(suffix)
        else { return nil }
        var index = text.count - suffix.count
        while index > 0, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(text[index - 1]) { index -= 1 }
        guard index < text.count - suffix.count, index >= marker.count,
              text[(index - marker.count)..<index].elementsEqual(marker)
        else { return nil }
        return index - marker.count
    }

    /// `text` when it has at most `limit` Unicode scalars; otherwise its first `limit` scalars
    /// and `… (N bytes)`. Counts scalars, not characters: a value of one letter followed by a
    /// million combining marks is one `Character` but is cut all the same.
    static func cut(_ text: Substring, keeping limit: Int) -> String {
        var text = String(text)
        return text.withUTF8 { bytes in
            var out: [UInt8] = []
            appendCut(bytes, keeping: limit, to: &out)
            return String(decoding: out, as: UTF8.self)
        }
    }

    /// Control characters (C0, DEL, C1), the bidirectional formatting characters, and the
    /// Unicode line and paragraph separators.
    static func needsEscape(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x00...0x1F, 0x7F...0x9F: return true
        case 0x061C, 0x200E, 0x200F, 0x2028, 0x2029, 0x202A...0x202E, 0x2066...0x2069: return true
        default: return false
        }
    }
}

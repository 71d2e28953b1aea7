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
/// - a quoted value (between single quotes) longer than `valueLimit` characters is cut to its
///   first `valueLimit` characters followed by `… (N bytes)`, N its length in UTF-8; so is any
///   other run of more than `wordLimit` non-space characters;
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
    public static func oneLine(_ message: String) -> String {
        escaped(shortened(message))
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
    /// Linear in the message's length, whatever it holds.
    public static func shortened(_ message: String) -> String {
        // Short messages have nothing to cut.
        if message.utf8.count <= valueLimit { return message }
        var out = ""
        for (i, part) in message.utf8.split(separator: UInt8(ascii: "'"), omittingEmptySubsequences: false).enumerated() {
            let segment = message[part.startIndex..<part.endIndex]
            if i > 0 { out += "'" }
            // Odd segments are inside quotes (an unclosed quote runs to the end).
            out += i % 2 == 1 ? cut(segment, keeping: valueLimit) : shortenedWords(segment)
        }
        return cut(Substring(out), keeping: messageLimit)
    }

    /// Each run of non-space characters longer than `wordLimit`, cut.
    private static func shortenedWords(_ text: Substring) -> String {
        guard text.utf8.count > wordLimit else { return String(text) }
        var out = ""
        for (i, part) in text.utf8.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: false).enumerated() {
            if i > 0 { out += " " }
            out += cut(text[part.startIndex..<part.endIndex], keeping: wordLimit)
        }
        return out
    }

    /// `text` when it has at most `limit` Unicode scalars; otherwise its first `limit` scalars
    /// and `… (N bytes)`. Counts scalars, not characters: a value of one letter followed by a
    /// million combining marks is one `Character` but is cut all the same.
    static func cut(_ text: Substring, keeping limit: Int) -> String {
        let scalars = text.unicodeScalars
        guard let end = scalars.index(scalars.startIndex, offsetBy: limit, limitedBy: scalars.endIndex),
              end != scalars.endIndex
        else { return String(text) }
        // Already cut (a message shown twice): keep it, so the byte count stays the original's.
        if text.hasSuffix(" bytes)"),
           scalars.index(end, offsetBy: 40, limitedBy: scalars.endIndex) == nil,
           let marker = text.range(of: "… (", options: .backwards),
           marker.lowerBound <= end, text[marker.upperBound...].dropLast(" bytes)".count).allSatisfy(\.isNumber) {
            return String(text)
        }
        return String(scalars[scalars.startIndex..<end]) + "… (\(text.utf8.count) bytes)"
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

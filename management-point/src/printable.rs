//! Text a device sent (inventory values, status texts, feedback details, components), made
//! safe for the administrator's terminal and the server's log: a device must not be able to
//! move the cursor, clear the screen, retitle the window or start a new log line that reads
//! like the server's own. One function, [`printable`], used wherever `dmmp` prints or logs such
//! text; JSON output needs none (its encoder escapes control characters).

use std::borrow::Cow;
use std::fmt::Write;

/// `s` with control characters (C0, DEL, C1) and the characters that reorder text on screen
/// (bidirectional overrides, isolates and marks) written as escapes: `\n`, `\r`, `\t`,
/// `\x1b` below U+0080, `\u{9b}` above. Everything else, backslashes included, is kept, so
/// ordinary text (paths, messages in any script) reads as it was sent.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) && (c as u32) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_reordering_characters_are_escaped_the_rest_kept() {
        assert!(matches!(printable("plain text, ünïcode, C:\\path"), Cow::Borrowed(_)));
        assert_eq!(printable("a\nb\r\tc"), "a\\nb\\r\\tc");
        assert_eq!(printable("\x1b[2J\x07\x00\x7f"), "\\x1b[2J\\x07\\x00\\x7f");
        assert_eq!(printable("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(printable("abc\u{202e}fed"), "abc\\u{202e}fed");
    }
}

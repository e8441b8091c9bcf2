//! Text herd prints but did not write (registry answers, script names and
//! output, file contents quoted in errors) goes through [`escape_controls`],
//! so a hostile registry or script cannot clear the screen, retitle the
//! terminal or hide text with escape sequences.

use std::borrow::Cow;

/// `text` with every control character except newline and tab written as
/// `\x1b` / `\u{9b}`, and the bidirectional overrides that reorder what a
/// line shows as `\u{202e}`. Text without them is returned as it is.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if !needs_escape(c) {
            escaped.push(c);
        } else if (c as u32) < 0x80 {
            escaped.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            escaped.push_str(&format!("\\u{{{:x}}}", c as u32));
        }
    }
    Cow::Owned(escaped)
}

fn needs_escape(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_terminal_controls_and_keeps_lines() {
        assert!(matches!(
            escape_controls("plain ü\n\tline"),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            escape_controls("\u{1b}]0;owned\u{7}\u{1b}[2J\r\u{9b}x\u{202e}"),
            "\\x1b]0;owned\\x07\\x1b[2J\\x0d\\u{9b}x\\u{202e}"
        );
    }
}

//! Text herd prints but did not write (registry answers, script names and
//! output, file contents quoted in errors) goes through [`escape_controls`],
//! so a hostile registry or script cannot clear the screen, retitle the
//! terminal or hide text with escape sequences.
//!
//! It is also the one place that decides how herd's own output looks:
//! whether stderr gets colour ([`use_color`]), how much is said
//! ([`log_level`]), and how counts read ([`count`]).

use std::borrow::Cow;
use std::sync::OnceLock;

/// `--color`: when herd's messages on stderr are coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ColorChoice {
    /// Colour when stderr is a terminal and NO_COLOR is unset or empty.
    #[default]
    Auto,
    Always,
    Never,
}

static COLOR: OnceLock<bool> = OnceLock::new();
static LOG_LEVEL: OnceLock<String> = OnceLock::new();

/// Decides colour once for the process, from `--color`, `NO_COLOR`
/// (<https://no-color.org>: any non-empty value) and whether stderr is a
/// terminal; a log file or CI log never gets escape codes unless asked.
pub fn set_color(choice: ColorChoice) -> bool {
    let decided = match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
                && std::io::IsTerminal::is_terminal(&std::io::stderr())
        }
    };
    *COLOR.get_or_init(|| decided)
}

/// Whether herd colours what it writes on stderr (false until decided).
pub fn use_color() -> bool {
    COLOR.get().copied().unwrap_or(false)
}

/// Records the level herd logs at (`error` for `-q`, `debug` for `-v`),
/// so build scripts get the same `LOG_LEVEL` as herd itself.
pub fn set_log_level(level: &str) {
    let _ = LOG_LEVEL.set(level.to_string());
}

/// The level set by [`set_log_level`], else `LOG_LEVEL`, else `info`.
pub fn log_level() -> String {
    LOG_LEVEL
        .get()
        .cloned()
        .or_else(|| std::env::var("LOG_LEVEL").ok().filter(|l| !l.is_empty()))
        .unwrap_or_else(|| "info".into())
}

/// `1 file`, `2 files`, `0 templates`, `3 dependencies`: every count herd
/// prints goes through here so none reads "1 files".
pub fn count(n: usize, singular: &str) -> String {
    if n == 1 {
        return format!("1 {singular}");
    }
    let plural = if let Some(stem) = singular
        .strip_suffix('y')
        .filter(|s| !s.ends_with(['a', 'e', 'o', 'u']))
    {
        format!("{stem}ies")
    } else if singular.ends_with(['s', 'x']) || singular.ends_with("ch") || singular.ends_with("sh")
    {
        format!("{singular}es")
    } else {
        format!("{singular}s")
    };
    format!("{n} {plural}")
}

/// `text` in bold `colour` (an ANSI SGR number: 31 red, 32 green, 33
/// yellow) when stderr gets colour, plain otherwise.
pub fn paint(text: &str, colour: u8) -> String {
    if use_color() {
        format!("\x1b[1;{colour}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

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
    fn counts_read_as_english() {
        assert_eq!(count(1, "file"), "1 file");
        assert_eq!(count(0, "template"), "0 templates");
        assert_eq!(count(2, "dependency"), "2 dependencies");
        assert_eq!(count(2, "key"), "2 keys");
        assert_eq!(count(3, "process"), "3 processes");
    }

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

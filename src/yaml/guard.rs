//! What a YAML file must pass before (and besides) serde reads it: a size
//! bound, a nesting bound checked by a cheap scan of the text (libyaml
//! takes time quadratic in the depth before serde's own recursion limit
//! is reached: 100,000 levels cost 50 s), and no key twice in one map
//! (serde keeps the last one silently, so a typo'd copy would win).

use crate::error::InputError;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;
use std::path::Path;

/// Largest YAML file herd reads: attribute files, manifests, `.cfg`s and
/// environment files are written by hand; a larger one is a mistake or an
/// attack (a 1 GB attribute file cost 9.3 GB of memory).
pub const MAX_FILE_BYTES: usize = 4 << 20;

/// Deepest nesting of maps and lists herd reads.
pub const MAX_DEPTH: usize = 64;

/// Checks size and nesting depth of `text` before it is parsed.
pub fn check_shape(path: &Path, text: &str) -> Result<(), InputError> {
    if text.len() > MAX_FILE_BYTES {
        return Err(InputError::new(
            path,
            format!(
                "is {} bytes; herd reads YAML files of at most {} MiB",
                text.len(),
                MAX_FILE_BYTES >> 20
            ),
        ));
    }
    if let Some((line, depth)) = too_deep(text) {
        return Err(InputError::at(
            path,
            line,
            format!(
                "nesting is {depth} levels deep here; herd reads at most {MAX_DEPTH} levels of maps and lists"
            ),
        ));
    }
    Ok(())
}

/// The first line whose nesting exceeds [`MAX_DEPTH`], and its depth.
/// A scan of the text, not a parse: each new indentation level of block
/// style, each `- ` opening a list on the same line and each open flow
/// bracket counts one level. It may count a level more than YAML would
/// (never fewer than a tenth of the depth of a hostile file), which only
/// matters for files nested close to the bound.
fn too_deep(text: &str) -> Option<(usize, usize)> {
    let mut indents: Vec<usize> = vec![];
    // Inside a `|` or `>` block scalar: lines indented deeper than this
    // are text, not structure.
    let mut block_scalar: Option<usize> = None;
    let mut flow = FlowScan::default();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let indent = line.len() - line.trim_start_matches(' ').len();
        let rest = &line[indent..];
        if let Some(block) = block_scalar {
            if rest.trim().is_empty() || indent > block {
                continue;
            }
            block_scalar = None;
        }
        if flow.depth > 0 {
            flow.scan(rest);
            let depth = indents.len() + flow.max;
            if depth > MAX_DEPTH {
                return Some((number, depth));
            }
            flow.max = flow.depth;
            continue;
        }
        if rest.is_empty() || rest.starts_with('#') || rest.starts_with("---") {
            continue;
        }
        while indents.last().is_some_and(|&top| top >= indent) {
            indents.pop();
        }
        indents.push(indent);
        // `- - - x`: each dash opens a list within the line.
        let mut value = rest;
        let mut dashes = 0;
        while let Some(after) = value
            .strip_prefix("- ")
            .or_else(|| value.strip_prefix('-').filter(|a| a.is_empty()))
        {
            dashes += 1;
            value = after.trim_start_matches(' ');
        }
        // The value of `key: value`, when the line is a map entry.
        let value = match value.find(": ") {
            Some(at) if !value.starts_with(['"', '\'', '[', '{']) => value[at + 2..].trim_start(),
            _ => value,
        };
        if value.starts_with(['[', '{']) {
            flow = FlowScan::default();
            flow.scan(value);
        } else if is_block_scalar_header(value) || is_block_scalar_header(rest) {
            block_scalar = Some(indent);
        }
        let depth = indents.len() + dashes + flow.max;
        if depth > MAX_DEPTH {
            return Some((number, depth));
        }
        flow.max = flow.depth;
    }
    None
}

/// `key: |`, `key: >-`, `- |2`: the lines after it are a block of text.
fn is_block_scalar_header(value: &str) -> bool {
    let value = value.split(" #").next().unwrap_or(value).trim_end();
    let value = value.rsplit(' ').next().unwrap_or(value);
    value.starts_with(['|', '>'])
        && value[1..]
            .chars()
            .all(|c| c == '+' || c == '-' || c.is_ascii_digit())
}

/// Flow-style brackets open across lines, quotes skipped.
#[derive(Default)]
struct FlowScan {
    depth: usize,
    /// The deepest point reached in the text scanned since last reset.
    max: usize,
    quote: Option<char>,
}

impl FlowScan {
    fn scan(&mut self, text: &str) {
        let mut previous = ' ';
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            match (self.quote, c) {
                (Some('"'), '\\') => {
                    chars.next();
                }
                (Some(q), c) if c == q => self.quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => self.quote = Some(c),
                (None, '#') if previous.is_whitespace() => return,
                (None, '[' | '{') => {
                    self.depth += 1;
                    self.max = self.max.max(self.depth);
                }
                (None, ']' | '}') => self.depth = self.depth.saturating_sub(1),
                _ => {}
            }
            previous = c;
        }
    }
}

/// Parses `text` once more to find a key written twice in one map: an
/// error naming the key and both lines.
pub fn check_duplicates(path: &Path, text: &str) -> Result<(), InputError> {
    let deserializer = serde_yaml_ng::Deserializer::from_str(text);
    match Unique::deserialize(deserializer) {
        Ok(_) => Ok(()),
        Err(error) => {
            let message = error.to_string();
            let Some(key) = message
                .split_once(DUPLICATE)
                .and_then(|(_, rest)| rest.split_once('`'))
                .map(|(key, _)| key.to_string())
            else {
                // Any other problem is reported by the real parse, which
                // knows the expected types.
                return Ok(());
            };
            // serde_yaml_ng places the error at the start of the map.
            let map_start = error.location().map(|l| (l.line(), l.column()));
            let lines = map_start.map(|start| lines_of_key(text, &key, start));
            let (first, second) = match lines.as_deref() {
                Some([first, second, ..]) => (Some(*first), Some(*second)),
                _ => (None, map_start.map(|(line, _)| line)),
            };
            let mut shown = format!("key `{key}` appears twice in the same map");
            if let Some(first) = first {
                shown.push_str(&format!(" (first on line {first})"));
            }
            shown.push_str("; a key may be given once (the later one would silently win)");
            Err(InputError {
                line: second,
                ..InputError::new(path, shown)
            })
        }
    }
}

const DUPLICATE: &str = "duplicate key `";

/// The lines that write `key:` in the block map starting at `start`
/// (line, column): lines at its indentation until one is indented less.
fn lines_of_key(text: &str, key: &str, (line, column): (usize, usize)) -> Vec<usize> {
    let indent = column.saturating_sub(1);
    let mut found = vec![];
    for (index, text_line) in text.lines().enumerate().skip(line.saturating_sub(1)) {
        let trimmed = text_line.trim_start_matches(' ');
        let own = text_line.len() - trimmed.len();
        if trimmed.is_empty() || trimmed.starts_with('#') || own > indent {
            continue;
        }
        // The first line may open the map after `- ` or `key: `.
        let entry = if index + 1 == line {
            &text_line[indent.min(text_line.len())..]
        } else if own == indent {
            trimmed
        } else {
            break;
        };
        let bare = [key.to_string(), format!("\"{key}\""), format!("'{key}'")]
            .into_iter()
            .find_map(|k| entry.strip_prefix(&k).map(str::to_string));
        if bare.is_some_and(|rest| rest.trim_start().starts_with(':')) {
            found.push(index + 1);
        }
    }
    found
}

/// Any YAML value, read only to see that no map repeats a key.
struct Unique;

impl<'de> Deserialize<'de> for Unique {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Unique, D::Error> {
        deserializer.deserialize_any(UniqueVisitor)
    }
}

struct UniqueVisitor;

/// A key as text, whatever its YAML type (`1` and `"1"` count apart).
struct Key(String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Key, D::Error> {
        let value = serde_yaml_ng::Value::deserialize(deserializer)?;
        Ok(Key(match value {
            serde_yaml_ng::Value::String(s) => s,
            other => serde_yaml_ng::to_string(&other)
                .unwrap_or_default()
                .trim_end()
                .to_string(),
        }))
    }
}

impl<'de> Visitor<'de> for UniqueVisitor {
    type Value = Unique;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_str<E>(self, _: &str) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_unit<E>(self) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_none<E>(self) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Unique, D::Error> {
        Unique::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Unique, A::Error> {
        while seq.next_element::<Unique>()?.is_some() {}
        Ok(Unique)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Unique, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(Key(key)) = map.next_key::<Key>()? {
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!("{DUPLICATE}{key}`")));
            }
            map.next_value::<Unique>()?;
        }
        Ok(Unique)
    }
}

//! What a value interpolated into a unit may not do: end the line (a
//! newline in an attribute became three `ExecStartPre=` lines) or be read
//! by systemd as a specifier (`%h`). Every `{{ value }}` of a unit
//! template goes through [`escape`] (Tera's autoescape, for all unit
//! templates): `%` is doubled, which systemd reads back as one `%`, and a
//! newline, carriage return or NUL becomes a mark that [`refused_line`]
//! finds after rendering, so the unit is refused with its line rather
//! than written. `{{ value | safe }}` opts out, for a template that means
//! to write several lines or a specifier from a value.

/// What stands for a refused character in rendered text; NUL, which no
/// unit file may hold anyway.
const REFUSED: char = '\0';

/// Makes `tera` escape every interpolated value of every template.
pub fn for_units(tera: &mut tera::Tera) {
    // Every name ends with "": every template is escaped.
    tera.autoescape_on(vec![""]);
    tera.set_escape_fn(escape);
}

fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '%' => out.push_str("%%"),
            '\n' | '\r' | '\0' => out.push(REFUSED),
            c => out.push(c),
        }
    }
    out
}

/// The 1-based line of rendered text where a refused character landed.
pub fn refused_line(text: &str) -> Option<usize> {
    let at = text.find(REFUSED)?;
    Some(text[..at].matches('\n').count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_doubles_and_newlines_are_marked() {
        assert_eq!(escape("50%h"), "50%%h");
        let text = format!("a\nExec={}\n", escape("x\nExecStartPre=/bin/evil"));
        assert_eq!(refused_line(&text), Some(2));
        assert_eq!(refused_line("fine\n"), None);
    }
}

//! collector/message_templates.py render_template: a message template (Serilog CLEF's `@mt`)
//! rendered with the line's own properties, for the native documents. Values the reference
//! renders through orjson or by structure (floats, arrays, objects) leave the line to it (None).

use crate::json_tree::J;

/// collector/message_templates.py MAX_ALIGNMENT
const MAX_ALIGNMENT: i64 = 1000;

/// A hole of a template: where it ends, its property's name, its alignment and its format (with
/// its ':').
struct Hole<'t> {
    end: usize,
    name: &'t [u8],
    alignment: Option<&'t [u8]>,
    format: Option<&'t [u8]>,
}

/// The hole at `at` (a '{'), per the reference's
/// `\{([@$]?)([A-Za-z0-9_]+)(,-?[0-9]+)?(:[^{}]*)?\}`.
fn hole(t: &[u8], at: usize) -> Option<Hole<'_>> {
    let mut i = at + 1;
    if matches!(t.get(i), Some(b'@' | b'$')) {
        i += 1;
    }
    let name_start = i;
    while t
        .get(i)
        .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
    {
        i += 1;
    }
    if i == name_start {
        return None;
    }
    let name = &t[name_start..i];
    let mut alignment = None;
    if t.get(i) == Some(&b',') {
        let start = i + 1;
        let mut j = start + usize::from(t.get(start) == Some(&b'-'));
        let digits = j;
        while t.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        if j == digits {
            return None;
        }
        alignment = Some(&t[start..j]);
        i = j;
    }
    let mut format = None;
    if t.get(i) == Some(&b':') {
        let start = i;
        i += 1;
        while t.get(i).is_some_and(|c| *c != b'{' && *c != b'}') {
            i += 1;
        }
        format = Some(&t[start..i]);
    }
    (t.get(i) == Some(&b'}')).then_some(Hole {
        end: i + 1,
        name,
        alignment,
        format,
    })
}

/// A string atom's value (its JSON text with quotes and escapes).
fn string_value(raw: &str) -> Option<String> {
    serde_json::from_str::<String>(raw).ok()
}

/// message_templates._render, for the values rendered the same way here; None otherwise.
fn render_value(value: &J, literal: bool) -> Option<String> {
    let J::Atom(raw) = value else {
        return None; // arrays and objects: the reference's
    };
    Some(match *raw {
        "null" => "null".to_owned(),
        "true" => "True".to_owned(),
        "false" => "False".to_owned(),
        s if s.starts_with('"') => {
            let text = string_value(s)?;
            if literal {
                text
            } else {
                format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
            }
        }
        // an integer as orjson writes it again; floats, -0 and long ones are the reference's
        s if s.len() <= 18
            && s != "-0"
            && s.trim_start_matches('-')
                .bytes()
                .all(|c| c.is_ascii_digit()) =>
        {
            s.to_owned()
        }
        _ => return None,
    })
}

fn align(text: String, alignment: Option<&[u8]>) -> String {
    let Some(alignment) = alignment else {
        return text;
    };
    let (negative, digits) = match alignment.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, alignment),
    };
    // int() of any length, bounded: saturate past the bound
    let width = digits.iter().try_fold(0i64, |n, d| {
        let n = n * 10 + i64::from(d - b'0');
        (n <= MAX_ALIGNMENT).then_some(n)
    });
    let width = width.unwrap_or(MAX_ALIGNMENT) as usize;
    let chars = text.chars().count();
    if chars >= width {
        return text;
    }
    let pad = " ".repeat(width - chars);
    if negative {
        text + &pad
    } else {
        pad + &text
    }
}

/// render_template(template, properties) of the reference, or None when a value is one it
/// renders differently (left to it).
pub(crate) fn render(template: &str, properties: &J) -> Option<String> {
    let t = template.as_bytes();
    let renderings: &[J] = match properties.get("@r") {
        Some(J::Arr(items)) => items,
        _ => &[],
    };
    let mut formatted = renderings.iter();
    let mut out = String::with_capacity(template.len() + 16);
    let mut at = 0;
    let mut copied = 0; // template[copied..at] is literal text not yet copied
    while at < t.len() {
        let c = t[at];
        if (c == b'{' || c == b'}') && t.get(at + 1) == Some(&c) {
            out.push_str(&template[copied..at + 1]);
            at += 2;
            copied = at;
            continue;
        }
        let found = if c == b'{' { hole(t, at) } else { None };
        let Some(Hole {
            end,
            name,
            alignment,
            format,
        }) = found
        else {
            at += 1;
            continue;
        };
        out.push_str(&template[copied..at]);
        let rendering = if format.is_some() {
            formatted.next()
        } else {
            None
        };
        // the name and the rendering are ASCII or JSON text: valid UTF-8
        let name = std::str::from_utf8(name).ok()?;
        let text = match rendering {
            Some(J::Atom(raw)) if raw.starts_with('"') => Some(string_value(raw)?),
            _ => match properties.get(name) {
                Some(value) => Some(render_value(value, format == Some(b":l"))?),
                None => None,
            },
        };
        match text {
            Some(text) => out.push_str(&align(text, alignment)),
            None => out.push_str(&template[at..end]),
        }
        at = end;
        copied = at;
    }
    out.push_str(&template[copied..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json_tree::parse_object;

    fn rendered(template: &str, line: &str) -> Option<String> {
        render(template, &J::Obj(parse_object(line).unwrap()))
    }

    #[test]
    fn holes_take_the_properties_as_serilog_renders_them() {
        // @r: the renderings of the holes with a format, in order
        let line = r#"{"Id":42,"User":"ann \"a\"","On":true,"None":null,"@r":["ann","3.14"]}"#;
        assert_eq!(
            rendered("{Id} {User} {User:l} {On} {None} {Pi:0.00} {Gone}", line).as_deref(),
            Some(r#"42 "ann \"a\"" ann True null 3.14 {Gone}"#)
        );
        // without @r, a literal string is its text
        assert_eq!(
            rendered("{User:l}", r#"{"User":"ann"}"#).as_deref(),
            Some("ann")
        );
        assert_eq!(
            rendered("{{x}} {@Id,4}|{$Id,-4}|", line).as_deref(),
            Some("{x}   42|42  |")
        );
        assert_eq!(
            rendered("{Id,} {,1} {}", line).as_deref(),
            Some("{Id,} {,1} {}")
        );
    }

    #[test]
    fn values_the_reference_renders_otherwise_are_left_to_it() {
        assert_eq!(rendered("{X}", r#"{"X":1.5}"#), None);
        assert_eq!(rendered("{X}", r#"{"X":[1]}"#), None);
        assert_eq!(rendered("{X}", r#"{"X":{"a":1}}"#), None);
        assert_eq!(
            rendered("no holes", r#"{"X":{"a":1}}"#).as_deref(),
            Some("no holes")
        );
    }

    #[test]
    fn alignment_is_bounded() {
        let text = rendered("{X,99999999999999999999}", r#"{"X":1}"#).unwrap();
        assert_eq!(text.len(), MAX_ALIGNMENT as usize);
    }
}

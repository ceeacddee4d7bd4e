//! JSON log lines as the collector reads them: parsed into a tree that keeps each scalar's
//! original text (copied verbatim, so no number is re-formatted) and resolves repeated keys like
//! a Python dict (first position, last value: Elasticsearch refuses a document with a repeated
//! key). Stricter than orjson where copying the text would not give orjson's value: integers
//! beyond 64 bits (orjson makes them floats) are refused, and so the reference takes the line.
//!
//! Not json_scan: that one keeps a handful of values and skips the rest; this one keeps the
//! whole line, as text, to write it back into the document.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::constants::DOCUMENT_JSON_MAX_DEPTH;

pub(crate) enum J<'a> {
    Atom(&'a str), // a string (with its quotes), number, true, false or null, as written
    Obj(Vec<(Key<'a>, J<'a>)>),
    Arr(Vec<J<'a>>),
}

pub(crate) struct Key<'a> {
    pub(crate) raw: &'a str, // with its quotes and escapes
    pub(crate) name: Cow<'a, str>,
}

impl<'a> J<'a> {
    pub(crate) fn is_container(&self) -> bool {
        !matches!(self, J::Atom(_))
    }
    pub(crate) fn get(&self, name: &str) -> Option<&J<'a>> {
        match self {
            J::Obj(items) => items.iter().find(|(k, _)| k.name == name).map(|(_, v)| v),
            J::Arr(items) => crate::json_value::array_index(name).and_then(|i| items.get(i)),
            _ => None,
        }
    }
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        match self {
            J::Atom(raw) => out.extend_from_slice(raw.as_bytes()),
            J::Obj(items) => {
                out.push(b'{');
                for (i, (k, v)) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(k.raw.as_bytes());
                    out.push(b':');
                    v.write(out);
                }
                out.push(b'}');
            }
            J::Arr(values) => {
                out.push(b'[');
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    v.write(out);
                }
                out.push(b']');
            }
        }
    }
}

/// Objects with more keys than this find repeated keys through a hash map, not a scan.
pub(crate) const INDEX_FROM: usize = 16;

struct Parser<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn value(&mut self) -> Option<J<'a>> {
        self.ws();
        match *self.b.get(self.i)? {
            b'{' => self.object(),
            b'[' => self.array(),
            b'"' => Some(J::Atom(self.string(false)?.0)),
            b't' => self.literal("true"),
            b'f' => self.literal("false"),
            b'n' => self.literal("null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn enter(&mut self) -> Option<()> {
        self.i += 1;
        self.depth += 1;
        (self.depth <= DOCUMENT_JSON_MAX_DEPTH).then_some(())
    }

    fn object(&mut self) -> Option<J<'a>> {
        self.enter()?;
        let mut items: Vec<(Key<'a>, J<'a>)> = Vec::new();
        let mut index: HashMap<Cow<'a, str>, usize, ahash::RandomState> = HashMap::default();
        self.ws();
        if self.b.get(self.i) == Some(&b'}') {
            self.i += 1;
            self.depth -= 1;
            return Some(J::Obj(items));
        }
        loop {
            self.ws();
            if self.b.get(self.i) != Some(&b'"') {
                return None;
            }
            let (raw, name) = self.string(true)?;
            self.ws();
            if self.b.get(self.i) != Some(&b':') {
                return None;
            }
            self.i += 1;
            let value = self.value()?;
            let existing = if items.len() < INDEX_FROM {
                items.iter().position(|(k, _)| k.name == name)
            } else {
                if index.is_empty() {
                    index.extend(
                        items
                            .iter()
                            .enumerate()
                            .map(|(i, (k, _))| (k.name.clone(), i)),
                    );
                }
                index.get(&name).copied()
            };
            match existing {
                Some(i) => items[i].1 = value,
                None => {
                    if !index.is_empty() {
                        index.insert(name.clone(), items.len());
                    }
                    items.push((Key { raw, name }, value));
                }
            }
            self.ws();
            match *self.b.get(self.i)? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    break;
                }
                _ => return None,
            }
        }
        self.depth -= 1;
        Some(J::Obj(items))
    }

    fn array(&mut self) -> Option<J<'a>> {
        self.enter()?;
        let mut values = Vec::new();
        self.ws();
        if self.b.get(self.i) == Some(&b']') {
            self.i += 1;
            self.depth -= 1;
            return Some(J::Arr(values));
        }
        loop {
            values.push(self.value()?);
            self.ws();
            match *self.b.get(self.i)? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    break;
                }
                _ => return None,
            }
        }
        self.depth -= 1;
        Some(J::Arr(values))
    }

    fn literal(&mut self, word: &str) -> Option<J<'a>> {
        let raw = self.s.get(self.i..self.i + word.len())?;
        if raw != word {
            return None;
        }
        self.i += word.len();
        Some(J::Atom(raw))
    }

    /// -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?, as a value orjson gives back unchanged:
    /// an integer within i64/u64, or a finite double.
    fn number(&mut self) -> Option<J<'a>> {
        let start = self.i;
        let digits = |p: &mut Self| {
            let from = p.i;
            while p.b.get(p.i).is_some_and(u8::is_ascii_digit) {
                p.i += 1;
            }
            p.i > from
        };
        if self.b[self.i] == b'-' {
            self.i += 1;
        }
        match self.b.get(self.i)? {
            b'0' => self.i += 1,
            b'1'..=b'9' => {
                digits(self);
            }
            _ => return None,
        }
        let mut float = false;
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            float = true;
            if !digits(self) {
                return None;
            }
        }
        if let Some(b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
            float = true;
            if let Some(b'+' | b'-') = self.b.get(self.i) {
                self.i += 1;
            }
            if !digits(self) {
                return None;
            }
        }
        let raw = &self.s[start..self.i];
        let ok = if float {
            raw.parse::<f64>().is_ok_and(f64::is_finite)
        } else {
            raw.parse::<i64>().is_ok() || raw.parse::<u64>().is_ok()
        };
        ok.then_some(J::Atom(raw))
    }

    /// A string at self.i: (its text with quotes, its value when `decode`, else "").
    /// orjson's rules: no raw control characters, known escapes only, no lone surrogates.
    fn string(&mut self, decode: bool) -> Option<(&'a str, Cow<'a, str>)> {
        let start = self.i;
        self.i += 1;
        let mut escaped = false;
        loop {
            let c = *self.b.get(self.i)?;
            match c {
                b'"' => break,
                0..=0x1f => return None,
                b'\\' => {
                    escaped = true;
                    match *self.b.get(self.i + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 2,
                        b'u' => {
                            let cp = self.hex4(self.i + 2)?;
                            self.i += 6;
                            if (0xDC00..0xE000).contains(&cp) {
                                return None;
                            }
                            if (0xD800..0xDC00).contains(&cp) {
                                if self.b.get(self.i..self.i + 2) != Some(b"\\u") {
                                    return None;
                                }
                                let low = self.hex4(self.i + 2)?;
                                if !(0xDC00..0xE000).contains(&low) {
                                    return None;
                                }
                                self.i += 6;
                            }
                        }
                        _ => return None,
                    }
                }
                _ => self.i += 1,
            }
        }
        self.i += 1;
        let raw = &self.s[start..self.i];
        let name = if !decode {
            Cow::Borrowed("")
        } else if escaped {
            Cow::Owned(serde_json::from_str::<String>(raw).ok()?)
        } else {
            Cow::Borrowed(&raw[1..raw.len() - 1])
        };
        Some((raw, name))
    }

    fn hex4(&self, at: usize) -> Option<u32> {
        let digits = self.s.get(at..at + 4)?;
        if !digits.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(digits, 16).ok()
    }
}

/// The line's top-level object; None when it is not JSON, or not an object: the reference's.
pub(crate) fn parse_object(line: &str) -> Option<Vec<(Key<'_>, J<'_>)>> {
    let mut p = Parser {
        s: line,
        b: line.as_bytes(),
        i: 0,
        depth: 0,
    };
    let value = p.value()?;
    p.ws();
    match value {
        J::Obj(items) if p.i == line.len() => Some(items),
        _ => None, // not JSON, or not an object: the reference's
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(line: &str) -> Option<String> {
        let mut out = Vec::new();
        J::Obj(parse_object(line)?).write(&mut out);
        Some(String::from_utf8(out).unwrap())
    }

    #[test]
    fn scalars_keep_their_text_and_whitespace_goes() {
        assert_eq!(
            written(r#" { "a" : 1.50e3 , "b\u0041" : [ true , null , "x\n" ] } "#).as_deref(),
            Some(r#"{"a":1.50e3,"b\u0041":[true,null,"x\n"]}"#)
        );
    }

    #[test]
    fn repeated_keys_keep_their_first_position_and_last_value() {
        assert_eq!(
            written(r#"{"a":1,"b":2,"a":3}"#).as_deref(),
            Some(r#"{"a":3,"b":2}"#)
        );
        // an escaped spelling is the same key
        assert_eq!(
            written(r#"{"a":1,"\u0061":2}"#).as_deref(),
            Some(r#"{"a":2}"#)
        );
        // past INDEX_FROM keys, through the index
        let many: Vec<String> = (0..40).map(|i| format!("\"k{i}\":{i}")).collect();
        let line = format!("{{{},\"k3\":\"again\"}}", many.join(","));
        let out = written(&line).unwrap();
        assert!(out.contains(r#","k3":"again","k4":4,"#) && out.matches("\"k3\":").count() == 1);
    }

    #[test]
    fn refuses_what_copying_the_text_would_get_wrong() {
        for line in [
            r#"{"big":18446744073709551616}"#, // orjson makes it a float
            r#"{"inf":1e400}"#,
            r#"{"s":"\ud800"}"#,
            r#"{"a":1,}"#,
            r#"[1]"#,
            r#"{"a":1}x"#,
        ] {
            assert!(written(line).is_none(), "{line}");
        }
        assert!(written(r#"{"small":-9223372036854775808,"u":18446744073709551615}"#).is_some());
    }

    #[test]
    fn get_and_is_container() {
        let record = J::Obj(parse_object(r#"{"a":{"b":[1]},"c":"d"}"#).unwrap());
        let a = record.get("a").unwrap();
        assert!(a.is_container() && a.get("b").unwrap().is_container());
        assert!(!record.get("c").unwrap().is_container() && record.get("z").is_none());
    }

    #[test]
    fn nesting_stops_at_the_document_limit() {
        let nested = |levels: usize| format!("{}1{}", "{\"a\":".repeat(levels), "}".repeat(levels));
        assert!(written(&nested(DOCUMENT_JSON_MAX_DEPTH)).is_some());
        assert!(written(&nested(DOCUMENT_JSON_MAX_DEPTH + 1)).is_none());
    }
}

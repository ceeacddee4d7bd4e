//! Writing JSON text straight into a document's bytes: strings escaped as orjson escapes them,
//! and decimal integers.

/// `s` as a JSON string: `"`, `\\`, \n, \r, \t escaped by name, the other control characters as
/// \uXXXX (orjson names \b and \f: the same string), everything else (non-ASCII included) as is.
pub(crate) fn json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let b = s.as_bytes();
    let mut from = 0;
    for (i, &c) in b.iter().enumerate() {
        let escaped: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&b[from..i]);
        if escaped.is_empty() {
            out.extend_from_slice(format!("\\u{c:04x}").as_bytes());
        } else {
            out.extend_from_slice(escaped);
        }
        from = i + 1;
    }
    out.extend_from_slice(&b[from..]);
    out.push(b'"');
}

/// `value` in decimal, zero-padded to `width` (format! showed in the time to build a document).
pub(crate) fn digits(out: &mut Vec<u8>, mut value: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let mut i = buf.len();
    while value > 0 || i == buf.len() {
        i -= 1;
        buf[i] = b'0' + (value % 10) as u8;
        value /= 10;
    }
    let start = i.min(buf.len() - width.min(buf.len()));
    out.extend_from_slice(&buf[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(s: &str) -> String {
        let mut out = Vec::new();
        json_str(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strings_escape_quotes_backslashes_and_control_characters_only() {
        assert_eq!(json("plain"), r#""plain""#);
        assert_eq!(json("a\"b\\c\nd\re\tf"), r#""a\"b\\c\nd\re\tf""#);
        assert_eq!(json("\u{1}\u{8}\u{1f}"), r#""\u0001\u0008\u001f""#);
        assert_eq!(
            json("\u{7f}caf\u{e9} \u{1f600}"),
            "\"\u{7f}caf\u{e9} \u{1f600}\""
        );
        // what it writes is the JSON of the string
        let s = "x\u{0}\"\\\u{c}y";
        assert_eq!(serde_json::from_str::<String>(&json(s)).unwrap(), s);
    }

    #[test]
    fn digits_pad_to_the_width_and_never_cut() {
        let text = |value, width| {
            let mut out = Vec::new();
            digits(&mut out, value, width);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(text(0, 1), "0");
        assert_eq!(text(7, 2), "07");
        assert_eq!(text(123, 9), "000000123");
        assert_eq!(text(12345, 2), "12345");
        assert_eq!(text(u64::MAX, 1), "18446744073709551615");
    }
}

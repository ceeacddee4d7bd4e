//! json_scan's unit tests (a file of their own: the scanner alone is ~560 lines).

use super::*;

const KEYS: [&str; 3] = ["level", "trace_id", "service"];

/// (mask, kept values) of a line, or None when it is refused.
fn scan(line: &str) -> Option<(Mask, String)> {
    let keys = Keys::new(
        KEYS.iter()
            .enumerate()
            .map(|(i, k)| (k.to_string(), i as u8))
            .collect(),
    );
    let mut found = Found::new();
    let mask = parse_line(line, &keys, &mut found)?;
    Some((mask, format!("{:?}", found.as_slice())))
}

#[test]
fn keeps_the_values_of_alias_keys_only() {
    let (mask, found) =
        scan(r#"{"msg":"x","level":"info","n":[1,{"a":2}],"service":{"name":"s"}}"#).unwrap();
    assert_eq!(mask, 0b101);
    assert_eq!(found, r#"[(0, S("info")), (2, Obj([("name", S("s"))]))]"#);
}

#[test]
fn numbers_keep_their_kinds_and_escaped_keys_are_decoded() {
    let (mask, found) =
        scan(r#"{"lev\u0065l":-0,"trace_id":1.5,"service":18446744073709551615}"#).unwrap();
    assert_eq!(mask, 0b111);
    // -0 is the integer 0, as orjson reads it
    assert_eq!(
        found,
        "[(0, I(0)), (1, F(1.5)), (2, U(18446744073709551615))]"
    );
}

#[test]
fn refuses_what_orjson_refuses_even_in_skipped_values() {
    for line in [
        r#"{"level":"info",}"#,
        r#"{"x":1e400}"#,
        r#"{"x":"\ud800"}"#,
        r#"{"x":01}"#,
        "{\"x\":\"\u{1}\"}",
        r#"{"x":1} x"#,
        r#"["not", "an object"]"#,
        "",
    ] {
        assert_eq!(scan(line), None, "{line}");
    }
    assert!(scan(" {\"x\" : [ ] } \r\t").is_some());
}

#[test]
fn nesting_stops_at_orjsons_limit() {
    let nested = |levels: usize| {
        format!(
            "{{\"x\":{}1{}}}",
            "[".repeat(levels - 1),
            "]".repeat(levels - 1)
        )
    };
    assert!(scan(&nested(ORJSON_MAX_DEPTH)).is_some());
    assert_eq!(scan(&nested(ORJSON_MAX_DEPTH + 1)), None);
}

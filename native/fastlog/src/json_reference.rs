//! The former line parser, whole-line serde_json plus post-checks for orjson's rules where
//! serde_json differs (nesting up to 1024, not 128; lone UTF-16 surrogate escapes are errors even
//! in skipped strings). Kept only as the reference json_scan::parse_line is checked against
//! (`cargo test --features reference`): both must refuse the same lines and keep the same values.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use smallvec::SmallVec;

use crate::alias_keys::Keys;
use crate::constants::ORJSON_MAX_DEPTH;
use crate::hex::HEX;
use crate::json_scan;
use crate::json_value::{Found, KeySeed, Skip, ValSeed, V};

/// Top-level keys kept: (slot, value); everything else is skipped (still validated).
struct TopVisitor<'k> {
    keys: &'k HashMap<String, u8, ahash::RandomState>,
}
impl<'de, 'k> Visitor<'de> for TopVisitor<'k> {
    type Value = (Found<'de>, crate::field_mapping::Mask);
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found: Found<'de> = SmallVec::new();
        let mut mask = 0 as crate::field_mapping::Mask;
        while let Some(k) = map.next_key_seed(KeySeed)? {
            match self.keys.get(k.as_ref()) {
                Some(&slot) => {
                    let v = map.next_value_seed(ValSeed)?;
                    found.push((slot, v));
                    mask |= 1 << slot;
                }
                None => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok((found, mask))
    }
}

fn parse_line_serde<'a>(
    text: &'a str,
    keys: &HashMap<String, u8, ahash::RandomState>,
) -> Option<(Found<'a>, crate::field_mapping::Mask)> {
    let mut de = serde_json::Deserializer::from_str(text);
    let r = de
        .deserialize_map(TopVisitor { keys })
        .and_then(|r| de.end().map(|_| r));
    let r = match r {
        Ok(v) => v,
        Err(e) if e.to_string().starts_with("recursion limit exceeded") => {
            if max_depth(text.as_bytes()) > ORJSON_MAX_DEPTH {
                return None;
            }
            let mut de = serde_json::Deserializer::from_str(text);
            de.disable_recursion_limit();
            de.deserialize_map(TopVisitor { keys })
                .and_then(|r| de.end().map(|_| r))
                .ok()?
        }
        Err(_) => return None,
    };
    // serde_json skips ignored values without a depth limit; valid JSON nested deeper than 1024
    // needs at least 2 * 1025 bytes
    if text.len() >= 2 * (ORJSON_MAX_DEPTH + 1) && max_depth(text.as_bytes()) > ORJSON_MAX_DEPTH {
        return None;
    }
    if memchr::memmem::find(text.as_bytes(), b"\\u").is_some()
        && has_lone_surrogate(text.as_bytes())
    {
        return None;
    }
    Some(r)
}

fn max_depth(b: &[u8]) -> usize {
    let (mut depth, mut max, mut in_str, mut esc) = (0usize, 0usize, false, false);
    for &c in b {
        if in_str {
            if esc {
                esc = false;
            } else if c == b'\\' {
                esc = true;
            } else if c == b'"' {
                in_str = false;
            }
            continue;
        }
        match c {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// In valid JSON every backslash is inside a string, so escapes can be read without tracking
/// string boundaries.
fn has_lone_surrogate(b: &[u8]) -> bool {
    let hex4 = |s: &[u8]| -> Option<u32> {
        if s.len() < 4 {
            return None;
        }
        let mut v = 0u32;
        for &c in &s[..4] {
            let d = HEX[c as usize];
            if d == 0xff {
                return None;
            }
            v = v * 16 + d as u32;
        }
        Some(v)
    };
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            i += 1;
            continue;
        }
        if i + 1 < b.len() && b[i + 1] == b'u' {
            let Some(cp) = hex4(&b[i + 2..]) else {
                return true;
            };
            i += 6;
            if (0xDC00..0xE000).contains(&cp) {
                return true; // a low surrogate first
            }
            if (0xD800..0xDC00).contains(&cp) {
                if i + 1 < b.len() && b[i] == b'\\' && b[i + 1] == b'u' {
                    match hex4(&b[i + 2..]) {
                        Some(lo) if (0xDC00..0xE000).contains(&lo) => i += 6,
                        _ => return true,
                    }
                } else {
                    return true;
                }
            }
        } else {
            i += 2;
        }
    }
    false
}

/// json_scan::parse_line against the reference on one line, with `keys` as the alias keys
/// (slot = position). None when they agree (same refusal, or the same slots and values, strings
/// borrowed alike), else both results.
pub(crate) fn difference(text: &str, keys: &[String]) -> Option<String> {
    assert!(keys.len() <= 64, "at most 64 keys");
    let keys: HashMap<String, u8, ahash::RandomState> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.clone(), i as u8))
        .collect();
    let mut found = Found::new();
    let new =
        json_scan::parse_line(text, &Keys::new(keys.clone()), &mut found).map(|mask| (found, mask));
    let old = parse_line_serde(text, &keys);
    let agree = match (&new, &old) {
        (None, None) => true,
        (Some((f1, m1)), Some((f2, m2))) => {
            m1 == m2
                && f1.len() == f2.len()
                && f1
                    .iter()
                    .zip(f2)
                    .all(|((s1, v1), (s2, v2))| s1 == s2 && same_v(v1, v2))
        }
        _ => false,
    };
    (!agree).then(|| format!("scanner: {new:?}\nserde_json: {old:?}"))
}

#[allow(clippy::ptr_arg)] // the Cow itself is compared: borrowed or owned
fn same_cow(a: &Cow<str>, b: &Cow<str>) -> bool {
    a == b && matches!(a, Cow::Borrowed(_)) == matches!(b, Cow::Borrowed(_))
}

fn same_v(new: &V, old: &V) -> bool {
    match (new, old) {
        (V::Null, V::Null) => true,
        (V::Arr(a), V::Arr(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_v(x, y)),
        (V::Bool(a), V::Bool(b)) => a == b,
        (V::I(a), V::I(b)) => a == b,
        (V::U(a), V::U(b)) => a == b,
        (V::F(a), V::F(b)) => a.to_bits() == b.to_bits(),
        // the one intended difference: the integer -0 (orjson: 0; serde_json: -0.0)
        (V::I(0), V::F(b)) => b.to_bits() == (-0.0f64).to_bits(),
        (V::S(a), V::S(b)) => same_cow(a, b),
        (V::Obj(a), V::Obj(b)) => {
            a.len() == b.len()
                && a.iter()
                    .zip(b)
                    .all(|((ka, va), (kb, vb))| same_cow(ka, kb) && same_v(va, vb))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json_line_gen::Generator;

    /// The keys the scanner keeps with the default mapping (schemas/log_fields.yaml): every alias
    /// name of the routing roles and the root of each dotted one.
    fn kept_keys() -> Vec<String> {
        let yaml = include_str!("../../../schemas/log_fields.yaml");
        let mut names: Vec<String> = Vec::new();
        // the roles' lists, inline (`role: [a, b]`) or one `- name` per line; the level-implying
        // keys (implied_level.when_any_of) too
        for role in [
            "timestamp",
            "level",
            "trace_id",
            "span_id",
            "service",
            "  when_any_of",
        ] {
            let mut lines = yaml
                .lines()
                .skip_while(|l| !l.starts_with(&format!("{role}:")));
            let line = lines.next().expect(role);
            let unquote = |n: &str| n.trim().trim_matches('"').to_string();
            match line.split_once('[') {
                Some((_, list)) => {
                    names.extend(list.split_once(']').unwrap().0.split(',').map(unquote))
                }
                None => names.extend(
                    lines
                        .map_while(|l| l.trim_start().strip_prefix("- "))
                        .map(|item| unquote(item.split_once(" #").map_or(item, |p| p.0))),
                ),
            }
        }
        let roots: Vec<String> = names
            .iter()
            .filter_map(|n| n.split_once('.').map(|p| p.0.to_string()))
            .collect();
        let mut kept: Vec<String> = Vec::new();
        for name in names.into_iter().chain(roots) {
            if !kept.contains(&name) {
                kept.push(name);
            }
        }
        kept
    }

    fn assert_agree(lines: &[Vec<u8>], keys: &[String]) {
        // Kept arrays and objects nest up to orjson's 255 levels, each level a recursive call of
        // both parsers: more than a test thread's stack in a debug build.
        let (lines, keys) = (lines.to_vec(), keys.to_vec());
        std::thread::Builder::new()
            .stack_size(256 << 20)
            .spawn(move || {
                for line in &lines {
                    let text = String::from_utf8_lossy(line);
                    if let Some(difference) = difference(&text, &keys) {
                        panic!("{:?}\n{difference}", &text[..text.len().min(300)]);
                    }
                }
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn the_default_mapping_keeps_these_keys() {
        let keys = kept_keys();
        assert_eq!(keys.len(), 63);
        assert_eq!(&keys[..3], ["@timestamp", "timestamp", "ts"]);
        assert!(keys.contains(&"log".to_string()) && keys.contains(&"span".to_string()));
    }

    /// Finer than the encoded bytes the Python tests compare: the kept values themselves
    /// (integer / float kinds, strings borrowed or decoded, nested objects) equal the serde_json
    /// parser's, and both refuse the same lines (the one intended difference, -0 as the integer
    /// 0, is allowed for).
    #[test]
    fn generated_lines_agree_with_the_serde_json_parser() {
        let keys = kept_keys();
        for seed in 0..4 {
            assert_agree(&Generator::new(100 + seed, &keys).lines(2500), &keys);
        }
    }

    #[test]
    fn edge_lines_agree_with_the_serde_json_parser() {
        let edge = include_bytes!("../../../tests/data/edge_lines.jsonl");
        let lines: Vec<Vec<u8>> = edge
            .split(|&c| c == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        assert!(lines.len() > 20);
        assert_agree(&lines, &kept_keys());
    }

    /// The differential test is only as good as its lines: each kind of refusal and every kind
    /// of kept value must occur, accepted and refused.
    #[test]
    fn the_generator_covers_refusals_and_kept_values() {
        let keys = kept_keys();
        let lines = Generator::new(0, &keys).lines(2500);
        let text = lines.join(&b"\n"[..]);
        for needle in [
            &b"\\ud800"[..],
            b"1e400",
            b"\x01",
            b"\\u12G4",
            b"01",
            b"NaN",
            b"\x0c",
            b"\\u0065",
            b"[[[[",
        ] {
            assert!(
                memchr::memmem::find(&text, needle).is_some(),
                "{:?}",
                String::from_utf8_lossy(needle)
            );
        }
        let index: HashMap<String, u8, ahash::RandomState> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.clone(), i as u8))
            .collect();
        let (mut accepted, mut refused, mut kept) = (0, 0, [0usize; 8]);
        let texts: Vec<String> = lines
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        for text in &texts {
            match parse_line_serde(text, &index) {
                None => refused += 1,
                Some((found, _)) => {
                    accepted += 1;
                    for (_, v) in &found {
                        kept[match v {
                            V::Null => 0,
                            V::Bool(_) => 1,
                            V::I(_) => 2,
                            V::U(_) => 3,
                            V::F(_) => 4,
                            V::S(Cow::Borrowed(_)) => 5,
                            V::S(Cow::Owned(_)) => 6,
                            V::Obj(_) | V::Arr(_) => 7,
                        }] += 1;
                    }
                }
            }
        }
        assert!(
            accepted > 500 && refused > 500,
            "{accepted} accepted, {refused} refused"
        );
        assert!(kept.iter().all(|&n| n > 10), "{kept:?}");
    }

    /// The scanner finds alias keys by length, first and last eight bytes, then compares: keys
    /// that agree on those (or on a prefix, or differ by one byte or in case), keys at the very
    /// end of a line and keys that need decoding are kept exactly when they are alias keys.
    #[test]
    fn key_lookup_tells_lookalike_keys_apart() {
        let keys: Vec<String> = [
            "attributes.x.trace_id", // the same length, first and last eight bytes...
            "attributes.y.trace_id", // ...as this one: the scanner must compare them all
            "resource.one.service",  // its look-alike below is not a key
            "abcdefgh12345678",
            "abcdefgh12345679",
            "abcdefgh",
            "abcdefg",
            "a",
            "",
            "caf\u{e9}",
            &"x".repeat(40),
        ]
        .iter()
        .map(|k| k.to_string())
        .collect();
        let others: Vec<String> = [
            "attributes.z.trace_id",
            "attributes.x.trace_iD",
            "attributes.x.trace_idd",
            "resource.two.service",
            "abcdefgh1234567",
            "abcdefgh123456789",
            "abcdefgi",
            "Abcdefgh",
            "abcdef",
            "b",
            "A",
            "cafe",
            &"x".repeat(39),
            &"x".repeat(41),
            &format!("y{}", "x".repeat(39)),
        ]
        .iter()
        .map(|k| k.to_string())
        .collect();
        let mut lines = Vec::new();
        for name in keys.iter().chain(&others) {
            for spelled in [name.clone(), name.replace('a', "\\u0061")] {
                lines.push(format!("{{\"{spelled}\":\"v\"}}")); // the key near the end of the line
                lines.push(format!(
                    "{{\"{spelled}\":1,\"message\":\"{}\"}}",
                    "m".repeat(30)
                ));
                lines.push(format!(
                    "{{ \"level\":\"info\", \"{spelled}\" : {{\"{spelled}\":[1]}} }}"
                ));
            }
        }
        for line in &lines {
            assert_eq!(difference(line, &keys), None, "{line}");
        }
        // and the test can fail: a key the scanner keeps but the reference would not
        let mut found = Found::new();
        let only = Keys::new([("a".to_string(), 0u8)].into_iter().collect());
        assert_eq!(
            json_scan::parse_line("{\"a\":1}", &only, &mut found),
            Some(1)
        );
    }
}

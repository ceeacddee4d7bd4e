//! Timestamps: the forms agent/parse.py::parse_timestamp reads (epoch seconds / ms / us / ns as
//! numbers or digit strings, ISO 8601) -> Unix nanoseconds, and the collector's RFC 3339 text
//! of a nanosecond timestamp (collector/documents.py::iso_timestamp).

use crate::json_value::V;
use crate::json_write::digits;

const MAX_NS: i128 = u64::MAX as i128;

fn in_range(ns: i128) -> u64 {
    if (0..=MAX_NS).contains(&ns) {
        ns as u64
    } else {
        0
    }
}

fn epoch_int(v: i128) -> u64 {
    let m = v.unsigned_abs();
    let ns = if m < 100_000_000_000 {
        v.checked_mul(1_000_000_000)
    } else if m < 100_000_000_000_000 {
        v.checked_mul(1_000_000)
    } else if m < 100_000_000_000_000_000 {
        v.checked_mul(1_000)
    } else {
        Some(v)
    };
    ns.map_or(0, in_range)
}

fn float_to_ns(x: f64) -> u64 {
    let t = x.trunc();
    if !(0.0..18446744073709551616.0).contains(&t) {
        0
    } else {
        t as u64
    }
}

fn epoch_float(v: f64) -> u64 {
    let m = v.abs();
    if m.is_nan() || m.is_infinite() {
        return 0;
    }
    if m < 1e11 {
        float_to_ns(v * 1_000_000_000.0)
    } else if m < 1e14 {
        float_to_ns(v * 1_000_000.0)
    } else if m < 1e17 {
        float_to_ns(v * 1_000.0)
    } else {
        float_to_ns(v)
    }
}

/// Python str.isspace for the characters str.strip() removes.
fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

/// A timestamp's nanoseconds (0: none or out of range), or Fallback: forms whose exact
/// semantics are Python's (agent.parse.parse_timestamp decides).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ts {
    Ns(u64),
    Fallback, // let the Python reference decide (rare, exotic forms)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn num(b: &[u8]) -> Option<i64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0i64, |a, &c| a * 10 + (c - b'0') as i64))
}

pub(crate) fn parse_ts_str(raw: &str) -> Ts {
    let text = raw.trim_matches(py_space);
    if !text.is_ascii() {
        return Ts::Fallback; // non-ASCII digits etc.: Python's rules
    }
    let b = text.as_bytes();
    // text.replace(".", "", 1).isdigit()
    let dot = b.iter().position(|&c| c == b'.');
    let digits_only = {
        let mut n = 0;
        let mut ok = true;
        for (i, c) in b.iter().enumerate() {
            if Some(i) == dot {
                continue;
            }
            n += 1;
            if !c.is_ascii_digit() {
                ok = false;
                break;
            }
        }
        ok && n > 0
    };
    if digits_only {
        if dot.is_some() {
            return match text.parse::<f64>() {
                Ok(f) => Ts::Ns(epoch_float(f)),
                Err(_) => Ts::Fallback,
            };
        }
        let t = text.trim_start_matches('0');
        if t.len() > 30 {
            return Ts::Ns(0); // astronomically large: out of range
        }
        return Ts::Ns(epoch_int(t.parse::<i128>().unwrap_or(0)));
    }
    // ISO 8601: YYYY-MM-DD[(T| )HH:MM[:SS[(.|,)frac]]][Z|(+|-)HH:MM]; anything else -> fallback
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return if b.len() >= 4 && b[..4].iter().all(u8::is_ascii_digit) {
            Ts::Fallback
        } else {
            Ts::Ns(0)
        };
    }
    let (Some(y), Some(mo), Some(d)) = (num(&b[0..4]), num(&b[5..7]), num(&b[8..10])) else {
        return Ts::Fallback;
    };
    if y < 1 || !(1..=12).contains(&mo) || d < 1 {
        return Ts::Fallback;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let mdays = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ][(mo - 1) as usize];
    if d > mdays {
        return Ts::Fallback;
    }
    let days = days_from_civil(y, mo, d);
    if b.len() == 10 {
        return Ts::Ns(in_range(days as i128 * 86_400 * 1_000_000_000));
    }
    let t_sep = match b[10] {
        b'T' => true,
        b' ' => false,
        _ => return Ts::Fallback,
    };
    let rest = &b[11..];
    if rest.len() < 5 || rest[2] != b':' {
        return Ts::Fallback;
    }
    let (Some(h), Some(mi)) = (num(&rest[0..2]), num(&rest[3..5])) else {
        return Ts::Fallback;
    };
    let mut i = 5;
    let mut s = 0;
    let mut frac_ns: i64 = 0;
    if rest.len() >= 8 && rest[5] == b':' {
        let Some(sv) = num(&rest[6..8]) else {
            return Ts::Fallback;
        };
        s = sv;
        i = 8;
        if i < rest.len() && (rest[i] == b'.' || rest[i] == b',') {
            let start = i + 1;
            let mut j = start;
            while j < rest.len() && rest[j].is_ascii_digit() {
                j += 1;
            }
            if j == start {
                return Ts::Fallback;
            }
            if t_sep {
                // the reference keeps 9 digits itself (the fraction regex needs the 'T')
                let digits = &rest[start..j.min(start + 9)];
                let mut f = num(digits).unwrap();
                for _ in digits.len()..9 {
                    f *= 10;
                }
                frac_ns = f;
            }
            // with a space, fromisoformat parses the fraction and the reference then drops
            // timedelta.microseconds: whole seconds only
            i = j;
        }
    }
    if h > 23 || mi > 59 || s > 59 {
        return Ts::Fallback;
    }
    let zone = &rest[i..];
    let offset = match zone {
        b"" | b"Z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (Some(oh), Some(om)) = (num(&[*h1, *h2]), num(&[*m1, *m2])) else {
                return Ts::Fallback;
            };
            if oh > 23 || om > 59 {
                return Ts::Fallback;
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return Ts::Fallback,
    };
    let secs = days * 86_400 + h * 3600 + mi * 60 + s - offset;
    Ts::Ns(in_range(secs as i128 * 1_000_000_000 + frac_ns as i128))
}

pub(crate) fn parse_ts(v: Option<&V>) -> Ts {
    match v {
        None | Some(V::Null) | Some(V::Bool(_)) => Ts::Ns(0),
        Some(V::I(i)) => Ts::Ns(epoch_int(*i as i128)),
        Some(V::U(u)) => Ts::Ns(epoch_int(*u as i128)),
        Some(V::F(f)) => Ts::Ns(epoch_float(*f)),
        Some(V::S(s)) => parse_ts_str(s),
        Some(_) => Ts::Ns(0),
    }
}
/// collector.documents.iso_timestamp: RFC 3339 UTC with nanoseconds (a u64 stays below 2555).
pub(crate) fn iso_timestamp(out: &mut Vec<u8>, ns: u64) {
    let (secs, frac) = (ns / 1_000_000_000, ns % 1_000_000_000);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // civil_from_days (Howard Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    for (value, width, then) in [
        (year as u64, 4, b'-'),
        (month as u64, 2, b'-'),
        (day as u64, 2, b'T'),
        (rem / 3600, 2, b':'),
        (rem % 3600 / 60, 2, b':'),
        (rem % 60, 2, b'.'),
        (frac, 9, b'Z'),
    ] {
        digits(out, value, width);
        out.push(then);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    /// Expected values: agent.parse.parse_timestamp on the same input.
    #[test]
    fn iso_forms() {
        for (text, ns) in [
            ("2024-05-01T12:34:56.123456789Z", 1_714_566_896_123_456_789),
            ("2024-05-01 12:34:56.999", 1_714_566_896_000_000_000), // with a space: whole seconds
            ("2024-05-01T12:34:56+02:00", 1_714_559_696_000_000_000),
            ("2024-05-01", 1_714_521_600_000_000_000),
            ("2024-02-29T00:00Z", 1_709_164_800_000_000_000),
            ("1969-12-31T23:59:59Z", 0), // before the epoch: out of range
        ] {
            assert_eq!(parse_ts_str(text), Ts::Ns(ns), "{text}");
        }
    }

    #[test]
    fn epoch_forms_by_magnitude() {
        for (text, ns) in [
            ("1700000000", 1_700_000_000_000_000_000),
            ("1700000000123", 1_700_000_000_123_000_000),
            ("1700000000123456", 1_700_000_000_123_456_000),
            ("1700000000123456789", 1_700_000_000_123_456_789),
            ("1700000000.5", 1_700_000_000_500_000_000),
            ("  1700000000  ", 1_700_000_000_000_000_000),
            ("not a time", 0),
        ] {
            assert_eq!(parse_ts_str(text), Ts::Ns(ns), "{text}");
        }
        assert_eq!(
            parse_ts(Some(&V::I(1_700_000_000))),
            Ts::Ns(1_700_000_000_000_000_000)
        );
        assert_eq!(
            parse_ts(Some(&V::F(1.7e9))),
            Ts::Ns(1_700_000_000_000_000_000)
        );
        assert_eq!(parse_ts(Some(&V::I(-5))), Ts::Ns(0));
        assert_eq!(parse_ts(Some(&V::F(1e300))), Ts::Ns(0));
        assert_eq!(parse_ts(Some(&V::Bool(true))), Ts::Ns(0));
        assert_eq!(parse_ts(None), Ts::Ns(0));
    }

    #[test]
    fn exotic_forms_are_left_to_python() {
        for text in [
            "2024-02-30",
            "2024-05-01T25:00",
            "2024-05-01X12:00",
            "2024-05-01T12:00+5",
            "２０２４-05-01",
            "2024/05/01",
        ] {
            assert_eq!(parse_ts_str(text), Ts::Fallback, "{text}");
        }
        assert_eq!(
            parse_ts(Some(&V::S(Cow::Borrowed("2024-02-30")))),
            Ts::Fallback
        );
    }

    #[test]
    fn rfc3339_text_of_nanoseconds() {
        let text = |ns| {
            let mut out = Vec::new();
            iso_timestamp(&mut out, ns);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(text(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            text(1_714_566_896_123_456_789),
            "2024-05-01T12:34:56.123456789Z"
        );
        assert_eq!(
            text(1_709_164_800_000_000_001),
            "2024-02-29T00:00:00.000000001Z"
        );
        assert_eq!(text(u64::MAX), "2554-07-21T23:34:33.709551615Z");
        // parse and print agree on a round trip
        assert_eq!(
            parse_ts_str(&text(1_714_566_896_123_456_789)),
            Ts::Ns(1_714_566_896_123_456_789)
        );
    }
}

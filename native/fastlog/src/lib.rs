//! The agent's fast path: a chunk of newline-delimited JSON log lines -> per-partition OTLP
//! `ExportLogsServiceRequest` bytes. It must produce exactly the bytes of the Python reference
//! (agent/parse.py + agent/encode.py, wrapped by agent/chunks.py::PythonChunkEncoder);
//! tests/unit/test_chunk_encoders.py checks that byte for byte.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyFloat};
use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use smallvec::SmallVec;

mod collector_docs;
mod json_scan;

// ------------------------------------------------------------------------------------------
// JSON values we keep (only under the alias keys)

#[derive(Debug)]
enum V<'a> {
    Null,
    Bool(bool),
    I(i64),
    U(u64),
    F(f64),
    S(Cow<'a, str>),
    Obj(Vec<(Cow<'a, str>, V<'a>)>),
    Arr,
}

impl<'a> V<'a> {
    fn is_container(&self) -> bool {
        matches!(self, V::Obj(_) | V::Arr)
    }
    /// Last occurrence wins, like a Python dict built from JSON.
    fn get(&self, key: &str) -> Option<&V<'a>> {
        match self {
            V::Obj(items) => items.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

struct KeySeed;
impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}
struct KeyVisitor;
impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

struct ValSeed;
impl<'de> DeserializeSeed<'de> for ValSeed {
    type Value = V<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(ValVisitor)
    }
}
struct ValVisitor;
impl<'de> Visitor<'de> for ValVisitor {
    type Value = V<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<V<'de>, E> {
        Ok(V::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<V<'de>, E> {
        Ok(V::Null)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<V<'de>, E> {
        Ok(V::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<V<'de>, E> {
        Ok(V::I(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<V<'de>, E> {
        Ok(V::U(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<V<'de>, E> {
        Ok(V::F(v))
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<V<'de>, E> {
        Ok(V::S(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<V<'de>, E> {
        Ok(V::S(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<V<'de>, E> {
        Ok(V::S(Cow::Owned(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<V<'de>, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(V::Arr)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<V<'de>, A::Error> {
        let mut items = Vec::new();
        while let Some(k) = map.next_key_seed(KeySeed)? {
            let v = map.next_value_seed(ValSeed)?;
            items.push((k, v));
        }
        Ok(V::Obj(items))
    }
}

/// A value the agent does not keep, validated as the reference (orjson) would: unlike serde's
/// IgnoredAny, numbers are parsed, so one that is infinite as a double (1e400) is an error.
struct Skip;
impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SkipVisitor)
    }
}
struct SkipVisitor;
impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skip;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Skip, E> {
        if v.is_finite() {
            Ok(Skip)
        } else {
            Err(E::custom("number out of range"))
        }
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }
}

/// Top-level keys kept: (slot, value); everything else is skipped (still validated).
type Found<'a> = SmallVec<[(u8, V<'a>); 8]>;

struct TopVisitor<'k> {
    keys: &'k HashMap<String, u8, ahash::RandomState>,
}
impl<'de, 'k> Visitor<'de> for TopVisitor<'k> {
    type Value = (Found<'de>, u64);
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found: Found<'de> = SmallVec::new();
        let mut mask = 0u64;
        while let Some(k) = map.next_key_seed(KeySeed)? {
            match self.keys.get(k.as_ref()) {
                Some(&slot) => {
                    let v = map.next_value_seed(ValSeed)?;
                    found.push((slot, v));
                    mask |= 1u64 << slot;
                }
                None => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok((found, mask))
    }
}

fn slot_value<'f, 'a>(found: &'f Found<'a>, slot: u8) -> Option<&'f V<'a>> {
    found.iter().rev().find(|(s, _)| *s == slot).map(|(_, v)| v)
}

// ------------------------------------------------------------------------------------------
// The field mapping, compiled

struct Alias {
    flat: u8,
    nested: Option<(u8, Vec<String>)>, // root slot, remaining parts
}

struct Mapping {
    keys: json_scan::Keys,
    roles: Vec<Vec<Alias>>, // timestamp, level, trace_id, span_id, service
    severity: HashMap<String, i32, ahash::RandomState>,
}

const ROLES: [&str; 5] = ["timestamp", "level", "trace_id", "span_id", "service"];

impl Mapping {
    fn new(aliases: &[Vec<String>], severity: HashMap<String, i32>) -> PyResult<Self> {
        let mut keys: HashMap<String, u8, ahash::RandomState> = HashMap::default();
        let slot_of = |k: &str, keys: &mut HashMap<String, u8, ahash::RandomState>| -> PyResult<u8> {
            let n = keys.len();
            if let Some(&s) = keys.get(k) {
                return Ok(s);
            }
            if n >= 64 {
                return Err(PyValueError::new_err("at most 64 distinct alias keys"));
            }
            keys.insert(k.to_owned(), n as u8);
            Ok(n as u8)
        };
        let mut roles = Vec::new();
        for names in aliases {
            let mut role = Vec::new();
            for name in names {
                let flat = slot_of(name, &mut keys)?;
                let nested = if name.contains('.') {
                    let mut parts = name.split('.');
                    let root = slot_of(parts.next().unwrap(), &mut keys)?;
                    Some((root, parts.map(str::to_owned).collect()))
                } else {
                    None
                };
                role.push(Alias { flat, nested });
            }
            roles.push(role);
        }
        let severity = severity.into_iter().map(|(k, v)| (k.to_lowercase(), v)).collect();
        Ok(Mapping { keys: json_scan::Keys::new(keys), roles, severity })
    }

    /// LogFieldMapping.lookup(record, names, scalar=True)[1]
    fn lookup<'f, 'a>(&self, role: usize, found: &'f Found<'a>, mask: u64) -> Option<&'f V<'a>> {
        for alias in &self.roles[role] {
            if mask & (1u64 << alias.flat) != 0 {
                let v = slot_value(found, alias.flat).unwrap();
                if v.is_container() {
                    continue; // a flat key holding an object/array: next name (no nested try)
                }
                return Some(v);
            }
            if let Some((root, rest)) = &alias.nested {
                if mask & (1u64 << root) == 0 {
                    continue;
                }
                let mut node = slot_value(found, *root).unwrap();
                let mut ok = true;
                for part in rest {
                    match node.get(part) {
                        Some(n) => node = n,
                        None => {
                            ok = false;
                            break;
                        }
                    }
                }
                if ok {
                    if node.is_container() {
                        continue;
                    }
                    return Some(node);
                }
            }
        }
        None
    }
}

// ------------------------------------------------------------------------------------------
// Field conversion (agent/parse.py)

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

enum Ts {
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

fn parse_ts_str(raw: &str) -> Ts {
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
        return if b.len() >= 4 && b[..4].iter().all(u8::is_ascii_digit) { Ts::Fallback } else { Ts::Ns(0) };
    }
    let (Some(y), Some(mo), Some(d)) = (num(&b[0..4]), num(&b[5..7]), num(&b[8..10])) else {
        return Ts::Fallback;
    };
    if y < 1 || !(1..=12).contains(&mo) || d < 1 {
        return Ts::Fallback;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let mdays = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][(mo - 1) as usize];
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

fn parse_ts(v: Option<&V>) -> Ts {
    match v {
        None | Some(V::Null) | Some(V::Bool(_)) => Ts::Ns(0),
        Some(V::I(i)) => Ts::Ns(epoch_int(*i as i128)),
        Some(V::U(u)) => Ts::Ns(epoch_int(*u as i128)),
        Some(V::F(f)) => Ts::Ns(epoch_float(*f)),
        Some(V::S(s)) => parse_ts_str(s),
        Some(_) => Ts::Ns(0),
    }
}

fn hex_nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// hex_nibble as a table (0xff: not a hex digit): ids are 48 hex digits on most lines, and the
/// branchy version was ~5 % of a chunk's encoding time.
const HEX: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = match c as u8 {
            b @ b'0'..=b'9' => b - b'0',
            b @ b'a'..=b'f' => b - b'a' + 10,
            b @ b'A'..=b'F' => b - b'A' + 10,
            _ => 0xff,
        };
        c += 1;
    }
    t
};

fn hex_id<const N: usize>(v: Option<&V>) -> Option<[u8; N]> {
    let Some(V::S(s)) = v else { return None };
    let b = s.as_bytes();
    if b.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    let mut bad = 0u8;
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        let (hi, lo) = (HEX[pair[0] as usize], HEX[pair[1] as usize]);
        bad |= hi | lo;
        *o = (hi << 4) | (lo & 0x0f);
    }
    if bad & 0xf0 != 0 {
        return None; // some byte was not a hex digit
    }
    if out.iter().all(|&x| x == 0) {
        None
    } else {
        Some(out)
    }
}

enum Text<'a> {
    Str(&'a str),
    Owned(String),
    PyFloat(f64), // Python's str(float): done with the GIL afterwards
}

/// _string(value): str as is, None -> "", else str(value)
fn to_text<'f>(v: Option<&'f V>) -> Text<'f> {
    match v {
        None | Some(V::Null) => Text::Str(""),
        Some(V::S(s)) => Text::Str(s.as_ref()),
        Some(V::Bool(true)) => Text::Str("True"),
        Some(V::Bool(false)) => Text::Str("False"),
        Some(V::I(i)) => Text::Owned(i.to_string()),
        Some(V::U(u)) => Text::Owned(u.to_string()),
        Some(V::F(f)) => Text::PyFloat(*f),
        Some(_) => Text::Str(""), // containers never come out of lookup(scalar=True)
    }
}

// ------------------------------------------------------------------------------------------
// Protobuf wire encoding

#[inline]
fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}
#[inline]
fn varint_len(n: u64) -> usize {
    (64 - (n | 1).leading_zeros() as usize).div_ceil(7)
}
#[inline]
fn ld_len(n: usize) -> usize {
    1 + varint_len(n as u64) + n
}
fn put_ld(out: &mut Vec<u8>, tag: u8, payload: &[u8]) {
    out.push(tag);
    put_varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}
/// KeyValue{key, value: AnyValue{string_value}}
fn kv_string(key: &str, value: &[u8]) -> Vec<u8> {
    let mut any = Vec::new();
    put_ld(&mut any, 0x0a, value);
    let mut kv = Vec::new();
    put_ld(&mut kv, 0x0a, key.as_bytes());
    put_ld(&mut kv, 0x12, &any);
    kv
}
fn kv_bool_true(key: &str) -> Vec<u8> {
    let mut kv = Vec::new();
    put_ld(&mut kv, 0x0a, key.as_bytes());
    put_ld(&mut kv, 0x12, &[0x10, 0x01]);
    kv
}

struct Consts {
    perr_attr: Vec<u8>, // field 6 (attributes) with its tag and length
    trunc_attr: Vec<u8>,
    inv_attr: Vec<u8>,
    offset_key: Vec<u8>, // KeyValue.key field (tag, len, "log.file.record_offset")
    agent_kv: Vec<u8>,   // Resource.attributes entry (tag 0x0a, len, KeyValue)
    scope: Vec<u8>,      // ScopeLogs.scope entry, with the file's path and fingerprint
}

impl Consts {
    fn new(agent_id: &str, fingerprint: &str, path: &str) -> Self {
        let wrap = |tag: u8, p: Vec<u8>| {
            let mut o = Vec::new();
            put_ld(&mut o, tag, &p);
            o
        };
        let mut offset_key = Vec::new();
        put_ld(&mut offset_key, 0x0a, b"log.file.record_offset");
        let mut scope_inner = Vec::new();
        put_ld(&mut scope_inner, 0x0a, b"tether.file");
        put_ld(&mut scope_inner, 0x1a, &kv_string("log.file.path", path.as_bytes()));
        put_ld(&mut scope_inner, 0x1a, &kv_string("tether.file.fingerprint", fingerprint.as_bytes()));
        Consts {
            perr_attr: wrap(0x32, kv_bool_true("tether.parse_error")),
            trunc_attr: wrap(0x32, kv_bool_true("tether.truncated")),
            inv_attr: wrap(0x32, kv_bool_true("tether.invalid_utf8")),
            offset_key,
            agent_kv: wrap(0x0a, kv_string("tether.agent.id", agent_id.as_bytes())),
            scope: wrap(0x0a, scope_inner),
        }
    }
}

struct Rec<'a> {
    time: u64,
    sev: i32,
    level: &'a [u8],
    body: &'a [u8],
    offset: u64,
    perr: bool,
    trunc: bool,
    inv: bool,
    trace: Option<[u8; 16]>,
    span: Option<[u8; 8]>,
    observed: u64,
}

/// Appends ScopeLogs.log_records entry (tag 0x12, length, LogRecord) for one record.
fn put_record(out: &mut Vec<u8>, c: &Consts, r: &Rec) {
    let any_offset = 1 + varint_len(r.offset); // AnyValue{int_value}, set even when 0 (a oneof)
    let kv_offset = c.offset_key.len() + ld_len(any_offset);
    let body_any = ld_len(r.body.len());
    let mut n = 0;
    if r.time != 0 {
        n += 9;
    }
    if r.sev != 0 {
        n += 1 + varint_len(r.sev as i64 as u64);
    }
    if !r.level.is_empty() {
        n += ld_len(r.level.len());
    }
    n += ld_len(body_any);
    n += ld_len(kv_offset);
    if r.perr {
        n += c.perr_attr.len();
    }
    if r.trunc {
        n += c.trunc_attr.len();
    }
    if r.inv {
        n += c.inv_attr.len();
    }
    if r.trace.is_some() {
        n += 18;
    }
    if r.span.is_some() {
        n += 10;
    }
    if r.observed != 0 {
        n += 9;
    }
    out.reserve(n + 6);
    out.push(0x12);
    put_varint(out, n as u64);
    let start = out.len();
    if r.time != 0 {
        out.push(0x09);
        out.extend_from_slice(&r.time.to_le_bytes());
    }
    if r.sev != 0 {
        out.push(0x10);
        put_varint(out, r.sev as i64 as u64);
    }
    if !r.level.is_empty() {
        put_ld(out, 0x1a, r.level);
    }
    out.push(0x2a);
    put_varint(out, body_any as u64);
    put_ld(out, 0x0a, r.body);
    out.push(0x32);
    put_varint(out, kv_offset as u64);
    out.extend_from_slice(&c.offset_key);
    out.push(0x12);
    put_varint(out, any_offset as u64);
    out.push(0x18);
    put_varint(out, r.offset);
    if r.perr {
        out.extend_from_slice(&c.perr_attr);
    }
    if r.trunc {
        out.extend_from_slice(&c.trunc_attr);
    }
    if r.inv {
        out.extend_from_slice(&c.inv_attr);
    }
    if let Some(t) = &r.trace {
        out.push(0x4a);
        out.push(16);
        out.extend_from_slice(t);
    }
    if let Some(s) = &r.span {
        out.push(0x52);
        out.push(8);
        out.extend_from_slice(s);
    }
    if r.observed != 0 {
        out.push(0x59);
        out.extend_from_slice(&r.observed.to_le_bytes());
    }
    debug_assert_eq!(out.len() - start, n);
}

// ------------------------------------------------------------------------------------------
// Chunk processing

struct Group {
    partition: u32,
    services: Vec<(Vec<u8>, Vec<u8>)>, // (service name, concatenated log_records entries)
}

#[derive(Default)]
struct Counts {
    lines: u64,
    parse_errors: u64,
    truncated: u64,
    invalid_utf8: u64,
}

struct Params<'a> {
    base: u64,
    partitions: u64,
    untraced: u32,
    observed: u64,
    max_line: usize,
    consts: &'a Consts,
    mapping: &'a Mapping,
    ts_fallback: Option<&'a Py<PyAny>>,
}

use json_scan::ORJSON_MAX_DEPTH;

/// The former parser, whole-line serde_json plus post-checks for orjson's rules where serde_json
/// differs (nesting up to 1024, not 128; lone UTF-16 surrogate escapes are errors even in
/// skipped strings). Kept as the reference json_scan::parse_line is checked against
/// (parse_line_check).
fn parse_line_serde<'a>(
    text: &'a str,
    keys: &HashMap<String, u8, ahash::RandomState>,
) -> Option<(Found<'a>, u64)> {
    let mut de = serde_json::Deserializer::from_str(text);
    let r = de.deserialize_map(TopVisitor { keys }).and_then(|r| de.end().map(|_| r));
    let r = match r {
        Ok(v) => v,
        Err(e) if e.to_string().starts_with("recursion limit exceeded") => {
            if max_depth(text.as_bytes()) > ORJSON_MAX_DEPTH {
                return None;
            }
            let mut de = serde_json::Deserializer::from_str(text);
            de.disable_recursion_limit();
            de.deserialize_map(TopVisitor { keys }).and_then(|r| de.end().map(|_| r)).ok()?
        }
        Err(_) => return None,
    };
    // serde_json skips ignored values without a depth limit; valid JSON nested deeper than 1024
    // needs at least 2 * 1025 bytes
    if text.len() >= 2 * (ORJSON_MAX_DEPTH + 1) && max_depth(text.as_bytes()) > ORJSON_MAX_DEPTH {
        return None;
    }
    if memchr::memmem::find(text.as_bytes(), b"\\u").is_some() && has_lone_surrogate(text.as_bytes()) {
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
            v = v * 16 + hex_nibble(c)? as u32;
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
            let Some(cp) = hex4(&b[i + 2..]) else { return true };
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

/// Test helper: json_scan::parse_line against the former serde_json parser on one line, with
/// `keys` as the alias keys (slot = position). None when they agree (same refusal, or the same
/// slots and values, strings borrowed alike), else both results.
#[pyfunction]
fn parse_line_check(text: &str, keys: Vec<String>) -> PyResult<Option<String>> {
    if keys.len() > 64 {
        return Err(PyValueError::new_err("at most 64 keys"));
    }
    let keys: HashMap<String, u8, ahash::RandomState> =
        keys.into_iter().enumerate().map(|(i, k)| (k, i as u8)).collect();
    let mut found = Found::new();
    let new = json_scan::parse_line(text, &json_scan::Keys::new(keys.clone()), &mut found)
        .map(|mask| (found, mask));
    let old = parse_line_serde(text, &keys);
    let agree = match (&new, &old) {
        (None, None) => true,
        (Some((f1, m1)), Some((f2, m2))) => {
            m1 == m2
                && f1.len() == f2.len()
                && f1.iter().zip(f2).all(|((s1, v1), (s2, v2))| s1 == s2 && same_v(v1, v2))
        }
        _ => false,
    };
    Ok(if agree { None } else { Some(format!("scanner: {new:?}\nserde_json: {old:?}")) })
}

#[allow(clippy::ptr_arg)] // the Cow itself is compared: borrowed or owned
fn same_cow(a: &Cow<str>, b: &Cow<str>) -> bool {
    a == b && matches!(a, Cow::Borrowed(_)) == matches!(b, Cow::Borrowed(_))
}

fn same_v(new: &V, old: &V) -> bool {
    match (new, old) {
        (V::Null, V::Null) | (V::Arr, V::Arr) => true,
        (V::Bool(a), V::Bool(b)) => a == b,
        (V::I(a), V::I(b)) => a == b,
        (V::U(a), V::U(b)) => a == b,
        (V::F(a), V::F(b)) => a.to_bits() == b.to_bits(),
        // the one intended difference: the integer -0 (orjson: 0; serde_json: -0.0)
        (V::I(0), V::F(b)) => b.to_bits() == (-0.0f64).to_bits(),
        (V::S(a), V::S(b)) => same_cow(a, b),
        (V::Obj(a), V::Obj(b)) => {
            a.len() == b.len()
                && a.iter().zip(b).all(|((ka, va), (kb, vb))| same_cow(ka, kb) && same_v(va, vb))
        }
        _ => false,
    }
}

fn is_ascii_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn py_call_ts(f: &Py<PyAny>, s: &str) -> PyResult<u64> {
    Python::attach(|py| f.call1(py, (s,))?.extract::<u64>(py))
}

fn py_float_str(x: f64) -> PyResult<String> {
    Python::attach(|py| Ok(PyFloat::new(py, x).str()?.to_string()))
}

fn text_bytes<'t>(t: Text<'t>) -> PyResult<Cow<'t, [u8]>> {
    Ok(match t {
        Text::Str(s) => Cow::Borrowed(s.as_bytes()),
        Text::Owned(s) => Cow::Owned(s.into_bytes()),
        Text::PyFloat(x) => Cow::Owned(py_float_str(x)?.into_bytes()),
    })
}

/// stage: 1 = split lines + UTF-8 only, 2 = + JSON parse, 3 = + field extraction, 4 = full
fn process(chunk: &[u8], p: &Params, stage: u8) -> PyResult<(Vec<Group>, Counts)> {
    let mut groups: Vec<Group> = Vec::new();
    let mut group_of: HashMap<u32, usize, ahash::RandomState> = HashMap::default();
    let mut counts = Counts::default();
    let chunk_utf8 = std::str::from_utf8(chunk).is_ok();
    let mut sev_cache: HashMap<Vec<u8>, i32, ahash::RandomState> = HashMap::default();

    let mut pos = 0usize;
    let n = chunk.len();
    while pos < n {
        let (end, next, is_tail) = match memchr::memchr(b'\n', &chunk[pos..]) {
            Some(i) => (pos + i, pos + i + 1, false),
            None => (n, n, true),
        };
        let start_off = p.base + pos as u64;
        let mut raw = &chunk[pos..end];
        pos = next;
        // FileSource._add_line; a tail without newline is the head of an over-long line when it
        // is at least max_line_bytes long ("continues")
        let truncated = (is_tail && raw.len() >= p.max_line) || raw.len() > p.max_line;
        if truncated && raw.len() > p.max_line {
            raw = &raw[..p.max_line];
        }
        while let [rest @ .., b'\r'] = raw {
            raw = rest;
        }
        if raw.iter().all(|&c| is_ascii_space(c)) {
            continue;
        }
        counts.lines += 1;
        counts.truncated += truncated as u64;

        // text: the line decoded (invalid bytes replaced, flagged)
        let owned: String;
        let (text, inv): (&str, bool) = if chunk_utf8 && !truncated {
            (unsafe { std::str::from_utf8_unchecked(raw) }, false)
        } else {
            match std::str::from_utf8(raw) {
                Ok(s) => (s, false),
                Err(_) => {
                    owned = String::from_utf8_lossy(raw).into_owned();
                    (owned.as_str(), true)
                }
            }
        };
        counts.invalid_utf8 += inv as u64;
        if stage == 1 {
            std::hint::black_box(text);
            continue;
        }

        let mut found = Found::new();
        let parsed = json_scan::parse_line(text, &p.mapping.keys, &mut found);
        if stage == 2 {
            std::hint::black_box((&found, &parsed));
            continue;
        }

        let mut rec = Rec {
            time: p.observed,
            sev: 0,
            level: b"",
            body: text.as_bytes(),
            offset: start_off,
            perr: false,
            trunc: truncated,
            inv,
            trace: None,
            span: None,
            observed: p.observed,
        };
        let level_buf: Cow<[u8]>;
        let service_buf: Cow<[u8]>;
        let partition: u32;
        let service: &[u8];
        match parsed {
            None => {
                counts.parse_errors += 1;
                rec.perr = true;
                partition = p.untraced;
                service = b"";
            }
            Some(mask) => {
                let found = &found;
                let m = p.mapping;
                let ts = match parse_ts(m.lookup(0, found, mask)) {
                    Ts::Ns(ns) => ns,
                    Ts::Fallback => match (p.ts_fallback, m.lookup(0, found, mask)) {
                        (Some(f), Some(V::S(s))) => py_call_ts(f, s)?,
                        _ => 0,
                    },
                };
                if ts != 0 {
                    rec.time = ts;
                }
                level_buf = text_bytes(to_text(m.lookup(1, found, mask)))?;
                rec.level = &level_buf;
                if !rec.level.is_empty() {
                    rec.sev = match sev_cache.get(rec.level) {
                        Some(&s) => s,
                        None => {
                            let lower = String::from_utf8_lossy(rec.level).to_lowercase();
                            let s = m.severity.get(&lower).copied().unwrap_or(0);
                            sev_cache.insert(rec.level.to_vec(), s);
                            s
                        }
                    };
                }
                rec.trace = hex_id::<16>(m.lookup(2, found, mask));
                rec.span = hex_id::<8>(m.lookup(3, found, mask));
                service_buf = text_bytes(to_text(m.lookup(4, found, mask)))?;
                service = &service_buf;
                partition = match &rec.trace {
                    Some(t) => (u64::from_be_bytes(t[8..16].try_into().unwrap()) % p.partitions) as u32,
                    None => p.untraced,
                };
            }
        }
        if stage == 3 {
            std::hint::black_box((&rec, partition, service));
            continue;
        }
        let gi = *group_of.entry(partition).or_insert_with(|| {
            groups.push(Group { partition, services: Vec::new() });
            groups.len() - 1
        });
        let g = &mut groups[gi];
        let si = match g.services.iter().position(|(s, _)| s.as_slice() == service) {
            Some(i) => i,
            None => {
                g.services.push((service.to_vec(), Vec::with_capacity(32 * 1024)));
                g.services.len() - 1
            }
        };
        put_record(&mut g.services[si].1, p.consts, &rec);
    }
    Ok((groups, counts))
}

/// Final ExportLogsServiceRequest of one partition, as pieces: (headers, records) per service.
struct Finished<'g> {
    partition: u32,
    len: usize,
    pieces: Vec<(Vec<u8>, &'g [u8])>,
}

fn finish<'g>(group: &'g Group, c: &Consts) -> Finished<'g> {
    let mut len = 0;
    let mut pieces = Vec::new();
    for (service, records) in &group.services {
        let mut res_attrs = Vec::new();
        if !service.is_empty() {
            put_ld(&mut res_attrs, 0x0a, &kv_string("service.name", service));
        }
        res_attrs.extend_from_slice(&c.agent_kv);
        let mut inner = Vec::new(); // ResourceLogs: resource + scope_logs header + scope
        put_ld(&mut inner, 0x0a, &res_attrs);
        inner.push(0x12);
        put_varint(&mut inner, (c.scope.len() + records.len()) as u64);
        inner.extend_from_slice(&c.scope);
        let rl_len = inner.len() + records.len();
        let mut head = vec![0x0a];
        put_varint(&mut head, rl_len as u64);
        head.extend_from_slice(&inner);
        len += head.len() + records.len();
        pieces.push((head, records.as_slice()));
    }
    Finished { partition: group.partition, len, pieces }
}

/// encode_chunk(chunk, base_offset, aliases, severity, partitions, untraced_partition, agent_id,
///              fingerprint, path, observed_ns, max_line_bytes, ts_fallback=None)
///   -> (dict[int, bytes], lines, parse_errors, truncated, invalid_utf8)
///
/// aliases: sequence of 5 lists of names (timestamp, level, trace_id, span_id, service).
/// ts_fallback: called with the timestamp string when it is not in the common ISO/epoch forms
/// (agent.parse.parse_timestamp keeps the exact reference semantics); None -> 0.
/// The GIL is released while parsing and encoding.
#[pyfunction]
#[pyo3(signature = (chunk, base_offset, aliases, severity, partitions, untraced_partition, agent_id,
                    fingerprint, path, observed_ns, max_line_bytes=262144, ts_fallback=None))]
#[allow(clippy::too_many_arguments)]
fn encode_chunk<'py>(
    py: Python<'py>,
    chunk: &Bound<'py, PyBytes>,
    base_offset: u64,
    aliases: Vec<Vec<String>>,
    severity: HashMap<String, i32>,
    partitions: u64,
    untraced_partition: u32,
    agent_id: &str,
    fingerprint: &str,
    path: &str,
    observed_ns: u64,
    max_line_bytes: usize,
    ts_fallback: Option<Py<PyAny>>,
) -> PyResult<(Bound<'py, PyDict>, u64, u64, u64, u64)> {
    encode_chunk_stage(py, 4, chunk, base_offset, aliases, severity, partitions, untraced_partition,
                       agent_id, fingerprint, path, observed_ns, max_line_bytes, ts_fallback)
}

/// Benchmark helper: encode_chunk stopped after `stage` (1 split+UTF-8, 2 +JSON, 3 +extract, 4 all).
#[pyfunction]
#[pyo3(signature = (stage, chunk, base_offset, aliases, severity, partitions, untraced_partition,
                    agent_id, fingerprint, path, observed_ns, max_line_bytes=262144, ts_fallback=None))]
#[allow(clippy::too_many_arguments)]
fn encode_chunk_stage<'py>(
    py: Python<'py>,
    stage: u8,
    chunk: &Bound<'py, PyBytes>,
    base_offset: u64,
    aliases: Vec<Vec<String>>,
    severity: HashMap<String, i32>,
    partitions: u64,
    untraced_partition: u32,
    agent_id: &str,
    fingerprint: &str,
    path: &str,
    observed_ns: u64,
    max_line_bytes: usize,
    ts_fallback: Option<Py<PyAny>>,
) -> PyResult<(Bound<'py, PyDict>, u64, u64, u64, u64)> {
    if aliases.len() != ROLES.len() {
        return Err(PyValueError::new_err("aliases: timestamp, level, trace_id, span_id, service"));
    }
    if partitions == 0 {
        return Err(PyValueError::new_err("partitions must be > 0"));
    }
    let mapping = Mapping::new(&aliases, severity)?;
    let consts = Consts::new(agent_id, fingerprint, path);
    let data: &[u8] = chunk.as_bytes();
    let params = Params {
        base: base_offset,
        partitions,
        untraced: untraced_partition,
        observed: observed_ns,
        max_line: max_line_bytes,
        consts: &consts,
        mapping: &mapping,
        ts_fallback: ts_fallback.as_ref(),
    };
    let (groups, counts) = py.detach(|| process(data, &params, stage))?;
    let out = PyDict::new(py);
    for g in &groups {
        let f = finish(g, &consts);
        // one copy: the group buffers straight into the bytes object
        let value = PyBytes::new_with(py, f.len, |buf: &mut [u8]| {
            let mut at = 0;
            for (head, records) in &f.pieces {
                buf[at..at + head.len()].copy_from_slice(head);
                at += head.len();
                buf[at..at + records.len()].copy_from_slice(records);
                at += records.len();
            }
            Ok(())
        })?;
        out.set_item(f.partition, value)?;
    }
    Ok((out, counts.lines, counts.parse_errors, counts.truncated, counts.invalid_utf8))
}

// ------------------------------------------------------------------------------------------
// OTLP export request -> per-partition request bytes, at the protobuf wire level.
//
// Reference: agent/encode.py::split_request on the decoded request. Every item (span / log
// record) goes to partition_for_trace(trace_id) under a copy of its resource and scope (and
// their schema_url); consecutive items of equal resource / scope stay under one
// ResourceX / ScopeX of that partition, exactly like the reference (which compares messages;
// here the raw bytes are compared, identical for any canonical encoder).
//
// Acceptance mirrors upb (python protobuf's decoder), so that nothing the reference would
// refuse reaches Kafka (the collector decodes every record): resource, scope and items are
// validated against the OTLP schema below (wire structure, UTF-8 of string fields, nesting
// depth 100, groups); known fields with another wire type are unknown fields there, as in upb.
// Stricter than upb, on purpose: a wrong wire type for the fields that drive the split
// (request.resource_x, ResourceX.resource/scope_x/schema_url, ScopeX.scope/items/schema_url,
// item.trace_id) is an error. Unknown fields of the request, ResourceX and ScopeX are dropped
// (the reference builds fresh ResourceX/ScopeX messages); resource, scope and item bytes are
// copied verbatim, so their unknown fields are kept (the reference keeps them too).

/// upb's default decode depth limit: submessages (and groups) nested below the request.
const MAX_DEPTH: u32 = 100;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ty {
    Varint,
    I64,
    I32,
    Bytes,
    Str,
    Msg(M),
}

impl Ty {
    fn wire(self) -> u8 {
        match self {
            Ty::Varint => 0,
            Ty::I64 => 1,
            Ty::I32 => 5,
            Ty::Bytes | Ty::Str | Ty::Msg(_) => 2,
        }
    }
    fn kind(self) -> &'static str {
        match self {
            Ty::Varint => "varint",
            Ty::I64 => "fixed64",
            Ty::I32 => "fixed32",
            Ty::Bytes => "bytes",
            Ty::Str => "string",
            Ty::Msg(_) => "message",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum M {
    Resource,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
    EntityRef,
    Scope,
    Span,
    Event,
    Link,
    Status,
    LogRecord,
    TracesRequest,
    ResourceSpans,
    ScopeSpans,
    LogsRequest,
    ResourceLogs,
    ScopeLogs,
}

const ALL_MESSAGES: [M; 18] = [
    M::Resource,
    M::KeyValue,
    M::AnyValue,
    M::ArrayValue,
    M::KeyValueList,
    M::EntityRef,
    M::Scope,
    M::Span,
    M::Event,
    M::Link,
    M::Status,
    M::LogRecord,
    M::TracesRequest,
    M::ResourceSpans,
    M::ScopeSpans,
    M::LogsRequest,
    M::ResourceLogs,
    M::ScopeLogs,
];

type Fields = &'static [(u32, &'static str, Ty)];

impl M {
    fn name(self) -> &'static str {
        match self {
            M::Resource => "opentelemetry.proto.resource.v1.Resource",
            M::KeyValue => "opentelemetry.proto.common.v1.KeyValue",
            M::AnyValue => "opentelemetry.proto.common.v1.AnyValue",
            M::ArrayValue => "opentelemetry.proto.common.v1.ArrayValue",
            M::KeyValueList => "opentelemetry.proto.common.v1.KeyValueList",
            M::EntityRef => "opentelemetry.proto.common.v1.EntityRef",
            M::Scope => "opentelemetry.proto.common.v1.InstrumentationScope",
            M::Span => "opentelemetry.proto.trace.v1.Span",
            M::Event => "opentelemetry.proto.trace.v1.Span.Event",
            M::Link => "opentelemetry.proto.trace.v1.Span.Link",
            M::Status => "opentelemetry.proto.trace.v1.Status",
            M::LogRecord => "opentelemetry.proto.logs.v1.LogRecord",
            M::TracesRequest => "opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest",
            M::ResourceSpans => "opentelemetry.proto.trace.v1.ResourceSpans",
            M::ScopeSpans => "opentelemetry.proto.trace.v1.ScopeSpans",
            M::LogsRequest => "opentelemetry.proto.collector.logs.v1.ExportLogsServiceRequest",
            M::ResourceLogs => "opentelemetry.proto.logs.v1.ResourceLogs",
            M::ScopeLogs => "opentelemetry.proto.logs.v1.ScopeLogs",
        }
    }
    fn short(self) -> &'static str {
        let n = self.name();
        let mut parts = n.rsplitn(3, '.');
        let last = parts.next().unwrap_or(n);
        match parts.next() {
            Some("Span") => &n[n.len() - last.len() - 5..], // Span.Event, Span.Link
            _ => last,
        }
    }
    /// Fields sorted by number. tests/unit/test_split.py checks them against the descriptors.
    const fn fields(self) -> Fields {
        use Ty::*;
        match self {
            M::Resource => &[
                (1, "attributes", Msg(M::KeyValue)),
                (2, "dropped_attributes_count", Varint),
                (3, "entity_refs", Msg(M::EntityRef)),
            ],
            M::KeyValue => &[
                (1, "key", Str),
                (2, "value", Msg(M::AnyValue)),
                (3, "key_strindex", Varint),
            ],
            M::AnyValue => &[
                (1, "string_value", Str),
                (2, "bool_value", Varint),
                (3, "int_value", Varint),
                (4, "double_value", I64),
                (5, "array_value", Msg(M::ArrayValue)),
                (6, "kvlist_value", Msg(M::KeyValueList)),
                (7, "bytes_value", Bytes),
                (8, "string_value_strindex", Varint),
            ],
            M::ArrayValue => &[(1, "values", Msg(M::AnyValue))],
            M::KeyValueList => &[(1, "values", Msg(M::KeyValue))],
            M::EntityRef => &[
                (1, "schema_url", Str),
                (2, "type", Str),
                (3, "id_keys", Str),
                (4, "description_keys", Str),
            ],
            M::Scope => &[
                (1, "name", Str),
                (2, "version", Str),
                (3, "attributes", Msg(M::KeyValue)),
                (4, "dropped_attributes_count", Varint),
            ],
            M::Span => &[
                (1, "trace_id", Bytes),
                (2, "span_id", Bytes),
                (3, "trace_state", Str),
                (4, "parent_span_id", Bytes),
                (5, "name", Str),
                (6, "kind", Varint),
                (7, "start_time_unix_nano", I64),
                (8, "end_time_unix_nano", I64),
                (9, "attributes", Msg(M::KeyValue)),
                (10, "dropped_attributes_count", Varint),
                (11, "events", Msg(M::Event)),
                (12, "dropped_events_count", Varint),
                (13, "links", Msg(M::Link)),
                (14, "dropped_links_count", Varint),
                (15, "status", Msg(M::Status)),
                (16, "flags", I32),
            ],
            M::Event => &[
                (1, "time_unix_nano", I64),
                (2, "name", Str),
                (3, "attributes", Msg(M::KeyValue)),
                (4, "dropped_attributes_count", Varint),
            ],
            M::Link => &[
                (1, "trace_id", Bytes),
                (2, "span_id", Bytes),
                (3, "trace_state", Str),
                (4, "attributes", Msg(M::KeyValue)),
                (5, "dropped_attributes_count", Varint),
                (6, "flags", I32),
            ],
            M::Status => &[(2, "message", Str), (3, "code", Varint)],
            M::LogRecord => &[
                (1, "time_unix_nano", I64),
                (2, "severity_number", Varint),
                (3, "severity_text", Str),
                (5, "body", Msg(M::AnyValue)),
                (6, "attributes", Msg(M::KeyValue)),
                (7, "dropped_attributes_count", Varint),
                (8, "flags", I32),
                (9, "trace_id", Bytes),
                (10, "span_id", Bytes),
                (11, "observed_time_unix_nano", I64),
                (12, "event_name", Str),
            ],
            M::TracesRequest => &[(1, "resource_spans", Msg(M::ResourceSpans))],
            M::ResourceSpans => &[
                (1, "resource", Msg(M::Resource)),
                (2, "scope_spans", Msg(M::ScopeSpans)),
                (3, "schema_url", Str),
            ],
            M::ScopeSpans => &[
                (1, "scope", Msg(M::Scope)),
                (2, "spans", Msg(M::Span)),
                (3, "schema_url", Str),
            ],
            M::LogsRequest => &[(1, "resource_logs", Msg(M::ResourceLogs))],
            M::ResourceLogs => &[
                (1, "resource", Msg(M::Resource)),
                (2, "scope_logs", Msg(M::ScopeLogs)),
                (3, "schema_url", Str),
            ],
            M::ScopeLogs => &[
                (1, "scope", Msg(M::Scope)),
                (2, "log_records", Msg(M::LogRecord)),
                (3, "schema_url", Str),
            ],
        }
    }
    #[inline(always)]
    fn ty(self, number: u32) -> Option<Ty> {
        match LOOKUP[self as usize].get(number as usize) {
            Some(&ty) => ty,
            None => None,
        }
    }
    fn field_name(self, number: u32) -> &'static str {
        self.fields().iter().find(|f| f.0 == number).map_or("?", |f| f.1)
    }
}

const MAX_FIELD: usize = 16;

/// LOOKUP[message][field number]: the field's type.
const LOOKUP: [[Option<Ty>; MAX_FIELD + 1]; ALL_MESSAGES.len()] = {
    let mut table = [[None; MAX_FIELD + 1]; ALL_MESSAGES.len()];
    let mut i = 0;
    while i < ALL_MESSAGES.len() {
        let m = ALL_MESSAGES[i];
        assert!(m as usize == i, "ALL_MESSAGES is in declaration order");
        let fields = m.fields();
        let mut j = 0;
        while j < fields.len() {
            let (number, _, ty) = fields[j];
            table[i][number as usize] = Some(ty);
            j += 1;
        }
        i += 1;
    }
    table
};

type WResult<T> = Result<T, String>;

fn wire_name(wt: u8) -> &'static str {
    match wt {
        0 => "varint",
        1 => "fixed64",
        2 => "length-delimited",
        3 => "start-group",
        4 => "end-group",
        5 => "fixed32",
        _ => "invalid",
    }
}

/// Reads one message's bytes; positions in errors are offsets in the whole request body.
struct Rd<'a> {
    b: &'a [u8],
    i: usize,
    origin: usize,
    m: M,
}

impl<'a> Rd<'a> {
    fn new(b: &'a [u8], origin: usize, m: M) -> Self {
        Rd { b, i: 0, origin, m }
    }
    #[inline]
    fn done(&self) -> bool {
        self.i >= self.b.len()
    }
    fn at(&self, i: usize) -> usize {
        self.b.as_ptr() as usize - self.origin + i
    }
    fn err(&self, start: usize, what: &str) -> String {
        format!("{} at byte {} (in {})", what, self.at(start), self.m.short())
    }
    #[inline(always)]
    fn varint(&mut self) -> WResult<u64> {
        match self.b.get(self.i) {
            Some(&c) if c < 0x80 => {
                self.i += 1;
                Ok(u64::from(c))
            }
            _ => self.varint_slow(),
        }
    }
    #[inline(never)]
    fn varint_slow(&mut self) -> WResult<u64> {
        let start = self.i;
        let mut v: u64 = 0;
        for k in 0..10 {
            let Some(&c) = self.b.get(self.i) else {
                return Err(self.err(start, "truncated varint"));
            };
            self.i += 1;
            v |= u64::from(c & 0x7f) << (7 * k);
            if c < 0x80 {
                return Ok(v);
            }
        }
        Err(self.err(start, "varint longer than 10 bytes"))
    }
    /// (field number, wire type); upb: at most 5 bytes, fits in 32 bits, field number > 0.
    #[inline(always)]
    fn tag(&mut self) -> WResult<(u32, u8)> {
        if let Some(&c) = self.b.get(self.i) {
            if (8..0x80).contains(&c) && c & 7 <= 5 {
                self.i += 1;
                return Ok((u32::from(c >> 3), c & 7));
            }
        }
        self.tag_slow()
    }
    #[inline(never)]
    fn tag_slow(&mut self) -> WResult<(u32, u8)> {
        let start = self.i;
        let (field, wt) = self.group_tag()?;
        if field == 0 {
            return Err(self.err(start, "field number 0"));
        }
        Ok((field, wt))
    }
    /// A tag inside an unknown group, where upb lets field number 0 through.
    fn group_tag(&mut self) -> WResult<(u32, u8)> {
        let start = self.i;
        let v = self.varint()?;
        if self.i - start > 5 || v > u64::from(u32::MAX) {
            return Err(self.err(start, "field tag out of range"));
        }
        let (field, wt) = ((v >> 3) as u32, (v & 7) as u8);
        if wt > 5 {
            return Err(self.err(start, &format!("invalid wire type {wt} for field {field}")));
        }
        Ok((field, wt))
    }
    /// The payload of a length-delimited field (upb: a length of at most 5 bytes, < 2^31).
    #[inline(always)]
    fn ld(&mut self) -> WResult<&'a [u8]> {
        if let Some(&n) = self.b.get(self.i) {
            let (from, n) = (self.i + 1, n as usize);
            if n < 0x80 {
                if let Some(v) = self.b.get(from..from + n) {
                    self.i = from + n;
                    return Ok(v);
                }
            }
        }
        self.ld_slow()
    }
    #[inline(never)]
    fn ld_slow(&mut self) -> WResult<&'a [u8]> {
        let start = self.i;
        let n = self.varint()?;
        if self.i - start > 5 || n >= 1 << 31 {
            return Err(self.err(start, "length out of range"));
        }
        let left = self.b.len() - self.i;
        if n as usize > left {
            return Err(self.err(
                start,
                &format!("length {n} runs past the end ({left} bytes left)"),
            ));
        }
        let v = &self.b[self.i..self.i + n as usize];
        self.i += n as usize;
        Ok(v)
    }
    #[inline(always)]
    fn fixed(&mut self, n: usize) -> WResult<()> {
        if self.b.len() - self.i < n {
            return Err(self.err(self.i, &format!("truncated fixed{}", n * 8)));
        }
        self.i += n;
        Ok(())
    }
    /// Skips an unknown field whose tag was just read; `depth` is the current message's.
    fn skip(&mut self, field: u32, wt: u8, depth: u32) -> WResult<()> {
        match wt {
            0 => self.varint().map(drop),
            1 => self.fixed(8),
            2 => self.ld().map(drop),
            5 => self.fixed(4),
            3 => {
                let start = self.i;
                if depth + 1 > MAX_DEPTH {
                    return Err(self.err(start, "nesting deeper than 100"));
                }
                while !self.done() {
                    let at = self.i;
                    let (f, w) = self.group_tag()?;
                    if w == 4 {
                        if f != field {
                            return Err(self.err(at, &format!("end-group {f} closes group {field}")));
                        }
                        return Ok(());
                    }
                    self.skip(f, w, depth + 1)?;
                }
                Err(self.err(start, &format!("unterminated group {field}")))
            }
            _ => Err(self.err(self.i, &format!("unexpected end-group tag {field}"))),
        }
    }
    fn wrong_wire(&self, start: usize, field: u32, wt: u8, expected: u8) -> String {
        self.err(
            start,
            &format!(
                "field {} ({}) has wire type {} ({}), expected {} ({})",
                field,
                self.m.field_name(field),
                wt,
                wire_name(wt),
                expected,
                wire_name(expected)
            ),
        )
    }
}

/// Validates one message (at nesting `depth`) like upb would decode it; returns the last
/// occurrence of bytes field `capture` (0: none), which must be length-delimited.
fn check(b: &[u8], origin: usize, m: M, depth: u32, capture: u32) -> WResult<Option<&[u8]>> {
    let mut r = Rd::new(b, origin, m);
    let mut captured = None;
    while !r.done() {
        let start = r.i;
        let (f, wt) = r.tag()?;
        match m.ty(f) {
            Some(ty) if ty.wire() == wt => match ty {
                Ty::Varint => drop(r.varint()?),
                Ty::I64 => r.fixed(8)?,
                Ty::I32 => r.fixed(4)?,
                Ty::Bytes => {
                    let v = r.ld()?;
                    if f == capture {
                        captured = Some(v);
                    }
                }
                Ty::Str => {
                    let v = r.ld()?;
                    if !utf8(v) {
                        let name = m.field_name(f);
                        return Err(r.err(start, &format!("string field {name} is not valid UTF-8")));
                    }
                }
                Ty::Msg(sub) => {
                    let v = r.ld()?;
                    if depth + 1 > MAX_DEPTH {
                        return Err(r.err(start, "nesting deeper than 100"));
                    }
                    check(v, origin, sub, depth + 1, 0)?;
                }
            },
            Some(ty) if f == capture => return Err(r.wrong_wire(start, f, wt, ty.wire())),
            _ => r.skip(f, wt, depth)?,
        }
    }
    Ok(captured)
}

#[inline(always)]
fn utf8(v: &[u8]) -> bool {
    v.iter().fold(0u8, |a, &c| a | c) < 0x80 || std::str::from_utf8(v).is_ok()
}

fn check_utf8(r: &Rd, start: usize, v: &[u8]) -> WResult<()> {
    if utf8(v) {
        Ok(())
    } else {
        Err(r.err(start, "string field schema_url is not valid UTF-8"))
    }
}

struct Shape {
    request: M,
    resource_x: M,
    scope_x: M,
    item: M,
    trace_id: u32,
}

const TRACES_SHAPE: Shape = Shape {
    request: M::TracesRequest,
    resource_x: M::ResourceSpans,
    scope_x: M::ScopeSpans,
    item: M::Span,
    trace_id: 1,
};
const LOGS_SHAPE: Shape = Shape {
    request: M::LogsRequest,
    resource_x: M::ResourceLogs,
    scope_x: M::ScopeLogs,
    item: M::LogRecord,
    trace_id: 9,
};

struct OutScope<'a> {
    scope: usize,
    schema_url: &'a [u8],
    items: Vec<&'a [u8]>,
    items_len: usize,
}
struct OutResource<'a> {
    resource: usize,
    schema_url: &'a [u8],
    scopes: Vec<OutScope<'a>>,
}
struct Part<'a> {
    partition: u64,
    resources: Vec<OutResource<'a>>,
    /// the input scope entry the last item came from
    last_entry: usize,
}

struct Splitter<'a> {
    shape: &'static Shape,
    origin: usize,
    partitions: u64,
    untraced: Option<u64>,
    /// resource and scope payloads (several occurrences of the field are concatenated: merged)
    blobs: Vec<Cow<'a, [u8]>>,
    parts: Vec<Part<'a>>,
    part_of: HashMap<u64, usize, ahash::RandomState>,
    entries: usize,
    total: u64,
    rejected: u64,
    scratch: Vec<&'a [u8]>,
}

fn joined<'a>(pieces: &[&'a [u8]]) -> Cow<'a, [u8]> {
    match pieces {
        [] => Cow::Borrowed(&[]),
        [one] => Cow::Borrowed(one),
        _ => Cow::Owned(pieces.concat()),
    }
}

impl<'a> Splitter<'a> {
    fn same(&self, a: usize, b: usize) -> bool {
        a == b || self.blobs[a] == self.blobs[b]
    }

    fn request(&mut self, body: &'a [u8]) -> WResult<()> {
        let mut r = Rd::new(body, self.origin, self.shape.request);
        while !r.done() {
            let start = r.i;
            match r.tag()? {
                (1, 2) => {
                    let v = r.ld()?;
                    self.resource_x(v)?;
                }
                (1, wt) => return Err(r.wrong_wire(start, 1, wt, 2)),
                (f, wt) => r.skip(f, wt, 0)?,
            }
        }
        Ok(())
    }

    fn resource_x(&mut self, b: &'a [u8]) -> WResult<()> {
        let mut r = Rd::new(b, self.origin, self.shape.resource_x);
        let mut resource: SmallVec<[&'a [u8]; 1]> = SmallVec::new();
        let mut scopes: SmallVec<[&'a [u8]; 4]> = SmallVec::new();
        let mut schema_url: &'a [u8] = b"";
        while !r.done() {
            let start = r.i;
            match r.tag()? {
                (1, 2) => {
                    let v = r.ld()?;
                    check(v, self.origin, M::Resource, 2, 0)?;
                    resource.push(v);
                }
                (2, 2) => scopes.push(r.ld()?),
                (3, 2) => {
                    schema_url = r.ld()?;
                    check_utf8(&r, start, schema_url)?;
                }
                (f @ 1..=3, wt) => return Err(r.wrong_wire(start, f, wt, 2)),
                (f, wt) => r.skip(f, wt, 1)?,
            }
        }
        self.blobs.push(joined(&resource));
        let resource = self.blobs.len() - 1;
        for s in scopes {
            self.scope_x(s, resource, schema_url)?;
        }
        Ok(())
    }

    fn scope_x(&mut self, b: &'a [u8], resource: usize, resource_url: &'a [u8]) -> WResult<()> {
        let mut r = Rd::new(b, self.origin, self.shape.scope_x);
        let mut scope: SmallVec<[&'a [u8]; 1]> = SmallVec::new();
        let mut items = std::mem::take(&mut self.scratch);
        items.clear();
        let mut schema_url: &'a [u8] = b"";
        while !r.done() {
            let start = r.i;
            match r.tag()? {
                (1, 2) => {
                    let v = r.ld()?;
                    check(v, self.origin, M::Scope, 3, 0)?;
                    scope.push(v);
                }
                (2, 2) => items.push(r.ld()?),
                (3, 2) => {
                    schema_url = r.ld()?;
                    check_utf8(&r, start, schema_url)?;
                }
                (f @ 1..=3, wt) => return Err(r.wrong_wire(start, f, wt, 2)),
                (f, wt) => r.skip(f, wt, 2)?,
            }
        }
        self.blobs.push(joined(&scope));
        let scope = self.blobs.len() - 1;
        self.entries += 1;
        let entry = self.entries;
        for &item in &items {
            let trace_id = check(item, self.origin, self.shape.item, 3, self.shape.trace_id)?;
            self.total += 1;
            let partition = match trace_id {
                Some(t) if t.len() == 16 && t.iter().any(|&c| c != 0) => {
                    u64::from_be_bytes(t[8..16].try_into().unwrap()) % self.partitions
                }
                _ => match self.untraced {
                    Some(u) => u,
                    None => {
                        self.rejected += 1;
                        continue;
                    }
                },
            };
            let index = match self.part_of.get(&partition) {
                Some(&i) => i,
                None => {
                    self.parts.push(Part {
                        partition,
                        resources: Vec::new(),
                        last_entry: 0,
                    });
                    self.part_of.insert(partition, self.parts.len() - 1);
                    self.parts.len() - 1
                }
            };
            if self.parts[index].last_entry != entry {
                // the reference: a new ResourceX unless the partition's last one has an equal
                // resource; then a new ScopeX unless its last one has an equal scope
                let last_resource = self.parts[index].resources.last().map(|x| x.resource);
                if !last_resource.is_some_and(|x| self.same(x, resource)) {
                    self.parts[index].resources.push(OutResource {
                        resource,
                        schema_url: resource_url,
                        scopes: Vec::new(),
                    });
                }
                let last_scope = self.parts[index]
                    .resources
                    .last()
                    .unwrap()
                    .scopes
                    .last()
                    .map(|x| x.scope);
                if !last_scope.is_some_and(|x| self.same(x, scope)) {
                    self.parts[index]
                        .resources
                        .last_mut()
                        .unwrap()
                        .scopes
                        .push(OutScope {
                            scope,
                            schema_url,
                            items: Vec::new(),
                            items_len: 0,
                        });
                }
                self.parts[index].last_entry = entry;
            }
            let out = self.parts[index]
                .resources
                .last_mut()
                .unwrap()
                .scopes
                .last_mut()
                .unwrap();
            out.items.push(item);
            out.items_len += ld_len(item.len());
        }
        self.scratch = items;
        Ok(())
    }

    fn scope_len(&self, s: &OutScope) -> usize {
        ld_len(self.blobs[s.scope].len()) + s.items_len + url_len(s.schema_url)
    }
    fn resource_len(&self, x: &OutResource) -> usize {
        ld_len(self.blobs[x.resource].len())
            + x.scopes.iter().map(|s| ld_len(self.scope_len(s))).sum::<usize>()
            + url_len(x.schema_url)
    }

    /// The request bytes of one partition, fields in number order (as the reference writes them).
    fn encode(&self, part: &Part) -> Vec<u8> {
        let sizes: Vec<usize> = part.resources.iter().map(|x| self.resource_len(x)).collect();
        let mut out = Vec::with_capacity(sizes.iter().map(|&n| ld_len(n)).sum());
        for (x, &size) in part.resources.iter().zip(&sizes) {
            out.push(0x0a);
            put_varint(&mut out, size as u64);
            put_ld(&mut out, 0x0a, &self.blobs[x.resource]);
            for s in &x.scopes {
                out.push(0x12);
                put_varint(&mut out, self.scope_len(s) as u64);
                put_ld(&mut out, 0x0a, &self.blobs[s.scope]);
                for item in &s.items {
                    put_ld(&mut out, 0x12, item);
                }
                put_url(&mut out, s.schema_url);
            }
            put_url(&mut out, x.schema_url);
        }
        debug_assert_eq!(out.len(), out.capacity());
        out
    }
}

fn url_len(url: &[u8]) -> usize {
    if url.is_empty() {
        0
    } else {
        ld_len(url.len())
    }
}
fn put_url(out: &mut Vec<u8>, url: &[u8]) {
    if !url.is_empty() {
        put_ld(out, 0x1a, url);
    }
}

struct SplitOut {
    parts: Vec<(u64, Vec<u8>)>,
    total: u64,
    rejected: u64,
}

fn split_body(
    body: &[u8],
    shape: &'static Shape,
    partitions: u64,
    untraced: Option<u64>,
) -> WResult<SplitOut> {
    let mut s = Splitter {
        shape,
        origin: body.as_ptr() as usize,
        partitions,
        untraced,
        blobs: Vec::new(),
        parts: Vec::new(),
        part_of: HashMap::default(),
        entries: 0,
        total: 0,
        rejected: 0,
        scratch: Vec::new(),
    };
    s.request(body)
        .map_err(|e| format!("invalid {}: {}", shape.request.short(), e))?;
    let parts = s.parts.iter().map(|p| (p.partition, s.encode(p))).collect();
    Ok(SplitOut {
        parts,
        total: s.total,
        rejected: s.rejected,
    })
}

fn split_to_py<'py>(
    py: Python<'py>,
    body: &Bound<'py, PyBytes>,
    shape: &'static Shape,
    partitions: u64,
    untraced: Option<u64>,
) -> PyResult<(Bound<'py, PyDict>, u64, u64)> {
    if partitions == 0 {
        return Err(PyValueError::new_err("partitions must be > 0"));
    }
    let data: &[u8] = body.as_bytes();
    let split = py
        .detach(|| split_body(data, shape, partitions, untraced))
        .map_err(PyValueError::new_err)?;
    let out = PyDict::new(py);
    for (partition, bytes) in &split.parts {
        out.set_item(partition, PyBytes::new(py, bytes))?;
    }
    Ok((out, split.total, split.rejected))
}

/// ExportTraceServiceRequest bytes -> ({partition: request bytes}, spans, rejected spans).
/// Spans without a valid trace id (16 bytes, not all zero) are rejected. Raises ValueError on
/// bytes python protobuf would not decode, or with a wrong wire type for a field the split
/// reads. The GIL is released while splitting.
#[pyfunction]
fn split_traces<'py>(
    py: Python<'py>,
    body: &Bound<'py, PyBytes>,
    partitions: u64,
) -> PyResult<(Bound<'py, PyDict>, u64, u64)> {
    split_to_py(py, body, &TRACES_SHAPE, partitions, None)
}

/// ExportLogsServiceRequest bytes -> ({partition: request bytes}, log records). Records
/// without a valid trace id go to `untraced_partition`. Errors as split_traces.
#[pyfunction]
fn split_logs<'py>(
    py: Python<'py>,
    body: &Bound<'py, PyBytes>,
    partitions: u64,
    untraced_partition: u64,
) -> PyResult<(Bound<'py, PyDict>, u64)> {
    let (out, total, _) = split_to_py(py, body, &LOGS_SHAPE, partitions, Some(untraced_partition))?;
    Ok((out, total))
}

/// The schema split_traces / split_logs validate against, for the drift test:
/// [(message full name, field number, field name, kind, message type full name or None)].
#[pyfunction]
fn split_schema() -> Vec<(
    &'static str,
    u32,
    &'static str,
    &'static str,
    Option<&'static str>,
)> {
    let mut out = Vec::new();
    for m in ALL_MESSAGES {
        for &(number, name, ty) in m.fields() {
            let sub = match ty {
                Ty::Msg(s) => Some(s.name()),
                _ => None,
            };
            out.push((m.name(), number, name, ty.kind(), sub));
        }
    }
    out
}
#[pymodule]
fn tether_fastlog(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(encode_chunk, m)?)?;
    m.add_function(wrap_pyfunction!(encode_chunk_stage, m)?)?;
    m.add_function(wrap_pyfunction!(parse_line_check, m)?)?;
    m.add_function(wrap_pyfunction!(split_traces, m)?)?;
    m.add_function(wrap_pyfunction!(split_logs, m)?)?;
    m.add_function(wrap_pyfunction!(split_schema, m)?)?;
    m.add_function(wrap_pyfunction!(collector_docs::file_log_documents, m)?)?;
    Ok(())
}

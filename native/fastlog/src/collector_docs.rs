//! The collector's fast path for log records read from files: an ExportLogsServiceRequest (a
//! Kafka record value) -> per record the few values correlation reads, a small dict of the
//! fields it changes ("service", "tether", "span"), and every other field of the Elasticsearch
//! document already JSON-encoded. The reference is collector/documents.py::log_documents;
//! tests/unit/test_collector_native_documents.py compares the two document by document.
//!
//! Only the shapes agents write are handled: the file scope, string bodies, a record id (rebuilt
//! from the scope's fingerprint and the record's offset, or an older agent's `log.record.uid`),
//! scalar attributes. Anything else (OTLP logs, whose ids hash the re-serialized record;
//! structured bodies; merged or unknown fields; JSON the reference would parse differently)
//! returns None and the caller takes the Python path, which stays the specification.

use std::borrow::Cow;
use std::collections::HashMap;

use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyString};

use super::{check, utf8, Rd, M};

const FILE_SCOPE: &str = "tether.file";
const ATTR_RECORD_ID: &str = "log.record.uid";
const ATTR_RECORD_OFFSET: &str = "log.file.record_offset";
const ATTR_FILE_PATH: &str = "log.file.path";
const ATTR_FILE_FINGERPRINT: &str = "tether.file.fingerprint";
const ATTR_PARSE_ERROR: &str = "tether.parse_error";
const ATTR_TRUNCATED: &str = "tether.truncated";
const ATTR_INVALID_UTF8: &str = "tether.invalid_utf8";
const ATTR_SERVICE_NAME: &str = "service.name";
const ATTR_AGENT_ID: &str = "tether.agent.id";

/// Deeper lines go to the reference: orjson.dumps, which encodes its documents, stops at 254
/// levels, and a line sits one level below the document.
const JSON_MAX_DEPTH: usize = 200;

// ------------------------------------------------------------------------------------------
// Protobuf: the request, read after check() validated each resource, scope and record as upb
// would, so that nothing python protobuf refuses is indexed here.

/// An AnyValue of the kinds handled here (collector.documents.any_value).
#[derive(Clone, Copy)]
enum Scalar<'a> {
    Null, // no value set: any_value() gives None
    Str(&'a str),
    Bool(bool),
    Int(i64),
}

impl Scalar<'_> {
    /// Python's bool() of the value.
    fn truthy(self) -> bool {
        match self {
            Scalar::Null => false,
            Scalar::Str(s) => !s.is_empty(),
            Scalar::Bool(b) => b,
            Scalar::Int(i) => i != 0,
        }
    }
    fn write_json(self, out: &mut Vec<u8>) {
        match self {
            Scalar::Null => out.extend_from_slice(b"null"),
            Scalar::Str(s) => json_str(out, s),
            Scalar::Bool(true) => out.extend_from_slice(b"true"),
            Scalar::Bool(false) => out.extend_from_slice(b"false"),
            Scalar::Int(i) => out.extend_from_slice(i.to_string().as_bytes()),
        }
    }
}

/// A string field of a message check() accepted, which validated its UTF-8 already.
fn text(b: &[u8]) -> &str {
    debug_assert!(std::str::from_utf8(b).is_ok());
    // SAFETY: only called on string fields (field numbers and wire types of the schema) of
    // resources, scopes and log records that check() accepted; it validates each as UTF-8.
    unsafe { std::str::from_utf8_unchecked(b) }
}

/// A wire-format reader of one message; any error means "not handled here".
fn reader(b: &[u8], m: M) -> Rd<'_> {
    Rd::new(b, b.as_ptr() as usize, m)
}

/// (field number, wire type) of the next field, or None for a known field of another wire type
/// (python protobuf would keep it as an unknown field: rare enough to leave to the reference).
fn next_tag(r: &mut Rd, m: M) -> Option<(u32, u8)> {
    let (f, wt) = r.tag().ok()?;
    match m.ty(f) {
        Some(ty) if ty.wire() != wt => None,
        _ => Some((f, wt)),
    }
}

fn fixed64(r: &mut Rd) -> Option<u64> {
    r.fixed(8).ok()?;
    Some(u64::from_le_bytes(r.b[r.i - 8..r.i].try_into().ok()?))
}

fn any_value(b: &[u8]) -> Option<Scalar<'_>> {
    let mut r = reader(b, M::AnyValue);
    // a oneof: the last member on the wire is the value
    let mut value = Some(Scalar::Null);
    while !r.done() {
        match next_tag(&mut r, M::AnyValue)? {
            (1, _) => value = Some(Scalar::Str(text(r.ld().ok()?))),
            (2, _) => value = Some(Scalar::Bool(r.varint().ok()? != 0)),
            (3, _) => value = Some(Scalar::Int(r.varint().ok()? as i64)),
            (f @ 4..=8, wt) => {
                r.skip(f, wt, 0).ok()?;
                value = None; // doubles, arrays, kvlists, bytes: the reference's
            }
            (f, wt) => r.skip(f, wt, 0).ok()?,
        }
    }
    value
}

/// KeyValue list entries -> {key: value} with Python dict semantics: a repeated key keeps its
/// first position and takes its last value.
fn put_attribute<'a>(attrs: &mut Vec<(&'a str, Scalar<'a>)>, kv: &'a [u8]) -> Option<()> {
    let mut r = reader(kv, M::KeyValue);
    let (mut key, mut value, mut seen_value) = ("", Scalar::Null, false);
    while !r.done() {
        match next_tag(&mut r, M::KeyValue)? {
            (1, _) => key = text(r.ld().ok()?),
            (2, _) if !seen_value => {
                value = any_value(r.ld().ok()?)?;
                seen_value = true;
            }
            (2, _) => return None, // a repeated message field merges: the reference's
            (f, wt) => r.skip(f, wt, 0).ok()?,
        }
    }
    match attrs.iter_mut().find(|(k, _)| *k == key) {
        Some(slot) => slot.1 = value,
        None => attrs.push((key, value)),
    }
    Some(())
}

fn take<'a>(attrs: &mut Vec<(&'a str, Scalar<'a>)>, key: &str) -> Option<Scalar<'a>> {
    let i = attrs.iter().position(|(k, _)| *k == key)?;
    Some(attrs.remove(i).1)
}

/// A single-occurrence message field; a repeated one would merge (left to the reference).
fn once<'a>(slot: &mut Option<&'a [u8]>, r: &mut Rd<'a>) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(r.ld().ok()?);
    Some(())
}

struct Resource<'a> {
    service: &'a str,
    agent_id: &'a str,
    json: Vec<u8>, // {"attributes":{...}}
}

/// A record's id: an older agent's `log.record.uid`, or made of its offset (a range of Out::ids).
enum RecordId<'a> {
    Uid(&'a str),
    Made(usize, usize),
}

struct Rec<'a> {
    resource: usize,
    record_id: RecordId<'a>,
    timestamp_ns: u64,
    level: String,
    trace_id: &'a [u8],
    span_id: &'a [u8],
    parse_error: bool,
    truncated: bool,
    invalid_utf8: bool,
    head: (usize, usize), // its range in Out::heads
}

struct Out<'a> {
    resources: Vec<Resource<'a>>,
    records: Vec<Rec<'a>>,
    heads: Vec<u8>,
    ids: Vec<u8>, // the records' ids made of their offsets, one after the other (UTF-8)
}

fn request<'a>(body: &'a [u8], mapping: &Mapping) -> Option<Out<'a>> {
    let mut out = Out {
        resources: Vec::new(),
        records: Vec::new(),
        heads: Vec::with_capacity(body.len() * 2),
        ids: Vec::new(),
    };
    let mut r = reader(body, M::LogsRequest);
    while !r.done() {
        match next_tag(&mut r, M::LogsRequest)? {
            (1, _) => resource_logs(r.ld().ok()?, mapping, &mut out)?,
            _ => return None, // unknown fields: the reference's
        }
    }
    Some(out)
}

fn resource_logs<'a>(b: &'a [u8], mapping: &Mapping, out: &mut Out<'a>) -> Option<()> {
    let mut r = reader(b, M::ResourceLogs);
    let mut resource = None;
    let mut scopes: Vec<&'a [u8]> = Vec::new();
    while !r.done() {
        match next_tag(&mut r, M::ResourceLogs)? {
            (1, _) => once(&mut resource, &mut r)?,
            (2, _) => scopes.push(r.ld().ok()?),
            (3, _) => {
                if !utf8(r.ld().ok()?) {
                    return None;
                }
            }
            _ => return None,
        }
    }
    let mut attrs: Vec<(&'a str, Scalar<'a>)> = Vec::new();
    if let Some(resource) = resource {
        check(resource, resource.as_ptr() as usize, M::Resource, 2, 0).ok()?;
        let mut r = reader(resource, M::Resource);
        while !r.done() {
            match next_tag(&mut r, M::Resource)? {
                (1, _) => put_attribute(&mut attrs, r.ld().ok()?)?,
                (f, wt) => r.skip(f, wt, 2).ok()?,
            }
        }
    }
    // str(resource.get(...)) of anything but a string is rare: the reference's
    let text = |key: &str| match attrs.iter().find(|(k, _)| *k == key) {
        None => Some(""),
        Some((_, Scalar::Str(s))) => Some(*s),
        Some(_) => None,
    };
    let (service, agent_id) = (text(ATTR_SERVICE_NAME)?, text(ATTR_AGENT_ID)?);
    let mut json = b"{\"attributes\":".to_vec();
    scalar_object(&mut json, &attrs);
    json.push(b'}');
    out.resources.push(Resource {
        service,
        agent_id,
        json,
    });
    let index = out.resources.len() - 1;
    for s in scopes {
        scope_logs(s, index, mapping, out)?;
    }
    Some(())
}

fn scope_logs<'a>(b: &'a [u8], resource: usize, mapping: &Mapping, out: &mut Out<'a>) -> Option<()> {
    let mut r = reader(b, M::ScopeLogs);
    let mut scope = None;
    let mut records: Vec<&'a [u8]> = Vec::new();
    while !r.done() {
        match next_tag(&mut r, M::ScopeLogs)? {
            (1, _) => once(&mut scope, &mut r)?,
            (2, _) => records.push(r.ld().ok()?),
            (3, _) => {
                if !utf8(r.ld().ok()?) {
                    return None;
                }
            }
            _ => return None,
        }
    }
    // OTLP logs (any other scope) are the reference's
    let scope = scope?;
    check(scope, scope.as_ptr() as usize, M::Scope, 3, 0).ok()?;
    let mut r = reader(scope, M::Scope);
    let mut name = "";
    let mut attrs: Vec<(&'a str, Scalar<'a>)> = Vec::new();
    while !r.done() {
        match next_tag(&mut r, M::Scope)? {
            (1, _) => name = text(r.ld().ok()?),
            (3, _) => put_attribute(&mut attrs, r.ld().ok()?)?,
            (f, wt) => r.skip(f, wt, 3).ok()?,
        }
    }
    if name != FILE_SCOPE {
        return None;
    }
    let file = FileScope {
        id_prefix: match attrs.iter().find(|(k, _)| *k == ATTR_FILE_FINGERPRINT) {
            Some((_, Scalar::Str(fingerprint))) => {
                Some(format!("{}:{fingerprint}:", out.resources[resource].agent_id))
            }
            _ => None,
        },
        path: attrs.iter().find(|(k, _)| *k == ATTR_FILE_PATH).map(|(_, v)| *v),
    };
    for record in records {
        log_record(record, resource, &file, mapping, out)?;
    }
    Some(())
}

/// The file scope's attributes, shared by its records: the agent sends them once per scope.
struct FileScope<'a> {
    id_prefix: Option<String>, // "agent_id:fingerprint:"; only a string fingerprint makes ids
    path: Option<Scalar<'a>>,
}

fn log_record<'a>(
    b: &'a [u8],
    resource: usize,
    file: &FileScope<'a>,
    mapping: &Mapping,
    out: &mut Out<'a>,
) -> Option<()> {
    check(b, b.as_ptr() as usize, M::LogRecord, 3, 0).ok()?;
    let mut r = reader(b, M::LogRecord);
    let (mut time, mut observed, mut severity_number) = (0u64, 0u64, 0i32);
    let (mut severity_text, mut trace_id, mut span_id): (&[u8], &[u8], &[u8]) = (b"", b"", b"");
    let mut body = None;
    let mut attrs: Vec<(&'a str, Scalar<'a>)> = Vec::new();
    while !r.done() {
        match next_tag(&mut r, M::LogRecord)? {
            (1, _) => time = fixed64(&mut r)?,
            (2, _) => severity_number = i32::try_from(r.varint().ok()?).ok()?,
            (3, _) => severity_text = r.ld().ok()?,
            (5, _) => once(&mut body, &mut r)?,
            (6, _) => put_attribute(&mut attrs, r.ld().ok()?)?,
            (9, _) => trace_id = r.ld().ok()?,
            (10, _) => span_id = r.ld().ok()?,
            (11, _) => observed = fixed64(&mut r)?,
            (f, wt) => r.skip(f, wt, 3).ok()?,
        }
    }
    // The body must be a string (structured bodies are the reference's).
    let Scalar::Str(body) = any_value(body?)? else {
        return None;
    };
    // Non-ASCII levels: Python's str.lower() is the reference.
    if !severity_text.is_ascii() {
        return None;
    }
    let level = std::str::from_utf8(severity_text).ok()?.to_ascii_lowercase();

    // dict.pop in the reference: each is removed from the attributes whatever its value
    let uid = take(&mut attrs, ATTR_RECORD_ID);
    // ... but the offset only when it can make an id: an int, under a string fingerprint
    let offset = match (&file.id_prefix, attrs.iter().position(|(k, _)| *k == ATTR_RECORD_OFFSET)) {
        (Some(prefix), Some(i)) => match attrs[i].1 {
            Scalar::Int(offset) => {
                attrs.remove(i);
                Some((prefix, offset))
            }
            _ => None,
        },
        _ => None,
    };
    let record_id = match (uid, offset) {
        (Some(Scalar::Str(s)), _) if !s.is_empty() => RecordId::Uid(s),
        (None | Some(Scalar::Str(_)), Some((prefix, offset))) => {
            // one buffer for all ids: a format!ted String per record made building ~10 % slower
            let start = out.ids.len();
            out.ids.extend_from_slice(prefix.as_bytes());
            if offset < 0 {
                out.ids.push(b'-');
            }
            digits(&mut out.ids, offset.unsigned_abs(), 1);
            RecordId::Made(start, out.ids.len())
        }
        _ => return None, // no record id: a content-hash id, the reference's (or str() of a non-string)
    };
    let parse_error = take(&mut attrs, ATTR_PARSE_ERROR).is_some_and(Scalar::truthy);
    // a record's own path (the old layout), even without a value, before its scope's
    let file_path = take(&mut attrs, ATTR_FILE_PATH).or(file.path);
    let truncated = take(&mut attrs, ATTR_TRUNCATED).is_some_and(Scalar::truthy);
    let invalid_utf8 = take(&mut attrs, ATTR_INVALID_UTF8).is_some_and(Scalar::truthy);
    let timestamp_ns = if time != 0 { time } else { observed };

    let h = &mut out.heads;
    let start = h.len();
    h.extend_from_slice(b"{\"@timestamp\":\"");
    iso_timestamp(h, timestamp_ns);
    h.extend_from_slice(b"\",\"log\":{\"level\":");
    json_str(h, &level);
    match file_path {
        None | Some(Scalar::Null) => {}
        Some(path) => {
            h.extend_from_slice(b",\"file\":{\"path\":");
            path.write_json(h);
            h.push(b'}');
        }
    }
    h.extend_from_slice(b"},\"event\":{\"severity\":");
    if severity_number < 0 {
        h.push(b'-');
    }
    digits(h, u64::from(severity_number.unsigned_abs()), 1);
    h.extend_from_slice(b"},\"resource\":");
    h.extend_from_slice(&out.resources[resource].json);
    if parse_error {
        h.extend_from_slice(b",\"message\":");
        json_str(h, body);
    } else {
        expand_json_line(h, body, mapping)?;
    }
    if !attrs.is_empty() {
        h.extend_from_slice(b",\"attributes\":");
        scalar_object(h, &attrs);
    }
    if !trace_id.is_empty() {
        h.extend_from_slice(b",\"trace\":{\"id\":\"");
        hex(h, trace_id);
        h.extend_from_slice(b"\"}");
    }
    h.push(b',');
    let head = (start, h.len());
    out.records.push(Rec {
        resource,
        record_id,
        timestamp_ns,
        level,
        trace_id,
        span_id,
        parse_error,
        truncated,
        invalid_utf8,
        head,
    });
    Some(())
}

// ------------------------------------------------------------------------------------------
// JSON output

fn json_str(out: &mut Vec<u8>, s: &str) {
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

fn scalar_object(out: &mut Vec<u8>, attrs: &[(&str, Scalar)]) {
    out.push(b'{');
    for (i, (k, v)) in attrs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_str(out, k);
        out.push(b':');
        v.write_json(out);
    }
    out.push(b'}');
}

fn hex(out: &mut Vec<u8>, b: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for &c in b {
        out.push(DIGITS[(c >> 4) as usize]);
        out.push(DIGITS[(c & 15) as usize]);
    }
}

fn hex_string(b: &[u8]) -> String {
    let mut out = Vec::with_capacity(2 * b.len());
    hex(&mut out, b);
    String::from_utf8(out).unwrap_or_default()
}

/// collector.documents.iso_timestamp: RFC 3339 UTC with nanoseconds (a u64 stays below 2555).
fn iso_timestamp(out: &mut Vec<u8>, ns: u64) {
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

/// `value` in decimal, zero-padded to `width` (format! was a few % of the document time).
fn digits(out: &mut Vec<u8>, mut value: u64, width: usize) {
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

// ------------------------------------------------------------------------------------------
// JSON lines: parsed into a tree that keeps each scalar's original text (copied verbatim, so no
// number is re-formatted) and resolves repeated keys like a Python dict (first position, last
// value: Elasticsearch refuses a document with a repeated key). Stricter than orjson where
// copying the text would not give orjson's value: integers beyond 64 bits (orjson makes them
// floats) are refused, and so the reference takes the line.

enum J<'a> {
    Atom(&'a str), // a string (with its quotes), number, true, false or null, as written
    Obj(Vec<(Key<'a>, J<'a>)>),
    Arr(Vec<J<'a>>),
}

struct Key<'a> {
    raw: &'a str, // with its quotes and escapes
    name: Cow<'a, str>,
}

impl<'a> J<'a> {
    fn is_container(&self) -> bool {
        !matches!(self, J::Atom(_))
    }
    fn get(&self, name: &str) -> Option<&J<'a>> {
        match self {
            J::Obj(items) => items.iter().find(|(k, _)| k.name == name).map(|(_, v)| v),
            _ => None,
        }
    }
    fn write(&self, out: &mut Vec<u8>) {
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
const INDEX_FROM: usize = 16;

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
        (self.depth <= JSON_MAX_DEPTH).then_some(())
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
                    index.extend(items.iter().enumerate().map(|(i, (k, _))| (k.name.clone(), i)));
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

fn parse_object(line: &str) -> Option<Vec<(Key<'_>, J<'_>)>> {
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

// ------------------------------------------------------------------------------------------
// The field mapping (schemas/log_fields.py) and collector.documents._expand_json_line

struct Name {
    full: String,
    parts: Vec<String>, // its dotted parts; empty for a flat name
}

struct Mapping {
    message: Vec<Name>,
    routing: Vec<Vec<Name>>, // timestamp, level, trace_id, span_id, service
    data: Vec<Name>,
}

impl Mapping {
    fn new(names: Vec<Vec<String>>) -> PyResult<Self> {
        if names.len() != 7 {
            return Err(PyValueError::new_err(
                "mapping: message, timestamp, level, trace_id, span_id, service, data",
            ));
        }
        let mut roles = names.into_iter().map(|role| {
            role.into_iter()
                .map(|full| {
                    let parts = if full.contains('.') {
                        full.split('.').map(str::to_owned).collect()
                    } else {
                        Vec::new()
                    };
                    Name { full, parts }
                })
                .collect::<Vec<_>>()
        });
        let message = roles.next().unwrap_or_default();
        let mut routing: Vec<Vec<Name>> = roles.collect();
        let data = routing.pop().unwrap_or_default();
        Ok(Mapping {
            message,
            routing,
            data,
        })
    }
}

/// LogFieldMapping.lookup: the first name present (flat key, else dotted path) and its value.
fn lookup<'t, 'a, 'm>(record: &'t J<'a>, names: &'m [Name], scalar: bool) -> Option<(&'m str, &'t J<'a>)> {
    for name in names {
        if let Some(v) = record.get(&name.full) {
            if scalar && v.is_container() {
                continue; // a flat key holding an object/array: the next name (no nested try)
            }
            return Some((&name.full, v));
        }
        if name.parts.is_empty() {
            continue;
        }
        let mut node = record;
        let mut found = true;
        for part in &name.parts {
            match node.get(part) {
                Some(child) => node = child,
                None => {
                    found = false;
                    break;
                }
            }
        }
        if found {
            if scalar && node.is_container() {
                continue;
            }
            return Some((&name.full, node));
        }
    }
    None
}

fn position(items: &[(Key, J)], name: &str) -> Option<usize> {
    items.iter().position(|(k, _)| k.name == name)
}

/// documents._remove_nested: the path's leaf, then each parent it leaves empty.
fn remove_nested(node: &mut Vec<(Key, J)>, parts: &[&str]) {
    let Some(i) = position(node, parts[0]) else { return };
    if parts.len() == 1 {
        node.remove(i);
        return;
    }
    let J::Obj(child) = &mut node[i].1 else { return };
    remove_nested(child, &parts[1..]);
    if child.is_empty() {
        node.remove(i);
    }
}

/// Appends `,"message":...` and `,"data":{...}` as the reference's _expand_json_line gives them.
fn expand_json_line(out: &mut Vec<u8>, line: &str, mapping: &Mapping) -> Option<()> {
    let record = J::Obj(parse_object(line)?);
    let mut used: Vec<&str> = Vec::with_capacity(6);
    let mut message: Option<&str> = None;
    if let Some((key, value)) = lookup(&record, &mapping.message, false) {
        used.push(key);
        message = Some(match value {
            J::Atom(raw) if raw.starts_with('"') => *raw,
            // orjson.dumps of a non-string message: its text as a string, when that is the
            // value's text (true, false, null, an integer but -0); else the reference's
            J::Atom(raw) if !raw.starts_with(['-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']) => *raw,
            J::Atom(raw) if !raw.contains(['.', 'e', 'E']) && *raw != "-0" => *raw,
            _ => return None,
        });
    }
    for role in &mapping.routing {
        if let Some((key, _)) = lookup(&record, role, true) {
            used.push(key);
        }
    }
    let J::Obj(mut rest) = record else { return None };
    for path in &used {
        match position(&rest, path) {
            Some(i) => {
                rest.remove(i);
            }
            None => remove_nested(&mut rest, &path.split('.').collect::<Vec<_>>()),
        }
    }
    if let Some(raw) = message {
        out.extend_from_slice(b",\"message\":");
        if raw.starts_with('"') {
            out.extend_from_slice(raw.as_bytes());
        } else {
            out.push(b'"');
            out.extend_from_slice(raw.as_bytes());
            out.push(b'"');
        }
    }

    // data = dict(payload) or {data_key: payload}; then data.update(rest less data_key)
    let rest = J::Obj(rest);
    let found = lookup(&rest, &mapping.data, false);
    let data_key = found.map(|(k, _)| k);
    enum DataKey<'k> {
        Raw(&'k str),
        Text(&'k str),
    }
    let mut data: Vec<(&str, DataKey, &J)> = Vec::new();
    match found {
        Some((_, J::Obj(items))) => {
            data.extend(
                items
                    .iter()
                    .map(|(k, v)| (k.name.as_ref(), DataKey::Raw(k.raw), v)),
            );
        }
        Some((key, payload)) => data.push((key, DataKey::Text(key), payload)),
        None => {}
    }
    let J::Obj(rest_items) = &rest else { return None };
    let mut index: HashMap<&str, usize, ahash::RandomState> = HashMap::default();
    let mut indexed = false;
    for (k, v) in rest_items {
        let name = k.name.as_ref();
        if Some(name) == data_key {
            continue;
        }
        if !indexed && data.len() >= INDEX_FROM {
            index.extend(data.iter().enumerate().map(|(i, (n, _, _))| (*n, i)));
            indexed = true;
        }
        let existing = if indexed {
            index.get(name).copied()
        } else {
            data.iter().position(|(n, _, _)| *n == name)
        };
        match existing {
            Some(i) => data[i].2 = v,
            None => {
                if indexed {
                    index.insert(name, data.len());
                }
                data.push((name, DataKey::Raw(k.raw), v));
            }
        }
    }
    if !data.is_empty() {
        out.extend_from_slice(b",\"data\":{");
        for (i, (_, key, value)) in data.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            match key {
                DataKey::Raw(raw) => out.extend_from_slice(raw.as_bytes()),
                DataKey::Text(text) => json_str(out, text),
            }
            out.push(b':');
            value.write(out);
        }
        out.push(b'}');
    }
    Some(())
}

// ------------------------------------------------------------------------------------------
// Python

type Row<'py> = (
    Bound<'py, PyString>, // doc_id
    u64,                  // timestamp_ns
    Bound<'py, PyString>, // trace_id (hex, "" when absent)
    Bound<'py, PyString>, // span_id
    Bound<'py, PyDict>,   // source: the fields correlation changes
    Bound<'py, PyString>, // level
    Bound<'py, PyBytes>,  // head: every other field, `{"@timestamp":...,` (open, ends in a comma)
);

/// file_log_documents(value, mapping) -> [(doc_id, timestamp_ns, trace_id, span_id, source,
/// level, head)] or None when the request is not one handled here (the caller then runs
/// collector.documents.log_documents). `mapping`: the name tuples of message, timestamp, level,
/// trace_id, span_id, service and data. The GIL is released while reading and encoding.
#[pyfunction]
pub fn file_log_documents<'py>(
    py: Python<'py>,
    value: &Bound<'py, PyBytes>,
    mapping: Vec<Vec<String>>,
) -> PyResult<Option<Vec<Row<'py>>>> {
    let mapping = Mapping::new(mapping)?;
    let body: &[u8] = value.as_bytes();
    let Some(out) = py.detach(|| request(body, &mapping)) else {
        return Ok(None);
    };
    let resources: Vec<(Bound<PyString>, Bound<PyString>)> = out
        .resources
        .iter()
        .map(|r| (PyString::new(py, r.service), PyString::new(py, r.agent_id)))
        .collect();
    let mut levels: HashMap<&str, Bound<PyString>, ahash::RandomState> = HashMap::default();
    let empty = PyString::new(py, "");
    let mut rows = Vec::with_capacity(out.records.len());
    for rec in &out.records {
        let (service, agent_id) = &resources[rec.resource];
        let doc_id = PyString::new(
            py,
            match rec.record_id {
                RecordId::Uid(s) => s,
                // a UTF-8 prefix and ASCII digits
                RecordId::Made(start, end) => std::str::from_utf8(&out.ids[start..end])
                    .map_err(|e| PyValueError::new_err(e.to_string()))?,
            },
        );
        let trace_id = if rec.trace_id.is_empty() {
            empty.clone()
        } else {
            PyString::new(py, &hex_string(rec.trace_id))
        };
        let span_id = if rec.span_id.is_empty() {
            empty.clone()
        } else {
            PyString::new(py, &hex_string(rec.span_id))
        };
        let level = levels
            .entry(rec.level.as_str())
            .or_insert_with(|| PyString::new(py, &rec.level))
            .clone();
        let source = PyDict::new(py);
        let service_dict = PyDict::new(py);
        service_dict.set_item(intern!(py, "name"), service)?;
        source.set_item(intern!(py, "service"), service_dict)?;
        let tether = PyDict::new(py);
        tether.set_item(intern!(py, "record_id"), &doc_id)?;
        tether.set_item(intern!(py, "agent_id"), agent_id)?;
        tether.set_item(intern!(py, "parse_error"), PyBool::new(py, rec.parse_error))?;
        tether.set_item(intern!(py, "truncated"), PyBool::new(py, rec.truncated))?;
        tether.set_item(intern!(py, "invalid_utf8"), PyBool::new(py, rec.invalid_utf8))?;
        source.set_item(intern!(py, "tether"), tether)?;
        if !rec.span_id.is_empty() {
            let span = PyDict::new(py);
            span.set_item(intern!(py, "id"), &span_id)?;
            source.set_item(intern!(py, "span"), span)?;
        }
        let head = PyBytes::new(py, &out.heads[rec.head.0..rec.head.1]);
        rows.push((doc_id, rec.timestamp_ns, trace_id, span_id, source, level, head));
    }
    Ok(Some(rows))
}

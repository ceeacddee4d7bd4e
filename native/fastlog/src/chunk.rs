//! The agent's fast path: a chunk of newline-delimited JSON log lines -> per-partition OTLP
//! `ExportLogsServiceRequest` bytes. It must produce exactly the bytes of the Python reference
//! (agent/parse.py + agent/encode.py, wrapped by agent/chunks.py::PythonChunkEncoder);
//! tests/unit/test_chunk_encoders.py checks that byte for byte.
//!
//! Line rules (agent/chunks.py): split on \n; strip trailing \r; skip blank lines; a line longer
//! than max_line_bytes is cut there and flagged (or dropped, counted, with `drop_long_lines`); a
//! last piece without newline is a line of its own, flagged truncated when it is at least
//! max_line_bytes long (the head of an over-long line).

use std::borrow::Cow;
use std::collections::HashMap;

use pyo3::prelude::*;
use pyo3::types::PyFloat;

use crate::constants::{
    ATTR_AGENT_ID, ATTR_FILE_FINGERPRINT, ATTR_FILE_PATH, ATTR_INVALID_UTF8, ATTR_PARSE_ERROR,
    ATTR_RECORD_OFFSET, ATTR_SERVICE_NAME, ATTR_TRUNCATED, FILE_SCOPE,
};
use crate::field_mapping::{FieldMapping, Routing, ScanPlan};
use crate::hex::decode_id;
use crate::json_scan;
use crate::json_value::{Found, V};
use crate::timestamps::{parse_ts, Ts};
use crate::wire::{ld_len, put_ld, put_varint, varint_len};

// ------------------------------------------------------------------------------------------
// Field conversion (agent/parse.py)

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

/// _hex_id(value): an id only from a string of 2N hex digits.
#[inline]
fn id_of<const N: usize>(v: Option<&V>) -> Option<[u8; N]> {
    match v {
        Some(V::S(s)) => decode_id::<N>(s.as_bytes()),
        _ => None,
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

// ------------------------------------------------------------------------------------------
// The records, at the protobuf wire level

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

/// The encoded pieces every record or request of one chunk shares.
pub(crate) struct Consts {
    perr_attr: Vec<u8>, // field 6 (attributes) with its tag and length
    trunc_attr: Vec<u8>,
    inv_attr: Vec<u8>,
    offset_key: Vec<u8>, // KeyValue.key field (tag, len, "log.file.record_offset")
    agent_kv: Vec<u8>,   // Resource.attributes entry (tag 0x0a, len, KeyValue)
    scope: Vec<u8>,      // ScopeLogs.scope entry, with the file's path and fingerprint
}

impl Consts {
    pub(crate) fn new(agent_id: &str, fingerprint: &str, path: &str) -> Self {
        let wrap = |tag: u8, p: Vec<u8>| {
            let mut o = Vec::new();
            put_ld(&mut o, tag, &p);
            o
        };
        let mut offset_key = Vec::new();
        put_ld(&mut offset_key, 0x0a, ATTR_RECORD_OFFSET.as_bytes());
        let mut scope_inner = Vec::new();
        put_ld(&mut scope_inner, 0x0a, FILE_SCOPE.as_bytes());
        put_ld(
            &mut scope_inner,
            0x1a,
            &kv_string(ATTR_FILE_PATH, path.as_bytes()),
        );
        put_ld(
            &mut scope_inner,
            0x1a,
            &kv_string(ATTR_FILE_FINGERPRINT, fingerprint.as_bytes()),
        );
        Consts {
            perr_attr: wrap(0x32, kv_bool_true(ATTR_PARSE_ERROR)),
            trunc_attr: wrap(0x32, kv_bool_true(ATTR_TRUNCATED)),
            inv_attr: wrap(0x32, kv_bool_true(ATTR_INVALID_UTF8)),
            offset_key,
            agent_kv: wrap(0x0a, kv_string(ATTR_AGENT_ID, agent_id.as_bytes())),
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
// A chunk

/// The records of one partition, by service.
pub(crate) struct Group {
    partition: u32,
    services: Vec<(Vec<u8>, Vec<u8>)>, // (service name, concatenated log_records entries)
}

#[derive(Default, Debug, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) lines: u64,
    pub(crate) parse_errors: u64,
    pub(crate) truncated: u64,
    pub(crate) invalid_utf8: u64,
}

/// What encode_chunk was given, for one chunk.
pub(crate) struct Params<'a> {
    /// the file offset of the chunk's first byte
    pub(crate) base: u64,
    pub(crate) partitions: u64,
    pub(crate) untraced: u32,
    pub(crate) observed: u64,
    pub(crate) max_line: usize,
    /// long_lines: drop (count an over-long line, send nothing), else truncate
    pub(crate) drop_long_lines: bool,
    pub(crate) consts: &'a Consts,
    pub(crate) fields: &'a FieldMapping,
    pub(crate) plan: &'a ScanPlan,
    /// agent.parse.parse_timestamp, for timestamps not in the common forms; None -> 0
    pub(crate) ts_fallback: Option<&'a Py<PyAny>>,
}

/// How far `process` goes (a profiling aid; production runs FULL).
pub(crate) const STAGE_LINES: u8 = 1; // split lines + UTF-8
pub(crate) const STAGE_JSON: u8 = 2; // + JSON parse
pub(crate) const STAGE_FIELDS: u8 = 3; // + field extraction
pub(crate) const STAGE_FULL: u8 = 4; // + encoding

/// The chunk's records grouped by partition and service, with its counts.
pub(crate) fn process(chunk: &[u8], p: &Params, stage: u8) -> PyResult<(Vec<Group>, Counts)> {
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
        if truncated && p.drop_long_lines {
            // PythonChunkEncoder: counted before anything else looks at the line
            counts.truncated += 1;
            continue;
        }
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
        if stage == STAGE_LINES {
            std::hint::black_box(text);
            continue;
        }

        let mut found = Found::new();
        let parsed = json_scan::parse_line(text, &p.plan.keys, &mut found);
        if stage == STAGE_JSON {
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
                let m = p.plan;
                let ts = match parse_ts(m.lookup(Routing::Timestamp, found, mask)) {
                    Ts::Ns(ns) => ns,
                    Ts::Fallback => {
                        match (p.ts_fallback, m.lookup(Routing::Timestamp, found, mask)) {
                            (Some(f), Some(V::S(s))) => py_call_ts(f, s)?,
                            _ => 0,
                        }
                    }
                };
                if ts != 0 {
                    rec.time = ts;
                }
                level_buf = text_bytes(to_text(m.lookup(Routing::Level, found, mask)))?;
                rec.level = &level_buf;
                if !rec.level.is_empty() {
                    rec.sev = match sev_cache.get(rec.level) {
                        Some(&s) => s,
                        None => {
                            let lower = String::from_utf8_lossy(rec.level).to_lowercase();
                            let s = p.fields.severity.get(&lower).copied().unwrap_or(0);
                            sev_cache.insert(rec.level.to_vec(), s);
                            s
                        }
                    };
                }
                rec.trace = id_of::<16>(m.lookup(Routing::TraceId, found, mask));
                rec.span = id_of::<8>(m.lookup(Routing::SpanId, found, mask));
                service_buf = text_bytes(to_text(m.lookup(Routing::Service, found, mask)))?;
                service = &service_buf;
                partition = match &rec.trace {
                    Some(t) => {
                        (u64::from_be_bytes(t[8..16].try_into().unwrap()) % p.partitions) as u32
                    }
                    None => p.untraced,
                };
            }
        }
        if stage == STAGE_FIELDS {
            std::hint::black_box((&rec, partition, service));
            continue;
        }
        let gi = *group_of.entry(partition).or_insert_with(|| {
            groups.push(Group {
                partition,
                services: Vec::new(),
            });
            groups.len() - 1
        });
        let g = &mut groups[gi];
        let si = match g.services.iter().position(|(s, _)| s.as_slice() == service) {
            Some(i) => i,
            None => {
                g.services
                    .push((service.to_vec(), Vec::with_capacity(32 * 1024)));
                g.services.len() - 1
            }
        };
        put_record(&mut g.services[si].1, p.consts, &rec);
    }
    Ok((groups, counts))
}

/// Final ExportLogsServiceRequest of one partition, as pieces: (headers, records) per service.
pub(crate) struct Finished<'g> {
    pub(crate) partition: u32,
    /// the request's length
    pub(crate) len: usize,
    pieces: Vec<(Vec<u8>, &'g [u8])>,
}

impl Finished<'_> {
    /// The request's bytes into `buf` (`len` bytes): the group buffers are copied once, into the
    /// caller's bytes object.
    pub(crate) fn write_into(&self, buf: &mut [u8]) {
        let mut at = 0;
        for (head, records) in &self.pieces {
            buf[at..at + head.len()].copy_from_slice(head);
            at += head.len();
            buf[at..at + records.len()].copy_from_slice(records);
            at += records.len();
        }
    }
}

pub(crate) fn finish<'g>(group: &'g Group, c: &Consts) -> Finished<'g> {
    let mut len = 0;
    let mut pieces = Vec::new();
    for (service, records) in &group.services {
        let mut res_attrs = Vec::new();
        if !service.is_empty() {
            put_ld(&mut res_attrs, 0x0a, &kv_string(ATTR_SERVICE_NAME, service));
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
    Finished {
        partition: group.partition,
        len,
        pieces,
    }
}

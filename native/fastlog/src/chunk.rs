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

use crate::constants::{ATTR_SERVICE_NAME, DOCUMENT_JSON_MAX_DEPTH};
use crate::container_log::{self, Format};
use crate::field_mapping::{FieldMapping, Mask, Routing, ScanPlan};
use crate::hex::{decode_id, trace_context};
use crate::json_scan::{self, Member, Members, NO_SLOT};
use crate::json_value::{Found, V};
use crate::log_record::{kv_string, put_record, Consts, Rec};
use crate::timestamps::{parse_ts, parse_ts_str, Ts};
use crate::wire::{put_ld, put_varint};

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

/// body_keys.py: a line with more `{` and `[` than the collector's depth limit may be indexed as
/// its text, which must then be all of it.
#[inline]
fn deep_enough_for_text(line: &[u8]) -> bool {
    // every opening bracket is closed: fewer bytes than twice the limit cannot hold more
    line.len() > 2 * DOCUMENT_JSON_MAX_DEPTH
        && memchr::memchr2_iter(b'{', b'[', line).count() > DOCUMENT_JSON_MAX_DEPTH
}

/// Whether a role's value, when the line has one, is carried by the record (`check`).
#[inline]
fn carries(value: Option<&V>, check: impl FnOnce() -> bool) -> bool {
    value.is_none() || check()
}

/// A string of exactly `len` characters (a plain hex id: a traceparent or a Cloud trace name
/// says more than the record keeps, so such a line keeps its keys).
#[inline]
fn is_hex_of(value: Option<&V>, len: usize) -> bool {
    matches!(value, Some(V::S(s)) if s.len() == len)
}

/// agent/body_keys.py without_members: the line less every top-level member whose key slot is
/// in `keys`. Kept members that were neighbours keep the text between them; others are joined by
/// ','. Copied in runs: on a usual line the moved keys lead or trail, so one or two copies.
fn without_members(out: &mut Vec<u8>, line: &[u8], members: &[Member], keys: Mask) {
    out.clear();
    let (Some(first), Some(last)) = (members.first(), members.last()) else {
        out.extend_from_slice(line);
        return;
    };
    out.extend_from_slice(&line[..first.start as usize]);
    let mut run: Option<(usize, usize)> = None; // kept neighbours not yet copied
    let mut wrote = false;
    for m in members {
        let moved = m.slot != NO_SLOT && keys & ((1 as Mask) << m.slot) != 0;
        match (&mut run, moved) {
            (Some((_, end)), false) => *end = m.end as usize,
            (None, false) => run = Some((m.start as usize, m.end as usize)),
            (Some(_), true) => flush(out, line, run.take(), &mut wrote),
            (None, true) => {}
        }
    }
    flush(out, line, run, &mut wrote);
    out.extend_from_slice(&line[last.end as usize..]);
}

#[inline(always)]
fn flush(out: &mut Vec<u8>, line: &[u8], run: Option<(usize, usize)>, wrote: &mut bool) {
    if let Some((start, end)) = run {
        if *wrote {
            out.push(b',');
        }
        out.extend_from_slice(&line[start..end]);
        *wrote = true;
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

/// container_logs.runtime_time_ns: parse_timestamp of the text (invalid UTF-8 replaced).
#[inline(never)]
fn runtime_time_ns(text: &[u8], ts_fallback: Option<&Py<PyAny>>) -> PyResult<u64> {
    let text = String::from_utf8_lossy(text);
    Ok(match parse_ts_str(&text) {
        Ts::Ns(ns) => ns,
        Ts::Fallback => match ts_fallback {
            Some(f) => py_call_ts(f, &text)?,
            None => 0,
        },
    })
}

fn text_bytes<'t>(t: Text<'t>) -> PyResult<Cow<'t, [u8]>> {
    Ok(match t {
        Text::Str(s) => Cow::Borrowed(s.as_bytes()),
        Text::Owned(s) => Cow::Owned(s.into_bytes()),
        Text::PyFloat(x) => Cow::Owned(py_float_str(x)?.into_bytes()),
    })
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
    /// the file's format; the rest is of container log files only (container_log::unwrap)
    pub(crate) format: Format,
    pub(crate) skipping: u8,
    pub(crate) flush_before: u64,
    /// files.original_body false: the routing keys leave the body (agent/body_keys.py)
    pub(crate) move_keys: bool,
}

/// How far `process` goes (a profiling aid; production runs FULL).
pub(crate) const STAGE_LINES: u8 = 1; // split lines + UTF-8
pub(crate) const STAGE_JSON: u8 = 2; // + JSON parse
pub(crate) const STAGE_FIELDS: u8 = 3; // + field extraction
pub(crate) const STAGE_FULL: u8 = 4; // + encoding

/// The chunk's records grouped by partition and service, with its counts, and how much of the
/// chunk they stand for with the container streams skipped past it (container_log::Unwrapped).
pub(crate) fn process(
    chunk: &[u8],
    p: &Params,
    stage: u8,
) -> PyResult<(Vec<Group>, Counts, usize, u8)> {
    let mut sink = Sink {
        p,
        stage,
        groups: Vec::new(),
        group_of: HashMap::default(),
        counts: Counts::default(),
        chunk_utf8: std::str::from_utf8(chunk).is_ok(),
        sev_cache: HashMap::default(),
        body: Vec::new(),
        members: Members::new(),
    };
    // A container log's records (container_log::unwrap), else the chunk's lines. One loop and one
    // call of `line` for both: with two, LLVM no longer inlined the JSON scanner and the encoder
    // into it (3-5 % more instructions per plain line).
    let unwrapped = (p.format != Format::Plain).then(|| {
        container_log::unwrap(
            chunk,
            p.base,
            p.format,
            p.max_line,
            p.skipping,
            p.flush_before,
        )
    });
    // chunk_utf8 holds for the contents too: CRI contents are whole pieces of the lines (cut at
    // ASCII bytes, joined whole again), json-file ones decoded JSON strings; a truncated one is
    // checked by itself
    let mut next_record = 0usize;
    let mut pos = 0usize;
    let n = chunk.len();
    loop {
        let (mut raw, start_off, truncated, stream, runtime_time): (&[u8], u64, bool, u8, &[u8]);
        if let Some(u) = &unwrapped {
            let Some(r) = u.records.get(next_record) else {
                break;
            };
            next_record += 1;
            (raw, start_off, truncated) = (&r.content, r.offset, r.truncated);
            (stream, runtime_time) = (r.stream, &r.time_text);
        } else {
            if pos >= n {
                break;
            }
            let (end, next, is_tail) = match memchr::memchr(b'\n', &chunk[pos..]) {
                Some(i) => (pos + i, pos + i + 1, false),
                None => (n, n, true),
            };
            start_off = p.base + pos as u64;
            raw = &chunk[pos..end];
            pos = next;
            // FileSource._add_line; a tail without newline is the head of an over-long line when
            // it is at least max_line_bytes long ("continues")
            truncated = (is_tail && raw.len() >= p.max_line) || raw.len() > p.max_line;
            (stream, runtime_time) = (0, b"");
        }
        if truncated && p.drop_long_lines {
            // PythonChunkEncoder: counted before anything else looks at the line
            sink.counts.truncated += 1;
            continue;
        }
        if truncated && raw.len() > p.max_line {
            raw = &raw[..p.max_line];
        }
        while let [rest @ .., b'\r'] = raw {
            raw = rest;
        }
        if raw.iter().all(|&c| is_ascii_space(c)) {
            // the reference counts a blank over-long container record, not a blank plain line
            sink.counts.truncated += (truncated && unwrapped.is_some()) as u64;
            continue;
        }
        sink.counts.truncated += truncated as u64;
        sink.line(raw, start_off, truncated, stream, runtime_time)?;
    }
    Ok(match unwrapped {
        Some(u) => (sink.groups, sink.counts, u.consumed, u.skipping),
        None => (sink.groups, sink.counts, n, 0),
    })
}

/// What the lines of one chunk build up.
struct Sink<'s, 'p> {
    p: &'s Params<'p>,
    stage: u8,
    groups: Vec<Group>,
    group_of: HashMap<u32, usize, ahash::RandomState>,
    counts: Counts,
    /// the whole chunk is UTF-8 (a line of it needs no check of its own)
    chunk_utf8: bool,
    sev_cache: HashMap<Vec<u8>, i32, ahash::RandomState>,
    /// a line's body without its routing keys, reused from line to line
    body: Vec<u8>,
    members: Members,
}

impl Sink<'_, '_> {
    /// One line (cut, without trailing \r, not blank) -> a record of its partition and service.
    /// `stream` and `runtime_time` are a container record's (container_log::Record), else 0, b"".
    #[inline(always)]
    fn line(
        &mut self,
        raw: &[u8],
        start_off: u64,
        truncated: bool,
        stream: u8,
        runtime_time: &[u8],
    ) -> PyResult<()> {
        let p = self.p;
        self.counts.lines += 1;

        // text: the line decoded (invalid bytes replaced, flagged)
        let owned: String;
        let (text, inv): (&str, bool) = if self.chunk_utf8 && !truncated {
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
        self.counts.invalid_utf8 += inv as u64;
        if self.stage == STAGE_LINES {
            std::hint::black_box(text);
            return Ok(());
        }

        let mut found = Found::new();
        self.members.clear();
        let members = p.move_keys.then_some(&mut self.members);
        let parsed = json_scan::parse_line_members(text, &p.plan.keys, &mut found, members);
        if self.stage == STAGE_JSON {
            std::hint::black_box((&found, &parsed));
            return Ok(());
        }

        let mut rec = Rec {
            time: p.observed,
            sev: 0,
            level: b"",
            body: text.as_bytes(),
            offset: start_off,
            stream: self.p.consts.stream_attr(stream),
            perr: false,
            trunc: truncated,
            inv,
            trace: None,
            span: None,
            observed: p.observed,
            moved: false,
        };
        let level_buf: Cow<[u8]>;
        let service_buf: Cow<[u8]>;
        let partition: u32;
        let service: &[u8];
        let mut has_time = false;
        match parsed {
            // plain text is a message; only a line that starts as a JSON object failed to parse
            None if !text
                .trim_start_matches([' ', '\t', '\r', '\n'])
                .starts_with('{') =>
            {
                partition = p.untraced;
                service = b"";
            }
            None => {
                self.counts.parse_errors += 1;
                rec.perr = true;
                partition = p.untraced;
                service = b"";
            }
            Some(mask) => {
                let found = &found;
                let m = p.plan;
                let ts_at = m.lookup_at(Routing::Timestamp, found, mask);
                let ts_value = ts_at.map(|(v, _)| v);
                let ts = match parse_ts(ts_value) {
                    Ts::Ns(ns) => ns,
                    Ts::Fallback => match (p.ts_fallback, ts_value) {
                        (Some(f), Some(V::S(s))) => py_call_ts(f, s)?,
                        _ => 0,
                    },
                };
                if ts != 0 {
                    rec.time = ts;
                    has_time = true;
                }
                let level_at = m.lookup_at(Routing::Level, found, mask);
                let level = level_at.map(|(v, _)| v);
                level_buf = text_bytes(to_text(level))?;
                rec.level = &level_buf;
                rec.sev = match level {
                    None if m.implies_level(found, mask) => p.fields.implied_severity,
                    Some(V::I(n)) => p.fields.numeric_levels.get(n).copied().unwrap_or(0),
                    Some(V::U(n)) => i64::try_from(*n)
                        .ok()
                        .and_then(|n| p.fields.numeric_levels.get(&n).copied())
                        .unwrap_or(0),
                    _ if rec.level.is_empty() => 0,
                    _ => match self.sev_cache.get(rec.level) {
                        Some(&s) => s,
                        None => {
                            let s = p
                                .fields
                                .severity_number(&String::from_utf8_lossy(rec.level));
                            self.sev_cache.insert(rec.level.to_vec(), s);
                            s
                        }
                    },
                };
                let trace_at = m.lookup_at(Routing::TraceId, found, mask);
                let trace_value = trace_at.map(|(v, _)| v);
                let (trace, parent_span) = match trace_value {
                    Some(V::S(s)) => trace_context(s),
                    _ => (None, None),
                };
                let span_at = m.lookup_at(Routing::SpanId, found, mask);
                let span_value = span_at.map(|(v, _)| v);
                let span = id_of::<8>(span_value);
                rec.span = if span.is_some() || trace.is_none() {
                    span
                } else {
                    parent_span
                };
                rec.trace = trace;
                let service_at = m.lookup_at(Routing::Service, found, mask);
                let service_value = service_at.map(|(v, _)| v);
                if p.move_keys && !truncated && !inv && !deep_enough_for_text(text.as_bytes()) {
                    let at = [ts_at, level_at, trace_at, span_at, service_at]
                        .map(|a| a.map(|(_, at)| at));
                    if let Some(keys) = m.movable_keys(&at, found, mask) {
                        let carried = keys != 0
                            && carries(ts_value, || ts != 0)
                            && carries(level, || !rec.level.is_empty())
                            && carries(trace_value, || {
                                is_hex_of(trace_value, 32) && rec.trace.is_some()
                            })
                            && carries(span_value, || span.is_some())
                            && carries(service_value, || {
                                !matches!(to_text(service_value), Text::Str(""))
                            });
                        if carried {
                            without_members(&mut self.body, text.as_bytes(), &self.members, keys);
                            rec.moved = true;
                        }
                    }
                }
                let service_value = service_value.or_else(|| m.conditional_service(found, mask));
                service_buf = text_bytes(to_text(service_value))?;
                service = &service_buf;
                partition = match &rec.trace {
                    Some(t) => {
                        (u64::from_be_bytes(t[8..16].try_into().unwrap()) % p.partitions) as u32
                    }
                    None => p.untraced,
                };
            }
        }
        if !has_time && !runtime_time.is_empty() {
            // a container record: the runtime's time when the content has none
            let ns = runtime_time_ns(runtime_time, p.ts_fallback)?;
            if ns != 0 {
                rec.time = ns;
            }
        }
        // a Kubernetes container's file: a line naming no service is the container's
        let service: &[u8] = if service.is_empty() {
            &p.consts.default_service
        } else {
            service
        };
        if self.stage == STAGE_FIELDS {
            std::hint::black_box((&rec, partition, service));
            return Ok(());
        }
        let gi = *self.group_of.entry(partition).or_insert_with(|| {
            self.groups.push(Group {
                partition,
                services: Vec::new(),
            });
            self.groups.len() - 1
        });
        let g = &mut self.groups[gi];
        let si = match g.services.iter().position(|(s, _)| s.as_slice() == service) {
            Some(i) => i,
            None => {
                g.services
                    .push((service.to_vec(), Vec::with_capacity(32 * 1024)));
                g.services.len() - 1
            }
        };
        if rec.moved {
            rec.body = &self.body;
        }
        put_record(&mut g.services[si].1, p.consts, &rec);
        Ok(())
    }
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
        res_attrs.extend_from_slice(&c.pod_kvs);
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

#[cfg(test)]
#[path = "chunk_tests.rs"]
pub(crate) mod tests;

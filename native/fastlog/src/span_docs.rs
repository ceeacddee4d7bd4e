//! The collector's fast path for spans: an ExportTraceServiceRequest (a Kafka record value) ->
//! per span the values correlation and the RED metrics read, and every field of its
//! Elasticsearch document but `span` (which correlation extends with the span's logs) and
//! `tether` (sampling and timestamp flags) already JSON-encoded. The reference is
//! collector/documents.py::span_documents; tests/unit/test_collector_native_spans.py compares
//! the two document by document.
//!
//! Scalar attribute values only (strings, integers, booleans, none); anything else (doubles,
//! arrays, maps, bytes, merged or unknown fields) returns None and the caller takes the Python
//! path, which stays the specification.

use crate::constants::ATTR_SERVICE_NAME;
use crate::hex::write_hex;
use crate::json_write::{digits, json_str};
use crate::otlp_schema::{check, M};
use crate::otlp_values::{
    container, kubernetes_fields, next_tag, once, put_attribute, reader, resource_attributes,
    scalar_object, text, text_attribute, Scalar,
};
use crate::timestamps::iso_timestamp;

/// One span document: what Python reads of it, and where its JSON head is.
pub(crate) struct SpanRec<'a> {
    pub(crate) trace_id: &'a [u8],
    pub(crate) span_id: &'a [u8],
    pub(crate) parent_id: &'a [u8],
    pub(crate) name: &'a str,
    pub(crate) kind: &'static str,
    pub(crate) status: &'static str,
    pub(crate) status_message: &'a str,
    pub(crate) start_ns: u64,
    pub(crate) duration_ns: u64,
    pub(crate) service: &'a str,
    pub(crate) head: (usize, usize), // its range in SpanOut::heads
}

/// The span documents of one request.
pub(crate) struct SpanOut<'a> {
    pub(crate) spans: Vec<SpanRec<'a>>,
    pub(crate) heads: Vec<u8>,
}

impl SpanOut<'_> {
    /// A span's head: every field but `span` and `tether`, `{"@timestamp":...,` (open, ending
    /// in a comma).
    pub(crate) fn head(&self, span: &SpanRec) -> &[u8] {
        &self.heads[span.head.0..span.head.1]
    }
}

/// The span documents of a request, or None when it is not one handled here.
pub(crate) fn request(body: &[u8]) -> Option<SpanOut<'_>> {
    let mut out = SpanOut {
        spans: Vec::new(),
        heads: Vec::with_capacity(body.len() * 2),
    };
    let mut r = reader(body, M::TracesRequest);
    while !r.done() {
        match next_tag(&mut r, M::TracesRequest)? {
            (1, _) => resource_spans(r.ld().ok()?, &mut out)?,
            _ => return None, // unknown fields: the reference's
        }
    }
    Some(out)
}

/// What a resource gives each of its spans' documents.
struct ResourceJson<'a> {
    service: &'a str,
    // ,"resource":{"attributes":{...}},"service":{"name":...},"k8s":{...} (the last two if any)
    tail: Vec<u8>,
}

fn resource_spans<'a>(b: &'a [u8], out: &mut SpanOut<'a>) -> Option<()> {
    let (resource, scopes) = container(b, M::ResourceSpans)?;
    let attrs = resource_attributes(resource)?;
    let service = text_attribute(&attrs, ATTR_SERVICE_NAME)?;
    let mut tail = b",\"resource\":{\"attributes\":".to_vec();
    scalar_object(&mut tail, &attrs);
    tail.push(b'}');
    if !service.is_empty() {
        tail.extend_from_slice(b",\"service\":{\"name\":");
        json_str(&mut tail, service);
        tail.push(b'}');
    }
    tail.extend_from_slice(&kubernetes_fields(&attrs));
    let resource = ResourceJson { service, tail };
    for s in scopes {
        scope_spans(s, &resource, out)?;
    }
    Some(())
}

fn scope_spans<'a>(b: &'a [u8], resource: &ResourceJson<'a>, out: &mut SpanOut<'a>) -> Option<()> {
    let (scope, spans) = container(b, M::ScopeSpans)?;
    let (mut name, mut version) = ("", "");
    if let Some(scope) = scope {
        check(scope, scope.as_ptr() as usize, M::Scope, 3, []).ok()?;
        let mut r = reader(scope, M::Scope);
        while !r.done() {
            match next_tag(&mut r, M::Scope)? {
                (1, _) => name = text(r.ld().ok()?),
                (2, _) => version = text(r.ld().ok()?),
                (f, wt) => r.skip(f, wt, 3).ok()?,
            }
        }
    }
    // ,"scope":{"name":...,"version":...} with the ones set, or nothing
    let mut scope_json = Vec::new();
    if !name.is_empty() || !version.is_empty() {
        scope_json.extend_from_slice(b",\"scope\":{");
        if !name.is_empty() {
            scope_json.extend_from_slice(b"\"name\":");
            json_str(&mut scope_json, name);
        }
        if !version.is_empty() {
            if !name.is_empty() {
                scope_json.push(b',');
            }
            scope_json.extend_from_slice(b"\"version\":");
            json_str(&mut scope_json, version);
        }
        scope_json.push(b'}');
    }
    for span in spans {
        span_document(span, resource, &scope_json, out)?;
    }
    Some(())
}

/// documents.SPAN_KINDS: SpanKind's name, lowercased, without its prefix.
fn kind_name(kind: u64) -> &'static str {
    const KINDS: [&str; 6] = [
        "unspecified",
        "internal",
        "server",
        "client",
        "producer",
        "consumer",
    ];
    KINDS.get(kind as usize).copied().unwrap_or("unspecified")
}

/// documents.STATUS_CODES: StatusCode's name without its prefix; any other code is UNSET.
fn status_name(code: u64) -> &'static str {
    match code {
        1 => "OK",
        2 => "ERROR",
        _ => "UNSET",
    }
}

/// An enum field as python protobuf reads it (an int32); None for a value it would truncate
/// or read as negative (rare enough to leave to the reference).
fn enum_value(v: u64) -> Option<u64> {
    (v <= i32::MAX as u64).then_some(v)
}

fn span_document<'a>(
    b: &'a [u8],
    resource: &ResourceJson<'a>,
    scope_json: &[u8],
    out: &mut SpanOut<'a>,
) -> Option<()> {
    check(b, b.as_ptr() as usize, M::Span, 3, []).ok()?;
    let mut r = reader(b, M::Span);
    let (mut trace_id, mut span_id, mut parent_id): (&[u8], &[u8], &[u8]) = (b"", b"", b"");
    let (mut name, mut kind, mut start, mut end) = ("", 0u64, 0u64, 0u64);
    let mut attrs: Vec<(&'a str, Scalar<'a>)> = Vec::new();
    let mut events: Vec<&'a [u8]> = Vec::new();
    let mut status = None;
    while !r.done() {
        match next_tag(&mut r, M::Span)? {
            (1, _) => trace_id = r.ld().ok()?,
            (2, _) => span_id = r.ld().ok()?,
            (4, _) => parent_id = r.ld().ok()?,
            (5, _) => name = text(r.ld().ok()?),
            (6, _) => kind = enum_value(r.varint().ok()?)?,
            (7, _) => start = r.fixed64().ok()?,
            (8, _) => end = r.fixed64().ok()?,
            (9, _) => put_attribute(&mut attrs, r.ld().ok()?)?,
            (11, _) => events.push(r.ld().ok()?),
            (15, _) => once(&mut status, &mut r)?,
            (f, wt) => r.skip(f, wt, 3).ok()?,
        }
    }
    let (mut code, mut status_message) = (0u64, "");
    if let Some(status) = status {
        let mut r = reader(status, M::Status);
        while !r.done() {
            match next_tag(&mut r, M::Status)? {
                (2, _) => status_message = text(r.ld().ok()?),
                (3, _) => code = enum_value(r.varint().ok()?)?,
                (f, wt) => r.skip(f, wt, 4).ok()?,
            }
        }
    }
    let status = status_name(code);
    let duration_ns = end.saturating_sub(start);

    let h = &mut out.heads;
    let begin = h.len();
    h.extend_from_slice(b"{\"@timestamp\":\"");
    iso_timestamp(h, start);
    h.extend_from_slice(b"\",\"trace\":{\"id\":\"");
    write_hex(h, trace_id);
    h.extend_from_slice(b"\"},\"event\":{\"duration\":");
    digits(h, duration_ns, 1);
    h.extend_from_slice(match status {
        "OK" => b",\"outcome\":\"success\"}".as_slice(),
        "ERROR" => b",\"outcome\":\"failure\"}",
        _ => b",\"outcome\":\"unknown\"}",
    });
    h.extend_from_slice(scope_json);
    h.extend_from_slice(b",\"attributes\":");
    scalar_object(h, &attrs);
    h.extend_from_slice(&resource.tail);
    if !parent_id.is_empty() {
        h.extend_from_slice(b",\"parent\":{\"id\":\"");
        write_hex(h, parent_id);
        h.extend_from_slice(b"\"}");
    }
    if !events.is_empty() {
        h.extend_from_slice(b",\"events\":[");
        for (i, event) in events.into_iter().enumerate() {
            if i > 0 {
                h.push(b',');
            }
            span_event(h, event)?;
        }
        h.push(b']');
    }
    h.push(b',');
    out.spans.push(SpanRec {
        trace_id,
        span_id,
        parent_id,
        name,
        kind: kind_name(kind),
        status,
        status_message,
        start_ns: start,
        duration_ns,
        service: resource.service,
        head: (begin, h.len()),
    });
    Some(())
}

/// One of `events`: {"name":...,"time":...,"attributes":{...}}.
fn span_event(h: &mut Vec<u8>, b: &[u8]) -> Option<()> {
    let mut r = reader(b, M::Event);
    let (mut time, mut name) = (0u64, "");
    let mut attrs = Vec::new();
    while !r.done() {
        match next_tag(&mut r, M::Event)? {
            (1, _) => time = r.fixed64().ok()?,
            (2, _) => name = text(r.ld().ok()?),
            (3, _) => put_attribute(&mut attrs, r.ld().ok()?)?,
            (f, wt) => r.skip(f, wt, 4).ok()?,
        }
    }
    h.extend_from_slice(b"{\"name\":");
    json_str(h, name);
    h.extend_from_slice(b",\"time\":\"");
    iso_timestamp(h, time);
    h.extend_from_slice(b"\",\"attributes\":");
    scalar_object(h, &attrs);
    h.push(b'}');
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::put_ld;

    fn ld(out: &mut Vec<u8>, field: u8, payload: &[u8]) {
        put_ld(out, field << 3 | 2, payload);
    }

    fn fixed64(out: &mut Vec<u8>, field: u8, v: u64) {
        out.push(field << 3 | 1);
        out.extend_from_slice(&v.to_le_bytes());
    }

    /// request { resource_spans { scope_spans { spans: span } } }
    fn wrap(span: &[u8]) -> Vec<u8> {
        let (mut scope_spans, mut resource_spans, mut req) = (Vec::new(), Vec::new(), Vec::new());
        ld(&mut scope_spans, 2, span);
        ld(&mut resource_spans, 2, &scope_spans);
        ld(&mut req, 1, &resource_spans);
        req
    }

    #[test]
    fn a_span_becomes_its_head_and_the_values_python_reads() {
        let mut span = Vec::new();
        ld(&mut span, 1, &[0xab; 16]);
        ld(&mut span, 2, &[0x01; 8]);
        ld(&mut span, 5, b"GET /");
        span.extend_from_slice(&[6 << 3, 2]); // kind: server
        fixed64(&mut span, 7, 1_000_000_000);
        fixed64(&mut span, 8, 1_000_002_000);
        let mut status = Vec::new();
        status.extend_from_slice(&[3 << 3, 2]); // ERROR
        ld(&mut span, 15, &status);
        let body = wrap(&span);
        let out = request(&body).expect("handled here");
        let [rec] = &out.spans[..] else {
            panic!("one span")
        };
        assert_eq!(
            (rec.kind, rec.status, rec.duration_ns),
            ("server", "ERROR", 2000)
        );
        assert_eq!(rec.service, "");
        let head = std::str::from_utf8(out.head(rec)).unwrap();
        assert_eq!(
            head,
            format!(
                "{{\"@timestamp\":\"1970-01-01T00:00:01.000000000Z\",\"trace\":{{\"id\":\"{}\"}},\
                 \"event\":{{\"duration\":2000,\"outcome\":\"failure\"}},\"attributes\":{{}},\
                 \"resource\":{{\"attributes\":{{}}}},",
                "ab".repeat(16)
            )
        );
    }

    #[test]
    fn doubles_and_enums_out_of_int32_are_left_to_the_reference() {
        let mut double = Vec::new(); // attributes { key: "d" value { double_value: 0.5 } }
        let mut value = vec![4 << 3 | 1];
        value.extend_from_slice(&0.5f64.to_le_bytes());
        let mut pair = Vec::new();
        ld(&mut pair, 1, b"d");
        ld(&mut pair, 2, &value);
        ld(&mut double, 9, &pair);
        assert!(request(&wrap(&double)).is_none());
        let mut kind = vec![6 << 3];
        kind.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x08]); // 2**31
        assert!(request(&wrap(&kind)).is_none());
    }
}

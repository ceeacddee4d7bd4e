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

use crate::constants::{
    ATTR_AGENT_ID, ATTR_FILE_FINGERPRINT, ATTR_FILE_PATH, ATTR_INVALID_UTF8, ATTR_KEYS_MOVED,
    ATTR_LOG_IOSTREAM, ATTR_PARSE_ERROR, ATTR_RECORD_ID, ATTR_RECORD_OFFSET, ATTR_SERVICE_NAME,
    ATTR_TRUNCATED, FILE_SCOPE,
};
use crate::expand_line::expand_json_line;
use crate::field_mapping::FieldMapping;
use crate::hex::write_hex;
use crate::json_write::{digits, json_str};
use crate::otlp_schema::{check, M};
use crate::otlp_values::{
    any_value, container, kubernetes_fields, next_tag, once, put_attribute, reader,
    resource_attributes, scalar_object, take, text, text_attribute, Scalar,
};
use crate::timestamps::iso_timestamp;

pub(crate) struct Resource<'a> {
    pub(crate) service: &'a str,
    pub(crate) agent_id: &'a str,
    json: Vec<u8>, // {"attributes":{...}}
    k8s: Vec<u8>,  // ,"k8s":{...} or nothing (documents.kubernetes_fields)
}

/// A record's id: an older agent's `log.record.uid`, or made of its offset (a range of Out::ids).
pub(crate) enum RecordId<'a> {
    Uid(&'a str),
    Made(usize, usize),
}

/// One document: the values correlation reads, and where its JSON head is.
pub(crate) struct Rec<'a> {
    pub(crate) resource: usize,
    pub(crate) record_id: RecordId<'a>,
    pub(crate) timestamp_ns: u64,
    pub(crate) level: String,
    pub(crate) trace_id: &'a [u8],
    pub(crate) span_id: &'a [u8],
    pub(crate) parse_error: bool,
    pub(crate) truncated: bool,
    pub(crate) invalid_utf8: bool,
    pub(crate) head: (usize, usize), // its range in Out::heads
}

/// The documents of one request.
pub(crate) struct Out<'a> {
    pub(crate) resources: Vec<Resource<'a>>,
    pub(crate) records: Vec<Rec<'a>>,
    pub(crate) heads: Vec<u8>,
    pub(crate) ids: Vec<u8>, // the records' ids made of their offsets, one after the other (UTF-8)
}

impl<'a> Out<'a> {
    /// A record's id (its doc_id).
    pub(crate) fn record_id<'s>(&'s self, rec: &Rec<'a>) -> Result<&'s str, std::str::Utf8Error> {
        match rec.record_id {
            RecordId::Uid(s) => Ok(s),
            // a UTF-8 prefix and ASCII digits
            RecordId::Made(start, end) => std::str::from_utf8(&self.ids[start..end]),
        }
    }
    /// A record's head: every field but those correlation changes, `{"@timestamp":...,` (open,
    /// ending in a comma).
    pub(crate) fn head(&self, rec: &Rec) -> &[u8] {
        &self.heads[rec.head.0..rec.head.1]
    }
}

/// The documents of a request (an ExportLogsServiceRequest), or None when it is not one handled
/// here.
pub(crate) fn request<'a>(body: &'a [u8], mapping: &FieldMapping) -> Option<Out<'a>> {
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

fn resource_logs<'a>(b: &'a [u8], mapping: &FieldMapping, out: &mut Out<'a>) -> Option<()> {
    let (resource, scopes) = container(b, M::ResourceLogs)?;
    let attrs = resource_attributes(resource)?;
    let (service, agent_id) = (
        text_attribute(&attrs, ATTR_SERVICE_NAME)?,
        text_attribute(&attrs, ATTR_AGENT_ID)?,
    );
    let mut json = b"{\"attributes\":".to_vec();
    scalar_object(&mut json, &attrs);
    json.push(b'}');
    let k8s = kubernetes_fields(&attrs);
    out.resources.push(Resource {
        service,
        agent_id,
        json,
        k8s,
    });
    let index = out.resources.len() - 1;
    for s in scopes {
        scope_logs(s, index, mapping, out)?;
    }
    Some(())
}

fn scope_logs<'a>(
    b: &'a [u8],
    resource: usize,
    mapping: &FieldMapping,
    out: &mut Out<'a>,
) -> Option<()> {
    let (scope, records) = container(b, M::ScopeLogs)?;
    // OTLP logs (any other scope) are the reference's
    let scope = scope?;
    check(scope, scope.as_ptr() as usize, M::Scope, 3, []).ok()?;
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
            Some((_, Scalar::Str(fingerprint))) => Some(format!(
                "{}:{fingerprint}:",
                out.resources[resource].agent_id
            )),
            _ => None,
        },
        path: attrs
            .iter()
            .find(|(k, _)| *k == ATTR_FILE_PATH)
            .map(|(_, v)| *v),
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
    mapping: &FieldMapping,
    out: &mut Out<'a>,
) -> Option<()> {
    check(b, b.as_ptr() as usize, M::LogRecord, 3, []).ok()?;
    let mut r = reader(b, M::LogRecord);
    let (mut time, mut observed, mut severity_number) = (0u64, 0u64, 0i32);
    let (mut severity_text, mut trace_id, mut span_id): (&[u8], &[u8], &[u8]) = (b"", b"", b"");
    let mut body = None;
    let mut attrs: Vec<(&'a str, Scalar<'a>)> = Vec::new();
    while !r.done() {
        match next_tag(&mut r, M::LogRecord)? {
            (1, _) => time = r.fixed64().ok()?,
            (2, _) => severity_number = i32::try_from(r.varint().ok()?).ok()?,
            (3, _) => severity_text = r.ld().ok()?,
            (5, _) => once(&mut body, &mut r)?,
            (6, _) => put_attribute(&mut attrs, r.ld().ok()?)?,
            (9, _) => trace_id = r.ld().ok()?,
            (10, _) => span_id = r.ld().ok()?,
            (11, _) => observed = r.fixed64().ok()?,
            (f, wt) => r.skip(f, wt, 3).ok()?,
        }
    }
    // The body must be a string (structured bodies are the reference's).
    let Scalar::Str(body) = any_value(body?)? else {
        return None;
    };
    // documents.document_level: the severity's short name, else the text lowercased (non-ASCII
    // text: Python's str.lower() is the reference)
    let level = match severity_name(severity_number) {
        "" if !severity_text.is_ascii() => return None,
        "" => std::str::from_utf8(severity_text)
            .ok()?
            .to_ascii_lowercase(),
        name => name.to_owned(),
    };

    // dict.pop in the reference: each is removed from the attributes whatever its value
    let uid = take(&mut attrs, ATTR_RECORD_ID);
    // ... but the offset only when it can make an id: an int, under a string fingerprint
    let offset = match (
        &file.id_prefix,
        attrs.iter().position(|(k, _)| *k == ATTR_RECORD_OFFSET),
    ) {
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
            // one buffer for all ids: a format!ted String per record made building measurably
            // slower
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
    let keys_moved = take(&mut attrs, ATTR_KEYS_MOVED).is_some_and(Scalar::truthy);
    let iostream = match take(&mut attrs, ATTR_LOG_IOSTREAM) {
        Some(Scalar::Str(s)) => Some(s),
        _ => None,
    };
    let timestamp_ns = if time != 0 { time } else { observed };

    let h = &mut out.heads;
    let start = h.len();
    h.extend_from_slice(b"{\"@timestamp\":\"");
    iso_timestamp(h, timestamp_ns);
    h.push(b'"');
    // "log": only what the line has of level, file path and stream
    let path = file_path.filter(|p| !matches!(p, Scalar::Null));
    if !level.is_empty() || path.is_some() || iostream.is_some() {
        h.extend_from_slice(b",\"log\":{");
        let mut sep = b"".as_slice();
        if !level.is_empty() {
            h.extend_from_slice(b"\"level\":");
            json_str(h, &level);
            sep = b",";
        }
        if let Some(path) = path {
            h.extend_from_slice(sep);
            h.extend_from_slice(b"\"file\":{\"path\":");
            path.write_json(h);
            h.push(b'}');
            sep = b",";
        }
        if let Some(stream) = iostream {
            h.extend_from_slice(sep);
            h.extend_from_slice(b"\"iostream\":");
            json_str(h, stream);
        }
        h.push(b'}');
    }
    h.extend_from_slice(b",\"event\":{\"severity\":");
    if severity_number < 0 {
        h.push(b'-');
    }
    digits(h, u64::from(severity_number.unsigned_abs()), 1);
    h.extend_from_slice(b"},\"resource\":");
    h.extend_from_slice(&out.resources[resource].json);
    h.extend_from_slice(&out.resources[resource].k8s);
    // plain text (not starting as a JSON object) is a message, not a parse error
    if parse_error
        || !body
            .trim_start_matches([' ', '\t', '\r', '\n'])
            .starts_with('{')
    {
        h.extend_from_slice(b",\"message\":");
        json_str(h, body);
    } else {
        expand_json_line(h, body, mapping, keys_moved)?;
    }
    if !attrs.is_empty() {
        h.extend_from_slice(b",\"attributes\":");
        scalar_object(h, &attrs);
    }
    if !trace_id.is_empty() {
        h.extend_from_slice(b",\"trace\":{\"id\":\"");
        write_hex(h, trace_id);
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

/// schemas/log_fields.py severity_name: OpenTelemetry's short name of a SeverityNumber's range.
fn severity_name(number: i32) -> &'static str {
    const NAMES: [&str; 6] = ["trace", "debug", "info", "warn", "error", "fatal"];
    if (1..=24).contains(&number) {
        NAMES[((number - 1) / 4) as usize]
    } else {
        ""
    }
}

#[cfg(test)]
#[path = "collector_docs_tests.rs"]
mod tests;

//! The collector's native documents as Python sees them: rows of Python objects built from
//! collector_docs.rs (file lines) and span_docs.rs (spans), with the GIL released while the
//! request is read and the documents' JSON written.

use std::collections::HashMap;

use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyString};

use crate::{collector_docs, hex, span_docs, FieldMapping};

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
/// collector.documents.log_documents). The GIL is released while reading and encoding.
#[pyfunction]
pub(crate) fn file_log_documents<'py>(
    py: Python<'py>,
    value: &Bound<'py, PyBytes>,
    mapping: &Bound<'py, FieldMapping>,
) -> PyResult<Option<Vec<Row<'py>>>> {
    let fields = &mapping.get().fields;
    let body: &[u8] = value.as_bytes();
    let Some(out) = py.detach(|| collector_docs::request(body, fields)) else {
        return Ok(None);
    };
    let resources: Vec<(Bound<PyString>, Bound<PyString>)> = out
        .resources
        .iter()
        .map(|r| (PyString::new(py, r.service), PyString::new(py, r.agent_id)))
        .collect();
    // A resource's {"name": service}, shared by its documents: correlation replaces a log's
    // "service" (and "span", "parent") and never changes one in place (collector/log_correlation.py).
    let services = resources
        .iter()
        .map(|(service, _)| -> PyResult<Option<Bound<PyDict>>> {
            if service.is_empty()? {
                return Ok(None);
            }
            let named = PyDict::new(py);
            named.set_item(intern!(py, "name"), service)?;
            Ok(Some(named))
        })
        .collect::<PyResult<Vec<_>>>()?;
    let mut levels: HashMap<&str, Bound<PyString>, ahash::RandomState> = HashMap::default();
    let empty = PyString::new(py, "");
    // a trace's lines mostly come together: one string for each run of them
    let mut trace: (&[u8], Bound<PyString>) = (b"", empty.clone());
    let mut rows = Vec::with_capacity(out.records.len());
    for rec in &out.records {
        let agent_id = &resources[rec.resource].1;
        let record_id = out
            .record_id(rec)
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let doc_id = PyString::new(py, record_id);
        if rec.trace_id != trace.0 {
            trace = (
                rec.trace_id,
                PyString::new(py, &hex::hex_string(rec.trace_id)),
            );
        }
        let trace_id = trace.1.clone();
        let span_id = if rec.span_id.is_empty() {
            empty.clone()
        } else {
            PyString::new(py, &hex::hex_string(rec.span_id))
        };
        let level = levels
            .entry(rec.level.as_str())
            .or_insert_with(|| PyString::new(py, &rec.level))
            .clone();
        let source = PyDict::new(py);
        if let Some(named) = &services[rec.resource] {
            source.set_item(intern!(py, "service"), named)?;
        }
        let tether = PyDict::new(py);
        tether.set_item(intern!(py, "record_id"), &doc_id)?;
        if !agent_id.is_empty()? {
            tether.set_item(intern!(py, "agent_id"), agent_id)?;
        }
        tether.set_item(intern!(py, "parse_error"), PyBool::new(py, rec.parse_error))?;
        tether.set_item(intern!(py, "truncated"), PyBool::new(py, rec.truncated))?;
        tether.set_item(
            intern!(py, "invalid_utf8"),
            PyBool::new(py, rec.invalid_utf8),
        )?;
        source.set_item(intern!(py, "tether"), tether)?;
        // A traced line's "span" is always written by correlation (joined, or {"id"} alone):
        // only an untraced one needs it here.
        if !rec.span_id.is_empty() && rec.trace_id.is_empty() {
            let span = PyDict::new(py);
            span.set_item(intern!(py, "id"), &span_id)?;
            source.set_item(intern!(py, "span"), span)?;
        }
        let head = PyBytes::new(py, out.head(rec));
        rows.push((
            doc_id,
            rec.timestamp_ns,
            trace_id,
            span_id,
            source,
            level,
            head,
        ));
    }
    Ok(Some(rows))
}

type SpanRow<'py> = (
    Bound<'py, PyString>, // doc_id: trace id-span id
    u64,                  // timestamp_ns: the span's start
    Bound<'py, PyString>, // trace_id (hex)
    Bound<'py, PyString>, // span_id
    Bound<'py, PyDict>,   // source: {"span": {...}}, the field correlation extends
    u64,                  // duration_ns
    Bound<'py, PyString>, // parent_id ("" for a root)
    Bound<'py, PyString>, // service ("" when the resource names none)
    Bound<'py, PyBytes>,  // head: every other field, `{"@timestamp":...,` (open, ends in a comma)
);

/// span_documents(value) -> [(doc_id, timestamp_ns, trace_id, span_id, source, duration_ns,
/// parent_id, service, head)] or None when the request is not one handled here (the caller then
/// runs collector.documents.span_documents). The GIL is released while reading and encoding.
#[pyfunction]
pub(crate) fn span_documents<'py>(
    py: Python<'py>,
    value: &Bound<'py, PyBytes>,
) -> PyResult<Option<Vec<SpanRow<'py>>>> {
    let body: &[u8] = value.as_bytes();
    let Some(out) = py.detach(|| span_docs::request(body)) else {
        return Ok(None);
    };
    let empty = PyString::new(py, "");
    // the spans of a trace come together, and a request has few services: one string each
    let mut trace: (&[u8], Bound<PyString>) = (b"", empty.clone());
    let mut service: (&str, Bound<PyString>) = ("", empty.clone());
    // One string per distinct span name of the request: names repeat across its traces, and the
    // recent-trace cache keeps each span's name.
    let mut names: HashMap<&str, Bound<PyString>, ahash::RandomState> = HashMap::default();
    let mut rows = Vec::with_capacity(out.spans.len());
    for rec in &out.spans {
        if rec.trace_id != trace.0 || rows.is_empty() {
            trace = (
                rec.trace_id,
                PyString::new(py, &hex::hex_string(rec.trace_id)),
            );
        }
        if rec.service != service.0 {
            service = (rec.service, PyString::new(py, rec.service));
        }
        let span_hex = hex::hex_string(rec.span_id);
        let doc_id = PyString::new(py, &format!("{}-{}", trace.1.to_str()?, span_hex));
        let span_id = PyString::new(py, &span_hex);
        let parent_id = if rec.parent_id.is_empty() {
            empty.clone()
        } else {
            PyString::new(py, &hex::hex_string(rec.parent_id))
        };
        let span = PyDict::new(py);
        span.set_item(intern!(py, "id"), &span_id)?;
        let name = names
            .entry(rec.name)
            .or_insert_with(|| PyString::new(py, rec.name));
        span.set_item(intern!(py, "name"), &*name)?;
        span.set_item(intern!(py, "kind"), PyString::intern(py, rec.kind))?;
        span.set_item(intern!(py, "status"), PyString::intern(py, rec.status))?;
        let duration = PyDict::new(py);
        duration.set_item(intern!(py, "us"), rec.duration_ns / 1000)?;
        span.set_item(intern!(py, "duration"), duration)?;
        if !rec.status_message.is_empty() {
            span.set_item(intern!(py, "status_message"), rec.status_message)?;
        }
        let source = PyDict::new(py);
        source.set_item(intern!(py, "span"), span)?;
        rows.push((
            doc_id,
            rec.start_ns,
            trace.1.clone(),
            span_id,
            source,
            rec.duration_ns,
            parent_id,
            service.1.clone(),
            PyBytes::new(py, out.head(rec)),
        ));
    }
    Ok(Some(rows))
}

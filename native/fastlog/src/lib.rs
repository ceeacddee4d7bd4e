//! tether_fastlog: the native fast paths of tether, each with a Python reference it must equal.
//!
//! - `encode_chunk`: the agent's file lines -> per-partition Kafka records (chunk.rs; reference
//!   agent/chunks.py::PythonChunkEncoder).
//! - `split_traces` / `split_logs`: an OTLP export request -> per-partition requests
//!   (otlp_split.rs; reference agent/split.py).
//! - `file_log_documents` / `span_documents`: a Kafka record of file lines or spans ->
//!   Elasticsearch documents (collector_docs.rs, span_docs.rs, bound in py_collector.rs;
//!   references collector/documents.py::log_documents and span_documents).
//!
//! This file is the Python interface only: argument checks, the GIL, Python objects.

use std::collections::HashMap;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

mod alias_keys;
mod chunk;
mod collector_docs;
mod constants;
mod container_log;
mod expand_line;
mod field_mapping;
mod hex;
#[cfg(all(test, feature = "reference"))]
mod json_line_gen;
// test-only: the former serde_json parser json_scan is checked against
#[cfg(all(test, feature = "reference"))]
mod json_reference;
mod json_scan;
mod json_tree;
mod json_value;
mod json_write;
mod log_record;
mod message_template;
mod otlp_schema;
mod otlp_split;
mod otlp_values;
mod py_collector;
mod span_docs;
mod timestamps;
mod wire;

use field_mapping::{RoleNames, ScanPlan};
use otlp_schema::{Ty, ALL_MESSAGES};
use otlp_split::{split_body, Shape, LOGS_SHAPE, TRACES_SHAPE};

/// The log-field mapping (schemas/log_fields.py::LogFieldMapping), converted once: each role's
/// names in lookup order, and the level names' severity numbers.
#[pyclass(frozen, module = "tether_fastlog")]
struct FieldMapping {
    fields: field_mapping::FieldMapping,
    /// the agent's compiled form; its error (too many alias keys) is raised by encode_chunk only,
    /// the collector's path has no such limit
    plan: Result<ScanPlan, String>,
}

#[pymethods]
impl FieldMapping {
    #[new]
    #[pyo3(signature = (*, message, timestamp, level, trace_id, span_id, service, data, severity,
                        message_template=Vec::new(), numeric_levels=HashMap::new(),
                        implied_level_when=Vec::new(), implied_level_severity=0,
                        service_when=Vec::new()))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        message: Vec<String>,
        timestamp: Vec<String>,
        level: Vec<String>,
        trace_id: Vec<String>,
        span_id: Vec<String>,
        service: Vec<String>,
        data: Vec<String>,
        severity: HashMap<String, i32>,
        message_template: Vec<String>,
        numeric_levels: HashMap<i64, i32>,
        implied_level_when: Vec<String>,
        implied_level_severity: i32,
        service_when: Vec<(String, Vec<String>)>,
    ) -> Self {
        let names = RoleNames {
            message,
            message_template,
            timestamp,
            level,
            trace_id,
            span_id,
            service,
            data,
        };
        let fields = field_mapping::FieldMapping::new(names, severity)
            .with_levels(numeric_levels, implied_level_when, implied_level_severity)
            .with_service_when(service_when);
        let plan = ScanPlan::new(&fields);
        FieldMapping { fields, plan }
    }
}

/// encode_chunk(chunk, base_offset, mapping, partitions, untraced_partition, agent_id,
///              fingerprint, path, observed_ns, max_line_bytes=262144, ts_fallback=None,
///              drop_long_lines=False)
///              drop_long_lines=False, log_format="plain", skipping=0, flush_before=0, pod=None)
///   -> (dict[int, bytes], lines, parse_errors, truncated, invalid_utf8, consumed, skipping)
///
/// ts_fallback: called with the timestamp string when it is not in the common ISO/epoch forms
/// (agent.parse.parse_timestamp keeps the exact reference semantics); None -> 0.
/// drop_long_lines: long_lines "drop" (an over-long line is counted as truncated, not sent).
/// log_format "cri" / "docker": a container log file, unwrapped first (container_log.rs;
/// reference agent/container_logs.py::unwrap, with `skipping` and `flush_before`); consumed: the
/// bytes of the chunk the records stand for. pod: (namespace, pod, uid, container, restart
/// count) of a Kubernetes container's file (agent/container_logs.py::pod_container), or None.
/// move_routing_keys: bodies leave out the keys their records carry (agent/body_keys.py).
/// The GIL is released while parsing and encoding.
#[pyfunction]
#[pyo3(signature = (chunk, base_offset, mapping, partitions, untraced_partition, agent_id,
                    fingerprint, path, observed_ns, max_line_bytes=constants::DEFAULT_MAX_LINE_BYTES,
                    ts_fallback=None, drop_long_lines=false, log_format="plain", skipping=0,
                    flush_before=0, pod=None, move_routing_keys=false))]
#[allow(clippy::too_many_arguments)]
fn encode_chunk<'py>(
    py: Python<'py>,
    chunk: &Bound<'py, PyBytes>,
    base_offset: u64,
    mapping: &Bound<'py, FieldMapping>,
    partitions: u64,
    untraced_partition: u32,
    agent_id: &str,
    fingerprint: &str,
    path: &str,
    observed_ns: u64,
    max_line_bytes: usize,
    ts_fallback: Option<Py<PyAny>>,
    drop_long_lines: bool,
    log_format: &str,
    skipping: u8,
    flush_before: u64,
    pod: Option<PodTuple>,
    move_routing_keys: bool,
) -> PyResult<EncodeResult<'py>> {
    encode_chunk_until(
        py,
        chunk::STAGE_FULL,
        chunk,
        base_offset,
        mapping,
        partitions,
        untraced_partition,
        (agent_id, fingerprint, path),
        observed_ns,
        max_line_bytes,
        ts_fallback,
        drop_long_lines,
        (log_format, skipping, flush_before, pod),
        move_routing_keys,
    )
}

/// Profiling aid: encode_chunk stopped after `stage` (1 split + UTF-8, 2 + JSON, 3 + fields,
/// 4 all), arguments as encode_chunk's. Built with `--features bench` only.
#[cfg(feature = "bench")]
#[pyfunction]
#[pyo3(signature = (stage, chunk, base_offset, mapping, partitions, untraced_partition, agent_id,
                    fingerprint, path, observed_ns, max_line_bytes=constants::DEFAULT_MAX_LINE_BYTES,
                    ts_fallback=None, drop_long_lines=false, log_format="plain", skipping=0,
                    flush_before=0, pod=None, move_routing_keys=false))]
#[allow(clippy::too_many_arguments)]
fn encode_chunk_stage<'py>(
    py: Python<'py>,
    stage: u8,
    chunk: &Bound<'py, PyBytes>,
    base_offset: u64,
    mapping: &Bound<'py, FieldMapping>,
    partitions: u64,
    untraced_partition: u32,
    agent_id: &str,
    fingerprint: &str,
    path: &str,
    observed_ns: u64,
    max_line_bytes: usize,
    ts_fallback: Option<Py<PyAny>>,
    drop_long_lines: bool,
    log_format: &str,
    skipping: u8,
    flush_before: u64,
    pod: Option<PodTuple>,
    move_routing_keys: bool,
) -> PyResult<EncodeResult<'py>> {
    encode_chunk_until(
        py,
        stage,
        chunk,
        base_offset,
        mapping,
        partitions,
        untraced_partition,
        (agent_id, fingerprint, path),
        observed_ns,
        max_line_bytes,
        ts_fallback,
        drop_long_lines,
        (log_format, skipping, flush_before, pod),
        move_routing_keys,
    )
}

#[allow(clippy::too_many_arguments)]
fn encode_chunk_until<'py>(
    py: Python<'py>,
    stage: u8,
    chunk: &Bound<'py, PyBytes>,
    base_offset: u64,
    mapping: &Bound<'py, FieldMapping>,
    partitions: u64,
    untraced_partition: u32,
    (agent_id, fingerprint, path): (&str, &str, &str),
    observed_ns: u64,
    max_line_bytes: usize,
    ts_fallback: Option<Py<PyAny>>,
    drop_long_lines: bool,
    (log_format, skipping, flush_before, pod): (&str, u8, u64, Option<PodTuple>),
    move_keys: bool,
) -> PyResult<EncodeResult<'py>> {
    if partitions == 0 {
        return Err(PyValueError::new_err("partitions must be > 0"));
    }
    let mapping = mapping.get();
    let plan = mapping
        .plan
        .as_ref()
        .map_err(|e| PyValueError::new_err(e.clone()))?;
    let format = container_log::Format::parse(log_format)
        .ok_or_else(|| PyValueError::new_err(format!("unknown log_format {log_format:?}")))?;
    let pod = pod.as_ref().map(
        |(namespace, pod, uid, container, restart_count)| log_record::Pod {
            namespace,
            pod,
            uid,
            container,
            restart_count: *restart_count,
        },
    );
    let consts = log_record::Consts::new(agent_id, fingerprint, path, pod.as_ref());
    let data: &[u8] = chunk.as_bytes();
    let params = chunk::Params {
        base: base_offset,
        partitions,
        untraced: untraced_partition,
        observed: observed_ns,
        max_line: max_line_bytes,
        drop_long_lines,
        consts: &consts,
        fields: &mapping.fields,
        plan,
        ts_fallback: ts_fallback.as_ref(),
        format,
        skipping,
        flush_before,
        move_keys,
    };
    let (groups, counts, consumed, skipping) =
        py.detach(|| chunk::process(data, &params, stage))?;
    let out = PyDict::new(py);
    for group in &groups {
        let finished = chunk::finish(group, &consts);
        let value = PyBytes::new_with(py, finished.len, |buf: &mut [u8]| {
            finished.write_into(buf);
            Ok(())
        })?;
        out.set_item(finished.partition, value)?;
    }
    Ok((
        out,
        counts.lines,
        counts.parse_errors,
        counts.truncated,
        counts.invalid_utf8,
        consumed,
        skipping,
    ))
}

/// (namespace, pod, uid, container, restart count)
type PodTuple = (String, String, String, String, i64);
/// (records by partition, lines, parse_errors, truncated, invalid_utf8, consumed, skipping)
type EncodeResult<'py> = (Bound<'py, PyDict>, u64, u64, u64, u64, usize, u8);

fn split_to_py<'py>(
    py: Python<'py>,
    body: &Bound<'py, PyBytes>,
    shape: &'static Shape,
    partitions: u64,
    untraced: Option<u64>,
) -> PyResult<(Bound<'py, PyDict>, otlp_split::SplitOut)> {
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
    Ok((out, split))
}

/// ExportTraceServiceRequest bytes -> ({partition: request bytes}, spans, rejected spans, of
/// those the ones rejected for their span id, and those rejected for their parent or a link id).
/// Spans without a valid trace id (16 bytes, not all zero), or else without a valid span id
/// (8 bytes, not all zero), or else with a parent_span_id or link id of another length than
/// OTLP's, are rejected. Raises ValueError on
/// bytes python protobuf would not decode, or with a wrong wire type for a field the split
/// reads. The GIL is released while splitting.
#[pyfunction]
fn split_traces<'py>(
    py: Python<'py>,
    body: &Bound<'py, PyBytes>,
    partitions: u64,
) -> PyResult<(Bound<'py, PyDict>, u64, u64, u64, u64)> {
    let (out, split) = split_to_py(py, body, &TRACES_SHAPE, partitions, None)?;
    Ok((
        out,
        split.total,
        split.rejected,
        split.rejected_span_id,
        split.rejected_related_id,
    ))
}

/// ExportLogsServiceRequest bytes -> ({partition: request bytes}, log records, records whose
/// malformed trace id (and span id) was cleared, records whose malformed span id was cleared).
/// Records without a valid trace id go to `untraced_partition`. Errors as split_traces.
#[pyfunction]
fn split_logs<'py>(
    py: Python<'py>,
    body: &Bound<'py, PyBytes>,
    partitions: u64,
    untraced_partition: u64,
) -> PyResult<(Bound<'py, PyDict>, u64, u64, u64)> {
    let (out, split) = split_to_py(py, body, &LOGS_SHAPE, partitions, Some(untraced_partition))?;
    Ok((
        out,
        split.total,
        split.cleared_trace_id,
        split.cleared_span_id,
    ))
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

/// The names and limits shared with Python, {Python name: value}, for the drift test.
#[pyfunction(name = "constants")]
fn shared_constants(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let out = PyDict::new(py);
    for (name, value) in constants::all() {
        match value {
            constants::Value::Str(s) => out.set_item(name, s)?,
            constants::Value::Int(n) => out.set_item(name, n)?,
        }
    }
    Ok(out)
}

#[pymodule]
fn tether_fastlog(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<FieldMapping>()?;
    m.add_function(wrap_pyfunction!(encode_chunk, m)?)?;
    // encode_chunk reads container log files (log_format, ...); older builds lack this name
    m.add("ENCODE_CHUNK_READS_CONTAINER_LOGS", true)?;
    #[cfg(feature = "bench")]
    m.add_function(wrap_pyfunction!(encode_chunk_stage, m)?)?;
    m.add_function(wrap_pyfunction!(split_traces, m)?)?;
    // split_traces checks span ids (and returns 4 values); older builds lack this name
    m.add("SPLIT_TRACES_CHECKS_SPAN_IDS", true)?;
    m.add_function(wrap_pyfunction!(split_logs, m)?)?;
    // every id written is valid OTLP: split_logs clears malformed ids (and returns 4 values),
    // split_traces rejects malformed parent / link ids (and returns 5); older builds lack this
    m.add("SPLIT_WRITES_VALID_IDS", true)?;
    m.add_function(wrap_pyfunction!(split_schema, m)?)?;
    m.add_function(wrap_pyfunction!(py_collector::file_log_documents, m)?)?;
    m.add_function(wrap_pyfunction!(py_collector::span_documents, m)?)?;
    m.add_function(wrap_pyfunction!(shared_constants, m)?)?;
    Ok(())
}

//! Names and limits the Rust paths share with Python. Python defines them (schemas/records.py,
//! collector/documents.py, agent/config.py, orjson); `tether_fastlog.constants()` exports these
//! and tests/unit/test_native_constants.py fails when the two disagree.

/// Instrumentation scope of log records read from files.
pub(crate) const FILE_SCOPE: &str = "tether.file";
/// The file scope's attributes.
pub(crate) const ATTR_FILE_PATH: &str = "log.file.path";
pub(crate) const ATTR_FILE_FINGERPRINT: &str = "tether.file.fingerprint";
/// Log record attributes set by the agent.
pub(crate) const ATTR_RECORD_OFFSET: &str = "log.file.record_offset";
pub(crate) const ATTR_RECORD_ID: &str = "log.record.uid";
pub(crate) const ATTR_PARSE_ERROR: &str = "tether.parse_error";
pub(crate) const ATTR_TRUNCATED: &str = "tether.truncated";
pub(crate) const ATTR_INVALID_UTF8: &str = "tether.invalid_utf8";
/// The body is the line without the keys the record carries in its own fields.
pub(crate) const ATTR_KEYS_MOVED: &str = "tether.keys_moved";
/// OTLP log records whose malformed trace id / span id the agent cleared.
pub(crate) const ATTR_INVALID_TRACE_ID: &str = "tether.invalid_trace_id";
pub(crate) const ATTR_INVALID_SPAN_ID: &str = "tether.invalid_span_id";
/// Resource attributes set by the agent.
pub(crate) const ATTR_LOG_IOSTREAM: &str = "log.iostream";
pub(crate) const ATTR_SERVICE_NAME: &str = "service.name";
pub(crate) const ATTR_AGENT_ID: &str = "tether.agent.id";
pub(crate) const ATTR_K8S_NAMESPACE: &str = "k8s.namespace.name";
pub(crate) const ATTR_K8S_POD_NAME: &str = "k8s.pod.name";
pub(crate) const ATTR_K8S_POD_UID: &str = "k8s.pod.uid";
pub(crate) const ATTR_K8S_CONTAINER_NAME: &str = "k8s.container.name";
pub(crate) const ATTR_K8S_CONTAINER_RESTART_COUNT: &str = "k8s.container.restart_count";

/// Python's TRACE_ID_BYTES: a valid trace id is this long and not all zero.
pub(crate) const TRACE_ID_BYTES: usize = 16;

/// orjson refuses documents nested deeper than this (the top-level object is level 1).
pub(crate) const ORJSON_MAX_DEPTH: usize = 1024;

/// collector/documents.py JSON_MAX_DEPTH: deeper lines go to the reference (orjson.dumps, which
/// encodes the documents, stops at 254 levels, and a line sits one level below the document).
pub(crate) const DOCUMENT_JSON_MAX_DEPTH: usize = 200;

/// agent/config.py's default max_line_bytes, encode_chunk's default.
pub(crate) const DEFAULT_MAX_LINE_BYTES: usize = 256 * 1024;

/// Every constant above by its Python name, for the drift test.
pub(crate) fn all() -> Vec<(&'static str, Value)> {
    use Value::{Int, Str};
    vec![
        ("FILE_SCOPE", Str(FILE_SCOPE)),
        ("ATTR_FILE_PATH", Str(ATTR_FILE_PATH)),
        ("ATTR_FILE_FINGERPRINT", Str(ATTR_FILE_FINGERPRINT)),
        ("ATTR_RECORD_OFFSET", Str(ATTR_RECORD_OFFSET)),
        ("ATTR_RECORD_ID", Str(ATTR_RECORD_ID)),
        ("ATTR_PARSE_ERROR", Str(ATTR_PARSE_ERROR)),
        ("ATTR_TRUNCATED", Str(ATTR_TRUNCATED)),
        ("ATTR_INVALID_UTF8", Str(ATTR_INVALID_UTF8)),
        ("ATTR_KEYS_MOVED", Str(ATTR_KEYS_MOVED)),
        ("ATTR_INVALID_TRACE_ID", Str(ATTR_INVALID_TRACE_ID)),
        ("ATTR_INVALID_SPAN_ID", Str(ATTR_INVALID_SPAN_ID)),
        ("ATTR_LOG_IOSTREAM", Str(ATTR_LOG_IOSTREAM)),
        ("ATTR_SERVICE_NAME", Str(ATTR_SERVICE_NAME)),
        ("ATTR_AGENT_ID", Str(ATTR_AGENT_ID)),
        ("ATTR_K8S_NAMESPACE", Str(ATTR_K8S_NAMESPACE)),
        ("ATTR_K8S_POD_NAME", Str(ATTR_K8S_POD_NAME)),
        ("ATTR_K8S_POD_UID", Str(ATTR_K8S_POD_UID)),
        ("ATTR_K8S_CONTAINER_NAME", Str(ATTR_K8S_CONTAINER_NAME)),
        (
            "ATTR_K8S_CONTAINER_RESTART_COUNT",
            Str(ATTR_K8S_CONTAINER_RESTART_COUNT),
        ),
        ("TRACE_ID_BYTES", Int(TRACE_ID_BYTES)),
        ("ORJSON_MAX_DEPTH", Int(ORJSON_MAX_DEPTH)),
        ("JSON_MAX_DEPTH", Int(DOCUMENT_JSON_MAX_DEPTH)),
        ("DEFAULT_MAX_LINE_BYTES", Int(DEFAULT_MAX_LINE_BYTES)),
    ]
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Value {
    Str(&'static str),
    Int(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_constant_is_exported_once() {
        let names: Vec<&str> = all().iter().map(|(n, _)| *n).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
        assert_eq!(names.len(), 23);
    }

    #[test]
    fn attribute_names_are_the_otlp_and_tether_ones() {
        assert!(all().iter().all(|(_, v)| match v {
            Value::Str(s) => !s.is_empty() && s.is_ascii() && s.contains('.'),
            Value::Int(n) => *n > 0,
        }));
    }
}

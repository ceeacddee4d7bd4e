//! One log record of a file line at the protobuf wire level: the LogRecord bytes the reference
//! (agent/encode.py) writes, with the pieces every record of a chunk shares encoded once.

use crate::constants::{
    ATTR_AGENT_ID, ATTR_FILE_FINGERPRINT, ATTR_FILE_PATH, ATTR_INVALID_UTF8,
    ATTR_K8S_CONTAINER_NAME, ATTR_K8S_CONTAINER_RESTART_COUNT, ATTR_K8S_NAMESPACE,
    ATTR_K8S_POD_NAME, ATTR_K8S_POD_UID, ATTR_KEYS_MOVED, ATTR_LOG_IOSTREAM, ATTR_PARSE_ERROR,
    ATTR_RECORD_OFFSET, ATTR_TRUNCATED, FILE_SCOPE,
};
use crate::container_log::{STDERR, STDOUT};
use crate::wire::{ld_len, put_ld, put_varint, varint_len};

/// KeyValue{key, value: AnyValue{string_value}}
pub(crate) fn kv_string(key: &str, value: &[u8]) -> Vec<u8> {
    let mut any = Vec::new();
    put_ld(&mut any, 0x0a, value);
    let mut kv = Vec::new();
    put_ld(&mut kv, 0x0a, key.as_bytes());
    put_ld(&mut kv, 0x12, &any);
    kv
}
/// KeyValue{key, value: AnyValue{int_value}}
fn kv_int(key: &str, value: i64) -> Vec<u8> {
    let mut any = vec![0x18];
    put_varint(&mut any, value as u64);
    let mut kv = Vec::new();
    put_ld(&mut kv, 0x0a, key.as_bytes());
    put_ld(&mut kv, 0x12, &any);
    kv
}

/// A Kubernetes container's log file (agent/container_logs.py::PodContainer).
pub(crate) struct Pod<'a> {
    pub(crate) namespace: &'a str,
    pub(crate) pod: &'a str,
    pub(crate) uid: &'a str,
    pub(crate) container: &'a str,
    pub(crate) restart_count: i64,
}

fn kv_bool_true(key: &str) -> Vec<u8> {
    let mut kv = Vec::new();
    put_ld(&mut kv, 0x0a, key.as_bytes());
    put_ld(&mut kv, 0x12, &[0x10, 0x01]);
    kv
}

/// The encoded pieces every record or request of one chunk shares.
pub(crate) struct Consts {
    pub(crate) perr_attr: Vec<u8>, // field 6 (attributes) with its tag and length
    pub(crate) trunc_attr: Vec<u8>,
    pub(crate) inv_attr: Vec<u8>,
    pub(crate) moved_attr: Vec<u8>,
    pub(crate) offset_key: Vec<u8>, // KeyValue.key field (tag, len, "log.file.record_offset")
    pub(crate) agent_kv: Vec<u8>,   // Resource.attributes entry (tag 0x0a, len, KeyValue)
    pub(crate) scope: Vec<u8>,      // ScopeLogs.scope entry, with the file's path and fingerprint
    /// Resource.attributes entries of a Kubernetes container's file, after agent_kv
    pub(crate) pod_kvs: Vec<u8>,
    /// the service of a line naming none: a Kubernetes container's name, else empty
    pub(crate) default_service: Vec<u8>,
    stdout_attr: Vec<u8>, // field 6 (attributes): log.iostream = stdout
    stderr_attr: Vec<u8>,
}

impl Consts {
    /// The log.iostream attribute of a record of `stream` (container_log), empty for none.
    pub(crate) fn stream_attr(&self, stream: u8) -> &[u8] {
        match stream {
            STDOUT => &self.stdout_attr,
            STDERR => &self.stderr_attr,
            _ => &[],
        }
    }

    pub(crate) fn new(agent_id: &str, fingerprint: &str, path: &str, pod: Option<&Pod>) -> Self {
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
        let mut pod_kvs = Vec::new();
        if let Some(pod) = pod {
            for (key, value) in [
                (ATTR_K8S_NAMESPACE, pod.namespace),
                (ATTR_K8S_POD_NAME, pod.pod),
                (ATTR_K8S_POD_UID, pod.uid),
                (ATTR_K8S_CONTAINER_NAME, pod.container),
            ] {
                put_ld(&mut pod_kvs, 0x0a, &kv_string(key, value.as_bytes()));
            }
            put_ld(
                &mut pod_kvs,
                0x0a,
                &kv_int(ATTR_K8S_CONTAINER_RESTART_COUNT, pod.restart_count),
            );
        }
        Consts {
            pod_kvs,
            default_service: pod.map_or(Vec::new(), |p| p.container.as_bytes().to_vec()),
            stdout_attr: wrap(0x32, kv_string(ATTR_LOG_IOSTREAM, b"stdout")),
            stderr_attr: wrap(0x32, kv_string(ATTR_LOG_IOSTREAM, b"stderr")),
            perr_attr: wrap(0x32, kv_bool_true(ATTR_PARSE_ERROR)),
            trunc_attr: wrap(0x32, kv_bool_true(ATTR_TRUNCATED)),
            inv_attr: wrap(0x32, kv_bool_true(ATTR_INVALID_UTF8)),
            moved_attr: wrap(0x32, kv_bool_true(ATTR_KEYS_MOVED)),
            offset_key,
            agent_kv: wrap(0x0a, kv_string(ATTR_AGENT_ID, agent_id.as_bytes())),
            scope: wrap(0x0a, scope_inner),
        }
    }
}

/// One log record's fields, as the reference's LogRecord has them.
pub(crate) struct Rec<'a> {
    pub(crate) time: u64,
    pub(crate) sev: i32,
    pub(crate) level: &'a [u8],
    pub(crate) body: &'a [u8],
    pub(crate) offset: u64,
    /// the encoded log.iostream attribute, or empty
    pub(crate) stream: &'a [u8],
    pub(crate) perr: bool,
    pub(crate) trunc: bool,
    pub(crate) inv: bool,
    pub(crate) trace: Option<[u8; 16]>,
    pub(crate) span: Option<[u8; 8]>,
    pub(crate) observed: u64,
    /// the body is the line without its routing keys (tether.keys_moved)
    pub(crate) moved: bool,
}

/// Appends ScopeLogs.log_records entry (tag 0x12, length, LogRecord) for one record.
pub(crate) fn put_record(out: &mut Vec<u8>, c: &Consts, r: &Rec) {
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
    n += ld_len(kv_offset) + r.stream.len();
    if r.perr {
        n += c.perr_attr.len();
    }
    if r.trunc {
        n += c.trunc_attr.len();
    }
    if r.inv {
        n += c.inv_attr.len();
    }
    if r.moved {
        n += c.moved_attr.len();
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
    if !r.stream.is_empty() {
        out.extend_from_slice(r.stream);
    }
    if r.perr {
        out.extend_from_slice(&c.perr_attr);
    }
    if r.trunc {
        out.extend_from_slice(&c.trunc_attr);
    }
    if r.inv {
        out.extend_from_slice(&c.inv_attr);
    }
    if r.moved {
        out.extend_from_slice(&c.moved_attr);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(body: &[u8]) -> Rec<'_> {
        Rec {
            time: 0,
            sev: 0,
            level: b"",
            body,
            offset: 0,
            stream: b"",
            perr: false,
            trunc: false,
            inv: false,
            trace: None,
            span: None,
            observed: 0,
            moved: false,
        }
    }

    #[test]
    fn a_minimal_record_is_its_body_and_offset() {
        let c = Consts::new("a", "f", "p", None);
        let mut out = Vec::new();
        put_record(&mut out, &c, &rec(b"hi"));
        let offset_kv = [&c.offset_key[..], &[0x12, 0x02, 0x18, 0x00]].concat();
        let expected = [
            &[0x12, 6 + 2 + offset_kv.len() as u8][..], // ScopeLogs.log_records entry
            &[0x2a, 0x04, 0x0a, 0x02, b'h', b'i'],      // body: AnyValue{string_value}
            &[0x32, offset_kv.len() as u8],             // attributes: the offset, even 0
            &offset_kv,
        ]
        .concat();
        assert_eq!(out, expected);
    }

    #[test]
    fn every_field_in_number_order_with_the_predicted_length() {
        let c = Consts::new("agent", "fp", "/p", None);
        let mut r = rec(b"{}");
        (r.time, r.sev, r.level, r.offset, r.observed) = (5, -1, b"info", 300, 7);
        (r.perr, r.trunc, r.inv, r.trace, r.span) = (true, true, true, Some([1; 16]), Some([2; 8]));
        let mut out = Vec::new();
        put_record(&mut out, &c, &r);
        // the length put_record wrote is what follows it (checked with debug_assert, too)
        assert_eq!(out[0], 0x12);
        let (len, at) = if out[1] < 0x80 {
            (out[1] as usize, 2)
        } else {
            ((out[1] & 0x7f) as usize | (out[2] as usize) << 7, 3)
        };
        assert_eq!(out.len() - at, len);
        let body = &out[at..];
        // time, fixed64
        assert_eq!(&body[..9], &[0x09, 5, 0, 0, 0, 0, 0, 0, 0]);
        // severity -1: a ten-byte varint, as protobuf writes a negative enum
        assert_eq!(
            &body[9..20],
            &[0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
        assert_eq!(&body[20..26], &[0x1a, 4, b'i', b'n', b'f', b'o']);
        assert!(body.ends_with(&[0x59, 7, 0, 0, 0, 0, 0, 0, 0])); // observed time last
        for attr in [&c.perr_attr, &c.trunc_attr, &c.inv_attr] {
            assert!(memchr::memmem::find(body, attr).is_some());
        }
    }

    #[test]
    fn the_shared_pieces_name_the_file_and_agent() {
        let c = Consts::new("agent-7", "fp", "/var/log/app.log", None);
        let has = |hay: &[u8], needle: &str| memchr::memmem::find(hay, needle.as_bytes()).is_some();
        assert!(
            has(&c.scope, FILE_SCOPE)
                && has(&c.scope, "/var/log/app.log")
                && has(&c.scope, ATTR_FILE_FINGERPRINT)
        );
        assert!(has(&c.agent_kv, ATTR_AGENT_ID) && has(&c.agent_kv, "agent-7"));
        assert!(has(&c.offset_key, ATTR_RECORD_OFFSET));
    }
}

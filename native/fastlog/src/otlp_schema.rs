//! The OTLP messages the splitter and the collector read, as a table of field numbers and types,
//! and `check`, which validates a message against it the way upb (python protobuf's decoder)
//! decodes it: wire structure, UTF-8 of string fields, nesting depth, groups. Known fields with
//! another wire type are unknown fields there, as in upb.

use crate::wire::{Rd, WResult};

/// upb's default decode depth limit: submessages (and groups) nested below the request.
pub(crate) const MAX_DEPTH: u32 = 100;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    Varint,
    I64,
    I32,
    Bytes,
    Str,
    Msg(M),
}

impl Ty {
    pub(crate) fn wire(self) -> u8 {
        match self {
            Ty::Varint => 0,
            Ty::I64 => 1,
            Ty::I32 => 5,
            Ty::Bytes | Ty::Str | Ty::Msg(_) => 2,
        }
    }
    pub(crate) fn kind(self) -> &'static str {
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
pub(crate) enum M {
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

pub(crate) const ALL_MESSAGES: [M; 18] = [
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

pub(crate) type Fields = &'static [(u32, &'static str, Ty)];

impl M {
    pub(crate) fn name(self) -> &'static str {
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
    pub(crate) fn short(self) -> &'static str {
        let n = self.name();
        let mut parts = n.rsplitn(3, '.');
        let last = parts.next().unwrap_or(n);
        match parts.next() {
            Some("Span") => &n[n.len() - last.len() - 5..], // Span.Event, Span.Link
            _ => last,
        }
    }
    /// Fields sorted by number. tests/unit/test_split.py checks them against the descriptors.
    pub(crate) const fn fields(self) -> Fields {
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
    pub(crate) fn ty(self, number: u32) -> Option<Ty> {
        match LOOKUP[self as usize].get(number as usize) {
            Some(&ty) => ty,
            None => None,
        }
    }
    pub(crate) fn field_name(self, number: u32) -> &'static str {
        self.fields()
            .iter()
            .find(|f| f.0 == number)
            .map_or("?", |f| f.1)
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

/// Validates one message (at nesting `depth`) like upb would decode it; returns the last
/// occurrence of each bytes or message field of `capture` (field numbers, 0 for none), which
/// must be length-delimited.
pub(crate) fn check<const N: usize>(
    b: &[u8],
    origin: usize,
    m: M,
    depth: u32,
    capture: [u32; N],
) -> WResult<[Option<&[u8]>; N]> {
    let mut r = Rd::new(b, origin, m);
    let mut captured = [None; N];
    while !r.done() {
        let start = r.pos();
        let (f, wt) = r.tag()?;
        match m.ty(f) {
            Some(ty) if ty.wire() == wt => match ty {
                Ty::Varint => drop(r.varint()?),
                Ty::I64 => r.fixed(8)?,
                Ty::I32 => r.fixed(4)?,
                Ty::Bytes => {
                    let v = r.ld()?;
                    for (c, out) in capture.iter().zip(captured.iter_mut()) {
                        if f == *c {
                            *out = Some(v);
                        }
                    }
                }
                Ty::Str => {
                    let v = r.ld()?;
                    if !utf8(v) {
                        let name = m.field_name(f);
                        return Err(
                            r.err(start, &format!("string field {name} is not valid UTF-8"))
                        );
                    }
                }
                Ty::Msg(sub) => {
                    let v = r.ld()?;
                    if depth + 1 > MAX_DEPTH {
                        return Err(r.err(start, "nesting deeper than 100"));
                    }
                    check(v, origin, sub, depth + 1, [])?;
                    for (c, out) in capture.iter().zip(captured.iter_mut()) {
                        if f == *c {
                            *out = Some(v);
                        }
                    }
                }
            },
            Some(ty) if capture.contains(&f) => return Err(r.wrong_wire(start, f, wt, ty.wire())),
            _ => r.skip(f, wt, depth)?,
        }
    }
    Ok(captured)
}

#[inline(always)]
pub(crate) fn utf8(v: &[u8]) -> bool {
    v.iter().fold(0u8, |a, &c| a | c) < 0x80 || std::str::from_utf8(v).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::put_ld;

    #[test]
    fn the_lookup_table_agrees_with_the_field_lists() {
        for m in ALL_MESSAGES {
            let fields = m.fields();
            assert!(
                fields.windows(2).all(|w| w[0].0 < w[1].0),
                "{} sorted by number",
                m.name()
            );
            for &(number, name, ty) in fields {
                assert!(m.ty(number) == Some(ty), "{}.{name}", m.name());
                assert_eq!(m.field_name(number), name);
            }
            assert!(m.ty(0).is_none() && m.ty(1000).is_none());
        }
        assert_eq!(M::Event.short(), "Span.Event");
        assert_eq!(M::LogRecord.short(), "LogRecord");
    }

    #[test]
    fn check_captures_the_last_occurrence_of_a_bytes_field() {
        let mut span = Vec::new();
        put_ld(&mut span, 0x0a, &[1; 16]);
        put_ld(&mut span, 0x2a, b"name");
        put_ld(&mut span, 0x12, &[3; 8]);
        put_ld(&mut span, 0x0a, &[2; 16]);
        let got = check(&span, span.as_ptr() as usize, M::Span, 3, [1]).unwrap();
        assert_eq!(got, [Some(&[2u8; 16][..])]);
        let got = check(&span, span.as_ptr() as usize, M::Span, 3, [1, 2]).unwrap();
        assert_eq!(got, [Some(&[2u8; 16][..]), Some(&[3u8; 8][..])]);
        let got = check(&span, span.as_ptr() as usize, M::Span, 3, [2, 6]).unwrap();
        assert_eq!(got, [Some(&[3u8; 8][..]), None]);
        assert_eq!(
            check(&span, span.as_ptr() as usize, M::Span, 3, []).unwrap(),
            []
        );
    }

    #[test]
    fn check_refuses_invalid_utf8_in_string_fields_only() {
        let mut span = Vec::new();
        put_ld(&mut span, 0x0a, &[0xff; 16]); // trace_id: bytes, anything goes
        assert!(check(&span, span.as_ptr() as usize, M::Span, 3, []).is_ok());
        put_ld(&mut span, 0x2a, &[0xff]); // name: a string
        let e = check(&span, span.as_ptr() as usize, M::Span, 3, []).unwrap_err();
        assert_eq!(
            e,
            "string field name is not valid UTF-8 at byte 18 (in Span)"
        );
    }

    #[test]
    fn check_limits_nesting_like_upb() {
        // AnyValue{array_value: ArrayValue{values: AnyValue{...}}}: `levels` submessages below
        // an AnyValue at depth 1
        let nested = |levels: u32| {
            let mut v = Vec::new();
            for i in 0..levels {
                let mut outer = Vec::new();
                put_ld(
                    &mut outer,
                    if (levels - 1 - i).is_multiple_of(2) {
                        0x2a
                    } else {
                        0x0a
                    },
                    &v,
                );
                v = outer;
            }
            v
        };
        let ok = nested(MAX_DEPTH - 1);
        assert!(check(&ok, ok.as_ptr() as usize, M::AnyValue, 1, []).is_ok());
        let deep = nested(MAX_DEPTH);
        let e = check(&deep, deep.as_ptr() as usize, M::AnyValue, 1, []).unwrap_err();
        assert!(e.starts_with("nesting deeper than 100"), "{e}");
    }

    #[test]
    fn a_known_field_with_another_wire_type_is_an_unknown_field() {
        // Span.name (5) as a varint: skipped like upb, not an error
        let span = [0x28, 0x01];
        assert!(check(&span, span.as_ptr() as usize, M::Span, 3, []).is_ok());
    }
}

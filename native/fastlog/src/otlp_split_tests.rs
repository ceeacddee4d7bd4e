//! The unit tests of otlp_split.rs (a file of their own: the module is long enough).

use super::*;

fn ld(tag: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    put_ld(&mut out, tag, payload);
    out
}

/// A span with `trace_id` and `span_id` (empty: none) and a name.
fn span_ids(trace_id: &[u8], span_id: &[u8], name: &str) -> Vec<u8> {
    let mut s = Vec::new();
    for (tag, id) in [(0x0a, trace_id), (0x12, span_id)] {
        if !id.is_empty() {
            s.extend(ld(tag, id));
        }
    }
    s.extend(ld(0x2a, name.as_bytes()));
    s
}

/// A span with `trace_id` (empty: none), a valid span id and a name.
fn span(trace_id: &[u8], name: &str) -> Vec<u8> {
    span_ids(trace_id, &[0, 0, 0, 0, 0, 0, 0, 1], name)
}

/// ResourceSpans{resource: Resource{attributes: [service.name=...]}, scope_spans: [ScopeSpans{spans}]}
fn resource_spans(service: &str, spans: &[Vec<u8>]) -> Vec<u8> {
    let mut any = ld(0x0a, service.as_bytes());
    any = [ld(0x0a, b"service.name"), ld(0x12, &any)].concat();
    let resource = ld(0x0a, &any);
    let mut scope_spans = ld(0x0a, &ld(0x0a, b"lib"));
    for s in spans {
        scope_spans.extend(ld(0x12, s));
    }
    [ld(0x0a, &resource), ld(0x12, &scope_spans)].concat()
}

fn trace_id(low: u64) -> [u8; 16] {
    let mut t = [0xabu8; 16];
    t[8..].copy_from_slice(&low.to_be_bytes());
    t
}

#[test]
fn spans_go_to_the_partition_of_their_trace_under_their_resource_and_scope() {
    let spans = [
        span(&trace_id(7), "a"),
        span(&trace_id(9), "b"),
        span(&trace_id(4), "c"),
    ];
    let body = ld(0x0a, &resource_spans("svc", &spans));
    let out = split_body(&body, &TRACES_SHAPE, 3, None).unwrap();
    assert_eq!((out.total, out.rejected), (3, 0));
    let partitions: Vec<u64> = out.parts.iter().map(|p| p.0).collect();
    assert_eq!(partitions, [1, 0]); // 7 % 3, 9 % 3 (4 % 3 joins partition 1)
    assert_eq!(
        out.parts[0].1,
        ld(
            0x0a,
            &resource_spans("svc", &[spans[0].clone(), spans[2].clone()])
        )
    );
    assert_eq!(
        out.parts[1].1,
        ld(0x0a, &resource_spans("svc", &[spans[1].clone()]))
    );
}

#[test]
fn spans_without_a_valid_trace_id_are_rejected() {
    let spans = [
        span(&[], "none"),
        span(&[0; 16], "zero"),
        span(&[1; 8], "short"),
        span(&trace_id(2), "ok"),
    ];
    let body = ld(0x0a, &resource_spans("svc", &spans));
    let out = split_body(&body, &TRACES_SHAPE, 4, None).unwrap();
    assert_eq!((out.total, out.rejected), (4, 3));
    assert_eq!(out.parts.len(), 1);
    assert_eq!(out.parts[0].0, 2);
}

#[test]
fn spans_without_a_valid_span_id_are_rejected_and_counted_apart() {
    let spans = [
        span_ids(&trace_id(1), &[], "none"),
        span_ids(&trace_id(1), &[0; 8], "zero"),
        span_ids(&trace_id(1), &[1; 7], "short"),
        span_ids(&trace_id(1), &[1; 9], "long"),
        span_ids(&[], &[], "no ids"), // an invalid trace id first: counted as such
        span_ids(&trace_id(2), &[0, 0, 0, 0, 0, 0, 0, 1], "ok"),
        span_ids(&trace_id(3), &[0xff; 8], "ok too"),
    ];
    let body = ld(0x0a, &resource_spans("svc", &spans));
    let out = split_body(&body, &TRACES_SHAPE, 4, None).unwrap();
    assert_eq!((out.total, out.rejected, out.rejected_span_id), (7, 5, 4));
    assert_eq!(
        out.parts,
        vec![
            (2, ld(0x0a, &resource_spans("svc", &[spans[5].clone()]))),
            (3, ld(0x0a, &resource_spans("svc", &[spans[6].clone()]))),
        ]
    );
    // a span_id with another wire type is refused, like trace_id
    let bad = [ld(0x0a, &trace_id(1)), vec![0x10, 0x01]].concat();
    let body = ld(0x0a, &resource_spans("svc", &[bad]));
    let e = split_body(&body, &TRACES_SHAPE, 4, None).err().unwrap();
    assert!(e.contains("field 2 (span_id) has wire type 0"), "{e}");
}

#[test]
fn spans_with_a_malformed_parent_or_link_id_are_rejected() {
    let ok = span(&trace_id(1), "ok");
    let link = |t: &[u8], s: &[u8]| ld(0x6a, &[ld(0x0a, t), ld(0x12, s)].concat());
    let spans = [
        [ok.clone(), ld(0x22, &[1; 7])].concat(), // parent_span_id (4)
        [
            ok.clone(),
            link(&trace_id(2), &[1; 8]),
            link(&[1; 15], &[1; 8]),
        ]
        .concat(),
        [ok.clone(), link(&trace_id(2), &[1; 9])].concat(),
        [ok.clone(), ld(0x22, &[1; 7]), ld(0x22, &[1; 8])].concat(), // the last one counts
        [ok.clone(), link(&[], &[]), ld(0x22, &[0; 8])].concat(),
    ];
    let body = ld(0x0a, &resource_spans("svc", &spans));
    let out = split_body(&body, &TRACES_SHAPE, 4, None).unwrap();
    assert_eq!(
        (out.total, out.rejected, out.rejected_related_id),
        (5, 3, 3)
    );
    let kept = [spans[3].clone(), spans[4].clone()];
    assert_eq!(
        out.parts,
        vec![(1, ld(0x0a, &resource_spans("svc", &kept)))]
    );
}

#[test]
fn log_records_keep_an_optional_span_id() {
    // LogRecord{trace_id, span_id (10): empty / zero / short}: none is rejected
    let records: Vec<Vec<u8>> = [&[][..], &[0; 8], &[1; 3]]
        .iter()
        .map(|span_id| [ld(0x4a, &trace_id(5)), ld(0x52, span_id)].concat())
        .collect();
    let mut scope_logs = ld(0x0a, b"");
    for r in &records {
        scope_logs.extend(ld(0x12, r));
    }
    let body = ld(0x0a, &ld(0x12, &scope_logs));
    let out = split_body(&body, &LOGS_SHAPE, 4, Some(3)).unwrap();
    assert_eq!((out.total, out.rejected, out.rejected_span_id), (3, 0, 0));
    assert_eq!(out.parts.len(), 1);
    assert_eq!(out.parts[0].0, 1);
}

#[test]
fn log_records_lose_malformed_ids_and_are_flagged() {
    let flag = |name: &str| {
        let value = [ld(0x0a, name.as_bytes()), ld(0x12, &[0x10, 0x01])].concat();
        ld(0x32, &value)
    };
    let attribute = ld(0x32, &ld(0x0a, b"k"));
    let body_field = ld(0x2a, &ld(0x0a, b"x"));
    let flags = [0x45, 1, 0, 0, 0]; // flags (8), fixed32
                                    // LogRecord{body, [attributes], flags, trace_id, span_id, observed_time (11)}
    let record = |attrs: &[u8], trace: &[u8], span: &[u8]| {
        [
            body_field.clone(),
            attrs.to_vec(),
            flags.to_vec(),
            ld(0x4a, trace),
            ld(0x52, span),
            vec![0x59, 5, 0, 0, 0, 0, 0, 0, 0],
        ]
        .concat()
    };
    let observed = [0x59, 5, 0, 0, 0, 0, 0, 0, 0];
    let cases: [(Vec<u8>, Vec<u8>); 3] = [
        // a 15-byte trace id: both ids go, the flag after the attributes
        (
            record(&attribute, &[1; 15], &[1; 8]),
            [
                body_field.clone(),
                attribute.clone(),
                flag("tether.invalid_trace_id"),
                flags.to_vec(),
                observed.to_vec(),
            ]
            .concat(),
        ),
        // a 7-byte span id, no attributes: the flag before flags (8)
        (
            record(&[], &trace_id(5), &[1; 7]),
            [
                body_field.clone(),
                flag("tether.invalid_span_id"),
                flags.to_vec(),
                ld(0x4a, &trace_id(5)),
                observed.to_vec(),
            ]
            .concat(),
        ),
        // an all-zero 8-byte span id is valid OTLP: the record is copied as it is
        (
            record(&[], &trace_id(5), &[0; 8]),
            record(&[], &trace_id(5), &[0; 8]),
        ),
    ];
    for (i, (input, expected)) in cases.iter().enumerate() {
        let scope_logs = [ld(0x0a, b""), ld(0x12, input)].concat();
        let body = ld(0x0a, &ld(0x12, &scope_logs));
        let out = split_body(&body, &LOGS_SHAPE, 4, Some(3)).unwrap();
        let cleared = (out.cleared_trace_id, out.cleared_span_id);
        assert_eq!(cleared, [(1, 0), (0, 1), (0, 0)][i], "case {i}");
        let partition = if i == 0 { 3 } else { 1 };
        let scope_logs = [ld(0x0a, b""), ld(0x12, expected)].concat();
        let expected_body = ld(0x0a, &[ld(0x0a, b""), ld(0x12, &scope_logs)].concat());
        assert_eq!(out.parts, vec![(partition, expected_body)], "case {i}");
    }
}

#[test]
fn log_records_without_a_trace_id_go_to_the_untraced_partition() {
    let record = ld(0x2a, &ld(0x0a, b"hello")); // LogRecord{body: AnyValue{string_value}}
    let scope_logs = [ld(0x0a, b""), ld(0x12, &record)].concat();
    let body = ld(0x0a, &ld(0x12, &scope_logs));
    let out = split_body(&body, &LOGS_SHAPE, 4, Some(3)).unwrap();
    assert_eq!((out.total, out.rejected), (1, 0));
    // the reference writes the (empty) resource and scope messages
    let expected = ld(0x0a, &[ld(0x0a, b""), ld(0x12, &scope_logs)].concat());
    assert_eq!(out.parts, vec![(3, expected)]);
}

#[test]
fn unknown_request_fields_are_dropped_and_wrong_wire_types_refused() {
    let body = [
        ld(0x0a, &resource_spans("svc", &[span(&trace_id(1), "a")])),
        vec![0x10, 0x05],
    ]
    .concat();
    let out = split_body(&body, &TRACES_SHAPE, 2, None).unwrap();
    assert_eq!(out.parts[0].1, body[..body.len() - 2]);
    let e = split_body(&[0x08, 0x01], &TRACES_SHAPE, 2, None)
        .err()
        .unwrap();
    assert!(
        e.starts_with(
            "invalid ExportTraceServiceRequest: field 1 (resource_spans) has wire type 0"
        ),
        "{e}"
    );
}

#[test]
fn an_empty_request_has_no_parts() {
    let out = split_body(b"", &LOGS_SHAPE, 3, Some(0)).unwrap();
    assert!(out.parts.is_empty() && out.total == 0);
}

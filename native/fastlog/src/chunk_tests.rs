//! The unit tests of chunk.rs (a file of their own: the module is long enough).

use super::*;
use crate::field_mapping::RoleNames;
use crate::otlp_schema::{check, M};
use crate::otlp_split::{split_body, LOGS_SHAPE};

pub(crate) const PARTITIONS: u64 = 4;
pub(crate) const UNTRACED: u32 = 3;
pub(crate) const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

pub(crate) fn mapping() -> FieldMapping {
    let v = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
    FieldMapping::new(
        RoleNames {
            message: v(&["msg"]),
            timestamp: v(&["ts"]),
            level: v(&["level"]),
            trace_id: v(&["trace_id"]),
            span_id: v(&["span_id"]),
            service: v(&["service", "service.name"]),
            data: v(&["data"]),
            ..Default::default()
        },
        [("info".to_string(), 9), ("ERROR".to_string(), 17)]
            .into_iter()
            .collect(),
    )
}

/// The chunk's requests by partition (in order of first record), and its counts.
pub(crate) fn encode(
    chunk: &[u8],
    max_line: usize,
    drop_long_lines: bool,
) -> (Vec<(u32, Vec<u8>)>, Counts) {
    let fields = mapping();
    let plan = ScanPlan::new(&fields).unwrap();
    let consts = Consts::new("agent-7", "fp", "/var/log/app.log", None);
    let params = Params {
        base: 1000,
        partitions: PARTITIONS,
        untraced: UNTRACED,
        observed: 1_700_000_000_000_000_000,
        max_line,
        drop_long_lines,
        consts: &consts,
        fields: &fields,
        plan: &plan,
        ts_fallback: None,
        format: Format::Plain,
        skipping: 0,
        flush_before: 0,
        move_keys: false,
    };
    let (groups, counts, consumed, _) = process(chunk, &params, STAGE_FULL).unwrap();
    assert_eq!(consumed, chunk.len());
    let requests = groups
        .iter()
        .map(|g| {
            let f = finish(g, &consts);
            let mut buf = vec![0; f.len];
            f.write_into(&mut buf);
            (f.partition, buf)
        })
        .collect();
    (requests, counts)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

const CHUNK: &[u8] =
    b"{\"level\":\"info\",\"msg\":\"a\"}\r\n\n   \nnot json\n{\"msg\":\"bad \xff\"}\n\
{\"msg\":\"a line longer than the limit of this test\"}\n{\"level\"";

#[test]
fn lines_are_counted_flagged_and_cut_like_the_reference() {
    let (_, counts) = encode(CHUNK, 40, false);
    let expected = Counts {
        lines: 5,
        parse_errors: 2, // "not json" is plain text
        truncated: 1,
        invalid_utf8: 1,
    };
    assert_eq!(counts, expected);
    // drop: the over-long line is counted, not sent
    let (_, counts) = encode(CHUNK, 40, true);
    assert_eq!(
        counts,
        Counts {
            lines: 4,
            parse_errors: 1,
            truncated: 1,
            invalid_utf8: 1
        }
    );
    // a tail at least max_line long is the head of an over-long line
    let (_, counts) = encode(b"{\"level\":\"info\"}\n01234567890123456789", 20, false);
    assert_eq!((counts.lines, counts.truncated), (2, 1));
}

#[test]
fn records_go_to_the_partition_of_their_trace_or_the_untraced_one() {
    let chunk =
        format!("{{\"trace_id\":\"{TRACE}\",\"level\":\"ERROR\"}}\n{{\"level\":\"info\"}}\n");
    let (requests, _) = encode(chunk.as_bytes(), 1 << 20, false);
    let traced = (u64::from_str_radix(&TRACE[16..], 16).unwrap() % PARTITIONS) as u32;
    let partitions: Vec<u32> = requests.iter().map(|r| r.0).collect();
    assert_eq!(partitions, [traced, UNTRACED]);
    // severity 17 (field 2, varint) from the mapping's lowercased names; the trace id bytes
    assert!(contains(&requests[0].1, &[0x10, 17]));
    assert!(contains(
        &requests[0].1,
        &[0x4a, 16, 0x0a, 0xf7, 0x65, 0x19]
    ));
    assert!(contains(&requests[1].1, &[0x10, 9]));
}

#[test]
fn requests_are_valid_and_split_back_into_themselves() {
    let (requests, counts) = encode(CHUNK, 40, false);
    let mut records = 0;
    for (partition, request) in &requests {
        check(request, request.as_ptr() as usize, M::LogsRequest, 0, []).unwrap();
        let split = split_body(request, &LOGS_SHAPE, PARTITIONS, Some(UNTRACED as u64)).unwrap();
        assert_eq!(split.parts, vec![(*partition as u64, request.clone())]);
        records += split.total;
    }
    assert_eq!(records, counts.lines);
    let all: Vec<u8> = requests.iter().flat_map(|r| r.1.iter().copied()).collect();
    for needle in [
        &b"tether.file"[..],
        b"/var/log/app.log",
        b"tether.agent.id",
        b"agent-7",
        b"not json",
    ] {
        assert!(
            contains(&all, needle),
            "{}",
            String::from_utf8_lossy(needle)
        );
    }
    assert!(contains(&all, "bad \u{fffd}".as_bytes()));
}

#[test]
fn records_of_one_service_share_a_resource() {
    let chunk = b"{\"service\":\"a\"}\n{\"service\":{\"name\":\"b\"}}\n{\"service\":\"a\"}\n";
    let (requests, counts) = encode(chunk, 1 << 20, false);
    assert_eq!(counts.lines, 3);
    let [(_, request)] = &requests[..] else {
        panic!("one partition")
    };
    // one resource (with its service.name attribute) per service, not per record
    assert_eq!(
        request.windows(12).filter(|w| w == b"service.name").count(),
        2
    );
}

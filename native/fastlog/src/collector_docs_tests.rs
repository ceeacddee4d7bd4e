//! The unit tests of collector_docs.rs (a file of their own: the module is long enough).

use super::*;
use crate::chunk::tests::{encode, mapping, TRACE};
use crate::wire::put_ld;

/// The documents of every request the agent's encoder makes of `chunk`.
fn documents(chunk: &[u8]) -> Vec<(String, String, String, bool)> {
    let (requests, _) = encode(chunk, 1 << 20, false);
    let mapping = mapping();
    let mut docs = Vec::new();
    for (_, body) in &requests {
        let out = request(body, &mapping).expect("handled here");
        for rec in &out.records {
            let head = String::from_utf8(out.head(rec).to_vec()).unwrap();
            docs.push((
                out.record_id(rec).unwrap().to_string(),
                rec.level.clone(),
                head,
                rec.parse_error,
            ));
        }
    }
    docs
}

#[test]
fn file_lines_become_documents_with_ids_of_their_offsets() {
    let line =
        format!("{{\"trace_id\":\"{TRACE}\",\"level\":\"ERROR\",\"msg\":\"hi\",\"user\":\"u\"}}");
    let docs = documents(format!("{line}\n{{not json\n").as_bytes());
    assert_eq!(docs.len(), 2);
    let (id, level, head, parse_error) = &docs[0];
    assert_eq!(
        (id.as_str(), level.as_str(), *parse_error),
        ("agent-7:fp:1000", "error", false)
    );
    assert!(
        head.starts_with(
            "{\"@timestamp\":\"2023-11-14T22:13:20.000000000Z\",\"log\":{\"level\":\"error\""
        ),
        "{head}"
    );
    assert!(head.contains(",\"event\":{\"severity\":17},"), "{head}");
    assert!(
        head.contains(",\"message\":\"hi\",\"data\":{\"user\":\"u\"}"),
        "{head}"
    );
    assert!(
        head.contains(&format!(",\"trace\":{{\"id\":\"{TRACE}\"}}")),
        "{head}"
    );
    assert!(head.ends_with(','));
    let offset = 1000 + line.len() + 1;
    let (id, _, head, parse_error) = &docs[1];
    assert_eq!(
        (id.clone(), *parse_error),
        (format!("agent-7:fp:{offset}"), true)
    );
    assert!(head.contains(",\"message\":\"{not json\""), "{head}");
    assert!(
        head.contains("\"file\":{\"path\":\"/var/log/app.log\"}"),
        "{head}"
    );
}

#[test]
fn other_requests_are_left_to_the_reference() {
    let mapping = mapping();
    // OTLP logs: a scope other than the file scope
    let scope_logs = [
        vec![0x0a, 0x05, 0x0a, 0x03, b'l', b'i', b'b'],
        vec![0x12, 0x00],
    ]
    .concat();
    let mut resource_logs = Vec::new();
    put_ld(&mut resource_logs, 0x12, &scope_logs);
    let mut body = Vec::new();
    put_ld(&mut body, 0x0a, &resource_logs);
    assert!(request(&body, &mapping).is_none());
    // not protobuf
    assert!(request(b"\xff\xff", &mapping).is_none());
    // an unknown field of the request
    assert!(request(&[0x10, 0x01], &mapping).is_none());
    // no records at all: no documents
    assert!(request(b"", &mapping).is_some_and(|out| out.records.is_empty()));
}

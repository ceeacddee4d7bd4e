//! Container log files (CRI and Docker json-file lines, as the kubelet's runtimes write them):
//! a chunk's physical lines -> records of joined content, with stream and runtime time. The
//! reference, with the rules in prose, is agent/container_logs.py::unwrap; this must agree with
//! it exactly (tests/unit/test_container_logs.py).

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;

use crate::constants::ORJSON_MAX_DEPTH;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Format {
    Plain,
    Cri,
    Docker,
}

impl Format {
    pub(crate) fn parse(name: &str) -> Option<Format> {
        match name {
            "plain" => Some(Format::Plain),
            "cri" => Some(Format::Cri),
            "docker" => Some(Format::Docker),
            _ => None,
        }
    }
}

/// Bits of `skipping` (agent/container_logs.py STREAM_BITS); also a record's stream, 0 for none.
pub(crate) const STDOUT: u8 = 1;
pub(crate) const STDERR: u8 = 2;

fn stream_bit(name: &[u8]) -> u8 {
    match name {
        b"stdout" => STDOUT,
        b"stderr" => STDERR,
        _ => 0,
    }
}

struct Physical<'a> {
    stream: u8,
    partial: bool,
    content: Cow<'a, [u8]>,
    time_text: Cow<'a, [u8]>,
}

/// `<time> <stream> <tags> <content>` (container_logs.parse_cri).
fn parse_cri(line: &[u8]) -> Option<Physical<'_>> {
    let first = memchr::memchr(b' ', line)?;
    if first == 0 {
        return None;
    }
    let second = first + 1 + memchr::memchr(b' ', &line[first + 1..])?;
    let stream = stream_bit(&line[first + 1..second]);
    if stream == 0 {
        return None;
    }
    let rest = &line[second + 1..];
    let (tags, content) = match memchr::memchr(b' ', rest) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &b""[..]),
    };
    let tag = match memchr::memchr(b':', tags) {
        Some(i) => &tags[..i],
        None => tags,
    };
    let partial = match tag {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    Some(Physical {
        stream,
        partial,
        content: Cow::Borrowed(content),
        time_text: Cow::Borrowed(&line[..first]),
    })
}

const DOCKER_PREFIX: &[u8] = b"{\"log\":";

/// The JSON object of a line, as orjson reads it: serde_json's Value, with orjson's nesting limit
/// (1024, not serde_json's 128); lone surrogate escapes are errors in both. (Not json_scan: a
/// second caller of it kept LLVM from inlining it into the plain lines' loop.)
fn json_object(text: &str) -> Option<serde_json::Map<String, Value>> {
    let parse = |unbounded: bool| -> Result<Value, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(text);
        if unbounded {
            de.disable_recursion_limit();
        }
        let value = Value::deserialize(&mut de)?;
        de.end()?;
        Ok(value)
    };
    let value = match parse(false) {
        Ok(value) => value,
        Err(e) if e.to_string().starts_with("recursion limit exceeded") => {
            if max_depth(text.as_bytes()) > ORJSON_MAX_DEPTH {
                return None;
            }
            parse(true).ok()?
        }
        Err(_) => return None,
    };
    match value {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// The deepest nesting of arrays and objects in a JSON text (strings skipped).
fn max_depth(b: &[u8]) -> usize {
    let (mut depth, mut max, mut in_str, mut esc) = (0usize, 0usize, false, false);
    for &c in b {
        if in_str {
            if esc {
                esc = false;
            } else if c == b'\\' {
                esc = true;
            } else if c == b'"' {
                in_str = false;
            }
            continue;
        }
        match c {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// A json-file entry (container_logs.parse_docker).
fn parse_docker(line: &[u8]) -> Option<Physical<'_>> {
    if !line.starts_with(DOCKER_PREFIX) {
        return None;
    }
    let mut entry = json_object(std::str::from_utf8(line).ok()?)?;
    let Some(Value::String(log)) = entry.remove("log") else {
        return None;
    };
    let stream = match entry.get("stream") {
        Some(Value::String(s)) => stream_bit(s.as_bytes()),
        _ => 0,
    };
    if stream == 0 {
        return None;
    }
    let time_text = match entry.remove("time") {
        Some(Value::String(t)) => Cow::Owned(t.into_bytes()),
        _ => Cow::Borrowed(&b""[..]),
    };
    let mut content = log.into_bytes();
    let partial = content.last() != Some(&b'\n');
    if !partial {
        content.pop();
    }
    Some(Physical {
        stream,
        partial,
        content: Cow::Owned(content),
        time_text,
    })
}

/// container_logs.TRACE_MAX_LINES
const TRACE_MAX_LINES: u32 = 256;
const JAVA: u8 = 1;
const PYTHON: u8 = 2;
const GO: u8 = 3;

fn trim_cr(mut line: &[u8]) -> &[u8] {
    while let [rest @ .., b'\r'] = line {
        line = rest;
    }
    line
}

/// The kind of stack trace a plain-text line begins, 0 for none (container_logs.trace_head).
fn trace_head(content: &[u8]) -> u8 {
    if content.first() == Some(&b'{') {
        return 0; // a JSON line (the common case), none of the heads
    }
    let line = trim_cr(content);
    if line.starts_with(b"Traceback (most recent call last):") {
        return PYTHON;
    }
    if line.starts_with(b"panic: ") || line.starts_with(b"fatal error: ") {
        return GO;
    }
    if line.starts_with(b"Exception in thread ") {
        return JAVA;
    }
    let name = match memchr::memchr(b':', line) {
        Some(i) => &line[..i],
        None => line,
    };
    let named = name.contains(&b'.')
        && !name.contains(&b' ')
        && !name.contains(&b'\t')
        && (name.ends_with(b"Exception") || name.ends_with(b"Error"));
    if named {
        JAVA
    } else {
        0
    }
}

/// (joins, ends): whether a line continues a trace of `kind` with `lines` lines, and ends it
/// (container_logs.trace_continues).
fn trace_continues(kind: u8, lines: u32, content: &[u8]) -> (bool, bool) {
    let line = trim_cr(content);
    let indented = matches!(line.first(), Some(b' ' | b'\t'));
    match kind {
        JAVA => (indented || line.starts_with(b"Caused by: "), false),
        PYTHON if indented => (true, false),
        PYTHON => (lines >= 2, lines >= 2),
        _ => (
            line.is_empty()
                || indented
                || line.starts_with(b"goroutine ")
                || line.starts_with(b"created by ")
                || line.starts_with(b"[")
                || line.ends_with(b")"),
            false,
        ),
    }
}

/// One record: the joined content of its physical lines.
pub(crate) struct Record<'a> {
    /// of its first physical line in the file
    pub(crate) offset: u64,
    /// STDOUT, STDERR, or 0 for a line not of the file's format
    pub(crate) stream: u8,
    /// the runtime's time of its first line, as written (empty when none)
    pub(crate) time_text: Cow<'a, [u8]>,
    pub(crate) truncated: bool,
    pub(crate) content: Cow<'a, [u8]>,
    last_line: u64,
    skipping_before: u8,
    /// the kind of stack trace it begins (it joins the records after it), 0 for none
    trace: u8,
    /// the records joined in it
    lines: u32,
}

impl<'a> Record<'a> {
    /// A line of its stack trace.
    fn join(&mut self, record: Record<'a>) {
        let content = self.content.to_mut();
        content.push(b'\n');
        content.extend_from_slice(&record.content);
        self.last_line = record.last_line;
        self.lines += 1;
    }

    fn add(&mut self, piece: Cow<'a, [u8]>, limit: usize) {
        let room = limit - self.content.len();
        let piece = if piece.len() > room {
            self.truncated = true;
            match piece {
                Cow::Borrowed(b) => Cow::Borrowed(&b[..room]),
                Cow::Owned(mut o) => {
                    o.truncate(room);
                    Cow::Owned(o)
                }
            }
        } else {
            piece
        };
        if self.content.is_empty() {
            self.content = piece;
        } else if !piece.is_empty() {
            self.content.to_mut().extend_from_slice(&piece);
        }
    }
}

pub(crate) struct Unwrapped<'a> {
    /// in the order they were completed
    pub(crate) records: Vec<Record<'a>>,
    /// bytes of the chunk these records stand for
    pub(crate) consumed: usize,
    /// streams inside a record already shipped
    pub(crate) skipping: u8,
}

/// The records of a chunk of a container log (container_logs.unwrap). Not inlined: inside
/// chunk::process it left LLVM no room to inline the plain lines' scanner and encoder.
#[inline(never)]
pub(crate) fn unwrap<'a>(
    data: &'a [u8],
    base: u64,
    format: Format,
    limit: usize,
    mut skipping: u8,
    flush_before: u64,
) -> Unwrapped<'a> {
    let parse = match format {
        Format::Docker => parse_docker,
        _ => parse_cri,
    };
    // room for lines of 64 bytes and more: growing it copied every record again and again (the
    // pages never touched cost nothing)
    let mut done: Vec<Record<'a>> = Vec::with_capacity(data.len() / 64 + 16);
    // by stream: [stdout, stderr]
    let mut pending: [Option<Record>; 2] = [None, None];
    // by stream: a stack trace that may go on
    let mut traces: [Option<Record>; 2] = [None, None];
    let mut complete = |mut record: Record<'a>, done: &mut Vec<Record<'a>>| {
        let slot = &mut traces[(record.stream - 1) as usize];
        if let Some(mut trace) = slot.take() {
            let (joins, ends) = trace_continues(trace.trace, trace.lines, &record.content);
            let fits = trace.lines < TRACE_MAX_LINES
                && trace.content.len() + 1 + record.content.len() <= limit;
            if joins && fits && !record.truncated {
                trace.join(record);
                if ends {
                    done.push(trace);
                } else {
                    *slot = Some(trace);
                }
                return;
            }
            done.push(trace);
        }
        record.trace = if record.truncated {
            0
        } else {
            trace_head(&record.content)
        };
        if record.trace != 0 {
            *slot = Some(record);
        } else {
            done.push(record);
        }
    };
    let n = data.len();
    let mut pos = 0;
    while pos < n {
        let (end, after, tail) = match memchr::memchr(b'\n', &data[pos..]) {
            Some(i) => (pos + i, pos + i + 1, false),
            None => (n, n, true),
        };
        let line = &data[pos..end];
        let offset = base + pos as u64;
        pos = after;
        let head_of_long = tail && line.len() >= limit;
        let Some(physical) = parse(line) else {
            let mut record = Record {
                offset,
                stream: 0,
                time_text: Cow::Borrowed(&b""[..]),
                truncated: head_of_long,
                content: Cow::Borrowed(&b""[..]),
                last_line: offset,
                skipping_before: 0,
                trace: 0,
                lines: 1,
            };
            record.add(Cow::Borrowed(line), limit);
            done.push(record);
            continue;
        };
        let bit = physical.stream;
        if skipping & bit != 0 {
            if !physical.partial {
                skipping &= !bit;
            }
            continue;
        }
        let slot = &mut pending[(bit - 1) as usize];
        let mut record = slot.take().unwrap_or_else(|| Record {
            offset,
            stream: bit,
            time_text: physical.time_text,
            truncated: false,
            content: Cow::Borrowed(&b""[..]),
            last_line: offset,
            skipping_before: skipping,
            trace: 0,
            lines: 1,
        });
        record.add(physical.content, limit);
        record.last_line = offset;
        record.truncated |= head_of_long;
        if physical.partial && record.truncated {
            skipping |= bit; // over-long: ship its head, skip its rest
            complete(record, &mut done);
        } else if physical.partial {
            *slot = Some(record);
        } else {
            complete(record, &mut done);
        }
    }
    // the records still open, in order of first line; those that waited long enough ship as
    // they are
    let mut open: Vec<Record> = pending.into_iter().chain(traces).flatten().collect();
    open.sort_by_key(|r| r.offset);
    let waiting_at = open.iter().position(|r| r.offset >= flush_before);
    let waiting = waiting_at.map(|i| open.split_off(i));
    done.extend(open);
    let Some(waiting) = waiting else {
        return Unwrapped {
            records: done,
            consumed: n,
            skipping,
        };
    };
    let mut boundary = waiting[0].offset;
    let mut skipping = waiting[0].skipping_before;
    // a stack trace on both sides of the boundary is read again, whole
    while let Some(first) = done
        .iter()
        .filter(|r| r.lines > 1 && r.offset < boundary && boundary <= r.last_line)
        .min_by_key(|r| r.offset)
    {
        boundary = first.offset;
        skipping = first.skipping_before;
    }
    done.retain(|r| r.offset < boundary); // the others are read again next time
    for r in &done {
        if r.stream != 0 && r.last_line >= boundary {
            skipping |= r.stream; // its lines from the boundary on are skipped
        }
    }
    Unwrapped {
        records: done,
        consumed: (boundary - base) as usize,
        skipping,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents(u: &Unwrapped) -> Vec<(u64, u8, String, bool)> {
        u.records
            .iter()
            .map(|r| {
                (
                    r.offset,
                    r.stream,
                    String::from_utf8_lossy(&r.content).into_owned(),
                    r.truncated,
                )
            })
            .collect()
    }

    const T: &str = "2026-12-05T10:00:00.000000001Z";

    #[test]
    fn cri_pieces_of_a_stream_are_joined_across_the_other_stream() {
        let data = format!(
            "{T} stdout P ab\n{T} stderr F err\n{T} stdout P cd\n{T} stdout F ef\nnot cri\n"
        );
        let u = unwrap(data.as_bytes(), 100, Format::Cri, 1000, 0, 0);
        let at = |needle: &str| 100 + data.find(needle).unwrap() as u64;
        let stderr_line = at("stderr") - (T.len() as u64 + 1);
        assert_eq!(
            contents(&u),
            [
                (stderr_line, STDERR, "err".into(), false),
                (100, STDOUT, "abcdef".into(), false),
                (at("not cri"), 0, "not cri".into(), false),
            ]
        );
        assert_eq!((u.consumed, u.skipping), (data.len(), 0));
    }

    #[test]
    fn a_record_without_its_end_waits_and_what_follows_it_too() {
        let data = format!("{T} stdout F a\n{T} stderr P b\n{T} stdout F c\n");
        let u = unwrap(data.as_bytes(), 0, Format::Cri, 1000, 0, 0);
        assert_eq!(contents(&u).len(), 1);
        assert_eq!(u.consumed, T.len() + 12);
        // after its timeout, it ships as it is
        let u = unwrap(
            data.as_bytes(),
            0,
            Format::Cri,
            1000,
            0,
            u.consumed as u64 + 1,
        );
        assert_eq!(contents(&u).len(), 3);
        assert_eq!(u.consumed, data.len());
    }

    #[test]
    fn an_over_long_record_ships_its_head_and_skips_its_rest() {
        let data = format!("{T} stdout P 0123456789\n{T} stdout P abc\n");
        let u = unwrap(data.as_bytes(), 0, Format::Cri, 8, 0, 0);
        assert_eq!(contents(&u), [(0, STDOUT, "01234567".into(), true)]);
        assert_eq!((u.consumed, u.skipping), (data.len(), STDOUT));
        let next = format!("{T} stdout F def\n{T} stdout F ok\n");
        let u = unwrap(next.as_bytes(), 0, Format::Cri, 8, STDOUT, 0);
        assert_eq!(
            contents(&u),
            [(T.len() as u64 + 14, STDOUT, "ok".into(), false)]
        );
        assert_eq!(u.skipping, 0);
    }

    #[test]
    fn a_stack_trace_is_one_record_ended_by_a_line_that_does_not_continue_it() {
        let data = format!(
            "{T} stderr F java.lang.IllegalStateException: no\n{T} stdout F between\n\
{T} stderr F \tat a.B.c(B.java:1)\n{T} stderr F Caused by: x.YError: z\n{T} stderr F next\n"
        );
        let u = unwrap(data.as_bytes(), 0, Format::Cri, 1000, 0, 0);
        let c = contents(&u);
        assert_eq!(c[0].2, "between");
        assert_eq!(
            c[1].2,
            "java.lang.IllegalStateException: no\n\tat a.B.c(B.java:1)\nCaused by: x.YError: z"
        );
        assert_eq!(c[2].2, "next");
        assert_eq!(trace_head(b"Traceback (most recent call last):\r"), PYTHON);
        assert_eq!(trace_head(b"panic: x"), GO);
        assert_eq!(trace_head(b"not a.trace Exception"), 0);
        // its next line not there yet: it waits, and so does what follows it
        let u = unwrap(
            &data.as_bytes()[..data.find("next").unwrap() - T.len() - 10],
            0,
            Format::Cri,
            1000,
            0,
            0,
        );
        assert_eq!(contents(&u).len(), 0);
        assert_eq!(u.consumed, 0);
    }

    #[test]
    fn docker_entries_are_read_like_orjson_reads_them() {
        let data = b"{\"log\":\"a\",\"stream\":\"stdout\",\"time\":\"t1\"}\n\
{\"log\":\"b\\n\",\"stream\":\"stdout\",\"time\":\"t2\"}\n\
{\"log\":\"c\\u00e9\\n\",\"stream\":\"stderr\",\"log\":\"d\\n\"}\n\
{\"log\":\"x\\n\",\"stream\":\"stdin\"}\n";
        let u = unwrap(data, 0, Format::Docker, 1000, 0, 0);
        let c = contents(&u);
        assert_eq!((c[0].2.as_str(), c[0].1), ("ab", STDOUT));
        assert_eq!(&*u.records[0].time_text, b"t1");
        assert_eq!((c[1].2.as_str(), c[1].1), ("d", STDERR)); // the last "log" counts
        assert_eq!(c[2].1, 0); // not a stream: the line as it is
    }
}

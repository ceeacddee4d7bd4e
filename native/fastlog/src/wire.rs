//! The protobuf wire format: writing varints and length-delimited fields, and `Rd`, a reader of
//! one message's fields that reports errors at their offset in the whole request body.

use crate::otlp_schema::{M, MAX_DEPTH};

#[inline]
pub(crate) fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}
#[inline]
pub(crate) fn varint_len(n: u64) -> usize {
    (64 - (n | 1).leading_zeros() as usize).div_ceil(7)
}
#[inline]
pub(crate) fn ld_len(n: usize) -> usize {
    1 + varint_len(n as u64) + n
}
pub(crate) fn put_ld(out: &mut Vec<u8>, tag: u8, payload: &[u8]) {
    out.push(tag);
    put_varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

/// A wire-level error: what went wrong and where (offset in the request body, message).
pub(crate) type WResult<T> = Result<T, String>;

fn wire_name(wt: u8) -> &'static str {
    match wt {
        0 => "varint",
        1 => "fixed64",
        2 => "length-delimited",
        3 => "start-group",
        4 => "end-group",
        5 => "fixed32",
        _ => "invalid",
    }
}

/// Reads one message's bytes; positions in errors are offsets in the whole request body.
pub(crate) struct Rd<'a> {
    b: &'a [u8],
    i: usize,
    origin: usize,
    m: M,
}

impl<'a> Rd<'a> {
    pub(crate) fn new(b: &'a [u8], origin: usize, m: M) -> Self {
        Rd { b, i: 0, origin, m }
    }
    /// A reader of a message that is a whole buffer of its own: offsets in errors are in `b`.
    pub(crate) fn whole(b: &'a [u8], m: M) -> Self {
        Rd::new(b, b.as_ptr() as usize, m)
    }
    /// The offset of the next field, for errors about the field about to be read.
    #[inline]
    pub(crate) fn pos(&self) -> usize {
        self.i
    }
    #[inline]
    pub(crate) fn done(&self) -> bool {
        self.i >= self.b.len()
    }
    fn at(&self, i: usize) -> usize {
        self.b.as_ptr() as usize - self.origin + i
    }
    pub(crate) fn err(&self, start: usize, what: &str) -> String {
        format!(
            "{} at byte {} (in {})",
            what,
            self.at(start),
            self.m.short()
        )
    }
    #[inline(always)]
    pub(crate) fn varint(&mut self) -> WResult<u64> {
        match self.b.get(self.i) {
            Some(&c) if c < 0x80 => {
                self.i += 1;
                Ok(u64::from(c))
            }
            _ => self.varint_slow(),
        }
    }
    #[inline(never)]
    fn varint_slow(&mut self) -> WResult<u64> {
        let start = self.i;
        let mut v: u64 = 0;
        for k in 0..10 {
            let Some(&c) = self.b.get(self.i) else {
                return Err(self.err(start, "truncated varint"));
            };
            self.i += 1;
            v |= u64::from(c & 0x7f) << (7 * k);
            if c < 0x80 {
                return Ok(v);
            }
        }
        Err(self.err(start, "varint longer than 10 bytes"))
    }
    /// (field number, wire type); upb: at most 5 bytes, fits in 32 bits, field number > 0.
    #[inline(always)]
    pub(crate) fn tag(&mut self) -> WResult<(u32, u8)> {
        if let Some(&c) = self.b.get(self.i) {
            if (8..0x80).contains(&c) && c & 7 <= 5 {
                self.i += 1;
                return Ok((u32::from(c >> 3), c & 7));
            }
        }
        self.tag_slow()
    }
    #[inline(never)]
    fn tag_slow(&mut self) -> WResult<(u32, u8)> {
        let start = self.i;
        let (field, wt) = self.group_tag()?;
        if field == 0 {
            return Err(self.err(start, "field number 0"));
        }
        Ok((field, wt))
    }
    /// A tag inside an unknown group, where upb lets field number 0 through.
    fn group_tag(&mut self) -> WResult<(u32, u8)> {
        let start = self.i;
        let v = self.varint()?;
        if self.i - start > 5 || v > u64::from(u32::MAX) {
            return Err(self.err(start, "field tag out of range"));
        }
        let (field, wt) = ((v >> 3) as u32, (v & 7) as u8);
        if wt > 5 {
            return Err(self.err(start, &format!("invalid wire type {wt} for field {field}")));
        }
        Ok((field, wt))
    }
    /// The payload of a length-delimited field (upb: a length of at most 5 bytes, < 2^31).
    #[inline(always)]
    pub(crate) fn ld(&mut self) -> WResult<&'a [u8]> {
        if let Some(&n) = self.b.get(self.i) {
            let (from, n) = (self.i + 1, n as usize);
            if n < 0x80 {
                if let Some(v) = self.b.get(from..from + n) {
                    self.i = from + n;
                    return Ok(v);
                }
            }
        }
        self.ld_slow()
    }
    #[inline(never)]
    fn ld_slow(&mut self) -> WResult<&'a [u8]> {
        let start = self.i;
        let n = self.varint()?;
        if self.i - start > 5 || n >= 1 << 31 {
            return Err(self.err(start, "length out of range"));
        }
        let left = self.b.len() - self.i;
        if n as usize > left {
            return Err(self.err(
                start,
                &format!("length {n} runs past the end ({left} bytes left)"),
            ));
        }
        let v = &self.b[self.i..self.i + n as usize];
        self.i += n as usize;
        Ok(v)
    }
    #[inline(always)]
    pub(crate) fn fixed(&mut self, n: usize) -> WResult<()> {
        if self.b.len() - self.i < n {
            return Err(self.err(self.i, &format!("truncated fixed{}", n * 8)));
        }
        self.i += n;
        Ok(())
    }
    /// The value of a fixed64 field whose tag was just read.
    pub(crate) fn fixed64(&mut self) -> WResult<u64> {
        self.fixed(8)?;
        let bytes: [u8; 8] = self.b[self.i - 8..self.i]
            .try_into()
            .expect("8 bytes were read");
        Ok(u64::from_le_bytes(bytes))
    }
    /// Skips an unknown field whose tag was just read; `depth` is the current message's.
    pub(crate) fn skip(&mut self, field: u32, wt: u8, depth: u32) -> WResult<()> {
        match wt {
            0 => self.varint().map(drop),
            1 => self.fixed(8),
            2 => self.ld().map(drop),
            5 => self.fixed(4),
            3 => {
                let start = self.i;
                if depth + 1 > MAX_DEPTH {
                    return Err(self.err(start, "nesting deeper than 100"));
                }
                while !self.done() {
                    let at = self.i;
                    let (f, w) = self.group_tag()?;
                    if w == 4 {
                        if f != field {
                            return Err(
                                self.err(at, &format!("end-group {f} closes group {field}"))
                            );
                        }
                        return Ok(());
                    }
                    self.skip(f, w, depth + 1)?;
                }
                Err(self.err(start, &format!("unterminated group {field}")))
            }
            _ => Err(self.err(self.i, &format!("unexpected end-group tag {field}"))),
        }
    }
    pub(crate) fn wrong_wire(&self, start: usize, field: u32, wt: u8, expected: u8) -> String {
        self.err(
            start,
            &format!(
                "field {} ({}) has wire type {} ({}), expected {} ({})",
                field,
                self.m.field_name(field),
                wt,
                wire_name(wt),
                expected,
                wire_name(expected)
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EDGES: [u64; 12] = [
        0,
        1,
        0x7f,
        0x80,
        0x3fff,
        0x4000,
        0x1f_ffff,
        0x20_0000,
        u32::MAX as u64,
        1 << 56,
        (1 << 63) - 1,
        u64::MAX,
    ];

    #[test]
    fn varints_round_trip_in_the_length_varint_len_predicts() {
        for n in EDGES {
            let mut out = Vec::new();
            put_varint(&mut out, n);
            assert_eq!(out.len(), varint_len(n), "{n}");
            let mut r = Rd::whole(&out, M::AnyValue);
            assert_eq!(r.varint(), Ok(n));
            assert!(r.done());
        }
        assert_eq!(
            [
                varint_len(0),
                varint_len(127),
                varint_len(128),
                varint_len(u64::MAX)
            ],
            [1, 1, 2, 10]
        );
    }

    #[test]
    fn length_delimited_fields_round_trip() {
        let payload = vec![7u8; 300];
        let mut out = Vec::new();
        put_ld(&mut out, 0x0a, &payload);
        assert_eq!(out.len(), ld_len(payload.len()));
        assert_eq!(&out[..3], &[0x0a, 0xac, 0x02]);
        let mut r = Rd::whole(&out, M::AnyValue);
        assert_eq!(r.tag(), Ok((1, 2)));
        assert_eq!(r.ld(), Ok(&payload[..]));
        assert!(r.done());
    }

    #[test]
    fn fixed64_reads_little_endian() {
        let mut out = vec![0x21];
        out.extend_from_slice(&0x0102_0304_0506_0708u64.to_le_bytes());
        let mut r = Rd::whole(&out, M::AnyValue);
        assert_eq!(r.tag(), Ok((4, 1)));
        assert_eq!(r.fixed64(), Ok(0x0102_0304_0506_0708));
        assert!(Rd::whole(&[1, 2, 3], M::AnyValue).fixed64().is_err());
    }

    #[test]
    fn malformed_input_is_an_error_naming_the_offset_and_message() {
        let e = |b: &[u8]| {
            let mut r = Rd::whole(b, M::KeyValue);
            r.tag().and_then(|(f, wt)| r.skip(f, wt, 0)).unwrap_err()
        };
        assert_eq!(e(&[0x08, 0x80]), "truncated varint at byte 1 (in KeyValue)");
        assert_eq!(
            e(&[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            "varint longer than 10 bytes at byte 1 (in KeyValue)"
        );
        assert_eq!(e(&[0x00]), "field number 0 at byte 0 (in KeyValue)");
        assert_eq!(
            e(&[0x0f]),
            "invalid wire type 7 for field 1 at byte 0 (in KeyValue)"
        );
        assert_eq!(
            e(&[0x0a, 0x05, 1]),
            "length 5 runs past the end (1 bytes left) at byte 1 (in KeyValue)"
        );
        assert_eq!(
            e(&[0x0b, 0x10, 0x01]),
            "unterminated group 1 at byte 1 (in KeyValue)"
        );
        assert_eq!(
            e(&[0x0b, 0x14]),
            "end-group 2 closes group 1 at byte 1 (in KeyValue)"
        );
    }

    #[test]
    fn groups_are_skipped_whole() {
        // group 1 { field 2 = varint 1, group 3 {} } then field 4 fixed32
        let b = [0x0b, 0x10, 0x01, 0x1b, 0x1c, 0x0c, 0x25, 1, 2, 3, 4];
        let mut r = Rd::whole(&b, M::Status);
        while !r.done() {
            let (f, wt) = r.tag().unwrap();
            r.skip(f, wt, 0).unwrap();
        }
        assert_eq!(r.pos(), b.len());
    }

    #[test]
    fn a_wrong_wire_type_names_the_field() {
        let r = Rd::whole(&[], M::Span);
        assert_eq!(
            r.wrong_wire(0, 1, 0, 2),
            "field 1 (trace_id) has wire type 0 (varint), expected 2 (length-delimited) at byte 0 (in Span)"
        );
    }
}

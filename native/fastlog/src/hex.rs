//! Hexadecimal ids: trace and span ids as the agent reads them from JSON lines (agent/parse.py
//! _hex_id) and as the collector writes them into documents.

/// Hex digit values as a table (0xff: not a hex digit): ids are 48 hex digits on most lines, and
/// a branch per digit showed in the time to encode a chunk.
pub(crate) const HEX: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = match c as u8 {
            b @ b'0'..=b'9' => b - b'0',
            b @ b'a'..=b'f' => b - b'a' + 10,
            b @ b'A'..=b'F' => b - b'A' + 10,
            _ => 0xff,
        };
        c += 1;
    }
    t
};

/// The `N` bytes of an id written as 2N hex digits (either case); None when it is not that, or
/// all zero (an invalid id in OTLP).
#[inline]
pub(crate) fn decode_id<const N: usize>(b: &[u8]) -> Option<[u8; N]> {
    if b.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    let mut bad = 0u8;
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        let (hi, lo) = (HEX[pair[0] as usize], HEX[pair[1] as usize]);
        bad |= hi | lo;
        *o = (hi << 4) | (lo & 0x0f);
    }
    if bad & 0xf0 != 0 {
        return None; // some byte was not a hex digit
    }
    if out.iter().all(|&x| x == 0) {
        None
    } else {
        Some(out)
    }
}

/// Appends `b` as lowercase hex digits.
pub(crate) fn write_hex(out: &mut Vec<u8>, b: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for &c in b {
        out.push(DIGITS[(c >> 4) as usize]);
        out.push(DIGITS[(c & 15) as usize]);
    }
}

pub(crate) fn hex_string(b: &[u8]) -> String {
    let mut out = Vec::with_capacity(2 * b.len());
    write_hex(&mut out, b);
    String::from_utf8(out).unwrap_or_default()
}

/// agent/parse.py trace_context: the trace id of a trace id field's string, and the span id when
/// it names one too: 32 hex digits (either case); a W3C traceparent
/// (`00-<trace id>-<span id>-<flags>`); Google Cloud's `projects/<project>/traces/<trace id>`.
pub(crate) fn trace_context(s: &str) -> (Option<[u8; 16]>, Option<[u8; 8]>) {
    let b = s.as_bytes();
    if b.len() == 32 {
        return (decode_id::<16>(b), None); // the common case: nothing else is 32 bytes long
    }
    let hex = |part: &[u8]| part.iter().all(|&c| HEX[c as usize] != 0xff);
    if b.len() == 55
        && b[2] == b'-'
        && b[35] == b'-'
        && b[52] == b'-'
        && hex(&b[..2])
        && hex(&b[53..])
    {
        let trace = decode_id::<16>(&b[3..35]);
        let span = trace.and_then(|_| decode_id::<8>(&b[36..52]));
        return (trace, span);
    }
    let id = match s.rfind("/traces/") {
        Some(at) if s.starts_with("projects/") => &b[at + "/traces/".len()..],
        _ => b,
    };
    (decode_id::<16>(id), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_decode_from_either_case() {
        assert_eq!(
            decode_id::<8>(b"00f067aa0ba902b7"),
            Some([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7])
        );
        assert_eq!(
            decode_id::<8>(b"00F067AA0BA902B7"),
            decode_id::<8>(b"00f067aa0ba902b7")
        );
        let trace = decode_id::<16>(b"4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        assert_eq!(hex_string(&trace), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn anything_but_2n_hex_digits_or_all_zero_is_no_id() {
        for bad in [
            &b"00f067aa0ba902b"[..],
            b"00f067aa0ba902b77",
            b"00f067aa0ba902bg",
            b"0000000000000000",
            b"00f067aa 0ba902b",
            b"",
        ] {
            assert_eq!(
                decode_id::<8>(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // every non-hex byte is refused, in either position of a pair
        for c in 0..=255u8 {
            let ok = c.is_ascii_hexdigit();
            assert_eq!(decode_id::<1>(&[c, b'1']).is_some(), ok);
            assert_eq!(decode_id::<1>(&[b'1', c]).is_some(), ok);
        }
    }

    #[test]
    fn write_hex_appends_lowercase() {
        let mut out = b"id:".to_vec();
        write_hex(&mut out, &[0xab, 0x01, 0xff]);
        assert_eq!(out, b"id:ab01ff");
        assert_eq!(hex_string(&[]), "");
    }
}

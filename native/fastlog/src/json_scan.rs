//! One pass over a JSON log line: validates all of it the way the reference (orjson) does and
//! keeps only the values of the top-level alias keys.
//!
//! Why not serde_json for the whole line: it builds nothing for skipped values but still walks
//! them through a visitor, needs post-passes for orjson's rules (depth 1024, lone surrogates in
//! skipped strings, infinite numbers) and hashes every key; on a ~290-byte line that was most of
//! the agent's JSON time. serde_json still decodes escaped strings and parses the numbers that
//! are not plain integers, on exactly their bytes, so those `V` are the ones it always built.

use std::borrow::Cow;

use serde::de::Deserializer as _;

use crate::alias_keys::Keys;
use crate::constants::ORJSON_MAX_DEPTH;
use crate::field_mapping::Mask;
use crate::hex::HEX;
use smallvec::SmallVec;

use crate::json_value::{Found, ValVisitor, V};

struct Bad;
type R<T> = Result<T, Bad>;

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// High bit set in the lowest byte of `x` that is '"', '\\' or < 0x20 (higher bytes may be
/// flagged wrongly by borrows, so only the lowest flag is meaningful).
#[inline(always)]
fn specials(x: u64) -> u64 {
    let quote = x ^ (LO * b'"' as u64);
    let backslash = x ^ (LO * b'\\' as u64);
    let zero_q = quote.wrapping_sub(LO) & !quote;
    let zero_b = backslash.wrapping_sub(LO) & !backslash;
    let control = x.wrapping_sub(LO * 0x20) & !x;
    (zero_q | zero_b | control) & HI
}

/// The first '"', '\\' or control character at or after `i` (b.len() if none): strings are
/// short and mostly escape-free, so 16 bytes per step (SSE2, part of x86-64), then 8 (SWAR).
#[inline(always)]
fn find_special(b: &[u8], mut i: usize) -> usize {
    let n = b.len();
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is always there on x86-64; each load reads b[i..i + 16], in bounds
        unsafe {
            let quote = _mm_set1_epi8(b'"' as i8);
            let backslash = _mm_set1_epi8(b'\\' as i8);
            let max_control = _mm_set1_epi8(0x1f);
            while i + 16 <= n {
                let x = _mm_loadu_si128(b.as_ptr().add(i) as *const __m128i);
                let control = _mm_cmpeq_epi8(_mm_min_epu8(x, max_control), x); // x <= 0x1f
                let hit = _mm_or_si128(
                    _mm_or_si128(_mm_cmpeq_epi8(x, quote), _mm_cmpeq_epi8(x, backslash)),
                    control,
                );
                let mask = _mm_movemask_epi8(hit) as u32;
                if mask != 0 {
                    return i + mask.trailing_zeros() as usize;
                }
                i += 16;
            }
        }
    }
    while i + 8 <= n {
        let m = specials(u64::from_le_bytes(b[i..i + 8].try_into().unwrap()));
        if m != 0 {
            return i + (m.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < n && !is_special(b[i]) {
        i += 1;
    }
    i
}

#[inline(always)]
fn is_special(c: u8) -> bool {
    c == b'"' || c == b'\\' || c < 0x20
}

#[inline(always)]
fn is_ws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r')
}

fn hex4(b: &[u8], at: usize) -> R<u32> {
    let s = b.get(at..at + 4).ok_or(Bad)?;
    let mut v = 0u32;
    for &c in s {
        let d = HEX[c as usize];
        if d == 0xff {
            return Err(Bad);
        }
        v = (v << 4) | d as u32;
    }
    Ok(v)
}

struct Scanner<'a> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
    /// one bit per open container below the top-level object: 1 = array
    arrays: [u64; ORJSON_MAX_DEPTH / 64 + 1],
}

impl<'a> Scanner<'a> {
    /// 0 past the end: no byte 0 is valid outside a string, and inside one it is refused too.
    #[inline(always)]
    fn peek(&self) -> u8 {
        *self.b.get(self.i).unwrap_or(&0)
    }

    #[inline(always)]
    fn ws(&mut self) {
        while is_ws(self.peek()) {
            self.i += 1;
        }
    }

    #[inline(always)]
    fn expect(&mut self, c: u8) -> R<()> {
        self.ws();
        if self.peek() != c {
            return Err(Bad);
        }
        self.i += 1;
        Ok(())
    }

    /// After the opening quote; leaves `i` after the closing one. Returns whether there was an
    /// escape (the caller then cannot borrow the raw bytes).
    #[inline(always)]
    fn string(&mut self) -> R<bool> {
        let b = self.b;
        let mut i = self.i;
        let mut escaped = false;
        loop {
            i = find_special(b, i);
            match b.get(i) {
                Some(b'"') => {
                    self.i = i + 1;
                    return Ok(escaped);
                }
                Some(b'\\') => {
                    escaped = true;
                    i = escape(b, i)?;
                }
                _ => return Err(Bad), // a control character or the end of the line
            }
        }
    }

    /// The JSON number grammar, and finite as a double (orjson refuses 1e400 and
    /// 1 followed by 400 zeros). Returns whether it is a plain unsigned integer.
    fn number(&mut self) -> R<bool> {
        let b = self.b;
        let start = self.i;
        let mut i = start;
        let negative = b.get(i) == Some(&b'-');
        i += negative as usize;
        let int_start = i;
        match b.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                i += 1;
                while matches!(b.get(i), Some(b'0'..=b'9')) {
                    i += 1;
                }
            }
            _ => return Err(Bad),
        }
        let int_digits = i - int_start;
        let mut plain = true;
        if b.get(i) == Some(&b'.') {
            i += 1;
            if !matches!(b.get(i), Some(b'0'..=b'9')) {
                return Err(Bad);
            }
            while matches!(b.get(i), Some(b'0'..=b'9')) {
                i += 1;
            }
            plain = false;
        }
        let mut exponent = false;
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            if !matches!(b.get(i), Some(b'0'..=b'9')) {
                return Err(Bad);
            }
            while matches!(b.get(i), Some(b'0'..=b'9')) {
                i += 1;
            }
            exponent = true;
            plain = false;
        }
        self.i = i;
        // without an exponent, fewer than 309 integer digits is below 1e308 < f64::MAX
        if exponent || int_digits > 308 {
            match self.text[start..i].parse::<f64>() {
                Ok(x) if x.is_finite() => {}
                _ => return Err(Bad),
            }
        }
        Ok(plain && !negative)
    }

    #[inline(always)]
    fn literal(&mut self, word: &[u8]) -> R<()> {
        if self.b.get(self.i..self.i + word.len()) != Some(word) {
            return Err(Bad);
        }
        self.i += word.len();
        Ok(())
    }

    /// One value (any depth) at `i` (whitespace skipped), validated and passed over; `depth`
    /// is the nesting level of the container holding it.
    fn skip_value(&mut self, depth: usize) -> R<()> {
        let mut d = depth;
        'value: loop {
            self.ws();
            match self.peek() {
                b'"' => {
                    self.i += 1;
                    self.string()?;
                }
                b'{' | b'[' => {
                    let array = self.peek() == b'[';
                    self.i += 1;
                    d += 1;
                    if d > ORJSON_MAX_DEPTH {
                        return Err(Bad);
                    }
                    let (word, bit) = (d / 64, 1u64 << (d % 64));
                    self.ws();
                    if array {
                        self.arrays[word] |= bit;
                        if self.peek() != b']' {
                            continue 'value;
                        }
                    } else {
                        self.arrays[word] &= !bit;
                        match self.peek() {
                            b'}' => {}
                            b'"' => {
                                self.i += 1;
                                self.string()?;
                                self.expect(b':')?;
                                continue 'value;
                            }
                            _ => return Err(Bad),
                        }
                    }
                    self.i += 1; // an empty container
                    d -= 1;
                }
                b'-' | b'0'..=b'9' => {
                    self.number()?;
                }
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                _ => return Err(Bad),
            }
            // after a value: close containers until the next one starts
            loop {
                if d == depth {
                    return Ok(());
                }
                self.ws();
                let array = self.arrays[d / 64] & (1u64 << (d % 64)) != 0;
                match (self.peek(), array) {
                    (b',', true) => {
                        self.i += 1;
                        continue 'value;
                    }
                    (b',', false) => {
                        self.i += 1;
                        self.expect(b'"')?;
                        self.string()?;
                        self.expect(b':')?;
                        continue 'value;
                    }
                    (b']', true) | (b'}', false) => {
                        self.i += 1;
                        d -= 1;
                    }
                    _ => return Err(Bad),
                }
            }
        }
    }

    /// A kept value, validated like any other and built as serde_json's ValVisitor built it
    /// (serde_json still parses the numbers that are not plain integers), except that -0 is the
    /// integer 0 as in the reference. `depth`: the nesting level of the container holding it.
    fn value(&mut self, depth: usize) -> R<V<'a>> {
        self.ws();
        let start = self.i;
        Ok(match self.peek() {
            b'"' => {
                self.i += 1;
                V::S(self.string_value(start)?)
            }
            b'-' | b'0'..=b'9' => {
                let plain_uint = self.number()?;
                let raw = &self.text[start..self.i];
                if plain_uint && raw.len() <= 19 {
                    // serde_json makes every non-negative integer that fits a u64 (visit_u64)
                    V::U(raw.parse().map_err(|_| Bad)?)
                } else if raw == "-0" {
                    // serde_json makes it the float -0.0, which Python prints "-0.0"; orjson
                    // (the reference) the integer 0, printed "0"
                    V::I(0)
                } else {
                    serde_json::Deserializer::from_str(raw)
                        .deserialize_any(ValVisitor)
                        .map_err(|_| Bad)?
                }
            }
            b'n' => {
                self.literal(b"null")?;
                V::Null
            }
            b't' => {
                self.literal(b"true")?;
                V::Bool(true)
            }
            b'f' => {
                self.literal(b"false")?;
                V::Bool(false)
            }
            b'[' => {
                self.i += 1;
                if depth + 1 > ORJSON_MAX_DEPTH {
                    return Err(Bad);
                }
                let mut items = Vec::new();
                self.ws();
                if self.peek() == b']' {
                    self.i += 1;
                } else {
                    loop {
                        items.push(self.value(depth + 1)?);
                        self.ws();
                        match self.peek() {
                            b',' => self.i += 1,
                            b']' => {
                                self.i += 1;
                                break;
                            }
                            _ => return Err(Bad),
                        }
                    }
                }
                V::Arr(items)
            }
            b'{' => {
                self.i += 1;
                if depth + 1 > ORJSON_MAX_DEPTH {
                    return Err(Bad);
                }
                let mut items = Vec::new();
                self.ws();
                if self.peek() == b'}' {
                    self.i += 1;
                } else {
                    loop {
                        self.expect(b'"')?;
                        let key = self.string_value(self.i - 1)?;
                        self.expect(b':')?;
                        items.push((key, self.value(depth + 1)?));
                        self.ws();
                        match self.peek() {
                            b',' => self.i += 1,
                            b'}' => {
                                self.i += 1;
                                break;
                            }
                            _ => return Err(Bad),
                        }
                    }
                }
                V::Obj(items)
            }
            _ => return Err(Bad),
        })
    }

    /// Not inlined: with two push sites in parse_line the compiler merges them into one that
    /// copies the element through the stack, and the store-forwarding stalls come back.
    #[inline(never)]
    fn push_value(&mut self, found: &mut Found<'a>, slot: u8) -> R<()> {
        let v = self.value(1)?;
        found.push((slot, v));
        Ok(())
    }

    /// After the opening quote at `quote`: the string, borrowed from the line unless it has
    /// escapes (then decoded by serde_json, as the former parser did).
    #[inline(always)]
    fn string_value(&mut self, quote: usize) -> R<Cow<'a, str>> {
        let escaped = self.string()?;
        let raw = &self.text[quote..self.i];
        if escaped {
            Ok(Cow::Owned(
                serde_json::from_str::<String>(raw).map_err(|_| Bad)?,
            ))
        } else {
            Ok(Cow::Borrowed(&raw[1..raw.len() - 1]))
        }
    }
}

/// At a backslash inside a string: a valid escape (UTF-16 surrogates only as a high-low pair,
/// as orjson wants); returns the index after it.
#[inline]
fn escape(b: &[u8], i: usize) -> R<usize> {
    match b.get(i + 1) {
        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(i + 2),
        Some(b'u') => {
            let cp = hex4(b, i + 2)?;
            match cp {
                0xDC00..=0xDFFF => Err(Bad),
                0xD800..=0xDBFF => {
                    if b.get(i + 6) != Some(&b'\\') || b.get(i + 7) != Some(&b'u') {
                        return Err(Bad);
                    }
                    match hex4(b, i + 8)? {
                        0xDC00..=0xDFFF => Ok(i + 12),
                        _ => Err(Bad),
                    }
                }
                _ => Ok(i + 6),
            }
        }
        _ => Err(Bad),
    }
}

/// Where the next element goes, with room reserved. SmallVec::push decides where (inline or
/// heap, growing) after the element is built, so the element is built on the stack and copied
/// with 16-byte loads over the narrower stores that built it: store-forwarding stalls, a large
/// share of parse_line's time. With the place known first the fields are stored right there.
#[inline(always)]
fn next_slot<'a>(found: &mut Found<'a>) -> *mut (u8, V<'a>) {
    found.reserve(1);
    // SAFETY: len < capacity after reserve, so one past the last element is in the buffer
    unsafe { found.as_mut_ptr().add(found.len()) }
}

/// None exactly when orjson refuses the line or it is not an object; else the mask of slots
/// seen, with each top-level key found in `keys` pushed to `found` (empty on entry; its
/// contents are meaningless after None) in document order with its slot. `found` is the
/// caller's: returning it (~330 bytes) was a memcpy per line.
#[cfg(test)]
pub(crate) fn parse_line<'a>(text: &'a str, keys: &Keys, found: &mut Found<'a>) -> Option<Mask> {
    parse_line_members(text, keys, found, None)
}

/// One top-level member of a line: its text from the key's opening quote to the value's end,
/// and the alias slot of its key (NO_SLOT for keys not in `keys`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Member {
    pub(crate) start: u32,
    pub(crate) end: u32,
    pub(crate) slot: u8,
}

pub(crate) const NO_SLOT: u8 = u8::MAX;
pub(crate) type Members = SmallVec<[Member; 16]>;

/// parse_line, also pushing every top-level member to `members` (when given) in document
/// order, so that routing keys can be cut out of the line (agent/body_keys.py).
#[inline(always)]
pub(crate) fn parse_line_members<'a>(
    text: &'a str,
    keys: &Keys,
    found: &mut Found<'a>,
    mut members: Option<&mut Members>,
) -> Option<Mask> {
    let mut s = Scanner {
        text,
        b: text.as_bytes(),
        i: 0,
        arrays: [0; ORJSON_MAX_DEPTH / 64 + 1],
    };
    let mut mask: Mask = 0;
    s.expect(b'{').ok()?;
    s.ws();
    if s.peek() == b'}' {
        s.i += 1;
    } else {
        loop {
            s.expect(b'"').ok()?;
            let start = s.i;
            let member_start = start - 1;
            let slot = if s.string().ok()? {
                let key: String = serde_json::from_str(&text[start - 1..s.i]).ok()?;
                keys.get(&key)
            } else {
                keys.get_raw(s.b, start, s.i - 1 - start)
            };
            s.expect(b':').ok()?;
            match slot {
                Some(slot) => {
                    s.ws();
                    if s.peek() == b'"' {
                        s.i += 1;
                        let at = next_slot(found);
                        let v = s.string_value(s.i - 1).ok()?;
                        // SAFETY: `at` is the reserved place just past the end; nothing
                        // touched `found` since
                        unsafe {
                            at.write((slot, V::S(v)));
                            found.set_len(found.len() + 1);
                        }
                    } else {
                        s.push_value(found, slot).ok()?;
                    }
                    mask |= 1 << slot;
                }
                None => s.skip_value(1).ok()?,
            }
            if let Some(members) = members.as_deref_mut() {
                members.push(Member {
                    start: member_start as u32,
                    end: s.i as u32,
                    slot: slot.unwrap_or(NO_SLOT),
                });
            }
            s.ws();
            match s.peek() {
                b',' => s.i += 1,
                b'}' => {
                    s.i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    s.ws();
    if s.i != s.b.len() {
        return None;
    }
    Some(mask)
}

#[cfg(test)]
#[path = "json_scan_tests.rs"]
mod tests;

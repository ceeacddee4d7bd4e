//! The alias keys json_scan keeps, with their slots, looked up without hashing the whole key.

use std::collections::HashMap;

/// The alias keys, looked up without hashing the whole key: most top-level keys of a line are
/// not alias keys, and ahash + memcmp per key was a large share of the parse. A key's length,
/// first and last eight bytes pick one candidate in a table (a multiplier that separates the
/// alias keys is searched once); the candidate is then compared.
pub(crate) struct Keys {
    map: HashMap<String, u8, ahash::RandomState>,
    mult: u64,
    /// 0: no alias key hashes here; AMBIGUOUS: ask `map`; else 1 + index into `entries`
    table: Box<[u8; 1 << TABLE_BITS]>,
    entries: Vec<Entry>,
}

struct Entry {
    len: usize,
    first: u64,
    last: u64,
    key: Box<[u8]>,
    slot: u8,
}

const TABLE_BITS: u32 = 10;
const AMBIGUOUS: u8 = 0xff;

/// The key's first eight bytes (zero-padded) and last eight (0 when shorter than eight). `b`
/// holds the key at `start`; inside a line there is nearly always room for an 8-byte load.
#[inline(always)]
fn key_words(b: &[u8], start: usize, len: usize) -> (u64, u64) {
    let first = if start + 8 <= b.len() {
        let w = u64::from_le_bytes(b[start..start + 8].try_into().unwrap());
        if len >= 8 {
            w
        } else {
            w & ((1u64 << (8 * len)) - 1)
        }
    } else {
        let mut w = 0u64;
        for (k, &c) in b[start..start + len.min(8)].iter().enumerate() {
            w |= (c as u64) << (8 * k);
        }
        w
    };
    let last = if len >= 8 {
        u64::from_le_bytes(b[start + len - 8..start + len].try_into().unwrap())
    } else {
        0
    };
    (first, last)
}

/// `first` goes through the multiplier before it meets `last`: a fixed mix (first ^ rotated
/// last) cancelled out for "service.name" / "service_name" whatever the multiplier.
#[inline(always)]
fn key_hash(mult: u64, len: usize, first: u64, last: u64) -> usize {
    let x = first.wrapping_mul(mult) ^ last ^ len as u64;
    (x.wrapping_mul(mult) >> (64 - TABLE_BITS)) as usize
}

impl Keys {
    pub(crate) fn new(map: HashMap<String, u8, ahash::RandomState>) -> Keys {
        let entries: Vec<Entry> = map
            .iter()
            .map(|(k, &slot)| {
                let (first, last) = key_words(k.as_bytes(), 0, k.len());
                Entry {
                    len: k.len(),
                    first,
                    last,
                    key: k.as_bytes().into(),
                    slot,
                }
            })
            .collect();
        let mut best: Option<(usize, u64, Box<[u8; 1 << TABLE_BITS]>)> = None;
        let mut mult = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..64 {
            mult = mult
                .wrapping_mul(0x5851_f42d_4c95_7f2d)
                .wrapping_add(0x1405_7b7e_f767_814f)
                | 1;
            let mut table = Box::new([0u8; 1 << TABLE_BITS]);
            let mut clashes = 0;
            for (i, e) in entries.iter().enumerate() {
                let h = key_hash(mult, e.len, e.first, e.last);
                if table[h] == 0 {
                    table[h] = i as u8 + 1;
                } else {
                    table[h] = AMBIGUOUS;
                    clashes += 1;
                }
            }
            if best.as_ref().is_none_or(|(c, _, _)| clashes < *c) {
                best = Some((clashes, mult, table));
            }
            if clashes == 0 {
                break;
            }
        }
        let (_, mult, table) = best.unwrap();
        Keys {
            map,
            mult,
            table,
            entries,
        }
    }

    /// The slot of the key at b[start..start + len] (no escapes in it).
    #[inline(always)]
    pub(crate) fn get_raw(&self, b: &[u8], start: usize, len: usize) -> Option<u8> {
        let (first, last) = key_words(b, start, len);
        match self.table[key_hash(self.mult, len, first, last)] {
            0 => None,
            AMBIGUOUS => {
                let key = std::str::from_utf8(&b[start..start + len]).ok()?;
                self.map.get(key).copied()
            }
            i => {
                let e = &self.entries[i as usize - 1];
                // up to 16 bytes the two words are the whole key
                let same = e.len == len
                    && e.first == first
                    && e.last == last
                    && (len <= 16 || *e.key == b[start..start + len]);
                same.then_some(e.slot)
            }
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<u8> {
        self.map.get(key).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(names: &[&str]) -> Keys {
        Keys::new(
            names
                .iter()
                .enumerate()
                .map(|(i, k)| (k.to_string(), i as u8))
                .collect(),
        )
    }

    /// The key as it sits inside a line: quotes around it and more text after.
    fn raw(keys: &Keys, key: &str) -> Option<u8> {
        let line = format!("{{\"{key}\":1,\"after\":\"some more text\"}}");
        keys.get_raw(line.as_bytes(), 2, key.len())
    }

    #[test]
    fn every_key_finds_its_slot_and_lookalikes_none() {
        let names = [
            "level",
            "log.level",
            "attributes.x.trace_id",
            "attributes.y.trace_id",
            "a",
            "",
            "abcdefgh",
        ];
        let k = keys(&names);
        for (i, name) in names.iter().enumerate() {
            assert_eq!(raw(&k, name), Some(i as u8), "{name}");
            assert_eq!(k.get(name), Some(i as u8));
        }
        for other in [
            "Level",
            "levels",
            "leve",
            "attributes.z.trace_id",
            "b",
            "abcdefgi",
            "log_level",
        ] {
            assert_eq!(raw(&k, other), None, "{other}");
            assert_eq!(k.get(other), None);
        }
    }

    #[test]
    fn a_key_at_the_very_end_of_the_buffer_is_read_safely() {
        let k = keys(&["ts", "timestamp"]);
        assert_eq!(k.get_raw(b"ts", 0, 2), Some(0));
        assert_eq!(k.get_raw(b"xtimestamp", 1, 9), Some(1));
        assert_eq!(k.get_raw(b"xtimestamq", 1, 9), None);
    }

    #[test]
    fn sixty_four_keys_all_resolve_through_clashes() {
        let names: Vec<String> = (0..64).map(|i| format!("field_{i}_name")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let k = keys(&refs);
        for (i, name) in refs.iter().enumerate() {
            assert_eq!(raw(&k, name), Some(i as u8), "{name}");
        }
        assert_eq!(raw(&k, "field_64_name"), None);
    }
}

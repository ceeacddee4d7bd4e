//! Test-only: JSON log lines, valid and not, with every JSON token orjson accepts or refuses,
//! kept keys and skipped ones, for the differential tests of json_scan against the reference
//! parser. A port of tests/unit/test_chunk_encoders.py's generator (there it drives the
//! Python-vs-native byte equality tests), seeded and deterministic.

/// splitmix64: small, deterministic, good enough to pick tokens.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x2545_f491_4f6c_dd1d)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// uniform in [0, 1)
    pub(crate) fn random(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub(crate) fn choice<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const OTHER_KEYS: &[&[u8]] = &[
    b"message",
    b"data",
    b"x",
    b"",
    b"Level",
    b"levels",
    b"name",
    b"id",
    b"\xc3\xa9",
];
// key spellings with escapes: the scanner decodes them before the lookup
const ESCAPED_KEYS: &[&[u8]] = &[
    b"lev\\u0065l",
    b"trace\\u005fid",
    b"serv\\u0069ce",
    b"\\u0074s",
    b"a\\\"b",
    b"\\/x",
];
const STRING_PIECES: &[&[u8]] = &[
    b"abc",
    b"info",
    b"ERROR",
    b"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
    b"2026-11-21T10:00:00.123456789Z",
    b"2026-11-21 10:00:00+05:30",
    b"1763700000.5",
    b"0af7651916cd43dd8448eb211c80319c",
    b"b7ad6b7169203331",
    b"\\n",
    b"\\\"",
    b"\\\\",
    b"\\/",
    b"\\b\\f\\r\\t",
    b"\\u00e9",
    b"\\u0000",
    b"\\u001F",
    b"\\ud83d\\ude00",
    b"\\uD83D\\uDE00",
    b"\\udbff\\udfff",
    b"\x7f", // not a control character for JSON
    b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
];
const BAD_STRING_PIECES: &[&[u8]] = &[
    b"\\ud800", // lone high surrogate
    b"\\udc00", // lone low surrogate
    b"\\ud800\\u0041",
    b"\\ud800\\ud800",
    b"\\x", // not an escape
    b"\\u12",
    b"\\u12G4",
    b"\\",
    b"\x01", // raw control characters
    b"\x1f",
    b"\t",
];
const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "7",
    "-7",
    "1763700000",
    "1763700000123",
    "1763700000123456789",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "-9223372036854775809",
    "-18446744073709551616",
    "123456789012345678901234567890",
    "1e308 as 309 digits", // replaced below: 1 and 308 zeros
    "0.5",
    "-0.0",
    "1763700000.123456",
    "1.5e3",
    "1E2",
    "2e-3",
    "1e308",
    "1e-400",
    "1.7976931348623157e308",
    "1.7976931348623158e308", // rounds down to the largest double
    "0e999999999",
    "0.000...1 with 400 zeros", // replaced below
];
const BAD_NUMBERS: &[&str] = &[
    "1e309 as 310 digits", // replaced below: infinite as a double
    "-9 x 309",            // replaced below
    "1e309",
    "-1e400",
    "1.7976931348623159e308", // rounds up to infinity
    "01",
    "-01",
    "00",
    "-",
    ".5",
    "1.",
    "1.e5",
    "1e",
    "1e+",
    "+1",
    "--1",
    "0x10",
    "NaN",
    "Infinity",
    "-Infinity",
];
const LITERALS: &[&[u8]] = &[b"true", b"false", b"null"];
const BAD_LITERALS: &[&[u8]] = &[b"tru", b"nul", b"True", b"None", b"nulll", b"fals"];
const SPACES: &[&[u8]] = &[b" ", b"\t", b"\r", b" \t\r "];
const BAD_SPACES: &[&[u8]] = &[b"\x0b", b"\x0c", b"\xc2\xa0"]; // not JSON whitespace
const GARBAGE: &[&[u8]] = &[
    b"x", b"}", b"]", b",", b"\x00", b" {}", b"\x0c", b"//", b"\"",
];
const NESTED_KEYS: &[&[u8]] = &[b"a", b"name", b"id", b"level"];
const SIGNIFICANT: &[u8] = b"{}[]\":,\\ \t\r0123456789eE+-.tfnulr/\x00\x1f\x7f";

/// each token is one that orjson refuses with this probability: about half the lines stay valid
const BAD: f64 = 0.012;

fn number(text: &str) -> Vec<u8> {
    match text {
        "1e308 as 309 digits" => [b"1".as_slice(), &[b'0'; 308]].concat(),
        "0.000...1 with 400 zeros" => [b"0.".as_slice(), &[b'0'; 400], b"1"].concat(),
        "1e309 as 310 digits" => [b"1".as_slice(), &[b'0'; 309]].concat(),
        "-9 x 309" => [b"-".as_slice(), &[b'9'; 309]].concat(),
        _ => text.as_bytes().to_vec(),
    }
}

pub(crate) struct Generator {
    rng: Rng,
    kept_keys: Vec<String>,
}

impl Generator {
    pub(crate) fn new(seed: u64, kept_keys: &[String]) -> Generator {
        Generator {
            rng: Rng::new(seed),
            kept_keys: kept_keys.to_vec(),
        }
    }

    fn pick(&mut self, good: &[&[u8]], bad: &[&[u8]]) -> Vec<u8> {
        if self.rng.random() < BAD {
            self.rng.choice(bad).to_vec()
        } else {
            self.rng.choice(good).to_vec()
        }
    }

    fn space(&mut self) -> Vec<u8> {
        if self.rng.random() < 0.2 {
            self.pick(SPACES, BAD_SPACES)
        } else {
            Vec::new()
        }
    }

    fn string(&mut self) -> Vec<u8> {
        let n = *self.rng.choice(&[0, 1, 1, 2, 3]);
        let mut out = b"\"".to_vec();
        for _ in 0..n {
            out.extend(self.pick(STRING_PIECES, BAD_STRING_PIECES));
        }
        out.push(b'"');
        out
    }

    fn key(&mut self) -> Vec<u8> {
        let r = self.rng.random();
        let name: Vec<u8> = if r < 0.55 {
            self.rng.choice(&self.kept_keys).clone().into_bytes()
        } else if r < 0.8 {
            self.rng.choice(OTHER_KEYS).to_vec()
        } else if r < 0.99 {
            self.rng.choice(ESCAPED_KEYS).to_vec()
        } else {
            return self.rng.choice(&[&b"1"[..], b"null", b"key"]).to_vec(); // not a string key
        };
        [b"\"".as_slice(), &name, b"\""].concat()
    }

    fn value(&mut self, depth: u32) -> Vec<u8> {
        let r = self.rng.random();
        if r < 0.12 && depth < 5 {
            let items: Vec<Vec<u8>> = (0..self.rng.below(4))
                .map(|_| {
                    [
                        self.key(),
                        self.space(),
                        b":".to_vec(),
                        self.space(),
                        self.value(depth + 1),
                    ]
                    .concat()
                })
                .collect();
            let sep = [b",".to_vec(), self.space()].concat();
            return [
                b"{".to_vec(),
                self.space(),
                items.join(&sep[..]),
                self.space(),
                b"}".to_vec(),
            ]
            .concat();
        }
        if r < 0.22 && depth < 5 {
            let items: Vec<Vec<u8>> = (0..self.rng.below(4))
                .map(|_| self.value(depth + 1))
                .collect();
            let sep = [self.space(), b",".to_vec(), self.space()].concat();
            return [
                b"[".to_vec(),
                self.space(),
                items.join(&sep[..]),
                self.space(),
                b"]".to_vec(),
            ]
            .concat();
        }
        if r < 0.6 {
            return self.string();
        }
        if r < 0.85 {
            let text = if self.rng.random() < BAD {
                self.rng.choice(BAD_NUMBERS)
            } else {
                self.rng.choice(NUMBERS)
            };
            return number(text);
        }
        self.pick(LITERALS, BAD_LITERALS)
    }

    /// `levels` containers, arrays and objects mixed, around a scalar.
    fn nested(&mut self, levels: usize) -> Vec<u8> {
        let (mut opening, mut closing) = (Vec::new(), Vec::new());
        for _ in 0..levels {
            if self.rng.random() < 0.5 {
                opening.push(b"[".to_vec());
                closing.push(b"]".to_vec());
            } else {
                let key: &&[u8] = self.rng.choice(NESTED_KEYS);
                opening.push([b"{\"".as_slice(), key, b"\":"].concat());
                closing.push(b"}".to_vec());
            }
        }
        let scalar = self
            .rng
            .choice(&[&b"1"[..], b"\"s\"", b"[]", b"{}", b"1e400", b"\"\\ud800\""])
            .to_vec();
        closing.reverse();
        [opening.concat(), scalar, closing.concat()].concat()
    }

    fn json_line(&mut self) -> Vec<u8> {
        if self.rng.random() < 0.04 {
            // near orjson's nesting limit (1024, the line's object included)
            let first: Vec<&[u8]> = self.kept_keys[..12].iter().map(|k| k.as_bytes()).collect();
            let keys: Vec<&[u8]> = first.into_iter().chain([&b"data"[..], b"x"]).collect();
            let key = [b"\"".as_slice(), *self.rng.choice(&keys), b"\""].concat();
            let levels = *self.rng.choice(&[1021, 1022, 1023, 1024, 1025]);
            let inner = self.nested(levels);
            return [
                b"{\"level\":\"info\",".as_slice(),
                &key,
                b":",
                &inner,
                b",\"span_id\":\"b7ad6b7169203331\"}",
            ]
            .concat();
        }
        if self.rng.random() < 0.05 {
            return self.value(1); // not an object
        }
        let mut fields: Vec<Vec<u8>> = (0..self.rng.below(8))
            .map(|_| {
                [
                    self.space(),
                    self.key(),
                    self.space(),
                    b":".to_vec(),
                    self.space(),
                    self.value(1),
                    self.space(),
                ]
                .concat()
            })
            .collect();
        if self.rng.random() < 0.1 {
            // a kept key twice: the last one counts
            let again = if fields.is_empty() {
                b"\"level\":\"a\"".to_vec()
            } else {
                self.rng.choice(&fields).clone()
            };
            fields.push(again);
        }
        let mut line = [
            self.space(),
            b"{".to_vec(),
            fields.join(&b","[..]),
            b"}".to_vec(),
            self.space(),
        ]
        .concat();
        let r = self.rng.random();
        if r < 0.05 {
            let garbage: &&[u8] = self.rng.choice(GARBAGE);
            line.extend_from_slice(garbage);
        } else if r < 0.1 {
            line.truncate(self.rng.below(line.len() + 1)); // truncated
        } else if r < 0.15 {
            line = [b"{".to_vec(), fields.join(&b","[..]), b",}".to_vec()].concat();
            // trailing comma
        }
        newlines_to_spaces(line)
    }

    fn mutate(&mut self, line: Vec<u8>) -> Vec<u8> {
        let mut data = line;
        for _ in 0..1 + self.rng.below(3) {
            let at = self.rng.below(data.len() + 1);
            let choice = self.rng.random();
            let byte = if self.rng.random() < 0.8 {
                *self.rng.choice(SIGNIFICANT)
            } else {
                self.rng.below(256) as u8
            };
            if choice < 0.35 && at < data.len() {
                data[at] = byte;
            } else if choice < 0.6 {
                data.insert(at, byte);
            } else if choice < 0.85 && at < data.len() {
                data.remove(at);
            } else {
                // repeat a piece: duplicate keys, nested braces, doubled escapes
                let end = data.len().min(at + 1 + self.rng.below(11));
                let piece = data[at..end].to_vec();
                data.splice(at..at, piece);
            }
        }
        newlines_to_spaces(data)
    }

    /// `count` lines, a fifth of them mutated, blank ones left out.
    pub(crate) fn lines(&mut self, count: usize) -> Vec<Vec<u8>> {
        let mut lines = Vec::with_capacity(count);
        for _ in 0..count {
            let line = self.json_line();
            let line = if self.rng.random() < 0.2 && !line.is_empty() {
                self.mutate(line)
            } else {
                line
            };
            if !line.iter().all(|c| b" \t\r\x0b\x0c".contains(c)) {
                lines.push(line);
            }
        }
        lines
    }
}

fn newlines_to_spaces(mut line: Vec<u8>) -> Vec<u8> {
    for c in &mut line {
        if *c == b'\n' {
            *c = b' ';
        }
    }
    line
}

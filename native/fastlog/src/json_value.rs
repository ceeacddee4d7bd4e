//! The JSON values the agent keeps from a line (only those under the alias keys), and the
//! serde visitors that build them: json_scan hands serde_json the numbers that are not plain
//! integers and the escaped strings, so that those values are exactly the ones serde_json builds.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use smallvec::SmallVec;

/// A kept JSON value.
#[derive(Debug)]
pub(crate) enum V<'a> {
    Null,
    Bool(bool),
    I(i64),
    U(u64),
    F(f64),
    S(Cow<'a, str>),
    Obj(Vec<(Cow<'a, str>, V<'a>)>),
    Arr(Vec<V<'a>>),
}

impl<'a> V<'a> {
    pub(crate) fn is_container(&self) -> bool {
        matches!(self, V::Obj(_) | V::Arr(_))
    }
    /// A key of an object (the last occurrence wins, like a Python dict built from JSON), or an
    /// element of an array by its index in ASCII digits (LogFieldMapping.lookup).
    pub(crate) fn get(&self, key: &str) -> Option<&V<'a>> {
        match self {
            V::Obj(items) => items.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            V::Arr(items) => array_index(key).and_then(|i| items.get(i)),
            _ => None,
        }
    }
}

/// An array index written as ASCII digits ("0", "12"; "00" is 0 as Python's int() reads it).
pub(crate) fn array_index(key: &str) -> Option<usize> {
    if key.is_empty() || !key.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    key.parse().ok()
}

pub(crate) struct KeySeed;
impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}
struct KeyVisitor;
impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

pub(crate) struct ValSeed;
impl<'de> DeserializeSeed<'de> for ValSeed {
    type Value = V<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(ValVisitor)
    }
}
pub(crate) struct ValVisitor;
impl<'de> Visitor<'de> for ValVisitor {
    type Value = V<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<V<'de>, E> {
        Ok(V::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<V<'de>, E> {
        Ok(V::Null)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<V<'de>, E> {
        Ok(V::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<V<'de>, E> {
        Ok(V::I(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<V<'de>, E> {
        Ok(V::U(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<V<'de>, E> {
        Ok(V::F(v))
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<V<'de>, E> {
        Ok(V::S(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<V<'de>, E> {
        Ok(V::S(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<V<'de>, E> {
        Ok(V::S(Cow::Owned(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<V<'de>, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(ValSeed)? {
            items.push(v);
        }
        Ok(V::Arr(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<V<'de>, A::Error> {
        let mut items = Vec::new();
        while let Some(k) = map.next_key_seed(KeySeed)? {
            let v = map.next_value_seed(ValSeed)?;
            items.push((k, v));
        }
        Ok(V::Obj(items))
    }
}

/// A value the agent does not keep, validated as the reference (orjson) would: unlike serde's
/// IgnoredAny, numbers are parsed, so one that is infinite as a double (1e400) is an error.
#[cfg(all(test, feature = "reference"))]
pub(crate) struct Skip;
#[cfg(all(test, feature = "reference"))]
impl<'de> serde::Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SkipVisitor)
    }
}
#[cfg(all(test, feature = "reference"))]
struct SkipVisitor;
#[cfg(all(test, feature = "reference"))]
impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skip;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Skip, E> {
        if v.is_finite() {
            Ok(Skip)
        } else {
            Err(E::custom("number out of range"))
        }
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }
}

/// Top-level keys kept: (slot, value); everything else is skipped (still validated).
pub(crate) type Found<'a> = SmallVec<[(u8, V<'a>); 8]>;

pub(crate) fn slot_value<'f, 'a>(found: &'f Found<'a>, slot: u8) -> Option<&'f V<'a>> {
    found.iter().rev().find(|(s, _)| *s == slot).map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(raw: &str) -> Result<V<'_>, serde_json::Error> {
        serde_json::Deserializer::from_str(raw).deserialize_any(ValVisitor)
    }

    #[test]
    fn numbers_keep_serde_json_kinds() {
        assert!(matches!(value("-3"), Ok(V::I(-3))));
        assert!(matches!(value("18446744073709551615"), Ok(V::U(u64::MAX))));
        assert!(matches!(value("1.5"), Ok(V::F(x)) if x == 1.5));
        assert!(matches!(value("-0"), Ok(V::F(x)) if x.to_bits() == (-0.0f64).to_bits()));
        assert!(value("1e400").is_err());
    }

    #[test]
    fn strings_are_borrowed_unless_escaped() {
        assert!(matches!(
            value("\"plain\""),
            Ok(V::S(Cow::Borrowed("plain")))
        ));
        assert!(matches!(value("\"a\\u0062\""), Ok(V::S(Cow::Owned(s))) if s == "ab"));
    }

    #[test]
    fn objects_keep_the_last_of_repeated_keys_and_arrays_their_elements() {
        let v = value(r#"{"a": 1, "b": [1, {"x": 2}], "a": {"c": "d"}}"#).unwrap();
        assert!(matches!(v.get("a").and_then(|a| a.get("c")), Some(V::S(s)) if s == "d"));
        assert!(matches!(v.get("b"), Some(V::Arr(items)) if items.len() == 2));
        assert!(matches!(
            v.get("b").and_then(|b| b.get("1")).and_then(|x| x.get("x")),
            Some(V::U(2))
        ));
        assert!(v.get("b").unwrap().get("2").is_none() && v.get("b").unwrap().get("x").is_none());
        assert!(v.get("a").unwrap().is_container() && v.get("z").is_none());
        // a skipped array element is still validated like orjson: an infinite number fails
        assert!(value("[1e400]").is_err());
    }

    #[test]
    fn slot_value_takes_the_last_occurrence_of_a_slot() {
        let found: Found = SmallVec::from_vec(vec![(1, V::I(1)), (2, V::Null), (1, V::I(3))]);
        assert!(matches!(slot_value(&found, 1), Some(V::I(3))));
        assert!(slot_value(&found, 0).is_none());
    }
}

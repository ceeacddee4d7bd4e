//! OTLP values as the collector's native documents read them: the scalar AnyValues handled
//! natively, attribute lists with Python dict semantics, and their JSON (the references are
//! collector/documents.py's any_value, attributes and kubernetes_fields). Anything else makes
//! a reader return None: the request is then the Python reference's.

use crate::json_write::json_str;
use crate::otlp_schema::{check, utf8, M};
use crate::wire::Rd;

/// An AnyValue of the kinds handled here (collector.documents.any_value).
#[derive(Clone, Copy)]
pub(crate) enum Scalar<'a> {
    Null, // no value set: any_value() gives None
    Str(&'a str),
    Bool(bool),
    Int(i64),
}

impl Scalar<'_> {
    /// Python's bool() of the value.
    pub(crate) fn truthy(self) -> bool {
        match self {
            Scalar::Null => false,
            Scalar::Str(s) => !s.is_empty(),
            Scalar::Bool(b) => b,
            Scalar::Int(i) => i != 0,
        }
    }
    pub(crate) fn write_json(self, out: &mut Vec<u8>) {
        match self {
            Scalar::Null => out.extend_from_slice(b"null"),
            Scalar::Str(s) => json_str(out, s),
            Scalar::Bool(true) => out.extend_from_slice(b"true"),
            Scalar::Bool(false) => out.extend_from_slice(b"false"),
            Scalar::Int(i) => out.extend_from_slice(i.to_string().as_bytes()),
        }
    }
}

/// A string field of a message check() accepted, which validated its UTF-8 already.
pub(crate) fn text(b: &[u8]) -> &str {
    debug_assert!(std::str::from_utf8(b).is_ok());
    // SAFETY: only called on string fields (field numbers and wire types of the schema) of
    // messages that check() accepted (resources, scopes, records, spans); it validates each
    // as UTF-8.
    unsafe { std::str::from_utf8_unchecked(b) }
}

/// A wire-format reader of one message; any error means "not handled here".
pub(crate) fn reader(b: &[u8], m: M) -> Rd<'_> {
    Rd::whole(b, m)
}

/// (field number, wire type) of the next field, or None for a known field of another wire type
/// (python protobuf would keep it as an unknown field: rare enough to leave to the reference).
pub(crate) fn next_tag(r: &mut Rd, m: M) -> Option<(u32, u8)> {
    let (f, wt) = r.tag().ok()?;
    match m.ty(f) {
        Some(ty) if ty.wire() != wt => None,
        _ => Some((f, wt)),
    }
}

pub(crate) fn any_value(b: &[u8]) -> Option<Scalar<'_>> {
    let mut r = reader(b, M::AnyValue);
    // a oneof: the last member on the wire is the value
    let mut value = Some(Scalar::Null);
    while !r.done() {
        match next_tag(&mut r, M::AnyValue)? {
            (1, _) => value = Some(Scalar::Str(text(r.ld().ok()?))),
            (2, _) => value = Some(Scalar::Bool(r.varint().ok()? != 0)),
            (3, _) => value = Some(Scalar::Int(r.varint().ok()? as i64)),
            (f @ 4..=8, wt) => {
                r.skip(f, wt, 0).ok()?;
                value = None; // doubles, arrays, kvlists, bytes: the reference's
            }
            (f, wt) => r.skip(f, wt, 0).ok()?,
        }
    }
    value
}

/// KeyValue list entries -> {key: value} with Python dict semantics: a repeated key keeps its
/// first position and takes its last value.
pub(crate) fn put_attribute<'a>(
    attrs: &mut Vec<(&'a str, Scalar<'a>)>,
    kv: &'a [u8],
) -> Option<()> {
    let mut r = reader(kv, M::KeyValue);
    let (mut key, mut value, mut seen_value) = ("", Scalar::Null, false);
    while !r.done() {
        match next_tag(&mut r, M::KeyValue)? {
            (1, _) => key = text(r.ld().ok()?),
            (2, _) if !seen_value => {
                value = any_value(r.ld().ok()?)?;
                seen_value = true;
            }
            (2, _) => return None, // a repeated message field merges: the reference's
            (f, wt) => r.skip(f, wt, 0).ok()?,
        }
    }
    match attrs.iter_mut().find(|(k, _)| *k == key) {
        Some(slot) => slot.1 = value,
        None => attrs.push((key, value)),
    }
    Some(())
}

pub(crate) fn take<'a>(attrs: &mut Vec<(&'a str, Scalar<'a>)>, key: &str) -> Option<Scalar<'a>> {
    let i = attrs.iter().position(|(k, _)| *k == key)?;
    Some(attrs.remove(i).1)
}

/// A single-occurrence message field; a repeated one would merge (left to the reference).
pub(crate) fn once<'a>(slot: &mut Option<&'a [u8]>, r: &mut Rd<'a>) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(r.ld().ok()?);
    Some(())
}

/// documents.kubernetes_fields: the resource's Kubernetes attributes as the nested `k8s` object,
/// `,"k8s":{...}`, or nothing when it has none (strings and integers only).
pub(crate) fn kubernetes_fields(attrs: &[(&str, Scalar)]) -> Vec<u8> {
    const ENTITIES: [(&str, &[&str]); 3] = [
        ("namespace", &["name"]),
        ("pod", &["name", "uid"]),
        ("container", &["name", "restart_count"]),
    ];
    let mut entities: Vec<(&str, Vec<(&str, Scalar)>)> = Vec::new();
    for (entity, fields) in ENTITIES {
        let mut present = Vec::new();
        for field in fields {
            let key = format!("k8s.{entity}.{field}");
            // the last of repeated keys, as in the reference's dict
            if let Some((_, v @ (Scalar::Str(_) | Scalar::Int(_)))) =
                attrs.iter().rev().find(|(k, _)| *k == key)
            {
                present.push((*field, *v));
            }
        }
        if !present.is_empty() {
            entities.push((entity, present));
        }
    }
    let mut out = Vec::new();
    if entities.is_empty() {
        return out;
    }
    out.extend_from_slice(b",\"k8s\":{");
    for (i, (entity, fields)) in entities.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_str(&mut out, entity);
        out.extend_from_slice(b":{");
        for (j, (field, value)) in fields.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            json_str(&mut out, field);
            out.push(b':');
            value.write_json(&mut out);
        }
        out.push(b'}');
    }
    out.push(b'}');
    out
}

pub(crate) fn scalar_object(out: &mut Vec<u8>, attrs: &[(&str, Scalar)]) {
    out.push(b'{');
    for (i, (k, v)) in attrs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_str(out, k);
        out.push(b':');
        v.write_json(out);
    }
    out.push(b'}');
}

/// A resource's attributes (none without a resource), after check() validated it as upb would.
pub(crate) fn resource_attributes(resource: Option<&[u8]>) -> Option<Vec<(&str, Scalar<'_>)>> {
    let mut attrs = Vec::new();
    if let Some(resource) = resource {
        check(resource, resource.as_ptr() as usize, M::Resource, 2, []).ok()?;
        let mut r = reader(resource, M::Resource);
        while !r.done() {
            match next_tag(&mut r, M::Resource)? {
                (1, _) => put_attribute(&mut attrs, r.ld().ok()?)?,
                (f, wt) => r.skip(f, wt, 2).ok()?,
            }
        }
    }
    Some(attrs)
}

/// `str(attributes.get(key, ""))` of a string or missing attribute; None for any other value
/// (str() of a non-string is rare: the reference's).
pub(crate) fn text_attribute<'a>(attrs: &[(&'a str, Scalar<'a>)], key: &str) -> Option<&'a str> {
    match attrs.iter().find(|(k, _)| *k == key) {
        None => Some(""),
        Some((_, Scalar::Str(s))) => Some(s),
        Some(_) => None,
    }
}

/// A container's resource or scope (if any) and its items, as slices of the request.
pub(crate) type Container<'a> = (Option<&'a [u8]>, Vec<&'a [u8]>);

/// A ResourceLogs / ResourceSpans / ScopeLogs / ScopeSpans message (`m`), which all number their
/// fields alike: its resource or scope (1, at most once), its items (2) and its schema URL (3,
/// only checked). None for anything else (unknown fields are the reference's).
pub(crate) fn container(b: &[u8], m: M) -> Option<Container<'_>> {
    let mut r = reader(b, m);
    let (mut head, mut items) = (None, Vec::new());
    while !r.done() {
        match next_tag(&mut r, m)? {
            (1, _) => once(&mut head, &mut r)?,
            (2, _) => items.push(r.ld().ok()?),
            (3, _) => {
                if !utf8(r.ld().ok()?) {
                    return None;
                }
            }
            _ => return None,
        }
    }
    Some((head, items))
}

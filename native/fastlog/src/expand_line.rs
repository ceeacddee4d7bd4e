//! collector/documents.py::_expand_json_line: an original JSON line -> the document's
//! `"message"` and `"data"` (its routing fields are typed elsewhere; the rest of the line goes
//! under data), written as JSON text.

use std::collections::HashMap;

use crate::field_mapping::{FieldMapping, Name};
use crate::json_tree::{parse_object, Key, INDEX_FROM, J};
use crate::json_write::json_str;
use crate::message_template::render;

/// LogFieldMapping.lookup: the first name present (flat key, else dotted path) and its value.
fn lookup<'t, 'a, 'm>(
    record: &'t J<'a>,
    names: &'m [Name],
    scalar: bool,
) -> Option<(&'m str, &'t J<'a>)> {
    for name in names {
        if let Some(v) = record.get(&name.full) {
            if scalar && v.is_container() {
                continue; // a flat key holding an object/array: the next name (no nested try)
            }
            return Some((&name.full, v));
        }
        if name.parts.is_empty() {
            continue;
        }
        let mut node = record;
        let mut found = true;
        for part in &name.parts {
            match node.get(part) {
                Some(child) => node = child,
                None => {
                    found = false;
                    break;
                }
            }
        }
        if found {
            if scalar && node.is_container() {
                continue;
            }
            return Some((&name.full, node));
        }
    }
    None
}

fn position(items: &[(Key, J)], name: &str) -> Option<usize> {
    items.iter().position(|(k, _)| k.name == name)
}

/// documents._remove_nested: the path's leaf, then each parent it leaves empty.
fn remove_nested(node: &mut Vec<(Key, J)>, parts: &[&str]) {
    let Some(i) = position(node, parts[0]) else {
        return;
    };
    if parts.len() == 1 {
        node.remove(i);
        return;
    }
    let J::Obj(child) = &mut node[i].1 else {
        return;
    };
    remove_nested(child, &parts[1..]);
    if child.is_empty() {
        node.remove(i);
    }
}

/// Appends `,"message":...` and `,"data":{...}` as the reference's _expand_json_line gives them;
/// `keys_moved`: the agent took the routing keys out of the line already.
pub(crate) fn expand_json_line(
    out: &mut Vec<u8>,
    line: &str,
    mapping: &FieldMapping,
    keys_moved: bool,
) -> Option<()> {
    let record = J::Obj(parse_object(line)?);
    let mut used: Vec<&str> = Vec::with_capacity(6);
    let mut message: Option<&str> = None;
    // LogFieldMapping.lookup_message: the first name holding a scalar, else the first at all
    let found = lookup(&record, &mapping.message, true)
        .or_else(|| lookup(&record, &mapping.message, false));
    // no message: a message template rendered with the line's properties
    let mut rendered = None;
    if found.is_none() {
        if let Some((_, J::Atom(raw))) = lookup(&record, &mapping.message_template, true) {
            if raw.starts_with('"') {
                let template = serde_json::from_str::<String>(raw).ok()?;
                rendered = Some(render(&template, &record)?);
            }
        }
    }
    if let Some((key, value)) = found {
        used.push(key);
        message = Some(match value {
            J::Atom(raw) if raw.starts_with('"') => *raw,
            // orjson.dumps of a non-string message: its text as a string, when that is the
            // value's text (true, false, null, an integer but -0); else the reference's
            J::Atom(raw)
                if !raw.starts_with(['-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']) =>
            {
                *raw
            }
            J::Atom(raw) if !raw.contains(['.', 'e', 'E']) && *raw != "-0" => *raw,
            _ => return None,
        });
    }
    let routing: &[Vec<Name>] = if keys_moved { &[] } else { &mapping.routing };
    for role in routing {
        if let Some((key, _)) = lookup(&record, role, true) {
            used.push(key);
        }
    }
    let J::Obj(mut rest) = record else {
        return None;
    };
    for path in &used {
        match position(&rest, path) {
            Some(i) => {
                rest.remove(i);
            }
            None => remove_nested(&mut rest, &path.split('.').collect::<Vec<_>>()),
        }
    }
    if let Some(text) = &rendered {
        out.extend_from_slice(b",\"message\":");
        json_str(out, text);
    }
    if let Some(raw) = message {
        out.extend_from_slice(b",\"message\":");
        if raw.starts_with('"') {
            out.extend_from_slice(raw.as_bytes());
        } else {
            out.push(b'"');
            out.extend_from_slice(raw.as_bytes());
            out.push(b'"');
        }
    }

    // data = dict(payload) or {data_key: payload}; then data.update(rest less data_key)
    let rest = J::Obj(rest);
    let found = lookup(&rest, &mapping.data, false);
    let data_key = found.map(|(k, _)| k);
    enum DataKey<'k> {
        Raw(&'k str),
        Text(&'k str),
    }
    let mut data: Vec<(&str, DataKey, &J)> = Vec::new();
    match found {
        Some((_, J::Obj(items))) => {
            data.extend(
                items
                    .iter()
                    .map(|(k, v)| (k.name.as_ref(), DataKey::Raw(k.raw), v)),
            );
        }
        Some((key, payload)) => data.push((key, DataKey::Text(key), payload)),
        None => {}
    }
    let J::Obj(rest_items) = &rest else {
        return None;
    };
    let mut index: HashMap<&str, usize, ahash::RandomState> = HashMap::default();
    let mut indexed = false;
    for (k, v) in rest_items {
        let name = k.name.as_ref();
        if Some(name) == data_key {
            continue;
        }
        if !indexed && data.len() >= INDEX_FROM {
            index.extend(data.iter().enumerate().map(|(i, (n, _, _))| (*n, i)));
            indexed = true;
        }
        let existing = if indexed {
            index.get(name).copied()
        } else {
            data.iter().position(|(n, _, _)| *n == name)
        };
        match existing {
            Some(i) => data[i].2 = v,
            None => {
                if indexed {
                    index.insert(name, data.len());
                }
                data.push((name, DataKey::Raw(k.raw), v));
            }
        }
    }
    if !data.is_empty() {
        out.extend_from_slice(b",\"data\":{");
        for (i, (_, key, value)) in data.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            match key {
                DataKey::Raw(raw) => out.extend_from_slice(raw.as_bytes()),
                DataKey::Text(text) => json_str(out, text),
            }
            out.push(b':');
            value.write(out);
        }
        out.push(b'}');
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field_mapping::RoleNames;

    fn mapping() -> FieldMapping {
        let v = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
        FieldMapping::new(
            RoleNames {
                message: v(&["msg", "body"]),
                timestamp: v(&["ts"]),
                level: v(&["level", "log.level"]),
                trace_id: v(&["trace_id"]),
                span_id: v(&["span_id"]),
                service: v(&["service", "service.name"]),
                data: v(&["data"]),
                ..Default::default()
            },
            Default::default(),
        )
    }

    fn expand(line: &str) -> Option<String> {
        let mut out = Vec::new();
        expand_json_line(&mut out, line, &mapping(), false)?;
        Some(String::from_utf8(out).unwrap())
    }

    #[test]
    fn message_and_the_rest_under_data() {
        assert_eq!(
            expand(r#"{"msg":"hi","level":"info","ts":1,"user":"u","data":{"k":1}}"#).as_deref(),
            Some(r#","message":"hi","data":{"k":1,"user":"u"}"#)
        );
        // a non-object data value is kept under its key
        assert_eq!(
            expand(r#"{"data":[1],"x":2}"#).as_deref(),
            Some(r#","data":{"data":[1],"x":2}"#)
        );
        assert_eq!(expand(r#"{"level":"info"}"#).as_deref(), Some(""));
    }

    #[test]
    fn routing_fields_are_removed_nested_parents_when_left_empty() {
        assert_eq!(
            expand(r#"{"service":{"name":"x","v":1},"log":{"level":"e"},"m":0}"#).as_deref(),
            Some(r#","data":{"service":{"v":1},"m":0}"#)
        );
    }

    #[test]
    fn a_non_string_message_is_its_text_when_that_is_orjsons() {
        assert_eq!(expand(r#"{"msg":5}"#).as_deref(), Some(r#","message":"5""#));
        assert_eq!(
            expand(r#"{"msg":true}"#).as_deref(),
            Some(r#","message":"true""#)
        );
        // floats and -0 print differently in Python: the reference's
        assert_eq!(expand(r#"{"msg":1.5}"#), None);
        assert_eq!(expand(r#"{"msg":-0}"#), None);
        assert_eq!(expand(r#"{"msg":{"a":1}}"#), None);
    }

    #[test]
    fn lines_that_are_not_json_objects_are_the_references() {
        assert_eq!(expand("plain text"), None);
        assert_eq!(expand("[1,2]"), None);
    }
}

//! The log-field mapping (schemas/log_fields.py::LogFieldMapping): which JSON keys carry which
//! role, as one type for both tiers, and the agent's compiled form of it (`ScanPlan`: the alias
//! keys json_scan keeps, with a slot each).

use std::collections::HashMap;

use crate::alias_keys::Keys;
use crate::json_value::{slot_value, Found, V};

/// The roles the agent routes by, in `FieldMapping::routing` order.
#[derive(Clone, Copy)]
pub(crate) enum Routing {
    Timestamp = 0,
    Level = 1,
    TraceId = 2,
    SpanId = 3,
    Service = 4,
}

/// A name of the mapping: a flat key, and for a dotted name also its path of nested keys.
pub(crate) struct Name {
    pub(crate) full: String,
    /// its dotted parts; empty for a flat name
    pub(crate) parts: Vec<String>,
}

impl Name {
    fn new(full: String) -> Name {
        let parts = if full.contains('.') {
            full.split('.').map(str::to_owned).collect()
        } else {
            Vec::new()
        };
        Name { full, parts }
    }
}

/// The whole mapping, each role's names in lookup order.
pub(crate) struct FieldMapping {
    pub(crate) message: Vec<Name>,
    /// timestamp, level, trace_id, span_id, service (index by `Routing`)
    pub(crate) routing: [Vec<Name>; 5],
    pub(crate) data: Vec<Name>,
    /// level name, lowercased -> OpenTelemetry SeverityNumber
    pub(crate) severity: HashMap<String, i32, ahash::RandomState>,
}

/// The roles of a mapping as lists of names.
pub(crate) struct RoleNames {
    pub(crate) message: Vec<String>,
    pub(crate) timestamp: Vec<String>,
    pub(crate) level: Vec<String>,
    pub(crate) trace_id: Vec<String>,
    pub(crate) span_id: Vec<String>,
    pub(crate) service: Vec<String>,
    pub(crate) data: Vec<String>,
}

impl FieldMapping {
    pub(crate) fn new(names: RoleNames, severity: HashMap<String, i32>) -> FieldMapping {
        let names_of = |list: Vec<String>| list.into_iter().map(Name::new).collect::<Vec<_>>();
        FieldMapping {
            message: names_of(names.message),
            routing: [
                names_of(names.timestamp),
                names_of(names.level),
                names_of(names.trace_id),
                names_of(names.span_id),
                names_of(names.service),
            ],
            data: names_of(names.data),
            severity: severity
                .into_iter()
                .map(|(k, v)| (k.to_lowercase(), v))
                .collect(),
        }
    }
}

/// One name of a routing role, as slots of the keys json_scan keeps.
struct Alias {
    flat: u8,
    nested: Option<(u8, Vec<String>)>, // root slot, remaining parts
}

/// The routing roles compiled for json_scan: every flat name and the first part of every
/// dotted one is an alias key with a slot (a bit of the mask parse_line returns).
pub(crate) struct ScanPlan {
    pub(crate) keys: Keys,
    roles: [Vec<Alias>; 5],
}

/// A mask of u64 bits holds the slots.
pub(crate) const MAX_ALIAS_KEYS: usize = 64;

impl ScanPlan {
    pub(crate) fn new(mapping: &FieldMapping) -> Result<ScanPlan, String> {
        let mut keys: HashMap<String, u8, ahash::RandomState> = HashMap::default();
        let mut slot_of = |k: &str| -> Result<u8, String> {
            let n = keys.len();
            if let Some(&s) = keys.get(k) {
                return Ok(s);
            }
            if n >= MAX_ALIAS_KEYS {
                return Err(format!("at most {MAX_ALIAS_KEYS} distinct alias keys"));
            }
            keys.insert(k.to_owned(), n as u8);
            Ok(n as u8)
        };
        let mut roles: [Vec<Alias>; 5] = Default::default();
        for (role, names) in roles.iter_mut().zip(&mapping.routing) {
            for name in names {
                let flat = slot_of(&name.full)?;
                let nested = match name.parts.split_first() {
                    Some((root, rest)) => Some((slot_of(root)?, rest.to_vec())),
                    None => None,
                };
                role.push(Alias { flat, nested });
            }
        }
        Ok(ScanPlan {
            keys: Keys::new(keys),
            roles,
        })
    }

    /// LogFieldMapping.lookup(record, names, scalar=True)[1], on what parse_line kept.
    pub(crate) fn lookup<'f, 'a>(
        &self,
        role: Routing,
        found: &'f Found<'a>,
        mask: u64,
    ) -> Option<&'f V<'a>> {
        for alias in &self.roles[role as usize] {
            if mask & (1u64 << alias.flat) != 0 {
                let v = slot_value(found, alias.flat).unwrap();
                if v.is_container() {
                    continue; // a flat key holding an object/array: next name (no nested try)
                }
                return Some(v);
            }
            if let Some((root, rest)) = &alias.nested {
                if mask & (1u64 << root) == 0 {
                    continue;
                }
                let mut node = slot_value(found, *root).unwrap();
                let mut ok = true;
                for part in rest {
                    match node.get(part) {
                        Some(n) => node = n,
                        None => {
                            ok = false;
                            break;
                        }
                    }
                }
                if ok {
                    if node.is_container() {
                        continue;
                    }
                    return Some(node);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json_scan::parse_line;

    fn mapping() -> FieldMapping {
        let v = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
        FieldMapping::new(
            RoleNames {
                message: v(&["msg"]),
                timestamp: v(&["ts", "time.unix"]),
                level: v(&["level"]),
                trace_id: v(&["trace_id"]),
                span_id: v(&["span_id"]),
                service: v(&["service", "service.name"]),
                data: v(&["data"]),
            },
            [("INFO".to_string(), 9)].into_iter().collect(),
        )
    }

    fn lookup(plan: &ScanPlan, line: &str, role: Routing) -> Option<String> {
        let mut found = Found::new();
        let mask = parse_line(line, &plan.keys, &mut found).expect("a JSON object");
        plan.lookup(role, &found, mask).map(|v| format!("{v:?}"))
    }

    #[test]
    fn names_split_into_paths_and_severity_is_lowercased() {
        let m = mapping();
        let service = &m.routing[Routing::Service as usize];
        assert_eq!(
            (service[0].full.as_str(), service[0].parts.len()),
            ("service", 0)
        );
        assert_eq!(service[1].parts, ["service", "name"]);
        assert_eq!(m.severity.get("info"), Some(&9));
        assert_eq!(m.message[0].full, "msg");
        assert_eq!(m.data[0].full, "data");
    }

    #[test]
    fn lookup_takes_the_first_scalar_of_a_role_flat_before_nested() {
        let plan = ScanPlan::new(&mapping()).unwrap();
        assert_eq!(
            lookup(
                &plan,
                r#"{"service":"a","service.name":"b"}"#,
                Routing::Service
            )
            .as_deref(),
            Some(r#"S("a")"#)
        );
        // an object under the flat key falls through to the dotted name, nested
        assert_eq!(
            lookup(&plan, r#"{"service":{"name":"x"}}"#, Routing::Service).as_deref(),
            Some(r#"S("x")"#)
        );
        assert_eq!(
            lookup(&plan, r#"{"time":{"unix":17}}"#, Routing::Timestamp).as_deref(),
            Some("U(17)")
        );
        assert_eq!(
            lookup(&plan, r#"{"time":{"unix":{"s":1}}}"#, Routing::Timestamp),
            None
        );
        assert_eq!(
            lookup(&plan, r#"{"level":"info","x":1}"#, Routing::TraceId),
            None
        );
        // the last of repeated keys, like a Python dict
        assert_eq!(
            lookup(&plan, r#"{"level":"a","level":"b"}"#, Routing::Level).as_deref(),
            Some(r#"S("b")"#)
        );
    }

    #[test]
    fn more_alias_keys_than_mask_bits_is_an_error() {
        let mut m = mapping();
        m.routing[0] = (0..65).map(|i| Name::new(format!("k{i}"))).collect();
        assert_eq!(
            ScanPlan::new(&m).err().as_deref(),
            Some("at most 64 distinct alias keys")
        );
    }
}

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
    /// a message template rendered from the line (left to the reference)
    pub(crate) message_template: Vec<Name>,
    /// timestamp, level, trace_id, span_id, service (index by `Routing`)
    pub(crate) routing: [Vec<Name>; 5],
    pub(crate) data: Vec<Name>,
    /// level name, lowercased -> OpenTelemetry SeverityNumber
    pub(crate) severity: HashMap<String, i32, ahash::RandomState>,
    /// numeric level (pino's 30) -> SeverityNumber
    pub(crate) numeric_levels: HashMap<i64, i32, ahash::RandomState>,
    /// a line without a level but with one of these names has `implied_severity`
    pub(crate) implied_when: Vec<Name>,
    pub(crate) implied_severity: i32,
    /// (name, names that must all be present for it to count as the service)
    pub(crate) service_when: Vec<(Name, Vec<Name>)>,
}

/// The roles of a mapping as lists of names.
#[derive(Default)]
pub(crate) struct RoleNames {
    pub(crate) message: Vec<String>,
    pub(crate) message_template: Vec<String>,
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
            message_template: names_of(names.message_template),
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
            numeric_levels: HashMap::default(),
            implied_when: Vec::new(),
            implied_severity: 0,
            service_when: Vec::new(),
        }
    }

    /// With names that count as the service only on lines that have all of their conditions.
    pub(crate) fn with_service_when(
        mut self,
        service_when: Vec<(String, Vec<String>)>,
    ) -> FieldMapping {
        self.service_when = service_when
            .into_iter()
            .map(|(name, when)| (Name::new(name), when.into_iter().map(Name::new).collect()))
            .collect();
        self
    }

    /// With numeric levels, and the severity of a line that has none but one of `implied_when`.
    pub(crate) fn with_levels(
        mut self,
        numeric_levels: HashMap<i64, i32>,
        implied_when: Vec<String>,
        implied_severity: i32,
    ) -> FieldMapping {
        self.numeric_levels = numeric_levels.into_iter().collect();
        self.implied_when = implied_when.into_iter().map(Name::new).collect();
        self.implied_severity = implied_severity;
        self
    }

    /// LogFieldMapping.severity_number: a level name (any case, with Go slog's +N/-N steps) or
    /// digits of a numeric level -> SeverityNumber; 0 when unknown.
    pub(crate) fn severity_number(&self, level: &str) -> i32 {
        let name = level.to_lowercase();
        if let Some(&n) = self.severity.get(&name) {
            return n;
        }
        if !name.is_empty() && name.bytes().all(|c| c.is_ascii_digit()) {
            // int(name): digits beyond i64 are no numeric level of the table either
            return name
                .parse::<i64>()
                .ok()
                .and_then(|n| self.numeric_levels.get(&n).copied())
                .unwrap_or(0);
        }
        let Some(sign) = name.rfind(['+', '-']) else {
            return 0;
        };
        let steps = &name[sign + 1..];
        if !(1..=2).contains(&steps.len()) || !steps.bytes().all(|c| c.is_ascii_digit()) {
            return 0;
        }
        match self.severity.get(&name[..sign]) {
            Some(&base) => {
                let steps: i32 = steps.parse().unwrap_or(0);
                let n = if name.as_bytes()[sign] == b'+' {
                    base + steps
                } else {
                    base - steps
                };
                n.clamp(1, 24)
            }
            None => 0,
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
    /// FieldMapping::implied_when, whose presence (any value) implies a level
    implied_when: Vec<Alias>,
    /// FieldMapping::service_when
    service_when: Vec<(Alias, Vec<Alias>)>,
    /// FieldMapping::message_template: a line rendering one keeps its keys (movable_keys)
    templates: Vec<Alias>,
    /// slots of keys that name (or begin) a message, template or data name: never moved
    unmovable: Mask,
}

/// Where a role's value was: under the top-level key of this slot, or at a nested path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum At {
    Flat(u8),
    Nested,
}

/// The slots a line has, one bit each.
pub(crate) type Mask = u128;
pub(crate) const MAX_ALIAS_KEYS: usize = Mask::BITS as usize;

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
        let mut alias = |name: &Name| -> Result<Alias, String> {
            let flat = slot_of(&name.full)?;
            let nested = match name.parts.split_first() {
                Some((root, rest)) => Some((slot_of(root)?, rest.to_vec())),
                None => None,
            };
            Ok(Alias { flat, nested })
        };
        let mut roles: [Vec<Alias>; 5] = Default::default();
        for (role, names) in roles.iter_mut().zip(&mapping.routing) {
            for name in names {
                role.push(alias(name)?);
            }
        }
        let implied_when = mapping
            .implied_when
            .iter()
            .map(&mut alias)
            .collect::<Result<_, _>>()?;
        let mut service_when = Vec::new();
        for (name, when) in &mapping.service_when {
            let conditions = when.iter().map(&mut alias).collect::<Result<_, _>>()?;
            service_when.push((alias(name)?, conditions));
        }
        let templates = mapping
            .message_template
            .iter()
            .map(&mut alias)
            .collect::<Result<_, _>>()?;
        let blocked: Vec<&str> = [&mapping.message, &mapping.message_template, &mapping.data]
            .into_iter()
            .flatten()
            .flat_map(|name| {
                [
                    Some(name.full.as_str()),
                    name.parts.first().map(String::as_str),
                ]
            })
            .flatten()
            .collect();
        let unmovable = keys
            .iter()
            .filter(|(key, _)| blocked.contains(&key.as_str()))
            .fold(0, |bits, (_, &slot)| bits | (1 as Mask) << slot);
        Ok(ScanPlan {
            keys: Keys::new(keys),
            roles,
            implied_when,
            service_when,
            templates,
            unmovable,
        })
    }

    /// Whether the line has one of the names that imply a level (LogFieldMapping.has_any).
    pub(crate) fn implies_level(&self, found: &Found, mask: Mask) -> bool {
        self.implied_when
            .iter()
            .any(|alias| Self::resolve(alias, found, mask, false).is_some())
    }

    /// LogFieldMapping.lookup(record, names, scalar=True)[1], on what parse_line kept.
    #[cfg(test)]
    pub(crate) fn lookup<'f, 'a>(
        &self,
        role: Routing,
        found: &'f Found<'a>,
        mask: Mask,
    ) -> Option<&'f V<'a>> {
        self.lookup_at(role, found, mask).map(|(v, _)| v)
    }

    /// `lookup`, and where the value was: under a top-level key (its slot) or a nested path.
    pub(crate) fn lookup_at<'f, 'a>(
        &self,
        role: Routing,
        found: &'f Found<'a>,
        mask: Mask,
    ) -> Option<(&'f V<'a>, At)> {
        self.roles[role as usize]
            .iter()
            .find_map(|alias| Self::resolve_at(alias, found, mask, true))
    }

    /// The service of a `service_when` name, for a line whose service role found none
    /// (LogFieldMapping.lookup_service: the role's names, then these).
    pub(crate) fn conditional_service<'f, 'a>(
        &self,
        found: &'f Found<'a>,
        mask: Mask,
    ) -> Option<&'f V<'a>> {
        self.service_when.iter().find_map(|(name, when)| {
            when.iter()
                .all(|w| Self::resolve(w, found, mask, false).is_some())
                .then(|| Self::resolve(name, found, mask, true))
                .flatten()
        })
    }

    /// agent/body_keys.py BodyKeys.movable: the slots of the top-level keys the routing roles
    /// read their values from (`at`, each role's `lookup_at`), or None when one reads a nested
    /// path or a key that must stay (a message, template or data name), or the line has a
    /// message template (rendered from the line's own keys).
    pub(crate) fn movable_keys(
        &self,
        at: &[Option<At>],
        found: &Found,
        mask: Mask,
    ) -> Option<Mask> {
        if self
            .templates
            .iter()
            .any(|alias| Self::resolve(alias, found, mask, false).is_some())
        {
            return None;
        }
        let mut moved: Mask = 0;
        for place in at.iter().flatten() {
            let At::Flat(slot) = *place else {
                return None; // a nested path stays where it is
            };
            let bit = (1 as Mask) << slot;
            if self.unmovable & bit != 0 {
                return None;
            }
            moved |= bit;
        }
        Some(moved)
    }

    /// One name's value: the flat key, else the nested path; with `scalar`, a container does
    /// not count (a flat key holding one goes to the next name, with no nested try).
    fn resolve<'f, 'a>(
        alias: &Alias,
        found: &'f Found<'a>,
        mask: Mask,
        scalar: bool,
    ) -> Option<&'f V<'a>> {
        Self::resolve_at(alias, found, mask, scalar).map(|(v, _)| v)
    }

    #[inline(always)]
    fn resolve_at<'f, 'a>(
        alias: &Alias,
        found: &'f Found<'a>,
        mask: Mask,
        scalar: bool,
    ) -> Option<(&'f V<'a>, At)> {
        if mask & ((1 as Mask) << alias.flat) != 0 {
            let v = slot_value(found, alias.flat).unwrap();
            return (!scalar || !v.is_container()).then_some((v, At::Flat(alias.flat)));
        }
        let (root, rest) = alias.nested.as_ref()?;
        if mask & ((1 as Mask) << root) == 0 {
            return None;
        }
        let mut node = slot_value(found, *root).unwrap();
        for part in rest {
            node = node.get(part)?;
        }
        (!scalar || !node.is_container()).then_some((node, At::Nested))
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
                ..Default::default()
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
        m.routing[0] = (0..129).map(|i| Name::new(format!("k{i}"))).collect();
        assert_eq!(
            ScanPlan::new(&m).err().as_deref(),
            Some("at most 128 distinct alias keys")
        );
    }
}

//! OTLP export request -> per-partition request bytes, at the protobuf wire level.
//!
//! Reference: agent/encode.py::split_request on the decoded request. Every item (span / log
//! record) goes to partition_for_trace(trace_id) under a copy of its resource and scope (and
//! their schema_url); consecutive items of equal resource / scope stay under one
//! ResourceX / ScopeX of that partition, exactly like the reference (which compares messages;
//! here the raw bytes are compared, identical for any canonical encoder).
//!
//! Acceptance mirrors upb (python protobuf's decoder), so that nothing the reference would
//! refuse reaches Kafka (the collector decodes every record): resource, scope and items are
//! validated against the OTLP schema (otlp_schema::check). Stricter than upb, on purpose: a
//! wrong wire type for the fields that drive the split (request.resource_x,
//! ResourceX.resource/scope_x/schema_url, ScopeX.scope/items/schema_url, item.trace_id,
//! Span.span_id) is an error. Unknown fields of the request, ResourceX and ScopeX are dropped (the reference builds
//! fresh ResourceX/ScopeX messages); resource, scope and item bytes are copied verbatim, so their
//! unknown fields are kept (the reference keeps them too).
//!
//! One exception to the verbatim copy: a log record with a malformed trace id (neither empty
//! nor 16 bytes and not all zero) or span id (neither empty nor 8 bytes) is written without it
//! (a bad trace id takes the span id with it), flagged with a bool attribute, so that every
//! record is valid OTLP (`without_ids`; the reference clears the fields and appends the
//! attribute, and for a canonically encoded record the bytes are the same). For the same reason
//! a span with a parent_span_id or a link id of another length than OTLP's is rejected
//! (`related_ids_wellformed`).

use std::borrow::Cow;
use std::collections::HashMap;

use smallvec::SmallVec;

use crate::constants::{ATTR_INVALID_SPAN_ID, ATTR_INVALID_TRACE_ID};
use crate::otlp_schema::{check, utf8, M};
use crate::wire::{ld_len, put_ld, put_varint, Rd, WResult};

fn check_utf8(r: &Rd, start: usize, v: &[u8]) -> WResult<()> {
    if utf8(v) {
        Ok(())
    } else {
        Err(r.err(start, "string field schema_url is not valid UTF-8"))
    }
}

/// Which messages make a request of one signal, the item's trace_id and span_id fields, and
/// whether the item must have a valid span id (8 bytes, not all zero: rejected without one) or
/// its ids are optional (malformed ones are cleared); for spans, the parent_span_id and links
/// fields (0 for none).
pub(crate) struct Shape {
    request: M,
    resource_x: M,
    scope_x: M,
    item: M,
    trace_id: u32,
    span_id: u32,
    span_id_required: bool,
    parent_span_id: u32,
    links: u32,
}

pub(crate) const TRACES_SHAPE: Shape = Shape {
    request: M::TracesRequest,
    resource_x: M::ResourceSpans,
    scope_x: M::ScopeSpans,
    item: M::Span,
    trace_id: 1,
    span_id: 2,
    span_id_required: true,
    parent_span_id: 4,
    links: 13,
};
pub(crate) const LOGS_SHAPE: Shape = Shape {
    request: M::LogsRequest,
    resource_x: M::ResourceLogs,
    scope_x: M::ScopeLogs,
    item: M::LogRecord,
    trace_id: 9,
    span_id: 10,
    span_id_required: false,
    parent_span_id: 0,
    links: 0,
};

/// Where an item's bytes are: in the request body as sent, or, rewritten, in
/// `Splitter::rewritten` (a plain pair rather than a Cow: no drop glue, no branch per item).
#[derive(Clone, Copy)]
struct ItemAt {
    start: usize,
    len: usize,
}

/// The top bit of ItemAt::start: the bytes are in `rewritten`.
const REWRITTEN: usize = 1 << (usize::BITS - 1);

struct OutScope<'a> {
    scope: usize,
    schema_url: &'a [u8],
    items: Vec<ItemAt>,
    items_len: usize,
}
struct OutResource<'a> {
    resource: usize,
    schema_url: &'a [u8],
    scopes: Vec<OutScope<'a>>,
}
struct Part<'a> {
    partition: u64,
    resources: Vec<OutResource<'a>>,
    /// the input scope entry the last item came from
    last_entry: usize,
}

struct Splitter<'a> {
    shape: &'static Shape,
    origin: usize,
    partitions: u64,
    untraced: Option<u64>,
    /// resource and scope payloads (several occurrences of the field are concatenated: merged)
    blobs: Vec<Cow<'a, [u8]>>,
    /// the request body, and the log records written without malformed ids, back to back
    body: &'a [u8],
    rewritten: Vec<u8>,
    parts: Vec<Part<'a>>,
    part_of: HashMap<u64, usize, ahash::RandomState>,
    entries: usize,
    total: u64,
    rejected: u64,
    rejected_span_id: u64,
    rejected_related_id: u64,
    cleared_trace_id: u64,
    cleared_span_id: u64,
    scratch: Vec<&'a [u8]>,
}

fn joined<'a>(pieces: &[&'a [u8]]) -> Cow<'a, [u8]> {
    match pieces {
        [] => Cow::Borrowed(&[]),
        [one] => Cow::Borrowed(one),
        _ => Cow::Owned(pieces.concat()),
    }
}

impl<'a> Splitter<'a> {
    fn same(&self, a: usize, b: usize) -> bool {
        a == b || self.blobs[a] == self.blobs[b]
    }

    fn request(&mut self, body: &'a [u8]) -> WResult<()> {
        let mut r = Rd::new(body, self.origin, self.shape.request);
        while !r.done() {
            let start = r.pos();
            match r.tag()? {
                (1, 2) => {
                    let v = r.ld()?;
                    self.resource_x(v)?;
                }
                (1, wt) => return Err(r.wrong_wire(start, 1, wt, 2)),
                (f, wt) => r.skip(f, wt, 0)?,
            }
        }
        Ok(())
    }

    fn resource_x(&mut self, b: &'a [u8]) -> WResult<()> {
        let mut r = Rd::new(b, self.origin, self.shape.resource_x);
        let mut resource: SmallVec<[&'a [u8]; 1]> = SmallVec::new();
        let mut scopes: SmallVec<[&'a [u8]; 4]> = SmallVec::new();
        let mut schema_url: &'a [u8] = b"";
        while !r.done() {
            let start = r.pos();
            match r.tag()? {
                (1, 2) => {
                    let v = r.ld()?;
                    check(v, self.origin, M::Resource, 2, [])?;
                    resource.push(v);
                }
                (2, 2) => scopes.push(r.ld()?),
                (3, 2) => {
                    schema_url = r.ld()?;
                    check_utf8(&r, start, schema_url)?;
                }
                (f @ 1..=3, wt) => return Err(r.wrong_wire(start, f, wt, 2)),
                (f, wt) => r.skip(f, wt, 1)?,
            }
        }
        self.blobs.push(joined(&resource));
        let resource = self.blobs.len() - 1;
        for s in scopes {
            self.scope_x(s, resource, schema_url)?;
        }
        Ok(())
    }

    fn scope_x(&mut self, b: &'a [u8], resource: usize, resource_url: &'a [u8]) -> WResult<()> {
        let mut r = Rd::new(b, self.origin, self.shape.scope_x);
        let mut scope: SmallVec<[&'a [u8]; 1]> = SmallVec::new();
        let mut items = std::mem::take(&mut self.scratch);
        items.clear();
        let mut schema_url: &'a [u8] = b"";
        while !r.done() {
            let start = r.pos();
            match r.tag()? {
                (1, 2) => {
                    let v = r.ld()?;
                    check(v, self.origin, M::Scope, 3, [])?;
                    scope.push(v);
                }
                (2, 2) => items.push(r.ld()?),
                (3, 2) => {
                    schema_url = r.ld()?;
                    check_utf8(&r, start, schema_url)?;
                }
                (f @ 1..=3, wt) => return Err(r.wrong_wire(start, f, wt, 2)),
                (f, wt) => r.skip(f, wt, 2)?,
            }
        }
        self.blobs.push(joined(&scope));
        let scope = self.blobs.len() - 1;
        self.entries += 1;
        let entry = self.entries;
        for &item in &items {
            let shape = self.shape;
            let [trace_id, span_id, parent_span_id, last_link] = check(
                item,
                self.origin,
                shape.item,
                3,
                [
                    shape.trace_id,
                    shape.span_id,
                    shape.parent_span_id,
                    shape.links,
                ],
            )?;
            self.total += 1;
            let trace = valid_id::<16>(trace_id);
            if shape.span_id_required && trace.is_some() && valid_id::<8>(span_id).is_none() {
                self.rejected += 1;
                self.rejected_span_id += 1;
                continue;
            }
            if shape.span_id_required
                && trace.is_some()
                && !(parent_span_id.is_none_or(|p| matches!(p.len(), 0 | 8))
                    && (last_link.is_none() || links_wellformed(item)?))
            {
                self.rejected += 1;
                self.rejected_related_id += 1;
                continue;
            }
            let partition = match trace {
                Some(t) => u64::from_be_bytes(t[8..16].try_into().unwrap()) % self.partitions,
                None => match self.untraced {
                    Some(u) => u,
                    None => {
                        self.rejected += 1;
                        continue;
                    }
                },
            };
            let item = if shape.span_id_required {
                self.in_body(item)
            } else if trace.is_none() && trace_id.is_some_and(|t| !t.is_empty()) {
                self.cleared_trace_id += 1;
                let drop = [shape.trace_id, shape.span_id];
                self.rewrite(item, &drop, ATTR_INVALID_TRACE_ID)?
            } else if span_id.is_some_and(|s| !s.is_empty() && s.len() != 8) {
                self.cleared_span_id += 1;
                self.rewrite(item, &[shape.span_id], ATTR_INVALID_SPAN_ID)?
            } else {
                self.in_body(item)
            };
            let index = match self.part_of.get(&partition) {
                Some(&i) => i,
                None => {
                    self.parts.push(Part {
                        partition,
                        resources: Vec::new(),
                        last_entry: 0,
                    });
                    self.part_of.insert(partition, self.parts.len() - 1);
                    self.parts.len() - 1
                }
            };
            if self.parts[index].last_entry != entry {
                // the reference: a new ResourceX unless the partition's last one has an equal
                // resource; then a new ScopeX unless its last one has an equal scope
                let last_resource = self.parts[index].resources.last().map(|x| x.resource);
                if !last_resource.is_some_and(|x| self.same(x, resource)) {
                    self.parts[index].resources.push(OutResource {
                        resource,
                        schema_url: resource_url,
                        scopes: Vec::new(),
                    });
                }
                let last_scope = self.parts[index]
                    .resources
                    .last()
                    .unwrap()
                    .scopes
                    .last()
                    .map(|x| x.scope);
                if !last_scope.is_some_and(|x| self.same(x, scope)) {
                    self.parts[index]
                        .resources
                        .last_mut()
                        .unwrap()
                        .scopes
                        .push(OutScope {
                            scope,
                            schema_url,
                            items: Vec::new(),
                            items_len: 0,
                        });
                }
                self.parts[index].last_entry = entry;
            }
            let out = self.parts[index]
                .resources
                .last_mut()
                .unwrap()
                .scopes
                .last_mut()
                .unwrap();
            out.items_len += ld_len(item.len);
            out.items.push(item);
        }
        self.scratch = items;
        Ok(())
    }

    fn in_body(&self, item: &'a [u8]) -> ItemAt {
        let start = item.as_ptr() as usize - self.body.as_ptr() as usize;
        ItemAt {
            start,
            len: item.len(),
        }
    }

    fn rewrite(&mut self, item: &[u8], drop: &[u32], flag: &str) -> WResult<ItemAt> {
        let start = self.rewritten.len();
        without_ids(item, self.shape.item, drop, flag, &mut self.rewritten)?;
        Ok(ItemAt {
            start: start | REWRITTEN,
            len: self.rewritten.len() - start,
        })
    }

    fn bytes(&self, item: ItemAt) -> &[u8] {
        if item.start & REWRITTEN == 0 {
            &self.body[item.start..item.start + item.len]
        } else {
            let start = item.start & !REWRITTEN;
            &self.rewritten[start..start + item.len]
        }
    }

    fn scope_len(&self, s: &OutScope) -> usize {
        ld_len(self.blobs[s.scope].len()) + s.items_len + url_len(s.schema_url)
    }
    fn resource_len(&self, x: &OutResource) -> usize {
        ld_len(self.blobs[x.resource].len())
            + x.scopes
                .iter()
                .map(|s| ld_len(self.scope_len(s)))
                .sum::<usize>()
            + url_len(x.schema_url)
    }

    /// The request bytes of one partition, fields in number order (as the reference writes them).
    fn encode(&self, part: &Part) -> Vec<u8> {
        let sizes: Vec<usize> = part
            .resources
            .iter()
            .map(|x| self.resource_len(x))
            .collect();
        let mut out = Vec::with_capacity(sizes.iter().map(|&n| ld_len(n)).sum());
        for (x, &size) in part.resources.iter().zip(&sizes) {
            out.push(0x0a);
            put_varint(&mut out, size as u64);
            put_ld(&mut out, 0x0a, &self.blobs[x.resource]);
            for s in &x.scopes {
                out.push(0x12);
                put_varint(&mut out, self.scope_len(s) as u64);
                put_ld(&mut out, 0x0a, &self.blobs[s.scope]);
                for &item in &s.items {
                    put_ld(&mut out, 0x12, self.bytes(item));
                }
                put_url(&mut out, s.schema_url);
            }
            put_url(&mut out, x.schema_url);
        }
        debug_assert_eq!(out.len(), out.capacity());
        out
    }
}

/// Whether the trace_id (1) and span_id (2) of a span's links (13) are empty or of their size,
/// as the reference reads them: the last occurrence of each, fields of another wire type being
/// unknown fields. The span was checked; it is walked only when it has links.
fn links_wellformed(span: &[u8]) -> WResult<bool> {
    let mut r = Rd::whole(span, M::Span);
    while !r.done() {
        match r.tag()? {
            (13, 2) => {
                let mut link = Rd::whole(r.ld()?, M::Link);
                let (mut trace_ok, mut span_ok) = (true, true);
                while !link.done() {
                    match link.tag()? {
                        (1, 2) => trace_ok = matches!(link.ld()?.len(), 0 | 16),
                        (2, 2) => span_ok = matches!(link.ld()?.len(), 0 | 8),
                        (f, wt) => link.skip(f, wt, 4)?,
                    }
                }
                if !(trace_ok && span_ok) {
                    return Ok(false);
                }
            }
            (f, wt) => r.skip(f, wt, 3)?,
        }
    }
    Ok(true)
}

/// Field number of a log record's attributes (KeyValue, repeated).
const LOG_RECORD_ATTRIBUTES: u32 = 6;

/// Appends to `out` `item` (a message of type `m`, checked) without the fields `drop` and with a bool attribute
/// `flag` = true appended, as the reference writes it after clearing the fields and appending
/// the attribute: the attribute after the last one the item has, else before the first field
/// that follows attributes in number order (known fields are written in that order, unknown
/// ones, known numbers of another wire type included, last). Other bytes are copied as they are.
fn without_ids(item: &[u8], m: M, drop: &[u32], flag: &str, out: &mut Vec<u8>) -> WResult<()> {
    let mut r = Rd::whole(item, m);
    let mut fields: SmallVec<[(u32, bool, usize, usize); 16]> = SmallVec::new();
    while !r.done() {
        let start = r.pos();
        let (f, wt) = r.tag()?;
        r.skip(f, wt, 3)?;
        let known = m.ty(f).is_some_and(|ty| ty.wire() == wt);
        fields.push((f, known, start, r.pos()));
    }
    let last_attribute = fields
        .iter()
        .rposition(|&(f, known, ..)| known && f == LOG_RECORD_ATTRIBUTES);
    let insert_before = match last_attribute {
        Some(i) => i + 1,
        None => fields
            .iter()
            .position(|&(f, known, ..)| !known || f > LOG_RECORD_ATTRIBUTES)
            .unwrap_or(fields.len()),
    };
    let mut value = Vec::with_capacity(flag.len() + 8);
    put_ld(&mut value, 0x0a, flag.as_bytes()); // KeyValue.key
    put_ld(&mut value, 0x12, &[0x10, 0x01]); // KeyValue.value: AnyValue{bool_value: true}
    out.reserve(item.len() + ld_len(value.len()));
    for (i, &(f, known, start, end)) in fields.iter().enumerate() {
        if i == insert_before {
            put_ld(out, 0x32, &value);
        }
        if !(known && drop.contains(&f)) {
            out.extend_from_slice(&item[start..end]);
        }
    }
    if insert_before == fields.len() {
        put_ld(out, 0x32, &value);
    }
    Ok(())
}

/// `id` when it is `N` bytes and not all zero (a valid OTLP trace id or span id).
#[inline(always)]
fn valid_id<const N: usize>(id: Option<&[u8]>) -> Option<&[u8; N]> {
    let id: &[u8; N] = id?.try_into().ok()?;
    id.iter().any(|&c| c != 0).then_some(id)
}

fn url_len(url: &[u8]) -> usize {
    if url.is_empty() {
        0
    } else {
        ld_len(url.len())
    }
}
fn put_url(out: &mut Vec<u8>, url: &[u8]) {
    if !url.is_empty() {
        put_ld(out, 0x1a, url);
    }
}

pub(crate) struct SplitOut {
    /// (partition, request bytes), partitions in order of their first item
    pub(crate) parts: Vec<(u64, Vec<u8>)>,
    /// items in the request, rejected ones included
    pub(crate) total: u64,
    /// items rejected: without a valid trace id when there is no untraced partition, or
    /// without a valid span id when the shape requires one
    pub(crate) rejected: u64,
    /// of `rejected`, the items with a valid trace id but no valid span id
    pub(crate) rejected_span_id: u64,
    /// of `rejected`, spans with valid ids but a malformed parent_span_id or link id
    pub(crate) rejected_related_id: u64,
    /// log records written without their malformed trace id (and span id) / span id
    pub(crate) cleared_trace_id: u64,
    pub(crate) cleared_span_id: u64,
}

/// The request `body` split by partition; items without a valid trace id go to `untraced`, or
/// are rejected (counted) when it is None; spans without a valid span id are rejected.
pub(crate) fn split_body(
    body: &[u8],
    shape: &'static Shape,
    partitions: u64,
    untraced: Option<u64>,
) -> WResult<SplitOut> {
    let mut s = Splitter {
        shape,
        origin: body.as_ptr() as usize,
        partitions,
        untraced,
        blobs: Vec::new(),
        body,
        rewritten: Vec::new(),
        parts: Vec::new(),
        part_of: HashMap::default(),
        entries: 0,
        total: 0,
        rejected: 0,
        rejected_span_id: 0,
        rejected_related_id: 0,
        cleared_trace_id: 0,
        cleared_span_id: 0,
        scratch: Vec::new(),
    };
    s.request(body)
        .map_err(|e| format!("invalid {}: {}", shape.request.short(), e))?;
    let parts = s.parts.iter().map(|p| (p.partition, s.encode(p))).collect();
    Ok(SplitOut {
        parts,
        total: s.total,
        rejected: s.rejected,
        rejected_span_id: s.rejected_span_id,
        rejected_related_id: s.rejected_related_id,
        cleared_trace_id: s.cleared_trace_id,
        cleared_span_id: s.cleared_span_id,
    })
}

#[cfg(test)]
#[path = "otlp_split_tests.rs"]
mod tests;

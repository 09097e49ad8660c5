//! A trace as search reads it: its spans with what TraceQL evaluates, and the
//! trace-level figures a result reports, all borrowed from the bytes they were read from
//! (stored `TracesData.resource_spans` records, or a block's search section).
//!
//! Records are walked field by field (`crate::otlp::fields`), without materialising
//! the OTLP messages: no string is copied, and what search does not read (events, links,
//! scopes) is skipped.

use std::collections::HashSet;
use std::ops::Range;

use crate::model::TraceId;
use crate::otlp::{fields, WireValue};
use crate::traceql::ast::{Kind, Status};

/// Shown as the root service and name of a trace whose root span has not arrived (Tempo's).
pub(crate) const NO_ROOT: &str = "<root span not yet received>";

pub(crate) struct SearchTrace<'a> {
    pub id: TraceId,
    pub resources: Vec<Resource<'a>>,
    pub spans: Vec<SearchSpan<'a>>,
    /// Every resource's and span's attributes; each points at its own range.
    pub attrs: Vec<Attr<'a>>,
    pub start: u64,
    pub end: u64,
    pub root_name: Option<&'a str>,
    pub root_service: Option<&'a str>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Resource<'a> {
    pub attrs: Range<u32>,
    pub service: Option<&'a str>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SearchSpan<'a> {
    pub resource: u32,
    pub span_id: &'a [u8],
    pub name: &'a str,
    pub kind: Kind,
    pub status: Status,
    pub status_message: &'a str,
    pub start: u64,
    pub end: u64,
    /// Whether it has no parent (a root span).
    pub root: bool,
    pub attrs: Range<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Attr<'a> {
    pub key: &'a str,
    pub value: AttrValue<'a>,
}

/// An attribute's value. Arrays, maps and bytes keep their `AnyValue` bytes: no
/// comparison applies to them, but they are present (`!= nil`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum AttrValue<'a> {
    Str(&'a str),
    Int(i64),
    Float(f64),
    Bool(bool),
    Other(&'a [u8]),
}

impl SearchSpan<'_> {
    pub(crate) fn duration(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }
}

impl<'a> SearchTrace<'a> {
    pub(crate) fn empty(id: TraceId) -> Self {
        SearchTrace {
            id,
            resources: Vec::new(),
            spans: Vec::new(),
            attrs: Vec::new(),
            start: 0,
            end: 0,
            root_name: None,
            root_service: None,
        }
    }

    /// Decodes every stored copy of a trace (segments or whole block records) into one;
    /// spans seen more than once (the same span ID and kind) are kept once. What does not
    /// decode is skipped and counted (the distributor validated it, so this is damage).
    pub(crate) fn decode(id: TraceId, records: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut trace = SearchTrace::empty(id);
        trace.decode_again(id, records);
        trace
    }

    /// [`Self::decode`] into this trace's buffers (what it held is dropped).
    pub(crate) fn decode_again(
        &mut self,
        id: TraceId,
        records: impl IntoIterator<Item = &'a [u8]>,
    ) {
        self.id = id;
        self.resources.clear();
        self.spans.clear();
        self.attrs.clear();
        self.root_name = None;
        self.root_service = None;
        let mut seen = HashSet::new();
        for record in records {
            if let Err(e) = self.add_record(record, &mut seen) {
                metrics::counter!("ringtail_search_undecodable_records_total").increment(1);
                tracing::debug!(error = %e, "skipping the rest of an undecodable record in search");
            }
        }
        self.finish();
    }

    /// Sets the trace's range and root from its spans.
    pub(crate) fn finish(&mut self) {
        let (mut start, mut end) = (u64::MAX, 0);
        for span in &self.spans {
            start = start.min(span.start);
            end = end.max(span.end);
            if span.root && self.root_name.is_none() {
                self.root_name = Some(span.name);
                self.root_service = self
                    .resources
                    .get(span.resource as usize)
                    .and_then(|r| r.service);
            }
        }
        self.start = if start == u64::MAX { 0 } else { start };
        self.end = end;
    }

    /// One `TracesData` (repeated `resource_spans`, field 1).
    fn add_record(
        &mut self,
        record: &'a [u8],
        seen: &mut HashSet<(&'a [u8], Kind)>,
    ) -> Result<(), Damaged> {
        for field in fields(record) {
            if let (1, WireValue::Len(rs)) = field? {
                self.add_resource_spans(rs, seen)?;
            }
        }
        Ok(())
    }

    fn add_resource_spans(
        &mut self,
        rs: &'a [u8],
        seen: &mut HashSet<(&'a [u8], Kind)>,
    ) -> Result<(), Damaged> {
        let resource = u32::try_from(self.resources.len()).map_err(|_| Damaged)?;
        let from = self.attrs.len() as u32;
        self.resources.push(Resource {
            attrs: from..from,
            service: None,
        });
        // The resource comes first in what SDKs and the distributor write, but any
        // order is valid protobuf: collect it and the spans in two passes.
        for field in fields(rs) {
            if let (1, WireValue::Len(r)) = field? {
                for f in fields(r) {
                    if let (1, WireValue::Len(kv)) = f? {
                        self.push_attr(kv)?;
                    }
                }
            }
        }
        let to = self.attrs.len() as u32;
        let service = self.attrs[from as usize..]
            .iter()
            .find(|a| a.key == "service.name")
            .and_then(|a| match a.value {
                AttrValue::Str(s) => Some(s),
                _ => None,
            });
        self.resources[resource as usize] = Resource {
            attrs: from..to,
            service,
        };
        for field in fields(rs) {
            if let (2, WireValue::Len(ss)) = field? {
                for f in fields(ss) {
                    if let (2, WireValue::Len(span)) = f? {
                        self.add_span(resource, span, seen)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn add_span(
        &mut self,
        resource: u32,
        bytes: &'a [u8],
        seen: &mut HashSet<(&'a [u8], Kind)>,
    ) -> Result<(), Damaged> {
        let from = self.attrs.len() as u32;
        let mut span = SearchSpan {
            resource,
            span_id: &[],
            name: "",
            kind: Kind::Unspecified,
            status: Status::Unset,
            status_message: "",
            start: 0,
            end: 0,
            root: true,
            attrs: from..from,
        };
        for field in fields(bytes) {
            match field? {
                (2, WireValue::Len(id)) => span.span_id = id,
                (4, WireValue::Len(parent)) => span.root = parent.is_empty(),
                (5, WireValue::Len(name)) => span.name = text(name)?,
                (6, WireValue::Varint(k)) => span.kind = Kind::from_code(k as i32),
                (7, WireValue::Fixed64(t)) => span.start = t,
                (8, WireValue::Fixed64(t)) => span.end = t,
                (9, WireValue::Len(kv)) => self.push_attr(kv)?,
                (15, WireValue::Len(status)) => {
                    for f in fields(status) {
                        match f? {
                            (2, WireValue::Len(m)) => span.status_message = text(m)?,
                            (3, WireValue::Varint(c)) => span.status = Status::from_code(c as i32),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        // A few spans are compared directly; past that, through a set.
        let seen_before = if self.spans.len() < 32 {
            self.spans
                .iter()
                .any(|s| s.span_id == span.span_id && s.kind == span.kind)
        } else {
            if seen.is_empty() {
                seen.extend(self.spans.iter().map(|s| (s.span_id, s.kind)));
            }
            !seen.insert((span.span_id, span.kind))
        };
        if seen_before {
            self.attrs.truncate(from as usize);
            return Ok(());
        }
        span.attrs = from..self.attrs.len() as u32;
        self.spans.push(span);
        Ok(())
    }

    fn push_attr(&mut self, kv: &'a [u8]) -> Result<(), Damaged> {
        let mut key = "";
        let mut value = None;
        for f in fields(kv) {
            match f? {
                (1, WireValue::Len(k)) => key = text(k)?,
                (2, WireValue::Len(v)) => value = any_value(v)?,
                _ => {}
            }
        }
        if let Some(value) = value {
            self.attrs.push(Attr { key, value });
        }
        Ok(())
    }

    pub(crate) fn duration(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    pub(crate) fn span_attrs(&self, span: &SearchSpan) -> &[Attr<'a>] {
        self.attrs
            .get(span.attrs.start as usize..span.attrs.end as usize)
            .unwrap_or(&[])
    }

    pub(crate) fn resource_of(&self, span: &SearchSpan) -> &[Attr<'a>] {
        self.resources
            .get(span.resource as usize)
            .and_then(|r| self.attrs.get(r.attrs.start as usize..r.attrs.end as usize))
            .unwrap_or(&[])
    }

    /// The service of a span (its resource's `service.name`).
    pub(crate) fn service_of(&self, span: &SearchSpan) -> Option<&'a str> {
        self.resources
            .get(span.resource as usize)
            .and_then(|r| r.service)
    }
}

/// A value (`AnyValue`); an empty one is absent, as a decoder leaves it unset.
fn any_value(bytes: &[u8]) -> Result<Option<AttrValue<'_>>, Damaged> {
    let mut value = None;
    for f in fields(bytes) {
        value = Some(match f? {
            (1, WireValue::Len(s)) => AttrValue::Str(text(s)?),
            (2, WireValue::Varint(b)) => AttrValue::Bool(b != 0),
            (3, WireValue::Varint(i)) => AttrValue::Int(i as i64),
            (4, WireValue::Fixed64(f)) => AttrValue::Float(f64::from_bits(f)),
            _ => AttrValue::Other(bytes),
        });
    }
    Ok(value)
}

#[inline]
fn text(bytes: &[u8]) -> Result<&str, Damaged> {
    if bytes.is_ascii() {
        // SAFETY: ASCII is valid UTF-8. Most keys, names and values are ASCII, and
        // `is_ascii` is inlined where `from_utf8` is a call per string (13% of building
        // a search section went to it).
        return Ok(unsafe { std::str::from_utf8_unchecked(bytes) });
    }
    std::str::from_utf8(bytes).map_err(|_| Damaged)
}

/// A record that does not decode.
#[derive(Debug)]
pub(crate) struct Damaged;

impl std::fmt::Display for Damaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stored OTLP bytes do not decode")
    }
}

impl From<crate::otlp::WireError> for Damaged {
    fn from(_: crate::otlp::WireError) -> Self {
        Damaged
    }
}

/// The value of `key` among `attributes`.
pub(crate) fn attribute<'a>(attributes: &[Attr<'a>], key: &str) -> Option<AttrValue<'a>> {
    attributes.iter().find(|a| a.key == key).map(|a| a.value)
}

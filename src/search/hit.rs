//! A trace that matched, as Tempo's `TraceSearchMetadata` in its protobuf JSON mapping
//! (field names exactly, 64-bit integers as strings), and how the answers of several
//! replicas and blocks for one trace are merged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::model::{Attr, AttrValue, SearchTrace, NO_ROOT};
use crate::traceql::ast::{Field, Scope, Status};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TraceHit {
    #[serde(rename = "traceID")]
    pub trace_id: String,
    pub root_service_name: String,
    pub root_trace_name: String,
    #[serde(with = "u64_string")]
    pub start_time_unix_nano: u64,
    pub duration_ms: u32,
    pub span_sets: Vec<SpanSet>,
    pub service_stats: BTreeMap<String, ServiceStats>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SpanSet {
    pub spans: Vec<HitSpan>,
    pub matched: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HitSpan {
    #[serde(rename = "spanID")]
    pub span_id: String,
    pub name: String,
    #[serde(with = "u64_string")]
    pub start_time_unix_nano: u64,
    #[serde(with = "u64_string")]
    pub duration_nanos: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<serde_json::Value>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServiceStats {
    pub span_count: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub error_count: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

mod u64_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl TraceHit {
    /// The result for `trace`, whose spans `matched` (indices) the query selected:
    /// the first `spans_per_set` of them by start time, each with the attributes the
    /// query's `fields` read.
    pub(crate) fn new(
        trace: &SearchTrace,
        matched: &[usize],
        fields: &[Field],
        spans_per_set: usize,
    ) -> Self {
        let mut chosen: Vec<usize> = matched.to_vec();
        chosen.sort_by_key(|&i| trace.spans[i].start);
        chosen.truncate(spans_per_set);
        let spans = chosen
            .iter()
            .map(|&i| {
                let span = &trace.spans[i];
                HitSpan {
                    span_id: hex::encode(span.span_id),
                    name: span.name.to_owned(),
                    start_time_unix_nano: span.start,
                    duration_nanos: span.duration(),
                    attributes: reported_attributes(trace, span, fields),
                }
            })
            .collect();
        let mut service_stats: BTreeMap<String, ServiceStats> = BTreeMap::new();
        for span in &trace.spans {
            let stats = service_stats
                .entry(trace.service_of(span).unwrap_or("").to_owned())
                .or_default();
            stats.span_count += 1;
            if span.status == Status::Error {
                stats.error_count += 1;
            }
        }
        TraceHit {
            trace_id: trace.id.to_hex(),
            root_service_name: trace.root_service.unwrap_or(NO_ROOT).to_owned(),
            root_trace_name: trace.root_name.unwrap_or(NO_ROOT).to_owned(),
            start_time_unix_nano: trace.start,
            duration_ms: u32::try_from(trace.duration() / 1_000_000).unwrap_or(u32::MAX),
            span_sets: vec![SpanSet {
                spans,
                matched: u32::try_from(matched.len()).unwrap_or(u32::MAX),
            }],
            service_stats,
        }
    }

    fn end(&self) -> u64 {
        self.start_time_unix_nano + u64::from(self.duration_ms) * 1_000_000
    }

    /// Folds another answer for the same trace (another replica's, a block's) into this
    /// one: the earliest start and latest end, a known root over an unknown one, the
    /// larger match count and span stats, the span sets' spans merged by span ID.
    pub(crate) fn absorb(&mut self, other: TraceHit, spans_per_set: usize) {
        let end = self.end().max(other.end());
        self.start_time_unix_nano = self.start_time_unix_nano.min(other.start_time_unix_nano);
        self.duration_ms =
            u32::try_from((end - self.start_time_unix_nano) / 1_000_000).unwrap_or(u32::MAX);
        if self.root_trace_name == NO_ROOT && other.root_trace_name != NO_ROOT {
            self.root_trace_name = other.root_trace_name;
            self.root_service_name = other.root_service_name;
        }
        for (service, stats) in other.service_stats {
            let mine = self.service_stats.entry(service).or_default();
            mine.span_count = mine.span_count.max(stats.span_count);
            mine.error_count = mine.error_count.max(stats.error_count);
        }
        let (Some(mine), Some(theirs)) = (self.span_sets.first_mut(), other.span_sets.first())
        else {
            if self.span_sets.is_empty() {
                self.span_sets = other.span_sets;
            }
            return;
        };
        mine.matched = mine.matched.max(theirs.matched);
        for span in &theirs.spans {
            if !mine.spans.iter().any(|s| s.span_id == span.span_id) {
                mine.spans.push(span.clone());
            }
        }
        mine.spans.sort_by_key(|s| s.start_time_unix_nano);
        mine.spans.truncate(spans_per_set);
    }
}

/// Merges answers from replicas and blocks: one hit per trace ID, most recent first
/// (Tempo's order), at most `limit`.
pub(crate) fn merge_hits(
    answers: impl IntoIterator<Item = TraceHit>,
    limit: usize,
    spans_per_set: usize,
) -> Vec<TraceHit> {
    let mut by_id: BTreeMap<String, TraceHit> = BTreeMap::new();
    for hit in answers {
        match by_id.get_mut(&hit.trace_id) {
            Some(existing) => existing.absorb(hit, spans_per_set),
            None => {
                by_id.insert(hit.trace_id.clone(), hit);
            }
        }
    }
    let mut hits: Vec<TraceHit> = by_id.into_values().collect();
    hits.sort_by(|a, b| {
        b.start_time_unix_nano
            .cmp(&a.start_time_unix_nano)
            .then_with(|| a.trace_id.cmp(&b.trace_id))
    });
    hits.truncate(limit);
    hits
}

/// The attributes among `fields` that `span` has, as OTLP JSON `KeyValue`s.
fn reported_attributes(
    trace: &SearchTrace,
    span: &super::model::SearchSpan,
    fields: &[Field],
) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for field in fields {
        let Field::Attribute { scope, key } = field else {
            continue;
        };
        fn find<'a>(attrs: &[Attr<'a>], key: &str) -> Option<Attr<'a>> {
            attrs.iter().find(|a| a.key == key).copied()
        }
        let attr = match scope {
            Scope::Span => find(trace.span_attrs(span), key),
            Scope::Resource => find(trace.resource_of(span), key),
            Scope::Any => {
                find(trace.span_attrs(span), key).or_else(|| find(trace.resource_of(span), key))
            }
        };
        if let Some(json) = attr.as_ref().and_then(key_value_json) {
            out.push(json);
        }
    }
    out
}

/// An attribute as an OTLP `KeyValue` in the protobuf JSON mapping (`intValue` as a
/// string). Arrays, maps and bytes are not reported (no comparison selects them).
pub(crate) fn key_value_json(attr: &Attr) -> Option<serde_json::Value> {
    let value = match attr.value {
        AttrValue::Str(s) => serde_json::json!({ "stringValue": s }),
        AttrValue::Int(i) => serde_json::json!({ "intValue": i.to_string() }),
        AttrValue::Float(f) => serde_json::json!({ "doubleValue": f }),
        AttrValue::Bool(b) => serde_json::json!({ "boolValue": b }),
        AttrValue::Other(_) => return None,
    };
    Some(serde_json::json!({ "key": attr.key, "value": value }))
}

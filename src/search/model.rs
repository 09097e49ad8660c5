//! A trace decoded for search: its spans with what TraceQL reads, and the trace-level
//! figures a result reports. Decoded from the stored `TracesData.resource_spans` bytes
//! on a query (the write path never decodes them).

use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::TracesData;
use prost::Message;

use crate::model::TraceId;
use crate::traceql::ast::{Kind, Status};

/// Shown as the root service and name of a trace whose root span has not arrived (Tempo's).
pub(crate) const NO_ROOT: &str = "<root span not yet received>";

pub(crate) struct SearchTrace {
    pub id: TraceId,
    /// Each resource's attributes; spans point into this by index.
    pub resources: Vec<Vec<KeyValue>>,
    pub spans: Vec<SearchSpan>,
    pub start: u64,
    pub end: u64,
    pub root_name: Option<String>,
    pub root_service: Option<String>,
}

pub(crate) struct SearchSpan {
    pub resource: usize,
    pub span_id: Vec<u8>,
    pub name: String,
    pub kind: Kind,
    pub status: Status,
    pub status_message: String,
    pub start: u64,
    pub end: u64,
    pub attributes: Vec<KeyValue>,
}

impl SearchSpan {
    pub(crate) fn duration(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }
}

impl SearchTrace {
    /// Decodes every stored copy of a trace (segments or whole block records) into one;
    /// spans seen more than once (the same span ID and kind) are kept once. Records that
    /// do not decode are skipped and counted.
    pub(crate) fn decode<'a>(id: TraceId, records: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut trace = SearchTrace {
            id,
            resources: Vec::new(),
            spans: Vec::new(),
            start: u64::MAX,
            end: 0,
            root_name: None,
            root_service: None,
        };
        let mut seen = std::collections::HashSet::new();
        for record in records {
            let data = match TracesData::decode(record) {
                Ok(d) => d,
                Err(e) => {
                    metrics::counter!("ringtail_search_undecodable_records_total").increment(1);
                    tracing::debug!(error = %e, "skipping an undecodable record in search");
                    continue;
                }
            };
            for rs in data.resource_spans {
                let resource = trace.resources.len();
                let attributes = rs.resource.map(|r| r.attributes).unwrap_or_default();
                let service = string_attribute(&attributes, "service.name");
                trace.resources.push(attributes);
                for ss in rs.scope_spans {
                    for span in ss.spans {
                        if !seen.insert((span.span_id.clone(), span.kind)) {
                            continue;
                        }
                        trace.start = trace.start.min(span.start_time_unix_nano);
                        trace.end = trace.end.max(span.end_time_unix_nano);
                        if span.parent_span_id.is_empty() && trace.root_name.is_none() {
                            trace.root_name = Some(span.name.clone());
                            trace.root_service = service.clone();
                        }
                        let (status, status_message) = span
                            .status
                            .map(|s| (Status::from_code(s.code), s.message))
                            .unwrap_or((Status::Unset, String::new()));
                        trace.spans.push(SearchSpan {
                            resource,
                            span_id: span.span_id,
                            name: span.name,
                            kind: Kind::from_code(span.kind),
                            status,
                            status_message,
                            start: span.start_time_unix_nano,
                            end: span.end_time_unix_nano,
                            attributes: span.attributes,
                        });
                    }
                }
            }
        }
        if trace.start == u64::MAX {
            trace.start = 0;
        }
        trace
    }

    pub(crate) fn duration(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    pub(crate) fn resource_of(&self, span: &SearchSpan) -> &[KeyValue] {
        self.resources.get(span.resource).map_or(&[], |r| &r[..])
    }

    /// The service of a span (its resource's `service.name`).
    pub(crate) fn service_of(&self, span: &SearchSpan) -> Option<&str> {
        self.resource_of(span)
            .iter()
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(s) => Some(s.as_str()),
                _ => None,
            })
    }
}

fn string_attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            _ => None,
        }
    })
}

/// The value of `key` among `attributes`.
pub(crate) fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

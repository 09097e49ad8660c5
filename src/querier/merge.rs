//! Merging the replicas' answers: decode each answer's records, drop duplicate spans
//! (same span ID and kind), drop scopes and resources left empty.
//!
//! An answer is a concatenation of `ResourceSpans` records (one or more per push that
//! carried the trace). Each record is decoded on its own, so a record that does not
//! decode costs only itself: every other record of every replica is still merged, and
//! the result says how many were unreadable.

use std::collections::HashSet;

use bytes::Bytes;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, TracesData};
use prost::Message;

use crate::otlp::for_each_resource_spans;

/// A trace merged from every answer.
#[derive(Debug, Default)]
pub(crate) struct MergedTrace {
    pub data: TracesData,
    /// Records (or the rest of an answer whose framing broke) that did not decode.
    pub unreadable: usize,
}

impl MergedTrace {
    /// Whether some stored bytes of the trace could not be read.
    pub(crate) fn is_partial(&self) -> bool {
        self.unreadable > 0
    }
}

/// Merges encoded `TracesData` answers (replicas and blocks).
pub(crate) fn merge_answers(answers: &[Bytes]) -> MergedTrace {
    let mut seen: HashSet<(Vec<u8>, i32)> = HashSet::new();
    let mut out: Vec<ResourceSpans> = Vec::new();
    let mut unreadable = 0;
    for answer in answers {
        let framing = for_each_resource_spans(answer, |record| {
            let mut rs = match ResourceSpans::decode(record) {
                Ok(rs) => rs,
                Err(e) => {
                    unreadable += 1;
                    tracing::warn!(error = %e, "skipping an undecodable record of a trace");
                    return;
                }
            };
            for ss in &mut rs.scope_spans {
                ss.spans
                    .retain(|span| seen.insert((span.span_id.clone(), span.kind)));
            }
            rs.scope_spans.retain(|ss| !ss.spans.is_empty());
            if !rs.scope_spans.is_empty() {
                out.push(rs);
            }
        });
        if let Err(e) = framing {
            unreadable += 1;
            tracing::warn!(error = %e, "skipping the unreadable rest of a trace answer");
        }
    }
    if unreadable > 0 {
        metrics::counter!("ringtail_querier_unreadable_records_total").increment(unreadable as u64);
    }
    MergedTrace {
        data: TracesData {
            resource_spans: out,
        },
        unreadable,
    }
}

pub fn span_count(data: &TracesData) -> usize {
    data.resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len())
        .sum()
}

/// Tempo's `/api/traces/{id}` JSON: `{"batches": [ResourceSpans...]}` with OTLP/JSON
/// field names (camelCase, hex trace and span IDs).
pub(crate) fn tempo_v1_json(data: &TracesData) -> serde_json::Value {
    serde_json::json!({ "batches": data.resource_spans })
}

/// Tempo's `/api/v2/traces/{id}` JSON: `{"trace": {"resourceSpans": [...]}, "status": ...}`,
/// `"status": "PARTIAL"` with a `message` when some stored records could not be read.
pub(crate) fn tempo_v2_json(trace: &MergedTrace) -> serde_json::Value {
    let mut json = serde_json::json!({
        "trace": { "resourceSpans": trace.data.resource_spans },
        "status": "COMPLETE",
    });
    if let Some(message) = partial_message(trace) {
        json["status"] = "PARTIAL".into();
        json["message"] = message.into();
    }
    json
}

/// Why a trace is partial, for the v2 `message` and the `X-Ringtail-Partial` header.
pub(crate) fn partial_message(trace: &MergedTrace) -> Option<String> {
    trace.is_partial().then(|| {
        format!(
            "{} stored record(s) of this trace could not be decoded and were skipped",
            trace.unreadable
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span};

    fn answer(spans: &[(u8, i32)]) -> Bytes {
        TracesData {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: spans
                        .iter()
                        .map(|&(id, kind)| Span {
                            trace_id: vec![1; 16],
                            span_id: vec![id; 8],
                            kind,
                            name: format!("span-{id}"),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
        .into()
    }

    #[test]
    fn duplicate_spans_from_replicas_are_removed() {
        let merged = merge_answers(&[answer(&[(1, 2), (2, 2)]), answer(&[(1, 2), (2, 2), (3, 3)])]);
        assert!(!merged.is_partial());
        let merged = merged.data;
        assert_eq!(span_count(&merged), 3);
        assert_eq!(
            merged.resource_spans.len(),
            2,
            "second answer keeps only the new span"
        );
    }

    #[test]
    fn same_span_id_with_another_kind_is_kept() {
        let merged = merge_answers(&[answer(&[(1, 2)]), answer(&[(1, 3)])]);
        assert_eq!(span_count(&merged.data), 2);
    }

    #[test]
    fn an_undecodable_answer_is_skipped() {
        let merged = merge_answers(&[Bytes::from_static(&[0xff, 0xff]), answer(&[(1, 2)])]);
        assert_eq!(span_count(&merged.data), 1);
        assert_eq!(merged.unreadable, 1);
    }

    #[test]
    fn an_undecodable_record_costs_only_itself_and_the_answer_says_partial() {
        // One replica's answer: a good record, a record whose span name is not UTF-8 (as
        // stored before pushes were validated), another good record.
        use crate::otlp::test_bytes;
        let bad_record = test_bytes::request_of(&[test_bytes::span_with_non_utf8_name(1, 9)]);
        let replica: Vec<u8> = [
            answer(&[(1, 2)]).to_vec(),
            bad_record,
            answer(&[(2, 2)]).to_vec(),
        ]
        .concat();
        let merged = merge_answers(&[replica.into(), answer(&[(3, 2)])]);
        assert_eq!(span_count(&merged.data), 3);
        assert_eq!(merged.unreadable, 1);
        let v2 = tempo_v2_json(&merged);
        assert_eq!(v2["status"], "PARTIAL");
        assert!(v2["message"]
            .as_str()
            .is_some_and(|m| m.contains("1 stored record")));
    }

    #[test]
    fn tempo_json_has_top_level_batches_with_hex_ids() {
        let merged = merge_answers(&[answer(&[(0xab, 2)])]);
        let json = tempo_v1_json(&merged.data);
        let span = &json["batches"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(span["spanId"], "abababababababab");
        assert_eq!(span["traceId"], "01010101010101010101010101010101");
        assert_eq!(span["name"], "span-171");
        let v2 = tempo_v2_json(&merged);
        assert!(v2["trace"]["resourceSpans"].is_array());
        assert_eq!(v2["status"], "COMPLETE");
    }
}

//! Merging the replicas' answers: decode each answer, drop duplicate spans (same span ID
//! and kind), drop scopes and resources left empty.

use std::collections::HashSet;

use bytes::Bytes;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, TracesData};
use prost::Message;

/// Merges encoded `TracesData` answers. An answer that does not decode is skipped with a
/// warning (the other replicas usually hold the same spans).
pub fn merge_answers(answers: &[Bytes]) -> TracesData {
    let mut seen: HashSet<(Vec<u8>, i32)> = HashSet::new();
    let mut out: Vec<ResourceSpans> = Vec::new();
    for answer in answers {
        let data = match TracesData::decode(answer.clone()) {
            Ok(d) => d,
            Err(e) => {
                metrics::counter!("ringtail_querier_undecodable_answers_total").increment(1);
                tracing::warn!(error = %e, "skipping an undecodable trace answer");
                continue;
            }
        };
        for mut rs in data.resource_spans {
            for ss in &mut rs.scope_spans {
                ss.spans
                    .retain(|span| seen.insert((span.span_id.clone(), span.kind)));
            }
            rs.scope_spans.retain(|ss| !ss.spans.is_empty());
            if !rs.scope_spans.is_empty() {
                out.push(rs);
            }
        }
    }
    TracesData {
        resource_spans: out,
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
pub fn tempo_v1_json(data: &TracesData) -> serde_json::Value {
    serde_json::json!({ "batches": data.resource_spans })
}

/// Tempo's `/api/v2/traces/{id}` JSON: `{"trace": {"resourceSpans": [...]}, "status": ...}`.
pub fn tempo_v2_json(data: &TracesData) -> serde_json::Value {
    serde_json::json!({ "trace": { "resourceSpans": data.resource_spans }, "status": "COMPLETE" })
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
        assert_eq!(span_count(&merged), 2);
    }

    #[test]
    fn an_undecodable_answer_is_skipped() {
        let merged = merge_answers(&[Bytes::from_static(&[0xff, 0xff]), answer(&[(1, 2)])]);
        assert_eq!(span_count(&merged), 1);
    }

    #[test]
    fn tempo_json_has_top_level_batches_with_hex_ids() {
        let merged = merge_answers(&[answer(&[(0xab, 2)])]);
        let json = tempo_v1_json(&merged);
        let span = &json["batches"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(span["spanId"], "abababababababab");
        assert_eq!(span["traceId"], "01010101010101010101010101010101");
        assert_eq!(span["name"], "span-171");
        let v2 = tempo_v2_json(&merged);
        assert!(v2["trace"]["resourceSpans"].is_array());
    }
}

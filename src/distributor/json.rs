//! OTLP/JSON → protobuf, accepting what the OpenTelemetry Collector accepts.
//!
//! `opentelemetry-proto`'s serde mapping handles hex IDs and camelCase but rejects enum
//! names as strings (`"kind": "SPAN_KIND_SERVER"`), which OTLP/JSON senders may use; they
//! are rewritten to their numbers first.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::Value;

use super::PushError;

const SPAN_KINDS: [&str; 6] = [
    "SPAN_KIND_UNSPECIFIED",
    "SPAN_KIND_INTERNAL",
    "SPAN_KIND_SERVER",
    "SPAN_KIND_CLIENT",
    "SPAN_KIND_PRODUCER",
    "SPAN_KIND_CONSUMER",
];
const STATUS_CODES: [&str; 3] = ["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"];

fn enum_to_number(v: &mut Value, names: &[&str]) {
    if let Value::String(s) = v {
        if let Some(i) = names.iter().position(|n| n == s) {
            *v = Value::from(i);
        }
    }
}

fn normalize(root: &mut Value) {
    let Some(resources) = root.get_mut("resourceSpans").and_then(Value::as_array_mut) else {
        return;
    };
    for rs in resources {
        let Some(scopes) = rs.get_mut("scopeSpans").and_then(Value::as_array_mut) else {
            continue;
        };
        for ss in scopes {
            let Some(spans) = ss.get_mut("spans").and_then(Value::as_array_mut) else {
                continue;
            };
            for span in spans {
                if let Some(kind) = span.get_mut("kind") {
                    enum_to_number(kind, &SPAN_KINDS);
                }
                if let Some(code) = span.get_mut("status").and_then(|s| s.get_mut("code")) {
                    enum_to_number(code, &STATUS_CODES);
                }
            }
        }
    }
}

/// Parses an OTLP/JSON `ExportTraceServiceRequest` and encodes it as protobuf.
pub fn to_protobuf(body: &[u8]) -> Result<Vec<u8>, PushError> {
    let mut value: Value =
        serde_json::from_slice(body).map_err(|e| PushError::MalformedJson(e.to_string()))?;
    normalize(&mut value);
    let request: ExportTraceServiceRequest =
        serde_json::from_value(value).map_err(|e| PushError::MalformedJson(e.to_string()))?;
    Ok(request.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::split_by_trace;

    #[test]
    fn json_with_hex_ids_and_enum_names_becomes_protobuf() {
        let body = br#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"svc"}}]},
            "scopeSpans":[{"scope":{"name":"s"},"spans":[{"traceId":"5b8efff798038103d269b633813fc60c",
            "spanId":"eee19b7ec3c1b174","name":"op","kind":"SPAN_KIND_SERVER","startTimeUnixNano":"1",
            "endTimeUnixNano":"2","status":{"code":"STATUS_CODE_ERROR"}}]}]}]}"#;
        let proto = to_protobuf(body).expect("valid");
        let split = split_by_trace(&proto).expect("valid");
        assert_eq!(split.accepted_spans, 1);
        assert_eq!(
            split.traces[0].trace_id.to_hex(),
            "5b8efff798038103d269b633813fc60c"
        );
    }

    #[test]
    fn malformed_json_is_a_clear_error() {
        let err = to_protobuf(b"{\"resourceSpans\": [").expect_err("malformed");
        assert!(matches!(err, PushError::MalformedJson(_)));
    }
}

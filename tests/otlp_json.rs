//! OTLP/HTTP with JSON bodies, against real processes: the forms the proto3 JSON mapping
//! allows (and the Collector and SDKs send) are accepted and read back as sent; a bad
//! value is a 400 whose google.rpc.Status names the field.

mod common;

use std::time::Duration;

use common::{wait_until, Cluster};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Val;
use opentelemetry_proto::tonic::trace::v1::{Span, TracesData};
use prost::Message;

const TRACE: &str = "6a1b2c3d4e5f60718293a4b5c6d7e8f9";

async fn post_json(cluster: &Cluster, body: String) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/traces", cluster.front.otlp_http()))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("post");
    let status = r.status().as_u16();
    assert_eq!(r.headers()["content-type"], "application/json");
    (status, r.json().await.expect("a JSON body"))
}

/// The trace as the querier returns it in protobuf (`None` while it is not found).
async fn read_trace(cluster: &Cluster, trace: &str) -> Option<TracesData> {
    let r = reqwest::Client::new()
        .get(format!("{}/api/traces/{trace}", cluster.front.http()))
        .header("accept", "application/protobuf")
        .send()
        .await
        .ok()?;
    if r.status() != 200 {
        return None;
    }
    TracesData::decode(r.bytes().await.ok()?).ok()
}

fn only_span(data: &TracesData) -> &Span {
    &data.resource_spans[0].scope_spans[0].spans[0]
}

fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a Val> {
    let kv = span.attributes.iter().find(|kv| kv.key == key)?;
    kv.value.as_ref()?.value.as_ref()
}

/// Proto field names, 32-bit ints as strings, 64-bit ints as numbers, enum names, NaN and
/// Infinity doubles, nulls and an unknown field.
fn body_in_the_other_forms() -> String {
    format!(
        r#"{{"resource_spans":[{{"resource":{{"attributes":[{{"key":"service.name",
            "value":{{"string_value":"json-forms"}}}}],"dropped_attributes_count":"0"}},
          "scope_spans":[{{"scope":{{"name":"s"}},"schema_url":null,"spans":[{{
            "trace_id":"{TRACE}","span_id":"00f067aa0ba902b7","parent_span_id":"",
            "name":"checkout","kind":"SPAN_KIND_SERVER","flags":"257",
            "start_time_unix_nano":1700000000000000000,"end_time_unix_nano":"1700000000001000000",
            "dropped_attributes_count":"2","links":null,"not_in_the_proto":{{"x":1}},
            "attributes":[{{"key":"retries","value":{{"int_value":"3"}}}},
              {{"key":"ratio.nan","value":{{"double_value":"NaN"}}}},
              {{"key":"ratio.inf","value":{{"doubleValue":"Infinity"}}}}],
            "events":[{{"time_unix_nano":"1700000000000500000","name":"retry",
              "dropped_attributes_count":"1"}}],
            "status":{{"code":"STATUS_CODE_ERROR","message":"card declined"}}}}]}}]}}]}}"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn json_in_the_other_proto3_forms_is_accepted_and_a_bad_value_is_refused_by_name() {
    let cluster = Cluster::start(61, 3, &[]).await;

    let (status, body) = post_json(&cluster, body_in_the_other_forms()).await;
    assert_eq!(status, 200, "{body}");
    let c = &cluster;
    wait_until(
        "the JSON trace readable",
        Duration::from_secs(10),
        || async { read_trace(c, TRACE).await.is_some() },
    )
    .await;
    let data = read_trace(&cluster, TRACE).await.expect("trace");
    let span = only_span(&data);
    assert_eq!(span.name, "checkout");
    assert_eq!(hex::encode(&span.trace_id), TRACE);
    assert_eq!(span.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!((span.flags, span.dropped_attributes_count), (257, 2));
    assert_eq!(span.start_time_unix_nano, 1_700_000_000_000_000_000);
    assert_eq!(span.end_time_unix_nano, 1_700_000_000_001_000_000);
    let status = span.status.as_ref().expect("status");
    assert_eq!((status.code, status.message.as_str()), (2, "card declined"));
    assert_eq!(span.events[0].dropped_attributes_count, 1);
    assert_eq!(attribute(span, "retries"), Some(&Val::IntValue(3)));
    assert!(
        matches!(attribute(span, "ratio.nan"), Some(Val::DoubleValue(d)) if d.is_nan()),
        "{span:?}"
    );
    assert_eq!(
        attribute(span, "ratio.inf"),
        Some(&Val::DoubleValue(f64::INFINITY))
    );

    // A bad value: 400, a JSON google.rpc.Status (INVALID_ARGUMENT) naming the field.
    let bad = body_in_the_other_forms().replace("SPAN_KIND_SERVER", "SPAN_KIND_NOPE");
    let (status, body) = post_json(&cluster, bad).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], tonic::Code::InvalidArgument as i32, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("resource_spans[0].scope_spans[0].spans[0].kind")
            && message.contains("SPAN_KIND_NOPE"),
        "{message}"
    );
}

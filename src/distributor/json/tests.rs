//! One test per rule of the proto3 JSON mapping (and OTLP's), plus the errors.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Val;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, KeyValueList};
use opentelemetry_proto::tonic::trace::v1::span::Event;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use super::to_protobuf;
use crate::distributor::PushError;
use crate::otlp::split_by_trace;

const TRACE: &str = "5b8efff798038103d269b633813fc60c";

fn request_with_span(span: &str) -> String {
    format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{span}]}}]}}]}}"#)
}

fn request_with_attribute(value: &str) -> String {
    request_with_span(&format!(
        r#"{{"attributes":[{{"key":"a","value":{value}}}]}}"#
    ))
}

fn decode(body: &str) -> ExportTraceServiceRequest {
    let proto = to_protobuf(body.as_bytes()).unwrap_or_else(|e| panic!("{e}\nbody: {body}"));
    ExportTraceServiceRequest::decode(&proto[..]).expect("valid protobuf")
}

fn only_span(request: &ExportTraceServiceRequest) -> &Span {
    &request.resource_spans[0].scope_spans[0].spans[0]
}

fn attribute(value: &str) -> Option<Val> {
    let request = decode(&request_with_attribute(value));
    only_span(&request).attributes[0]
        .value
        .as_ref()
        .and_then(|v| v.value.clone())
}

fn double(value: &str) -> f64 {
    match attribute(&format!(r#"{{"doubleValue":{value}}}"#)) {
        Some(Val::DoubleValue(d)) => d,
        other => panic!("{value}: {other:?}"),
    }
}

fn error_of(body: &str) -> String {
    match to_protobuf(body.as_bytes()) {
        Err(PushError::MalformedJson(message)) => message,
        other => panic!("expected MalformedJson for {body}, got {other:?}"),
    }
}

fn string(s: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(Val::StringValue(s.into())),
    })
}

fn int(i: i64) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(Val::IntValue(i)),
    })
}

#[test]
fn json_with_hex_ids_and_enum_names_becomes_protobuf() {
    let body = br#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"svc"}}]},
        "scopeSpans":[{"scope":{"name":"s"},"spans":[{"traceId":"5b8efff798038103d269b633813fc60c",
        "spanId":"eee19b7ec3c1b174","name":"op","kind":"SPAN_KIND_SERVER","startTimeUnixNano":"1",
        "endTimeUnixNano":"2","status":{"code":"STATUS_CODE_ERROR"}}]}]}]}"#;
    let proto = to_protobuf(body).expect("valid");
    let split = split_by_trace(&proto).expect("valid");
    assert_eq!(split.accepted_spans, 1);
    assert_eq!(split.traces[0].trace_id.to_hex(), TRACE);
}

#[test]
fn malformed_json_is_a_clear_error() {
    let err = to_protobuf(b"{\"resourceSpans\": [").expect_err("malformed");
    assert!(matches!(err, PushError::MalformedJson(_)));
}

#[test]
fn enums_are_accepted_as_names_numbers_and_numeric_strings() {
    for (kind, code, want_kind, want_code) in [
        (r#""SPAN_KIND_CLIENT""#, r#""STATUS_CODE_OK""#, 3, 1),
        ("4", "2", 4, 2),
        (r#""5""#, r#""1""#, 5, 1),
        // proto3 enums are open: a number without a name is kept as it is.
        ("9", r#""7""#, 9, 7),
    ] {
        let span = format!(r#"{{"kind":{kind},"status":{{"code":{code}}}}}"#);
        let request = decode(&request_with_span(&span));
        let span = only_span(&request);
        assert_eq!(span.kind, want_kind, "{kind}");
        assert_eq!(
            span.status.as_ref().map(|s| s.code),
            Some(want_code),
            "{code}"
        );
    }
}

#[test]
fn thirty_two_bit_integers_are_accepted_as_numbers_and_strings() {
    let body = r#"{"resourceSpans":[{"resource":{"droppedAttributesCount":"1"},
        "scopeSpans":[{"scope":{"name":"s","droppedAttributesCount":"2"},
        "spans":[{"droppedAttributesCount":"3","droppedEventsCount":4.0,"droppedLinksCount":"5",
          "flags":"257","events":[{"droppedAttributesCount":"6"}],
          "links":[{"droppedAttributesCount":"7","flags":"1e2"}]}]}]}]}"#;
    let request = decode(body);
    let rs = &request.resource_spans[0];
    assert_eq!(
        rs.resource.as_ref().map(|r| r.dropped_attributes_count),
        Some(1)
    );
    let scope = rs.scope_spans[0].scope.as_ref().expect("scope");
    assert_eq!(scope.dropped_attributes_count, 2);
    let span = only_span(&request);
    assert_eq!(
        (
            span.dropped_attributes_count,
            span.dropped_events_count,
            span.dropped_links_count,
            span.flags
        ),
        (3, 4, 5, 257)
    );
    assert_eq!(span.events[0].dropped_attributes_count, 6);
    assert_eq!(
        (span.links[0].dropped_attributes_count, span.links[0].flags),
        (7, 100)
    );
}

#[test]
fn sixty_four_bit_integers_are_accepted_as_strings_and_numbers() {
    let span = r#"{"startTimeUnixNano":1700000000000000000,"endTimeUnixNano":"1.7e18",
        "events":[{"timeUnixNano":"18446744073709551615"},{"timeUnixNano":1e3}],
        "attributes":[{"key":"a","value":{"intValue":42}},{"key":"b","value":{"intValue":"-42"}},
          {"key":"c","value":{"intValue":"9223372036854775807"}},
          {"key":"d","value":{"intValue":-9223372036854775808}},{"key":"e","value":{"intValue":"1e3"}}]}"#;
    let request = decode(&request_with_span(span));
    let span = only_span(&request);
    assert_eq!(span.start_time_unix_nano, 1_700_000_000_000_000_000);
    assert_eq!(span.end_time_unix_nano, 1_700_000_000_000_000_000);
    let times: Vec<u64> = span.events.iter().map(|e| e.time_unix_nano).collect();
    assert_eq!(times, [u64::MAX, 1000]);
    let ints: Vec<Option<AnyValue>> = span.attributes.iter().map(|a| a.value.clone()).collect();
    assert_eq!(
        ints,
        [int(42), int(-42), int(i64::MAX), int(i64::MIN), int(1000)]
    );
}

#[test]
fn doubles_are_accepted_as_numbers_and_strings_including_nan_and_infinities() {
    assert_eq!(double("1.5"), 1.5);
    assert_eq!(double("3"), 3.0);
    assert_eq!(double(r#""2.5""#), 2.5);
    assert_eq!(double(r#""-1e3""#), -1000.0);
    assert!(double(r#""NaN""#).is_nan());
    assert_eq!(double(r#""Infinity""#), f64::INFINITY);
    assert_eq!(double(r#""-Infinity""#), f64::NEG_INFINITY);
}

#[test]
fn proto_field_names_are_accepted_like_camel_case_and_unknown_fields_are_ignored() {
    let camel = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"k","value":{"stringValue":"v"}}],
        "droppedAttributesCount":1},"schemaUrl":"u","scopeSpans":[{"scope":{"name":"s"},"schemaUrl":"v",
        "spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
        "parentSpanId":"0102030405060708","traceState":"t","startTimeUnixNano":"1","endTimeUnixNano":"2",
        "droppedAttributesCount":3,"droppedEventsCount":4,"droppedLinksCount":5,
        "events":[{"timeUnixNano":"3","attributes":[{"key":"e","value":{"intValue":"1"}}]}],
        "links":[{"traceId":"5b8efff798038103d269b633813fc60d","spanId":"eee19b7ec3c1b175",
          "attributes":[{"key":"l","value":{"kvlistValue":{"values":[{"key":"x","value":{"boolValue":true}}]}}}]}],
        "attributes":[{"key":"a","value":{"arrayValue":{"values":[{"doubleValue":1.5},{"bytesValue":"aGk="}]}}}],
        "status":{"code":2}}]}]}]}"#;
    let snake = r#"{"unknown_top":[1,{"a":null}],"resource_spans":[{"resource":{"attributes":[{"key":"k",
        "value":{"string_value":"v","unknown":"x"}}],"dropped_attributes_count":1,"unknownField":{}},
        "schema_url":"u","scope_spans":[{"scope":{"name":"s"},"schema_url":"v",
        "spans":[{"trace_id":"5b8efff798038103d269b633813fc60c","span_id":"eee19b7ec3c1b174",
        "parent_span_id":"0102030405060708","trace_state":"t","start_time_unix_nano":"1",
        "end_time_unix_nano":"2","dropped_attributes_count":3,"dropped_events_count":4,
        "dropped_links_count":5,"someday_field":7,
        "events":[{"time_unix_nano":"3","attributes":[{"key":"e","value":{"int_value":"1"}}]}],
        "links":[{"trace_id":"5b8efff798038103d269b633813fc60d","span_id":"eee19b7ec3c1b175",
          "attributes":[{"key":"l","value":{"kvlist_value":{"values":[{"key":"x","value":{"bool_value":true}}]}}}]}],
        "attributes":[{"key":"a","value":{"array_value":{"values":[{"double_value":1.5},{"bytes_value":"aGk="}]}}}],
        "status":{"code":2,"deprecated_code":1}}]}]}]}"#;
    let expected = to_protobuf(camel.as_bytes()).expect("camelCase");
    assert_eq!(only_span(&decode(camel)).links.len(), 1);
    assert_eq!(
        to_protobuf(snake.as_bytes()).expect("proto names"),
        expected
    );
}

#[test]
fn null_fields_take_their_default_values_and_empty_ids_are_empty() {
    let span = r#"{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"","parentSpanId":null,
        "traceState":null,"name":null,"kind":null,"flags":null,"startTimeUnixNano":null,
        "endTimeUnixNano":null,"droppedAttributesCount":null,"droppedEventsCount":null,
        "droppedLinksCount":null,"links":null,"status":null,
        "events":[{"timeUnixNano":null,"name":"e","attributes":null,"droppedAttributesCount":null}],
        "attributes":[{"key":"a","value":null},{"key":null,"value":{"stringValue":null}}]}"#;
    let body = format!(
        r#"{{"resourceSpans":[{{"resource":null,"schemaUrl":null,"scopeSpans":[{{"scope":null,
        "schemaUrl":null,"spans":[{span}]}}]}},{{"scopeSpans":null}}]}}"#
    );
    let request = decode(&body);
    let expected = Span {
        trace_id: hex::decode(TRACE).expect("hex"),
        events: vec![Event {
            name: "e".into(),
            ..Default::default()
        }],
        attributes: vec![
            KeyValue {
                key: "a".into(),
                ..Default::default()
            },
            KeyValue {
                value: Some(AnyValue::default()),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    assert_eq!(only_span(&request), &expected);
    assert_eq!(request.resource_spans[0].resource, None);
    assert!(request.resource_spans[1].scope_spans.is_empty());
    assert_eq!(decode(r#"{"resourceSpans":null}"#), Default::default());
}

#[test]
fn attributes_at_every_level_and_nested_values_follow_the_same_rules() {
    let nested = r#"{"arrayValue":{"values":[{"intValue":5},{"double_value":"NaN"},
        {"kvlistValue":{"values":[{"key":"k","value":{"int_value":"7"}},
          {"key":"b","value":{"bytesValue":"aGk"}}]}},{"array_value":{"values":null}}]}}"#;
    let body = format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"r","value":{{"int_value":"1"}}}}]}},
        "scopeSpans":[{{"scope":{{"attributes":[{{"key":"s","value":{{"doubleValue":"Infinity"}}}}]}},
        "spans":[{{"attributes":[{{"key":"n","value":{nested}}}],
          "events":[{{"attributes":[{{"key":"e","value":{{"intValue":"2"}}}}]}}],
          "links":[{{"attributes":[{{"key":"l","value":{{"string_value":"x"}}}}]}}]}}]}}]}}]}}"#
    );
    let request = decode(&body);
    let rs = &request.resource_spans[0];
    let resource = rs.resource.as_ref().expect("resource");
    assert_eq!(resource.attributes[0].value, int(1));
    let scope = rs.scope_spans[0].scope.as_ref().expect("scope");
    assert_eq!(
        scope.attributes[0]
            .value
            .as_ref()
            .and_then(|v| v.value.clone()),
        Some(Val::DoubleValue(f64::INFINITY))
    );
    let span = only_span(&request);
    assert_eq!(span.events[0].attributes[0].value, int(2));
    assert_eq!(span.links[0].attributes[0].value, string("x"));
    let Some(Val::ArrayValue(ArrayValue { values })) = span.attributes[0]
        .value
        .as_ref()
        .and_then(|v| v.value.clone())
    else {
        panic!("not an array: {:?}", span.attributes[0]);
    };
    assert_eq!(
        values[0],
        AnyValue {
            value: Some(Val::IntValue(5))
        }
    );
    assert!(matches!(values[1].value, Some(Val::DoubleValue(d)) if d.is_nan()));
    let kvlist = KeyValueList {
        values: vec![
            KeyValue {
                key: "k".into(),
                value: int(7),
                ..Default::default()
            },
            KeyValue {
                key: "b".into(),
                value: Some(AnyValue {
                    value: Some(Val::BytesValue(b"hi".to_vec())),
                }),
                ..Default::default()
            },
        ],
    };
    assert_eq!(values[2].value, Some(Val::KvlistValue(kvlist)));
    assert_eq!(
        values[3].value,
        Some(Val::ArrayValue(ArrayValue::default()))
    );
}

#[test]
fn bytes_values_are_accepted_in_standard_and_url_safe_base64_with_or_without_padding() {
    for encoded in ["+/8=", "+/8", "-_8=", "-_8"] {
        let value = attribute(&format!(r#"{{"bytesValue":"{encoded}"}}"#));
        assert_eq!(value, Some(Val::BytesValue(vec![0xfb, 0xff])), "{encoded}");
    }
}

#[test]
fn an_unknown_enum_name_is_an_error_naming_the_field() {
    let message = error_of(&request_with_span(r#"{"kind":"SPAN_KIND_NOPE"}"#));
    assert!(
        message.starts_with("resourceSpans[0].scopeSpans[0].spans[0].kind: "),
        "{message}"
    );
    assert!(message.contains("SPAN_KIND_NOPE"), "{message}");
    let message = error_of(&request_with_span(r#"{"status":{"code":"ERROR"}}"#));
    assert!(
        message.starts_with("resourceSpans[0].scopeSpans[0].spans[0].status.code: "),
        "{message}"
    );
}

#[test]
fn a_bad_value_is_an_error_naming_the_field() {
    for (span, field) in [
        (
            r#"{"droppedAttributesCount":"x"}"#,
            "droppedAttributesCount",
        ),
        (
            r#"{"droppedAttributesCount":"-1"}"#,
            "droppedAttributesCount",
        ),
        (
            r#"{"droppedAttributesCount":4294967296}"#,
            "droppedAttributesCount",
        ),
        (
            r#"{"droppedAttributesCount":1.5}"#,
            "droppedAttributesCount",
        ),
        (r#"{"droppedAttributesCount":""}"#, "droppedAttributesCount"),
        (r#"{"dropped_events_count":[]}"#, "dropped_events_count"),
        (r#"{"flags":true}"#, "flags"),
        (r#"{"startTimeUnixNano":"-1"}"#, "startTimeUnixNano"),
        (r#"{"end_time_unix_nano":" 1"}"#, "end_time_unix_nano"),
        (r#"{"trace_id":"not hex"}"#, "trace_id"),
        (r#"{"spanId":7}"#, "spanId"),
        (r#"{"name":5}"#, "name"),
        (r#"{"attributes":{}}"#, "attributes"),
        (r#"{"attributes":[null]}"#, "attributes[0]"),
        (
            r#"{"attributes":[{"key":"k","value":"v"}]}"#,
            "attributes[0].value",
        ),
        (
            r#"{"events":[{"attributes":[{"key":"k","value":{"doubleValue":"nan"}}]}]}"#,
            "events[0].attributes[0].value.doubleValue",
        ),
        (
            r#"{"attributes":[{"key":"k","value":{"doubleValue":"1e400"}}]}"#,
            "attributes[0].value.doubleValue",
        ),
        (
            r#"{"attributes":[{"key":"k","value":{"intValue":"9223372036854775808"}}]}"#,
            "attributes[0].value.intValue",
        ),
        (
            r#"{"attributes":[{"key":"k","value":{"boolValue":"true"}}]}"#,
            "attributes[0].value.boolValue",
        ),
        (
            r#"{"attributes":[{"key":"k","value":{"bytesValue":"not base64!"}}]}"#,
            "attributes[0].value.bytesValue",
        ),
        (
            r#"{"attributes":[{"key":"k","value":{"stringValue":"a","intValue":1}}]}"#,
            "attributes[0].value",
        ),
        (
            r#"{"links":[{"attributes":[{"key":"k","value":{"arrayValue":{"values":[{"intValue":"x"}]}}}]}]}"#,
            "links[0].attributes[0].value.arrayValue.values[0].intValue",
        ),
        (r#"{"links":[{"flags":"0x1"}]}"#, "links[0].flags"),
        (r#"{"status":"ok"}"#, "status"),
    ] {
        let message = error_of(&request_with_span(span));
        let path = format!("resourceSpans[0].scopeSpans[0].spans[0].{field}: ");
        assert!(message.starts_with(&path), "{span}: {message}");
    }
    let message = error_of(&request_with_span("7"));
    assert!(
        message.starts_with("resourceSpans[0].scopeSpans[0].spans[0]: "),
        "{message}"
    );
    let message = error_of(r#"{"resourceSpans":{}}"#);
    assert!(message.starts_with("resourceSpans: "), "{message}");
    assert!(!error_of("[]").is_empty());
}

//! Property tests: generated requests, serialized by the crate's serde and re-expressed
//! in the other forms the proto3 JSON mapping allows, convert to exactly the protobuf
//! bytes of the original; a corrupted field is reported by its path; nothing panics.

use base64::Engine;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Val;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Map, Value};

use super::to_protobuf;
use crate::distributor::PushError;

/// Doubles a JSON number cannot carry. The generator writes these finite stand-ins; the
/// re-expression turns them into their proto3 JSON strings and `with_non_finite` into
/// the real values the converter must produce.
const NON_FINITE: [(f64, &str, f64); 3] = [
    (1.25e-300, "NaN", f64::NAN),
    (2.5e-300, "Infinity", f64::INFINITY),
    (5.0e-300, "-Infinity", f64::NEG_INFINITY),
];

fn bytes(rng: &mut StdRng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.random()).collect()
}

fn text(rng: &mut StdRng) -> String {
    const WORDS: [&str; 6] = ["", "a", "checkout", "é漢", "with \"quotes\"", "x y"];
    WORDS[rng.random_range(0..WORDS.len())].to_owned()
}

fn int(rng: &mut StdRng) -> i64 {
    [0, -1, i64::MIN, i64::MAX, rng.random()][rng.random_range(0..5)]
}

fn double(rng: &mut StdRng) -> f64 {
    match rng.random_range(0..6) {
        0 => NON_FINITE[rng.random_range(0..3)].0,
        1 => f64::from(rng.random_range(-1000..1000)),
        2 => -0.0,
        _ => (rng.random::<f64>() - 0.5) * 10f64.powi(rng.random_range(-20..20)),
    }
}

fn any_value(rng: &mut StdRng, depth: u32) -> AnyValue {
    let pick = rng.random_range(0..if depth < 2 { 9 } else { 7 });
    let value = match pick {
        0 => None,
        1 => Some(Val::StringValue(text(rng))),
        2 => Some(Val::BoolValue(rng.random())),
        3 => Some(Val::IntValue(int(rng))),
        4 => Some(Val::DoubleValue(double(rng))),
        5 | 6 => Some(Val::BytesValue({
            let len = rng.random_range(0..6);
            bytes(rng, len)
        })),
        7 => Some(Val::ArrayValue(ArrayValue {
            values: (0..rng.random_range(0..4))
                .map(|_| any_value(rng, depth + 1))
                .collect(),
        })),
        _ => Some(Val::KvlistValue(KeyValueList {
            values: attributes(rng, depth + 1),
        })),
    };
    AnyValue { value }
}

fn attributes(rng: &mut StdRng, depth: u32) -> Vec<KeyValue> {
    (0..rng.random_range(0..4))
        .map(|_| KeyValue {
            key: text(rng),
            value: rng.random_bool(0.9).then(|| any_value(rng, depth)),
            ..Default::default()
        })
        .collect()
}

fn id(rng: &mut StdRng, len: usize) -> Vec<u8> {
    if rng.random_bool(0.1) {
        Vec::new()
    } else {
        bytes(rng, len)
    }
}

fn count(rng: &mut StdRng) -> u32 {
    [0, 1, u32::MAX, rng.random()][rng.random_range(0..4)]
}

fn time(rng: &mut StdRng) -> u64 {
    [0, u64::MAX, 1_700_000_000_000_000_000, rng.random()][rng.random_range(0..4)]
}

fn span(rng: &mut StdRng) -> Span {
    Span {
        trace_id: id(rng, 16),
        span_id: id(rng, 8),
        trace_state: text(rng),
        parent_span_id: id(rng, 8),
        flags: count(rng),
        name: text(rng),
        kind: rng.random_range(-1..8),
        start_time_unix_nano: time(rng),
        end_time_unix_nano: time(rng),
        attributes: attributes(rng, 0),
        dropped_attributes_count: count(rng),
        events: (0..rng.random_range(0..3))
            .map(|_| Event {
                time_unix_nano: time(rng),
                name: text(rng),
                attributes: attributes(rng, 0),
                dropped_attributes_count: count(rng),
            })
            .collect(),
        dropped_events_count: count(rng),
        links: (0..rng.random_range(0..3))
            .map(|_| Link {
                trace_id: id(rng, 16),
                span_id: id(rng, 8),
                trace_state: text(rng),
                attributes: attributes(rng, 0),
                dropped_attributes_count: count(rng),
                flags: count(rng),
            })
            .collect(),
        dropped_links_count: count(rng),
        status: rng.random_bool(0.7).then(|| Status {
            message: text(rng),
            code: rng.random_range(0..4),
        }),
    }
}

fn resource(rng: &mut StdRng) -> Resource {
    Resource {
        attributes: attributes(rng, 0),
        dropped_attributes_count: count(rng),
        entity_refs: (0..rng.random_range(0..2))
            .map(|_| EntityRef {
                schema_url: text(rng),
                r#type: text(rng),
                id_keys: vec![text(rng)],
                description_keys: (0..rng.random_range(0..3)).map(|_| text(rng)).collect(),
            })
            .collect(),
    }
}

fn request(rng: &mut StdRng) -> ExportTraceServiceRequest {
    let resource_spans = (0..rng.random_range(0..3))
        .map(|_| ResourceSpans {
            resource: rng.random_bool(0.8).then(|| resource(rng)),
            scope_spans: (0..rng.random_range(0..3))
                .map(|_| ScopeSpans {
                    scope: rng.random_bool(0.8).then(|| InstrumentationScope {
                        name: text(rng),
                        version: text(rng),
                        attributes: attributes(rng, 0),
                        dropped_attributes_count: count(rng),
                    }),
                    spans: (0..rng.random_range(0..4)).map(|_| span(rng)).collect(),
                    schema_url: text(rng),
                })
                .collect(),
            schema_url: text(rng),
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

fn visit(value: &mut AnyValue, f: &mut impl FnMut(&mut AnyValue)) {
    match &mut value.value {
        Some(Val::ArrayValue(array)) => array.values.iter_mut().for_each(|v| visit(v, f)),
        Some(Val::KvlistValue(list)) => for_each_any_value(&mut list.values, f),
        _ => {}
    }
    f(value);
}

fn for_each_any_value(attributes: &mut [KeyValue], f: &mut impl FnMut(&mut AnyValue)) {
    for value in attributes.iter_mut().filter_map(|kv| kv.value.as_mut()) {
        visit(value, f);
    }
}

/// `request` with the stand-ins of [`NON_FINITE`] replaced by NaN and the infinities.
fn with_non_finite(mut request: ExportTraceServiceRequest) -> ExportTraceServiceRequest {
    let mut fix = |value: &mut AnyValue| {
        if let Some(Val::DoubleValue(d)) = &mut value.value {
            if let Some((_, _, real)) = NON_FINITE.iter().find(|(stand_in, ..)| stand_in == d) {
                *d = *real;
            }
        }
    };
    for rs in &mut request.resource_spans {
        if let Some(r) = &mut rs.resource {
            for_each_any_value(&mut r.attributes, &mut fix);
        }
        for ss in &mut rs.scope_spans {
            if let Some(s) = &mut ss.scope {
                for_each_any_value(&mut s.attributes, &mut fix);
            }
            for span in &mut ss.spans {
                for_each_any_value(&mut span.attributes, &mut fix);
                for e in &mut span.events {
                    for_each_any_value(&mut e.attributes, &mut fix);
                }
                for l in &mut span.links {
                    for_each_any_value(&mut l.attributes, &mut fix);
                }
            }
        }
    }
    request
}

fn snake_case(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

const ONEOF_MEMBERS: [&str; 7] = [
    "stringValue",
    "boolValue",
    "intValue",
    "doubleValue",
    "bytesValue",
    "arrayValue",
    "kvlistValue",
];

/// Another legal spelling of the scalar `value` of field `key` (or `value` itself).
fn re_express_scalar(rng: &mut StdRng, key: &str, value: Value) -> Value {
    let pick = rng.random_range(0..3);
    match (key, value) {
        ("doubleValue", Value::Number(n)) => {
            let d = n.as_f64().unwrap_or_default();
            match NON_FINITE.iter().find(|(stand_in, ..)| *stand_in == d) {
                Some((_, name, _)) => Value::from(*name),
                None if pick == 0 => Value::from(format!("{d}")),
                None if pick == 1 => Value::from(format!("{d:e}")),
                None => Value::Number(n),
            }
        }
        ("kind" | "code", Value::Number(n)) => {
            let number = n.as_i64().and_then(|n| i32::try_from(n).ok()).unwrap_or(-1);
            let name = match key {
                "kind" => SpanKind::try_from(number).map(|k| k.as_str_name()),
                _ => StatusCode::try_from(number).map(|c| c.as_str_name()),
            };
            match (pick, name) {
                (0, Ok(name)) => Value::from(name),
                (1, _) => Value::from(number.to_string()),
                _ => Value::Number(n),
            }
        }
        (
            "flags" | "droppedAttributesCount" | "droppedEventsCount" | "droppedLinksCount",
            Value::Number(n),
        ) => match (pick, n.as_u64()) {
            (0, Some(u)) => Value::from(u.to_string()),
            (1, Some(u)) => Value::from(u as f64),
            _ => Value::Number(n),
        },
        ("startTimeUnixNano" | "endTimeUnixNano" | "timeUnixNano", Value::String(s)) => {
            match (pick, s.parse::<u64>()) {
                (0, Ok(u)) => Value::from(u),
                _ => Value::String(s),
            }
        }
        ("intValue", Value::String(s)) => match (pick, s.parse::<i64>()) {
            (0, Ok(i)) => Value::from(i),
            _ => Value::String(s),
        },
        ("traceId" | "spanId" | "parentSpanId", Value::String(s)) if pick == 0 => {
            Value::from(s.to_uppercase())
        }
        ("bytesValue", Value::String(s)) if pick == 0 => {
            let raw = base64::engine::general_purpose::STANDARD.decode(&s);
            let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            raw.map(|raw| Value::from(url_safe.encode(raw)))
                .unwrap_or(Value::String(s))
        }
        (_, value) => value,
    }
}

fn is_default_scalar(value: &Value) -> bool {
    match value {
        Value::String(s) => s.is_empty() || s == "0",
        Value::Number(n) => n.as_u64() == Some(0),
        Value::Bool(b) => !b,
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// `value` (the crate's serialization) with every field randomly spelled in another legal
/// way: proto names, numbers as strings and strings as numbers, enum names, defaults as
/// `null`, and unknown fields added.
fn re_express(rng: &mut StdRng, value: Value) -> Value {
    match value {
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|v| re_express(rng, v)).collect())
        }
        Value::Object(map) => {
            let mut out = Map::new();
            for (key, value) in map {
                let mut value = match value {
                    Value::Object(_) | Value::Array(_) => re_express(rng, value),
                    scalar => re_express_scalar(rng, &key, scalar),
                };
                let oneof = ONEOF_MEMBERS.contains(&key.as_str());
                if !oneof && !value.is_object() && is_default_scalar(&value) && rng.random_bool(0.5)
                {
                    value = Value::Null;
                }
                let key = if rng.random_bool(0.5) {
                    snake_case(&key)
                } else {
                    key
                };
                out.insert(key, value);
            }
            if rng.random_bool(0.1) {
                out.insert(
                    "notAField".into(),
                    serde_json::json!({"kind": "x", "a": [1]}),
                );
            }
            Value::Object(out)
        }
        scalar => scalar,
    }
}

/// The first line where the two requests, decoded and pretty-printed, differ.
fn first_difference(got: &[u8], want: &[u8]) -> String {
    let show = |bytes: &[u8]| format!("{:#?}", ExportTraceServiceRequest::decode(bytes));
    let (got, want) = (show(got), show(want));
    let mut lines = got.lines().zip(want.lines());
    match lines.find(|(g, w)| g != w) {
        Some((g, w)) => format!("got {}, want {}", g.trim(), w.trim()),
        None => "the bytes differ".to_owned(),
    }
}

#[test]
fn every_legal_spelling_of_a_request_converts_to_the_bytes_of_the_original() {
    let mut rng = StdRng::seed_from_u64(61);
    for round in 0..500 {
        let original = request(&mut rng);
        let json = serde_json::to_value(&original).expect("serializable");
        // The crate's own spelling keeps the stand-ins as numbers.
        let plain = (
            serde_json::to_vec(&json).expect("json"),
            original.encode_to_vec(),
        );
        let re_expressed = (
            serde_json::to_vec(&re_express(&mut rng, json)).expect("json"),
            with_non_finite(original).encode_to_vec(),
        );
        for (body, expected) in [plain, re_expressed] {
            let text = String::from_utf8_lossy(&body);
            match to_protobuf(&body) {
                Ok(proto) => assert!(
                    proto == expected,
                    "round {round}: {} for {text}",
                    first_difference(&proto, &expected)
                ),
                Err(e) => panic!("round {round}: {e}\n{text}"),
            }
        }
    }
}

/// Every node of `value` with its path as the converter names it (`a.b[0].c`).
fn nodes(value: &Value, path: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                let p = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                nodes(v, p, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                nodes(v, format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
    out.push(path);
}

fn node_mut<'a>(value: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    let mut at = value;
    for step in path.split(['.', '[']).filter(|s| !s.is_empty()) {
        at = match step.strip_suffix(']').map(str::parse::<usize>) {
            Some(Ok(i)) => at.get_mut(i)?,
            _ => at.get_mut(step)?,
        };
    }
    Some(at)
}

#[test]
fn a_corrupted_field_is_reported_by_its_path_and_nothing_panics() {
    let bad = [
        serde_json::json!("x"),
        serde_json::json!(-1),
        serde_json::json!(1.5),
        serde_json::json!(1e300),
        serde_json::json!("1e400"),
        serde_json::json!([null]),
        serde_json::json!({"stringValue": 1}),
        serde_json::json!(true),
    ];
    let mut rng = StdRng::seed_from_u64(62);
    let (mut refused, mut accepted) = (0, 0);
    for _ in 0..2000 {
        let mut json = serde_json::to_value(request(&mut rng)).expect("serializable");
        let mut paths = Vec::new();
        nodes(&json, String::new(), &mut paths);
        let path = paths[rng.random_range(0..paths.len())].clone();
        if let Some(node) = node_mut(&mut json, &path) {
            *node = bad[rng.random_range(0..bad.len())].clone();
        }
        let body = serde_json::to_vec(&json).expect("json");
        match to_protobuf(&body) {
            Ok(_) => accepted += 1,
            Err(PushError::MalformedJson(message)) => {
                refused += 1;
                let text = String::from_utf8_lossy(&body);
                assert!(message.contains(&path), "{path} not in {message:?}: {text}");
            }
            Err(e) => panic!("not MalformedJson: {e}"),
        }
        // And the same body cut short or with a byte changed: an error, never a panic.
        let cut = rng.random_range(0..body.len());
        let mut changed = body.clone();
        changed[cut] = rng.random();
        for mangled in [&body[..cut], &changed[..]] {
            if let Err(e) = to_protobuf(mangled) {
                assert!(matches!(e, PushError::MalformedJson(_)), "{e}");
            }
        }
    }
    assert!(
        refused > 500 && accepted > 50,
        "refused {refused}, accepted {accepted}"
    );
}

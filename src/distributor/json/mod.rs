//! OTLP/JSON → protobuf, accepting every form the proto3 JSON mapping allows.
//!
//! The body is parsed into a `serde_json::Value` and converted here, message by message,
//! into `opentelemetry-proto`'s prost types, which are then encoded. Accepted, per the
//! proto3 JSON mapping (<https://protobuf.dev/programming-guides/json/>) and OTLP's rules
//! for OTLP/JSON, at every level (resource, scope, span, event, link, nested values):
//! - field names in lowerCamelCase (`traceId`) or as in the .proto (`trace_id`);
//! - `null` for any field: the field's default;
//! - 32- and 64-bit integers as JSON numbers or strings, in exponent notation too (`1e3`)
//!   if the value is integral;
//! - doubles as numbers or strings, including `"NaN"`, `"Infinity"` and `"-Infinity"`;
//! - enums (`kind`, `status.code`) by name or by number;
//! - trace and span IDs in hex (OTLP; not base64), `bytesValue` in standard or URL-safe
//!   base64 with or without padding;
//! - unknown fields, which are ignored (OTLP/JSON receivers must ignore them).
//!
//! Anything else is `PushError::MalformedJson` naming the field by its path, e.g.
//! `resourceSpans[0].scopeSpans[0].spans[3].kind: expected a SpanKind name or number, got
//! "SPAN_KIND_NOPE"`. An `AnyValue` with two values set is refused, as proto3 parsers
//! refuse two members of a oneof (the parsed object no longer knows which came last).
//!
//! Why not the crate's serde derive: it refuses enum names, 32-bit ints as strings, proto
//! names, most nulls and non-finite doubles, and its errors do not say where. Why not a
//! generic proto3 JSON crate (prost-reflect's `DynamicMessage`, pbjson): they read bytes
//! fields as base64, and a hex ID is valid base64 too, so an ID not rewritten first would
//! be misread silently; prost-reflect also drops unknown enum names once unknown fields
//! are allowed; and `DynamicMessage` would need a second transcode into the prost types.

mod path;
mod scalar;

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
use serde_json::Value;

use self::path::Path;
use self::scalar::{
    base64_bytes, boolean, double, enumeration, fields, hex_id, int32, int64, repeated, string,
    uint32, uint64,
};
use super::PushError;

/// Parses an OTLP/JSON `ExportTraceServiceRequest` and encodes it as protobuf.
pub(super) fn to_protobuf(body: &[u8]) -> Result<Vec<u8>> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| PushError::MalformedJson(e.to_string()))?;
    Ok(request(&value, &Path::Root)?.encode_to_vec())
}

type Result<T> = std::result::Result<T, PushError>;

fn request(value: &Value, path: &Path<'_>) -> Result<ExportTraceServiceRequest> {
    let mut out = ExportTraceServiceRequest::default();
    for (key, value, at) in fields(value, path)? {
        if let "resourceSpans" | "resource_spans" = key {
            out.resource_spans = repeated(value, &at, resource_spans)?;
        }
    }
    Ok(out)
}

fn resource_spans(value: &Value, path: &Path<'_>) -> Result<ResourceSpans> {
    let mut out = ResourceSpans::default();
    for (key, value, at) in fields(value, path)? {
        match key {
            "resource" => out.resource = Some(resource(value, &at)?),
            "scopeSpans" | "scope_spans" => out.scope_spans = repeated(value, &at, scope_spans)?,
            "schemaUrl" | "schema_url" => out.schema_url = string(value, &at)?,
            _ => {}
        }
    }
    Ok(out)
}

fn resource(value: &Value, path: &Path<'_>) -> Result<Resource> {
    let mut out = Resource::default();
    for (key, value, at) in fields(value, path)? {
        match key {
            "attributes" => out.attributes = repeated(value, &at, key_value)?,
            "droppedAttributesCount" | "dropped_attributes_count" => {
                out.dropped_attributes_count = uint32(value, &at)?
            }
            "entityRefs" | "entity_refs" => out.entity_refs = repeated(value, &at, entity_ref)?,
            _ => {}
        }
    }
    Ok(out)
}

fn entity_ref(value: &Value, path: &Path<'_>) -> Result<EntityRef> {
    let mut out = EntityRef::default();
    for (key, value, at) in fields(value, path)? {
        match key {
            "schemaUrl" | "schema_url" => out.schema_url = string(value, &at)?,
            "type" => out.r#type = string(value, &at)?,
            "idKeys" | "id_keys" => out.id_keys = repeated(value, &at, string)?,
            "descriptionKeys" | "description_keys" => {
                out.description_keys = repeated(value, &at, string)?
            }
            _ => {}
        }
    }
    Ok(out)
}

fn scope_spans(value: &Value, path: &Path<'_>) -> Result<ScopeSpans> {
    let mut out = ScopeSpans::default();
    for (key, value, at) in fields(value, path)? {
        match key {
            "scope" => out.scope = Some(scope(value, &at)?),
            "spans" => out.spans = repeated(value, &at, span)?,
            "schemaUrl" | "schema_url" => out.schema_url = string(value, &at)?,
            _ => {}
        }
    }
    Ok(out)
}

fn scope(value: &Value, path: &Path<'_>) -> Result<InstrumentationScope> {
    let mut out = InstrumentationScope::default();
    for (key, value, at) in fields(value, path)? {
        match key {
            "name" => out.name = string(value, &at)?,
            "version" => out.version = string(value, &at)?,
            "attributes" => out.attributes = repeated(value, &at, key_value)?,
            "droppedAttributesCount" | "dropped_attributes_count" => {
                out.dropped_attributes_count = uint32(value, &at)?
            }
            _ => {}
        }
    }
    Ok(out)
}

fn span(value: &Value, path: &Path<'_>) -> Result<Span> {
    let mut out = Span::default();
    for (key, value, at) in fields(value, path)? {
        match key {
            "traceId" | "trace_id" => out.trace_id = hex_id(value, &at)?,
            "spanId" | "span_id" => out.span_id = hex_id(value, &at)?,
            "traceState" | "trace_state" => out.trace_state = string(value, &at)?,
            "parentSpanId" | "parent_span_id" => out.parent_span_id = hex_id(value, &at)?,
            "flags" => out.flags = uint32(value, &at)?,
            "name" => out.name = string(value, &at)?,
            "kind" => out.kind = enumeration(value, &at, "SpanKind", span_kind)?,
            "startTimeUnixNano" | "start_time_unix_nano" => {
                out.start_time_unix_nano = uint64(value, &at)?
            }
            "endTimeUnixNano" | "end_time_unix_nano" => {
                out.end_time_unix_nano = uint64(value, &at)?
            }
            "attributes" => out.attributes = repeated(value, &at, key_value)?,
            "droppedAttributesCount" | "dropped_attributes_count" => {
                out.dropped_attributes_count = uint32(value, &at)?
            }
            "events" => out.events = repeated(value, &at, event)?,
            "droppedEventsCount" | "dropped_events_count" => {
                out.dropped_events_count = uint32(value, &at)?
            }
            "links" => out.links = repeated(value, &at, link)?,
            "droppedLinksCount" | "dropped_links_count" => {
                out.dropped_links_count = uint32(value, &at)?
            }
            "status" => out.status = Some(status(value, &at)?),
            _ => {}
        }
    }
    Ok(out)
}

fn span_kind(name: &str) -> Option<i32> {
    SpanKind::from_str_name(name).map(|k| k as i32)
}

fn status_code(name: &str) -> Option<i32> {
    StatusCode::from_str_name(name).map(|c| c as i32)
}

fn event(value: &Value, path: &Path<'_>) -> Result<Event> {
    let mut out = Event::default();
    for (key, value, at) in fields(value, path)? {
        match key {
            "timeUnixNano" | "time_unix_nano" => out.time_unix_nano = uint64(value, &at)?,
            "name" => out.name = string(value, &at)?,
            "attributes" => out.attributes = repeated(value, &at, key_value)?,
            "droppedAttributesCount" | "dropped_attributes_count" => {
                out.dropped_attributes_count = uint32(value, &at)?
            }
            _ => {}
        }
    }
    Ok(out)
}

fn link(value: &Value, path: &Path<'_>) -> Result<Link> {
    let mut out = Link::default();
    for (key, value, at) in fields(value, path)? {
        match key {
            "traceId" | "trace_id" => out.trace_id = hex_id(value, &at)?,
            "spanId" | "span_id" => out.span_id = hex_id(value, &at)?,
            "traceState" | "trace_state" => out.trace_state = string(value, &at)?,
            "attributes" => out.attributes = repeated(value, &at, key_value)?,
            "droppedAttributesCount" | "dropped_attributes_count" => {
                out.dropped_attributes_count = uint32(value, &at)?
            }
            "flags" => out.flags = uint32(value, &at)?,
            _ => {}
        }
    }
    Ok(out)
}

fn status(value: &Value, path: &Path<'_>) -> Result<Status> {
    let mut out = Status::default();
    for (key, value, at) in fields(value, path)? {
        match key {
            "message" => out.message = string(value, &at)?,
            "code" => out.code = enumeration(value, &at, "StatusCode", status_code)?,
            _ => {}
        }
    }
    Ok(out)
}

fn key_value(value: &Value, path: &Path<'_>) -> Result<KeyValue> {
    let mut out = KeyValue::default();
    for (key, value, at) in fields(value, path)? {
        match key {
            "key" => out.key = string(value, &at)?,
            "value" => out.value = Some(any_value(value, &at)?),
            "keyStrindex" | "key_strindex" => out.key_strindex = int32(value, &at)?,
            _ => {}
        }
    }
    Ok(out)
}

/// An `AnyValue`: at most one of its oneof members may be set.
fn any_value(value: &Value, path: &Path<'_>) -> Result<AnyValue> {
    let mut out = None;
    for (key, value, at) in fields(value, path)? {
        let member = match key {
            "stringValue" | "string_value" => Val::StringValue(string(value, &at)?),
            "boolValue" | "bool_value" => Val::BoolValue(boolean(value, &at)?),
            "intValue" | "int_value" => Val::IntValue(int64(value, &at)?),
            "doubleValue" | "double_value" => Val::DoubleValue(double(value, &at)?),
            "arrayValue" | "array_value" => Val::ArrayValue(array_value(value, &at)?),
            "kvlistValue" | "kvlist_value" => Val::KvlistValue(kvlist_value(value, &at)?),
            "bytesValue" | "bytes_value" => Val::BytesValue(base64_bytes(value, &at)?),
            "stringValueStrindex" | "string_value_strindex" => {
                Val::StringValueStrindex(int32(value, &at)?)
            }
            _ => continue,
        };
        if out.replace(member).is_some() {
            return Err(path.error("more than one value set (an AnyValue holds one)"));
        }
    }
    Ok(AnyValue { value: out })
}

fn array_value(value: &Value, path: &Path<'_>) -> Result<ArrayValue> {
    let mut out = ArrayValue::default();
    for (key, value, at) in fields(value, path)? {
        if key == "values" {
            out.values = repeated(value, &at, any_value)?;
        }
    }
    Ok(out)
}

fn kvlist_value(value: &Value, path: &Path<'_>) -> Result<KeyValueList> {
    let mut out = KeyValueList::default();
    for (key, value, at) in fields(value, path)? {
        if key == "values" {
            out.values = repeated(value, &at, key_value)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod equivalence_tests;
#[cfg(test)]
mod tests;

//! What every OTLP trace message may hold, field by field, and a validator that walks a
//! message against it without materialising it.
//!
//! The distributor validates every span, resource and scope before it accepts them, so
//! that everything it stores decodes later (queriers decode with prost): each known field
//! has its declared wire type, strings are UTF-8, nested messages are framed correctly all
//! the way down, and nesting stays below [`MAX_DEPTH`]. Unknown fields are allowed when
//! they are well framed (protobuf's forward compatibility, as prost skips them); groups
//! are not (OTLP has none).
//!
//! The tables follow `opentelemetry-proto` 0.33 (OTLP 1.7: `AnyValue.string_value_strindex`,
//! `KeyValue.key_strindex`, `Resource.entity_refs`).

use std::fmt;
use std::ops::Range;

use super::{Field, Reader, WireError, WIRE_FIXED32, WIRE_FIXED64, WIRE_LEN, WIRE_VARINT};

/// Deepest message nesting accepted, counted from the request (`TracesData` = 0, `Span` =
/// 3). prost refuses to decode beyond 100; `AnyValue` arrays and lists are the only
/// recursion in OTLP.
pub(super) const MAX_DEPTH: u32 = 64;

/// Depth of a `ResourceSpans`, a `ScopeSpans` and a `Span` below the request.
pub(super) const RESOURCE_SPANS_DEPTH: u32 = 1;
pub(super) const SCOPE_SPANS_DEPTH: u32 = 2;
const SPAN_DEPTH: u32 = 3;

/// The OTLP trace messages the validator knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Message {
    /// Its own fields only: `scope_spans` are walked by the caller.
    ResourceSpans,
    /// Its own fields only: `spans` are walked by the caller.
    ScopeSpans,
    Resource,
    EntityRef,
    Scope,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
    Span,
    Event,
    Link,
    Status,
}

/// What a known field holds.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Varint,
    Fixed64,
    Fixed32,
    Bytes,
    Str,
    Msg(Message),
    /// Length-delimited, checked by the caller's walk.
    Walked,
}

impl Kind {
    #[inline]
    fn wire(self) -> u8 {
        match self {
            Kind::Varint => WIRE_VARINT,
            Kind::Fixed64 => WIRE_FIXED64,
            Kind::Fixed32 => WIRE_FIXED32,
            Kind::Bytes | Kind::Str | Kind::Msg(_) | Kind::Walked => WIRE_LEN,
        }
    }
}

impl Message {
    const fn name(self) -> &'static str {
        match self {
            Message::ResourceSpans => "ResourceSpans",
            Message::ScopeSpans => "ScopeSpans",
            Message::Resource => "Resource",
            Message::EntityRef => "EntityRef",
            Message::Scope => "InstrumentationScope",
            Message::KeyValue => "KeyValue",
            Message::AnyValue => "AnyValue",
            Message::ArrayValue => "ArrayValue",
            Message::KeyValueList => "KeyValueList",
            Message::Span => "Span",
            Message::Event => "Span.Event",
            Message::Link => "Span.Link",
            Message::Status => "Status",
        }
    }

    /// What the known field `number` holds (a table lookup: this is the per-field path).
    #[inline]
    fn kind(self, number: u32) -> Option<Kind> {
        let table = match self {
            Message::ResourceSpans => &RESOURCE_SPANS[..],
            Message::ScopeSpans => &SCOPE_SPANS,
            Message::Resource => &RESOURCE,
            Message::EntityRef => &ENTITY_REF,
            Message::Scope => &SCOPE,
            Message::KeyValue => &KEY_VALUE,
            Message::AnyValue => &ANY_VALUE,
            Message::ArrayValue => &ARRAY_VALUE,
            Message::KeyValueList => &KEY_VALUE_LIST,
            Message::Span => &SPAN,
            Message::Event => &EVENT,
            Message::Link => &LINK,
            Message::Status => &STATUS,
        };
        table.get(number as usize).copied().flatten()
    }

    /// The known field `number`: its name and what it holds (the source of the tables).
    const fn field(self, number: u32) -> Option<(&'static str, Kind)> {
        use Kind::*;
        use Message as M;
        Some(match (self, number) {
            (M::ResourceSpans, 1) => ("resource", Msg(M::Resource)),
            (M::ResourceSpans, 2) => ("scope_spans", Walked),
            (M::ResourceSpans, 3) => ("schema_url", Str),
            (M::ScopeSpans, 1) => ("scope", Msg(M::Scope)),
            (M::ScopeSpans, 2) => ("spans", Walked),
            (M::ScopeSpans, 3) => ("schema_url", Str),
            (M::Resource, 1) => ("attributes", Msg(M::KeyValue)),
            (M::Resource, 2) => ("dropped_attributes_count", Varint),
            (M::Resource, 3) => ("entity_refs", Msg(M::EntityRef)),
            (M::EntityRef, 1) => ("schema_url", Str),
            (M::EntityRef, 2) => ("type", Str),
            (M::EntityRef, 3) => ("id_keys", Str),
            (M::EntityRef, 4) => ("description_keys", Str),
            (M::Scope, 1) => ("name", Str),
            (M::Scope, 2) => ("version", Str),
            (M::Scope, 3) => ("attributes", Msg(M::KeyValue)),
            (M::Scope, 4) => ("dropped_attributes_count", Varint),
            (M::KeyValue, 1) => ("key", Str),
            (M::KeyValue, 2) => ("value", Msg(M::AnyValue)),
            (M::KeyValue, 3) => ("key_strindex", Varint),
            (M::AnyValue, 1) => ("string_value", Str),
            (M::AnyValue, 2) => ("bool_value", Varint),
            (M::AnyValue, 3) => ("int_value", Varint),
            (M::AnyValue, 4) => ("double_value", Fixed64),
            (M::AnyValue, 5) => ("array_value", Msg(M::ArrayValue)),
            (M::AnyValue, 6) => ("kvlist_value", Msg(M::KeyValueList)),
            (M::AnyValue, 7) => ("bytes_value", Bytes),
            (M::AnyValue, 8) => ("string_value_strindex", Varint),
            (M::ArrayValue, 1) => ("values", Msg(M::AnyValue)),
            (M::KeyValueList, 1) => ("values", Msg(M::KeyValue)),
            (M::Span, 1) => ("trace_id", Bytes),
            (M::Span, 2) => ("span_id", Bytes),
            (M::Span, 3) => ("trace_state", Str),
            (M::Span, 4) => ("parent_span_id", Bytes),
            (M::Span, 5) => ("name", Str),
            (M::Span, 6) => ("kind", Varint),
            (M::Span, 7) => ("start_time_unix_nano", Fixed64),
            (M::Span, 8) => ("end_time_unix_nano", Fixed64),
            (M::Span, 9) => ("attributes", Msg(M::KeyValue)),
            (M::Span, 10) => ("dropped_attributes_count", Varint),
            (M::Span, 11) => ("events", Msg(M::Event)),
            (M::Span, 12) => ("dropped_events_count", Varint),
            (M::Span, 13) => ("links", Msg(M::Link)),
            (M::Span, 14) => ("dropped_links_count", Varint),
            (M::Span, 15) => ("status", Msg(M::Status)),
            (M::Span, 16) => ("flags", Fixed32),
            (M::Event, 1) => ("time_unix_nano", Fixed64),
            (M::Event, 2) => ("name", Str),
            (M::Event, 3) => ("attributes", Msg(M::KeyValue)),
            (M::Event, 4) => ("dropped_attributes_count", Varint),
            (M::Link, 1) => ("trace_id", Bytes),
            (M::Link, 2) => ("span_id", Bytes),
            (M::Link, 3) => ("trace_state", Str),
            (M::Link, 4) => ("attributes", Msg(M::KeyValue)),
            (M::Link, 5) => ("dropped_attributes_count", Varint),
            (M::Link, 6) => ("flags", Fixed32),
            (M::Status, 2) => ("message", Str),
            (M::Status, 3) => ("code", Varint),
            _ => return None,
        })
    }
}

/// `Message::field` as arrays indexed by field number, built at compile time.
const fn table<const N: usize>(message: Message) -> [Option<Kind>; N] {
    let mut out = [None; N];
    let mut n = 0;
    while n < N {
        out[n] = match message.field(n as u32) {
            Some((_, kind)) => Some(kind),
            None => None,
        };
        n += 1;
    }
    out
}

const RESOURCE_SPANS: [Option<Kind>; 4] = table(Message::ResourceSpans);
const SCOPE_SPANS: [Option<Kind>; 4] = table(Message::ScopeSpans);
const RESOURCE: [Option<Kind>; 4] = table(Message::Resource);
const ENTITY_REF: [Option<Kind>; 5] = table(Message::EntityRef);
const SCOPE: [Option<Kind>; 5] = table(Message::Scope);
const KEY_VALUE: [Option<Kind>; 4] = table(Message::KeyValue);
const ANY_VALUE: [Option<Kind>; 9] = table(Message::AnyValue);
const ARRAY_VALUE: [Option<Kind>; 2] = table(Message::ArrayValue);
const KEY_VALUE_LIST: [Option<Kind>; 2] = table(Message::KeyValueList);
const SPAN: [Option<Kind>; 17] = table(Message::Span);
const EVENT: [Option<Kind>; 5] = table(Message::Event);
const LINK: [Option<Kind>; 7] = table(Message::Link);
const STATUS: [Option<Kind>; 4] = table(Message::Status);

/// Why a message does not decode: where, in which message and field, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    pub offset: usize,
    pub message: &'static str,
    /// The field at fault; empty when the message's own framing is broken.
    pub field: &'static str,
    pub what: &'static str,
}

impl Invalid {
    fn framing(message: Message, e: WireError) -> Self {
        Self {
            offset: e.offset,
            message: message.name(),
            field: "",
            what: e.what,
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{} at byte {}: {}", self.message, self.offset, self.what)
        } else {
            write!(
                f,
                "{}.{} at byte {}: {}",
                self.message, self.field, self.offset, self.what
            )
        }
    }
}

impl std::error::Error for Invalid {}

/// Checks one field of `message` (at nesting `depth`) against the table, recursing into
/// nested messages.
#[inline]
fn check_field(body: &[u8], message: Message, f: &Field, depth: u32) -> Result<(), Invalid> {
    let Some(kind) = message.kind(f.number) else {
        return Ok(());
    };
    let invalid = |what| Invalid {
        offset: f.raw.start,
        message: message.name(),
        field: message.field(f.number).map_or("", |(name, _)| name),
        what,
    };
    if f.wire != kind.wire() {
        return Err(invalid("wrong wire type for this field"));
    }
    match kind {
        Kind::Str if is_utf8(&body[f.payload.clone()]) => Ok(()),
        Kind::Str => Err(invalid("string is not valid UTF-8")),
        Kind::Msg(nested) => {
            if depth >= MAX_DEPTH {
                return Err(invalid("messages nested too deeply"));
            }
            if nested == Message::KeyValue {
                key_value(body, f.payload.clone(), depth + 1)
            } else {
                validate(body, f.payload.clone(), nested, depth + 1)
            }
        }
        Kind::Varint | Kind::Fixed64 | Kind::Fixed32 | Kind::Bytes | Kind::Walked => Ok(()),
    }
}

/// Validates the encoded `message` in `body[range]`, nested at `depth`.
pub(super) fn validate(
    body: &[u8],
    range: Range<usize>,
    message: Message,
    depth: u32,
) -> Result<(), Invalid> {
    let mut r = Reader::new(body, range);
    while let Some(f) = r.next().map_err(|e| Invalid::framing(message, e))? {
        check_field(body, message, &f, depth)?;
    }
    Ok(())
}

/// [`validate`] of a `KeyValue`, the message most spans are made of, with its `AnyValue`
/// checked inline (the same rules as the tables, written out for speed; the tables'
/// tests cover both).
fn key_value(body: &[u8], range: Range<usize>, depth: u32) -> Result<(), Invalid> {
    let mut r = Reader::new(body, range);
    while let Some(f) = r
        .next()
        .map_err(|e| Invalid::framing(Message::KeyValue, e))?
    {
        match (f.number, f.wire) {
            (1, WIRE_LEN) => {
                if !is_utf8(&body[f.payload.clone()]) {
                    return check_field(body, Message::KeyValue, &f, depth);
                }
            }
            (2, WIRE_LEN) if depth < MAX_DEPTH => {
                any_value(body, f.payload.clone(), depth + 1)?;
            }
            _ => check_field(body, Message::KeyValue, &f, depth)?,
        }
    }
    Ok(())
}

fn any_value(body: &[u8], range: Range<usize>, depth: u32) -> Result<(), Invalid> {
    let mut r = Reader::new(body, range);
    while let Some(f) = r
        .next()
        .map_err(|e| Invalid::framing(Message::AnyValue, e))?
    {
        match (f.number, f.wire) {
            (1, WIRE_LEN) if is_utf8(&body[f.payload.clone()]) => {}
            (2 | 3 | 8, WIRE_VARINT) | (4, WIRE_FIXED64) | (7, WIRE_LEN) => {}
            _ => check_field(body, Message::AnyValue, &f, depth)?,
        }
    }
    Ok(())
}

/// Validates a span in `body[payload]` and returns its trace ID and span ID bytes (the
/// last occurrence of each, as a decoder keeps): the distributor's per-span step.
pub(super) fn span_ids(body: &[u8], payload: Range<usize>) -> Result<(&[u8], &[u8]), Invalid> {
    let mut trace_id: &[u8] = &[];
    let mut span_id: &[u8] = &[];
    let mut r = Reader::new(body, payload);
    while let Some(f) = r.next().map_err(|e| Invalid::framing(Message::Span, e))? {
        check_field(body, Message::Span, &f, SPAN_DEPTH)?;
        match f.number {
            1 => trace_id = &body[f.payload],
            2 => span_id = &body[f.payload],
            _ => {}
        }
    }
    Ok((trace_id, span_id))
}

/// Whether `bytes` are UTF-8: most strings are ASCII, which `is_ascii` tells inline,
/// where `from_utf8` is a call per string.
#[inline]
fn is_utf8(bytes: &[u8]) -> bool {
    bytes.is_ascii() || std::str::from_utf8(bytes).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{
        any_value, AnyValue, ArrayValue, KeyValue, KeyValueList,
    };
    use opentelemetry_proto::tonic::trace::v1::{span, status, Span, Status};
    use prost::Message as _;

    fn full_span() -> Span {
        let kv = |k: &str, v: any_value::Value| KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        };
        Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            parent_span_id: vec![3; 8],
            trace_state: "a=b".into(),
            flags: 1,
            name: "GET /é".into(),
            kind: 2,
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            attributes: vec![
                kv("s", any_value::Value::StringValue("v".into())),
                kv("b", any_value::Value::BoolValue(true)),
                kv("i", any_value::Value::IntValue(-1)),
                kv("d", any_value::Value::DoubleValue(0.5)),
                kv("y", any_value::Value::BytesValue(vec![0xff])),
                kv(
                    "a",
                    any_value::Value::ArrayValue(ArrayValue {
                        values: vec![AnyValue {
                            value: Some(any_value::Value::KvlistValue(KeyValueList {
                                values: vec![kv("n", any_value::Value::IntValue(3))],
                            })),
                        }],
                    }),
                ),
            ],
            dropped_attributes_count: 1,
            events: vec![span::Event {
                time_unix_nano: 1,
                name: "ev".into(),
                ..Default::default()
            }],
            links: vec![span::Link {
                trace_id: vec![4; 16],
                span_id: vec![5; 8],
                flags: 1,
                ..Default::default()
            }],
            status: Some(Status {
                message: "boom".into(),
                code: status::StatusCode::Error as i32,
            }),
            ..Default::default()
        }
    }

    fn check_span(bytes: &[u8]) -> Result<(), Invalid> {
        span_ids(bytes, 0..bytes.len()).map(drop)
    }

    #[test]
    fn every_field_of_a_well_formed_span_passes_and_its_ids_are_read() {
        let bytes = full_span().encode_to_vec();
        let (t, s) = span_ids(&bytes, 0..bytes.len()).expect("valid");
        assert_eq!(t, [1; 16]);
        assert_eq!(s, [2; 8]);
    }

    #[test]
    fn a_string_field_sent_as_a_varint_is_refused_with_its_name() {
        // The probe of the issue: trace and span IDs valid, `name` (field 5) as `0x2a 0x02
        // 0xff 0xfe`: LEN with bytes that are not UTF-8.
        let bytes = crate::otlp::test_bytes::span_with_non_utf8_name(1, 2);
        let err = check_span(&bytes).expect_err("not UTF-8");
        assert_eq!((err.message, err.field), ("Span", "name"));
        assert!(Span::decode(&bytes[..]).is_err(), "prost agrees");
        // The same field with the varint wire type.
        let mut bytes = Span::default().encode_to_vec();
        bytes.extend([0x28, 0x01]);
        let err = check_span(&bytes).expect_err("wrong wire type");
        assert_eq!(err.what, "wrong wire type for this field");
        assert!(Span::decode(&bytes[..]).is_err(), "prost agrees");
    }

    #[test]
    fn a_nested_attribute_that_is_truncated_or_not_utf8_is_found() {
        // Attributes are field 9: keep later fields out so the attribute ends the bytes.
        let mut span = Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            ..Default::default()
        };
        span.attributes.push(KeyValue {
            key: "deep".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue("xyz".into())),
            }),
            ..Default::default()
        });
        let good = span.encode_to_vec();
        // Corrupt the last byte of "xyz" (inside KeyValue → AnyValue → string_value).
        let mut bad = good.clone();
        let at = bad.len() - 1;
        bad[at] = 0xc3;
        let err = check_span(&bad).expect_err("bad UTF-8 deep inside");
        assert_eq!((err.message, err.field), ("AnyValue", "string_value"));
        assert!(Span::decode(&bad[..]).is_err(), "prost agrees");
        // Lengthen the innermost length prefix so it runs past its parent.
        let mut bad = good;
        let at = bad.len() - 4;
        bad[at] += 1;
        assert!(check_span(&bad).is_err());
        assert!(Span::decode(&bad[..]).is_err(), "prost agrees");
    }

    #[test]
    fn unknown_fields_pass_when_well_framed() {
        let mut bytes = full_span().encode_to_vec();
        // Field 99 as LEN, field 100 as varint: unknown, skipped as a decoder skips them.
        bytes.extend([0x9a, 0x06, 0x01, 0xff, 0xa0, 0x06, 0x05]);
        check_span(&bytes).expect("unknown fields are fine");
        assert!(Span::decode(&bytes[..]).is_ok());
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_refused() {
        let mut value = AnyValue {
            value: Some(any_value::Value::IntValue(1)),
        };
        for _ in 0..MAX_DEPTH {
            value = AnyValue {
                value: Some(any_value::Value::ArrayValue(ArrayValue {
                    values: vec![value],
                })),
            };
        }
        let span = Span {
            attributes: vec![KeyValue {
                key: "k".into(),
                value: Some(value),
                ..Default::default()
            }],
            ..Default::default()
        };
        let err = check_span(&span.encode_to_vec()).expect_err("too deep");
        assert_eq!(err.what, "messages nested too deeply");
    }
}

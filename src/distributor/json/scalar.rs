//! Scalar fields in every form the proto3 JSON mapping accepts, and the two shapes that
//! hold them (objects of fields, arrays of elements). `null` never reaches these readers:
//! [`fields`] skips it, since a `null` field is the field's default.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};
use serde_json::{Number, Value};

use super::path::{Path, Shown};
use crate::distributor::PushError;

/// The non-null fields of a message, each with its path. A `null` message has none.
pub(super) fn fields<'a>(
    value: &'a Value,
    path: &'a Path<'a>,
) -> Result<impl Iterator<Item = (&'a str, &'a Value, Path<'a>)>, PushError> {
    let map = match value {
        Value::Object(map) => Some(map),
        Value::Null => None,
        other => return Err(path.expected("an object", other)),
    };
    let non_null = map.into_iter().flatten().filter(|(_, v)| !v.is_null());
    Ok(non_null.map(move |(key, v)| (key.as_str(), v, path.field(key))))
}

/// A repeated field: an array whose elements `element` reads (`null` elements are refused,
/// as conformant proto3 parsers do).
pub(super) fn repeated<T>(
    value: &Value,
    path: &Path<'_>,
    element: impl Fn(&Value, &Path<'_>) -> Result<T, PushError>,
) -> Result<Vec<T>, PushError> {
    let Value::Array(items) = value else {
        return Err(path.expected("an array", value));
    };
    let read = |(i, item): (usize, &Value)| {
        let at = path.index(i);
        match item {
            Value::Null => Err(at.error("null is not allowed as an array element")),
            item => element(item, &at),
        }
    };
    items.iter().enumerate().map(read).collect()
}

pub(super) fn string(value: &Value, path: &Path<'_>) -> Result<String, PushError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        other => Err(path.expected("a string", other)),
    }
}

pub(super) fn boolean(value: &Value, path: &Path<'_>) -> Result<bool, PushError> {
    value
        .as_bool()
        .ok_or_else(|| path.expected("true or false", value))
}

pub(super) fn uint32(value: &Value, path: &Path<'_>) -> Result<u32, PushError> {
    integer(value).ok_or_else(|| path.expected("an unsigned 32-bit integer", value))
}

pub(super) fn int32(value: &Value, path: &Path<'_>) -> Result<i32, PushError> {
    integer(value).ok_or_else(|| path.expected("a 32-bit integer", value))
}

pub(super) fn uint64(value: &Value, path: &Path<'_>) -> Result<u64, PushError> {
    integer(value).ok_or_else(|| path.expected("an unsigned 64-bit integer", value))
}

pub(super) fn int64(value: &Value, path: &Path<'_>) -> Result<i64, PushError> {
    integer(value).ok_or_else(|| path.expected("a 64-bit integer", value))
}

/// An integer as a JSON number or a string holding one, in exponent notation too (`1e3`),
/// as long as its value is integral and fits `T`.
fn integer<T: TryFrom<i128>>(value: &Value) -> Option<T> {
    let wide = match value {
        Value::Number(n) => number_to_i128(n),
        Value::String(s) => s
            .parse::<i128>()
            .ok()
            .or_else(|| s.parse::<f64>().ok().and_then(integral)),
        _ => None,
    }?;
    T::try_from(wide).ok()
}

fn number_to_i128(n: &Number) -> Option<i128> {
    n.as_u64()
        .map(i128::from)
        .or_else(|| n.as_i64().map(i128::from))
        .or_else(|| n.as_f64().and_then(integral))
}

/// `d` as an integer if it is one (saturating far out of every field's range).
fn integral(d: f64) -> Option<i128> {
    (d.fract() == 0.0).then_some(d as i128)
}

/// A double as a JSON number or a string: a number, `"NaN"`, `"Infinity"` or `"-Infinity"`.
pub(super) fn double(value: &Value, path: &Path<'_>) -> Result<f64, PushError> {
    let d = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            // Rust also reads "inf" and "nan", which proto3 JSON does not; and a number
            // too large for a double is an error, not infinity.
            s => s.parse::<f64>().ok().filter(|d| d.is_finite()),
        },
        _ => None,
    };
    d.ok_or_else(|| {
        path.expected(
            "a double (a number, \"NaN\", \"Infinity\" or \"-Infinity\")",
            value,
        )
    })
}

/// An enum by name, or by number (proto3 enums are open: unnamed numbers are kept).
pub(super) fn enumeration(
    value: &Value,
    path: &Path<'_>,
    enum_name: &str,
    by_name: fn(&str) -> Option<i32>,
) -> Result<i32, PushError> {
    let named = value.as_str().and_then(by_name);
    named
        .or_else(|| integer(value))
        .ok_or_else(|| path.expected(&format!("a {enum_name} name or number"), value))
}

/// A trace or span ID: hex, as OTLP/JSON has it (not base64 as in proto3 JSON). As the
/// `opentelemetry-proto` crate does, `""` is an empty ID and a `0x` prefix is allowed.
pub(super) fn hex_id(value: &Value, path: &Path<'_>) -> Result<Vec<u8>, PushError> {
    let Value::String(s) = value else {
        return Err(path.expected("a hex string", value));
    };
    hex::decode(s.strip_prefix("0x").unwrap_or(s)).map_err(|e| {
        path.error(format_args!(
            "expected a hex string, got {} ({e})",
            Shown(value)
        ))
    })
}

const ANY_PADDING: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const BASE64: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, ANY_PADDING);
const BASE64_URL: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, ANY_PADDING);

/// A bytes value: standard or URL-safe base64, with or without padding.
pub(super) fn base64_bytes(value: &Value, path: &Path<'_>) -> Result<Vec<u8>, PushError> {
    let Value::String(s) = value else {
        return Err(path.expected("a base64 string", value));
    };
    let engine = if s.contains(['-', '_']) {
        &BASE64_URL
    } else {
        &BASE64
    };
    engine
        .decode(s)
        .map_err(|e| path.error(format_args!("expected a base64 string ({e})")))
}

//! OTLP/HTTP receiver: `POST /v1/traces` with protobuf or JSON, optionally gzip.
//! Responses (including errors, as a `google.rpc.Status`) use the request's content type.

use std::io::Read;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use prost::Message;

use super::grpc::export_response;
use super::{json, Distributor, PushError};
use crate::error::HasErrorCode;
use crate::model::{TenantError, TenantId, TENANT_HEADER};
use crate::rpc::proto::RpcStatus;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Protobuf,
    Json,
}

pub(crate) fn router(distributor: Arc<Distributor>) -> Router {
    let limit = distributor.settings().max_recv_msg_size;
    Router::new()
        .route("/v1/traces", post(export))
        // Compressed bodies are limited here, decompressed ones in `decompress`.
        .layer(DefaultBodyLimit::max(limit))
        .with_state(distributor)
}

fn format_of(headers: &HeaderMap) -> Result<Format, PushError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/x-protobuf");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(Format::Protobuf),
        "application/json" => Ok(Format::Json),
        _ => Err(PushError::UnsupportedMediaType(ct.to_owned())),
    }
}

fn decompress(headers: &HeaderMap, body: Bytes, limit: usize) -> Result<Bytes, PushError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match encoding.as_str() {
        "" | "identity" => Ok(body),
        "gzip" => {
            // A gzip body may hold several members (RFC 1952 §2.2): all of them are the
            // body. Bytes after the last member that are not a member are an error.
            let mut out = Vec::with_capacity(body.len() * 4);
            flate2::read::MultiGzDecoder::new(&body[..])
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| PushError::MalformedGzip(e.to_string()))?;
            if out.len() > limit {
                return Err(PushError::TooLarge {
                    size: out.len(),
                    limit,
                });
            }
            Ok(out.into())
        }
        other => Err(PushError::UnsupportedEncoding(other.to_owned())),
    }
}

fn tenant_of(headers: &HeaderMap, multitenancy: bool) -> Result<TenantId, TenantError> {
    TenantId::from_header(
        headers.get(TENANT_HEADER).map(|v| v.as_bytes()),
        multitenancy,
    )
}

async fn export(
    State(d): State<Arc<Distributor>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let format = format_of(&headers).unwrap_or(Format::Protobuf);
    // A body over the limit (or one that fails to arrive) is answered like every other
    // error: a google.rpc.Status in the request's format, not axum's plain text.
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let limit = d.settings().max_recv_msg_size;
            return error_response(format, &PushError::BodyTooLarge { limit });
        }
        Err(rejection) if is_body_timeout(&rejection) => {
            let e = PushError::BodyTimeout;
            metrics::counter!("ringtail_distributor_push_errors_total", "reason" => e.reason())
                .increment(1);
            return error_response(format, &e);
        }
        Err(rejection) => {
            let e = PushError::UnreadableBody(rejection.body_text());
            return error_response(format, &e);
        }
    };
    match handle(&d, &headers, body).await {
        Ok(resp) => encode(format, StatusCode::OK, &resp),
        Err(e) => error_response(format, &e),
    }
}

/// Whether the body failed because it stalled past `http_body_timeout_ms` (the
/// server's [`tower_http::timeout::TimeoutBody`], somewhere in the rejection's sources).
fn is_body_timeout(rejection: &BytesRejection) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(rejection);
    while let Some(e) = source {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        source = e.source();
    }
    false
}

async fn handle(
    d: &Distributor,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse, PushError>
{
    let format = format_of(headers)?;
    let tenant = tenant_of(headers, d.settings().multitenancy_enabled)?;
    let body = decompress(headers, body, d.settings().max_recv_msg_size)?;
    let outcome = match format {
        Format::Protobuf => d.push(&tenant, &body).await?,
        Format::Json => d.push(&tenant, &json::to_protobuf(&body)?).await?,
    };
    Ok(export_response(&outcome))
}

fn encode<T: Message + serde::Serialize>(format: Format, status: StatusCode, msg: &T) -> Response {
    match format {
        Format::Protobuf => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-protobuf"),
            )],
            msg.encode_to_vec(),
        )
            .into_response(),
        Format::Json => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            serde_json::to_vec(msg).unwrap_or_default(),
        )
            .into_response(),
    }
}

fn error_response(format: Format, e: &PushError) -> Response {
    let status = RpcStatus {
        code: e.error_code().grpc() as i32,
        message: e.to_string(),
    };
    let resp = match format {
        Format::Protobuf => (
            e.error_code().http(),
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-protobuf"),
            )],
            status.encode_to_vec(),
        )
            .into_response(),
        Format::Json => (
            e.error_code().http(),
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            serde_json::json!({"code": status.code, "message": status.message}).to_string(),
        )
            .into_response(),
    };
    crate::error::with_retry_after(e, resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(data).expect("gzip");
        gz.finish().expect("gzip")
    }

    fn gzip_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        h
    }

    #[test]
    fn every_member_of_a_multi_member_gzip_body_is_read() {
        let body = [gzip(b"first "), gzip(b"second")].concat();
        let out = decompress(&gzip_headers(), body.into(), 1 << 20).expect("valid");
        assert_eq!(&out[..], b"first second");
    }

    #[test]
    fn garbage_after_a_gzip_member_is_refused() {
        let body = [gzip(b"data"), b"trailing garbage".to_vec()].concat();
        let err = decompress(&gzip_headers(), body.into(), 1 << 20).expect_err("garbage");
        assert!(matches!(err, PushError::MalformedGzip(_)), "{err}");
        assert_eq!(err.error_code().http(), StatusCode::BAD_REQUEST);
    }
}

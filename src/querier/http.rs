//! Tempo-compatible query API: `GET /api/traces/{id}` and `GET /api/v2/traces/{id}`,
//! JSON by default, protobuf with `Accept: application/protobuf`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prost::Message;

use super::{partial_message, tempo_v1_json, tempo_v2_json, MergedTrace, Querier, QueryError};
use crate::model::{TenantId, TraceId, TENANT_HEADER};

pub(crate) fn router(querier: Arc<Querier>) -> Router {
    Router::new()
        .route("/api/traces/{id}", get(trace_v1))
        .route("/api/v2/traces/{id}", get(trace_v2))
        .with_state(querier)
}

#[derive(Clone, Copy)]
enum Version {
    V1,
    V2,
}

async fn trace_v1(
    State(q): State<Arc<Querier>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    trace(q, id, headers, Version::V1).await
}

async fn trace_v2(
    State(q): State<Arc<Querier>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    trace(q, id, headers, Version::V2).await
}

fn wants_protobuf(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/protobuf") || a.contains("application/x-protobuf"))
}

async fn trace(q: Arc<Querier>, id: String, headers: HeaderMap, version: Version) -> Response {
    match find(&q, &id, &headers).await {
        Ok(trace) => trace_response(trace, &headers, version),
        Err(e) => crate::error::text_response(&e),
    }
}

async fn find(q: &Querier, id: &str, headers: &HeaderMap) -> Result<MergedTrace, QueryError> {
    let id = TraceId::from_hex(id)?;
    let header = headers.get(TENANT_HEADER).map(|v| v.as_bytes());
    let tenant = TenantId::from_header(header, q.settings().multitenancy_enabled)?;
    q.find_trace(&tenant, id).await?.ok_or(QueryError::NotFound)
}

fn trace_response(trace: MergedTrace, headers: &HeaderMap, version: Version) -> Response {
    let partial = partial_message(&trace);
    let mut response = if wants_protobuf(headers) {
        // Tempo's `Trace` is `repeated ResourceSpans batches = 1`: the same bytes as
        // `TracesData`. v2 wraps it in `TraceByIDResponse { Trace trace = 1; ...;
        // PartialStatus status = 3; string message = 4; }` (PARTIAL = 1).
        let encoded = trace.data.encode_to_vec();
        let body = match version {
            Version::V1 => encoded,
            Version::V2 => {
                let mut out = Vec::with_capacity(encoded.len() + 8);
                prost::encoding::bytes::encode(1, &encoded, &mut out);
                if let Some(message) = &partial {
                    prost::encoding::int32::encode(3, &1, &mut out);
                    prost::encoding::string::encode(4, message, &mut out);
                }
                out
            }
        };
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/protobuf"),
            )],
            body,
        )
            .into_response()
    } else {
        let json = match version {
            Version::V1 => tempo_v1_json(&trace.data),
            Version::V2 => tempo_v2_json(&trace),
        };
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            json.to_string(),
        )
            .into_response()
    };
    // v1 has no field for it: every version says so in a header.
    if let Some(value) = partial.and_then(|m| HeaderValue::from_str(&m).ok()) {
        response.headers_mut().insert(PARTIAL_HEADER, value);
    }
    response
}

/// Set when some stored records of the trace could not be decoded and were skipped.
pub(crate) const PARTIAL_HEADER: &str = "x-ringtail-partial";

//! Tempo's search and tag API, as Grafana's Tempo data source and tempo-cli call it:
//! `GET /api/search`, `/api/search/tags`, `/api/v2/search/tags`,
//! `/api/search/tag/{name}/values`, `/api/v2/search/tag/{scope.name}/values`.
//! Responses are Tempo's messages in the protobuf JSON mapping; a search that could not
//! ask every ingester or read every block says so in `X-Ringtail-Partial`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query as UrlQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;

use super::http::PARTIAL_HEADER;

/// Set on a tag answer cut short by the tenant's byte cap.
const TRUNCATED_HEADER: &str = "x-ringtail-truncated";
use super::{Querier, QueryError};
use crate::model::{TenantId, TENANT_HEADER};
use crate::search::params::ParamError;
use crate::search::tags::parse_tag;
use crate::search::{SearchParams, TagParams};
use crate::traceql::ast::Intrinsic;

pub(crate) fn router(querier: Arc<Querier>) -> Router {
    Router::new()
        .route("/api/search", get(search))
        .route("/api/search/tags", get(tags_v1))
        .route("/api/v2/search/tags", get(tags_v2))
        .route("/api/search/tag/{name}/values", get(values_v1))
        .route("/api/v2/search/tag/{name}/values", get(values_v2))
        .with_state(querier)
}

type Params = UrlQuery<HashMap<String, String>>;

fn tenant(q: &Querier, headers: &HeaderMap) -> Result<TenantId, QueryError> {
    let header = headers.get(TENANT_HEADER).map(|v| v.as_bytes());
    Ok(TenantId::from_header(
        header,
        q.settings().multitenancy_enabled,
    )?)
}

fn json_response(body: serde_json::Value, partial: &[String]) -> Response {
    let mut response = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response();
    if !partial.is_empty() {
        let text = partial.join("; ");
        if let Ok(value) = HeaderValue::from_str(&text.replace(['\r', '\n'], " ")) {
            response.headers_mut().insert(PARTIAL_HEADER, value);
        }
    }
    response
}

async fn search(
    State(q): State<Arc<Querier>>,
    headers: HeaderMap,
    UrlQuery(p): Params,
) -> Response {
    let tenant = match tenant(&q, &headers) {
        Ok(t) => t,
        Err(e) => return crate::error::text_response(&e),
    };
    let params = match SearchParams::parse(&p) {
        Ok(p) => p,
        Err(e) => return crate::error::text_response(&e),
    };
    let outcome = q.search(&tenant, &params).await;
    json_response(
        json!({ "traces": outcome.traces, "metrics": outcome.metrics }),
        &outcome.partial,
    )
}

/// The tenant and the tag parameters of a tag request.
fn tag_request(
    q: &Querier,
    headers: &HeaderMap,
    p: &HashMap<String, String>,
) -> Result<(TenantId, TagParams), Error> {
    Ok((tenant(q, headers)?, TagParams::parse(p)?))
}

fn limited(mut v: Vec<String>, limit: Option<usize>) -> Vec<String> {
    if let Some(n) = limit {
        v.truncate(n);
    }
    v
}

async fn tags_v1(
    State(q): State<Arc<Querier>>,
    headers: HeaderMap,
    UrlQuery(p): Params,
) -> Response {
    let (tenant, params) = match tag_request(&q, &headers, &p) {
        Ok(x) => x,
        Err(e) => return e.response(),
    };
    let outcome = q.tag_names(&tenant, &params).await;
    let names = limited(outcome.found.all(), params.limit);
    let response = json_response(json!({ "tagNames": names }), &outcome.partial);
    cut_short(response, outcome.found.truncated)
}

async fn tags_v2(
    State(q): State<Arc<Querier>>,
    headers: HeaderMap,
    UrlQuery(p): Params,
) -> Response {
    let (tenant, params) = match tag_request(&q, &headers, &p) {
        Ok(x) => x,
        Err(e) => return e.response(),
    };
    let only = p
        .get("scope")
        .map(String::as_str)
        .filter(|s| !s.is_empty() && *s != "all");
    if let Some(s) = only {
        if !["resource", "span", "intrinsic"].contains(&s) {
            return Error::Param(ParamError::Invalid {
                name: "scope",
                why: format!("{s:?} is not resource, span, intrinsic or all"),
            })
            .response();
        }
    }
    let outcome = q.tag_names(&tenant, &params).await;
    let names = outcome.found;
    let truncated = names.truncated;
    let mut intrinsic: Vec<String> = Intrinsic::listed().map(str::to_owned).collect();
    intrinsic.sort();
    let scopes: Vec<serde_json::Value> = [
        ("resource", names.resource.into_iter().collect::<Vec<_>>()),
        ("span", names.span.into_iter().collect()),
        ("intrinsic", intrinsic),
    ]
    .into_iter()
    .filter(|(name, _)| only.is_none_or(|o| o == *name))
    .map(|(name, tags)| json!({ "name": name, "tags": limited(tags, params.limit) }))
    .collect();
    let response = json_response(json!({ "scopes": scopes }), &outcome.partial);
    cut_short(response, truncated)
}

async fn values_v1(
    State(q): State<Arc<Querier>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    UrlQuery(p): Params,
) -> Response {
    values(q, name, headers, p, false).await
}

async fn values_v2(
    State(q): State<Arc<Querier>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    UrlQuery(p): Params,
) -> Response {
    values(q, name, headers, p, true).await
}

async fn values(
    q: Arc<Querier>,
    name: String,
    headers: HeaderMap,
    p: HashMap<String, String>,
    v2: bool,
) -> Response {
    let (tenant, params) = match tag_request(&q, &headers, &p) {
        Ok(x) => x,
        Err(e) => return e.response(),
    };
    let Some(field) = parse_tag(&name, v2) else {
        return Error::Param(ParamError::Invalid {
            name: "tag",
            why: format!("{name:?}: tags are resource.x, span.x, .x or an intrinsic"),
        })
        .response();
    };
    // Ingesters read the tag in TraceQL spelling; the v1 name is unscoped.
    let tag = if v2 { name } else { format!(".{name}") };
    let outcome = q.tag_values(&tenant, &tag, field, &params).await;
    let truncated = outcome.found.truncated;
    let mut values: Vec<_> = outcome.found.values.into_iter().collect();
    if let Some(n) = params.limit {
        values.truncate(n);
    }
    let body = if v2 {
        json!({ "tagValues": values })
    } else {
        let plain: std::collections::BTreeSet<String> =
            values.into_iter().map(|v| v.value).collect();
        json!({ "tagValues": plain })
    };
    cut_short(json_response(body, &outcome.partial), truncated)
}

/// Says so (`X-Ringtail-Truncated`) when the tenant's `max_bytes_per_tag_values_query`
/// cut a tag answer short: what is listed is right, but not everything.
fn cut_short(mut response: Response, truncated: bool) -> Response {
    if truncated {
        response.headers_mut().insert(
            TRUNCATED_HEADER,
            HeaderValue::from_static("max_bytes_per_tag_values_query"),
        );
    }
    response
}

/// What a search or tag request can fail with before it runs.
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Param(#[from] ParamError),
}

impl Error {
    fn response(&self) -> Response {
        match self {
            Error::Query(e) => crate::error::text_response(e),
            Error::Param(e) => crate::error::text_response(e),
        }
    }
}

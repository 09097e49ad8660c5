//! Admin API served by every process: `/ready`, `/metrics`, `/ring`, `/status/buildinfo`
//! (also at Tempo's `/api/status/buildinfo`),
//! `/status/workers`, `/api/echo`, and the state-changing calls that [`auth`] guards.

pub(crate) mod auth;
pub(crate) mod peer_http;
mod ring_page;

pub use peer_http::PeerHttp;

use std::sync::{Arc, OnceLock};

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use crate::cluster::{Membership, RingDoc, Roles};
use crate::error::{text_response, ErrorCode, HasErrorCode};
use crate::ingester::{Ingester, LocalBlockError};
use crate::model::{TenantId, TenantIdError};
use crate::ring::ReplicationFactor;
use crate::storage::{BlockStore, StoreError};
use crate::telemetry::Workers;

/// Why an admin call did not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AdminError {
    #[error("the ingester is still replaying its WAL")]
    Replaying,
    #[error("this node runs no ingester")]
    NoIngester,
    #[error("flush failed: {0}")]
    FlushFailed(LocalBlockError),
    #[error("tenant deletion is disabled: set admin_token")]
    DeletionDisabled,
    #[error("this node runs no compactor: send tenant deletion to a compactor (--target compactor or all)")]
    NoCompactor,
    #[error("invalid tenant: {0}")]
    InvalidTenant(TenantIdError),
    #[error("deleting failed (retry): {0}")]
    DeleteFailed(StoreError),
    #[error("no member called {0:?}")]
    NoSuchMember(String),
}

impl HasErrorCode for AdminError {
    fn error_code(&self) -> ErrorCode {
        match self {
            AdminError::Replaying
            | AdminError::NoIngester
            | AdminError::FlushFailed(_)
            | AdminError::DeleteFailed(_) => ErrorCode::Unavailable,
            AdminError::DeletionDisabled => ErrorCode::Forbidden,
            AdminError::InvalidTenant(_) => ErrorCode::BadRequest,
            AdminError::NoSuchMember(_) | AdminError::NoCompactor => ErrorCode::NotFound,
        }
    }
}

#[derive(Clone)]
pub(crate) struct AdminState {
    pub membership: Membership,
    /// Set once the ingester has replayed its WAL.
    pub ingester: Arc<OnceLock<Arc<Ingester>>>,
    /// Set when this node runs an ingester that is still replaying its WAL.
    pub expects_ingester: bool,
    pub metrics: PrometheusHandle,
    pub store: BlockStore,
    /// Who may call the state-changing endpoints.
    pub auth: auth::AdminAuth,
    /// Cancelling it starts the node's shutdown sequence (`POST /shutdown`).
    pub shutdown: tokio_util::sync::CancellationToken,
    /// For calls to the other nodes' HTTP API (a forwarded forget).
    pub peers: PeerHttp,
    /// The node's named background workers, for `/status/workers`.
    pub workers: Workers,
    /// What `/ring` and `/ready` judge the rings against.
    pub replication: ReplicationFactor,
    /// This node's roles (what `/ready` asks of it).
    pub roles: Roles,
    /// The per-tenant limits in force, for `/status/overrides`.
    pub overrides: Arc<crate::overrides::LiveOverrides>,
}

impl AdminState {
    /// `None` when ready, else why not. Each role is ready when it can serve: an ingester
    /// once its WAL is replayed and while it reaches a gossip peer, a distributor once enough ingesters are ACTIVE to take a
    /// write (the write quorum), a querier once enough are there to answer a read (the
    /// read quorum); every node once it has joined the gossip cluster.
    pub(crate) fn not_ready_reason(&self) -> Option<String> {
        if self.expects_ingester && !self.ingester.get().is_some_and(|i| i.is_serving()) {
            return Some("ingester is replaying its WAL".into());
        }
        if !self.membership.has_joined() {
            return Some("not joined to the gossip cluster yet".into());
        }
        if self.roles.contains(Roles::INGESTER) && self.membership.is_cut_off() {
            return Some("ingester: no gossip peer reachable (every peer declared down, or none heard from for as long as SWIM takes to declare one down)".into());
        }
        let view = self.membership.view();
        let rf = self.replication;
        if self.roles.contains(Roles::DISTRIBUTOR) && view.writers.len() < rf.write_quorum() {
            return Some(format!(
                "distributor: {} ACTIVE ingesters, {} needed to take a write",
                view.writers.len(),
                rf.write_quorum()
            ));
        }
        if self.roles.contains(Roles::QUERIER) && view.readers.len() < rf.read_quorum() {
            return Some(format!(
                "querier: {} ingesters to read from, {} needed to answer a read",
                view.readers.len(),
                rf.read_quorum()
            ));
        }
        None
    }
}

pub(crate) fn router(state: AdminState) -> Router {
    // Every state-changing call passes [`auth`] first, in one layer. It wraps the
    // methods only, so a wrong method is still 405.
    let guard = || axum::middleware::from_fn_with_state(state.clone(), require_admin);
    Router::new()
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .route("/ring", get(ring))
        .route("/status/buildinfo", get(buildinfo))
        // Where Tempo serves it, and Grafana and tools read it.
        .route("/api/status/buildinfo", get(buildinfo))
        .route("/status/workers", get(workers))
        .route("/status/overrides", get(overrides))
        .route("/api/echo", get(|| async { "echo" }))
        .route("/flush", post(flush).route_layer(guard()))
        .route("/shutdown", post(shutdown).route_layer(guard()))
        .route("/ring/forget/{name}", post(forget).route_layer(guard()))
        .route(
            "/api/admin/tenants/{tenant}",
            delete(delete_tenant).route_layer(guard()),
        )
        .with_state(state)
}

/// The guard of the state-changing routes: [`auth::AdminAuth::check`], or the refusal.
async fn require_admin(
    State(s): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match s.auth.check(peer.ip(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(denied) => {
            metrics::counter!("ringtail_admin_refused_total").increment(1);
            crate::error::text_response(&denied)
        }
    }
}

async fn ready(State(s): State<AdminState>) -> Response {
    match s.not_ready_reason() {
        None => (StatusCode::OK, "ready\n").into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        )
            .into_response(),
    }
}

async fn metrics_text(State(s): State<AdminState>) -> Response {
    s.metrics.run_upkeep();
    if let Some(i) = s.ingester.get() {
        metrics::gauge!("ringtail_ingester_live_traces").set(i.live_trace_count() as f64);
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        s.metrics.render(),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct ForgetParams {
    /// `local`: only this node (what a forwarded request asks).
    scope: Option<String>,
}

/// `POST /ring/forget/{name}`: declares a member down in the gossip cluster, or drops an
/// absent (crashed) ingester from the count towards the replication factor, on this node
/// and on every member it knows (each keeps its own absent list). For operators;
/// crashed members leave the rings on their own within ~5 s.
async fn forget(
    State(s): State<AdminState>,
    Path(name): Path<String>,
    Query(params): Query<ForgetParams>,
) -> Response {
    let here = s.membership.forget(&name).await;
    if params.scope.as_deref() == Some("local") {
        return if here {
            (StatusCode::OK, format!("{name} forgotten\n")).into_response()
        } else {
            text_response(&AdminError::NoSuchMember(name))
        };
    }
    let me = s.membership.me();
    let peers: Vec<std::net::SocketAddr> = s
        .membership
        .view()
        .members
        .iter()
        .filter(|m| m.identity.gossip != me.gossip && m.identity.name != name)
        .map(|m| m.identity.http)
        .collect();
    let path = format!("/ring/forget/{name}?scope=local");
    let credentials = s.auth.header_value();
    let answers = futures::future::join_all(peers.iter().map(|addr| {
        let mut request = s.peers.client().post(s.peers.url(addr, &path));
        if let Some(value) = &credentials {
            request = request.header(header::AUTHORIZATION, value);
        }
        let request = request.send();
        async move { matches!(request.await, Ok(r) if r.status() == StatusCode::OK) }
    }))
    .await;
    let elsewhere = answers.iter().filter(|ok| **ok).count();
    if here || elsewhere > 0 {
        let text = format!(
            "{name} forgotten here: {here}; on {elsewhere} of {} other members\n",
            peers.len()
        );
        (StatusCode::OK, text).into_response()
    } else {
        text_response(&AdminError::NoSuchMember(name))
    }
}

/// A node that starts while an ingester is absent has not seen it go down: once joined,
/// it reads its peers' `/ring` and counts their absent ingesters too (see the membership
/// module doc). Retries until some peer answered, or `stop`.
pub(crate) async fn learn_absent_ingesters(
    membership: Membership,
    http: PeerHttp,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        if membership.has_joined() {
            let me = membership.me();
            let mut peers: Vec<(bool, std::net::SocketAddr)> = membership
                .view()
                .members
                .iter()
                .filter(|m| m.identity.gossip != me.gossip)
                .map(|m| (!m.identity.is_ingester(), m.identity.http))
                .collect();
            // Ingesters first: they have run longest in a rolling deployment of the rest.
            peers.sort();
            let mut answered = false;
            for (_, addr) in peers.iter().take(3) {
                let Some(ring) = fetch_ring(&http, *addr).await else {
                    continue;
                };
                answered = true;
                membership.adopt_absent(ring.absent()).await;
            }
            if answered || peers.is_empty() {
                return;
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
        }
    }
}

async fn fetch_ring(http: &PeerHttp, addr: std::net::SocketAddr) -> Option<RingDoc> {
    let resp = http
        .client()
        .get(http.url(addr, "/ring"))
        .header(header::ACCEPT, "application/json")
        .send()
        .await
        .ok()?;
    resp.json().await.ok()
}

/// `POST /shutdown`: starts the same shutdown sequence as SIGTERM (`node/mod.rs` documents
/// the steps) and answers at once; the process exits 0 when the sequence is done.
async fn shutdown(State(s): State<AdminState>) -> Response {
    s.shutdown.cancel();
    (
        StatusCode::ACCEPTED,
        "shutting down: LEAVING, draining, flushing, leaving the cluster\n",
    )
        .into_response()
}

/// `POST /flush`: cut every trace and head block now and flush every pending block.
/// Answers once the round is done, with what it did (`blocks_pending` > 0 means some
/// uploads failed and are being retried).
async fn flush(State(s): State<AdminState>) -> Response {
    let Some(ingester) = s.ingester.get() else {
        return text_response(&if s.expects_ingester {
            AdminError::Replaying
        } else {
            AdminError::NoIngester
        });
    };
    match ingester.cut_and_flush(true).await {
        Ok(stats) => axum::Json(stats).into_response(),
        Err(e) => text_response(&AdminError::FlushFailed(e)),
    }
}

/// `DELETE /api/admin/tenants/{tenant}` (bearer `admin_token`, on a compactor, which owns
/// what the store keeps): deletes every object of the tenant that the object store lists,
/// whichever node received its data. Traces the ingesters still hold in memory or WAL are
/// flushed later; delete again after `max_block_duration` to catch them.
async fn delete_tenant(State(s): State<AdminState>, Path(tenant): Path<String>) -> Response {
    // Deleting data is off unless a token is configured, even from loopback.
    if matches!(s.auth, auth::AdminAuth::LoopbackOnly) {
        return text_response(&AdminError::DeletionDisabled);
    }
    if !s.roles.contains(Roles::COMPACTOR) {
        return text_response(&AdminError::NoCompactor);
    }
    let tenant = match TenantId::parse(&tenant) {
        Ok(t) => t,
        Err(e) => return text_response(&AdminError::InvalidTenant(e)),
    };
    match crate::storage::retention::delete_tenant(&s.store, tenant.as_str()).await {
        Ok(deleted) => axum::Json(json!({ "tenant": tenant.as_str(), "objects_deleted": deleted }))
            .into_response(),
        Err(e) => text_response(&AdminError::DeleteFailed(e)),
    }
}

async fn buildinfo() -> Response {
    axum::Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "revision": option_env!("RINGTAIL_GIT_REVISION").unwrap_or("unknown"),
        "branch": option_env!("RINGTAIL_GIT_BRANCH").unwrap_or(""),
        "buildUser": "",
        "buildDate": option_env!("RINGTAIL_BUILD_DATE").unwrap_or(""),
        "goVersion": "",
        "rustVersion": option_env!("RINGTAIL_RUSTC_VERSION").unwrap_or("unknown"),
    }))
    .into_response()
}

/// `GET /status/workers`: what each background worker last did, in the order they
/// started: `{"workers": [{"name", "rounds", "last_run_unix", "last_error"}, ...]}`.
async fn workers(State(s): State<AdminState>) -> Response {
    // A struct, not `json!`, so each worker's fields keep their order (name first).
    #[derive(serde::Serialize)]
    struct Doc {
        workers: Vec<crate::telemetry::WorkerReport>,
    }
    axum::Json(Doc {
        workers: s.workers.reports(),
    })
    .into_response()
}

/// `GET /status/overrides`: the per-tenant limits in force (`defaults`, and each
/// overridden tenant in full).
async fn overrides(State(s): State<AdminState>) -> Response {
    axum::Json(s.overrides.in_force()).into_response()
}

async fn ring(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    let view = s.membership.view();
    let me = s.membership.me();
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"));
    if wants_json {
        return axum::Json(RingDoc::of(&view, &me, s.replication)).into_response();
    }
    axum::response::Html(ring_page::render(&me, &view, s.replication).into_string()).into_response()
}

//! Querier: trace by ID over the ingesters, with read quorum.
//!
//! Which ingesters are asked: every ACTIVE or LEAVING ingester, not only the trace's
//! current replicas, so a trace written before a membership change (an ingester joined
//! or left, moving tokens) is still found where it was written. The read quorum counts
//! the trace's current replicas: it succeeds once `read_quorum` of them answered, then
//! waits up to `read_linger` for everyone else, and merges whatever arrived.
//! Since `read_quorum + write_quorum > replication_factor`, an acked trace is in at
//! least one of the quorum's answers as long as the replica set did not change.
//!
//! Blocks: every `blocklist_poll` the querier lists each tenant's visible blocks in the
//! object store; a lookup searches them (ID range → filter → index → page) at the same
//! time as it asks the ingesters. Ingesters keep a flushed block queryable for
//! `complete_block_timeout` (> 2 × `blocklist_poll`), so there is no window in which an
//! acked trace is in neither place. Answers from ingesters and blocks (three replicas'
//! copies) are merged and de-duplicated.

pub(crate) mod http;
mod merge;
mod search;
pub(crate) mod search_http;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use thiserror::Error;

pub use merge::span_count;
pub(crate) use merge::{merge_answers, partial_message, tempo_v1_json, tempo_v2_json, MergedTrace};

use crate::cluster::Membership;
use crate::error::{ErrorCode, HasErrorCode};
use crate::model::{TenantError, TenantId, TraceId};
use crate::ring::{QuorumTracker, ReplicaSet, ReplicationFactor, TenantSeed, Token};
use crate::rpc::proto::FindTraceRequest;
use crate::rpc::quorum::{call_with_quorum, CallPolicy};
use crate::rpc::IngesterPool;
use crate::storage::block::BlockMeta;
use crate::storage::BlockStore;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug)]
pub(crate) struct QuerierSettings {
    pub replication: ReplicationFactor,
    pub read_timeout: Duration,
    /// Timeout of one search or tag request on one ingester.
    pub search_timeout: Duration,
    /// How a search over the store's blocks is split and run.
    pub search_jobs: crate::search::jobs::JobLimits,
    pub read_linger: Duration,
    pub multitenancy_enabled: bool,
    /// Per-tenant limits (the tag requests' byte cap).
    pub overrides: Arc<crate::overrides::LiveOverrides>,
}

#[derive(Debug, Error)]
pub(crate) enum QueryError {
    #[error("read quorum not reached ({needed} replica answers needed); failed: {}", failures.join("; "))]
    QuorumFailed {
        needed: usize,
        failures: Vec<String>,
    },
    #[error("not enough ingesters to read from: {available} available, {needed} needed")]
    NotEnoughIngesters { available: usize, needed: usize },
    #[error("invalid trace ID: {0}")]
    BadTraceId(#[from] crate::model::TraceIdError),
    #[error(transparent)]
    Tenant(#[from] crate::model::TenantError),
    #[error("trace not found")]
    NotFound,
}

impl HasErrorCode for QueryError {
    fn error_code(&self) -> ErrorCode {
        match self {
            QueryError::QuorumFailed { .. } | QueryError::NotEnoughIngesters { .. } => {
                ErrorCode::Unavailable
            }
            QueryError::BadTraceId(_) | QueryError::Tenant(TenantError::Invalid(_)) => {
                ErrorCode::BadRequest
            }
            QueryError::Tenant(TenantError::Missing) => ErrorCode::Unauthenticated,
            QueryError::NotFound => ErrorCode::NotFound,
        }
    }
}

pub(crate) struct Querier {
    settings: QuerierSettings,
    membership: Membership,
    clients: Arc<dyn IngesterPool>,
    store: BlockStore,
    blocklists: RwLock<HashMap<String, Vec<BlockMeta>>>,
}

impl Querier {
    pub(crate) fn new(
        settings: QuerierSettings,
        membership: Membership,
        clients: impl IngesterPool + 'static,
        store: BlockStore,
    ) -> Arc<Self> {
        Arc::new(Self {
            settings,
            membership,
            clients: Arc::new(clients),
            store,
            blocklists: RwLock::default(),
        })
    }

    /// Refreshes the block lists every `every` until `stop`, and at once whenever an
    /// ingester stops being readable (it flushed its data before leaving: the blocks must
    /// be listed before its copies are missed).
    pub(crate) async fn poll_blocklists(&self, every: Duration, stop: CancellationToken) {
        let mut view = self.membership.watch_view();
        let mut readers = view.borrow().readers.len();
        loop {
            self.refresh_blocklists().await;
            let next = tokio::time::Instant::now() + every;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep_until(next) => break,
                    changed = view.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        let now = view.borrow().readers.len();
                        let shrank = now < readers;
                        readers = now;
                        if shrank {
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Lists every tenant's visible blocks. A tenant whose listing fails keeps its
    /// previous list; an empty store is a normal state.
    pub(crate) async fn refresh_blocklists(&self) {
        let tenants = match self.store.tenants().await {
            Ok(t) => t,
            Err(e) => {
                metrics::counter!("ringtail_querier_blocklist_errors_total").increment(1);
                tracing::warn!(error = %e, "listing tenants in the object store failed");
                return;
            }
        };
        let mut lists = HashMap::new();
        for tenant in tenants {
            match self.store.list_blocks(&tenant).await {
                Ok(metas) => {
                    lists.insert(tenant, crate::storage::block::without_replaced(metas));
                }
                Err(e) => {
                    metrics::counter!("ringtail_querier_blocklist_errors_total").increment(1);
                    tracing::warn!(tenant, error = %e, "listing blocks failed");
                    if let Some(old) = self
                        .blocklists
                        .read()
                        .ok()
                        .and_then(|l| l.get(&tenant).cloned())
                    {
                        lists.insert(tenant, old);
                    }
                }
            }
        }
        let listed: std::collections::HashSet<String> = lists
            .values()
            .flatten()
            .map(|m| format!("{}/{}", m.tenant, m.block_id))
            .collect();
        self.store.retain_cached(|key| listed.contains(key));
        let blocks: usize = lists.values().map(Vec::len).sum();
        metrics::gauge!("ringtail_querier_blocklist_blocks").set(blocks as f64);
        if let Ok(mut l) = self.blocklists.write() {
            *l = lists;
        }
    }

    /// The trace's bytes in every listed block of the tenant that holds it.
    async fn find_in_blocks(&self, tenant: &TenantId, id: &TraceId) -> Vec<Bytes> {
        let metas = self
            .blocklists
            .read()
            .ok()
            .and_then(|l| l.get(tenant.as_str()).cloned())
            .unwrap_or_default();
        let lookups = metas.iter().map(|m| self.store.find_trace(m, id));
        let mut found = Vec::new();
        for (meta, result) in metas.iter().zip(futures::future::join_all(lookups).await) {
            match result {
                Ok(Some(bytes)) => found.push(bytes),
                Ok(None) => {}
                Err(e) => {
                    metrics::counter!("ringtail_storage_unreadable_blocks_total").increment(1);
                    tracing::warn!(block_id = meta.block_id, error = %e, "skipping an unreadable block");
                }
            }
        }
        found
    }

    pub(crate) fn settings(&self) -> &QuerierSettings {
        &self.settings
    }

    /// The trace, merged from the ingesters' answers; `None` if nobody holds it.
    pub(crate) async fn find_trace(
        &self,
        tenant: &TenantId,
        id: TraceId,
    ) -> Result<Option<MergedTrace>, QueryError> {
        let started = Instant::now();
        let (from_ingesters, from_blocks) = tokio::join!(
            self.find_in_ingesters(tenant, id),
            self.find_in_blocks(tenant, &id)
        );
        let mut answers = from_ingesters?;
        answers.extend(from_blocks);
        metrics::histogram!("ringtail_querier_find_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        if answers.is_empty() {
            return Ok(None);
        }
        Ok(Some(merge_answers(&answers)))
    }

    /// The ingesters' answers, with read quorum over the trace's replicas.
    async fn find_in_ingesters(
        &self,
        tenant: &TenantId,
        id: TraceId,
    ) -> Result<Vec<Bytes>, QueryError> {
        let view = self.membership.view();
        let rf = self.settings.replication;
        let readers = &view.readers;
        // The trace's current replicas, as indices into `readers`.
        let replicas = view
            .write_ring
            .replicas(Token::for_trace(TenantSeed::new(tenant), &id), rf.factor());
        let mut replica_ids: Vec<u16> = replicas
            .as_slice()
            .iter()
            .filter_map(|&w| {
                let addr = view.writers[w as usize].gossip;
                readers
                    .iter()
                    .position(|r| r.gossip == addr)
                    .map(|p| p as u16)
            })
            .collect();
        let needed = rf.read_quorum();
        if readers.len() < needed {
            return Err(QueryError::NotEnoughIngesters {
                available: readers.len(),
                needed,
            });
        }
        if replica_ids.len() < needed {
            // No usable write ring (e.g. every ingester is LEAVING): any readers count.
            replica_ids = (0..readers.len() as u16).collect();
        }
        let group = ReplicaSet::from_ids(replica_ids);
        let request = FindTraceRequest {
            tenant: tenant.as_str().to_owned(),
            trace_id: Bytes::copy_from_slice(&id.0),
        };
        let calls = readers
            .iter()
            .enumerate()
            .map(|(i, reader)| {
                let client = self.clients.client(reader.grpc);
                (i as u16, client.find_trace_by_id(request.clone()))
            })
            .collect();
        let tracker = QuorumTracker::new([group], needed);
        let policy = CallPolicy {
            timeout: self.settings.read_timeout,
            linger: self.settings.read_linger,
            on_failure: CallPolicy::ignore_failure,
        };
        let outcome = call_with_quorum(calls, tracker, policy).await;
        if !outcome.reached {
            metrics::counter!("ringtail_querier_quorum_failures_total").increment(1);
            return Err(QueryError::QuorumFailed {
                needed,
                failures: outcome.failures(|i| readers[i as usize].name.clone()),
            });
        }
        Ok(outcome
            .outcomes
            .into_iter()
            .filter_map(|o| o.result.ok().flatten())
            .collect())
    }
}

#[cfg(test)]
mod tests;

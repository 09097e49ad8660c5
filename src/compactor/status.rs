//! What the compactor knows of each tenant after its last pass, for `GET
//! /status/compactor`: the blocks readers see per compaction level (count and bytes),
//! the blocks waiting for a merge in this compactor's windows, and when the tenant's
//! last pass ran and last succeeded.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;

use crate::storage::block::BlockMeta;

/// Blocks of one compaction level.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Level {
    pub blocks: usize,
    pub data_bytes: u64,
    pub search_bytes: u64,
    pub traces: u64,
}

/// One tenant as the last pass saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct TenantStatus {
    /// The blocks readers see (none replaced), by compaction level.
    pub levels: BTreeMap<u32, Level>,
    /// Replaced blocks kept until `compacted_block_retention_ms` has passed.
    pub replaced_blocks: usize,
    /// Blocks waiting in the merges of the windows this compactor owns.
    pub waiting_blocks: usize,
    pub last_pass_unix: u64,
    /// The last pass in which every listing, merge, mark and deletion succeeded.
    pub last_success_unix: Option<u64>,
    pub last_error: Option<String>,
}

impl TenantStatus {
    /// The levels of `metas` (a tenant's listing), skipping replaced blocks.
    pub(crate) fn levels_of(metas: &[BlockMeta]) -> (BTreeMap<u32, Level>, usize) {
        let replaced = crate::storage::block::replaced_ids(metas);
        let mut levels: BTreeMap<u32, Level> = BTreeMap::new();
        for m in metas
            .iter()
            .filter(|m| !replaced.contains(m.block_id.as_str()))
        {
            let l = levels.entry(m.compaction_level).or_default();
            l.blocks += 1;
            l.data_bytes += m.data_bytes;
            l.search_bytes += m.search_bytes;
            l.traces += m.total_traces;
        }
        let replaced = metas
            .iter()
            .filter(|m| replaced.contains(m.block_id.as_str()))
            .count();
        (levels, replaced)
    }
}

/// Every tenant's status, shared by the compactor worker and the HTTP route.
#[derive(Debug, Default)]
pub(crate) struct CompactorStatus {
    tenants: Mutex<BTreeMap<String, TenantStatus>>,
}

impl CompactorStatus {
    /// Records a tenant's pass: `seen` (levels, replaced, waiting) when its listing
    /// succeeded, and the error that stopped or spoiled it, if any.
    pub(crate) fn record(
        &self,
        tenant: &str,
        now_unix: u64,
        seen: Option<(BTreeMap<u32, Level>, usize, usize)>,
        error: Option<String>,
    ) {
        let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        let t = tenants.entry(tenant.to_owned()).or_default();
        t.last_pass_unix = now_unix;
        if let Some((levels, replaced, waiting)) = seen {
            t.levels = levels;
            t.replaced_blocks = replaced;
            t.waiting_blocks = waiting;
        }
        if error.is_none() {
            t.last_success_unix = Some(now_unix);
        }
        t.last_error = error;
    }

    /// Forgets tenants the store no longer lists.
    pub(crate) fn retain(&self, listed: &[String]) {
        self.tenants
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|t, _| listed.contains(t));
    }

    pub(crate) fn snapshot(&self) -> BTreeMap<String, TenantStatus> {
        self.tenants
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// `GET /status/compactor`: `{"tenants": {<tenant>: TenantStatus}}`.
pub(crate) fn router(status: Arc<CompactorStatus>) -> Router {
    Router::new()
        .route("/status/compactor", get(show))
        .with_state(status)
}

async fn show(State(status): State<Arc<CompactorStatus>>) -> Response {
    axum::Json(serde_json::json!({ "tenants": status.snapshot() })).into_response()
}

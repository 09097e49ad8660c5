//! One compaction pass over every tenant of a store: list, plan, then the merges, marks
//! and deletions of the windows this compactor owns. A failed merge is logged, counted
//! and retried next pass; the others go on.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;

use super::plan::{self, Listed, Merge, PlanSettings};
use super::run::{compact, CompactError, Compacted};
use super::status::{CompactorStatus, Level, TenantStatus};
use crate::storage::{BlockStore, StoreError};

/// Who runs a pass and with what: the store, the compactor's name (written in outputs'
/// metas), a folder for scratch files, how many merges run at once, and its status.
#[derive(Clone, Copy)]
pub(crate) struct Worker<'a> {
    pub store: &'a BlockStore,
    pub name: &'a str,
    pub scratch: &'a Path,
    pub concurrency: usize,
    /// Where each tenant's outcome is recorded.
    pub status: &'a CompactorStatus,
}

/// What a pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub(crate) struct PassStats {
    pub merges: usize,
    pub failed_merges: usize,
    /// Tenants whose listing, marks or deletions failed.
    pub failed_tenants: usize,
    pub marked: usize,
    pub deleted: usize,
    /// Blocks that wait for a merge in the windows this compactor owns.
    pub waiting: usize,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// Runs a pass at `now`. `settings` gives each tenant's plan settings; `owns(tenant,
/// window)` whether this compactor does that window's work (the ring's answer). A
/// tenant's merges (their inputs never overlap) run `worker.concurrency` at a time. A
/// tenant whose listing, marks or deletions fail is counted and shown on
/// `/status/compactor`; the others go on.
pub(crate) async fn run_pass(
    worker: Worker<'_>,
    settings: &(dyn Fn(&str) -> PlanSettings + Sync),
    owns: &(dyn Fn(&str, u64) -> bool + Sync),
    now: SystemTime,
) -> Result<PassStats, StoreError> {
    let mut stats = PassStats::default();
    let now_secs = unix_secs(now);
    let tenants = worker.store.tenants().await?;
    for tenant in &tenants {
        let failed_before = stats.failed_merges;
        let (seen, error) = match tenant_pass(
            worker,
            tenant,
            &settings(tenant),
            owns,
            now_secs,
            &mut stats,
        )
        .await
        {
            Ok(seen) => {
                let failed = stats.failed_merges - failed_before;
                (
                    Some(seen),
                    (failed > 0).then(|| format!("{failed} merges failed")),
                )
            }
            Err(e) => {
                stats.failed_tenants += 1;
                tracing::warn!(tenant, error = %e, "a tenant's compaction pass failed; retrying next pass");
                (None, Some(e.to_string()))
            }
        };
        if let Some((_, _, waiting)) = &seen {
            metrics::gauge!("ringtail_compactor_backlog_blocks", "tenant" => tenant.clone())
                .set(*waiting as f64);
        }
        worker.status.record(tenant, now_secs, seen, error);
    }
    worker.status.retain(&tenants);
    metrics::counter!("ringtail_compactor_bytes_read_total").increment(stats.bytes_read);
    metrics::counter!("ringtail_compactor_bytes_written_total").increment(stats.bytes_written);
    metrics::counter!("ringtail_compactor_blocks_deleted_total").increment(stats.deleted as u64);
    Ok(stats)
}

/// One tenant's share of a pass: list, plan, merge, mark, delete. Returns the levels
/// readers see before the merges, the replaced blocks and the blocks waiting.
async fn tenant_pass(
    worker: Worker<'_>,
    tenant: &str,
    s: &PlanSettings,
    owns: &(dyn Fn(&str, u64) -> bool + Sync),
    now_secs: u64,
    stats: &mut PassStats,
) -> Result<(BTreeMap<u32, Level>, usize, usize), StoreError> {
    let store = worker.store;
    let listed: Vec<Listed> = store
        .list_marked(tenant)
        .await?
        .into_iter()
        .map(|(meta, mark)| Listed {
            meta,
            marked_unix_secs: mark.map(unix_secs),
        })
        .collect();
    let window_of = |id: &str| {
        listed
            .iter()
            .find(|b| b.meta.block_id == id)
            .map(|b| plan::window_of(&b.meta, s.window_secs))
    };
    let mine = |id: &str| window_of(id).is_some_and(|w| owns(tenant, w));
    let p = plan::plan(tenant, &listed, now_secs, s);
    let metas: Vec<_> = listed.iter().map(|b| b.meta.clone()).collect();
    let (levels, replaced) = TenantStatus::levels_of(&metas);
    let owned: Vec<&Merge> = p.merges.iter().filter(|m| owns(tenant, m.window)).collect();
    // The parts of a closed window's merge share their inputs: each counted once.
    let waiting = owned
        .iter()
        .flat_map(|m| &m.inputs)
        .collect::<std::collections::HashSet<_>>()
        .len();
    let runs: Vec<_> = owned
        .iter()
        .map(|&merge| timed(worker, merge, &metas, now_secs))
        .collect();
    let mut merges = futures::stream::iter(runs).buffer_unordered(worker.concurrency.max(1));
    while let Some((merge, result, took)) = merges.next().await {
        record(stats, tenant, merge, result, took);
    }
    drop(merges);
    for (id, by) in p.mark.iter().filter(|(id, _)| mine(id)) {
        store.mark_replaced(tenant, id, by).await?;
        stats.marked += 1;
    }
    for id in p.delete.iter().filter(|id| mine(id)) {
        store.delete_block(tenant, id).await?;
        stats.deleted += 1;
    }
    stats.waiting += waiting;
    Ok((levels, replaced, waiting))
}

/// One merge, with how long it took.
async fn timed<'a>(
    worker: Worker<'_>,
    merge: &'a Merge,
    metas: &[crate::storage::block::BlockMeta],
    now_secs: u64,
) -> (&'a Merge, Result<Compacted, CompactError>, Duration) {
    let started = std::time::Instant::now();
    let running = metrics::gauge!("ringtail_compactor_merges_running");
    running.increment(1.0);
    let result = compact(
        worker.store,
        merge,
        metas,
        worker.name,
        worker.scratch,
        now_secs,
    )
    .await;
    running.decrement(1.0);
    (merge, result, started.elapsed())
}

/// Counts and logs one merge's outcome.
fn record(
    stats: &mut PassStats,
    tenant: &str,
    merge: &Merge,
    result: Result<Compacted, CompactError>,
    took: Duration,
) {
    match result {
        Ok(Compacted { output: None, .. }) => {
            tracing::debug!(
                tenant,
                output = merge.output,
                "an empty range of a merge: nothing to write"
            );
        }
        Ok(Compacted {
            output: Some(output),
            bytes_read,
            ..
        }) => {
            stats.merges += 1;
            stats.bytes_read += bytes_read;
            stats.bytes_written += output.data_bytes + output.search_bytes;
            metrics::counter!("ringtail_compactor_merges_total", "outcome" => "ok").increment(1);
            metrics::histogram!("ringtail_compactor_merge_duration_seconds")
                .record(took.as_secs_f64());
            tracing::info!(
                tenant,
                output = output.block_id,
                inputs = merge.inputs.len(),
                level = merge.level,
                part = ?merge.part,
                traces = output.total_traces,
                bytes = output.data_bytes,
                "merged blocks"
            );
        }
        Err(e) => {
            stats.failed_merges += 1;
            metrics::counter!("ringtail_compactor_merges_total", "outcome" => "failed")
                .increment(1);
            tracing::warn!(tenant, output = merge.output, error = %e, "a merge failed; retrying next pass");
        }
    }
}

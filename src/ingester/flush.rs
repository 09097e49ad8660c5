//! Flush rounds: pending local blocks go to the object store in [`UploadHealth`]'s order,
//! quarantined ones are retried on their slow schedule, and flushed ones are retired once
//! every querier lists them. The blocks live in each tenant's [`Instance`]; the order,
//! backoff and quarantine rules in [`UploadHealth`].

use std::collections::HashMap;
use std::time::Instant;

use super::instance::Instance;
use super::live::lock;
use super::local_blocks::{BlockState, FLUSHED_MARKER, QUARANTINED_MARKER};
use super::upload_health::{BlockKey, Next, Round, UploadHealth, QUARANTINE_RETRY};
use super::{Ingester, RoundStats};
use crate::storage::block::BlockMeta;
use crate::storage::{tenant_segment, StoreError};

impl Ingester {
    /// Uploads pending local blocks in [`UploadHealth`]'s order (which also decides the
    /// backoff while the store is down and the quarantine of a block that keeps failing
    /// while it works), retries quarantined blocks every `QUARANTINE_RETRY`, and removes
    /// flushed blocks older than `complete_block_timeout`. `force` ignores the backoff.
    pub(super) async fn run_flush(&self, force: bool) -> RoundStats {
        let _round = self.flush_round.lock().await;
        let mut stats = RoundStats::default();
        let now = Instant::now();
        let health = |f: &mut dyn FnMut(&mut UploadHealth)| {
            f(&mut lock(&self.upload_health));
        };
        let mut backing_off = false;
        health(&mut |h| backing_off = h.backing_off(now));
        let (mut due, retries) = self.due(now);
        if backing_off && !force {
            due.clear();
        }
        health(&mut |h| h.order(&mut due));
        let mut round = Round::default();
        let mut errors: HashMap<BlockKey, String> = HashMap::new();
        for (_, key) in due {
            match self.upload(&key).await {
                Ok(()) => {
                    stats.blocks_flushed += 1;
                    health(&mut |h| h.succeeded(&mut round, &key));
                }
                Err(e) => {
                    stats.flush_failures += 1;
                    metrics::counter!("ringtail_ingester_flush_failures_total").increment(1);
                    tracing::warn!(tenant = key.0, block_id = key.1, error = %e, "flush failed; the WAL and the local block keep the data; retrying");
                    errors.insert(key.clone(), e.to_string());
                    let mut next = Next::TryNext;
                    health(&mut |h| next = h.failed(&mut round, key.clone()));
                    if next == Next::EndRound {
                        break;
                    }
                }
            }
        }
        let reachable = round.needs_probe() && self.remote.tenants().await.is_ok();
        let mut poisoned = Vec::new();
        health(&mut |h| {
            poisoned = h.finish(std::mem::take(&mut round), reachable, Instant::now());
            if h.store_failures() > 0 {
                tracing::warn!(
                    rounds = h.store_failures(),
                    "the object store looks down; backing off"
                );
            }
        });
        for key in poisoned {
            let why = errors.remove(&key).unwrap_or_default();
            self.quarantine(&key, &why);
        }
        for key in retries {
            match self.upload(&key).await {
                Ok(()) => {
                    stats.blocks_flushed += 1;
                    tracing::info!(
                        tenant = key.0,
                        block_id = key.1,
                        "a quarantined block flushed after all"
                    );
                }
                Err(e) => {
                    tracing::warn!(tenant = key.0, block_id = key.1, error = %e, "a quarantined block still does not flush");
                    self.set_state(
                        &key,
                        BlockState::Quarantined {
                            retry_at: Instant::now() + QUARANTINE_RETRY,
                        },
                    );
                }
            }
        }
        self.retire_flushed();
        stats.blocks_pending = self.count(BlockState::is_pending);
        stats.blocks_quarantined = self.count(BlockState::is_quarantined);
        self.update_gauges();
        stats
    }

    /// Pending blocks `(created, key)`, and quarantined blocks due for a retry.
    fn due(&self, now: Instant) -> (Vec<(u64, BlockKey)>, Vec<BlockKey>) {
        let mut pending = Vec::new();
        let mut retries = Vec::new();
        for i in self.instances() {
            let due = i.flush_due(now);
            let key = |id| (i.tenant.to_string(), id);
            pending.extend(due.pending.into_iter().map(|(at, id)| (at, key(id))));
            retries.extend(due.retries.into_iter().map(key));
        }
        (pending, retries)
    }

    /// Copies a local block to the object store (links it there, in a filesystem store
    /// on the same filesystem) and marks it flushed.
    async fn upload(&self, key: &BlockKey) -> Result<(), StoreError> {
        let (tenant, block_id) = key;
        let started = Instant::now();
        let dir = self.local_dir.join(tenant_segment(tenant)).join(block_id);
        let linked = match self.local_meta(tenant, block_id) {
            Some(meta) => self
                .remote
                .link_block(&dir, &meta)
                .await
                .then_some(meta.data_bytes),
            None => None,
        };
        let bytes = match linked {
            Some(bytes) => bytes,
            None => match self.upload_copy(tenant, block_id).await? {
                Some(bytes) => bytes,
                None => return Ok(()),
            },
        };
        if let Err(e) = std::fs::write(dir.join(FLUSHED_MARKER), b"") {
            tracing::warn!(error = %e, "cannot mark a local block flushed; it will be uploaded again after a restart");
        }
        let _ = std::fs::remove_file(dir.join(QUARANTINED_MARKER));
        self.set_state(key, BlockState::Flushed(Instant::now()));
        metrics::counter!("ringtail_ingester_blocks_flushed_total").increment(1);
        metrics::counter!("ringtail_ingester_flushed_bytes_total").increment(bytes);
        metrics::histogram!("ringtail_ingester_flush_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        tracing::info!(
            tenant,
            block_id,
            bytes,
            linked = linked.is_some(),
            "flushed a block to the object store"
        );
        Ok(())
    }

    /// Reads a local block and uploads a copy; its data bytes, or `None` when the block
    /// vanished from disk (it is forgotten).
    async fn upload_copy(&self, tenant: &str, block_id: &str) -> Result<Option<u64>, StoreError> {
        let block = match self.local.read_block(tenant, block_id).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => {
                tracing::warn!(
                    tenant,
                    block_id,
                    "a local block vanished from disk; forgetting it"
                );
                self.with_instance(tenant, |i| i.forget_block(block_id));
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        self.remote.upload(&block).await?;
        Ok(Some(block.data.len() as u64))
    }

    /// Takes a block whose upload keeps failing while the store works out of the flush
    /// queue, for good (a marker file with the error says so across restarts). It stays
    /// on local disk and readable here; the other replicas' copies reach the store.
    fn quarantine(&self, key: &BlockKey, why: &str) {
        let (tenant, block_id) = key;
        let dir = self.local_dir.join(tenant_segment(tenant)).join(block_id);
        if let Err(e) = std::fs::write(dir.join(QUARANTINED_MARKER), why) {
            tracing::warn!(path = %dir.display(), error = %e, "cannot write a quarantine marker; the block is quarantined until a restart");
        }
        self.set_state(
            key,
            BlockState::Quarantined {
                retry_at: Instant::now() + QUARANTINE_RETRY,
            },
        );
        metrics::counter!("ringtail_ingester_blocks_quarantined_total").increment(1);
        tracing::error!(
            tenant,
            block_id,
            path = %dir.display(),
            error = why,
            "quarantined a local block: its upload keeps failing while the object store works; it stays on local disk and is retried every {} s",
            QUARANTINE_RETRY.as_secs()
        );
    }

    fn local_meta(&self, tenant: &str, block_id: &str) -> Option<BlockMeta> {
        self.existing_instance(tenant)?.block_meta(block_id)
    }

    fn set_state(&self, (tenant, block_id): &BlockKey, state: BlockState) {
        self.with_instance(tenant, |i| i.set_state(block_id, state));
    }

    fn with_instance(&self, tenant: &str, f: impl FnOnce(&Instance)) {
        if let Some(i) = self.existing_instance(tenant) {
            f(&i)
        }
    }

    /// Removes flushed blocks once every querier surely lists them.
    fn retire_flushed(&self) {
        for i in self.instances() {
            for block_id in i.flushed_before(self.policy.complete_block_timeout) {
                let tenant = i.tenant.as_str();
                let dir = self.local_dir.join(tenant_segment(tenant)).join(&block_id);
                i.forget_block(&block_id);
                self.local.forget(&format!("{tenant}/{block_id}"));
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    tracing::warn!(path = %dir.display(), error = %e, "cannot remove a retired local block");
                }
            }
        }
    }

    fn count(&self, which: fn(BlockState) -> bool) -> usize {
        self.instances()
            .iter()
            .map(|i| i.count_blocks(which).0)
            .sum()
    }
}

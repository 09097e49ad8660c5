//! Cut → complete → flush: how traces leave the WAL and memory for the object store.
//!
//! 1. **Cut** (every second, and at once when the live traces outgrow `max_live_bytes`):
//!    traces idle for `trace_idle_period` leave each tenant's live traces for its *head
//!    block* (in memory, bytes compacted into one buffer per trace so push buffers are
//!    released). Above `max_live_bytes`, traces go too, down to three quarters of it, taken
//!    from the tenants holding the most (every tenant keeps up to an equal share, so one
//!    noisy tenant does not push the others' traces out early), each tenant's least
//!    recently appended first: memory stays bounded whatever the load (a trace cut early
//!    and appended to again is in two places, which reads merge).
//! 2. **Complete**: a head block older than `max_block_duration` or larger than
//!    `max_block_bytes` is sealed (by the cut round), then encoded and written to
//!    `<data_dir>/complete/<tenant>/<block>/` (see `local_blocks`) by the completion round,
//!    which runs beside the cuts: a completion never holds up a cut, so the live traces
//!    stay within their budget while a block is encoded. From then on its traces no
//!    longer need the WAL: the WAL is truncated below the oldest record a live trace or
//!    head block still needs.
//! 3. **Flush** (`flush.rs`): complete local blocks are uploaded to the object store (meta
//!    last) with retries and backoff while the store is down; the WAL and the local copy
//!    keep the data meanwhile. The block ID is fixed when the block completes (it is the
//!    local folder's name), so a retried upload, also after a restart, overwrites. A block
//!    whose upload keeps failing while the store works is quarantined (see
//!    `upload_health`): it never holds up the others, and stays here, readable.
//! 4. A flushed block stays on local disk, and queryable here, for
//!    `complete_block_timeout`, longer than a querier needs to list it.
//!
//! A crash at any step loses nothing: until step 2 the WAL holds the data; after it the
//! local block does. A crash between writing a local block and truncating the WAL
//! replays those traces once more into a later block: the same spans in two blocks,
//! which reads de-duplicate; never a half-visible or twice-listed block.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::instance::{Head, Instance};
use super::live::choose_to_free;
use super::local_blocks::{self, LocalBlockError};
use super::{CutScope, Ingester, IngesterError, RoundStats};
use crate::storage::block::{self, BlockInfo, BlockMeta, BlockTrace, EncodedBlock};
use crate::storage::tenant_segment;

/// The longest a push waits for block completions to catch up (see
/// [`Ingester::wait_for_completions`]); well below the distributors' push timeout (2 s by
/// default), so a push that still cannot go on is answered UNAVAILABLE, not timed out.
const COMPLETION_WAIT: Duration = Duration::from_millis(1000);

impl Ingester {
    /// While block completions are behind ([`behind_on_completions`]), holds a push
    /// of `bytes` back until they catch up, for up to [`COMPLETION_WAIT`]: the ingest rate
    /// then follows what the encoder keeps up with, and memory stays bounded. Still
    /// behind by then, or the pushes held already as large as [`may_hold`] allows:
    /// [`IngesterError::Behind`] (UNAVAILABLE, retryable; the trace's other replicas
    /// take it).
    pub(super) async fn wait_for_completions(&self, bytes: usize) -> Result<(), IngesterError> {
        let behind = || {
            let heads = self.sealed_heads.load(Ordering::Relaxed);
            let bytes = self.sealed_bytes.load(Ordering::Relaxed);
            behind_on_completions(heads, bytes, self.policy.max_live_bytes)
                .then_some((heads, bytes))
        };
        if behind().is_none() {
            return Ok(());
        }
        let held = self.held_bytes.fetch_add(bytes, Ordering::Relaxed);
        let _held = Held(&self.held_bytes, bytes);
        if !may_hold(held, bytes, self.policy.max_live_bytes) {
            if let Some((heads, bytes)) = behind() {
                metrics::counter!("ringtail_ingester_pushes_deferred_total").increment(1);
                return Err(IngesterError::Behind { heads, bytes });
            }
            return Ok(());
        }
        metrics::counter!("ringtail_ingester_pushes_held_back_total").increment(1);
        let deadline = tokio::time::Instant::now() + COMPLETION_WAIT;
        loop {
            let counted = self.sealed_counted.notified();
            tokio::pin!(counted);
            // Registered before the check, so a count between the two is not missed.
            counted.as_mut().enable();
            let Some((heads, bytes)) = behind() else {
                return Ok(());
            };
            if tokio::time::timeout_at(deadline, counted).await.is_err() {
                metrics::counter!("ringtail_ingester_pushes_deferred_total").increment(1);
                return Err(IngesterError::Behind { heads, bytes });
            }
        }
    }

    /// Moves idle traces (all of them when `scope` is `All`, none when `Budget`) into head
    /// blocks, then traces over the memory budget, and seals the head blocks that are due
    /// (all with `All`). It never waits for a completion: memory stays within
    /// `max_live_bytes` while a block is being encoded.
    pub(super) async fn run_cut(&self, scope: CutScope) -> RoundStats {
        let _round = self.cut_round.lock().await;
        let force = scope == CutScope::All;
        let mut stats = RoundStats::default();
        let instances = self.instances();
        let mut idle_cut = 0;
        for i in instances.iter().filter(|_| scope != CutScope::Budget) {
            let idle = (!force).then(|| self.policy.idle_for(i.tenant.as_str()));
            let cut = i.cut_idle(idle, &self.next_head_seq);
            self.live_bytes.fetch_sub(cut.bytes, Ordering::Relaxed);
            idle_cut += cut.traces;
        }
        let memory_cut = self.cut_to_budget(&instances);
        for (count, reason) in [
            (idle_cut, if force { "force" } else { "idle" }),
            (memory_cut, "memory"),
        ] {
            if count > 0 {
                metrics::counter!("ringtail_ingester_traces_cut_total", "reason" => reason)
                    .increment(count as u64);
            }
        }
        stats.traces_cut = idle_cut + memory_cut;
        let mut sealed = false;
        for i in &instances {
            let tenant = i.tenant.as_str();
            sealed |= i.seal_if(|h| {
                force
                    || h.created.elapsed() >= self.policy.max_duration_for(tenant)
                    || h.bytes >= self.policy.max_bytes_for(tenant)
            });
        }
        if sealed {
            self.sealed_ready.notify_one();
        }
        self.update_gauges();
        stats
    }

    /// Completes the sealed head blocks (encoded and written to local disk), then
    /// truncates the WAL below what live traces and heads still need.
    pub(super) async fn run_complete(&self) -> Result<RoundStats, LocalBlockError> {
        let _round = self.complete_round.lock().await;
        let mut stats = RoundStats::default();
        let instances = self.instances();
        let mut failed = None;
        for i in &instances {
            for head in i.sealed() {
                // Completions that fall behind run at normal priority, so memory stays bounded.
                let behind = instances.iter().map(|i| i.sealed_count()).sum::<usize>() > 1;
                match self.complete_head(i, &head, behind).await {
                    Ok(meta) => {
                        stats.blocks_completed += 1;
                        i.register(head.seq, meta);
                        // Pushes held back while completions were behind go on at once.
                        self.update_gauges();
                    }
                    // Stays sealed (readable, and holding the WAL back); retried next round.
                    Err(e) => {
                        tracing::error!(tenant = %i.tenant, error = %e, "completing a block failed");
                        failed = Some(e);
                    }
                }
            }
        }
        // No push may sit between its WAL append and its live insert while the watermark
        // is computed (see `Ingester::append_gate`).
        let watermark = {
            let _exclusive = self.append_gate.write().await;
            instances
                .iter()
                .filter_map(|i| i.min_seq())
                .min()
                .unwrap_or_else(|| self.wal.next_seq())
        };
        let _ = self.wal.truncate_before(watermark).await;
        self.update_gauges();
        match failed {
            Some(e) => Err(e),
            None => Ok(stats),
        }
    }

    /// Above `max_live_bytes`, cuts traces down to three quarters of it, from the tenants
    /// holding the most (each tenant keeps up to a fair share; `live::fair_cuts`), each
    /// tenant's least recently appended first. Returns how many traces it cut.
    fn cut_to_budget(&self, instances: &[Arc<Instance>]) -> usize {
        let live = self.live_bytes.load(Ordering::Relaxed);
        if live <= self.policy.max_live_bytes {
            return 0;
        }
        let at_least = live.saturating_sub(self.policy.max_live_bytes / 4 * 3);
        let lives: Vec<_> = instances.iter().map(|i| i.live()).collect();
        let chosen = choose_to_free(&lives, at_least);
        let mut traces = 0;
        for (i, ids) in instances.iter().zip(chosen) {
            let cut = i.cut_these(&ids, &self.next_head_seq);
            self.live_bytes.fetch_sub(cut.bytes, Ordering::Relaxed);
            traces += cut.traces;
        }
        traces
    }

    /// Encodes a sealed head and writes it to local disk, `meta.json` last, fsynced.
    async fn complete_head(
        &self,
        instance: &Instance,
        head: &Head,
        behind: bool,
    ) -> Result<BlockMeta, LocalBlockError> {
        let tenant = &instance.tenant;
        let block_id = local_blocks::block_id(&self.name, tenant, head.seq);
        // Every trace goes into the block's data; the search section holds those this
        // replica indexes (the others are indexed by other replicas).
        let mut traces: Vec<BlockTrace> = Vec::new();
        let mut indexed: Vec<BlockTrace> = Vec::new();
        for (id, held) in &head.traces {
            for d in &held.records {
                let trace = BlockTrace {
                    id: *id,
                    data: d.clone(),
                };
                if held.indexed {
                    indexed.push(trace.clone());
                }
                traces.push(trace);
            }
        }
        let info = BlockInfo {
            tenant: tenant.to_string(),
            block_id: block_id.clone(),
            ingester: self.name.clone(),
            start_unix_nano: if head.start == u64::MAX {
                0
            } else {
                head.start
            },
            end_unix_nano: head.end,
            created_unix_secs: now_unix().as_secs(),
        };
        let dir = self
            .local_dir
            .join(tenant_segment(tenant.as_str()))
            .join(&block_id);
        let written =
            off_the_push_path(!behind, move || -> Result<EncodedBlock, LocalBlockError> {
                traces.sort_by_key(|t| t.id);
                indexed.sort_by_key(|t| t.id);
                // The search section and the data are encoded side by side (the second
                // core, when it is free, halves how long the head stays in memory).
                let timed = |part: &'static str, started: std::time::Instant| {
                    metrics::histogram!("ringtail_ingester_block_encode_seconds", "part" => part)
                        .record(started.elapsed().as_secs_f64());
                };
                let (section, block) = std::thread::scope(|s| {
                    let section = s.spawn(|| {
                        let started = std::time::Instant::now();
                        let section = crate::search::section::build_even_empty(&indexed);
                        timed("search", started);
                        section
                    });
                    let started = std::time::Instant::now();
                    let block = block::encode_sorted(&traces, info, block::LEVEL0_ZSTD_LEVEL);
                    timed("data", started);
                    let section = section
                        .join()
                        .unwrap_or_else(|p| std::panic::resume_unwind(p));
                    (section, block)
                });
                let mut block = block?;
                match section {
                    Ok(s) => {
                        block = block.with_search(s.into(), crate::search::section::VERSION);
                    }
                    // Searches read the data instead.
                    Err(e) => {
                        tracing::warn!(error = %e, "could not build a block's search section")
                    }
                }
                local_blocks::write(&dir, &block)?;
                Ok(block)
            })
            .await
            .map_err(|source| LocalBlockError::Io {
                path: self.local_dir.clone(),
                source,
            })?;
        let block = written?;
        tracing::info!(tenant = %tenant, block_id, traces = block.meta.total_traces, bytes = block.meta.data_bytes, "completed a block");
        metrics::counter!("ringtail_ingester_blocks_completed_total").increment(1);
        Ok(block.meta)
    }
}

/// Whether pushes are held back until completions catch up: more than one
/// sealed head waits for its encoding and together they hold more than `max_live_bytes`.
/// Without it a disk or CPU too slow for the encoder would let sealed heads, and the
/// ingester's memory, grow without bound; with it the trace data in memory stays within
/// about twice `max_live_bytes` plus two head blocks. One head alone never defers pushes,
/// however large a tenant's `max_block_bytes` makes it.
pub(super) fn behind_on_completions(
    sealed_heads: usize,
    sealed_bytes: usize,
    max_live_bytes: usize,
) -> bool {
    sealed_heads > 1 && sealed_bytes > max_live_bytes
}

/// Whether a push of `push_bytes` may be held back for completions to catch up while
/// pushes of `held_bytes` already are: together up to a quarter of `max_live_bytes`
/// (always one push). Held pushes are in memory and in no budget: when one replica falls
/// behind, the others ack and clients go on, and its held pushes would grow with the
/// ingest rate; past this, a push is refused at once (its trace's other replicas take
/// it, and the distributor counts the replica's failure).
pub(super) fn may_hold(held_bytes: usize, push_bytes: usize, max_live_bytes: usize) -> bool {
    held_bytes == 0 || held_bytes + push_bytes <= max_live_bytes / 4
}

pub(super) fn now_unix() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// A held push's bytes, counted in [`Ingester::held_bytes`] until it goes on or is refused.
struct Held<'a>(&'a AtomicUsize, usize);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::Relaxed);
    }
}

/// Runs `work` (a block's zstd encoding and fsynced local writes: up to a few hundred ms of
/// CPU per block) on a thread of its own, at a lower CPU priority (nice 10) when `low`: on a
/// saturated machine the pushes, whose latency clients see, go first.
async fn off_the_push_path<T: Send + 'static>(
    low: bool,
    work: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("block-encoder".to_owned())
        .spawn(move || {
            if low {
                lower_this_threads_priority();
            }
            let _ = tx.send(work());
        })?;
    rx.await
        .map_err(|_| std::io::Error::other("the block encoder thread panicked"))
}

#[cfg(target_os = "linux")]
fn lower_this_threads_priority() {
    // SAFETY: setpriority only reads its integer arguments. On Linux the nice value is a
    // per-thread attribute and `who == 0` means the calling thread, which exits after this
    // one job, so no other work inherits the priority.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "could not lower the block encoder's priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_this_threads_priority() {}

#[cfg(test)]
mod tests {
    use super::behind_on_completions as behind;
    use super::may_hold;

    #[test]
    fn pushes_wait_only_while_more_than_one_sealed_head_holds_more_than_the_live_budget() {
        assert!(!behind(0, 0, 100));
        assert!(!behind(1, 10_000, 100), "one head alone, however large");
        assert!(!behind(2, 100, 100));
        assert!(behind(2, 101, 100));
        assert!(behind(7, 10_000, 100));
    }

    #[test]
    fn held_pushes_stay_within_a_quarter_of_the_live_budget_but_one_is_always_held() {
        assert!(may_hold(0, 1000, 100), "the first push, however large");
        assert!(may_hold(10, 15, 100));
        assert!(!may_hold(10, 16, 100));
        assert!(!may_hold(25, 1, 100));
    }
}

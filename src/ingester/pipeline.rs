//! Cut → complete → flush: how traces leave the WAL and memory for the object store.
//!
//! 1. **Cut** (every second, and at once when the live traces outgrow `max_live_bytes`):
//!    traces idle for `trace_idle_period` leave the live map for their tenant's *head
//!    block* (in memory, bytes compacted into one buffer per trace so push buffers are
//!    released). Above `max_live_bytes`, the least recently appended traces go too, down
//!    to three quarters of it: memory stays bounded whatever the load (a trace cut early
//!    and appended to again is in two places, which reads merge).
//! 2. **Complete**: a head block older than `max_block_duration` or larger than
//!    `max_block_bytes` is encoded and written to `<data_dir>/complete/<tenant>/<block>/`
//!    (data, index, filter, then `meta.json`, each fsynced). From then on its traces no
//!    longer need the WAL: the WAL is truncated below the oldest record a live trace or
//!    head block still needs.
//! 3. **Flush**: complete local blocks are uploaded to the object store (meta last) with
//!    retries and backoff while the store is down; the WAL and the local copy keep the
//!    data meanwhile. The block ID is fixed when the block completes (it is the local
//!    folder's name), so a retried upload, also after a restart, overwrites. A block
//!    whose upload keeps failing while the store works is quarantined (see
//!    `upload_health`): it never holds up the others, and stays here, readable.
//! 4. A flushed block stays on local disk, and queryable here, for
//!    `complete_block_timeout`, longer than a querier needs to list it.
//!
//! A crash at any step loses nothing: until step 2 the WAL holds the data; after it the
//! local block does. A crash between writing a local block and truncating the WAL
//! replays those traces once more into a later block: the same spans in two blocks,
//! which reads de-duplicate; never a half-visible or twice-listed block.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use xxhash_rust::xxh3::xxh3_128;

use super::live::{LiveTrace, LiveTraces};
use super::upload_health::UploadHealth;
use super::wal::Wal;
use crate::model::{TenantId, TraceId};
use crate::overrides::Overrides;
use crate::storage::block::{self, BlockInfo, BlockMeta, BlockTrace, EncodedBlock};

mod flush;
use crate::storage::{tenant_segment, BlockStore, StoreError, DATA, FILTER, INDEX, META};

/// Marker file written next to a local block once the object store holds it.
const FLUSHED_MARKER: &str = "flushed";
/// Marker file (holding the last error) of a block whose upload keeps failing while the
/// store works: it leaves the flush queue and stays here, readable, until an operator
/// acts or a slow retry succeeds.
const QUARANTINED_MARKER: &str = "quarantined";

/// When traces and blocks move on (per tenant, from the overrides).
#[derive(Clone, Debug)]
pub struct CutPolicy {
    /// The live traces' budget (one per ingester, for every tenant).
    pub max_live_bytes: usize,
    /// How long a flushed block stays on local disk (and queryable here).
    pub complete_block_timeout: Duration,
    /// Each tenant's idle period and block bounds.
    pub overrides: Arc<Overrides>,
}

impl CutPolicy {
    pub fn idle_for(&self, tenant: &str) -> Duration {
        self.overrides.get(tenant).trace_idle_period
    }

    pub fn max_duration_for(&self, tenant: &str) -> Duration {
        self.overrides.get(tenant).max_block_duration
    }

    pub fn max_bytes_for(&self, tenant: &str) -> usize {
        self.overrides.get(tenant).max_block_bytes
    }
}

struct Head {
    seq: u64,
    created: Instant,
    traces: HashMap<TraceId, Vec<Bytes>>,
    bytes: usize,
    min_seq: u64,
    start: u64,
    end: u64,
}

struct LocalBlock {
    meta: BlockMeta,
    state: BlockState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BlockState {
    Pending,
    Flushed(Instant),
    /// Out of the flush queue; tried again at `retry_at`.
    Quarantined {
        retry_at: Instant,
    },
}

impl BlockState {
    fn is_pending(self) -> bool {
        self == BlockState::Pending
    }
    fn is_quarantined(self) -> bool {
        matches!(self, BlockState::Quarantined { .. })
    }
}

/// What one cut or flush round did (for logs, `/flush` and tests).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RoundStats {
    pub traces_cut: usize,
    pub blocks_completed: usize,
    pub blocks_flushed: usize,
    pub flush_failures: usize,
    pub blocks_pending: usize,
    /// Local blocks out of the flush queue because their upload keeps failing while the
    /// store works (see `QUARANTINED_MARKER`).
    pub blocks_quarantined: usize,
}

pub struct Pipeline {
    ingester: String,
    policy: CutPolicy,
    heads: Mutex<HashMap<TenantId, Head>>,
    /// Heads due for completion: still readable here until their local block is registered
    /// (a failed completion is retried from here next round).
    sealed: Mutex<Vec<(TenantId, Arc<Head>)>>,
    /// Readers take it shared; moves between live traces, heads and sealed heads take it
    /// exclusively, so a lookup never sees a trace in neither place.
    move_gate: std::sync::RwLock<()>,
    local_dir: PathBuf,
    local: BlockStore,
    blocks: Mutex<BTreeMap<(String, String), LocalBlock>>,
    remote: BlockStore,
    next_head_seq: AtomicU64,
    /// One cut round at a time, and one flush round at a time; a slow upload never
    /// holds up cutting (which keeps memory bounded).
    cut_round: tokio::sync::Mutex<()>,
    flush_round: tokio::sync::Mutex<()>,
    upload_health: Mutex<UploadHealth>,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("local block folder {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Block(#[from] block::BlockError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PipelineError + '_ {
    move |source| PipelineError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn now_unix() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
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

impl Pipeline {
    /// Opens `<data_dir>/complete`: registers complete local blocks (flushed or not) and
    /// removes incomplete ones (no `meta.json`: the WAL still holds their traces).
    pub fn open(
        ingester: &str,
        data_dir: &Path,
        remote: BlockStore,
        policy: CutPolicy,
    ) -> Result<Self, PipelineError> {
        let local_dir = data_dir.join("complete");
        std::fs::create_dir_all(&local_dir).map_err(io_err(&local_dir))?;
        let local = BlockStore::local(&local_dir)?;
        let mut blocks = BTreeMap::new();
        let now = Instant::now();
        for tenant in std::fs::read_dir(&local_dir).map_err(io_err(&local_dir))? {
            let tenant = tenant.map_err(io_err(&local_dir))?.path();
            let Ok(entries) = std::fs::read_dir(&tenant) else {
                continue;
            };
            for entry in entries.flatten() {
                let dir = entry.path();
                let meta = std::fs::read(dir.join(META))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<BlockMeta>(&b).ok());
                match meta {
                    Some(meta) => {
                        let state = if dir.join(FLUSHED_MARKER).exists() {
                            BlockState::Flushed(now)
                        } else if dir.join(QUARANTINED_MARKER).exists() {
                            BlockState::Quarantined { retry_at: now }
                        } else {
                            BlockState::Pending
                        };
                        blocks.insert(
                            (meta.tenant.clone(), meta.block_id.clone()),
                            LocalBlock { meta, state },
                        );
                    }
                    None => {
                        metrics::counter!("ringtail_ingester_incomplete_local_blocks_total")
                            .increment(1);
                        tracing::warn!(path = %dir.display(), "removing an incomplete local block (its traces are still in the WAL)");
                        let _ = std::fs::remove_dir_all(&dir);
                    }
                }
            }
        }
        tracing::info!(local_blocks = blocks.len(), "opened local blocks");
        Ok(Self {
            ingester: ingester.to_owned(),
            policy,
            heads: Mutex::default(),
            sealed: Mutex::default(),
            move_gate: std::sync::RwLock::new(()),
            local_dir,
            local,
            blocks: Mutex::new(blocks),
            remote,
            next_head_seq: AtomicU64::new(now_unix().as_micros() as u64),
            cut_round: tokio::sync::Mutex::new(()),
            flush_round: tokio::sync::Mutex::new(()),
            upload_health: Mutex::default(),
        })
    }

    /// Moves idle traces (all of them when `force`) into head blocks, completes the head
    /// blocks that are due (all when `force`) and truncates the WAL.
    pub async fn cut(
        &self,
        live: &LiveTraces,
        wal: &Wal,
        append_gate: &tokio::sync::RwLock<()>,
        force: bool,
    ) -> Result<RoundStats, PipelineError> {
        let _round = self.cut_round.lock().await;
        let mut stats = RoundStats::default();
        {
            let _moving = self.move_gate.write().map_err(|_| poisoned())?;
            let idle =
                live.take_idle(|tenant| (!force).then(|| self.policy.idle_for(tenant.as_str())));
            let over_budget = live
                .bytes()
                .saturating_sub(self.policy.max_live_bytes / 4 * 3);
            let oldest = if live.bytes() > self.policy.max_live_bytes {
                live.take_oldest(over_budget)
            } else {
                Vec::new()
            };
            for (taken, reason) in [
                (idle, if force { "force" } else { "idle" }),
                (oldest, "memory"),
            ] {
                let count: usize = taken.iter().map(|(_, t)| t.len()).sum();
                if count > 0 {
                    metrics::counter!("ringtail_ingester_traces_cut_total", "reason" => reason)
                        .increment(count as u64);
                }
                stats.traces_cut += count;
                for (tenant, traces) in taken {
                    self.add_to_head(tenant, traces);
                }
            }
            let mut heads = self.heads.lock().map_err(|_| poisoned())?;
            let due: Vec<TenantId> = heads
                .iter()
                .filter(|(t, h)| {
                    force
                        || h.created.elapsed() >= self.policy.max_duration_for(t.as_str())
                        || h.bytes >= self.policy.max_bytes_for(t.as_str())
                })
                .map(|(t, _)| t.clone())
                .collect();
            let mut sealed = self.sealed.lock().map_err(|_| poisoned())?;
            for tenant in due {
                if let Some(head) = heads.remove(&tenant) {
                    sealed.push((tenant, Arc::new(head)));
                }
            }
        }
        let to_complete: Vec<(TenantId, Arc<Head>)> =
            self.sealed.lock().map(|s| s.clone()).unwrap_or_default();
        for (tenant, head) in to_complete {
            match self.complete(&tenant, &head).await {
                Ok(()) => {
                    stats.blocks_completed += 1;
                    // Registered as a local block: the sealed copy can go.
                    if let Ok(mut sealed) = self.sealed.lock() {
                        sealed.retain(|(_, h)| h.seq != head.seq);
                    }
                }
                // Stays sealed (readable, and holding the WAL back); retried next round.
                Err(e) => {
                    tracing::error!(tenant = %tenant, error = %e, "completing a block failed")
                }
            }
        }
        // No push may sit between its WAL append and its live insert while the watermark
        // is computed (see `Ingester::append_gate`).
        let watermark = {
            let _exclusive = append_gate.write().await;
            [live.min_first_seq(), self.heads_min_seq()]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or_else(|| wal.next_seq())
        };
        let _ = wal.truncate_before(watermark).await;
        self.update_gauges();
        metrics::gauge!("ringtail_ingester_live_traces").set(live.trace_count() as f64);
        metrics::gauge!("ringtail_ingester_live_bytes").set(live.bytes() as f64);
        Ok(stats)
    }

    pub fn max_live_bytes(&self) -> usize {
        self.policy.max_live_bytes
    }

    fn add_to_head(&self, tenant: TenantId, traces: Vec<(TraceId, LiveTrace)>) {
        let Ok(mut heads) = self.heads.lock() else {
            return;
        };
        let head = heads.entry(tenant).or_insert_with(|| Head {
            seq: self.next_head_seq.fetch_add(1, Ordering::Relaxed),
            created: Instant::now(),
            traces: HashMap::new(),
            bytes: 0,
            min_seq: u64::MAX,
            start: u64::MAX,
            end: 0,
        });
        for (id, trace) in traces {
            // One fresh buffer per trace: the push buffers the segments pointed into can go.
            let mut buf = BytesMut::with_capacity(trace.bytes);
            for s in &trace.segments {
                buf.extend_from_slice(s);
            }
            let data = buf.freeze();
            head.start = head.start.min(trace.start);
            head.end = head.end.max(trace.end);
            head.bytes += data.len();
            head.min_seq = head.min_seq.min(trace.first_seq);
            head.traces.entry(id).or_default().push(data);
        }
    }

    /// The oldest WAL record a head or sealed head still needs.
    fn heads_min_seq(&self) -> Option<u64> {
        let heads = self.heads.lock().ok()?.values().map(|h| h.min_seq).min();
        let sealed = self
            .sealed
            .lock()
            .ok()?
            .iter()
            .map(|(_, h)| h.min_seq)
            .min();
        heads.into_iter().chain(sealed).min()
    }

    fn block_id(&self, tenant: &TenantId, head_seq: u64) -> String {
        format!(
            "{:032x}",
            xxh3_128(format!("{}/{tenant}/{head_seq}", self.ingester).as_bytes())
        )
    }

    /// Encodes a head block and writes it to local disk, `meta.json` last, fsynced.
    async fn complete(&self, tenant: &TenantId, head: &Head) -> Result<(), PipelineError> {
        let block_id = self.block_id(tenant, head.seq);
        let traces: Vec<BlockTrace> = head
            .traces
            .iter()
            .flat_map(|(id, parts)| {
                parts.iter().map(|d| BlockTrace {
                    id: *id,
                    data: d.clone(),
                })
            })
            .collect();
        let info = BlockInfo {
            tenant: tenant.to_string(),
            block_id: block_id.clone(),
            ingester: self.ingester.clone(),
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
        // Completions that fall behind run at normal priority, so memory stays bounded.
        let behind = self.sealed.lock().map(|s| s.len() > 1).unwrap_or(true);
        let written = off_the_push_path(!behind, move || -> Result<EncodedBlock, PipelineError> {
            let block = block::encode(traces, info)?;
            write_local(&dir, &block)?;
            Ok(block)
        })
        .await;
        let block = match written {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => return Err(e),
            Err(source) => {
                return Err(PipelineError::Io {
                    path: self.local_dir.clone(),
                    source,
                })
            }
        };
        tracing::info!(tenant = %tenant, block_id, traces = block.meta.total_traces, bytes = block.meta.data_bytes, "completed a block");
        metrics::counter!("ringtail_ingester_blocks_completed_total").increment(1);
        if let Ok(mut blocks) = self.blocks.lock() {
            blocks.insert(
                (tenant.to_string(), block_id),
                LocalBlock {
                    meta: block.meta,
                    state: BlockState::Pending,
                },
            );
        }
        Ok(())
    }

    fn update_gauges(&self) {
        if let Ok(blocks) = self.blocks.lock() {
            let pending: Vec<&LocalBlock> =
                blocks.values().filter(|l| l.state.is_pending()).collect();
            metrics::gauge!("ringtail_ingester_quarantined_blocks")
                .set(blocks.values().filter(|l| l.state.is_quarantined()).count() as f64);
            metrics::gauge!("ringtail_ingester_flush_backlog_blocks").set(pending.len() as f64);
            metrics::gauge!("ringtail_ingester_flush_backlog_bytes")
                .set(pending.iter().map(|l| l.meta.data_bytes).sum::<u64>() as f64);
            metrics::gauge!("ringtail_ingester_local_blocks").set(blocks.len() as f64);
        }
        if let Ok(heads) = self.heads.lock() {
            metrics::gauge!("ringtail_ingester_head_bytes")
                .set(heads.values().map(|h| h.bytes).sum::<usize>() as f64);
        }
    }

    /// The trace's bytes in live traces, head blocks, sealed heads and local blocks.
    pub async fn find(&self, live: &LiveTraces, tenant: &TenantId, id: &TraceId) -> Vec<Bytes> {
        let mut out: Vec<Bytes> = Vec::new();
        {
            // Live, heads and sealed heads are read under the move gate, so a trace moving
            // between them is seen in one place or the other. Local blocks are registered
            // before their sealed head goes: seeing both is fine (reads de-duplicate).
            let _reading = self.move_gate.read();
            out.extend(live.get(tenant, id));
            if let Ok(heads) = self.heads.lock() {
                out.extend(
                    heads
                        .get(tenant)
                        .and_then(|h| h.traces.get(id))
                        .cloned()
                        .unwrap_or_default(),
                );
            }
            if let Ok(sealed) = self.sealed.lock() {
                for (_, head) in sealed.iter().filter(|(t, _)| t == tenant) {
                    out.extend(head.traces.get(id).cloned().unwrap_or_default());
                }
            }
        }
        let metas: Vec<BlockMeta> = self
            .blocks
            .lock()
            .map(|b| {
                b.values()
                    .filter(|l| l.meta.tenant == tenant.as_str())
                    .map(|l| l.meta.clone())
                    .collect()
            })
            .unwrap_or_default();
        for meta in metas {
            match self.local.find_trace(&meta, id).await {
                Ok(Some(bytes)) => out.push(bytes),
                Ok(None) => {}
                // Retired between listing and reading: the object store has it.
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    tracing::warn!(block_id = meta.block_id, error = %e, "reading a local block failed")
                }
            }
        }
        out
    }
}

fn poisoned() -> PipelineError {
    PipelineError::Io {
        path: PathBuf::new(),
        source: std::io::Error::other("a pipeline lock was poisoned"),
    }
}

/// Writes a block's objects into `dir`, `meta.json` last, each fsynced, then the folder.
fn write_local(dir: &Path, block: &EncodedBlock) -> Result<(), PipelineError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let meta = serde_json::to_vec_pretty(&block.meta).map_err(|e| PipelineError::Io {
        path: dir.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    for (name, bytes) in [
        (DATA, &block.data[..]),
        (INDEX, &block.index[..]),
        (FILTER, &block.filter[..]),
        (META, &meta[..]),
    ] {
        let path = dir.join(name);
        let mut f = std::fs::File::create(&path).map_err(io_err(&path))?;
        f.write_all(bytes).map_err(io_err(&path))?;
        f.sync_all().map_err(io_err(&path))?;
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))?;
    if let Some(parent) = dir.parent() {
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io_err(parent))?;
    }
    Ok(())
}

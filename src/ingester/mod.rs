//! Ingester: append every push to the WAL, then index it in memory; answer lookups.
//!
//! Order of a push (the invariant an ack rests on):
//! 1. refuse with UNAVAILABLE unless the ingester is serving (WAL replayed);
//! 2. decode the push (segments are slices of the push's buffer, copied once out of tonic's,
//!    see `rpc::codec`);
//! 3. under the append gate: refuse with UNAVAILABLE if the drain has begun refusing
//!    pushes, else append the request bytes to the WAL and wait until they are durable;
//! 4. add the segments to the live traces;
//! 5. ack.

mod cut;
mod drain;
mod flush;
mod instance;
mod live;
mod local_blocks;
mod push;
mod search;
mod service;
mod upload_health;
pub(crate) mod wal;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

use instance::Instance;
pub(crate) use local_blocks::LocalBlockError;
pub(crate) use push::PushDecodeError;
use push::{decode_push, decode_push_within, Check};
pub(crate) use service::IngesterService;
use upload_health::UploadHealth;
use wal::{FileStore, ReplayStats, SledStore, Wal, WalError, WalStoreKind, WalSync};

use tonic::service::interceptor::InterceptedService;

use crate::cluster_keys::ClusterKeys;
use crate::error::{ErrorCode, HasErrorCode};
use crate::model::{TenantId, TraceId};
use crate::overrides::LiveOverrides;
use crate::rpc::auth::RequireCredential;
use crate::rpc::ingester_service::ingester_server::IngesterServer;
use crate::storage::BlockStore;

/// Ingester settings from the validated config.
#[derive(Clone, Debug)]
pub(crate) struct IngesterSettings {
    pub data_dir: PathBuf,
    pub wal_sync: WalSync,
    /// The configured store; `None` (not configured): the file store, unless the data
    /// folder already holds a sled WAL (written when sled was the default), which is kept.
    pub wal_store: Option<WalStoreKind>,
    pub wal_cache_bytes: u64,
    pub cut: CutPolicy,
    /// This ingester's name (recorded in the blocks it cuts).
    pub name: String,
}

/// When traces and blocks move on (per tenant, from the overrides).
#[derive(Clone, Debug)]
pub struct CutPolicy {
    /// The live traces' budget (one per ingester, for every tenant).
    pub max_live_bytes: usize,
    /// How long a flushed block stays on local disk (and queryable here).
    pub complete_block_timeout: Duration,
    /// Each tenant's idle period and block bounds.
    pub(crate) overrides: Arc<LiveOverrides>,
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

/// What one cut or flush round did (for logs, `/flush` and tests).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub(crate) struct RoundStats {
    pub traces_cut: usize,
    pub blocks_completed: usize,
    pub blocks_flushed: usize,
    pub flush_failures: usize,
    pub blocks_pending: usize,
    /// Local blocks out of the flush queue because their upload keeps failing while the
    /// store works (see `local_blocks::QUARANTINED_MARKER`).
    pub blocks_quarantined: usize,
}

/// What a cut round moves out of the live traces and seals.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum CutScope {
    /// Every live trace, and every head block.
    All,
    /// The idle traces and those over the memory budget; the heads that are due.
    Due,
    /// Only the traces over the memory budget; the heads that are due.
    Budget,
}

/// The ingester: the WAL, one [`Instance`] per tenant (its live traces, head block, sealed
/// heads and local blocks), and the rounds that move traces on (`cut.rs`, `flush.rs`).
pub(crate) struct Ingester {
    name: String,
    policy: CutPolicy,
    wal: Wal,
    tenants: RwLock<HashMap<TenantId, Arc<Instance>>>,
    /// Sum of every instance's live trace bytes (the budget `max_live_bytes` bounds).
    live_bytes: AtomicUsize,
    /// The sealed heads waiting for their completion, every instance's: how many, and
    /// their bytes (set by `update_gauges` after each seal and completion).
    sealed_heads: AtomicUsize,
    sealed_bytes: AtomicUsize,
    /// The bytes of the pushes held back for completions right now (`cut::may_hold`).
    held_bytes: AtomicUsize,
    serving: AtomicBool,
    /// Set by the drain sequence: pushes are refused with UNAVAILABLE from then on.
    leaving: AtomicBool,
    /// When the last push arrived (ms since `started`), for the drain's quiet wait.
    last_push_ms: AtomicU64,
    started: Instant,
    /// Held (shared) by a push from its WAL append until its traces are in `live`, and
    /// (exclusively) by the WAL truncation watermark computation: a record is never
    /// truncated while its traces are in neither the WAL's consumers nor a block.
    append_gate: tokio::sync::RwLock<()>,
    /// Notified when the live traces outgrow their budget: the cut worker runs at once.
    over_budget: tokio::sync::Notify,
    /// Notified when a cut round sealed a head block: the completion worker runs at once.
    sealed_ready: tokio::sync::Notify,
    /// Notified (all waiters) whenever the sealed heads were counted again: pushes waiting
    /// for completions to catch up look again.
    sealed_counted: tokio::sync::Notify,
    local_dir: PathBuf,
    local: BlockStore,
    remote: BlockStore,
    next_head_seq: AtomicU64,
    /// One cut round, one completion round and one flush round at a time; neither a
    /// slow completion nor a slow upload holds up cutting (which keeps memory bounded).
    cut_round: tokio::sync::Mutex<()>,
    complete_round: tokio::sync::Mutex<()>,
    flush_round: tokio::sync::Mutex<()>,
    upload_health: Mutex<UploadHealth>,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create data folder {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds a WAL of the other wal_store kind; replay it with that kind first (or remove it if its data is no longer needed)")]
    OtherStore { path: PathBuf },
    #[error("cannot open the WAL in {path}: {source}")]
    Wal { path: PathBuf, source: WalError },
    #[error(transparent)]
    LocalBlocks(#[from] LocalBlockError),
}

/// Why the ingester refuses a call. Pushes that meet `Starting`, `Leaving` or `Wal` are
/// retried by the distributor elsewhere; the others are the caller's fault.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IngesterError {
    #[error("ingester is starting (replaying its WAL)")]
    Starting,
    #[error("ingester is leaving the cluster (draining for shutdown)")]
    Leaving,
    #[error("ingester WAL unavailable: {0}")]
    Wal(#[from] WalError),
    #[error("ingester is behind on block completion: {heads} sealed head blocks ({bytes} bytes) wait for encoding; retry shortly")]
    Behind { heads: usize, bytes: usize },
    #[error(transparent)]
    BadPush(#[from] PushDecodeError),
    #[error(transparent)]
    Tenant(#[from] crate::model::TenantIdError),
    #[error(transparent)]
    TraceId(#[from] crate::model::TraceIdError),
    #[error(transparent)]
    Query(#[from] crate::traceql::ParseError),
    #[error("unknown tag {0:?}: tags are resource.x, span.x, .x or an intrinsic")]
    BadTag(String),
}

impl HasErrorCode for IngesterError {
    fn error_code(&self) -> ErrorCode {
        match self {
            IngesterError::Starting
            | IngesterError::Leaving
            | IngesterError::Wal(_)
            | IngesterError::Behind { .. } => ErrorCode::Unavailable,
            IngesterError::BadPush(_)
            | IngesterError::Tenant(_)
            | IngesterError::TraceId(_)
            | IngesterError::Query(_)
            | IngesterError::BadTag(_) => ErrorCode::BadRequest,
        }
    }
}

impl Ingester {
    /// Opens the local blocks and the WAL, and replays the WAL into memory. The ingester
    /// accepts pushes once [`Ingester::start_serving`] is called.
    pub(crate) fn open(
        settings: &IngesterSettings,
        remote: BlockStore,
    ) -> Result<(Arc<Self>, ReplayStats), OpenError> {
        // Local blocks first: they hold what the WAL no longer does.
        let local_dir = settings.data_dir.join("complete");
        std::fs::create_dir_all(&local_dir).map_err(local_blocks::io_err(&local_dir))?;
        let local = BlockStore::local(&local_dir).map_err(LocalBlockError::from)?;
        let blocks = local_blocks::open(&local_dir)?;
        tracing::info!(
            local_blocks = blocks.values().map(Vec::len).sum::<usize>(),
            "opened local blocks"
        );
        let mut tenants: HashMap<TenantId, Arc<Instance>> = blocks
            .into_iter()
            .map(|(t, b)| (t.clone(), Arc::new(Instance::new(t, b))))
            .collect();
        let (wal_dir, store) = open_wal_store(settings)?;
        let (wal, stats, live_bytes) =
            replay(store, settings.wal_sync, &mut tenants).map_err(|source| OpenError::Wal {
                path: wal_dir,
                source,
            })?;
        let ingester = Arc::new(Self {
            name: settings.name.clone(),
            policy: settings.cut.clone(),
            wal,
            tenants: RwLock::new(tenants),
            live_bytes: AtomicUsize::new(live_bytes),
            sealed_heads: AtomicUsize::new(0),
            sealed_bytes: AtomicUsize::new(0),
            held_bytes: AtomicUsize::new(0),
            serving: AtomicBool::new(false),
            leaving: AtomicBool::new(false),
            last_push_ms: AtomicU64::new(0),
            started: Instant::now(),
            append_gate: tokio::sync::RwLock::new(()),
            over_budget: tokio::sync::Notify::new(),
            sealed_ready: tokio::sync::Notify::new(),
            sealed_counted: tokio::sync::Notify::new(),
            local_dir,
            local,
            remote,
            next_head_seq: AtomicU64::new(cut::now_unix().as_micros() as u64),
            cut_round: tokio::sync::Mutex::new(()),
            complete_round: tokio::sync::Mutex::new(()),
            flush_round: tokio::sync::Mutex::new(()),
            upload_health: Mutex::default(),
        });
        ingester.update_gauges();
        Ok((ingester, stats))
    }

    /// This tenant's instance, created on its first push.
    fn instance(&self, tenant: &TenantId) -> Arc<Instance> {
        if let Some(i) = self.existing_instance(tenant.as_str()) {
            return i;
        }
        let mut tenants = self.tenants.write().unwrap_or_else(PoisonError::into_inner);
        tenants
            .entry(tenant.clone())
            .or_insert_with(|| Arc::new(Instance::new(tenant.clone(), Vec::new())))
            .clone()
    }

    fn existing_instance(&self, tenant: &str) -> Option<Arc<Instance>> {
        let tenants = self.tenants.read().unwrap_or_else(PoisonError::into_inner);
        tenants.get(tenant).cloned()
    }

    /// Every tenant's instance, for the rounds that sweep them.
    fn instances(&self) -> Vec<Arc<Instance>> {
        let tenants = self.tenants.read().unwrap_or_else(PoisonError::into_inner);
        tenants.values().cloned().collect()
    }

    pub(crate) fn start_serving(&self) {
        self.serving.store(true, Ordering::SeqCst);
    }

    /// From now on pushes are answered with UNAVAILABLE (the drain sequence's step 3).
    /// Returns once no push is between its check and its live insert, so everything
    /// acked is in the live traces that the drain then flushes.
    pub(crate) async fn refuse_pushes(&self) {
        self.leaving.store(true, Ordering::SeqCst);
        drop(self.append_gate.write().await);
    }

    /// How long ago the last push arrived.
    pub(crate) fn since_last_push(&self) -> Duration {
        let last = Duration::from_millis(self.last_push_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    pub(crate) fn is_serving(&self) -> bool {
        self.serving.load(Ordering::SeqCst)
    }

    /// The internal gRPC service: calls need the cluster token (`keys`, unless the
    /// cluster runs insecure) and pushes are at most `max_push_bytes`.
    pub(crate) fn service(
        self: &Arc<Self>,
        keys: Option<Arc<ClusterKeys>>,
        max_push_bytes: usize,
    ) -> InterceptedService<IngesterServer<IngesterService>, RequireCredential> {
        let server = IngesterServer::new(IngesterService(self.clone(), max_push_bytes))
            .max_decoding_message_size(max_push_bytes)
            .max_encoding_message_size(crate::rpc::pool::MAX_INTERNAL_MESSAGE);
        InterceptedService::new(server, RequireCredential(keys))
    }

    /// How many traces are live, over every tenant.
    pub(crate) fn live_trace_count(&self) -> usize {
        self.instances()
            .iter()
            .map(|i| i.live().trace_count())
            .sum()
    }

    /// Returns when the live traces have outgrown `max_live_bytes` since the last call.
    pub(crate) async fn over_budget(&self) {
        self.over_budget.notified().await
    }

    /// A cut round (background worker): with `idle`, the traces idle long enough are cut
    /// too, not only those over the memory budget. Looking for idle traces walks every live
    /// trace, so the worker does it on its one-second tick, not on each over-budget wake
    /// (several a second at saturation).
    pub(crate) async fn cut(&self, idle: bool) -> RoundStats {
        self.run_cut(if idle {
            CutScope::Due
        } else {
            CutScope::Budget
        })
        .await
    }

    /// Returns when a cut round has sealed a head block since the last call.
    pub(crate) async fn sealed_ready(&self) {
        self.sealed_ready.notified().await
    }

    /// A completion round (background worker).
    pub(crate) async fn complete(&self) -> Result<RoundStats, LocalBlockError> {
        self.run_complete().await
    }

    /// A flush round (background worker).
    pub(crate) async fn flush(&self) -> RoundStats {
        self.run_flush(false).await
    }

    /// One cut round, one completion round, then one flush round (`force`: cut, complete
    /// and flush everything now).
    pub(crate) async fn cut_and_flush(&self, force: bool) -> Result<RoundStats, LocalBlockError> {
        let cut = self
            .run_cut(if force { CutScope::All } else { CutScope::Due })
            .await;
        let completed = self.run_complete().await?;
        let flush = self.run_flush(force).await;
        Ok(RoundStats {
            traces_cut: cut.traces_cut,
            blocks_completed: completed.blocks_completed,
            ..flush
        })
    }

    /// [`Ingester::find`] for a query off the wire: refused while starting, and the tenant
    /// and trace ID checked.
    pub(crate) async fn find_raw(
        &self,
        tenant: &str,
        trace_id: &[u8],
    ) -> Result<Option<Bytes>, IngesterError> {
        if !self.is_serving() {
            return Err(IngesterError::Starting);
        }
        let tenant = TenantId::parse(tenant)?;
        let id = TraceId::from_bytes(trace_id)?;
        Ok(self.find(&tenant, &id).await)
    }

    /// Everything this ingester holds of a trace: live, head, sealed heads and local blocks.
    pub(crate) async fn find(&self, tenant: &TenantId, id: &TraceId) -> Option<Bytes> {
        let instance = self.existing_instance(tenant.as_str())?;
        let found = instance.find(id);
        let mut parts = found.in_memory;
        for meta in found.blocks {
            match self.local.find_trace(&meta, id).await {
                Ok(Some(bytes)) => parts.push(bytes),
                Ok(None) => {}
                // Retired between listing and reading: the object store has it.
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    tracing::warn!(block_id = meta.block_id, error = %e, "reading a local block failed")
                }
            }
        }
        match parts.len() {
            0 => None,
            1 => parts.pop(),
            _ => Some(parts.concat().into()),
        }
    }

    fn update_gauges(&self) {
        let instances = self.instances();
        let sum = |f: &dyn Fn(&Instance) -> usize| instances.iter().map(|i| f(i)).sum::<usize>();
        let blocks = |which: fn(local_blocks::BlockState) -> bool| {
            instances
                .iter()
                .map(|i| i.count_blocks(which))
                .fold((0, 0), |(n, b), (n2, b2)| (n + n2, b + b2))
        };
        let (pending, pending_bytes) = blocks(local_blocks::BlockState::is_pending);
        metrics::gauge!("ringtail_ingester_quarantined_blocks")
            .set(blocks(local_blocks::BlockState::is_quarantined).0 as f64);
        metrics::gauge!("ringtail_ingester_flush_backlog_blocks").set(pending as f64);
        metrics::gauge!("ringtail_ingester_flush_backlog_bytes").set(pending_bytes as f64);
        metrics::gauge!("ringtail_ingester_local_blocks").set(blocks(|_| true).0 as f64);
        metrics::gauge!("ringtail_ingester_head_bytes").set(sum(&|i| i.head_bytes()) as f64);
        let sealed_heads = sum(&|i| i.sealed_count());
        self.sealed_heads.store(sealed_heads, Ordering::Relaxed);
        self.sealed_bytes
            .store(sum(&|i| i.sealed_bytes()), Ordering::Relaxed);
        metrics::gauge!("ringtail_ingester_sealed_heads").set(sealed_heads as f64);
        self.sealed_counted.notify_waiters();
        metrics::gauge!("ringtail_ingester_live_traces")
            .set(sum(&|i| i.live().trace_count()) as f64);
        metrics::gauge!("ringtail_ingester_live_bytes")
            .set(self.live_bytes.load(Ordering::Relaxed) as f64);
        metrics::gauge!("ringtail_ingester_wal_disk_bytes").set(self.wal.size_on_disk() as f64);
    }

    /// [`Self::push_within`] any internal message's size.
    #[cfg(test)]
    pub(crate) async fn push(&self, body: Bytes) -> Result<Vec<u32>, IngesterError> {
        self.push_within(body, crate::rpc::pool::MAX_INTERNAL_MESSAGE)
            .await
    }

    /// Stores a distributor's push; returns the indices of the segments refused because
    /// their trace would exceed the tenant's `max_bytes_per_trace` (the rest is stored,
    /// and only the rest goes into the WAL). A push whose traces came compressed is
    /// refused if they are more than `max_push_bytes` (what the gRPC server allows a
    /// plain push).
    pub(crate) async fn push_within(
        &self,
        body: Bytes,
        max_push_bytes: usize,
    ) -> Result<Vec<u32>, IngesterError> {
        if !self.is_serving() {
            return Err(IngesterError::Starting);
        }
        self.last_push_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        let (tenant, mut segments) =
            decode_push_within(body.clone(), Check::Strict, max_push_bytes).inspect_err(|_| {
                metrics::counter!("ringtail_ingester_pushes_refused_total").increment(1);
            })?;
        // What the push holds in memory: its traces, decompressed if they came compressed
        // (else they are slices of the body).
        let traces: usize = segments.iter().map(|s| s.data.len()).sum();
        self.wait_for_completions(body.len().max(traces)).await?;
        let instance = self.instance(&tenant);
        let limit = self
            .policy
            .overrides
            .get(tenant.as_str())
            .max_bytes_per_trace;
        let too_large = match limit {
            0 => Vec::new(),
            limit => instance.live().too_large(&segments, limit),
        };
        let body = if too_large.is_empty() {
            body
        } else {
            metrics::counter!("ringtail_ingester_segments_too_large_total")
                .increment(too_large.len() as u64);
            segments = push::without(segments, &too_large);
            if segments.is_empty() {
                return Ok(too_large);
            }
            push::encode(&tenant, &segments)
        };
        let gate = self.append_gate.read().await;
        if self.leaving.load(Ordering::SeqCst) {
            return Err(IngesterError::Leaving);
        }
        let seq = self.wal.append(body).await?;
        let added = instance.append(segments, seq);
        drop(gate);
        let live = self.live_bytes.fetch_add(added.bytes, Ordering::Relaxed) + added.bytes;
        if live > self.policy.max_live_bytes {
            self.over_budget.notify_one();
        }
        metrics::gauge!("ringtail_ingester_live_traces").increment(added.new_traces as f64);
        Ok(too_large)
    }
}

/// The WAL store of the configured kind, in its own folder. Refuses to start on the
/// other kind's data rather than ignore acked writes.
fn open_wal_store(
    settings: &IngesterSettings,
) -> Result<(PathBuf, Box<dyn wal::WalStore>), OpenError> {
    let sled_dir = settings.data_dir.join("wal");
    let file_dir = settings.data_dir.join("wal-segments");
    let holds_data = |dir: &PathBuf| std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some());
    let kind = match settings.wal_store {
        Some(kind) => kind,
        None if holds_data(&sled_dir) && !holds_data(&file_dir) => {
            tracing::warn!(path = %sled_dir.display(), "wal_store is not set and this data folder holds a sled WAL (the default of earlier versions): keeping sled; set wal_store: sled to keep it, or drain the node and remove the folder to move to the file store");
            WalStoreKind::Sled
        }
        None => WalStoreKind::File,
    };
    let (wal_dir, other) = match kind {
        WalStoreKind::Sled => (sled_dir, file_dir),
        WalStoreKind::File => (file_dir, sled_dir),
    };
    if holds_data(&other) {
        return Err(OpenError::OtherStore { path: other });
    }
    std::fs::create_dir_all(&wal_dir).map_err(|source| OpenError::DataDir {
        path: wal_dir.clone(),
        source,
    })?;
    let opened = match kind {
        WalStoreKind::Sled => SledStore::open(&wal_dir, settings.wal_cache_bytes)
            .map(|s| Box::new(s) as Box<dyn wal::WalStore>),
        WalStoreKind::File => {
            FileStore::open(&wal_dir).map(|s| Box::new(s) as Box<dyn wal::WalStore>)
        }
    };
    match opened {
        Ok(store) => Ok((wal_dir, store)),
        Err(source) => Err(OpenError::Wal {
            path: wal_dir,
            source,
        }),
    }
}

/// Replays the WAL into the tenants' live traces and starts its writer; returns it with
/// what the replay read and the live bytes it added.
fn replay(
    store: Box<dyn wal::WalStore>,
    sync: WalSync,
    tenants: &mut HashMap<TenantId, Arc<Instance>>,
) -> Result<(Wal, ReplayStats, usize), WalError> {
    let started = Instant::now();
    let mut undecodable = 0u64;
    let mut live_bytes = 0;
    let (wal, stats) = Wal::start(store, sync, &mut |seq, record| match decode_push(
        record,
        Check::Replay,
    ) {
        Ok((tenant, segments)) => {
            let instance = tenants
                .entry(tenant.clone())
                .or_insert_with(|| Arc::new(Instance::new(tenant, Vec::new())));
            live_bytes += instance.append(segments, seq).bytes;
        }
        Err(e) => {
            undecodable += 1;
            tracing::warn!(seq, error = %e, "skipping an undecodable WAL record");
        }
    })?;
    tracing::info!(
        records = stats.records,
        bytes = stats.bytes,
        corrupt = stats.corrupt,
        undecodable,
        traces = tenants
            .values()
            .map(|i| i.live().trace_count())
            .sum::<usize>(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "WAL replayed"
    );
    Ok((wal, stats, live_bytes))
}

#[cfg(test)]
mod tests;

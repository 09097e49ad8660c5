//! Ingester: append every push to the WAL, then index it in memory; answer lookups.
//!
//! Order of a push (the invariant an ack rests on):
//! 1. refuse with UNAVAILABLE unless the ingester is serving (WAL replayed);
//! 2. decode the push (zero-copy: segments are slices of the request buffer);
//! 3. under the append gate: refuse with UNAVAILABLE if the drain has begun refusing
//!    pushes, else append the request bytes to the WAL and wait until they are durable;
//! 4. add the segments to the live traces;
//! 5. ack.

mod drain;
mod live;
pub mod pipeline;
mod upload_health;
pub mod wal;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use prost::Message;
use tonic::{Request, Response, Status};

pub use live::LiveTraces;
use live::Segment;
use pipeline::{CutPolicy, Pipeline, PipelineError, RoundStats};
use wal::{FileStore, ReplayStats, SledStore, Wal, WalError, WalStoreKind, WalSync};

use tonic::service::interceptor::InterceptedService;

use crate::cluster_keys::ClusterKeys;
use crate::model::{TenantId, TraceId};
use crate::rpc::auth::RequireCredential;
use crate::rpc::codec::RawBytes;
use crate::rpc::ingester_service::ingester_server::{self, IngesterServer};
use crate::rpc::proto::{FindTraceRequest, FindTraceResponse, PushRequest, PushResponse};

/// Ingester settings from the validated config.
#[derive(Clone, Debug)]
pub struct IngesterSettings {
    pub data_dir: PathBuf,
    pub wal_sync: WalSync,
    pub wal_store: WalStoreKind,
    pub wal_cache_bytes: u64,
    pub cut: CutPolicy,
    /// This ingester's name (recorded in the blocks it cuts).
    pub name: String,
}

pub struct Ingester {
    wal: Wal,
    live: LiveTraces,
    pipeline: Pipeline,
    serving: AtomicBool,
    /// Set by the drain sequence: pushes are refused with UNAVAILABLE from then on.
    leaving: AtomicBool,
    /// When the last push arrived (ms since `started`), for the drain's quiet wait.
    last_push_ms: std::sync::atomic::AtomicU64,
    started: Instant,
    /// Held (shared) by a push from its WAL append until its traces are in `live`, and
    /// (exclusively) by the WAL truncation watermark computation: a record is never
    /// truncated while its traces are in neither the WAL's consumers nor a block.
    append_gate: tokio::sync::RwLock<()>,
    /// Notified when the live traces outgrow their budget: the cut worker runs at once.
    over_budget: tokio::sync::Notify,
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
    Pipeline(#[from] PipelineError),
}

impl Ingester {
    /// Opens the WAL and replays it into memory. The ingester accepts pushes once
    /// [`Ingester::start_serving`] is called.
    pub fn open(
        settings: &IngesterSettings,
        store: crate::storage::BlockStore,
    ) -> Result<(Arc<Self>, ReplayStats), OpenError> {
        // Local blocks first: they hold what the WAL no longer does.
        let pipeline = Pipeline::open(
            &settings.name,
            &settings.data_dir,
            store,
            settings.cut.clone(),
        )?;
        // Each store has its own folder; refuse to start on the other one's data rather than
        // ignore acked writes.
        let sled_dir = settings.data_dir.join("wal");
        let file_dir = settings.data_dir.join("wal-segments");
        let (wal_dir, other) = match settings.wal_store {
            WalStoreKind::Sled => (&sled_dir, &file_dir),
            WalStoreKind::File => (&file_dir, &sled_dir),
        };
        if std::fs::read_dir(other).is_ok_and(|mut d| d.next().is_some()) {
            return Err(OpenError::OtherStore {
                path: other.clone(),
            });
        }
        std::fs::create_dir_all(wal_dir).map_err(|source| OpenError::DataDir {
            path: wal_dir.clone(),
            source,
        })?;
        let wal_error = |source| OpenError::Wal {
            path: wal_dir.clone(),
            source,
        };
        let store: Box<dyn wal::WalStore> = match settings.wal_store {
            WalStoreKind::Sled => {
                Box::new(SledStore::open(wal_dir, settings.wal_cache_bytes).map_err(wal_error)?)
            }
            WalStoreKind::File => Box::new(FileStore::open(wal_dir).map_err(wal_error)?),
        };
        Self::with_store(store, settings.wal_sync, wal_dir, pipeline)
    }

    fn with_store(
        store: Box<dyn wal::WalStore>,
        sync: WalSync,
        wal_dir: &Path,
        pipeline: Pipeline,
    ) -> Result<(Arc<Self>, ReplayStats), OpenError> {
        let started = Instant::now();
        let live = LiveTraces::default();
        let mut undecodable = 0u64;
        let (wal, stats) = Wal::start(store, sync, &mut |seq, record| match decode_push(
            record,
            Check::Replay,
        ) {
            Ok((tenant, segments)) => {
                live.append(&tenant, segments, seq);
            }
            Err(e) => {
                undecodable += 1;
                tracing::warn!(seq, error = %e, "skipping an undecodable WAL record");
            }
        })
        .map_err(|source| OpenError::Wal {
            path: wal_dir.to_path_buf(),
            source,
        })?;
        tracing::info!(
            records = stats.records,
            bytes = stats.bytes,
            corrupt = stats.corrupt,
            undecodable,
            traces = live.trace_count(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "WAL replayed"
        );
        let ingester = Arc::new(Self {
            wal,
            live,
            pipeline,
            serving: AtomicBool::new(false),
            leaving: AtomicBool::new(false),
            last_push_ms: std::sync::atomic::AtomicU64::new(0),
            started: Instant::now(),
            append_gate: tokio::sync::RwLock::new(()),
            over_budget: tokio::sync::Notify::new(),
        });
        ingester.update_gauges();
        Ok((ingester, stats))
    }

    pub fn start_serving(&self) {
        self.serving.store(true, Ordering::SeqCst);
    }

    /// From now on pushes are answered with UNAVAILABLE (the drain sequence's step 3).
    /// Returns once no push is between its check and its live insert, so everything
    /// acked is in the live traces that the drain then flushes.
    pub async fn refuse_pushes(&self) {
        self.leaving.store(true, Ordering::SeqCst);
        drop(self.append_gate.write().await);
    }

    /// How long ago the last push arrived.
    pub fn since_last_push(&self) -> std::time::Duration {
        let last = std::time::Duration::from_millis(self.last_push_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::SeqCst)
    }

    /// The internal gRPC service: calls need the cluster token (`keys`, unless the
    /// cluster runs insecure) and pushes are at most `max_push_bytes`.
    pub fn service(
        self: &Arc<Self>,
        keys: Option<Arc<ClusterKeys>>,
        max_push_bytes: usize,
    ) -> InterceptedService<IngesterServer<IngesterService>, RequireCredential> {
        let server = IngesterServer::new(IngesterService(self.clone()))
            .max_decoding_message_size(max_push_bytes)
            .max_encoding_message_size(crate::rpc::pool::MAX_INTERNAL_MESSAGE);
        InterceptedService::new(server, RequireCredential(keys))
    }

    pub fn live(&self) -> &LiveTraces {
        &self.live
    }

    /// Returns when the live traces have outgrown `max_live_bytes` since the last call.
    pub async fn over_budget(&self) {
        self.over_budget.notified().await
    }

    /// A cut round (background worker).
    pub async fn cut(&self) -> Result<RoundStats, PipelineError> {
        self.pipeline
            .cut(&self.live, &self.wal, &self.append_gate, false)
            .await
    }

    /// A flush round (background worker).
    pub async fn flush(&self) -> RoundStats {
        self.pipeline.flush(false).await
    }

    /// One cut round then one flush round (`force`: cut and flush everything now).
    pub async fn cut_and_flush(&self, force: bool) -> Result<RoundStats, PipelineError> {
        let cut = self
            .pipeline
            .cut(&self.live, &self.wal, &self.append_gate, force)
            .await?;
        let flush = self.pipeline.flush(force).await;
        Ok(RoundStats {
            traces_cut: cut.traces_cut,
            blocks_completed: cut.blocks_completed,
            ..flush
        })
    }

    /// Everything this ingester holds of a trace: live, head and local blocks.
    pub async fn find(&self, tenant: &TenantId, id: &TraceId) -> Option<Bytes> {
        let mut parts = self.pipeline.find(&self.live, tenant, id).await;
        match parts.len() {
            0 => None,
            1 => parts.pop(),
            _ => Some(parts.concat().into()),
        }
    }

    fn update_gauges(&self) {
        metrics::gauge!("ringtail_ingester_live_traces").set(self.live.trace_count() as f64);
        metrics::gauge!("ringtail_ingester_wal_disk_bytes").set(self.wal.size_on_disk() as f64);
    }

    pub async fn push(&self, body: Bytes) -> Result<(), Status> {
        if !self.is_serving() {
            return Err(Status::unavailable(
                "ingester is starting (replaying its WAL)",
            ));
        }
        self.last_push_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        let (tenant, segments) = decode_push(body.clone(), Check::Strict).map_err(|e| {
            metrics::counter!("ringtail_ingester_pushes_refused_total").increment(1);
            Status::invalid_argument(e.to_string())
        })?;
        let gate = self.append_gate.read().await;
        if self.leaving.load(Ordering::SeqCst) {
            return Err(Status::unavailable(
                "ingester is leaving the cluster (draining for shutdown)",
            ));
        }
        let seq = self
            .wal
            .append(body)
            .await
            .map_err(|e| Status::unavailable(format!("ingester WAL unavailable: {e}")))?;
        let new = self.live.append(&tenant, segments, seq);
        drop(gate);
        if self.live.bytes() > self.pipeline.max_live_bytes() {
            self.over_budget.notify_one();
        }
        metrics::gauge!("ringtail_ingester_live_traces").increment(new as f64);
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PushDecodeError {
    #[error("malformed push: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("push has an invalid tenant: {0}")]
    Tenant(#[from] crate::model::TenantIdError),
    #[error("push has an invalid trace ID: {0}")]
    TraceId(#[from] crate::model::TraceIdError),
    #[error("push segment {index} (trace {trace}): {source}")]
    Segment {
        index: usize,
        trace: TraceId,
        source: crate::otlp::SegmentError,
    },
}

/// How strictly [`decode_push`] reads segments.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Check {
    /// A push: every segment must pass what the distributor checks (the schema, every
    /// span of the segment's trace), or the push is refused.
    Strict,
    /// WAL replay: records were acked, so a segment that does not pass is kept as it is
    /// (reads decode records one by one and report what does not decode).
    Replay,
}

fn decode_push(body: Bytes, check: Check) -> Result<(TenantId, Vec<Segment>), PushDecodeError> {
    let push = PushRequest::decode(body)?;
    let tenant = TenantId::parse(&push.tenant)?;
    let mut segments = Vec::with_capacity(push.traces.len());
    for (index, t) in push.traces.into_iter().enumerate() {
        let trace = TraceId::from_bytes(&t.trace_id)?;
        let (start, end) = match crate::otlp::check_segment(&t.resource_spans, &trace) {
            Ok(facts) => (facts.start, facts.end),
            Err(_) if check == Check::Replay => (u64::MAX, 0),
            Err(source) => {
                return Err(PushDecodeError::Segment {
                    index,
                    trace,
                    source,
                })
            }
        };
        segments.push(Segment {
            trace,
            data: t.resource_spans,
            start,
            end,
        });
    }
    Ok((tenant, segments))
}

pub struct IngesterService(Arc<Ingester>);

#[tonic::async_trait]
impl ingester_server::Ingester for IngesterService {
    async fn push(&self, request: Request<RawBytes>) -> Result<Response<PushResponse>, Status> {
        let started = Instant::now();
        let result = self.0.push(request.into_inner().0).await;
        metrics::histogram!("ringtail_ingester_push_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        result.map(|()| Response::new(PushResponse {}))
    }

    async fn find_trace_by_id(
        &self,
        request: Request<FindTraceRequest>,
    ) -> Result<Response<FindTraceResponse>, Status> {
        if !self.0.is_serving() {
            return Err(Status::unavailable(
                "ingester is starting (replaying its WAL)",
            ));
        }
        let req = request.into_inner();
        let tenant =
            TenantId::parse(&req.tenant).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let id = TraceId::from_bytes(&req.trace_id)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let found = self.0.find(&tenant, &id).await;
        Ok(Response::new(FindTraceResponse {
            found: found.is_some(),
            resource_spans: found.unwrap_or_default(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::split_by_trace;
    use crate::rpc::proto::TraceSegment;
    use opentelemetry_proto::tonic::trace::v1::Span;
    use rand::{RngExt, SeedableRng};

    /// A push as a distributor builds it: `traces` traces of 3 spans each.
    fn push(traces: u8) -> Vec<u8> {
        let spans: Vec<Vec<u8>> = (1..=traces)
            .flat_map(|t| {
                (1..=3u8).map(move |s| {
                    Span {
                        trace_id: vec![t; 16],
                        span_id: vec![s; 8],
                        name: format!("op-{s}"),
                        start_time_unix_nano: u64::from(t) * 10,
                        end_time_unix_nano: u64::from(t) * 10 + 5,
                        ..Default::default()
                    }
                    .encode_to_vec()
                })
            })
            .collect();
        let body = crate::otlp::test_bytes::request_of(&spans);
        let split = split_by_trace(&body).expect("valid");
        PushRequest {
            tenant: "t".into(),
            traces: split
                .traces
                .into_iter()
                .map(|t| TraceSegment {
                    trace_id: Bytes::copy_from_slice(&t.trace_id.0),
                    resource_spans: t.resource_spans,
                })
                .collect(),
        }
        .encode_to_vec()
    }

    #[test]
    fn a_distributors_push_decodes_with_each_traces_time_range() {
        let (tenant, segments) = decode_push(push(4).into(), Check::Strict).expect("valid");
        assert_eq!(tenant.as_str(), "t");
        assert_eq!(segments.len(), 4);
        for s in &segments {
            let t = u64::from(s.trace.0[0]);
            assert_eq!((s.start, s.end), (t * 10, t * 10 + 5));
        }
    }

    /// 20,000 mutated pushes: never a panic; what a strict decode accepts has only spans
    /// of each segment's trace; replay never drops a record for a failed segment check
    /// (acked records are kept), only for a push that does not decode at all.
    #[test]
    fn mutated_pushes_never_panic_and_accepted_segments_hold_only_their_trace() {
        let original = push(5);
        let mut rng = rand::rngs::StdRng::seed_from_u64(10);
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..20_000 {
            let mut m = original.clone();
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..m.len());
                match rng.random_range(0..3) {
                    0 => m[at] = rng.random(),
                    1 => m[at] ^= 1 << rng.random_range(0..8),
                    _ => m.truncate(at),
                }
                if m.is_empty() {
                    break;
                }
            }
            let body = Bytes::from(m);
            match decode_push(body.clone(), Check::Strict) {
                Ok((_, segments)) => {
                    accepted += 1;
                    for s in segments {
                        assert!(crate::otlp::check_segment(&s.data, &s.trace).is_ok());
                    }
                }
                Err(PushDecodeError::Segment { .. }) => {
                    refused += 1;
                    let replayed = decode_push(body, Check::Replay);
                    assert!(!matches!(replayed, Err(PushDecodeError::Segment { .. })));
                }
                Err(_) => refused += 1,
            }
        }
        assert!(accepted > 1000 && refused > 1000, "{accepted} / {refused}");
    }
}

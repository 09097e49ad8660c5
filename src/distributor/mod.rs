//! Distributor: receive OTLP, validate, split by trace, write each trace to its replicas.
//!
//! Invariant: the client is acked only when every accepted trace is held by
//! `write_quorum` of its replicas (each replica acks after its WAL append). The push to
//! the remaining replica is not cancelled when the client is answered.
//!
//! A trace's replicas are the first `replication_factor` distinct ACTIVE ingesters on the
//! ring. With fewer ACTIVE (one restarting, leaving or crashed, or the cluster scaled
//! down) every ACTIVE one gets the trace and the ack still needs `write_quorum` of them:
//! writes go on under-replicated, counted and logged, and are refused (UNAVAILABLE, with
//! the reason) only below the write quorum ([`ReplicationFactor::write_health`]).

mod error;
pub(crate) mod grpc;
pub(crate) mod http;
mod json;
mod rate;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) use error::PushError;

use crate::cluster::{ClusterView, Membership};
use crate::model::TenantId;
use crate::otlp::{split_by_trace, SplitRequest};
use crate::ring::{
    unindexed_replicas, QuorumTracker, ReplicationFactor, TenantSeed, Token, WriteHealth,
};
use crate::rpc::codec::PushBody;
use crate::rpc::push_frame::{encode_push, encode_push_compressed, encode_unindexed, push_len};
use crate::rpc::quorum::{call_with_quorum, CallPolicy};
use crate::rpc::IngesterPool;

#[derive(Clone, Debug)]
pub(crate) struct DistributorSettings {
    pub replication: ReplicationFactor,
    pub push_timeout: Duration,
    /// Send pushes with their traces compressed (`compress_pushes`).
    pub compress_pushes: bool,
    pub multitenancy_enabled: bool,
    pub max_recv_msg_size: usize,
    /// Each tenant's ingestion rate (`ingestion_rate_bytes`, per tenant in the overrides).
    pub overrides: Arc<crate::overrides::LiveOverrides>,
    /// `ingestion_rate_strategy: global`.
    pub rate_global: bool,
}

/// What a successful push accepted.
#[derive(Debug, Default)]
pub(crate) struct PushOutcome {
    pub accepted_spans: u64,
    pub rejected_spans: u64,
    pub rejection_message: Option<String>,
}

pub(crate) struct Distributor {
    settings: DistributorSettings,
    membership: Membership,
    clients: Arc<dyn IngesterPool>,
    /// Whether the last write went to fewer replicas than the factor (for the log line
    /// when that starts and ends).
    under_replicated: AtomicBool,
    /// Whether the ring places by zone over fewer zones than the factor (logged likewise).
    too_few_zones: AtomicBool,
    rates: rate::TenantRates,
}

impl Distributor {
    pub(crate) fn new(
        settings: DistributorSettings,
        membership: Membership,
        clients: impl IngesterPool + 'static,
    ) -> Arc<Self> {
        Arc::new(Self {
            settings,
            membership,
            clients: Arc::new(clients),
            under_replicated: AtomicBool::new(false),
            too_few_zones: AtomicBool::new(false),
            rates: rate::TenantRates::default(),
        })
    }

    pub(crate) fn settings(&self) -> &DistributorSettings {
        &self.settings
    }

    /// Validates, splits and replicates one encoded `ExportTraceServiceRequest`.
    pub(crate) async fn push(
        &self,
        tenant: &TenantId,
        body: &[u8],
    ) -> Result<PushOutcome, PushError> {
        let started = Instant::now();
        let result = self.push_inner(tenant, body).await;
        metrics::histogram!("ringtail_distributor_push_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            metrics::counter!("ringtail_distributor_push_errors_total", "reason" => e.reason())
                .increment(1);
            if matches!(
                e,
                PushError::QuorumFailed { .. } | PushError::NotEnoughIngesters { .. }
            ) {
                metrics::counter!("ringtail_distributor_quorum_failures_total").increment(1);
                tracing::warn!(tenant = %tenant, error = %e, "push failed");
            }
        }
        result
    }

    async fn push_inner(&self, tenant: &TenantId, body: &[u8]) -> Result<PushOutcome, PushError> {
        if body.len() > self.settings.max_recv_msg_size {
            return Err(PushError::TooLarge {
                size: body.len(),
                limit: self.settings.max_recv_msg_size,
            });
        }
        let split = split_by_trace(body)?;
        for r in &split.rejections {
            metrics::counter!("ringtail_distributor_spans_rejected_total", "reason" => r.reason.as_str())
                .increment(r.spans);
        }
        let mut outcome = PushOutcome {
            accepted_spans: split.accepted_spans,
            rejected_spans: split.rejected_spans,
            rejection_message: split.rejection_message(),
        };
        self.admit(tenant, body.len(), outcome.accepted_spans)?;
        if split.traces.is_empty() {
            return match outcome.rejection_message {
                Some(message) => Err(PushError::NoValidSpans {
                    rejected: split.rejected_spans,
                    message,
                }),
                // An empty request is valid OTLP: nothing to store.
                None => Ok(outcome),
            };
        }
        let too_large = self.replicate(tenant, split).await?;
        if too_large.spans > 0 {
            metrics::counter!("ringtail_distributor_spans_rejected_total", "reason" => "trace_too_large")
                .increment(too_large.spans);
            let limit = self
                .settings
                .overrides
                .get(tenant.as_str())
                .max_bytes_per_trace;
            outcome.accepted_spans -= too_large.spans;
            outcome.rejected_spans += too_large.spans;
            let message = too_large.message(limit);
            outcome.rejection_message = Some(match outcome.rejection_message.take() {
                Some(before) => format!("{before}; {message}"),
                None => message,
            });
        }
        metrics::counter!("ringtail_distributor_spans_received_total")
            .increment(outcome.accepted_spans);
        Ok(outcome)
    }

    /// Holds the tenant to its ingestion rate (if it has one): over it, the request is
    /// refused whole with how long to wait; nothing of it is stored.
    fn admit(&self, tenant: &TenantId, bytes: usize, spans: u64) -> Result<(), PushError> {
        let Some(rate) = self
            .settings
            .overrides
            .get(tenant.as_str())
            .ingestion_rate()
        else {
            return Ok(());
        };
        let distributors = if self.settings.rate_global {
            let view = self.membership.view();
            view.members
                .iter()
                .filter(|m| {
                    m.identity
                        .roles
                        .contains(crate::cluster::Roles::DISTRIBUTOR)
                        && m.identity.state == crate::cluster::NodeState::Active
                })
                .count()
        } else {
            1
        };
        let rate = rate::share(rate, self.settings.rate_global, distributors);
        let refused = match self.rates.admit(tenant, bytes, rate, Instant::now()) {
            rate::Admit::Now => return Ok(()),
            rate::Admit::After(retry_after) => PushError::RateLimited {
                limit: rate.bytes_per_sec as u64,
                retry_after,
            },
            rate::Admit::Never => PushError::OverBurst {
                size: bytes,
                burst: rate.burst as u64,
            },
        };
        metrics::counter!("ringtail_distributor_spans_rejected_total", "reason" => refused.reason())
            .increment(spans);
        Err(refused)
    }

    /// Counts under-replicated traces, and logs when writes start and stop going to fewer
    /// replicas than the factor, or to fewer zones.
    fn note_health(&self, health: WriteHealth, view: &ClusterView, traces: usize) {
        let zones = view.write_ring.zones();
        let rf = self.settings.replication.factor();
        let few_zones = zones > 0 && zones < rf.min(view.writers.len());
        if self.too_few_zones.swap(few_zones, Ordering::Relaxed) != few_zones {
            if few_zones {
                tracing::warn!(zones, replication_factor = rf, "ingesters have zones, but fewer zones than the replication factor: each trace gets one replica per zone, the rest on other ingesters of the same zones");
            } else {
                tracing::info!(
                    zones,
                    replication_factor = rf,
                    "every trace's replicas are in distinct zones"
                );
            }
        }
        let under = health == WriteHealth::UnderReplicated;
        if under {
            metrics::counter!("ringtail_distributor_under_replicated_traces_total")
                .increment(traces as u64);
        }
        if self.under_replicated.swap(under, Ordering::Relaxed) != under {
            let active = view.writers.len();
            if under {
                tracing::warn!(active, replication_factor = rf, "writing under-replicated: fewer ACTIVE ingesters than the replication factor; each trace goes to every ACTIVE one and is acked at write quorum");
            } else {
                tracing::info!(
                    active,
                    replication_factor = rf,
                    "writes are fully replicated again"
                );
            }
        }
    }

    /// The push of `traces` (indices into `split`), and whether its traces are compressed
    /// (unless `compress_pushes` is off, or compression failed). Refused before anything
    /// is sent if the push, uncompressed (as the ingester holds it), would be larger than
    /// `limit`.
    fn push_body(
        &self,
        tenant: &TenantId,
        traces: &[u32],
        split: &SplitRequest,
        limit: usize,
    ) -> Result<(bytes::Bytes, bool), PushError> {
        let segments = traces.iter().map(|&t| {
            let trace = &split.traces[t as usize];
            (&trace.trace_id.0[..], &trace.resource_spans[..])
        });
        let size = push_len(tenant.as_str(), segments.clone());
        if size > limit {
            return Err(PushError::PushTooLarge { size, limit });
        }
        let compressed = self
            .settings
            .compress_pushes
            .then(|| encode_push_compressed(tenant.as_str(), segments.clone()))
            .flatten();
        Ok(match compressed {
            Some(body) => (body.into(), true),
            None => (encode_push(tenant.as_str(), segments).into(), false),
        })
    }

    /// How each replica's push is made: the client is answered at the quorum, and every
    /// failed push is counted, also one that fails after.
    fn write_policy(&self) -> CallPolicy {
        CallPolicy {
            timeout: self.settings.push_timeout,
            linger: Duration::ZERO,
            on_failure: count_replica_failure,
        }
    }

    /// Sends every ingester one push with all the traces it replicates and waits for the
    /// write quorum of every trace (see [`call_with_quorum`] for the contract). Returns
    /// the traces an acking replica refused as too large (`max_bytes_per_trace`).
    async fn replicate(
        &self,
        tenant: &TenantId,
        split: SplitRequest,
    ) -> Result<TooLarge, PushError> {
        let view = self.membership.view();
        let rf = self.settings.replication;
        let health = enough_ingesters(&view, rf)?;
        self.note_health(health, &view, split.traces.len());
        let seed = TenantSeed::new(tenant);
        // Each ingester's traces, by index into the split, and which of them (by index
        // into its push) it leaves to the other replicas to index for search.
        let mut per_instance: Vec<Vec<u32>> = vec![Vec::new(); view.writers.len()];
        let mut unindexed: Vec<Vec<u32>> = vec![Vec::new(); view.writers.len()];
        let mut groups = HashSet::new();
        let place = |trace: &crate::otlp::TraceSegment| {
            view.write_ring
                .replicas(Token::for_trace(seed, &trace.trace_id), rf.factor())
        };
        for (t, trace) in split.traces.iter().enumerate() {
            let replicas = place(trace);
            groups.insert(replicas);
            for &i in unindexed_replicas(&replicas, rf.write_quorum()) {
                unindexed[i as usize].push(per_instance[i as usize].len() as u32);
            }
            for &i in replicas.as_slice() {
                per_instance[i as usize].push(t as u32);
            }
        }
        // Ingesters sent the same traces share one body, encoded and compressed once
        // (with as many ingesters as the replication factor, every ingester gets every
        // trace).
        let limit = crate::rpc::pool::max_push_bytes(self.settings.max_recv_msg_size);
        let mut bodies: Vec<(usize, bytes::Bytes, bool)> = Vec::with_capacity(per_instance.len());
        for (i, traces) in per_instance.iter().enumerate() {
            if traces.is_empty() {
                continue;
            }
            let shared = bodies
                .iter()
                .find(|(j, _, _)| per_instance[*j] == *traces)
                .map(|(_, body, compressed)| (body.clone(), *compressed));
            let (body, compressed) = match shared {
                Some(shared) => shared,
                None => self.push_body(tenant, traces, &split, limit)?,
            };
            bodies.push((i, body, compressed));
        }
        let pushes: Vec<(usize, PushBody)> = bodies
            .into_iter()
            .map(|(i, shared, compressed)| {
                let own = encode_unindexed(&unindexed[i]).into();
                (
                    i,
                    PushBody {
                        shared,
                        own,
                        compressed,
                    },
                )
            })
            .collect();
        let calls = pushes
            .into_iter()
            .map(|(i, push)| {
                let client = self.clients.client(view.writers[i].grpc);
                (i as u16, client.push(push))
            })
            .collect();
        let tracker = QuorumTracker::new(groups, rf.write_quorum());
        let outcome = call_with_quorum(calls, tracker, self.write_policy()).await;
        if outcome.reached {
            Ok(TooLarge::from_answers(
                &outcome.outcomes,
                &split.traces,
                place,
            ))
        } else {
            Err(PushError::QuorumFailed {
                needed: rf.write_quorum(),
                failures: outcome.failures(|i| view.writers[i as usize].name.clone()),
            })
        }
    }
}

/// Counts a replica's failed push, also one that fails after the client was answered:
/// each is a trace held by fewer replicas than the factor, which nothing else shows.
fn count_replica_failure(e: &crate::rpc::quorum::CallError) {
    use crate::rpc::quorum::CallError;
    let reason = match e {
        CallError::TimedOut(_) => "timeout",
        CallError::Status { code, .. } => match code {
            tonic::Code::Unavailable => "unavailable",
            tonic::Code::ResourceExhausted => "resource_exhausted",
            tonic::Code::InvalidArgument => "invalid_argument",
            tonic::Code::Cancelled => "cancelled",
            tonic::Code::DeadlineExceeded => "deadline_exceeded",
            _ => "other",
        },
    };
    metrics::counter!("ringtail_distributor_replica_push_failures_total", "reason" => reason)
        .increment(1);
}

/// The traces of a request that a replica refused because they would exceed the
/// tenant's `max_bytes_per_trace`.
#[derive(Debug, Default, PartialEq, Eq)]
struct TooLarge {
    traces: u64,
    spans: u64,
    first: Option<crate::model::TraceId>,
}

impl TooLarge {
    /// From the acking replicas' answers: each refused segment (its index in that
    /// ingester's push) mapped back to the request's trace by placing the traces again
    /// (`place`, as the pushes were built). Rare, so nothing is kept for it on the way.
    fn from_answers(
        answers: &[crate::rpc::quorum::CallOutcome<Vec<u32>>],
        traces: &[crate::otlp::TraceSegment],
        place: impl Fn(&crate::otlp::TraceSegment) -> crate::ring::ReplicaSet,
    ) -> Self {
        let refusing = answers
            .iter()
            .filter_map(|o| o.result.as_ref().ok().map(|r| (o.instance, r)))
            .filter(|(_, r)| !r.is_empty());
        let mut refused = Vec::new();
        for (instance, indices) in refusing {
            refused.resize(traces.len(), false);
            let pushed: Vec<usize> = (0..traces.len())
                .filter(|&t| place(&traces[t]).contains(instance))
                .collect();
            for &k in indices {
                if let Some(&t) = pushed.get(k as usize) {
                    refused[t] = true;
                }
            }
        }
        Self::of(traces, &refused)
    }

    /// The request's traces whose `refused` flag is set.
    fn of(traces: &[crate::otlp::TraceSegment], refused: &[bool]) -> Self {
        let mut out = Self::default();
        for (trace, _) in traces.iter().zip(refused).filter(|(_, &r)| r) {
            out.traces += 1;
            out.spans += u64::from(trace.spans);
            out.first.get_or_insert(trace.trace_id);
        }
        out
    }

    fn message(&self, limit: usize) -> String {
        let first = self.first.map(|t| t.to_hex()).unwrap_or_default();
        format!(
            "{} spans rejected: their trace would exceed max_bytes_per_trace ({limit} bytes) ({} traces, first: {first})",
            self.spans, self.traces
        )
    }
}

/// Writes need `write_quorum` ACTIVE ingesters; with fewer than `factor` they go on,
/// under-replicated. Crashed (absent) and departed ingesters do not count either way.
fn enough_ingesters(view: &ClusterView, rf: ReplicationFactor) -> Result<WriteHealth, PushError> {
    match rf.write_health(view.writers.len()) {
        WriteHealth::Refused => Err(PushError::NotEnoughIngesters {
            active: view.writers.len(),
            factor: rf.factor(),
            quorum: rf.write_quorum(),
        }),
        health => Ok(health),
    }
}

#[cfg(test)]
mod tests;

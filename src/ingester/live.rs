//! Live traces: the segments of every trace this ingester holds, per tenant, in memory.
//!
//! Segments are slices of the push buffers they arrived in (no copy). Lookups copy a
//! trace's segments into one buffer for the response.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::model::{TenantId, TraceId};

const SHARDS: usize = 32;

/// A live trace: its segments as they arrived, and where it stands in the WAL.
pub struct LiveTrace {
    pub segments: Vec<Bytes>,
    pub bytes: usize,
    /// Sequence number of the oldest WAL record holding a segment of this trace.
    pub first_seq: u64,
    last_append: Instant,
}

#[derive(Default)]
struct Tenant {
    shards: [Mutex<HashMap<TraceId, LiveTrace>>; SHARDS],
}

/// Every live trace, per tenant.
#[derive(Default)]
pub struct LiveTraces {
    tenants: RwLock<HashMap<TenantId, Arc<Tenant>>>,
}

fn shard(id: &TraceId) -> usize {
    id.0[15] as usize % SHARDS
}

impl LiveTraces {
    fn tenant(&self, tenant: &TenantId) -> Arc<Tenant> {
        if let Some(t) = self
            .tenants
            .read()
            .ok()
            .and_then(|m| m.get(tenant).cloned())
        {
            return t;
        }
        let mut map = match self.tenants.write() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry(tenant.clone()).or_default().clone()
    }

    /// Appends segments that arrived in WAL record `seq`; returns how many traces were new.
    pub fn append(
        &self,
        tenant: &TenantId,
        segments: impl IntoIterator<Item = (TraceId, Bytes)>,
        seq: u64,
    ) -> usize {
        let t = self.tenant(tenant);
        let now = Instant::now();
        let mut new = 0;
        for (id, data) in segments {
            let mut shard = match t.shards[shard(&id)].lock() {
                Ok(s) => s,
                Err(poisoned) => poisoned.into_inner(),
            };
            let trace = shard.entry(id).or_insert_with(|| {
                new += 1;
                LiveTrace {
                    segments: Vec::new(),
                    bytes: 0,
                    first_seq: seq,
                    last_append: now,
                }
            });
            trace.bytes += data.len();
            trace.segments.push(data);
            trace.first_seq = trace.first_seq.min(seq);
            trace.last_append = now;
        }
        new
    }

    /// The trace's segments concatenated, if this ingester holds it.
    pub fn get(&self, tenant: &TenantId, id: &TraceId) -> Option<Bytes> {
        let t = self.tenants.read().ok()?.get(tenant)?.clone();
        let shard = t.shards[shard(id)].lock().ok()?;
        let trace = shard.get(id)?;
        let mut out = BytesMut::with_capacity(trace.bytes);
        for s in &trace.segments {
            out.extend_from_slice(s);
        }
        Some(out.freeze())
    }

    /// Removes and returns the traces idle for at least their tenant's `idle` period
    /// (every trace of a tenant for which it is `None`).
    pub fn take_idle(
        &self,
        idle_for: impl Fn(&TenantId) -> Option<Duration>,
    ) -> Vec<(TenantId, Vec<(TraceId, LiveTrace)>)> {
        let now = Instant::now();
        let tenants: Vec<(TenantId, Arc<Tenant>)> = match self.tenants.read() {
            Ok(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Err(_) => return Vec::new(),
        };
        let mut out = Vec::new();
        for (tenant, t) in tenants {
            let idle = idle_for(&tenant);
            let mut taken = Vec::new();
            for shard in &t.shards {
                let Ok(mut shard) = shard.lock() else {
                    continue;
                };
                let ids: Vec<TraceId> = shard
                    .iter()
                    .filter(|(_, tr)| idle.is_none_or(|d| now.duration_since(tr.last_append) >= d))
                    .map(|(id, _)| *id)
                    .collect();
                taken.extend(
                    ids.into_iter()
                        .filter_map(|id| shard.remove(&id).map(|t| (id, t))),
                );
            }
            if !taken.is_empty() {
                out.push((tenant, taken));
            }
        }
        out
    }

    /// The oldest WAL record a live trace still needs.
    pub fn min_first_seq(&self) -> Option<u64> {
        let tenants = self.tenants.read().ok()?;
        tenants
            .values()
            .flat_map(|t| t.shards.iter())
            .filter_map(|s| s.lock().ok()?.values().map(|t| t.first_seq).min())
            .min()
    }

    pub fn trace_count(&self) -> usize {
        let Ok(tenants) = self.tenants.read() else {
            return 0;
        };
        tenants
            .values()
            .flat_map(|t| t.shards.iter())
            .map(|s| s.lock().map(|s| s.len()).unwrap_or(0))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_of_a_trace_are_concatenated_per_tenant() {
        let live = LiveTraces::default();
        let a = TenantId::parse("a").expect("tenant");
        let b = TenantId::parse("b").expect("tenant");
        let id = TraceId([9; 16]);
        assert_eq!(live.append(&a, [(id, Bytes::from_static(b"one"))], 7), 1);
        assert_eq!(live.append(&a, [(id, Bytes::from_static(b"two"))], 9), 0);
        assert_eq!(live.get(&a, &id).as_deref(), Some(&b"onetwo"[..]));
        assert_eq!(live.get(&b, &id), None);
        assert_eq!(live.trace_count(), 1);
        assert_eq!(live.min_first_seq(), Some(7));
        assert!(live.take_idle(|_| Some(Duration::from_secs(60))).is_empty());
        let taken = live.take_idle(|_| None);
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].1[0].1.segments.len(), 2);
        assert_eq!(live.trace_count(), 0);
        assert_eq!(live.min_first_seq(), None);
    }
}

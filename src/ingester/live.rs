//! Live traces: the segments of every trace this ingester holds, per tenant, in memory.
//!
//! Segments are slices of the push buffers they arrived in (no copy). Lookups copy a
//! trace's segments into one buffer for the response. The total size of the segments is
//! kept, so that the pipeline can cut the least recently appended traces when it exceeds
//! the ingester's memory budget.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::model::{TenantId, TraceId};

const SHARDS: usize = 32;

/// One trace's bytes from one push, with its spans' time range (read when the push was
/// checked: `u64::MAX..0` when no span has times).
pub struct Segment {
    pub trace: TraceId,
    pub data: Bytes,
    pub start: u64,
    pub end: u64,
}

impl Segment {
    #[cfg(test)]
    fn untimed(trace: TraceId, data: Bytes) -> Self {
        Self {
            trace,
            data,
            start: u64::MAX,
            end: 0,
        }
    }
}

/// A live trace: its segments as they arrived, and where it stands in the WAL.
pub struct LiveTrace {
    pub segments: Vec<Bytes>,
    pub bytes: usize,
    /// Earliest span start and latest span end of its segments.
    pub start: u64,
    pub end: u64,
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
    /// Sum of every live trace's `bytes`.
    bytes: AtomicUsize,
}

/// Traces taken out of the live map, per tenant.
pub type Taken = Vec<(TenantId, Vec<(TraceId, LiveTrace)>)>;

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
        segments: impl IntoIterator<Item = Segment>,
        seq: u64,
    ) -> usize {
        let t = self.tenant(tenant);
        let now = Instant::now();
        let mut new = 0;
        let mut added = 0;
        for segment in segments {
            let mut shard = match t.shards[shard(&segment.trace)].lock() {
                Ok(s) => s,
                Err(poisoned) => poisoned.into_inner(),
            };
            let trace = shard.entry(segment.trace).or_insert_with(|| {
                new += 1;
                LiveTrace {
                    segments: Vec::new(),
                    bytes: 0,
                    start: u64::MAX,
                    end: 0,
                    first_seq: seq,
                    last_append: now,
                }
            });
            added += segment.data.len();
            trace.bytes += segment.data.len();
            trace.start = trace.start.min(segment.start);
            trace.end = trace.end.max(segment.end);
            trace.segments.push(segment.data);
            trace.first_seq = trace.first_seq.min(seq);
            trace.last_append = now;
        }
        self.bytes.fetch_add(added, Ordering::Relaxed);
        new
    }

    /// The size of every live trace's segments.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    fn snapshot_tenants(&self) -> Vec<(TenantId, Arc<Tenant>)> {
        match self.tenants.read() {
            Ok(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Removes the least recently appended traces, of every tenant, until at least
    /// `at_least` bytes are taken (or nothing is left).
    pub fn take_oldest(&self, at_least: usize) -> Taken {
        if at_least == 0 {
            return Vec::new();
        }
        let tenants = self.snapshot_tenants();
        // (last append, tenant index, shard, id, bytes) of every trace.
        let mut all: Vec<(Instant, usize, usize, TraceId, usize)> = Vec::new();
        for (ti, (_, t)) in tenants.iter().enumerate() {
            for (si, shard) in t.shards.iter().enumerate() {
                let Ok(shard) = shard.lock() else {
                    continue;
                };
                all.extend(
                    shard
                        .iter()
                        .map(|(id, tr)| (tr.last_append, ti, si, *id, tr.bytes)),
                );
            }
        }
        all.sort_unstable_by_key(|c| c.0);
        let mut chosen = 0;
        let mut sum = 0;
        while chosen < all.len() && sum < at_least {
            sum += all[chosen].4;
            chosen += 1;
        }
        let mut chosen = all[..chosen].to_vec();
        chosen.sort_unstable_by_key(|c| (c.1, c.2));
        let mut out: Taken = Vec::new();
        for (ti, (tenant, t)) in tenants.iter().enumerate() {
            let mut taken = Vec::new();
            for (si, shard) in t.shards.iter().enumerate() {
                let start = chosen.partition_point(|c| (c.1, c.2) < (ti, si));
                let end = chosen.partition_point(|c| (c.1, c.2) <= (ti, si));
                if start == end {
                    continue;
                }
                let Ok(mut shard) = shard.lock() else {
                    continue;
                };
                taken.extend(
                    chosen[start..end]
                        .iter()
                        .filter_map(|c| shard.remove(&c.3).map(|tr| (c.3, tr))),
                );
            }
            if !taken.is_empty() {
                out.push((tenant.clone(), taken));
            }
        }
        self.forget_bytes(&out);
        out
    }

    fn forget_bytes(&self, taken: &Taken) {
        let bytes: usize = taken
            .iter()
            .flat_map(|(_, traces)| traces.iter().map(|(_, t)| t.bytes))
            .sum();
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
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
    pub fn take_idle(&self, idle_for: impl Fn(&TenantId) -> Option<Duration>) -> Taken {
        let now = Instant::now();
        let tenants = self.snapshot_tenants();
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
        self.forget_bytes(&out);
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
        assert_eq!(
            live.append(&a, [Segment::untimed(id, Bytes::from_static(b"one"))], 7),
            1
        );
        assert_eq!(
            live.append(&a, [Segment::untimed(id, Bytes::from_static(b"two"))], 9),
            0
        );
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
        assert_eq!(live.bytes(), 0);
    }

    #[test]
    fn the_least_recently_appended_traces_are_taken_first_until_enough_bytes() {
        let live = LiveTraces::default();
        let a = TenantId::parse("a").expect("tenant");
        let b = TenantId::parse("b").expect("tenant");
        // Appended in this order, 100 bytes each; trace 1 gets a second segment last.
        let ids: Vec<TraceId> = (1..=4u8).map(|i| TraceId([i; 16])).collect();
        for (i, id) in ids.iter().enumerate() {
            let tenant = if i % 2 == 0 { &a } else { &b };
            live.append(
                tenant,
                [Segment::untimed(*id, Bytes::from(vec![i as u8; 100]))],
                i as u64,
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        live.append(&a, [Segment::untimed(ids[0], Bytes::from(vec![0; 50]))], 9);
        assert_eq!(live.bytes(), 450);
        // 150 bytes: traces 2 (tenant b) and 3 (tenant a), not 1 (appended to last).
        let taken = live.take_oldest(150);
        let mut got: Vec<(String, u8)> = taken
            .iter()
            .flat_map(|(t, traces)| {
                traces
                    .iter()
                    .map(|(id, _)| (t.as_str().to_owned(), id.0[0]))
            })
            .collect();
        got.sort();
        assert_eq!(got, vec![("a".to_owned(), 3), ("b".to_owned(), 2)]);
        assert_eq!(live.bytes(), 250);
        assert_eq!(live.trace_count(), 2);
        assert!(live.take_oldest(0).is_empty());
        assert_eq!(
            live.take_oldest(10_000)
                .iter()
                .map(|(_, t)| t.len())
                .sum::<usize>(),
            2
        );
        assert_eq!(live.bytes(), 0);
    }
}

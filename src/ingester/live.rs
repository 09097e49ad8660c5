//! Live traces: the segments of every trace this ingester holds, per tenant, in memory.
//!
//! Segments are slices of the push buffers they arrived in (no copy). Lookups copy a
//! trace's segments into one buffer for the response.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::model::{TenantId, TraceId};

const SHARDS: usize = 32;

#[derive(Default)]
struct Trace {
    segments: Vec<Bytes>,
    bytes: usize,
    #[allow(dead_code)] // read by the block cutter (idle period)
    last_append: Option<Instant>,
}

#[derive(Default)]
struct Tenant {
    shards: [Mutex<HashMap<TraceId, Trace>>; SHARDS],
}

/// Every live trace, per tenant.
#[derive(Default)]
pub struct LiveTraces {
    tenants: RwLock<HashMap<TenantId, std::sync::Arc<Tenant>>>,
}

fn shard(id: &TraceId) -> usize {
    id.0[15] as usize % SHARDS
}

impl LiveTraces {
    fn tenant(&self, tenant: &TenantId) -> std::sync::Arc<Tenant> {
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

    /// Appends segments; returns how many traces were new.
    pub fn append(
        &self,
        tenant: &TenantId,
        segments: impl IntoIterator<Item = (TraceId, Bytes)>,
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
                Trace::default()
            });
            trace.bytes += data.len();
            trace.segments.push(data);
            trace.last_append = Some(now);
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
        assert_eq!(live.append(&a, [(id, Bytes::from_static(b"one"))]), 1);
        assert_eq!(live.append(&a, [(id, Bytes::from_static(b"two"))]), 0);
        assert_eq!(live.get(&a, &id).as_deref(), Some(&b"onetwo"[..]));
        assert_eq!(live.get(&b, &id), None);
        assert_eq!(live.trace_count(), 1);
    }
}

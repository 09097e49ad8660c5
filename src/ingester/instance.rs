//! One tenant's data on this ingester, in the places a trace passes through: live traces →
//! the head block being filled → sealed heads (due for completion) → local blocks (complete
//! on disk, flushed or not). A trace is readable in at least one place at every moment.
//!
//! Lock order, the only one there is: `moving` → a live shard → `blocks`. A cut holds
//! `moving` exclusively while traces go from live to the head, so a read (which holds it
//! shared) sees each trace in one place or the other. Head → sealed and sealed → local
//! block are single critical sections on `blocks`: a sealed head leaves exactly when its
//! block is registered, never before.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::live::{lock, Appended, HeldTrace, Segment, Taken, TenantLive};
use super::local_blocks::{BlockState, LocalBlock};
use crate::model::{TenantId, TraceId, TraceMap};
use crate::storage::block::BlockMeta;

/// The buffers a cut copies traces into: under malloc's mmap threshold (4 MiB here, see
/// `main.rs`), so they come from the heap and its freed memory, not from fresh pages (one
/// buffer for a whole cut of several MiB took 5x the page faults).
const CUT_CHUNK: usize = 256 << 10;

/// Traces cut from live into a head block, with their share of every instance's live bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cut {
    pub traces: usize,
    pub bytes: usize,
}

fn unknown_as_zero(start: u64) -> u64 {
    if start == u64::MAX {
        0
    } else {
        start
    }
}

/// A head block: traces in memory, one buffer per trace and cut.
pub(super) struct Head {
    pub seq: u64,
    pub created: Instant,
    pub traces: TraceMap<HeadTrace>,
    pub bytes: usize,
    /// The oldest WAL record one of its traces came from.
    pub min_seq: u64,
    pub start: u64,
    pub end: u64,
}

/// A trace in a head block: one buffer per cut that moved it there, and its span time
/// range (as its live trace knew it; `u64::MAX`: unknown), so a search skips the traces
/// outside its range without decoding them.
pub(super) struct HeadTrace {
    /// Its bytes as cut, once per cut (most traces are cut once: one inline, no
    /// allocation per trace).
    pub records: smallvec::SmallVec<[Bytes; 1]>,
    pub start: u64,
    pub end: u64,
    /// Whether its block's search section holds it (`ring::unindexed_replicas`).
    pub indexed: bool,
}

#[derive(Default)]
struct Blocks {
    head: Option<Head>,
    sealed: Vec<Arc<Head>>,
    /// By block ID.
    local: BTreeMap<String, LocalBlock>,
}

/// What a lookup found: bytes in memory, and the local blocks to read.
pub(super) struct Found {
    pub in_memory: Vec<Bytes>,
    pub blocks: Vec<BlockMeta>,
}

/// Flush work a round takes from this tenant.
#[derive(Default)]
pub(super) struct FlushDue {
    /// Pending blocks: `(created unix secs, block ID)`.
    pub pending: Vec<(u64, String)>,
    /// Quarantined blocks due for their slow retry.
    pub retries: Vec<String>,
}

pub(super) struct Instance {
    pub tenant: TenantId,
    moving: RwLock<()>,
    live: TenantLive,
    blocks: Mutex<Blocks>,
}

impl Instance {
    pub(super) fn new(tenant: TenantId, local: Vec<LocalBlock>) -> Self {
        let local = local
            .into_iter()
            .map(|b| (b.meta.block_id.clone(), b))
            .collect();
        Self {
            tenant,
            moving: RwLock::new(()),
            live: TenantLive::default(),
            blocks: Mutex::new(Blocks {
                local,
                ..Blocks::default()
            }),
        }
    }

    pub(super) fn live(&self) -> &TenantLive {
        &self.live
    }

    pub(super) fn append(&self, segments: impl IntoIterator<Item = Segment>, seq: u64) -> Appended {
        self.live.append(segments, seq)
    }

    /// Moves the live traces idle for `idle` (all when `None`) into the head block.
    pub(super) fn cut_idle(&self, idle: Option<Duration>, head_seq: &AtomicU64) -> Cut {
        let _moving = self.moving.write().unwrap_or_else(PoisonError::into_inner);
        let taken = self.live.take_idle(idle);
        self.add_to_head(taken, head_seq)
    }

    /// Moves the live traces `ids` (those still live) into the head block.
    pub(super) fn cut_these(&self, ids: &[TraceId], head_seq: &AtomicU64) -> Cut {
        if ids.is_empty() {
            return Cut::default();
        }
        let _moving = self.moving.write().unwrap_or_else(PoisonError::into_inner);
        let taken = self.live.take(ids);
        self.add_to_head(taken, head_seq)
    }

    fn add_to_head(&self, taken: Taken, head_seq: &AtomicU64) -> Cut {
        let mut cut = Cut::default();
        if taken.is_empty() {
            return cut;
        }
        let mut blocks = lock(&self.blocks);
        let head = blocks.head.get_or_insert_with(|| Head {
            seq: head_seq.fetch_add(1, Ordering::Relaxed),
            created: Instant::now(),
            traces: TraceMap::default(),
            bytes: 0,
            min_seq: u64::MAX,
            start: u64::MAX,
            end: 0,
        });
        // The traces are copied out of the push buffers their segments point into, so
        // those can go: into shared chunks of `CUT_CHUNK` bytes (one allocation for many
        // traces, not one each), which go with the head.
        let mut buf = BytesMut::new();
        for (id, trace) in taken {
            if buf.capacity() < trace.bytes {
                buf = BytesMut::with_capacity(CUT_CHUNK.max(trace.bytes));
            }
            for s in &trace.segments {
                buf.extend_from_slice(s);
            }
            let data = buf.split().freeze();
            cut.traces += 1;
            cut.bytes += trace.bytes;
            head.start = head.start.min(trace.start);
            head.end = head.end.max(trace.end);
            head.bytes += data.len();
            head.min_seq = head.min_seq.min(trace.first_seq);
            let held = head.traces.entry(id).or_insert_with(|| HeadTrace {
                records: smallvec::SmallVec::new(),
                start: u64::MAX,
                end: 0,
                indexed: false,
            });
            held.records.push(data);
            held.indexed |= trace.indexed;
            held.start = held.start.min(trace.start);
            held.end = held.end.max(trace.end);
        }
        cut
    }

    /// Seals the head block if `due` says so; returns whether it did.
    pub(super) fn seal_if(&self, due: impl FnOnce(&Head) -> bool) -> bool {
        let mut blocks = lock(&self.blocks);
        let Some(head) = blocks.head.take_if(|h| due(h)) else {
            return false;
        };
        blocks.sealed.push(Arc::new(head));
        true
    }

    /// The sealed heads, oldest first (a failed completion stays here for the next round).
    pub(super) fn sealed(&self) -> Vec<Arc<Head>> {
        lock(&self.blocks).sealed.clone()
    }

    /// Registers the local block written from sealed head `head_seq` and drops that head,
    /// in one step.
    pub(super) fn register(&self, head_seq: u64, meta: BlockMeta) {
        let mut blocks = lock(&self.blocks);
        blocks.local.insert(
            meta.block_id.clone(),
            LocalBlock {
                meta,
                state: BlockState::Pending,
            },
        );
        blocks.sealed.retain(|h| h.seq != head_seq);
    }

    /// Everything this tenant holds of trace `id` in memory, and the local blocks to read.
    pub(super) fn find(&self, id: &TraceId) -> Found {
        let _reading = self.moving.read().unwrap_or_else(PoisonError::into_inner);
        let mut in_memory: Vec<Bytes> = self.live.get(id).into_iter().collect();
        let blocks = lock(&self.blocks);
        for head in blocks.head.iter().chain(blocks.sealed.iter().map(|h| &**h)) {
            in_memory.extend(
                head.traces
                    .get(id)
                    .into_iter()
                    .flat_map(|t| t.records.iter().cloned()),
            );
        }
        Found {
            in_memory,
            blocks: blocks.local.values().map(|l| l.meta.clone()).collect(),
        }
    }

    /// What this tenant holds in memory (live traces, the head, sealed heads), each
    /// trace once with all its records, and its local blocks: what a search reads. Taken
    /// under the same lock as [`Instance::find`], so no trace is missed while it moves.
    pub(super) fn search_snapshot(&self) -> (Vec<HeldTrace>, Vec<BlockMeta>) {
        let _reading = self.moving.read().unwrap_or_else(PoisonError::into_inner);
        let mut memory = Vec::new();
        self.live.snapshot(&mut memory);
        let blocks = lock(&self.blocks);
        let mut in_heads: TraceMap<(Vec<Bytes>, u64, u64)> = TraceMap::default();
        for head in blocks.head.iter().chain(blocks.sealed.iter().map(|h| &**h)) {
            for (id, held) in &head.traces {
                let entry = in_heads
                    .entry(*id)
                    .or_insert_with(|| (Vec::new(), u64::MAX, 0));
                entry.0.extend(held.records.iter().cloned());
                // 0: unknown, and stays so (see `HeldTrace`).
                entry.1 = entry.1.min(unknown_as_zero(held.start));
                entry.2 = entry.2.max(held.end);
            }
        }
        let metas = blocks.local.values().map(|l| l.meta.clone()).collect();
        drop(blocks);
        for (id, records, start, end) in &mut memory {
            if let Some((more, s, e)) = in_heads.remove(id) {
                records.extend(more);
                *start = (*start).min(s);
                *end = (*end).max(e);
            }
        }
        memory.extend(in_heads.into_iter().map(|(id, (r, s, e))| (id, r, s, e)));
        (memory, metas)
    }

    /// The oldest WAL record this tenant still needs (in live traces, the head or a sealed
    /// head). Called with no cut running: nothing moves meanwhile.
    pub(super) fn min_seq(&self) -> Option<u64> {
        let live = self.live.min_first_seq();
        let blocks = lock(&self.blocks);
        let heads = blocks
            .head
            .iter()
            .chain(blocks.sealed.iter().map(|h| &**h))
            .map(|h| h.min_seq);
        live.into_iter().chain(heads).min()
    }

    pub(super) fn head_bytes(&self) -> usize {
        lock(&self.blocks).head.as_ref().map_or(0, |h| h.bytes)
    }

    pub(super) fn sealed_count(&self) -> usize {
        lock(&self.blocks).sealed.len()
    }

    /// The bytes of trace data in the sealed heads.
    pub(super) fn sealed_bytes(&self) -> usize {
        lock(&self.blocks).sealed.iter().map(|h| h.bytes).sum()
    }

    pub(super) fn flush_due(&self, now: Instant) -> FlushDue {
        let blocks = lock(&self.blocks);
        let mut due = FlushDue::default();
        for (id, local) in &blocks.local {
            match local.state {
                BlockState::Pending => due.pending.push((local.meta.created_unix_secs, id.clone())),
                BlockState::Quarantined { retry_at } if retry_at <= now => {
                    due.retries.push(id.clone())
                }
                _ => {}
            }
        }
        due
    }

    pub(super) fn set_state(&self, block_id: &str, state: BlockState) {
        if let Some(local) = lock(&self.blocks).local.get_mut(block_id) {
            local.state = state;
        }
    }

    /// A local block's meta, if the block is here.
    pub(super) fn block_meta(&self, block_id: &str) -> Option<BlockMeta> {
        lock(&self.blocks)
            .local
            .get(block_id)
            .map(|b| b.meta.clone())
    }

    pub(super) fn forget_block(&self, block_id: &str) {
        lock(&self.blocks).local.remove(block_id);
    }

    /// Blocks flushed at least `after` ago.
    pub(super) fn flushed_before(&self, after: Duration) -> Vec<String> {
        lock(&self.blocks)
            .local
            .iter()
            .filter(|(_, l)| matches!(l.state, BlockState::Flushed(t) if t.elapsed() >= after))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Local blocks in states `which`: how many, and their data bytes.
    pub(super) fn count_blocks(&self, which: impl Fn(BlockState) -> bool) -> (usize, u64) {
        lock(&self.blocks)
            .local
            .values()
            .filter(|l| which(l.state))
            .fold((0, 0), |(n, b), l| (n + 1, b + l.meta.data_bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> TenantId {
        TenantId::parse("t").expect("tenant")
    }

    fn segment(id: TraceId, data: &'static [u8]) -> Segment {
        Segment::untimed(id, Bytes::from_static(data))
    }

    fn meta_of(head: &Head, block_id: &str) -> BlockMeta {
        BlockMeta {
            format_version: 1,
            tenant: "t".into(),
            block_id: block_id.into(),
            ingester: "i".into(),
            compaction_level: 0,
            min_trace_id: String::new(),
            max_trace_id: String::new(),
            start_unix_nano: 0,
            end_unix_nano: 0,
            total_traces: head.traces.len() as u64,
            data_pages: 1,
            data_bytes: head.bytes as u64,
            index_bytes: 0,
            filter_bytes: 0,
            created_unix_secs: head.seq,
            search_version: 0,
            search_bytes: 0,
            sources: Vec::new(),
            parts: 0,
        }
    }

    #[test]
    fn a_trace_is_readable_in_each_place_it_passes_through_and_holds_the_wal_until_registered() {
        let instance = Instance::new(tenant(), Vec::new());
        let seq = AtomicU64::new(1);
        let id = TraceId([1; 16]);
        instance.append([segment(id, b"live")], 5);
        assert_eq!(
            instance.find(&id).in_memory,
            vec![Bytes::from_static(b"live")]
        );
        assert_eq!(instance.min_seq(), Some(5));

        assert_eq!(
            instance
                .cut_idle(Some(Duration::from_secs(60)), &seq)
                .traces,
            0
        );
        let cut = instance.cut_idle(None, &seq);
        assert_eq!(
            cut,
            Cut {
                traces: 1,
                bytes: 4
            }
        );
        assert_eq!(instance.live().trace_count(), 0);
        assert_eq!(
            instance.find(&id).in_memory,
            vec![Bytes::from_static(b"live")]
        );
        assert_eq!(instance.head_bytes(), 4);

        // Appended to again after the cut: in two places, both read.
        instance.append([segment(id, b"+late")], 8);
        assert_eq!(instance.find(&id).in_memory.concat(), b"+latelive");

        assert!(!instance.seal_if(|h| h.bytes > 100));
        assert!(instance.seal_if(|_| true));
        assert_eq!(instance.head_bytes(), 0);
        assert_eq!(instance.find(&id).in_memory.concat(), b"+latelive");
        assert_eq!(instance.min_seq(), Some(5), "the sealed head holds the WAL");

        let sealed = instance.sealed();
        assert_eq!(sealed.len(), 1);
        instance.register(sealed[0].seq, meta_of(&sealed[0], "b1"));
        let found = instance.find(&id);
        assert_eq!(found.in_memory, vec![Bytes::from_static(b"+late")]);
        assert_eq!(found.blocks.len(), 1);
        assert_eq!(instance.min_seq(), Some(8));
        assert_eq!(instance.count_blocks(BlockState::is_pending), (1, 4));
    }

    #[test]
    fn a_failed_completion_leaves_the_sealed_head_readable_for_the_next_round() {
        let instance = Instance::new(tenant(), Vec::new());
        let seq = AtomicU64::new(1);
        let id = TraceId([2; 16]);
        instance.append([segment(id, b"acked")], 3);
        instance.cut_idle(None, &seq);
        instance.seal_if(|_| true);
        // Nothing registered (the block write failed): still sealed, still readable.
        assert_eq!(instance.sealed().len(), 1);
        assert_eq!(instance.find(&id).in_memory.concat(), b"acked");
        // A second head sealed meanwhile completes first: only its own head goes.
        instance.append([segment(TraceId([3; 16]), b"other")], 4);
        instance.cut_idle(None, &seq);
        instance.seal_if(|_| true);
        let sealed = instance.sealed();
        instance.register(sealed[1].seq, meta_of(&sealed[1], "b2"));
        assert_eq!(instance.sealed().len(), 1);
        assert_eq!(instance.find(&id).in_memory.concat(), b"acked");
    }

    /// The bug this type exists to rule out: a panic while the block list was held left the
    /// lock poisoned, registration was skipped, and the sealed head was dropped anyway, so
    /// the trace was invisible here until a restart.
    #[test]
    fn after_a_panic_under_the_block_lock_the_sealed_head_stays_readable_until_its_block_is_registered(
    ) {
        let instance = Arc::new(Instance::new(tenant(), Vec::new()));
        let seq = AtomicU64::new(1);
        let id = TraceId([4; 16]);
        instance.append([segment(id, b"acked")], 3);
        instance.cut_idle(None, &seq);
        instance.seal_if(|_| true);
        let poisoner = instance.clone();
        let _ = std::thread::spawn(move || {
            let _held = poisoner.blocks.lock();
            panic!("poisoning the block lock on purpose");
        })
        .join();
        assert!(instance.blocks.is_poisoned());

        assert_eq!(instance.find(&id).in_memory.concat(), b"acked");
        let sealed = instance.sealed();
        assert_eq!(sealed.len(), 1);
        instance.register(sealed[0].seq, meta_of(&sealed[0], "b3"));
        let found = instance.find(&id);
        assert!(found.in_memory.is_empty());
        assert_eq!(
            found
                .blocks
                .iter()
                .map(|m| m.block_id.as_str())
                .collect::<Vec<_>>(),
            ["b3"]
        );
        assert_eq!(instance.sealed_count(), 0);
    }
}

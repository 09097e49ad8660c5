//! Live traces: the segments of every trace one tenant has on this ingester, in memory.
//!
//! Segments are slices of the push buffers they arrived in (no copy). Lookups copy a
//! trace's segments into one buffer for the response. The ingester keeps the total size
//! of every tenant's segments, so that a cut can free memory when it exceeds the budget:
//! [`choose_to_free`] takes the bytes from the tenants holding the most ([`fair_cuts`]:
//! every tenant keeps up to an equal share, the water level), each tenant's least recently
//! appended traces first, so one noisy tenant cannot push the others into early cuts.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::model::{TraceId, TraceMap};

const SHARDS: usize = 32;

/// One trace's bytes from one push, with its spans' time range (read when the push was
/// checked: `u64::MAX..0` when no span has times), and whether this replica puts it in
/// its blocks' search sections (`ring::unindexed_replicas`).
pub(super) struct Segment {
    pub trace: TraceId,
    pub data: Bytes,
    pub start: u64,
    pub end: u64,
    pub indexed: bool,
}

impl Segment {
    #[cfg(test)]
    pub(super) fn untimed(trace: TraceId, data: Bytes) -> Self {
        Self {
            trace,
            data,
            start: u64::MAX,
            end: 0,
            indexed: true,
        }
    }
}

/// A live trace's segments: most traces have one or two, held inline.
pub(super) type Segments = smallvec::SmallVec<[Bytes; 2]>;

/// A live trace: its segments as they arrived, and where it stands in the WAL.
pub(super) struct LiveTrace {
    pub segments: Segments,
    pub bytes: usize,
    /// Earliest span start and latest span end of its segments.
    pub start: u64,
    pub end: u64,
    /// Whether a segment of it is to be indexed here (then all of it is).
    pub indexed: bool,
    /// Sequence number of the oldest WAL record holding a segment of this trace.
    pub first_seq: u64,
    last_append: Instant,
}

/// What an append added.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Appended {
    /// Traces that were not live before.
    pub new_traces: usize,
    pub bytes: usize,
}

/// A trace held in memory, for search: its records (shared, not copied) and the span
/// time range known for it (start 0: unknown, which every time range may hold).
pub(super) type HeldTrace = (TraceId, Vec<Bytes>, u64, u64);

/// Traces taken out of the live map.
pub(super) type Taken = Vec<(TraceId, LiveTrace)>;

/// One tenant's live traces, in shards by trace ID (pushes of different traces rarely wait
/// for each other).
#[derive(Default)]
pub(super) struct TenantLive {
    shards: [Mutex<TraceMap<LiveTrace>>; SHARDS],
}

fn shard(id: &TraceId) -> usize {
    id.0[15] as usize % SHARDS
}

/// A lock whose holder panicked is taken anyway: every critical section here leaves the
/// map whole (one insert, append or removal at a time), and refusing it would lose acked
/// traces.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl TenantLive {
    /// Appends segments that arrived in WAL record `seq`.
    pub(super) fn append(&self, segments: impl IntoIterator<Item = Segment>, seq: u64) -> Appended {
        let now = Instant::now();
        let mut added = Appended::default();
        for segment in segments {
            let mut shard = lock(&self.shards[shard(&segment.trace)]);
            let trace = shard.entry(segment.trace).or_insert_with(|| {
                added.new_traces += 1;
                LiveTrace {
                    segments: Segments::new(),
                    bytes: 0,
                    start: u64::MAX,
                    end: 0,
                    indexed: false,
                    first_seq: seq,
                    last_append: now,
                }
            });
            added.bytes += segment.data.len();
            trace.bytes += segment.data.len();
            trace.start = trace.start.min(segment.start);
            trace.end = trace.end.max(segment.end);
            trace.indexed |= segment.indexed;
            trace.segments.push(segment.data);
            trace.first_seq = trace.first_seq.min(seq);
            trace.last_append = now;
        }
        added
    }

    /// The indices of `segments` that would take their live trace past `limit` bytes.
    pub(super) fn too_large(&self, segments: &[Segment], limit: usize) -> Vec<u32> {
        let mut over = Vec::new();
        for (i, segment) in segments.iter().enumerate() {
            let shard = lock(&self.shards[shard(&segment.trace)]);
            let held = shard.get(&segment.trace).map_or(0, |t| t.bytes);
            if held + segment.data.len() > limit {
                over.push(i as u32);
            }
        }
        over
    }

    /// The trace's segments concatenated, if it is live.
    pub(super) fn get(&self, id: &TraceId) -> Option<Bytes> {
        let shard = lock(&self.shards[shard(id)]);
        let trace = shard.get(id)?;
        let mut out = BytesMut::with_capacity(trace.bytes);
        for s in &trace.segments {
            out.extend_from_slice(s);
        }
        Some(out.freeze())
    }

    /// Every live trace's segments (shared, not copied) and time range, for search.
    pub(super) fn snapshot(&self, into: &mut Vec<HeldTrace>) {
        for shard in &self.shards {
            let shard = lock(shard);
            into.extend(shard.iter().map(|(id, t)| {
                let start = if t.start == u64::MAX { 0 } else { t.start };
                (*id, t.segments.to_vec(), start, t.end)
            }));
        }
    }

    /// Removes and returns the traces idle for at least `idle` (every trace when `None`).
    pub(super) fn take_idle(&self, idle: Option<Duration>) -> Taken {
        let now = Instant::now();
        let mut taken = Vec::new();
        for shard in &self.shards {
            let mut shard = lock(shard);
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
        taken
    }

    /// Removes and returns the traces `ids` (those still live).
    pub(super) fn take(&self, ids: &[TraceId]) -> Taken {
        ids.iter()
            .filter_map(|id| lock(&self.shards[shard(id)]).remove(id).map(|t| (*id, t)))
            .collect()
    }

    /// `(last append, id, bytes)` of every live trace.
    fn ages(&self) -> Vec<(Instant, TraceId, usize)> {
        self.shards
            .iter()
            .flat_map(|s| {
                lock(s)
                    .iter()
                    .map(|(id, tr)| (tr.last_append, *id, tr.bytes))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The oldest WAL record a live trace still needs.
    pub(super) fn min_first_seq(&self) -> Option<u64> {
        self.shards
            .iter()
            .filter_map(|s| lock(s).values().map(|t| t.first_seq).min())
            .min()
    }

    pub(super) fn trace_count(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }
}

/// Traces of `tenants` that add up to at least `at_least` bytes (or all of them), taken
/// as [`fair_cuts`] divides the bytes, each tenant's least recently appended first: for
/// each tenant, in the order given, the IDs to take.
pub(super) fn choose_to_free(tenants: &[&TenantLive], at_least: usize) -> Vec<Vec<TraceId>> {
    if at_least == 0 {
        return vec![Vec::new(); tenants.len()];
    }
    let ages: Vec<Vec<(Instant, TraceId, usize)>> = tenants.iter().map(|t| t.ages()).collect();
    let held: Vec<usize> = ages.iter().map(|a| a.iter().map(|c| c.2).sum()).collect();
    let free = fair_cuts(&held, at_least);
    ages.into_iter()
        .zip(free)
        .map(|(mut traces, free)| {
            let taken = oldest_covering(&mut traces, free);
            traces.truncate(taken);
            traces.into_iter().map(|(_, id, _)| id).collect()
        })
        .collect()
}

/// Moves the fewest least recently appended of `traces` (`(last append, id, bytes)`) whose
/// bytes add up to at least `free` to the front, in no particular order, and returns how
/// many they are (all of them when they hold less). A selection, not a sort: it runs over
/// every live trace each time the ingester is over budget, several times a second at
/// saturation.
fn oldest_covering(traces: &mut [(Instant, TraceId, usize)], free: usize) -> usize {
    let mut need = free;
    // `traces[..lo]` are taken; the answer lies in `lo..=hi`.
    let (mut lo, mut hi) = (0, traces.len());
    while need > 0 && lo < hi {
        let mid = lo + (hi - lo) / 2;
        traces[lo..hi].select_nth_unstable_by_key(mid - lo, |c| c.0);
        let older: usize = traces[lo..mid].iter().map(|c| c.2).sum();
        if older >= need {
            hi = mid;
        } else if older + traces[mid].2 >= need {
            return mid + 1;
        } else {
            need -= older + traces[mid].2;
            lo = mid + 1;
        }
    }
    lo
}

/// How many bytes each tenant gives up so that at least `at_least` of the `held` bytes are
/// freed: every tenant keeps up to one water level (the same for all, the highest that
/// frees enough), so tenants below it keep everything and the largest give up the most.
pub(super) fn fair_cuts(held: &[usize], at_least: usize) -> Vec<usize> {
    let total: usize = held.iter().sum();
    let mut keep = total.saturating_sub(at_least);
    let mut sorted: Vec<usize> = held.to_vec();
    sorted.sort_unstable();
    // Fill tenants from the smallest up; the first that does not fit sets the level.
    let mut level = usize::MAX;
    for (i, &h) in sorted.iter().enumerate() {
        let left = sorted.len() - i;
        if h.saturating_mul(left) > keep {
            level = keep / left;
            break;
        }
        keep -= h;
    }
    held.iter().map(|&h| h.saturating_sub(level)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of(taken: &Taken) -> usize {
        taken.iter().map(|(_, t)| t.bytes).sum()
    }

    #[test]
    fn segments_of_a_trace_are_concatenated() {
        let live = TenantLive::default();
        let id = TraceId([9; 16]);
        let first = live.append([Segment::untimed(id, Bytes::from_static(b"one"))], 7);
        assert_eq!(
            first,
            Appended {
                new_traces: 1,
                bytes: 3
            }
        );
        let second = live.append([Segment::untimed(id, Bytes::from_static(b"two"))], 9);
        assert_eq!(second.new_traces, 0);
        assert_eq!(live.get(&id).as_deref(), Some(&b"onetwo"[..]));
        assert_eq!(live.get(&TraceId([8; 16])), None);
        assert_eq!(live.trace_count(), 1);
        assert_eq!(live.min_first_seq(), Some(7));
        assert!(live.take_idle(Some(Duration::from_secs(60))).is_empty());
        let taken = live.take_idle(None);
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].1.segments.len(), 2);
        assert_eq!(bytes_of(&taken), 6);
        assert_eq!(live.trace_count(), 0);
        assert_eq!(live.min_first_seq(), None);
    }

    #[test]
    fn fair_cuts_take_from_the_tenants_above_the_water_level_only() {
        // A noisy tenant and a quiet one: the quiet one keeps everything.
        assert_eq!(fair_cuts(&[900, 100], 250), vec![250, 0]);
        assert_eq!(fair_cuts(&[500, 500], 200), vec![100, 100]);
        // Two noisy tenants above a quiet one share the cut down to one level.
        assert_eq!(fair_cuts(&[100, 600, 400], 300), vec![0, 250, 50]);
        assert_eq!(fair_cuts(&[100, 600, 400], 0), vec![0, 0, 0]);
        // More than everything: everything.
        assert_eq!(fair_cuts(&[10, 20], 1000), vec![10, 20]);
        assert_eq!(fair_cuts(&[], 10), Vec::<usize>::new());
        for held in [vec![7, 3, 9, 1], vec![1000, 1, 1, 1], vec![5, 5, 5]] {
            for at_least in 0..=held.iter().sum::<usize>() {
                let cuts = fair_cuts(&held, at_least);
                assert!(
                    cuts.iter().sum::<usize>() >= at_least,
                    "{held:?} {at_least}"
                );
                assert!(cuts.iter().zip(&held).all(|(c, h)| c <= h));
            }
        }
    }

    #[test]
    fn a_quiet_tenants_older_traces_stay_live_while_a_noisy_tenant_is_cut() {
        let quiet = TenantLive::default();
        let noisy = TenantLive::default();
        let old = TraceId([1; 16]);
        quiet.append([Segment::untimed(old, Bytes::from(vec![0; 100]))], 1);
        std::thread::sleep(Duration::from_millis(2));
        for i in 2..=11u8 {
            noisy.append(
                [Segment::untimed(
                    TraceId([i; 16]),
                    Bytes::from(vec![0; 100]),
                )],
                2,
            );
        }
        // 1,100 bytes held; free 300: three of the noisy tenant's, none of the quiet one's,
        // though its trace is the least recently appended of all.
        let chosen = choose_to_free(&[&quiet, &noisy], 300);
        assert!(chosen[0].is_empty(), "{chosen:?}");
        assert_eq!(chosen[1].len(), 3);
    }

    #[test]
    fn each_tenants_least_recently_appended_traces_are_chosen_first_until_enough_bytes() {
        let a = TenantLive::default();
        let b = TenantLive::default();
        // Appended in this order, 100 bytes each; trace 1 gets a second segment last.
        let ids: Vec<TraceId> = (1..=4u8).map(|i| TraceId([i; 16])).collect();
        for (i, id) in ids.iter().enumerate() {
            let tenant = if i % 2 == 0 { &a } else { &b };
            tenant.append(
                [Segment::untimed(*id, Bytes::from(vec![i as u8; 100]))],
                i as u64,
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        a.append([Segment::untimed(ids[0], Bytes::from(vec![0; 50]))], 9);
        // 150 bytes: traces 2 (tenant b) and 3 (tenant a), not 1 (appended to last).
        let chosen = choose_to_free(&[&a, &b], 150);
        assert_eq!(chosen, vec![vec![ids[2]], vec![ids[1]]]);
        let taken: usize = [a.take(&chosen[0]), b.take(&chosen[1])]
            .iter()
            .map(bytes_of)
            .sum();
        assert_eq!(taken, 200);
        assert_eq!(a.trace_count() + b.trace_count(), 2);
        assert_eq!(choose_to_free(&[&a, &b], 0), vec![vec![], vec![]]);
        let rest = choose_to_free(&[&a, &b], 10_000);
        assert_eq!(rest.iter().map(Vec::len).sum::<usize>(), 2);
        // A trace chosen but no longer live is skipped.
        assert!(b.take(&[ids[1]]).is_empty());
    }

    #[test]
    fn the_fewest_oldest_traces_that_cover_the_bytes_are_selected_as_a_sort_would() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(14);
        let start = Instant::now();
        for round in 0..300 {
            let n = rng.random_range(0..60usize);
            // Odd rounds: few distinct times, so ties are common (and which of the tied
            // traces is taken, so how many, is open). Even rounds: every time distinct.
            let ties = round % 2 == 1;
            let traces: Vec<(Instant, TraceId, usize)> = (0..n)
                .map(|i| {
                    let ms = if ties {
                        rng.random_range(0..20u64)
                    } else {
                        (i as u64 * 37) % 61
                    };
                    let at = start + Duration::from_millis(ms);
                    (at, TraceId([i as u8; 16]), rng.random_range(0..300usize))
                })
                .collect();
            let total: usize = traces.iter().map(|c| c.2).sum();
            let free = rng.random_range(0..=total + 10);
            // The reference: sorted by time, taken while the sum is short of `free`.
            let mut sorted = traces.clone();
            sorted.sort_by_key(|c| c.0);
            let mut sum = 0;
            let want = sorted
                .iter()
                .take_while(|c| {
                    let more = sum < free;
                    sum += c.2;
                    more
                })
                .count();
            let mut selected = traces.clone();
            let k = oldest_covering(&mut selected, free);
            if !ties {
                assert_eq!(k, want, "round {round}: {n} traces, free {free}");
            }
            let (taken, kept) = selected.split_at(k);
            let taken_bytes: usize = taken.iter().map(|c| c.2).sum();
            assert!(taken_bytes >= free.min(total), "round {round}");
            // The fewest: without one of the newest taken traces it would not be enough.
            if let Some(newest) = taken.iter().map(|c| c.0).max() {
                let largest_newest = taken.iter().filter(|c| c.0 == newest).map(|c| c.2).max();
                assert!(
                    taken_bytes - largest_newest.unwrap_or(0) < free,
                    "round {round}: one too many"
                );
            }
            let newest_taken = taken.iter().map(|c| c.0).max();
            let oldest_kept = kept.iter().map(|c| c.0).min();
            if let (Some(t), Some(k)) = (newest_taken, oldest_kept) {
                assert!(
                    t <= k,
                    "round {round}: a newer trace was taken before an older one"
                );
            }
            let mut ids: Vec<_> = selected.iter().map(|c| c.1).collect();
            ids.sort();
            ids.dedup();
            assert_eq!(
                ids.len(),
                n,
                "round {round}: the selection lost or doubled a trace"
            );
        }
    }

    #[test]
    fn a_shard_whose_holder_panicked_still_takes_appends_and_reads() {
        let live = std::sync::Arc::new(TenantLive::default());
        let id = TraceId([3; 16]);
        live.append([Segment::untimed(id, Bytes::from_static(b"kept"))], 1);
        let poisoner = live.clone();
        let _ = std::thread::spawn(move || {
            let _held = poisoner.shards[shard(&id)].lock();
            panic!("poisoning the shard on purpose");
        })
        .join();
        assert!(live.shards[shard(&id)].is_poisoned());
        live.append([Segment::untimed(id, Bytes::from_static(b"+more"))], 2);
        assert_eq!(live.get(&id).as_deref(), Some(&b"kept+more"[..]));
        assert_eq!(live.take_idle(None).len(), 1);
    }
}

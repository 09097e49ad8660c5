//! Compaction planning (pure): from one tenant's listing, what to merge, which inputs
//! to mark replaced, and which replaced inputs may be deleted.
//!
//! - Blocks are grouped by window: the window their newest span falls in (`end` /
//!   `window`). Each trace's three replicas land in the same window unless it spans a
//!   window boundary.
//! - In a window, settled blocks (level 0 older than `settle`: the other replicas' blocks
//!   of the window have had time to arrive; any level above 0) are packed into merges
//!   while their data stays under `max_block_bytes`; a merge's output is one level above
//!   its highest input.
//! - While a window is open (new blocks may still come: until `settle` after its end),
//!   blocks merge only with blocks of their own level, level 0 once [`LEVEL0_BATCH`] are
//!   settled (or fewer that have waited long), higher levels once [`TIER`] of them are
//!   there and only until the window's end (its collapse follows). So each span is
//!   merged a few times (once per level), however many passes the window sees; merging
//!   every new level-0 block into the window's one big block would re-read that block on
//!   every pass.
//! - Once a window is closed, all its blocks are merged at once, into one block or, over
//!   `max_block_bytes`, into as many ranges of trace IDs as keep each under it (one merge
//!   per range, the ranges chosen from the inputs' page indexes when the merges run).
//!   Open-window merges take blocks cut over neighbouring times, so a trace whose
//!   replicas fell on either side of a merge's edge is in two of their outputs; the
//!   closed window's merge sees every copy together and leaves one. A window already
//!   merged so (its blocks are exactly one such merge's parts) is left alone.
//! - A merge written as several parts replaces its inputs once all its parts are listed
//!   (see `block::pending_ids`); until then readers and plans skip the parts.
//! - A block is *replaced* once a visible block lists it among its `sources`. Readers skip
//!   it from then on; the planner never takes it again, marks it (a `compacted` object
//!   records when) if it is not marked yet, and deletes it once the mark is older than
//!   `retention`: longer than two block-list polls, so no reader still lists it without
//!   its replacement.
//! - Output IDs are a function of the inputs: a merge retried after a crash writes the
//!   same block again instead of a second one.

use std::collections::{BTreeMap, HashSet};

use crate::storage::block::{self, BlockMeta};

/// Nanoseconds per second.
const NANOS: u64 = 1_000_000_000;

/// Blocks of one level above 0 that an open window merges at once. Each level rewrites
/// the window's data once more, so a wide tier keeps the levels few (a 4-wide tier wrote
/// each span about six times over an hour at this machine's full ingest rate).
pub(crate) const TIER: usize = 8;

/// Settled level-0 blocks an open window waits for before it merges them: two per
/// replica, so a merge's output holds each trace of its time whole more often, and one
/// pass's handful of new blocks does not become a small block to be merged again.
/// Blocks settled for longer than `settle` again merge however few they are.
pub(crate) const LEVEL0_BATCH: usize = 6;

/// What a tenant's compaction follows (from its overrides).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PlanSettings {
    /// The width of a window, in seconds.
    pub(crate) window_secs: u64,
    /// A merge's inputs stay under this many data bytes together.
    pub(crate) max_block_bytes: u64,
    /// Level-0 blocks younger than this (by `created_unix_secs`) wait.
    pub(crate) settle_secs: u64,
    /// Replaced blocks are deleted this long after they were marked.
    pub(crate) retention_secs: u64,
}

/// A block as listed: its meta, and when it was marked replaced (seconds since the
/// epoch), if it was.
#[derive(Clone, Debug)]
pub(crate) struct Listed {
    pub(crate) meta: BlockMeta,
    pub(crate) marked_unix_secs: Option<u64>,
}

/// One merge: `inputs` (block IDs, sorted) of a tenant's window become block `output`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Merge {
    pub(crate) tenant: String,
    /// The window's index (`end` / `window`).
    pub(crate) window: u64,
    pub(crate) level: u32,
    pub(crate) inputs: Vec<String>,
    pub(crate) output: String,
    /// The inputs' data bytes together.
    pub(crate) bytes: u64,
    /// `(index, count)`: this merge writes the `index`-th of `count` ranges of the
    /// inputs' trace IDs (the merges of a closed window too large for one block; they
    /// share their inputs, and their outputs replace the inputs together). `None`: all.
    pub(crate) part: Option<(u32, u32)>,
}

/// What a pass over one tenant does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) merges: Vec<Merge>,
    /// Replaced blocks not marked yet, with the block that replaced each.
    pub(crate) mark: Vec<(String, String)>,
    /// Replaced blocks marked longer ago than the retention.
    pub(crate) delete: Vec<String>,
    /// Blocks waiting for a merge (settled, not replaced): the backlog.
    pub(crate) waiting: usize,
}

/// The output ID of merging `inputs` (sorted), or of one `part` of it: stable across
/// retries and compactors.
pub(crate) fn output_id(tenant: &str, inputs: &[String], part: Option<(u32, u32)>) -> String {
    let mut key = format!("compacted/{tenant}");
    for id in inputs {
        key.push('/');
        key.push_str(id);
    }
    if let Some((index, count)) = part {
        key.push_str(&format!("#{index}/{count}"));
    }
    // 32 hex digits, as the ingesters' block IDs.
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(key.as_bytes()))
}

/// The window a block belongs to (blocks without span times: by when they were cut).
pub(crate) fn window_of(meta: &BlockMeta, window_secs: u64) -> u64 {
    let end_secs = match meta.end_unix_nano {
        0 => meta.created_unix_secs,
        end => end / NANOS,
    };
    end_secs / window_secs.max(1)
}

/// The plan for one tenant's listing at `now_unix_secs`.
pub(crate) fn plan(tenant: &str, blocks: &[Listed], now_unix_secs: u64, s: &PlanSettings) -> Plan {
    let replaced = block::replaced_ids(blocks.iter().map(|b| &b.meta));
    let pending = block::pending_ids(blocks.iter().map(|b| &b.meta));
    let replaced_by = |id: &str| {
        blocks
            .iter()
            .find(|b| b.meta.sources.iter().any(|s| s == id))
            .map_or_else(String::new, |b| b.meta.block_id.clone())
    };
    let listed: HashSet<&str> = blocks.iter().map(|b| b.meta.block_id.as_str()).collect();
    let mut out = Plan::default();
    let mut windows: BTreeMap<u64, Vec<&BlockMeta>> = BTreeMap::new();
    for b in blocks {
        let id = b.meta.block_id.as_str();
        let sources_listed = b.meta.sources.iter().any(|s| listed.contains(s.as_str()));
        if replaced.contains(id) {
            match b.marked_unix_secs {
                None => out.mark.push((id.to_owned(), replaced_by(id))),
                // The parts of a merge go after its inputs: with a part gone first, the
                // rest would no longer replace the inputs, and they would be read again.
                Some(_) if b.meta.parts > 1 && sources_listed => {}
                Some(at) if now_unix_secs.saturating_sub(at) >= s.retention_secs => {
                    out.delete.push(id.to_owned());
                }
                Some(_) => {}
            }
            continue;
        }
        if pending.contains(id) {
            // The rest of its merge's parts are on their way, or a retry rewrites them;
            // unless an input is gone or another merge replaced it (the window was
            // planned again, with a late block): then it can never be read.
            let stale = b.meta.sources.iter().any(|s| {
                let s = s.as_str();
                !listed.contains(s) || replaced.contains(s)
            });
            if stale {
                out.delete.push(id.to_owned());
            }
            continue;
        }
        let settled = b.meta.compaction_level > 0
            || now_unix_secs.saturating_sub(b.meta.created_unix_secs) >= s.settle_secs;
        if settled {
            windows
                .entry(window_of(&b.meta, s.window_secs))
                .or_default()
                .push(&b.meta);
        }
    }
    for (window, mut metas) in windows {
        metas.sort_by(|a, b| {
            (a.compaction_level, a.start_unix_nano, &a.block_id).cmp(&(
                b.compaction_level,
                b.start_unix_nano,
                &b.block_id,
            ))
        });
        let window_end = window.saturating_add(1).saturating_mul(s.window_secs);
        let closed = now_unix_secs >= window_end.saturating_add(s.settle_secs);
        let merges = if closed {
            collapse(tenant, window, &metas, s.max_block_bytes)
        } else {
            let open = OpenWindow::now(&metas, now_unix_secs, window_end, s);
            by_level(tenant, window, &metas, &open)
        };
        // The parts of a closed window's merge share their inputs: each counted once.
        let mut waiting: Vec<&str> = merges
            .iter()
            .flat_map(|m| &m.inputs)
            .map(String::as_str)
            .collect();
        waiting.sort_unstable();
        waiting.dedup();
        out.waiting += waiting.len();
        out.merges.extend(merges);
    }
    out.mark.sort();
    out.delete.sort();
    out
}

/// How an open window merges now.
struct OpenWindow {
    /// Level-0 blocks merged at once, at least.
    level0_min: usize,
    /// Whether levels above 0 merge.
    tiers: bool,
    max_bytes: u64,
}

impl OpenWindow {
    /// How a window of `metas` ending at `window_end` merges at `now`.
    fn now(metas: &[&BlockMeta], now: u64, window_end: u64, s: &PlanSettings) -> Self {
        // Level 0 waits for a batch unless one of its blocks is overdue.
        let overdue = metas.iter().any(|m| {
            m.compaction_level == 0
                && now.saturating_sub(m.created_unix_secs) >= s.settle_secs.saturating_mul(2)
        });
        OpenWindow {
            level0_min: if overdue { 2 } else { LEVEL0_BATCH },
            // Past its end, the window only waits to close: its collapse soon rewrites
            // every block, so merging levels now would be wasted.
            tiers: now < window_end,
            max_bytes: s.max_block_bytes,
        }
    }
}

/// An open window's merges: blocks of one level together, level 0 `level0_min` or more
/// at a time, higher levels (if `tiers`) [`TIER`] at a time, each under `max_bytes`.
fn by_level(tenant: &str, window: u64, metas: &[&BlockMeta], open: &OpenWindow) -> Vec<Merge> {
    let mut merges = Vec::new();
    for level in metas.chunk_by(|a, b| a.compaction_level == b.compaction_level) {
        let min = match level[0].compaction_level {
            0 => open.level0_min,
            _ if open.tiers => TIER,
            _ => continue,
        };
        for group in pack(level, open.max_bytes, min) {
            let mut inputs: Vec<String> = group.iter().map(|m| m.block_id.clone()).collect();
            inputs.sort();
            merges.push(Merge {
                tenant: tenant.to_owned(),
                window,
                level: group.iter().map(|m| m.compaction_level).max().unwrap_or(0) + 1,
                output: output_id(tenant, &inputs, None),
                bytes: group.iter().map(|m| m.data_bytes).sum(),
                inputs,
                part: None,
            });
        }
    }
    merges
}

/// A closed window's merges: all its blocks into one, or, when their data is over
/// `max_bytes`, into as many ranges of trace IDs as keep each under it (each range one
/// merge, all reading the same inputs). Every copy of a trace lands in the same output,
/// so the window ends with one copy of each, whatever its size. Nothing when the window
/// is one block or exactly the parts of one such merge.
fn collapse(tenant: &str, window: u64, metas: &[&BlockMeta], max_bytes: u64) -> Vec<Merge> {
    let Some(first) = metas.first() else {
        return Vec::new();
    };
    let one_merge = metas
        .iter()
        .all(|m| m.parts as usize == metas.len() && m.sources == first.sources);
    if metas.len() < 2 || one_merge {
        return Vec::new();
    }
    let mut inputs: Vec<String> = metas.iter().map(|m| m.block_id.clone()).collect();
    inputs.sort();
    let bytes: u64 = metas.iter().map(|m| m.data_bytes).sum();
    let count = u32::try_from(bytes.div_ceil(max_bytes.max(1)))
        .unwrap_or(u32::MAX)
        .max(1);
    let level = metas.iter().map(|m| m.compaction_level).max().unwrap_or(0) + 1;
    let parts: Vec<Option<(u32, u32)>> = if count == 1 {
        vec![None]
    } else {
        (0..count).map(|i| Some((i, count))).collect()
    };
    parts
        .into_iter()
        .map(|part| Merge {
            tenant: tenant.to_owned(),
            window,
            level,
            inputs: inputs.clone(),
            output: output_id(tenant, &inputs, part),
            bytes: bytes / u64::from(count),
            part,
        })
        .collect()
}

/// Packs `metas` (in order) into groups of `min` or more under `max_bytes` together;
/// blocks that fit with too few after them are left alone.
fn pack<'a>(metas: &[&'a BlockMeta], max_bytes: u64, min: usize) -> Vec<Vec<&'a BlockMeta>> {
    let mut groups = Vec::new();
    let mut current: Vec<&BlockMeta> = Vec::new();
    let mut bytes = 0u64;
    for &m in metas {
        if !current.is_empty() && bytes.saturating_add(m.data_bytes) > max_bytes {
            if current.len() >= min {
                groups.push(std::mem::take(&mut current));
            } else {
                current.clear();
            }
            bytes = 0;
        }
        current.push(m);
        bytes = bytes.saturating_add(m.data_bytes);
    }
    if current.len() >= min {
        groups.push(current);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3600;

    fn settings() -> PlanSettings {
        PlanSettings {
            window_secs: HOUR,
            max_block_bytes: 1000,
            settle_secs: 60,
            retention_secs: 300,
        }
    }

    /// A block of `level` whose spans end at `end_secs`, cut at `created`, of `bytes`.
    fn block(id: &str, level: u32, end_secs: u64, created: u64, bytes: u64) -> Listed {
        let mut meta: BlockMeta = serde_json::from_value(serde_json::json!({
            "format_version": 1, "tenant": "t", "block_id": id, "ingester": "i",
            "compaction_level": level, "min_trace_id": "00", "max_trace_id": "ff",
            "start_unix_nano": (end_secs - 10) * NANOS, "end_unix_nano": end_secs * NANOS,
            "total_traces": 1, "data_pages": 1, "data_bytes": bytes, "index_bytes": 1,
            "filter_bytes": 1, "created_unix_secs": created,
        }))
        .expect("meta");
        meta.compaction_level = level;
        Listed {
            meta,
            marked_unix_secs: None,
        }
    }

    fn replacing(mut b: Listed, sources: &[&str]) -> Listed {
        b.meta.sources = sources.iter().map(|s| (*s).to_owned()).collect();
        b
    }

    fn part_ids(p: &Plan) -> Vec<&str> {
        p.merges.iter().map(|m| m.output.as_str()).collect()
    }

    fn inputs(p: &Plan) -> Vec<Vec<&str>> {
        p.merges
            .iter()
            .map(|m| m.inputs.iter().map(String::as_str).collect())
            .collect()
    }

    #[test]
    fn the_replicas_blocks_of_a_window_merge_into_one_level_1_block() {
        let now = 10 * HOUR;
        let blocks = [
            block("a", 0, 5 * HOUR + 10, now - 600, 100),
            block("b", 0, 5 * HOUR + 20, now - 600, 100),
            block("c", 0, 5 * HOUR + 30, now - 600, 100),
            // Another window.
            block("d", 0, 6 * HOUR + 10, now - 600, 100),
            block("e", 0, 6 * HOUR + 10, now - 600, 100),
        ];
        let p = plan("t", &blocks, now, &settings());
        assert_eq!(inputs(&p), [vec!["a", "b", "c"], vec!["d", "e"]]);
        assert_eq!(
            (p.merges[0].window, p.merges[0].level, p.merges[0].bytes),
            (5, 1, 300)
        );
        assert_eq!(p.waiting, 5);
        assert!(p.mark.is_empty() && p.delete.is_empty());
    }

    #[test]
    fn young_level_0_blocks_wait_for_their_replicas() {
        let now = 10 * HOUR;
        let blocks = [
            block("a", 0, 9 * HOUR, now - 600, 100),
            block("b", 0, 9 * HOUR, now - 10, 100),
            block("c", 0, 9 * HOUR, now - 20, 100),
        ];
        let p = plan("t", &blocks, now, &settings());
        assert!(
            p.merges.is_empty(),
            "one settled block has nothing to merge with"
        );
        let p = plan("t", &blocks, now + 60, &settings());
        assert_eq!(inputs(&p), [vec!["a", "b", "c"]]);
    }

    #[test]
    fn a_closed_window_over_the_size_cap_merges_in_id_ranges_whose_parts_replace_it_together() {
        let now = 10 * HOUR;
        let mut blocks = vec![
            block("l1-a", 1, 5 * HOUR, now, 400),
            block("l1-b", 1, 5 * HOUR, now, 400),
            block("l1-c", 1, 5 * HOUR, now, 400),
            block("l2", 2, 5 * HOUR, now, 900),
            block("late", 0, 5 * HOUR, now - 600, 50),
        ];
        let p = plan("t", &blocks, now, &settings());
        // 2150 bytes under a cap of 1000: three ranges, each merge reading every block.
        let all = ["l1-a", "l1-b", "l1-c", "l2", "late"];
        assert_eq!(inputs(&p), [all.to_vec(), all.to_vec(), all.to_vec()]);
        let parts: Vec<_> = p.merges.iter().map(|m| m.part).collect();
        assert_eq!(parts, [Some((0, 3)), Some((1, 3)), Some((2, 3))]);
        assert!(p.merges.iter().all(|m| m.level == 3 && m.bytes <= 1000));
        assert_eq!(p.waiting, 5, "each input counted once");
        let outputs: std::collections::HashSet<_> = p.merges.iter().map(|m| &m.output).collect();
        assert_eq!(outputs.len(), 3);

        // Two of the three parts written: readers and the plan still take the inputs.
        let part = |m: &Merge| {
            let mut b = replacing(block(&m.output, 3, 5 * HOUR, now, 600), &all);
            b.meta.parts = 3;
            b
        };
        blocks.push(part(&p.merges[0]));
        blocks.push(part(&p.merges[1]));
        let again = plan("t", &blocks, now + 30, &settings());
        assert_eq!(again.merges, p.merges, "the same merges, the same outputs");
        assert!(again.mark.is_empty());
        let metas: Vec<BlockMeta> = blocks.iter().map(|b| b.meta.clone()).collect();
        assert_eq!(block::without_replaced(metas).len(), 5);

        // The third: the parts replace the inputs, and the window is done.
        blocks.push(part(&p.merges[2]));
        let done = plan("t", &blocks, now + 60, &settings());
        assert!(done.merges.is_empty(), "{:?}", done.merges);
        assert_eq!(done.mark.len(), 5);
        let metas: Vec<BlockMeta> = blocks.iter().map(|b| b.meta.clone()).collect();
        let read: Vec<String> = block::without_replaced(metas)
            .into_iter()
            .map(|m| m.block_id)
            .collect();
        assert_eq!(read.len(), 3);
        assert!(read.iter().all(|id| outputs.contains(id)));

        // The parts replaced in turn (a second ranged merge, over them and a late block),
        // everything marked past the retention: the first merge's inputs go, its parts wait
        // while one of those inputs is listed (else the inputs would be read again).
        let mut redone = blocks.clone();
        redone.push(block("late2", 0, 5 * HOUR, now, 50));
        let mut second: Vec<&str> = part_ids(&p).into_iter().chain(["late2"]).collect();
        second.sort();
        for i in 0..2 {
            let mut b = replacing(block(&format!("g2-{i}"), 4, 5 * HOUR, now, 900), &second);
            b.meta.parts = 2;
            redone.push(b);
        }
        for b in redone.iter_mut() {
            b.marked_unix_secs = Some(now + 60);
        }
        let deleted = plan("t", &redone, now + 600, &settings()).delete;
        let mut expected: Vec<&str> = all.iter().copied().chain(["late2"]).collect();
        expected.sort();
        assert_eq!(
            deleted, expected,
            "the inputs and the late block, no part yet"
        );
        blocks.retain(|b| !all.contains(&b.meta.block_id.as_str()));

        // A late block in the done window: everything merges again, with it.
        for b in blocks.iter_mut() {
            b.marked_unix_secs = None;
        }
        blocks.push(block("later", 0, 5 * HOUR, now, 50));
        let p = plan("t", &blocks, now + 600, &settings());
        assert_eq!(p.merges.len(), 2, "1850 bytes: two ranges");
        assert_eq!(p.merges[0].inputs.len(), 4);
        // One of its parts written, then a later block again: the window is planned anew,
        // and the part written for the old plan is deleted once that plan's inputs are gone.
        let mut orphan = replacing(
            block(&p.merges[0].output, 4, 5 * HOUR, now, 900),
            &p.merges[0]
                .inputs
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        );
        orphan.meta.parts = 2;
        blocks.push(orphan.clone());
        let again = plan("t", &blocks, now + 630, &settings());
        assert!(
            again.delete.is_empty(),
            "its inputs are there: a retry completes it"
        );
        blocks.retain(|b| b.meta.block_id != "later");
        let p = plan("t", &blocks, now + 660, &settings());
        assert_eq!(p.delete, [orphan.meta.block_id.clone()]);
    }

    #[test]
    fn an_open_window_merges_blocks_with_their_own_level_and_a_closed_one_collapses() {
        // Window 9 is open until 10 h + the settle time.
        let now = 9 * HOUR + 1800;
        let level1 = |i: u64| block(&format!("l1-{i}"), 1, 9 * HOUR + 200 + i, now - 600, 100);
        let mut blocks = vec![block("big", 1, 9 * HOUR + 100, now - 900, 200)];
        blocks.extend((0..6).map(level1));
        blocks.push(block("new-a", 0, 9 * HOUR + 1700, now - 100, 50));
        blocks.push(block("new-b", 0, 9 * HOUR + 1700, now - 100, 50));
        let p = plan("t", &blocks, now, &settings());
        // Two settled level-0 blocks wait for a batch; seven level-1 blocks for an eighth.
        assert!(p.merges.is_empty(), "{:?}", p.merges);
        // Once they waited a settle time more, two merge; the level-1 blocks are not re-read.
        let later = now + 30;
        let p = plan("t", &blocks, later, &settings());
        assert_eq!(inputs(&p), [vec!["new-a", "new-b"]]);
        assert_eq!(p.merges[0].level, 1);
        // A batch of new level-0 blocks merges at once.
        let batch: Vec<Listed> = (0..LEVEL0_BATCH)
            .map(|i| block(&format!("n{i}"), 0, 9 * HOUR + 1750, now - 70, 50))
            .collect();
        let mut fresh = blocks.clone();
        fresh.retain(|b| b.meta.compaction_level > 0);
        fresh.extend(batch);
        let p = plan("t", &fresh, now, &settings());
        assert_eq!(p.merges.len(), 1);
        assert_eq!(p.merges[0].inputs.len(), LEVEL0_BATCH);
        // An eighth level-1 block: the level-1 blocks merge into level 2.
        blocks.retain(|b| !b.meta.block_id.starts_with("new"));
        blocks.push(level1(6));
        let p = plan("t", &blocks, now, &settings());
        assert_eq!(p.merges.len(), 1);
        assert_eq!((p.merges[0].inputs.len(), p.merges[0].level), (TIER, 2));
        // Past the window's end, only waiting to close: no level merges.
        let ending = 10 * HOUR + 30;
        assert!(plan("t", &blocks, ending, &settings()).merges.is_empty());
        // Seven are not enough while the window is open; once closed, two suffice and
        // levels mix.
        blocks.pop();
        blocks.push(block("late", 0, 9 * HOUR + 500, now - 600, 50));
        let p = plan("t", &blocks, now, &settings());
        assert!(p.merges.is_empty(), "{:?}", p.merges);
        let closed = 10 * HOUR + 60;
        let p = plan("t", &blocks, closed, &settings());
        assert_eq!(inputs(&p).len(), 1);
        assert_eq!((p.merges[0].inputs.len(), p.merges[0].level), (8, 2));
    }

    #[test]
    fn replaced_blocks_are_marked_then_deleted_after_the_retention_and_never_merged_again() {
        let now = 10 * HOUR;
        let out = output_id("t", &["a".into(), "b".into()], None);
        let mut blocks = vec![
            block("a", 0, 5 * HOUR, now - 900, 100),
            block("b", 0, 5 * HOUR, now - 900, 100),
            replacing(block(&out, 1, 5 * HOUR, now - 100, 150), &["a", "b"]),
        ];
        let p = plan("t", &blocks, now, &settings());
        assert!(p.merges.is_empty(), "{:?}", p.merges);
        assert_eq!(
            p.mark,
            [("a".to_owned(), out.clone()), ("b".to_owned(), out.clone())]
        );
        assert_eq!(p.waiting, 0);

        blocks[0].marked_unix_secs = Some(now - 100);
        blocks[1].marked_unix_secs = Some(now - 100);
        let p = plan("t", &blocks, now, &settings());
        assert!(p.mark.is_empty() && p.delete.is_empty());
        let p = plan("t", &blocks, now + 200, &settings());
        assert_eq!(p.delete, ["a", "b"]);
    }

    #[test]
    fn a_retried_merge_writes_the_same_output() {
        let now = 10 * HOUR;
        let blocks = [
            block("b", 0, 5 * HOUR, now - 600, 100),
            block("a", 0, 5 * HOUR, now - 600, 100),
        ];
        let first = plan("t", &blocks, now, &settings());
        let again = plan("t", &blocks, now + 30, &settings());
        assert_eq!(first.merges, again.merges);
        assert_eq!(first.merges[0].inputs, ["a", "b"]);
        assert_eq!(
            first.merges[0].output,
            output_id("t", &["a".into(), "b".into()], None)
        );
        assert_ne!(
            output_id("t", &["a".into(), "b".into()], None),
            output_id("u", &["a".into(), "b".into()], None),
            "tenants do not share outputs"
        );
        assert_eq!(first.merges[0].output.len(), 32);
    }

    #[test]
    fn blocks_without_span_times_are_windowed_by_when_they_were_cut() {
        let mut b = block("a", 0, 5 * HOUR, 7 * HOUR + 5, 1);
        b.meta.end_unix_nano = 0;
        assert_eq!(window_of(&b.meta, HOUR), 7);
        assert_eq!(window_of(&block("x", 0, 5 * HOUR + 1, 0, 1).meta, HOUR), 5);
    }
}

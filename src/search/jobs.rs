//! A search over the store's blocks as jobs: the blocks in range, most recent first, are
//! cut into jobs of about `target_bytes` (what a job reads: sections where blocks have
//! them, else data), and at most `concurrency` jobs run at once, each with its own
//! scanner forked from what the finished ones found (a search that has its `limit` hits
//! already skips the blocks that cannot make the cut). Memory is bounded by
//! `concurrency` × the blocks a job fetches ahead. Planning is pure (`plan`); `run` does
//! the I/O.

use std::time::Instant;

use futures::stream::{FuturesUnordered, StreamExt};

use super::{scan_blocks, section, ScanStats, Scanner};
use crate::storage::block::BlockMeta;
use crate::storage::BlockStore;

/// Blocks one job fetches ahead while it evaluates one.
const BLOCKS_AHEAD: usize = 2;

/// How a querier splits a search over blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct JobLimits {
    pub target_bytes: u64,
    pub concurrency: usize,
}

/// Blocks searched together, most recent first.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Job {
    pub blocks: Vec<BlockMeta>,
    pub bytes: u64,
    /// The latest end among its blocks (jobs are in this order, latest first).
    pub end: u64,
    /// The earliest start among its blocks (0: unknown).
    pub start: u64,
}

/// What a search reads of a block.
fn read_bytes(m: &BlockMeta) -> u64 {
    if section::readable(m.search_version) {
        m.search_bytes
    } else {
        m.data_bytes
    }
}

/// Cuts `blocks` into jobs: most recent first, each at least one block and at most
/// `target_bytes` (a block larger than that is a job of its own).
pub(crate) fn plan(mut blocks: Vec<BlockMeta>, target_bytes: u64) -> Vec<Job> {
    blocks.sort_by(|a, b| {
        b.end_unix_nano
            .cmp(&a.end_unix_nano)
            .then_with(|| a.block_id.cmp(&b.block_id))
    });
    let mut jobs: Vec<Job> = Vec::new();
    for m in blocks {
        let bytes = read_bytes(&m);
        let fits = jobs
            .last()
            .is_some_and(|j| j.bytes.saturating_add(bytes) <= target_bytes);
        if !fits {
            jobs.push(Job {
                blocks: Vec::new(),
                bytes: 0,
                end: m.end_unix_nano,
                start: u64::MAX,
            });
        }
        let Some(job) = jobs.last_mut() else {
            continue;
        };
        job.bytes = job.bytes.saturating_add(bytes);
        job.end = job.end.max(m.end_unix_nano);
        job.start = job.start.min(m.start_unix_nano);
        job.blocks.push(m);
    }
    for j in &mut jobs {
        if j.start == u64::MAX {
            j.start = 0;
        }
    }
    jobs
}

/// What the jobs of a search did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct JobStats {
    pub scan: ScanStats,
    pub total: u64,
    /// Run to the end, or not needed (what the others found already decides).
    pub completed: u64,
}

/// Runs `jobs` in order, at most `concurrency` at once, and merges their answers into
/// `scanner`.
pub(crate) async fn run<S: Scanner>(
    store: &BlockStore,
    jobs: Vec<Job>,
    mut scanner: S,
    concurrency: usize,
) -> (S, JobStats) {
    let mut stats = JobStats {
        total: jobs.len() as u64,
        ..JobStats::default()
    };
    let mut pending = jobs.into_iter();
    let mut running = FuturesUnordered::new();
    loop {
        while running.len() < concurrency.max(1) && !scanner.is_full() {
            let Some(job) = pending.next() else { break };
            if !scanner.wants(job.start, job.end) {
                // Older than every hit kept: it cannot change the answer.
                stats.completed += 1;
                metrics::counter!("ringtail_querier_search_jobs_total", "outcome" => "skipped")
                    .increment(1);
                continue;
            }
            let fork = scanner.fork();
            let store = store.clone();
            running.push(async move {
                let started = Instant::now();
                let (found, scan) = scan_blocks(&store, job.blocks, fork, BLOCKS_AHEAD).await;
                metrics::histogram!("ringtail_querier_search_job_duration_seconds")
                    .record(started.elapsed().as_secs_f64());
                (found, scan)
            });
        }
        let Some((found, scan)) = running.next().await else {
            break;
        };
        scanner.merge(found);
        stats.completed += 1;
        stats.scan.add(&scan);
        metrics::counter!("ringtail_querier_search_jobs_total", "outcome" => "run").increment(1);
    }
    // Cut short (a tag cap reached): the jobs not started are not needed either.
    stats.completed += pending.len() as u64;
    (scanner, stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: &str, start: u64, end: u64, search_bytes: u64, data_bytes: u64) -> BlockMeta {
        let mut m: BlockMeta = serde_json::from_value(serde_json::json!({
            "format_version": 1, "tenant": "t", "block_id": id, "ingester": "i", "compaction_level": 0,
            "min_trace_id": "00", "max_trace_id": "ff", "start_unix_nano": start,
            "end_unix_nano": end, "total_traces": 1, "data_pages": 1, "data_bytes": data_bytes,
            "index_bytes": 1, "filter_bytes": 1, "created_unix_secs": 1
        }))
        .expect("a meta");
        if search_bytes > 0 {
            m.search_version = section::VERSION;
            m.search_bytes = search_bytes;
        }
        m
    }

    #[test]
    fn jobs_hold_every_block_once_most_recent_first_within_the_target() {
        let blocks: Vec<BlockMeta> = (0..40u64)
            .map(|i| {
                // Every third block is old (no section): its data is what is read.
                let (s, d) = if i % 3 == 0 {
                    (0, 30)
                } else {
                    (10 + i % 7, 100)
                };
                meta(&format!("b{i:02}"), i * 10, i * 10 + 15, s, d)
            })
            .rev()
            .collect();
        let jobs = plan(blocks.clone(), 40);
        let mut seen: Vec<&str> = jobs
            .iter()
            .flat_map(|j| j.blocks.iter().map(|m| m.block_id.as_str()))
            .collect();
        assert_eq!(seen.len(), blocks.len());
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), blocks.len(), "no block twice");
        let ends: Vec<u64> = jobs
            .iter()
            .flat_map(|j| j.blocks.iter().map(|m| m.end_unix_nano))
            .collect();
        assert!(ends.windows(2).all(|w| w[0] >= w[1]), "most recent first");
        for j in &jobs {
            let sum: u64 = j.blocks.iter().map(read_bytes).sum();
            assert_eq!(sum, j.bytes);
            assert!(j.bytes <= 40 || j.blocks.len() == 1, "{j:?}");
            assert_eq!(
                j.end,
                j.blocks.iter().map(|m| m.end_unix_nano).max().unwrap_or(0)
            );
            assert_eq!(
                j.start,
                j.blocks
                    .iter()
                    .map(|m| m.start_unix_nano)
                    .min()
                    .unwrap_or(0)
            );
        }
        assert!(
            jobs.len() > 5 && jobs.len() < blocks.len(),
            "{}",
            jobs.len()
        );
        // A block above the target is a job of its own; nothing is no job.
        let big = plan(
            vec![meta("big", 0, 1, 500, 900), meta("small", 0, 2, 1, 1)],
            40,
        );
        assert_eq!(big.len(), 2);
        assert!(plan(Vec::new(), 40).is_empty());
    }
}

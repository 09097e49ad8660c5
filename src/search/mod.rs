//! Search: TraceQL over what a node holds, and the tag names and values Grafana's
//! autocomplete lists. The same scanners run on an ingester (live traces, head blocks,
//! local blocks) and on a querier (blocks in the object store); the querier merges the
//! answers (`merge_hits`, `TagValues::absorb`).
//!
//! Data is decoded for search on the query (`model::SearchTrace::decode`): the write path
//! stays as it is. A trace is skipped without decoding when its known time range misses
//! the query's; a block when its meta's range does.

pub(crate) mod eval;
pub(crate) mod hit;
pub(crate) mod model;
pub(crate) mod params;
pub(crate) mod tags;

#[cfg(test)]
mod tests;

pub(crate) use hit::{merge_hits, TraceHit};
pub(crate) use params::{SearchParams, TagParams};
pub(crate) use tags::{TagNames, TagValue, TagValues};

use crate::model::TraceId;
use crate::traceql::Query;

/// Nanoseconds since the epoch, inclusive at both ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimeRange {
    pub start: u64,
    pub end: u64,
}

impl TimeRange {
    /// Whether `[start, end]` overlaps the range. An unknown range (0, or start after
    /// end as for a trace whose spans carry no times) may hold anything.
    pub(crate) fn overlaps(&self, start: u64, end: u64) -> bool {
        if start == 0 || start > end {
            return true;
        }
        start <= self.end && end >= self.start
    }
}

/// What reads traces for a query: a search, or a tag name or value collection. Offered
/// every trace in scope, one by one (`scan`).
pub(crate) trait Scanner: Send + 'static {
    /// The query's time range (`None`: everything).
    fn range(&self) -> Option<TimeRange>;
    /// Enough found: the caller stops offering.
    fn is_full(&self) -> bool {
        false
    }
    /// Whether data spanning `[start, end]` could change the answer (default: whether
    /// it is in range).
    fn wants(&self, start: u64, end: u64) -> bool {
        may_hold(self.range(), start, end)
    }
    fn offer(&mut self, trace: &model::SearchTrace);
}

/// Whether something spanning `[start, end]` can be in `range`.
pub(crate) fn may_hold(range: Option<TimeRange>, start: u64, end: u64) -> bool {
    range.is_none_or(|r| r.overlaps(start, end))
}

/// Offers one trace's stored records to `scanner` (decoded once, skipped when its spans
/// fall outside the range). Returns the bytes inspected.
pub(crate) fn offer_records<'a, S: Scanner + ?Sized>(
    scanner: &mut S,
    id: TraceId,
    records: impl IntoIterator<Item = &'a [u8]>,
) -> u64 {
    let records: Vec<&[u8]> = records.into_iter().collect();
    let bytes = records.iter().map(|r| r.len() as u64).sum();
    let trace = model::SearchTrace::decode(id, records);
    if scanner.wants(trace.start, trace.end) {
        scanner.offer(&trace);
    }
    bytes
}

/// A search on one node: offered traces, it keeps the `limit` most recent hits (by
/// start), and once it has them wants nothing that ended before the oldest of them.
pub(crate) struct Search {
    query: Query,
    fields: Vec<crate::traceql::ast::Field>,
    range: Option<TimeRange>,
    limit: usize,
    spans_per_set: usize,
    pub hits: Vec<TraceHit>,
}

impl Search {
    pub(crate) fn new(
        query: Query,
        range: Option<TimeRange>,
        limit: usize,
        spans_per_set: usize,
    ) -> Self {
        let fields = query.fields().into_iter().cloned().collect();
        Self {
            query,
            fields,
            range,
            limit,
            spans_per_set,
            hits: Vec::new(),
        }
    }
}

impl Scanner for Search {
    fn range(&self) -> Option<TimeRange> {
        self.range
    }

    fn wants(&self, start: u64, end: u64) -> bool {
        if !may_hold(self.range, start, end) {
            return false;
        }
        if self.hits.len() < self.limit || start == 0 || start > end {
            return true;
        }
        let oldest = self.hits.last().map_or(0, |h| h.start_time_unix_nano);
        end >= oldest
    }

    fn offer(&mut self, trace: &model::SearchTrace) {
        if let Some(matched) = eval::evaluate(&self.query, trace) {
            let hit = TraceHit::new(trace, &matched, &self.fields, self.spans_per_set);
            // Most recent first; the oldest goes once there are more than `limit`.
            let at = self
                .hits
                .partition_point(|h| h.start_time_unix_nano >= hit.start_time_unix_nano);
            self.hits.insert(at, hit);
            self.hits.truncate(self.limit);
        }
    }
}

/// Tag names in range.
pub(crate) struct NameScan {
    pub range: Option<TimeRange>,
    pub names: TagNames,
}

impl Scanner for NameScan {
    fn range(&self) -> Option<TimeRange> {
        self.range
    }
    fn is_full(&self) -> bool {
        self.names.truncated
    }
    fn offer(&mut self, trace: &model::SearchTrace) {
        self.names.offer(trace);
    }
}

/// One tag's values in range, on the spans `filter` selects.
pub(crate) struct ValueScan {
    pub range: Option<TimeRange>,
    pub filter: Option<Query>,
    pub values: TagValues,
}

impl Scanner for ValueScan {
    fn range(&self) -> Option<TimeRange> {
        self.range
    }
    fn is_full(&self) -> bool {
        self.values.truncated
    }
    fn offer(&mut self, trace: &model::SearchTrace) {
        self.values.offer(trace, self.filter.as_ref());
    }
}

/// What a scan over blocks read.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ScanStats {
    pub blocks: u64,
    pub traces: u64,
    pub bytes: u64,
    /// Blocks that could not be read (skipped, counted, logged).
    pub failed_blocks: u64,
}

/// Scans `blocks` of `store` (those in the scanner's range), fetching up to `parallel`
/// blocks ahead while the previous one is decoded and evaluated off the async threads.
pub(crate) async fn scan_blocks<S: Scanner>(
    store: &crate::storage::BlockStore,
    blocks: Vec<crate::storage::block::BlockMeta>,
    mut scanner: S,
    parallel: usize,
) -> (S, ScanStats) {
    use futures::{FutureExt, StreamExt};
    // The most recent blocks first: a search with enough recent hits skips the rest.
    let mut blocks: Vec<_> = blocks
        .into_iter()
        .filter(|m| scanner.wants(m.start_unix_nano, m.end_unix_nano))
        .collect();
    blocks.sort_by_key(|m| std::cmp::Reverse(m.end_unix_nano));
    let mut stats = ScanStats::default();
    let fetch = |meta: crate::storage::block::BlockMeta| {
        let store = store.clone();
        async move {
            let traces = store.whole_block(&meta).await;
            (meta, traces)
        }
        .boxed()
    };
    let mut fetched = futures::stream::iter(blocks)
        .map(fetch)
        .buffered(parallel.max(1));
    while let Some((meta, traces)) = fetched.next().await {
        if scanner.is_full() {
            break;
        }
        if !scanner.wants(meta.start_unix_nano, meta.end_unix_nano) {
            continue;
        }
        let (index, data) = match traces {
            Ok(t) => t,
            Err(e) if e.is_not_found() => continue, // retired since the listing
            Err(e) => {
                stats.failed_blocks += 1;
                metrics::counter!("ringtail_storage_unreadable_blocks_total").increment(1);
                tracing::warn!(block_id = meta.block_id, error = %e, "search skipped an unreadable block");
                continue;
            }
        };
        stats.blocks += 1;
        let block_id = meta.block_id.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let (mut n, mut bytes) = (0u64, 0u64);
            let traces = match crate::storage::block::decode_all(&data, &index) {
                Ok(t) => t,
                Err(e) => return (scanner, n, bytes, Some(e)),
            };
            for (id, data) in &traces {
                if scanner.is_full() {
                    break;
                }
                n += 1;
                bytes += offer_records(&mut scanner, *id, [&data[..]]);
            }
            (scanner, n, bytes, None)
        })
        .await;
        match joined {
            Ok((s, n, bytes, error)) => {
                scanner = s;
                stats.traces += n;
                stats.bytes += bytes;
                if let Some(e) = error {
                    stats.blocks -= 1;
                    stats.failed_blocks += 1;
                    metrics::counter!("ringtail_storage_unreadable_blocks_total").increment(1);
                    tracing::warn!(block_id, error = %e, "search skipped an unreadable block");
                }
            }
            Err(e) => {
                // A panic in the evaluator: nothing to continue with.
                tracing::error!(error = %e, "search of a block panicked");
                std::panic::resume_unwind(e.into_panic());
            }
        }
    }
    (scanner, stats)
}

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
pub(crate) mod jobs;
pub(crate) mod model;
pub(crate) mod params;
pub(crate) mod section;
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
    /// Whether a page of a block's search section may hold something this scanner takes
    /// (false: skip it; the default reads every page in range).
    fn may_match(&self, _index: &section::SectionIndex, _page: usize) -> bool {
        true
    }
    /// Whether it may be answered from blocks' tag tables (a search is not: the table is
    /// then not even decoded).
    fn reads_tables(&self) -> bool {
        false
    }
    /// Takes what it needs from a block's tag table, when the block lies in its range;
    /// true when that is all it needs from the block (its pages are not read).
    fn take_table(&mut self, _table: &section::TagTable) -> bool {
        false
    }
    fn offer(&mut self, trace: &model::SearchTrace);
    /// A scanner for another job of the same request, with an empty answer but what this
    /// one knows about what is still wanted (a search's oldest kept hit).
    fn fork(&self) -> Self
    where
        Self: Sized;
    /// Takes another job's answer.
    fn merge(&mut self, other: Self)
    where
        Self: Sized;
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
    /// The start of the oldest hit the search this one was forked from kept, once it had
    /// `limit` (0: none): anything that ended before it cannot make the cut.
    floor: u64,
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
            floor: 0,
        }
    }

    /// Data that ended before this cannot make the cut (0: anything can).
    fn bound(&self) -> u64 {
        let own = if self.hits.len() < self.limit {
            0
        } else {
            self.hits.last().map_or(0, |h| h.start_time_unix_nano)
        };
        own.max(self.floor)
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
        let bound = self.bound();
        if bound == 0 || start == 0 || start > end {
            return true;
        }
        end >= bound
    }

    fn fork(&self) -> Self {
        Self {
            query: self.query.clone(),
            fields: self.fields.clone(),
            range: self.range,
            limit: self.limit,
            spans_per_set: self.spans_per_set,
            hits: Vec::new(),
            floor: self.bound(),
        }
    }

    fn merge(&mut self, other: Self) {
        let hits = std::mem::take(&mut self.hits).into_iter().chain(other.hits);
        self.hits = merge_hits(hits, self.limit, self.spans_per_set);
    }

    fn may_match(&self, index: &section::SectionIndex, page: usize) -> bool {
        index.may_match(page, &self.query)
    }

    fn offer(&mut self, trace: &model::SearchTrace) {
        if let Some(matched) = eval::evaluate(&self.query, trace) {
            let mut hit = TraceHit::new(trace, &matched, &self.fields, self.spans_per_set);
            // Another copy of a trace already found (a replica's block, a damaged
            // section read again through its data) folds into it: it takes no second slot.
            if let Some(i) = self.hits.iter().position(|h| h.trace_id == hit.trace_id) {
                let mut existing = self.hits.remove(i);
                existing.absorb(hit, self.spans_per_set);
                hit = existing;
            }
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
    fn reads_tables(&self) -> bool {
        true
    }
    fn take_table(&mut self, table: &section::TagTable) -> bool {
        self.names.offer_table(table)
    }
    fn offer(&mut self, trace: &model::SearchTrace) {
        self.names.offer(trace);
    }
    fn fork(&self) -> Self {
        Self {
            range: self.range,
            names: self.names.empty_like(),
        }
    }
    fn merge(&mut self, other: Self) {
        let TagNames {
            resource,
            span,
            truncated,
            ..
        } = other.names;
        self.names.absorb(
            resource.into_iter().collect(),
            span.into_iter().collect(),
            truncated,
        );
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
    fn may_match(&self, index: &section::SectionIndex, page: usize) -> bool {
        let has_tag = match &self.values.field {
            crate::traceql::ast::Field::Attribute { scope, key } => {
                index.may_have(page, *scope, key)
            }
            crate::traceql::ast::Field::Intrinsic(_) => true,
        };
        has_tag
            && self
                .filter
                .as_ref()
                .is_none_or(|q| index.may_match(page, q))
    }
    fn reads_tables(&self) -> bool {
        // Values next to a filter are found on the spans it selects.
        self.filter.is_none()
    }
    fn take_table(&mut self, table: &section::TagTable) -> bool {
        self.values.offer_table(table)
    }
    fn offer(&mut self, trace: &model::SearchTrace) {
        self.values.offer(trace, self.filter.as_ref());
    }
    fn fork(&self) -> Self {
        Self {
            range: self.range,
            filter: self.filter.clone(),
            values: self.values.empty_like(),
        }
    }
    fn merge(&mut self, other: Self) {
        self.values
            .absorb(other.values.values, other.values.truncated);
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

/// What a block is read through: its search section, or (without one, or when it does
/// not decode) its data.
enum BlockSource {
    Section(section::SectionIndex, bytes::Bytes),
    Data(
        std::sync::Arc<crate::storage::block::PageIndex>,
        bytes::Bytes,
    ),
}

async fn fetch_block(
    store: &crate::storage::BlockStore,
    meta: &crate::storage::block::BlockMeta,
    use_section: bool,
) -> Result<BlockSource, crate::storage::StoreError> {
    if use_section && section::readable(meta.search_version) {
        // A section that is missing or does not decode: the data is searched instead.
        let index = match store.search_section(meta).await {
            Ok(bytes) => section::SectionIndex::decode(&bytes)
                .map(|index| (index, bytes))
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match index {
            Ok((index, bytes)) => return Ok(BlockSource::Section(index, bytes)),
            Err(e) => {
                metrics::counter!("ringtail_search_unreadable_sections_total").increment(1);
                tracing::warn!(block_id = meta.block_id, error = %e, "a block's search section is unreadable; searching its data");
            }
        }
    }
    let (index, data) = store.whole_block(meta).await?;
    Ok(BlockSource::Data(index, data))
}

/// What one block's scan read.
#[derive(Default)]
struct BlockScan {
    traces: u64,
    bytes: u64,
    pages: u64,
    skipped_pages: u64,
    /// Answered from the block's tag table.
    table: bool,
}

/// Offers a block's traces from its section, skipping pages the scanner cannot use.
fn scan_section<S: Scanner>(
    scanner: &mut S,
    index: &section::SectionIndex,
    bytes: &[u8],
) -> Result<BlockScan, section::SectionError> {
    let mut out = BlockScan::default();
    let (start, end) = index.time_range();
    let whole = scanner.reads_tables()
        && scanner
            .range()
            .is_none_or(|r| r.start <= start && end <= r.end);
    // A table that does not decode: the pages still do (or the data is read).
    if let Some(Ok(table)) = whole.then(|| index.tag_table()).flatten() {
        if scanner.take_table(&table) {
            out.table = true;
            out.skipped_pages = index.pages() as u64;
            return Ok(out);
        }
    }
    for page in 0..index.pages() {
        if scanner.is_full() {
            break;
        }
        let stats = index.stats(page);
        if !scanner.wants(stats.start, stats.end) || !scanner.may_match(index, page) {
            out.skipped_pages += 1;
            continue;
        }
        let raw = index.read_page(bytes, page)?;
        out.pages += 1;
        out.bytes += raw.len() as u64;
        for trace in section::decode_page(&raw)? {
            if scanner.is_full() {
                break;
            }
            out.traces += 1;
            if scanner.wants(trace.start, trace.end) {
                scanner.offer(&trace);
            }
        }
    }
    Ok(out)
}

/// Offers every trace of a block's data.
fn scan_data<S: Scanner>(
    scanner: &mut S,
    index: &crate::storage::block::PageIndex,
    data: &[u8],
) -> Result<BlockScan, crate::storage::block::BlockError> {
    let mut out = BlockScan::default();
    for (id, data) in &crate::storage::block::decode_all(data, index)? {
        if scanner.is_full() {
            break;
        }
        out.traces += 1;
        out.bytes += offer_records(scanner, *id, [&data[..]]);
    }
    Ok(out)
}

/// Scans `blocks` of `store` (those in the scanner's range), fetching up to `parallel`
/// blocks ahead while the previous one is decoded and evaluated off the async threads.
/// Blocks with a search section are read through it (pages the query cannot match are
/// skipped); others through their data.
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
    let fetch = |meta: crate::storage::block::BlockMeta, use_section: bool| {
        let store = store.clone();
        async move {
            let source = fetch_block(&store, &meta, use_section).await;
            (meta, source)
        }
        .boxed()
    };
    let mut fetched = futures::stream::iter(blocks)
        .map(|m| fetch(m, true))
        .buffered(parallel.max(1));
    while let Some((meta, mut source)) = fetched.next().await {
        loop {
            if scanner.is_full() || !scanner.wants(meta.start_unix_nano, meta.end_unix_nano) {
                break;
            }
            let source_now = match source {
                Ok(s) => s,
                Err(e) if e.is_not_found() => break, // retired since the listing
                Err(e) => {
                    stats.failed_blocks += 1;
                    metrics::counter!("ringtail_storage_unreadable_blocks_total").increment(1);
                    tracing::warn!(block_id = meta.block_id, error = %e, "search skipped an unreadable block");
                    break;
                }
            };
            let is_section = matches!(source_now, BlockSource::Section(..));
            let joined = tokio::task::spawn_blocking(move || {
                let result = match &source_now {
                    BlockSource::Section(index, bytes) => {
                        scan_section(&mut scanner, index, bytes).map_err(|e| e.to_string())
                    }
                    BlockSource::Data(index, data) => {
                        scan_data(&mut scanner, index, data).map_err(|e| e.to_string())
                    }
                };
                (scanner, result)
            })
            .await;
            let result = match joined {
                Ok((s, result)) => {
                    scanner = s;
                    result
                }
                Err(e) => {
                    // A panic in the evaluator: nothing to continue with.
                    tracing::error!(error = %e, "search of a block panicked");
                    std::panic::resume_unwind(e.into_panic());
                }
            };
            match result {
                Ok(scan) => {
                    stats.blocks += 1;
                    stats.traces += scan.traces;
                    stats.bytes += scan.bytes;
                    metrics::counter!("ringtail_search_section_pages_read_total")
                        .increment(scan.pages);
                    metrics::counter!("ringtail_search_section_pages_skipped_total")
                        .increment(scan.skipped_pages);
                    if scan.table {
                        metrics::counter!("ringtail_search_section_tag_tables_read_total")
                            .increment(1);
                    }
                }
                // A damaged section: its data is still there. (What the scanner was
                // offered before the damage may be offered again: hits are merged by
                // trace ID, tag values are sets.)
                Err(e) if is_section => {
                    metrics::counter!("ringtail_search_unreadable_sections_total").increment(1);
                    tracing::warn!(block_id = meta.block_id, error = %e, "a block's search section is damaged; searching its data");
                    source = fetch(meta.clone(), false).await.1;
                    continue;
                }
                Err(e) => {
                    stats.failed_blocks += 1;
                    metrics::counter!("ringtail_storage_unreadable_blocks_total").increment(1);
                    tracing::warn!(block_id = meta.block_id, error = %e, "search skipped an unreadable block");
                }
            }
            break;
        }
    }
    (scanner, stats)
}

//! Scanning blocks of a store: through their search section where they have one (its
//! header first, then only the pages a query can use, by ranged reads), through their
//! data otherwise. Blocks are fetched ahead while the previous one is evaluated off the
//! async threads.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::{FutureExt, StreamExt};

use super::{offer_records, section, Scanner};
use crate::storage::block::{BlockMeta, PageIndex};
use crate::storage::{BlockStore, StoreError};

/// What a scan over blocks read.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ScanStats {
    pub blocks: u64,
    pub traces: u64,
    /// Decompressed bytes evaluated.
    pub bytes: u64,
    /// Blocks that could not be read (skipped, counted, logged).
    pub failed_blocks: u64,
    /// Bytes fetched from the store for sections (headers and pages).
    pub section_bytes_fetched: u64,
}

impl ScanStats {
    pub(crate) fn add(&mut self, other: &ScanStats) {
        self.blocks += other.blocks;
        self.traces += other.traces;
        self.bytes += other.bytes;
        self.failed_blocks += other.failed_blocks;
        self.section_bytes_fetched += other.section_bytes_fetched;
    }
}

/// The leading bytes of a section fetched first: its header, with the tag table, fits
/// in them in the blocks measured; a section this small comes whole.
pub(super) const SECTION_HEAD_READ: u64 = 64 * 1024;
/// Pages fetched in one go (adjacent ones in one request): a search that fills up
/// early stops fetching.
const PAGES_PER_FETCH: usize = 16;

/// What a block is read through.
enum BlockSource {
    /// Its search section's header, with the whole section when it came with it.
    Section(section::SectionIndex, Option<Bytes>),
    /// Its data (no section, or one that could not be read).
    Data(Arc<PageIndex>, Bytes),
}

/// A section's header (and the whole section, if small): what its length in the meta
/// tells, with one ranged read, or two when the header is larger than the first.
async fn fetch_section(
    store: &BlockStore,
    meta: &BlockMeta,
) -> Result<(section::SectionIndex, Option<Bytes>, u64), String> {
    let len = meta.search_bytes;
    if len == 0 {
        // A meta that does not say how long: the whole object.
        let bytes = store
            .search_section(meta)
            .await
            .map_err(|e| e.to_string())?;
        let index = section::SectionIndex::decode(&bytes).map_err(|e| e.to_string())?;
        let fetched = bytes.len() as u64;
        return Ok((index, Some(bytes), fetched));
    }
    let first = len.min(SECTION_HEAD_READ);
    let mut head = fetch_ranges(store, meta, std::slice::from_ref(&(0..first)))
        .await?
        .concat();
    let need = section::SectionIndex::head_len(&head).map_err(|e| e.to_string())? as u64;
    if need > first && need <= len {
        let rest = fetch_ranges(store, meta, std::slice::from_ref(&(first..need))).await?;
        head.extend_from_slice(&rest.concat());
    }
    let index =
        section::SectionIndex::decode_head(&head, len as usize).map_err(|e| e.to_string())?;
    let fetched = head.len() as u64;
    let whole = (fetched == len).then(|| Bytes::from(head));
    Ok((index, whole, fetched))
}

async fn fetch_ranges(
    store: &BlockStore,
    meta: &BlockMeta,
    ranges: &[Range<u64>],
) -> Result<Vec<Bytes>, String> {
    let got = store
        .search_section_ranges(meta, ranges)
        .await
        .map_err(|e| e.to_string())?;
    // A section shorter than its meta says: damaged.
    if got
        .iter()
        .zip(ranges)
        .any(|(b, r)| b.len() as u64 != r.end - r.start)
    {
        return Err("search section is shorter than its meta says".into());
    }
    Ok(got)
}

async fn fetch_block(
    store: &BlockStore,
    meta: &BlockMeta,
    use_section: bool,
) -> (Result<BlockSource, StoreError>, u64) {
    if use_section && section::readable(meta.search_version) {
        // A section that is missing or does not decode: the data is searched instead.
        match fetch_section(store, meta).await {
            Ok((index, whole, fetched)) => {
                return (Ok(BlockSource::Section(index, whole)), fetched)
            }
            Err(e) => {
                metrics::counter!("ringtail_search_unreadable_sections_total").increment(1);
                tracing::warn!(block_id = meta.block_id, error = %e, "a block's search section is unreadable; searching its data");
            }
        }
    }
    let source = store
        .whole_block(meta)
        .await
        .map(|(index, data)| BlockSource::Data(index, data));
    (source, 0)
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
    /// Section bytes fetched after the header.
    fetched: u64,
}

/// What a section's header tells a scanner before any page is read.
enum SectionPlan {
    /// The tag table answered.
    Table,
    /// These pages may hold something for it; the others are skipped.
    Pages(Vec<usize>),
}

fn plan_section<S: Scanner>(scanner: &mut S, index: &section::SectionIndex) -> SectionPlan {
    let (start, end) = index.time_range();
    let whole = scanner.reads_tables()
        && scanner
            .range()
            .is_none_or(|r| r.start <= start && end <= r.end);
    // A table that does not decode: the pages still do (or the data is read).
    if let Some(Ok(table)) = whole.then(|| index.tag_table()).flatten() {
        if scanner.take_table(&table) {
            return SectionPlan::Table;
        }
    }
    SectionPlan::Pages(
        (0..index.pages())
            .filter(|&page| {
                let stats = index.stats(page);
                scanner.wants(stats.start, stats.end) && scanner.may_match(index, page)
            })
            .collect(),
    )
}

/// Offers the traces of `pages` (stored bytes of pages `ids`) to the scanner.
fn scan_pages<S: Scanner>(
    scanner: &mut S,
    pages: &[Bytes],
    out: &mut BlockScan,
) -> Result<(), section::SectionError> {
    for stored in pages {
        if scanner.is_full() {
            break;
        }
        let raw = section::inflate_page(stored)?;
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
    Ok(())
}

/// Runs `f` on the scanner off the async threads (a panic in the evaluator is raised
/// again here: there is nothing to continue with).
async fn blocking<S: Scanner, T: Send + 'static>(
    mut scanner: S,
    f: impl FnOnce(&mut S) -> T + Send + 'static,
) -> (S, T) {
    match tokio::task::spawn_blocking(move || {
        let out = f(&mut scanner);
        (scanner, out)
    })
    .await
    {
        Ok(done) => done,
        Err(e) => {
            tracing::error!(error = %e, "search of a block panicked");
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

/// A block through its section: the header's plan, then the pages it keeps, fetched
/// [`PAGES_PER_FETCH`] at a time until the scanner is full.
async fn scan_section<S: Scanner>(
    store: &BlockStore,
    meta: &BlockMeta,
    scanner: S,
    index: section::SectionIndex,
    whole: Option<Bytes>,
) -> (S, Result<BlockScan, String>) {
    let index = Arc::new(index);
    let planning = index.clone();
    let (mut scanner, plan) = blocking(scanner, move |s| plan_section(s, &planning)).await;
    let mut out = BlockScan::default();
    let pages = match plan {
        SectionPlan::Table => {
            out.table = true;
            out.skipped_pages = index.pages() as u64;
            return (scanner, Ok(out));
        }
        SectionPlan::Pages(pages) => pages,
    };
    out.skipped_pages = (index.pages() - pages.len()) as u64;
    for batch in pages.chunks(PAGES_PER_FETCH) {
        if scanner.is_full() {
            break;
        }
        let ranges: Vec<Range<usize>> = batch.iter().map(|&p| index.page_range(p)).collect();
        let stored = match &whole {
            Some(bytes) => ranges.into_iter().map(|r| bytes.slice(r)).collect(),
            None => {
                let ranges: Vec<Range<u64>> = ranges
                    .into_iter()
                    .map(|r| r.start as u64..r.end as u64)
                    .collect();
                match fetch_ranges(store, meta, &ranges).await {
                    Ok(stored) => stored,
                    Err(e) => return (scanner, Err(e)),
                }
            }
        };
        if whole.is_none() {
            out.fetched += stored.iter().map(|b| b.len() as u64).sum::<u64>();
        }
        let (s, (result, scanned)) = blocking(scanner, move |s| {
            let mut scanned = BlockScan::default();
            let result = scan_pages(s, &stored, &mut scanned);
            (result, scanned)
        })
        .await;
        scanner = s;
        out.pages += scanned.pages;
        out.bytes += scanned.bytes;
        out.traces += scanned.traces;
        if let Err(e) = result {
            return (scanner, Err(e.to_string()));
        }
    }
    (scanner, Ok(out))
}

/// Offers every trace of a block's data.
fn scan_data<S: Scanner>(
    scanner: &mut S,
    index: &PageIndex,
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
/// blocks ahead (a section's header, or a block's data) while the previous one is
/// evaluated off the async threads. Blocks with a search section are read through it
/// (pages the query cannot match are neither fetched nor decoded); others through their
/// data.
pub(crate) async fn scan_blocks<S: Scanner>(
    store: &BlockStore,
    blocks: Vec<BlockMeta>,
    mut scanner: S,
    parallel: usize,
) -> (S, ScanStats) {
    // The most recent blocks first: a search with enough recent hits skips the rest.
    let mut blocks: Vec<_> = blocks
        .into_iter()
        .filter(|m| scanner.wants(m.start_unix_nano, m.end_unix_nano))
        .collect();
    blocks.sort_by_key(|m| std::cmp::Reverse(m.end_unix_nano));
    let mut stats = ScanStats::default();
    let fetch = |meta: BlockMeta, use_section: bool| {
        let store = store.clone();
        async move {
            let (source, fetched) = fetch_block(&store, &meta, use_section).await;
            (meta, source, fetched)
        }
        .boxed()
    };
    let mut fetched = futures::stream::iter(blocks)
        .map(|m| fetch(m, true))
        .buffered(parallel.max(1));
    while let Some((meta, mut source, head_bytes)) = fetched.next().await {
        stats.section_bytes_fetched += head_bytes;
        loop {
            if scanner.is_full() || !scanner.wants(meta.start_unix_nano, meta.end_unix_nano) {
                break;
            }
            let (is_section, result) = match source {
                Ok(BlockSource::Section(index, whole)) => {
                    let (s, result) = scan_section(store, &meta, scanner, index, whole).await;
                    scanner = s;
                    (true, result)
                }
                Ok(BlockSource::Data(index, data)) => {
                    let (s, result) = blocking(scanner, move |s| {
                        scan_data(s, &index, &data).map_err(|e| e.to_string())
                    })
                    .await;
                    scanner = s;
                    (false, result)
                }
                Err(e) if e.is_not_found() => break, // retired since the listing
                Err(e) => {
                    stats.failed_blocks += 1;
                    metrics::counter!("ringtail_storage_unreadable_blocks_total").increment(1);
                    tracing::warn!(block_id = meta.block_id, error = %e, "search skipped an unreadable block");
                    break;
                }
            };
            match result {
                Ok(scan) => record(&mut stats, &scan),
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
    metrics::counter!("ringtail_search_section_bytes_fetched_total")
        .increment(stats.section_bytes_fetched);
    (scanner, stats)
}

fn record(stats: &mut ScanStats, scan: &BlockScan) {
    stats.blocks += 1;
    stats.traces += scan.traces;
    stats.bytes += scan.bytes;
    stats.section_bytes_fetched += scan.fetched;
    metrics::counter!("ringtail_search_section_pages_read_total").increment(scan.pages);
    metrics::counter!("ringtail_search_section_pages_skipped_total").increment(scan.skipped_pages);
    if scan.table {
        metrics::counter!("ringtail_search_section_tag_tables_read_total").increment(1);
    }
}

#[cfg(test)]
mod tests;

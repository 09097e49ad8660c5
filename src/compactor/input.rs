//! One input of a merge, read ahead: a task fetches its pages in order, adjacent pages
//! in one request of up to [`READ_BYTES`], and queues them (up to [`QUEUED_PAGES`]) for
//! the merge's thread, which takes them without waiting while the task keeps ahead. A
//! handoff per page (a request, a wake-up) cost more than the page's merge when the
//! machine's cores were busy, so the merge ran far below its share of the CPU.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::run::{CompactError, IdRange};
use crate::model::TraceId;
use crate::storage::block::{self, BlockError, BlockMeta, PageRange};
use crate::storage::{BlockStore, StoreError};

/// The most bytes one request fetches (adjacent pages together).
const READ_BYTES: u64 = 1 << 20;

/// Pages fetched and waiting for the merge, per input.
const QUEUED_PAGES: usize = 16;

/// A page's traces (of the merge's range) and its stored size.
pub(crate) type Page = (Vec<(TraceId, Bytes)>, u64);

/// One input's pages on their way.
pub(crate) struct Input {
    pub(crate) meta: Arc<BlockMeta>,
    /// The trace IDs this merge takes.
    ids: IdRange,
    pages: mpsc::Receiver<Result<Bytes, StoreError>>,
    reader: JoinHandle<()>,
}

impl Input {
    /// Starts reading `ranges` (in order) of `meta`'s data; the merge takes `ids` of them.
    pub(crate) fn open(
        store: &BlockStore,
        meta: BlockMeta,
        ranges: Vec<PageRange>,
        ids: IdRange,
    ) -> Self {
        let meta = Arc::new(meta);
        let (tx, pages) = mpsc::channel(QUEUED_PAGES);
        let reader = tokio::spawn(read(store.clone(), meta.clone(), ranges, tx));
        Self {
            meta,
            ids,
            pages,
            reader,
        }
    }

    /// The next page's traces of the merge's range and its stored size (`None`: no page
    /// left). Blocks the thread while the page is on its way: for the merge's thread only.
    pub(crate) fn next_blocking(&mut self) -> Result<Option<Page>, CompactError> {
        let Some(page) = self.pages.blocking_recv() else {
            return Ok(None);
        };
        let page = page?;
        let mut traces = block::decode_page(&page).map_err(|e| CompactError::Merge(e.into()))?;
        traces.retain(|(id, _)| self.ids.contains(id));
        Ok(Some((traces, page.len() as u64)))
    }
}

impl Drop for Input {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Fetches `ranges` in runs of adjacent pages and sends them one by one; stops at the
/// first error (sent on) or when the merge stops taking them.
async fn read(
    store: BlockStore,
    meta: Arc<BlockMeta>,
    ranges: Vec<PageRange>,
    tx: mpsc::Sender<Result<Bytes, StoreError>>,
) {
    for run in runs(&ranges) {
        let (Some(first), Some(last)) = (run.first(), run.last()) else {
            continue;
        };
        let span = PageRange {
            offset: first.offset,
            len: u32::try_from(last.offset + u64::from(last.len) - first.offset)
                .unwrap_or(u32::MAX),
        };
        let bytes = match store.data_page(&meta, span).await {
            Ok(b) => b,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        for r in run {
            let at = usize::try_from(r.offset - first.offset).unwrap_or(usize::MAX);
            let end = at.saturating_add(r.len as usize);
            let sent = if end <= bytes.len() {
                Ok(bytes.slice(at..end))
            } else {
                Err(StoreError::Block(BlockError::Malformed {
                    what: "data",
                    why: format!("block {}: a page ends past what was read", meta.block_id),
                }))
            };
            if tx.send(sent).await.is_err() {
                return;
            }
        }
    }
}

/// `ranges` (in order) cut into runs of adjacent pages of up to [`READ_BYTES`] together
/// (a page larger than that is a run of its own).
fn runs(ranges: &[PageRange]) -> Vec<&[PageRange]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=ranges.len() {
        let ends = ranges.get(i).is_none_or(|next| {
            let prev = &ranges[i - 1];
            next.offset != prev.offset + u64::from(prev.len)
                || next.offset + u64::from(next.len) - ranges[start].offset > READ_BYTES
        });
        if ends {
            out.push(&ranges[start..i]);
            start = i;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(offset: u64, len: u32) -> PageRange {
        PageRange { offset, len }
    }

    #[test]
    fn adjacent_pages_are_read_together_up_to_the_request_size_and_gaps_split_runs() {
        let half = (READ_BYTES / 2) as u32;
        let ranges = [
            r(0, 10),
            r(10, 20),
            r(30, half),
            // past READ_BYTES with the three before: a new run
            r(30 + u64::from(half), half),
            // not adjacent
            r(5 * READ_BYTES, 5),
            // larger than a request alone
            r(5 * READ_BYTES + 5, (2 * READ_BYTES) as u32),
        ];
        let lens: Vec<usize> = runs(&ranges).iter().map(|run| run.len()).collect();
        assert_eq!(lens, vec![3, 1, 1, 1]);
        assert!(runs(&[]).is_empty());
        assert_eq!(runs(&ranges[..1]).len(), 1);
    }
}

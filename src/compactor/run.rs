//! Running one merge against a store: the inputs' pages streamed through a [`Merger`],
//! the output uploaded (data as a stream, then index, filter, search section, and
//! `meta.json` last), then the inputs marked replaced. A crash at any step leaves the
//! inputs readable (no output meta yet) or the output readable (its `sources` hide the
//! inputs from readers); a retry writes the same output ID.

use std::sync::Arc;

use super::merge::{MergeError, Merger};
use super::plan::Merge;
use crate::storage::block::{self, BlockInfo, BlockMeta, PageIndex};
use crate::storage::{BlockStore, DataUpload, StoreError};

#[derive(Debug, thiserror::Error)]
pub(crate) enum CompactError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Merge(#[from] MergeError),
    #[error("input block {0} is not listed")]
    MissingInput(String),
    #[error("a merge task failed: {0}")]
    Task(String),
}

/// What a merge read and wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Compacted {
    pub output: BlockMeta,
    pub bytes_read: u64,
    pub copies_read: u64,
}

/// One input's pages, read in order.
struct Input {
    meta: BlockMeta,
    index: Arc<PageIndex>,
    next: usize,
}

/// Runs `merge` over `listed` (the tenant's blocks; its inputs must be among them) and
/// marks its inputs replaced. `compactor` names the writer in the output's meta.
pub(crate) async fn compact(
    store: &BlockStore,
    merge: &Merge,
    listed: &[BlockMeta],
    compactor: &str,
    now_unix_secs: u64,
) -> Result<Compacted, CompactError> {
    let mut inputs = Vec::with_capacity(merge.inputs.len());
    for id in &merge.inputs {
        let meta = listed
            .iter()
            .find(|m| &m.block_id == id)
            .ok_or_else(|| CompactError::MissingInput(id.clone()))?
            .clone();
        let index = store.page_index(&meta).await?;
        inputs.push(Input {
            meta,
            index,
            next: 0,
        });
    }
    let info = BlockInfo {
        tenant: merge.tenant.clone(),
        block_id: merge.output.clone(),
        ingester: compactor.to_owned(),
        start_unix_nano: inputs
            .iter()
            .map(|i| i.meta.start_unix_nano)
            .filter(|&s| s > 0)
            .min()
            .unwrap_or(0),
        end_unix_nano: inputs
            .iter()
            .map(|i| i.meta.end_unix_nano)
            .max()
            .unwrap_or(0),
        created_unix_secs: now_unix_secs,
    };
    let mut data = store.begin_data(&merge.tenant, &merge.output).await?;
    let merger = Merger::new(inputs.len(), info);
    let streamed = stream(store, &mut inputs, merger, &mut data).await;
    let (merger, bytes_read) = match streamed {
        Ok(done) => done,
        Err(e) => {
            data.abort().await;
            return Err(e);
        }
    };
    let (last, merged) = blocking(move || merger.finish().map_err(CompactError::from)).await?;
    data.write(&last).await?;
    data.finish().await?;
    let mut meta = merged.tail.meta;
    meta.compaction_level = merge.level;
    meta.sources = merge.inputs.clone();
    let search = merged.section.map(bytes::Bytes::from);
    if let Some(s) = &search {
        meta.search_version = crate::search::section::VERSION;
        meta.search_bytes = s.len() as u64;
    }
    store
        .finish_block(merged.tail.index, merged.tail.filter, search, &meta)
        .await?;
    for id in &merge.inputs {
        store
            .mark_replaced(&merge.tenant, id, &merge.output)
            .await?;
    }
    Ok(Compacted {
        output: meta,
        bytes_read,
        copies_read: merged.copies,
    })
}

/// Feeds the inputs' pages to the merger until every input is used up, writing the
/// output's data pages as they complete. Returns the merger and the bytes read.
async fn stream(
    store: &BlockStore,
    inputs: &mut [Input],
    mut merger: Merger,
    data: &mut DataUpload,
) -> Result<(Merger, u64), CompactError> {
    let mut bytes_read = 0u64;
    loop {
        let wanted = merger.wants();
        if wanted.is_empty() {
            return Ok((merger, bytes_read));
        }
        let fetches = wanted.iter().map(|&i| {
            let input = &inputs[i];
            let range = input.index.ranges().nth(input.next);
            async move {
                match range {
                    Some(r) => store.data_page(&input.meta, r).await.map(Some),
                    None => Ok(None),
                }
            }
        });
        let pages = futures::future::try_join_all(fetches).await?;
        for (&i, page) in wanted.iter().zip(pages) {
            inputs[i].next += 1;
            bytes_read += page.as_ref().map_or(0, |p| p.len() as u64);
            let traces = match page {
                Some(p) => Some(
                    blocking(move || {
                        block::decode_page(&p).map_err(|e| CompactError::Merge(e.into()))
                    })
                    .await?,
                ),
                None => None,
            };
            merger.feed(i, traces);
        }
        let (m, pages) = blocking(move || {
            let mut merger = merger;
            let pages = merger.step();
            Ok((merger, pages))
        })
        .await?;
        merger = m;
        for page in pages? {
            data.write(&page).await?;
        }
    }
}

/// Runs CPU work (decompression, the section, compression) off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CompactError> + Send + 'static,
) -> Result<T, CompactError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CompactError::Task(e.to_string()))?
}

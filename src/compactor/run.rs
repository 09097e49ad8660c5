//! Running one merge against a store: the inputs' pages streamed through a [`Merger`],
//! the output uploaded (data as a stream, then the search section, index, filter, and
//! `meta.json` last), then the inputs marked replaced. A crash at any step leaves the
//! inputs readable (no output meta yet) or the output readable (its `sources` hide the
//! inputs from readers); a retry writes the same output ID.
//!
//! A merge of one part of a closed window (see `plan`) takes one range of the inputs'
//! trace IDs: the ranges are cut where the inputs' pages, sorted by first ID, reach equal
//! shares of their bytes ([`split_points`]: the same for every part, whatever the IDs'
//! distribution), and each part reads only the pages that overlap its range. Its output
//! says how many parts there are; the parts hide the inputs only once all are listed.
//!
//! Three kinds of work run side by side: each input's pages are fetched ahead (a task
//! per input, see `input`), the merge runs on one thread (decompressing, merging,
//! compressing), and the output's search section is built on another from the merged
//! traces. They hand each other batches through bounded channels, so none waits on
//! another while it keeps ahead, and memory stays bounded whatever the inputs' sizes: a
//! read or two per input (up to a MiB each), a megabyte of output, a few batches of
//! merged traces, and the section's pages, spilled to a scratch file as they seal and
//! uploaded from it.

use std::io::{SeekFrom, Write};
use std::path::Path;
use std::sync::mpsc::SyncSender;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::task::JoinHandle;

use super::input::Input;
use super::merge::{MergeError, Merged, MergedTrace, Merger};
use super::plan::Merge;
use crate::model::TraceId;
use crate::search::model::SearchTrace;
use crate::search::section::{SectionError, SectionParts, SectionWriter};
use crate::storage::block::{self, BlockInfo, BlockMeta};
use crate::storage::{BlockStore, ObjectUpload, StoreError, DATA, SEARCH};

#[derive(Debug, thiserror::Error)]
pub(crate) enum CompactError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Merge(#[from] MergeError),
    #[error("input block {0} is not listed")]
    MissingInput(String),
    #[error("input block {0} was deleted during the merge; its output is deleted too")]
    InputDeleted(String),
    #[error("a merge task failed: {0}")]
    Task(String),
    #[error("the scratch file for the search section: {0}")]
    Scratch(#[from] std::io::Error),
    #[error(transparent)]
    Section(#[from] SectionError),
}

/// What a merge read and wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Compacted {
    /// `None`: a part whose range of trace IDs turned out empty (the inputs' pages start
    /// at fewer distinct IDs than there are parts), so it wrote nothing.
    pub output: Option<BlockMeta>,
    pub bytes_read: u64,
    pub copies_read: u64,
}

/// Runs `merge` over `listed` (the tenant's blocks; its inputs must be among them) and
/// marks its inputs replaced. `compactor` names the writer in the output's meta;
/// `scratch` is the folder for the section's scratch file (deleted when the merge ends).
pub(crate) async fn compact(
    store: &BlockStore,
    merge: &Merge,
    listed: &[BlockMeta],
    compactor: &str,
    scratch: &Path,
    now_unix_secs: u64,
) -> Result<Compacted, CompactError> {
    let Some((inputs, part_count)) = open_inputs(store, merge, listed).await? else {
        return Ok(Compacted {
            output: None,
            bytes_read: 0,
            copies_read: 0,
        });
    };
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
    let section = SectionTask::start(tempfile::tempfile_in(scratch)?);
    let mut data = store
        .begin_object(&merge.tenant, &merge.output, DATA)
        .await?;
    let merger = Merger::new(inputs.len(), info)?;
    let streamed = stream(inputs, merger, section.feed.clone(), &mut data).await;
    let built = section.finish().await;
    let ((merged, bytes_read), (parts, spill)) = match (streamed, built) {
        (Ok(s), Ok(b)) => (s, b),
        // The builder's own error first: a stream stopped by it only says it stopped.
        (_, Err(e)) | (Err(e), _) => {
            data.abort().await;
            return Err(e);
        }
    };
    data.finish().await?;
    let mut meta = merged.tail.meta;
    meta.compaction_level = merge.level;
    meta.sources = merge.inputs.clone();
    meta.parts = part_count;
    if let Some((head, rest)) = parts {
        let upload = store
            .begin_object(&merge.tenant, &merge.output, SEARCH)
            .await?;
        meta.search_version = crate::search::section::VERSION;
        meta.search_bytes = upload_section(upload, &head, spill, &rest).await?;
    }
    publish(store, merge, merged.tail.index, merged.tail.filter, &meta).await?;
    Ok(Compacted {
        output: Some(meta),
        bytes_read,
        copies_read: merged.copies,
    })
}

/// The merge's inputs, each with the pages that hold its range of trace IDs, and the
/// number of parts its output is one of (0: it is the whole). `None`: its range is empty.
async fn open_inputs(
    store: &BlockStore,
    merge: &Merge,
    listed: &[BlockMeta],
) -> Result<Option<(Vec<Input>, u32)>, CompactError> {
    let mut indexes = Vec::with_capacity(merge.inputs.len());
    for id in &merge.inputs {
        let meta = listed
            .iter()
            .find(|m| &m.block_id == id)
            .ok_or_else(|| CompactError::MissingInput(id.clone()))?
            .clone();
        let index = store.page_index(&meta).await?;
        indexes.push((meta, index));
    }
    let (ids, part_count) = match merge.part {
        None => (IdRange::ALL, 0),
        Some((index, count)) => {
            let pages = indexes.iter().flat_map(|(_, i)| i.pages());
            let bounds = split_points(pages.map(|(first, _, r)| (first, r.len)), count);
            match IdRange::part(&bounds, index) {
                Some(ids) => (ids, bounds.len() as u32 + 1),
                None => return Ok(None),
            }
        }
    };
    let inputs = indexes
        .into_iter()
        .map(|(meta, index)| {
            let ranges = index
                .pages()
                .filter(|(first, last, _)| ids.overlaps(first, last))
                .map(|(_, _, r)| r)
                .collect();
            Input::open(store, meta, ranges, ids)
        })
        .collect();
    Ok(Some((inputs, part_count)))
}

/// Makes the output visible (its index, filter, then `meta`) and marks the inputs. An
/// input deleted meanwhile (tenant deletion, retention) must not come back as the
/// output: checked before the output's meta, and again after it for a deletion that
/// listed the tenant just before the meta appeared.
async fn publish(
    store: &BlockStore,
    merge: &Merge,
    index: Bytes,
    filter: Bytes,
    meta: &BlockMeta,
) -> Result<(), CompactError> {
    inputs_present(store, merge).await?;
    store.finish_block(index, filter, None, meta).await?;
    inputs_present(store, merge).await?;
    // A part replaces nothing alone: the plan marks the inputs once every part is listed.
    if merge.part.is_none() {
        for id in &merge.inputs {
            store
                .mark_replaced(&merge.tenant, id, &merge.output)
                .await?;
            store.forget(&format!("{}/{id}", merge.tenant));
        }
    }
    Ok(())
}

/// Feeds the inputs' pages to the merger until every input is used up, writing the
/// output's data pages as they complete and handing the merged traces to the section's
/// builder through `feed`. The merge runs on a thread of its own, taking the pages the
/// inputs' readers fetched ahead and handing on data pages and merged traces in batches,
/// so it waits on nobody while they keep ahead. Returns what the merge wrote after its
/// data and the bytes read.
async fn stream(
    inputs: Vec<Input>,
    merger: Merger,
    feed: SyncSender<Vec<MergedTrace>>,
    data: &mut ObjectUpload,
) -> Result<(Merged, u64), CompactError> {
    let (out, mut written) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let merging = tokio::task::spawn_blocking(move || merge_inputs(inputs, merger, &feed, &out));
    let mut write_error = None;
    while let Some(chunk) = written.recv().await {
        if let Err(e) = data.write(&chunk).await {
            write_error = Some(e);
            break;
        }
    }
    // The merge stops at its next handoff once nobody takes its pages.
    drop(written);
    let merged = merging
        .await
        .map_err(|e| CompactError::Task(e.to_string()))?;
    match write_error {
        Some(e) => Err(e.into()),
        None => merged,
    }
}

/// Data bytes the merge's thread gathers before handing them on to be written.
const WRITE_BYTES: usize = 1 << 20;

/// Merged traces the merge's thread gathers before handing them to the section's builder.
const SECTION_BATCH: usize = 512;

/// The merge's thread: see [`stream`].
fn merge_inputs(
    mut inputs: Vec<Input>,
    mut merger: Merger,
    feed: &SyncSender<Vec<MergedTrace>>,
    out: &tokio::sync::mpsc::Sender<Vec<u8>>,
) -> Result<(Merged, u64), CompactError> {
    let stopped = || CompactError::Task("the merge's output stopped".into());
    let builder_stopped = || CompactError::Task("the search section's builder stopped".into());
    let mut bytes_read = 0u64;
    let mut chunk: Vec<u8> = Vec::with_capacity(WRITE_BYTES + block::PAGE_BYTES);
    let mut batch: Vec<MergedTrace> = Vec::new();
    loop {
        let wanted = merger.wants();
        if wanted.is_empty() {
            break;
        }
        for i in wanted {
            let page = inputs[i].next_blocking()?;
            bytes_read += page.as_ref().map_or(0, |(_, stored)| *stored);
            merger.feed(i, page.map(|(traces, _)| traces));
        }
        for page in merger.step()? {
            chunk.extend_from_slice(&page);
        }
        if chunk.len() >= WRITE_BYTES {
            out.blocking_send(std::mem::take(&mut chunk))
                .map_err(|_| stopped())?;
        }
        batch.extend(merger.take_merged());
        if batch.len() >= SECTION_BATCH {
            // Waits while the section's builder is a few batches behind; an error means
            // it stopped, and its own error is reported by `finish`.
            feed.send(std::mem::take(&mut batch))
                .map_err(|_| builder_stopped())?;
        }
    }
    drop(inputs);
    if !batch.is_empty() {
        feed.send(batch).map_err(|_| builder_stopped())?;
    }
    let (last, merged) = merger.finish()?;
    chunk.extend_from_slice(&last);
    out.blocking_send(chunk).map_err(|_| stopped())?;
    Ok((merged, bytes_read))
}

/// The output's search section, built on a thread of its own from the merged traces it
/// is fed, its pages spilled to a scratch file as they seal.
struct SectionTask {
    feed: SyncSender<Vec<MergedTrace>>,
    done: JoinHandle<Result<(Option<SectionParts>, std::fs::File), CompactError>>,
}

impl SectionTask {
    fn start(mut spill: std::fs::File) -> Self {
        let (feed, batches) = std::sync::mpsc::sync_channel::<Vec<MergedTrace>>(4);
        let done = tokio::task::spawn_blocking(move || {
            let mut writer = SectionWriter::new();
            for batch in batches {
                for (id, entries) in &batch {
                    writer.add(&SearchTrace::decode(*id, entries.iter().map(|e| &e[..])))?;
                }
                spill.write_all(&writer.take_pages())?;
            }
            Ok((writer.finish_parts()?, spill))
        });
        Self { feed, done }
    }

    /// Ends the feed and waits for the section: its parts and the spill file.
    async fn finish(self) -> Result<(Option<SectionParts>, std::fs::File), CompactError> {
        drop(self.feed);
        self.done
            .await
            .map_err(|e| CompactError::Task(e.to_string()))?
    }
}

/// The trace IDs a merge takes: from `from` (inclusive) to `to` (exclusive); `None`:
/// unbounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IdRange {
    from: Option<TraceId>,
    to: Option<TraceId>,
}

impl IdRange {
    const ALL: IdRange = IdRange {
        from: None,
        to: None,
    };

    /// Part `index` of the ranges `bounds` (ascending) separate; `None` past the last.
    fn part(bounds: &[TraceId], index: u32) -> Option<IdRange> {
        let i = index as usize;
        (i <= bounds.len()).then(|| IdRange {
            from: i.checked_sub(1).map(|j| bounds[j]),
            to: bounds.get(i).copied(),
        })
    }

    pub(crate) fn contains(&self, id: &TraceId) -> bool {
        self.from.is_none_or(|f| *id >= f) && self.to.is_none_or(|t| *id < t)
    }

    /// Whether a page holding `first..=last` may hold IDs of the range.
    fn overlaps(&self, first: &TraceId, last: &TraceId) -> bool {
        self.from.is_none_or(|f| *last >= f) && self.to.is_none_or(|t| *first < t)
    }
}

/// Where to split the inputs' trace IDs into `count` ranges of about equal stored bytes,
/// from their pages (first ID, stored length): ascending, distinct, at most `count - 1`
/// (fewer when the pages start at fewer distinct IDs). Every merge of the same inputs
/// computes the same points, whatever the IDs' distribution.
pub(crate) fn split_points(
    pages: impl Iterator<Item = (TraceId, u32)>,
    count: u32,
) -> Vec<TraceId> {
    let mut pages: Vec<(TraceId, u64)> = pages.map(|(id, len)| (id, u64::from(len))).collect();
    pages.sort();
    let total: u64 = pages.iter().map(|(_, len)| len).sum();
    let Some(&(lowest, _)) = pages.first() else {
        return Vec::new();
    };
    let count = u64::from(count.max(1));
    let mut bounds: Vec<TraceId> = Vec::new();
    let mut before = 0u64;
    let mut next = 1u64;
    for (first, len) in pages {
        // A page starting where the bytes before it reach the next share begins a range.
        if next < count && before >= total * next / count {
            if first > lowest && bounds.last() != Some(&first) {
                bounds.push(first);
            }
            while next < count && before >= total * next / count {
                next += 1;
            }
        }
        before += len;
    }
    bounds
}

/// Fails, deleting the merge's output, if an input's meta is gone.
async fn inputs_present(store: &BlockStore, merge: &Merge) -> Result<(), CompactError> {
    for id in &merge.inputs {
        match store.read_meta(&merge.tenant, id).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {
                store.delete_block(&merge.tenant, &merge.output).await?;
                return Err(CompactError::InputDeleted(id.clone()));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Uploads a section: its start, the pages spilled, then the rest. Returns its size.
async fn upload_section(
    mut upload: ObjectUpload,
    head: &[u8],
    spill: std::fs::File,
    rest: &[u8],
) -> Result<u64, CompactError> {
    let written = async {
        upload.write(head).await?;
        let mut file = tokio::fs::File::from_std(spill);
        file.seek(SeekFrom::Start(0)).await?;
        let mut total = (head.len() + rest.len()) as u64;
        let mut buf = vec![0u8; 8 << 20];
        loop {
            let n = file.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            upload.write(&buf[..n]).await?;
            total += n as u64;
        }
        upload.write(rest).await?;
        Ok::<_, CompactError>(total)
    }
    .await;
    match written {
        Ok(total) => {
            upload.finish().await?;
            Ok(total)
        }
        Err(e) => {
            upload.abort().await;
            Err(e)
        }
    }
}

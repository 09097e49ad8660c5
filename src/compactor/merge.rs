//! Merging blocks (pure): the inputs' traces in ID order, each trace's copies made one,
//! written page by page into one block. The merge is fed one page per input at a time,
//! so memory holds a page per input and the output's current page, whatever the inputs'
//! sizes. The merged traces are handed out too ([`Merger::take_merged`]), for the
//! output's search section to be built beside the merge, once per trace.

use std::collections::HashSet;

use bytes::Bytes;

use crate::model::TraceId;
use crate::storage::block::{BlockError, BlockInfo, BlockTail, BlockWriter, ZSTD_LEVEL};

#[derive(Debug, thiserror::Error)]
pub(crate) enum MergeError {
    #[error(transparent)]
    Block(#[from] BlockError),
}

/// A merged trace: its ID and its entries, each once.
pub(crate) type MergedTrace = (TraceId, Vec<Bytes>);

/// The entries of a trace's copies, each once. A copy is `TracesData.resource_spans`
/// fields (as blocks store a trace); the replicas of a push received the same bytes, so
/// an entry byte-identical to one kept adds nothing. A copy that does not parse as such
/// fields is kept whole: nothing is dropped that is not surely a duplicate.
pub(crate) fn dedupe<'a>(copies: &[&'a [u8]]) -> Vec<&'a [u8]> {
    if copies.len() == 1 {
        return copies.to_vec();
    }
    let mut seen = HashSet::new();
    let mut kept = Vec::new();
    for copy in copies {
        match entries(copy) {
            Some(list) => {
                for e in list {
                    if seen.insert(xxhash_rust::xxh3::xxh3_128(e)) {
                        kept.push(e);
                    }
                }
            }
            None => {
                if seen.insert(xxhash_rust::xxh3::xxh3_128(copy)) {
                    kept.push(*copy);
                }
            }
        }
    }
    kept
}

/// A copy's length-delimited fields, each with its tag and length (`None`: it is not a
/// sequence of them).
fn entries(mut bytes: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (tag, n) = varint(bytes)?;
        if tag & 7 != 2 {
            return None;
        }
        let (len, m) = varint(&bytes[n..])?;
        let end = n.checked_add(m)?.checked_add(usize::try_from(len).ok()?)?;
        if end > bytes.len() {
            return None;
        }
        out.push(&bytes[..end]);
        bytes = &bytes[end..];
    }
    Some(out)
}

fn varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// `entry` (a slice of one of `copies`) as a `Bytes` sharing that copy's buffer.
fn sliced(copies: &[Bytes], entry: &[u8]) -> Bytes {
    copies
        .iter()
        .find(|c| c.as_ptr_range().contains(&entry.as_ptr()))
        .map_or_else(|| Bytes::copy_from_slice(entry), |c| c.slice_ref(entry))
}

/// One input's traces in hand: its current page, and where the merge is in it.
#[derive(Default)]
struct Cursor {
    page: Vec<(TraceId, Bytes)>,
    at: usize,
    /// No page left.
    done: bool,
}

impl Cursor {
    fn current(&self) -> Option<TraceId> {
        self.page.get(self.at).map(|(id, _)| *id)
    }
}

/// What a finished merge wrote after its data.
pub(crate) struct Merged {
    pub tail: BlockTail,
    /// Trace copies read from the inputs.
    pub copies: u64,
}

/// A merge of `inputs` block inputs: feed each input's pages in order (`wants`, `feed`),
/// collect the data pages `step` returns, then `finish`.
pub(crate) struct Merger {
    inputs: Vec<Cursor>,
    writer: BlockWriter,
    merged: Vec<MergedTrace>,
    copies: u64,
}

impl Merger {
    pub(crate) fn new(inputs: usize, info: BlockInfo) -> Result<Self, MergeError> {
        Ok(Self {
            inputs: (0..inputs).map(|_| Cursor::default()).collect(),
            writer: BlockWriter::new(info, ZSTD_LEVEL)?,
            merged: Vec::new(),
            copies: 0,
        })
    }

    /// The inputs whose next page the merge needs before it can go on.
    pub(crate) fn wants(&self) -> Vec<usize> {
        self.inputs
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.done && c.current().is_none())
            .map(|(i, _)| i)
            .collect()
    }

    /// Input `input`'s next page (`None`: it has no more).
    pub(crate) fn feed(&mut self, input: usize, page: Option<Vec<(TraceId, Bytes)>>) {
        if let Some(c) = self.inputs.get_mut(input) {
            c.at = 0;
            match page {
                Some(p) => c.page = p,
                None => {
                    c.page = Vec::new();
                    c.done = true;
                }
            }
        }
    }

    /// Merges while every input still going has a trace in hand; returns the data pages
    /// completed meanwhile, to be appended in order.
    pub(crate) fn step(&mut self) -> Result<Vec<Vec<u8>>, MergeError> {
        let mut pages = Vec::new();
        loop {
            if self.inputs.iter().any(|c| !c.done && c.current().is_none()) {
                return Ok(pages);
            }
            let Some(id) = self.inputs.iter().filter_map(Cursor::current).min() else {
                return Ok(pages);
            };
            // An input out of ID order makes the writer refuse the next trace.
            let mut copies: Vec<Bytes> = Vec::new();
            for c in &mut self.inputs {
                while c.current() == Some(id) {
                    copies.push(c.page[c.at].1.clone());
                    c.at += 1;
                }
            }
            self.copies += copies.len() as u64;
            let refs: Vec<&[u8]> = copies.iter().map(|c| &c[..]).collect();
            let kept = dedupe(&refs);
            if let Some(page) = self.writer.push(id, &kept)? {
                pages.push(page);
            }
            let entries = kept.iter().map(|e| sliced(&copies, e)).collect();
            self.merged.push((id, entries));
        }
    }

    /// The traces merged since the last call, in ID order.
    pub(crate) fn take_merged(&mut self) -> Vec<MergedTrace> {
        std::mem::take(&mut self.merged)
    }

    /// The last data page and what follows the data.
    pub(crate) fn finish(self) -> Result<(Vec<u8>, Merged), MergeError> {
        let (last, tail) = self.writer.finish()?;
        Ok((
            last,
            Merged {
                tail,
                copies: self.copies,
            },
        ))
    }
}

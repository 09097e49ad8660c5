//! The block format (version 1). Pure: bytes in, bytes out.
//!
//! A block is four objects under `<tenant>/<block id>/`:
//!
//! - `data`: pages, each zstd-compressed; a page holds whole traces, sorted by trace ID,
//!   each as `trace id (16) ‖ len (u32 LE) ‖ bytes` where the bytes are
//!   `TracesData.resource_spans` fields (as ingesters store them);
//! - `index`: `"RTIX" ‖ version (u8) ‖ page count (u32 LE)` then, per page,
//!   `first id (16) ‖ last id (16) ‖ offset (u64 LE) ‖ length (u32 LE) ‖ traces (u32 LE)`;
//! - `filter`: a binary fuse filter (xorf `BinaryFuse8`) over `xxh3(trace id)`, encoded as
//!   its descriptor, a CRC and the fingerprints (see `encode_filter`);
//! - `meta.json`: [`BlockMeta`], written **last**: a block without it is not visible.
//!
//! A lookup is filter → index (binary search on the pages' ID ranges) → one page read
//! with a range request → decompress → scan. The meta carries what a compactor needs to
//! merge blocks later (tenant, level, ID and time ranges, sizes, source ingester).

use std::collections::{HashMap, HashSet};

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use xorf::{BinaryFuse8, Filter};
use xxhash_rust::xxh3::xxh3_64;

use crate::model::TraceId;

pub const FORMAT_VERSION: u32 = 1;
/// Uncompressed bytes per page before a new page starts.
pub const PAGE_BYTES: usize = 256 * 1024;
const INDEX_MAGIC: &[u8; 4] = b"RTIX";
const INDEX_ENTRY: usize = 16 + 16 + 8 + 4 + 4;
/// zstd level of the pages of blocks the store keeps: merged blocks, and blocks written
/// through [`encode`].
pub const ZSTD_LEVEL: i32 = 3;
/// zstd level of an ingester's level-0 blocks: the compactor replaces them with a merged
/// block within hours, while every replica pays for their compression on the write path.
/// -1 (zstd's fastest strategy with a little acceleration) against 1: 10% less time for
/// 1.6% more bytes (`cargo bench --bench block`: 8.8 against 9.8 ms, 26.0 against 25.6
/// bytes per span); -3 was 24% faster but 26% larger.
pub const LEVEL0_ZSTD_LEVEL: i32 = -1;

#[derive(Debug, Error)]
pub enum BlockError {
    #[error("block {what} is malformed: {why}")]
    Malformed { what: &'static str, why: String },
    #[error("unsupported block format version {0}")]
    Version(u32),
    #[error("compression failed: {0}")]
    Compression(#[from] std::io::Error),
}

fn malformed(what: &'static str, why: impl Into<String>) -> BlockError {
    BlockError::Malformed {
        what,
        why: why.into(),
    }
}

/// `meta.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockMeta {
    pub format_version: u32,
    pub tenant: String,
    pub block_id: String,
    /// The ingester that cut it (compactors write their own name).
    pub ingester: String,
    /// 0 for blocks cut by ingesters; compactors increase it.
    pub compaction_level: u32,
    pub min_trace_id: String,
    pub max_trace_id: String,
    /// Earliest span start and latest span end, ns since the epoch (0 when unknown).
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub total_traces: u64,
    pub data_pages: u32,
    pub data_bytes: u64,
    pub index_bytes: u64,
    pub filter_bytes: u64,
    /// When the block was cut, seconds since the epoch.
    pub created_unix_secs: u64,
    /// The version of its `search` object (0: the block has none; searches read `data`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub search_version: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub search_bytes: u64,
    /// The blocks this one replaces (a compactor's merge): readers skip those once this
    /// one is visible.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
    /// A merge that wrote its output as several blocks, each a range of trace IDs, says
    /// how many in each of them (0: one block). Those blocks replace their `sources` only
    /// together: until all of them are listed, readers read the sources and none of them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub parts: u32,
}

fn is_zero<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// The listed blocks that are parts of a merge whose other parts are not all listed
/// yet (being written, or a crash's leftovers its retry rewrites): nobody reads them.
pub fn pending_ids<'a>(metas: impl IntoIterator<Item = &'a BlockMeta> + Clone) -> HashSet<&'a str> {
    let mut listed: HashMap<&[String], u32> = HashMap::new();
    for m in metas.clone().into_iter().filter(|m| m.parts > 1) {
        *listed.entry(&m.sources[..]).or_default() += 1;
    }
    metas
        .into_iter()
        .filter(|m| m.parts > 1 && listed.get(&m.sources[..]).copied().unwrap_or(0) < m.parts)
        .map(|m| m.block_id.as_str())
        .collect()
}

/// The IDs of the blocks that listed blocks replace (their `sources`; a merge written as
/// several parts only once every part is listed).
pub fn replaced_ids<'a>(
    metas: impl IntoIterator<Item = &'a BlockMeta> + Clone,
) -> HashSet<&'a str> {
    let pending = pending_ids(metas.clone());
    metas
        .into_iter()
        .filter(|m| !pending.contains(m.block_id.as_str()))
        .flat_map(|m| m.sources.iter().map(String::as_str))
        .collect()
}

/// The blocks a reader reads: those no listed block replaces, without the parts of a
/// merge not all listed yet. Once a merge's output is visible its inputs are skipped, so
/// no trace is counted from both.
pub fn without_replaced(metas: Vec<BlockMeta>) -> Vec<BlockMeta> {
    let hidden: HashSet<String> = replaced_ids(&metas)
        .into_iter()
        .chain(pending_ids(&metas))
        .map(str::to_owned)
        .collect();
    metas
        .into_iter()
        .filter(|m| !hidden.contains(&m.block_id))
        .collect()
}

/// A trace to put in a block.
#[derive(Clone)]
pub struct BlockTrace {
    pub id: TraceId,
    pub data: Bytes,
}

/// The encoded objects of a block.
pub struct EncodedBlock {
    pub data: Bytes,
    pub index: Bytes,
    pub filter: Bytes,
    /// The search section (opaque here: its format is the searcher's, versioned in the
    /// meta), when the writer built one.
    pub search: Option<Bytes>,
    pub meta: BlockMeta,
}

impl EncodedBlock {
    /// Attaches a search section of format `version`.
    pub fn with_search(mut self, section: Bytes, version: u32) -> Self {
        self.meta.search_version = version;
        self.meta.search_bytes = section.len() as u64;
        self.search = Some(section);
        self
    }
}

/// Identity and time range of a block being built.
pub struct BlockInfo {
    pub tenant: String,
    pub block_id: String,
    pub ingester: String,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub created_unix_secs: u64,
}

struct PageEntry {
    first: TraceId,
    last: TraceId,
    offset: u64,
    len: u32,
    traces: u32,
}

/// Encodes a block. Traces with the same ID are merged (their bytes concatenated).
pub fn encode(mut traces: Vec<BlockTrace>, info: BlockInfo) -> Result<EncodedBlock, BlockError> {
    traces.sort_by_key(|t| t.id);
    encode_sorted(&traces, info, ZSTD_LEVEL)
}

/// [`encode`] of traces already sorted by ID, its pages compressed at zstd `level`.
pub fn encode_sorted(
    traces: &[BlockTrace],
    info: BlockInfo,
    level: i32,
) -> Result<EncodedBlock, BlockError> {
    debug_assert!(traces.windows(2).all(|w| w[0].id <= w[1].id));
    let mut writer = BlockWriter::new(info, level)?;
    // Stored data has measured 3-10x smaller than its spans (BENCHMARKS.md): reserve for
    // the least compression seen; the spare capacity lives only until the block is written.
    let raw: usize = traces.iter().map(|t| t.data.len()).sum();
    let mut data = Vec::with_capacity(raw / 3);
    let mut i = 0;
    // One trace's parts, the vector reused from trace to trace (not an allocation each).
    let mut chunks: Vec<&[u8]> = Vec::new();
    while i < traces.len() {
        let id = traces[i].id;
        let j = i + traces[i..].iter().take_while(|t| t.id == id).count();
        chunks.clear();
        chunks.extend(traces[i..j].iter().map(|t| &t.data[..]));
        if writer.add(id, &chunks)? {
            writer.seal_into(&mut data)?;
        }
        i = j;
    }
    let tail = writer.finish_into(&mut data)?;
    Ok(EncodedBlock {
        data: data.into(),
        index: tail.index,
        filter: tail.filter,
        search: None,
        meta: tail.meta,
    })
}

/// A block's data written trace by trace in ID order, a compressed page at a time: what
/// a merge streams out without holding the whole block.
pub struct BlockWriter {
    info: BlockInfo,
    page: Vec<u8>,
    pages: Vec<PageEntry>,
    offset: u64,
    first: Option<TraceId>,
    min: Option<TraceId>,
    last: TraceId,
    in_page: u32,
    keys: Vec<u64>,
    /// One zstd context for every page (a fresh one per page costs an allocation of
    /// about a megabyte, zeroed).
    zstd: zstd::bulk::Compressor<'static>,
    compressed: Vec<u8>,
}

/// What follows a block's data: its index, filter and meta.
pub struct BlockTail {
    pub index: Bytes,
    pub filter: Bytes,
    pub meta: BlockMeta,
}

impl BlockWriter {
    /// A writer whose pages are compressed at zstd `level`.
    pub fn new(info: BlockInfo, level: i32) -> Result<Self, BlockError> {
        Ok(Self {
            info,
            page: Vec::with_capacity(PAGE_BYTES + 4096),
            pages: Vec::new(),
            offset: 0,
            first: None,
            min: None,
            last: TraceId([0; 16]),
            in_page: 0,
            keys: Vec::new(),
            zstd: zstd::bulk::Compressor::new(level)?,
            compressed: Vec::new(),
        })
    }

    /// Adds a trace (IDs in ascending order, each once) whose bytes are `chunks`
    /// concatenated. Returns a compressed page when one is full: the caller writes it at
    /// the end of the data so far.
    pub fn push(&mut self, id: TraceId, chunks: &[&[u8]]) -> Result<Option<Vec<u8>>, BlockError> {
        if !self.add(id, chunks)? {
            return Ok(None);
        }
        let mut page = Vec::new();
        self.seal_into(&mut page)?;
        Ok(Some(page))
    }

    /// [`BlockWriter::push`] without the page: returns whether the page is full, and
    /// then [`BlockWriter::seal_into`] must follow.
    fn add(&mut self, id: TraceId, chunks: &[&[u8]]) -> Result<bool, BlockError> {
        if self.min.is_some() && id <= self.last {
            return Err(malformed("input", "trace IDs out of order"));
        }
        let len: usize = chunks.iter().map(|c| c.len()).sum();
        let len32 =
            u32::try_from(len).map_err(|_| malformed("input", "trace larger than 4 GiB"))?;
        self.page.extend_from_slice(&id.0);
        self.page.extend_from_slice(&len32.to_le_bytes());
        for c in chunks {
            self.page.extend_from_slice(c);
        }
        self.keys.push(xxh3_64(&id.0));
        self.first.get_or_insert(id);
        self.min.get_or_insert(id);
        self.last = id;
        self.in_page += 1;
        Ok(self.page.len() >= PAGE_BYTES)
    }

    /// Data bytes written so far (sealed pages).
    pub fn data_bytes(&self) -> u64 {
        self.offset
    }

    /// Compresses the page and appends it to `out`.
    fn seal_into(&mut self, out: &mut Vec<u8>) -> Result<(), BlockError> {
        let compressed = &mut self.compressed;
        compressed.clear();
        compressed.reserve(zstd::zstd_safe::compress_bound(self.page.len()));
        self.zstd.compress_to_buffer(&self.page, compressed)?;
        out.extend_from_slice(compressed);
        self.pages.push(PageEntry {
            first: self.first.take().unwrap_or(self.last),
            last: self.last,
            offset: self.offset,
            len: compressed.len() as u32,
            traces: self.in_page,
        });
        self.offset += compressed.len() as u64;
        self.page.clear();
        self.in_page = 0;
        Ok(())
    }

    /// The last page (empty when the data ended on a full one) and what follows the data.
    pub fn finish(self) -> Result<(Vec<u8>, BlockTail), BlockError> {
        let mut last = Vec::new();
        let tail = self.finish_into(&mut last)?;
        Ok((last, tail))
    }

    /// [`BlockWriter::finish`] with the last page appended to `out`.
    fn finish_into(mut self, out: &mut Vec<u8>) -> Result<BlockTail, BlockError> {
        let Some(min) = self.min else {
            return Err(malformed("input", "a block needs at least one trace"));
        };
        if self.in_page > 0 {
            self.seal_into(out)?;
        }
        let mut index = BytesMut::with_capacity(9 + self.pages.len() * INDEX_ENTRY);
        index.put_slice(INDEX_MAGIC);
        index.put_u8(FORMAT_VERSION as u8);
        index.put_u32_le(self.pages.len() as u32);
        for p in &self.pages {
            index.put_slice(&p.first.0);
            index.put_slice(&p.last.0);
            index.put_u64_le(p.offset);
            index.put_u32_le(p.len);
            index.put_u32_le(p.traces);
        }
        self.keys.sort_unstable();
        self.keys.dedup();
        let filter = encode_keys(&self.keys)?;
        let info = self.info;
        let meta = BlockMeta {
            format_version: FORMAT_VERSION,
            tenant: info.tenant,
            block_id: info.block_id,
            ingester: info.ingester,
            compaction_level: 0,
            min_trace_id: min.to_hex(),
            max_trace_id: self.last.to_hex(),
            start_unix_nano: info.start_unix_nano,
            end_unix_nano: info.end_unix_nano,
            total_traces: self.keys.len() as u64,
            data_pages: self.pages.len() as u32,
            data_bytes: self.offset,
            index_bytes: index.len() as u64,
            filter_bytes: filter.len() as u64,
            created_unix_secs: info.created_unix_secs,
            search_version: 0,
            search_bytes: 0,
            sources: Vec::new(),
            parts: 0,
        };
        Ok(BlockTail {
            index: index.freeze(),
            filter: Bytes::from(filter),
            meta,
        })
    }
}

const FILTER_MAGIC: &[u8; 4] = b"RTBF";
const FILTER_HEADER: usize = 4 + 8 + 4 + 4 + 4 + 4;

/// `"RTBF" ‖ seed (u64) ‖ segment length ‖ mask ‖ segment count length (u32s) ‖
/// crc32(fingerprints) ‖ fingerprints`, all little-endian.
fn encode_filter(f: &BinaryFuse8) -> Vec<u8> {
    let d = &f.descriptor;
    let mut out = Vec::with_capacity(FILTER_HEADER + f.fingerprints.len());
    out.extend_from_slice(FILTER_MAGIC);
    out.extend_from_slice(&d.seed.to_le_bytes());
    out.extend_from_slice(&d.segment_length.to_le_bytes());
    out.extend_from_slice(&d.segment_length_mask.to_le_bytes());
    out.extend_from_slice(&d.segment_count_length.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&f.fingerprints).to_le_bytes());
    out.extend_from_slice(&f.fingerprints);
    out
}

/// A filter over `u64` keys (`encode_keys`): no false negatives, ~0.4% false positives.
pub struct KeyFilter(BinaryFuse8);

/// Encodes a filter over `keys` (sorted and distinct).
pub fn encode_keys(keys: &[u64]) -> Result<Vec<u8>, BlockError> {
    // An empty filter cannot be built; one key that nobody asks for stands in.
    let keys = if keys.is_empty() { &[0][..] } else { keys };
    let filter = BinaryFuse8::try_from(keys).map_err(|e| malformed("filter", e))?;
    Ok(encode_filter(&filter))
}

impl KeyFilter {
    /// Decodes and validates a filter: a corrupt one is an error, never a panic later.
    pub fn decode(bytes: &[u8]) -> Result<Self, BlockError> {
        if bytes.len() < FILTER_HEADER || &bytes[..4] != FILTER_MAGIC {
            return Err(malformed("filter", "bad magic"));
        }
        let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap_or_default());
        let seed = u64::from_le_bytes(bytes[4..12].try_into().unwrap_or_default());
        let (segment_length, segment_length_mask, segment_count_length) =
            (u32_at(12), u32_at(16), u32_at(20));
        let fingerprints = &bytes[FILTER_HEADER..];
        let fits = segment_length.is_power_of_two()
            && segment_length_mask == segment_length - 1
            && (segment_count_length as usize) + 2 * (segment_length as usize)
                <= fingerprints.len();
        if !fits || crc32fast::hash(fingerprints) != u32_at(24) {
            return Err(malformed("filter", "geometry or checksum does not match"));
        }
        Ok(KeyFilter(BinaryFuse8 {
            descriptor: xorf::Descriptor {
                seed,
                segment_length,
                segment_length_mask,
                segment_count_length,
            },
            fingerprints: fingerprints.into(),
        }))
    }

    /// False means the key surely was not among those encoded.
    pub fn contains_key(&self, key: u64) -> bool {
        self.0.contains(&key)
    }
}

/// A block's filter over its trace IDs.
pub struct TraceFilter(KeyFilter);

impl TraceFilter {
    pub fn decode(bytes: &[u8]) -> Result<Self, BlockError> {
        KeyFilter::decode(bytes).map(TraceFilter)
    }

    /// False means the block surely lacks the trace (~0.4% false positives).
    pub fn may_contain(&self, id: &TraceId) -> bool {
        self.0.contains_key(xxh3_64(&id.0))
    }
}

/// A decoded page index.
pub struct PageIndex {
    pages: Vec<PageEntry>,
}

/// Where a page lies in the `data` object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRange {
    pub offset: u64,
    pub len: u32,
}

impl PageIndex {
    /// Where each page lies in `data`, in order.
    pub fn ranges(&self) -> impl Iterator<Item = PageRange> + '_ {
        self.pages.iter().map(|p| PageRange {
            offset: p.offset,
            len: p.len,
        })
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, BlockError> {
        if bytes.len() < 9 || &bytes[..4] != INDEX_MAGIC {
            return Err(malformed("index", "bad magic"));
        }
        if u32::from(bytes[4]) != FORMAT_VERSION {
            return Err(BlockError::Version(u32::from(bytes[4])));
        }
        let count = u32::from_le_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) as usize;
        let body = &bytes[9..];
        if body.len() != count * INDEX_ENTRY {
            return Err(malformed(
                "index",
                format!("{} bytes for {count} pages", body.len()),
            ));
        }
        let id = |b: &[u8]| {
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            TraceId(a)
        };
        let pages = body
            .chunks_exact(INDEX_ENTRY)
            .map(|e| PageEntry {
                first: id(&e[0..16]),
                last: id(&e[16..32]),
                offset: u64::from_le_bytes(e[32..40].try_into().unwrap_or_default()),
                len: u32::from_le_bytes(e[40..44].try_into().unwrap_or_default()),
                traces: u32::from_le_bytes(e[44..48].try_into().unwrap_or_default()),
            })
            .collect();
        Ok(Self { pages })
    }

    /// The page that would hold `id`, if any page's ID range covers it.
    pub fn find(&self, id: &TraceId) -> Option<PageRange> {
        let i = self.pages.partition_point(|p| p.last < *id);
        let p = self.pages.get(i)?;
        (p.first <= *id).then_some(PageRange {
            offset: p.offset,
            len: p.len,
        })
    }

    pub fn traces(&self) -> u64 {
        self.pages.iter().map(|p| u64::from(p.traces)).sum()
    }

    /// Each page's first and last trace ID and where it lies, in order.
    pub fn pages(&self) -> impl Iterator<Item = (TraceId, TraceId, PageRange)> + '_ {
        self.pages.iter().map(|p| {
            let range = PageRange {
                offset: p.offset,
                len: p.len,
            };
            (p.first, p.last, range)
        })
    }
}

/// Finds a trace's bytes in a compressed page.
pub fn find_in_page(page: &[u8], id: &TraceId) -> Result<Option<Bytes>, BlockError> {
    let raw = zstd::stream::decode_all(page)?;
    let mut pos = 0;
    while pos + 20 <= raw.len() {
        let len =
            u32::from_le_bytes(raw[pos + 16..pos + 20].try_into().unwrap_or_default()) as usize;
        let end = pos + 20 + len;
        if end > raw.len() {
            return Err(malformed("data", "record runs past its page"));
        }
        if raw[pos..pos + 16] == id.0 {
            return Ok(Some(Bytes::copy_from_slice(&raw[pos + 20..end])));
        }
        pos = end;
    }
    Ok(None)
}

/// The traces of one compressed page, in order (what a merge reads): a record that runs
/// past its page is an error.
pub fn decode_page(page: &[u8]) -> Result<Vec<(TraceId, Bytes)>, BlockError> {
    let raw = Bytes::from(zstd::stream::decode_all(page)?);
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < raw.len() {
        let head = raw
            .get(pos..pos + 20)
            .ok_or_else(|| malformed("data", "record header runs past its page"))?;
        let mut id = [0u8; 16];
        id.copy_from_slice(&head[..16]);
        let len = u32::from_le_bytes([head[16], head[17], head[18], head[19]]) as usize;
        let end = pos + 20 + len;
        if end > raw.len() {
            return Err(malformed("data", "record runs past its page"));
        }
        out.push((TraceId(id), raw.slice(pos + 20..end)));
        pos = end;
    }
    Ok(out)
}

/// Every trace of a block's data, in order (for a search of a block without a section).
pub fn decode_all(data: &[u8], index: &PageIndex) -> Result<Vec<(TraceId, Bytes)>, BlockError> {
    let mut out = Vec::new();
    for p in &index.pages {
        let start = p.offset as usize;
        let end = start + p.len as usize;
        let page = data
            .get(start..end)
            .ok_or_else(|| malformed("data", "page beyond the object"))?;
        let raw = Bytes::from(zstd::stream::decode_all(page)?);
        let mut pos = 0;
        while pos + 20 <= raw.len() {
            let mut id = [0u8; 16];
            id.copy_from_slice(&raw[pos..pos + 16]);
            let len =
                u32::from_le_bytes(raw[pos + 16..pos + 20].try_into().unwrap_or_default()) as usize;
            let end = (pos + 20 + len).min(raw.len());
            out.push((TraceId(id), raw.slice(pos + 20..end)));
            pos = end;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;

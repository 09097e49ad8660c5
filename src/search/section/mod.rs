//! A block's search section (the `search` object, version 2): what TraceQL and the tag
//! APIs read, per trace, in a columnar, dictionary-encoded, zstd-compressed layout that
//! lets a query skip pages before decoding a span. Written when a block is completed
//! (from the same decode a search of the records does); blocks without it are searched
//! through their data (slower), never refused. Pure: bytes in, bytes out.
//!
//! ```text
//! "RTSS" ‖ version (u8) ‖ header length (u32 LE) ‖ header (zstd) ‖ pages (each zstd)
//! header: page count, then per page (varints): offset from the first page, length,
//!         traces, min trace start, max trace end, min and max span duration, min and
//!         max trace duration, then its term filter (length ‖ `block::encode_keys`);
//!         then (version 2; version 1 ends before it) the block's tag table (`tags`).
//! page:   a string dictionary (count, lengths, bytes), then columns (each: length ‖
//!         bytes), see `Col`.
//! ```
//!
//! A page's terms are hashes of what an equality or presence test asks for: each
//! `(scope, key)` an attribute has, each `(scope, key, string value)`, each span name.
//! [`may_match`] tells from them and the page's ranges whether a query can select
//! anything there; a false answer is always right (the filter has no false negatives),
//! a true one is confirmed by evaluating the decoded traces.

mod prune;
mod read;
mod tags;
mod write;

#[cfg(test)]
mod tests;

pub(crate) use read::{decode_page, inflate_page, SectionIndex};
pub(crate) use tags::{Lookup, Owner, TableValue, TagTable};
pub(crate) use write::{SectionParts, SectionWriter};

use xxhash_rust::xxh3::{xxh3_128, xxh3_64};

use super::model::SearchTrace;
use crate::model::TraceId;
use crate::traceql::ast::Scope;

/// The version written; [`readable`] tells which are read.
pub(crate) const VERSION: u32 = 2;
const MAGIC: &[u8; 4] = b"RTSS";
/// Magic, version and header length: what tells how long the header is.
pub(crate) const HEAD_PREFIX: usize = 9;

/// Whether sections of `version` (a block meta's `search_version`) are read: 1 (no tag
/// table) and 2. Others (0: none; newer: unknown) are searched through the data.
pub(crate) fn readable(version: u32) -> bool {
    (1..=VERSION).contains(&version)
}
/// Traces per page: small enough that a selective query skips most of a block, large
/// enough that a page's dictionary and filter pay for themselves.
const PAGE_TRACES: usize = 512;
const ZSTD_LEVEL: i32 = 1;

#[derive(Debug, thiserror::Error)]
#[error("search section is malformed: {0}")]
pub(crate) struct SectionError(&'static str);

/// Columns of a page, in order.
#[derive(Clone, Copy)]
enum Col {
    TraceId,   // 16 bytes each
    TraceHead, // start, end - start, resources, spans, attributes (varints)
    Resource,  // attribute from, count, service (string id + 1, 0: none)
    SpanId,    // length ‖ bytes
    Span, // resource, name, kind * 8 + status * 2 + root, message, start - trace start, zigzag(end - start), attribute from, count
    AttrKey, // string id
    AttrType, // u8: 0 string, 1 int, 2 float, 3 false, 4 true, 5 other
    AttrStr, // string id
    AttrInt, // zigzag varint
    AttrFloat, // 8 bytes LE
    AttrOther, // length ‖ AnyValue bytes
}
const COLUMNS: usize = 11;

/// What a page holds, for skipping it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PageStats {
    pub traces: u32,
    pub start: u64,
    pub end: u64,
    pub span_duration: (u64, u64),
    pub trace_duration: (u64, u64),
}

fn scope_byte(scope: Scope) -> u8 {
    match scope {
        Scope::Resource => b'r',
        Scope::Span => b's',
        Scope::Any => b'a',
    }
}

/// A term from its kind and the hashes of its strings (each string is hashed once; the
/// hashes are good already, so a multiply-xorshift mix combines them).
fn term(kind: u8, a: u64, b: u64) -> u64 {
    let mut x = a ^ b.rotate_left(29) ^ (u64::from(kind) << 56) ^ 0x9e37_79b9_7f4a_7c15;
    x = (x ^ (x >> 32)).wrapping_mul(0xd6e8_feb8_6659_fd93);
    x ^ (x >> 32)
}

fn key_term(scope: Scope, key: u64) -> u64 {
    term(scope_byte(scope), key, 0)
}

fn value_term(scope: Scope, key: u64, value: u64) -> u64 {
    term(scope_byte(scope).to_ascii_uppercase(), key, value)
}

fn name_term(name: u64) -> u64 {
    term(b'n', name, 0)
}

/// `hash("")`, for the empty strings (most status messages) that skip the dictionary.
const EMPTY_HASH: u64 = 0x6001_c324_468d_497f;

/// The hash a string's terms are made of (as the writer's dictionary computes it).
fn hash(s: &str) -> u64 {
    xxh3_128(s.as_bytes()) as u64
}

/// A hasher for keys that are hashes already.
#[derive(Clone, Copy, Default)]
struct Prehashed;

impl std::hash::BuildHasher for Prehashed {
    type Hasher = PrehashedHasher;
    fn build_hasher(&self) -> PrehashedHasher {
        PrehashedHasher(0)
    }
}

struct PrehashedHasher(u64);

impl std::hash::Hasher for PrehashedHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed with it; anything else still spreads.
        self.0 = xxh3_64(bytes);
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    #[inline]
    fn varint(&mut self) -> Result<u64, SectionError> {
        let mut v = 0u64;
        for (i, &b) in self.buf.iter().enumerate().take(10) {
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                self.buf = &self.buf[i + 1..];
                return Ok(v);
            }
        }
        Err(SectionError("truncated varint"))
    }

    fn string(&mut self) -> Result<&'a str, SectionError> {
        let n = self.varint()? as usize;
        std::str::from_utf8(self.bytes(n)?).map_err(|_| SectionError("string"))
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], SectionError> {
        if n > self.buf.len() {
            return Err(SectionError("truncated"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
}

/// The search section of a block's traces (sorted by ID; several records of one trace
/// are decoded together), or `None` for no traces.
pub(crate) fn build(
    traces: &[crate::storage::block::BlockTrace],
) -> Result<Option<Vec<u8>>, SectionError> {
    writer_of(traces)?.finish()
}

/// The search section of some of a block's traces (sorted by ID), also when that is none
/// of them: an empty section tells a search that nothing here is to be found (without a
/// section it would read the block's data instead).
pub(crate) fn build_even_empty(
    traces: &[crate::storage::block::BlockTrace],
) -> Result<Vec<u8>, SectionError> {
    writer_of(traces)?.finish_even_empty()
}

fn writer_of(traces: &[crate::storage::block::BlockTrace]) -> Result<SectionWriter, SectionError> {
    let mut writer = SectionWriter::new();
    let mut trace = SearchTrace::empty(TraceId([0; 16]));
    for group in traces.chunk_by(|a, b| a.id == b.id) {
        // One trace's buffers serve every trace.
        trace.decode_again(group[0].id, group.iter().map(|t| &t.data[..]));
        writer.add(&trace)?;
    }
    Ok(writer)
}

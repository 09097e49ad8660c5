//! A block's search section (the `search` object, version 1): what TraceQL and the tag
//! APIs read, per trace, in a columnar, dictionary-encoded, zstd-compressed layout that
//! lets a query skip pages before decoding a span. Written when a block is completed
//! (from the same decode a search of the records does); blocks without it are searched
//! through their data (slower), never refused. Pure: bytes in, bytes out.
//!
//! ```text
//! "RTSS" ‖ version (u8) ‖ header length (u32 LE) ‖ header (zstd) ‖ pages (each zstd)
//! header: page count, then per page (varints): offset from the first page, length,
//!         traces, min trace start, max trace end, min and max span duration, min and
//!         max trace duration, then its term filter (length ‖ `block::encode_keys`).
//! page:   a string dictionary (count, lengths, bytes), then columns (each: length ‖
//!         bytes), see `Col`.
//! ```
//!
//! A page's terms are hashes of what an equality or presence test asks for: each
//! `(scope, key)` an attribute has, each `(scope, key, string value)`, each span name.
//! [`may_match`] tells from them and the page's ranges whether a query can select
//! anything there; a false answer is always right (the filter has no false negatives),
//! a true one is confirmed by evaluating the decoded traces.

use std::collections::HashMap;

use xxhash_rust::xxh3::{xxh3_128, xxh3_64};

use super::model::{Attr, AttrValue, Resource, SearchSpan, SearchTrace};
use crate::model::TraceId;
use crate::storage::block::{self, KeyFilter};
use crate::traceql::ast::{Comparison, Expr, Field, Filter, Intrinsic, Kind, Literal, Op, Query};
use crate::traceql::ast::{Scope, Status};

pub(crate) const VERSION: u32 = 1;
const MAGIC: &[u8; 4] = b"RTSS";
/// Traces per page: small enough that a selective query skips most of a block, large
/// enough that a page's dictionary and filter pay for themselves.
const PAGE_TRACES: usize = 512;
const ZSTD_LEVEL: i32 = 3;

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

/// Builds a section from traces given in trace-ID order.
pub(crate) struct SectionWriter {
    pages: Vec<u8>,
    header: Vec<u8>,
    page_count: u64,
    page: PageBuilder,
}

#[derive(Default)]
struct PageBuilder {
    /// `xxh3_128(string)` → its ID: the hash is computed once per occurrence and serves
    /// the terms too; at 128 bits two strings of a page never share one (a collision is
    /// ~2^-100 likely for a page's strings), so a hit is not compared byte by byte.
    strings: HashMap<u128, u64, Prehashed>,
    order: Vec<Box<str>>,
    cols: [Vec<u8>; COLUMNS],
    terms: Vec<u64>,
    /// Scratch: each attribute's scope in the trace being added.
    scopes: Vec<Scope>,
    stats: Option<PageStats>,
}

impl Default for SectionWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl SectionWriter {
    pub(crate) fn new() -> Self {
        Self {
            pages: Vec::new(),
            header: Vec::new(),
            page_count: 0,
            page: PageBuilder::default(),
        }
    }

    pub(crate) fn add(&mut self, trace: &SearchTrace) -> Result<(), SectionError> {
        self.page.add(trace);
        if self
            .page
            .stats
            .as_ref()
            .is_some_and(|s| s.traces as usize >= PAGE_TRACES)
        {
            self.seal_page()?;
        }
        Ok(())
    }

    fn seal_page(&mut self) -> Result<(), SectionError> {
        let page = std::mem::take(&mut self.page);
        let Some(stats) = page.stats.clone() else {
            return Ok(());
        };
        let (body, mut terms) = page.finish();
        let compressed =
            zstd::bulk::compress(&body, ZSTD_LEVEL).map_err(|_| SectionError("compression"))?;
        terms.sort_unstable();
        terms.dedup();
        let filter = block::encode_keys(&terms).map_err(|_| SectionError("term filter"))?;
        let h = &mut self.header;
        for v in [
            self.pages.len() as u64,
            compressed.len() as u64,
            u64::from(stats.traces),
            stats.start,
            stats.end,
            stats.span_duration.0,
            stats.span_duration.1,
            stats.trace_duration.0,
            stats.trace_duration.1,
            filter.len() as u64,
        ] {
            put_varint(h, v);
        }
        h.extend_from_slice(&filter);
        self.pages.extend_from_slice(&compressed);
        self.page_count += 1;
        Ok(())
    }

    /// The section's bytes (`None` when no trace was added).
    pub(crate) fn finish(mut self) -> Result<Option<Vec<u8>>, SectionError> {
        self.seal_page()?;
        if self.page_count == 0 {
            return Ok(None);
        }
        let mut header = Vec::with_capacity(self.header.len() + 10);
        put_varint(&mut header, self.page_count);
        header.extend_from_slice(&self.header);
        let header =
            zstd::bulk::compress(&header, ZSTD_LEVEL).map_err(|_| SectionError("compression"))?;
        let mut out = Vec::with_capacity(9 + header.len() + self.pages.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION as u8);
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&self.pages);
        Ok(Some(out))
    }
}

impl PageBuilder {
    /// The string's ID in the page's dictionary, and its hash for terms.
    fn string(&mut self, s: &str) -> (u64, u64) {
        if s.is_empty() && !self.order.is_empty() && self.order[0].is_empty() {
            return (0, EMPTY_HASH);
        }
        let h = xxh3_128(s.as_bytes());
        let next = self.order.len() as u64;
        let id = *self.strings.entry(h).or_insert(next);
        if id == next {
            self.order.push(s.into());
        }
        (id, h as u64)
    }

    fn col(&mut self, c: Col) -> &mut Vec<u8> {
        &mut self.cols[c as usize]
    }

    fn add(&mut self, t: &SearchTrace) {
        if self.order.is_empty() {
            // ID 0 is the empty string: `string("")` answers without hashing.
            self.string("");
        }
        let (mut span_min, mut span_max) = (u64::MAX, 0);
        for s in &t.spans {
            span_min = span_min.min(s.duration());
            span_max = span_max.max(s.duration());
        }
        let stats = self.stats.get_or_insert(PageStats {
            traces: 0,
            start: u64::MAX,
            end: 0,
            span_duration: (u64::MAX, 0),
            trace_duration: (u64::MAX, 0),
        });
        stats.traces += 1;
        stats.start = stats.start.min(t.start);
        stats.end = stats.end.max(t.end);
        stats.span_duration = (
            stats.span_duration.0.min(span_min),
            stats.span_duration.1.max(span_max),
        );
        let d = t.duration();
        stats.trace_duration = (stats.trace_duration.0.min(d), stats.trace_duration.1.max(d));

        self.col(Col::TraceId).extend_from_slice(&t.id.0);
        let head = [
            t.start,
            t.end.wrapping_sub(t.start),
            t.resources.len() as u64,
            t.spans.len() as u64,
            t.attrs.len() as u64,
        ];
        for v in head {
            put_varint(self.col(Col::TraceHead), v);
        }
        // Each attribute's scope: a resource's range, else a span's.
        let mut scope_of = std::mem::take(&mut self.scopes);
        scope_of.clear();
        scope_of.resize(t.attrs.len(), Scope::Span);
        for r in &t.resources {
            let service = r.service.map_or(0, |s| self.string(s).0 + 1);
            let col = self.col(Col::Resource);
            put_varint(col, u64::from(r.attrs.start));
            put_varint(col, u64::from(r.attrs.end - r.attrs.start));
            put_varint(col, service);
            if let Some(scopes) = scope_of.get_mut(r.attrs.start as usize..r.attrs.end as usize) {
                scopes.fill(Scope::Resource);
            }
        }
        for s in &t.spans {
            let (name, name_hash) = self.string(s.name);
            let message = self.string(s.status_message).0;
            self.terms.push(name_term(name_hash));
            let ids = self.col(Col::SpanId);
            put_varint(ids, s.span_id.len() as u64);
            ids.extend_from_slice(s.span_id);
            let flags = kind_index(s.kind) * 8 + status_index(s.status) * 2 + u64::from(s.root);
            let col = self.col(Col::Span);
            for v in [
                u64::from(s.resource),
                name,
                flags,
                message,
                s.start.wrapping_sub(t.start),
                zigzag(s.end.wrapping_sub(s.start) as i64),
                u64::from(s.attrs.start),
                u64::from(s.attrs.end - s.attrs.start),
            ] {
                put_varint(col, v);
            }
        }
        for (a, &scope) in t.attrs.iter().zip(&scope_of) {
            let (key, key_hash) = self.string(a.key);
            put_varint(self.col(Col::AttrKey), key);
            self.terms.push(key_term(scope, key_hash));
            let ty = match a.value {
                AttrValue::Str(s) => {
                    let (id, value_hash) = self.string(s);
                    self.terms.push(value_term(scope, key_hash, value_hash));
                    put_varint(self.col(Col::AttrStr), id);
                    0
                }
                AttrValue::Int(i) => {
                    put_varint(self.col(Col::AttrInt), zigzag(i));
                    1
                }
                AttrValue::Float(f) => {
                    self.col(Col::AttrFloat).extend_from_slice(&f.to_le_bytes());
                    2
                }
                AttrValue::Bool(b) => 3 + u8::from(b),
                AttrValue::Other(bytes) => {
                    let col = self.col(Col::AttrOther);
                    put_varint(col, bytes.len() as u64);
                    col.extend_from_slice(bytes);
                    5
                }
            };
            self.col(Col::AttrType).push(ty);
        }
        self.scopes = scope_of;
    }

    fn finish(self) -> (Vec<u8>, Vec<u64>) {
        let mut out = Vec::new();
        put_varint(&mut out, self.order.len() as u64);
        for s in &self.order {
            put_varint(&mut out, s.len() as u64);
        }
        for s in &self.order {
            out.extend_from_slice(s.as_bytes());
        }
        for c in &self.cols {
            put_varint(&mut out, c.len() as u64);
            out.extend_from_slice(c);
        }
        (out, self.terms)
    }
}

fn kind_index(k: Kind) -> u64 {
    Kind::ALL.iter().position(|&x| x == k).unwrap_or(0) as u64
}

fn status_index(s: Status) -> u64 {
    Status::ALL.iter().position(|&x| x == s).unwrap_or(0) as u64
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

/// A decoded header: where each page is and what it holds.
pub(crate) struct SectionIndex {
    pages: Vec<PageEntry>,
    body_start: usize,
}

struct PageEntry {
    offset: usize,
    len: usize,
    stats: PageStats,
    terms: KeyFilter,
}

impl SectionIndex {
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, SectionError> {
        if bytes.len() < 9 || &bytes[..4] != MAGIC {
            return Err(SectionError("bad magic"));
        }
        if u32::from(bytes[4]) != VERSION {
            return Err(SectionError("unsupported version"));
        }
        let header_len = u32::from_le_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) as usize;
        let body_start = 9usize
            .checked_add(header_len)
            .filter(|&e| e <= bytes.len())
            .ok_or(SectionError("header runs past the object"))?;
        let header = zstd::stream::decode_all(&bytes[9..body_start])
            .map_err(|_| SectionError("header does not decompress"))?;
        let mut r = Cursor::new(&header);
        let count = r.varint()?;
        let mut pages = Vec::new();
        for _ in 0..count {
            let mut v = [0u64; 10];
            for x in &mut v {
                *x = r.varint()?;
            }
            let filter = r.bytes(v[9] as usize)?;
            let (offset, len) = (v[0] as usize, v[1] as usize);
            if body_start + offset.saturating_add(len) > bytes.len() {
                return Err(SectionError("page runs past the object"));
            }
            pages.push(PageEntry {
                offset,
                len,
                stats: PageStats {
                    traces: u32::try_from(v[2]).map_err(|_| SectionError("trace count"))?,
                    start: v[3],
                    end: v[4],
                    span_duration: (v[5], v[6]),
                    trace_duration: (v[7], v[8]),
                },
                terms: KeyFilter::decode(filter).map_err(|_| SectionError("term filter"))?,
            });
        }
        Ok(Self { pages, body_start })
    }

    pub(crate) fn pages(&self) -> usize {
        self.pages.len()
    }

    pub(crate) fn stats(&self, page: usize) -> &PageStats {
        &self.pages[page].stats
    }

    /// Whether `query` may select a span in `page` (false: surely not).
    pub(crate) fn may_match(&self, page: usize, query: &Query) -> bool {
        let p = &self.pages[page];
        query_may_match(query, &|t| p.terms.contains_key(t), &p.stats)
    }

    /// Whether page `page` holds the attribute `(scope, key)` on any span or resource.
    pub(crate) fn may_have(&self, page: usize, scope: Scope, key: &str) -> bool {
        let p = &self.pages[page];
        has_key(&|t| p.terms.contains_key(t), scope, key)
    }

    /// The page's decompressed bytes, for [`decode_page`].
    pub(crate) fn read_page(&self, section: &[u8], page: usize) -> Result<Vec<u8>, SectionError> {
        let p = &self.pages[page];
        let start = self.body_start + p.offset;
        let bytes = section
            .get(start..start + p.len)
            .ok_or(SectionError("page runs past the object"))?;
        zstd::stream::decode_all(bytes).map_err(|_| SectionError("page does not decompress"))
    }
}

/// The traces of a decompressed page, borrowing its bytes.
pub(crate) fn decode_page(raw: &[u8]) -> Result<Vec<SearchTrace<'_>>, SectionError> {
    let mut r = Cursor::new(raw);
    let count = r.varint()? as usize;
    let mut lens = Vec::with_capacity(count.min(raw.len()));
    for _ in 0..count {
        lens.push(r.varint()? as usize);
    }
    let mut strings = Vec::with_capacity(lens.len());
    for len in lens {
        let s = std::str::from_utf8(r.bytes(len)?).map_err(|_| SectionError("string"))?;
        strings.push(s);
    }
    let mut cols: Vec<Cursor> = Vec::with_capacity(COLUMNS);
    for _ in 0..COLUMNS {
        let len = r.varint()? as usize;
        cols.push(Cursor::new(r.bytes(len)?));
    }
    let string = |id: u64| {
        strings
            .get(id as usize)
            .copied()
            .ok_or(SectionError("string id"))
    };
    let mut traces = Vec::new();
    while !cols[Col::TraceId as usize].is_empty() {
        let mut id = [0u8; 16];
        id.copy_from_slice(cols[Col::TraceId as usize].bytes(16)?);
        let mut t = SearchTrace::empty(TraceId(id));
        let h = &mut cols[Col::TraceHead as usize];
        let (start, len, resources, spans, attrs) = (
            h.varint()?,
            h.varint()?,
            h.varint()?,
            h.varint()?,
            h.varint()?,
        );
        t.start = start;
        t.end = start.wrapping_add(len);
        for _ in 0..resources {
            let c = &mut cols[Col::Resource as usize];
            let (from, n, service) = (c.varint()?, c.varint()?, c.varint()?);
            t.resources.push(Resource {
                attrs: range(from, n)?,
                service: if service == 0 {
                    None
                } else {
                    Some(string(service - 1)?)
                },
            });
        }
        for _ in 0..spans {
            let c = &mut cols[Col::SpanId as usize];
            let n = c.varint()? as usize;
            let span_id = c.bytes(n)?;
            let c = &mut cols[Col::Span as usize];
            let mut v = [0u64; 8];
            for x in &mut v {
                *x = c.varint()?;
            }
            let span_start = start.wrapping_add(v[4]);
            let flags = v[2];
            t.spans.push(SearchSpan {
                resource: u32::try_from(v[0]).map_err(|_| SectionError("resource"))?,
                span_id,
                name: string(v[1])?,
                kind: *Kind::ALL
                    .get((flags / 8) as usize)
                    .ok_or(SectionError("kind"))?,
                status: *Status::ALL
                    .get((flags / 2 % 4) as usize)
                    .ok_or(SectionError("status"))?,
                root: flags % 2 == 1,
                status_message: string(v[3])?,
                start: span_start,
                end: span_start.wrapping_add(unzigzag(v[5]) as u64),
                attrs: range(v[6], v[7])?,
            });
        }
        for _ in 0..attrs {
            let key = string(cols[Col::AttrKey as usize].varint()?)?;
            let ty = cols[Col::AttrType as usize].bytes(1)?[0];
            let value = match ty {
                0 => AttrValue::Str(string(cols[Col::AttrStr as usize].varint()?)?),
                1 => AttrValue::Int(unzigzag(cols[Col::AttrInt as usize].varint()?)),
                2 => {
                    let b = cols[Col::AttrFloat as usize].bytes(8)?;
                    AttrValue::Float(f64::from_le_bytes(b.try_into().unwrap_or_default()))
                }
                3 | 4 => AttrValue::Bool(ty == 4),
                5 => {
                    let c = &mut cols[Col::AttrOther as usize];
                    let n = c.varint()? as usize;
                    AttrValue::Other(c.bytes(n)?)
                }
                _ => return Err(SectionError("attribute type")),
            };
            t.attrs.push(Attr { key, value });
        }
        let n = t.attrs.len() as u32;
        let in_bounds = |r: &std::ops::Range<u32>| r.end <= n;
        if !t.resources.iter().all(|x| in_bounds(&x.attrs))
            || !t
                .spans
                .iter()
                .all(|s| in_bounds(&s.attrs) && (s.resource as usize) < t.resources.len())
        {
            return Err(SectionError("attribute or resource out of range"));
        }
        // Roots as a decode of the records finds them.
        for s in &t.spans {
            if s.root {
                t.root_name = Some(s.name);
                t.root_service = t.resources.get(s.resource as usize).and_then(|r| r.service);
                break;
            }
        }
        traces.push(t);
    }
    Ok(traces)
}

fn range(from: u64, n: u64) -> Result<std::ops::Range<u32>, SectionError> {
    let from = u32::try_from(from).map_err(|_| SectionError("range"))?;
    let to = u32::try_from(n)
        .ok()
        .and_then(|n| from.checked_add(n))
        .ok_or(SectionError("range"))?;
    Ok(from..to)
}

/// Whether a query can select anything in a page with `terms` and `stats`.
fn query_may_match(q: &Query, terms: &dyn Fn(u64) -> bool, stats: &PageStats) -> bool {
    match q {
        Query::Filter(Filter::All) => true,
        Query::Filter(Filter::Expr(e)) => expr_may_match(e, terms, stats),
        Query::And(a, b) => query_may_match(a, terms, stats) && query_may_match(b, terms, stats),
        Query::Or(a, b) => query_may_match(a, terms, stats) || query_may_match(b, terms, stats),
    }
}

fn expr_may_match(e: &Expr, terms: &dyn Fn(u64) -> bool, stats: &PageStats) -> bool {
    match e {
        Expr::And(a, b) => expr_may_match(a, terms, stats) && expr_may_match(b, terms, stats),
        Expr::Or(a, b) => expr_may_match(a, terms, stats) || expr_may_match(b, terms, stats),
        Expr::Static(b) => *b,
        Expr::Compare(c) => compare_may_match(c, terms, stats),
    }
}

fn has_key(terms: &dyn Fn(u64) -> bool, scope: Scope, key: &str) -> bool {
    let key = hash(key);
    match scope {
        Scope::Any => terms(key_term(Scope::Span, key)) || terms(key_term(Scope::Resource, key)),
        s => terms(key_term(s, key)),
    }
}

fn compare_may_match(c: &Comparison, terms: &dyn Fn(u64) -> bool, stats: &PageStats) -> bool {
    match &c.field {
        Field::Attribute { scope, key } => match (&c.op, &c.value) {
            // Absence holds anywhere a span lacks it.
            (Op::Eq, Literal::Nil) => true,
            (Op::Eq, Literal::String(v)) => {
                let (key, v) = (hash(key), hash(v));
                match scope {
                    Scope::Any => {
                        terms(value_term(Scope::Span, key, v))
                            || terms(value_term(Scope::Resource, key, v))
                    }
                    s => terms(value_term(*s, key, v)),
                }
            }
            // Every other test needs the attribute.
            _ => has_key(terms, *scope, key),
        },
        Field::Intrinsic(Intrinsic::Name) => match (&c.op, &c.value) {
            (Op::Eq, Literal::String(v)) => terms(name_term(hash(v))),
            _ => true,
        },
        Field::Intrinsic(Intrinsic::Duration) => within(c, stats.span_duration),
        Field::Intrinsic(Intrinsic::TraceDuration) => within(c, stats.trace_duration),
        Field::Intrinsic(_) => true,
    }
}

/// Whether a duration comparison can hold for some value in `[min, max]`.
fn within(c: &Comparison, (min, max): (u64, u64)) -> bool {
    let l = match c.value {
        Literal::Duration(d) => d,
        Literal::Int(i) if i >= 0 => i as u64,
        _ => return true,
    };
    match c.op {
        Op::Gt => max > l,
        Op::Ge => max >= l,
        Op::Lt => min < l,
        Op::Le => min <= l,
        Op::Eq => min <= l && l <= max,
        _ => true,
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
    let mut writer = SectionWriter::new();
    let mut trace = SearchTrace::empty(TraceId([0; 16]));
    for group in traces.chunk_by(|a, b| a.id == b.id) {
        // One trace's buffers serve every trace.
        trace.decode_again(group[0].id, group.iter().map(|t| &t.data[..]));
        writer.add(&trace)?;
    }
    writer.finish()
}

#[cfg(test)]
mod tests;

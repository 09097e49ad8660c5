//! Writing a section: traces in, pages and their header out.

use std::collections::HashMap;

use xxhash_rust::xxh3::xxh3_128;

use super::tags::{Owner, TableValue, TagTable};
use super::{
    key_term, name_term, put_varint, value_term, zigzag, Col, PageStats, Prehashed, SectionError,
    COLUMNS, EMPTY_HASH, MAGIC, PAGE_TRACES, VERSION, ZSTD_LEVEL,
};
use crate::search::model::{Attr, AttrValue, SearchTrace};
use crate::storage::block;
use crate::traceql::ast::{Kind, Scope, Status};

/// A finished section in two parts: its start (magic, version, header) and the pages
/// not yet taken.
pub(crate) type SectionParts = (Vec<u8>, Vec<u8>);

/// Builds a section from traces given in trace-ID order.
pub(crate) struct SectionWriter {
    /// Sealed pages not yet taken ([`SectionWriter::take_pages`]).
    pages: Vec<u8>,
    /// Bytes of sealed pages so far, taken or not: the next page's offset.
    pages_len: u64,
    header: Vec<u8>,
    page_count: u64,
    page: PageBuilder,
    tags: TagTable,
    /// One zstd context for every page, made when the first page is sealed.
    zstd: Option<zstd::bulk::Compressor<'static>>,
}

/// `data` compressed at the section's level with `zstd` (made on first use).
fn compress(
    zstd: &mut Option<zstd::bulk::Compressor<'static>>,
    data: &[u8],
) -> Result<Vec<u8>, SectionError> {
    let zstd = match zstd {
        Some(z) => z,
        None => zstd.insert(
            zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(|_| SectionError("compression"))?,
        ),
    };
    let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(data.len()));
    zstd.compress_to_buffer(data, &mut out)
        .map_err(|_| SectionError("compression"))?;
    Ok(out)
}

#[derive(Default)]
struct PageBuilder {
    /// `xxh3_128(string)` → its ID: the hash is computed once per occurrence and serves
    /// the terms too; at 128 bits two strings of a page never share one (a collision is
    /// ~2^-100 likely for a page's strings), so a hit is not compared byte by byte.
    strings: HashMap<u128, u64, Prehashed>,
    /// The page's strings, by ID: `text[ends[id - 1]..ends[id]]` (one buffer, not an
    /// allocation per string).
    text: String,
    ends: Vec<usize>,
    /// Each string's hash, by ID (terms are made of them).
    hashes: Vec<u64>,
    cols: [Vec<u8>; COLUMNS],
    /// Every attribute's and span name's `(value_ref, value)`: sorted and de-duplicated
    /// when the page is sealed, they make the page's terms and feed the block's tag table
    /// (one push per attribute here; the work per distinct value is done once per page).
    values: Vec<(u64, u64)>,
    /// The last entry pushed to each of `RECENT` slots: a repeat of one (most are
    /// repeats: the same keys and values span after span) is not pushed again, which
    /// keeps the sort at sealing short.
    recent: Vec<(u64, u64)>,
    /// Bit `i`: a span has `Status::ALL[i]`, `Kind::ALL[i]`.
    statuses: u8,
    kinds: u8,
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
            pages_len: 0,
            header: Vec::new(),
            page_count: 0,
            page: PageBuilder::default(),
            tags: TagTable::default(),
            zstd: None,
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
        let (body, mut terms) = page.finish(&mut self.tags);
        let compressed = compress(&mut self.zstd, &body)?;
        terms.sort_unstable();
        terms.dedup();
        let filter = block::encode_keys(&terms).map_err(|_| SectionError("term filter"))?;
        let h = &mut self.header;
        for v in [
            self.pages_len,
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
        self.pages_len += compressed.len() as u64;
        self.page_count += 1;
        Ok(())
    }

    /// The section's bytes (`None` when no trace was added).
    pub(crate) fn finish(self) -> Result<Option<Vec<u8>>, SectionError> {
        Ok(self.finish_parts()?.map(|(mut head, pages)| {
            head.extend_from_slice(&pages);
            head
        }))
    }

    /// The pages sealed since the last call, in order: a writer of a large section
    /// streams them out (to a file, say) and keeps only the header in memory.
    pub(crate) fn take_pages(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pages)
    }

    /// The section's start (magic, version, header) and the pages not yet taken: the
    /// section is the start, then every page taken, then these (`None` when no trace
    /// was added).
    pub(crate) fn finish_parts(mut self) -> Result<Option<SectionParts>, SectionError> {
        self.seal_page()?;
        if self.page_count == 0 {
            return Ok(None);
        }
        self.seal().map(Some)
    }

    /// The section's bytes, with no page when no trace was added.
    pub(crate) fn finish_even_empty(mut self) -> Result<Vec<u8>, SectionError> {
        self.seal_page()?;
        let (mut head, pages) = self.seal()?;
        head.extend_from_slice(&pages);
        Ok(head)
    }

    /// The start and the pages not yet taken, every page sealed.
    fn seal(mut self) -> Result<SectionParts, SectionError> {
        let mut header = Vec::with_capacity(self.header.len() + 10);
        put_varint(&mut header, self.page_count);
        header.extend_from_slice(&self.header);
        self.tags.encode(&mut header);
        let header = compress(&mut self.zstd, &header)?;
        let mut head = Vec::with_capacity(9 + header.len());
        head.extend_from_slice(MAGIC);
        head.push(VERSION as u8);
        head.extend_from_slice(&(header.len() as u32).to_le_bytes());
        head.extend_from_slice(&header);
        Ok((head, self.pages))
    }
}

impl PageBuilder {
    /// The string's ID in the page's dictionary, and its hash for terms.
    fn string(&mut self, s: &str) -> (u64, u64) {
        // ID 0 is "" (its end is 0) once `add` has put it first.
        if s.is_empty() && self.ends.first() == Some(&0) {
            return (0, EMPTY_HASH);
        }
        let h = xxh3_128(s.as_bytes());
        let next = self.ends.len() as u64;
        let id = *self.strings.entry(h).or_insert(next);
        if id == next {
            self.text.push_str(s);
            self.ends.push(self.text.len());
            self.hashes.push(h as u64);
        }
        (id, h as u64)
    }

    /// The string whose ID is `id` ("" for none).
    fn text_of(&self, id: u64) -> &str {
        let id = id as usize;
        let Some(&end) = self.ends.get(id) else {
            return "";
        };
        let start = if id == 0 { 0 } else { self.ends[id - 1] };
        self.text.get(start..end).unwrap_or("")
    }

    fn col(&mut self, c: Col) -> &mut Vec<u8> {
        &mut self.cols[c as usize]
    }

    /// Folds the trace into the page's statistics.
    fn count(&mut self, t: &SearchTrace) {
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
    }

    fn add(&mut self, t: &SearchTrace) {
        if self.ends.is_empty() {
            // ID 0 is the empty string: `string("")` answers without hashing.
            self.string("");
        }
        self.count(t);
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
            let name = self.string(s.name).0;
            let message = self.string(s.status_message).0;
            self.note(value_ref(REF_NAME, 0, 0), name);
            self.statuses |= 1 << status_index(s.status);
            self.kinds |= 1 << kind_index(s.kind);
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
            self.add_attr(a, scope);
        }
        self.scopes = scope_of;
    }

    fn add_attr(&mut self, a: &Attr, scope: Scope) {
        let key = self.string(a.key).0;
        put_varint(self.col(Col::AttrKey), key);
        let (ty, value) = match a.value {
            AttrValue::Str(s) => {
                let id = self.string(s).0;
                put_varint(self.col(Col::AttrStr), id);
                (0, id)
            }
            AttrValue::Int(i) => {
                put_varint(self.col(Col::AttrInt), zigzag(i));
                (1, i as u64)
            }
            AttrValue::Float(f) => {
                self.col(Col::AttrFloat).extend_from_slice(&f.to_le_bytes());
                (2, f.to_bits())
            }
            AttrValue::Bool(b) => (3 + u8::from(b), 0),
            AttrValue::Other(bytes) => {
                let col = self.col(Col::AttrOther);
                put_varint(col, bytes.len() as u64);
                col.extend_from_slice(bytes);
                (5, 0)
            }
        };
        self.col(Col::AttrType).push(ty);
        let owner = match scope {
            Scope::Resource => REF_RESOURCE,
            _ => REF_SPAN,
        };
        self.note(value_ref(owner, key, ty), value);
    }

    /// Records `(value_ref, value)` unless it was just recorded.
    #[inline]
    fn note(&mut self, r: u64, v: u64) {
        if self.recent.is_empty() {
            // No entry is all ones (the owner takes two bits and is at most 2).
            self.recent = vec![(u64::MAX, u64::MAX); RECENT];
        }
        let slot = ((r ^ v.rotate_left(23)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 54) as usize;
        if let Some(last) = self.recent.get_mut(slot) {
            if *last == (r, v) {
                return;
            }
            *last = (r, v);
        }
        self.values.push((r, v));
    }

    /// The page's distinct attributes and names, once each: its terms (returned) and
    /// the block's tag table (folded into `table`).
    fn fold_values(&mut self, table: &mut TagTable) -> Vec<u64> {
        let mut values = std::mem::take(&mut self.values);
        values.sort_unstable();
        values.dedup();
        let mut terms = Vec::with_capacity(values.len());
        let mut group = u64::MAX;
        let mut entry = None;
        for &(r, v) in &values {
            let (owner, key, ty) = (r >> 62, (r >> 3) & KEY_MASK, (r & 7) as u8);
            let hash = |id: u64| self.hashes.get(id as usize).copied().unwrap_or(EMPTY_HASH);
            let string = |id: u64| self.text_of(id);
            let scope = if owner == REF_RESOURCE {
                Scope::Resource
            } else {
                Scope::Span
            };
            if r >> 3 != group {
                group = r >> 3;
                entry = if owner == REF_NAME {
                    table.entry(Owner::SpanName, "")
                } else {
                    terms.push(key_term(scope, hash(key)));
                    table.entry(Owner::of(scope), string(key))
                };
            }
            if owner == REF_NAME {
                terms.push(name_term(hash(v)));
            } else if ty == 0 {
                terms.push(value_term(scope, hash(key), hash(v)));
            }
            let Some(e) = entry.as_deref_mut().filter(|e| !e.overflow) else {
                continue;
            };
            e.add(match ty {
                0 => TableValue::Str(string(v).into()),
                1 => TableValue::Int(v as i64),
                2 => TableValue::Float(v),
                3 | 4 => TableValue::Bool(ty == 4),
                _ => continue, // arrays and maps: the key only
            });
        }
        table.statuses |= self.statuses;
        table.kinds |= self.kinds;
        terms
    }

    fn finish(mut self, table: &mut TagTable) -> (Vec<u8>, Vec<u64>) {
        let terms = self.fold_values(table);
        let mut out = Vec::new();
        put_varint(&mut out, self.ends.len() as u64);
        let mut start = 0;
        for &end in &self.ends {
            put_varint(&mut out, (end - start) as u64);
            start = end;
        }
        out.extend_from_slice(self.text.as_bytes());
        for c in &self.cols {
            put_varint(&mut out, c.len() as u64);
            out.extend_from_slice(c);
        }
        (out, terms)
    }
}

/// Whose value a `PageBuilder::values` entry is (its top two bits).
const REF_SPAN: u64 = 0;
const REF_RESOURCE: u64 = 1;
const REF_NAME: u64 = 2;
const KEY_MASK: u64 = (1 << 59) - 1;
/// Slots of `PageBuilder::recent` (`1 << 10`: the top 10 bits of a 64-bit mix).
const RECENT: usize = 1 << 10;

/// `owner ‖ key's string ID ‖ value type (3 bits)`: sorting the entries groups each key's
/// values (of every type) together.
fn value_ref(owner: u64, key: u64, ty: u8) -> u64 {
    (owner << 62) | ((key & KEY_MASK) << 3) | u64::from(ty)
}

fn kind_index(k: Kind) -> u64 {
    Kind::ALL.iter().position(|&x| x == k).unwrap_or(0) as u64
}

fn status_index(s: Status) -> u64 {
    Status::ALL.iter().position(|&x| x == s).unwrap_or(0) as u64
}

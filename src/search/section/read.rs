//! Reading a section: the header's page index and statistics, and a page's traces.

use super::tags::TagTable;
use super::{
    prune, readable, unzigzag, Col, Cursor, PageStats, SectionError, COLUMNS, HEAD_PREFIX, MAGIC,
};
use crate::model::TraceId;
use crate::search::model::{Attr, AttrValue, Resource, SearchSpan, SearchTrace};
use crate::storage::block::KeyFilter;
use crate::traceql::ast::{Kind, Query, Scope, Status};

/// A decoded header: where each page is and what it holds.
pub(crate) struct SectionIndex {
    pages: Vec<PageEntry>,
    body_start: usize,
    /// The tag table's bytes (decoded on demand: searches do not need it); `None` in a
    /// version 1 section.
    tags: Option<Vec<u8>>,
}

struct PageEntry {
    offset: usize,
    len: usize,
    stats: PageStats,
    terms: KeyFilter,
}

impl SectionIndex {
    /// Decodes a whole section.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, SectionError> {
        Self::decode_head(bytes, bytes.len())
    }

    /// How many leading bytes of a section hold its header, from its first
    /// [`HEAD_PREFIX`] bytes.
    pub(crate) fn head_len(prefix: &[u8]) -> Result<usize, SectionError> {
        if prefix.len() < HEAD_PREFIX || &prefix[..4] != MAGIC {
            return Err(SectionError("bad magic"));
        }
        if !readable(u32::from(prefix[4])) {
            return Err(SectionError("unsupported version"));
        }
        let header_len = u32::from_le_bytes([prefix[5], prefix[6], prefix[7], prefix[8]]);
        Ok(HEAD_PREFIX + header_len as usize)
    }

    /// Decodes a section's header from its leading bytes (at least [`Self::head_len`]
    /// of them) and the whole object's length, which every page must lie within.
    pub(crate) fn decode_head(bytes: &[u8], object_len: usize) -> Result<Self, SectionError> {
        let body_start = Self::head_len(bytes)?;
        if body_start > bytes.len() || body_start > object_len {
            return Err(SectionError("header runs past the object"));
        }
        let version = u32::from(bytes[4]);
        let header = zstd::stream::decode_all(&bytes[HEAD_PREFIX..body_start])
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
            if body_start.saturating_add(offset.saturating_add(len)) > object_len {
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
        let tags = (version >= 2).then(|| r.rest().to_vec());
        Ok(Self {
            pages,
            body_start,
            tags,
        })
    }

    /// The block's tag table (`None`: a version 1 section has none).
    pub(crate) fn tag_table(&self) -> Option<Result<TagTable, SectionError>> {
        self.tags.as_deref().map(TagTable::decode)
    }

    /// The earliest start and latest end of the section's traces.
    pub(crate) fn time_range(&self) -> (u64, u64) {
        self.pages.iter().fold((u64::MAX, 0), |(start, end), p| {
            (start.min(p.stats.start), end.max(p.stats.end))
        })
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
        prune::query_may_match(query, &|t| p.terms.contains_key(t), &p.stats)
    }

    /// Whether page `page` holds the attribute `(scope, key)` on any span or resource.
    pub(crate) fn may_have(&self, page: usize, scope: Scope, key: &str) -> bool {
        let p = &self.pages[page];
        prune::has_key(&|t| p.terms.contains_key(t), scope, key)
    }

    /// Where page `page` lies in the section object.
    pub(crate) fn page_range(&self, page: usize) -> std::ops::Range<usize> {
        let p = &self.pages[page];
        let start = self.body_start + p.offset;
        start..start + p.len
    }

    /// The page's decompressed bytes from the whole section, for [`decode_page`].
    #[cfg(test)]
    pub(crate) fn read_page(&self, section: &[u8], page: usize) -> Result<Vec<u8>, SectionError> {
        let bytes = section
            .get(self.page_range(page))
            .ok_or(SectionError("page runs past the object"))?;
        inflate_page(bytes)
    }
}

/// A page's decompressed bytes from its stored ones (`page_range` of the object).
pub(crate) fn inflate_page(stored: &[u8]) -> Result<Vec<u8>, SectionError> {
    zstd::stream::decode_all(stored).map_err(|_| SectionError("page does not decompress"))
}

/// The traces of a decompressed page, borrowing its bytes.
pub(crate) fn decode_page(raw: &[u8]) -> Result<Vec<SearchTrace<'_>>, SectionError> {
    let mut page = PageReader::new(raw)?;
    let mut traces = Vec::new();
    while !page.col(Col::TraceId).is_empty() {
        traces.push(page.trace()?);
    }
    Ok(traces)
}

/// A page's dictionary and its columns, read in step.
struct PageReader<'a> {
    strings: Vec<&'a str>,
    cols: Vec<Cursor<'a>>,
}

impl<'a> PageReader<'a> {
    fn new(raw: &'a [u8]) -> Result<Self, SectionError> {
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
        let mut cols = Vec::with_capacity(COLUMNS);
        for _ in 0..COLUMNS {
            let len = r.varint()? as usize;
            cols.push(Cursor::new(r.bytes(len)?));
        }
        Ok(Self { strings, cols })
    }

    fn col(&mut self, c: Col) -> &mut Cursor<'a> {
        &mut self.cols[c as usize]
    }

    fn string(&self, id: u64) -> Result<&'a str, SectionError> {
        self.strings
            .get(id as usize)
            .copied()
            .ok_or(SectionError("string id"))
    }

    fn varints<const N: usize>(&mut self, c: Col) -> Result<[u64; N], SectionError> {
        let mut v = [0u64; N];
        for x in &mut v {
            *x = self.col(c).varint()?;
        }
        Ok(v)
    }

    fn trace(&mut self) -> Result<SearchTrace<'a>, SectionError> {
        let mut id = [0u8; 16];
        id.copy_from_slice(self.col(Col::TraceId).bytes(16)?);
        let mut t = SearchTrace::empty(TraceId(id));
        let [start, len, resources, spans, attrs] = self.varints(Col::TraceHead)?;
        t.start = start;
        t.end = start.wrapping_add(len);
        for _ in 0..resources {
            let [from, n, service] = self.varints(Col::Resource)?;
            t.resources.push(Resource {
                attrs: range(from, n)?,
                service: match service {
                    0 => None,
                    s => Some(self.string(s - 1)?),
                },
            });
        }
        for _ in 0..spans {
            t.spans.push(self.span(start)?);
        }
        for _ in 0..attrs {
            t.attrs.push(self.attr()?);
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
        if let Some(s) = t.spans.iter().find(|s| s.root) {
            t.root_name = Some(s.name);
            t.root_service = t.resources.get(s.resource as usize).and_then(|r| r.service);
        }
        Ok(t)
    }

    fn span(&mut self, trace_start: u64) -> Result<SearchSpan<'a>, SectionError> {
        let n = self.col(Col::SpanId).varint()? as usize;
        let span_id = self.col(Col::SpanId).bytes(n)?;
        let [resource, name, flags, message, start, duration, from, count] =
            self.varints(Col::Span)?;
        let start = trace_start.wrapping_add(start);
        Ok(SearchSpan {
            resource: u32::try_from(resource).map_err(|_| SectionError("resource"))?,
            span_id,
            name: self.string(name)?,
            kind: *Kind::ALL
                .get((flags / 8) as usize)
                .ok_or(SectionError("kind"))?,
            status: *Status::ALL
                .get((flags / 2 % 4) as usize)
                .ok_or(SectionError("status"))?,
            root: flags % 2 == 1,
            status_message: self.string(message)?,
            start,
            end: start.wrapping_add(unzigzag(duration) as u64),
            attrs: range(from, count)?,
        })
    }

    fn attr(&mut self) -> Result<Attr<'a>, SectionError> {
        let key = self.col(Col::AttrKey).varint()?;
        let key = self.string(key)?;
        let ty = self.col(Col::AttrType).bytes(1)?[0];
        let value = match ty {
            0 => {
                let id = self.col(Col::AttrStr).varint()?;
                AttrValue::Str(self.string(id)?)
            }
            1 => AttrValue::Int(unzigzag(self.col(Col::AttrInt).varint()?)),
            2 => {
                let b = self.col(Col::AttrFloat).bytes(8)?;
                AttrValue::Float(f64::from_le_bytes(b.try_into().unwrap_or_default()))
            }
            3 | 4 => AttrValue::Bool(ty == 4),
            5 => {
                let n = self.col(Col::AttrOther).varint()? as usize;
                AttrValue::Other(self.col(Col::AttrOther).bytes(n)?)
            }
            _ => return Err(SectionError("attribute type")),
        };
        Ok(Attr { key, value })
    }
}

fn range(from: u64, n: u64) -> Result<std::ops::Range<u32>, SectionError> {
    let from = u32::try_from(from).map_err(|_| SectionError("range"))?;
    let to = u32::try_from(n)
        .ok()
        .and_then(|n| from.checked_add(n))
        .ok_or(SectionError("range"))?;
    Ok(from..to)
}

//! Search: TraceQL over what a node holds, and the tag names and values Grafana's
//! autocomplete lists. The same scanners run on an ingester (live traces, head blocks,
//! local blocks) and on a querier (blocks in the object store); the querier merges the
//! answers (`merge_hits`, `TagValues::absorb`).
//!
//! Data is decoded for search on the query (`model::SearchTrace::decode`): the write path
//! stays as it is. A trace is skipped without decoding when its known time range misses
//! the query's; a block when its meta's range does.

pub(crate) mod blocks;
pub(crate) mod eval;
pub(crate) mod hit;
pub(crate) mod jobs;
pub(crate) mod model;
pub(crate) mod params;
pub(crate) mod section;
pub(crate) mod tags;

#[cfg(test)]
mod tests;

pub(crate) use blocks::{scan_blocks, ScanStats};
pub(crate) use hit::{merge_hits, TraceHit};
pub(crate) use params::{SearchParams, TagParams};
pub(crate) use tags::{TagNames, TagValue, TagValues};

use crate::model::TraceId;
use crate::traceql::Query;

/// Nanoseconds since the epoch, inclusive at both ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimeRange {
    pub start: u64,
    pub end: u64,
}

impl TimeRange {
    /// Whether `[start, end]` overlaps the range. An unknown range (0, or start after
    /// end as for a trace whose spans carry no times) may hold anything.
    pub(crate) fn overlaps(&self, start: u64, end: u64) -> bool {
        if start == 0 || start > end {
            return true;
        }
        start <= self.end && end >= self.start
    }
}

/// What reads traces for a query: a search, or a tag name or value collection. Offered
/// every trace in scope, one by one (`scan`).
pub(crate) trait Scanner: Send + 'static {
    /// The query's time range (`None`: everything).
    fn range(&self) -> Option<TimeRange>;
    /// Enough found: the caller stops offering.
    fn is_full(&self) -> bool {
        false
    }
    /// Whether data spanning `[start, end]` could change the answer (default: whether
    /// it is in range).
    fn wants(&self, start: u64, end: u64) -> bool {
        may_hold(self.range(), start, end)
    }
    /// Whether a page of a block's search section may hold something this scanner takes
    /// (false: skip it; the default reads every page in range).
    fn may_match(&self, _index: &section::SectionIndex, _page: usize) -> bool {
        true
    }
    /// Whether it may be answered from blocks' tag tables (a search is not: the table is
    /// then not even decoded).
    fn reads_tables(&self) -> bool {
        false
    }
    /// Takes what it needs from a block's tag table, when the block lies in its range;
    /// true when that is all it needs from the block (its pages are not read).
    fn take_table(&mut self, _table: &section::TagTable) -> bool {
        false
    }
    fn offer(&mut self, trace: &model::SearchTrace);
    /// A scanner for another job of the same request, with an empty answer but what this
    /// one knows about what is still wanted (a search's oldest kept hit).
    fn fork(&self) -> Self
    where
        Self: Sized;
    /// Takes another job's answer.
    fn merge(&mut self, other: Self)
    where
        Self: Sized;
}

/// Whether something spanning `[start, end]` can be in `range`.
pub(crate) fn may_hold(range: Option<TimeRange>, start: u64, end: u64) -> bool {
    range.is_none_or(|r| r.overlaps(start, end))
}

/// Offers one trace's stored records to `scanner` (decoded once, skipped when its spans
/// fall outside the range). Returns the bytes inspected.
pub(crate) fn offer_records<'a, S: Scanner + ?Sized>(
    scanner: &mut S,
    id: TraceId,
    records: impl IntoIterator<Item = &'a [u8]>,
) -> u64 {
    let records: Vec<&[u8]> = records.into_iter().collect();
    let bytes = records.iter().map(|r| r.len() as u64).sum();
    let trace = model::SearchTrace::decode(id, records);
    if scanner.wants(trace.start, trace.end) {
        scanner.offer(&trace);
    }
    bytes
}

/// A search on one node: offered traces, it keeps the `limit` most recent hits (by
/// start), and once it has them wants nothing that ended before the oldest of them.
pub(crate) struct Search {
    query: Query,
    fields: Vec<crate::traceql::ast::Field>,
    range: Option<TimeRange>,
    limit: usize,
    spans_per_set: usize,
    pub hits: Vec<TraceHit>,
    /// The start of the oldest hit the search this one was forked from kept, once it had
    /// `limit` (0: none): anything that ended before it cannot make the cut.
    floor: u64,
}

impl Search {
    pub(crate) fn new(
        query: Query,
        range: Option<TimeRange>,
        limit: usize,
        spans_per_set: usize,
    ) -> Self {
        let fields = query.fields().into_iter().cloned().collect();
        Self {
            query,
            fields,
            range,
            limit,
            spans_per_set,
            hits: Vec::new(),
            floor: 0,
        }
    }

    /// Data that ended before this cannot make the cut (0: anything can).
    fn bound(&self) -> u64 {
        let own = if self.hits.len() < self.limit {
            0
        } else {
            self.hits.last().map_or(0, |h| h.start_time_unix_nano)
        };
        own.max(self.floor)
    }
}

impl Scanner for Search {
    fn range(&self) -> Option<TimeRange> {
        self.range
    }

    fn wants(&self, start: u64, end: u64) -> bool {
        if !may_hold(self.range, start, end) {
            return false;
        }
        let bound = self.bound();
        if bound == 0 || start == 0 || start > end {
            return true;
        }
        end >= bound
    }

    fn fork(&self) -> Self {
        Self {
            query: self.query.clone(),
            fields: self.fields.clone(),
            range: self.range,
            limit: self.limit,
            spans_per_set: self.spans_per_set,
            hits: Vec::new(),
            floor: self.bound(),
        }
    }

    fn merge(&mut self, other: Self) {
        let hits = std::mem::take(&mut self.hits).into_iter().chain(other.hits);
        self.hits = merge_hits(hits, self.limit, self.spans_per_set);
    }

    fn may_match(&self, index: &section::SectionIndex, page: usize) -> bool {
        index.may_match(page, &self.query)
    }

    fn offer(&mut self, trace: &model::SearchTrace) {
        if let Some(matched) = eval::evaluate(&self.query, trace) {
            let mut hit = TraceHit::new(trace, &matched, &self.fields, self.spans_per_set);
            // Another copy of a trace already found (a replica's block, a damaged
            // section read again through its data) folds into it: it takes no second slot.
            if let Some(i) = self.hits.iter().position(|h| h.trace_id == hit.trace_id) {
                let mut existing = self.hits.remove(i);
                existing.absorb(hit, self.spans_per_set);
                hit = existing;
            }
            // Most recent first; the oldest goes once there are more than `limit`.
            let at = self
                .hits
                .partition_point(|h| h.start_time_unix_nano >= hit.start_time_unix_nano);
            self.hits.insert(at, hit);
            self.hits.truncate(self.limit);
        }
    }
}

/// Tag names in range.
pub(crate) struct NameScan {
    pub range: Option<TimeRange>,
    pub names: TagNames,
}

impl Scanner for NameScan {
    fn range(&self) -> Option<TimeRange> {
        self.range
    }
    fn is_full(&self) -> bool {
        self.names.truncated
    }
    fn reads_tables(&self) -> bool {
        true
    }
    fn take_table(&mut self, table: &section::TagTable) -> bool {
        self.names.offer_table(table)
    }
    fn offer(&mut self, trace: &model::SearchTrace) {
        self.names.offer(trace);
    }
    fn fork(&self) -> Self {
        Self {
            range: self.range,
            names: self.names.empty_like(),
        }
    }
    fn merge(&mut self, other: Self) {
        let TagNames {
            resource,
            span,
            truncated,
            ..
        } = other.names;
        self.names.absorb(
            resource.into_iter().collect(),
            span.into_iter().collect(),
            truncated,
        );
    }
}

/// One tag's values in range, on the spans `filter` selects.
pub(crate) struct ValueScan {
    pub range: Option<TimeRange>,
    pub filter: Option<Query>,
    pub values: TagValues,
}

impl Scanner for ValueScan {
    fn range(&self) -> Option<TimeRange> {
        self.range
    }
    fn is_full(&self) -> bool {
        self.values.truncated
    }
    fn may_match(&self, index: &section::SectionIndex, page: usize) -> bool {
        let has_tag = match &self.values.field {
            crate::traceql::ast::Field::Attribute { scope, key } => {
                index.may_have(page, *scope, key)
            }
            crate::traceql::ast::Field::Intrinsic(_) => true,
        };
        has_tag
            && self
                .filter
                .as_ref()
                .is_none_or(|q| index.may_match(page, q))
    }
    fn reads_tables(&self) -> bool {
        // Values next to a filter are found on the spans it selects.
        self.filter.is_none()
    }
    fn take_table(&mut self, table: &section::TagTable) -> bool {
        self.values.offer_table(table)
    }
    fn offer(&mut self, trace: &model::SearchTrace) {
        self.values.offer(trace, self.filter.as_ref());
    }
    fn fork(&self) -> Self {
        Self {
            range: self.range,
            filter: self.filter.clone(),
            values: self.values.empty_like(),
        }
    }
    fn merge(&mut self, other: Self) {
        self.values
            .absorb(other.values.values, other.values.truncated);
    }
}

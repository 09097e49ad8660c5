//! Shallow OTLP decoding: split an `ExportTraceServiceRequest` by trace ID without
//! decoding spans.
//!
//! The walk reads the framing of `ResourceSpans` → `ScopeSpans` → `Span` and, inside each
//! span, only fields 1 (`trace_id`) and 2 (`span_id`). Every span is copied as bytes into
//! per-trace `ResourceSpans` records whose resource and scope fields (and any field this
//! code does not know) are copied verbatim from the request. One output buffer holds
//! every trace; each trace is a zero-copy slice of it.
//!
//! Output record format (what ingesters store and queriers concatenate): repeated
//! `TracesData.resource_spans` fields, i.e. `0x0a <len> <ResourceSpans>`.
//!
//! Measured cost: see BENCHMARKS.md (`cargo bench --bench split`).

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

use crate::model::{TraceId, TraceMap};

mod fields;
mod reader;
mod schema;
mod segment;

pub use fields::{fields, Fields, WireValue};
pub use schema::Invalid;
pub use segment::{check_segment, SegmentError, SegmentFacts};

use reader::{Field, Reader};

const WIRE_VARINT: u8 = 0;
const WIRE_FIXED64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_FIXED32: u8 = 5;

/// The tag of `TracesData.resource_spans` / `ResourceSpans.scope_spans`... field 1 and 2, LEN.
const TAG_FIELD1_LEN: u8 = (1 << 3) | WIRE_LEN;
const TAG_FIELD2_LEN: u8 = (2 << 3) | WIRE_LEN;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("malformed OTLP protobuf at byte {offset}: {what}")]
pub struct WireError {
    pub offset: usize,
    pub what: &'static str,
}

/// Why a span was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectReason {
    InvalidTraceId,
    InvalidSpanId,
    /// The span's own bytes do not decode.
    MalformedSpan,
    /// Its `ScopeSpans` (the scope or the schema URL) does not decode.
    MalformedScope,
    /// Its `ResourceSpans` (the resource or the schema URL) does not decode.
    MalformedResource,
}

impl RejectReason {
    const ALL: [RejectReason; 5] = [
        RejectReason::InvalidTraceId,
        RejectReason::InvalidSpanId,
        RejectReason::MalformedSpan,
        RejectReason::MalformedScope,
        RejectReason::MalformedResource,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::InvalidTraceId => "invalid_trace_id",
            RejectReason::InvalidSpanId => "invalid_span_id",
            RejectReason::MalformedSpan => "malformed_span",
            RejectReason::MalformedScope => "malformed_scope",
            RejectReason::MalformedResource => "malformed_resource",
        }
    }

    fn message(self) -> &'static str {
        match self {
            RejectReason::InvalidTraceId => "trace ID must be 16 bytes and not all zero",
            RejectReason::InvalidSpanId => "span ID must be 8 bytes and not all zero",
            RejectReason::MalformedSpan => "span is not valid OTLP protobuf",
            RejectReason::MalformedScope => "their scope is not valid OTLP protobuf",
            RejectReason::MalformedResource => "their resource is not valid OTLP protobuf",
        }
    }
}

/// The spans rejected for one reason, with the first malformation found (if any).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectReason,
    pub spans: u64,
    pub first: Option<Invalid>,
}

/// The spans of one trace, framed as `TracesData.resource_spans` fields.
#[derive(Clone, Debug)]
pub struct TraceSegment {
    pub trace_id: TraceId,
    pub resource_spans: Bytes,
    pub spans: u32,
}

/// A request split by trace.
#[derive(Debug, Default)]
pub struct SplitRequest {
    pub traces: Vec<TraceSegment>,
    pub accepted_spans: u64,
    pub rejected_spans: u64,
    /// Rejected spans by reason, in [`RejectReason`] order; reasons with none are absent.
    pub rejections: Vec<Rejection>,
}

impl SplitRequest {
    /// The OTLP `partial_success.error_message` for the rejected spans, if any.
    pub fn rejection_message(&self) -> Option<String> {
        if self.rejected_spans == 0 {
            return None;
        }
        let parts: Vec<String> = self
            .rejections
            .iter()
            .map(|r| match &r.first {
                Some(at) => format!(
                    "{} spans rejected: {} (first: {at})",
                    r.spans,
                    r.reason.message()
                ),
                None => format!("{} spans rejected: {}", r.spans, r.reason.message()),
            })
            .collect();
        Some(parts.join("; "))
    }
}

/// Counts rejected spans while the walk goes.
#[derive(Default)]
struct Rejected {
    spans: [u64; 5],
    first: [Option<Invalid>; 5],
}

impl Rejected {
    fn add(&mut self, reason: RejectReason, why: Option<&Invalid>) {
        let i = reason as usize;
        self.spans[i] += 1;
        if self.first[i].is_none() {
            self.first[i] = why.cloned();
        }
    }

    fn into_list(self) -> (u64, Vec<Rejection>) {
        let total = self.spans.iter().sum();
        let list = RejectReason::ALL
            .into_iter()
            .zip(self.spans)
            .zip(self.first)
            .filter(|((_, n), _)| *n > 0)
            .map(|((reason, spans), first)| Rejection {
                reason,
                spans,
                first,
            })
            .collect();
        (total, list)
    }
}

struct ScopeInfo {
    resource: u32,
    /// Every field of the ScopeSpans except its spans, raw.
    other: Vec<Range<usize>>,
}

struct SpanInfo {
    scope: u32,
    payload: Range<usize>,
    /// Next span of the same trace (u32::MAX = none).
    next: u32,
}

/// Reusable per-trace bookkeeping (first/last span).
struct TraceInfo {
    id: TraceId,
    first: u32,
    last: u32,
    spans: u32,
}

fn varint_len(v: usize) -> usize {
    let bits = usize::BITS - (v | 1).leading_zeros();
    (bits as usize).div_ceil(7)
}

fn put_varint(out: &mut BytesMut, mut v: usize) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

fn framed_len(payload: usize) -> usize {
    1 + varint_len(payload) + payload
}

/// The accepted spans, each linked to the next span of its trace.
#[derive(Default)]
struct ByTrace {
    spans: Vec<SpanInfo>,
    traces: Vec<TraceInfo>,
    index: TraceMap<u32>,
}

impl ByTrace {
    #[inline]
    fn add(&mut self, trace: TraceId, scope: u32, payload: Range<usize>) {
        let span = self.spans.len() as u32;
        self.spans.push(SpanInfo {
            scope,
            payload,
            next: u32::MAX,
        });
        match self.index.get(&trace) {
            Some(&t) => {
                let info = &mut self.traces[t as usize];
                self.spans[info.last as usize].next = span;
                info.last = span;
                info.spans += 1;
            }
            None => {
                self.index.insert(trace, self.traces.len() as u32);
                self.traces.push(TraceInfo {
                    id: trace,
                    first: span,
                    last: span,
                    spans: 1,
                });
            }
        }
    }
}

/// Splits an encoded `ExportTraceServiceRequest` (or `TracesData`) by trace ID.
///
/// Every span, resource and scope is validated on the way (see `schema`): what is
/// kept decodes. A span with an invalid trace or span ID, or whose bytes (or whose
/// resource's or scope's) do not decode, is dropped and counted; the rest are kept. Only
/// a broken framing of the request's containers (`ResourceSpans`, `ScopeSpans`), where
/// no span can be delimited, fails the whole request: nothing of it is accepted.
pub fn split_by_trace(body: &[u8]) -> Result<SplitRequest, WireError> {
    let mut resources: Vec<Vec<Range<usize>>> = Vec::new();
    let mut scopes: Vec<ScopeInfo> = Vec::new();
    let mut by_trace = ByTrace::default();
    let mut rejected = Rejected::default();

    let mut top = Reader::new(body, 0..body.len());
    while let Some(rs_field) = top.next_expect_len(&[1])? {
        if rs_field.number != 1 {
            continue;
        }
        // The resource's own fields may come after its scopes: check them first.
        let resource_ok = schema::validate(
            body,
            rs_field.payload.clone(),
            schema::Message::ResourceSpans,
            schema::RESOURCE_SPANS_DEPTH,
        );
        let resource = resources.len() as u32;
        let mut rs_other = Vec::new();
        let mut rs = Reader::new(body, rs_field.payload);
        while let Some(f) = rs.next_expect_len(&[1, 2])? {
            if f.number != 2 {
                rs_other.push(f.raw);
                continue;
            }
            let container_ok = match &resource_ok {
                Err(e) => Err((RejectReason::MalformedResource, e.clone())),
                Ok(()) => schema::validate(
                    body,
                    f.payload.clone(),
                    schema::Message::ScopeSpans,
                    schema::SCOPE_SPANS_DEPTH,
                )
                .map_err(|e| (RejectReason::MalformedScope, e)),
            };
            let scope = scopes.len() as u32;
            let mut scope_other = Vec::new();
            let mut ss = Reader::new(body, f.payload);
            while let Some(sf) = ss.next_expect_len(&[1, 2])? {
                if sf.number != 2 {
                    scope_other.push(sf.raw);
                    continue;
                }
                if let Err((reason, why)) = &container_ok {
                    rejected.add(*reason, Some(why));
                    continue;
                }
                let (trace_id, span_id) = match schema::span_ids(body, sf.payload.clone()) {
                    Ok(ids) => ids,
                    Err(why) => {
                        rejected.add(RejectReason::MalformedSpan, Some(&why));
                        continue;
                    }
                };
                let trace = match TraceId::from_bytes(trace_id) {
                    Ok(t) => t,
                    Err(_) => {
                        rejected.add(RejectReason::InvalidTraceId, None);
                        continue;
                    }
                };
                if span_id.len() != 8 || span_id == [0u8; 8] {
                    rejected.add(RejectReason::InvalidSpanId, None);
                    continue;
                }
                by_trace.add(trace, scope, sf.payload);
            }
            scopes.push(ScopeInfo {
                resource,
                other: scope_other,
            });
        }
        resources.push(rs_other);
    }

    Ok(assemble(body, &resources, &scopes, by_trace, rejected))
}

/// Writes each trace's spans, under copies of their resources and scopes, as one
/// `ResourceSpans` record per resource, into one buffer that the segments share.
fn assemble(
    body: &[u8],
    resources: &[Vec<Range<usize>>],
    scopes: &[ScopeInfo],
    by_trace: ByTrace,
    rejected: Rejected,
) -> SplitRequest {
    let ByTrace { spans, traces, .. } = by_trace;
    let mut out = BytesMut::with_capacity(body.len() + traces.len() * 64);
    let (rejected_spans, rejections) = rejected.into_list();
    let mut result = SplitRequest {
        traces: Vec::with_capacity(traces.len()),
        accepted_spans: spans.len() as u64,
        rejected_spans,
        rejections,
    };
    let ctx = Layout {
        body,
        resources,
        scopes,
        spans: &spans,
    };
    let mut scope_lens = Vec::new();
    for t in &traces {
        ctx.write_trace(t.first, &mut scope_lens, &mut out);
        result.traces.push(TraceSegment {
            trace_id: t.id,
            resource_spans: out.split().freeze(),
            spans: t.spans,
        });
    }
    result
}

/// Calls `f` with each `TracesData.resource_spans` record in `data` (the payload of
/// each, in order). A framing error ends the walk: it is returned after the records
/// before it were passed on.
pub fn for_each_resource_spans(data: &[u8], mut f: impl FnMut(&[u8])) -> Result<(), WireError> {
    let mut top = Reader::new(data, 0..data.len());
    while let Some(rs) = top.next_expect_len(&[1])? {
        if rs.number == 1 {
            f(&data[rs.payload]);
        }
    }
    Ok(())
}

struct Layout<'a> {
    body: &'a [u8],
    resources: &'a [Vec<Range<usize>>],
    scopes: &'a [ScopeInfo],
    spans: &'a [SpanInfo],
}

impl Layout<'_> {
    fn iter_spans(&self, first: u32) -> impl Iterator<Item = &SpanInfo> + '_ {
        self.iter_spans_from(&self.spans[first as usize])
    }

    fn raw_len(ranges: &[Range<usize>]) -> usize {
        ranges.iter().map(|r| r.len()).sum()
    }

    /// Writes one trace as `TracesData.resource_spans` fields. Spans arrive in request
    /// order, so a trace's spans of one scope (and scopes of one resource) are adjacent.
    fn write_trace(&self, first: u32, scope_lens: &mut Vec<usize>, out: &mut BytesMut) {
        // Pass 1: the payload length of every ScopeSpans run, in order.
        scope_lens.clear();
        let mut current = u32::MAX;
        for s in self.iter_spans(first) {
            if s.scope != current {
                current = s.scope;
                scope_lens.push(Self::raw_len(&self.scopes[s.scope as usize].other));
            }
            if let Some(last) = scope_lens.last_mut() {
                *last += framed_len(s.payload.len());
            }
        }
        // Pass 2: write resource runs, each holding its scope runs.
        let mut spans = self.iter_spans(first).peekable();
        let mut scope_idx = 0;
        while let Some(&head) = spans.peek() {
            let resource = self.scopes[head.scope as usize].resource;
            let rs_fields = &self.resources[resource as usize];
            // Length of this resource run: its fields plus its scope runs.
            let mut rs_len = Self::raw_len(rs_fields);
            let mut n_scopes = 0;
            {
                let mut prev_scope = u32::MAX;
                for s in self.iter_spans_from(head) {
                    if self.scopes[s.scope as usize].resource != resource {
                        break;
                    }
                    if s.scope != prev_scope {
                        prev_scope = s.scope;
                        rs_len += framed_len(scope_lens[scope_idx + n_scopes]);
                        n_scopes += 1;
                    }
                }
            }
            out.put_u8(TAG_FIELD1_LEN);
            put_varint(out, rs_len);
            for r in rs_fields {
                out.put_slice(&self.body[r.clone()]);
            }
            for _ in 0..n_scopes {
                let Some(&first_in_scope) = spans.peek() else {
                    break;
                };
                let scope = first_in_scope.scope;
                out.put_u8(TAG_FIELD2_LEN);
                put_varint(out, scope_lens[scope_idx]);
                scope_idx += 1;
                for r in &self.scopes[scope as usize].other {
                    out.put_slice(&self.body[r.clone()]);
                }
                while let Some(s) = spans.next_if(|s| s.scope == scope) {
                    out.put_u8(TAG_FIELD2_LEN);
                    put_varint(out, s.payload.len());
                    out.put_slice(&self.body[s.payload.clone()]);
                }
            }
        }
    }

    fn iter_spans_from<'b>(
        &'b self,
        from: &'b SpanInfo,
    ) -> impl Iterator<Item = &'b SpanInfo> + 'b {
        std::iter::successors(Some(from), move |s| {
            (s.next != u32::MAX).then(|| &self.spans[s.next as usize])
        })
    }
}

/// Hand-made bytes for unit tests: what a careless or hostile client sends.
#[cfg(test)]
pub(crate) mod test_bytes {
    use opentelemetry_proto::tonic::trace::v1::Span;
    use prost::Message;

    /// A span of trace `[trace; 16]` with valid IDs whose `name` (field 5) is `0x2a 0x02
    /// 0xff 0xfe`: bytes that are not UTF-8 (the probe).
    pub(crate) fn span_with_non_utf8_name(trace: u8, span: u8) -> Vec<u8> {
        let mut bytes = Span {
            trace_id: vec![trace; 16],
            span_id: vec![span; 8],
            ..Default::default()
        }
        .encode_to_vec();
        bytes.extend([0x2a, 0x02, 0xff, 0xfe]);
        bytes
    }

    /// A request (equally a `TracesData`) holding the encoded spans in one scope.
    pub(crate) fn request_of(spans: &[Vec<u8>]) -> Vec<u8> {
        let mut scope = Vec::new();
        for s in spans {
            prost::encoding::bytes::encode(2, s, &mut scope);
        }
        let mut resource = Vec::new();
        prost::encoding::bytes::encode(2, &scope, &mut resource);
        let mut body = Vec::new();
        prost::encoding::bytes::encode(1, &resource, &mut body);
        body
    }
}

#[cfg(test)]
mod tests;

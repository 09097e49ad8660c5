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

use std::collections::HashMap;
use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

use crate::model::TraceId;

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
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::InvalidTraceId => "invalid_trace_id",
            RejectReason::InvalidSpanId => "invalid_span_id",
        }
    }

    fn message(self) -> &'static str {
        match self {
            RejectReason::InvalidTraceId => "trace ID must be 16 bytes and not all zero",
            RejectReason::InvalidSpanId => "span ID must be 8 bytes and not all zero",
        }
    }
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
    /// Rejected span counts by reason.
    pub rejections: Vec<(RejectReason, u64)>,
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
            .map(|(r, n)| format!("{n} spans rejected: {}", r.message()))
            .collect();
        Some(parts.join("; "))
    }
}

/// One protobuf field as the walk sees it.
struct Field {
    number: u32,
    wire: u8,
    /// The whole field, tag included.
    raw: Range<usize>,
    /// The payload of a LEN field.
    payload: Range<usize>,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], range: Range<usize>) -> Self {
        Self {
            buf,
            pos: range.start,
            end: range.end,
        }
    }

    fn err(&self, what: &'static str) -> WireError {
        WireError {
            offset: self.pos,
            what,
        }
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            if self.pos >= self.end {
                return Err(self.err("truncated varint"));
            }
            let b = self.buf[self.pos];
            self.pos += 1;
            value |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(value);
            }
        }
        Err(self.err("varint longer than 10 bytes"))
    }

    fn skip(&mut self, n: usize) -> Result<(), WireError> {
        if self.end - self.pos < n {
            return Err(self.err("field runs past the end of its message"));
        }
        self.pos += n;
        Ok(())
    }

    fn next(&mut self) -> Result<Option<Field>, WireError> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let start = self.pos;
        let key = self.varint()?;
        let number = u32::try_from(key >> 3).map_err(|_| self.err("field number too large"))?;
        if number == 0 {
            return Err(self.err("field number 0"));
        }
        let wire = (key & 7) as u8;
        let payload_start;
        match wire {
            WIRE_VARINT => {
                self.varint()?;
                payload_start = self.pos;
            }
            WIRE_FIXED64 => {
                payload_start = self.pos;
                self.skip(8)?;
            }
            WIRE_FIXED32 => {
                payload_start = self.pos;
                self.skip(4)?;
            }
            WIRE_LEN => {
                let len = self.varint()?;
                payload_start = self.pos;
                let len = usize::try_from(len).map_err(|_| self.err("length too large"))?;
                self.skip(len)?;
            }
            _ => return Err(self.err("unsupported wire type (groups are not used by OTLP)")),
        }
        Ok(Some(Field {
            number,
            wire,
            raw: start..self.pos,
            payload: payload_start..self.pos,
        }))
    }

    /// Next field, requiring LEN wire type for `len_fields`.
    fn next_expect_len(&mut self, len_fields: &[u32]) -> Result<Option<Field>, WireError> {
        let f = self.next()?;
        if let Some(f) = &f {
            if len_fields.contains(&f.number) && f.wire != WIRE_LEN {
                return Err(WireError {
                    offset: f.raw.start,
                    what: "message field with a non-length-delimited wire type",
                });
            }
        }
        Ok(f)
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

/// Splits an encoded `ExportTraceServiceRequest` (or `TracesData`) by trace ID.
///
/// Spans with an invalid trace or span ID are dropped and counted; the rest are kept.
/// A framing error anywhere fails the whole request: nothing of it is accepted.
pub fn split_by_trace(body: &[u8]) -> Result<SplitRequest, WireError> {
    let mut resources: Vec<Vec<Range<usize>>> = Vec::new();
    let mut scopes: Vec<ScopeInfo> = Vec::new();
    let mut spans: Vec<SpanInfo> = Vec::new();
    let mut traces: Vec<TraceInfo> = Vec::new();
    let mut index: HashMap<TraceId, u32> = HashMap::new();
    let mut rejected = [0u64; 2];

    let mut top = Reader::new(body, 0..body.len());
    while let Some(rs_field) = top.next_expect_len(&[1])? {
        if rs_field.number != 1 {
            continue;
        }
        let resource = resources.len() as u32;
        let mut rs_other = Vec::new();
        let mut rs = Reader::new(body, rs_field.payload);
        while let Some(f) = rs.next_expect_len(&[1, 2])? {
            if f.number != 2 {
                rs_other.push(f.raw);
                continue;
            }
            let scope = scopes.len() as u32;
            let mut scope_other = Vec::new();
            let mut ss = Reader::new(body, f.payload);
            while let Some(sf) = ss.next_expect_len(&[1, 2])? {
                if sf.number != 2 {
                    scope_other.push(sf.raw);
                    continue;
                }
                let (trace_id, span_id) = span_ids(body, sf.payload.clone())?;
                let trace = match TraceId::from_bytes(trace_id) {
                    Ok(t) => t,
                    Err(_) => {
                        rejected[0] += 1;
                        continue;
                    }
                };
                if span_id.len() != 8 || span_id == [0u8; 8] {
                    rejected[1] += 1;
                    continue;
                }
                let span = spans.len() as u32;
                spans.push(SpanInfo {
                    scope,
                    payload: sf.payload,
                    next: u32::MAX,
                });
                match index.get(&trace) {
                    Some(&t) => {
                        let info = &mut traces[t as usize];
                        spans[info.last as usize].next = span;
                        info.last = span;
                        info.spans += 1;
                    }
                    None => {
                        index.insert(trace, traces.len() as u32);
                        traces.push(TraceInfo {
                            id: trace,
                            first: span,
                            last: span,
                            spans: 1,
                        });
                    }
                }
            }
            scopes.push(ScopeInfo {
                resource,
                other: scope_other,
            });
        }
        resources.push(rs_other);
    }

    let mut out = BytesMut::with_capacity(body.len() + traces.len() * 64);
    let mut result = SplitRequest {
        traces: Vec::with_capacity(traces.len()),
        accepted_spans: spans.len() as u64,
        rejected_spans: rejected[0] + rejected[1],
        rejections: [RejectReason::InvalidTraceId, RejectReason::InvalidSpanId]
            .into_iter()
            .zip(rejected)
            .filter(|(_, n)| *n > 0)
            .collect(),
    };
    let ctx = Layout {
        body,
        resources: &resources,
        scopes: &scopes,
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
    Ok(result)
}

/// Reads a span's trace ID and span ID, checking the framing of its top-level fields.
fn span_ids(body: &[u8], payload: Range<usize>) -> Result<(&[u8], &[u8]), WireError> {
    let mut trace_id: &[u8] = &[];
    let mut span_id: &[u8] = &[];
    let mut r = Reader::new(body, payload);
    while let Some(f) = r.next_expect_len(&[1, 2])? {
        match f.number {
            1 => trace_id = &body[f.payload],
            2 => span_id = &body[f.payload],
            _ => {}
        }
    }
    Ok((trace_id, span_id))
}

/// Earliest span start and latest span end (ns since the epoch) in `TracesData` bytes
/// (fields 7 and 8 of each span), read shallowly. `None` if no span has times or the
/// bytes do not parse.
pub fn time_range(data: &[u8]) -> Option<(u64, u64)> {
    let mut range: Option<(u64, u64)> = None;
    let mut top = Reader::new(data, 0..data.len());
    while let Some(rs) = top.next_expect_len(&[1]).ok()? {
        if rs.number != 1 {
            continue;
        }
        let mut r = Reader::new(data, rs.payload);
        while let Some(ss) = r.next_expect_len(&[1, 2]).ok()? {
            if ss.number != 2 {
                continue;
            }
            let mut s = Reader::new(data, ss.payload);
            while let Some(span) = s.next_expect_len(&[1, 2]).ok()? {
                if span.number != 2 {
                    continue;
                }
                let mut f = Reader::new(data, span.payload);
                let (mut start, mut end) = (None, None);
                while let Some(field) = f.next().ok()? {
                    if field.wire == WIRE_FIXED64 && (field.number == 7 || field.number == 8) {
                        let v = u64::from_le_bytes(data[field.payload].try_into().ok()?);
                        if field.number == 7 {
                            start = Some(v);
                        } else {
                            end = Some(v);
                        }
                    }
                }
                if let (Some(st), Some(en)) = (start, end.or(start)) {
                    range = Some(range.map_or((st, en), |(a, b)| (a.min(st), b.max(en))));
                }
            }
        }
    }
    range
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

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{
        any_value, AnyValue, InstrumentationScope, KeyValue,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, TracesData};
    use prost::Message;

    fn span(trace: u8, id: u8, name: &str) -> Span {
        Span {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            name: name.into(),
            kind: 2,
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            attributes: vec![KeyValue {
                key: "k".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue("v".repeat(id as usize))),
                }),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn resource(name: &str, scopes: Vec<ScopeSpans>) -> ResourceSpans {
        ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(name.into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: scopes,
            schema_url: "https://schema/1".into(),
        }
    }

    fn scope(name: &str, spans: Vec<Span>) -> ScopeSpans {
        ScopeSpans {
            scope: Some(InstrumentationScope {
                name: name.into(),
                ..Default::default()
            }),
            spans,
            schema_url: String::new(),
        }
    }

    #[test]
    fn split_keeps_resource_and_scope_of_every_span_and_groups_by_trace() {
        let req = ExportTraceServiceRequest {
            resource_spans: vec![
                resource(
                    "svc-a",
                    vec![
                        scope(
                            "s1",
                            vec![span(1, 1, "a"), span(2, 2, "b"), span(1, 3, "c")],
                        ),
                        scope("s2", vec![span(1, 4, "d")]),
                    ],
                ),
                resource("svc-b", vec![scope("s3", vec![span(2, 5, "e")])]),
            ],
        };
        let body = req.encode_to_vec();
        let split = split_by_trace(&body).expect("valid");
        assert_eq!(split.accepted_spans, 5);
        assert_eq!(split.rejected_spans, 0);
        assert_eq!(split.traces.len(), 2);

        let t1 = TracesData::decode(split.traces[0].resource_spans.clone()).expect("decodes");
        assert_eq!(split.traces[0].trace_id, TraceId([1; 16]));
        assert_eq!(
            t1,
            TracesData {
                resource_spans: vec![resource(
                    "svc-a",
                    vec![
                        scope("s1", vec![span(1, 1, "a"), span(1, 3, "c")]),
                        scope("s2", vec![span(1, 4, "d")]),
                    ],
                )]
            }
        );
        let t2 = TracesData::decode(split.traces[1].resource_spans.clone()).expect("decodes");
        assert_eq!(
            t2,
            TracesData {
                resource_spans: vec![
                    resource("svc-a", vec![scope("s1", vec![span(2, 2, "b")])]),
                    resource("svc-b", vec![scope("s3", vec![span(2, 5, "e")])]),
                ]
            }
        );
    }

    #[test]
    fn invalid_ids_are_rejected_and_the_rest_is_kept() {
        let mut zero_trace = span(1, 1, "zero-trace");
        zero_trace.trace_id = vec![0; 16];
        let mut short_trace = span(1, 2, "short-trace");
        short_trace.trace_id = vec![1; 8];
        let mut zero_span = span(1, 3, "zero-span");
        zero_span.span_id = vec![0; 8];
        let mut long_span = span(1, 4, "long-span");
        long_span.span_id = vec![4; 16];
        let req = ExportTraceServiceRequest {
            resource_spans: vec![resource(
                "svc",
                vec![scope(
                    "s",
                    vec![
                        zero_trace,
                        short_trace,
                        zero_span,
                        long_span,
                        span(3, 9, "ok"),
                    ],
                )],
            )],
        };
        let split = split_by_trace(&req.encode_to_vec()).expect("valid framing");
        assert_eq!(split.accepted_spans, 1);
        assert_eq!(split.rejected_spans, 4);
        assert_eq!(
            split.rejections,
            vec![
                (RejectReason::InvalidTraceId, 2),
                (RejectReason::InvalidSpanId, 2)
            ]
        );
        assert!(split
            .rejection_message()
            .expect("message")
            .contains("trace ID"));
        assert_eq!(split.traces.len(), 1);
        assert_eq!(split.traces[0].trace_id, TraceId([3; 16]));
    }

    #[test]
    fn malformed_protobuf_is_an_error_not_a_panic() {
        let req = ExportTraceServiceRequest {
            resource_spans: vec![resource("svc", vec![scope("s", vec![span(1, 1, "a")])])],
        };
        let body = req.encode_to_vec();
        for cut in 1..body.len() {
            // Any truncation is either an error or a shorter valid prefix; never a panic.
            let _ = split_by_trace(&body[..cut]);
        }
        assert!(split_by_trace(&body[..body.len() - 1]).is_err());
        assert!(split_by_trace(&[0xff, 0xff, 0xff]).is_err());
        assert!(split_by_trace(b"{\"resourceSpans\": []}").is_err());
    }

    #[test]
    fn empty_request_has_no_traces() {
        let split = split_by_trace(&[]).expect("empty is valid protobuf");
        assert!(split.traces.is_empty());
        assert_eq!(split.accepted_spans, 0);
    }

    #[test]
    fn time_range_covers_every_span() {
        let mut late = span(1, 2, "late");
        late.start_time_unix_nano = 50;
        late.end_time_unix_nano = 90;
        let req = ExportTraceServiceRequest {
            resource_spans: vec![resource(
                "svc",
                vec![scope("s", vec![span(1, 1, "a"), late])],
            )],
        };
        assert_eq!(time_range(&req.encode_to_vec()), Some((1, 90)));
        assert_eq!(time_range(&[]), None);
    }

    #[test]
    fn varint_lengths() {
        for v in [0usize, 1, 127, 128, 16383, 16384, 1 << 21, usize::MAX >> 1] {
            let mut b = BytesMut::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v), "{v}");
        }
    }
}

//! The ingester's check of a pushed trace segment (`TracesData.resource_spans` records of
//! one trace): the framing of every record, scope and span field (tags, wire types,
//! lengths), and that every span belongs to the segment's trace and has a span ID. The
//! same walk reads what the ingester keeps about the segment (span count, time range), so
//! no later step walks the bytes again.
//!
//! It does not repeat the distributor's schema check of every nested field (UTF-8,
//! attribute values): that would cost about 300 ns per span on each of the three
//! replicas, 0.9 CPU-s per million spans (BENCHMARKS.md), to guard against a peer that
//! holds the cluster secret, while reads already decode each stored record on its own.

use thiserror::Error;

use super::{Reader, WireError, WIRE_FIXED64, WIRE_LEN};
use crate::model::TraceId;

/// What a valid segment holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentFacts {
    pub spans: u32,
    /// Earliest span start and latest span end (ns since the epoch); `start` is
    /// `u64::MAX` and `end` 0 when no span has a start time.
    pub start: u64,
    pub end: u64,
}

#[derive(Debug, Error)]
pub enum SegmentError {
    #[error("{0}")]
    Framing(#[from] WireError),
    #[error("field {0} is not a TracesData.resource_spans record")]
    NotResourceSpans(u32),
    #[error("span {index} belongs to trace {found}, not to the segment's")]
    OtherTrace { index: u32, found: String },
    #[error("span {0} has an invalid span ID")]
    SpanId(u32),
}

/// Checks `data` as a segment of `trace` and returns its facts.
pub fn check_segment(data: &[u8], trace: &TraceId) -> Result<SegmentFacts, SegmentError> {
    let mut facts = SegmentFacts {
        spans: 0,
        start: u64::MAX,
        end: 0,
    };
    let mut top = Reader::new(data, 0..data.len());
    while let Some(rs) = top.next_expect_len(&[1])? {
        if rs.number != 1 {
            return Err(SegmentError::NotResourceSpans(rs.number));
        }
        let mut r = Reader::new(data, rs.payload);
        while let Some(ss) = r.next_expect_len(&[1, 2])? {
            if ss.number != 2 {
                continue;
            }
            let mut s = Reader::new(data, ss.payload);
            while let Some(span) = s.next_expect_len(&[1, 2])? {
                if span.number == 2 {
                    add_span(data, span.payload, trace, &mut facts)?;
                }
            }
        }
    }
    Ok(facts)
}

/// Reads a span's IDs and times (the last occurrence of each, as a decoder keeps),
/// checking the framing of every field.
fn add_span(
    data: &[u8],
    payload: std::ops::Range<usize>,
    trace: &TraceId,
    facts: &mut SegmentFacts,
) -> Result<(), SegmentError> {
    let index = facts.spans;
    let (mut trace_id, mut span_id): (&[u8], &[u8]) = (&[], &[]);
    let (mut start, mut end) = (0u64, 0u64);
    let mut r = Reader::new(data, payload);
    while let Some(f) = r.next()? {
        let fixed64 = || {
            data[f.payload.clone()]
                .try_into()
                .map(u64::from_le_bytes)
                .unwrap_or_default()
        };
        match (f.number, f.wire) {
            (1, WIRE_LEN) => trace_id = &data[f.payload],
            (2, WIRE_LEN) => span_id = &data[f.payload],
            (7, WIRE_FIXED64) => start = fixed64(),
            (8, WIRE_FIXED64) => end = fixed64(),
            _ => {}
        }
    }
    if trace_id != trace.0 {
        return Err(SegmentError::OtherTrace {
            index,
            found: hex::encode(trace_id),
        });
    }
    if span_id.len() != 8 || span_id == [0u8; 8] {
        return Err(SegmentError::SpanId(index));
    }
    if start != 0 {
        facts.start = facts.start.min(start);
        facts.end = facts.end.max(end.max(start));
    }
    facts.spans += 1;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::split_by_trace;
    use crate::otlp::test_bytes::{request_of, span_with_non_utf8_name};
    use opentelemetry_proto::tonic::trace::v1::Span;
    use prost::Message;

    fn span(trace: u8, id: u8, start: u64, end: u64) -> Vec<u8> {
        Span {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            name: "op".into(),
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn what_the_split_writes_passes_with_its_span_count_and_time_range() {
        let body = request_of(&[span(1, 1, 10, 20), span(2, 1, 5, 6), span(1, 2, 3, 90)]);
        let split = split_by_trace(&body).expect("valid");
        for t in &split.traces {
            let facts = check_segment(&t.resource_spans, &t.trace_id).expect("valid");
            assert_eq!(facts.spans, t.spans);
            if t.trace_id.0 == [1; 16] {
                assert_eq!((facts.start, facts.end), (3, 90));
            }
        }
    }

    #[test]
    fn a_span_of_another_trace_random_bytes_or_a_malformed_span_are_refused() {
        let t1 = TraceId([1; 16]);
        let body = request_of(&[span(1, 1, 1, 2), span(2, 1, 1, 2)]);
        // The whole request as one segment: its second span is of trace 2.
        let records = &body[..];
        assert!(matches!(
            check_segment(records, &t1),
            Err(SegmentError::OtherTrace { index: 1, .. })
        ));
        assert!(check_segment(&[0xff, 0x13, 0x02], &t1).is_err());
        // A record cut short: framing, refused.
        let whole = request_of(&[span(1, 1, 1, 2)]);
        let cut = &whole[..whole.len() - 1];
        assert!(matches!(
            check_segment(cut, &t1),
            Err(SegmentError::Framing(_))
        ));
        // A span field with the wrong wire type for an ID: no trace ID, refused.
        let mut wrong_wire = span(1, 1, 1, 2);
        wrong_wire[0] = 0x08; // field 1 as a varint: the bytes after it no longer frame
        assert!(check_segment(&request_of(&[wrong_wire]), &t1).is_err());
        // A string that is not UTF-8 is the distributor's to refuse (see the module doc).
        let not_utf8 = request_of(&[span_with_non_utf8_name(1, 1)]);
        assert!(check_segment(&not_utf8, &t1).is_ok());
        let no_span_id = request_of(&[span(1, 0, 1, 2)]);
        assert!(matches!(
            check_segment(&no_span_id, &t1),
            Err(SegmentError::SpanId(0))
        ));
    }

    #[test]
    fn a_segment_without_times_has_an_empty_range() {
        let body = request_of(&[span(1, 1, 0, 0)]);
        let facts = check_segment(&body, &TraceId([1; 16])).expect("valid");
        assert_eq!((facts.spans, facts.start, facts.end), (1, u64::MAX, 0));
    }
}

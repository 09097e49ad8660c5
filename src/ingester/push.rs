//! Decoding a distributor's push: the tenant, and each trace's segment with its time range.

use bytes::Bytes;
use prost::Message;

use super::live::Segment;
use crate::model::{TenantId, TraceId};
use crate::rpc::pool::MAX_INTERNAL_MESSAGE;
use crate::rpc::proto::PushRequest;
use crate::rpc::push_frame::{expand_traces, DecompressError};

#[derive(Debug, thiserror::Error)]
pub(crate) enum PushDecodeError {
    #[error("malformed push: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("push has an invalid tenant: {0}")]
    Tenant(#[from] crate::model::TenantIdError),
    #[error("push has an invalid trace ID: {0}")]
    TraceId(#[from] crate::model::TraceIdError),
    #[error("push has compressed traces that cannot be read: {0}")]
    Compressed(#[from] DecompressError),
    #[error("push names segment {index} as unindexed, but has {segments} segments")]
    Unindexed { index: u32, segments: usize },
    #[error("push segment {index} (trace {trace}): {source}")]
    Segment {
        index: usize,
        trace: TraceId,
        source: crate::otlp::SegmentError,
    },
}

/// How strictly [`decode_push`] reads segments.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Check {
    /// A push: every segment must pass what the distributor checks (the schema, every
    /// span of the segment's trace), or the push is refused.
    Strict,
    /// WAL replay: records were acked, so a segment that does not pass is kept as it is
    /// (reads decode records one by one and report what does not decode).
    Replay,
}

pub(super) fn decode_push(
    body: Bytes,
    check: Check,
) -> Result<(TenantId, Vec<Segment>), PushDecodeError> {
    decode_push_within(body, check, MAX_INTERNAL_MESSAGE)
}

/// [`decode_push`], with compressed traces of at most `limit` bytes decompressed (the
/// bound tonic puts on a plain push: its whole message).
pub(super) fn decode_push_within(
    body: Bytes,
    check: Check,
    limit: usize,
) -> Result<(TenantId, Vec<Segment>), PushDecodeError> {
    let mut push = PushRequest::decode(body)?;
    let tenant = TenantId::parse(&push.tenant)?;
    // A frame claiming more than `limit` is refused unread.
    expand_traces(&mut push, limit)?;
    let mut segments = Vec::with_capacity(push.traces.len());
    for (index, t) in push.traces.into_iter().enumerate() {
        let trace = TraceId::from_bytes(&t.trace_id)?;
        let (start, end) = match crate::otlp::check_segment(&t.resource_spans, &trace) {
            Ok(facts) => (facts.start, facts.end),
            Err(_) if check == Check::Replay => (u64::MAX, 0),
            Err(source) => {
                return Err(PushDecodeError::Segment {
                    index,
                    trace,
                    source,
                })
            }
        };
        segments.push(Segment {
            trace,
            data: t.resource_spans,
            start,
            end,
            indexed: true,
        });
    }
    for index in push.unindexed {
        match segments.get_mut(index as usize) {
            Some(s) => s.indexed = false,
            // Replay keeps an acked record's segments (indexed: searchable is safe).
            None if check == Check::Replay => {}
            None => {
                return Err(PushDecodeError::Unindexed {
                    index,
                    segments: segments.len(),
                })
            }
        }
    }
    Ok((tenant, segments))
}

/// `segments` but those at the (ascending) indices `drop`.
pub(super) fn without(segments: Vec<Segment>, drop: &[u32]) -> Vec<Segment> {
    segments
        .into_iter()
        .enumerate()
        .filter(|(i, _)| drop.binary_search(&(*i as u32)).is_err())
        .map(|(_, s)| s)
        .collect()
}

/// The push record of `segments` alone (what the WAL keeps when some were refused).
pub(super) fn encode(tenant: &TenantId, segments: &[Segment]) -> Bytes {
    use crate::rpc::push_frame::{encode_push, encode_unindexed};
    let mut body = encode_push(
        tenant.as_str(),
        segments.iter().map(|s| (&s.trace.0[..], &s.data[..])),
    );
    let unindexed: Vec<u32> = (0..segments.len() as u32)
        .filter(|&i| !segments[i as usize].indexed)
        .collect();
    body.extend_from_slice(&encode_unindexed(&unindexed));
    body.into()
}

/// A push as a distributor builds it: `traces` traces of 3 spans each.
#[cfg(test)]
pub(super) fn test_push(traces: u8) -> Vec<u8> {
    use crate::otlp::split_by_trace;
    use crate::rpc::proto::TraceSegment;
    use opentelemetry_proto::tonic::trace::v1::Span;
    let spans: Vec<Vec<u8>> = (1..=traces)
        .flat_map(|t| {
            (1..=3u8).map(move |s| {
                Span {
                    trace_id: vec![t; 16],
                    span_id: vec![s; 8],
                    name: format!("op-{s}"),
                    start_time_unix_nano: u64::from(t) * 10,
                    end_time_unix_nano: u64::from(t) * 10 + 5,
                    ..Default::default()
                }
                .encode_to_vec()
            })
        })
        .collect();
    let body = crate::otlp::test_bytes::request_of(&spans);
    let split = split_by_trace(&body).expect("valid");
    PushRequest {
        tenant: "t".into(),
        traces: split
            .traces
            .into_iter()
            .map(|t| TraceSegment {
                trace_id: Bytes::copy_from_slice(&t.trace_id.0),
                resource_spans: t.resource_spans,
            })
            .collect(),
        unindexed: Vec::new(),
        compressed_traces: Bytes::new(),
    }
    .encode_to_vec()
}

/// [`test_push`]'s traces as a distributor compresses them, with `unindexed` after.
#[cfg(test)]
pub(super) fn test_push_compressed(traces: u8, unindexed: &[u32]) -> Bytes {
    use crate::rpc::push_frame::{encode_push_compressed, encode_unindexed};
    let plain = PushRequest::decode(Bytes::from(test_push(traces))).expect("decodes");
    let mut body = encode_push_compressed(
        &plain.tenant,
        plain
            .traces
            .iter()
            .map(|t| (&t.trace_id[..], &t.resource_spans[..])),
    )
    .expect("compresses");
    body.extend_from_slice(&encode_unindexed(unindexed));
    body.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};

    fn push(traces: u8) -> Vec<u8> {
        test_push(traces)
    }

    #[test]
    fn a_distributors_push_decodes_with_each_traces_time_range() {
        let (tenant, segments) = decode_push(push(4).into(), Check::Strict).expect("valid");
        assert_eq!(tenant.as_str(), "t");
        assert_eq!(segments.len(), 4);
        for s in &segments {
            let t = u64::from(s.trace.0[0]);
            assert_eq!((s.start, s.end), (t * 10, t * 10 + 5));
        }
    }

    /// A compressed push holds what the plain one does: the same segments, time ranges
    /// and unindexed ones; as a plain push again it is the plain push's bytes.
    #[test]
    fn a_compressed_push_decodes_to_the_plain_pushes_segments() {
        use crate::rpc::push_frame::{encode_unindexed, plain_of, DecompressError};
        let mut plain = push(6);
        plain.extend_from_slice(&encode_unindexed(&[1, 4]));
        let compressed = test_push_compressed(6, &[1, 4]);
        assert!(
            compressed.len() * 2 < plain.len(),
            "{} bytes compressed, {} plain",
            compressed.len(),
            plain.len()
        );
        let (tenant, a) = decode_push(plain.clone().into(), Check::Strict).expect("plain");
        let (same, b) = decode_push(compressed.clone(), Check::Strict).expect("compressed");
        assert_eq!(tenant, same);
        let facts = |s: &[Segment]| -> Vec<_> {
            s.iter()
                .map(|s| (s.trace, s.data.clone(), s.start, s.end, s.indexed))
                .collect()
        };
        assert_eq!(facts(&a), facts(&b));
        assert_eq!(b.iter().filter(|s| !s.indexed).count(), 2);
        assert_eq!(plain_of(&compressed, 1 << 20).expect("plain again"), plain);
        // Over the push size the gRPC server allows, decompressed: refused.
        let within = decode_push_within(compressed, Check::Strict, plain.len() / 2);
        assert!(matches!(
            within.err(),
            Some(PushDecodeError::Compressed(
                DecompressError::TooLarge { .. }
            ))
        ));
    }

    /// A compressed push that claims more than the limit, says no size, or is damaged
    /// anywhere is refused with an error, never a panic (5,000 mutations).
    #[test]
    fn damaged_compressed_pushes_are_refused_never_a_panic() {
        use crate::rpc::push_frame::{decompress_traces, DecompressError};
        let body = test_push_compressed(5, &[]);
        let packed = PushRequest::decode(body.clone())
            .expect("decodes")
            .compressed_traces;
        let size = decompress_traces(&packed, 1 << 20).expect("whole").len();
        assert_eq!(
            decompress_traces(&packed, size - 1),
            Err(DecompressError::TooLarge {
                size: size as u64,
                limit: size - 1
            })
        );
        // A streamed frame does not record its content size.
        let unsized_frame = zstd::stream::encode_all(&b"traces"[..], 1).expect("compresses");
        assert_eq!(
            decompress_traces(&unsized_frame, 1 << 20),
            Err(DecompressError::NoSize)
        );
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut refused = 0;
        for _ in 0..5_000 {
            let mut m = body.to_vec();
            let at = rng.random_range(0..m.len());
            match rng.random_range(0..3) {
                0 => m[at] = rng.random(),
                1 => m[at] ^= 1 << rng.random_range(0..8),
                _ => m.truncate(at),
            }
            match decode_push(Bytes::from(m), Check::Strict) {
                Ok((_, segments)) => {
                    for s in segments {
                        assert!(crate::otlp::check_segment(&s.data, &s.trace).is_ok());
                    }
                }
                Err(_) => refused += 1,
            }
        }
        assert!(refused > 2_500, "{refused} of 5000 refused");
    }

    /// 20,000 mutated pushes: never a panic; what a strict decode accepts has only spans
    /// of each segment's trace; replay never drops a record for a failed segment check
    /// (acked records are kept), only for a push that does not decode at all.
    #[test]
    fn mutated_pushes_never_panic_and_accepted_segments_hold_only_their_trace() {
        let original = push(5);
        let mut rng = rand::rngs::StdRng::seed_from_u64(10);
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..20_000 {
            let mut m = original.clone();
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..m.len());
                match rng.random_range(0..3) {
                    0 => m[at] = rng.random(),
                    1 => m[at] ^= 1 << rng.random_range(0..8),
                    _ => m.truncate(at),
                }
                if m.is_empty() {
                    break;
                }
            }
            let body = Bytes::from(m);
            match decode_push(body.clone(), Check::Strict) {
                Ok((_, segments)) => {
                    accepted += 1;
                    for s in segments {
                        assert!(crate::otlp::check_segment(&s.data, &s.trace).is_ok());
                    }
                }
                Err(PushDecodeError::Segment { .. }) => {
                    refused += 1;
                    let replayed = decode_push(body, Check::Replay);
                    assert!(!matches!(replayed, Err(PushDecodeError::Segment { .. })));
                }
                Err(_) => refused += 1,
            }
        }
        assert!(accepted > 1000 && refused > 1000, "{accepted} / {refused}");
    }
}

//! Unit tests of the split walk (the schema's own tests are in schema.rs).
use super::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
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
    let by_reason: Vec<(RejectReason, u64)> = split
        .rejections
        .iter()
        .map(|r| (r.reason, r.spans))
        .collect();
    assert_eq!(
        by_reason,
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
fn a_malformed_span_is_rejected_with_its_reason_and_the_rest_is_kept() {
    // The probe: a span of trace 1 with valid IDs and `name` as `0x2a 0x02
    // 0xff 0xfe` (not UTF-8), next to a good span of the same trace.
    let good = span(1, 1, "good");
    let body = test_bytes::request_of(&[
        good.encode_to_vec(),
        test_bytes::span_with_non_utf8_name(1, 2),
    ]);

    let split = split_by_trace(&body).expect("the framing is fine");
    assert_eq!((split.accepted_spans, split.rejected_spans), (1, 1));
    assert_eq!(split.rejections[0].reason, RejectReason::MalformedSpan);
    let message = split.rejection_message().expect("message");
    assert!(
        message.contains("Span.name") && message.contains("UTF-8"),
        "{message}"
    );
    let kept = TracesData::decode(split.traces[0].resource_spans.clone()).expect("decodes");
    assert_eq!(kept.resource_spans[0].scope_spans[0].spans, vec![good]);
}

#[test]
fn a_malformed_resource_or_scope_rejects_its_spans_only() {
    let mut broken = resource("svc-a", vec![scope("s1", vec![span(1, 1, "a")])]);
    broken.schema_url = String::new();
    let mut body = ExportTraceServiceRequest {
        resource_spans: vec![broken],
    }
    .encode_to_vec();
    // Append to the first ResourceSpans a schema_url (field 3) that is not UTF-8.
    body.extend(
        ExportTraceServiceRequest {
            resource_spans: vec![resource("svc-b", vec![scope("s2", vec![span(2, 2, "b")])])],
        }
        .encode_to_vec(),
    );
    let first_len = body[1] as usize;
    let mut patched = vec![0x0a, (first_len + 3) as u8];
    patched.extend(&body[2..2 + first_len]);
    patched.extend([0x1a, 0x01, 0xff]);
    patched.extend(&body[2 + first_len..]);
    let split = split_by_trace(&patched).expect("framing is fine");
    assert_eq!((split.accepted_spans, split.rejected_spans), (1, 1));
    assert_eq!(split.rejections[0].reason, RejectReason::MalformedResource);
    assert_eq!(split.traces[0].trace_id, TraceId([2; 16]));
}

/// The property the validator exists for: whatever bytes arrive, every trace the split
/// keeps decodes as a decoder (prost) decodes it on the read path, and nothing panics.
#[test]
fn whatever_is_kept_from_mutated_requests_decodes() {
    use rand::{RngExt, SeedableRng};
    let req = ExportTraceServiceRequest {
        resource_spans: vec![
            resource(
                "svc-a",
                vec![scope(
                    "s1",
                    vec![span(1, 1, "a"), span(2, 2, "bé"), span(1, 3, "c")],
                )],
            ),
            resource("svc-b", vec![scope("s2", vec![span(3, 4, "d")])]),
        ],
    };
    let body = req.encode_to_vec();
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let (mut kept, mut refused) = (0, 0);
    for _ in 0..20_000 {
        let mut m = body.clone();
        for _ in 0..rng.random_range(1..4) {
            let at = rng.random_range(0..m.len());
            match rng.random_range(0..3) {
                0 => m[at] = rng.random(),
                1 => m[at] ^= 1 << rng.random_range(0..8),
                _ => m.insert(at, rng.random()),
            }
        }
        match split_by_trace(&m) {
            Ok(split) => {
                kept += 1;
                for t in &split.traces {
                    TracesData::decode(t.resource_spans.clone()).unwrap_or_else(|e| {
                        panic!("kept bytes do not decode ({e}); input {m:02x?}")
                    });
                }
            }
            Err(_) => refused += 1,
        }
    }
    assert!(
        kept > 1000 && refused > 1000,
        "kept {kept}, refused {refused}"
    );
}

#[test]
fn empty_request_has_no_traces() {
    let split = split_by_trace(&[]).expect("empty is valid protobuf");
    assert!(split.traces.is_empty());
    assert_eq!(split.accepted_spans, 0);
}

#[test]
fn varint_lengths() {
    for v in [0usize, 1, 127, 128, 16383, 16384, 1 << 21, usize::MAX >> 1] {
        let mut b = BytesMut::new();
        put_varint(&mut b, v);
        assert_eq!(b.len(), varint_len(v), "{v}");
    }
}

/// Every field the inline path of `Reader::next` reads, and every error, is what the
/// general path reads: over a real span's bytes cut at every length, and over random
/// bytes whose short keys and lengths the inline path takes.
#[test]
fn the_inline_field_read_agrees_with_the_general_one() {
    use rand::{RngExt, SeedableRng};
    let walk = |bytes: &[u8], inline: bool| {
        let mut r = Reader::new(bytes, 0..bytes.len());
        let mut out = Vec::new();
        loop {
            let f = if inline { r.next() } else { r.next_general() };
            match f {
                Ok(Some(f)) => out.push(Ok((f.number, f.wire, f.raw, f.payload))),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err((e.offset, e.what)));
                    break;
                }
            }
        }
        out
    };
    let real = TracesData {
        resource_spans: vec![resource(
            "svc",
            vec![scope(
                "lib",
                vec![span(1, 1, "GET /"), span(1, 200, "long")],
            )],
        )],
    }
    .encode_to_vec();
    let mut rng = rand::rngs::StdRng::seed_from_u64(14);
    let random = (0..2000).map(|_| {
        let len = rng.random_range(0..24);
        (0..len)
            .map(|_| match rng.random_range(0..4) {
                0 => rng.random_range(8..0x80u8),
                1 => rng.random_range(0..12u8),
                _ => rng.random(),
            })
            .collect::<Vec<u8>>()
    });
    let cuts = (0..=real.len()).map(|n| real[..n].to_vec());
    let mut inline_reads = 0;
    for bytes in cuts.chain(random) {
        let fast = walk(&bytes, true);
        assert_eq!(fast, walk(&bytes, false), "{bytes:?}");
        inline_reads += fast.iter().filter(|f| f.is_ok()).count();
    }
    assert!(inline_reads > 500, "{inline_reads}");
}

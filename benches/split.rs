//! The distributor's per-request CPU: shallow split by trace ID versus a full prost
//! decode, regroup and re-encode (what a naive distributor does); and the ingester's
//! check of the segments it is pushed.
//!
//! `cargo bench --bench split`

use std::collections::HashMap;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, TracesData};
use prost::Message;

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// A request like the load tool's: `spans` spans, 10 per trace, a few attributes each.
fn request(spans: usize) -> Vec<u8> {
    let spans: Vec<Span> = (0..spans)
        .map(|i| {
            let mut trace_id = [0u8; 16];
            trace_id[..8].copy_from_slice(&((i / 10) as u64 + 1).to_le_bytes());
            trace_id[8] = 0xab;
            let mut span_id = [0u8; 8];
            span_id.copy_from_slice(&(i as u64 + 1).to_le_bytes());
            Span {
                trace_id: trace_id.to_vec(),
                span_id: span_id.to_vec(),
                parent_span_id: span_id.to_vec(),
                name: format!("GET /api/items/{}", i % 16),
                kind: 2,
                start_time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
                end_time_unix_nano: 1_700_000_000_001_000_000 + i as u64,
                attributes: vec![
                    kv("http.method", "GET"),
                    kv("http.route", "/api/items/{id}"),
                    kv("payload", &"x".repeat(64)),
                ],
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "bench"), kv("host.name", "node-1")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "bench".into(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
    .encode_to_vec()
}

/// Full decode, regroup by trace and re-encode every trace.
fn full_decode_regroup(body: &[u8]) -> usize {
    let Ok(req) = ExportTraceServiceRequest::decode(body) else {
        return 0;
    };
    let mut by_trace: HashMap<Vec<u8>, Vec<ResourceSpans>> = HashMap::new();
    for rs in req.resource_spans {
        for ss in &rs.scope_spans {
            for span in &ss.spans {
                let entry = by_trace.entry(span.trace_id.clone()).or_default();
                entry.push(ResourceSpans {
                    resource: rs.resource.clone(),
                    scope_spans: vec![ScopeSpans {
                        scope: ss.scope.clone(),
                        spans: vec![span.clone()],
                        schema_url: ss.schema_url.clone(),
                    }],
                    schema_url: rs.schema_url.clone(),
                });
            }
        }
    }
    by_trace
        .into_values()
        .map(|resource_spans| TracesData { resource_spans }.encode_to_vec().len())
        .sum()
}

fn split(c: &mut Criterion) {
    let mut group = c.benchmark_group("split_request");
    for spans in [500usize, 2000] {
        let body = request(spans);
        group.throughput(Throughput::Elements(spans as u64));
        group.bench_with_input(BenchmarkId::new("shallow", spans), &body, |b, body| {
            b.iter(|| ringtail::otlp::split_by_trace(body).map(|s| s.traces.len()))
        });
        group.bench_with_input(
            BenchmarkId::new("full_decode_regroup_encode", spans),
            &body,
            |b, body| b.iter(|| full_decode_regroup(body)),
        );
    }
    group.finish();
}

/// The ingester's check of each pushed segment (the schema again, every span's trace ID,
/// and the time range it keeps for the cut).
fn ingester_check(c: &mut Criterion) {
    let mut group = c.benchmark_group("ingester_check");
    for spans in [500usize, 2000] {
        let body = request(spans);
        let Ok(split) = ringtail::otlp::split_by_trace(&body) else {
            continue;
        };
        group.throughput(Throughput::Elements(spans as u64));
        group.bench_with_input(
            BenchmarkId::new("check_segment", spans),
            &split,
            |b, split| {
                b.iter(|| {
                    split
                        .traces
                        .iter()
                        .filter(|t| {
                            ringtail::otlp::check_segment(&t.resource_spans, &t.trace_id).is_ok()
                        })
                        .count()
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, split, ingester_check);
criterion_main!(benches);

//! What an ingester's block completion costs, part by part: the data (zstd pages, index,
//! filter) and the search section, over traces shaped as SDKs send them (10 spans per
//! trace; 6 resource attributes, 4-6 span attributes; 248 bytes per span with each trace's
//! resource, as a block holds it).
//!
//! `cargo bench --bench block`

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, TracesData};
use prost::Message;
use ringtail::bench::span_shape;
use ringtail::model::TraceId;
use ringtail::storage::block::{
    encode_sorted, BlockInfo, BlockTrace, LEVEL0_ZSTD_LEVEL, ZSTD_LEVEL,
};

const TRACES: usize = 4000;
const SPANS_PER_TRACE: usize = 10;

/// Trace `t`: one service's spans, attribute values of realistic cardinality.
fn trace(t: usize) -> (TraceId, Bytes) {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&(t as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
    id[8..].copy_from_slice(&(t as u64).to_le_bytes());
    let start = 1_700_000_000_000_000_000 + t as u64 * 1_000_000;
    let spans = (0..SPANS_PER_TRACE)
        .map(|i| Span {
            trace_id: id.to_vec(),
            span_id: ((t * SPANS_PER_TRACE + i) as u64 + 1)
                .to_le_bytes()
                .to_vec(),
            parent_span_id: if i == 0 {
                Vec::new()
            } else {
                ((t * SPANS_PER_TRACE) as u64 + 1).to_le_bytes().to_vec()
            },
            start_time_unix_nano: start + i as u64 * 1000,
            end_time_unix_nano: start + i as u64 * 1000 + 1_000_000 + (t % 250) as u64 * 1_000_000,
            ..span_shape::span(t, i)
        })
        .collect();
    let data = TracesData {
        resource_spans: vec![ResourceSpans {
            resource: Some(span_shape::resource(t)),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "io.opentelemetry.http".into(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    (TraceId(id), Bytes::from(data.encode_to_vec()))
}

fn info() -> BlockInfo {
    BlockInfo {
        tenant: "bench".into(),
        block_id: "bench-block".into(),
        ingester: "ingester-1".into(),
        start_unix_nano: 0,
        end_unix_nano: 0,
        created_unix_secs: 0,
    }
}

fn bench(c: &mut Criterion) {
    let mut traces: Vec<BlockTrace> = (0..TRACES)
        .map(|t| {
            let (id, data) = trace(t);
            BlockTrace { id, data }
        })
        .collect();
    traces.sort_by_key(|t| t.id);
    let bytes: usize = traces.iter().map(|t| t.data.len()).sum();
    let spans = (TRACES * SPANS_PER_TRACE) as u64;
    let level0 = encode_sorted(&traces, info(), LEVEL0_ZSTD_LEVEL).expect("encodes");
    let merged = encode_sorted(&traces, info(), ZSTD_LEVEL).expect("encodes");
    let section = ringtail::search_section_of(&traces).expect("a section");
    eprintln!(
        "{spans} spans, {:.0} bytes per span: data {:.1} bytes per span at level 0 (zstd {LEVEL0_ZSTD_LEVEL}), {:.1} merged (zstd {ZSTD_LEVEL}), search section {:.1}",
        bytes as f64 / spans as f64,
        level0.data.len() as f64 / spans as f64,
        merged.data.len() as f64 / spans as f64,
        section.len() as f64 / spans as f64
    );
    let mut g = c.benchmark_group("block completion");
    g.throughput(Throughput::Elements(spans));
    g.sample_size(20);
    g.bench_function("data, level 0", |b| {
        b.iter(|| encode_sorted(&traces, info(), LEVEL0_ZSTD_LEVEL))
    });
    g.bench_function("data, merged", |b| {
        b.iter(|| encode_sorted(&traces, info(), ZSTD_LEVEL))
    });
    g.bench_function("search section", |b| {
        b.iter(|| ringtail::search_section_of(&traces))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

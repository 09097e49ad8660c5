//! The load tool's requests: encoded templates whose trace and span IDs, parent IDs and
//! span times are rewritten in place for each request.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

use super::{span_shape, BenchArgs};

/// What the load tool's spans carry.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanShape {
    /// One attribute of `--span-payload-bytes` per span, one resource attribute
    Payload,
    /// As instrumented services send them: 6 resource attributes, 4-6 span attributes
    /// with values of realistic cardinality, parent span IDs (226 bytes per span);
    /// each request is one service instance's, one of 64 sets of values
    Sdk,
}

/// How many differently valued requests `--span-shape sdk` sends (in turn, at random).
const SDK_VARIANTS: usize = 64;

/// Encoded requests, and the span fields every request rewrites.
pub(super) struct Template {
    variants: Vec<Variant>,
    span_age: Duration,
    /// With `--spread-secs`: when the run started, how long it lasts, the spread.
    spread: Option<(std::time::Instant, Duration, Duration)>,
    spans_per_trace: usize,
}

/// A span's fixed64 time placeholder (`end`: its end time), found again in the encoding.
fn marker_time(i: usize, end: bool) -> u64 {
    0x5254_0000_0000_0000 | (u64::from(end) << 40) | i as u64
}

/// How long span `i` of a request lasts: 1-250 ms, about a fifth over 200 ms.
fn span_duration(i: usize) -> u64 {
    ((i as u64 * 37) % 250 + 1) * 1_000_000
}

fn marker_trace(i: usize) -> Vec<u8> {
    let mut v = b"RTBENCHT".to_vec();
    v.extend_from_slice(&(i as u64).to_be_bytes());
    v
}

fn marker_span(i: usize) -> Vec<u8> {
    let mut v = vec![b'S'];
    v.extend_from_slice(&(i as u64).to_be_bytes()[1..]);
    v
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// One encoded request and where each span's fields are in it.
struct Variant {
    bytes: Vec<u8>,
    trace_offsets: Vec<usize>,
    span_offsets: Vec<usize>,
    /// Where each span's parent span ID is (`--span-shape sdk`; not in a trace's first span).
    parent_offsets: Vec<Option<usize>>,
    /// Where each span's start and end time are, and how long it lasts.
    time_offsets: Vec<(usize, usize, u64)>,
}

fn marker_parent(i: usize) -> Vec<u8> {
    let mut v = vec![b'P'];
    v.extend_from_slice(&(i as u64).to_be_bytes()[1..]);
    v
}

/// Span `i` of the default shape: one attribute of `payload`.
fn payload_span(i: usize, payload: &str) -> Span {
    Span {
        name: format!("bench-op-{}", i % 16),
        kind: 2,
        attributes: vec![KeyValue {
            key: "payload".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(payload.into())),
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

impl Variant {
    /// Request number `n` of the shape: spans with marker IDs and times, found again in
    /// the encoding.
    fn new(args: &BenchArgs, n: usize) -> Self {
        let per_trace = args.spans_per_trace.max(1);
        let traces_per_request = args.batch_spans.div_ceil(per_trace);
        let payload = "x".repeat(args.span_payload_bytes);
        let spans: Vec<Span> = (0..args.batch_spans)
            .map(|i| Span {
                trace_id: marker_trace(i),
                span_id: marker_span(i),
                start_time_unix_nano: marker_time(i, false),
                end_time_unix_nano: marker_time(i, true),
                ..match args.span_shape {
                    SpanShape::Payload => payload_span(i, &payload),
                    SpanShape::Sdk => Span {
                        parent_span_id: if i % per_trace == 0 {
                            Vec::new()
                        } else {
                            marker_parent(i)
                        },
                        ..span_shape::span(n * traces_per_request + i / per_trace, i % per_trace)
                    },
                }
            })
            .collect();
        let (resource, scope) = match args.span_shape {
            SpanShape::Payload => (
                Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue("ringtail-bench".into())),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                "ringtail-bench",
            ),
            SpanShape::Sdk => (span_shape::resource(n), "io.opentelemetry.http"),
        };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: scope.into(),
                        ..Default::default()
                    }),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        let bytes = request.encode_to_vec();
        let mut trace_offsets = Vec::with_capacity(args.batch_spans);
        let mut span_offsets = Vec::with_capacity(args.batch_spans);
        let mut parent_offsets = Vec::with_capacity(args.batch_spans);
        let mut time_offsets = Vec::with_capacity(args.batch_spans);
        let mut pos = 0;
        for i in 0..args.batch_spans {
            let t = find(&bytes, &marker_trace(i), pos).unwrap_or(0);
            let s = find(&bytes, &marker_span(i), t).unwrap_or(0);
            let parent = (args.span_shape == SpanShape::Sdk && i % per_trace != 0)
                .then(|| find(&bytes, &marker_parent(i), s))
                .flatten();
            let start = find(&bytes, &marker_time(i, false).to_le_bytes(), s).unwrap_or(0);
            let end = find(&bytes, &marker_time(i, true).to_le_bytes(), s).unwrap_or(0);
            trace_offsets.push(t);
            span_offsets.push(s);
            parent_offsets.push(parent);
            time_offsets.push((start, end, span_duration(i)));
            pos = s;
        }
        Self {
            bytes,
            trace_offsets,
            span_offsets,
            parent_offsets,
            time_offsets,
        }
    }
}

impl Template {
    pub(super) fn new(args: &BenchArgs) -> Self {
        let variants = match args.span_shape {
            SpanShape::Payload => 1,
            SpanShape::Sdk => SDK_VARIANTS,
        };
        Self {
            variants: (0..variants).map(|n| Variant::new(args, n)).collect(),
            span_age: Duration::from_secs(args.span_age_secs),
            spread: (args.spread_secs > 0).then(|| {
                (
                    std::time::Instant::now(),
                    Duration::from_secs(args.duration_secs.max(1)),
                    Duration::from_secs(args.spread_secs),
                )
            }),
            spans_per_trace: args.spans_per_trace.max(1),
        }
    }

    /// How far behind the clock `--spread-secs` puts a request sent now: the whole spread
    /// at the start of the run, nothing at its end.
    fn spread_age(&self) -> Duration {
        let Some((started, run, spread)) = self.spread else {
            return Duration::ZERO;
        };
        let left = 1.0 - (started.elapsed().as_secs_f64() / run.as_secs_f64()).min(1.0);
        spread.mul_f64(left)
    }

    /// The size of a request.
    pub(super) fn request_bytes(&self) -> usize {
        self.variants.first().map_or(0, |v| v.bytes.len())
    }

    /// A fresh request with random IDs, and its trace IDs with their span counts.
    pub(super) fn instantiate(
        &self,
        rng: &mut impl rand::RngExt,
    ) -> (Vec<u8>, Vec<([u8; 16], u32)>) {
        let v = &self.variants[rng.random_range(0..self.variants.len())];
        let mut out = v.bytes.clone();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_sub(self.span_age + self.spread_age())
            .as_nanos() as u64;
        for &(start, end, duration) in &v.time_offsets {
            out[start..start + 8].copy_from_slice(&now.saturating_sub(duration).to_le_bytes());
            out[end..end + 8].copy_from_slice(&now.to_le_bytes());
        }
        let mut traces = Vec::new();
        let mut root = [0u8; 8];
        for (i, ((&t, &s), &parent)) in v
            .trace_offsets
            .iter()
            .zip(&v.span_offsets)
            .zip(&v.parent_offsets)
            .enumerate()
        {
            if i % self.spans_per_trace == 0 {
                let mut id = [0u8; 16];
                rng.fill_bytes(&mut id);
                id[0] |= 1;
                traces.push((id, 0));
            }
            if let Some(last) = traces.last_mut() {
                out[t..t + 16].copy_from_slice(&last.0);
                last.1 += 1;
            }
            let mut span = [0u8; 8];
            rng.fill_bytes(&mut span);
            span[0] |= 1;
            out[s..s + 8].copy_from_slice(&span);
            if i % self.spans_per_trace == 0 {
                root = span;
            }
            if let Some(p) = parent {
                out[p..p + 8].copy_from_slice(&root);
            }
        }
        (out, traces)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::BenchArgs;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    #[test]
    fn each_request_has_fresh_ids_and_times_and_decodes() {
        let args =
            Cli::parse_from(["bench", "--batch-spans", "50", "--spans-per-trace", "5"]).bench;
        let template = Template::new(&args);
        let mut rng = rand::rng();
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        let (body, traces) = template.instantiate(&mut rng);
        let request = ExportTraceServiceRequest::decode(&body[..]).expect("decodes");
        let spans = &request.resource_spans[0].scope_spans[0].spans;
        assert_eq!((spans.len(), traces.len()), (50, 10));
        for (i, span) in spans.iter().enumerate() {
            assert_eq!(span.trace_id, traces[i / 5].0);
            assert!(span.end_time_unix_nano >= before, "span {i} ends now");
            assert_eq!(
                span.end_time_unix_nano - span.start_time_unix_nano,
                span_duration(i)
            );
        }
        assert!((0..50).any(|i| span_duration(i) > 200_000_000));
    }

    #[test]
    fn sdk_shaped_requests_carry_a_services_resource_attributes_and_parent_ids() {
        let args = Cli::parse_from(["bench", "--span-shape", "sdk"]).bench;
        let template = Template::new(&args);
        let mut services = std::collections::HashSet::new();
        for _ in 0..20 {
            let (body, traces) = template.instantiate(&mut rand::rng());
            let per_span = body.len() / 500;
            assert!((215..=235).contains(&per_span), "{per_span} bytes per span");
            let request = ExportTraceServiceRequest::decode(&body[..]).expect("decodes");
            let rs = &request.resource_spans[0];
            let resource = rs.resource.as_ref().expect("a resource");
            assert_eq!(resource.attributes.len(), 6);
            services.insert(format!("{:?}", resource.attributes[0].value));
            let spans = &rs.scope_spans[0].spans;
            assert_eq!((spans.len(), traces.len()), (500, 50));
            for (i, span) in spans.iter().enumerate() {
                assert_eq!(span.trace_id, traces[i / 10].0);
                assert!((4..=6).contains(&span.attributes.len()));
                let root = &spans[i - i % 10];
                if i % 10 == 0 {
                    assert!(span.parent_span_id.is_empty());
                } else {
                    assert_eq!(span.parent_span_id, root.span_id, "span {i}");
                }
            }
        }
        assert!(services.len() > 1, "requests of more than one service");
    }

    #[test]
    fn a_spread_run_starts_its_spans_the_whole_spread_in_the_past() {
        let args = Cli::parse_from([
            "bench",
            "--batch-spans",
            "10",
            "--duration-secs",
            "600",
            "--spread-secs",
            "3600",
        ])
        .bench;
        let template = Template::new(&args);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        let (body, _) = template.instantiate(&mut rand::rng());
        let request = ExportTraceServiceRequest::decode(&body[..]).expect("decodes");
        let end = request.resource_spans[0].scope_spans[0].spans[0].end_time_unix_nano;
        let age = now.saturating_sub(end) as f64 / 1e9;
        // At the start of the run: about the whole hour behind (less what has elapsed).
        assert!((3590.0..=3601.0).contains(&age), "{age} s in the past");
        assert!(template.spread_age() < Duration::from_secs(3601));
    }
}

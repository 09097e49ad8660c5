//! `ringtail bench`: the load tool. Pushes OTLP/gRPC as fast as possible or at a set rate,
//! prints progress every second and a summary (acked spans/s, MB/s, p50/p99 latency,
//! errors by status code); can record the acked trace IDs and read every one back.
//!
//! Requests are built from encoded templates whose trace and span IDs and span times are
//! rewritten in place, so the tool spends its CPU on sending, not on encoding. Each request's
//! spans end when it is built (minus `--span-age-secs`) and last 1-250 ms (fixed per span
//! position), as an SDK's would.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, TracesData};
use prost::Message;
use tonic::transport::{Channel, Endpoint};

pub mod span_shape;

use crate::rpc::codec::RawBytes;
use crate::rpc::otlp_service::trace_service_client::TraceServiceClient;

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// OTLP gRPC endpoint of a distributor
    #[arg(long, default_value = "http://127.0.0.1:4317")]
    pub endpoint: String,
    /// Concurrent requests in flight
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Spans per request
    #[arg(long, default_value_t = 500)]
    pub batch_spans: usize,
    /// Spans per trace (a request holds batch_spans / spans_per_trace traces)
    #[arg(long, default_value_t = 10)]
    pub spans_per_trace: usize,
    /// Bytes of attribute payload per span (`--span-shape payload`)
    #[arg(long, default_value_t = 64)]
    pub span_payload_bytes: usize,
    /// What each span carries
    #[arg(long, value_enum, default_value_t = SpanShape::Payload)]
    pub span_shape: SpanShape,
    /// Run time in seconds (ignored when --requests is given)
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Stop after this many requests
    #[arg(long)]
    pub requests: Option<u64>,
    /// Target rate in spans per second (0: as fast as possible)
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// X-Scope-OrgID to send (none when absent)
    #[arg(long)]
    pub tenant: Option<String>,
    /// Write the acked trace IDs (`<hex> <spans>` per line) to this file
    #[arg(long)]
    pub record: Option<PathBuf>,
    /// After the run, read every acked trace back and check its span count
    #[arg(long)]
    pub verify: bool,
    /// Stamp spans this many seconds in the past (to exercise retention)
    #[arg(long, default_value_t = 0)]
    pub span_age_secs: u64,
    /// Spread the run's span times over this many seconds before it started, oldest
    /// first, moving on evenly with the run (an hour of blocks from a shorter run)
    #[arg(long, default_value_t = 0)]
    pub spread_secs: u64,
    /// Skip pushing: read back the traces of an earlier --record file (given here)
    #[arg(long)]
    pub verify_only: Option<PathBuf>,
    /// Query API base URL for --verify
    #[arg(long, default_value = "http://127.0.0.1:3200")]
    pub query_url: String,
}

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
struct Template {
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

impl Variant {
    /// Request number `n` of the shape: spans with marker IDs and times, found again in
    /// the encoding.
    fn new(args: &BenchArgs, n: usize) -> Self {
        let per_trace = args.spans_per_trace.max(1);
        let traces_per_request = args.batch_spans.div_ceil(per_trace);
        let payload = "x".repeat(args.span_payload_bytes);
        let spans: Vec<Span> = (0..args.batch_spans)
            .map(|i| {
                let span = match args.span_shape {
                    SpanShape::Payload => Span {
                        name: format!("bench-op-{}", i % 16),
                        kind: 2,
                        attributes: vec![KeyValue {
                            key: "payload".into(),
                            value: Some(AnyValue {
                                value: Some(any_value::Value::StringValue(payload.clone())),
                            }),
                            ..Default::default()
                        }],
                        ..Default::default()
                    },
                    SpanShape::Sdk => Span {
                        parent_span_id: if i % per_trace == 0 {
                            Vec::new()
                        } else {
                            marker_parent(i)
                        },
                        ..span_shape::span(n * traces_per_request + i / per_trace, i % per_trace)
                    },
                };
                Span {
                    trace_id: marker_trace(i),
                    span_id: marker_span(i),
                    start_time_unix_nano: marker_time(i, false),
                    end_time_unix_nano: marker_time(i, true),
                    ..span
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
    fn new(args: &BenchArgs) -> Self {
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
    fn request_bytes(&self) -> usize {
        self.variants.first().map_or(0, |v| v.bytes.len())
    }

    /// A fresh request with random IDs, and its trace IDs with their span counts.
    fn instantiate(&self, rng: &mut impl rand::RngExt) -> (Vec<u8>, Vec<([u8; 16], u32)>) {
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

#[derive(Default)]
struct Stats {
    latencies_us: Vec<u32>,
    errors: BTreeMap<String, u64>,
    /// The first message of each code.
    first_errors: BTreeMap<String, String>,
    acked: Vec<([u8; 16], u32)>,
}

/// Counters every load worker adds to.
#[derive(Default)]
struct Shared {
    issued: AtomicU64,
    acked_spans: AtomicU64,
    acked_bytes: AtomicU64,
    stats: Mutex<Stats>,
}

/// When each worker stops and how fast it sends.
#[derive(Clone)]
struct Pace {
    started: Instant,
    deadline: Instant,
    /// Time between two requests of the whole run (`--rate`), if paced.
    interval: Option<Duration>,
    requests: Option<u64>,
}

pub async fn run(args: BenchArgs) -> ExitCode {
    if let Some(path) = &args.verify_only {
        return match read_recorded(path) {
            Ok(traces) => verify(&args, &traces).await,
            Err(code) => code,
        };
    }
    let template = Arc::new(Template::new(&args));
    let channel = match connect(&args).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    println!(
        "bench: {} concurrency, {} spans/request ({} bytes, {:?} spans), {} spans/trace, {}",
        args.concurrency,
        args.batch_spans,
        template.request_bytes(),
        args.span_shape,
        args.spans_per_trace,
        if args.rate > 0 {
            format!("{} spans/s", args.rate)
        } else {
            "as fast as possible".into()
        }
    );
    let started = Instant::now();
    let pace = Pace {
        started,
        deadline: started + Duration::from_secs(args.duration_secs),
        interval: (args.rate > 0)
            .then(|| Duration::from_secs_f64(args.batch_spans as f64 / args.rate as f64)),
        requests: args.requests,
    };
    let shared = Arc::new(Shared::default());
    let record = args.record.is_some() || args.verify;
    let progress = tokio::spawn(print_progress(shared.clone(), started));
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let client = TraceServiceClient::new(channel.clone())
            .max_encoding_message_size(256 << 20)
            .max_decoding_message_size(256 << 20);
        workers.push(tokio::spawn(load_worker(
            client,
            template.clone(),
            shared.clone(),
            pace.clone(),
            args.tenant.clone(),
            record,
        )));
    }
    for w in workers {
        let _ = w.await;
    }
    progress.abort();
    let elapsed = started.elapsed().as_secs_f64();
    let mut stats = match shared.stats.lock() {
        Ok(mut s) => std::mem::take(&mut *s),
        Err(_) => Stats::default(),
    };
    report(&mut stats, &shared, elapsed);
    if let Some(path) = &args.record {
        if let Err(code) = write_recorded(path, &stats.acked) {
            return code;
        }
    }
    if args.verify {
        return verify(&args, &stats.acked).await;
    }
    ExitCode::SUCCESS
}

/// The trace IDs and span counts a `--record` run wrote.
fn read_recorded(path: &std::path::Path) -> Result<Vec<([u8; 16], u32)>, ExitCode> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text
            .lines()
            .filter_map(|l| {
                let (id, n) = l.split_once(' ')?;
                let mut a = [0u8; 16];
                hex::decode_to_slice(id, &mut a).ok()?;
                Some((a, n.parse().ok()?))
            })
            .collect()),
        Err(e) => {
            eprintln!("bench: cannot read {}: {e}", path.display());
            Err(ExitCode::FAILURE)
        }
    }
}

fn write_recorded(path: &std::path::Path, acked: &[([u8; 16], u32)]) -> Result<(), ExitCode> {
    let text: String = acked
        .iter()
        .map(|(id, n)| format!("{} {n}\n", hex::encode(id)))
        .collect();
    if let Err(e) = std::fs::write(path, text) {
        eprintln!("bench: cannot write {}: {e}", path.display());
        return Err(ExitCode::FAILURE);
    }
    println!("recorded {} trace IDs in {}", acked.len(), path.display());
    Ok(())
}

async fn connect(args: &BenchArgs) -> Result<Channel, ExitCode> {
    let endpoint = match Endpoint::from_shared(args.endpoint.clone()) {
        Ok(e) => e.tcp_nodelay(true),
        Err(e) => {
            eprintln!("bench: bad --endpoint: {e}");
            return Err(ExitCode::from(2));
        }
    };
    endpoint.connect().await.map_err(|e| {
        eprintln!("bench: cannot connect to {}: {e}", args.endpoint);
        ExitCode::FAILURE
    })
}

/// Prints the acked spans of every second of the run.
async fn print_progress(shared: Arc<Shared>, started: Instant) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = 0;
    loop {
        tick.tick().await;
        let now = shared.acked_spans.load(Ordering::Relaxed);
        println!(
            "  {:>5.1}s  {:>9} spans/s  {:>11} acked spans",
            started.elapsed().as_secs_f64(),
            now - last,
            now
        );
        last = now;
    }
}

/// Sends requests until the run ends, then adds what it saw to the shared stats.
async fn load_worker(
    mut client: TraceServiceClient<Channel>,
    template: Arc<Template>,
    shared: Arc<Shared>,
    pace: Pace,
    tenant: Option<String>,
    record: bool,
) {
    let mut rng: rand::rngs::StdRng = rand::make_rng();
    let mut local = Stats::default();
    loop {
        let k = shared.issued.fetch_add(1, Ordering::Relaxed);
        match pace.requests {
            Some(n) if k >= n => break,
            None if Instant::now() >= pace.deadline => break,
            _ => {}
        }
        if let Some(iv) = pace.interval {
            tokio::time::sleep_until((pace.started + iv.mul_f64(k as f64)).into()).await;
        }
        let (body, traces) = template.instantiate(&mut rng);
        let len = body.len() as u64;
        let mut request = tonic::Request::new(RawBytes(body.into()));
        if let Some(t) = &tenant {
            if let Ok(v) = t.parse() {
                request.metadata_mut().insert("x-scope-orgid", v);
            }
        }
        let sent = Instant::now();
        let result = client.export(request).await;
        let us = sent.elapsed().as_micros().min(u32::MAX as u128) as u32;
        match result {
            Ok(_) => {
                local.latencies_us.push(us);
                let spans: u32 = traces.iter().map(|t| t.1).sum();
                shared
                    .acked_spans
                    .fetch_add(spans as u64, Ordering::Relaxed);
                shared.acked_bytes.fetch_add(len, Ordering::Relaxed);
                if record {
                    local.acked.extend(traces);
                }
            }
            Err(status) => {
                let code = format!("{:?}", status.code());
                *local.errors.entry(code.clone()).or_default() += 1;
                local
                    .first_errors
                    .entry(code)
                    .or_insert_with(|| status.message().to_owned());
            }
        }
    }
    if let Ok(mut s) = shared.stats.lock() {
        s.latencies_us.extend(local.latencies_us);
        s.acked.extend(local.acked);
        for (k, v) in local.errors {
            *s.errors.entry(k).or_default() += v;
        }
        for (k, v) in local.first_errors {
            s.first_errors.entry(k).or_insert(v);
        }
    }
}

/// Prints the `result:` and `errors:` lines (scripts parse them).
fn report(stats: &mut Stats, shared: &Shared, elapsed: f64) {
    stats.latencies_us.sort_unstable();
    let pct = |p: f64| -> f64 {
        if stats.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((stats.latencies_us.len() as f64 * p).ceil() as usize)
            .clamp(1, stats.latencies_us.len())
            - 1;
        stats.latencies_us[i] as f64 / 1000.0
    };
    let spans = shared.acked_spans.load(Ordering::Relaxed);
    println!(
        "result: {} acked requests, {} acked spans in {:.1}s: {:.0} spans/s, {:.1} MB/s, latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        stats.latencies_us.len(),
        spans,
        elapsed,
        spans as f64 / elapsed,
        shared.acked_bytes.load(Ordering::Relaxed) as f64 / elapsed / 1e6,
        pct(0.50),
        pct(0.99),
        pct(1.0),
    );
    if stats.errors.is_empty() {
        println!("errors: none");
    } else {
        for (code, n) in &stats.errors {
            println!("errors: {code}: {n}");
        }
        for (code, message) in &stats.first_errors {
            println!("first {code}: {message}");
        }
    }
}

/// Reads every acked trace back; fails if any is missing or incomplete.
async fn verify(args: &BenchArgs, traces: &[([u8; 16], u32)]) -> ExitCode {
    let client = reqwest::Client::new();
    let base = args.query_url.trim_end_matches('/').to_owned();
    let bad = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(traces.len())));
    let started = Instant::now();
    let chunks: Vec<Vec<([u8; 16], u32)>> = traces
        .chunks(traces.len().div_ceil(8).max(1))
        .map(|c| c.to_vec())
        .collect();
    let mut tasks = Vec::new();
    for chunk in chunks {
        let (client, base, bad, tenant) = (
            client.clone(),
            base.clone(),
            bad.clone(),
            args.tenant.clone(),
        );
        let latencies = latencies.clone();
        tasks.push(tokio::spawn(async move {
            let mut local = Vec::with_capacity(chunk.len());
            for (id, expected) in chunk {
                let sent = Instant::now();
                let mut req = client
                    .get(format!("{base}/api/traces/{}", hex::encode(id)))
                    .header("accept", "application/protobuf");
                if let Some(t) = &tenant {
                    req = req.header("x-scope-orgid", t);
                }
                let got = match req.send().await {
                    Ok(r) if r.status().is_success() => match r.bytes().await {
                        Ok(b) => TracesData::decode(b)
                            .map(|d| crate::querier::span_count(&d) as u32)
                            .unwrap_or(0),
                        Err(_) => 0,
                    },
                    Ok(r) => {
                        eprintln!("verify: trace {}: HTTP {}", hex::encode(id), r.status());
                        0
                    }
                    Err(e) => {
                        eprintln!("verify: trace {}: {e}", hex::encode(id));
                        0
                    }
                };
                local.push(sent.elapsed().as_micros() as u32);
                if got != expected {
                    bad.fetch_add(1, Ordering::Relaxed);
                }
            }
            if let Ok(mut l) = latencies.lock() {
                l.extend(local);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let bad = bad.load(Ordering::Relaxed);
    let mut lat = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .map_or(0.0, |&us| us as f64 / 1000.0)
    };
    println!(
        "verify: {} traces read back in {:.1}s (8 concurrent; per read p50 {:.2} ms, p99 {:.2} ms), {} missing or incomplete",
        traces.len(),
        started.elapsed().as_secs_f64(),
        pct(0.5),
        pct(0.99),
        bad
    );
    if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

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

use opentelemetry_proto::tonic::trace::v1::TracesData;
use prost::Message;
use tonic::transport::{Channel, Endpoint};

pub mod span_shape;
mod template;

pub use template::SpanShape;
use template::Template;

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

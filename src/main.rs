//! The `ringtail` binary: run a node, the local cluster, or the load tool.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use ringtail::config::RawConfig;
use ringtail::{bench, local, node, telemetry};

mod probe;

#[derive(Parser, Debug)]
#[command(
    name = "ringtail",
    version,
    about = "Trace ingestion cluster: OTLP in, RF=3 quorum writes, Tempo-compatible reads",
    // A flag given twice takes its last value, as in most CLIs (a wrapper script's
    // defaults can be overridden by appending).
    args_override_self = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// YAML config file (fields as in README "Configuration")
    #[arg(long, env = "RINGTAIL_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(flatten)]
    raw: RawConfig,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the embedded local cluster (distributor + querier + 3 ingesters, real gossip)
    Local(local::LocalArgs),
    /// Push OTLP load and report throughput and latency; optionally verify reads
    Bench(bench::BenchArgs),
    /// GET the local node's /ready; exit 0 on 200 (container health checks; no curl needed)
    Healthcheck(probe::HealthcheckArgs),
    /// POST the local node's /shutdown: the SIGTERM sequence (e.g. a Kubernetes preStop hook)
    Shutdown(probe::ShutdownArgs),
}

fn main() -> ExitCode {
    tune_malloc();
    let cli = Cli::parse();
    telemetry::init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Some(Command::Bench(args)) => bench::run(args).await,
            Some(Command::Local(args)) => run_local(args).await,
            Some(Command::Healthcheck(args)) => {
                probe::healthcheck(args, cli.config.as_deref(), &cli.raw).await
            }
            Some(Command::Shutdown(args)) => {
                probe::shutdown(args, cli.config.as_deref(), &cli.raw).await
            }
            None => run_node(cli.config, cli.raw).await,
        }
    })
}

/// Two of glibc's malloc settings, fixed (each unless its environment variable sets it):
/// - `M_MMAP_THRESHOLD` 4 MiB. glibc raises it to the largest block freed so far (up to 32
///   MiB): after a few block completions the ingester's multi-megabyte buffers (encoded
///   blocks and sections, a local block read back for upload) come from the heap, whose
///   freed pages stay with the process. Fixed, each of them is mapped and unmapped when
///   freed: 20–100 MB less peak RSS per ingester at saturation.
/// - `M_TRIM_THRESHOLD` 8 MiB (twice the first, glibc's own rule). Fixing the first fixes
///   this one at 128 KiB, and the heap's top is then handed back and faulted in again all
///   the time: ~7,000 page faults a second in the distributor at saturation, under 100 at
///   8 MiB (and at 20k spans/s ~2,000 a second on glibc's defaults, ~10 now).
///
/// Figures: BENCHMARKS.md, issue 14, third part.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    for (param, value, env) in [
        (libc::M_MMAP_THRESHOLD, 4 << 20, "MALLOC_MMAP_THRESHOLD_"),
        (libc::M_TRIM_THRESHOLD, 8 << 20, "MALLOC_TRIM_THRESHOLD_"),
    ] {
        if std::env::var_os(env).is_none() {
            // SAFETY: `mallopt` only sets an allocator parameter; no other thread exists yet.
            unsafe {
                libc::mallopt(param, value);
            }
        }
    }
}

/// Returns on Ctrl-C, SIGTERM or when `token` is cancelled (`POST /shutdown`), and
/// cancels `token`.
async fn shutdown_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    let _ = ctrl_c.await;
                    token.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => tracing::info!("received Ctrl-C"),
            _ = term.recv() => tracing::info!("received SIGTERM"),
            _ = token.cancelled() => tracing::info!("shutdown requested (POST /shutdown)"),
        }
    }
    #[cfg(not(unix))]
    tokio::select! {
        _ = ctrl_c => {}
        _ = token.cancelled() => {}
    }
    token.cancel();
}

async fn run_node(file: Option<PathBuf>, flags: RawConfig) -> ExitCode {
    let config = match RawConfig::load(file.as_deref(), &flags).and_then(RawConfig::validate) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringtail: {e}");
            return ExitCode::from(2);
        }
    };
    let shutdown = CancellationToken::new();
    let node = match node::start(config, shutdown.clone()).await {
        Ok(n) => n,
        Err(e) => {
            eprintln!("ringtail: {e}");
            return ExitCode::FAILURE;
        }
    };
    shutdown_signal(shutdown).await;
    node.wait().await;
    tracing::info!("exiting");
    ExitCode::SUCCESS
}

async fn run_local(args: local::LocalArgs) -> ExitCode {
    let shutdown = CancellationToken::new();
    let nodes = match local::start(&args, shutdown.clone()).await {
        Ok(n) => n,
        Err(e) => {
            eprintln!("ringtail local: {e}");
            shutdown.cancel();
            return ExitCode::FAILURE;
        }
    };
    let ingesters = usize::from(args.ingesters);
    if !local::wait_until_serving(&nodes, ingesters, std::time::Duration::from_secs(30)).await {
        eprintln!("ringtail local: not every ingester is ACTIVE after 30 s; see /ring");
    }
    println!("{}", local::banner(&args));
    // Every node waits for its own token: `POST /shutdown` on one node drains and stops
    // that node while the others go on; Ctrl-C (the parent token) stops them all.
    let mut waits = futures::future::join_all(nodes.into_iter().map(|n| tokio::spawn(n.wait())));
    tokio::select! {
        _ = shutdown_signal(shutdown) => {}
        _ = &mut waits => {
            println!("Ringtail local cluster stopped.");
            return ExitCode::SUCCESS;
        }
    }
    waits.await;
    println!("Ringtail local cluster stopped.");
    ExitCode::SUCCESS
}

//! The node's background workers, started by [`super::start`], each looping until the
//! node's `stop`. The named ones record every round in their
//! [`WorkerStatus`](crate::telemetry::WorkerStatus) (`GET /status/workers`):
//! - `retention` (compactors): a pass over the store's listings every
//!   `retention_interval`, removing expired blocks and orphans;
//! - `compactor` (compactors): a compaction pass every `compaction_interval_ms` over the
//!   windows this node owns (`crate::compactor::owner` over gossip's compactors);
//! - `ingester-cut`: a cut round every second, and at once when the live traces outgrow
//!   their memory budget;
//! - `ingester-complete`: a completion round every second, and at once when a cut round
//!   sealed a head block, in a task of its own so a block's encoding never delays cutting;
//! - `ingester-flush`: a flush round every second, in a task of its own so a hanging
//!   upload never delays cutting;
//! - `overrides-reload` (with `overrides_file`): re-reads the per-tenant overrides every
//!   10 s and on SIGHUP;
//! - `channel-sweeper`: forgets the client channels of ingesters that left, at each
//!   change of the cluster view.
//!
//! The querier's blocklist poller runs too, as a loop of the querier's own
//! ([`Querier::poll_blocklists`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::Background;
use crate::cluster::Membership;
use crate::config::Config;
use crate::ingester::Ingester;
use crate::overrides::LiveOverrides;
use crate::querier::Querier;
use crate::rpc::IngesterClients;
use crate::storage::retention::{self, RetentionPolicy};
use crate::storage::BlockStore;

/// The querier's blocklist poller (its own loop, see [`Querier::poll_blocklists`]).
pub(super) fn spawn_querier(bg: &Background, querier: &Arc<Querier>, config: &Config) {
    let (poller, poll, stop) = (querier.clone(), config.blocklist_poll, bg.stop.clone());
    bg.tasks
        .spawn(async move { poller.poll_blocklists(poll, stop).await });
}

/// On compactors: `compactor`, a pass every `compaction_interval_ms` over the windows
/// this node owns among the ACTIVE compactors of the cluster view, and `retention`.
/// Returns `http` with the compactor's `/status/compactor`.
pub(super) fn spawn_compactor(
    bg: &Background,
    store: &BlockStore,
    membership: &Membership,
    config: &Config,
    http: axum::Router,
) -> axum::Router {
    if !config.roles.contains(crate::cluster::Roles::COMPACTOR) {
        return http;
    }
    let compactor_status = Arc::new(crate::compactor::status::CompactorStatus::default());
    let http = http.merge(crate::compactor::status::router(compactor_status.clone()));
    spawn_retention(
        bg,
        store.clone(),
        config.retention.clone(),
        config.retention_interval,
    );
    let (status, stop) = (bg.workers.register("compactor"), bg.stop.clone());
    let (store, membership) = (store.clone(), membership.clone());
    let (settings, me) = (config.compaction.clone(), config.node_name.clone());
    let scratch = config.data_dir.join("compactor");
    let overrides = config.cut.overrides.clone();
    bg.tasks.spawn(async move {
        if let Err(e) = std::fs::create_dir_all(&scratch) {
            tracing::error!(dir = %scratch.display(), error = %e, "the compactor's scratch folder cannot be made");
        }
        // A pass that merged something is followed by the next one at once: the merges
        // it ran took time in which more blocks settled.
        let mut pause = settings.interval;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
            pause = settings.interval;
            let view = membership.view();
            let compactors = view.compactors();
            let owns = |tenant: &str, window: u64| {
                crate::compactor::owner(&compactors, tenant, window) == Some(me.as_str())
            };
            let worker = crate::compactor::pass::Worker {
                store: &store,
                name: &me,
                scratch: &scratch,
                concurrency: settings.concurrency,
                status: &compactor_status,
            };
            let result = crate::compactor::pass::run_pass(
                worker,
                &|tenant| settings.plan(&overrides.get(tenant)),
                &owns,
                SystemTime::now(),
            )
            .await;
            match result {
                Ok(stats) => {
                    if stats != Default::default() {
                        tracing::info!(?stats, "compaction pass");
                    }
                    if stats.merges > 0 {
                        pause = Duration::ZERO;
                    }
                    if stats.failed_merges + stats.failed_tenants > 0 {
                        status.round_failed(&format!(
                            "{} merges and {} tenants failed (see /status/compactor)",
                            stats.failed_merges, stats.failed_tenants
                        ));
                    } else {
                        status.round_ok();
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "compaction pass failed; retrying next interval");
                    status.round_failed(&e);
                }
            }
        }
    });
    http
}

/// Expired blocks and orphans, from store listings, every `every`.
fn spawn_retention(bg: &Background, store: BlockStore, policy: RetentionPolicy, every: Duration) {
    let (status, stop) = (bg.workers.register("retention"), bg.stop.clone());
    bg.tasks.spawn(async move {
        loop {
            match retention::run_pass(&store, &policy, SystemTime::now()).await {
                Ok(stats) => {
                    if stats != Default::default() {
                        tracing::info!(?stats, "retention pass");
                    }
                    status.round_ok();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "retention pass failed; retrying next interval");
                    status.round_failed(&e);
                }
            }
            metrics::counter!("ringtail_retention_passes_total").increment(1);
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
        }
    });
}

/// `overrides-reload`: re-reads `overrides_file` every 10 s and on SIGHUP; a file that does
/// not parse is logged, counted and shown on `/status/workers`, and the last good table
/// stays in force.
pub(super) fn spawn_overrides_reload(bg: &Background, overrides: Arc<LiveOverrides>) {
    if !overrides.has_file() {
        return;
    }
    let (status, stop) = (bg.workers.register("overrides-reload"), bg.stop.clone());
    bg.tasks.spawn(async move {
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(OVERRIDES_RELOAD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let sighup = async {
                match hangup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
                _ = sighup => tracing::info!("SIGHUP: re-reading the overrides file"),
            }
            match overrides.reload() {
                Ok(changed) => {
                    if changed {
                        tracing::info!("per-tenant overrides reloaded");
                        metrics::counter!("ringtail_overrides_reloads_total").increment(1);
                    }
                    status.round_ok();
                }
                Err(e) => {
                    tracing::error!(error = %e, "overrides file refused; the last good one stays in force");
                    metrics::counter!("ringtail_overrides_reload_failures_total").increment(1);
                    status.round_failed(&e);
                }
            }
        }
    });
}

/// Why an [`every_second`] round runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Round {
    /// The one-second tick.
    Tick,
    /// Its `wake()` future completed.
    Woken,
}

/// How often `overrides_file` is re-read.
const OVERRIDES_RELOAD: Duration = Duration::from_secs(10);

/// The cut, completion and flush workers of a serving ingester.
pub(super) fn spawn_ingester(bg: &Background, ingester: &Arc<Ingester>) {
    let (cutter, stop) = (ingester.clone(), bg.stop.clone());
    let status = bg.workers.register("ingester-cut");
    bg.tasks.spawn(async move {
        every_second(
            stop,
            || cutter.over_budget(),
            |round| {
                // Woken, the live traces outgrew their budget: only that is cut, not the
                // idle traces (looking for those walks every live trace).
                let (cutter, status) = (&cutter, &status);
                async move {
                    cutter.cut(round == Round::Tick).await;
                    status.round_ok();
                }
            },
        )
        .await
    });
    let (completer, stop) = (ingester.clone(), bg.stop.clone());
    let status = bg.workers.register("ingester-complete");
    bg.tasks.spawn(async move {
        every_second(
            stop,
            || completer.sealed_ready(),
            |_| async {
                match completer.complete().await {
                    Ok(_) => status.round_ok(),
                    Err(e) => {
                        tracing::error!(error = %e, "completion round failed");
                        status.round_failed(&e);
                    }
                }
            },
        )
        .await
    });
    let (flusher, stop) = (ingester.clone(), bg.stop.clone());
    let status = bg.workers.register("ingester-flush");
    bg.tasks.spawn(async move {
        every_second(stop, std::future::pending, |_| async {
            // Failed uploads are retried by the next rounds (the pipeline logs them).
            match flusher.flush().await.flush_failures {
                0 => status.round_ok(),
                failed => status.round_failed(&format_args!(
                    "{failed} block uploads failed; retried next round"
                )),
            }
        })
        .await
    });
}

/// Forgets the channels of ingesters that left, whenever the cluster view changes.
pub(super) fn spawn_channel_sweeper(
    bg: &Background,
    membership: &Membership,
    clients: IngesterClients,
) {
    let mut view = membership.watch_view();
    let (status, stop) = (bg.workers.register("channel-sweeper"), bg.stop.clone());
    bg.tasks.spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                changed = view.changed() => if changed.is_err() { break },
            }
            let live: Vec<SocketAddr> = view.borrow().readers.iter().map(|r| r.grpc).collect();
            clients.retain(|a| live.contains(a));
            status.round_ok();
        }
    });
}

/// Runs `round` every second, and also whenever a `wake()` future completes, until `stop`;
/// `round` is told which ([`Round`]).
async fn every_second<W, WFut, F, Fut>(stop: CancellationToken, mut wake: W, mut round: F)
where
    W: FnMut() -> WFut,
    WFut: std::future::Future<Output = ()>,
    F: FnMut(Round) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => round(Round::Tick).await,
            _ = wake() => round(Round::Woken).await,
        }
    }
}

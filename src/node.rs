//! Starts the components of a node's roles, and stops them.
//!
//! Start order:
//! 1. bind every listener (so port 0 works and the gossip identity carries real ports);
//! 2. start gossip (an ingester as JOINING) and the admin/query HTTP server (`/ready` 503);
//! 3. ingester: replay the WAL, serve the internal gRPC, then announce ACTIVE;
//! 4. distributor: serve OTLP gRPC and HTTP.
//!
//! Shutdown sequence (SIGTERM, Ctrl-C or `POST /shutdown`; the same steps every time),
//! bounded by `shutdown_timeout_ms`, each step logged:
//! 1. (ingesters) announce LEAVING: distributors drop it from their write rings at once;
//!    queriers still read from it;
//! 2. (ingesters) wait until no push arrived for 0.5 s, at most 5 s;
//! 3. (ingesters) answer any push that still arrives with UNAVAILABLE (retryable);
//! 4. (ingesters) cut and flush everything to the object store (retried until done or
//!    the deadline; what is left stays in the WAL and local blocks for the next start);
//! 5. stop the servers; in-flight requests finish;
//! 6. foca's leave, gossiped until every peer's `/ring` no longer lists the node (at most
//!    5 s), then exit 0.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use thiserror::Error;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use xxhash_rust::xxh3::xxh3_64;

use crate::admin::{self, AdminState};
use crate::cluster::{Membership, NodeIdentity, NodeState, Roles};
use crate::config::Config;
use crate::distributor::{self, Distributor, DistributorSettings};
use crate::http_server::{self, ServerSpec};
use crate::ingester::{Ingester, IngesterSettings};
use crate::querier::{self, Querier, QuerierSettings};
use crate::rpc::IngesterClients;
use crate::storage::BlockStore;

#[derive(Debug, Error)]
pub enum NodeError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Ingester(#[from] crate::ingester::OpenError),
    #[error("WAL replay task failed: {0}")]
    Replay(String),
    #[error("object store: {0}")]
    Storage(#[from] crate::storage::StoreError),
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    PeerHttp(#[from] admin::peer_http::PeerHttpError),
}

/// The addresses a running node actually listens on.
#[derive(Clone, Debug)]
pub struct Endpoints {
    pub http: SocketAddr,
    pub grpc: Option<SocketAddr>,
    pub otlp_grpc: Option<SocketAddr>,
    pub otlp_http: Option<SocketAddr>,
    pub gossip: SocketAddr,
}

pub struct RunningNode {
    pub endpoints: Endpoints,
    pub membership: Membership,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    stop: CancellationToken,
    gossip_stop: CancellationToken,
    gossip_exit: CancellationToken,
    gossip_task: tokio::task::JoinHandle<()>,
    ingester: Option<Arc<Ingester>>,
    shutdown_timeout: Duration,
    name: String,
    /// For the peers' `/ring` at shutdown.
    peers: admin::PeerHttp,
}

async fn bind_tcp(what: &'static str, addr: SocketAddr) -> Result<TcpListener, NodeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| NodeError::Bind { what, addr, source })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(1)
}

/// Starts a node; it runs until `shutdown` is cancelled, then [`RunningNode::wait`]
/// completes the shutdown sequence.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<RunningNode, NodeError> {
    let roles = config.roles;
    let is_ingester = roles.contains(Roles::INGESTER);
    let http_listener = bind_tcp("http", config.http_listen).await?;
    let grpc_listener = match is_ingester {
        true => Some(bind_tcp("grpc", config.grpc_listen).await?),
        false => None,
    };
    let (otlp_grpc_listener, otlp_http_listener) = match roles.contains(Roles::DISTRIBUTOR) {
        true => (
            Some(bind_tcp("otlp grpc", config.otlp_grpc_listen).await?),
            Some(bind_tcp("otlp http", config.otlp_http_listen).await?),
        ),
        false => (None, None),
    };
    let gossip_socket = UdpSocket::bind(config.gossip_listen)
        .await
        .map_err(|source| NodeError::Bind {
            what: "gossip",
            addr: config.gossip_listen,
            source,
        })?;
    let local = |l: &TcpListener| l.local_addr().unwrap_or(config.http_listen);
    let endpoints = Endpoints {
        http: local(&http_listener),
        grpc: grpc_listener.as_ref().map(local),
        otlp_grpc: otlp_grpc_listener.as_ref().map(local),
        otlp_http: otlp_http_listener.as_ref().map(local),
        gossip: gossip_socket.local_addr().unwrap_or(config.gossip_listen),
    };
    let identity = NodeIdentity {
        name: config.node_name.clone(),
        gossip: config.advertised(endpoints.gossip),
        grpc: config.advertised(endpoints.grpc.unwrap_or(endpoints.http)),
        http: config.advertised(endpoints.http),
        roles,
        state: if is_ingester {
            NodeState::Joining
        } else {
            NodeState::Active
        },
        token_seed: xxh3_64(config.node_name.as_bytes()),
        generation: now_ms(),
    };
    tracing::info!(node = %identity.name, roles = ?roles, ?endpoints, advertised = ?identity, "starting");

    let tasks = TaskTracker::new();
    // Servers and workers run until `stop`, which the drain sequence cancels at its step 5
    // (until then an ingester keeps answering reads and, with UNAVAILABLE, pushes).
    let stop_all = CancellationToken::new();
    // Gossip outlives the servers: `wait` stops it after they drained.
    let gossip_stop = CancellationToken::new();
    let gossip_exit = CancellationToken::new();
    let (membership, gossip_task) = Membership::start(
        identity,
        gossip_socket,
        config.gossip_join.clone(),
        config.gossip_packet_loss,
        config.cluster_keys.clone(),
        gossip_stop.clone(),
        gossip_exit.clone(),
    )
    .map_err(|source| NodeError::Bind {
        what: "gossip",
        addr: config.gossip_listen,
        source,
    })?;

    let clients = IngesterClients::new(
        crate::rpc::auth::Credential::new(config.cluster_keys.as_deref()),
        config.internal_tls.clone(),
    );
    let store = BlockStore::open(&config.storage)?;
    let mut http = Router::new();
    if roles.contains(Roles::QUERIER) {
        let querier = Querier::new(
            QuerierSettings {
                replication: config.replication,
                read_timeout: config.read_timeout,
                read_linger: config.read_linger,
                multitenancy_enabled: config.multitenancy_enabled,
            },
            membership.clone(),
            clients.clone(),
            store.clone(),
        );
        {
            let querier = querier.clone();
            let stop = stop_all.clone();
            let poll = config.blocklist_poll;
            tasks.spawn(async move { querier.poll_blocklists(poll, stop).await });
        }
        http = http.merge(querier::http::router(querier));
        {
            // The retention worker: expired blocks and orphans, from store listings.
            let (store, policy, every) = (
                store.clone(),
                config.retention.clone(),
                config.retention_interval,
            );
            let stop = stop_all.clone();
            tasks.spawn(async move {
                loop {
                    match crate::storage::retention::run_pass(&store, &policy, std::time::SystemTime::now()).await {
                        Ok(stats) if stats != Default::default() => tracing::info!(?stats, "retention pass"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "retention pass failed; retrying next interval"),
                    }
                    metrics::counter!("ringtail_retention_passes_total").increment(1);
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(every) => {}
                    }
                }
            });
        }
    }

    // Loaded before any server starts: a bad certificate stops the node here.
    let http_tls = match &config.http_tls {
        Some(tls) => {
            let server = crate::tls::ReloadingTls::load(tls.server.clone(), &[b"h2", b"http/1.1"])?;
            server.spawn_watcher("http", stop_all.clone());
            Some(server)
        }
        None => None,
    };
    let peers = admin::PeerHttp::new(config.http_tls.as_ref(), Duration::from_secs(2))?;
    tasks.spawn(admin::learn_absent_ingesters(
        membership.clone(),
        peers.clone(),
        stop_all.clone(),
    ));

    // The admin server starts before the WAL replay so `/ready` and `/ring` answer during it.
    let ingester_slot: Arc<OnceLock<Arc<Ingester>>> = Arc::default();
    let http = http.merge(admin::router(AdminState {
        membership: membership.clone(),
        ingester: ingester_slot.clone(),
        expects_ingester: is_ingester,
        metrics: crate::telemetry::prometheus(),
        store: store.clone(),
        auth: admin::auth::AdminAuth::from_config(config.admin_token.as_deref()),
        shutdown: shutdown.clone(),
        peers: peers.clone(),
    }));
    {
        // Admin auth reads the peer's address (`ConnectInfo`).
        let spec = ServerSpec {
            name: "http",
            connect_info: true,
        };
        let stop = stop_all.clone();
        tasks.spawn(http_server::serve(
            http_listener,
            http,
            spec,
            config.http_limits,
            http_tls,
            stop,
        ));
    }

    let mut running_ingester = None;
    if is_ingester {
        let settings = IngesterSettings {
            data_dir: config.data_dir.clone(),
            wal_sync: config.wal_sync,
            wal_store: config.wal_store,
            wal_cache_bytes: config.wal_cache_bytes,
            cut: config.cut.clone(),
            name: config.node_name.clone(),
        };
        let ingester_store = store.clone();
        let (ingester, _stats) =
            tokio::task::spawn_blocking(move || Ingester::open(&settings, ingester_store))
                .await
                .map_err(|e| NodeError::Replay(e.to_string()))??;
        let service = ingester.service(
            config.cluster_keys.clone(),
            crate::rpc::pool::max_push_bytes(config.max_recv_msg_size),
        );
        let listener = grpc_listener.ok_or(NodeError::Replay("no grpc listener".into()))?;
        let stop = stop_all.clone();
        let tls = match &config.internal_tls {
            Some(internal) => {
                let tls = crate::tls::ReloadingTls::load(internal.server_files(), &[b"h2"])?;
                tls.spawn_watcher("internal", stop_all.clone());
                Some(tls)
            }
            None => None,
        };
        tasks.spawn(async move {
            let incoming = crate::tls::incoming(listener, tls, "internal_grpc");
            if let Err(e) = grpc_server()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                .await
            {
                tracing::error!(error = %e, "ingester gRPC server failed");
            }
        });
        ingester.start_serving();
        {
            // The pipeline workers: a cut round every second (and at once when the live
            // traces outgrow their memory budget) and a flush round every second, in two
            // tasks so a hanging upload never delays cutting.
            let (cutter, stop) = (ingester.clone(), stop_all.clone());
            tasks.spawn(async move {
                every_second(
                    stop,
                    || cutter.over_budget(),
                    || async {
                        if let Err(e) = cutter.cut().await {
                            tracing::error!(error = %e, "cut round failed");
                        }
                    },
                )
                .await
            });
            let (flusher, stop) = (ingester.clone(), stop_all.clone());
            tasks.spawn(async move {
                every_second(stop, std::future::pending, || async {
                    flusher.flush().await;
                })
                .await
            });
        }
        let _ = ingester_slot.set(ingester.clone());
        running_ingester = Some(ingester);
        membership.set_state(NodeState::Active).await;
    }

    if roles.contains(Roles::DISTRIBUTOR) {
        let distributor = Distributor::new(
            DistributorSettings {
                replication: config.replication,
                push_timeout: config.push_timeout,
                multitenancy_enabled: config.multitenancy_enabled,
                max_recv_msg_size: config.max_recv_msg_size,
            },
            membership.clone(),
            clients.clone(),
        );
        // Loaded before any server starts: a bad certificate stops the node here.
        let otlp_tls = match &config.otlp_tls {
            Some(files) => {
                let tls = crate::tls::ReloadingTls::load(files.clone(), &[b"h2", b"http/1.1"])?;
                tls.spawn_watcher("otlp", stop_all.clone());
                Some(tls)
            }
            None => None,
        };
        if let Some(listener) = otlp_grpc_listener {
            let service = distributor::grpc::server(distributor.clone());
            let stop = stop_all.clone();
            let tls = otlp_tls.clone();
            tasks.spawn(async move {
                let incoming = crate::tls::incoming(listener, tls, "otlp_grpc");
                if let Err(e) = grpc_server()
                    .layer(tower::util::MapResponseLayer::new(
                        distributor::grpc::refuse_oversized_for_good::<tonic::body::Body>,
                    ))
                    .add_service(service)
                    .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                    .await
                {
                    tracing::error!(error = %e, "OTLP gRPC server failed");
                }
            });
        }
        if let Some(listener) = otlp_http_listener {
            let router = distributor::http::router(distributor);
            let spec = ServerSpec {
                name: "otlp_http",
                connect_info: false,
            };
            let stop = stop_all.clone();
            tasks.spawn(http_server::serve(
                listener,
                router,
                spec,
                config.http_limits,
                otlp_tls.clone(),
                stop,
            ));
        }
    }

    // Forget channels of ingesters that left.
    {
        let mut view = membership.watch_view();
        let shutdown = stop_all.clone();
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    changed = view.changed() => if changed.is_err() { break },
                }
                let live: Vec<SocketAddr> = view.borrow().readers.iter().map(|r| r.grpc).collect();
                clients.retain(|a| live.contains(a));
            }
        });
    }

    Ok(RunningNode {
        endpoints,
        membership,
        tasks,
        shutdown,
        stop: stop_all,
        gossip_stop,
        gossip_exit,
        gossip_task,
        ingester: running_ingester,
        shutdown_timeout: config.shutdown_timeout,
        name: config.node_name,
        peers,
    })
}

/// Step 2 of the drain: the ingester waits for this long without a push...
const QUIET_PERIOD: Duration = Duration::from_millis(500);
/// ...but no longer than this (distributors hear LEAVING within about a gossip round).
const QUIET_WAIT_LIMIT: Duration = Duration::from_secs(5);

/// Longest wait for the servers' connections to close (step 5). A connection whose peer
/// vanished (its close lost in a network partition) would otherwise hold the drain until
/// the deadline, and the departure (step 6) would never be announced.
const SERVER_DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// A gRPC server that notices dead peers: HTTP/2 pings every 10 s (5 s to answer) and TCP
/// keepalive, so connections from a vanished peer do not live on.
fn grpc_server() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
        .tcp_keepalive(Some(Duration::from_secs(30)))
}

/// Polls every peer's `/ring` until none lists `name` (or `until`). Peers that do not
/// answer count as confirmed: they are gone themselves.
async fn confirm_departure(
    name: &str,
    client: &admin::PeerHttp,
    peers: &[(String, std::net::SocketAddr)],
    until: tokio::time::Instant,
) -> bool {
    loop {
        let mut pending = 0;
        for (_, http) in peers {
            let listed = match client
                .client()
                .get(client.url(http, "/ring"))
                .timeout(Duration::from_millis(500))
                .header("accept", "application/json")
                .send()
                .await
            {
                Ok(resp) => resp
                    .json::<crate::cluster::RingDoc>()
                    .await
                    .is_ok_and(|ring| ring.lists(name)),
                Err(_) => false,
            };
            pending += usize::from(listed);
        }
        if pending == 0 {
            return true;
        }
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `round` every second until `stop`.
/// Runs `round` every second, and also whenever a `wake()` future completes, until `stop`.
async fn every_second<W, WFut, F, Fut>(stop: CancellationToken, mut wake: W, mut round: F)
where
    W: FnMut() -> WFut,
    WFut: std::future::Future<Output = ()>,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => round().await,
            _ = wake() => round().await,
        }
    }
}

impl RunningNode {
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits for the shutdown trigger (SIGTERM, Ctrl-C, `POST /shutdown`), then runs the
    /// shutdown sequence, bounded by `shutdown_timeout`. See the module doc for the steps.
    pub async fn wait(self) {
        self.shutdown.cancelled().await;
        let started = tokio::time::Instant::now();
        let deadline = started + self.shutdown_timeout;
        let name = self.name.clone();
        if let Some(ingester) = &self.ingester {
            tracing::info!(node = %name, "shutdown 1/6: announcing LEAVING (out of every write ring)");
            self.membership.set_state(NodeState::Leaving).await;
            tracing::info!(node = %name, "shutdown 2/6: waiting until distributors stop sending");
            let quiet_until = (tokio::time::Instant::now() + QUIET_WAIT_LIMIT).min(deadline);
            while ingester.since_last_push() < QUIET_PERIOD
                && tokio::time::Instant::now() < quiet_until
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tracing::info!(node = %name, "shutdown 3/6: answering pushes with UNAVAILABLE");
            // Waits for pushes in their WAL append: a stalled disk must not hold the drain
            // past its deadline (the WAL keeps whatever was acked).
            if tokio::time::timeout_at(deadline, ingester.refuse_pushes())
                .await
                .is_err()
            {
                tracing::error!(node = %name, "shutdown deadline: pushes still in their WAL append");
            }
            tracing::info!(node = %name, "shutdown 4/6: cutting and flushing everything to the object store");
            loop {
                match tokio::time::timeout_at(deadline, ingester.cut_and_flush(true)).await {
                    Ok(Ok(stats)) if stats.blocks_pending == 0 => {
                        if stats.blocks_quarantined > 0 {
                            tracing::error!(node = %name, quarantined = stats.blocks_quarantined, "leaving quarantined blocks in the local folder (the other replicas' copies are in the store)");
                        }
                        break;
                    }
                    Ok(Ok(stats)) => {
                        tracing::warn!(node = %name, pending = stats.blocks_pending, "blocks still pending; retrying")
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(node = %name, error = %e, "flush failed; retrying")
                    }
                    Err(_) => {}
                }
                if tokio::time::Instant::now() + Duration::from_secs(1) >= deadline {
                    tracing::error!(node = %name, "shutdown deadline: blocks left unflushed stay in the local folder and WAL for the next start");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        tracing::info!(node = %name, "shutdown 5/6: stopping servers (in-flight requests finish)");
        let peers: Vec<(String, std::net::SocketAddr)> = self
            .membership
            .view()
            .members
            .iter()
            .filter(|m| m.identity.name != name)
            .map(|m| (m.identity.name.clone(), m.identity.http))
            .collect();
        self.stop.cancel();
        self.tasks.close();
        // Leave step 6 its time even when a connection does not close.
        let drain_until = (tokio::time::Instant::now() + SERVER_DRAIN_LIMIT).min(
            deadline
                .checked_sub(crate::cluster::LEAVE_GOSSIP_LIMIT)
                .unwrap_or(deadline),
        );
        if tokio::time::timeout_at(drain_until, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(node = %name, "servers' connections did not all close in time; going on (nothing is lost: everything was flushed in step 4)");
        }
        tracing::info!(node = %name, peers = peers.len(), "shutdown 6/6: announcing the departure and waiting for peers to confirm");
        self.gossip_stop.cancel();
        let confirm_until =
            (tokio::time::Instant::now() + crate::cluster::LEAVE_GOSSIP_LIMIT).min(deadline);
        let confirmed = confirm_departure(&name, &self.peers, &peers, confirm_until).await;
        metrics::histogram!("ringtail_gossip_departure_confirm_seconds")
            .record(started.elapsed().as_secs_f64());
        if confirmed {
            metrics::counter!("ringtail_gossip_departures_confirmed_total").increment(1);
            tracing::info!(node = %name, "every peer confirmed the departure");
        } else {
            tracing::warn!(node = %name, "not every peer confirmed the departure before the deadline; SWIM will finish the job");
        }
        self.gossip_exit.cancel();
        let _ = tokio::time::timeout_at(deadline + Duration::from_secs(1), self.gossip_task).await;
        metrics::histogram!("ringtail_node_shutdown_seconds")
            .record(started.elapsed().as_secs_f64());
        tracing::info!(node = %name, elapsed_ms = started.elapsed().as_millis() as u64, "shutdown: done");
    }
}

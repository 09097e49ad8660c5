//! Starts the components of a node's roles, and stops them.
//!
//! Start order:
//! 1. bind every listener (so port 0 works and the gossip identity carries real ports);
//! 2. start gossip (an ingester as JOINING) and the admin/query HTTP server (`/ready` 503);
//! 3. ingester: replay the WAL, serve the internal gRPC, then announce ACTIVE;
//! 4. distributor: serve OTLP gRPC and HTTP.
//!
//! Shutdown sequence (Ctrl-C / SIGTERM), bounded by [`SHUTDOWN_DEADLINE`], each step logged:
//! 1. stop accepting new OTLP requests, pushes and queries; in-flight requests finish
//!    (every acked push is already durable in the WAL);
//! 2. leave the gossip cluster (foca's leave, gossiped while the socket is still open);
//! 3. exit. The WAL writer flushes once more when its last handle is dropped.

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
use crate::config::{Config, StorageConfig};
use crate::distributor::{self, Distributor, DistributorSettings};
use crate::ingester::{Ingester, IngesterSettings};
use crate::membership::{Membership, NodeIdentity, NodeState, Roles};
use crate::querier::{self, Querier, QuerierSettings};
use crate::rpc::IngesterClients;
use crate::storage::BlockStore;

/// Upper bound of the shutdown sequence.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(30);

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
    gossip_stop: CancellationToken,
    gossip_task: tokio::task::JoinHandle<()>,
    name: String,
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
    tracing::info!(node = %identity.name, roles = ?roles, ?endpoints, "starting");

    let tasks = TaskTracker::new();
    // Gossip outlives the servers: `wait` stops it after they drained.
    let gossip_stop = CancellationToken::new();
    let (membership, gossip_task) = Membership::start(
        identity,
        gossip_socket,
        config.gossip_join.clone(),
        gossip_stop.clone(),
    )
    .map_err(|source| NodeError::Bind {
        what: "gossip",
        addr: config.gossip_listen,
        source,
    })?;

    let clients = IngesterClients::default();
    let store = match &config.storage {
        StorageConfig::Filesystem { path } => BlockStore::local(path)?,
        StorageConfig::S3(s3) => BlockStore::s3(s3)?,
    };
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
            let stop = shutdown.clone();
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
            let stop = shutdown.clone();
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

    // The admin server starts before the WAL replay so `/ready` and `/ring` answer during it.
    let ingester_slot: Arc<OnceLock<Arc<Ingester>>> = Arc::default();
    let http = http.merge(admin::router(AdminState {
        membership: membership.clone(),
        ingester: ingester_slot.clone(),
        expects_ingester: is_ingester,
        metrics: crate::telemetry::prometheus(),
        store: store.clone(),
        admin_token: config.admin_token.clone(),
    }));
    {
        let stop = shutdown.clone();
        tasks.spawn(async move {
            if let Err(e) = axum::serve(http_listener, http)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
            {
                tracing::error!(error = %e, "HTTP server failed");
            }
        });
    }

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
        let service = ingester.service();
        let listener = grpc_listener.ok_or(NodeError::Replay("no grpc listener".into()))?;
        let stop = shutdown.clone();
        tasks.spawn(async move {
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            if let Err(e) = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                .await
            {
                tracing::error!(error = %e, "ingester gRPC server failed");
            }
        });
        ingester.start_serving();
        {
            // The pipeline workers: a cut round and a flush round every second, in two
            // tasks so a hanging upload never delays cutting.
            let (cutter, stop) = (ingester.clone(), shutdown.clone());
            tasks.spawn(async move {
                every_second(stop, || async {
                    if let Err(e) = cutter.cut().await {
                        tracing::error!(error = %e, "cut round failed");
                    }
                })
                .await
            });
            let (flusher, stop) = (ingester.clone(), shutdown.clone());
            tasks.spawn(async move {
                every_second(stop, || async {
                    flusher.flush().await;
                })
                .await
            });
        }
        let _ = ingester_slot.set(ingester);
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
        if let Some(listener) = otlp_grpc_listener {
            let service = distributor::grpc::server(distributor.clone());
            let stop = shutdown.clone();
            tasks.spawn(async move {
                let incoming =
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
                if let Err(e) = tonic::transport::Server::builder()
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
            let stop = shutdown.clone();
            tasks.spawn(async move {
                if let Err(e) = axum::serve(listener, router)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
                {
                    tracing::error!(error = %e, "OTLP HTTP server failed");
                }
            });
        }
    }

    // Forget channels of ingesters that left.
    {
        let mut view = membership.watch_view();
        let shutdown = shutdown.clone();
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
        gossip_stop,
        gossip_task,
        name: config.node_name,
    })
}

/// Runs `round` every second until `stop`.
async fn every_second<F, Fut>(stop: CancellationToken, mut round: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => round().await,
        }
    }
}

impl RunningNode {
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until the node has stopped (after its shutdown token is cancelled), bounded
    /// by [`SHUTDOWN_DEADLINE`] once shutdown began.
    pub async fn wait(self) {
        self.shutdown.cancelled().await;
        let deadline = tokio::time::Instant::now() + SHUTDOWN_DEADLINE;
        tracing::info!(node = %self.name, "shutdown: stopping servers (in-flight requests finish)");
        self.tasks.close();
        if tokio::time::timeout_at(deadline, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(node = %self.name, "shutdown: servers did not drain before the deadline");
        }
        tracing::info!(node = %self.name, "shutdown: leaving the gossip cluster");
        self.gossip_stop.cancel();
        if tokio::time::timeout_at(deadline, self.gossip_task)
            .await
            .is_err()
        {
            tracing::warn!(node = %self.name, "shutdown: gossip did not stop before the deadline");
        }
        tracing::info!(node = %self.name, "shutdown: done");
    }
}

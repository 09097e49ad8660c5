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
//!
//! Steps 2–4 are one call, `Ingester::drain` (`ingester/drain.rs`).
//!
//! The pieces: `roles.rs` builds each role's component from the config, `servers.rs`
//! binds the listeners and runs the servers, `workers.rs` runs the background loops, and
//! `shutdown.rs` holds the shutdown sequence ([`RunningNode::wait`]).

mod roles;
mod servers;
mod shutdown;
mod workers;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use xxhash_rust::xxh3::xxh3_64;

use crate::admin::{self, AdminState};
use crate::cluster::{GossipSettings, Membership, NodeIdentity, NodeState, Roles};
use crate::config::Config;
use crate::ingester::Ingester;
use crate::rpc::IngesterClients;
use crate::storage::BlockStore;
use crate::telemetry::Workers;

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
    shutdown: CancellationToken,
    bg: Background,
    gossip: Gossip,
    ingester: Option<Arc<Ingester>>,
    shutdown_timeout: Duration,
    name: String,
    /// For the peers' `/ring` at shutdown.
    peers: admin::PeerHttp,
}

/// Where the servers and workers of a node run, and what stops them: `stop`, which the
/// shutdown sequence cancels at its step 5 (until then an ingester keeps answering reads
/// and, with UNAVAILABLE, pushes).
#[derive(Default)]
struct Background {
    tasks: TaskTracker,
    stop: CancellationToken,
    /// The status records of the named workers (`GET /status/workers`).
    workers: Workers,
}

/// The gossip task, which outlives the servers: the shutdown sequence cancels `leave`
/// after they drained (step 6), and `exit` once the peers confirmed the departure.
struct Gossip {
    leave: CancellationToken,
    exit: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// Starts a node; it runs until `shutdown` is cancelled, then [`RunningNode::wait`]
/// completes the shutdown sequence.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<RunningNode, NodeError> {
    // The metrics recorder before anything records: a gauge set once at start (gossip's
    // members by state) would otherwise be lost until its next change.
    let metrics = crate::telemetry::prometheus();
    let roles = config.roles;
    let is_ingester = roles.contains(Roles::INGESTER);
    // 1. Every listener, so the identity carries the ports actually bound.
    let listeners = servers::Listeners::bind(&config).await?;
    let endpoints = listeners.endpoints(&config);
    let identity = identity(&config, &endpoints);
    tracing::info!(node = %identity.name, roles = ?roles, ?endpoints, advertised = ?identity, "starting");

    // 2. Gossip, the roles' shared parts, then the admin/query HTTP server.
    let bg = Background::default();
    let (membership, gossip) = start_gossip(&config, identity, listeners.gossip)?;

    let clients = IngesterClients::new(
        crate::rpc::auth::Credential::new(config.cluster_keys.as_deref()),
        config.internal_tls.clone(),
    );
    let store = BlockStore::open(&config.storage)?;
    let mut http = Router::new();
    if roles.contains(Roles::QUERIER) {
        let querier = roles::querier(&config, &membership, &clients, &store);
        workers::spawn_querier(&bg, &querier, &config);
        http = http
            .merge(crate::querier::http::router(querier.clone()))
            .merge(crate::querier::search_http::router(querier));
    }
    let http = workers::spawn_compactor(&bg, &store, &membership, &config, http);

    // Loaded before any server starts: a bad certificate stops the node here.
    let http_tls = config.http_tls.as_ref().map(|t| &t.server);
    let http_tls = servers::load_tls(&bg, http_tls, servers::H2_AND_HTTP1, "http")?;
    let peers = admin::PeerHttp::new(config.http_tls.as_ref(), Duration::from_secs(2))?;
    bg.tasks.spawn(admin::learn_absent_ingesters(
        membership.clone(),
        peers.clone(),
        bg.stop.clone(),
    ));

    // The admin server starts before the WAL replay so `/ready` and `/ring` answer during it.
    let ingester_slot: Arc<OnceLock<Arc<Ingester>>> = Arc::default();
    let http = http.merge(admin::router(AdminState {
        membership: membership.clone(),
        ingester: ingester_slot.clone(),
        expects_ingester: is_ingester,
        metrics,
        store: store.clone(),
        auth: admin::auth::AdminAuth::from_config(config.admin_token.as_deref()),
        shutdown: shutdown.clone(),
        peers: peers.clone(),
        workers: bg.workers.clone(),
        replication: config.replication,
        roles: config.roles,
        overrides: config.cut.overrides.clone(),
    }));
    servers::spawn_http(&bg, listeners.http, http, &config, http_tls);

    // 3. The ingester: WAL replay, internal gRPC, workers, then ACTIVE.
    let mut running_ingester = None;
    if is_ingester {
        let role = roles::ingester(&config, &store).await?;
        servers::spawn_internal_grpc(&bg, listeners.grpc, role.service, &config)?;
        role.ingester.start_serving();
        workers::spawn_ingester(&bg, &role.ingester);
        let _ = ingester_slot.set(role.ingester.clone());
        running_ingester = Some(role.ingester);
        membership.set_state(NodeState::Active).await;
    }
    // 4. The distributor's OTLP receivers.
    if roles.contains(Roles::DISTRIBUTOR) {
        let distributor = roles::distributor(&config, &membership, &clients);
        servers::spawn_otlp(&bg, listeners.otlp, distributor, &config)?;
    }
    workers::spawn_channel_sweeper(&bg, &membership, clients);
    workers::spawn_overrides_reload(&bg, config.cut.overrides.clone());

    Ok(RunningNode {
        endpoints,
        membership,
        shutdown,
        bg,
        gossip,
        ingester: running_ingester,
        shutdown_timeout: config.shutdown_timeout,
        name: config.node_name,
        peers,
    })
}

fn start_gossip(
    config: &Config,
    identity: NodeIdentity,
    socket: tokio::net::UdpSocket,
) -> Result<(Membership, Gossip), NodeError> {
    let (leave, exit) = (CancellationToken::new(), CancellationToken::new());
    let (membership, task) = Membership::start(
        identity,
        socket,
        GossipSettings {
            // Membership::start fills in the bound address.
            bind: config.gossip_listen,
            absent_forget_after: config.absent_forget_after,
            join: config.gossip_join.clone(),
            packet_loss: config.gossip_packet_loss,
            keys: config.cluster_keys.clone(),
        },
        leave.clone(),
        exit.clone(),
    )
    .map_err(|source| NodeError::Bind {
        what: "gossip",
        addr: config.gossip_listen,
        source,
    })?;
    Ok((membership, Gossip { leave, exit, task }))
}

/// The identity the node gossips: an ingester starts JOINING, every other node ACTIVE.
fn identity(config: &Config, endpoints: &Endpoints) -> NodeIdentity {
    let generation = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(1);
    NodeIdentity {
        name: config.node_name.clone(),
        zone: config.zone.clone(),
        gossip: config.advertised(endpoints.gossip),
        grpc: config.advertised(endpoints.grpc.unwrap_or(endpoints.http)),
        http: config.advertised(endpoints.http),
        roles: config.roles,
        state: if config.roles.contains(Roles::INGESTER) {
            NodeState::Joining
        } else {
            NodeState::Active
        },
        token_seed: xxh3_64(config.node_name.as_bytes()),
        generation,
    }
}

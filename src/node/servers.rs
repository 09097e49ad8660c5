//! The node's listeners and servers: internal gRPC (ingesters), OTLP gRPC and HTTP
//! (distributors), and the admin/query HTTP API (every node). Each server runs on the
//! node's [`Background`] until its `stop`; in-flight requests then finish.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::{TcpListener, UdpSocket};
use tonic::service::interceptor::InterceptedService;

use super::{Background, Endpoints, NodeError};
use crate::cluster::Roles;
use crate::config::Config;
use crate::distributor::{self, Distributor};
use crate::http_server::{self, ServerSpec};
use crate::ingester::IngesterService;
use crate::rpc::auth::RequireCredential;
use crate::rpc::ingester_service::ingester_server::IngesterServer;
use crate::tls::{ReloadingTls, TlsFiles};

/// The ALPN protocols of the servers that speak both HTTP/2 and HTTP/1.1.
pub(super) const H2_AND_HTTP1: &[&[u8]] = &[b"h2", b"http/1.1"];

/// The internal gRPC service of an ingester.
pub(super) type IngesterGrpc =
    InterceptedService<IngesterServer<IngesterService>, RequireCredential>;

/// Every socket of the node's roles, bound before anything starts.
pub(super) struct Listeners {
    pub(super) http: TcpListener,
    /// Ingesters only.
    pub(super) grpc: Option<TcpListener>,
    /// Distributors only.
    pub(super) otlp: Option<OtlpListeners>,
    pub(super) gossip: UdpSocket,
}

pub(super) struct OtlpListeners {
    grpc: TcpListener,
    http: TcpListener,
}

impl Listeners {
    pub(super) async fn bind(config: &Config) -> Result<Self, NodeError> {
        let http = bind_tcp("http", config.http_listen).await?;
        let grpc = match config.roles.contains(Roles::INGESTER) {
            true => Some(bind_tcp("grpc", config.grpc_listen).await?),
            false => None,
        };
        let otlp = match config.roles.contains(Roles::DISTRIBUTOR) {
            true => Some(OtlpListeners {
                grpc: bind_tcp("otlp grpc", config.otlp_grpc_listen).await?,
                http: bind_tcp("otlp http", config.otlp_http_listen).await?,
            }),
            false => None,
        };
        let gossip = UdpSocket::bind(config.gossip_listen)
            .await
            .map_err(|source| NodeError::Bind {
                what: "gossip",
                addr: config.gossip_listen,
                source,
            })?;
        Ok(Self {
            http,
            grpc,
            otlp,
            gossip,
        })
    }

    /// The addresses actually bound (port 0 resolved).
    pub(super) fn endpoints(&self, config: &Config) -> Endpoints {
        let local = |l: &TcpListener| l.local_addr().unwrap_or(config.http_listen);
        Endpoints {
            http: local(&self.http),
            grpc: self.grpc.as_ref().map(local),
            otlp_grpc: self.otlp.as_ref().map(|o| local(&o.grpc)),
            otlp_http: self.otlp.as_ref().map(|o| local(&o.http)),
            gossip: self.gossip.local_addr().unwrap_or(config.gossip_listen),
        }
    }
}

pub(super) async fn bind_tcp(
    what: &'static str,
    addr: SocketAddr,
) -> Result<TcpListener, NodeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| NodeError::Bind { what, addr, source })
}

/// Loads a server's certificate, if it has one (a bad one fails the start), and reloads
/// it whenever its files change, until `stop`.
pub(super) fn load_tls(
    bg: &Background,
    files: Option<&TlsFiles>,
    alpn: &[&[u8]],
    what: &'static str,
) -> Result<Option<Arc<ReloadingTls>>, NodeError> {
    let Some(files) = files else {
        return Ok(None);
    };
    let tls = ReloadingTls::load(files.clone(), alpn)?;
    tls.spawn_watcher(what, bg.stop.clone());
    Ok(Some(tls))
}

/// The admin/query HTTP API (`http_listen`). Admin auth reads the peer's address
/// (`ConnectInfo`).
pub(super) fn spawn_http(
    bg: &Background,
    listener: TcpListener,
    router: Router,
    config: &Config,
    tls: Option<Arc<ReloadingTls>>,
) {
    let spec = ServerSpec {
        name: "http",
        connect_info: true,
    };
    bg.tasks.spawn(http_server::serve(
        listener,
        router,
        spec,
        config.http_limits,
        tls,
        bg.stop.clone(),
    ));
}

/// Reset streams the internal gRPC server lets wait to be accepted (h2's default: 20).
const INTERNAL_PENDING_RESETS: usize = 1024;

/// The largest HTTP/2 frame the internal gRPC server accepts (h2's default: 16 KiB). A push
/// of a 500-span request (~90 KiB) then travels in one DATA frame instead of six: fewer
/// socket writes and reads, and fewer wake-ups of the ingester per push.
/// With the push's copy out of tonic's buffer (`rpc::codec`), which keeps the memory as
/// before: `scripts/bench-pairs.sh 7423b4a 3 --concurrency 16 --duration-secs 60`, medians
/// 3.98 against 4.39 CPU-s per million spans (BENCHMARKS.md, issue 14, seventh part).
const INTERNAL_MAX_FRAME: u32 = 128 * 1024;

/// The largest HTTP/2 frame the OTLP gRPC server accepts. With h2's default of 16 KiB, an
/// SDK's 500-span export (~110 KiB) arrives in seven DATA frames, read in as many pieces
/// with a wake-up each; at 128 KiB it is one frame. The distributor copies the spans out
/// of the request before it replicates them, so the larger frame is not kept. Clients
/// built on h2 (tonic: the Rust SDK's exporter, `ringtail bench`) send frames up to the
/// server's limit; grpc-go, which the Collector uses, writes at most 16 KiB per frame
/// whatever the server allows, so its exports arrive as before.
const OTLP_MAX_FRAME: u32 = 128 * 1024;

/// The ingester's internal gRPC (`grpc_listen`), with mutual TLS when `internal_tls` is set.
pub(super) fn spawn_internal_grpc(
    bg: &Background,
    listener: Option<TcpListener>,
    service: IngesterGrpc,
    config: &Config,
) -> Result<(), NodeError> {
    let listener = listener.ok_or(NodeError::Replay("no grpc listener".into()))?;
    let files = config.internal_tls.as_ref().map(|t| t.server_files());
    let tls = load_tls(bg, files.as_ref(), &[b"h2"], "internal")?;
    let stop = bg.stop.clone();
    bg.tasks.spawn(async move {
        let incoming = crate::tls::incoming(listener, tls, "internal_grpc");
        if let Err(e) = grpc_server()
            // Its peers are distributors, which cancel the pushes that time out: under a
            // stall of a couple of seconds, more than h2's default 20 resets were pending,
            // and h2 closed the connection, failing every push on it (ResourceExhausted).
            .http2_max_pending_accept_reset_streams(Some(INTERNAL_PENDING_RESETS))
            .max_frame_size(INTERNAL_MAX_FRAME)
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
            .await
        {
            tracing::error!(error = %e, "ingester gRPC server failed");
        }
    });
    Ok(())
}

/// The distributor's OTLP receivers (`otlp_grpc_listen`, `otlp_http_listen`), with TLS
/// when `otlp_tls` is set.
pub(super) fn spawn_otlp(
    bg: &Background,
    listeners: Option<OtlpListeners>,
    distributor: Arc<Distributor>,
    config: &Config,
) -> Result<(), NodeError> {
    // Loaded before any server starts: a bad certificate stops the node here.
    let tls = load_tls(bg, config.otlp_tls.as_ref(), H2_AND_HTTP1, "otlp")?;
    let Some(listeners) = listeners else {
        return Ok(());
    };
    let service = distributor::grpc::server(distributor.clone());
    let (stop, grpc_tls) = (bg.stop.clone(), tls.clone());
    bg.tasks.spawn(async move {
        let incoming = crate::tls::incoming(listeners.grpc, grpc_tls, "otlp_grpc");
        if let Err(e) = grpc_server()
            .max_frame_size(OTLP_MAX_FRAME)
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
    let spec = ServerSpec {
        name: "otlp_http",
        connect_info: false,
    };
    bg.tasks.spawn(http_server::serve(
        listeners.http,
        distributor::http::router(distributor),
        spec,
        config.http_limits,
        tls,
        bg.stop.clone(),
    ));
    Ok(())
}

/// A gRPC server that notices dead peers: HTTP/2 pings every 10 s (5 s to answer) and TCP
/// keepalive, so connections from a vanished peer do not live on.
fn grpc_server() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
        .tcp_keepalive(Some(Duration::from_secs(30)))
}

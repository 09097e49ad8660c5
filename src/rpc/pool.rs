//! One lazily connected gRPC channel per ingester, shared by distributor and querier.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::auth::Credential;
use super::ingester_service::ingester_client::IngesterClient;
use crate::tls::InternalTls;

/// Largest internal message a client accepts (a trace read back can be large).
pub const MAX_INTERNAL_MESSAGE: usize = 256 * 1024 * 1024;

/// Largest push an ingester takes: a push holds part of one client request (at most
/// `max_recv_msg_size`), re-framed so that each trace repeats its resource and scope,
/// which can make it larger than the request. Distributors refuse, before sending, a
/// request that would make a larger push.
pub fn max_push_bytes(max_recv_msg_size: usize) -> usize {
    max_recv_msg_size.saturating_mul(2).saturating_add(1 << 20)
}

/// A client of one ingester; every call carries this node's cluster token.
pub type Client = IngesterClient<InterceptedService<Channel, Credential>>;

#[derive(Clone, Default)]
pub struct IngesterClients {
    clients: Arc<RwLock<HashMap<SocketAddr, Client>>>,
    credential: Credential,
    tls: Option<Arc<InternalTls>>,
}

impl IngesterClients {
    /// Clients that send `credential`, over mutual TLS when `tls` is set.
    pub fn new(credential: Credential, tls: Option<InternalTls>) -> Self {
        Self {
            clients: Arc::default(),
            credential,
            tls: tls.map(Arc::new),
        }
    }

    /// The client for `addr`, creating its channel on first use. Never blocks on the
    /// network: the channel connects on the first request and reconnects as needed.
    pub fn get(&self, addr: SocketAddr) -> Client {
        if let Some(c) = self.clients.read().ok().and_then(|m| m.get(&addr).cloned()) {
            return c;
        }
        let endpoint = Endpoint::from(
            http::Uri::builder()
                .scheme("http")
                .authority(addr.to_string())
                .path_and_query("/")
                .build()
                .unwrap_or_default(),
        )
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5));
        let channel = match &self.tls {
            None => endpoint.connect_lazy(),
            Some(tls) => endpoint.connect_with_connector_lazy(tls_connector(tls.clone())),
        };
        let client = IngesterClient::with_interceptor(channel, self.credential.clone())
            .max_decoding_message_size(MAX_INTERNAL_MESSAGE)
            .max_encoding_message_size(MAX_INTERNAL_MESSAGE);
        if let Ok(mut m) = self.clients.write() {
            m.entry(addr).or_insert_with(|| client.clone());
        }
        client
    }

    /// Drops the channels of ingesters that are no longer members.
    pub fn retain(&self, keep: impl Fn(&SocketAddr) -> bool) {
        if let Ok(mut m) = self.clients.write() {
            m.retain(|a, _| keep(a));
        }
    }
}

/// Connects to an ingester over mutual TLS: TCP, then a handshake with the node's
/// certificate (read again at each connection, so a renewal is picked up), checking the
/// server's against the CA and `server_name`.
fn tls_connector(
    tls: Arc<InternalTls>,
) -> impl tower::Service<
    http::Uri,
    Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>,
    Error = std::io::Error,
    Future = impl Send,
> + Clone
       + Send
       + 'static {
    tower::service_fn(move |uri: http::Uri| {
        let tls = tls.clone();
        async move {
            let addr = uri
                .authority()
                .map(|a| a.as_str().to_owned())
                .ok_or_else(|| std::io::Error::other("an ingester address without a host"))?;
            let config = tls.client_config().map_err(std::io::Error::other)?;
            let name =
                ServerName::try_from(tls.server_name.clone()).map_err(std::io::Error::other)?;
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await?;
            Ok(TokioIo::new(stream))
        }
    })
}

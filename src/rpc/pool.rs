//! One lazily connected gRPC channel per ingester, shared by distributor and querier.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use super::ingester_service::ingester_client::IngesterClient;

/// Largest internal message: a push carries at most one client request (bounded by
/// `max_recv_msg_size`) plus framing, so allow generous headroom.
pub const MAX_INTERNAL_MESSAGE: usize = 256 * 1024 * 1024;

#[derive(Clone, Default)]
pub struct IngesterClients {
    clients: Arc<RwLock<HashMap<SocketAddr, IngesterClient<Channel>>>>,
}

impl IngesterClients {
    /// The client for `addr`, creating its channel on first use. Never blocks on the
    /// network: the channel connects on the first request and reconnects as needed.
    pub fn get(&self, addr: SocketAddr) -> IngesterClient<Channel> {
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
        let client = IngesterClient::new(endpoint.connect_lazy())
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

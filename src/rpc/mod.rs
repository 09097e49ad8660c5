//! Internal RPC: generated messages and services, the raw-bytes codec, the client pool,
//! the ingester client trait the distributor and querier call through.

pub mod auth;
pub mod codec;
pub mod ingester_client;
pub mod pool;
pub mod push_frame;
pub mod quorum;

pub use ingester_client::{IngesterApi, IngesterPool};
pub use pool::IngesterClients;

#[allow(clippy::all, unreachable_pub)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/ringtail.v1.rs"));
}

#[allow(clippy::all, unreachable_pub)]
pub mod ingester_service {
    include!(concat!(env!("OUT_DIR"), "/ringtail.v1.Ingester.rs"));
}

#[allow(clippy::all, unreachable_pub)]
pub mod otlp_service {
    include!(concat!(
        env!("OUT_DIR"),
        "/opentelemetry.proto.collector.trace.v1.TraceService.rs"
    ));
}

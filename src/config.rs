//! Configuration in two stages: [`RawConfig`] (YAML file, environment, flags; every field
//! optional, unknown fields rejected) and the validated [`Config`] the rest of the code
//! uses. Precedence: flag > environment variable > file > default.
//!
//! Every field, its default and unit is listed in README.md ("Configuration").

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::cluster::Roles;
use crate::cluster_keys::ClusterKeys;
use crate::http_server::HttpLimits;
use crate::ingester::wal::{WalStoreKind, WalSync};
use crate::ingester::CutPolicy;
use crate::ring::ReplicationFactor;
use crate::storage::retention::RetentionPolicy;
pub use crate::storage::settings::{S3Config, StorageConfig};
use crate::tls::{HttpTls, InternalTls, TlsFiles};

mod addresses;
mod sections;
mod security;
use security::http_tls;

/// Configuration as written by the user. All optional; see [`Config`] for defaults.
#[derive(Args, Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Roles to run: distributor, ingester, querier or all (comma separated) [default: all]
    #[arg(long, env = "RINGTAIL_TARGET", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<Vec<String>>,
    /// Stable node name; an ingester's ring tokens derive from it [default: host name]
    #[arg(long, env = "RINGTAIL_NODE_NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Failure domain of this node (e.g. the availability zone). Once ingesters gossip
    /// zones, every trace's replicas are placed in distinct zones [default: none]
    #[arg(long, env = "RINGTAIL_ZONE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Folder for the WAL [default: ./data]
    #[arg(long, env = "RINGTAIL_DATA_DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Admin and query HTTP API [default: 0.0.0.0:3200]
    #[arg(long, env = "RINGTAIL_HTTP_LISTEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_listen: Option<SocketAddr>,
    /// Internal gRPC (ingesters) [default: 0.0.0.0:9095]
    #[arg(long, env = "RINGTAIL_GRPC_LISTEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_listen: Option<SocketAddr>,
    /// OTLP gRPC receiver (distributors) [default: 0.0.0.0:4317]
    #[arg(long, env = "RINGTAIL_OTLP_GRPC_LISTEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_grpc_listen: Option<SocketAddr>,
    /// OTLP HTTP receiver (distributors) [default: 0.0.0.0:4318]
    #[arg(long, env = "RINGTAIL_OTLP_HTTP_LISTEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_http_listen: Option<SocketAddr>,
    /// Both HTTP servers (3200, 4318): the whole request head must arrive within this, ms
    /// [default: 10000]
    #[arg(long, env = "RINGTAIL_HTTP_HEADER_READ_TIMEOUT_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_header_read_timeout_ms: Option<u64>,
    /// Both HTTP servers: longest pause in a request body before it is cut off (408), ms
    /// [default: 30000]
    #[arg(long, env = "RINGTAIL_HTTP_BODY_TIMEOUT_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_body_timeout_ms: Option<u64>,
    /// Both HTTP servers: a connection with no request in flight is closed after this, ms;
    /// keep it above the idle timeout of load balancers in front [default: 120000]
    #[arg(long, env = "RINGTAIL_HTTP_IDLE_TIMEOUT_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_idle_timeout_ms: Option<u64>,
    /// Open connections per HTTP server; more wait in the listen backlog [default: 4096]
    #[arg(long, env = "RINGTAIL_HTTP_MAX_CONNECTIONS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_max_connections: Option<usize>,
    /// Gossip UDP address [default: 0.0.0.0:7946]
    #[arg(long, env = "RINGTAIL_GOSSIP_LISTEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gossip_listen: Option<SocketAddr>,
    /// Gossip seeds, host:port (comma separated) [default: none: found a new cluster]
    #[arg(long, env = "RINGTAIL_GOSSIP_JOIN", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gossip_join: Option<Vec<String>>,
    /// IP that peers use to reach this node [default: the listen IP, or the IP of the
    /// interface that routes to the first seed, or 127.0.0.1]
    #[arg(long, env = "RINGTAIL_ADVERTISE_ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise_addr: Option<IpAddr>,
    /// An absent (crashed) ingester that has not come back within this long is forgotten
    /// by every node on its own, ms [default: 900000 (15 min)]
    #[arg(long, env = "RINGTAIL_ABSENT_FORGET_AFTER_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub absent_forget_after_ms: Option<u64>,
    /// Fault injection for tests: share of gossip packets to drop, 0..1 [default: 0]
    #[arg(long, env = "RINGTAIL_GOSSIP_PACKET_LOSS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gossip_packet_loss: Option<f64>,
    /// Replicas per trace [default: 3]
    #[arg(long, env = "RINGTAIL_REPLICATION_FACTOR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication_factor: Option<u8>,
    /// Acks needed before a client is acked [default: 2]
    #[arg(long, env = "RINGTAIL_WRITE_QUORUM")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_quorum: Option<u8>,
    /// Replica answers needed for a read [default: 2]
    #[arg(long, env = "RINGTAIL_READ_QUORUM")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_quorum: Option<u8>,
    /// Timeout of one push to one ingester, ms [default: 2000]
    #[arg(long, env = "RINGTAIL_PUSH_TIMEOUT_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push_timeout_ms: Option<u64>,
    /// Compress each push's traces (zstd, once per request) before replicating them to
    /// the ingesters [default: true]
    #[arg(long, env = "RINGTAIL_COMPRESS_PUSHES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compress_pushes: Option<bool>,
    /// Timeout of one lookup on one ingester, ms [default: 2000]
    #[arg(long, env = "RINGTAIL_READ_TIMEOUT_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_timeout_ms: Option<u64>,
    /// Timeout of one search or tag request on one ingester, ms [default: 30000]
    #[arg(long, env = "RINGTAIL_SEARCH_TIMEOUT_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search_timeout_ms: Option<u64>,
    /// Search jobs over the store's blocks one querier runs at once per request [default: 2]
    #[arg(long, env = "RINGTAIL_SEARCH_CONCURRENT_JOBS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search_concurrent_jobs: Option<usize>,
    /// Bytes of blocks (search sections, else data) one search job reads [default: 33554432]
    #[arg(long, env = "RINGTAIL_SEARCH_TARGET_BYTES_PER_JOB")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search_target_bytes_per_job: Option<u64>,
    /// After the read quorum, how long to wait for the other replicas, ms [default: 50]
    #[arg(long, env = "RINGTAIL_READ_LINGER_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_linger_ms: Option<u64>,
    /// Require X-Scope-OrgID on every request [default: false]
    #[arg(long, env = "RINGTAIL_MULTITENANCY_ENABLED")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multitenancy_enabled: Option<bool>,
    /// Largest OTLP request accepted, bytes (after decompression) [default: 16777216]
    #[arg(long, env = "RINGTAIL_MAX_RECV_MSG_SIZE_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_recv_msg_size_bytes: Option<usize>,
    /// PEM certificate chain for the OTLP receivers (gRPC and HTTP): with it and
    /// `otlp_tls_key_file` they speak TLS only; reloaded when the file changes
    /// [default: none, plaintext]
    #[arg(long, env = "RINGTAIL_OTLP_TLS_CERT_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_tls_cert_file: Option<PathBuf>,
    /// PEM private key of `otlp_tls_cert_file` [default: none]
    #[arg(long, env = "RINGTAIL_OTLP_TLS_KEY_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_tls_key_file: Option<PathBuf>,
    /// PEM certificate chain for the HTTP API (`http_listen`: queries, `/ring`, admin):
    /// with `http_tls_key_file` it speaks HTTPS only; reloaded when the file changes
    /// [default: none, plaintext]
    #[arg(long, env = "RINGTAIL_HTTP_TLS_CERT_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_tls_cert_file: Option<PathBuf>,
    /// PEM private key of `http_tls_cert_file` [default: none]
    #[arg(long, env = "RINGTAIL_HTTP_TLS_KEY_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_tls_key_file: Option<PathBuf>,
    /// PEM CA that nodes, `ringtail healthcheck` and `ringtail shutdown` trust when they
    /// call a node's HTTPS API [default: Mozilla's root CAs]
    #[arg(long, env = "RINGTAIL_HTTP_TLS_CA_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_tls_ca_file: Option<PathBuf>,
    /// The name those callers check in a node's HTTP certificate, whatever address they
    /// dial (e.g. the Service name the certificate was issued for) [default: the address]
    #[arg(long, env = "RINGTAIL_HTTP_TLS_SERVER_NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_tls_server_name: Option<String>,
    /// Mutual TLS on internal gRPC: this node's PEM certificate chain (as server and as
    /// client); with `internal_tls_key_file` and `internal_tls_ca_file` [default: none]
    #[arg(long, env = "RINGTAIL_INTERNAL_TLS_CERT_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub internal_tls_cert_file: Option<PathBuf>,
    /// PEM private key of `internal_tls_cert_file` [default: none]
    #[arg(long, env = "RINGTAIL_INTERNAL_TLS_KEY_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub internal_tls_key_file: Option<PathBuf>,
    /// PEM CA that signs every node's internal certificate; nodes trust only it [default: none]
    #[arg(long, env = "RINGTAIL_INTERNAL_TLS_CA_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub internal_tls_ca_file: Option<PathBuf>,
    /// The name every node's internal certificate carries (checked by the client)
    /// [default: ringtail-internal]
    #[arg(long, env = "RINGTAIL_INTERNAL_TLS_SERVER_NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub internal_tls_server_name: Option<String>,
    /// WAL flush policy: always (flush before ack) or periodic (every 500 ms) [default: always]
    #[arg(long, env = "RINGTAIL_WAL_SYNC")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wal_sync: Option<String>,
    /// WAL store: sled, or file (recycled segment files + fdatasync) [default: file]
    #[arg(long, env = "RINGTAIL_WAL_STORE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wal_store: Option<String>,
    /// Object store for blocks: filesystem or s3 [default: filesystem]
    #[arg(long, env = "RINGTAIL_STORAGE_BACKEND")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_backend: Option<String>,
    /// Folder of the filesystem object store, shared by every node [default: ./data/blocks]
    #[arg(long, env = "RINGTAIL_STORAGE_PATH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_path: Option<PathBuf>,
    /// S3 bucket (required with storage_backend: s3)
    #[arg(long, env = "RINGTAIL_S3_BUCKET")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_bucket: Option<String>,
    /// S3 endpoint URL, for S3-compatible stores; http:// is allowed [default: AWS]
    #[arg(long, env = "RINGTAIL_S3_ENDPOINT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_endpoint: Option<String>,
    /// S3 region [default: AWS_REGION, else us-east-1]
    #[arg(long, env = "RINGTAIL_S3_REGION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_region: Option<String>,
    /// S3 access key [default: AWS_ACCESS_KEY_ID]
    #[arg(long, env = "RINGTAIL_S3_ACCESS_KEY_ID")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_access_key_id: Option<String>,
    /// S3 secret key [default: AWS_SECRET_ACCESS_KEY]
    #[arg(long, env = "RINGTAIL_S3_SECRET_ACCESS_KEY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_secret_access_key: Option<String>,
    /// Path-style requests (endpoint/bucket/key) instead of virtual-hosted [default: false]
    #[arg(long, env = "RINGTAIL_S3_PATH_STYLE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_path_style: Option<bool>,
    /// A trace idle this long moves into the head block, ms [default: 10000]
    #[arg(long, env = "RINGTAIL_TRACE_IDLE_PERIOD_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_idle_period_ms: Option<u64>,
    /// A head block this old is completed and flushed, ms [default: 120000]
    #[arg(long, env = "RINGTAIL_MAX_BLOCK_DURATION_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_block_duration_ms: Option<u64>,
    /// A head block this large is completed and flushed, bytes [default: 33554432]
    #[arg(long, env = "RINGTAIL_MAX_BLOCK_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_block_bytes: Option<usize>,
    /// Memory budget of an ingester's live traces, bytes: above it the least recently
    /// appended traces move into head blocks early [default: 67108864]
    #[arg(long, env = "RINGTAIL_MAX_LIVE_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_live_bytes: Option<usize>,
    /// A flushed block stays on the ingester (and queryable there) this long, ms; must
    /// exceed twice blocklist_poll_ms [default: 120000]
    #[arg(long, env = "RINGTAIL_COMPLETE_BLOCK_TIMEOUT_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub complete_block_timeout_ms: Option<u64>,
    /// How often queriers list the object store's blocks, ms [default: 30000]
    #[arg(long, env = "RINGTAIL_BLOCKLIST_POLL_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocklist_poll_ms: Option<u64>,
    /// Blocks are deleted this long after their newest span ended, hours [default: 336]
    #[arg(long, env = "RINGTAIL_BLOCK_RETENTION_HOURS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_retention_hours: Option<u64>,
    /// Each tenant's ingestion rate, request bytes per second; 0 = unlimited; per tenant
    /// with `tenant:ingestion_rate_bytes=N` in tenant_overrides [default: 0]
    #[arg(long, env = "RINGTAIL_INGESTION_RATE_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingestion_rate_bytes: Option<u64>,
    /// Bytes a tenant may send at once above its rate; 0 = twice the rate [default: 0]
    #[arg(long, env = "RINGTAIL_INGESTION_BURST_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingestion_burst_bytes: Option<u64>,
    /// The most bytes one trace may hold on an ingester while it is live; spans beyond are
    /// refused and reported in OTLP partial_success; 0 = unlimited; per tenant with
    /// `tenant:max_bytes_per_trace=N` [default: 5000000]
    #[arg(long, env = "RINGTAIL_MAX_BYTES_PER_TRACE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bytes_per_trace: Option<usize>,
    /// The most bytes of tag names or values one tag request collects (Tempo's setting of
    /// the same name); past it the answer is cut short; per tenant with
    /// `tenant:max_bytes_per_tag_values_query=N` [default: 5000000]
    #[arg(long, env = "RINGTAIL_MAX_BYTES_PER_TAG_VALUES_QUERY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bytes_per_tag_values_query: Option<usize>,
    /// `local` (each distributor enforces the whole rate) or `global` (each enforces the
    /// rate divided by the number of ACTIVE distributors) [default: local]
    #[arg(long, env = "RINGTAIL_INGESTION_RATE_STRATEGY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingestion_rate_strategy: Option<String>,
    /// Per-tenant overrides, "tenant:key=value" (comma separated); keys:
    /// trace_idle_period_ms, max_block_duration_ms, max_block_bytes, block_retention_hours,
    /// ingestion_rate_bytes, ingestion_burst_bytes, max_bytes_per_trace,
    /// max_bytes_per_tag_values_query [default: none]
    #[arg(long, env = "RINGTAIL_TENANT_OVERRIDES", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_overrides: Option<Vec<String>>,
    /// A YAML file of per-tenant overrides (`overrides: {tenant: {key: value}}`, the keys
    /// of tenant_overrides, which it overrides), re-read every 10 s and on SIGHUP; a file
    /// that does not parse is refused and the last good one kept [default: none]
    #[arg(long, env = "RINGTAIL_OVERRIDES_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overrides_file: Option<PathBuf>,
    /// Objects of unfinished or gutted blocks are deleted after this grace, ms [default: 3600000]
    #[arg(long, env = "RINGTAIL_ORPHAN_GRACE_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orphan_grace_ms: Option<u64>,
    /// How often compactors run retention and orphan cleanup, ms [default: 600000]
    #[arg(long, env = "RINGTAIL_RETENTION_INTERVAL_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_interval_ms: Option<u64>,
    /// How often compactors plan and merge, ms [default: 30000]
    #[arg(long, env = "RINGTAIL_COMPACTION_INTERVAL_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compaction_interval_ms: Option<u64>,
    /// Compactors merge the blocks of each window of this many seconds (by their newest
    /// span) [default: 3600]
    #[arg(long, env = "RINGTAIL_COMPACTION_WINDOW_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compaction_window_secs: Option<u64>,
    /// Ingesters' blocks younger than this wait before a merge, so the other replicas'
    /// blocks of their window arrive first, ms [default: 120000]
    #[arg(long, env = "RINGTAIL_COMPACTION_SETTLE_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compaction_settle_ms: Option<u64>,
    /// Merges a compactor runs at once [default: 2]
    #[arg(long, env = "RINGTAIL_COMPACTION_CONCURRENCY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compaction_concurrency: Option<u64>,
    /// The most data bytes of a merge's inputs in an open window, and of each ID range of a
    /// closed window's merge [default: 1073741824]
    #[arg(long, env = "RINGTAIL_MAX_COMPACTED_BLOCK_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_compacted_block_bytes: Option<u64>,
    /// Blocks a merge replaced are deleted this long after, ms; must exceed twice
    /// blocklist_poll_ms so every querier lists the replacement first [default: 600000]
    #[arg(long, env = "RINGTAIL_COMPACTED_BLOCK_RETENTION_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compacted_block_retention_ms: Option<u64>,
    /// Bearer token for the admin API (tenant deletion); unset disables it [default: none]
    #[arg(long, env = "RINGTAIL_ADMIN_TOKEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<String>,
    /// The cluster secret: gossip packets are sealed and internal gRPC calls carry a token
    /// derived from it. A keyring: the first secret seals, every one is accepted
    /// (comma separated in flag/env); each at least 16 bytes [default: none]
    #[arg(long, env = "RINGTAIL_CLUSTER_SECRET", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_secret: Option<Vec<String>>,
    /// Label sealed into every gossip packet: clusters with different labels never merge,
    /// even with the same secret [default: ""]
    #[arg(long, env = "RINGTAIL_CLUSTER_LABEL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_label: Option<String>,
    /// Run gossip and internal gRPC without a cluster secret (a private network only)
    /// [default: false]
    #[arg(long, env = "RINGTAIL_INSECURE_CLUSTER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insecure_cluster: Option<bool>,
    /// Upper bound of the shutdown sequence (drain, flush, leave), ms; set the Helm chart's
    /// terminationGracePeriodSeconds above it [default: 60000]
    #[arg(long, env = "RINGTAIL_SHUTDOWN_TIMEOUT_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_timeout_ms: Option<u64>,
    /// sled page cache for the WAL, bytes [default: 67108864]
    #[arg(long, env = "RINGTAIL_WAL_CACHE_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wal_cache_bytes: Option<u64>,
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config field `{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub roles: Roles,
    pub node_name: String,
    /// `zone`: gossiped by the node; ingesters' zones drive placement.
    pub zone: Option<String>,
    pub data_dir: PathBuf,
    pub http_listen: SocketAddr,
    pub grpc_listen: SocketAddr,
    pub otlp_grpc_listen: SocketAddr,
    pub otlp_http_listen: SocketAddr,
    pub http_limits: HttpLimits,
    pub gossip_listen: SocketAddr,
    pub gossip_join: Vec<String>,
    pub gossip_packet_loss: f64,
    pub absent_forget_after: Duration,
    pub advertise_addr: IpAddr,
    pub replication: ReplicationFactor,
    pub push_timeout: Duration,
    pub compress_pushes: bool,
    pub read_timeout: Duration,
    pub search_timeout: Duration,
    /// Search jobs over the store's blocks run at once per request, and the bytes of
    /// blocks one reads.
    pub search_concurrent_jobs: usize,
    pub search_target_bytes_per_job: u64,
    pub read_linger: Duration,
    pub multitenancy_enabled: bool,
    pub max_recv_msg_size: usize,
    /// TLS for the OTLP receivers.
    pub otlp_tls: Option<TlsFiles>,
    /// Mutual TLS on internal gRPC.
    pub internal_tls: Option<InternalTls>,
    /// TLS on the HTTP API.
    pub http_tls: Option<HttpTls>,
    pub wal_sync: WalSync,
    /// `None`: not configured (see [`crate::ingester::IngesterSettings::wal_store`]).
    pub wal_store: Option<WalStoreKind>,
    pub wal_cache_bytes: u64,
    pub storage: StorageConfig,
    pub cut: CutPolicy,
    pub blocklist_poll: Duration,
    pub retention: RetentionPolicy,
    pub retention_interval: Duration,
    pub compaction: crate::compactor::CompactionSettings,
    pub admin_token: Option<String>,
    /// `None` only with `insecure_cluster`.
    pub cluster_keys: Option<Arc<ClusterKeys>>,
    pub shutdown_timeout: Duration,
    /// `ingestion_rate_strategy: global`: each distributor enforces its share of a rate.
    pub ingestion_rate_global: bool,
}

impl RawConfig {
    /// Loads `file` (if any) and lays `overrides` (flags and environment) over it.
    pub fn load(
        file: Option<&std::path::Path>,
        overrides: &RawConfig,
    ) -> Result<Self, ConfigError> {
        let from_file = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                if text.trim().is_empty() {
                    RawConfig::default()
                } else {
                    serde_saphyr::from_str::<RawConfig>(&text).map_err(|e| ConfigError::Parse {
                        path: path.to_path_buf(),
                        message: e.to_string(),
                    })?
                }
            }
            None => RawConfig::default(),
        };
        Ok(from_file.overlay(overrides))
    }

    /// `self` with every field that `top` sets replaced.
    pub fn overlay(self, top: &RawConfig) -> Self {
        let mut merged = serde_json::to_value(&self).unwrap_or_default();
        if let (Some(base), Ok(serde_json::Value::Object(over))) =
            (merged.as_object_mut(), serde_json::to_value(top))
        {
            base.extend(over);
        }
        serde_json::from_value(merged).unwrap_or(self)
    }

    /// TLS on the HTTP API (`http_tls_*`), also read by `ringtail healthcheck` and
    /// `ringtail shutdown` to call the node the way its peers do.
    pub fn http_tls(&self) -> Result<Option<HttpTls>, ConfigError> {
        http_tls(
            self.http_tls_cert_file.clone(),
            self.http_tls_key_file.clone(),
            self.http_tls_ca_file.clone(),
            self.http_tls_server_name.clone(),
        )
    }

    /// `search_concurrent_jobs` and `search_target_bytes_per_job`.
    fn search_jobs(&self) -> Result<(usize, u64), ConfigError> {
        Ok((
            positive("search_concurrent_jobs", self.search_concurrent_jobs, 2)?,
            positive(
                "search_target_bytes_per_job",
                self.search_target_bytes_per_job,
                32 << 20,
            )?,
        ))
    }

    pub fn validate(self) -> Result<Config, ConfigError> {
        let (blocklist_poll, complete_block_timeout) = self.block_timing()?;
        let (cut, retention) = self.limits(complete_block_timeout)?;
        let (wal_sync, wal_store) = self.wal()?;
        let gossip = self.gossip()?;
        let (search_concurrent_jobs, search_target_bytes_per_job) = self.search_jobs()?;
        let node_name = match &self.node_name {
            Some(n) if n.trim().is_empty() => return Err(invalid("node_name", "is empty")),
            Some(n) if n.chars().any(char::is_control) => {
                return Err(invalid("node_name", "has a control character"))
            }
            Some(n) => n.clone(),
            None => addresses::default_node_name(),
        };
        let zone = match self.zone.as_deref() {
            None => None,
            Some(z) if z.is_empty() || z.len() > 63 || z.chars().any(char::is_control) => {
                return Err(invalid(
                    "zone",
                    format!("{z:?} must be 1 to 63 printable characters"),
                ))
            }
            Some(z) => Some(z.to_owned()),
        };
        let max_recv_msg_size = self.max_recv_msg_size_bytes.unwrap_or(16 << 20);
        if max_recv_msg_size < 1024 {
            return Err(invalid("max_recv_msg_size_bytes", "must be at least 1024"));
        }
        let admin_token = match &self.admin_token {
            Some(t) if t.trim().is_empty() => return Err(invalid("admin_token", "is empty")),
            other => other.clone(),
        };
        Ok(Config {
            roles: self.roles()?,
            node_name,
            zone,
            data_dir: self
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("./data")),
            http_listen: self.http_listen.unwrap_or(([0, 0, 0, 0], 3200).into()),
            grpc_listen: self.grpc_listen.unwrap_or(([0, 0, 0, 0], 9095).into()),
            otlp_grpc_listen: self.otlp_grpc_listen.unwrap_or(([0, 0, 0, 0], 4317).into()),
            otlp_http_listen: self.otlp_http_listen.unwrap_or(([0, 0, 0, 0], 4318).into()),
            http_limits: self.http_limits()?,
            gossip_listen: gossip.listen,
            gossip_join: gossip.join,
            gossip_packet_loss: gossip.packet_loss,
            ingestion_rate_global: match self.ingestion_rate_strategy.as_deref() {
                None | Some("local") => false,
                Some("global") => true,
                Some(other) => {
                    return Err(invalid(
                        "ingestion_rate_strategy",
                        format!("{other:?} is not one of: local, global"),
                    ))
                }
            },
            absent_forget_after: gossip.absent_forget_after,
            advertise_addr: gossip.advertise,
            replication: self.replication()?,
            push_timeout: positive_ms("push_timeout_ms", self.push_timeout_ms, 2000)?,
            compress_pushes: self.compress_pushes.unwrap_or(true),
            read_timeout: positive_ms("read_timeout_ms", self.read_timeout_ms, 2000)?,
            search_timeout: positive_ms("search_timeout_ms", self.search_timeout_ms, 30_000)?,
            search_concurrent_jobs,
            search_target_bytes_per_job,
            read_linger: Duration::from_millis(self.read_linger_ms.unwrap_or(50)),
            multitenancy_enabled: self.multitenancy_enabled.unwrap_or(false),
            max_recv_msg_size,
            http_tls: self.http_tls()?,
            internal_tls: self.internal_tls()?,
            otlp_tls: self.otlp_tls()?,
            wal_sync,
            wal_store,
            storage: self.storage()?,
            cut,
            blocklist_poll,
            retention,
            retention_interval: positive_ms(
                "retention_interval_ms",
                self.retention_interval_ms,
                600_000,
            )?,
            compaction: self.compaction(blocklist_poll)?,
            admin_token,
            cluster_keys: gossip.keys,
            shutdown_timeout: self.shutdown_timeout()?,
            wal_cache_bytes: self.wal_cache_bytes.unwrap_or(64 << 20),
        })
    }
}

/// `v` (or `default`), which must not be zero.
fn positive<T: Copy + Default + PartialEq>(
    field: &'static str,
    v: Option<T>,
    default: T,
) -> Result<T, ConfigError> {
    match v.unwrap_or(default) {
        v if v == T::default() => Err(invalid(field, "must be greater than 0")),
        v => Ok(v),
    }
}

/// `v` ms (or `default`), which must be greater than 0.
fn positive_ms(field: &'static str, v: Option<u64>, default: u64) -> Result<Duration, ConfigError> {
    match v.unwrap_or(default) {
        0 => Err(invalid(field, "must be greater than 0")),
        ms => Ok(Duration::from_millis(ms)),
    }
}

impl Config {
    /// The address peers use for a listener of this node.
    pub fn advertised(&self, listen: SocketAddr) -> SocketAddr {
        if listen.ip().is_unspecified() {
            SocketAddr::new(self.advertise_addr, listen.port())
        } else {
            listen
        }
    }
}

#[cfg(test)]
mod tests;

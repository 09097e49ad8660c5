//! Ringtail: a trace ingestion cluster.
//!
//! # Map
//!
//! - [`config`]: raw serde/clap config → validated [`config::Config`], one section parser
//!   per part (`config/sections.rs`), the security rules (`config/security.rs`).
//! - [`overrides`]: per-tenant limits (defaults + `tenant_overrides`), one parser, one
//!   lookup, read by the cut policy and retention.
//! - [`model`]: trace and tenant IDs (the one `X-Scope-OrgID` extractor).
//! - [`storage`]: the block format, the object store (its settings in
//!   `storage/settings.rs`), retention and tenant deletion.
//! - [`node`]: starts the components of the chosen roles (`node/roles.rs`), their servers
//!   (`node/servers.rs`) and background workers (`node/workers.rs`); the shutdown sequence
//!   (`node/shutdown.rs`).
//! - [`ring`]: tokens, replica placement, quorum counting (pure, no I/O).
//! - [`membership`]: the foca driver task, node identity and state, the cluster view; the
//!   absent/departed/forgotten rules (`membership/lifecycle.rs`, pure) and the typed
//!   `/ring` document ([`membership::RingDoc`]).
//! - [`cluster_keys`]: the cluster secret's keyring: sealed gossip packets, the internal
//!   RPC token.
//! - [`rpc`]: generated internal RPC, the raw-bytes codec, the ingester client pool behind
//!   the `IngesterPool` / `IngesterApi` traits (with an in-memory fake for unit tests),
//!   the quorum helper with typed call errors.
//! - [`otlp`]: shallow OTLP decoding: split a request by trace ID without decoding spans.
//! - [`distributor`]: OTLP gRPC/HTTP receivers, validation, replication with write quorum.
//! - [`ingester`]: push service, WAL, live traces; its drain (`ingester/drain.rs`, shutdown
//!   steps 2–4).
//! - [`querier`]: trace by ID with read quorum, merge and de-duplication, Tempo formats.
//! - [`http_server`]: the accept loop of both HTTP servers: header, body and idle
//!   timeouts, the connection cap, graceful shutdown.
//! - [`admin`]: `/ready`, `/metrics`, `/ring`, `/status/buildinfo`, `/status/workers`,
//!   `/api/echo`, the client nodes use to call each other's HTTP API ([`admin::PeerHttp`]).
//! - [`tls`]: TLS for the OTLP receivers and the HTTP API, mutual TLS for internal gRPC,
//!   from PEM files reloaded when they change.
//! - [`local`]: `ringtail local`. [`telemetry`]: logs, the Prometheus recorder, and the
//!   status records of the named workers.
//! - [`bench`]: the load tool (`ringtail bench`).
//!
//! # The flow of one span
//!
//! 1. A distributor receives an OTLP `ExportTraceServiceRequest` (gRPC or HTTP) and walks
//!    it shallowly ([`otlp::split_by_trace`]): it reads only each span's trace and span
//!    IDs, keeps every span as a slice of the request, and re-frames the spans of each
//!    trace as `ResourceSpans` records (resource and scope copied by bytes).
//! 2. Each trace's token (`xxh3(trace ID, seed = tenant)`) picks 3 distinct ACTIVE
//!    ingesters on the ring; each ingester gets one `Push` with all its traces.
//! 3. An ingester appends the push, byte for byte, to its WAL (group commit, flushed before
//!    the ack by default), then indexes the trace segments in memory.
//! 4. The distributor answers the client once every trace has 2 acks; the third push
//!    continues in the background.
//! 5. A querier asks the ingesters for the trace, needs 2 answers from the trace's
//!    replicas, merges what it got and removes duplicate spans.

pub mod admin;
pub mod bench;
pub mod cluster;
pub mod cluster_keys;
pub mod config;
pub mod distributor;
pub mod error;
pub mod http_server;
pub mod ingester;
pub mod local;
pub mod model;
pub mod node;
pub mod otlp;
pub mod overrides;
pub mod querier;
pub mod ring;
pub mod rpc;
pub mod storage;
pub mod telemetry;
pub mod tls;

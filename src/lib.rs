//! Ringtail: a trace ingestion cluster.
//!
//! # Map
//!
//! Public: what the binary runs and what the end-to-end tests drive the cluster with.
//! Everything else is `pub(crate)` (`#![deny(unreachable_pub)]` keeps it so).
//!
//! - [`config`]: raw serde/clap config → validated [`config::Config`], one section parser
//!   per part (`config/sections.rs`), the security rules (`config/security.rs`).
//! - `overrides`: per-tenant limits (defaults + `tenant_overrides`), one parser, one
//!   lookup, read by the cut policy and retention.
//! - `error`: one `ErrorCode` per failure kind → gRPC code, HTTP status, retryable,
//!   `Retry-After`; every layer's typed error says which code it is.
//! - [`model`]: trace and tenant IDs (the one `X-Scope-OrgID` extractor).
//! - [`storage`]: the block format, the object store (its settings in
//!   `storage/settings.rs`), retention and tenant deletion.
//! - [`node`]: a node's roles (`node/roles.rs`), servers, named background workers (their
//!   state on `/status/workers`), and the shutdown sequence (`node/shutdown.rs`).
//! - `ring`: tokens and replica placement (`ring/placement.rs`), quorum counting; pure.
//! - `cluster`: gossip membership: the foca driver (`cluster/gossip.rs`), node identity
//!   and state, the cluster view (`cluster/view.rs`), the absent/departed/forgotten rules
//!   (`cluster/lifecycle.rs`, pure) and the typed `/ring` document (`cluster/ring_doc.rs`).
//! - [`cluster_keys`]: the cluster secret's keyring: sealed gossip packets, the internal
//!   RPC token.
//! - [`rpc`]: generated internal RPC, the raw-bytes codec, the ingester client pool behind
//!   the `IngesterPool` / `IngesterApi` traits (with an in-memory fake for unit tests),
//!   the quorum helper with typed call errors.
//! - [`otlp`]: shallow OTLP decoding: split a request by trace ID without decoding spans.
//! - `distributor`: OTLP gRPC/HTTP receivers, validation, replication with write quorum.
//! - `ingester`: the push service, the WAL, one instance per tenant (live traces, head
//!   block, sealed heads, local blocks: `ingester/instance.rs`), the cut and flush rounds
//!   (`cut.rs`, `flush.rs`) and the drain (`drain.rs`).
//! - `querier`: trace by ID with read quorum, merge and de-duplication, Tempo formats;
//!   search and tags fanned out to every ingester and over the store's blocks
//!   (`querier/search.rs`, `querier/search_http.rs`).
//! - `traceql`: the TraceQL parser (pure syntax, errors with their column).
//! - `search`: TraceQL evaluated over traces read without materialising OTLP
//!   (`search/model.rs`), search hits and their merge, tag names and values, the API's
//!   parameters; the scanners ingesters and queriers share; a block's search section
//!   (`search/section/`: written at completion, pages skipped by their statistics).
//! - `http_server`: the accept loop of both HTTP servers: header, body and idle
//!   timeouts, the connection cap, graceful shutdown.
//! - `admin`: `/ready`, `/metrics`, `/ring`, `/status/buildinfo`, `/status/workers`,
//!   `/api/echo`, and the client nodes use to call each other's HTTP API ([`PeerHttp`]).
//! - [`tls`]: TLS for the OTLP receivers and the HTTP API, mutual TLS for internal gRPC,
//!   from PEM files reloaded when they change.
//! - [`local`]: `ringtail local`. [`telemetry`]: logs, the Prometheus recorder, worker
//!   status.
//! - [`mod@bench`]: the load tool (`ringtail bench`).
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

#![deny(unreachable_pub)]

// What the `ringtail` binary runs.
pub mod bench;
pub mod config;
pub mod local;
pub mod node;
pub mod telemetry;

// What the end-to-end tests and benches also reach: the wire formats and clients they
// drive the cluster with, and the block format they plant in a store.
pub mod cluster_keys;
pub mod model;
pub mod otlp;
pub mod rpc;
pub mod storage;
pub mod tls;

pub(crate) mod admin;
pub(crate) mod cluster;
pub(crate) mod compactor;
pub(crate) mod distributor;
pub(crate) mod error;
pub(crate) mod http_server;
pub(crate) mod ingester;
pub(crate) mod overrides;
pub(crate) mod querier;
pub(crate) mod ring;
pub(crate) mod search;
pub(crate) mod traceql;

pub use admin::PeerHttp;
pub use querier::span_count;

/// The search section of a block's traces (sorted by ID), as block completion builds it:
/// for `benches/block.rs`, which measures completion part by part.
#[doc(hidden)]
pub fn search_section_of(traces: &[storage::block::BlockTrace]) -> Option<Vec<u8>> {
    search::section::build(traces).ok().flatten()
}

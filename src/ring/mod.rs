//! Token ring and replica placement. Pure: no I/O, no clocks.
//!
//! Every ingester owns [`TOKENS_PER_INSTANCE`] tokens derived from the `token_seed` in its
//! gossip identity, so every node computes the same ring from the same membership view
//! without exchanging tokens. A trace's token is `xxh3(trace ID, seed = xxh3(tenant))`;
//! its replicas are the first `n` *distinct* instances met walking clockwise from it.
//!
//! Why not the `hashring` crate: 0.3's `get_with_replicas` returns consecutive virtual
//! nodes without removing duplicates (76% of keys got fewer than 3 distinct instances
//! with 3 instances × 128 virtual nodes) and clones the ring on every call (~1 µs per key).
//! This ring is a sorted `Vec<(token, instance)>` searched with `partition_point`.

mod placement;
mod quorum;

pub(crate) use placement::{ReplicaSet, Ring, TenantSeed, Token, MAX_REPLICAS};
pub(crate) use quorum::{
    unindexed_replicas, Progress, QuorumTracker, ReplicationFactor, WriteHealth,
};

//! One function per role: its component, built from the validated config, ready for the
//! servers of [`super::servers`] and the workers of [`super::workers`].

use std::sync::Arc;

use super::servers::IngesterGrpc;
use super::NodeError;
use crate::cluster::Membership;
use crate::config::Config;
use crate::distributor::{Distributor, DistributorSettings};
use crate::ingester::{Ingester, IngesterSettings};
use crate::querier::{Querier, QuerierSettings};
use crate::rpc::IngesterClients;
use crate::storage::BlockStore;

pub(super) fn querier(
    config: &Config,
    membership: &Membership,
    clients: &IngesterClients,
    store: &BlockStore,
) -> Arc<Querier> {
    Querier::new(
        QuerierSettings {
            replication: config.replication,
            read_timeout: config.read_timeout,
            search_timeout: config.search_timeout,
            search_jobs: crate::search::jobs::JobLimits {
                concurrency: config.search_concurrent_jobs,
                target_bytes: config.search_target_bytes_per_job,
            },
            read_linger: config.read_linger,
            multitenancy_enabled: config.multitenancy_enabled,
            overrides: config.retention.overrides.clone(),
        },
        membership.clone(),
        clients.clone(),
        store.clone(),
    )
}

/// An ingester with its WAL replayed (not serving yet), and its internal gRPC service.
pub(super) struct IngesterRole {
    pub(super) ingester: Arc<Ingester>,
    pub(super) service: IngesterGrpc,
}

/// Opens the ingester's local blocks and WAL and replays the WAL, on a blocking thread.
pub(super) async fn ingester(
    config: &Config,
    store: &BlockStore,
) -> Result<IngesterRole, NodeError> {
    let settings = IngesterSettings {
        data_dir: config.data_dir.clone(),
        wal_sync: config.wal_sync,
        wal_store: config.wal_store,
        wal_cache_bytes: config.wal_cache_bytes,
        cut: config.cut.clone(),
        name: config.node_name.clone(),
    };
    let store = store.clone();
    let (ingester, _stats) = tokio::task::spawn_blocking(move || Ingester::open(&settings, store))
        .await
        .map_err(|e| NodeError::Replay(e.to_string()))??;
    let service = ingester.service(
        config.cluster_keys.clone(),
        crate::rpc::pool::max_push_bytes(config.max_recv_msg_size),
    );
    Ok(IngesterRole { ingester, service })
}

pub(super) fn distributor(
    config: &Config,
    membership: &Membership,
    clients: &IngesterClients,
) -> Arc<Distributor> {
    Distributor::new(
        DistributorSettings {
            replication: config.replication,
            push_timeout: config.push_timeout,
            compress_pushes: config.compress_pushes,
            multitenancy_enabled: config.multitenancy_enabled,
            max_recv_msg_size: config.max_recv_msg_size,
            overrides: config.cut.overrides.clone(),
            rate_global: config.ingestion_rate_global,
        },
        membership.clone(),
        clients.clone(),
    )
}

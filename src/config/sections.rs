//! The sections of [`RawConfig::validate`]: each reads its own fields, applies defaults
//! and checks them, so the rules for one part of the config sit together.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::addresses::default_advertise;
use super::security::{cluster_keys, internal_tls};
use super::{invalid, positive, positive_ms, ConfigError, RawConfig};
use crate::cluster::Roles;
use crate::cluster_keys::ClusterKeys;
use crate::http_server::HttpLimits;
use crate::ingester::wal::{WalStoreKind, WalSync};
use crate::ingester::CutPolicy;
use crate::overrides::{Limits, LiveOverrides, OverridesFileError};
use crate::ring::ReplicationFactor;
use crate::storage::retention::RetentionPolicy;
use crate::storage::{S3Config, StorageConfig};
use crate::tls::{InternalTls, TlsFiles};

/// The gossip section.
pub(super) struct Gossip {
    pub listen: SocketAddr,
    pub join: Vec<String>,
    pub packet_loss: f64,
    pub absent_forget_after: Duration,
    pub advertise: IpAddr,
    pub keys: Option<Arc<ClusterKeys>>,
}

impl RawConfig {
    /// `target`: a list of roles (default all).
    pub(super) fn roles(&self) -> Result<Roles, ConfigError> {
        let Some(list) = &self.target else {
            return Ok(Roles::ALL);
        };
        if list.is_empty() {
            return Err(invalid("target", "no role given"));
        }
        let mut roles = Roles::default();
        for t in list {
            roles = roles.union(match t.trim() {
                "all" => Roles::ALL,
                "distributor" => Roles::DISTRIBUTOR,
                "ingester" => Roles::INGESTER,
                "querier" => Roles::QUERIER,
                "compactor" => Roles::COMPACTOR,
                other => {
                    return Err(invalid(
                        "target",
                        format!(
                            "unknown role {other:?}; expected distributor, ingester, querier, compactor or all"
                        ),
                    ))
                }
            });
        }
        Ok(roles)
    }

    pub(super) fn replication(&self) -> Result<ReplicationFactor, ConfigError> {
        ReplicationFactor::new(
            self.replication_factor.unwrap_or(3),
            self.write_quorum.unwrap_or(2),
            self.read_quorum.unwrap_or(2),
        )
        .map_err(|reason| invalid("replication_factor", reason))
    }

    /// The `http_*` limits: every one must be greater than 0.
    pub(super) fn http_limits(&self) -> Result<HttpLimits, ConfigError> {
        Ok(HttpLimits {
            header_read_timeout: positive_ms(
                "http_header_read_timeout_ms",
                self.http_header_read_timeout_ms,
                10_000,
            )?,
            body_timeout: positive_ms("http_body_timeout_ms", self.http_body_timeout_ms, 30_000)?,
            idle_timeout: positive_ms("http_idle_timeout_ms", self.http_idle_timeout_ms, 120_000)?,
            max_connections: match self.http_max_connections.unwrap_or(4096) {
                0 => return Err(invalid("http_max_connections", "must be greater than 0")),
                n => n,
            },
        })
    }

    /// The WAL's sync mode and store; `None` for the store when `wal_store` is unset (the
    /// file store, or sled where a data folder already holds a sled WAL).
    pub(super) fn wal(&self) -> Result<(WalSync, Option<WalStoreKind>), ConfigError> {
        let sync = match self.wal_sync.as_deref().unwrap_or("always") {
            "always" => WalSync::Always,
            "periodic" => WalSync::Periodic,
            other => {
                return Err(invalid(
                    "wal_sync",
                    format!("{other:?} is not one of: always, periodic"),
                ))
            }
        };
        let store = match self.wal_store.as_deref() {
            None => None,
            Some("sled") => Some(WalStoreKind::Sled),
            Some("file") => Some(WalStoreKind::File),
            Some(other) => {
                return Err(invalid(
                    "wal_store",
                    format!("{other:?} is not one of: sled, file"),
                ))
            }
        };
        Ok((sync, store))
    }

    pub(super) fn storage(&self) -> Result<StorageConfig, ConfigError> {
        Ok(
            match self.storage_backend.as_deref().unwrap_or("filesystem") {
                "filesystem" => StorageConfig::Filesystem {
                    path: self
                        .storage_path
                        .clone()
                        .unwrap_or_else(|| PathBuf::from("./data/blocks")),
                },
                "s3" => StorageConfig::S3(S3Config {
                    bucket: match self.s3_bucket.clone() {
                        Some(b) if !b.trim().is_empty() => b,
                        _ => {
                            return Err(invalid(
                                "s3_bucket",
                                "is required with storage_backend: s3",
                            ))
                        }
                    },
                    endpoint: self.s3_endpoint.clone(),
                    region: self.s3_region.clone(),
                    access_key_id: self.s3_access_key_id.clone(),
                    secret_access_key: self.s3_secret_access_key.clone(),
                    path_style: self.s3_path_style.unwrap_or(false),
                }),
                other => {
                    return Err(invalid(
                        "storage_backend",
                        format!("{other:?} is not one of: filesystem, s3"),
                    ))
                }
            },
        )
    }

    /// (`blocklist_poll_ms`, `complete_block_timeout_ms`): a flushed block must stay on
    /// its ingester until every querier has listed it.
    pub(super) fn block_timing(&self) -> Result<(Duration, Duration), ConfigError> {
        let blocklist_poll = positive_ms("blocklist_poll_ms", self.blocklist_poll_ms, 30_000)?;
        let complete_block_timeout = positive_ms(
            "complete_block_timeout_ms",
            self.complete_block_timeout_ms,
            120_000,
        )?;
        if complete_block_timeout <= blocklist_poll * 2 {
            return Err(invalid(
                "complete_block_timeout_ms",
                format!(
                    "must exceed twice blocklist_poll_ms ({} ms) so queriers list a block before its ingester drops it",
                    blocklist_poll.as_millis()
                ),
            ));
        }
        Ok((blocklist_poll, complete_block_timeout))
    }

    /// The compactor's settings; replaced blocks outlive two block-list polls.
    pub(super) fn compaction(
        &self,
        blocklist_poll: Duration,
    ) -> Result<crate::compactor::CompactionSettings, ConfigError> {
        let retention = positive_ms(
            "compacted_block_retention_ms",
            self.compacted_block_retention_ms,
            600_000,
        )?;
        if retention <= blocklist_poll * 2 {
            return Err(invalid(
                "compacted_block_retention_ms",
                format!(
                    "must exceed twice blocklist_poll_ms ({} ms) so queriers list a merge's output before its inputs go",
                    blocklist_poll.as_millis()
                ),
            ));
        }
        Ok(crate::compactor::CompactionSettings {
            interval: positive_ms(
                "compaction_interval_ms",
                self.compaction_interval_ms,
                30_000,
            )?,
            settle: Duration::from_millis(self.compaction_settle_ms.unwrap_or(120_000)),
            concurrency: positive("compaction_concurrency", self.compaction_concurrency, 2)?
                as usize,
            retention,
        })
    }

    /// The per-tenant limits (defaults and `tenant_overrides`), as the ingesters' cut
    /// policy and the queriers' retention read them.
    pub(super) fn limits(
        &self,
        complete_block_timeout: Duration,
    ) -> Result<(CutPolicy, RetentionPolicy), ConfigError> {
        let defaults = Limits {
            trace_idle_period: positive_ms(
                "trace_idle_period_ms",
                self.trace_idle_period_ms,
                10_000,
            )?,
            max_block_duration: positive_ms(
                "max_block_duration_ms",
                self.max_block_duration_ms,
                120_000,
            )?,
            max_block_bytes: match self.max_block_bytes.unwrap_or(32 << 20) {
                n if n < 1024 => return Err(invalid("max_block_bytes", "must be at least 1024")),
                n => n,
            },
            block_retention: match self.block_retention_hours.unwrap_or(336) {
                0 => return Err(invalid("block_retention_hours", "must be greater than 0")),
                h => Duration::from_secs(h.saturating_mul(3600)),
            },
            ingestion_rate_bytes: self.ingestion_rate_bytes.unwrap_or(0),
            ingestion_burst_bytes: self.ingestion_burst_bytes.unwrap_or(0),
            max_bytes_per_trace: self.max_bytes_per_trace.unwrap_or(5_000_000),
            max_bytes_per_tag_values_query: match self
                .max_bytes_per_tag_values_query
                .unwrap_or(5_000_000)
            {
                0 => {
                    return Err(invalid(
                        "max_bytes_per_tag_values_query",
                        "must be greater than 0",
                    ))
                }
                n => n,
            },
            compaction_window: Duration::from_secs(positive(
                "compaction_window_secs",
                self.compaction_window_secs,
                3600,
            )?),
            max_compacted_block_bytes: positive(
                "max_compacted_block_bytes",
                self.max_compacted_block_bytes,
                1 << 30,
            )?,
        };
        let overrides = Arc::new(
            LiveOverrides::load(
                defaults,
                self.tenant_overrides.clone().unwrap_or_default(),
                self.overrides_file.clone(),
            )
            .map_err(|e| match e {
                OverridesFileError::Config(e) => invalid("tenant_overrides", e.to_string()),
                e => invalid("overrides_file", e.to_string()),
            })?,
        );
        let cut = CutPolicy {
            max_live_bytes: match self.max_live_bytes.unwrap_or(64 << 20) {
                n if n < 1 << 20 => {
                    return Err(invalid("max_live_bytes", "must be at least 1048576"))
                }
                n => n,
            },
            complete_block_timeout,
            overrides: overrides.clone(),
        };
        let retention = RetentionPolicy {
            overrides,
            orphan_grace: positive_ms("orphan_grace_ms", self.orphan_grace_ms, 3_600_000)?,
        };
        Ok((cut, retention))
    }

    /// Listen address, seeds, the address to advertise and the keyring.
    pub(super) fn gossip(&self) -> Result<Gossip, ConfigError> {
        let listen = self.gossip_listen.unwrap_or(([0, 0, 0, 0], 7946).into());
        let join: Vec<String> = self
            .gossip_join
            .iter()
            .flatten()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        for seed in &join {
            if !seed.contains(':') {
                return Err(invalid("gossip_join", format!("{seed:?} is not host:port")));
            }
        }
        let keys = cluster_keys(
            self.cluster_secret.as_deref(),
            self.cluster_label.as_deref(),
            self.insecure_cluster.unwrap_or(false),
            &join,
        )?;
        let advertise = match self.advertise_addr {
            Some(ip) if ip.is_unspecified() => {
                return Err(invalid(
                    "advertise_addr",
                    "must be a routable address, not 0.0.0.0",
                ))
            }
            Some(ip) => ip,
            None => default_advertise(listen, &join),
        };
        let packet_loss = match self.gossip_packet_loss.unwrap_or(0.0) {
            p if (0.0..1.0).contains(&p) => p,
            _ => {
                return Err(invalid(
                    "gossip_packet_loss",
                    "must be at least 0 and below 1",
                ))
            }
        };
        Ok(Gossip {
            listen,
            join,
            packet_loss,
            absent_forget_after: positive_ms(
                "absent_forget_after_ms",
                self.absent_forget_after_ms,
                900_000,
            )?,
            advertise,
            keys,
        })
    }

    pub(super) fn internal_tls(&self) -> Result<Option<InternalTls>, ConfigError> {
        internal_tls(
            self.internal_tls_cert_file.clone(),
            self.internal_tls_key_file.clone(),
            self.internal_tls_ca_file.clone(),
            self.internal_tls_server_name.clone(),
        )
    }

    pub(super) fn otlp_tls(&self) -> Result<Option<TlsFiles>, ConfigError> {
        match (&self.otlp_tls_cert_file, &self.otlp_tls_key_file) {
            (Some(cert), Some(key)) => Ok(Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: None,
            })),
            (None, None) => Ok(None),
            _ => Err(invalid(
                "otlp_tls_cert_file",
                "set together with otlp_tls_key_file (both or neither)",
            )),
        }
    }

    /// The bound of the shutdown sequence: drain, flush and leave need a few seconds.
    pub(super) fn shutdown_timeout(&self) -> Result<Duration, ConfigError> {
        match positive_ms("shutdown_timeout_ms", self.shutdown_timeout_ms, 60_000)? {
            t if t < Duration::from_secs(5) => Err(invalid(
                "shutdown_timeout_ms",
                "must be at least 5000 (drain, flush and leave need time)",
            )),
            t => Ok(t),
        }
    }
}

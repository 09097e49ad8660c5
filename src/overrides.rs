//! Per-tenant limits: one default for every tenant, overridden per tenant by
//! `tenant_overrides` (`tenant:key=value`). One parser, one lookup ([`Overrides::get`]);
//! the cut policy (ingesters), the distributors' limits, and the compactors' merges and
//! retention read the same table.

use std::collections::HashMap;
use std::time::Duration;

use crate::model::TenantId;

/// The limits of one tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    /// A live trace with no new span for this long moves into the head block.
    pub trace_idle_period: Duration,
    /// A head block this old is completed.
    pub max_block_duration: Duration,
    /// A head block this large is completed.
    pub max_block_bytes: usize,
    /// Blocks whose newest span ended longer ago are deleted.
    pub block_retention: Duration,
    /// Ingestion rate in request bytes per second (0: unlimited).
    pub ingestion_rate_bytes: u64,
    /// The most bytes taken at once above the rate (0: twice the rate).
    pub ingestion_burst_bytes: u64,
    /// The most bytes a live trace may hold on an ingester; spans beyond are refused
    /// (0: unlimited).
    pub max_bytes_per_trace: usize,
    /// The most bytes of tag names or values one tag request collects (Tempo's
    /// `max_bytes_per_tag_values_query`); past it the answer is cut short.
    pub max_bytes_per_tag_values_query: usize,
    /// Compactors merge the blocks of each window this wide (by their newest span).
    pub compaction_window: Duration,
    /// A merge's inputs stay under this many data bytes together.
    pub max_compacted_block_bytes: u64,
}

/// An ingestion rate: bytes per second, up to `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Rate {
    pub bytes_per_sec: f64,
    pub burst: f64,
}

impl Limits {
    /// The defaults of the config, for tests of the components that read limits.
    #[cfg(test)]
    pub(crate) fn config_defaults() -> Self {
        Self {
            trace_idle_period: Duration::from_secs(10),
            max_block_duration: Duration::from_secs(120),
            max_block_bytes: 32 << 20,
            block_retention: Duration::from_secs(336 * 3600),
            ingestion_rate_bytes: 0,
            ingestion_burst_bytes: 0,
            max_bytes_per_trace: 5_000_000,
            max_bytes_per_tag_values_query: 5_000_000,
            compaction_window: Duration::from_secs(3600),
            max_compacted_block_bytes: 1 << 30,
        }
    }

    /// The tenant's ingestion rate, if it has one.
    pub(crate) fn ingestion_rate(&self) -> Option<Rate> {
        (self.ingestion_rate_bytes > 0).then_some(Rate {
            bytes_per_sec: self.ingestion_rate_bytes as f64,
            burst: match self.ingestion_burst_bytes {
                0 => 2.0 * self.ingestion_rate_bytes as f64,
                b => b as f64,
            },
        })
    }
}

/// What one tenant overrides; unset fields take the default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct TenantLimits {
    trace_idle_period: Option<Duration>,
    max_block_duration: Option<Duration>,
    max_block_bytes: Option<usize>,
    block_retention: Option<Duration>,
    ingestion_rate_bytes: Option<u64>,
    ingestion_burst_bytes: Option<u64>,
    max_bytes_per_trace: Option<usize>,
    max_bytes_per_tag_values_query: Option<usize>,
    compaction_window: Option<Duration>,
    max_compacted_block_bytes: Option<u64>,
}

/// The limits of every tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Overrides {
    defaults: Limits,
    per_tenant: HashMap<String, TenantLimits>,
}

/// An entry of `tenant_overrides` that is not `tenant:key=value` with a known key and a
/// value above 0.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{entry:?} is not tenant:key=value with a known key and a value > 0")]
pub(crate) struct OverrideError {
    pub entry: String,
}

impl Overrides {
    /// The same limits for every tenant.
    pub(crate) fn new(defaults: Limits) -> Self {
        Self {
            defaults,
            per_tenant: HashMap::new(),
        }
    }

    /// `defaults`, overridden by `entries` (`tenant:key=value`; keys
    /// `trace_idle_period_ms`, `max_block_duration_ms`, `max_block_bytes`,
    /// `block_retention_hours`, `ingestion_rate_bytes`, `ingestion_burst_bytes`,
    /// `max_bytes_per_trace`, `max_bytes_per_tag_values_query`, `compaction_window_secs`,
    /// `max_compacted_block_bytes`). A later
    /// entry for the same tenant and key wins.
    pub(crate) fn parse(defaults: Limits, entries: &[String]) -> Result<Self, OverrideError> {
        let mut overrides = Self::new(defaults);
        for entry in entries {
            let bad = || OverrideError {
                entry: entry.clone(),
            };
            let (tenant, setting) = entry.split_once(':').ok_or_else(bad)?;
            let (key, value) = setting.split_once('=').ok_or_else(bad)?;
            let tenant = TenantId::parse(tenant.trim()).map_err(|_| bad())?;
            let value = match value.trim().parse::<u64>() {
                Ok(v) if v > 0 => v,
                _ => return Err(bad()),
            };
            let limits = overrides
                .per_tenant
                .entry(tenant.as_str().to_owned())
                .or_default();
            match key.trim() {
                "trace_idle_period_ms" => {
                    limits.trace_idle_period = Some(Duration::from_millis(value))
                }
                "max_block_duration_ms" => {
                    limits.max_block_duration = Some(Duration::from_millis(value))
                }
                "max_block_bytes" => {
                    limits.max_block_bytes = Some(usize::try_from(value).map_err(|_| bad())?)
                }
                "block_retention_hours" => {
                    let secs = value.checked_mul(3600).ok_or_else(bad)?;
                    limits.block_retention = Some(Duration::from_secs(secs))
                }
                "ingestion_rate_bytes" => limits.ingestion_rate_bytes = Some(value),
                "ingestion_burst_bytes" => limits.ingestion_burst_bytes = Some(value),
                "max_bytes_per_trace" => {
                    limits.max_bytes_per_trace = Some(usize::try_from(value).map_err(|_| bad())?)
                }
                "max_bytes_per_tag_values_query" => {
                    limits.max_bytes_per_tag_values_query =
                        Some(usize::try_from(value).map_err(|_| bad())?)
                }
                "compaction_window_secs" => {
                    limits.compaction_window = Some(Duration::from_secs(value))
                }
                "max_compacted_block_bytes" => limits.max_compacted_block_bytes = Some(value),
                _ => return Err(bad()),
            }
        }
        Ok(overrides)
    }

    /// What is in force, for `GET /status/overrides`: the defaults, and each overridden
    /// tenant's limits in full (defaults filled in), in the keys `tenant_overrides` uses.
    pub(crate) fn in_force(&self) -> serde_json::Value {
        let doc = |l: Limits| {
            serde_json::json!({
                "trace_idle_period_ms": l.trace_idle_period.as_millis() as u64,
                "max_block_duration_ms": l.max_block_duration.as_millis() as u64,
                "max_block_bytes": l.max_block_bytes,
                "block_retention_hours": l.block_retention.as_secs() / 3600,
                "ingestion_rate_bytes": l.ingestion_rate_bytes,
                "ingestion_burst_bytes": l.ingestion_burst_bytes,
                "max_bytes_per_trace": l.max_bytes_per_trace,
                "max_bytes_per_tag_values_query": l.max_bytes_per_tag_values_query,
                "compaction_window_secs": l.compaction_window.as_secs(),
                "max_compacted_block_bytes": l.max_compacted_block_bytes,
            })
        };
        let tenants: serde_json::Map<String, serde_json::Value> = {
            let mut names: Vec<&String> = self.per_tenant.keys().collect();
            names.sort();
            names
                .into_iter()
                .map(|t| (t.clone(), doc(self.get(t))))
                .collect()
        };
        serde_json::json!({ "defaults": doc(self.defaults), "tenants": tenants })
    }

    /// The limits of `tenant`.
    pub(crate) fn get(&self, tenant: &str) -> Limits {
        let d = self.defaults;
        match self.per_tenant.get(tenant) {
            None => d,
            Some(t) => Limits {
                trace_idle_period: t.trace_idle_period.unwrap_or(d.trace_idle_period),
                max_block_duration: t.max_block_duration.unwrap_or(d.max_block_duration),
                max_block_bytes: t.max_block_bytes.unwrap_or(d.max_block_bytes),
                block_retention: t.block_retention.unwrap_or(d.block_retention),
                ingestion_rate_bytes: t.ingestion_rate_bytes.unwrap_or(d.ingestion_rate_bytes),
                ingestion_burst_bytes: t.ingestion_burst_bytes.unwrap_or(d.ingestion_burst_bytes),
                max_bytes_per_trace: t.max_bytes_per_trace.unwrap_or(d.max_bytes_per_trace),
                max_bytes_per_tag_values_query: t
                    .max_bytes_per_tag_values_query
                    .unwrap_or(d.max_bytes_per_tag_values_query),
                compaction_window: t.compaction_window.unwrap_or(d.compaction_window),
                max_compacted_block_bytes: t
                    .max_compacted_block_bytes
                    .unwrap_or(d.max_compacted_block_bytes),
            },
        }
    }
}

/// The overrides in force, re-read from `overrides_file` while running (the worker
/// `overrides-reload` calls [`LiveOverrides::reload`] every 10 s and on SIGHUP). A file
/// that does not parse is refused with the reason and the last good table stays.
#[derive(Debug)]
pub(crate) struct LiveOverrides {
    table: std::sync::RwLock<std::sync::Arc<Overrides>>,
    defaults: Limits,
    /// `tenant_overrides` from the config; the file's entries come after (and win).
    entries: Vec<String>,
    file: Option<std::path::PathBuf>,
}

/// Why an overrides file was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OverridesFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not `overrides: {{tenant: {{key: value}}}}`: {reason}")]
    Parse {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("{path}: {source}")]
    Entry {
        path: std::path::PathBuf,
        source: OverrideError,
    },
    #[error(transparent)]
    Config(#[from] OverrideError),
}

/// `overrides_file`: `overrides:` then, per tenant, the keys of `tenant_overrides`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct OverridesFile {
    #[serde(default)]
    overrides: std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>>,
}

impl LiveOverrides {
    /// Limits that never change (no file).
    #[cfg(test)]
    pub(crate) fn fixed(overrides: Overrides) -> Self {
        Self {
            defaults: overrides.defaults,
            table: std::sync::RwLock::new(std::sync::Arc::new(overrides)),
            entries: Vec::new(),
            file: None,
        }
    }

    /// `defaults`, then `entries`, then the file's entries.
    pub(crate) fn load(
        defaults: Limits,
        entries: Vec<String>,
        file: Option<std::path::PathBuf>,
    ) -> Result<Self, OverridesFileError> {
        let live = Self {
            table: std::sync::RwLock::new(std::sync::Arc::new(Overrides::new(defaults))),
            defaults,
            entries,
            file,
        };
        let table = live.read()?;
        *live
            .table
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = std::sync::Arc::new(table);
        Ok(live)
    }

    fn read(&self) -> Result<Overrides, OverridesFileError> {
        let mut entries = self.entries.clone();
        if let Some(path) = &self.file {
            let text =
                std::fs::read_to_string(path).map_err(|source| OverridesFileError::Read {
                    path: path.clone(),
                    source,
                })?;
            let parsed: OverridesFile =
                serde_saphyr::from_str(&text).map_err(|e| OverridesFileError::Parse {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            for (tenant, keys) in parsed.overrides {
                entries.extend(keys.into_iter().map(|(k, v)| format!("{tenant}:{k}={v}")));
            }
            return Overrides::parse(self.defaults, &entries).map_err(|source| {
                OverridesFileError::Entry {
                    path: path.clone(),
                    source,
                }
            });
        }
        Ok(Overrides::parse(self.defaults, &entries)?)
    }

    /// Re-reads the file; returns whether the table changed. On error the table in force
    /// stays.
    pub(crate) fn reload(&self) -> Result<bool, OverridesFileError> {
        let table = self.read()?;
        let mut current = self
            .table
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if **current == table {
            return Ok(false);
        }
        *current = std::sync::Arc::new(table);
        Ok(true)
    }

    pub(crate) fn has_file(&self) -> bool {
        self.file.is_some()
    }

    fn current(&self) -> std::sync::Arc<Overrides> {
        self.table
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The limits of `tenant` in force.
    pub(crate) fn get(&self, tenant: &str) -> Limits {
        self.current().get(tenant)
    }

    /// See [`Overrides::in_force`].
    pub(crate) fn in_force(&self) -> serde_json::Value {
        self.current().in_force()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Limits {
        Limits {
            trace_idle_period: Duration::from_secs(10),
            max_block_duration: Duration::from_secs(120),
            max_block_bytes: 1 << 20,
            block_retention: Duration::from_secs(336 * 3600),
            ingestion_rate_bytes: 0,
            ingestion_burst_bytes: 0,
            max_bytes_per_trace: 0,
            max_bytes_per_tag_values_query: 1 << 20,
            compaction_window: Duration::from_secs(3600),
            max_compacted_block_bytes: 1 << 30,
        }
    }

    fn parse(entries: &[&str]) -> Result<Overrides, OverrideError> {
        let entries: Vec<String> = entries.iter().map(|e| e.to_string()).collect();
        Overrides::parse(defaults(), &entries)
    }

    #[test]
    fn a_tenant_overrides_only_what_it_names_and_others_keep_the_defaults() {
        let o = parse(&[
            "fast:trace_idle_period_ms=500",
            "fast:max_block_bytes=2048",
            "brief:block_retention_hours=2",
            "fast:trace_idle_period_ms=700",
            "brief:compaction_window_secs=600",
            "brief:max_compacted_block_bytes=1000000",
        ])
        .expect("valid");
        let fast = o.get("fast");
        assert_eq!(fast.trace_idle_period, Duration::from_millis(700));
        assert_eq!(fast.max_block_bytes, 2048);
        assert_eq!(fast.max_block_duration, defaults().max_block_duration);
        assert_eq!(fast.block_retention, defaults().block_retention);
        let brief = o.get("brief");
        assert_eq!(brief.block_retention, Duration::from_secs(2 * 3600));
        assert_eq!(
            (brief.compaction_window, brief.max_compacted_block_bytes),
            (Duration::from_secs(600), 1_000_000)
        );
        assert_eq!(fast.compaction_window, defaults().compaction_window);
        assert_eq!(o.get("anyone else"), defaults());
    }

    #[test]
    fn what_is_in_force_lists_the_defaults_and_each_overridden_tenant_in_full() {
        let o = parse(&["slow:ingestion_rate_bytes=1000"]).expect("valid");
        let doc = o.in_force();
        assert_eq!(doc["defaults"]["ingestion_rate_bytes"], 0);
        assert_eq!(doc["defaults"]["block_retention_hours"], 336);
        assert_eq!(doc["tenants"]["slow"]["ingestion_rate_bytes"], 1000);
        assert_eq!(doc["tenants"]["slow"]["trace_idle_period_ms"], 10_000);
        assert_eq!(doc["tenants"].as_object().map(|t| t.len()), Some(1));
    }

    #[test]
    fn an_ingestion_rate_is_per_tenant_with_a_burst_of_twice_the_rate_unless_set() {
        let o = parse(&[
            "slow:ingestion_rate_bytes=1000",
            "spiky:ingestion_rate_bytes=1000",
            "spiky:ingestion_burst_bytes=50000",
        ])
        .expect("valid");
        assert_eq!(o.get("anyone else").ingestion_rate(), None);
        let slow = o.get("slow").ingestion_rate().expect("a rate");
        assert_eq!((slow.bytes_per_sec, slow.burst), (1000.0, 2000.0));
        let spiky = o.get("spiky").ingestion_rate().expect("a rate");
        assert_eq!((spiky.bytes_per_sec, spiky.burst), (1000.0, 50000.0));
    }

    #[test]
    fn malformed_entries_are_refused_with_the_entry() {
        for entry in [
            "no-colon",
            "t:no-equals",
            "t:unknown_key=1",
            "t:trace_idle_period_ms=0",
            "t:max_block_bytes=-1",
            "t:block_retention_hours=many",
            "t:block_retention_hours=18446744073709551615",
            ":trace_idle_period_ms=5",
        ] {
            let err = parse(&[entry]).expect_err(entry);
            assert_eq!(err.entry, entry);
        }
    }

    #[test]
    fn an_overrides_file_is_reread_and_a_bad_one_is_refused_keeping_the_last_good_table() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("overrides.yaml");
        std::fs::write(
            &path,
            "overrides:\n  slow:\n    ingestion_rate_bytes: 1000\n",
        )
        .expect("write");
        let live = LiveOverrides::load(
            defaults(),
            vec!["slow:trace_idle_period_ms=500".into()],
            Some(path.clone()),
        )
        .expect("loads");
        assert_eq!(live.get("slow").ingestion_rate_bytes, 1000);
        assert_eq!(
            live.get("slow").trace_idle_period,
            Duration::from_millis(500)
        );
        assert!(!live.reload().expect("same file"));
        std::fs::write(
            &path,
            "overrides:\n  slow:\n    ingestion_rate_bytes: 2000\n",
        )
        .expect("write");
        assert!(live.reload().expect("a new table"));
        assert_eq!(live.get("slow").ingestion_rate_bytes, 2000);
        for bad in [
            "overrides: [",
            "overrides:\n  slow:\n    no_such_key: 1\n",
            "other: 1\n",
        ] {
            std::fs::write(&path, bad).expect("write");
            assert!(live.reload().is_err(), "{bad}");
            assert_eq!(
                live.get("slow").ingestion_rate_bytes,
                2000,
                "the last good table stays"
            );
        }
        std::fs::remove_file(&path).expect("remove");
        assert!(matches!(
            live.reload(),
            Err(OverridesFileError::Read { .. })
        ));
    }
}

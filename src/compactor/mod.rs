//! The compactor: merges the replicas' blocks of a time window into one copy, marks what
//! it replaced, and deletes replaced blocks after a grace period. `plan` decides (pure),
//! `merge` merges (pure, a page at a time), `run` does one merge's I/O, `pass` one round
//! over every tenant. Compactors share the work by window: each `(tenant, window)` has
//! one owner among the ACTIVE compactors gossip lists ([`owner`]).

mod input;
pub(crate) mod merge;
pub(crate) mod pass;
pub(crate) mod plan;
pub(crate) mod run;
pub(crate) mod status;

#[cfg(test)]
mod tests;

use std::time::Duration;

use crate::overrides::Limits;

/// The compactor's settings (`compaction_interval_ms`, `compaction_settle_ms`,
/// `compaction_concurrency`, `compacted_block_retention_ms`); the window and the size of a
/// merge are per tenant ([`Limits`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompactionSettings {
    pub interval: Duration,
    pub settle: Duration,
    /// Merges run at once.
    pub concurrency: usize,
    pub retention: Duration,
}

impl CompactionSettings {
    /// The plan settings of a tenant with `limits`.
    pub(crate) fn plan(&self, limits: &Limits) -> plan::PlanSettings {
        plan::PlanSettings {
            window_secs: limits.compaction_window.as_secs().max(1),
            max_block_bytes: limits.max_compacted_block_bytes,
            settle_secs: self.settle.as_secs(),
            retention_secs: self.retention.as_secs(),
        }
    }
}

/// The compactor among `compactors` that does `(tenant, window)`'s work: the highest
/// hash of (name, tenant, window), so every node agrees from the same member list and a
/// compactor that leaves hands on only its own windows, spread over the others.
pub(crate) fn owner<'a>(compactors: &[&'a str], tenant: &str, window: u64) -> Option<&'a str> {
    compactors.iter().copied().max_by_key(|name| {
        let key = format!("{name}\u{0}{tenant}\u{0}{window}");
        (xxhash_rust::xxh3::xxh3_64(key.as_bytes()), *name)
    })
}

#[cfg(test)]
mod owner_tests {
    use super::owner;

    #[test]
    fn each_window_has_one_owner_and_a_departure_moves_only_the_departed_ones_windows() {
        let three = ["c1", "c2", "c3"];
        let two = ["c1", "c3"];
        let mut counts = [0usize; 3];
        for w in 0..3000u64 {
            let before = owner(&three, "t", w).expect("owner");
            counts[three.iter().position(|c| *c == before).expect("member")] += 1;
            let after = owner(&two, "t", w).expect("owner");
            if before != "c2" {
                assert_eq!(before, after, "window {w} moved without cause");
            }
        }
        assert!(counts.iter().all(|&n| n > 800), "spread: {counts:?}");
        assert_eq!(owner(&[], "t", 1), None);
        assert_ne!(
            (0..64).map(|w| owner(&three, "a", w)).collect::<Vec<_>>(),
            (0..64).map(|w| owner(&three, "b", w)).collect::<Vec<_>>(),
            "tenants are spread independently"
        );
    }
}

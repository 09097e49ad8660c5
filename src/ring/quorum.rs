//! Replication factor and quorum counting. Pure: the RPC layer feeds it outcomes.

use std::num::NonZeroU8;

use super::ReplicaSet;

/// Replication factor with its read and write quorums.
///
/// Invariant (checked by [`ReplicationFactor::new`]): `read_quorum + write_quorum > factor`,
/// so every read quorum overlaps every write quorum in at least one replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicationFactor {
    factor: NonZeroU8,
    write_quorum: NonZeroU8,
    read_quorum: NonZeroU8,
}

impl ReplicationFactor {
    pub fn new(factor: u8, write_quorum: u8, read_quorum: u8) -> Result<Self, String> {
        let nz = |v: u8, name: &str| {
            NonZeroU8::new(v).ok_or_else(|| format!("{name} must be at least 1"))
        };
        let factor = nz(factor, "replication_factor")?;
        let write_quorum = nz(write_quorum, "write_quorum")?;
        let read_quorum = nz(read_quorum, "read_quorum")?;
        if factor.get() as usize > super::MAX_REPLICAS {
            return Err(format!(
                "replication_factor must be at most {}",
                super::MAX_REPLICAS
            ));
        }
        if write_quorum > factor || read_quorum > factor {
            return Err("quorums cannot exceed replication_factor".into());
        }
        if read_quorum.get() + write_quorum.get() <= factor.get() {
            return Err(format!(
                "read_quorum ({read_quorum}) + write_quorum ({write_quorum}) must exceed replication_factor ({factor}) so reads see every acknowledged write"
            ));
        }
        Ok(Self {
            factor,
            write_quorum,
            read_quorum,
        })
    }

    pub fn factor(&self) -> usize {
        self.factor.get() as usize
    }

    pub fn write_quorum(&self) -> usize {
        self.write_quorum.get() as usize
    }

    pub fn read_quorum(&self) -> usize {
        self.read_quorum.get() as usize
    }

    /// What writes do with `active` ingesters in the write ring: every trace goes to
    /// `min(factor, active)` of them and is acked at the write quorum, so writes go on
    /// (under-replicated) while at least `write_quorum` are ACTIVE, and are refused below.
    pub fn write_health(&self, active: usize) -> WriteHealth {
        if active >= self.factor() {
            WriteHealth::Full
        } else if active >= self.write_quorum() {
            WriteHealth::UnderReplicated
        } else {
            WriteHealth::Refused
        }
    }
}

/// Whether writes are placed on the replication factor, on fewer replicas, or refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WriteHealth {
    /// Every trace gets `factor` replicas.
    Full,
    /// Fewer ACTIVE ingesters than the factor (one restarting, leaving or crashed, or the
    /// cluster scaled down): every trace goes to each ACTIVE one, acked at write quorum.
    UnderReplicated,
    /// Fewer ACTIVE ingesters than the write quorum: writes are refused (UNAVAILABLE).
    Refused,
}

impl Default for ReplicationFactor {
    fn default() -> Self {
        Self::new(3, 2, 2).expect("3/2/2 is valid")
    }
}

/// Where a quorum operation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Some group has neither reached its quorum nor lost the chance to.
    Pending,
    /// Every group has `required` successes.
    Reached,
    /// Some group can no longer reach `required` successes.
    Failed,
}

/// The replicas of a trace that leave it out of their blocks' search sections: the last
/// `write_quorum - 1` in ring order (which varies from trace to trace, so the work is
/// spread evenly). The others, `len - write_quorum + 1` of them, index it. A write is
/// acked once `write_quorum` replicas of the set hold it, and any `write_quorum` of them
/// include one that indexes, so every acked segment is searchable on some replica that
/// holds it; with 3 replicas and a write quorum of 2, a trace is indexed twice, not three
/// times. A set smaller than the quorum (a write that cannot be acked) is indexed by all.
pub(crate) fn unindexed_replicas(replicas: &ReplicaSet, write_quorum: usize) -> &[u16] {
    let ids = replicas.as_slice();
    if write_quorum == 0 || ids.len() < write_quorum {
        return &[];
    }
    &ids[ids.len() + 1 - write_quorum..]
}

/// Counts successes per replica group. A request that touches traces with different
/// replica sets has one group per distinct set; the operation succeeds when every
/// group reaches `required` successes, and fails as soon as one group cannot.
#[derive(Debug)]
pub struct QuorumTracker {
    groups: Vec<Group>,
    required: usize,
}

#[derive(Debug)]
struct Group {
    replicas: ReplicaSet,
    ok: usize,
    failed: usize,
}

impl QuorumTracker {
    pub fn new(groups: impl IntoIterator<Item = ReplicaSet>, required: usize) -> Self {
        Self {
            groups: groups
                .into_iter()
                .map(|replicas| Group {
                    replicas,
                    ok: 0,
                    failed: 0,
                })
                .collect(),
            required,
        }
    }

    /// Records the outcome of one instance (call once per instance).
    pub fn record(&mut self, instance: u16, ok: bool) -> Progress {
        for g in self
            .groups
            .iter_mut()
            .filter(|g| g.replicas.contains(instance))
        {
            if ok {
                g.ok += 1;
            } else {
                g.failed += 1;
            }
        }
        self.progress()
    }

    pub fn progress(&self) -> Progress {
        let mut all_reached = true;
        for g in &self.groups {
            if g.ok >= self.required {
                continue;
            }
            all_reached = false;
            if g.replicas.len() - g.failed < self.required {
                return Progress::Failed;
            }
        }
        if all_reached {
            Progress::Reached
        } else {
            Progress::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[u16]) -> ReplicaSet {
        let mut s = ReplicaSet::default();
        for &i in ids {
            s.push(i);
        }
        s
    }

    /// For every set size and quorum, and every set of replicas that acks a write (any
    /// `write_quorum` of them), one of the acking replicas indexes the trace; and no more
    /// replicas index than that needs.
    #[test]
    fn every_acking_quorum_holds_a_replica_that_indexes() {
        for len in 0..=crate::ring::MAX_REPLICAS {
            let replicas = set(&(10..10 + len as u16).collect::<Vec<_>>());
            for quorum in 1..=crate::ring::MAX_REPLICAS {
                let unindexed = unindexed_replicas(&replicas, quorum);
                assert!(unindexed.iter().all(|r| replicas.contains(*r)));
                if len < quorum {
                    assert!(unindexed.is_empty());
                    continue;
                }
                assert_eq!(unindexed.len(), quorum - 1, "len {len}, quorum {quorum}");
                for acked in 0u32..1 << len {
                    if acked.count_ones() as usize != quorum {
                        continue;
                    }
                    let indexes = replicas
                        .as_slice()
                        .iter()
                        .enumerate()
                        .any(|(i, r)| acked & 1 << i != 0 && !unindexed.contains(r));
                    assert!(indexes, "len {len}, quorum {quorum}, acked {acked:b}");
                }
            }
        }
        // Three replicas, write quorum 2: the last in ring order leaves it out.
        assert_eq!(unindexed_replicas(&set(&[4, 1, 7]), 2), &[7]);
        assert!(unindexed_replicas(&set(&[4]), 1).is_empty());
    }

    #[test]
    fn quorums_must_overlap() {
        assert!(ReplicationFactor::new(3, 2, 2).is_ok());
        assert!(ReplicationFactor::new(3, 2, 1).is_err());
        assert!(ReplicationFactor::new(3, 1, 3).is_ok());
        assert!(ReplicationFactor::new(3, 4, 2).is_err());
        assert!(ReplicationFactor::new(0, 1, 1).is_err());
    }

    #[test]
    fn two_of_three_acks_reach_quorum() {
        let mut q = QuorumTracker::new([set(&[0, 1, 2])], 2);
        assert_eq!(q.record(0, true), Progress::Pending);
        assert_eq!(q.record(2, false), Progress::Pending);
        assert_eq!(q.record(1, true), Progress::Reached);
    }

    #[test]
    fn quorum_fails_early_when_two_of_three_failed() {
        let mut q = QuorumTracker::new([set(&[0, 1, 2])], 2);
        assert_eq!(q.record(0, false), Progress::Pending);
        assert_eq!(q.record(1, false), Progress::Failed);
    }

    #[test]
    fn every_group_needs_its_own_quorum() {
        let mut q = QuorumTracker::new([set(&[0, 1, 2]), set(&[1, 2, 3])], 2);
        assert_eq!(q.record(0, true), Progress::Pending);
        assert_eq!(q.record(1, true), Progress::Pending);
        assert_eq!(q.record(3, false), Progress::Pending);
        assert_eq!(q.record(2, true), Progress::Reached);
        let mut q = QuorumTracker::new([set(&[0, 1, 2]), set(&[1, 2, 3])], 2);
        q.record(0, true);
        q.record(1, true);
        q.record(2, false);
        assert_eq!(q.record(3, false), Progress::Failed);
    }

    #[test]
    fn a_group_smaller_than_the_quorum_fails_at_once() {
        let q = QuorumTracker::new([set(&[0])], 2);
        assert_eq!(q.progress(), Progress::Failed);
    }

    #[test]
    fn no_groups_is_trivially_reached() {
        assert_eq!(QuorumTracker::new([], 2).progress(), Progress::Reached);
    }

    #[test]
    fn writes_go_on_under_replicated_down_to_the_write_quorum_and_are_refused_below() {
        let rf = ReplicationFactor::new(3, 2, 2).expect("valid");
        assert_eq!(rf.write_health(4), WriteHealth::Full);
        assert_eq!(rf.write_health(3), WriteHealth::Full);
        assert_eq!(rf.write_health(2), WriteHealth::UnderReplicated);
        assert_eq!(rf.write_health(1), WriteHealth::Refused);
        assert_eq!(rf.write_health(0), WriteHealth::Refused);
        let single = ReplicationFactor::new(1, 1, 1).expect("valid");
        assert_eq!(single.write_health(1), WriteHealth::Full);
        assert_eq!(single.write_health(0), WriteHealth::Refused);
    }
}

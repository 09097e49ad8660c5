//! What a node knows of the cluster: its members as gossip sees them, the absent
//! ingesters, and the rings built from them (published by the gossip task).

use std::collections::HashMap;
use std::time::SystemTime;

use serde::Serialize;

use super::{NodeIdentity, NodeState};
use crate::ring::Ring;

/// Liveness as SWIM sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum Liveness {
    Alive,
    Suspect,
}

/// One member as listed on `/ring`.
#[derive(Clone, Debug)]
pub struct MemberStatus {
    pub identity: NodeIdentity,
    pub liveness: Liveness,
    /// When its state or liveness last changed, as seen by this node.
    pub changed_at: SystemTime,
}

/// An ingester that went down without announcing its departure.
#[derive(Clone, Debug)]
pub struct AbsentIngester {
    pub identity: NodeIdentity,
    /// When this node saw it go down.
    pub since: SystemTime,
}

/// This node's current picture of the cluster.
#[derive(Debug)]
pub struct ClusterView {
    /// Every live member including this node, sorted by name.
    pub members: Vec<MemberStatus>,
    /// Crashed ingesters (see the module doc), sorted by name.
    pub absent: Vec<AbsentIngester>,
    /// ACTIVE ingesters; instance `i` of `write_ring` is `writers[i]`.
    pub writers: Vec<NodeIdentity>,
    pub write_ring: Ring,
    /// Ingesters that may hold data (ACTIVE and LEAVING), sorted by name.
    pub readers: Vec<NodeIdentity>,
}

impl ClusterView {
    pub(super) fn build(members: Vec<MemberStatus>, absent: Vec<AbsentIngester>) -> Self {
        let mut writers: Vec<NodeIdentity> = members
            .iter()
            .map(|m| &m.identity)
            .filter(|id| id.is_ingester() && id.state == NodeState::Active)
            .cloned()
            .collect();
        writers.sort_by(|a, b| a.name.cmp(&b.name));
        let seeds: Vec<u64> = writers.iter().map(|w| w.token_seed).collect();
        // Zone-aware placement is on as soon as an ingester gossips a zone, so every
        // node places traces alike without a setting of its own.
        let write_ring = if writers.iter().any(|w| w.zone.is_some()) {
            let zones: Vec<Option<&str>> = writers.iter().map(|w| w.zone.as_deref()).collect();
            Ring::with_zones(&seeds, &zones)
        } else {
            Ring::new(&seeds)
        };
        let readers = members
            .iter()
            .map(|m| &m.identity)
            .filter(|id| id.is_ingester() && id.state != NodeState::Joining)
            .cloned()
            .collect();
        Self {
            write_ring,
            writers,
            readers,
            members,
            absent,
        }
    }

    /// The ACTIVE compactors' names, sorted: who shares the compaction work.
    pub fn compactors(&self) -> Vec<&str> {
        self.members
            .iter()
            .map(|m| &m.identity)
            .filter(|id| {
                id.roles.contains(super::Roles::COMPACTOR) && id.state == NodeState::Active
            })
            .map(|id| id.name.as_str())
            .collect()
    }

    pub fn count_by_state(&self) -> HashMap<&'static str, usize> {
        let mut counts = HashMap::new();
        for m in &self.members {
            *counts.entry(m.identity.state.as_str()).or_default() += 1;
        }
        counts.insert("ABSENT", self.absent.len());
        counts
    }
}

//! What every member tells the cluster about itself through gossip.
//!
//! The identity rides in every foca packet (source and destination), so it stays small:
//! no tokens (they are derived from `token_seed`), no free-form metadata. A postcard
//! encoded identity is about 70 bytes.
//!
//! State changes (JOINING → ACTIVE, later LEAVING) travel as a *changed identity*
//! (`Foca::change_identity`): peers learn the new identity through foca's own
//! dissemination, which reaches members that join later as well; a custom broadcast
//! would be sent a bounded number of times and missed by late joiners.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// The lifecycle state of a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NodeState {
    /// Starting (an ingester replays its WAL): not in the write ring, not ready.
    Joining,
    /// Owns its tokens; receives writes.
    Active,
    /// Departing: out of the write ring, still answers reads.
    Leaving,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Joining => "JOINING",
            NodeState::Active => "ACTIVE",
            NodeState::Leaving => "LEAVING",
        }
    }
}

/// The roles a process runs (`--target`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct Roles(u8);

impl Roles {
    pub const DISTRIBUTOR: Roles = Roles(1);
    pub const INGESTER: Roles = Roles(2);
    pub const QUERIER: Roles = Roles(4);
    pub const ALL: Roles = Roles(7);

    pub fn contains(self, other: Roles) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn union(self, other: Roles) -> Roles {
        Roles(self.0 | other.0)
    }

    pub fn names(self) -> Vec<&'static str> {
        [
            (Self::DISTRIBUTOR, "distributor"),
            (Self::INGESTER, "ingester"),
            (Self::QUERIER, "querier"),
        ]
        .into_iter()
        .filter(|(r, _)| self.contains(*r))
        .map(|(_, n)| n)
        .collect()
    }
}

impl fmt::Debug for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

/// A member's gossip identity.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// Stable node name (`node_name`); a restarted node keeps it.
    pub name: String,
    /// Gossip UDP address: foca's notion of "address", unique per live member.
    pub gossip: SocketAddr,
    /// Internal gRPC address (ingesters serve Push/FindTraceById there).
    pub grpc: SocketAddr,
    /// HTTP address (admin API; the query API on queriers).
    pub http: SocketAddr,
    pub roles: Roles,
    pub state: NodeState,
    /// Seed of the node's ring tokens; derived from `name`, so a restarted ingester owns
    /// the same tokens and finds its replayed traces where readers look for them.
    pub token_seed: u64,
    /// Start time in ms since the epoch, bumped on every rejoin: a newer generation wins
    /// over an older identity with the same gossip address.
    pub generation: u64,
}

impl NodeIdentity {
    /// A placeholder for announcing to a seed whose identity is not known yet: foca
    /// accepts an announce addressed to any identity with its address.
    pub fn seed(addr: SocketAddr) -> Self {
        Self {
            name: String::new(),
            gossip: addr,
            grpc: addr,
            http: addr,
            roles: Roles::default(),
            state: NodeState::Joining,
            token_seed: 0,
            generation: 0,
        }
    }

    pub fn is_ingester(&self) -> bool {
        self.roles.contains(Roles::INGESTER)
    }

    pub fn with_state(&self, state: NodeState) -> Self {
        Self {
            state,
            generation: self.generation + 1,
            ..self.clone()
        }
    }
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}@{}[{:?} {} g{}]",
            self.name,
            self.gossip,
            self.roles,
            self.state.as_str(),
            self.generation
        )
    }
}

impl foca::Identity for NodeIdentity {
    type Addr = SocketAddr;

    /// Rejoin automatically (with a newer generation) if the cluster declared us down.
    fn renew(&self) -> Option<Self> {
        Some(Self {
            generation: self.generation + 1,
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.gossip
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_fits_comfortably_in_a_gossip_packet() {
        let id = NodeIdentity {
            name: "ingester-with-a-rather-long-name-0123456789".into(),
            gossip: "[2001:db8::1]:7946".parse().expect("addr"),
            grpc: "[2001:db8::1]:9095".parse().expect("addr"),
            http: "[2001:db8::1]:3200".parse().expect("addr"),
            roles: Roles::ALL,
            state: NodeState::Leaving,
            token_seed: u64::MAX,
            generation: u64::MAX,
        };
        let bytes = postcard::to_allocvec(&id).expect("encode");
        assert!(bytes.len() < 150, "{} bytes", bytes.len());
    }

    #[test]
    fn newer_generation_wins_the_address() {
        use foca::Identity;
        let a = NodeIdentity::seed("127.0.0.1:1".parse().expect("addr"));
        let b = a.with_state(NodeState::Active);
        assert!(b.win_addr_conflict(&a));
        assert!(!a.win_addr_conflict(&b));
    }
}

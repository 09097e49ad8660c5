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
//!
//! Wire layouts. An identity without a zone is encoded exactly as before zones existed
//! (eight postcard fields), so a zoneless cluster can be rolled onto this version one
//! node at a time with old and new nodes gossiping together. An identity with a zone
//! leads with [`ZONED_MARKER`] in the place of the name and carries the zone: only
//! nodes of this version or later decode it, so zones are turned on once every node
//! runs it (restarting each ingester with its `zone` does that anyway).

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
    pub const COMPACTOR: Roles = Roles(8);
    pub const ALL: Roles = Roles(15);

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
            (Self::COMPACTOR, "compactor"),
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

/// A member's gossip identity (see the module doc for its two wire layouts).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct NodeIdentity {
    /// Stable node name (`node_name`); a restarted node keeps it.
    pub name: String,
    /// Failure domain (`zone`), e.g. an availability zone; `None` without zones.
    pub zone: Option<String>,
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
            zone: None,
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
            "{}@{}[{:?} {} g{}",
            self.name,
            self.gossip,
            self.roles,
            self.state.as_str(),
            self.generation
        )?;
        match &self.zone {
            Some(zone) => write!(f, " zone {zone}]"),
            None => f.write_str("]"),
        }
    }
}

/// Stands where a legacy identity has its name: no node is named this (names are
/// validated, and a NUL is not allowed in one).
const ZONED_MARKER: &str = "\u{0}z";

/// Fields of the legacy layout; the zoned layout has the marker and the zone too.
const LEGACY_FIELDS: usize = 8;
const ZONED_FIELDS: usize = LEGACY_FIELDS + 2;

impl Serialize for NodeIdentity {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut t = match &self.zone {
            None => serializer.serialize_tuple(LEGACY_FIELDS)?,
            Some(zone) => {
                let mut t = serializer.serialize_tuple(ZONED_FIELDS)?;
                t.serialize_element(ZONED_MARKER)?;
                t.serialize_element(zone)?;
                t
            }
        };
        t.serialize_element(&self.name)?;
        t.serialize_element(&self.gossip)?;
        t.serialize_element(&self.grpc)?;
        t.serialize_element(&self.http)?;
        t.serialize_element(&self.roles)?;
        t.serialize_element(&self.state)?;
        t.serialize_element(&self.token_seed)?;
        t.serialize_element(&self.generation)?;
        t.end()
    }
}

impl<'de> Deserialize<'de> for NodeIdentity {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Layouts;
        impl<'de> serde::de::Visitor<'de> for Layouts {
            type Value = NodeIdentity;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a ringtail node identity")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<NodeIdentity, A::Error> {
                let mut read = 0;
                let first: String = field(&mut seq, &mut read)?;
                let (zone, name) = if first == ZONED_MARKER {
                    let zone = field(&mut seq, &mut read)?;
                    (Some(zone), field(&mut seq, &mut read)?)
                } else {
                    (None, first)
                };
                Ok(NodeIdentity {
                    name,
                    zone,
                    gossip: field(&mut seq, &mut read)?,
                    grpc: field(&mut seq, &mut read)?,
                    http: field(&mut seq, &mut read)?,
                    roles: field(&mut seq, &mut read)?,
                    state: field(&mut seq, &mut read)?,
                    token_seed: field(&mut seq, &mut read)?,
                    generation: field(&mut seq, &mut read)?,
                })
            }
        }
        fn field<'de, T: Deserialize<'de>, A: serde::de::SeqAccess<'de>>(
            seq: &mut A,
            read: &mut usize,
        ) -> Result<T, A::Error> {
            let value = seq
                .next_element()?
                .ok_or_else(|| serde::de::Error::invalid_length(*read, &"a node identity"))?;
            *read += 1;
            Ok(value)
        }
        // A tuple as long as the longest layout: postcard stops where the visitor does.
        deserializer.deserialize_tuple(ZONED_FIELDS, Layouts)
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
            zone: Some("europe-west4-a".into()),
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

    /// The identity as encoded before zones existed (what older nodes send and decode).
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct LegacyIdentity {
        name: String,
        gossip: SocketAddr,
        grpc: SocketAddr,
        http: SocketAddr,
        roles: Roles,
        state: NodeState,
        token_seed: u64,
        generation: u64,
    }

    fn ingester(zone: Option<&str>) -> NodeIdentity {
        NodeIdentity {
            name: "ingester-2".into(),
            zone: zone.map(str::to_owned),
            roles: Roles::INGESTER,
            state: NodeState::Active,
            token_seed: 42,
            generation: 7,
            grpc: "10.0.0.2:9095".parse().expect("addr"),
            ..NodeIdentity::seed("10.0.0.2:7946".parse().expect("addr"))
        }
    }

    #[test]
    fn a_zoneless_identity_keeps_the_layout_older_nodes_decode_and_send() {
        let id = ingester(None);
        let bytes = postcard::to_allocvec(&id).expect("encode");
        let old: LegacyIdentity = postcard::from_bytes(&bytes).expect("an older node decodes it");
        assert_eq!(old.name, "ingester-2");
        assert_eq!((old.token_seed, old.generation), (42, 7));
        let from_old = postcard::to_allocvec(&old).expect("encode");
        assert_eq!(from_old, bytes);
        let back: NodeIdentity = postcard::from_bytes(&from_old).expect("decode");
        assert_eq!(back, id);
    }

    #[test]
    fn a_zoned_identity_round_trips_and_what_follows_it_in_a_packet_stays_readable() {
        let id = ingester(Some("zone-b"));
        // In a foca packet the identity is followed by the rest of the message.
        let bytes = postcard::to_allocvec(&(id.clone(), 99u32)).expect("encode");
        let (back, after): (NodeIdentity, u32) = postcard::from_bytes(&bytes).expect("decode");
        assert_eq!(back, id);
        assert_eq!(back.zone.as_deref(), Some("zone-b"));
        assert_eq!(after, 99);
        let legacy = postcard::to_allocvec(&(ingester(None), 99u32)).expect("encode");
        let (back, after): (NodeIdentity, u32) = postcard::from_bytes(&legacy).expect("decode");
        assert_eq!((back.zone, after), (None, 99));
    }

    #[test]
    fn a_truncated_identity_is_an_error() {
        let bytes = postcard::to_allocvec(&ingester(Some("zone-b"))).expect("encode");
        for len in 0..bytes.len() {
            assert!(
                postcard::from_bytes::<NodeIdentity>(&bytes[..len]).is_err(),
                "{len}"
            );
        }
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

//! The `/ring` JSON document (`Accept: application/json`): what a node knows of the
//! cluster. The admin API writes it and peers read it (a node that starts late learns
//! the absent ingesters from it; a departing node checks that peers dropped it), through
//! this one type. Fields only the page's readers use default when missing, so a peer
//! running an older version still parses.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{AbsentIngester, ClusterView, Liveness, NodeIdentity, NodeState, Roles};
use crate::ring::{ReplicationFactor, WriteHealth};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct RingDoc {
    /// The name of the node that wrote it.
    #[serde(rename = "self", default)]
    pub self_name: String,
    /// Every live member, sorted by name.
    #[serde(default)]
    pub members: Vec<RingMember>,
    /// Crashed ingesters (until they are back, forgotten, or down for
    /// `absent_forget_after`).
    #[serde(default)]
    pub absent_ingesters: Vec<RingAbsent>,
    /// The ACTIVE ingesters writes go to.
    #[serde(default)]
    pub write_ring_ingesters: Vec<String>,
    /// How writes are placed on them (absent from documents of older versions).
    #[serde(default)]
    pub replication: Option<RingReplication>,
}

/// ACTIVE ingesters against the replication factor, and what writes do about it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct RingReplication {
    pub factor: usize,
    pub write_quorum: usize,
    pub active_ingesters: usize,
    /// `full`, `under-replicated` (each trace on every ACTIVE ingester, acked at write
    /// quorum) or `refused` (fewer ACTIVE than the write quorum).
    pub writes: WriteHealth,
    /// Zones of the ACTIVE ingesters; 0 when none has a zone (placement ignores zones).
    #[serde(default)]
    pub zones: usize,
}

impl RingReplication {
    /// Whether replicas are placed by zone but there are fewer zones than replicas, so
    /// some traces have two replicas in one zone.
    pub(crate) fn too_few_zones(&self) -> bool {
        self.zones > 0 && self.zones < self.factor.min(self.active_ingesters)
    }

    pub(crate) fn of(view: &ClusterView, rf: ReplicationFactor) -> Self {
        Self {
            factor: rf.factor(),
            write_quorum: rf.write_quorum(),
            active_ingesters: view.writers.len(),
            writes: rf.write_health(view.writers.len()),
            zones: view.write_ring.zones(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct RingMember {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    /// JOINING, ACTIVE or LEAVING.
    pub state: String,
    pub liveness: Liveness,
    pub gossip_addr: SocketAddr,
    /// Only ingesters serve the internal gRPC API.
    #[serde(default)]
    pub grpc_addr: Option<SocketAddr>,
    pub http_addr: SocketAddr,
    #[serde(default)]
    pub generation: u64,
    #[serde(default)]
    pub last_change_unix: u64,
    /// Whether this member wrote the document.
    #[serde(rename = "self", default)]
    pub is_self: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct RingAbsent {
    pub name: String,
    /// Always ABSENT.
    #[serde(default = "absent")]
    pub state: String,
    /// Its state when it went down.
    #[serde(default)]
    pub last_state: String,
    pub gossip_addr: SocketAddr,
    pub down_since_unix: u64,
}

fn absent() -> String {
    "ABSENT".to_owned()
}

/// Seconds since the epoch (0 before it).
pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl RingDoc {
    /// What `me` knows, from its `view`, with writes judged against `rf`.
    pub(crate) fn of(view: &ClusterView, me: &NodeIdentity, rf: ReplicationFactor) -> Self {
        let members = view
            .members
            .iter()
            .map(|m| RingMember {
                name: m.identity.name.clone(),
                zone: m.identity.zone.clone(),
                roles: m
                    .identity
                    .roles
                    .names()
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
                state: m.identity.state.as_str().to_owned(),
                liveness: m.liveness,
                gossip_addr: m.identity.gossip,
                grpc_addr: m.identity.is_ingester().then_some(m.identity.grpc),
                http_addr: m.identity.http,
                generation: m.identity.generation,
                last_change_unix: unix_secs(m.changed_at),
                is_self: m.identity.gossip == me.gossip,
            })
            .collect();
        let absent_ingesters = view
            .absent
            .iter()
            .map(|a| RingAbsent {
                name: a.identity.name.clone(),
                state: absent(),
                last_state: a.identity.state.as_str().to_owned(),
                gossip_addr: a.identity.gossip,
                down_since_unix: unix_secs(a.since),
            })
            .collect();
        Self {
            self_name: me.name.clone(),
            members,
            absent_ingesters,
            write_ring_ingesters: view.writers.iter().map(|w| w.name.clone()).collect(),
            replication: Some(RingReplication::of(view, rf)),
        }
    }

    /// The absent ingesters as this node's membership takes them on.
    pub(crate) fn absent(&self) -> Vec<AbsentIngester> {
        self.absent_ingesters
            .iter()
            .map(|a| AbsentIngester {
                identity: NodeIdentity {
                    name: a.name.clone(),
                    roles: Roles::INGESTER,
                    state: NodeState::Active,
                    ..NodeIdentity::seed(a.gossip_addr)
                },
                since: UNIX_EPOCH + Duration::from_secs(a.down_since_unix),
            })
            .collect()
    }

    /// Whether `name` is a live member.
    pub(crate) fn lists(&self, name: &str) -> bool {
        self.members.iter().any(|m| m.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::MemberStatus;

    fn identity(name: &str, roles: Roles, port: u16) -> NodeIdentity {
        NodeIdentity {
            name: name.to_owned(),
            roles,
            state: NodeState::Active,
            ..NodeIdentity::seed(([10, 0, 0, 1], port).into())
        }
    }

    #[test]
    fn the_document_a_node_writes_is_the_one_its_peers_read() {
        let me = identity("front", Roles::DISTRIBUTOR, 7946);
        let ingester = identity("ingester-1", Roles::INGESTER, 7947);
        let crashed = identity("ingester-2", Roles::INGESTER, 7948);
        let since = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let view = ClusterView::build(
            [&me, &ingester]
                .into_iter()
                .map(|id| MemberStatus {
                    identity: id.clone(),
                    liveness: Liveness::Alive,
                    changed_at: since,
                })
                .collect(),
            vec![AbsentIngester {
                identity: crashed.clone(),
                since,
            }],
        );
        let rf = crate::ring::ReplicationFactor::new(3, 2, 2).expect("valid");
        let doc = RingDoc::of(&view, &me, rf);
        let json = serde_json::to_value(&doc).expect("serialise");
        // One ACTIVE ingester of RF=3 with write quorum 2: writes are refused.
        assert_eq!(
            json["replication"],
            serde_json::json!({"factor": 3, "write_quorum": 2, "active_ingesters": 1, "writes": "refused", "zones": 0})
        );
        // The names users and scripts read.
        assert_eq!(json["self"], "front");
        assert_eq!(json["members"][1]["name"], "ingester-1");
        assert_eq!(json["members"][1]["state"], "ACTIVE");
        assert_eq!(json["members"][1]["gossip_addr"], "10.0.0.1:7947");
        assert_eq!(json["members"][0]["grpc_addr"], serde_json::Value::Null);
        assert_eq!(json["members"][0]["self"], true);
        assert_eq!(json["absent_ingesters"][0]["state"], "ABSENT");
        assert_eq!(json["write_ring_ingesters"][0], "ingester-1");

        let read: RingDoc = serde_json::from_value(json).expect("parse");
        assert_eq!(read, doc);
        assert!(read.lists("ingester-1") && !read.lists("ingester-2"));
        let absent = read.absent();
        assert_eq!(absent.len(), 1);
        assert_eq!(absent[0].identity.name, "ingester-2");
        assert_eq!(absent[0].identity.gossip, crashed.gossip);
        assert_eq!(absent[0].since, since);
    }

    #[test]
    fn a_peer_document_with_only_the_fields_peers_read_still_parses() {
        let doc: RingDoc = serde_json::from_str(
            r#"{"members":[{"name":"a","state":"ACTIVE","liveness":"Alive",
                "gossip_addr":"10.0.0.1:7946","http_addr":"10.0.0.1:3200"}],
                "absent_ingesters":[{"name":"b","gossip_addr":"10.0.0.2:7946",
                "down_since_unix":5}]}"#,
        )
        .expect("parse");
        assert!(doc.lists("a"));
        assert_eq!(doc.absent()[0].identity.name, "b");
    }
}

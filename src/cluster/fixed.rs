//! A membership whose view never changes, for unit tests of the components that read it
//! (no socket, no gossip task).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::SystemTime;

use tokio::sync::{mpsc, watch};

use super::{ClusterView, Liveness, MemberStatus, Membership, NodeIdentity, NodeState, Roles};

impl Membership {
    /// Always sees `view`; state changes and forgets do nothing.
    pub(crate) fn fixed(view: ClusterView) -> Self {
        let me = NodeIdentity::seed(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        Self {
            view: watch::channel(std::sync::Arc::new(view)).1,
            joined: watch::channel(true).1,
            commands: mpsc::channel(1).0,
            me: watch::channel(me).1,
            has_peers_to_find: false,
            contact: std::sync::Arc::new(super::PeerContact::new(std::time::Duration::MAX)),
        }
    }
}

impl ClusterView {
    /// The view of a cluster of `members`, all alive, with no absent ingester.
    pub(crate) fn of(members: Vec<NodeIdentity>) -> Self {
        let members = members
            .into_iter()
            .map(|identity| MemberStatus {
                identity,
                liveness: Liveness::Alive,
                changed_at: SystemTime::now(),
            })
            .collect();
        Self::build(members, Vec::new())
    }
}

/// `n` ACTIVE ingesters named `ingester-0`, `ingester-1`, …, whose internal gRPC
/// addresses are `127.0.0.1:9000`, `127.0.0.1:9001`, … (nothing listens there).
pub(crate) fn active_ingesters(n: u16) -> Vec<NodeIdentity> {
    (0..n)
        .map(|i| {
            let addr = |port: u16| SocketAddr::from((Ipv4Addr::LOCALHOST, port + i));
            NodeIdentity {
                name: format!("ingester-{i}"),
                zone: None,
                gossip: addr(7000),
                grpc: addr(9000),
                http: addr(3000),
                roles: Roles::INGESTER,
                state: NodeState::Active,
                token_seed: u64::from(i) + 1,
                generation: 1,
            }
        })
        .collect()
}

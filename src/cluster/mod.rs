//! Gossip membership: one tokio task owns `foca`, its UDP socket and an ordered timer
//! queue, and publishes a [`ClusterView`] (members, the write ring) on a watch channel.
//!
//! A node's view of the cluster comes from gossip only. Members declared down by SWIM
//! (`Config::new_lan`: probe every second, suspect → down after ~4 s) leave the view,
//! and with it every ring, at once.
//!
//! Crashed and departed ingesters differ. An ingester that goes down while ACTIVE,
//! without having announced LEAVING (SIGKILL, a lost host, a partition), is *absent*:
//! out of every ring and listed on the ring page (where an operator can forget it) until
//! it is ACTIVE again under its name, an operator forgets it, or it has been down for
//! `absent_forget_after` (15 min by default), when every node forgets it on its own.
//! Absent ingesters do not hold writes back: writes go to the ACTIVE ingesters there are,
//! at write quorum (see `distributor`). An ingester that announced LEAVING and then went
//! down has *departed*. Each node keeps the list from what it saw go down; a node that
//! starts later adopts its peers' lists once it has joined
//! (`admin::learn_absent_ingesters`, from their `/ring`).
//!
//! Joining: the node announces to every seed address once a second until foca reports
//! `Active` (some member answered). A node without seeds (other than itself) is the
//! founding member and counts as joined at once. After that, every member announces to a
//! random member every 5 s, so a member that missed an identity change learns it.

mod contact;
#[cfg(test)]
pub(crate) mod fixed;
mod gossip;
mod identity;
mod lifecycle;
mod ring_doc;
mod view;

pub(crate) use gossip::LEAVE_GOSSIP_LIMIT;
pub(crate) use identity::{NodeIdentity, NodeState, Roles};
pub(crate) use ring_doc::unix_secs;
pub(crate) use ring_doc::{RingDoc, RingReplication};
pub(crate) use view::{AbsentIngester, ClusterView, Liveness, MemberStatus};

use contact::PeerContact;
use gossip::{is_self, Driver};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::cluster_keys::ClusterKeys;

/// Whom to join, and the gossip task's rules.
#[derive(Clone, Debug)]
pub(crate) struct GossipSettings {
    /// The address the socket is bound to (may differ from the advertised one); filled
    /// in by [`Membership::start`].
    pub bind: SocketAddr,
    /// An absent (crashed) ingester not back within this long is forgotten
    /// (`absent_forget_after_ms`).
    pub absent_forget_after: Duration,
    /// `host:port` of members to announce to; resolved on every attempt.
    pub join: Vec<String>,
    /// Fault injection for tests: the share of gossip packets (in and out) to drop.
    pub packet_loss: f64,
    /// Seals every packet sent and opens every packet received; `None`: plain packets
    /// (`insecure_cluster`).
    pub keys: Option<Arc<ClusterKeys>>,
}

enum Command {
    SetState(NodeState, oneshot::Sender<()>),
    Forget(String, oneshot::Sender<bool>),
    AdoptAbsent(Vec<AbsentIngester>),
}

/// Handle to the membership task.
#[derive(Clone)]
pub struct Membership {
    view: watch::Receiver<Arc<ClusterView>>,
    joined: watch::Receiver<bool>,
    commands: mpsc::Sender<Command>,
    me: watch::Receiver<NodeIdentity>,
    /// Whether it was given seeds other than itself (a founding member of its own is not
    /// cut off when alone).
    has_peers_to_find: bool,
    contact: Arc<PeerContact>,
}

impl Membership {
    /// Starts the task on a bound gossip socket. When `leave` is cancelled it leaves the
    /// cluster (foca's leave) and keeps gossiping the news until `exit` is cancelled (or
    /// [`LEAVE_GOSSIP_LIMIT`]), then stops.
    pub(crate) fn start(
        identity: NodeIdentity,
        socket: UdpSocket,
        settings: GossipSettings,
        leave: CancellationToken,
        exit: CancellationToken,
    ) -> std::io::Result<(Self, tokio::task::JoinHandle<()>)> {
        let settings = GossipSettings {
            bind: socket.local_addr()?,
            ..settings
        };
        let initial = vec![MemberStatus {
            identity: identity.clone(),
            liveness: Liveness::Alive,
            changed_at: SystemTime::now(),
        }];
        let (view_tx, view) = watch::channel(Arc::new(ClusterView::build(initial, Vec::new())));
        let seeds_other_than_me = settings
            .join
            .iter()
            .any(|s| !is_self(s, identity.gossip, settings.bind));
        let (joined_tx, joined) = watch::channel(!seeds_other_than_me);
        let (commands, command_rx) = mpsc::channel(8);
        let (me_tx, me) = watch::channel(identity.clone());
        let driver = Driver::new(identity, socket, settings, view_tx, joined_tx, me_tx);
        let contact = driver.contact();
        let handle = tokio::spawn(driver.run(command_rx, leave, exit));
        Ok((
            Self {
                view,
                joined,
                commands,
                me,
                has_peers_to_find: seeds_other_than_me,
                contact,
            },
            handle,
        ))
    }

    pub fn view(&self) -> Arc<ClusterView> {
        self.view.borrow().clone()
    }

    pub fn watch_view(&self) -> watch::Receiver<Arc<ClusterView>> {
        self.view.clone()
    }

    pub fn has_joined(&self) -> bool {
        *self.joined.borrow()
    }

    /// Joined once, and now alone or unheard: SWIM has declared every peer down, or no
    /// peer has been heard from for as long as SWIM takes to declare one down, so this
    /// node is cut off from its cluster (see `contact`).
    pub(crate) fn is_cut_off(&self) -> bool {
        self.has_peers_to_find
            && self.has_joined()
            && self.contact.is_cut_off(self.view().members.len())
    }

    pub fn me(&self) -> NodeIdentity {
        self.me.borrow().clone()
    }

    /// Declares the member called `name` down, or drops it from the absent ingesters (the
    /// ring page's forget action, for operators: SWIM removes crashed members from the
    /// rings on its own, but they count towards the replication factor until they return
    /// or are forgotten). False if no such member.
    pub async fn forget(&self, name: &str) -> bool {
        let (tx, rx) = oneshot::channel();
        if self
            .commands
            .send(Command::Forget(name.to_owned(), tx))
            .await
            .is_err()
        {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    /// Counts ingesters that peers saw go down as absent here too (a node that started
    /// after they crashed has not seen it; see the module doc).
    pub async fn adopt_absent(&self, absent: Vec<AbsentIngester>) {
        let _ = self.commands.send(Command::AdoptAbsent(absent)).await;
    }

    /// Changes this node's state and waits until the new identity is being gossiped.
    pub async fn set_state(&self, state: NodeState) {
        let (tx, rx) = oneshot::channel();
        if self
            .commands
            .send(Command::SetState(state, tx))
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
    }
}

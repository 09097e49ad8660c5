//! The foca driver: one tokio task owns `foca`, its UDP socket and an ordered timer queue,
//! applies the lifecycle rules to what SWIM reports, and publishes the [`ClusterView`].

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use foca::{Foca, OwnedNotification, PostcardCodec, Timer};
use rand::rngs::StdRng;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::contact::PeerContact;
use super::lifecycle::{Down, Lifecycle};
use super::{
    AbsentIngester, ClusterView, Command, GossipSettings, Liveness, MemberStatus, NodeIdentity,
    NodeState,
};
/// How often the absent ingesters are checked against `absent_forget_after`.
const ABSENT_CHECK: Duration = Duration::from_secs(5);

pub(super) fn is_self(seed: &str, advertised: SocketAddr, bind: SocketAddr) -> bool {
    seed.parse::<SocketAddr>()
        .map(|a| a == advertised || a == bind)
        .unwrap_or(false)
}

type FocaInstance = Foca<NodeIdentity, PostcardCodec, StdRng, foca::NoCustomBroadcast>;

pub(super) struct Driver {
    foca: FocaInstance,
    /// Announce to the seeds every second until foca reports `Active`: at start, and again
    /// after every identity change (foca's `change_identity` disconnects the node until a
    /// peer addresses the new identity; if its one gossip round went to a peer that has
    /// itself changed identity, nobody ever would).
    announcing: bool,
    runtime: foca::AccumulatingRuntime<NodeIdentity>,
    socket: UdpSocket,
    settings: GossipSettings,
    timers: BinaryHeap<Reverse<(Instant, Timer<NodeIdentity>)>>,
    known: HashMap<SocketAddr, MemberStatus>,
    /// Absent ingesters and names being forgotten.
    lifecycle: Lifecycle,
    view_tx: watch::Sender<Arc<ClusterView>>,
    joined_tx: watch::Sender<bool>,
    me_tx: watch::Sender<NodeIdentity>,
    /// Marked on every packet foca accepts.
    contact: Arc<PeerContact>,
}

impl Driver {
    pub(super) fn new(
        identity: NodeIdentity,
        socket: UdpSocket,
        settings: GossipSettings,
        view_tx: watch::Sender<Arc<ClusterView>>,
        joined_tx: watch::Sender<bool>,
        me_tx: watch::Sender<NodeIdentity>,
    ) -> Self {
        let mut config = foca::Config::new_lan(NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN));
        // State changes ride on changed identities, which foca retransmits a bounded number
        // of times: a member that joins meanwhile can learn a stale identity. Announcing to
        // a random member every 5 s (the reply carries its whole member list) heals that in
        // seconds instead of foca's default 30 s.
        config.periodic_announce = Some(foca::PeriodicParams {
            frequency: Duration::from_secs(5),
            num_members: std::num::NonZeroUsize::MIN,
        });
        // Announcing to members declared down heals a split: a restarted seed that founded
        // a cluster of its own, or the two sides of a network partition, merge again.
        config.periodic_announce_to_down_members = Some(foca::PeriodicParams {
            frequency: Duration::from_secs(10),
            num_members: std::num::NonZeroUsize::new(2).unwrap_or(std::num::NonZeroUsize::MIN),
        });
        // Sealed packets must still fit one datagram.
        if let Some(keys) = &settings.keys {
            config.max_packet_size =
                NonZeroUsize::new(config.max_packet_size.get() - keys.overhead())
                    .unwrap_or(NonZeroUsize::MIN);
        }
        let rng: StdRng = rand::make_rng();
        // As long as peers take to declare a silent member down: a probe period to notice,
        // the round trip, then the suspicion.
        let silence_limit = config.probe_period + config.probe_rtt + config.suspect_to_down_after;
        Self {
            contact: Arc::new(PeerContact::new(silence_limit)),
            announcing: true,
            foca: Foca::new(identity, config, rng, PostcardCodec),
            runtime: foca::AccumulatingRuntime::new(),
            socket,
            settings,
            timers: BinaryHeap::new(),
            known: HashMap::new(),
            lifecycle: Lifecycle::default(),
            view_tx,
            joined_tx,
            me_tx,
        }
    }

    pub(super) fn contact(&self) -> Arc<PeerContact> {
        self.contact.clone()
    }

    pub(super) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        shutdown: CancellationToken,
        exit: CancellationToken,
    ) {
        let mut buf = vec![0u8; 1500];
        let mut announce = tokio::time::interval(Duration::from_secs(1));
        announce.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut expire = tokio::time::interval(ABSENT_CHECK);
        expire.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.publish();
        loop {
            let next_timer = self.timers.peek().map(|Reverse((at, _))| *at);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok(_) if self.injected_loss() => {
                        metrics::counter!("ringtail_gossip_packets_dropped_total").increment(1);
                    }
                    Ok((len, from)) => self.receive(&buf[..len], from),
                    Err(e) => tracing::warn!(error = %e, "gossip receive failed"),
                },
                _ = sleep_until_opt(next_timer) => {
                    let now = Instant::now();
                    while let Some(Reverse((at, _))) = self.timers.peek() {
                        if *at > now {
                            break;
                        }
                        if let Some(Reverse((_, timer))) = self.timers.pop() {
                            if let Err(e) = self.foca.handle_timer(timer, &mut self.runtime) {
                                tracing::debug!(error = %e, "gossip timer failed");
                            }
                        }
                    }
                }
                _ = announce.tick(), if self.announcing => self.announce_to_seeds().await,
                _ = expire.tick() => self.expire_absent(),
                Some(command) = commands.recv() => match command {
                    Command::SetState(state, done) => {
                        self.change_state(state);
                        let _ = done.send(());
                    }
                    Command::Forget(name, done) => {
                        let _ = done.send(self.forget(&name));
                    }
                    Command::AdoptAbsent(absent) => self.adopt_absent(absent),
                },
            }
            self.drain().await;
        }
        self.leave(exit).await;
    }

    /// Opens a packet (when the cluster has a secret) and hands it to foca. A packet that
    /// does not open is dropped and counted by reason.
    fn receive(&mut self, packet: &[u8], from: SocketAddr) {
        metrics::counter!("ringtail_gossip_packets_received_total").increment(1);
        let opened;
        let data = match &self.settings.keys {
            None => packet,
            Some(keys) => match keys.open(packet) {
                Ok(plain) => {
                    opened = plain;
                    &opened[..]
                }
                Err(why) => {
                    metrics::counter!("ringtail_gossip_packets_refused_total", "reason" => why.as_str())
                        .increment(1);
                    tracing::debug!(%from, reason = %why, "gossip packet refused");
                    return;
                }
            },
        };
        match self.foca.handle_data(data, &mut self.runtime) {
            Ok(()) => self.contact.heard(),
            Err(e) => {
                metrics::counter!("ringtail_gossip_packets_dropped_total").increment(1);
                tracing::debug!(error = %e, "gossip packet rejected");
            }
        }
    }

    /// Sends what foca queued (sealed when the cluster has a secret).
    async fn send_queued(&mut self) {
        while let Some((dst, data)) = self.runtime.to_send() {
            if self.injected_loss() {
                metrics::counter!("ringtail_gossip_packets_dropped_total").increment(1);
                continue;
            }
            metrics::counter!("ringtail_gossip_packets_sent_total").increment(1);
            let sealed;
            let packet = match &self.settings.keys {
                None => &data[..],
                Some(keys) => {
                    sealed = keys.seal(&data);
                    &sealed[..]
                }
            };
            if let Err(e) = self.socket.send_to(packet, dst.gossip).await {
                tracing::debug!(dst = %dst.gossip, error = %e, "gossip send failed");
            }
        }
    }

    fn change_state(&mut self, state: NodeState) {
        let next = self.foca.identity().with_state(state);
        tracing::info!(node = %next.name, state = state.as_str(), "changing state");
        if let Err(e) = self.foca.change_identity(next.clone(), &mut self.runtime) {
            tracing::warn!(error = %e, "changing identity failed");
            return;
        }
        self.me_tx.send_replace(next);
        self.announcing = true;
        self.publish();
    }

    /// Fault injection (`gossip_packet_loss`, tests only): drop this packet?
    fn injected_loss(&self) -> bool {
        self.settings.packet_loss > 0.0 && rand::random::<f64>() < self.settings.packet_loss
    }

    fn forget(&mut self, name: &str) -> bool {
        let member = self
            .foca
            .iter_members()
            .map(|m| m.id().clone())
            .find(|id| id.name == name);
        let was_absent = self.lifecycle.forget(name, member.is_some());
        let Some(id) = member else {
            if was_absent {
                tracing::warn!(
                    member = name,
                    "forgetting an absent ingester on an operator's request"
                );
                self.publish();
            }
            return was_absent;
        };
        tracing::warn!(member = ?id, "forgetting a member on an operator's request");
        let down = foca::Member::new(id, u16::MAX, foca::State::Down);
        if let Err(e) = self
            .foca
            .apply_many(std::iter::once(down), true, &mut self.runtime)
        {
            tracing::warn!(error = %e, "forget failed");
            return false;
        }
        self.publish();
        true
    }

    async fn announce_to_seeds(&mut self) {
        let me = self.foca.identity().gossip;
        for seed in self.settings.join.clone() {
            let addrs = match tokio::net::lookup_host(seed.as_str()).await {
                Ok(addrs) => addrs,
                Err(e) => {
                    tracing::debug!(seed, error = %e, "cannot resolve gossip seed yet");
                    continue;
                }
            };
            for addr in addrs.filter(|a| *a != me && *a != self.settings.bind) {
                if let Err(e) = self
                    .foca
                    .announce(NodeIdentity::seed(addr), &mut self.runtime)
                {
                    tracing::debug!(%addr, error = %e, "announce failed");
                }
            }
        }
    }

    /// Sends what foca queued, schedules its timers, handles its notifications.
    async fn drain(&mut self) {
        self.send_queued().await;
        let now = Instant::now();
        while let Some((delay, timer)) = self.runtime.to_schedule() {
            self.timers.push(Reverse((now + delay, timer)));
        }
        let mut changed = false;
        while let Some(notification) = self.runtime.to_notify() {
            match notification {
                OwnedNotification::MemberUp(id) => {
                    tracing::info!(member = ?id, "member up");
                    changed = true;
                }
                OwnedNotification::MemberDown(id) => {
                    self.member_down(id);
                    changed = true;
                }
                OwnedNotification::Rename(old, new) => {
                    tracing::info!(?old, ?new, "member changed identity");
                    changed = true;
                }
                OwnedNotification::Active => {
                    tracing::info!("joined the cluster");
                    self.joined_tx.send_replace(true);
                    self.announcing = false;
                }
                OwnedNotification::Idle => {
                    tracing::info!("no other members are reachable; announcing to the seeds");
                    self.announcing = true;
                }
                OwnedNotification::Defunct => {
                    tracing::warn!("the cluster declared this node down; rejoining");
                    self.announcing = true;
                }
                OwnedNotification::Rejoin(id) => {
                    tracing::info!(identity = ?id, "rejoined with a new identity");
                    self.me_tx.send_replace(id);
                    changed = true;
                }
            }
        }
        if changed || self.liveness_changed() {
            self.publish();
        }
    }

    /// Forgets the absent ingesters down for longer than `absent_forget_after`.
    fn expire_absent(&mut self) {
        let after = self.settings.absent_forget_after;
        let expired = self.lifecycle.expire(SystemTime::now(), after);
        if expired.is_empty() {
            return;
        }
        for member in &expired {
            metrics::counter!("ringtail_membership_absent_forgotten_total", "by" => "timeout")
                .increment(1);
            tracing::warn!(
                member,
                after_secs = after.as_secs(),
                "forgot an absent ingester: it did not come back within absent_forget_after"
            );
        }
        self.publish();
    }

    fn adopt_absent(&mut self, absent: Vec<AbsentIngester>) {
        let up: Vec<&NodeIdentity> = self.known.values().map(|m| &m.identity).collect();
        let me = self.foca.identity().name.clone();
        let adopted = self.lifecycle.adopt(absent, &me, &up);
        for id in &adopted {
            tracing::warn!(member = ?id, "a peer counts this ingester as absent: so does this node");
        }
        if !adopted.is_empty() {
            self.publish();
        }
    }

    /// A member went down: see [`Lifecycle::member_down`].
    fn member_down(&mut self, id: NodeIdentity) {
        let members: Vec<NodeIdentity> = self.foca.iter_members().map(|m| m.id().clone()).collect();
        let up: Vec<&NodeIdentity> = members.iter().collect();
        let member = format!("{id:?}");
        match self.lifecycle.member_down(id, &up, SystemTime::now()) {
            Down::Forgotten => tracing::info!(member, "member forgotten"),
            Down::Departed => {
                metrics::counter!("ringtail_membership_members_down_total", "how" => "departed")
                    .increment(1);
                tracing::info!(member, "member down");
            }
            Down::NotCounted => tracing::info!(member, "member down"),
            Down::Renamed => {}
            Down::Absent => {
                metrics::counter!("ringtail_membership_members_down_total", "how" => "crashed")
                    .increment(1);
                tracing::warn!(
                    member,
                    "ingester down without a departure: absent until it is back"
                );
            }
        }
    }

    fn liveness_changed(&self) -> bool {
        self.foca.iter_members().any(|m| {
            let live = to_liveness(m.state());
            self.known
                .get(&m.id().gossip)
                .is_none_or(|k| k.liveness != live || &k.identity != m.id())
        })
    }

    fn publish(&mut self) {
        let now = SystemTime::now();
        let me = self.foca.identity().clone();
        let mut current: Vec<(NodeIdentity, Liveness)> = self
            .foca
            .iter_members()
            .map(|m| (m.id().clone(), to_liveness(m.state())))
            .collect();
        current.push((me, Liveness::Alive));
        let mut next = HashMap::with_capacity(current.len());
        for (identity, liveness) in current {
            let changed_at = match self.known.get(&identity.gossip) {
                Some(k) if k.identity.state == identity.state && k.liveness == liveness => {
                    k.changed_at
                }
                previous => {
                    let from = previous.map_or("NEW", |k| k.identity.state.as_str());
                    if from != identity.state.as_str() {
                        metrics::counter!("ringtail_membership_state_transitions_total", "from" => from, "to" => identity.state.as_str())
                            .increment(1);
                    }
                    now
                }
            };
            next.insert(
                identity.gossip,
                MemberStatus {
                    identity,
                    liveness,
                    changed_at,
                },
            );
        }
        self.known = next;
        let up: Vec<&NodeIdentity> = self.known.values().map(|m| &m.identity).collect();
        self.lifecycle.members_up(&up);
        let mut members: Vec<MemberStatus> = self.known.values().cloned().collect();
        members.sort_by(|a, b| a.identity.name.cmp(&b.identity.name));
        let view = ClusterView::build(members, self.lifecycle.absent());
        let counts = view.count_by_state();
        // Every state, so that one nobody is in any more reads 0 rather than its last count.
        for state in ["JOINING", "ACTIVE", "LEAVING", "ABSENT"] {
            let count = counts.get(state).copied().unwrap_or(0);
            metrics::gauge!("ringtail_membership_members", "state" => state).set(count as f64);
        }
        self.view_tx.send_replace(Arc::new(view));
    }

    /// foca's leave: declare ourselves down, then keep gossiping it (foca sends the news a
    /// bounded number of times, with no acknowledgement) until `exit` — the caller cancels
    /// it once peers confirm they dropped us — or [`LEAVE_GOSSIP_LIMIT`].
    async fn leave(&mut self, exit: CancellationToken) {
        if let Err(e) = self.foca.leave_cluster(&mut self.runtime) {
            tracing::debug!(error = %e, "leave failed");
        }
        metrics::counter!("ringtail_gossip_departures_announced_total").increment(1);
        let deadline = Instant::now() + LEAVE_GOSSIP_LIMIT;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            self.send_queued().await;
            tokio::select! {
                _ = exit.cancelled() => break,
                _ = tokio::time::sleep_until(deadline) => break,
                _ = tick.tick() => {
                    if self.foca.updates_backlog() > 0 {
                        let _ = self.foca.gossip(&mut self.runtime);
                    }
                }
            }
        }
        tracing::info!("left the gossip cluster");
    }
}

/// Longest time a departing node keeps gossiping its departure.
pub(crate) const LEAVE_GOSSIP_LIMIT: Duration = Duration::from_secs(5);

fn to_liveness(state: foca::State) -> Liveness {
    match state {
        foca::State::Suspect => Liveness::Suspect,
        _ => Liveness::Alive,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

//! The shutdown sequence of a running node (the steps are in the module doc of
//! [`super`]), and the confirmation of its departure by the peers.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::RunningNode;
use crate::admin;
use crate::cluster::{NodeState, LEAVE_GOSSIP_LIMIT};

/// Longest wait for the servers' connections to close (step 5). A connection whose peer
/// vanished (its close lost in a network partition) would otherwise hold the drain until
/// the deadline, and the departure (step 6) would never be announced.
const SERVER_DRAIN_LIMIT: Duration = Duration::from_secs(5);

impl RunningNode {
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits for the shutdown trigger (SIGTERM, Ctrl-C, `POST /shutdown`), then runs the
    /// shutdown sequence, bounded by `shutdown_timeout`. See the module doc for the steps.
    pub async fn wait(self) {
        self.shutdown.cancelled().await;
        let started = Instant::now();
        let deadline = started + self.shutdown_timeout;
        if let Some(ingester) = &self.ingester {
            tracing::info!(node = %self.name, "shutdown 1/6: announcing LEAVING (out of every write ring)");
            self.membership.set_state(NodeState::Leaving).await;
            ingester.drain(deadline).await;
        }
        let peers = self.stop_servers(deadline).await;
        self.depart(&peers, started, deadline).await;
    }

    /// Step 5: stops the servers and workers and waits for them (not past the time step 6
    /// needs). Returns the peers, as the view had them before, for step 6.
    async fn stop_servers(&self, deadline: Instant) -> Vec<(String, SocketAddr)> {
        let name = &self.name;
        tracing::info!(node = %name, "shutdown 5/6: stopping servers (in-flight requests finish)");
        let peers = self
            .membership
            .view()
            .members
            .iter()
            .filter(|m| m.identity.name != *name)
            .map(|m| (m.identity.name.clone(), m.identity.http))
            .collect();
        self.bg.stop.cancel();
        self.bg.tasks.close();
        // Leave step 6 its time even when a connection does not close.
        let drain_until = (Instant::now() + SERVER_DRAIN_LIMIT)
            .min(deadline.checked_sub(LEAVE_GOSSIP_LIMIT).unwrap_or(deadline));
        if tokio::time::timeout_at(drain_until, self.bg.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(node = %name, "servers' connections did not all close in time; going on (nothing is lost: everything was flushed in step 4)");
        }
        peers
    }

    /// Step 6: foca's leave, until every peer confirmed it or the deadline; then the
    /// gossip task ends.
    async fn depart(self, peers: &[(String, SocketAddr)], started: Instant, deadline: Instant) {
        let name = &self.name;
        tracing::info!(node = %name, peers = peers.len(), "shutdown 6/6: announcing the departure and waiting for peers to confirm");
        self.gossip.leave.cancel();
        let confirm_until = (Instant::now() + LEAVE_GOSSIP_LIMIT).min(deadline);
        let confirmed = confirm_departure(name, &self.peers, peers, confirm_until).await;
        metrics::histogram!("ringtail_gossip_departure_confirm_seconds")
            .record(started.elapsed().as_secs_f64());
        if confirmed {
            metrics::counter!("ringtail_gossip_departures_confirmed_total").increment(1);
            tracing::info!(node = %name, "every peer confirmed the departure");
        } else {
            tracing::warn!(node = %name, "not every peer confirmed the departure before the deadline; SWIM will finish the job");
        }
        self.gossip.exit.cancel();
        let _ = tokio::time::timeout_at(deadline + Duration::from_secs(1), self.gossip.task).await;
        metrics::histogram!("ringtail_node_shutdown_seconds")
            .record(started.elapsed().as_secs_f64());
        tracing::info!(node = %name, elapsed_ms = started.elapsed().as_millis() as u64, "shutdown: done");
    }
}

/// Polls every peer's `/ring` until none lists `name` (or `until`). Peers that do not
/// answer count as confirmed: they are gone themselves.
async fn confirm_departure(
    name: &str,
    client: &admin::PeerHttp,
    peers: &[(String, SocketAddr)],
    until: Instant,
) -> bool {
    loop {
        let mut pending = 0;
        for (_, http) in peers {
            let listed = match client
                .client()
                .get(client.url(http, "/ring"))
                .timeout(Duration::from_millis(500))
                .header("accept", "application/json")
                .send()
                .await
            {
                Ok(resp) => resp
                    .json::<crate::cluster::RingDoc>()
                    .await
                    .is_ok_and(|ring| ring.lists(name)),
                Err(_) => false,
            };
            pending += usize::from(listed);
        }
        if pending == 0 {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

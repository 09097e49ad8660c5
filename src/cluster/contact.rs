//! When this node last heard from a peer: the readiness check's sign that it is cut off.
//!
//! SWIM's own sign, every peer declared down, is not enough. foca's `change_identity`
//! (every state change) disconnects the node until a peer addresses the new identity,
//! and a disconnected foca stops probing: cut off right after a state change, it keeps
//! its member list forever and never declares anyone down. Silence is the sign that
//! holds in every foca state: a connected member hears from its peers every probe
//! period (acks, gossip every 200 ms, announces).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Written by the gossip task on every packet foca accepts, read by readiness checks.
#[derive(Debug)]
pub(crate) struct PeerContact {
    epoch: Instant,
    /// Milliseconds after `epoch` of the last accepted packet.
    last_heard_ms: AtomicU64,
    /// Silence longer than this is a cut-off.
    silence_limit: Duration,
}

impl PeerContact {
    pub(crate) fn new(silence_limit: Duration) -> Self {
        Self {
            epoch: Instant::now(),
            last_heard_ms: AtomicU64::new(0),
            silence_limit,
        }
    }

    pub(crate) fn heard(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_heard_ms.store(ms, Ordering::Relaxed);
    }

    fn silent_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_heard_ms.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last)
    }

    pub(crate) fn is_cut_off(&self, members_including_me: usize) -> bool {
        cut_off(members_including_me, self.silent_for(), self.silence_limit)
    }
}

/// A joined node is cut off when SWIM has declared every peer down, or when no peer has
/// been heard from for longer than `limit` (see the module doc).
fn cut_off(members_including_me: usize, silent_for: Duration, limit: Duration) -> bool {
    members_including_me <= 1 || silent_for > limit
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(6);

    #[test]
    fn alone_is_cut_off_however_recently_a_peer_spoke() {
        assert!(cut_off(1, Duration::ZERO, LIMIT));
    }

    #[test]
    fn peers_in_the_list_but_silent_past_the_limit_is_cut_off() {
        assert!(cut_off(4, LIMIT + Duration::from_millis(1), LIMIT));
    }

    #[test]
    fn peers_heard_within_the_limit_is_connected() {
        assert!(!cut_off(4, LIMIT, LIMIT));
        assert!(!cut_off(2, Duration::from_millis(200), LIMIT));
    }

    #[test]
    fn hearing_a_packet_ends_the_silence() {
        let contact = PeerContact::new(Duration::from_millis(50));
        std::thread::sleep(Duration::from_millis(60));
        assert!(contact.is_cut_off(3));
        contact.heard();
        assert!(!contact.is_cut_off(3));
    }
}

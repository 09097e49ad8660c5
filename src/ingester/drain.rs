//! The ingester's part of the node's shutdown sequence: steps 2–4 (the node announced
//! LEAVING in step 1 and stops its servers in step 5; `node/mod.rs` lists every step).

use std::time::Duration;

use tokio::time::Instant;

use super::Ingester;

/// Step 2: the ingester waits for this long without a push...
const QUIET_PERIOD: Duration = Duration::from_millis(500);
/// ...but no longer than this (distributors hear LEAVING within about a gossip round).
const QUIET_WAIT_LIMIT: Duration = Duration::from_secs(5);

impl Ingester {
    /// Drains the ingester of a LEAVING node, each step logged (with the node's name),
    /// none past `deadline`:
    /// 2. waits until no push arrived for `QUIET_PERIOD` (0.5 s), at most
    ///    `QUIET_WAIT_LIMIT` (5 s);
    /// 3. answers every later push with UNAVAILABLE, once the pushes in their WAL append
    ///    are in the live traces;
    /// 4. cuts and flushes everything to the object store, retried every 0.5 s until no
    ///    block is pending. What the deadline leaves unflushed stays in the local folder
    ///    and the WAL for the next start.
    pub(crate) async fn drain(&self, deadline: Instant) {
        let node = &self.name;
        tracing::info!(node = %node, "shutdown 2/6: waiting until distributors stop sending");
        let quiet_until = (Instant::now() + QUIET_WAIT_LIMIT).min(deadline);
        while self.since_last_push() < QUIET_PERIOD && Instant::now() < quiet_until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::info!(node = %node, "shutdown 3/6: answering pushes with UNAVAILABLE");
        // Waits for pushes in their WAL append: a stalled disk must not hold the drain
        // past its deadline (the WAL keeps whatever was acked).
        if tokio::time::timeout_at(deadline, self.refuse_pushes())
            .await
            .is_err()
        {
            tracing::error!(node = %node, "shutdown deadline: pushes still in their WAL append");
        }
        tracing::info!(node = %node, "shutdown 4/6: cutting and flushing everything to the object store");
        loop {
            match tokio::time::timeout_at(deadline, self.cut_and_flush(true)).await {
                Ok(Ok(stats)) if stats.blocks_pending == 0 => {
                    if stats.blocks_quarantined > 0 {
                        tracing::error!(node = %node, quarantined = stats.blocks_quarantined, "leaving quarantined blocks in the local folder (the other replicas' copies are in the store)");
                    }
                    break;
                }
                Ok(Ok(stats)) => {
                    tracing::warn!(node = %node, pending = stats.blocks_pending, "blocks still pending; retrying")
                }
                Ok(Err(e)) => tracing::warn!(node = %node, error = %e, "flush failed; retrying"),
                Err(_) => {}
            }
            if Instant::now() + Duration::from_secs(1) >= deadline {
                tracing::error!(node = %node, "shutdown deadline: blocks left unflushed stay in the local folder and WAL for the next start");
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

//! The one quorum helper used by writes (distributor) and reads (querier).

use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::mpsc;

use crate::ring::{Progress, QuorumTracker};

/// The outcome of one instance's call.
#[derive(Debug)]
pub struct CallOutcome<T> {
    pub instance: u16,
    pub result: Result<T, String>,
}

/// What [`call_with_quorum`] saw.
#[derive(Debug)]
pub struct QuorumOutcome<T> {
    pub reached: bool,
    /// Every outcome received before returning, in arrival order.
    pub outcomes: Vec<CallOutcome<T>>,
}

impl<T> QuorumOutcome<T> {
    /// "name: error" for every failed call.
    pub fn failures(&self, name: impl Fn(u16) -> String) -> Vec<String> {
        self.outcomes
            .iter()
            .filter_map(|o| {
                o.result
                    .as_ref()
                    .err()
                    .map(|e| format!("{}: {e}", name(o.instance)))
            })
            .collect()
    }
}

/// Calls every instance concurrently and returns once `tracker` reaches its quorum, or as
/// soon as it can no longer reach it.
///
/// Contract:
/// - Each call runs in its own task; it is **not cancelled** when this function returns,
///   so a slow replica's write still lands (each call must carry its own timeout).
/// - On quorum, waits up to `linger` more for the calls still running (reads use it to
///   merge the third replica's answer; writes pass zero), then returns what arrived.
/// - Gives up early, with `reached: false`, the moment some group can no longer reach
///   its quorum; calls still running finish in the background.
/// - An instance not in any group of `tracker` counts for nothing but its answer is
///   still collected.
pub async fn call_with_quorum<T: Send + 'static>(
    calls: Vec<(u16, BoxFuture<'static, Result<T, String>>)>,
    mut tracker: QuorumTracker,
    linger: Duration,
) -> QuorumOutcome<T> {
    let total = calls.len();
    let (tx, mut rx) = mpsc::channel(total.max(1));
    for (instance, call) in calls {
        let tx = tx.clone();
        tokio::spawn(async move {
            let result = call.await;
            let _ = tx.send(CallOutcome { instance, result }).await;
        });
    }
    drop(tx);
    let mut outcomes = Vec::with_capacity(total);
    let mut progress = tracker.progress();
    while progress == Progress::Pending {
        let Some(outcome) = rx.recv().await else {
            break;
        };
        progress = tracker.record(outcome.instance, outcome.result.is_ok());
        outcomes.push(outcome);
    }
    if progress == Progress::Reached && !linger.is_zero() && outcomes.len() < total {
        let deadline = tokio::time::Instant::now() + linger;
        while outcomes.len() < total {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(outcome)) => outcomes.push(outcome),
                _ => break,
            }
        }
    }
    QuorumOutcome {
        reached: progress == Progress::Reached,
        outcomes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::{Ring, Token};
    use futures::FutureExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    fn group() -> QuorumTracker {
        let ring = Ring::new(&[1, 2, 3]);
        QuorumTracker::new([ring.replicas(Token(7), 3)], 2)
    }

    #[tokio::test]
    async fn returns_at_quorum_and_the_slow_call_still_completes() {
        let finished = Arc::new(AtomicBool::new(false));
        let f = finished.clone();
        let calls: Vec<(u16, BoxFuture<'static, Result<(), String>>)> = vec![
            (0, async { Ok(()) }.boxed()),
            (1, async { Ok(()) }.boxed()),
            (
                2,
                async move {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    f.store(true, Ordering::SeqCst);
                    Ok(())
                }
                .boxed(),
            ),
        ];
        let out = call_with_quorum(calls, group(), Duration::ZERO).await;
        assert!(out.reached);
        assert_eq!(out.outcomes.len(), 2);
        assert!(!finished.load(Ordering::SeqCst));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !finished.load(Ordering::SeqCst) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "slow call was cancelled"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn gives_up_as_soon_as_quorum_is_impossible() {
        let calls: Vec<(u16, BoxFuture<'static, Result<(), String>>)> = vec![
            (0, async { Err("refused".to_string()) }.boxed()),
            (1, async { Err("timeout".to_string()) }.boxed()),
            (2, std::future::pending().boxed()),
        ];
        let out = call_with_quorum(calls, group(), Duration::ZERO).await;
        assert!(!out.reached);
        let failures = out.failures(|i| format!("ingester-{i}"));
        assert_eq!(failures.len(), 2);
        assert!(failures.iter().any(|f| f == "ingester-0: refused"));
    }

    #[tokio::test]
    async fn lingers_for_the_third_answer_after_quorum() {
        let calls: Vec<(u16, BoxFuture<'static, Result<u8, String>>)> = vec![
            (0, async { Ok(0) }.boxed()),
            (1, async { Ok(1) }.boxed()),
            (
                2,
                async {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok(2)
                }
                .boxed(),
            ),
        ];
        let out = call_with_quorum(calls, group(), Duration::from_secs(5)).await;
        assert!(out.reached);
        assert_eq!(out.outcomes.len(), 3);
    }
}

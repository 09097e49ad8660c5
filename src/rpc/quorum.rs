//! The one quorum helper used by writes (distributor) and reads (querier).

use std::future::Future;
use std::time::Duration;

use futures::future::BoxFuture;
use thiserror::Error;
use tokio::sync::mpsc;

use crate::ring::{Progress, QuorumTracker};

/// Why one call to one instance failed. Its text is what operators and clients read in
/// quorum failures ("ingester-2: Unavailable: leaving"), so it stays short and stable.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum CallError {
    /// The instance answered with an error status.
    #[error("{code:?}: {message}")]
    Status { code: tonic::Code, message: String },
    /// No answer within the call's timeout.
    #[error("timed out after {} ms", .0.as_millis())]
    TimedOut(Duration),
}

impl From<tonic::Status> for CallError {
    fn from(status: tonic::Status) -> Self {
        CallError::Status {
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}

/// How [`call_with_quorum`] treats the calls: the per-call policy, written once.
#[derive(Clone, Copy, Debug)]
pub struct CallPolicy {
    /// Each call fails with [`CallError::TimedOut`] after this long.
    pub timeout: Duration,
    /// Once quorum is reached, how much longer to wait for the calls still running
    /// (zero: return at once).
    pub linger: Duration,
    /// Called with each failed call's error, also of a call that fails after the
    /// caller has its answer (a write's remaining replica), which nothing else sees.
    pub on_failure: fn(&CallError),
}

impl CallPolicy {
    /// For callers that look at the failures they are given and no others.
    pub fn ignore_failure(_: &CallError) {}
}

/// `call`, or [`CallError::TimedOut`] if it takes longer than `timeout`.
async fn with_timeout<T>(
    timeout: Duration,
    call: impl Future<Output = Result<T, CallError>>,
) -> Result<T, CallError> {
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or(Err(CallError::TimedOut(timeout)))
}

/// The outcome of one instance's call.
#[derive(Debug)]
pub struct CallOutcome<T> {
    pub instance: u16,
    pub result: Result<T, CallError>,
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
///   so a slow replica's write still lands. It fails with [`CallError::TimedOut`] after
///   `policy.timeout`.
/// - On quorum, waits up to `policy.linger` more for the calls still running (reads use
///   it to merge the third replica's answer; writes pass zero), then returns what arrived.
/// - Gives up early, with `reached: false`, the moment some group can no longer reach
///   its quorum; calls still running finish in the background.
/// - An instance not in any group of `tracker` counts for nothing but its answer is
///   still collected.
pub async fn call_with_quorum<T: Send + 'static>(
    calls: Vec<(u16, BoxFuture<'static, Result<T, CallError>>)>,
    mut tracker: QuorumTracker,
    policy: CallPolicy,
) -> QuorumOutcome<T> {
    let total = calls.len();
    let (tx, mut rx) = mpsc::channel(total.max(1));
    for (instance, call) in calls {
        let tx = tx.clone();
        tokio::spawn(async move {
            let result = with_timeout(policy.timeout, call).await;
            if let Err(e) = &result {
                (policy.on_failure)(e);
            }
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
    if progress == Progress::Reached && !policy.linger.is_zero() && outcomes.len() < total {
        let deadline = tokio::time::Instant::now() + policy.linger;
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

    fn policy(linger: Duration) -> CallPolicy {
        CallPolicy {
            timeout: Duration::from_secs(30),
            linger,
            on_failure: CallPolicy::ignore_failure,
        }
    }

    fn refused(message: &str) -> CallError {
        CallError::Status {
            code: tonic::Code::Unavailable,
            message: message.to_owned(),
        }
    }

    #[tokio::test]
    async fn returns_at_quorum_and_the_slow_call_still_completes() {
        let finished = Arc::new(AtomicBool::new(false));
        let f = finished.clone();
        let calls: Vec<(u16, BoxFuture<'static, Result<(), CallError>>)> = vec![
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
        let out = call_with_quorum(calls, group(), policy(Duration::ZERO)).await;
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
    async fn a_call_that_fails_after_the_quorum_is_still_reported() {
        static FAILED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        fn count(e: &CallError) {
            assert_eq!(*e, CallError::TimedOut(Duration::from_millis(300)));
            FAILED.fetch_add(1, Ordering::SeqCst);
        }
        let calls: Vec<(u16, BoxFuture<'static, Result<(), CallError>>)> = vec![
            (0, async { Ok(()) }.boxed()),
            (1, async { Ok(()) }.boxed()),
            (2, std::future::pending().boxed()),
        ];
        // Long enough that the quorum is in before the third call times out.
        let policy = CallPolicy {
            timeout: Duration::from_millis(300),
            linger: Duration::ZERO,
            on_failure: count,
        };
        let out = call_with_quorum(calls, group(), policy).await;
        assert!(out.reached);
        assert_eq!(FAILED.load(Ordering::SeqCst), 0, "not failed yet");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while FAILED.load(Ordering::SeqCst) == 0 {
            assert!(tokio::time::Instant::now() < deadline, "never reported");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(FAILED.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn gives_up_as_soon_as_quorum_is_impossible() {
        let calls: Vec<(u16, BoxFuture<'static, Result<(), CallError>>)> = vec![
            (0, async { Err(refused("refused")) }.boxed()),
            (
                1,
                async { Err(CallError::TimedOut(Duration::from_secs(1))) }.boxed(),
            ),
            (2, std::future::pending().boxed()),
        ];
        let out = call_with_quorum(calls, group(), policy(Duration::ZERO)).await;
        assert!(!out.reached);
        let failures = out.failures(|i| format!("ingester-{i}"));
        assert_eq!(failures.len(), 2);
        assert!(failures
            .iter()
            .any(|f| f == "ingester-0: Unavailable: refused"));
        assert!(failures
            .iter()
            .any(|f| f == "ingester-1: timed out after 1000 ms"));
    }

    #[tokio::test]
    async fn a_call_that_never_answers_fails_with_the_timeout() {
        let calls: Vec<(u16, BoxFuture<'static, Result<(), CallError>>)> = vec![
            (0, async { Ok(()) }.boxed()),
            (1, std::future::pending().boxed()),
            (2, async { Err(refused("leaving")) }.boxed()),
        ];
        let policy = CallPolicy {
            timeout: Duration::from_millis(20),
            linger: Duration::ZERO,
            on_failure: CallPolicy::ignore_failure,
        };
        let out = call_with_quorum(calls, group(), policy).await;
        assert!(!out.reached);
        let mut failures = out.failures(|i| format!("ingester-{i}"));
        failures.sort();
        assert_eq!(
            failures,
            [
                "ingester-1: timed out after 20 ms",
                "ingester-2: Unavailable: leaving"
            ]
        );
    }

    #[test]
    fn a_status_reads_as_its_code_and_message() {
        let e = CallError::from(tonic::Status::unavailable("ingester is leaving"));
        assert_eq!(e.to_string(), "Unavailable: ingester is leaving");
        assert_eq!(
            CallError::TimedOut(Duration::from_millis(1500)).to_string(),
            "timed out after 1500 ms"
        );
    }

    #[tokio::test]
    async fn lingers_for_the_third_answer_after_quorum() {
        let calls: Vec<(u16, BoxFuture<'static, Result<u8, CallError>>)> = vec![
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
        let out = call_with_quorum(calls, group(), policy(Duration::from_secs(5))).await;
        assert!(out.reached);
        assert_eq!(out.outcomes.len(), 3);
    }
}

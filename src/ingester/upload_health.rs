//! Which pending block a flush round tries next, and when a failing block is poisoned
//! rather than the object store down.
//!
//! - A block that failed before is tried after the ones that have not, so a poisoned
//!   block never stands in front of healthy ones.
//! - A round ends early only after [`STORE_DOWN_AFTER`] failures in a row (the store is
//!   most likely down); when no upload of the round succeeded and the store is not
//!   proven reachable, the next rounds back off.
//! - A failure in a round where the store is proven working (another upload succeeded,
//!   or the store answered a listing) is a *strike* against that block; after
//!   [`QUARANTINE_AFTER`] strikes the block is quarantined: it leaves the flush queue,
//!   stays on local disk and readable, and is retried only every
//!   [`QUARANTINE_RETRY`].
//!
//! Pure bookkeeping: the flush round does the uploads and tells this type what happened.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Failures in a row that end a round.
pub(super) const STORE_DOWN_AFTER: u32 = 3;
/// Strikes (failures while the store works) that quarantine a block.
pub(super) const QUARANTINE_AFTER: u32 = 3;
/// How often a quarantined block is tried again.
pub(super) const QUARANTINE_RETRY: Duration = Duration::from_secs(600);

/// A local block: (tenant, block id).
pub(super) type BlockKey = (String, String);

/// What the flush round does after a failed upload.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Next {
    TryNext,
    EndRound,
}

/// The object store's recent failures and each block's strikes.
#[derive(Debug, Default)]
pub(super) struct UploadHealth {
    store_failures: u32,
    retry_at: Option<Instant>,
    /// Blocks that failed and have not uploaded since, with their strikes.
    failed_before: HashMap<BlockKey, u32>,
}

/// One flush round's outcomes so far.
#[derive(Debug, Default)]
pub(super) struct Round {
    succeeded: usize,
    failed: Vec<BlockKey>,
    in_a_row: u32,
}

impl Round {
    /// True when the round tried something, failed, and nothing succeeded: the caller
    /// should find out whether the store is reachable before [`UploadHealth::finish`].
    pub(super) fn needs_probe(&self) -> bool {
        self.succeeded == 0 && !self.failed.is_empty()
    }
}

impl UploadHealth {
    /// True while the store's backoff runs (a forced round ignores it).
    pub(super) fn backing_off(&self, now: Instant) -> bool {
        self.retry_at.is_some_and(|t| now < t)
    }

    /// Orders due blocks, each `(created, key)`: blocks without failures first, then by
    /// strikes, oldest first within each.
    pub(super) fn order(&self, due: &mut [(u64, BlockKey)]) {
        due.sort_by_key(|(created, key)| {
            let failed = self.failed_before.get(key).map_or(0, |s| 1 + s);
            (failed, *created)
        });
    }

    pub(super) fn succeeded(&mut self, round: &mut Round, key: &BlockKey) {
        round.succeeded += 1;
        round.in_a_row = 0;
        self.failed_before.remove(key);
    }

    pub(super) fn failed(&mut self, round: &mut Round, key: BlockKey) -> Next {
        round.in_a_row += 1;
        self.failed_before.entry(key.clone()).or_insert(0);
        round.failed.push(key);
        if round.in_a_row >= STORE_DOWN_AFTER {
            Next::EndRound
        } else {
            Next::TryNext
        }
    }

    /// Closes a round; `store_reachable` is the probe's answer (only asked for when
    /// [`Round::needs_probe`]). Returns the blocks to quarantine.
    pub(super) fn finish(
        &mut self,
        round: Round,
        store_reachable: bool,
        now: Instant,
    ) -> Vec<BlockKey> {
        if round.failed.is_empty() {
            if round.succeeded > 0 {
                self.store_failures = 0;
                self.retry_at = None;
            }
            return Vec::new();
        }
        if round.succeeded == 0 && !store_reachable {
            self.store_failures += 1;
            self.retry_at = Some(now + backoff(self.store_failures));
            return Vec::new();
        }
        // The store works: each failure is the block's own.
        self.store_failures = 0;
        self.retry_at = None;
        let mut poisoned = Vec::new();
        for key in round.failed {
            let strikes = self.failed_before.entry(key.clone()).or_insert(0);
            *strikes += 1;
            if *strikes >= QUARANTINE_AFTER {
                self.failed_before.remove(&key);
                poisoned.push(key);
            }
        }
        poisoned
    }

    /// Consecutive rounds in which the store looked down (for logs).
    pub(super) fn store_failures(&self) -> u32 {
        self.store_failures
    }
}

/// 0.5 s, 1 s, 2 s, ... up to 10 s between rounds while the store fails.
fn backoff(failures: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << failures.min(5))).min(Duration::from_secs(10))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(tenant: &str, id: &str) -> BlockKey {
        (tenant.to_owned(), id.to_owned())
    }

    /// Runs one round over `due`, where `fails(key)` says which uploads fail.
    fn round(
        h: &mut UploadHealth,
        due: &[(u64, BlockKey)],
        fails: impl Fn(&BlockKey) -> bool,
        reachable: bool,
        now: Instant,
    ) -> (Vec<BlockKey>, Vec<BlockKey>) {
        let mut due = due.to_vec();
        h.order(&mut due);
        let mut r = Round::default();
        let mut tried = Vec::new();
        for (_, k) in due {
            tried.push(k.clone());
            if fails(&k) {
                if h.failed(&mut r, k) == Next::EndRound {
                    break;
                }
            } else {
                h.succeeded(&mut r, &k);
            }
        }
        let probe = r.needs_probe() && reachable;
        (tried, h.finish(r, probe, now))
    }

    #[test]
    fn a_poisoned_block_never_holds_up_the_others_and_is_quarantined_after_three_strikes() {
        let mut h = UploadHealth::default();
        let poisoned = key("*", "a");
        let due = vec![(1, poisoned.clone()), (2, key("b", "b"))];
        let now = Instant::now();
        let (tried, q) = round(&mut h, &due, |k| *k == poisoned, false, now);
        assert_eq!(tried, vec![poisoned.clone(), key("b", "b")]);
        assert!(q.is_empty());
        // Next round it goes last, though it is the oldest.
        let due = vec![(1, poisoned.clone()), (3, key("c", "c"))];
        let (tried, q) = round(&mut h, &due, |k| *k == poisoned, false, now);
        assert_eq!(tried, vec![key("c", "c"), poisoned.clone()]);
        assert!(q.is_empty());
        let (_, q) = round(&mut h, &[(1, poisoned.clone())], |_| true, true, now);
        assert_eq!(q, vec![poisoned]);
        assert!(!h.backing_off(now));
    }

    #[test]
    fn a_store_that_is_down_backs_off_and_quarantines_nothing() {
        let mut h = UploadHealth::default();
        let due: Vec<_> = (0..10).map(|i| (i, key("t", &i.to_string()))).collect();
        let now = Instant::now();
        for n in 1..=10u32 {
            let (tried, q) = round(&mut h, &due, |_| true, false, now);
            assert_eq!(
                tried.len(),
                STORE_DOWN_AFTER as usize,
                "the round ends early"
            );
            assert!(q.is_empty());
            assert!(h.backing_off(now));
            assert!(!h.backing_off(now + Duration::from_secs(11)));
            assert_eq!(h.store_failures(), n);
        }
        // The store comes back: everything uploads and the backoff is over.
        let (tried, q) = round(&mut h, &due, |_| false, true, now);
        assert_eq!(tried.len(), 10);
        assert!(q.is_empty());
        assert!(!h.backing_off(now));
        assert_eq!(h.store_failures(), 0);
    }

    #[test]
    fn a_failure_before_the_first_success_of_the_round_still_counts_as_a_strike() {
        let mut h = UploadHealth::default();
        let bad = key("x", "1");
        let due = vec![(0, bad.clone()), (1, key("y", "2"))];
        let now = Instant::now();
        round(&mut h, &due, |k| *k == bad, false, now);
        assert_eq!(h.failed_before.get(&bad), Some(&1));
    }

    #[test]
    fn an_upload_that_succeeds_clears_the_blocks_strikes() {
        let mut h = UploadHealth::default();
        let flaky = key("x", "1");
        let due = vec![(0, flaky.clone()), (1, key("y", "2"))];
        let now = Instant::now();
        round(&mut h, &due, |k| *k == flaky, false, now);
        round(&mut h, &due, |k| *k == flaky, false, now);
        round(&mut h, &due, |_| false, false, now);
        let (_, q) = round(&mut h, &due, |k| *k == flaky, false, now);
        assert!(q.is_empty(), "strikes start again after a success");
    }

    #[test]
    fn an_unreachable_store_does_not_strike_a_lone_block() {
        let mut h = UploadHealth::default();
        let lone = key("x", "1");
        let now = Instant::now();
        for _ in 0..10 {
            let (_, q) = round(&mut h, &[(0, lone.clone())], |_| true, false, now);
            assert!(q.is_empty());
        }
    }
}

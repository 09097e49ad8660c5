//! Per-tenant ingestion rate limits: a token bucket per tenant (bytes per second with a
//! burst), refilled from the instant it is given, so the rules are tested without a clock.
//!
//! Strategy `local`: each distributor enforces the tenant's rate on its own (N
//! distributors admit up to N times the rate). `global`: each enforces the rate divided
//! by the number of ACTIVE distributors in gossip, so the cluster admits about the rate
//! whatever the number of distributors (Tempo's `ingestion_rate_strategy`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::model::TenantId;
pub(crate) use crate::overrides::Rate;

/// A token bucket holding up to `burst` bytes, refilled at `bytes_per_sec`.
#[derive(Clone, Debug)]
pub(crate) struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub(crate) fn full(rate: Rate, now: Instant) -> Self {
        Self {
            tokens: rate.burst,
            last: now,
        }
    }

    /// Takes `bytes` at `now` under `rate` (which may change between calls: the bucket
    /// never holds more than the current burst).
    pub(crate) fn take(&mut self, bytes: f64, rate: Rate, now: Instant) -> Admit {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * rate.bytes_per_sec).min(rate.burst);
        if bytes > rate.burst {
            return Admit::Never;
        }
        if bytes <= self.tokens {
            self.tokens -= bytes;
            return Admit::Now;
        }
        // bytes <= burst, so a positive rate refills enough in finite time.
        let wait = (bytes - self.tokens) / rate.bytes_per_sec;
        Admit::After(Duration::try_from_secs_f64(wait).unwrap_or(Duration::from_secs(3600)))
    }
}

/// Whether a request fits its tenant's rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    Now,
    /// Over the rate: it would fit after this long.
    After(Duration),
    /// Larger than the burst: it never fits (send smaller requests).
    Never,
}

/// Every tenant's bucket on this distributor.
#[derive(Default)]
pub(crate) struct TenantRates {
    buckets: Mutex<HashMap<TenantId, TokenBucket>>,
}

impl TenantRates {
    /// Admits `bytes` of `tenant` at `now` under `rate`, or says how long to wait.
    pub(crate) fn admit(&self, tenant: &TenantId, bytes: usize, rate: Rate, now: Instant) -> Admit {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bucket = match buckets.get_mut(tenant) {
            Some(b) => b,
            None => buckets
                .entry(tenant.clone())
                .or_insert_with(|| TokenBucket::full(rate, now)),
        };
        bucket.take(bytes as f64, rate, now)
    }
}

/// The rate one distributor enforces: the tenant's, or its share of it among `distributors`.
pub(crate) fn share(rate: Rate, global: bool, distributors: usize) -> Rate {
    if !global {
        return rate;
    }
    let n = distributors.max(1) as f64;
    Rate {
        bytes_per_sec: rate.bytes_per_sec / n,
        burst: rate.burst / n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: Rate = Rate {
        bytes_per_sec: 1000.0,
        burst: 2000.0,
    };

    #[test]
    fn a_full_bucket_admits_the_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::full(RATE, t0);
        assert_eq!(b.take(1500.0, RATE, t0), Admit::Now);
        assert_eq!(b.take(500.0, RATE, t0), Admit::Now);
        // Empty: 100 bytes need 0.1 s.
        assert_eq!(
            b.take(100.0, RATE, t0),
            Admit::After(Duration::from_millis(100))
        );
        assert_eq!(
            b.take(100.0, RATE, t0 + Duration::from_millis(100)),
            Admit::Now
        );
        // A long pause refills up to the burst, not beyond.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(b.take(2000.0, RATE, later), Admit::Now);
        assert_eq!(
            b.take(1000.0, RATE, later),
            Admit::After(Duration::from_secs(1))
        );
    }

    #[test]
    fn a_request_over_the_burst_never_fits_and_a_zero_rate_admits_nothing() {
        let t0 = Instant::now();
        let mut b = TokenBucket::full(RATE, t0);
        assert_eq!(b.take(2001.0, RATE, t0), Admit::Never);
        assert_eq!(
            b.take(2000.0, RATE, t0),
            Admit::Now,
            "a refusal takes nothing"
        );
        let closed = Rate {
            bytes_per_sec: 0.0,
            burst: 0.0,
        };
        let mut none = TokenBucket::full(closed, t0);
        assert_eq!(
            none.take(1.0, closed, t0 + Duration::from_secs(10)),
            Admit::Never
        );
    }

    #[test]
    fn tenants_have_buckets_of_their_own() {
        let rates = TenantRates::default();
        let (a, b) = (
            TenantId::parse("a").expect("tenant"),
            TenantId::parse("b").expect("tenant"),
        );
        let t0 = Instant::now();
        assert_eq!(rates.admit(&a, 2000, RATE, t0), Admit::Now);
        assert!(matches!(rates.admit(&a, 10, RATE, t0), Admit::After(_)));
        assert_eq!(rates.admit(&b, 2000, RATE, t0), Admit::Now);
    }

    #[test]
    fn the_global_strategy_divides_the_rate_among_the_active_distributors() {
        assert_eq!(share(RATE, false, 4), RATE);
        let quarter = share(RATE, true, 4);
        assert_eq!((quarter.bytes_per_sec, quarter.burst), (250.0, 500.0));
        assert_eq!(share(RATE, true, 0), RATE);
    }
}

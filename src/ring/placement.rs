//! Tokens and replica choice: which ingesters hold a trace.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::model::{TenantId, TraceId};

/// Tokens each ingester places on the ring. 512 keeps every ingester's share of the
/// replicas within ±15% of even for 3..10 ingesters (see the tests).
pub(crate) const TOKENS_PER_INSTANCE: usize = 512;

/// The most replicas a key can have; bounds [`ReplicaSet`].
pub(crate) const MAX_REPLICAS: usize = 5;

/// A position on the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Token(pub u64);

/// Seed for [`Token::for_trace`]: computed once per request from the tenant.
#[derive(Clone, Copy, Debug)]
pub struct TenantSeed(u64);

impl TenantSeed {
    pub fn new(tenant: &TenantId) -> Self {
        Self(xxh3_64(tenant.as_str().as_bytes()))
    }
}

impl Token {
    /// The token of a trace: stable across versions and processes (xxh3 is specified).
    pub fn for_trace(seed: TenantSeed, trace: &TraceId) -> Self {
        Self(xxh3_64_with_seed(&trace.0, seed.0))
    }
}

/// Derives an instance's tokens from the seed in its identity.
pub(crate) fn instance_tokens(seed: u64) -> impl Iterator<Item = Token> {
    (0..TOKENS_PER_INSTANCE as u64).map(move |i| Token(xxh3_64_with_seed(&i.to_le_bytes(), seed)))
}

/// Up to [`MAX_REPLICAS`] distinct instance indices, in ring order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplicaSet {
    len: u8,
    ids: [u16; MAX_REPLICAS],
}

impl ReplicaSet {
    /// A set of the given distinct IDs (at most [`MAX_REPLICAS`]).
    pub fn from_ids(ids: impl IntoIterator<Item = u16>) -> Self {
        let mut set = Self::default();
        for id in ids {
            if set.len() == MAX_REPLICAS {
                break;
            }
            if !set.contains(id) {
                set.push(id);
            }
        }
        set
    }

    pub fn as_slice(&self) -> &[u16] {
        &self.ids[..self.len as usize]
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn contains(&self, id: u16) -> bool {
        self.as_slice().contains(&id)
    }

    pub(super) fn push(&mut self, id: u16) {
        self.ids[self.len as usize] = id;
        self.len += 1;
    }
}

/// The token ring over a list of instances, identified by their index in that list.
///
/// A zoned ring (some instance has a zone) places each key's replicas in distinct zones:
/// the first instance clockwise of each zone not yet used, until there are as many zones
/// as replicas wanted. With fewer zones than that, the rest are the next distinct
/// instances clockwise (the placement falls back to distinct instances).
#[derive(Clone, Debug, Default)]
pub struct Ring {
    /// (token, instance index), sorted by token.
    tokens: Vec<(u64, u16)>,
    instances: usize,
    /// Zone index of each instance; empty for a ring without zones.
    zone_of: Vec<u8>,
    zones: usize,
}

/// The most zones a ring tells apart; instances of zones past it share zone slots.
pub(crate) const MAX_ZONES: usize = 64;

impl Ring {
    /// Builds the ring for instances with the given token seeds (index = instance ID).
    pub fn new(seeds: &[u64]) -> Self {
        let mut tokens: Vec<(u64, u16)> = seeds
            .iter()
            .enumerate()
            .flat_map(|(i, &seed)| instance_tokens(seed).map(move |t| (t.0, i as u16)))
            .collect();
        tokens.sort_unstable();
        Self {
            tokens,
            instances: seeds.len(),
            zone_of: Vec::new(),
            zones: 0,
        }
    }

    /// A zoned ring: instance `i` has token seed `seeds[i]` and is in zone `zones[i]`
    /// (zone names, or `None` for an instance without one, which is a zone of its own).
    pub fn with_zones(seeds: &[u64], zones: &[Option<&str>]) -> Self {
        let mut names: Vec<Option<&str>> = zones.to_vec();
        names.sort_unstable();
        names.dedup();
        let zone_of = zones
            .iter()
            .map(|z| (names.binary_search(z).unwrap_or(0) % MAX_ZONES) as u8)
            .collect();
        Self {
            zone_of,
            zones: names.len().min(MAX_ZONES),
            ..Self::new(seeds)
        }
    }

    pub fn instances(&self) -> usize {
        self.instances
    }

    /// Distinct zones on the ring (0 for a ring without zones).
    pub fn zones(&self) -> usize {
        self.zones
    }

    /// The replicas of `token`: the first `n` distinct instances clockwise (fewer if the
    /// ring has fewer instances), in distinct zones on a zoned ring.
    pub fn replicas(&self, token: Token, n: usize) -> ReplicaSet {
        let want = n.min(self.instances).min(MAX_REPLICAS);
        if want == 0 {
            return ReplicaSet::default();
        }
        let start = self.tokens.partition_point(|&(t, _)| t < token.0);
        if self.zone_of.is_empty() {
            self.distinct(start, want)
        } else {
            self.in_distinct_zones(start, want)
        }
    }

    fn distinct(&self, start: usize, want: usize) -> ReplicaSet {
        let mut set = ReplicaSet::default();
        let len = self.tokens.len();
        for step in 0..len {
            let (_, id) = self.tokens[(start + step) % len];
            if !set.contains(id) {
                set.push(id);
                if set.len() == want {
                    break;
                }
            }
        }
        set
    }

    /// One instance per zone for as many zones as there are (up to `want`), then the
    /// instances passed over on the way, in ring order, for the replicas still missing.
    fn in_distinct_zones(&self, start: usize, want: usize) -> ReplicaSet {
        let want_zones = want.min(self.zones);
        let mut set = ReplicaSet::default();
        let mut passed = ReplicaSet::default();
        let mut used_zones = 0u64;
        let len = self.tokens.len();
        for step in 0..len {
            let (_, id) = self.tokens[(start + step) % len];
            if set.contains(id) || passed.contains(id) {
                continue;
            }
            let zone = 1u64 << self.zone_of[id as usize];
            if set.len() < want_zones && used_zones & zone == 0 {
                used_zones |= zone;
                set.push(id);
            } else if passed.len() < want - want_zones {
                passed.push(id);
            }
            if set.len() == want_zones && set.len() + passed.len() == want {
                break;
            }
        }
        for &id in passed.as_slice() {
            set.push(id);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeds(n: usize) -> Vec<u64> {
        (0..n)
            .map(|i| xxh3_64(format!("ingester-{i}").as_bytes()))
            .collect()
    }

    fn keys(count: u64) -> impl Iterator<Item = Token> {
        let seed = TenantSeed::new(&TenantId::single());
        (1..=count).map(move |i| {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&xxh3_64(&i.to_le_bytes()).to_le_bytes());
            id[8..].copy_from_slice(&i.to_le_bytes());
            Token::for_trace(seed, &TraceId(id))
        })
    }

    #[test]
    fn every_key_gets_three_distinct_instances() {
        for n in 3..=10 {
            let ring = Ring::new(&seeds(n));
            for key in keys(20_000) {
                let set = ring.replicas(key, 3);
                assert_eq!(set.len(), 3, "{n} instances");
                let s = set.as_slice();
                assert!(s[0] != s[1] && s[1] != s[2] && s[0] != s[2], "{s:?}");
            }
        }
    }

    #[test]
    fn a_ring_smaller_than_the_replication_factor_returns_every_instance() {
        let ring = Ring::new(&seeds(2));
        assert_eq!(ring.replicas(Token(42), 3).len(), 2);
        assert!(Ring::new(&[]).replicas(Token(42), 3).is_empty());
    }

    #[test]
    fn replica_load_is_within_15_percent_of_even_for_3_to_10_instances() {
        let total = 200_000u64;
        for n in 3..=10 {
            let ring = Ring::new(&seeds(n));
            let mut load = vec![0u64; n];
            for key in keys(total) {
                for &id in ring.replicas(key, 3).as_slice() {
                    load[id as usize] += 1;
                }
            }
            let even = (total * 3) as f64 / n as f64;
            for (i, &l) in load.iter().enumerate() {
                let dev = (l as f64 - even).abs() / even;
                assert!(
                    dev <= 0.15,
                    "{n} instances: instance {i} has {l}, even is {even:.0} ({:.1}% off)",
                    dev * 100.0
                );
            }
        }
    }

    #[test]
    fn adding_an_instance_moves_about_one_nth_of_the_keys() {
        for n in 3..=9 {
            let before = Ring::new(&seeds(n));
            let after = Ring::new(&seeds(n + 1));
            let total = 50_000;
            let moved = keys(total)
                .filter(|&k| before.replicas(k, 1) != after.replicas(k, 1))
                .count();
            let expected = total as f64 / (n + 1) as f64;
            let ratio = moved as f64 / expected;
            assert!(
                (0.75..=1.25).contains(&ratio),
                "{n}->{}: moved {moved}, expected ~{expected:.0}",
                n + 1
            );
        }
    }

    fn zoned(n: usize, zones: usize) -> (Ring, Vec<String>) {
        let names: Vec<String> = (0..n).map(|i| format!("zone-{}", i % zones)).collect();
        let refs: Vec<Option<&str>> = names.iter().map(|z| Some(z.as_str())).collect();
        (Ring::with_zones(&seeds(n), &refs), names)
    }

    #[test]
    fn on_a_zoned_ring_every_key_has_its_replicas_in_three_zones() {
        for (n, zones) in [(3, 3), (6, 3), (9, 3), (7, 3), (8, 4), (10, 5)] {
            let (ring, zone_of) = zoned(n, zones);
            assert_eq!(ring.zones(), zones);
            for key in keys(100_000) {
                let set = ring.replicas(key, 3);
                assert_eq!(set.len(), 3, "{n} instances");
                let mut in_zones: Vec<&str> = set
                    .as_slice()
                    .iter()
                    .map(|&i| zone_of[i as usize].as_str())
                    .collect();
                in_zones.sort_unstable();
                in_zones.dedup();
                assert_eq!(in_zones.len(), 3, "{n} instances in {zones} zones: {set:?}");
            }
        }
    }

    #[test]
    fn with_fewer_zones_than_replicas_a_zoned_ring_uses_every_zone_then_distinct_instances() {
        let (ring, zone_of) = zoned(4, 2);
        for key in keys(20_000) {
            let set = ring.replicas(key, 3);
            let s = set.as_slice();
            assert_eq!(s.len(), 3);
            assert!(s[0] != s[1] && s[1] != s[2] && s[0] != s[2], "{s:?}");
            assert_ne!(zone_of[s[0] as usize], zone_of[s[1] as usize], "{s:?}");
        }
        // One zone: just distinct instances, as without zones.
        let one = Ring::with_zones(&seeds(3), &[Some("a"), Some("a"), Some("a")]);
        let plain = Ring::new(&seeds(3));
        for key in keys(1000) {
            assert_eq!(one.replicas(key, 3).len(), 3);
            assert_eq!(one.replicas(key, 1), plain.replicas(key, 1));
        }
    }

    #[test]
    fn zoned_replica_load_is_within_15_percent_of_even_per_zone() {
        let total = 200_000u64;
        let (ring, _) = zoned(6, 3);
        let mut load = [0u64; 6];
        for key in keys(total) {
            for &id in ring.replicas(key, 3).as_slice() {
                load[id as usize] += 1;
            }
        }
        let even = (total * 3) as f64 / 6.0;
        for (i, &l) in load.iter().enumerate() {
            let dev = (l as f64 - even).abs() / even;
            assert!(dev <= 0.15, "instance {i} has {l}, even is {even:.0}");
        }
    }

    #[test]
    fn placement_is_stable_across_ring_rebuilds() {
        let a = Ring::new(&seeds(5));
        let b = Ring::new(&seeds(5));
        for key in keys(1000) {
            assert_eq!(a.replicas(key, 3), b.replicas(key, 3));
        }
    }
}

//! The rules for members that go down (see the module doc of `cluster`): which ingesters
//! are *absent* (crashed without announcing LEAVING: listed on the ring page until they are
//! back, forgotten, or down for `absent_forget_after`), which have *departed* (announced
//! LEAVING first), and which an operator is *forgetting*. Pure bookkeeping with the clock
//! passed in; the foca driver feeds it what gossip reports.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use super::{AbsentIngester, NodeIdentity, NodeState};

/// What a member's going down means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Down {
    /// An operator forgot it: not counted.
    Forgotten,
    /// It announced LEAVING first: the cluster is smaller by one.
    Departed,
    /// Not an ACTIVE ingester (a JOINING one, or another role): it held no share of writes.
    NotCounted,
    /// An older identity of a member that is up under a newer one (a rename).
    Renamed,
    /// An ACTIVE ingester went down without a word: absent until it is back.
    Absent,
}

/// Absent ingesters and names being forgotten.
#[derive(Debug, Default)]
pub(crate) struct Lifecycle {
    absent: HashMap<String, AbsentIngester>,
    /// Names an operator is forgetting: their coming down notice does not make them absent.
    forgetting: Vec<String>,
}

/// Whether a member with that name is up and past JOINING (ACTIVE or LEAVING).
fn is_up(name: &str, up: &[&NodeIdentity]) -> bool {
    up.iter()
        .any(|m| m.name == name && m.state != NodeState::Joining)
}

impl Lifecycle {
    /// `id` went down at `now`; `up` are the members gossip still lists.
    pub(crate) fn member_down(
        &mut self,
        id: NodeIdentity,
        up: &[&NodeIdentity],
        now: SystemTime,
    ) -> Down {
        if let Some(i) = self.forgetting.iter().position(|n| *n == id.name) {
            self.forgetting.swap_remove(i);
            return Down::Forgotten;
        }
        if id.state == NodeState::Leaving {
            return Down::Departed;
        }
        if !id.is_ingester() || id.state != NodeState::Active {
            return Down::NotCounted;
        }
        if is_up(&id.name, up) {
            return Down::Renamed;
        }
        self.absent.insert(
            id.name.clone(),
            AbsentIngester {
                identity: id,
                since: now,
            },
        );
        Down::Absent
    }

    /// An absent ingester is back once it is up past JOINING (while it replays its WAL as
    /// JOINING it still counts as absent, so its return does not pause writes). Returns
    /// how many came back.
    pub(crate) fn members_up(&mut self, up: &[&NodeIdentity]) -> usize {
        let before = self.absent.len();
        self.absent.retain(|name, _| !is_up(name, up));
        before - self.absent.len()
    }

    /// Takes on a peer's absent ingesters (a node that started after they went down),
    /// except itself (`me`), ones that are back, and ones already listed. Returns the
    /// identities it took.
    pub(crate) fn adopt(
        &mut self,
        absent: Vec<AbsentIngester>,
        me: &str,
        up: &[&NodeIdentity],
    ) -> Vec<NodeIdentity> {
        let mut adopted = Vec::new();
        for a in absent {
            let name = &a.identity.name;
            if *name == me || is_up(name, up) || self.absent.contains_key(name) {
                continue;
            }
            adopted.push(a.identity.clone());
            self.absent.insert(name.clone(), a);
        }
        adopted
    }

    /// An operator forgets `name`: no longer absent, and if it is still a member, its
    /// coming down notice (which the caller triggers) does not make it absent. Returns
    /// whether it was absent.
    pub(crate) fn forget(&mut self, name: &str, is_member: bool) -> bool {
        if is_member {
            self.forgetting.push(name.to_owned());
        }
        self.absent.remove(name).is_some()
    }

    /// Forgets the ingesters absent since before `now - after` (each node does so on its
    /// own; none needs an operator). Returns their names, sorted.
    pub(crate) fn expire(&mut self, now: SystemTime, after: Duration) -> Vec<String> {
        let mut expired: Vec<String> = self
            .absent
            .iter()
            .filter(|(_, a)| now.duration_since(a.since).is_ok_and(|down| down >= after))
            .map(|(name, _)| name.clone())
            .collect();
        expired.sort();
        for name in &expired {
            self.absent.remove(name);
        }
        expired
    }

    /// The absent ingesters, sorted by name.
    pub(crate) fn absent(&self) -> Vec<AbsentIngester> {
        let mut absent: Vec<AbsentIngester> = self.absent.values().cloned().collect();
        absent.sort_by(|a, b| a.identity.name.cmp(&b.identity.name));
        absent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Roles;
    use std::time::Duration;

    fn node(name: &str, roles: Roles, state: NodeState, generation: u64) -> NodeIdentity {
        NodeIdentity {
            name: name.to_owned(),
            roles,
            state,
            generation,
            ..NodeIdentity::seed(([127, 0, 0, 1], 7946).into())
        }
    }

    fn ingester(name: &str, state: NodeState) -> NodeIdentity {
        node(name, Roles::INGESTER, state, 1)
    }

    fn names(l: &Lifecycle) -> Vec<String> {
        l.absent().into_iter().map(|a| a.identity.name).collect()
    }

    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    #[test]
    fn a_crashed_active_ingester_is_absent_and_a_departed_one_is_not() {
        let mut l = Lifecycle::default();
        let down = l.member_down(ingester("i-1", NodeState::Active), &[], T0);
        assert_eq!(down, Down::Absent);
        let down = l.member_down(ingester("i-2", NodeState::Leaving), &[], T0);
        assert_eq!(down, Down::Departed);
        assert_eq!(names(&l), ["i-1"]);
        assert_eq!(l.absent()[0].since, T0);
    }

    #[test]
    fn members_that_held_no_share_of_writes_are_not_counted() {
        let mut l = Lifecycle::default();
        let joining = ingester("i-1", NodeState::Joining);
        assert_eq!(l.member_down(joining, &[], T0), Down::NotCounted);
        let distributor = node("d-1", Roles::DISTRIBUTOR, NodeState::Active, 1);
        assert_eq!(l.member_down(distributor, &[], T0), Down::NotCounted);
        assert!(names(&l).is_empty());
    }

    #[test]
    fn the_old_identity_of_a_renamed_member_going_down_is_no_crash() {
        let mut l = Lifecycle::default();
        let newer = node("i-1", Roles::INGESTER, NodeState::Leaving, 2);
        let down = l.member_down(ingester("i-1", NodeState::Active), &[&newer], T0);
        assert_eq!(down, Down::Renamed);
        assert!(names(&l).is_empty());
    }

    #[test]
    fn a_restarted_ingester_under_a_new_generation_is_back_once_active_not_while_joining() {
        let mut l = Lifecycle::default();
        l.member_down(ingester("i-1", NodeState::Active), &[], T0);
        // Replaying its WAL under a new generation: still absent.
        let replaying = node("i-1", Roles::INGESTER, NodeState::Joining, 7);
        assert_eq!(l.members_up(&[&replaying]), 0);
        assert_eq!(names(&l), ["i-1"]);
        let active = node("i-1", Roles::INGESTER, NodeState::Active, 8);
        assert_eq!(l.members_up(&[&active]), 1);
        assert!(names(&l).is_empty());
    }

    #[test]
    fn forgetting_an_absent_ingester_or_a_member_leaves_nothing_counted() {
        let mut l = Lifecycle::default();
        l.member_down(ingester("i-1", NodeState::Active), &[], T0);
        assert!(l.forget("i-1", false));
        assert!(names(&l).is_empty());
        assert!(!l.forget("nobody", false));
        // A live member being forgotten: its down notice does not make it absent, once.
        assert!(!l.forget("i-2", true));
        let down = l.member_down(ingester("i-2", NodeState::Active), &[], T0);
        assert_eq!(down, Down::Forgotten);
        assert!(names(&l).is_empty());
        let down = l.member_down(ingester("i-2", NodeState::Active), &[], T0);
        assert_eq!(down, Down::Absent, "a later crash counts again");
    }

    #[test]
    fn a_peers_absent_ingesters_are_adopted_except_itself_the_returned_and_the_known() {
        let mut l = Lifecycle::default();
        l.member_down(ingester("i-1", NodeState::Active), &[], T0);
        let absent = |name: &str| AbsentIngester {
            identity: ingester(name, NodeState::Active),
            since: T0 + Duration::from_secs(9),
        };
        let back = ingester("i-3", NodeState::Active);
        let adopted = l.adopt(
            vec![absent("i-1"), absent("me"), absent("i-3"), absent("i-4")],
            "me",
            &[&back],
        );
        let adopted: Vec<String> = adopted.into_iter().map(|id| id.name).collect();
        assert_eq!(adopted, ["i-4"]);
        assert_eq!(names(&l), ["i-1", "i-4"]);
        // The one it saw itself keeps its own time.
        assert_eq!(l.absent()[0].since, T0);
    }

    #[test]
    fn an_absent_ingester_is_forgotten_on_its_own_once_down_for_the_forget_period() {
        let mut lifecycle = Lifecycle::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let a = ingester("ingester-1", NodeState::Active);
        let b = ingester("ingester-2", NodeState::Active);
        assert_eq!(lifecycle.member_down(a, &[], t0), Down::Absent);
        let later = t0 + Duration::from_secs(300);
        assert_eq!(lifecycle.member_down(b, &[], later), Down::Absent);
        let after = Duration::from_secs(900);
        assert!(lifecycle
            .expire(t0 + Duration::from_secs(899), after)
            .is_empty());
        assert_eq!(lifecycle.expire(t0 + after, after), vec!["ingester-1"]);
        assert_eq!(lifecycle.absent().len(), 1);
        // A clock that stepped back forgets nothing.
        assert!(lifecycle.expire(t0, after).is_empty());
        assert_eq!(lifecycle.expire(later + after, after), vec!["ingester-2"]);
        assert!(lifecycle.absent().is_empty());
    }
}

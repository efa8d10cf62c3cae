//! Consistent hash ring: which live conductor of a group owns which node.
//!
//! Each conductor contributes `2^partition_exponent` points (Ironic's
//! `hash_partition_exponent`, default 5). A node belongs to the first point at
//! or after its own hash, wrapping around. Removing a conductor moves only the
//! nodes it owned; every conductor computes the same ring from the same
//! membership, with no coordination.

use std::collections::BTreeMap;
use uuid::Uuid;

/// Stable 64-bit hash: FNV-1a followed by the SplitMix64 finaliser for spread.
/// Stable across processes, platforms and versions (std's hasher is not).
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// A ring over one conductor group's live conductors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashRing {
    points: BTreeMap<u64, String>,
    members: Vec<String>,
}

/// Default partitions per conductor: 2^5 = 32, as Ironic.
pub const DEFAULT_PARTITION_EXPONENT: u32 = 5;

impl HashRing {
    /// Build a ring from conductor hostnames (order and duplicates do not matter).
    pub fn new<I, S>(conductors: I, partition_exponent: u32) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut members: Vec<String> = conductors.into_iter().map(Into::into).collect();
        members.sort();
        members.dedup();
        let mut points = BTreeMap::new();
        let parts = 1u64 << partition_exponent.min(16);
        for m in &members {
            for i in 0..parts {
                let key = format!("{m}#{i}");
                points.insert(stable_hash(key.as_bytes()), m.clone());
            }
        }
        HashRing { points, members }
    }

    /// The conductors on the ring, sorted.
    pub fn members(&self) -> &[String] {
        &self.members
    }

    /// The owner of `node`, or `None` when the ring is empty.
    pub fn owner(&self, node: Uuid) -> Option<&str> {
        let h = stable_hash(node.as_bytes());
        self.points
            .range(h..)
            .next()
            .or_else(|| self.points.iter().next())
            .map(|(_, m)| m.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn nodes(n: usize) -> Vec<Uuid> {
        (0..n as u128)
            .map(|i| Uuid::from_u128(i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)))
            .collect()
    }

    #[test]
    fn empty_ring_owns_nothing() {
        assert_eq!(
            HashRing::new(Vec::<String>::new(), 5).owner(Uuid::nil()),
            None
        );
    }

    #[test]
    fn same_membership_same_owners_regardless_of_order() {
        let a = HashRing::new(["c1", "c2", "c3"], 5);
        let b = HashRing::new(["c3", "c1", "c2", "c1"], 5);
        for n in nodes(500) {
            assert_eq!(a.owner(n), b.owner(n));
        }
    }

    #[test]
    fn load_is_spread_and_removal_moves_only_the_removed_members_nodes() {
        let all = nodes(6000);
        let three = HashRing::new(["c1", "c2", "c3"], 5);
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for n in &all {
            *counts.entry(three.owner(*n).unwrap()).or_default() += 1;
        }
        for (m, c) in &counts {
            assert!(*c > 1000 && *c < 3000, "{m} owns {c} of 6000");
        }
        let two = HashRing::new(["c1", "c3"], 5);
        for n in &all {
            let before = three.owner(*n).unwrap();
            let after = two.owner(*n).unwrap();
            if before != "c2" {
                assert_eq!(before, after, "a node moved although its owner stayed");
            }
        }
    }
}

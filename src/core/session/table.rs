//! The bounded session table.
//!
//! A hash map keyed by the unordered pair of endpoints (one lookup per
//! packet, either direction), bounded by `-m`. When full, the oldest
//! session that has not completed its handshake is evicted, so a flood of
//! SYNs that never complete cannot lock real clients out.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::{IpAddr, SocketAddr};

use super::Session;

/// Unordered endpoint pair: the same key for both directions. Addresses
/// are kept as IPv6 (IPv4 mapped, so `::ffff:192.0.2.2` is `192.0.2.2`),
/// in 64-bit words: built, compared and hashed in a few instructions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    /// The lower endpoint's address (high word first), then the higher's.
    ips: [u64; 4],
    /// The lower endpoint's port, then the higher's.
    ports: [u16; 2],
}

/// An endpoint's address as a 128-bit number (IPv4 mapped) and its port.
#[inline]
fn endpoint(a: SocketAddr) -> (u128, u16) {
    let ip = match a.ip() {
        IpAddr::V4(v4) => 0xffff_0000_0000 | u128::from(v4.to_bits()),
        IpAddr::V6(v6) => v6.to_bits(),
    };
    (ip, a.port())
}

impl Key {
    #[inline]
    pub fn new(a: SocketAddr, b: SocketAddr) -> Self {
        let (a, b) = (endpoint(a), endpoint(b));
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        Key {
            ips: [
                (lo.0 >> 64) as u64,
                lo.0 as u64,
                (hi.0 >> 64) as u64,
                hi.0 as u64,
            ],
            ports: [lo.1, hi.1],
        }
    }

    /// The key of a session's connection.
    #[inline]
    fn of(s: &Session) -> Self {
        Key::new(s.client, s.server)
    }
}

impl Hash for Key {
    /// Every bit goes to the (seeded) hasher, in five words.
    #[inline]
    fn hash<H: Hasher>(&self, h: &mut H) {
        for w in self.ips {
            h.write_u64(w);
        }
        h.write_u32(u32::from(self.ports[0]) << 16 | u32::from(self.ports[1]));
    }
}

/// Why a session could not be added.
#[derive(Debug, PartialEq, Eq)]
pub enum Full {
    /// Table full of established sessions.
    Refused,
}

/// The bounded session table: a hash index of slot numbers over a slab
/// of sessions. The index holds only 4-byte slot numbers (it stays in
/// cache); a slot holds only its session, whose endpoints are its key, so
/// the key comparison reads the session, which the caller reads next
/// anyway. Sessions never move once placed.
pub struct Table {
    index: hashbrown::HashTable<u32>,
    /// Keyed with a per-process random seed: peers choose the keys.
    hasher: foldhash::fast::RandomState,
    slots: Vec<Option<Session>>,
    free: Vec<u32>,
    /// Half-open sessions in creation order, as (slot, id); stale entries
    /// (the slot since emptied or reused) are skipped.
    half_open: VecDeque<(u32, u32)>,
    max: usize,
    /// The last session looked up: packets of one conversation come in
    /// bursts (request, reply, ACK), so this saves most hash probes.
    last: Option<(Key, u32)>,
}

/// True if `slot` holds the session of `key`.
#[inline]
fn holds(slots: &[Option<Session>], slot: u32, key: &Key) -> bool {
    slots[slot as usize]
        .as_ref()
        .is_some_and(|s| Key::of(s) == *key)
}

impl Table {
    pub fn new(max: usize) -> Self {
        let cap = max.min(1 << 16);
        Table {
            index: hashbrown::HashTable::with_capacity(cap),
            hasher: foldhash::fast::RandomState::default(),
            slots: Vec::with_capacity(cap),
            free: Vec::new(),
            half_open: VecDeque::new(),
            max,
            last: None,
        }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    fn find(&self, key: &Key) -> Option<u32> {
        let hash = self.hasher.hash_one(key);
        self.index
            .find(hash, |&slot| holds(&self.slots, slot, key))
            .copied()
    }

    pub fn get_mut(&mut self, key: &Key) -> Option<&mut Session> {
        let slot = match self.last {
            Some((k, slot)) if k == *key => slot,
            _ => {
                let slot = self.find(key)?;
                self.last = Some((*key, slot));
                slot
            }
        };
        self.slots[slot as usize].as_mut()
    }

    fn is_live_half_open(&self, slot: u32, id: u32) -> bool {
        self.slots[slot as usize]
            .as_ref()
            .is_some_and(|s| s.id == id && s.half_open())
    }

    pub fn remove(&mut self, key: &Key) -> Option<Session> {
        let slot = self.find(key)?;
        self.remove_slot(slot)
    }

    /// Take the session out of `slot` and its index entry.
    fn remove_slot(&mut self, slot: u32) -> Option<Session> {
        let key = Key::of(self.slots[slot as usize].as_ref()?);
        let hash = self.hasher.hash_one(key);
        if let Ok(entry) = self.index.find_entry(hash, |&s| s == slot) {
            entry.remove();
        }
        if self.last.is_some_and(|(_, s)| s == slot) {
            self.last = None;
        }
        self.free.push(slot);
        self.slots[slot as usize].take()
    }

    /// Insert a new half-open session; when the table is full, evict the
    /// oldest half-open one (returned, so its rules can be removed).
    /// `key` is the session's own (`Key::new(s.client, s.server)`).
    pub fn insert(&mut self, key: Key, s: Session) -> Result<Option<Session>, Full> {
        debug_assert_eq!(key, Key::of(&s));
        let mut evicted = None;
        if self.index.len() >= self.max {
            evicted = self.evict_oldest_half_open();
            if evicted.is_none() {
                return Err(Full::Refused);
            }
        }
        let id = s.id;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(s);
                slot
            }
            None => {
                self.slots.push(Some(s));
                (self.slots.len() - 1) as u32
            }
        };
        self.half_open.push_back((slot, id));
        let (hasher, slots) = (&self.hasher, &self.slots);
        let hash = hasher.hash_one(key);
        self.index.insert_unique(hash, slot, |&s| {
            hasher.hash_one(Key::of(
                slots[s as usize].as_ref().expect("indexed slot is full"),
            ))
        });
        if self.half_open.len() > 2 * self.max + 16 {
            self.compact_half_open();
        }
        Ok(evicted)
    }

    fn compact_half_open(&mut self) {
        let mut q = std::mem::take(&mut self.half_open);
        q.retain(|&(slot, id)| self.is_live_half_open(slot, id));
        self.half_open = q;
    }

    fn evict_oldest_half_open(&mut self) -> Option<Session> {
        while let Some((slot, id)) = self.half_open.pop_front() {
            if self.is_live_half_open(slot, id) {
                return self.remove_slot(slot);
            }
        }
        None
    }

    /// Remove and hand to `out` every session for which `expired` says so.
    pub fn drain_where(
        &mut self,
        mut expired: impl FnMut(&mut Session) -> bool,
        mut out: impl FnMut(Session),
    ) {
        for slot in 0..self.slots.len() {
            let Some(s) = self.slots[slot].as_mut() else {
                continue;
            };
            if expired(s)
                && let Some(s) = self.remove_slot(slot as u32)
            {
                out(s);
            }
        }
        self.compact_half_open();
    }

    /// Every session, for periodic work.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Session> {
        self.slots.iter_mut().flatten()
    }

    /// Remove everything.
    pub fn drain(&mut self) -> impl Iterator<Item = Session> + '_ {
        self.half_open.clear();
        self.last = None;
        self.index.clear();
        self.free.clear();
        self.slots.drain(..).flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::session::Phase;

    fn sess(id: u32, port: u16) -> (Key, Session) {
        let c: SocketAddr = format!("192.0.2.2:{port}").parse().unwrap();
        let s: SocketAddr = "198.51.100.2:21".parse().unwrap();
        (
            Key::new(c, s),
            Session::new(id, c, s, &crate::core::session::tests::syn(c, s, 1), 0),
        )
    }

    proptest::proptest! {
        /// The table agrees with a plain map under any mix of inserts,
        /// lookups and removals (eviction disabled by a large bound).
        #[test]
        fn table_matches_a_model(ops in proptest::collection::vec((0u8..3, 0u16..64), 0..400)) {
            let mut t = Table::new(1 << 20);
            let mut model = std::collections::HashMap::new();
            for (i, (op, port)) in ops.into_iter().enumerate() {
                let (k, s) = sess(i as u32, 1000 + port);
                match op {
                    0 if !model.contains_key(&k) => {
                        t.insert(k, s).unwrap();
                        model.insert(k, i as u32);
                    }
                    1 => proptest::prop_assert_eq!(t.get_mut(&k).map(|s| s.id), model.get(&k).copied()),
                    2 => proptest::prop_assert_eq!(t.remove(&k).map(|s| s.id), model.remove(&k)),
                    _ => {}
                }
                proptest::prop_assert_eq!(t.len(), model.len());
            }
        }
    }

    #[test]
    fn lookup_cache_never_returns_a_removed_session() {
        let mut t = Table::new(4);
        let (ka, a) = sess(1, 1001);
        t.insert(ka, a).unwrap();
        assert_eq!(t.get_mut(&ka).unwrap().id, 1);
        t.remove(&ka);
        let (kb, b) = sess(2, 1002);
        t.insert(kb, b).unwrap(); // reuses the freed slot
        assert!(t.get_mut(&ka).is_none());
        assert_eq!(t.get_mut(&kb).unwrap().id, 2);
    }

    #[test]
    fn key_is_direction_free() {
        let a: SocketAddr = "192.0.2.2:4000".parse().unwrap();
        let b: SocketAddr = "198.51.100.2:21".parse().unwrap();
        assert_eq!(Key::new(a, b), Key::new(b, a));
    }

    #[test]
    fn mapped_address_is_the_ipv4_endpoint() {
        let v4: SocketAddr = "192.0.2.2:4000".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:192.0.2.2]:4000".parse().unwrap();
        let b: SocketAddr = "198.51.100.2:21".parse().unwrap();
        assert_eq!(Key::new(v4, b), Key::new(b, mapped));
        let other: SocketAddr = "[::192.0.2.2]:4000".parse().unwrap();
        assert_ne!(Key::new(v4, b), Key::new(other, b));
        let port: SocketAddr = "192.0.2.2:4001".parse().unwrap();
        assert_ne!(Key::new(v4, b), Key::new(port, b));
    }

    #[test]
    fn evicted_slot_reused_by_a_new_session() {
        let mut t = Table::new(1);
        let (k1, s1) = sess(1, 1001);
        t.insert(k1, s1).unwrap();
        let (k2, s2) = sess(2, 1002);
        assert_eq!(t.insert(k2, s2).unwrap().unwrap().id, 1);
        assert!(t.get_mut(&k1).is_none());
        assert_eq!(t.get_mut(&k2).unwrap().id, 2);
        // The queue's entry for #1 names the slot #2 now holds: stale.
        let (k3, s3) = sess(3, 1003);
        assert_eq!(t.insert(k3, s3).unwrap().unwrap().id, 2);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn full_table_evicts_half_open_first() {
        let mut t = Table::new(2);
        let (k1, mut s1) = sess(1, 1001);
        s1.phase = Phase::Established;
        t.insert(k1, s1).unwrap();
        let (k2, s2) = sess(2, 1002);
        t.insert(k2, s2).unwrap();
        let (k3, s3) = sess(3, 1003);
        let ev = t.insert(k3, s3).unwrap().unwrap();
        assert_eq!(ev.id, 2);
        // Now the half-open #3 goes when #4 comes, the established #1 stays.
        let (k4, s4) = sess(4, 1004);
        assert_eq!(t.insert(k4, s4).unwrap().unwrap().id, 3);
        assert!(t.get_mut(&k1).is_some());
        t.get_mut(&k4).unwrap().phase = Phase::Established;
        let (k5, s5) = sess(5, 1005);
        assert!(matches!(t.insert(k5, s5), Err(Full::Refused)));
    }
}

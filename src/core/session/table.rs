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
#[derive(Clone, Copy, Debug, Eq, PartialOrd, Ord)]
pub struct Key {
    /// The lower endpoint's address (high word first), then the higher's.
    ips: [u64; 4],
    /// The lower endpoint's port (high half), then the higher's.
    ports: u32,
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
            ports: u32::from(lo.1) << 16 | u32::from(hi.1),
        }
    }

    /// The key of a session's connection.
    #[inline]
    fn of(s: &Session) -> Self {
        Key::new(s.client, s.server)
    }
}

impl PartialEq for Key {
    /// Word by word: a key just built sits in the store buffer as 8-byte
    /// stores, which wider loads could not take from it (they would wait
    /// for the stores to reach the cache).
    #[inline]
    fn eq(&self, o: &Key) -> bool {
        self.ips[0] == o.ips[0]
            && self.ips[1] == o.ips[1]
            && self.ips[2] == o.ips[2]
            && self.ips[3] == o.ips[3]
            && self.ports == o.ports
    }
}

impl Hash for Key {
    /// Every bit goes to the (seeded) hasher, in five words.
    #[inline]
    fn hash<H: Hasher>(&self, h: &mut H) {
        for w in self.ips {
            h.write_u64(w);
        }
        h.write_u32(self.ports);
    }
}

/// The hash index: slot numbers by key hash, open addressing with linear
/// probing over 8-byte cells. A cell holds the low 32 bits of its key's
/// hash (its home cell and a fingerprint) and the slot number plus one
/// (0: empty), so a lookup reads one cache line of the index, where a
/// control-byte table reads two (control bytes, then entries), before the
/// session itself. Removal shifts later cells back (no tombstones), and at
/// most three quarters of the cells are used.
struct Index {
    cells: Vec<u64>,
    len: usize,
}

impl Index {
    fn with_capacity(n: usize) -> Self {
        Index {
            cells: vec![0; (n * 8 / 7 + 1).next_power_of_two().max(16)],
            len: 0,
        }
    }

    #[inline]
    fn mask(&self) -> usize {
        self.cells.len() - 1
    }

    /// The cell of the entry with `hash` whose slot satisfies `eq`.
    #[inline]
    fn find(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<usize> {
        let fp = hash as u32;
        let mask = self.mask();
        let mut i = fp as usize & mask;
        loop {
            let c = self.cells[i];
            if c == 0 {
                return None;
            }
            if (c >> 32) as u32 == fp && eq(c as u32 - 1) {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// The slot in cell `i`.
    #[inline]
    fn slot(&self, i: usize) -> u32 {
        self.cells[i] as u32 - 1
    }

    /// Add an entry (its key is not in the index).
    fn insert(&mut self, hash: u64, slot: u32) {
        if (self.len + 1) * 8 > self.cells.len() * 7 {
            let grown = vec![0; self.cells.len() * 2];
            let old = std::mem::replace(&mut self.cells, grown);
            for c in old.into_iter().filter(|&c| c != 0) {
                self.place(c);
            }
        }
        self.place((hash & 0xffff_ffff) << 32 | u64::from(slot + 1));
        self.len += 1;
    }

    fn place(&mut self, cell: u64) {
        let mask = self.mask();
        let mut i = (cell >> 32) as usize & mask;
        while self.cells[i] != 0 {
            i = (i + 1) & mask;
        }
        self.cells[i] = cell;
    }

    /// Empty cell `i`, moving back the entries of its probe run that may
    /// no longer be found past the hole.
    fn remove(&mut self, mut i: usize) {
        let mask = self.mask();
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let c = self.cells[j];
            if c == 0 {
                break;
            }
            let home = (c >> 32) as usize & mask;
            // The entry at j stays if its home lies cyclically in (i, j].
            if i.wrapping_sub(home) & mask < j.wrapping_sub(home) & mask {
                self.cells[i] = c;
                i = j;
            }
        }
        self.cells[i] = 0;
        self.len -= 1;
    }

    fn clear(&mut self) {
        self.cells.fill(0);
        self.len = 0;
    }
}

/// Why a session could not be added.
#[derive(Debug, PartialEq, Eq)]
pub enum Full {
    /// Table full of established sessions.
    Refused,
}

/// The bounded session table: a hash index of slot numbers over a slab
/// of sessions. The index holds only 8-byte cells (it stays in cache); a
/// slot holds only its session, whose endpoints are its key, so the key
/// comparison reads the session, which the caller reads next anyway: a
/// session's `client` and `server` must not change while it is in the
/// table (swapping the two keeps the key). Sessions never move once placed.
pub struct Table {
    index: Index,
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
            index: Index::with_capacity(cap),
            hasher: foldhash::fast::RandomState::default(),
            slots: Vec::with_capacity(cap),
            free: Vec::new(),
            half_open: VecDeque::new(),
            max,
            last: None,
        }
    }

    pub fn len(&self) -> usize {
        self.index.len
    }

    pub fn is_empty(&self) -> bool {
        self.index.len == 0
    }

    #[inline]
    fn find(&self, key: &Key) -> Option<u32> {
        let hash = self.hasher.hash_one(key);
        let cell = self
            .index
            .find(hash, |slot| holds(&self.slots, slot, key))?;
        Some(self.index.slot(cell))
    }

    #[inline]
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
        let cell = self.index.find(hash, |s| s == slot);
        debug_assert!(cell.is_some(), "session endpoints changed in the table");
        if let Some(cell) = cell {
            self.index.remove(cell);
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
        if self.index.len >= self.max {
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
        self.index.insert(self.hasher.hash_one(key), slot);
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

    proptest::proptest! {
        /// The index finds every entry it holds and no other, however
        /// entries collide (hashes from a small range share home cells and
        /// wrap around the end) and in whatever order they are removed.
        #[test]
        fn index_matches_a_model(ops in proptest::collection::vec((proptest::bool::ANY, 0u64..40), 0..300)) {
            let mut ix = Index::with_capacity(4);
            let mut model = std::collections::HashMap::new();
            for (slot, (add, h)) in ops.into_iter().enumerate() {
                // Hashes near the top of the range wrap past the last cell.
                let hash = h.wrapping_sub(8) & 0xffff_ffff;
                if add {
                    ix.insert(hash, slot as u32);
                    model.insert(slot as u32, hash);
                } else if let Some((&victim, &vh)) = model.iter().min_by_key(|(s, _)| (**s as u64 * h) % 7) {
                    let cell = ix.find(vh, |s| s == victim).expect("held");
                    ix.remove(cell);
                    model.remove(&victim);
                }
                proptest::prop_assert_eq!(ix.len, model.len());
                for (&slot, &hash) in &model {
                    let cell = ix.find(hash, |s| s == slot);
                    proptest::prop_assert_eq!(cell.map(|c| ix.slot(c)), Some(slot));
                }
                proptest::prop_assert_eq!(ix.find(hash ^ 1 << 20, |_| true), None);
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

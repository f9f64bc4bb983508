//! Control-connection sessions: the table, the handshake and per-direction
//! TCP sequence tracking.
//!
//! A session starts with a client SYN (the SYN's sender is the client),
//! learns both initial sequence numbers from the handshake and from then on
//! accepts only in-order bytes in each direction: a retransmission is not
//! delivered twice, and a segment that does not continue the stream (a
//! blind injection with guessed sequence numbers) is ignored and counted.
//! That closes the hole the original admitted: it trusted any segment of
//! the 4-tuple.
//!
//! A capture that loses a segment the host did receive would stall a
//! direction forever, so a gap is bridged, but only on proof: the receiver,
//! in a segment that is itself in sequence, acknowledged bytes up to at
//! least where the next segment starts. Reassembly then restarts at the
//! next end of line.
//!
//! The table is a hash map keyed by the unordered pair of endpoints (one
//! lookup per packet, either direction), bounded by `-m`. When full, the
//! oldest session that has not completed its handshake is evicted, so a
//! flood of SYNs that never complete cannot lock real clients out.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};

use crate::core::ftp::{Matcher, Negotiation};
use crate::core::policy::RuleSet;
use crate::core::reassembly::LineBuf;

/// How far past the proven end of a stream a gap may be bridged.
const MAX_GAP: u32 = 1 << 20;

/// Sequence-number difference `a - b` on the 32-bit circle.
#[inline]
pub fn seq_diff(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

/// What [`Stream::deliver`] decided about a segment's payload.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery<'a> {
    /// New in-order bytes (a retransmitted prefix already trimmed).
    Data(&'a [u8]),
    /// Bytes after a proven capture gap; reassembly must restart.
    AfterGap(&'a [u8]),
    /// Nothing new (empty, or entirely retransmitted).
    Nothing,
    /// Does not continue the stream: ignored.
    OutOfWindow,
}

/// One direction of a control connection.
#[derive(Debug, Default)]
pub struct Stream {
    /// Sequence number of the next byte we expect.
    pub next: u32,
    /// Highest sequence number the receiver proved it got (from its ACKs).
    acked: u32,
    /// Line reassembly of this direction.
    pub lines: LineBuf,
}

impl Stream {
    /// A stream whose first data byte has sequence number `first`.
    pub fn new(first: u32) -> Self {
        Stream {
            next: first,
            acked: first,
            lines: LineBuf::default(),
        }
    }

    /// True if a segment of `len` bytes starting at `seq` is plausible for
    /// this side: it continues the stream, starts inside a proven gap, or is
    /// a retransmission that reaches new bytes.
    pub fn plausible(&self, seq: u32, len: usize) -> bool {
        let off = seq_diff(seq, self.next);
        off == 0
            || (off > 0 && seq_diff(self.acked, seq) >= 0)
            || (off < 0 && -i64::from(off) < len as i64)
    }

    /// True if a segment of `len` bytes starting at `seq` ends exactly where
    /// the stream is now (so its FIN is the next thing in sequence).
    pub fn ends_here(&self, seq: u32, len: usize) -> bool {
        seq.wrapping_add(len as u32) == self.next
    }

    /// The receiver acknowledged up to `ack`; only call this for segments
    /// that are themselves [`plausible`](Self::plausible) on their side.
    pub fn peer_acked(&mut self, ack: u32) {
        let ahead = seq_diff(ack, self.next);
        if ahead > 0 && (ahead as u32) <= MAX_GAP && seq_diff(ack, self.acked) > 0 {
            self.acked = ack;
        }
    }

    /// Decide what of `payload`, starting at `seq`, is new stream data.
    pub fn deliver<'a>(&mut self, seq: u32, payload: &'a [u8]) -> Delivery<'a> {
        if payload.is_empty() {
            return Delivery::Nothing;
        }
        let off = seq_diff(seq, self.next);
        let len = payload.len() as i64;
        if off == 0 {
            self.next = self.next.wrapping_add(payload.len() as u32);
            return Delivery::Data(payload);
        }
        if off < 0 {
            let overlap = -(off as i64);
            if overlap > MAX_GAP as i64 {
                return Delivery::OutOfWindow;
            }
            if overlap >= len {
                return Delivery::Nothing;
            }
            let fresh = &payload[overlap as usize..];
            self.next = self.next.wrapping_add(fresh.len() as u32);
            return Delivery::Data(fresh);
        }
        if seq_diff(self.acked, seq) >= 0 {
            // The receiver has every byte before `seq`: the capture lost them.
            self.next = seq.wrapping_add(payload.len() as u32);
            self.lines.resync();
            return Delivery::AfterGap(payload);
        }
        Delivery::OutOfWindow
    }
}

/// Where a session is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Client SYN seen.
    SynSent { client_isn: u32 },
    /// Server SYN/ACK seen and the firewall vouched for the connection.
    Verified,
    /// Client completed the handshake.
    Established,
}

/// One FTP control connection.
#[derive(Debug)]
pub struct Session {
    /// `#N` in the log.
    pub id: u32,
    pub client: SocketAddr,
    pub server: SocketAddr,
    /// Client address before NAT, from the state table.
    pub real_client: IpAddr,
    pub phase: Phase,
    /// Capture time of the SYN, microseconds.
    pub created: u64,
    /// Capture time of the last packet, microseconds.
    pub last_seen: u64,
    /// Client to server.
    pub c2s: Stream,
    /// Server to client.
    pub s2c: Stream,
    pub ftp: Matcher,
    /// The negotiation whose rules are committed now; the rules themselves
    /// follow from it and the session's addresses ([`Session::rules`]).
    pub current: Option<Negotiation>,
    /// When `rules` expire, microseconds.
    pub rules_expire: u64,
}

impl Session {
    pub fn new(id: u32, client: SocketAddr, server: SocketAddr, client_isn: u32, now: u64) -> Self {
        Session {
            id,
            client,
            server,
            real_client: client.ip(),
            phase: Phase::SynSent { client_isn },
            created: now,
            last_seen: now,
            c2s: Stream::default(),
            s2c: Stream::default(),
            ftp: Matcher::default(),
            current: None,
            rules_expire: 0,
        }
    }

    /// The rules committed for `current`.
    pub fn rules(&self) -> RuleSet {
        self.current
            .and_then(|n| {
                crate::core::policy::rules(n, self.client.ip(), self.server.ip(), self.real_client)
                    .ok()
            })
            .unwrap_or(RuleSet::EMPTY)
    }

    /// True until the client completed the handshake.
    pub fn half_open(&self) -> bool {
        self.phase != Phase::Established
    }
}

/// Unordered endpoint pair: the same key for both directions. Compact
/// (addresses as 16 bytes, IPv4 mapped) so hash probes stay in cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    lo: ([u8; 16], u16),
    hi: ([u8; 16], u16),
}

fn endpoint(a: SocketAddr) -> ([u8; 16], u16) {
    let ip = match a.ip() {
        // The IPv4-mapped form, byte by byte (cheaper than to_ipv6_mapped).
        IpAddr::V4(v4) => {
            let mut b = [0u8; 16];
            b[10] = 0xff;
            b[11] = 0xff;
            b[12..].copy_from_slice(&v4.octets());
            b
        }
        IpAddr::V6(v6) => v6.octets(),
    };
    (ip, a.port())
}

impl Key {
    pub fn new(a: SocketAddr, b: SocketAddr) -> Self {
        let (a, b) = (endpoint(a), endpoint(b));
        if a <= b {
            Key { lo: a, hi: b }
        } else {
            Key { lo: b, hi: a }
        }
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
/// cache); the key comparison reads the slot, which the caller reads next
/// anyway. Sessions never move once placed.
pub struct Table {
    index: hashbrown::HashTable<u32>,
    /// Keyed with a per-process random seed: peers choose the keys.
    hasher: foldhash::fast::RandomState,
    slots: Vec<Option<(Key, Session)>>,
    free: Vec<u32>,
    /// Half-open sessions in creation order (may hold stale entries).
    half_open: VecDeque<(Key, u32)>,
    max: usize,
    /// The last session looked up: packets of one conversation come in
    /// bursts (request, reply, ACK), so this saves most hash probes.
    last: Option<(Key, u32)>,
}

/// True if `slot` holds the session of `key`.
fn holds(slots: &[Option<(Key, Session)>], slot: u32, key: &Key) -> bool {
    slots[slot as usize].as_ref().is_some_and(|(k, _)| k == key)
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
        self.slots[slot as usize].as_mut().map(|(_, s)| s)
    }

    fn is_live_half_open(&self, key: &Key, id: u32) -> bool {
        self.find(key)
            .and_then(|slot| self.slots[slot as usize].as_ref())
            .is_some_and(|(_, s)| s.id == id && s.half_open())
    }

    pub fn remove(&mut self, key: &Key) -> Option<Session> {
        let hash = self.hasher.hash_one(key);
        let slots = &self.slots;
        let slot = self
            .index
            .find_entry(hash, |&slot| holds(slots, slot, key))
            .ok()?
            .remove()
            .0;
        if self.last.is_some_and(|(k, _)| k == *key) {
            self.last = None;
        }
        self.free.push(slot);
        self.slots[slot as usize].take().map(|(_, s)| s)
    }

    /// Insert a new half-open session; when the table is full, evict the
    /// oldest half-open one (returned, so its rules can be removed).
    pub fn insert(&mut self, key: Key, s: Session) -> Result<Option<Session>, Full> {
        let mut evicted = None;
        if self.index.len() >= self.max {
            evicted = self.evict_oldest_half_open();
            if evicted.is_none() {
                return Err(Full::Refused);
            }
        }
        self.half_open.push_back((key, s.id));
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some((key, s));
                slot
            }
            None => {
                self.slots.push(Some((key, s)));
                (self.slots.len() - 1) as u32
            }
        };
        let (hasher, slots) = (&self.hasher, &self.slots);
        let hash = hasher.hash_one(key);
        self.index.insert_unique(hash, slot, |&s| {
            hasher.hash_one(
                slots[s as usize]
                    .as_ref()
                    .map(|(k, _)| *k)
                    .expect("indexed slot is full"),
            )
        });
        if self.half_open.len() > 2 * self.max + 16 {
            self.compact_half_open();
        }
        Ok(evicted)
    }

    fn compact_half_open(&mut self) {
        let mut q = std::mem::take(&mut self.half_open);
        q.retain(|(k, id)| self.is_live_half_open(k, *id));
        self.half_open = q;
    }

    fn evict_oldest_half_open(&mut self) -> Option<Session> {
        while let Some((key, id)) = self.half_open.pop_front() {
            if self.is_live_half_open(&key, id) {
                return self.remove(&key);
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
            let Some((key, s)) = self.slots[slot].as_mut() else {
                continue;
            };
            if expired(s) {
                let key = *key;
                if let Some(s) = self.remove(&key) {
                    out(s);
                }
            }
        }
        self.compact_half_open();
    }

    /// Every session, for periodic work.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Session> {
        self.slots.iter_mut().flatten().map(|(_, s)| s)
    }

    /// Remove everything.
    pub fn drain(&mut self) -> impl Iterator<Item = Session> + '_ {
        self.half_open.clear();
        self.last = None;
        self.index.clear();
        self.free.clear();
        self.slots.drain(..).flatten().map(|(_, s)| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_retransmit_and_overlap() {
        let mut s = Stream::new(1000);
        assert_eq!(s.deliver(1000, b"PAS"), Delivery::Data(b"PAS"));
        assert_eq!(s.deliver(1000, b"PAS"), Delivery::Nothing);
        assert_eq!(s.deliver(1001, b"ASV\r\n"), Delivery::Data(b"V\r\n"));
        assert_eq!(s.next, 1006);
    }

    #[test]
    fn blind_injection_is_ignored() {
        let mut s = Stream::new(1000);
        assert_eq!(
            s.deliver(5000, b"PORT 1,2,3,4,5,6\r\n"),
            Delivery::OutOfWindow
        );
        assert_eq!(
            s.deliver(1000u32.wrapping_sub(3_000_000), b"x"),
            Delivery::OutOfWindow
        );
        assert_eq!(s.next, 1000);
    }

    #[test]
    fn gap_is_bridged_only_with_proof() {
        let mut s = Stream::new(1000);
        assert_eq!(s.deliver(1010, b"PASV\r\n"), Delivery::OutOfWindow);
        s.peer_acked(1016);
        assert!(s.plausible(1010, 6));
        // A retransmission counts only if it reaches bytes not seen yet.
        assert!(s.plausible(995, 6) && !s.plausible(990, 10));
        assert_eq!(
            s.deliver(1010, b"PASV\r\n"),
            Delivery::AfterGap(b"PASV\r\n")
        );
        assert_eq!(s.next, 1016);
        // An ack beyond the bridgeable distance proves nothing.
        s.peer_acked(1016 + MAX_GAP + 1);
        assert_eq!(s.deliver(1016 + 100, b"x"), Delivery::OutOfWindow);
    }

    #[test]
    fn wraparound() {
        let mut s = Stream::new(u32::MAX - 1);
        assert_eq!(s.deliver(u32::MAX - 1, b"abcd"), Delivery::Data(b"abcd"));
        assert_eq!(s.next, 2);
        assert_eq!(s.deliver(0, b"cdef"), Delivery::Data(b"ef"));
    }

    fn sess(id: u32, port: u16) -> (Key, Session) {
        let c: SocketAddr = format!("192.0.2.2:{port}").parse().unwrap();
        let s: SocketAddr = "198.51.100.2:21".parse().unwrap();
        (Key::new(c, s), Session::new(id, c, s, 1, 0))
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

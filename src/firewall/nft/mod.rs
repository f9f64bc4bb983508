//! The Linux backend: nftables set elements over netlink, conntrack for the
//! state check.
//!
//! The admin owns the ruleset. In the table given by `-T` (default
//! `inet filter`) they declare two sets with concatenated keys and a rule
//! that accepts new connections matching them:
//!
//! ```text
//! set ftpsesame4 { type ipv4_addr . ipv4_addr . inet_service; flags timeout; }
//! set ftpsesame6 { type ipv6_addr . ipv6_addr . inet_service; flags timeout; }
//! ip saddr . ip daddr . tcp dport @ftpsesame4 ct state new accept
//! ```
//!
//! The daemon only adds and deletes elements `src . dst . port`, each with
//! the rule timeout, so holes close by themselves even if it dies.
//!
//! A commit races the client's data connection, so it is one nfnetlink
//! batch written into a reused buffer and sent with one `sendto`:
//!
//! ```text
//! NFNL_MSG_BATCH_BEGIN              res_id = NFNL_SUBSYS_NFTABLES
//! NFT_MSG_DELSETELEM  (one per element, so a failure names its element)
//!     NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET,
//!     NFTA_SET_ELEM_LIST_ELEMENTS { NFTA_LIST_ELEM { NFTA_SET_ELEM_KEY { NFTA_DATA_VALUE } } }
//! NFT_MSG_NEWSETELEM  (one per set, all its new elements, each with NFTA_SET_ELEM_TIMEOUT ms)
//! NFNL_MSG_BATCH_END
//! ```
//!
//! Only the last message asks for an ACK; the kernel reports errors of the
//! others anyway, so reading until that ACK (or an error on BATCH_BEGIN)
//! collects the whole outcome. The batch is a transaction: either all of it
//! applies or none. A key is the fields back to back, each padded to 4
//! bytes: `saddr(4|16) daddr(4|16) port(2, big-endian) 0 0`.
//!
//! Deleting an element that is already gone (expired, set flushed) fails
//! the batch with ENOENT on that message; such deletes are dropped and the
//! batch is sent again. Two sessions may want the same element, so the
//! backend keeps a count per live element and deletes only at zero.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::core::log::Level;
use crate::core::rule::Rule;
use crate::firewall::{Error, Firewall, State};
use crate::logmsg;
use conntrack::Conntrack;
use netlink::{Attrs, MsgBuf, Socket};

pub mod conntrack;
pub mod netlink;

/// Set holding IPv4 holes.
pub const SET4: &str = "ftpsesame4";
/// Set holding IPv6 holes.
pub const SET6: &str = "ftpsesame6";

const NFT_MSG_NEWTABLE: u8 = 0;
const NFT_MSG_GETTABLE: u8 = 1;
const NFT_MSG_NEWSET: u8 = 9;
const NFT_MSG_GETSET: u8 = 10;
const NFT_MSG_NEWSETELEM: u8 = 12;
const NFT_MSG_DELSETELEM: u8 = 14;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
const NFTA_DATA_VALUE: u16 = 1;

const NFT_SET_CONSTANT: u32 = 0x2;
const NFT_SET_INTERVAL: u32 = 0x4;
const NFT_SET_MAP: u32 = 0x8;
const NFT_SET_TIMEOUT: u32 = 0x10;
const NFT_SET_OBJECT: u32 = 0x40;

/// nft's user-space type ids (datatype.h) and how it packs a concatenation:
/// each field shifts the previous ones left by TYPE_BITS.
const TYPE_IPADDR: u32 = 7;
const TYPE_IP6ADDR: u32 = 8;
const TYPE_INET_SERVICE: u32 = 13;
const TYPE_BITS: u32 = 6;

const fn concat3(a: u32, b: u32, c: u32) -> u32 {
    (((a << TYPE_BITS) | b) << TYPE_BITS) | c
}

/// What each set must look like: name, nft key type, key length in bytes,
/// and the declaration to print when it does not.
struct SetSpec {
    name: &'static str,
    key_type: u32,
    key_len: u32,
    decl: &'static str,
}

const SPEC4: SetSpec = SetSpec {
    name: SET4,
    key_type: concat3(TYPE_IPADDR, TYPE_IPADDR, TYPE_INET_SERVICE),
    key_len: 4 + 4 + 4,
    decl: "set ftpsesame4 { type ipv4_addr . ipv4_addr . inet_service; flags timeout; }",
};

const SPEC6: SetSpec = SetSpec {
    name: SET6,
    key_type: concat3(TYPE_IP6ADDR, TYPE_IP6ADDR, TYPE_INET_SERVICE),
    key_len: 16 + 16 + 4,
    decl: "set ftpsesame6 { type ipv6_addr . ipv6_addr . inet_service; flags timeout; }",
};

/// Deletes per batch in `flush`, so the kernel's error answers for a
/// batch fit the socket's receive buffer.
const FLUSH_CHUNK: usize = 64;

/// A pending delete: the sequence number of its message in the current
/// batch, and `gone` once the kernel said the element is not there.
#[derive(Clone, Copy)]
struct Del {
    rule: Rule,
    seq: u32,
    gone: bool,
}

/// A rule touched by a replace, with the count it will have afterwards.
#[derive(Clone, Copy)]
struct Change {
    rule: Rule,
    count: u32,
}

/// The nftables backend. Owns two netlink sockets (nftables, conntrack) in
/// the network namespace it was opened in.
pub struct Nft {
    sock: Socket,
    msg: MsgBuf,
    ct: Conntrack,
    family: u8,
    family_name: String,
    table: String,
    timeout_ms: u64,
    /// Elements this process added and believes present, with the number of
    /// session rules that want each.
    live: HashMap<Rule, u32>,
    // Scratch space reused by every commit.
    changes: Vec<Change>,
    dels: Vec<Del>,
    adds: Vec<Rule>,
    flushing: Vec<Rule>,
}

/// How a batch ended, when it did not succeed.
struct Failure {
    errno: i32,
    /// What the failing message did, for the log.
    what: &'static str,
    set: &'static str,
}

impl Nft {
    /// Open netlink sockets and check that table `family`/`table` holds
    /// sets ftpsesame4 and ftpsesame6 with the right key types and the
    /// timeout flag. The error text says what is wrong and prints the nft
    /// lines to add. Elements get `timeout` (none if zero).
    pub fn open(family: &str, table: &str, timeout: Duration) -> Result<Nft, Error> {
        let fam = family_number(family).ok_or_else(|| {
            Error(format!(
                "unknown nftables family `{family}` (use inet, ip, ip6, bridge, netdev or arp)"
            ))
        })?;
        let sock = Socket::open().map_err(|e| Error(format!("nftables netlink socket: {e}")))?;
        let ct = Conntrack::open().map_err(|e| Error(format!("conntrack netlink socket: {e}")))?;
        let mut nft = Nft {
            sock,
            msg: MsgBuf::new(),
            ct,
            family: fam,
            family_name: family.to_string(),
            table: table.to_string(),
            timeout_ms: timeout.as_millis().min(u64::MAX as u128) as u64,
            live: HashMap::with_capacity(64),
            changes: Vec::with_capacity(16),
            dels: Vec::with_capacity(FLUSH_CHUNK),
            adds: Vec::with_capacity(16),
            flushing: Vec::new(),
        };
        if let Some(problem) = nft.check()? {
            return Err(Error(format!("{problem}\n{}", nft.advice())));
        }
        Ok(nft)
    }

    /// Inspect the table and both sets: `Ok(Some(problem))` when they are
    /// not as required, `Err` when the kernel could not be asked.
    fn check(&mut self) -> Result<Option<String>, Error> {
        let where_ = format!("table {} {}", self.family_name, self.table);
        match self.get_table() {
            Ok(true) => {}
            Ok(false) => return Ok(Some(format!("nftables: {where_} does not exist"))),
            Err(e) => return Err(self.kernel_error("cannot read", &where_, e)),
        }
        for spec in [&SPEC4, &SPEC6] {
            let set = match self.get_set(spec.name) {
                Ok(Some(set)) => set,
                Ok(None) => {
                    return Ok(Some(format!(
                        "nftables: set {} not found in {where_}",
                        spec.name
                    )));
                }
                Err(e) => {
                    return Err(self.kernel_error("cannot read set", spec.name, e));
                }
            };
            if set.key_type != spec.key_type || set.key_len != spec.key_len {
                return Ok(Some(format!(
                    "nftables: set {} in {where_} has the wrong key type \
                     (want {}; delete it with `nft delete set {} {} {}` and declare it again)",
                    spec.name,
                    &spec.decl
                        [spec.decl.find("type ").unwrap_or(0)..spec.decl.find(';').unwrap_or(0)],
                    self.family_name,
                    self.table,
                    spec.name
                )));
            }
            if set.flags & NFT_SET_TIMEOUT == 0 {
                return Ok(Some(format!(
                    "nftables: set {} in {where_} lacks `flags timeout`",
                    spec.name
                )));
            }
            if set.flags & (NFT_SET_CONSTANT | NFT_SET_INTERVAL | NFT_SET_MAP | NFT_SET_OBJECT) != 0
            {
                return Ok(Some(format!(
                    "nftables: set {} in {where_} must be a plain set (no map, interval or constant flags)",
                    spec.name
                )));
            }
        }
        Ok(None)
    }

    /// The lines an admin adds to make `open` succeed.
    fn advice(&self) -> String {
        let (f, t) = (&self.family_name, &self.table);
        format!(
            "ftpsesame needs, in table {f} {t} (e.g. in /etc/nftables.conf):\n\
             \x20   {}\n\
             \x20   {}\n\
             and rules accepting new connections that match them, such as:\n\
             \x20   ip saddr . ip daddr . tcp dport @ftpsesame4 ct state new accept\n\
             \x20   ip6 saddr . ip6 daddr . tcp dport @ftpsesame6 ct state new accept\n\
             or, on the running system:\n\
             \x20   nft add table {f} {t}\n\
             \x20   nft add set {f} {t} ftpsesame4 '{{ type ipv4_addr . ipv4_addr . inet_service; flags timeout; }}'\n\
             \x20   nft add set {f} {t} ftpsesame6 '{{ type ipv6_addr . ipv6_addr . inet_service; flags timeout; }}'",
            SPEC4.decl, SPEC6.decl
        )
    }

    fn kernel_error(&self, doing: &str, what: &str, e: io::Error) -> Error {
        let hint = if e.raw_os_error() == Some(libc::EPERM) {
            " (nfnetlink needs CAP_NET_ADMIN)"
        } else {
            ""
        };
        Error(format!("nftables: {doing} {what}: {e}{hint}"))
    }

    /// NFT_MSG_GETTABLE: does the table exist?
    fn get_table(&mut self) -> io::Result<bool> {
        let seq = self.sock.next_seqs(1);
        self.msg.clear();
        let m = self.msg.begin(
            netlink::nfnl_type(netlink::NFNL_SUBSYS_NFTABLES, NFT_MSG_GETTABLE),
            netlink::NLM_F_REQUEST | netlink::NLM_F_ACK,
            seq,
            self.family,
            0,
        );
        self.msg.attr_str(NFTA_TABLE_NAME, &self.table);
        self.msg.end(m);
        self.sock.send(self.msg.as_bytes())?;
        let mut found = false;
        loop {
            for msg in self.sock.recv()? {
                if msg.seq != seq {
                    continue;
                }
                match msg.error() {
                    Some(0) => return Ok(found),
                    Some(libc::ENOENT) => return Ok(false),
                    Some(e) => return Err(io::Error::from_raw_os_error(e)),
                    None => {}
                }
                if msg.ty == netlink::nfnl_type(netlink::NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWTABLE) {
                    found = true;
                }
            }
        }
    }

    /// NFT_MSG_GETSET: the set's flags and key description, if it exists.
    fn get_set(&mut self, name: &str) -> io::Result<Option<SetInfo>> {
        let seq = self.sock.next_seqs(1);
        self.msg.clear();
        let m = self.msg.begin(
            netlink::nfnl_type(netlink::NFNL_SUBSYS_NFTABLES, NFT_MSG_GETSET),
            netlink::NLM_F_REQUEST | netlink::NLM_F_ACK,
            seq,
            self.family,
            0,
        );
        self.msg.attr_str(NFTA_SET_TABLE, &self.table);
        self.msg.attr_str(NFTA_SET_NAME, name);
        self.msg.end(m);
        self.sock.send(self.msg.as_bytes())?;
        let mut info = None;
        loop {
            for msg in self.sock.recv()? {
                if msg.seq != seq {
                    continue;
                }
                match msg.error() {
                    Some(0) => return Ok(info),
                    Some(libc::ENOENT) => return Ok(None),
                    Some(e) => return Err(io::Error::from_raw_os_error(e)),
                    None => {}
                }
                if msg.ty == netlink::nfnl_type(netlink::NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWSET) {
                    info = Some(SetInfo::parse(msg.nf_attrs()));
                }
            }
        }
    }

    /// Send `self.dels` and `self.adds` as one batch, dropping deletes of
    /// elements already gone and retrying, until it applies or fails.
    fn commit(&mut self, session: u32) -> Result<(), Error> {
        // Each round either succeeds, fails, or marks at least one delete
        // gone, so this ends after at most dels.len() + 1 rounds.
        loop {
            let ndel = self.dels.iter().filter(|d| !d.gone).count() as u32;
            let add4 = self.adds.iter().any(|r| !r.is_ipv6());
            let add6 = self.adds.iter().any(|r| r.is_ipv6());
            let nmsg = ndel + add4 as u32 + add6 as u32;
            if nmsg == 0 {
                return Ok(());
            }
            let first = self.sock.next_seqs(nmsg + 2);
            self.write_batch(first, nmsg, add4, add6);
            self.sock
                .send(self.msg.as_bytes())
                .map_err(|e| self.kernel_error("cannot send batch to", "nfnetlink", e))?;

            let last = first.wrapping_add(nmsg);
            let mut failure: Option<Failure> = None;
            let mut retry = false;
            'read: loop {
                let msgs = self
                    .sock
                    .recv()
                    .map_err(|e| Error(format!("nftables: waiting for the kernel: {e}")))?;
                for msg in msgs {
                    if !netlink::seq_in(msg.seq, first, nmsg + 1) {
                        continue; // answer to an earlier batch
                    }
                    let Some(errno) = msg.error() else { continue };
                    let k = msg.seq.wrapping_sub(first);
                    if errno != 0 {
                        if k >= 1 && k <= ndel && errno == libc::ENOENT {
                            let d = self.dels.iter_mut().find(|d| !d.gone && d.seq == msg.seq);
                            if let Some(d) = d {
                                d.gone = true;
                                retry = true;
                                let r = d.rule;
                                logmsg!(
                                    Level::Debug,
                                    "#{session} nftables: {} . {} . {} already gone from {}",
                                    r.src,
                                    r.dst,
                                    r.port,
                                    set_of(&r)
                                );
                            }
                        } else if failure.is_none() {
                            failure = Some(Failure {
                                errno,
                                what: if k == 0 {
                                    "cannot start a batch on"
                                } else if k <= ndel {
                                    "cannot delete elements from"
                                } else {
                                    "cannot add elements to"
                                },
                                set: if k > ndel + add4 as u32 {
                                    SET6
                                } else if k > ndel {
                                    SET4
                                } else {
                                    ""
                                },
                            });
                        }
                    }
                    if msg.seq == last || (k == 0 && errno != 0) {
                        break 'read;
                    }
                }
            }
            if let Some(f) = failure {
                return Err(self.failure_error(f));
            }
            if !retry {
                return Ok(());
            }
        }
    }

    /// Write BATCH_BEGIN, the deletes, the adds and BATCH_END into `msg`,
    /// numbered from `first`.
    fn write_batch(&mut self, first: u32, nmsg: u32, add4: bool, add6: bool) {
        let last = first.wrapping_add(nmsg);
        let mut seq = first;
        self.msg.clear();
        let m = self.msg.begin(
            netlink::NFNL_MSG_BATCH_BEGIN,
            netlink::NLM_F_REQUEST,
            seq,
            libc::AF_UNSPEC as u8,
            netlink::NFNL_SUBSYS_NFTABLES as u16,
        );
        self.msg.end(m);

        let flags = |seq: u32| {
            if seq == last {
                netlink::NLM_F_REQUEST | netlink::NLM_F_ACK
            } else {
                netlink::NLM_F_REQUEST
            }
        };
        for d in self.dels.iter_mut().filter(|d| !d.gone) {
            seq = seq.wrapping_add(1);
            d.seq = seq;
            let m = begin_elems(
                &mut self.msg,
                NFT_MSG_DELSETELEM,
                flags(seq),
                seq,
                self.family,
                &self.table,
                set_of(&d.rule),
            );
            write_elem(&mut self.msg, &d.rule, 0);
            end_elems(&mut self.msg, m);
        }
        for (wanted, v6) in [(add4, false), (add6, true)] {
            if !wanted {
                continue;
            }
            seq = seq.wrapping_add(1);
            let set = if v6 { SET6 } else { SET4 };
            let m = begin_elems(
                &mut self.msg,
                NFT_MSG_NEWSETELEM,
                flags(seq) | netlink::NLM_F_CREATE,
                seq,
                self.family,
                &self.table,
                set,
            );
            for r in self.adds.iter().filter(|r| r.is_ipv6() == v6) {
                write_elem(&mut self.msg, r, self.timeout_ms);
            }
            end_elems(&mut self.msg, m);
        }

        let m = self.msg.begin(
            netlink::NFNL_MSG_BATCH_END,
            netlink::NLM_F_REQUEST,
            seq.wrapping_add(1),
            libc::AF_UNSPEC as u8,
            netlink::NFNL_SUBSYS_NFTABLES as u16,
        );
        self.msg.end(m);
    }

    /// Turn a failed batch into a log-ready message; when a set is
    /// missing or changed, say so with the lines to add.
    fn failure_error(&mut self, f: Failure) -> Error {
        let e = io::Error::from_raw_os_error(f.errno);
        let target = if f.set.is_empty() {
            format!("table {} {}", self.family_name, self.table)
        } else {
            format!("set {} {} {}", self.family_name, self.table, f.set)
        };
        let mut err = self.kernel_error(f.what, &target, e);
        if matches!(f.errno, libc::ENOENT | libc::EINVAL | libc::EOPNOTSUPP)
            && let Ok(Some(problem)) = self.check()
        {
            let problem = problem.strip_prefix("nftables: ").unwrap_or(&problem);
            err.0 = format!("{} ({problem})\n{}", err.0, self.advice());
        }
        err
    }
}

impl Firewall for Nft {
    fn lookup(&mut self, client: SocketAddr, server: SocketAddr) -> Result<State, Error> {
        match self.ct.lookup(client, server) {
            Ok(Some(real_client)) => Ok(State::Tracked { real_client }),
            Ok(None) => Ok(State::NotTracked),
            Err(e) => {
                let hint = if e.raw_os_error() == Some(libc::EPERM) {
                    " (ctnetlink needs CAP_NET_ADMIN)"
                } else {
                    ""
                };
                Err(Error(format!("conntrack lookup: {e}{hint}")))
            }
        }
    }

    fn replace(&mut self, session: u32, old: &[Rule], new: &[Rule]) -> Result<(), Error> {
        for r in old.iter().chain(new) {
            if r.src.is_ipv6() != r.dst.is_ipv6() {
                return Err(Error(format!(
                    "#{session} nftables: rule mixes address families: {} to {} port {}",
                    r.src, r.dst, r.port
                )));
            }
        }
        self.changes.clear();
        self.dels.clear();
        self.adds.clear();
        // Sessions hold few rules: quadratic scans beat hashing here and
        // keep the commit free of allocation.
        for r in old.iter().chain(new) {
            if self.changes.iter().any(|c| c.rule == *r) {
                continue;
            }
            let cur = self.live.get(r).copied().unwrap_or(0);
            let minus = old.iter().filter(|x| *x == r).count() as u32;
            let plus = new.iter().filter(|x| *x == r).count() as u32;
            let count = cur.saturating_sub(minus) + plus;
            self.changes.push(Change { rule: *r, count });
            if cur > 0 && count == 0 {
                self.dels.push(Del {
                    rule: *r,
                    seq: 0,
                    gone: false,
                });
            }
            if plus > 0 {
                // Re-adding an element we already hold refreshes its timeout
                // on kernels that support it and is harmless on others.
                self.adds.push(*r);
            }
        }
        self.commit(session)?;
        for c in &self.changes {
            if c.count == 0 {
                self.live.remove(&c.rule);
            } else {
                self.live.insert(c.rule, c.count);
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Error> {
        let mut all = std::mem::take(&mut self.flushing);
        all.clear();
        all.extend(self.live.keys().copied());
        let mut first_err = None;
        for chunk in all.chunks(FLUSH_CHUNK) {
            self.adds.clear();
            self.dels.clear();
            self.dels.extend(chunk.iter().map(|&rule| Del {
                rule,
                seq: 0,
                gone: false,
            }));
            match self.commit(0) {
                Ok(()) => {
                    for r in chunk {
                        self.live.remove(r);
                    }
                }
                Err(e) => {
                    if first_err.is_none() {
                        first_err = Some(e);
                    }
                }
            }
        }
        self.flushing = all;
        first_err.map_or(Ok(()), Err)
    }
}

/// The parts of a set description `open` checks.
struct SetInfo {
    flags: u32,
    key_type: u32,
    key_len: u32,
}

impl SetInfo {
    fn parse(attrs: Attrs<'_>) -> SetInfo {
        let mut info = SetInfo {
            flags: 0,
            key_type: 0,
            key_len: 0,
        };
        for (ty, data) in attrs {
            let v = netlink::be32(data).unwrap_or(0);
            match ty {
                NFTA_SET_FLAGS => info.flags = v,
                NFTA_SET_KEY_TYPE => info.key_type = v,
                NFTA_SET_KEY_LEN => info.key_len = v,
                _ => {}
            }
        }
        info
    }
}

/// nftables family names as `nft` spells them, to NFPROTO_* numbers.
fn family_number(name: &str) -> Option<u8> {
    Some(match name {
        "inet" => 1,
        "ip" => 2,
        "arp" => 3,
        "netdev" => 5,
        "bridge" => 7,
        "ip6" => 10,
        _ => return None,
    })
}

fn set_of(r: &Rule) -> &'static str {
    if r.is_ipv6() { SET6 } else { SET4 }
}

/// Start a NEWSETELEM/DELSETELEM message up to its element list; returns
/// the offsets `end_elems` needs.
fn begin_elems(
    msg: &mut MsgBuf,
    ty: u8,
    flags: u16,
    seq: u32,
    family: u8,
    table: &str,
    set: &str,
) -> (usize, usize) {
    let m = msg.begin(
        netlink::nfnl_type(netlink::NFNL_SUBSYS_NFTABLES, ty),
        flags,
        seq,
        family,
        0,
    );
    msg.attr_str(NFTA_SET_ELEM_LIST_TABLE, table);
    msg.attr_str(NFTA_SET_ELEM_LIST_SET, set);
    let list = msg.nest_begin(NFTA_SET_ELEM_LIST_ELEMENTS);
    (m, list)
}

fn end_elems(msg: &mut MsgBuf, (m, list): (usize, usize)) {
    msg.nest_end(list);
    msg.end(m);
}

/// One list element: the concatenated key and, when adding, the timeout.
fn write_elem(msg: &mut MsgBuf, r: &Rule, timeout_ms: u64) {
    let elem = msg.nest_begin(NFTA_LIST_ELEM);
    let key = msg.nest_begin(NFTA_SET_ELEM_KEY);
    let value = msg.raw_begin(NFTA_DATA_VALUE);
    write_addr(msg, r.src);
    write_addr(msg, r.dst);
    msg.raw(&r.port.to_be_bytes());
    msg.raw(&[0, 0]); // inet_service is padded to 4 bytes inside the key
    msg.raw_end(value);
    msg.nest_end(key);
    if timeout_ms > 0 {
        msg.attr_be64(NFTA_SET_ELEM_TIMEOUT, timeout_ms);
    }
    msg.nest_end(elem);
}

fn write_addr(msg: &mut MsgBuf, a: IpAddr) {
    match a {
        IpAddr::V4(a) => msg.raw(&a.octets()),
        IpAddr::V6(a) => msg.raw(&a.octets()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_types_match_nft() {
        // What `nft` stores for the declarations in the module docs.
        assert_eq!(SPEC4.key_type, 29133);
        assert_eq!(SPEC6.key_type, 33293);
    }

    #[test]
    fn element_key_layout() {
        let mut m = MsgBuf::new();
        let r = Rule {
            src: "192.0.2.2".parse().unwrap(),
            dst: "198.51.100.2".parse().unwrap(),
            port: 50012,
        };
        write_elem(&mut m, &r, 180_000);
        let elem: Vec<_> = Attrs::new(m.as_bytes()).collect();
        assert_eq!(elem.len(), 1);
        let mut inner = Attrs::new(elem[0].1);
        let (ty, key) = inner.next().unwrap();
        assert_eq!(ty, NFTA_SET_ELEM_KEY);
        let value = Attrs::new(key).get(NFTA_DATA_VALUE).unwrap();
        assert_eq!(
            value,
            &[192, 0, 2, 2, 198, 51, 100, 2, 0xc3, 0x5c, 0, 0][..]
        );
        let (ty, t) = inner.next().unwrap();
        assert_eq!(ty, NFTA_SET_ELEM_TIMEOUT);
        assert_eq!(t, &180_000u64.to_be_bytes()[..]);
    }

    #[test]
    fn families() {
        assert_eq!(family_number("inet"), Some(1));
        assert_eq!(family_number("ip6"), Some(10));
        assert_eq!(family_number("ipx"), None);
    }
}

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
//! Only the last element message asks for an ACK; the kernel reports errors
//! of the others anyway, so reading until that ACK (or an error on BATCH_BEGIN)
//! collects the whole outcome. The batch is a transaction: either all of it
//! applies or none. A key is the fields back to back, each padded to 4
//! bytes: `saddr(4|16) daddr(4|16) port(2, big-endian) 0 0`.
//!
//! Deleting an element that is already gone (expired, set flushed) fails
//! the batch with ENOENT on that message; such deletes are dropped and the
//! batch is sent again. Two sessions may want the same element, so the
//! backend keeps a count per live element and deletes only at zero.
//!
//! At open, and again when a commit fails with ENOENT, EINVAL or
//! EOPNOTSUPP, the table and both sets are read back (NFT_MSG_GETTABLE,
//! NFT_MSG_GETSET); when they are not as required the error is
//! [`Error::Ruleset`], saying what is wrong and which lines to add. Every
//! message written here is checked byte for byte against an independent
//! encoder in the `crosscheck` tests.
//!
//! Also at open, the backend takes over what a previous instance left (it
//! was killed: a clean stop deletes its elements). It reads both sets
//! (NFT_MSG_GETSETELEM with NLM_F_DUMP) and takes as that instance's the
//! elements whose timeout is the rule timeout; others are the admin's and
//! stay untouched. It dumps conntrack for the established control
//! connections, and an element joining the two hosts of one of them (in
//! either direction, each host in its original or NAT view) is adopted: it
//! stays and counts down its own timeout, and a clean stop deletes it with
//! this process's own. The rest are deleted at once, with the same batch as
//! a flush. When the sets or conntrack cannot be read, the elements are
//! left to their timeout and start-up goes on.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::ControlFlow;
use std::time::Duration;

use crate::core::engine::ControlPorts;
use crate::core::log::Level;
use crate::core::rule::Rule;
use crate::firewall::{Error, Firewall, State};
use crate::logmsg;
use crate::os::netlink::{self, Attrs, MsgBuf, Socket};
use conntrack::Conntrack;

pub mod conntrack;
#[cfg(test)]
mod crosscheck;

/// Set holding IPv4 holes.
const SET4: &str = "ftpsesame4";
/// Set holding IPv6 holes.
const SET6: &str = "ftpsesame6";

const NFT_MSG_NEWTABLE: u8 = 0;
const NFT_MSG_GETTABLE: u8 = 1;
const NFT_MSG_NEWSET: u8 = 9;
const NFT_MSG_GETSET: u8 = 10;
const NFT_MSG_NEWSETELEM: u8 = 12;
const NFT_MSG_GETSETELEM: u8 = 13;
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
const NFTA_SET_ELEM_EXPIRATION: u16 = 5;
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
#[derive(Debug)]
struct SetSpec {
    name: &'static str,
    key_type: u32,
    key_len: u32,
    decl: &'static str,
}

impl SetSpec {
    /// The `type ...` part of the declaration.
    fn key_decl(&self) -> &'static str {
        let from = self.decl.find("type ").unwrap_or(0);
        let to = self.decl.find(';').unwrap_or(self.decl.len());
        &self.decl[from..to]
    }
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

/// The table the sets live in, and what every element gets.
struct Table {
    /// NFPROTO_* number and the name `nft` uses for it.
    family: u8,
    family_name: &'static str,
    name: String,
    timeout_ms: u64,
}

/// The nftables backend. Owns two netlink sockets (nftables, conntrack) in
/// the network namespace it was opened in.
pub struct Nft {
    sock: Socket,
    msg: MsgBuf,
    ct: Conntrack,
    table: Table,
    /// Elements this process added and believes present, with the number of
    /// session rules that want each.
    live: HashMap<Rule, u32>,
    /// Elements of a previous instance kept at open: their control
    /// connection is still established. Deleted at flush, unless their
    /// timeout took them first.
    adopted: Vec<Rule>,
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
    step: &'static str,
    set: &'static str,
}

/// What is wrong with the admin's table.
#[derive(Debug)]
enum Problem {
    NoTable,
    NoSet(&'static SetSpec),
    WrongKey(&'static SetSpec),
    NoTimeout(&'static SetSpec),
    NotPlain(&'static SetSpec),
}

/// The table is not as the daemon needs it: what is wrong, the lines that
/// fix it, and the failed commit that led to the finding, if any. Carried
/// as [`Error::Ruleset`].
#[derive(Debug)]
struct Mismatch {
    family: &'static str,
    table: String,
    problem: Problem,
    after: Option<Error>,
}

impl Mismatch {
    fn problem(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (fam, t) = (self.family, &self.table);
        match self.problem {
            Problem::NoTable => write!(f, "table {fam} {t} does not exist"),
            Problem::NoSet(s) => write!(f, "set {} not found in table {fam} {t}", s.name),
            Problem::WrongKey(s) => write!(
                f,
                "set {} in table {fam} {t} has the wrong key type \
                 (want {}; delete it with `nft delete set {fam} {t} {}` and declare it again)",
                s.name,
                s.key_decl(),
                s.name
            ),
            Problem::NoTimeout(s) => {
                write!(f, "set {} in table {fam} {t} lacks `flags timeout`", s.name)
            }
            Problem::NotPlain(s) => write!(
                f,
                "set {} in table {fam} {t} must be a plain set (no map, interval or constant flags)",
                s.name
            ),
        }
    }

    /// The lines an admin adds to make `open` succeed.
    fn advice(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (fam, t) = (self.family, &self.table);
        write!(
            f,
            "ftpsesame needs, in table {fam} {t} (e.g. in /etc/nftables.conf):\n\
             \x20   {}\n\
             \x20   {}\n\
             and rules accepting new connections that match them, such as:\n\
             \x20   ip saddr . ip daddr . tcp dport @ftpsesame4 ct state new accept\n\
             \x20   ip6 saddr . ip6 daddr . tcp dport @ftpsesame6 ct state new accept\n\
             or, on the running system:\n\
             \x20   nft add table {fam} {t}\n\
             \x20   nft add set {fam} {t} ftpsesame4 '{{ type ipv4_addr . ipv4_addr . inet_service; flags timeout; }}'\n\
             \x20   nft add set {fam} {t} ftpsesame6 '{{ type ipv6_addr . ipv6_addr . inet_service; flags timeout; }}'",
            SPEC4.decl, SPEC6.decl
        )
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.after {
            None => {
                f.write_str("nftables: ")?;
                self.problem(f)?;
            }
            Some(e) => {
                write!(f, "{e} (")?;
                self.problem(f)?;
                f.write_str(")")?;
            }
        }
        f.write_str("\n")?;
        self.advice(f)
    }
}

impl std::error::Error for Mismatch {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.after.as_ref().map(|e| e as _)
    }
}

impl Nft {
    /// Open netlink sockets and check that table `family`/`table` holds
    /// sets ftpsesame4 and ftpsesame6 with the right key types and the
    /// timeout flag. The error says what is wrong and prints the nft lines
    /// to add. Elements get `timeout` (none if zero). Then take over the
    /// elements a previous instance left: keep those of connections to
    /// `control` ports still established, delete the rest (see the module
    /// docs; a failure there is logged, not returned).
    pub fn open(
        family: &str,
        table: &str,
        timeout: Duration,
        control: ControlPorts,
    ) -> Result<Nft, Error> {
        let (fam, family_name) =
            family_number(family).ok_or_else(|| Error::UnknownFamily(family.to_string()))?;
        let open = |what| move |source| Error::Open { what, source };
        let sock = Socket::open().map_err(open("nftables netlink socket"))?;
        let ct = Conntrack::open().map_err(open("conntrack netlink socket"))?;
        let mut nft = Nft {
            sock,
            msg: MsgBuf::new(),
            ct,
            table: Table {
                family: fam,
                family_name,
                name: table.to_string(),
                timeout_ms: timeout.as_millis().min(u64::MAX as u128) as u64,
            },
            live: HashMap::with_capacity(64),
            adopted: Vec::new(),
            changes: Vec::with_capacity(16),
            dels: Vec::with_capacity(FLUSH_CHUNK),
            adds: Vec::with_capacity(16),
            flushing: Vec::new(),
        };
        if let Some(problem) = nft.check()? {
            return Err(nft.mismatch(problem, None));
        }
        if let Err(e) = nft.take_over(&control) {
            logmsg!(
                Level::Warning,
                "{e}; holes a previous instance left expire by their timeout"
            );
        }
        Ok(nft)
    }

    /// Sort the elements a previous instance left into adopted (their
    /// control connection is still established) and stale (deleted now),
    /// and log both counts.
    fn take_over(&mut self, control: &ControlPorts) -> Result<(), Error> {
        let mut left = Vec::new();
        for set in [SET4, SET6] {
            self.read_elements(set, &mut left)?;
        }
        let ours = self.table.timeout_ms;
        left.retain(|e| e.timeout_ms == ours);
        if left.is_empty() {
            return Ok(());
        }
        let open = self
            .ct
            .established_controls(control)
            .map_err(Error::StateTable)?;
        let pairs: HashSet<(IpAddr, IpAddr)> = open.iter().flat_map(|c| c.pairs()).collect();
        let (adopted, stale): (Vec<Elem>, Vec<Elem>) = left
            .into_iter()
            .partition(|e| pairs.contains(&(e.rule.src, e.rule.dst)));
        for e in &adopted {
            let r = e.rule;
            logmsg!(
                Level::Debug,
                "adopted hole {} to {} port {} ({} ms left)",
                r.src,
                r.dst,
                r.port,
                e.expires_ms
            );
        }
        self.adopted = adopted.iter().map(|e| e.rule).collect();
        if !adopted.is_empty() {
            logmsg!(
                Level::Notice,
                "adopted {} holes of control connections still open",
                adopted.len()
            );
        }
        let mut removed = 0;
        for chunk in stale.chunks(FLUSH_CHUNK) {
            self.delete(chunk.iter().map(|e| e.rule))?;
            removed += chunk.len();
        }
        if removed > 0 {
            logmsg!(Level::Notice, "removed {removed} stale holes");
        }
        Ok(())
    }

    /// Delete `rules` in one batch (at most [`FLUSH_CHUNK`] of them), as no
    /// session's: elements already gone are skipped, as in any commit.
    fn delete(&mut self, rules: impl Iterator<Item = Rule>) -> Result<(), Error> {
        self.adds.clear();
        self.dels.clear();
        self.dels.extend(rules.map(|rule| Del {
            rule,
            seq: 0,
            gone: false,
        }));
        self.commit(0)
    }

    /// Append the elements of `set` to `out` (NFT_MSG_GETSETELEM dump).
    fn read_elements(&mut self, set: &'static str, out: &mut Vec<Elem>) -> Result<(), Error> {
        let seq = self.sock.next_seqs(1);
        self.msg.clear();
        write_dump_elems(&mut self.msg, seq, &self.table, set);
        self.sock
            .dump(
                self.msg.as_bytes(),
                seq,
                netlink::nfnl_type(netlink::NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWSETELEM),
                |attrs| read_elems(attrs, out),
            )
            .map_err(|source| Error::Netlink {
                step: "cannot read elements of",
                target: format!("set {} {} {set}", self.table.family_name, self.table.name),
                source,
            })
    }

    /// Inspect the table and both sets: `Ok(Some(problem))` when they are
    /// not as required, `Err` when the kernel could not be asked.
    fn check(&mut self) -> Result<Option<Problem>, Error> {
        let read = |target: String| {
            move |source| Error::Netlink {
                step: "cannot read",
                target,
                source,
            }
        };
        let where_ = format!("table {} {}", self.table.family_name, self.table.name);
        if self
            .get(NFT_MSG_GETTABLE, None, NFT_MSG_NEWTABLE, |_| ())
            .map_err(read(where_))?
            .is_none()
        {
            return Ok(Some(Problem::NoTable));
        }
        for spec in [&SPEC4, &SPEC6] {
            let Some(set) = self
                .get(
                    NFT_MSG_GETSET,
                    Some(spec.name),
                    NFT_MSG_NEWSET,
                    SetInfo::parse,
                )
                .map_err(read(format!("set {}", spec.name)))?
            else {
                return Ok(Some(Problem::NoSet(spec)));
            };
            if set.key_type != spec.key_type || set.key_len != spec.key_len {
                return Ok(Some(Problem::WrongKey(spec)));
            }
            if set.flags & NFT_SET_TIMEOUT == 0 {
                return Ok(Some(Problem::NoTimeout(spec)));
            }
            if set.flags & (NFT_SET_CONSTANT | NFT_SET_INTERVAL | NFT_SET_MAP | NFT_SET_OBJECT) != 0
            {
                return Ok(Some(Problem::NotPlain(spec)));
            }
        }
        Ok(None)
    }

    fn mismatch(&self, problem: Problem, after: Option<Error>) -> Error {
        Error::Ruleset(Box::new(Mismatch {
            family: self.table.family_name,
            table: self.table.name.clone(),
            problem,
            after,
        }))
    }

    /// NFT_MSG_GETTABLE (`set` None) or NFT_MSG_GETSET: the answer read by
    /// `read`, `None` when the object does not exist.
    fn get<T>(
        &mut self,
        ask: u8,
        set: Option<&str>,
        answer: u8,
        mut read: impl FnMut(Attrs<'_>) -> T,
    ) -> io::Result<Option<T>> {
        let seq = self.sock.next_seqs(1);
        self.msg.clear();
        write_get(
            &mut self.msg,
            seq,
            ask,
            self.table.family,
            &self.table.name,
            set,
        );
        self.sock.query(
            self.msg.as_bytes(),
            seq,
            netlink::nfnl_type(netlink::NFNL_SUBSYS_NFTABLES, answer),
            |attrs| Ok(read(attrs)),
        )
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
            write_batch(
                &mut self.msg,
                &self.table,
                first,
                &mut self.dels,
                &self.adds,
            );
            self.sock
                .send(self.msg.as_bytes())
                .map_err(|source| Error::Netlink {
                    step: "cannot send batch to",
                    target: "nfnetlink".into(),
                    source,
                })?;

            let last = first.wrapping_add(nmsg);
            let mut failure: Option<Failure> = None;
            let mut retry = false;
            let dels = &mut self.dels;
            self.sock
                .answers(first, nmsg + 1, |msg| {
                    let Some(errno) = msg.error() else {
                        return ControlFlow::Continue(());
                    };
                    let k = msg.seq.wrapping_sub(first);
                    if errno == libc::ENOENT && k >= 1 && k <= ndel {
                        if let Some(d) = dels.iter_mut().find(|d| !d.gone && d.seq == msg.seq) {
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
                    } else if errno != 0 && failure.is_none() {
                        failure = Some(Failure {
                            errno,
                            step: if k == 0 {
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
                    if msg.seq == last || (k == 0 && errno != 0) {
                        ControlFlow::Break(Ok(()))
                    } else {
                        ControlFlow::Continue(())
                    }
                })
                .map_err(|source| Error::Netlink {
                    step: "waiting for the kernel",
                    target: String::new(),
                    source,
                })?;
            if let Some(f) = failure {
                return Err(self.batch_error(f));
            }
            if !retry {
                return Ok(());
            }
        }
    }

    /// The error of a failed batch; when the cause is a set missing or
    /// changed under us, the finding and the lines to add come with it.
    fn batch_error(&mut self, f: Failure) -> Error {
        let (fam, t) = (self.table.family_name, &self.table.name);
        let err = Error::Netlink {
            step: f.step,
            target: if f.set.is_empty() {
                format!("table {fam} {t}")
            } else {
                format!("set {fam} {t} {}", f.set)
            },
            source: io::Error::from_raw_os_error(f.errno),
        };
        if matches!(f.errno, libc::ENOENT | libc::EINVAL | libc::EOPNOTSUPP)
            && let Ok(Some(problem)) = self.check()
        {
            return self.mismatch(problem, Some(err));
        }
        err
    }
}

impl Firewall for Nft {
    fn lookup(&mut self, client: SocketAddr, server: SocketAddr) -> Result<State, Error> {
        match self.ct.lookup(client, server).map_err(Error::Lookup)? {
            Some(real_client) => Ok(State::Tracked { real_client }),
            None => Ok(State::NotTracked),
        }
    }

    fn replace(&mut self, session: u32, old: &[Rule], new: &[Rule]) -> Result<(), Error> {
        for r in old.iter().chain(new) {
            if r.src.is_ipv6() != r.dst.is_ipv6() {
                return Err(Error::MixedFamilies {
                    what: "rule",
                    src: r.src,
                    dst: r.dst,
                });
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
        // Adopted elements that a session of ours also holds are in `live`.
        let adopted = std::mem::take(&mut self.adopted);
        all.extend(adopted.into_iter().filter(|r| !self.live.contains_key(r)));
        let mut first_err = None;
        for chunk in all.chunks(FLUSH_CHUNK) {
            match self.delete(chunk.iter().copied()) {
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

/// An element read back from a set: its key as a rule, its timeout and the
/// time it has left (milliseconds, 0 when none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Elem {
    rule: Rule,
    timeout_ms: u64,
    expires_ms: u64,
}

/// Append the elements in one NEWSETELEM answer of a dump to `out`; keys
/// of another length than the sets' are skipped.
fn read_elems(attrs: Attrs<'_>, out: &mut Vec<Elem>) {
    let Some(list) = attrs.get(NFTA_SET_ELEM_LIST_ELEMENTS) else {
        return;
    };
    for (ty, elem) in Attrs::new(list) {
        if ty != NFTA_LIST_ELEM {
            continue;
        }
        let (mut rule, mut timeout_ms, mut expires_ms) = (None, 0, 0);
        for (ty, data) in Attrs::new(elem) {
            match ty {
                NFTA_SET_ELEM_KEY => {
                    rule = Attrs::new(data).get(NFTA_DATA_VALUE).and_then(parse_key);
                }
                NFTA_SET_ELEM_TIMEOUT => timeout_ms = be64(data).unwrap_or(0),
                NFTA_SET_ELEM_EXPIRATION => expires_ms = be64(data).unwrap_or(0),
                _ => {}
            }
        }
        if let Some(rule) = rule {
            out.push(Elem {
                rule,
                timeout_ms,
                expires_ms,
            });
        }
    }
}

/// A key as [`write_elem`] lays it out, back to a rule.
fn parse_key(key: &[u8]) -> Option<Rule> {
    let (src, dst, rest): (IpAddr, IpAddr, &[u8]) = match key.len() {
        12 => (
            <[u8; 4]>::try_from(&key[0..4]).ok()?.into(),
            <[u8; 4]>::try_from(&key[4..8]).ok()?.into(),
            &key[8..],
        ),
        36 => (
            <[u8; 16]>::try_from(&key[0..16]).ok()?.into(),
            <[u8; 16]>::try_from(&key[16..32]).ok()?.into(),
            &key[32..],
        ),
        _ => return None,
    };
    let port = u16::from_be_bytes(rest[0..2].try_into().ok()?);
    Some(Rule { src, dst, port })
}

fn be64(data: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(data.get(0..8)?.try_into().ok()?))
}

/// The families `-T` accepts, as `nft` spells them, to NFPROTO_* numbers
/// (with the name, to print it back).
fn family_number(name: &str) -> Option<(u8, &'static str)> {
    Some(match name {
        "inet" => (1, "inet"),
        "ip" => (2, "ip"),
        "ip6" => (10, "ip6"),
        _ => return None,
    })
}

fn set_of(r: &Rule) -> &'static str {
    if r.is_ipv6() { SET6 } else { SET4 }
}

/// Append the request numbered `seq` for table `table` (`ask` =
/// NFT_MSG_GETTABLE, `set` None) or for its set `set` (NFT_MSG_GETSET). No
/// ACK is asked for: the answer, or the error, ends the exchange.
fn write_get(msg: &mut MsgBuf, seq: u32, ask: u8, family: u8, table: &str, set: Option<&str>) {
    let m = msg.begin(
        netlink::nfnl_type(netlink::NFNL_SUBSYS_NFTABLES, ask),
        netlink::NLM_F_REQUEST,
        seq,
        family,
        0,
    );
    match set {
        None => msg.attr_str(NFTA_TABLE_NAME, table),
        Some(set) => {
            msg.attr_str(NFTA_SET_TABLE, table);
            msg.attr_str(NFTA_SET_NAME, set);
        }
    }
    msg.end(m);
}

/// Append the request numbered `seq` for every element of `set`: a
/// GETSETELEM dump.
fn write_dump_elems(msg: &mut MsgBuf, seq: u32, table: &Table, set: &str) {
    let m = msg.begin(
        netlink::nfnl_type(netlink::NFNL_SUBSYS_NFTABLES, NFT_MSG_GETSETELEM),
        netlink::NLM_F_REQUEST | netlink::NLM_F_DUMP,
        seq,
        table.family,
        0,
    );
    msg.attr_str(NFTA_SET_ELEM_LIST_TABLE, &table.name);
    msg.attr_str(NFTA_SET_ELEM_LIST_SET, set);
    msg.end(m);
}

/// Write into `msg` the batch for the deletes in `dels` not yet `gone` and
/// the elements in `adds`, numbered from `first`: BATCH_BEGIN, one
/// DELSETELEM per delete (its `seq` recorded in the `Del`), one NEWSETELEM
/// per set with additions, BATCH_END. Only the last element message asks
/// for an ACK.
fn write_batch(msg: &mut MsgBuf, table: &Table, first: u32, dels: &mut [Del], adds: &[Rule]) {
    let ndel = dels.iter().filter(|d| !d.gone).count() as u32;
    let add4 = adds.iter().any(|r| !r.is_ipv6());
    let add6 = adds.iter().any(|r| r.is_ipv6());
    let last = first.wrapping_add(ndel + add4 as u32 + add6 as u32);
    let flags = |seq: u32| {
        if seq == last {
            netlink::NLM_F_REQUEST | netlink::NLM_F_ACK
        } else {
            netlink::NLM_F_REQUEST
        }
    };
    let marker = |msg: &mut MsgBuf, ty: u16, seq: u32| {
        let m = msg.begin(
            ty,
            netlink::NLM_F_REQUEST,
            seq,
            libc::AF_UNSPEC as u8,
            netlink::NFNL_SUBSYS_NFTABLES as u16,
        );
        msg.end(m);
    };

    msg.clear();
    let mut seq = first;
    marker(msg, netlink::NFNL_MSG_BATCH_BEGIN, seq);
    for d in dels.iter_mut().filter(|d| !d.gone) {
        seq = seq.wrapping_add(1);
        d.seq = seq;
        let m = begin_elems(
            msg,
            NFT_MSG_DELSETELEM,
            flags(seq),
            seq,
            table,
            set_of(&d.rule),
        );
        write_elem(msg, &d.rule, 0);
        end_elems(msg, m);
    }
    for (wanted, v6) in [(add4, false), (add6, true)] {
        if !wanted {
            continue;
        }
        seq = seq.wrapping_add(1);
        let set = if v6 { SET6 } else { SET4 };
        let m = begin_elems(
            msg,
            NFT_MSG_NEWSETELEM,
            flags(seq) | netlink::NLM_F_CREATE,
            seq,
            table,
            set,
        );
        for r in adds.iter().filter(|r| r.is_ipv6() == v6) {
            write_elem(msg, r, table.timeout_ms);
        }
        end_elems(msg, m);
    }
    marker(msg, netlink::NFNL_MSG_BATCH_END, seq.wrapping_add(1));
}

/// Start a NEWSETELEM/DELSETELEM message up to its element list; returns
/// the offsets `end_elems` needs.
fn begin_elems(
    msg: &mut MsgBuf,
    ty: u8,
    flags: u16,
    seq: u32,
    table: &Table,
    set: &str,
) -> (usize, usize) {
    let m = msg.begin(
        netlink::nfnl_type(netlink::NFNL_SUBSYS_NFTABLES, ty),
        flags,
        seq,
        table.family,
        0,
    );
    msg.attr_str(NFTA_SET_ELEM_LIST_TABLE, &table.name);
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
    use crate::core::rule::rule;

    #[test]
    fn key_types_match_nft() {
        // What `nft` stores for the declarations in the module docs.
        assert_eq!(SPEC4.key_type, 29133);
        assert_eq!(SPEC6.key_type, 33293);
    }

    #[test]
    fn element_key_layout() {
        let mut m = MsgBuf::new();
        write_elem(&mut m, &rule("192.0.2.2", "198.51.100.2", 50012), 180_000);
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
        assert_eq!(family_number("inet"), Some((1, "inet")));
        assert_eq!(family_number("ip"), Some((2, "ip")));
        assert_eq!(family_number("ip6"), Some((10, "ip6")));
        assert_eq!(family_number("bridge"), None, "-T refuses it");
        assert_eq!(family_number("ipx"), None);
    }
}

//! `PfEngine`: the pf backend's logic over any [`PfDevice`], the same for
//! `/dev/pf` on the BSDs and the pfctl crate on macOS. It owns the
//! per-session bookkeeping (which sessions' anchors hold rules), turns a
//! replace into one transaction on the session's anchor, rolls back on
//! failure, takes over anchors of dead instances, and reads a picked-up
//! connection's sequence windows from one bounded dump of the state table
//! (macOS's device cannot: there a pickup stands on its pair alone).
//!
//! pf rules have no timeout, so adopting a dead instance's anchor means
//! owning it with a deadline: at start such anchors are kept (their
//! sessions may still be running transfers they negotiated) and removed
//! one rule timeout later, counted from the first [`Firewall::expire`]
//! call, or at flush, whichever comes first. Whether their control
//! connection is still open is not checked (that needs pf's state table
//! dumped and the anchor's rules read back); every dead instance's anchor
//! is held, none for longer than the rule timeout. An anchor named with
//! this process's own pid cannot be told apart from the ones it is about to
//! create, so it is removed at start. Whether a pid runs is asked of the
//! `alive` probe it is given: the engine itself makes no OS call.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use super::ffi::{Dir, FlatNatlook, FlatRule, FlatState};
use super::seam::{Dump, PfDevice};
use super::window::seqs_of;
use crate::core::firewall::Seqs;
use crate::core::log::Level;
use crate::core::rule::{Rule, RuleOptions};
use crate::firewall::{Error, Firewall, State};
use crate::logmsg;

/// The most a pickup's read of the state table may take: 16 MiB, room
/// for about 35,000 states on FreeBSD (384 bytes each) and 50,000 on
/// OpenBSD (264), with a quarter to spare for states added while it is
/// read. A larger table is not read and the pickup stands on its pair
/// alone.
const MAX_DUMP_BYTES: usize = 16 << 20;

/// States of one connection copied out of a dump: one per interface it
/// crosses is the usual; more than this and none is trusted.
const MAX_MATCHES: usize = 8;

/// Name of the parent anchor; each session gets `ftpsesame/<pid>.<id>`.
const ANCHOR_PARENT: &str = "ftpsesame";

/// The anchor of one session: `ftpsesame/<pid>.<id>`.
fn anchor_name(pid: u32, session: u32) -> String {
    format!("{ANCHOR_PARENT}/{pid}.{session}")
}

/// `<pid>.<id>` of a child anchor name, `None` for anything else (an
/// admin's own anchor under `ftpsesame/` is left alone).
fn parse_child(name: &str) -> Option<(u32, u32)> {
    let (pid, id) = name.split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(pid) || !digits(id) {
        return None;
    }
    Some((pid.parse().ok()?, id.parse().ok()?))
}

/// Whether the `n`th time a pickup's table was too large to read is
/// logged: the first time, then ever more rarely (after a restart every
/// open session may be picked up at once).
fn worth_logging(n: u64) -> bool {
    n.is_power_of_two()
}

/// Transactions, state check and clean-up over any [`PfDevice`].
pub(crate) struct PfEngine<D: PfDevice> {
    dev: D,
    opts: RuleOptions,
    pid: u32,
    alive: fn(u32) -> bool,
    /// Sessions whose anchor currently holds rules.
    live: BTreeSet<u32>,
    /// Anchors of dead instances kept at start (full paths).
    adopted: Vec<String>,
    /// How long they are kept, in microseconds (the rule timeout).
    hold_us: u64,
    /// When they go, on the engine's clock; set by the first `expire`.
    deadline: Option<u64>,
    /// Pickups whose windows were not read because the state table was
    /// over [`MAX_DUMP_BYTES`].
    tables_too_large: u64,
}

impl<D: PfDevice> PfEngine<D> {
    /// Check that pf runs, then adopt the anchors of dead instances, to be
    /// removed `rule_timeout` after the first `expire` (see the module
    /// docs). `alive` says whether a pid belongs to a running process
    /// (`alive::process_alive` for real).
    pub(crate) fn new(
        mut dev: D,
        opts: RuleOptions,
        pid: u32,
        alive: fn(u32) -> bool,
        rule_timeout: Duration,
    ) -> Result<Self, Error> {
        if !dev.running()? {
            return Err(Error::PfDisabled);
        }
        let mut e = PfEngine {
            dev,
            opts,
            pid,
            alive,
            live: BTreeSet::new(),
            adopted: Vec::new(),
            hold_us: rule_timeout.as_micros().min(u128::from(u64::MAX)) as u64,
            deadline: None,
            tables_too_large: 0,
        };
        e.adopt()?;
        Ok(e)
    }

    /// Sort the child anchors of `ftpsesame` at start: a dead instance's
    /// are adopted, a leftover with our own pid is removed, a running
    /// instance's and the admin's are left alone. Both counts are logged.
    fn adopt(&mut self) -> Result<(), Error> {
        let mut removed = 0;
        for child in self.dev.list_anchors(ANCHOR_PARENT)? {
            let Some((pid, _)) = parse_child(&child) else {
                continue;
            };
            let anchor = format!("{ANCHOR_PARENT}/{child}");
            if pid == self.pid {
                self.commit(&anchor, &[])?;
                removed += 1;
            } else if !(self.alive)(pid) {
                logmsg!(Level::Debug, "adopted anchor {anchor}");
                self.adopted.push(anchor);
            }
        }
        if !self.adopted.is_empty() {
            logmsg!(
                Level::Notice,
                "adopted {} anchors of a previous instance, removing them in {} s",
                self.adopted.len(),
                self.hold_us / 1_000_000
            );
        }
        if removed > 0 {
            logmsg!(Level::Notice, "removed {removed} stale anchors");
        }
        Ok(())
    }

    /// The device, for inspection.
    #[cfg(test)]
    fn device(&self) -> &D {
        &self.dev
    }

    /// Replace the anchor's rules with `rules` in one transaction; on any
    /// failure roll back so the anchor keeps what it had.
    fn commit(&mut self, anchor: &str, rules: &[FlatRule]) -> Result<(), Error> {
        let ticket = self.dev.begin(anchor)?;
        for r in rules {
            if let Err(e) = self.dev.add_rule(anchor, ticket, r) {
                let _ = self.dev.rollback(anchor, ticket);
                return Err(e);
            }
        }
        if let Err(e) = self.dev.commit(anchor, ticket) {
            let _ = self.dev.rollback(anchor, ticket);
            return Err(e);
        }
        Ok(())
    }

    /// Remove every child anchor of `ftpsesame` that is this process's or
    /// belongs to no running process. Returns how many were removed.
    fn remove_stale(&mut self) -> Result<usize, Error> {
        let mut removed = 0;
        for child in self.dev.list_anchors(ANCHOR_PARENT)? {
            let Some((pid, _)) = parse_child(&child) else {
                continue;
            };
            if pid == self.pid || !(self.alive)(pid) {
                self.commit(&format!("{ANCHOR_PARENT}/{child}"), &[])?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

impl<D: PfDevice> Firewall for PfEngine<D> {
    fn lookup(&mut self, client: SocketAddr, server: SocketAddr) -> Result<State, Error> {
        // The kernel takes no PF_INOUT here: ask for each direction.
        for dir in [Dir::In, Dir::Out] {
            let mut q = FlatNatlook::query(client, server, dir)?;
            if self.dev.natlook(&mut q)? {
                let real = q.real_source();
                let real_client = if real.is_unspecified() {
                    client.ip()
                } else {
                    real
                };
                return Ok(State::Tracked { real_client });
            }
        }
        Ok(State::NotTracked)
    }

    /// One read of the whole state table (bounded by [`MAX_DUMP_BYTES`]),
    /// its states of this connection turned into ranges by
    /// [`seqs_of`](super::window::seqs_of). Asked once per pickup, never
    /// per packet.
    fn seqs(&mut self, client: SocketAddr, server: SocketAddr) -> Result<Option<Seqs>, Error> {
        let q = FlatNatlook::query(client, server, Dir::In)?;
        let mut found = [FlatState::default(); MAX_MATCHES];
        match self.dev.states(&q, MAX_DUMP_BYTES, &mut found)? {
            Dump::Unsupported => Ok(None),
            Dump::TooLarge { states } => {
                self.tables_too_large += 1;
                let n = self.tables_too_large;
                if worth_logging(n) {
                    logmsg!(
                        Level::Warning,
                        "pf state table too large to read windows ({states} states, over {} MiB): \
                         pickups checked by their pair alone ({n} so far)",
                        MAX_DUMP_BYTES >> 20
                    );
                }
                Ok(None)
            }
            Dump::Read { matched, .. } if matched > MAX_MATCHES => {
                logmsg!(
                    Level::Debug,
                    "{matched} pf states for {client} -> {server}: windows not used"
                );
                Ok(None)
            }
            Dump::Read { matched, .. } => Ok(seqs_of(&found[..matched], client, server)),
        }
    }

    fn replace(&mut self, session: u32, _old: &[Rule], new: &[Rule]) -> Result<(), Error> {
        // The anchor is replaced whole, so `old` needs no separate removal.
        let flat = new
            .iter()
            .map(|r| FlatRule::new(r, &self.opts))
            .collect::<Result<Vec<_>, _>>()?;
        self.commit(&anchor_name(self.pid, session), &flat)?;
        if flat.is_empty() {
            self.live.remove(&session);
        } else {
            self.live.insert(session);
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Error> {
        let mut first_err = None;
        for session in std::mem::take(&mut self.live) {
            if let Err(e) = self.commit(&anchor_name(self.pid, session), &[]) {
                first_err.get_or_insert(e);
            }
        }
        // Named explicitly: their pid may be running something else by now.
        for anchor in std::mem::take(&mut self.adopted) {
            if let Err(e) = self.commit(&anchor, &[]) {
                first_err.get_or_insert(e);
            }
        }
        if let Err(e) = self.remove_stale() {
            first_err.get_or_insert(e);
        }
        first_err.map_or(Ok(()), Err)
    }

    fn expire(&mut self, now: u64) {
        let deadline = *self
            .deadline
            .get_or_insert_with(|| now.saturating_add(self.hold_us));
        if now < deadline || self.adopted.is_empty() {
            return;
        }
        let mut removed = 0;
        for anchor in std::mem::take(&mut self.adopted) {
            // One attempt: what fails here is a dead instance's anchor,
            // which flush removes at the latest.
            match self.commit(&anchor, &[]) {
                Ok(()) => removed += 1,
                Err(e) => logmsg!(Level::Warning, "cannot remove adopted {anchor}: {e}"),
            }
        }
        logmsg!(
            Level::Notice,
            "removed {removed} anchors adopted from a previous instance"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::rule::rule;
    use crate::firewall::pf::seam::fake::{Call, Recorder};
    use crate::firewall::pf::text::render;

    const PID: u32 = 4242;

    fn alive(pid: u32) -> bool {
        // In these tests pids 4242 (us) and 777 run; anything else is dead.
        pid == PID || pid == 777
    }

    const HOLD: Duration = Duration::from_secs(180);

    fn engine(dev: Recorder, opts: RuleOptions) -> PfEngine<Recorder> {
        PfEngine::new(dev, opts, PID, alive, HOLD).unwrap()
    }

    fn calls_after_open(e: &PfEngine<Recorder>) -> Vec<Call> {
        // Open is Running + List; everything after is the test's.
        e.device().calls[2..].to_vec()
    }

    #[test]
    fn disabled_pf_refuses_to_start() {
        let mut dev = Recorder::new();
        dev.enabled = false;
        let err = PfEngine::new(dev, RuleOptions::default(), PID, alive, HOLD)
            .err()
            .unwrap();
        assert_eq!(err.to_string(), "pf is disabled");
    }

    #[test]
    fn open_checks_status_then_lists_children() {
        let e = engine(Recorder::new(), RuleOptions::default());
        assert_eq!(
            e.device().calls,
            vec![Call::Running, Call::List("ftpsesame".into())]
        );
    }

    #[test]
    fn replace_is_one_transaction_on_the_session_anchor() {
        let mut e = engine(Recorder::new(), RuleOptions::default());
        let rules = [
            rule("192.0.2.2", "198.51.100.2", 50012),
            rule("10.0.0.7", "198.51.100.2", 50012),
        ];
        e.replace(3, &[], &rules).unwrap();
        let calls = calls_after_open(&e);
        let anchor = "ftpsesame/4242.3".to_string();
        let t = match &calls[0] {
            Call::Begin(a) => {
                assert_eq!(a, &anchor);
                match &calls[1] {
                    Call::AddRule(_, t, _) => *t,
                    c => panic!("expected AddRule, got {c:?}"),
                }
            }
            c => panic!("expected Begin, got {c:?}"),
        };
        let opts = RuleOptions::default();
        assert_eq!(
            calls,
            vec![
                Call::Begin(anchor.clone()),
                Call::AddRule(anchor.clone(), t, FlatRule::new(&rules[0], &opts).unwrap()),
                Call::AddRule(anchor.clone(), t, FlatRule::new(&rules[1], &opts).unwrap()),
                Call::Commit(anchor.clone(), t),
            ]
        );
        // The pool ticket from begin travels with every rule.
        assert_ne!(t.pool, 0);
        assert_eq!(e.device().anchors[&anchor].len(), 2);
    }

    #[test]
    fn renegotiation_replaces_and_empty_removes() {
        let mut e = engine(Recorder::new(), RuleOptions::default());
        let a = rule("192.0.2.2", "198.51.100.2", 50012);
        let b = rule("192.0.2.2", "198.51.100.2", 50013);
        e.replace(3, &[], &[a]).unwrap();
        e.replace(3, &[a], &[b]).unwrap();
        let anchor = "ftpsesame/4242.3";
        let held: Vec<u16> = e.device().anchors[anchor]
            .iter()
            .map(|r| u16::from_be(r.port))
            .collect();
        assert_eq!(held, vec![50013]);

        let before = e.device().calls.len();
        e.replace(3, &[b], &[]).unwrap();
        let tail = &e.device().calls[before..];
        assert!(matches!(&tail[0], Call::Begin(a) if a == anchor));
        assert!(matches!(&tail[1], Call::Commit(a, _) if a == anchor));
        assert_eq!(tail.len(), 2, "removal adds no rules: {tail:?}");
        assert!(e.device().anchors.is_empty());
    }

    #[test]
    fn failed_rule_rolls_back_and_keeps_old_rules() {
        let mut e = engine(Recorder::new(), RuleOptions::default());
        let a = rule("192.0.2.2", "198.51.100.2", 50012);
        e.replace(5, &[], &[a]).unwrap();
        let mut dev_fail = e;
        // Next rule with port 6000 is refused by the "kernel".
        let bad = rule("192.0.2.2", "198.51.100.2", 6000);
        dev_fail.dev.fail_port = Some(6000);
        let err = dev_fail.replace(5, &[a], &[bad]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Ioctl {
                    name: "DIOCADDRULE",
                    ..
                }
            ),
            "{err:?}"
        );
        let last = dev_fail.device().calls.last().unwrap().clone();
        assert!(matches!(last, Call::Rollback(ref a, _) if a == "ftpsesame/4242.5"));
        let held = &dev_fail.device().anchors["ftpsesame/4242.5"];
        assert_eq!(u16::from_be(held[0].port), 50012);
    }

    /// A device holding one rule in each of `names`.
    fn with_anchors(names: &[&str]) -> Recorder {
        let mut dev = Recorder::new();
        let r = FlatRule::new(
            &rule("192.0.2.2", "198.51.100.2", 50012),
            &RuleOptions::default(),
        )
        .unwrap();
        for name in names {
            dev.anchors.insert((*name).into(), vec![r]);
        }
        dev
    }

    fn anchors(e: &PfEngine<Recorder>) -> Vec<&str> {
        e.device().anchors.keys().map(String::as_str).collect()
    }

    const LEFTOVERS: [&str; 5] = [
        "ftpsesame/111.1",  // dead
        "ftpsesame/111.2",  // dead
        "ftpsesame/777.1",  // another live ftpsesame
        "ftpsesame/4242.9", // our pid, but we just started: a leftover
        "ftpsesame/admin",  // not ours to judge
    ];

    #[test]
    fn start_adopts_dead_instances_and_removes_own_pid_leftovers() {
        let e = engine(with_anchors(&LEFTOVERS), RuleOptions::default());
        assert_eq!(
            anchors(&e),
            vec![
                "ftpsesame/111.1",
                "ftpsesame/111.2",
                "ftpsesame/777.1",
                "ftpsesame/admin"
            ]
        );
        assert_eq!(e.adopted, vec!["ftpsesame/111.1", "ftpsesame/111.2"]);
    }

    #[test]
    fn adopted_anchors_go_one_rule_timeout_after_the_first_expire() {
        let mut e = engine(with_anchors(&LEFTOVERS), RuleOptions::default());
        // The engine's clock is capture time: any origin will do.
        let t0 = 1_700_000_000_000_000u64;
        let hold = HOLD.as_micros() as u64;
        e.expire(t0);
        e.expire(t0 + hold - 1);
        assert_eq!(anchors(&e).len(), 4, "still held: {:?}", anchors(&e));
        // A session of ours meanwhile is not touched by the expiry.
        e.replace(1, &[], &[rule("192.0.2.2", "198.51.100.2", 50013)])
            .unwrap();
        e.expire(t0 + hold);
        assert_eq!(
            anchors(&e),
            vec!["ftpsesame/4242.1", "ftpsesame/777.1", "ftpsesame/admin"]
        );
        assert!(e.adopted.is_empty());
        // Nothing more to do later.
        let before = e.device().calls.len();
        e.expire(t0 + 2 * hold);
        assert_eq!(e.device().calls.len(), before);
    }

    #[test]
    fn flush_removes_adopted_anchors_before_their_deadline() {
        let mut e = engine(with_anchors(&LEFTOVERS), RuleOptions::default());
        e.expire(5);
        e.flush().unwrap();
        assert_eq!(anchors(&e), vec!["ftpsesame/777.1", "ftpsesame/admin"]);
        assert!(e.adopted.is_empty());
    }

    #[test]
    fn adopted_anchor_of_a_reused_pid_still_goes() {
        // Pid 777 was dead at start and runs something else by the deadline:
        // the anchor is removed by name, not by a liveness check.
        fn dead_then(pid: u32) -> bool {
            pid == PID
        }
        let dev = with_anchors(&["ftpsesame/777.3"]);
        let mut e = PfEngine::new(dev, RuleOptions::default(), PID, dead_then, HOLD).unwrap();
        assert_eq!(e.adopted, vec!["ftpsesame/777.3"]);
        e.alive = alive;
        e.expire(0);
        e.expire(HOLD.as_micros() as u64);
        assert!(anchors(&e).is_empty());
    }

    #[test]
    fn flush_removes_own_sessions_and_stale_ones() {
        let mut e = engine(Recorder::new(), RuleOptions::default());
        let a = rule("192.0.2.2", "198.51.100.2", 50012);
        e.replace(1, &[], &[a]).unwrap();
        e.replace(2, &[], &[a]).unwrap();
        // A dead instance's anchor appears while we run.
        let r = FlatRule::new(&a, &RuleOptions::default()).unwrap();
        e.dev.anchors.insert("ftpsesame/31337.4".into(), vec![r]);
        e.dev.anchors.insert("ftpsesame/777.2".into(), vec![r]);
        e.flush().unwrap();
        let left: Vec<&str> = e.device().anchors.keys().map(String::as_str).collect();
        assert_eq!(left, vec!["ftpsesame/777.2"]);
    }

    #[test]
    fn lookup_tries_in_then_out_and_takes_real_source() {
        let c: SocketAddr = "198.51.100.9:40594".parse().unwrap();
        let s: SocketAddr = "203.0.113.2:21".parse().unwrap();

        let mut e = engine(Recorder::new(), RuleOptions::default());
        assert_eq!(e.lookup(c, s).unwrap(), State::NotTracked);
        assert_eq!(
            calls_after_open(&e),
            vec![Call::Natlook { dir: 1 }, Call::Natlook { dir: 2 }]
        );

        let mut dev = Recorder::new();
        dev.states.insert(2, "192.0.2.2".parse().unwrap()); // NAT on the way out
        let mut e = engine(dev, RuleOptions::default());
        assert_eq!(
            e.lookup(c, s).unwrap(),
            State::Tracked {
                real_client: "192.0.2.2".parse().unwrap(),
            }
        );

        let mut dev = Recorder::new();
        dev.states.insert(1, c.ip());
        let mut e = engine(dev, RuleOptions::default());
        assert_eq!(
            e.lookup(c, s).unwrap(),
            State::Tracked {
                real_client: c.ip(),
            }
        );
        assert_eq!(calls_after_open(&e), vec![Call::Natlook { dir: 1 }]);
    }

    #[test]
    fn tag_and_queue_reach_every_rule() {
        let opts = RuleOptions {
            tag: Some("ftpok".into()),
            queue: Some("ftp".into()),
        };
        let mut e = engine(Recorder::new(), opts.clone());
        let r = rule("2001:db8::2", "2001:db8:1::2", 1024);
        e.replace(7, &[], &[r]).unwrap();
        let held = &e.device().anchors["ftpsesame/4242.7"][0];
        assert_eq!(
            render(held),
            "pass in log inet6 proto tcp from 2001:db8::2 to 2001:db8:1::2 port 1024 flags S/SAFR keep state tag ftpok queue ftp"
        );
    }

    mod windows {
        //! `seqs`: the connection's states found in a dump, in either key
        //! order and under NAT, modulation converted where the capture's
        //! end is known, and no answer otherwise.

        use super::*;
        use crate::core::firewall::SeqRange;
        use crate::firewall::pf::ffi::{FlatKey, FlatPeer, addr_bytes};
        use crate::firewall::pf::seam::fake::STATE_BYTES;

        fn sa(s: &str) -> SocketAddr {
            s.parse().unwrap()
        }

        /// A key with `a` at index 0 and `b` at index 1.
        fn key(a: &str, b: &str) -> FlatKey {
            let (a, b) = (sa(a), sa(b));
            let (af, a_ip) = addr_bytes(a.ip());
            let (_, b_ip) = addr_bytes(b.ip());
            FlatKey {
                af,
                port: [a.port().to_be(), b.port().to_be()],
                addr: [a_ip, b_ip],
                ..FlatKey::default()
            }
        }

        fn peer(seqlo: u32, seqhi: u32, max_win: u16) -> FlatPeer {
            FlatPeer {
                seqlo,
                seqhi,
                max_win,
                ..FlatPeer::default()
            }
        }

        const CLIENT: &str = "192.0.2.2:40594";
        const SERVER: &str = "198.51.100.2:21";
        /// The client as NAT shows it outside.
        const NATTED: &str = "203.0.113.1:61000";

        /// The client's side of the state: sent up to 1000, may send to
        /// 9000, advertised at most 2000.
        fn client_peer() -> FlatPeer {
            peer(1000, 9000, 2000)
        }

        /// The server's: sent up to 5000, may send to 11000, window 4000.
        fn server_peer() -> FlatPeer {
            peer(5000, 11000, 4000)
        }

        /// What the table allows from each side when neither modulates:
        /// from its sent edge less the other's window to its window edge.
        fn plain() -> Seqs {
            Seqs {
                client: SeqRange {
                    lo: 1000u32.wrapping_sub(4000),
                    hi: 9000,
                },
                server: SeqRange {
                    lo: 5000 - 2000,
                    hi: 11000,
                },
            }
        }

        fn state(
            dir: Dir,
            wire: FlatKey,
            stack: FlatKey,
            src: FlatPeer,
            dst: FlatPeer,
        ) -> FlatState {
            FlatState {
                dir: dir as u8,
                key: [wire, stack],
                src,
                dst,
                ..FlatState::default()
            }
        }

        /// A state of another connection of the same client, with other
        /// numbers: never to be taken for the one asked about.
        fn decoy() -> FlatState {
            let k = key("192.0.2.2:40595", SERVER);
            state(Dir::In, k, k, peer(7, 8, 9), peer(10, 11, 12))
        }

        fn seqs(table: Vec<FlatState>, client: &str) -> Option<Seqs> {
            let mut dev = Recorder::new();
            dev.table = table;
            let mut e = engine(dev, RuleOptions::default());
            let got = e.seqs(sa(client), sa(SERVER)).unwrap();
            assert_eq!(
                calls_after_open(&e),
                vec![Call::States {
                    max_bytes: MAX_DUMP_BYTES
                }]
            );
            got
        }

        #[test]
        fn the_connections_state_in_either_key_order() {
            // Created by the client's SYN coming in: the key is in wire
            // order, client first.
            let k = key(CLIENT, SERVER);
            let inbound = state(Dir::In, k, k, client_peer(), server_peer());
            assert_eq!(seqs(vec![decoy(), inbound], CLIENT), Some(plain()));
            // Created by the SYN going out: the key is reversed.
            let k = key(SERVER, CLIENT);
            let outbound = state(Dir::Out, k, k, client_peer(), server_peer());
            assert_eq!(seqs(vec![outbound, decoy()], CLIENT), Some(plain()));
            // Created by the server's segment (pf met the connection
            // mid-stream): the server is the state's source.
            let k = key(SERVER, CLIENT);
            let by_server = state(Dir::In, k, k, server_peer(), client_peer());
            assert_eq!(seqs(vec![by_server], CLIENT), Some(plain()));
        }

        #[test]
        fn window_scale_widens_the_range_back() {
            let k = key(CLIENT, SERVER);
            let mut c = client_peer();
            let mut s = server_peer();
            (c.scaled, c.wscale, s.scaled, s.wscale) = (1, 2, 1, 3);
            let got = seqs(vec![state(Dir::In, k, k, c, s)], CLIENT).unwrap();
            assert_eq!(got.client.lo, 1000u32.wrapping_sub(4000 << 3));
            assert_eq!(got.server.lo, 5000u32.wrapping_sub(2000 << 2));
            assert_eq!((got.client.hi, got.server.hi), (9000, 11000));
        }

        /// Outbound with NAT: the stack key holds the client's own
        /// address, the wire key the translated one.
        fn natted(src: FlatPeer, dst: FlatPeer) -> FlatState {
            state(Dir::Out, key(SERVER, NATTED), key(SERVER, CLIENT), src, dst)
        }

        #[test]
        fn nat_is_found_from_either_side() {
            let st = natted(client_peer(), server_peer());
            assert_eq!(seqs(vec![decoy(), st], CLIENT), Some(plain()));
            assert_eq!(seqs(vec![st], NATTED), Some(plain()));
            // Neither key names the client's other port.
            assert_eq!(seqs(vec![st], "192.0.2.2:40000"), None);
        }

        #[test]
        fn modulation_is_converted_where_the_capture_is_known() {
            const CD: u32 = 0x1000_0000;
            const SD: u32 = 0x2000_0000;
            let mut c = client_peer();
            let mut s = server_peer();
            (c.seqdiff, s.seqdiff) = (CD, SD);
            let st = natted(c, s);
            let shifted = |r: SeqRange, d: u32| SeqRange {
                lo: r.lo.wrapping_add(d),
                hi: r.hi.wrapping_add(d),
            };
            // Outside (the wire key): the client's segments have passed
            // the state and carry its modulation; the server's have not.
            assert_eq!(
                seqs(vec![st], NATTED),
                Some(Seqs {
                    client: shifted(plain().client, CD),
                    server: plain().server,
                })
            );
            // Inside (the stack key): the other way round.
            assert_eq!(
                seqs(vec![st], CLIENT),
                Some(Seqs {
                    client: plain().client,
                    server: shifted(plain().server, SD),
                })
            );
        }

        #[test]
        fn modulation_of_unknown_end_gives_nothing() {
            let mut c = client_peer();
            c.seqdiff = 0x1000_0000;
            // No NAT: both keys match, the capture may be either end.
            let k = key(CLIENT, SERVER);
            assert_eq!(
                seqs(vec![state(Dir::In, k, k, c, server_peer())], CLIENT),
                None
            );
            // NAT pins the end, but a second state of the connection (on
            // the inside interface) may see either numbering.
            let inside = state(Dir::In, k, k, client_peer(), server_peer());
            let outside = natted(c, server_peer());
            assert_eq!(seqs(vec![inside, outside], CLIENT), None);
        }

        #[test]
        fn several_plain_states_join_into_the_widest_range() {
            let k = key(CLIENT, SERVER);
            let inside = state(Dir::In, k, k, client_peer(), server_peer());
            // The outside state saw a little more of both sides.
            let outside = natted(peer(1200, 9300, 2000), peer(5100, 11200, 4000));
            let got = seqs(vec![inside, outside], CLIENT).unwrap();
            assert_eq!(
                got.client,
                SeqRange {
                    lo: 1000u32.wrapping_sub(4000),
                    hi: 9300
                }
            );
            assert_eq!(
                got.server,
                SeqRange {
                    lo: 3000,
                    hi: 11200
                }
            );
        }

        #[test]
        fn unfollowed_windows_give_nothing() {
            let k = key(CLIENT, SERVER);
            let mut sloppy = state(Dir::In, k, k, client_peer(), server_peer());
            sloppy.sloppy = 1;
            assert_eq!(seqs(vec![sloppy], CLIENT), None);
            // The server has not sent since pf met the connection.
            let silent = state(Dir::In, k, k, client_peer(), peer(0, 1, 1));
            assert_eq!(seqs(vec![silent], CLIENT), None);
        }

        #[test]
        fn not_in_the_table_is_none() {
            assert_eq!(seqs(vec![], CLIENT), None);
            assert_eq!(seqs(vec![decoy()], CLIENT), None);
            // Only TCP states of this family are ever copied out, but a
            // key of another family must not match by its bytes.
            let mut k = key(CLIENT, SERVER);
            k.af = crate::firewall::pf::ffi::AF_INET6;
            assert_eq!(
                seqs(
                    vec![state(Dir::In, k, k, client_peer(), server_peer())],
                    CLIENT
                ),
                None
            );
        }

        #[test]
        fn too_many_states_of_one_connection_are_not_trusted() {
            let k = key(CLIENT, SERVER);
            let st = state(Dir::In, k, k, client_peer(), server_peer());
            assert_eq!(seqs(vec![st; MAX_MATCHES + 1], CLIENT), None);
            assert_eq!(seqs(vec![st; MAX_MATCHES], CLIENT), Some(plain()));
        }

        #[test]
        fn a_table_too_large_is_not_read_and_counted() {
            let k = key(CLIENT, SERVER);
            let mut dev = Recorder::new();
            dev.table = vec![state(Dir::In, k, k, client_peer(), server_peer())];
            dev.other_states = MAX_DUMP_BYTES / STATE_BYTES;
            let mut e = engine(dev, RuleOptions::default());
            for n in 1..=3 {
                assert_eq!(e.seqs(sa(CLIENT), sa(SERVER)).unwrap(), None);
                assert_eq!(e.tables_too_large, n);
            }
            // Logged the first time, then at 2, 4, 8...
            let logged: Vec<u64> = (1..=9).filter(|&n| worth_logging(n)).collect();
            assert_eq!(logged, vec![1, 2, 4, 8]);
            // One state fewer and the table is read.
            e.dev.other_states -= 1;
            assert_eq!(e.seqs(sa(CLIENT), sa(SERVER)).unwrap(), Some(plain()));
            assert_eq!(e.tables_too_large, 3);
        }
    }

    #[test]
    fn child_anchor_names() {
        assert_eq!(anchor_name(4242, 7), "ftpsesame/4242.7");
        assert_eq!(parse_child("4242.7"), Some((4242, 7)));
        assert_eq!(parse_child("4242."), None);
        assert_eq!(parse_child(".7"), None);
        assert_eq!(parse_child("admin"), None);
        assert_eq!(parse_child("1.2.3"), None);
        assert_eq!(parse_child("+1.2"), None);
    }
}

//! `PfEngine`: the pf backend's logic over any [`PfDevice`], the same for
//! `/dev/pf` on the BSDs and the pfctl crate on macOS. It owns the
//! per-session bookkeeping (which sessions' anchors hold rules), turns a
//! replace into one transaction on the session's anchor, rolls back on
//! failure, and takes over anchors of dead instances.
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

use super::ffi::{Dir, FlatNatlook, FlatRule};
use super::seam::PfDevice;
use crate::core::log::Level;
use crate::core::rule::{Rule, RuleOptions};
use crate::firewall::{Error, Firewall, State};
use crate::logmsg;

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

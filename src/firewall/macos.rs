//! The pf backend for macOS, through the `pfctl` crate.
//!
//! Same meaning as the BSD backend: one anchor per session,
//! `ftpsesame/<pid>.<id>`, replaced whole in one transaction (the crate's
//! `Transaction`: DIOCXBEGIN, DIOCADDRULE per rule, DIOCXCOMMIT), emptied to
//! remove it, and stale anchors of dead instances removed at start and exit.
//! Rules are `pass in log quick inet[6] proto tcp from $src to $dst port
//! $port flags S/SAFR keep state`.
//!
//! Where the crate falls short of the BSD backend (see [`GAPS`]):
//! - it cannot set `tag` or `queue`, so `-t`/`-q` are refused at start
//!   rather than silently dropped (`-t` also changes `quick`);
//! - it has no DIOCNATLOOK: the state check lists all states
//!   (DIOCGETSTATES, cost grows with the state table) and matches the
//!   connection by its un-NATed addresses; a client behind NAT on this host
//!   is reported as not tracked, so there is no `passive/nat` extra rule;
//! - each transaction reopens `/dev/pf`, so the daemon must still be able to
//!   open it after dropping privileges (no chroot without `/dev/pf` inside);
//! - it cannot list anchors, so the clean-up lists `ftpsesame/`'s children
//!   with one DIOCGETRULESETS/DIOCGETRULESET ioctl pair defined here (the
//!   `pfioc_ruleset` layout has been stable since OpenBSD 3.x, from which
//!   macOS pf derives);
//! - macOS bpf has no write filter or lock (see `bpflock`).

use std::net::SocketAddr;

use super::State;

/// The gaps above as one paragraph, for the manual.
pub const GAPS: &str = "On macOS ftpsesame drives pf through the pfctl library, which \
cannot set tags or queues: -t and -q are refused. The state check lists the whole \
state table instead of a single DIOCNATLOOK, and recognises a control connection \
only by its addresses before NAT, so ftpsesame must see the client's own address \
(no passive/nat extra rule); a NATed client is reported as not in the state table. \
Each rule change reopens /dev/pf, so the daemon does not chroot on macOS. macOS bpf \
has no write filter and no lock, so the capture descriptor cannot be locked.";

/// Match a control connection against states given as (local, remote)
/// socket address pairs as pf reports them (`lan`, `ext`): either side may
/// be the local one. Only exact matches count.
pub fn match_states<I>(states: I, client: SocketAddr, server: SocketAddr) -> State
where
    I: IntoIterator<Item = (SocketAddr, SocketAddr)>,
{
    for (local, remote) in states {
        if (local == client && remote == server) || (local == server && remote == client) {
            return State::Tracked {
                real_client: client.ip(),
            };
        }
    }
    State::NotTracked
}

/// `-t`/`-q` cannot be honoured by the crate.
pub fn check_options(opts: &crate::core::rule::RuleOptions) -> Result<(), super::Error> {
    if opts.tag.is_some() {
        return Err(super::Error("-t is not supported on macOS".into()));
    }
    if opts.queue.is_some() {
        return Err(super::Error("-q is not supported on macOS".into()));
    }
    Ok(())
}

#[cfg(target_os = "macos")]
pub use real::PfMac;

#[cfg(target_os = "macos")]
mod real {
    use std::collections::BTreeSet;
    use std::ffi::CStr;
    use std::fs::{File, OpenOptions};
    use std::net::SocketAddr;
    use std::os::fd::AsRawFd;

    use pfctl::{
        AddrFamily, AnchorChange, Direction, Endpoint, FilterRule, FilterRuleAction,
        FilterRuleBuilder, PfCtl, Port, PortUnaryModifier, Proto, RuleLog, RuleLogSet, StatePolicy,
        TcpFlag, TcpFlags, Transaction,
    };

    use super::{check_options, match_states};
    use crate::core::rule::{ANCHOR_PARENT, Rule, RuleOptions, anchor_name};
    use crate::firewall::pf::parse_child;
    use crate::firewall::{Error, Firewall, State};

    fn err(what: &str, e: impl std::fmt::Display) -> Error {
        Error(format!("{what}: {e}"))
    }

    /// `struct pfioc_ruleset` of macOS pf.
    #[repr(C)]
    struct PfiocRuleset {
        nr: u32,
        path: [libc::c_char; 1024], // MAXPATHLEN
        name: [libc::c_char; 64],   // PF_ANCHOR_NAME_SIZE
    }
    const _: () = assert!(std::mem::size_of::<PfiocRuleset>() == 1092);

    /// _IOWR('D', n, struct pfioc_ruleset) with macOS's ioctl encoding.
    const fn iowr(n: u64) -> libc::c_ulong {
        const IOC_INOUT: u64 = 0xc000_0000;
        let len = (std::mem::size_of::<PfiocRuleset>() as u64) & 0x1fff;
        (IOC_INOUT | (len << 16) | ((b'D' as u64) << 8) | n) as libc::c_ulong
    }
    const DIOCGETRULESETS: libc::c_ulong = iowr(58);
    const DIOCGETRULESET: libc::c_ulong = iowr(59);

    /// pf through the pfctl crate.
    pub struct PfMac {
        pf: PfCtl,
        /// Our own descriptor for the anchor listing the crate lacks.
        dev: File,
        pid: u32,
        live: BTreeSet<u32>,
    }

    impl PfMac {
        /// Refuse `-t`/`-q`, check that pf is enabled (`pf is disabled`),
        /// remove anchors of dead instances.
        pub fn open(opts: RuleOptions) -> Result<PfMac, Error> {
            check_options(&opts)?;
            let mut pf = PfCtl::new().map_err(|e| err("open /dev/pf", e))?;
            if !pf.is_enabled().map_err(|e| err("DIOCGETSTATUS", e))? {
                return Err(Error("pf is disabled".into()));
            }
            let dev = OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/pf")
                .map_err(|e| err("open /dev/pf", e))?;
            let mut m = PfMac {
                pf,
                dev,
                pid: std::process::id(),
                live: BTreeSet::new(),
            };
            m.remove_stale()?;
            Ok(m)
        }

        fn children(&self) -> Result<Vec<String>, Error> {
            // SAFETY: all-zero is a valid PfiocRuleset.
            let mut rs: PfiocRuleset = unsafe { std::mem::zeroed() };
            for (d, s) in rs.path.iter_mut().zip(ANCHOR_PARENT.bytes()) {
                *d = s as libc::c_char;
            }
            let fd = self.dev.as_raw_fd();
            // SAFETY: rs is a valid pfioc_ruleset for this ioctl.
            if unsafe { libc::ioctl(fd, DIOCGETRULESETS, &mut rs) } == -1 {
                let e = std::io::Error::last_os_error();
                // No parent ruleset yet: nothing to clean.
                if e.raw_os_error() == Some(libc::EINVAL) {
                    return Ok(Vec::new());
                }
                return Err(err("DIOCGETRULESETS", e));
            }
            let mut names = Vec::new();
            for nr in 0..rs.nr {
                rs.nr = nr;
                // SAFETY: as above.
                if unsafe { libc::ioctl(fd, DIOCGETRULESET, &mut rs) } == -1 {
                    return Err(err("DIOCGETRULESET", std::io::Error::last_os_error()));
                }
                rs.name[63] = 0;
                // SAFETY: NUL-terminated just above.
                let name = unsafe { CStr::from_ptr(rs.name.as_ptr()) };
                names.push(name.to_string_lossy().into_owned());
            }
            Ok(names)
        }

        fn commit(&mut self, anchor: &str, rules: Vec<FilterRule>) -> Result<(), Error> {
            let mut change = AnchorChange::new();
            change.set_filter_rules(rules);
            let mut t = Transaction::new();
            t.add_change(anchor, change);
            t.commit().map_err(|e| err("DIOCXCOMMIT", e))
        }

        fn remove_stale(&mut self) -> Result<usize, Error> {
            let mut removed = 0;
            for child in self.children()? {
                let Some((pid, _)) = parse_child(&child) else {
                    continue;
                };
                if pid == self.pid || !crate::firewall::pf::process_alive(pid) {
                    self.commit(&format!("{ANCHOR_PARENT}/{child}"), Vec::new())?;
                    removed += 1;
                }
            }
            Ok(removed)
        }

        fn filter_rule(r: &Rule) -> Result<FilterRule, Error> {
            let af = if r.is_ipv6() {
                AddrFamily::Ipv6
            } else {
                AddrFamily::Ipv4
            };
            FilterRuleBuilder::default()
                .action(FilterRuleAction::Pass)
                .direction(Direction::In)
                .quick(true)
                .log(RuleLogSet::new(&[RuleLog::ExcludeMatchingState]))
                .keep_state(StatePolicy::Keep)
                .proto(Proto::Tcp)
                .af(af)
                .from(Endpoint::new(r.src, Port::Any))
                .to(Endpoint::new(
                    r.dst,
                    Port::One(r.port, PortUnaryModifier::Equal),
                ))
                .tcp_flags(TcpFlags::new(
                    &[TcpFlag::Syn],
                    &[TcpFlag::Syn, TcpFlag::Ack, TcpFlag::Fin, TcpFlag::Rst],
                ))
                .build()
                .map_err(|e| err("rule", e))
        }
    }

    impl Firewall for PfMac {
        fn lookup(&mut self, client: SocketAddr, server: SocketAddr) -> Result<State, Error> {
            let states = self.pf.get_states().map_err(|e| err("DIOCGETSTATES", e))?;
            let pairs = states.iter().filter_map(|s| {
                if !matches!(s.proto(), Ok(Proto::Tcp)) {
                    return None;
                }
                Some((s.local_address().ok()?, s.remote_address().ok()?))
            });
            Ok(match_states(pairs, client, server))
        }

        fn replace(&mut self, session: u32, _old: &[Rule], new: &[Rule]) -> Result<(), Error> {
            let rules = new
                .iter()
                .map(Self::filter_rule)
                .collect::<Result<Vec<_>, _>>()?;
            let empty = rules.is_empty();
            self.commit(&anchor_name(self.pid, session), rules)?;
            if empty {
                self.live.remove(&session);
            } else {
                self.live.insert(session);
            }
            Ok(())
        }

        fn flush(&mut self) -> Result<(), Error> {
            let mut first = None;
            for session in std::mem::take(&mut self.live) {
                if let Err(e) = self.commit(&anchor_name(self.pid, session), Vec::new()) {
                    first.get_or_insert(e);
                }
            }
            if let Err(e) = self.remove_stale() {
                first.get_or_insert(e);
            }
            first.map_or(Ok(()), Err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::rule::RuleOptions;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn state_match_is_exact_in_either_orientation() {
        let c = sa("192.0.2.2:40594");
        let s = sa("198.51.100.2:21");
        let tracked = State::Tracked {
            real_client: c.ip(),
        };
        assert_eq!(match_states([(c, s)], c, s), tracked);
        assert_eq!(match_states([(s, c)], c, s), tracked);
        // Same hosts, other client port: another connection.
        assert_eq!(
            match_states([(sa("192.0.2.2:40595"), s)], c, s),
            State::NotTracked
        );
        // A NATed client is seen by pf under its inside address only.
        assert_eq!(
            match_states([(sa("10.0.0.7:40594"), s)], c, s),
            State::NotTracked
        );
        assert_eq!(match_states([], c, s), State::NotTracked);
    }

    #[test]
    fn tag_and_queue_are_refused() {
        assert!(check_options(&RuleOptions::default()).is_ok());
        let t = RuleOptions {
            tag: Some("ftpok".into()),
            queue: None,
        };
        assert_eq!(
            check_options(&t).unwrap_err().0,
            "-t is not supported on macOS"
        );
        let q = RuleOptions {
            tag: None,
            queue: Some("ftp".into()),
        };
        assert_eq!(
            check_options(&q).unwrap_err().0,
            "-q is not supported on macOS"
        );
    }
}

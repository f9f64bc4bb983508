//! The pf device for macOS, through the `pfctl` crate.
//!
//! `pf::engine::PfEngine` does the work on macOS as on the BSDs (one
//! anchor per session, `ftpsesame/<pid>.<id>`, replaced whole in one
//! transaction, emptied to remove it, stale anchors of dead instances
//! removed at start and exit); this file only answers its `PfDevice`
//! calls with what the crate offers.
//!
//! Where the crate falls short of `/dev/pf` on the BSDs:
//! - it cannot set `tag` or `queue`, so `-t`/`-q` are refused at start
//!   ([`check_options`]) rather than silently dropped (`-t` also changes
//!   `quick`);
//! - it has no DIOCNATLOOK: the state check lists all states
//!   (DIOCGETSTATES, cost grows with the state table) and matches the
//!   connection by its un-NATed addresses in either orientation, so the
//!   engine's inbound query answers for both directions and the outbound
//!   one reports nothing; a client behind NAT on this host is reported as
//!   not tracked, so there is no `passive/nat` extra rule;
//! - its transaction is built whole and committed at once: `begin` and
//!   `add_rule` collect the rules, `commit` hands them over, `rollback`
//!   drops them; each commit reopens `/dev/pf`, so the daemon must still be
//!   able to open it after dropping privileges (no chroot without `/dev/pf`
//!   inside);
//! - it cannot list anchors, so `ftpsesame/`'s children are listed with one
//!   DIOCGETRULESETS/DIOCGETRULESET ioctl pair defined here (the
//!   `pfioc_ruleset` layout has been stable since OpenBSD 3.x, from which
//!   macOS pf derives);
//! - macOS bpf has no write filter or lock (see `bpflock`).

use std::net::SocketAddr;

use super::Error;
use crate::core::rule::RuleOptions;

/// Match a control connection against states given as (local, remote)
/// socket address pairs as pf reports them (`lan`, `ext`): either side may
/// be the local one. Only exact matches count.
pub(crate) fn match_states<I>(states: I, client: SocketAddr, server: SocketAddr) -> bool
where
    I: IntoIterator<Item = (SocketAddr, SocketAddr)>,
{
    states.into_iter().any(|(local, remote)| {
        (local == client && remote == server) || (local == server && remote == client)
    })
}

/// `-t`/`-q` cannot be honoured by the crate.
pub(crate) fn check_options(opts: &RuleOptions) -> Result<(), Error> {
    if opts.tag.is_some() {
        return Err(Error::Unsupported("-t is not supported on macOS"));
    }
    if opts.queue.is_some() {
        return Err(Error::Unsupported("-q is not supported on macOS"));
    }
    Ok(())
}

#[cfg(target_os = "macos")]
pub(crate) use real::MacDevice;

#[cfg(target_os = "macos")]
mod real {
    use std::ffi::CStr;
    use std::fs::File;
    use std::io;
    use std::net::SocketAddr;
    use std::os::fd::AsRawFd;

    use pfctl::{
        AddrFamily, AnchorChange, Direction, Endpoint, FilterRule, FilterRuleAction,
        FilterRuleBuilder, PfCtl, Port, PortUnaryModifier, Proto, RuleLog, RuleLogSet, StatePolicy,
        TcpFlag, TcpFlags, Transaction,
    };

    use super::match_states;
    use crate::firewall::Error;
    use crate::firewall::pf::ffi::{self, Dir, FlatNatlook, FlatRule};
    use crate::firewall::pf::seam::{PfDevice, Ticket, open_dev_pf};

    /// A pfctl error as the failed step's error, the crate's error kept as
    /// the source.
    fn ioctl(name: &'static str, e: pfctl::Error) -> Error {
        Error::Ioctl {
            name,
            source: io::Error::other(e),
        }
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

    /// pf through the pfctl crate, plus our own descriptor for the anchor
    /// listing the crate lacks.
    pub(crate) struct MacDevice {
        pf: PfCtl,
        dev: File,
        /// The transaction being built: anchor, ticket, rules so far.
        open: Option<(String, Ticket, Vec<FilterRule>)>,
        next_ticket: u32,
    }

    impl MacDevice {
        pub(crate) fn open() -> Result<MacDevice, Error> {
            let pf = PfCtl::new().map_err(|e| Error::Open {
                what: "open /dev/pf",
                source: io::Error::other(e),
            })?;
            let dev = open_dev_pf()?;
            Ok(MacDevice {
                pf,
                dev,
                open: None,
                next_ticket: 0,
            })
        }

        /// The crate's rule for a flat rule; tag and queue were refused at
        /// start.
        fn filter_rule(r: &FlatRule) -> Result<FilterRule, Error> {
            let af = if r.af == ffi::AF_INET {
                AddrFamily::Ipv4
            } else {
                AddrFamily::Ipv6
            };
            let flags = |bits: u8| -> Vec<TcpFlag> {
                [
                    (ffi::TH_SYN, TcpFlag::Syn),
                    (ffi::TH_ACK, TcpFlag::Ack),
                    (ffi::TH_FIN, TcpFlag::Fin),
                    (ffi::TH_RST, TcpFlag::Rst),
                ]
                .into_iter()
                .filter(|(b, _)| bits & b != 0)
                .map(|(_, f)| f)
                .collect()
            };
            let log = if r.log != 0 {
                RuleLogSet::new(&[RuleLog::ExcludeMatchingState])
            } else {
                RuleLogSet::new(&[])
            };
            FilterRuleBuilder::default()
                .action(FilterRuleAction::Pass)
                .direction(Direction::In)
                .quick(r.quick != 0)
                .log(log)
                .keep_state(StatePolicy::Keep)
                .proto(Proto::Tcp)
                .af(af)
                .from(Endpoint::new(ffi::addr_from(r.af, &r.src), Port::Any))
                .to(Endpoint::new(
                    ffi::addr_from(r.af, &r.dst),
                    Port::One(u16::from_be(r.port), PortUnaryModifier::Equal),
                ))
                .tcp_flags(TcpFlags::new(&flags(r.flags), &flags(r.flagset)))
                .build()
                .map_err(|e| ioctl("DIOCADDRULE", e))
        }
    }

    fn busy(name: &'static str) -> Error {
        Error::Ioctl {
            name,
            source: io::Error::from_raw_os_error(libc::EBUSY),
        }
    }

    impl PfDevice for MacDevice {
        fn running(&mut self) -> Result<bool, Error> {
            self.pf.is_enabled().map_err(|e| ioctl("DIOCGETSTATUS", e))
        }

        fn natlook(&mut self, q: &mut FlatNatlook) -> Result<bool, Error> {
            // The state list matches both orientations at once: the inbound
            // query answers for both, the outbound one has nothing to add.
            if q.dir != Dir::In as u8 {
                return Ok(false);
            }
            let client = SocketAddr::new(ffi::addr_from(q.af, &q.saddr), u16::from_be(q.sport));
            let server = SocketAddr::new(ffi::addr_from(q.af, &q.daddr), u16::from_be(q.dport));
            let states = self
                .pf
                .get_states()
                .map_err(|e| ioctl("DIOCGETSTATES", e))?;
            let pairs = states.iter().filter_map(|s| {
                if !matches!(s.proto(), Ok(Proto::Tcp)) {
                    return None;
                }
                Some((s.local_address().ok()?, s.remote_address().ok()?))
            });
            // rsaddr stays zero: the engine then takes the captured client.
            Ok(match_states(pairs, client, server))
        }

        fn begin(&mut self, anchor: &str) -> Result<Ticket, Error> {
            self.next_ticket = self.next_ticket.wrapping_add(1);
            let t = Ticket {
                rules: self.next_ticket,
                pool: 0,
            };
            self.open = Some((anchor.to_string(), t, Vec::new()));
            Ok(t)
        }

        fn add_rule(&mut self, anchor: &str, ticket: Ticket, rule: &FlatRule) -> Result<(), Error> {
            let r = Self::filter_rule(rule)?;
            match &mut self.open {
                Some((a, t, rules)) if a == anchor && *t == ticket => {
                    rules.push(r);
                    Ok(())
                }
                _ => Err(busy("DIOCADDRULE")),
            }
        }

        fn commit(&mut self, anchor: &str, ticket: Ticket) -> Result<(), Error> {
            match self.open.take() {
                Some((a, t, rules)) if a == anchor && t == ticket => {
                    let mut change = AnchorChange::new();
                    change.set_filter_rules(rules);
                    let mut tx = Transaction::new();
                    tx.add_change(anchor, change);
                    tx.commit().map_err(|e| ioctl("DIOCXCOMMIT", e))
                }
                _ => Err(busy("DIOCXCOMMIT")),
            }
        }

        fn rollback(&mut self, _anchor: &str, _ticket: Ticket) -> Result<(), Error> {
            self.open = None;
            Ok(())
        }

        fn list_anchors(&mut self, parent: &str) -> Result<Vec<String>, Error> {
            // SAFETY: all-zero is a valid PfiocRuleset.
            let mut rs: PfiocRuleset = unsafe { std::mem::zeroed() };
            // Leave the last byte NUL: a longer parent is cut, never unterminated.
            let room = rs.path.len() - 1;
            for (d, s) in rs.path[..room].iter_mut().zip(parent.bytes()) {
                *d = s as libc::c_char;
            }
            let fd = self.dev.as_raw_fd();
            // SAFETY: rs is a valid pfioc_ruleset for this ioctl.
            if unsafe { libc::ioctl(fd, DIOCGETRULESETS, &mut rs) } == -1 {
                let e = io::Error::last_os_error();
                // No parent ruleset yet: nothing to clean.
                if e.raw_os_error() == Some(libc::EINVAL) {
                    return Ok(Vec::new());
                }
                return Err(Error::Ioctl {
                    name: "DIOCGETRULESETS",
                    source: e,
                });
            }
            let mut names = Vec::new();
            for nr in 0..rs.nr {
                rs.nr = nr;
                // SAFETY: as above.
                if unsafe { libc::ioctl(fd, DIOCGETRULESET, &mut rs) } == -1 {
                    return Err(Error::Ioctl {
                        name: "DIOCGETRULESET",
                        source: io::Error::last_os_error(),
                    });
                }
                rs.name[63] = 0;
                // SAFETY: NUL-terminated just above.
                let name = unsafe { CStr::from_ptr(rs.name.as_ptr()) };
                names.push(name.to_string_lossy().into_owned());
            }
            Ok(names)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn state_match_is_exact_in_either_orientation() {
        let c = sa("192.0.2.2:40594");
        let s = sa("198.51.100.2:21");
        assert!(match_states([(c, s)], c, s));
        assert!(match_states([(s, c)], c, s));
        // Same hosts, other client port: another connection.
        assert!(!match_states([(sa("192.0.2.2:40595"), s)], c, s));
        // A NATed client is seen by pf under its inside address only.
        assert!(!match_states([(sa("10.0.0.7:40594"), s)], c, s));
        assert!(!match_states([], c, s));
    }

    #[test]
    fn tag_and_queue_are_refused() {
        assert!(check_options(&RuleOptions::default()).is_ok());
        let t = RuleOptions {
            tag: Some("ftpok".into()),
            queue: None,
        };
        assert_eq!(
            check_options(&t).unwrap_err().to_string(),
            "-t is not supported on macOS"
        );
        let q = RuleOptions {
            tag: None,
            queue: Some("ftp".into()),
        };
        assert_eq!(
            check_options(&q).unwrap_err().to_string(),
            "-q is not supported on macOS"
        );
    }
}

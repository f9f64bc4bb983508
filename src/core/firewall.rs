//! The firewall seam as the engine sees it: what it asks of a packet
//! filter, in rules and addresses only, and how a backend says it failed.
//! The backends that implement it live in `crate::firewall`; the engine
//! above it is pure.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};

use crate::core::rule::Rule;

/// A failed firewall operation: one variant per step that can fail, the
/// operating system's error kept as the [`source`](std::error::Error::source).
/// `Display` is the log line.
#[derive(Debug)]
pub enum Error {
    /// The packet filter's device or socket could not be opened; `what`
    /// names it (`open /dev/pf`, `nftables netlink socket`).
    Open {
        what: &'static str,
        source: io::Error,
    },
    /// The conntrack lookup of a control connection failed.
    Lookup(io::Error),
    /// Reading the whole state table (a conntrack dump) failed.
    StateTable(io::Error),
    /// An nftables request (a commit, or reading the table at start) failed
    /// or got no answer: `step` says what it did (`cannot add elements
    /// to`), `target` the set or table it named (empty when none).
    Netlink {
        step: &'static str,
        target: String,
        source: io::Error,
    },
    /// A pf ioctl failed; `name` is the ioctl as pfctl prints it.
    Ioctl {
        name: &'static str,
        source: io::Error,
    },
    /// The admin's ruleset does not hold what the backend needs. The
    /// backend's own error says what is wrong and what to add (for
    /// nftables: a missing table or set, or a set declared differently).
    Ruleset(Box<dyn std::error::Error + Send + Sync>),
    /// pf is not enabled.
    PfDisabled,
    /// A rule or a connection whose two addresses are of different
    /// families; `what` is `rule` or `connection`.
    MixedFamilies {
        what: &'static str,
        src: IpAddr,
        dst: IpAddr,
    },
    /// An nftables family other than inet, ip and ip6.
    UnknownFamily(String),
    /// A name pf cannot hold: `what` is `tag`, `queue` or `anchor name`,
    /// `why` is `too long` or `contains NUL`.
    BadName {
        what: &'static str,
        why: &'static str,
    },
    /// An option this system's backend cannot honour, as the full sentence.
    Unsupported(&'static str),
}

/// The one hint worth giving: the daemon lost CAP_NET_ADMIN (EPERM from
/// netlink), which `subsystem` needs.
fn write_hint(f: &mut fmt::Formatter<'_>, e: &io::Error, subsystem: &str) -> fmt::Result {
    if e.kind() == io::ErrorKind::PermissionDenied {
        write!(f, " ({subsystem} needs CAP_NET_ADMIN)")?;
    }
    Ok(())
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Open { what, source } => write!(f, "{what}: {source}"),
            Error::Lookup(e) => {
                write!(f, "conntrack lookup: {e}")?;
                write_hint(f, e, "ctnetlink")
            }
            Error::StateTable(e) => {
                write!(f, "conntrack dump: {e}")?;
                write_hint(f, e, "ctnetlink")
            }
            Error::Netlink {
                step,
                target,
                source,
            } => {
                write!(f, "nftables: {step}")?;
                if !target.is_empty() {
                    write!(f, " {target}")?;
                }
                write!(f, ": {source}")?;
                write_hint(f, source, "nfnetlink")
            }
            Error::Ioctl { name, source } => write!(f, "{name}: {source}"),
            Error::Ruleset(e) => e.fmt(f),
            Error::PfDisabled => f.write_str("pf is disabled"),
            Error::MixedFamilies { what, src, dst } => {
                write!(f, "{what} mixes address families: {src} to {dst}")
            }
            Error::UnknownFamily(name) => {
                write!(f, "unknown nftables family `{name}` (use inet, ip or ip6)")
            }
            Error::BadName { what, why } => write!(f, "{what} {why}"),
            Error::Unsupported(sentence) => f.write_str(sentence),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Open { source, .. }
            | Error::Netlink { source, .. }
            | Error::Ioctl { source, .. }
            | Error::Lookup(source)
            | Error::StateTable(source) => Some(source),
            Error::Ruleset(e) => Some(e.as_ref()),
            Error::PfDisabled
            | Error::MixedFamilies { .. }
            | Error::UnknownFamily(_)
            | Error::BadName { .. }
            | Error::Unsupported(_) => None,
        }
    }
}

/// Result of looking a control connection up in the firewall's state table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Tracked. `real_client` is the client's address before NAT; it equals
    /// the captured client address when no NAT is involved.
    Tracked { real_client: IpAddr },
    /// The firewall has no state for this connection: do not trust it.
    NotTracked,
}

/// The sequence numbers a state table would accept next from each side of
/// a connection, in the numbering the capture sees (after any sequence
/// modulation the firewall applies on the way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seqs {
    pub client: SeqRange,
    pub server: SeqRange,
}

/// From `lo` up to `hi` on the 32-bit sequence circle (RFC 1982): for a
/// sender, its oldest byte still acceptable to the table (its highest
/// sent minus the receiver's largest window) up to the right edge of the
/// receiver's window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqRange {
    pub lo: u32,
    pub hi: u32,
}

impl SeqRange {
    /// True when `seq` lies within the range widened by `slack` on each
    /// side (the capture may be a little ahead of or behind the table).
    pub fn holds(&self, seq: u32, slack: u32) -> bool {
        let from = self.lo.wrapping_sub(slack);
        let span = self.hi.wrapping_sub(from).saturating_add(slack);
        seq.wrapping_sub(from) <= span
    }
}

/// A packet-filter backend.
///
/// Sessions are identified by the engine's session number (`#N` in the
/// log); pf uses it for the anchor name, nftables only for bookkeeping.
pub trait Firewall {
    /// Look the control connection `client -> server` up in the state table,
    /// as captured (after any NAT on the capture interface).
    fn lookup(&mut self, client: SocketAddr, server: SocketAddr) -> Result<State, Error>;

    /// Replace the rules of `session`: remove `old` (what was committed for
    /// it before) and add `new`, as one transaction where the firewall
    /// allows. `new` empty means "remove the session's rules".
    fn replace(&mut self, session: u32, old: &[Rule], new: &[Rule]) -> Result<(), Error>;

    /// Remove everything this process added (shutdown, or start-up clean-up).
    fn flush(&mut self) -> Result<(), Error>;

    /// What the state table knows of the sequence numbers of the tracked
    /// connection `client -> server` (as captured), when it follows them
    /// (pf does; Linux's conntrack does not tell): asked only for a
    /// connection picked up mid-stream, which must agree with it. None
    /// when the table does not follow them or does not hold it.
    fn seqs(&mut self, _client: SocketAddr, _server: SocketAddr) -> Result<Option<Seqs>, Error> {
        Ok(None)
    }

    /// Periodic housekeeping, called from the engine's tick with its clock
    /// `now` (microseconds; capture time, so in a replay the capture's).
    /// pf removes here the anchors it adopted from a previous instance once
    /// they have been held for a rule timeout, counted from the first
    /// call; backends whose rules expire by themselves do nothing.
    fn expire(&mut self, _now: u64) {}
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn ranges_wrap_around_the_circle() {
        let r = SeqRange {
            lo: u32::MAX - 10,
            hi: 20,
        };
        assert!(r.holds(u32::MAX, 0) && r.holds(0, 0) && r.holds(20, 0));
        assert!(!r.holds(21, 0) && !r.holds(u32::MAX - 11, 0));
        assert!(r.holds(25, 5) && r.holds(u32::MAX - 15, 5));
        assert!(!r.holds(1 << 31, 1000));
    }

    #[test]
    fn display_is_the_log_line_and_source_the_os_error() {
        let eperm = || io::Error::from_raw_os_error(libc::EPERM);
        let e = Error::Netlink {
            step: "cannot add elements to",
            target: "set inet filter ftpsesame4".into(),
            source: eperm(),
        };
        assert_eq!(
            e.to_string(),
            format!(
                "nftables: cannot add elements to set inet filter ftpsesame4: {} (nfnetlink needs CAP_NET_ADMIN)",
                eperm()
            )
        );
        let inner = e.source().unwrap().downcast_ref::<io::Error>().unwrap();
        assert_eq!(inner.raw_os_error(), Some(libc::EPERM));

        let e = Error::Lookup(eperm());
        assert!(e.to_string().ends_with("(ctnetlink needs CAP_NET_ADMIN)"));
        let e = Error::Netlink {
            step: "waiting for the kernel",
            target: String::new(),
            source: io::Error::from_raw_os_error(libc::ENOBUFS),
        };
        assert_eq!(
            e.to_string(),
            format!(
                "nftables: waiting for the kernel: {}",
                io::Error::from_raw_os_error(libc::ENOBUFS)
            )
        );
        assert_eq!(Error::PfDisabled.to_string(), "pf is disabled");
        assert!(Error::PfDisabled.source().is_none());
    }
}

//! The packet source `-i` names, behind one poll-and-read interface.
//!
//! Three kinds:
//! - before the filter: a libpcap capture on an interface (`-i em0`, the
//!   default); sees what arrives, whether or not the firewall passes it;
//! - after the filter: what the firewall logged as passed, through libpcap
//!   too: an NFLOG group on Linux (`-i nflog:N`), pflog on the BSDs
//!   (`-i pflog0`, an ordinary interface to libpcap);
//! - inline: the firewall holds each packet until we release it, after its
//!   rule is committed: an nfnetlink queue on Linux (`-i nfqueue:N`), a
//!   divert socket on FreeBSD and OpenBSD (`-i divert:PORT`).
//!
//! Only an interface capture applies the pcap expression. For NFLOG, queue
//! and divert sources the firewall rule that sends packets to us is the
//! filter; an expression given anyway only names the control ports (the
//! engine reads them from it for every source), with a notice.

use std::fmt;
use std::os::fd::RawFd;

use crate::core::decode::Link;
use crate::core::log::Level;
use crate::os::capture::{Frame, Live};
use crate::os::cli::DEFAULT_EXPRESSION;

/// What `-i` asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Spec {
    /// A libpcap interface (None: pcap's default device).
    Interface(Option<String>),
    /// `nflog:N`: NFLOG group N through libpcap.
    Nflog(u16),
    /// `nfqueue:N`: nfnetlink queue N, inline.
    Nfqueue(u16),
    /// `divert:PORT`: divert socket, inline.
    Divert(u16),
}

/// Why a source could not be opened or read.
#[derive(Debug)]
pub enum Error {
    /// `-i kind:N` with N not a number from 0 to 65535.
    BadNumber(String),
    /// A source this system does not have.
    Unsupported(&'static str),
    /// libpcap's error.
    Capture(crate::os::capture::Error),
    #[cfg(target_os = "linux")]
    Nfqueue(crate::os::nfqueue::Error),
    Divert(crate::os::divert::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadNumber(s) => write!(f, "{s}: not a number from 0 to 65535"),
            Error::Unsupported(what) => write!(f, "{what}"),
            Error::Capture(e) => write!(f, "{e}"),
            #[cfg(target_os = "linux")]
            Error::Nfqueue(e) => write!(f, "{e}"),
            Error::Divert(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Capture(e) => Some(e),
            #[cfg(target_os = "linux")]
            Error::Nfqueue(e) => Some(e),
            Error::Divert(e) => Some(e),
            _ => None,
        }
    }
}

impl Spec {
    /// Read `-i`.
    pub fn parse(interface: Option<&str>) -> Result<Spec, Error> {
        let Some(name) = interface else {
            return Ok(Spec::Interface(None));
        };
        let number = |n: &str| n.parse::<u16>().map_err(|_| Error::BadNumber(name.into()));
        Ok(match name.split_once(':') {
            Some(("nflog", n)) => Spec::Nflog(number(n)?),
            Some(("nfqueue", n)) => Spec::Nfqueue(number(n)?),
            Some(("divert", n)) => Spec::Divert(number(n)?),
            _ => Spec::Interface(Some(name.into())),
        })
    }

    /// Inline: the firewall holds packets for us.
    pub fn inline(&self) -> bool {
        matches!(self, Spec::Nfqueue(_) | Spec::Divert(_))
    }
}

/// An open packet source.
pub enum Source {
    Capture(Live),
    #[cfg(target_os = "linux")]
    Nfqueue(crate::os::nfqueue::Queue),
    #[cfg(any(target_os = "freebsd", target_os = "openbsd"))]
    Divert(crate::os::divert::Divert),
}

impl Source {
    /// Open what `spec` names. `expression` applies to interfaces only.
    pub fn open(spec: &Spec, expression: &str) -> Result<Source, Error> {
        if !matches!(spec, Spec::Interface(_)) && expression != DEFAULT_EXPRESSION {
            crate::logmsg!(
                Level::Notice,
                "expression \"{expression}\" not applied as a filter: the firewall rule chooses the packets of this source; it names the control ports only"
            );
        }
        match spec {
            Spec::Interface(name) => Live::open(name.as_deref(), expression)
                .map(Source::Capture)
                .map_err(Error::Capture),
            Spec::Nflog(group) => open_nflog(*group),
            Spec::Nfqueue(num) => open_nfqueue(*num),
            Spec::Divert(port) => open_divert(*port),
        }
    }

    /// The name for log lines (`to-c`, `nfqueue:0`, `divert:700`).
    pub fn name(&self) -> String {
        match self {
            Source::Capture(c) => c.interface.clone(),
            #[cfg(target_os = "linux")]
            Source::Nfqueue(q) => format!("nfqueue:{}", q.num()),
            #[cfg(any(target_os = "freebsd", target_os = "openbsd"))]
            Source::Divert(d) => format!("divert:{}", d.port()),
        }
    }

    /// How frames are framed.
    pub fn link(&self) -> Link {
        match self {
            Source::Capture(c) => c.link,
            // Both hand over the bare IP packet.
            #[cfg(target_os = "linux")]
            Source::Nfqueue(_) => Link::Raw,
            #[cfg(any(target_os = "freebsd", target_os = "openbsd"))]
            Source::Divert(_) => Link::Raw,
        }
    }

    /// The descriptors to poll; -1 for an unused slot (poll skips it).
    pub fn fds(&self) -> [RawFd; 2] {
        match self {
            Source::Capture(c) => [c.fd(), -1],
            #[cfg(target_os = "linux")]
            Source::Nfqueue(q) => [q.fd(), -1],
            #[cfg(any(target_os = "freebsd", target_os = "openbsd"))]
            Source::Divert(d) => d.fds(),
        }
    }

    /// Hand up to `budget` waiting packets to `f`. An inline source
    /// releases each packet after `f` returned for it.
    pub fn read(&mut self, budget: usize, f: impl FnMut(Frame<'_>)) -> Result<usize, Error> {
        match self {
            Source::Capture(c) => c.read(budget, f).map_err(Error::Capture),
            #[cfg(target_os = "linux")]
            Source::Nfqueue(q) => q.read(budget, f).map_err(Error::Nfqueue),
            #[cfg(any(target_os = "freebsd", target_os = "openbsd"))]
            Source::Divert(d) => d.read(budget, f).map_err(Error::Divert),
        }
    }

    /// Packets lost because we fell behind (for an inline source: let
    /// through unobserved), if the source can tell.
    pub fn kernel_drops(&mut self) -> Option<u64> {
        match self {
            Source::Capture(c) => c.kernel_drops().map(u64::from),
            #[cfg(target_os = "linux")]
            Source::Nfqueue(q) => Some(q.kernel_drops()),
            #[cfg(any(target_os = "freebsd", target_os = "openbsd"))]
            Source::Divert(_) => None,
        }
    }

    /// The inline source's counters, for the stats line.
    pub fn counters(&self) -> Option<String> {
        match self {
            Source::Capture(_) => None,
            #[cfg(target_os = "linux")]
            Source::Nfqueue(q) => Some(q.counters.to_string()),
            #[cfg(any(target_os = "freebsd", target_os = "openbsd"))]
            Source::Divert(d) => Some(d.counters.to_string()),
        }
    }
}

#[cfg(target_os = "linux")]
fn open_nflog(group: u16) -> Result<Source, Error> {
    let live = Live::open_nflog(group).map_err(Error::Capture)?;
    if let Err(e) = nflog::flush_each(live.fd(), group) {
        crate::logmsg!(
            Level::Warning,
            "nflog:{group}: cannot ask for each packet at once ({e}): give the rule queue-threshold 1"
        );
    }
    Ok(Source::Capture(live))
}

#[cfg(not(target_os = "linux"))]
fn open_nflog(_group: u16) -> Result<Source, Error> {
    Err(Error::Unsupported("nflog: NFLOG exists on Linux only"))
}

#[cfg(target_os = "linux")]
fn open_nfqueue(num: u16) -> Result<Source, Error> {
    crate::os::nfqueue::Queue::open(num)
        .map(Source::Nfqueue)
        .map_err(Error::Nfqueue)
}

#[cfg(not(target_os = "linux"))]
fn open_nfqueue(_num: u16) -> Result<Source, Error> {
    Err(Error::Unsupported(
        "nfqueue: netfilter queues exist on Linux only",
    ))
}

#[cfg(any(target_os = "freebsd", target_os = "openbsd"))]
fn open_divert(port: u16) -> Result<Source, Error> {
    crate::os::divert::Divert::open(port)
        .map(Source::Divert)
        .map_err(Error::Divert)
}

#[cfg(not(any(target_os = "freebsd", target_os = "openbsd")))]
fn open_divert(_port: u16) -> Result<Source, Error> {
    Err(Error::Unsupported(
        "divert: divert sockets exist on FreeBSD and OpenBSD only",
    ))
}

/// NFLOG delivery. The kernel batches logged packets per group, flushing
/// every 100 packets or every second unless told otherwise; libpcap does
/// not tell it, and a negotiation seen a second late has lost its race.
/// So we set the group's threshold to one packet ourselves, on libpcap's
/// socket (the group is bound to it), without asking for an answer:
/// libpcap's reader skips any message that is not a packet.
#[cfg(target_os = "linux")]
mod nflog {
    use std::io;
    use std::os::fd::RawFd;

    use crate::os::netlink::{MsgBuf, NLM_F_REQUEST, nfnl_type};

    const NFNL_SUBSYS_ULOG: u8 = 4;
    const NFULNL_MSG_CONFIG: u8 = 1;
    /// be32, 1/100 s.
    const NFULA_CFG_TIMEOUT: u16 = 4;
    /// be32, packets.
    const NFULA_CFG_QTHRESH: u16 = 5;

    pub(super) fn message(out: &mut MsgBuf, group: u16) {
        let m = out.begin(
            nfnl_type(NFNL_SUBSYS_ULOG, NFULNL_MSG_CONFIG),
            NLM_F_REQUEST,
            0,
            libc::AF_UNSPEC as u8,
            group,
        );
        out.attr_be32(NFULA_CFG_QTHRESH, 1);
        out.attr_be32(NFULA_CFG_TIMEOUT, 0);
        out.end(m);
    }

    pub(super) fn flush_each(fd: RawFd, group: u16) -> io::Result<()> {
        let mut out = MsgBuf::new();
        message(&mut out, group);
        // SAFETY: zeroed sockaddr_nl addresses the kernel.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        let bytes = out.as_bytes();
        // SAFETY: bytes and sa are valid for the lengths given.
        let n = unsafe {
            libc::sendto(
                fd,
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_from_interface() {
        assert_eq!(Spec::parse(None).unwrap(), Spec::Interface(None));
        assert_eq!(
            Spec::parse(Some("em0")).unwrap(),
            Spec::Interface(Some("em0".into()))
        );
        assert_eq!(
            Spec::parse(Some("pflog0")).unwrap(),
            Spec::Interface(Some("pflog0".into()))
        );
        assert_eq!(Spec::parse(Some("nfqueue:0")).unwrap(), Spec::Nfqueue(0));
        assert_eq!(
            Spec::parse(Some("nflog:65535")).unwrap(),
            Spec::Nflog(65535)
        );
        assert_eq!(Spec::parse(Some("divert:700")).unwrap(), Spec::Divert(700));
        // Other words with a colon are libpcap's business (e.g. usbmon).
        assert_eq!(
            Spec::parse(Some("dbus-system:x")).unwrap(),
            Spec::Interface(Some("dbus-system:x".into()))
        );
        assert!(Spec::parse(Some("divert:700")).unwrap().inline());
        assert!(Spec::parse(Some("nfqueue:1")).unwrap().inline());
        assert!(!Spec::parse(Some("nflog:1")).unwrap().inline());
        assert!(!Spec::parse(Some("em0")).unwrap().inline());
    }

    #[test]
    fn bad_numbers() {
        for bad in [
            "nfqueue:",
            "nfqueue:x",
            "nflog:65536",
            "divert:-1",
            "divert: 1",
        ] {
            let e = Spec::parse(Some(bad)).unwrap_err();
            assert!(matches!(e, Error::BadNumber(_)), "{bad}");
            assert_eq!(
                e.to_string(),
                format!("{bad}: not a number from 0 to 65535")
            );
        }
    }

    #[cfg(not(target_os = "linux"))]
    #[test]
    fn linux_sources_elsewhere() {
        let e = Source::open(&Spec::Nfqueue(0), DEFAULT_EXPRESSION)
            .err()
            .unwrap();
        assert!(matches!(e, Error::Unsupported(_)));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn divert_is_not_linux() {
        let e = Source::open(&Spec::Divert(700), DEFAULT_EXPRESSION)
            .err()
            .unwrap();
        assert!(e.to_string().contains("FreeBSD and OpenBSD only"), "{e}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn nflog_threshold_message() {
        use crate::os::netlink::{Attrs, NFGENMSG_LEN, NLMSG_HDRLEN};
        let mut out = crate::os::netlink::MsgBuf::new();
        nflog::message(&mut out, 5);
        let b = out.as_bytes();
        assert_eq!(u16::from_ne_bytes([b[4], b[5]]), 0x0401);
        assert_eq!(u16::from_be_bytes([b[18], b[19]]), 5, "group in res_id");
        let attrs: Vec<_> = Attrs::new(&b[NLMSG_HDRLEN + NFGENMSG_LEN..])
            .map(|(t, d)| (t, d.to_vec()))
            .collect();
        assert_eq!(attrs, vec![(5, vec![0, 0, 0, 1]), (4, vec![0, 0, 0, 0])]);
    }
}

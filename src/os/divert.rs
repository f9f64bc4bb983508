//! Inline packet source on FreeBSD and OpenBSD: divert(4) sockets
//! (`-i divert:PORT`).
//!
//! The firewall takes each control-connection packet out of the stack and
//! queues it on the divert socket bound to PORT (pf.conf `divert-packet
//! port PORT` on OpenBSD; `ipfw add divert PORT` or pf's `divert-to` on
//! FreeBSD). We read it, give it to the engine, which commits any rule
//! before it returns, and write it back with the address it came with, so
//! the kernel resumes it where it left off: a `227`/`229` reply or a
//! `PORT`/`EPRT` command goes on only once its hole exists. Every packet
//! read is written back unchanged, whatever the engine made of it.
//!
//! The sockets:
//! - OpenBSD: `socket(AF_INET, SOCK_RAW, IPPROTO_DIVERT)` and the same
//!   with AF_INET6, both bound to PORT (pf diverts each family to its own).
//! - FreeBSD 14: one `socket(PF_DIVERT, SOCK_RAW, 0)` bound to PORT with a
//!   sockaddr_in; it carries IPv4 and IPv6.
//!
//! The address a packet is read with says where it was diverted (inbound:
//! the interface's address and, on FreeBSD, its name in `sin_zero`;
//! outbound: the unspecified address) and is handed back as is.
//!
//! Nothing but the address handling can be exercised on Linux: this path
//! is compiled and linted for both systems against their own definitions,
//! not run.

use std::fmt;
use std::io;

/// Why the divert socket could not be opened or used.
#[derive(Debug)]
pub enum Error {
    /// socket(2) failed (no divert support in this kernel: load
    /// ipdivert.ko on FreeBSD).
    Socket(io::Error),
    /// bind(2) to the divert port failed.
    Bind { port: u16, source: io::Error },
    /// Reading the socket failed.
    Recv(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Socket(e) => write!(f, "divert socket: {e}"),
            Error::Bind { port, source } => write!(f, "binding divert port {port}: {source}"),
            Error::Recv(e) => write!(f, "reading the divert socket: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Socket(e) | Error::Recv(e) | Error::Bind { source: e, .. } => Some(e),
        }
    }
}

/// Counters of the divert socket, for the exit and `SIGUSR1` lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets read and written back.
    pub packets: u64,
    /// Packets the kernel would not take back (lost; TCP resends them).
    pub reinject_failed: u64,
}

impl fmt::Display for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} packets reinjected, {} reinjections failed",
            self.packets, self.reinject_failed
        )
    }
}

/// The largest IP packet: a divert socket hands over whole packets.
pub const PACKET_MAX: usize = 65_535;

/// Where a diverted packet came from; handed back unchanged to reinject it.
#[derive(Clone, Copy)]
pub struct Origin {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl Origin {
    fn empty() -> Origin {
        Origin {
            // SAFETY: an all-zero sockaddr_storage is a valid value.
            storage: unsafe { std::mem::zeroed() },
            len: std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
        }
    }

    /// The address family recvfrom filled in.
    pub fn family(&self) -> libc::sa_family_t {
        self.storage.ss_family
    }

    fn as_ptr(&self) -> *const libc::sockaddr {
        (&self.storage as *const libc::sockaddr_storage).cast()
    }

    fn as_mut_ptr(&mut self) -> *mut libc::sockaddr {
        (&mut self.storage as *mut libc::sockaddr_storage).cast()
    }
}

/// The address a divert socket of `family` (AF_INET or AF_INET6) is bound
/// with: the divert port in network order, any address.
pub fn bind_origin(family: libc::c_int, port: u16) -> Origin {
    let mut o = Origin::empty();
    if family == libc::AF_INET6 {
        // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
        let sin6 = unsafe { &mut *(o.as_mut_ptr() as *mut libc::sockaddr_in6) };
        sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        sin6.sin6_port = port.to_be();
        o.len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    } else {
        // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
        let sin = unsafe { &mut *(o.as_mut_ptr() as *mut libc::sockaddr_in) };
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        sin.sin_port = port.to_be();
        o.len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    }
    #[cfg(any(target_os = "freebsd", target_os = "openbsd"))]
    {
        // BSD socket addresses carry their own length.
        o.storage.ss_len = o.len as u8;
    }
    o
}

/// The divert port an address is bound to (host order).
pub fn port_of(o: &Origin) -> Option<u16> {
    match o.family() as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin = unsafe { &*(o.as_ptr() as *const libc::sockaddr_in) };
            Some(u16::from_be(sin.sin_port))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 = unsafe { &*(o.as_ptr() as *const libc::sockaddr_in6) };
            Some(u16::from_be(sin6.sin6_port))
        }
        _ => None,
    }
}

#[cfg(any(target_os = "freebsd", target_os = "openbsd"))]
pub use imp::Divert;

#[cfg(any(target_os = "freebsd", target_os = "openbsd"))]
mod imp {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

    use super::{Counters, Error, Origin, PACKET_MAX, bind_origin};
    use crate::core::engine::now_us;
    use crate::core::log::{Level, RateLimit};
    use crate::os::capture::Frame;

    /// FreeBSD 14's divert domain (<sys/socket.h> PF_DIVERT; not in the
    /// libc crate).
    #[cfg(target_os = "freebsd")]
    const PF_DIVERT: libc::c_int = 44;

    /// Bound divert sockets: one per family on OpenBSD, one on FreeBSD.
    pub struct Divert {
        socks: Vec<OwnedFd>,
        port: u16,
        buf: Box<[u8]>,
        noisy: RateLimit,
        pub counters: Counters,
    }

    fn socket(domain: libc::c_int, proto: libc::c_int) -> Result<OwnedFd, Error> {
        // SAFETY: plain socket(2); the result is checked.
        let fd = unsafe {
            libc::socket(
                domain,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                proto,
            )
        };
        if fd < 0 {
            return Err(Error::Socket(io::Error::last_os_error()));
        }
        // SAFETY: a fresh descriptor we own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn bind(fd: &OwnedFd, family: libc::c_int, port: u16) -> Result<(), Error> {
        let o = bind_origin(family, port);
        // SAFETY: o holds a sockaddr of length o.len.
        if unsafe { libc::bind(fd.as_raw_fd(), o.as_ptr(), o.len) } < 0 {
            return Err(Error::Bind {
                port,
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    impl Divert {
        /// Bind divert port `port` (needs root).
        pub fn open(port: u16) -> Result<Divert, Error> {
            let mut socks = Vec::with_capacity(2);
            #[cfg(target_os = "openbsd")]
            for family in [libc::AF_INET, libc::AF_INET6] {
                let fd = socket(family, libc::IPPROTO_DIVERT)?;
                bind(&fd, family, port)?;
                socks.push(fd);
            }
            #[cfg(target_os = "freebsd")]
            {
                let fd = socket(PF_DIVERT, 0)?;
                bind(&fd, libc::AF_INET, port)?;
                socks.push(fd);
            }
            Ok(Divert {
                socks,
                port,
                buf: vec![0; PACKET_MAX].into_boxed_slice(),
                noisy: RateLimit::new(10),
                counters: Counters::default(),
            })
        }

        /// The descriptors to poll (-1: none).
        pub fn fds(&self) -> [RawFd; 2] {
            let mut fds = [-1; 2];
            for (slot, s) in fds.iter_mut().zip(&self.socks) {
                *slot = s.as_raw_fd();
            }
            fds
        }

        /// The divert port.
        pub fn port(&self) -> u16 {
            self.port
        }

        /// Hand up to `budget` waiting packets to `f`, each written back
        /// as soon as `f` returned. Returns how many were read.
        pub fn read(
            &mut self,
            budget: usize,
            mut f: impl FnMut(Frame<'_>),
        ) -> Result<usize, Error> {
            let mut n = 0;
            for s in &self.socks {
                let fd = s.as_raw_fd();
                while n < budget {
                    let mut from = Origin::empty();
                    // SAFETY: buf and from are valid for the lengths given.
                    let got = unsafe {
                        libc::recvfrom(
                            fd,
                            self.buf.as_mut_ptr().cast(),
                            self.buf.len(),
                            0,
                            from.as_mut_ptr(),
                            &mut from.len,
                        )
                    };
                    if got < 0 {
                        let e = io::Error::last_os_error();
                        match e.kind() {
                            io::ErrorKind::WouldBlock => break,
                            io::ErrorKind::Interrupted => continue,
                            _ => return Err(Error::Recv(e)),
                        }
                    }
                    let data = &self.buf[..got as usize];
                    f(Frame { ts: now_us(), data });
                    n += 1;
                    self.counters.packets += 1;
                    // SAFETY: data and from are valid for the lengths given.
                    let sent = unsafe {
                        libc::sendto(
                            fd,
                            data.as_ptr().cast(),
                            data.len(),
                            0,
                            from.as_ptr(),
                            from.len,
                        )
                    };
                    if sent < 0 {
                        self.counters.reinject_failed += 1;
                        if self.noisy.allow(now_us()) {
                            crate::logmsg!(
                                Level::Warning,
                                "divert:{}: reinjecting a packet: {}",
                                self.port,
                                io::Error::last_os_error()
                            );
                        }
                    }
                }
            }
            Ok(n)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_address_per_family() {
        let v4 = bind_origin(libc::AF_INET, 8668);
        assert_eq!(v4.family() as libc::c_int, libc::AF_INET);
        assert_eq!(port_of(&v4), Some(8668));
        assert_eq!(
            v4.len as usize,
            std::mem::size_of::<libc::sockaddr_in>(),
            "bound with a sockaddr_in"
        );
        // SAFETY: v4 holds a sockaddr_in.
        let sin = unsafe { &*(v4.as_ptr() as *const libc::sockaddr_in) };
        assert_eq!(
            sin.sin_port.to_ne_bytes(),
            8668u16.to_be_bytes(),
            "network order"
        );
        assert_eq!(sin.sin_addr.s_addr, 0, "any address");

        let v6 = bind_origin(libc::AF_INET6, 700);
        assert_eq!(v6.family() as libc::c_int, libc::AF_INET6);
        assert_eq!(port_of(&v6), Some(700));
        assert_eq!(v6.len as usize, std::mem::size_of::<libc::sockaddr_in6>());
    }

    #[test]
    fn origin_is_handed_back_unchanged() {
        // What recvfrom fills in (an inbound packet: interface address and,
        // on FreeBSD, the interface name in sin_zero) is what sendto gets.
        let mut o = bind_origin(libc::AF_INET, 1);
        // SAFETY: o holds a sockaddr_in; sin_addr at 4, sin_zero at 8.
        let raw =
            unsafe { std::slice::from_raw_parts_mut(o.as_mut_ptr() as *mut u8, o.len as usize) };
        raw[4..8].copy_from_slice(&[192, 0, 2, 1]);
        raw[8..12].copy_from_slice(b"em0\0");
        let copy = o;
        // SAFETY: both hold sockaddr_in.
        let (a, b) = unsafe {
            (
                std::slice::from_raw_parts(o.as_ptr() as *const u8, o.len as usize),
                std::slice::from_raw_parts(copy.as_ptr() as *const u8, copy.len as usize),
            )
        };
        assert_eq!(a, b);
        assert_eq!(&a[8..11], b"em0");
    }

    #[test]
    fn unknown_family_has_no_port() {
        assert_eq!(port_of(&Origin::empty()), None);
    }
}

//! Lock the capture descriptor once libpcap has set it up, so that a
//! compromised daemon, after it has dropped root, cannot change what the
//! descriptor delivers. What the lock gives differs per system:
//!
//! - FreeBSD/OpenBSD: immediate mode, a write filter that rejects every
//!   packet (`BIOCSETWF` with the one instruction `ret 0`), then `BIOCLOCK`.
//!   The read filter, the write filter and the interface are then fixed, so
//!   the descriptor only ever reads what the expression matches on the
//!   chosen interface and cannot send at all. Done by `bpflock.c`, compiled
//!   against the system's own `<net/bpf.h>`.
//! - Linux: `SO_LOCK_FILTER` on libpcap's AF_PACKET socket. The filter
//!   libpcap attached (the expression) can no longer be detached, replaced
//!   or unlocked (EPERM), so whatever the socket delivers matches the
//!   expression. That is all it gives: the socket can still be bound to
//!   another interface, put that interface into promiscuous mode through a
//!   packet membership, and send raw frames on any interface, because
//!   AF_PACKET checks CAP_NET_RAW when the socket is created, not when it is
//!   used, and has no write filter or shutdown for sending. libpcap opens
//!   the socket itself, so there is no other way to open it that could not
//!   send. (Outside dry runs the process keeps CAP_NET_ADMIN for nftables,
//!   which already allows more than sending raw frames does.)
//! - macOS: its bpf has neither a write filter nor a lock; [`lock`] returns
//!   an `Unsupported` error for the caller to log.

use std::io;
use std::os::fd::RawFd;

/// Lock the capture descriptor `fd` (call after the capture filter is set,
/// before dropping privileges).
#[cfg(target_os = "linux")]
pub(crate) fn lock(fd: RawFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: plain setsockopt with a c_int value of the right size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LOCK_FILTER,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(any(target_os = "freebsd", target_os = "openbsd"))]
unsafe extern "C" {
    /// src/os/bpflock.c: 0, or -errno of the ioctl that failed.
    fn ftps_bpf_lock(fd: libc::c_int) -> libc::c_int;
}

#[cfg(any(target_os = "freebsd", target_os = "openbsd"))]
pub(crate) fn lock(fd: RawFd) -> io::Result<()> {
    // SAFETY: bpflock.c only issues ioctls on fd with its own memory.
    let rc = unsafe { ftps_bpf_lock(fd) };
    if rc < 0 {
        return Err(io::Error::from_raw_os_error(-rc));
    }
    Ok(())
}

#[cfg(not(any(target_os = "linux", target_os = "freebsd", target_os = "openbsd")))]
pub(crate) fn lock(_fd: RawFd) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "this system's bpf has no write filter or lock",
    ))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn attach_reject_all(fd: RawFd) -> io::Result<()> {
        // One classic BPF instruction: ret #0.
        let mut insn = [libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: 0,
        }];
        let prog = libc::sock_fprog {
            len: 1,
            filter: insn.as_mut_ptr(),
        };
        // SAFETY: prog points at a live one-instruction program.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                (&prog as *const libc::sock_fprog).cast(),
                std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        };
        if rc == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn detach(fd: RawFd) -> io::Result<()> {
        let zero: libc::c_int = 0;
        // SAFETY: plain setsockopt.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_DETACH_FILTER,
                (&zero as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    // SO_LOCK_FILTER is a generic socket option, so an unprivileged UDP
    // socket shows the same kernel behaviour as pcap's AF_PACKET socket.
    #[test]
    fn locked_filter_cannot_be_removed() {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let fd = sock.as_raw_fd();

        // Unlocked: detaching works.
        attach_reject_all(fd).unwrap();
        detach(fd).unwrap();

        attach_reject_all(fd).unwrap();
        lock(fd).unwrap();
        let e = detach(fd).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
        let e = attach_reject_all(fd).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
    }

    #[test]
    fn lock_on_a_non_socket_fails() {
        let f = std::fs::File::open("/dev/null").unwrap();
        assert!(lock(f.as_raw_fd()).is_err());
    }
}

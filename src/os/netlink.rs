//! Small netlink plumbing shared by the nftables backend, its conntrack
//! lookup and the nfnetlink queue source: one socket type, one message
//! writer, one reply walker, one request loop.
//!
//! Only NETLINK_NETFILTER is spoken. Every message on the wire is
//!
//! ```text
//! struct nlmsghdr   (16 bytes, host order)
//!     u32 len       whole message, header included, before padding
//!     u16 type      (subsystem << 8) | message, e.g. NFNL_SUBSYS_NFTABLES<<8 | NFT_MSG_NEWSETELEM
//!     u16 flags     NLM_F_REQUEST, NLM_F_ACK, NLM_F_CREATE ...
//!     u32 seq       echoed by the kernel in its answer: how replies are matched
//!     u32 pid       0 towards the kernel
//! struct nfgenmsg   (4 bytes)
//!     u8  family    NFPROTO_INET, AF_INET ... (AF_UNSPEC for batch markers)
//!     u8  version   NFNETLINK_V0
//!     be16 res_id   subsystem id on batch markers, 0 otherwise
//! attributes        each: u16 len (header included), u16 type, payload,
//!                   padded to 4 bytes; a nested attribute (type | NLA_F_NESTED)
//!                   carries further attributes as its payload
//! ```
//!
//! Integers inside netfilter attributes are big-endian; netlink headers are
//! host order. Messages are written into a caller-owned [`MsgBuf`] that keeps
//! its capacity, and replies are read into the [`Socket`]'s own buffer, so a
//! warmed-up request/answer cycle allocates nothing.
//!
//! Errors and acknowledgements arrive as NLMSG_ERROR messages carrying a
//! `struct nlmsgerr` (i32 negative errno, 0 for an ACK, then the request's
//! header); their `seq` is the request's. [`Msg::error`] decodes them.
//!
//! Every exchange goes through one loop, [`Socket::answers`]: read
//! datagrams, skip what answers an earlier request, hand the rest to the
//! caller until it has its outcome. [`Socket::query`] is that loop for a
//! request with a single answer (a table, a set, a conntrack entry), and
//! [`Socket::dump`] for a request with many (a set's elements, the
//! conntrack table), which ends with NLMSG_DONE.

use std::io;
use std::mem;
use std::ops::ControlFlow;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

pub(crate) const NLMSG_HDRLEN: usize = 16;
pub(crate) const NFGENMSG_LEN: usize = 4;
const NLA_HDRLEN: usize = 4;

pub(crate) const NLMSG_ERROR: u16 = 2;
/// Ends the answers to a dump request; carries an i32 (negative errno or 0).
pub(crate) const NLMSG_DONE: u16 = 3;

pub(crate) const NLM_F_REQUEST: u16 = 0x1;
pub(crate) const NLM_F_ACK: u16 = 0x4;
pub(crate) const NLM_F_CREATE: u16 = 0x400;
/// NLM_F_ROOT | NLM_F_MATCH: every object of the kind asked for.
pub(crate) const NLM_F_DUMP: u16 = 0x300;

/// Marks an attribute whose payload is more attributes.
pub(crate) const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

pub(crate) const NFNETLINK_V0: u8 = 0;
pub(crate) const NFNL_SUBSYS_CTNETLINK: u8 = 1;
pub(crate) const NFNL_SUBSYS_NFTABLES: u8 = 10;
/// Batch markers (NLMSG_MIN_TYPE and the next); not tied to a subsystem.
pub(crate) const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
pub(crate) const NFNL_MSG_BATCH_END: u16 = 0x11;

// setsockopt(SOL_NETLINK, ...) options.
const SOL_NETLINK: libc::c_int = 270;
const NETLINK_CAP_ACK: libc::c_int = 10;

/// How long to wait for the kernel's answer before giving up. The kernel
/// answers in microseconds; this only bounds a pathological hang.
const RECV_TIMEOUT: Duration = Duration::from_secs(2);

/// Room for the largest reply we expect (a set description, a conntrack
/// entry); a single datagram never exceeds it for our requests. The kernel
/// sizes a dump's datagrams by the reader's buffer, capped at 32 KiB.
const RECV_BUF: usize = 32 * 1024;

/// The netfilter message type for `subsys` and `msg`.
pub(crate) const fn nfnl_type(subsys: u8, msg: u8) -> u16 {
    ((subsys as u16) << 8) | msg as u16
}

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// A NETLINK_NETFILTER socket, bound, close-on-exec, with its receive buffer.
pub(crate) struct Socket {
    fd: OwnedFd,
    seq: u32,
    rbuf: Vec<u8>,
}

impl Socket {
    /// Open a NETLINK_NETFILTER socket in the calling thread's network
    /// namespace.
    pub(crate) fn open() -> io::Result<Socket> {
        // SAFETY: plain socket(2); the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };

        // SAFETY: zeroed sockaddr_nl is valid; nl_pid 0 lets the kernel pick.
        let mut sa: libc::sockaddr_nl = unsafe { mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: sa is a properly sized sockaddr_nl.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sa as *const libc::sockaddr_nl as *const libc::sockaddr,
                mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }

        // Error messages need not echo our whole request back: smaller
        // answers, and we match them by sequence number anyway.
        let one: libc::c_int = 1;
        setsockopt(&fd, SOL_NETLINK, NETLINK_CAP_ACK, &one)?;
        let tv = libc::timeval {
            tv_sec: RECV_TIMEOUT.as_secs() as libc::time_t,
            tv_usec: RECV_TIMEOUT.subsec_micros() as libc::suseconds_t,
        };
        setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)?;

        // Start sequence numbers somewhere unlikely to match a stale reply
        // of a previous process that had the same port id.
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() ^ d.as_secs() as u32)
            .unwrap_or(1);
        Ok(Socket {
            fd,
            seq,
            rbuf: vec![0; RECV_BUF],
        })
    }

    /// Reserve `n` consecutive sequence numbers and return the first.
    pub(crate) fn next_seqs(&mut self, n: u32) -> u32 {
        let first = self.seq;
        self.seq = self.seq.wrapping_add(n);
        first
    }

    /// Send one datagram (one message or a whole batch) to the kernel.
    pub(crate) fn send(&self, buf: &[u8]) -> io::Result<()> {
        // SAFETY: zeroed sockaddr_nl addresses the kernel (pid 0).
        let mut sa: libc::sockaddr_nl = unsafe { mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        loop {
            // SAFETY: buf and sa are valid for the lengths given.
            let n = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    buf.as_ptr() as *const libc::c_void,
                    buf.len(),
                    0,
                    &sa as *const libc::sockaddr_nl as *const libc::sockaddr,
                    mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
                )
            };
            if n >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Read answers to the messages numbered `first ..= first + count`
    /// (wrapping; answers to anything else are stale and skipped) and hand
    /// each to `on_msg`, until it breaks with the outcome. Allocates
    /// nothing: replies land in the socket's own buffer.
    pub(crate) fn answers<T>(
        &mut self,
        first: u32,
        count: u32,
        mut on_msg: impl FnMut(Msg<'_>) -> ControlFlow<io::Result<T>>,
    ) -> io::Result<T> {
        loop {
            for msg in self.recv()? {
                if !seq_in(msg.seq, first, count) {
                    continue;
                }
                if let ControlFlow::Break(outcome) = on_msg(msg) {
                    return outcome;
                }
            }
        }
    }

    /// Send the single request in `req`, numbered `seq`, and wait for its
    /// answer: a message of type `answer`, read by `read`. `Ok(None)` when
    /// the kernel has no such object (ENOENT) or acknowledges without one.
    /// The request should not ask for an ACK: the answer ends the exchange.
    pub(crate) fn query<T>(
        &mut self,
        req: &[u8],
        seq: u32,
        answer: u16,
        mut read: impl FnMut(Attrs<'_>) -> io::Result<T>,
    ) -> io::Result<Option<T>> {
        self.send(req)?;
        self.answers(seq, 0, |msg| match msg.error() {
            Some(0 | libc::ENOENT) => ControlFlow::Break(Ok(None)),
            Some(errno) => ControlFlow::Break(Err(io::Error::from_raw_os_error(errno))),
            None if msg.ty == answer => ControlFlow::Break(read(msg.nf_attrs()).map(Some)),
            None => ControlFlow::Continue(()),
        })
    }

    /// Send the dump request in `req` (flags NLM_F_REQUEST | NLM_F_DUMP),
    /// numbered `seq`, and hand each answer of type `answer` to `each`
    /// until the kernel's NLMSG_DONE. The kernel fills the next datagram
    /// only once this one is read, so a dump of any size fits the buffer.
    pub(crate) fn dump(
        &mut self,
        req: &[u8],
        seq: u32,
        answer: u16,
        mut each: impl FnMut(Attrs<'_>),
    ) -> io::Result<()> {
        self.send(req)?;
        self.answers(seq, 0, |msg| dump_step(msg, answer, &mut each))
    }

    /// Receive one datagram; iterate its messages with [`Msgs`]. For
    /// messages that answer no request of ours (e.g. queued packets);
    /// answers to requests go through [`Socket::answers`].
    pub(crate) fn recv(&mut self) -> io::Result<Msgs<'_>> {
        loop {
            // SAFETY: rbuf is valid for its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.rbuf.as_mut_ptr() as *mut libc::c_void,
                    self.rbuf.len(),
                    libc::MSG_TRUNC,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no answer from the kernel over netlink",
                        ));
                    }
                    _ => return Err(e),
                }
            }
            let n = n as usize;
            if n > self.rbuf.len() {
                return Err(io::Error::other("netlink reply truncated"));
            }
            return Ok(Msgs {
                buf: &self.rbuf[..n],
            });
        }
    }
}

/// For poll(2), and socket options only its user knows (an inline packet
/// source sets its own buffer size and non-blocking mode).
impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, opt: libc::c_int, val: &T) -> io::Result<()> {
    // SAFETY: val points to a T of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            val as *const T as *const libc::c_void,
            mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A reusable buffer that netlink messages are written into, back to back.
///
/// `begin` starts a message, attribute writers append to it, `end` patches
/// its length. Several messages in a row make a batch.
#[derive(Default)]
pub(crate) struct MsgBuf {
    buf: Vec<u8>,
}

impl MsgBuf {
    pub(crate) fn new() -> Self {
        MsgBuf {
            buf: Vec::with_capacity(4096),
        }
    }

    /// Forget the contents, keep the capacity.
    pub(crate) fn clear(&mut self) {
        self.buf.clear();
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Start a message with an nfgenmsg header; returns its offset for
    /// [`MsgBuf::end`].
    pub(crate) fn begin(
        &mut self,
        ty: u16,
        flags: u16,
        seq: u32,
        family: u8,
        res_id: u16,
    ) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched by end()
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.push(family);
        self.buf.push(NFNETLINK_V0);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        start
    }

    /// Finish the message started at `start`.
    pub(crate) fn end(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    /// One attribute with a raw payload, padded to 4 bytes.
    pub(crate) fn attr(&mut self, ty: u16, data: &[u8]) {
        let len = (NLA_HDRLEN + data.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
    }

    /// A NUL-terminated string attribute (NLA_STRING / NLA_NUL_STRING).
    pub(crate) fn attr_str(&mut self, ty: u16, s: &str) {
        let len = (NLA_HDRLEN + s.len() + 1) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
        self.pad();
    }

    pub(crate) fn attr_u8(&mut self, ty: u16, v: u8) {
        self.attr(ty, &[v]);
    }

    pub(crate) fn attr_be16(&mut self, ty: u16, v: u16) {
        self.attr(ty, &v.to_be_bytes());
    }

    // Kept with the other widths netfilter attributes use, for the next
    // user of this writer; nothing in the nftables backend writes one.
    #[allow(dead_code)]
    pub(crate) fn attr_be32(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_be_bytes());
    }

    pub(crate) fn attr_be64(&mut self, ty: u16, v: u64) {
        self.attr(ty, &v.to_be_bytes());
    }

    /// Open a nested attribute; close it with [`MsgBuf::nest_end`].
    pub(crate) fn nest_begin(&mut self, ty: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        start
    }

    pub(crate) fn nest_end(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    /// Raw bytes inside an attribute being built piecewise (e.g. a
    /// concatenated set key): open with `raw_begin`, append, `raw_end`.
    pub(crate) fn raw_begin(&mut self, ty: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        start
    }

    pub(crate) fn raw(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    pub(crate) fn raw_end(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self.pad();
    }

    fn pad(&mut self) {
        let padded = align4(self.buf.len());
        self.buf.resize(padded, 0);
    }
}

/// Iterator over the netlink messages of one received datagram.
pub(crate) struct Msgs<'a> {
    buf: &'a [u8],
}

/// One received netlink message.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Msg<'a> {
    pub(crate) ty: u16,
    pub(crate) seq: u32,
    /// Everything after the netlink header.
    pub(crate) payload: &'a [u8],
}

impl<'a> Iterator for Msgs<'a> {
    type Item = Msg<'a>;

    fn next(&mut self) -> Option<Msg<'a>> {
        if self.buf.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes(self.buf[0..4].try_into().unwrap()) as usize;
        if len < NLMSG_HDRLEN || len > self.buf.len() {
            self.buf = &[];
            return None;
        }
        let msg = Msg {
            ty: u16::from_ne_bytes(self.buf[4..6].try_into().unwrap()),
            seq: u32::from_ne_bytes(self.buf[8..12].try_into().unwrap()),
            payload: &self.buf[NLMSG_HDRLEN..len],
        };
        self.buf = &self.buf[align4(len).min(self.buf.len())..];
        Some(msg)
    }
}

impl<'a> Msg<'a> {
    /// For NLMSG_ERROR: `Some(0)` for an ACK, `Some(errno)` (positive) for
    /// an error. `None` for any other message type.
    pub(crate) fn error(&self) -> Option<i32> {
        if self.ty != NLMSG_ERROR {
            return None;
        }
        let e = self.payload.get(0..4)?;
        Some(-i32::from_ne_bytes(e.try_into().unwrap()))
    }

    /// The attributes after the nfgenmsg header of a netfilter message.
    pub(crate) fn nf_attrs(&self) -> Attrs<'a> {
        Attrs {
            buf: self.payload.get(NFGENMSG_LEN..).unwrap_or(&[]),
        }
    }
}

/// Iterator over a run of attributes: yields (type without flags, payload).
pub(crate) struct Attrs<'a> {
    buf: &'a [u8],
}

impl<'a> Attrs<'a> {
    /// The attributes nested inside `payload`.
    pub(crate) fn new(payload: &'a [u8]) -> Self {
        Attrs { buf: payload }
    }

    /// Payload of the first attribute of type `ty`, if any.
    pub(crate) fn get(mut self, ty: u16) -> Option<&'a [u8]> {
        self.find(|&(t, _)| t == ty).map(|(_, data)| data)
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<(u16, &'a [u8])> {
        if self.buf.len() < NLA_HDRLEN {
            return None;
        }
        let len = u16::from_ne_bytes(self.buf[0..2].try_into().unwrap()) as usize;
        let ty = u16::from_ne_bytes(self.buf[2..4].try_into().unwrap()) & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > self.buf.len() {
            self.buf = &[];
            return None;
        }
        let data = &self.buf[NLA_HDRLEN..len];
        self.buf = &self.buf[align4(len).min(self.buf.len())..];
        Some((ty, data))
    }
}

/// A big-endian u32 attribute payload.
pub(crate) fn be32(data: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(data.get(0..4)?.try_into().ok()?))
}

/// One message of a dump's answer: hand it to `each` when it is of type
/// `answer`; NLMSG_DONE ends the dump (with the error it may carry), and so
/// does an NLMSG_ERROR.
fn dump_step(
    msg: Msg<'_>,
    answer: u16,
    each: &mut impl FnMut(Attrs<'_>),
) -> ControlFlow<io::Result<()>> {
    if msg.ty == NLMSG_DONE {
        let errno = msg
            .payload
            .get(0..4)
            .map_or(0, |e| -i32::from_ne_bytes(e.try_into().unwrap()));
        return ControlFlow::Break(if errno > 0 {
            Err(io::Error::from_raw_os_error(errno))
        } else {
            Ok(())
        });
    }
    match msg.error() {
        Some(0) => ControlFlow::Break(Ok(())),
        Some(errno) => ControlFlow::Break(Err(io::Error::from_raw_os_error(errno))),
        None if msg.ty == answer => {
            each(msg.nf_attrs());
            ControlFlow::Continue(())
        }
        None => ControlFlow::Continue(()),
    }
}

/// True when `seq` lies in `first ..= first + count` (wrapping).
fn seq_in(seq: u32, first: u32, count: u32) -> bool {
    seq.wrapping_sub(first) <= count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_layout_and_walk() {
        let mut b = MsgBuf::new();
        let m = b.begin(nfnl_type(NFNL_SUBSYS_NFTABLES, 12), NLM_F_REQUEST, 7, 1, 0);
        b.attr_str(1, "filter");
        let n = b.nest_begin(3);
        b.attr_be32(2, 0x01020304);
        let r = b.raw_begin(1);
        b.raw(&[9, 9]);
        b.raw(&[8]);
        b.raw_end(r);
        b.nest_end(n);
        b.end(m);

        let bytes = b.as_bytes();
        assert_eq!(bytes.len() % 4, 0);
        assert_eq!(
            u32::from_ne_bytes(bytes[0..4].try_into().unwrap()) as usize,
            bytes.len()
        );
        let msgs: Vec<Msg> = Msgs { buf: bytes }.collect();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].seq, 7);
        assert_eq!(msgs[0].ty, 0x0a0c);
        let attrs: Vec<_> = msgs[0].nf_attrs().collect();
        assert_eq!(attrs[0], (1, &b"filter\0"[..]));
        assert_eq!(attrs[1].0, 3);
        let inner: Vec<_> = Attrs::new(attrs[1].1).collect();
        assert_eq!(be32(inner[0].1), Some(0x01020304));
        assert_eq!(inner[1], (1, &[9u8, 9, 8][..]));
    }

    #[test]
    fn error_decoding() {
        let mut raw = Vec::new();
        raw.extend_from_slice(&36u32.to_ne_bytes());
        raw.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        raw.extend_from_slice(&0u16.to_ne_bytes());
        raw.extend_from_slice(&42u32.to_ne_bytes());
        raw.extend_from_slice(&0u32.to_ne_bytes());
        raw.extend_from_slice(&(-libc::ENOENT).to_ne_bytes());
        raw.extend_from_slice(&[0; 16]);
        let m = Msgs { buf: &raw }.next().unwrap();
        assert_eq!(m.seq, 42);
        assert_eq!(m.error(), Some(libc::ENOENT));
    }

    #[test]
    fn dump_runs_to_done() {
        let int_payload = |ty: u16, v: i32| {
            let mut p = v.to_ne_bytes().to_vec();
            p.extend_from_slice(&[0; 16]);
            (ty, p)
        };
        let mut b = MsgBuf::new();
        let m = b.begin(0x0a0c, 0, 9, 1, 0);
        b.attr_str(1, "filter");
        b.end(m);
        let answer = Msgs { buf: b.as_bytes() }.next().unwrap();
        let mut seen = Vec::new();
        let mut each = |a: Attrs<'_>| seen.push(a.get(1).map(<[u8]>::to_vec));
        assert!(dump_step(answer, 0x0a0c, &mut each).is_continue());
        // Another type is not handed over.
        assert!(dump_step(answer, 0x0a0d, &mut each).is_continue());
        assert_eq!(seen, vec![Some(b"filter\0".to_vec())]);

        let outcome = |(ty, payload): (u16, Vec<u8>)| {
            let msg = Msg {
                ty,
                seq: 9,
                payload: &payload,
            };
            match dump_step(msg, 0x0a0c, &mut |_| ()) {
                ControlFlow::Break(r) => r.map_err(|e| e.raw_os_error()),
                ControlFlow::Continue(()) => panic!("dump did not end"),
            }
        };
        assert_eq!(outcome(int_payload(NLMSG_DONE, 0)), Ok(()));
        assert_eq!(
            outcome(int_payload(NLMSG_DONE, -libc::EINTR)),
            Err(Some(libc::EINTR))
        );
        assert_eq!(
            outcome(int_payload(NLMSG_ERROR, -libc::ENOENT)),
            Err(Some(libc::ENOENT))
        );
    }

    #[test]
    fn seq_window_wraps() {
        assert!(seq_in(u32::MAX, u32::MAX - 1, 3));
        assert!(seq_in(1, u32::MAX - 1, 3));
        assert!(!seq_in(5, u32::MAX - 1, 3));
        assert!(!seq_in(u32::MAX - 2, u32::MAX - 1, 3));
    }
}

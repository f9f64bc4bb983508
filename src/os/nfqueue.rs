//! Inline packet source on Linux: an nfnetlink queue (`-i nfqueue:N`).
//!
//! The firewall hands each control-connection packet to queue N and holds
//! it until we give a verdict. We read the packets waiting on the socket
//! (one netlink message each), give every one to the engine, which commits
//! any rule before it returns, and then release the whole batch with one
//! `NFQNL_MSG_VERDICT_BATCH` (NF_ACCEPT for every id up to the last one
//! read). So the `227`/`229` reply or the `PORT`/`EPRT` command leaves the
//! firewall only after its hole exists: the client cannot win the race.
//!
//! Every packet we read is accepted exactly once, whatever the engine made
//! of it (not decodable, no session, a negotiation refused): we never drop
//! or change traffic, we only delay it. Ids are assigned in queue order
//! and the batch verdict covers every id up to the one given, so a message
//! we lost (socket buffer overrun, `ENOBUFS`) is never left waiting: the
//! kernel did not queue it in the first place, and with
//! `NFQA_CFG_F_FAIL_OPEN` it let it through, as it does when the queue is
//! full. If the daemon dies, the kernel drops what it held (TCP resends)
//! and, with the rule's `bypass`, lets the control traffic through
//! unobserved until a daemon binds the queue again.
//!
//! Why our own nfnetlink client rather than libpcap's `nfqueue` device:
//! libpcap sends NF_ACCEPT right after its per-packet callback returns,
//! which with `pcap_next_ex` (the only way to read a batch from a
//! non-blocking handle without blocking) is *before* the caller has seen
//! the packet, so the hold buys nothing; it sends one verdict message per
//! packet; and its non-blocking read reports `EAGAIN` as an error, which
//! stopped the daemon after its first wake-up.
//!
//! `NFQA_CFG_F_CONNTRACK` is not asked for: it would add a conntrack dump
//! to every queued packet, while the engine needs the connection's state
//! once per session (at the SYN-ACK, from the firewall backend); `GSO` is
//! not asked for either, so the kernel hands over single segments with
//! their checksums complete, which the decoder verifies.
//!
//! Nothing here allocates after [`Queue::open`]: messages are read into the
//! socket's buffer and verdicts are written into a reused `MsgBuf`.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

use crate::core::engine::now_us;
use crate::core::log::{self, Level, RateLimit};
use crate::os::capture::{Frame, SNAPLEN};
use crate::os::netlink::{
    Msg, MsgBuf, NLM_F_ACK, NLM_F_REQUEST, NLMSG_ERROR, Socket, be32, nfnl_type,
};

const NFNL_SUBSYS_QUEUE: u8 = 3;
const NFQNL_MSG_PACKET: u8 = 0;
const NFQNL_MSG_CONFIG: u8 = 2;
const NFQNL_MSG_VERDICT_BATCH: u8 = 3;

// struct nfqnl_msg_config_cmd { u8 command; u8 pad; be16 pf; }
const NFQA_CFG_CMD: u16 = 1;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_CFG_CMD_UNBIND: u8 = 2;
// struct nfqnl_msg_config_params { be32 copy_range; u8 copy_mode; } (packed)
const NFQA_CFG_PARAMS: u16 = 2;
const NFQNL_COPY_PACKET: u8 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;
const NFQA_CFG_F_FAIL_OPEN: u32 = 1;

// Attributes of a queued packet.
/// struct nfqnl_msg_packet_hdr { be32 packet_id; be16 hw_protocol; u8 hook; }
const NFQA_PACKET_HDR: u16 = 1;
/// struct nfqnl_msg_verdict_hdr { be32 verdict; be32 id; }
const NFQA_VERDICT_HDR: u16 = 2;
/// struct nfqnl_msg_packet_timestamp { be64 sec; be64 usec; }
const NFQA_TIMESTAMP: u16 = 4;
const NFQA_PAYLOAD: u16 = 10;

const NF_ACCEPT: u32 = 1;

/// Bytes of each packet copied to us: a whole control segment up to the
/// jumbo-frame size, like the capture's snap length (the kernel hands over
/// single segments, see the module docs). A longer one arrives cut and the
/// decoder drops it as `short`; it is still accepted whole.
pub const COPY_RANGE: u32 = SNAPLEN as u32;
/// Packets the kernel holds for us before it lets more through unseen
/// (fail-open): a burst of control traffic, not a flood.
const QUEUE_MAXLEN: u32 = 1024;
/// Socket receive buffer: room for the whole queue of small control
/// segments (each message costs about 1 KiB of buffer).
const RCVBUF: libc::c_int = 4 << 20;

/// Why the queue could not be opened or read.
#[derive(Debug)]
pub enum Error {
    /// The netlink socket could not be opened or set up.
    Socket(io::Error),
    /// The kernel refused to bind the queue.
    Bind { queue: u16, errno: i32 },
    /// Reading the socket failed.
    Recv(io::Error),
    /// A verdict could not be sent: the packets stay held until we exit.
    Verdict(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Socket(e) => write!(f, "netlink socket: {e}"),
            Error::Bind { queue, errno } => {
                let e = io::Error::from_raw_os_error(*errno);
                match *errno {
                    libc::EBUSY | libc::EPERM => {
                        write!(f, "queue {queue} is bound by another process ({e})")
                    }
                    _ => write!(f, "binding queue {queue}: {e}"),
                }
            }
            Error::Recv(e) => write!(f, "reading the queue: {e}"),
            Error::Verdict(e) => write!(f, "sending a verdict: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Socket(e) | Error::Recv(e) | Error::Verdict(e) => Some(e),
            Error::Bind { .. } => None,
        }
    }
}

/// Counters of the queue, for the exit and `SIGUSR1` lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets read (each got exactly one verdict).
    pub packets: u64,
    /// Packets that carried no payload (copied before our copy mode was
    /// set, or cut off): accepted without being looked at.
    pub no_payload: u64,
    /// Verdict messages sent (one per batch).
    pub verdicts: u64,
    /// Times the socket buffer overflowed: the kernel let those packets
    /// through without us (fail-open).
    pub overruns: u64,
    /// Messages we could not read whole or did not expect.
    pub malformed: u64,
    /// Error answers from the kernel (a verdict it refused).
    pub errors: u64,
}

impl fmt::Display for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} packets accepted in {} verdicts, {} without payload, {} overruns, {} malformed, {} refused",
            self.packets,
            self.verdicts,
            self.no_payload,
            self.overruns,
            self.malformed,
            self.errors
        )
    }
}

/// A bound nfnetlink queue.
pub struct Queue {
    sock: Socket,
    num: u16,
    out: MsgBuf,
    noisy: RateLimit,
    pub counters: Counters,
}

/// One queued packet, as read from its message.
#[derive(Debug, PartialEq, Eq)]
struct Queued<'a> {
    id: u32,
    /// Kernel timestamp in microseconds, when it gave one.
    ts: Option<u64>,
    payload: Option<&'a [u8]>,
}

impl Queue {
    /// Bind queue `num` in the current network namespace (needs
    /// CAP_NET_ADMIN) and ask for whole packets, fail-open.
    pub fn open(num: u16) -> Result<Queue, Error> {
        let mut sock = Socket::open().map_err(Error::Socket)?;
        let fd = sock.as_raw_fd();
        // Past rmem_max when we may (root); a plain SO_RCVBUF otherwise.
        if setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, RCVBUF).is_err() {
            setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, RCVBUF).map_err(Error::Socket)?;
        }
        let mut out = MsgBuf::new();
        let mut fail_open = true;
        loop {
            out.clear();
            let seq = sock.next_seqs(1);
            config(&mut out, seq, num, fail_open);
            sock.send(out.as_bytes()).map_err(Error::Socket)?;
            match wait_ack(&mut sock, &mut out, num, seq)? {
                0 => break,
                // A kernel without fail-open: bind without it.
                libc::EOPNOTSUPP | libc::EINVAL if fail_open => {
                    crate::logmsg!(
                        Level::Warning,
                        "nfqueue:{num}: this kernel cannot fail open: packets beyond a full queue are dropped"
                    );
                    fail_open = false;
                }
                errno => return Err(Error::Bind { queue: num, errno }),
            }
        }
        set_nonblocking(fd).map_err(Error::Socket)?;
        Ok(Queue {
            sock,
            num,
            out,
            noisy: RateLimit::new(10),
            counters: Counters::default(),
        })
    }

    /// The descriptor to poll.
    pub fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// The queue number.
    pub fn num(&self) -> u16 {
        self.num
    }

    /// Hand up to `budget` waiting packets to `f`, one after the other,
    /// then accept them all with one verdict. Returns how many were read.
    pub fn read(&mut self, budget: usize, mut f: impl FnMut(Frame<'_>)) -> Result<usize, Error> {
        let mut n = 0;
        let mut last = None;
        let result = loop {
            if n >= budget {
                break Ok(());
            }
            let msgs = match self.sock.recv() {
                Ok(msgs) => msgs,
                // Non-blocking: nothing more is waiting.
                Err(e) if e.kind() == io::ErrorKind::TimedOut => break Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    self.counters.overruns += 1;
                    if self.noisy.allow(now_us()) {
                        crate::logmsg!(
                            Level::Warning,
                            "nfqueue:{}: socket buffer overrun: packets passed unseen",
                            self.num
                        );
                    }
                    continue;
                }
                Err(e) if e.raw_os_error().is_none() && e.kind() == io::ErrorKind::Other => {
                    // Longer than our buffer: its id is covered by the
                    // next batch verdict.
                    self.counters.malformed += 1;
                    continue;
                }
                Err(e) => break Err(Error::Recv(e)),
            };
            for msg in msgs {
                if msg.ty == nfnl_type(NFNL_SUBSYS_QUEUE, NFQNL_MSG_PACKET) {
                    let Some(p) = queued(&msg) else {
                        self.counters.malformed += 1;
                        continue;
                    };
                    n += 1;
                    self.counters.packets += 1;
                    last = Some(p.id);
                    match p.payload {
                        Some(data) => f(Frame {
                            ts: p.ts.unwrap_or_else(now_us),
                            data,
                        }),
                        None => {
                            self.counters.no_payload += 1;
                            if log::enabled(Level::Debug) {
                                crate::logmsg!(
                                    Level::Debug,
                                    "nfqueue:{}: packet {} without payload accepted",
                                    self.num,
                                    p.id
                                );
                            }
                        }
                    }
                } else if let Some(errno) = msg.error().filter(|&e| e != 0) {
                    self.counters.errors += 1;
                    if self.noisy.allow(now_us()) {
                        crate::logmsg!(
                            Level::Warning,
                            "nfqueue:{}: kernel refused a verdict: {}",
                            self.num,
                            io::Error::from_raw_os_error(errno)
                        );
                    }
                }
            }
        };
        // Release what was read even when reading failed.
        if let Some(id) = last {
            self.accept_up_to(id)?;
        }
        result.map(|()| n)
    }

    /// NF_ACCEPT for every held packet with an id up to `id`.
    fn accept_up_to(&mut self, id: u32) -> Result<(), Error> {
        self.out.clear();
        verdict_batch(&mut self.out, self.num, id);
        self.sock
            .send(self.out.as_bytes())
            .map_err(Error::Verdict)?;
        self.counters.verdicts += 1;
        Ok(())
    }

    /// Packets the kernel let through because we fell behind.
    pub fn kernel_drops(&self) -> u64 {
        self.counters.overruns
    }
}

impl Drop for Queue {
    /// Accept what is still waiting (the engine has stopped: those packets
    /// pass unobserved, as without us), then unbind. Closing the socket
    /// would unbind too, but drop the packets the kernel still held.
    fn drop(&mut self) {
        let _ = self.read(usize::MAX, |_| {});
        self.out.clear();
        let seq = self.sock.next_seqs(1);
        unbind(&mut self.out, seq, self.num);
        let _ = self.sock.send(self.out.as_bytes());
    }
}

/// Wait for the answer to config request `seq`: 0 or a positive errno.
/// Packets that arrive meanwhile (the queue is live as soon as it is
/// bound) are accepted at once: they pass unobserved, like everything
/// before the daemon started.
fn wait_ack(sock: &mut Socket, out: &mut MsgBuf, num: u16, seq: u32) -> Result<i32, Error> {
    loop {
        let mut answer = None;
        let mut last = None;
        for msg in sock.recv().map_err(Error::Socket)? {
            if msg.ty == NLMSG_ERROR && msg.seq == seq {
                answer = msg.error();
            } else if msg.ty == nfnl_type(NFNL_SUBSYS_QUEUE, NFQNL_MSG_PACKET) {
                last = queued(&msg).map(|p| p.id).or(last);
            }
        }
        if let Some(id) = last {
            out.clear();
            verdict_batch(out, num, id);
            sock.send(out.as_bytes()).map_err(Error::Verdict)?;
        }
        if let Some(errno) = answer {
            return Ok(errno);
        }
    }
}

/// The one configuration message: bind queue `num` to us, copy whole
/// packets up to [`COPY_RANGE`], bound the queue, fail open. The kernel
/// applies the attributes in that order within the one message.
fn config(out: &mut MsgBuf, seq: u32, num: u16, fail_open: bool) {
    let m = out.begin(
        nfnl_type(NFNL_SUBSYS_QUEUE, NFQNL_MSG_CONFIG),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        libc::AF_UNSPEC as u8,
        num,
    );
    out.attr(NFQA_CFG_CMD, &[NFQNL_CFG_CMD_BIND, 0, 0, 0]);
    let mut params = [0u8; 5];
    params[..4].copy_from_slice(&COPY_RANGE.to_be_bytes());
    params[4] = NFQNL_COPY_PACKET;
    out.attr(NFQA_CFG_PARAMS, &params);
    out.attr_be32(NFQA_CFG_QUEUE_MAXLEN, QUEUE_MAXLEN);
    if fail_open {
        out.attr_be32(NFQA_CFG_FLAGS, NFQA_CFG_F_FAIL_OPEN);
        out.attr_be32(NFQA_CFG_MASK, NFQA_CFG_F_FAIL_OPEN);
    }
    out.end(m);
}

fn unbind(out: &mut MsgBuf, seq: u32, num: u16) {
    let m = out.begin(
        nfnl_type(NFNL_SUBSYS_QUEUE, NFQNL_MSG_CONFIG),
        NLM_F_REQUEST,
        seq,
        libc::AF_UNSPEC as u8,
        num,
    );
    out.attr(NFQA_CFG_CMD, &[NFQNL_CFG_CMD_UNBIND, 0, 0, 0]);
    out.end(m);
}

/// One verdict for every packet of queue `num` with an id up to `id`.
fn verdict_batch(out: &mut MsgBuf, num: u16, id: u32) {
    let m = out.begin(
        nfnl_type(NFNL_SUBSYS_QUEUE, NFQNL_MSG_VERDICT_BATCH),
        NLM_F_REQUEST,
        0,
        libc::AF_UNSPEC as u8,
        num,
    );
    let mut hdr = [0u8; 8];
    hdr[..4].copy_from_slice(&NF_ACCEPT.to_be_bytes());
    hdr[4..].copy_from_slice(&id.to_be_bytes());
    out.attr(NFQA_VERDICT_HDR, &hdr);
    out.end(m);
}

/// The id, timestamp and payload of a queued-packet message; None without
/// a packet header (then we cannot give it a verdict by itself).
fn queued<'a>(msg: &Msg<'a>) -> Option<Queued<'a>> {
    let mut id = None;
    let mut ts = None;
    let mut payload = None;
    for (ty, data) in msg.nf_attrs() {
        match ty {
            NFQA_PACKET_HDR => id = be32(data),
            NFQA_TIMESTAMP if data.len() >= 16 => {
                let sec = u64::from_be_bytes(data[0..8].try_into().ok()?);
                let usec = u64::from_be_bytes(data[8..16].try_into().ok()?);
                ts = Some(sec.saturating_mul(1_000_000).saturating_add(usec));
            }
            NFQA_PAYLOAD if !data.is_empty() => payload = Some(data),
            _ => {}
        }
    }
    Some(Queued {
        id: id?,
        ts,
        payload,
    })
}

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    opt: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: v is a c_int of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::netlink::{Attrs, NFGENMSG_LEN, NLMSG_HDRLEN};

    /// The attributes of one request we wrote.
    fn attrs_of(bytes: &[u8]) -> Vec<(u16, Vec<u8>)> {
        Attrs::new(&bytes[NLMSG_HDRLEN + NFGENMSG_LEN..])
            .map(|(t, d)| (t, d.to_vec()))
            .collect()
    }

    fn header(bytes: &[u8]) -> (u32, u16, u16, u8, u16) {
        (
            u32::from_ne_bytes(bytes[0..4].try_into().unwrap()),
            u16::from_ne_bytes(bytes[4..6].try_into().unwrap()),
            u16::from_ne_bytes(bytes[6..8].try_into().unwrap()),
            bytes[16],
            u16::from_be_bytes(bytes[18..20].try_into().unwrap()),
        )
    }

    #[test]
    fn config_binds_copies_and_fails_open() {
        let mut b = MsgBuf::new();
        config(&mut b, 9, 7, true);
        let bytes = b.as_bytes();
        let (len, ty, flags, family, res_id) = header(bytes);
        assert_eq!(len as usize, bytes.len());
        assert_eq!(ty, 0x0302);
        assert_eq!(flags, NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!((family, res_id), (0, 7));
        let attrs = attrs_of(bytes);
        assert_eq!(attrs[0], (NFQA_CFG_CMD, vec![NFQNL_CFG_CMD_BIND, 0, 0, 0]));
        assert_eq!(
            attrs[1],
            (NFQA_CFG_PARAMS, vec![0, 0, 0x24, 0, NFQNL_COPY_PACKET])
        );
        assert_eq!(
            attrs[2],
            (NFQA_CFG_QUEUE_MAXLEN, 1024u32.to_be_bytes().to_vec())
        );
        assert_eq!(attrs[3], (NFQA_CFG_FLAGS, vec![0, 0, 0, 1]));
        assert_eq!(attrs[4], (NFQA_CFG_MASK, vec![0, 0, 0, 1]));

        b.clear();
        config(&mut b, 9, 7, false);
        assert_eq!(
            attrs_of(b.as_bytes()).len(),
            3,
            "no flags without fail-open"
        );
    }

    #[test]
    fn verdict_batch_accepts_up_to_id() {
        let mut b = MsgBuf::new();
        verdict_batch(&mut b, 0x0102, 0xdead_beef);
        let bytes = b.as_bytes();
        let (len, ty, flags, _, res_id) = header(bytes);
        assert_eq!(
            (len as usize, ty, flags, res_id),
            (bytes.len(), 0x0303, NLM_F_REQUEST, 0x0102)
        );
        assert_eq!(
            attrs_of(bytes),
            vec![(NFQA_VERDICT_HDR, vec![0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef])]
        );
    }

    #[test]
    fn unbind_message() {
        let mut b = MsgBuf::new();
        unbind(&mut b, 1, 3);
        assert_eq!(
            attrs_of(b.as_bytes()),
            vec![(NFQA_CFG_CMD, vec![2, 0, 0, 0])]
        );
    }

    /// A packet message as the kernel writes it (the parts we read).
    fn packet_msg(id: Option<u32>, ts: Option<(u64, u64)>, payload: &[u8]) -> Vec<u8> {
        let mut b = MsgBuf::new();
        let m = b.begin(nfnl_type(NFNL_SUBSYS_QUEUE, NFQNL_MSG_PACKET), 0, 0, 2, 0);
        if let Some(id) = id {
            let mut hdr = [0u8; 7];
            hdr[..4].copy_from_slice(&id.to_be_bytes());
            hdr[4..6].copy_from_slice(&0x0800u16.to_be_bytes());
            hdr[6] = 4; // NF_INET_POST_ROUTING
            b.attr(NFQA_PACKET_HDR, &hdr);
        }
        b.attr_be32(5, 3); // NFQA_IFINDEX_INDEV: ignored
        if let Some((s, us)) = ts {
            let mut t = [0u8; 16];
            t[..8].copy_from_slice(&s.to_be_bytes());
            t[8..].copy_from_slice(&us.to_be_bytes());
            b.attr(NFQA_TIMESTAMP, &t);
        }
        b.attr(NFQA_PAYLOAD, payload);
        b.end(m);
        b.as_bytes().to_vec()
    }

    fn msg(bytes: &[u8]) -> Msg<'_> {
        Msg {
            ty: u16::from_ne_bytes(bytes[4..6].try_into().unwrap()),
            seq: 0,
            payload: &bytes[NLMSG_HDRLEN..],
        }
    }

    #[test]
    fn queued_packet_fields() {
        let ip = [0x45u8, 0, 0, 20, 1, 2, 3];
        let bytes = packet_msg(Some(41), Some((1_700_000_000, 250_000)), &ip);
        assert_eq!(
            queued(&msg(&bytes)),
            Some(Queued {
                id: 41,
                ts: Some(1_700_000_000_250_000),
                payload: Some(&ip[..]),
            })
        );
        let bytes = packet_msg(Some(42), None, &[]);
        let q = queued(&msg(&bytes)).unwrap();
        assert_eq!((q.id, q.ts, q.payload), (42, None, None));
    }

    #[test]
    fn packet_without_header_has_no_verdict_of_its_own() {
        let bytes = packet_msg(None, None, &[0x45]);
        assert_eq!(queued(&msg(&bytes)), None);
    }

    #[test]
    fn counters_line() {
        let c = Counters {
            packets: 5,
            verdicts: 2,
            ..Counters::default()
        };
        assert_eq!(
            c.to_string(),
            "5 packets accepted in 2 verdicts, 0 without payload, 0 overruns, 0 malformed, 0 refused"
        );
    }
}

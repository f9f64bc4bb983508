//! Packet capture: libpcap, live on an interface or from a file.
//!
//! Live capture runs in immediate mode (each packet is handed over as soon
//! as it arrives: the data connection is racing us) with a jumbo-frame
//! snap length, and the filter is locked after it is set (`os::bpflock`
//! says what that gives on each system).
//! Offline capture accepts pcap and pcapng and applies the same expression,
//! except to NFLOG and pflog files (see `File::open`). When the program
//! libpcap compiles from it is, instruction for instruction, the one of
//! `tcp and port P` on Ethernet (the default expression), the same test is
//! made here in a few instructions instead of libpcap's interpreter
//! ([`TcpPort`]); any other program is left to libpcap. Such a file, when it
//! is a plain classic pcap file, is also read here ([`Records`]), a large
//! buffer at a time and without a copy per packet; at the first record that
//! is not plain (cut short, longer than the snapshot length, a read error)
//! libpcap takes over from that record, so it alone decides what such
//! records mean.
//!
//! libpcap's `nflog:N` device (Linux: packets an nftables `log group N`
//! rule copies, after the filter) is opened the same way but takes no
//! expression: libpcap's filter compiler cannot look past the NFLOG
//! header into its TLVs, so the rule chooses the packets.
//! Its read reports "no packet waiting" as an error when non-blocking, so
//! it is read one buffer at a time, only while its descriptor is readable.

use std::fmt;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use pcap::{Active, Capture, Offline};

use crate::core::decode::Link;

/// Snap length. In immediate mode libpcap gives every packet a ring slot
/// of this size, so it is the jumbo-frame size (control-connection
/// segments are small; a longer one is dropped as `short` and the stream
/// resynchronises) rather than GRO's 64 KiB, which left room for 16 packets.
pub(crate) const SNAPLEN: i32 = 9216;
/// Kernel ring: about 3,500 slots, enough to ride out a SYN flood burst.
const BUFFER: i32 = 32 << 20;

/// One captured packet: timestamp in microseconds and the frame.
pub struct Frame<'a> {
    pub ts: u64,
    pub data: &'a [u8],
}

fn ts_us(h: &pcap::PacketHeader) -> u64 {
    (h.ts.tv_sec as u64)
        .saturating_mul(1_000_000)
        .saturating_add(h.ts.tv_usec as u64)
}

/// Why a capture could not be opened or read. `Display` is the log line;
/// the underlying libpcap or system error is the `source()`.
#[derive(Debug)]
pub enum Error {
    /// pcap could not name a default device.
    Lookup(pcap::Error),
    /// There is no default device: the user has to name one.
    NoDefaultInterface,
    /// Opening or setting up the live capture on `interface` failed.
    Open {
        interface: String,
        source: pcap::Error,
    },
    /// Opening the capture file failed.
    OpenFile { path: PathBuf, source: pcap::Error },
    /// The pcap expression did not compile.
    Expression {
        expression: String,
        source: pcap::Error,
    },
    /// The capture filter could not be locked.
    Lock {
        interface: String,
        source: std::io::Error,
    },
    /// A link type the decoder does not know.
    LinkType { linktype: i32, name: String },
    /// Reading from the live capture failed.
    Read {
        interface: String,
        source: pcap::Error,
    },
    /// Reading the capture file failed.
    ReadFile(pcap::Error),
    /// The descriptor reported an error or hang-up and there was nothing to
    /// read: the interface went away.
    Gone { interface: String },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Lookup(e) => write!(f, "no default interface: {e}"),
            Error::NoDefaultInterface => f.write_str("no default interface: use -i"),
            Error::Open { interface, source } => write!(f, "{interface}: {source}"),
            Error::OpenFile { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Expression { expression, source } => {
                write!(f, "bad expression \"{expression}\": {source}")
            }
            Error::Lock { interface, source } => {
                write!(f, "{interface}: locking the capture filter: {source}")
            }
            Error::LinkType { linktype, name } => {
                write!(f, "unsupported link type {linktype} ({name})")
            }
            Error::Read { interface, source } => write!(f, "{interface}: {source}"),
            Error::ReadFile(e) => write!(f, "{e}"),
            Error::Gone { interface } => {
                write!(f, "{interface}: capture failed (interface gone?)")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Lookup(e)
            | Error::Open { source: e, .. }
            | Error::OpenFile { source: e, .. }
            | Error::Expression { source: e, .. }
            | Error::Read { source: e, .. }
            | Error::ReadFile(e) => Some(e),
            Error::Lock { source, .. } => Some(source),
            Error::NoDefaultInterface | Error::LinkType { .. } | Error::Gone { .. } => None,
        }
    }
}

fn link_of(lt: pcap::Linktype) -> Result<Link, Error> {
    Link::from_linktype(lt.0).ok_or_else(|| Error::LinkType {
        linktype: lt.0,
        name: lt.get_name().unwrap_or_default(),
    })
}

fn expression_error(expression: &str) -> impl FnOnce(pcap::Error) -> Error + '_ {
    move |source| Error::Expression {
        expression: expression.to_string(),
        source,
    }
}

/// DLT_NFLOG: libpcap's netlink device for NFLOG groups.
const DLT_NFLOG: i32 = 239;

/// A live capture on one interface.
pub struct Live {
    cap: Capture<Active>,
    pub link: Link,
    pub interface: String,
    /// libpcap's NFLOG device: read buffer by buffer (see module docs).
    netlink: bool,
}

impl Live {
    /// Open `interface` (or pcap's default device) with `expression`.
    pub fn open(interface: Option<&str>, expression: &str) -> Result<Live, Error> {
        let device = match interface {
            Some(name) => pcap::Device::from(name),
            None => pcap::Device::lookup()
                .map_err(Error::Lookup)?
                .ok_or(Error::NoDefaultInterface)?,
        };
        Live::open_device(device, Some(expression))
    }

    /// Open NFLOG group `group` (libpcap's `nflog:N`), without a filter.
    pub fn open_nflog(group: u16) -> Result<Live, Error> {
        Live::open_device(pcap::Device::from(format!("nflog:{group}").as_str()), None)
    }

    fn open_device(device: pcap::Device, expression: Option<&str>) -> Result<Live, Error> {
        let name = device.name.clone();
        let open_error = |source| Error::Open {
            interface: name.clone(),
            source,
        };
        let mut cap = Capture::from_device(device)
            .and_then(|c| {
                c.immediate_mode(true)
                    .snaplen(SNAPLEN)
                    .buffer_size(BUFFER)
                    .promisc(false)
                    .open()
            })
            .map_err(open_error)?;
        if let Some(expression) = expression {
            cap.filter(expression, true)
                .map_err(expression_error(expression))?;
        }
        let cap = cap.setnonblock().map_err(open_error)?;
        let netlink = cap.get_datalink().0 == DLT_NFLOG;
        if netlink {
            // No kernel filter to lock: the firewall rule is the filter.
        } else if let Err(e) = crate::os::bpflock::lock(cap.as_raw_fd()) {
            // macOS bpf cannot be locked; everywhere else this is fatal.
            if e.kind() != std::io::ErrorKind::Unsupported {
                return Err(Error::Lock {
                    interface: name,
                    source: e,
                });
            }
            crate::logmsg!(
                crate::core::log::Level::Notice,
                "{name}: capture filter cannot be locked here: {e}"
            );
        }
        let link = link_of(cap.get_datalink())?;
        Ok(Live {
            cap,
            link,
            interface: name,
            netlink,
        })
    }

    /// The descriptor to poll.
    pub fn fd(&self) -> RawFd {
        self.cap.as_raw_fd()
    }

    /// Hand up to `budget` waiting packets to `f`. Returns how many were
    /// read, or the capture's error (interface gone, and the like).
    pub fn read(&mut self, budget: usize, mut f: impl FnMut(Frame<'_>)) -> Result<usize, Error> {
        if self.netlink {
            return self.read_buffers(budget, f);
        }
        let mut n = 0;
        while n < budget {
            match self.cap.next_packet() {
                Ok(p) => {
                    f(Frame {
                        ts: ts_us(p.header),
                        data: p.data,
                    });
                    n += 1;
                }
                Err(pcap::Error::TimeoutExpired | pcap::Error::NoMorePackets) => break,
                Err(source) => {
                    return Err(Error::Read {
                        interface: self.interface.clone(),
                        source,
                    });
                }
            }
        }
        Ok(n)
    }

    /// The netlink device: one buffer per `pcap_dispatch`, and only while
    /// the descriptor is readable (a whole buffer is always consumed, so
    /// nothing is left behind in libpcap when we go back to poll).
    fn read_buffers(
        &mut self,
        budget: usize,
        mut f: impl FnMut(Frame<'_>),
    ) -> Result<usize, Error> {
        let mut n = 0;
        while n < budget && readable(self.cap.as_raw_fd()) {
            n += self
                .cap
                .dispatch(None, |p| {
                    f(Frame {
                        ts: ts_us(p.header),
                        data: p.data,
                    })
                })
                .map_err(|source| Error::Read {
                    interface: self.interface.clone(),
                    source,
                })?;
        }
        Ok(n)
    }

    /// Packets the kernel dropped because we were too slow (pcap_stats).
    pub fn kernel_drops(&mut self) -> Option<u32> {
        self.cap.stats().ok().map(|s| s.dropped)
    }
}

/// True when `fd` has something to read now.
fn readable(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    unsafe { libc::poll(&mut p, 1, 0) > 0 && p.revents & libc::POLLIN != 0 }
}

/// A capture file.
pub struct File {
    cap: Capture<Offline>,
    pub link: Link,
    /// The expression's program, run here rather than by libpcap.
    native: Option<TcpPort>,
    /// The file's records, read here rather than by libpcap.
    records: Option<Records>,
}

impl File {
    pub fn open(path: &Path, expression: &str) -> Result<File, Error> {
        let mut cap = Capture::from_file(path).map_err(|source| Error::OpenFile {
            path: path.to_path_buf(),
            source,
        })?;
        let link = link_of(cap.get_datalink())?;
        let mut native = None;
        if matches!(link, Link::Nflog | Link::Pflog) {
            // libpcap cannot filter NFLOG at all, and on pflog it checks
            // the address family against this system's own AF_INET6, so a
            // BSD's IPv6 packets would vanish without a word. The log rule
            // chose these packets; the expression names control ports only.
            crate::logmsg!(
                crate::core::log::Level::Notice,
                "{}: expression \"{expression}\" not applied as a filter to a log capture; it names the control ports only",
                path.display()
            );
        } else {
            let program = cap
                .compile(expression, true)
                .map_err(expression_error(expression))?;
            native = TcpPort::recognise(cap.get_datalink().0, &program);
            if native.is_none() {
                cap.filter(expression, true)
                    .map_err(expression_error(expression))?;
            }
        }
        // Only with the native filter: libpcap's filter is not run on
        // records read here.
        let records = native.and_then(|_| Records::open(path, RECORDS_BUFFER));
        Ok(File {
            cap,
            link,
            native,
            records,
        })
    }

    /// Hand every packet the expression matches to `f`, in file order.
    pub fn run(&mut self, mut f: impl FnMut(Frame<'_>)) -> Result<(), Error> {
        if let (Some(mut records), Some(port)) = (self.records.take(), self.native) {
            let mut pass = |frame: Frame<'_>| {
                if port.matches(frame.data) {
                    f(frame)
                }
            };
            match records.run(&mut pass) {
                None => return Ok(()),
                Some(done) => {
                    // libpcap reads the rest: past the records read here
                    // (it has read none yet).
                    for _ in 0..done {
                        match self.cap.next_packet() {
                            Ok(_) => {}
                            Err(pcap::Error::NoMorePackets) => return Ok(()),
                            Err(e) => return Err(Error::ReadFile(e)),
                        }
                    }
                }
            }
        }
        loop {
            match self.cap.next_packet() {
                Ok(p) => {
                    if self.native.is_some_and(|t| !t.matches(p.data)) {
                        continue;
                    }
                    f(Frame {
                        ts: ts_us(p.header),
                        data: p.data,
                    })
                }
                Err(pcap::Error::NoMorePackets) => return Ok(()),
                Err(e) => return Err(Error::ReadFile(e)),
            }
        }
    }
}

/// Read buffer of [`Records`]: many packets per read, and room for the
/// longest record libpcap accepts.
const RECORDS_BUFFER: usize = (256 + 4) << 10;
/// Header of a classic pcap file.
const FILE_HEADER: usize = 24;
/// Header of each record in it: seconds, microseconds, captured length,
/// length on the wire.
const RECORD_HEADER: usize = 16;
/// The largest snapshot length libpcap accepts for Ethernet.
const MAX_SNAPLEN: u32 = 262_144;

/// The records of a classic pcap file (microsecond timestamps, version
/// 2.4, either byte order), read straight from the file. Used only while
/// every record is plain: its header and bytes are all there and it is no
/// longer than the snapshot length. Anything else is left to libpcap (see
/// [`Records::run`]).
struct Records {
    file: std::fs::File,
    buf: Box<[u8]>,
    /// The unread bytes are `buf[at..end]`.
    at: usize,
    end: usize,
    swapped: bool,
    snaplen: u32,
}

impl Records {
    /// The records of the file at `path`, if it is a regular file in the
    /// classic format; None for anything else (libpcap reads it).
    fn open(path: &Path, buffer: usize) -> Option<Records> {
        use std::io::Read;
        if path == Path::new("-") {
            return None; // libpcap reads standard input
        }
        let mut file = std::fs::File::open(path).ok()?;
        if !file.metadata().ok()?.is_file() {
            return None;
        }
        let mut h = [0u8; FILE_HEADER];
        file.read_exact(&mut h).ok()?;
        let swapped = match u32::from_le_bytes([h[0], h[1], h[2], h[3]]) {
            0xa1b2_c3d4 => false,
            0xd4c3_b2a1 => true,
            _ => return None,
        };
        let word = |at: usize| {
            let v = u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
            if swapped { v.swap_bytes() } else { v }
        };
        let (major, minor) = (
            u16::from_le_bytes([h[4], h[5]]),
            u16::from_le_bytes([h[6], h[7]]),
        );
        let (major, minor) = if swapped {
            (major.swap_bytes(), minor.swap_bytes())
        } else {
            (major, minor)
        };
        let snaplen = word(16);
        if (major, minor) != (2, 4) || snaplen == 0 || snaplen > MAX_SNAPLEN {
            return None;
        }
        Some(Records {
            file,
            buf: vec![0; buffer].into_boxed_slice(),
            at: 0,
            end: 0,
            swapped,
            snaplen,
        })
    }

    /// Make `n` unread bytes available: Some(false) when the file ends
    /// first, None on a read error or when `n` does not fit the buffer.
    #[inline]
    fn fill(&mut self, n: usize) -> Option<bool> {
        if self.end - self.at >= n {
            return Some(true);
        }
        self.refill(n)
    }

    /// Move the unread bytes to the front and read until `n` are there.
    #[cold]
    fn refill(&mut self, n: usize) -> Option<bool> {
        use std::io::Read;
        if n > self.buf.len() {
            return None;
        }
        self.buf.copy_within(self.at..self.end, 0);
        self.end -= self.at;
        self.at = 0;
        while self.end < n {
            match self.file.read(&mut self.buf[self.end..]) {
                Ok(0) => return Some(false),
                Ok(k) => self.end += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
        Some(true)
    }

    /// Hand the records to `f` in order. None when all were read; else
    /// how many were handed out before the first one that is not plain
    /// (cut short, too long, unreadable), for libpcap to take over from.
    fn run(&mut self, f: &mut impl FnMut(Frame<'_>)) -> Option<u64> {
        let mut done = 0u64;
        loop {
            match self.fill(RECORD_HEADER) {
                Some(true) => {}
                Some(false) if self.end == self.at => return None,
                _ => return Some(done),
            }
            let h = &self.buf[self.at..self.at + RECORD_HEADER];
            let word = |at: usize| {
                let v = u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
                if self.swapped { v.swap_bytes() } else { v }
            };
            let (sec, usec, caplen, wire) = (word(0), word(4), word(8), word(12));
            if caplen > self.snaplen || caplen > wire {
                return Some(done);
            }
            let len = RECORD_HEADER + caplen as usize;
            if self.fill(len) != Some(true) {
                return Some(done);
            }
            let data = &self.buf[self.at + RECORD_HEADER..self.at + len];
            f(Frame {
                ts: u64::from(sec) * 1_000_000 + u64::from(usec),
                data,
            });
            self.at += len;
            done += 1;
        }
    }
}

/// DLT_EN10MB.
const DLT_EN10MB: i32 = 1;

/// The program libpcap (1.10) compiles, optimised, from `tcp and port P` on
/// Ethernet, as (code, jt, jf, k); `PORT` stands for P and `SNAP` for the
/// accepting return value (the file's snapshot length, any nonzero value).
const PORT: u32 = u32::MAX;
const SNAP: u32 = u32::MAX - 1;
const TCP_PORT_EN10MB: [(u16, u8, u8, u32); 20] = [
    (0x28, 0, 0, 12),      // ldh [12]             ethertype
    (0x15, 0, 9, 0x800),   // jeq #0x800           IPv4?
    (0x30, 0, 0, 23),      // ldb [23]             protocol
    (0x15, 0, 15, 6),      // jeq #6               TCP?
    (0x28, 0, 0, 20),      // ldh [20]             flags, fragment offset
    (0x45, 13, 0, 0x1fff), // jset #0x1fff         a later fragment: no
    (0xb1, 0, 0, 14),      // ldxb 4*([14]&0xf)    header length
    (0x48, 0, 0, 14),      // ldh [x + 14]         source port
    (0x15, 9, 0, PORT),    // jeq #P
    (0x48, 0, 0, 16),      // ldh [x + 16]         destination port
    (0x15, 7, 8, PORT),    // jeq #P
    (0x15, 0, 7, 0x86dd),  // jeq #0x86dd          IPv6?
    (0x30, 0, 0, 20),      // ldb [20]             next header
    (0x15, 0, 5, 6),       // jeq #6               TCP?
    (0x28, 0, 0, 54),      // ldh [54]             source port
    (0x15, 2, 0, PORT),    // jeq #P
    (0x28, 0, 0, 56),      // ldh [56]             destination port
    (0x15, 0, 1, PORT),    // jeq #P
    (0x06, 0, 0, SNAP),    // ret #snaplen         match
    (0x06, 0, 0, 0),       // ret #0               no match
];

/// `tcp and port P` on Ethernet, tested as its BPF program does: a load
/// past the captured bytes rejects the packet; VLAN-tagged frames, IPv4
/// fragments after the first and IPv6 with extension headers do not match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TcpPort(u16);

impl TcpPort {
    /// The port P if `program`, compiled for `linktype`, is exactly the
    /// program of `tcp and port P` (checked instruction by instruction).
    fn recognise(linktype: i32, program: &pcap::BpfProgram) -> Option<TcpPort> {
        let insns = program.get_instructions();
        if linktype != DLT_EN10MB || insns.len() != TCP_PORT_EN10MB.len() {
            return None;
        }
        let mut port = None;
        for (insn, &(code, jt, jf, k)) in insns.iter().zip(&TCP_PORT_EN10MB) {
            // The crate shows an instruction only as "code jt jf k".
            let text = insn.to_string();
            let mut f = text.split(' ').map(|w| w.parse::<u32>().ok());
            let (Some(c), Some(t), Some(e), Some(v), None) =
                (f.next()?, f.next()?, f.next()?, f.next()?, f.next())
            else {
                return None;
            };
            if (c, t, e) != (u32::from(code), u32::from(jt), u32::from(jf)) {
                return None;
            }
            match k {
                PORT if v <= 0xffff && port.is_none_or(|p| p == v) => port = Some(v),
                SNAP if v > 0 => {}
                _ if k == v => {}
                _ => return None,
            }
        }
        port.map(|p| TcpPort(p as u16))
    }

    /// The program's verdict on a frame of which `frame` was captured.
    #[inline]
    fn matches(self, frame: &[u8]) -> bool {
        let h = |at: usize| {
            frame
                .get(at..at + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
        };
        let b = |at: usize| frame.get(at).copied();
        let port = Some(self.0);
        match h(12) {
            Some(0x0800) => {
                if b(23) != Some(6) || h(20).is_none_or(|f| f & 0x1fff != 0) {
                    return false;
                }
                let Some(x) = b(14).map(|v| 4 * usize::from(v & 0xf)) else {
                    return false;
                };
                h(x + 14) == port || h(x + 16) == port
            }
            Some(0x86dd) => b(20) == Some(6) && (h(54) == port || h(56) == port),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    /// An empty pcap file with link type `linktype`.
    fn empty_pcap(name: &str, linktype: u32) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "ftpsesame-capture-{}-{name}.pcap",
            std::process::id()
        ));
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&[0; 8]);
        h.extend_from_slice(&65535u32.to_le_bytes());
        h.extend_from_slice(&linktype.to_le_bytes());
        std::fs::write(&path, h).unwrap();
        path
    }

    fn compiled(linktype: i32, expression: &str) -> pcap::BpfProgram {
        Capture::dead(pcap::Linktype(linktype))
            .unwrap()
            .compile(expression, true)
            .unwrap()
    }

    #[test]
    fn only_the_program_of_tcp_and_port_is_run_natively() {
        let native = |lt, e| TcpPort::recognise(lt, &compiled(lt, e));
        assert_eq!(native(1, "tcp and port 21"), Some(TcpPort(21)));
        assert_eq!(native(1, "tcp and port 2121"), Some(TcpPort(2121)));
        assert_eq!(native(1, "tcp and port 65535"), Some(TcpPort(65535)));
        for other in [
            "tcp and port 21 or port 22",
            "tcp and (port 21 or port 2121)",
            "tcp and port 21 and not host 192.0.2.9",
            "udp and port 21",
            "tcp and src port 21",
            "vlan and tcp and port 21",
            "port 21",
            "tcp",
            "",
        ] {
            assert_eq!(native(1, other), None, "{other}");
        }
        // A TCP/IPv4 SYN to port 21, then cut before its ports.
        let mut syn = vec![0u8; 54];
        syn[12..14].copy_from_slice(&[0x08, 0x00]);
        syn[14] = 0x45;
        syn[23] = 6;
        syn[36..38].copy_from_slice(&21u16.to_be_bytes());
        let (program, port) = (compiled(1, "tcp and port 21"), TcpPort(21));
        assert!(port.matches(&syn) && program.filter(&syn));
        assert!(!port.matches(&syn[..37]) && !program.filter(&syn[..37]));
        // Linux cooked capture: another program, left to libpcap.
        assert_eq!(native(113, "tcp and port 21"), None);
    }

    /// A frame that stresses each test of the program: family, protocol,
    /// fragment offset, header length, ports, VLAN tag, captured length.
    fn frame() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let ethertype = prop_oneof![Just(0x0800u16), Just(0x86dd), Just(0x8100), any::<u16>()];
        let proto = prop_oneof![Just(6u8), Just(17), Just(44), any::<u8>()];
        let port = prop_oneof![Just(21u16), Just(20), Just(2121), any::<u16>()];
        let frag = prop_oneof![Just(0u16), Just(0x4000), Just(0x2000), any::<u16>()];
        let ihl = prop_oneof![Just(0x45u8), Just(0x46), Just(0x4f), any::<u8>()];
        (
            ethertype,
            proto,
            frag,
            ihl,
            (port.clone(), port),
            proptest::collection::vec(any::<u8>(), 80),
            0usize..90,
        )
            .prop_map(|(et, proto, frag, ihl, (sp, dp), mut f, len)| {
                f[12..14].copy_from_slice(&et.to_be_bytes());
                if et == 0x86dd {
                    f[20] = proto;
                    f[54..56].copy_from_slice(&sp.to_be_bytes());
                    f[56..58].copy_from_slice(&dp.to_be_bytes());
                } else {
                    f[14] = ihl;
                    f[20..22].copy_from_slice(&frag.to_be_bytes());
                    f[23] = proto;
                    let x = 14 + 4 * usize::from(ihl & 0xf);
                    if x + 4 <= f.len() {
                        f[x..x + 2].copy_from_slice(&sp.to_be_bytes());
                        f[x + 2..x + 4].copy_from_slice(&dp.to_be_bytes());
                    }
                }
                f.truncate(len);
                f
            })
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(4096))]
        /// The native test gives libpcap's verdict on every frame.
        #[test]
        fn native_test_agrees_with_libpcap(f in frame()) {
            let program = compiled(1, "tcp and port 21");
            let native = TcpPort::recognise(1, &program).unwrap();
            proptest::prop_assert_eq!(native.matches(&f), program.filter(&f));
        }
    }

    /// A record: seconds, microseconds, wire length, captured bytes.
    type Rec = (u32, u32, u32, Vec<u8>);

    /// A classic pcap file of Ethernet records, in either byte order, then
    /// `tail` bytes.
    fn pcap_file(name: &str, swapped: bool, snaplen: u32, recs: &[Rec], tail: &[u8]) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "ftpsesame-capture-{}-{name}.pcap",
            std::process::id()
        ));
        let w32 = |v: u32| {
            if swapped {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let w16 = |v: u16| {
            if swapped {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut b = Vec::new();
        b.extend_from_slice(&w32(0xa1b2_c3d4));
        b.extend_from_slice(&w16(2));
        b.extend_from_slice(&w16(4));
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(&w32(snaplen));
        b.extend_from_slice(&w32(1));
        for (sec, usec, wire, data) in recs {
            b.extend_from_slice(&w32(*sec));
            b.extend_from_slice(&w32(*usec));
            b.extend_from_slice(&w32(data.len() as u32));
            b.extend_from_slice(&w32(*wire));
            b.extend_from_slice(data);
        }
        b.extend_from_slice(tail);
        std::fs::write(&path, b).unwrap();
        path
    }

    /// A TCP/IPv4 frame to or from port 21 (`to21`), or between others,
    /// `extra` bytes of payload long.
    fn ftp_frame(to21: bool, extra: usize, tag: u8) -> Vec<u8> {
        let mut f = vec![tag; 54 + extra];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[20..22].copy_from_slice(&[0x40, 0x00]);
        f[23] = 6;
        let (sp, dp) = if to21 { (40000u16, 21u16) } else { (40000, 80) };
        f[34..36].copy_from_slice(&sp.to_be_bytes());
        f[36..38].copy_from_slice(&dp.to_be_bytes());
        f
    }

    /// Everything `run` hands out, and how it ended; through libpcap only
    /// (`buffer` None) or read here with a buffer of `buffer` bytes.
    fn replay(path: &Path, buffer: Option<usize>) -> (Vec<(u64, Vec<u8>)>, Option<String>) {
        let mut file = File::open(path, "tcp and port 21").unwrap();
        assert!(file.native.is_some());
        file.records = buffer.and_then(|n| Records::open(path, n));
        assert_eq!(file.records.is_some(), buffer.is_some());
        let mut got = Vec::new();
        let end = file.run(|f| got.push((f.ts, f.data.to_vec())));
        (got, end.err().map(|e| e.to_string()))
    }

    #[test]
    fn records_read_here_are_the_ones_libpcap_reads() {
        let recs: Vec<Rec> = (0..40u32)
            .map(|i| {
                let f = ftp_frame(i % 3 != 0, (i as usize * 7) % 60, i as u8);
                (1_700_000_000 + i, i * 12345 % 1_000_000, f.len() as u32, f)
            })
            .collect();
        let mut long = recs.clone();
        long[20].3 = ftp_frame(true, 300, 7); // longer than the snapshot length
        long[20].2 = long[20].3.len() as u32;
        let mut cut_wire = recs.clone();
        cut_wire[5].2 = 10; // captured more than was on the wire
        // A record header promising 60 bytes, and 20 of them.
        let mut cut = [0u8; 36];
        cut[8..12].copy_from_slice(&60u32.to_le_bytes());
        cut[12..16].copy_from_slice(&60u32.to_le_bytes());
        let cases = [
            ("plain", false, 65535, &recs[..], &b""[..]),
            ("swapped", true, 65535, &recs, b""),
            ("long", false, 200, &long, b""),
            ("wire", false, 65535, &cut_wire, b""),
            ("cut-header", false, 65535, &recs, &[1, 2, 3]),
            ("cut-data", false, 65535, &recs, &cut),
        ];
        for (name, swapped, snaplen, recs, tail) in cases {
            let path = pcap_file(name, swapped, snaplen, recs, tail);
            let want = replay(&path, None);
            assert!(!want.0.is_empty(), "{name}");
            for buffer in [RECORDS_BUFFER, 200, 333] {
                assert_eq!(replay(&path, Some(buffer)), want, "{name}, buffer {buffer}");
            }
            std::fs::remove_file(&path).unwrap();
        }
    }

    #[test]
    fn a_missing_file_names_the_path() {
        let err = File::open(Path::new("/nonexistent/x.pcap"), "tcp")
            .err()
            .unwrap();
        assert!(matches!(err, Error::OpenFile { .. }), "{err:?}");
        assert!(
            err.to_string().starts_with("/nonexistent/x.pcap: "),
            "{err}"
        );
        assert!(err.source().is_some());
    }

    #[test]
    fn a_bad_expression_is_quoted() {
        let path = empty_pcap("expr", 1);
        let err = File::open(&path, "tcp and").err().unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(err, Error::Expression { .. }), "{err:?}");
        assert!(
            err.to_string().starts_with("bad expression \"tcp and\": "),
            "{err}"
        );
        assert!(err.source().is_some());
    }

    #[test]
    fn an_unknown_link_type_is_named() {
        // LINKTYPE_USER0: no decoder for it.
        let path = empty_pcap("link", 147);
        let err = File::open(&path, "").err().unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(
            matches!(err, Error::LinkType { linktype: 147, .. }),
            "{err:?}"
        );
        assert!(
            err.to_string().starts_with("unsupported link type 147 ("),
            "{err}"
        );
    }

    #[test]
    fn a_missing_interface_is_named() {
        let err = Live::open(Some("fsnone0"), "tcp").err().unwrap();
        assert!(matches!(err, Error::Open { .. }), "{err:?}");
        assert!(err.to_string().starts_with("fsnone0: "), "{err}");
        assert!(err.source().is_some());
    }

    #[test]
    fn a_vanished_interface_says_so() {
        let err = Error::Gone {
            interface: "em0".into(),
        };
        assert_eq!(err.to_string(), "em0: capture failed (interface gone?)");
        assert!(err.source().is_none());
    }
}

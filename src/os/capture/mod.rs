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

mod records;
mod tcpport;

use records::{RECORDS_BUFFER, Records};
use tcpport::TcpPort;

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

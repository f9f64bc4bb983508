//! Packet capture: libpcap, live on an interface or from a file.
//!
//! Live capture runs in immediate mode (each packet is handed over as soon
//! as it arrives: the data connection is racing us) with a snap length
//! large enough for GRO-merged segments, and the filter is locked after it
//! is set so that a compromised process cannot widen what it sees.
//! Offline capture accepts pcap and pcapng and applies the same expression.
//!
//! libpcap's `nflog:N` device (Linux: packets an nftables `log group N`
//! rule copies, after the filter) is opened the same way but takes no
//! expression: libpcap's filter compiler cannot look past the NFLOG
//! header into its TLVs, so the rule chooses the packets.
//! Its read reports "no packet waiting" as an error when non-blocking, so
//! it is read one buffer at a time, only while its descriptor is readable.

use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

use pcap::{Active, Capture, Offline};

use crate::core::decode::Link;

/// Snap length. In immediate mode libpcap gives every packet a ring slot
/// of this size, so it is the jumbo-frame size (control-connection
/// segments are small; a longer one is dropped as `short` and the stream
/// resynchronises) rather than GRO's 64 KiB, which left room for 16 packets.
pub const SNAPLEN: i32 = 9216;
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

fn link_of(lt: pcap::Linktype) -> Result<Link, String> {
    Link::from_linktype(lt.0).ok_or_else(|| {
        format!(
            "unsupported link type {} ({})",
            lt.0,
            lt.get_name().unwrap_or_default()
        )
    })
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
    pub fn open(interface: Option<&str>, expression: &str) -> Result<Live, String> {
        let device = match interface {
            Some(name) => pcap::Device::from(name),
            None => pcap::Device::lookup()
                .map_err(|e| format!("no default interface: {e}"))?
                .ok_or("no default interface: use -i")?,
        };
        Live::open_device(device, Some(expression))
    }

    /// Open NFLOG group `group` (libpcap's `nflog:N`), without a filter.
    pub fn open_nflog(group: u16) -> Result<Live, String> {
        Live::open_device(pcap::Device::from(format!("nflog:{group}").as_str()), None)
    }

    fn open_device(device: pcap::Device, expression: Option<&str>) -> Result<Live, String> {
        let name = device.name.clone();
        let mut cap = Capture::from_device(device)
            .and_then(|c| {
                c.immediate_mode(true)
                    .snaplen(SNAPLEN)
                    .buffer_size(BUFFER)
                    .promisc(false)
                    .open()
            })
            .map_err(|e| format!("{name}: {e}"))?;
        if let Some(expression) = expression {
            cap.filter(expression, true)
                .map_err(|e| format!("bad expression \"{expression}\": {e}"))?;
        }
        let cap = cap.setnonblock().map_err(|e| format!("{name}: {e}"))?;
        let netlink = cap.get_datalink().0 == DLT_NFLOG;
        if netlink {
            // No kernel filter to lock: the firewall rule is the filter.
        } else if let Err(e) = crate::os::bpflock::lock(cap.as_raw_fd()) {
            // macOS bpf cannot be locked; everywhere else this is fatal.
            if e.kind() != std::io::ErrorKind::Unsupported {
                return Err(format!("{name}: locking the capture filter: {e}"));
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
    pub fn read(&mut self, budget: usize, mut f: impl FnMut(Frame<'_>)) -> Result<usize, String> {
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
                Err(e) => return Err(e.to_string()),
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
    ) -> Result<usize, String> {
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
                .map_err(|e| e.to_string())?;
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
}

impl File {
    pub fn open(path: &Path, expression: &str) -> Result<File, String> {
        let mut cap = Capture::from_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
        cap.filter(expression, true)
            .map_err(|e| format!("bad expression \"{expression}\": {e}"))?;
        let link = link_of(cap.get_datalink())?;
        Ok(File { cap, link })
    }

    /// Hand every packet to `f`, in file order.
    pub fn run(&mut self, mut f: impl FnMut(Frame<'_>)) -> Result<(), String> {
        loop {
            match self.cap.next_packet() {
                Ok(p) => f(Frame {
                    ts: ts_us(p.header),
                    data: p.data,
                }),
                Err(pcap::Error::NoMorePackets) => return Ok(()),
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

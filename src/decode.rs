//! Packet decoding: one captured frame in, one TCP segment (or the reason
//! it was refused) out.
//!
//! Pure and stateless: no allocation, no copying (the payload borrows the
//! frame), and no panics whatever the bytes are. The link layer is parsed by
//! hand; IPv4, IPv6 and TCP headers are read through `etherparse` slices.
//!
//! The evasion checks follow the original daemon's SECURITY section: packets
//! with IP options, IP fragments (and IPv6 extension headers, which can hide
//! the same tricks) and a ttl below 2 are refused, because the firewall or
//! the FTP server might see a different byte stream than we do. Checksums are
//! deliberately not verified: with checksum offload, locally sent packets are
//! captured before the NIC fills them in.
//!
//! Check order, so the log names the most telling reason: link and IP header
//! present, IP header sane, options/extension headers, fragment, ttl,
//! protocol, then the captured length, then the TCP header.

use std::fmt;
use std::net::IpAddr;
use std::ops::BitOr;

use etherparse::{Ipv4HeaderSlice, Ipv6HeaderSlice, TcpHeaderSlice};

/// The link-layer framings we can decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// DLT_EN10MB, with any number of 802.1Q/802.1ad tags.
    Ethernet,
    /// DLT_NULL: 4-byte address family, host byte order.
    Null,
    /// DLT_LOOP: 4-byte address family, network byte order.
    Loop,
    /// Bare IP; the version nibble tells v4 from v6.
    Raw,
    /// Linux cooked capture v1 (16-byte header).
    LinuxSll,
    /// Linux cooked capture v2 (20-byte header).
    LinuxSll2,
    /// PPP, with or without the 0xff 0x03 address/control bytes.
    Ppp,
    /// PPP in HDLC-like framing (same decoding as [`Link::Ppp`]).
    PppHdlc,
    /// PPPoE session header followed by the PPP protocol.
    PppEther,
}

impl Link {
    /// pcap link-layer type number (pcap_datalink() on a live handle = DLT_
    /// value, or the LINKTYPE_ value stored in a pcap/pcapng file) -> Link.
    /// None = unsupported.
    pub fn from_linktype(lt: i32) -> Option<Link> {
        // DLT_RAW and DLT_LOOP differ on OpenBSD; the LINKTYPE_ values
        // (101, 108) are the same everywhere.
        #[cfg(target_os = "openbsd")]
        const DLT_12: Link = Link::Loop;
        #[cfg(not(target_os = "openbsd"))]
        const DLT_12: Link = Link::Raw;
        match lt {
            0 => Some(Link::Null),
            1 => Some(Link::Ethernet),
            9 => Some(Link::Ppp),
            12 => Some(DLT_12),
            #[cfg(target_os = "openbsd")]
            14 => Some(Link::Raw),
            50 => Some(Link::PppHdlc),
            51 => Some(Link::PppEther),
            101 | 228 | 229 => Some(Link::Raw),
            108 => Some(Link::Loop),
            113 => Some(Link::LinuxSll),
            276 => Some(Link::LinuxSll2),
            _ => None,
        }
    }
}

/// TCP flags, as the bits of header byte 13. Only the six classic bits are
/// kept (ECE/CWR are masked off), so `flags == Flags::SYN` holds for an
/// ECN-setup SYN too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Flags(pub u8);

impl Flags {
    pub const FIN: Flags = Flags(0x01);
    pub const SYN: Flags = Flags(0x02);
    pub const RST: Flags = Flags(0x04);
    pub const PSH: Flags = Flags(0x08);
    pub const ACK: Flags = Flags(0x10);
    pub const URG: Flags = Flags(0x20);

    /// True when every bit of `f` is set.
    #[inline]
    pub fn has(self, f: Flags) -> bool {
        self.0 & f.0 == f.0
    }
}

impl BitOr for Flags {
    type Output = Flags;
    #[inline]
    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

/// One decoded TCP segment. `payload` borrows the frame and excludes any
/// link-layer padding after the IP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: Flags,
    pub payload: &'a [u8],
}

/// Why a frame was not turned into a [`Segment`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Drop {
    /// The frame ends before a header it must contain, or the capture
    /// truncated the IP packet.
    Short,
    /// Not IPv4/IPv6 (ethertype, address family or PPP protocol).
    NotIp,
    /// IPv4 header with options (IHL > 5).
    IpOptions,
    /// IPv6 extension header before TCP.
    Ipv6ExtHeader,
    /// IPv4 fragment, or IPv6 fragment header.
    Fragment,
    /// TTL / hop limit below 2.
    LowTtl,
    /// IP, but not TCP.
    NotTcp,
    /// Inconsistent length fields.
    BadLength,
}

impl Drop {
    pub const ALL: [Drop; 8] = [
        Drop::Short,
        Drop::NotIp,
        Drop::IpOptions,
        Drop::Ipv6ExtHeader,
        Drop::Fragment,
        Drop::LowTtl,
        Drop::NotTcp,
        Drop::BadLength,
    ];

    /// Text for the log line "drop: {reason}".
    pub fn reason(self) -> &'static str {
        match self {
            Drop::Short => "short capture",
            Drop::NotIp => "not ip",
            Drop::IpOptions => "ip options",
            Drop::Ipv6ExtHeader => "ipv6 extension header",
            Drop::Fragment => "fragment",
            Drop::LowTtl => "ttl below 2",
            Drop::NotTcp => "not tcp",
            Drop::BadLength => "bad length",
        }
    }
}

impl fmt::Display for Drop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

/// Decode one captured frame of the given link type.
pub fn decode(link: Link, frame: &[u8]) -> Result<Segment<'_>, Drop> {
    let (net, packet) = link_payload(link, frame)?;
    let version = packet.first().ok_or(Drop::Short)? >> 4;
    match (net, version) {
        (Net::V4 | Net::Either, 4) => ipv4(packet),
        (Net::V6 | Net::Either, 6) => ipv6(packet),
        _ => Err(Drop::NotIp),
    }
}

/// The network protocol the link layer announced.
#[derive(Clone, Copy)]
enum Net {
    V4,
    V6,
    /// Raw IP: the version nibble decides.
    Either,
}

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const ETH_PPPOE_SESSION: u16 = 0x8864;
const ETH_VLAN_TAGS: [u16; 3] = [0x8100, 0x88a8, 0x9100];

const PPP_IPV4: u16 = 0x0021;
const PPP_IPV6: u16 = 0x0057;

const AF_INET: u32 = 2;
/// AF_INET6 is 10 on Linux, 24 on OpenBSD/NetBSD, 28 on FreeBSD, 30 on
/// macOS; a capture file may come from any of them.
const AF_INET6: [u32; 4] = [10, 24, 28, 30];

const IPPROTO_TCP: u8 = 6;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_EXT_HEADERS: [u8; 8] = [0, 43, 50, 51, 60, 135, 139, 140];

#[inline]
fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([s[0], s[1]]))
}

/// Strip the link layer: the announced network protocol and the bytes
/// after the link header.
fn link_payload(link: Link, frame: &[u8]) -> Result<(Net, &[u8]), Drop> {
    match link {
        Link::Ethernet => ethernet(frame),
        Link::Null | Link::Loop => {
            let af = frame.get(..4).ok_or(Drop::Short)?;
            // DLT_NULL is host order, DLT_LOOP network order, and files
            // travel between hosts: accept either. Families are small
            // numbers, so the order that yields a value below 2^16 wins.
            let mut family = u32::from_le_bytes([af[0], af[1], af[2], af[3]]);
            if family > 0xffff {
                family = family.swap_bytes();
            }
            let net = if family == AF_INET {
                Net::V4
            } else if AF_INET6.contains(&family) {
                Net::V6
            } else {
                return Err(Drop::NotIp);
            };
            Ok((net, &frame[4..]))
        }
        Link::Raw => Ok((Net::Either, frame)),
        Link::LinuxSll => {
            // Packet type, ARPHRD type, address length, 8 address bytes,
            // then the protocol.
            let proto = be16(frame, 14).ok_or(Drop::Short)?;
            Ok((ethertype(proto)?, &frame[16..]))
        }
        Link::LinuxSll2 => {
            // Protocol first, then reserved, interface index, ARPHRD type,
            // packet type, address length and 8 address bytes.
            let proto = be16(frame, 0).ok_or(Drop::Short)?;
            let rest = frame.get(20..).ok_or(Drop::Short)?;
            Ok((ethertype(proto)?, rest))
        }
        Link::Ppp | Link::PppHdlc => ppp(frame),
        Link::PppEther => pppoe(frame),
    }
}

fn ethertype(proto: u16) -> Result<Net, Drop> {
    match proto {
        ETH_IPV4 => Ok(Net::V4),
        ETH_IPV6 => Ok(Net::V6),
        _ => Err(Drop::NotIp),
    }
}

fn ethernet(frame: &[u8]) -> Result<(Net, &[u8]), Drop> {
    // Destination and source MAC, then the ethertype; each VLAN tag adds
    // four bytes (TCI + the next ethertype).
    let mut at = 12;
    let mut proto = be16(frame, at).ok_or(Drop::Short)?;
    while ETH_VLAN_TAGS.contains(&proto) {
        at += 4;
        proto = be16(frame, at).ok_or(Drop::Short)?;
    }
    let rest = frame.get(at + 2..).ok_or(Drop::Short)?;
    if proto == ETH_PPPOE_SESSION {
        return pppoe(rest);
    }
    Ok((ethertype(proto)?, rest))
}

/// PPP protocol field, optionally preceded by the HDLC address/control
/// bytes 0xff 0x03 (RFC 1662). A protocol field whose first byte is odd was
/// compressed to one byte (PFC, RFC 1661).
fn ppp(frame: &[u8]) -> Result<(Net, &[u8]), Drop> {
    let b = match frame {
        [0xff, 0x03, rest @ ..] => rest,
        _ => frame,
    };
    let first = *b.first().ok_or(Drop::Short)?;
    let (proto, rest) = if first & 1 == 1 {
        (u16::from(first), &b[1..])
    } else {
        (be16(b, 0).ok_or(Drop::Short)?, &b[2..])
    };
    Ok((ppp_protocol(proto)?, rest))
}

fn ppp_protocol(proto: u16) -> Result<Net, Drop> {
    match proto {
        PPP_IPV4 => Ok(Net::V4),
        PPP_IPV6 => Ok(Net::V6),
        _ => Err(Drop::NotIp),
    }
}

/// PPPoE session stage (RFC 2516): version/type, code, session id, length,
/// then a two-byte PPP protocol.
fn pppoe(frame: &[u8]) -> Result<(Net, &[u8]), Drop> {
    let proto = be16(frame, 6).ok_or(Drop::Short)?;
    // Code 0 is session data; anything else is discovery, never IP.
    if frame[1] != 0 {
        return Err(Drop::NotIp);
    }
    Ok((ppp_protocol(proto)?, &frame[8..]))
}

fn ipv4(packet: &[u8]) -> Result<Segment<'_>, Drop> {
    if packet.len() < 20 {
        return Err(Drop::Short);
    }
    let ihl = packet[0] & 0x0f;
    if ihl < 5 {
        return Err(Drop::BadLength);
    }
    if ihl > 5 {
        return Err(Drop::IpOptions);
    }
    let ip = Ipv4HeaderSlice::from_slice(packet).map_err(|_| Drop::Short)?;
    let total = usize::from(ip.total_len());
    if total < 20 {
        return Err(Drop::BadLength);
    }
    if ip.more_fragments() || ip.fragments_offset().value() != 0 {
        return Err(Drop::Fragment);
    }
    if ip.ttl() < 2 {
        return Err(Drop::LowTtl);
    }
    if ip.protocol().0 != IPPROTO_TCP {
        return Err(Drop::NotTcp);
    }
    // Bytes past the total length are link padding: not ours.
    let body = packet.get(20..total).ok_or(Drop::Short)?;
    tcp(
        IpAddr::V4(ip.source_addr()),
        IpAddr::V4(ip.destination_addr()),
        body,
    )
}

fn ipv6(packet: &[u8]) -> Result<Segment<'_>, Drop> {
    let ip = Ipv6HeaderSlice::from_slice(packet).map_err(|_| Drop::Short)?;
    let next = ip.next_header().0;
    if next == IPV6_FRAGMENT {
        return Err(Drop::Fragment);
    }
    if IPV6_EXT_HEADERS.contains(&next) {
        return Err(Drop::Ipv6ExtHeader);
    }
    if ip.hop_limit() < 2 {
        return Err(Drop::LowTtl);
    }
    if next != IPPROTO_TCP {
        return Err(Drop::NotTcp);
    }
    let total = 40 + usize::from(ip.payload_length());
    let body = packet.get(40..total).ok_or(Drop::Short)?;
    tcp(
        IpAddr::V6(ip.source_addr()),
        IpAddr::V6(ip.destination_addr()),
        body,
    )
}

/// `body` is the whole IP payload, already cut to the IP length, so a TCP
/// header that does not fit is a length lie, not a short capture.
fn tcp(src: IpAddr, dst: IpAddr, body: &[u8]) -> Result<Segment<'_>, Drop> {
    let th = TcpHeaderSlice::from_slice(body).map_err(|_| Drop::BadLength)?;
    let payload = &body[th.slice().len()..];
    Ok(Segment {
        src,
        dst,
        sport: th.source_port(),
        dport: th.destination_port(),
        seq: th.sequence_number(),
        ack: th.acknowledgment_number(),
        flags: Flags(th.slice()[13] & 0x3f),
        payload,
    })
}

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
    /// Every link type, for tests and fuzzing that must cover them all.
    pub const ALL: [Link; 9] = [
        Link::Ethernet,
        Link::Null,
        Link::Loop,
        Link::Raw,
        Link::LinuxSll,
        Link::LinuxSll2,
        Link::Ppp,
        Link::PppHdlc,
        Link::PppEther,
    ];

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

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const C4: [u8; 4] = [192, 0, 2, 2];
    const S4: [u8; 4] = [198, 51, 100, 2];
    const C6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    const S6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    const DATA: &[u8] = b"227 Entering Passive Mode (198,51,100,2,195,92)\r\n";

    /// IPv4 + TCP (PSH|ACK), client -> server port 21.
    fn ip4(payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ipv4(C4, S4, 64)
            .tcp(40594, 21, 1000, 65535)
            .psh()
            .ack(2000);
        let mut v = Vec::new();
        b.write(&mut v, payload).unwrap();
        v
    }

    fn ip6(payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ipv6(C6, S6, 64)
            .tcp(40594, 21, 1000, 65535)
            .psh()
            .ack(2000);
        let mut v = Vec::new();
        b.write(&mut v, payload).unwrap();
        v
    }

    fn cat(prefix: &[u8], packet: &[u8]) -> Vec<u8> {
        let mut v = prefix.to_vec();
        v.extend_from_slice(packet);
        v
    }

    fn eth(ethertype: u16) -> Vec<u8> {
        let mut v = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
        v.extend_from_slice(&ethertype.to_be_bytes());
        v
    }

    fn check4(seg: Segment<'_>) {
        assert_eq!(seg.src, IpAddr::V4(Ipv4Addr::from(C4)));
        assert_eq!(seg.dst, IpAddr::V4(Ipv4Addr::from(S4)));
        assert_eq!((seg.sport, seg.dport), (40594, 21));
        assert_eq!((seg.seq, seg.ack), (1000, 2000));
        assert_eq!(seg.flags, Flags::PSH | Flags::ACK);
        assert_eq!(seg.payload, DATA);
    }

    fn check6(seg: Segment<'_>) {
        assert_eq!(seg.src, IpAddr::V6(Ipv6Addr::from(C6)));
        assert_eq!(seg.dst, IpAddr::V6(Ipv6Addr::from(S6)));
        assert_eq!((seg.sport, seg.dport), (40594, 21));
        assert_eq!((seg.seq, seg.ack), (1000, 2000));
        assert_eq!(seg.flags, Flags::PSH | Flags::ACK);
        assert_eq!(seg.payload, DATA);
    }

    #[test]
    fn linktypes() {
        assert_eq!(Link::from_linktype(0), Some(Link::Null));
        assert_eq!(Link::from_linktype(1), Some(Link::Ethernet));
        assert_eq!(Link::from_linktype(9), Some(Link::Ppp));
        assert_eq!(Link::from_linktype(50), Some(Link::PppHdlc));
        assert_eq!(Link::from_linktype(51), Some(Link::PppEther));
        assert_eq!(Link::from_linktype(101), Some(Link::Raw));
        assert_eq!(Link::from_linktype(108), Some(Link::Loop));
        assert_eq!(Link::from_linktype(113), Some(Link::LinuxSll));
        assert_eq!(Link::from_linktype(228), Some(Link::Raw));
        assert_eq!(Link::from_linktype(229), Some(Link::Raw));
        assert_eq!(Link::from_linktype(276), Some(Link::LinuxSll2));
        #[cfg(not(target_os = "openbsd"))]
        {
            assert_eq!(Link::from_linktype(12), Some(Link::Raw));
            assert_eq!(Link::from_linktype(14), None);
        }
        #[cfg(target_os = "openbsd")]
        {
            assert_eq!(Link::from_linktype(12), Some(Link::Loop));
            assert_eq!(Link::from_linktype(14), Some(Link::Raw));
        }
        for unsupported in [-1, 2, 105, 127, 147, 1000] {
            assert_eq!(Link::from_linktype(unsupported), None, "{unsupported}");
        }
    }

    #[test]
    fn flags() {
        let f = Flags::SYN | Flags::ACK;
        assert!(f.has(Flags::SYN) && f.has(Flags::ACK) && f.has(f));
        assert!(!f.has(Flags::FIN) && !f.has(Flags::SYN | Flags::FIN));
        assert_eq!(Flags::default(), Flags(0));
        let all = [
            Flags::FIN,
            Flags::SYN,
            Flags::RST,
            Flags::PSH,
            Flags::ACK,
            Flags::URG,
        ];
        assert_eq!(all.iter().fold(Flags(0), |a, &b| a | b), Flags(0x3f));
    }

    #[test]
    fn ecn_bits_are_masked() {
        let mut p = ip4(b"");
        p[33] = 0x02 | 0x40 | 0x80; // SYN + ECE + CWR
        let seg = decode(Link::Raw, &p).unwrap();
        assert_eq!(seg.flags, Flags::SYN);
    }

    #[test]
    fn drop_reasons() {
        let texts: Vec<&str> = Drop::ALL.iter().map(|d| d.reason()).collect();
        assert_eq!(
            texts,
            [
                "short capture",
                "not ip",
                "ip options",
                "ipv6 extension header",
                "fragment",
                "ttl below 2",
                "not tcp",
                "bad length"
            ]
        );
        for (i, d) in Drop::ALL.iter().enumerate() {
            assert_eq!(*d as u8 as usize, i);
            assert_eq!(d.to_string(), d.reason());
        }
    }

    #[test]
    fn ethernet_ipv4_and_ipv6() {
        check4(decode(Link::Ethernet, &cat(&eth(0x0800), &ip4(DATA))).unwrap());
        check6(decode(Link::Ethernet, &cat(&eth(0x86dd), &ip6(DATA))).unwrap());
    }

    #[test]
    fn ethernet_single_and_stacked_vlans() {
        for tags in [
            &[0x8100u16][..],
            &[0x88a8, 0x8100],
            &[0x9100, 0x9100, 0x8100],
        ] {
            let mut f = eth(tags[0]);
            for (i, _) in tags.iter().enumerate() {
                let next = tags.get(i + 1).copied().unwrap_or(0x0800);
                f.extend_from_slice(&[0x00, 0x2a]); // TCI: VLAN 42
                f.extend_from_slice(&next.to_be_bytes());
            }
            check4(decode(Link::Ethernet, &cat(&f, &ip4(DATA))).unwrap());
        }
        // etherparse's own double-VLAN builder agrees with ours.
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .double_vlan(7.try_into().unwrap(), 8.try_into().unwrap())
            .ipv6(C6, S6, 64)
            .tcp(40594, 21, 1000, 65535)
            .psh()
            .ack(2000);
        let mut f = Vec::new();
        b.write(&mut f, DATA).unwrap();
        check6(decode(Link::Ethernet, &f).unwrap());
    }

    #[test]
    fn ethernet_padding_is_trimmed() {
        // A bare ACK is 54 bytes; Ethernet pads it to 60.
        let mut f = cat(&eth(0x0800), &ip4(b""));
        f.extend_from_slice(&[0xee; 6]);
        let seg = decode(Link::Ethernet, &f).unwrap();
        assert!(seg.payload.is_empty());
        let mut f = cat(&eth(0x0800), &ip4(DATA));
        f.extend_from_slice(&[0xee; 4]);
        check4(decode(Link::Ethernet, &f).unwrap());
        let mut f = cat(&eth(0x86dd), &ip6(DATA));
        f.extend_from_slice(&[0xee; 4]);
        check6(decode(Link::Ethernet, &f).unwrap());
    }

    #[test]
    fn ethernet_pppoe_session() {
        let mut f = eth(0x8864);
        f.extend_from_slice(&[0x11, 0x00, 0x12, 0x34, 0x00, 0x00, 0x00, 0x21]);
        check4(decode(Link::Ethernet, &cat(&f, &ip4(DATA))).unwrap());
    }

    #[test]
    fn null_and_loop_both_byte_orders() {
        for link in [Link::Null, Link::Loop] {
            for af6 in [10u32, 24, 28, 30] {
                for bytes in [af6.to_le_bytes(), af6.to_be_bytes()] {
                    check6(decode(link, &cat(&bytes, &ip6(DATA))).unwrap());
                }
            }
            for bytes in [2u32.to_le_bytes(), 2u32.to_be_bytes()] {
                check4(decode(link, &cat(&bytes, &ip4(DATA))).unwrap());
            }
            // AF_UNIX, AF_APPLETALK: not IP.
            for af in [1u32, 16] {
                let f = cat(&af.to_be_bytes(), &ip4(DATA));
                assert_eq!(decode(link, &f), Err(Drop::NotIp));
            }
            // The family must match the packet.
            let f = cat(&2u32.to_be_bytes(), &ip6(DATA));
            assert_eq!(decode(link, &f), Err(Drop::NotIp));
            assert_eq!(decode(link, &[0, 0, 0]), Err(Drop::Short));
            assert_eq!(decode(link, &[0, 0, 0, 2]), Err(Drop::Short));
        }
    }

    #[test]
    fn raw_by_version_nibble() {
        check4(decode(Link::Raw, &ip4(DATA)).unwrap());
        check6(decode(Link::Raw, &ip6(DATA)).unwrap());
        let mut p = ip4(DATA);
        p[0] = 0x55;
        assert_eq!(decode(Link::Raw, &p), Err(Drop::NotIp));
        assert_eq!(decode(Link::Raw, &[]), Err(Drop::Short));
    }

    #[test]
    fn linux_sll() {
        // Outgoing, ARPHRD_ETHER, 6-byte address, padded to 8, protocol.
        let mut h = vec![0, 4, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0];
        h.extend_from_slice(&0x0800u16.to_be_bytes());
        check4(decode(Link::LinuxSll, &cat(&h, &ip4(DATA))).unwrap());
        h[14..16].copy_from_slice(&0x86ddu16.to_be_bytes());
        check6(decode(Link::LinuxSll, &cat(&h, &ip6(DATA))).unwrap());
        h[14..16].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(
            decode(Link::LinuxSll, &cat(&h, &ip4(DATA))),
            Err(Drop::NotIp)
        );
        assert_eq!(decode(Link::LinuxSll, &h[..15]), Err(Drop::Short));
    }

    #[test]
    fn linux_sll2() {
        let mut h = 0x0800u16.to_be_bytes().to_vec();
        // reserved, ifindex 3, ARPHRD_ETHER, outgoing, addr len 6, address
        h.extend_from_slice(&[0, 0, 0, 0, 0, 3, 0, 1, 4, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(h.len(), 20);
        check4(decode(Link::LinuxSll2, &cat(&h, &ip4(DATA))).unwrap());
        h[0..2].copy_from_slice(&0x86ddu16.to_be_bytes());
        check6(decode(Link::LinuxSll2, &cat(&h, &ip6(DATA))).unwrap());
        assert_eq!(decode(Link::LinuxSll2, &h[..19]), Err(Drop::Short));
    }

    #[test]
    fn ppp_with_and_without_address_control() {
        for link in [Link::Ppp, Link::PppHdlc] {
            check4(decode(link, &cat(&[0xff, 0x03, 0x00, 0x21], &ip4(DATA))).unwrap());
            check4(decode(link, &cat(&[0x00, 0x21], &ip4(DATA))).unwrap());
            check6(decode(link, &cat(&[0xff, 0x03, 0x00, 0x57], &ip6(DATA))).unwrap());
            check6(decode(link, &cat(&[0x00, 0x57], &ip6(DATA))).unwrap());
            // Protocol-field compression: one odd byte.
            check4(decode(link, &cat(&[0x21], &ip4(DATA))).unwrap());
            check6(decode(link, &cat(&[0xff, 0x03, 0x57], &ip6(DATA))).unwrap());
            // LCP is not IP.
            let f = cat(&[0xff, 0x03, 0xc0, 0x21], &ip4(DATA));
            assert_eq!(decode(link, &f), Err(Drop::NotIp));
            assert_eq!(decode(link, &[0xff, 0x03]), Err(Drop::Short));
            assert_eq!(decode(link, &[0xff, 0x03, 0x00]), Err(Drop::Short));
        }
    }

    #[test]
    fn pppoe() {
        let h = [0x11, 0x00, 0x12, 0x34, 0x00, 0x00, 0x00, 0x21];
        check4(decode(Link::PppEther, &cat(&h, &ip4(DATA))).unwrap());
        let h = [0x11, 0x00, 0x12, 0x34, 0x00, 0x00, 0x00, 0x57];
        check6(decode(Link::PppEther, &cat(&h, &ip6(DATA))).unwrap());
        // PADI (discovery) is never IP.
        let h = [0x11, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x21];
        assert_eq!(
            decode(Link::PppEther, &cat(&h, &ip4(DATA))),
            Err(Drop::NotIp)
        );
        assert_eq!(decode(Link::PppEther, &h[..7]), Err(Drop::Short));
    }

    #[test]
    fn drop_short() {
        let f = cat(&eth(0x0800), &ip4(DATA));
        assert_eq!(decode(Link::Ethernet, &f[..13]), Err(Drop::Short));
        assert_eq!(decode(Link::Ethernet, &f[..14]), Err(Drop::Short));
        assert_eq!(decode(Link::Ethernet, &f[..33]), Err(Drop::Short));
        // Header complete, but snaplen cut the payload.
        assert_eq!(decode(Link::Ethernet, &f[..f.len() - 1]), Err(Drop::Short));
        let mut vlan = eth(0x8100);
        vlan.extend_from_slice(&[0, 1]);
        assert_eq!(decode(Link::Ethernet, &vlan), Err(Drop::Short));
        let p = ip6(DATA);
        assert_eq!(decode(Link::Raw, &p[..39]), Err(Drop::Short));
        assert_eq!(decode(Link::Raw, &p[..p.len() - 1]), Err(Drop::Short));
    }

    #[test]
    fn drop_not_ip() {
        let f = cat(&eth(0x0806), &ip4(DATA));
        assert_eq!(decode(Link::Ethernet, &f), Err(Drop::NotIp));
        // 802.3 length field instead of an ethertype.
        let f = cat(&eth(100), &ip4(DATA));
        assert_eq!(decode(Link::Ethernet, &f), Err(Drop::NotIp));
        // Ethertype says IPv6, packet says 4.
        let f = cat(&eth(0x86dd), &ip4(DATA));
        assert_eq!(decode(Link::Ethernet, &f), Err(Drop::NotIp));
    }

    /// Insert `n` bytes of IPv4 options (NOPs), keeping lengths consistent.
    fn with_options(p: &[u8], n: usize) -> Vec<u8> {
        let mut v = p[..20].to_vec();
        v.extend(std::iter::repeat_n(1u8, n));
        v.extend_from_slice(&p[20..]);
        v[0] = 0x40 | (5 + n / 4) as u8;
        let total = (v.len() as u16).to_be_bytes();
        v[2..4].copy_from_slice(&total);
        v
    }

    #[test]
    fn drop_ip_options() {
        for n in [4, 40] {
            let p = with_options(&ip4(DATA), n);
            assert_eq!(decode(Link::Raw, &p), Err(Drop::IpOptions));
        }
    }

    #[test]
    fn drop_fragment() {
        let mut p = ip4(DATA);
        p[6] |= 0x20; // more fragments
        assert_eq!(decode(Link::Raw, &p), Err(Drop::Fragment));
        let mut p = ip4(DATA);
        p[7] = 1; // offset 8
        assert_eq!(decode(Link::Raw, &p), Err(Drop::Fragment));
        let mut p = ip4(DATA);
        p[6] = 0x40; // don't fragment is fine
        check4(decode(Link::Raw, &p).unwrap());
        let mut p = ip6(DATA);
        p[6] = 44;
        assert_eq!(decode(Link::Raw, &p), Err(Drop::Fragment));
    }

    #[test]
    fn drop_ipv6_extension_headers() {
        for next in [0, 43, 50, 51, 60, 135, 139, 140] {
            let mut p = ip6(DATA);
            p[6] = next;
            assert_eq!(decode(Link::Raw, &p), Err(Drop::Ipv6ExtHeader), "{next}");
        }
    }

    #[test]
    fn drop_low_ttl() {
        for ttl in [0, 1] {
            let mut p = ip4(DATA);
            p[8] = ttl;
            assert_eq!(decode(Link::Raw, &p), Err(Drop::LowTtl));
            let mut p = ip6(DATA);
            p[7] = ttl;
            assert_eq!(decode(Link::Raw, &p), Err(Drop::LowTtl));
        }
        let mut p = ip4(DATA);
        p[8] = 2;
        check4(decode(Link::Raw, &p).unwrap());
    }

    #[test]
    fn drop_not_tcp() {
        let b = PacketBuilder::ipv4(C4, S4, 64).udp(53, 53);
        let mut p = Vec::new();
        b.write(&mut p, b"x").unwrap();
        assert_eq!(decode(Link::Raw, &p), Err(Drop::NotTcp));
        let mut p = ip6(DATA);
        p[6] = 58; // ICMPv6
        assert_eq!(decode(Link::Raw, &p), Err(Drop::NotTcp));
        p[6] = 59; // no next header
        assert_eq!(decode(Link::Raw, &p), Err(Drop::NotTcp));
    }

    #[test]
    fn drop_bad_length() {
        // IHL below 5.
        let mut p = ip4(DATA);
        p[0] = 0x44;
        assert_eq!(decode(Link::Raw, &p), Err(Drop::BadLength));
        // Total length shorter than the header.
        let mut p = ip4(DATA);
        p[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(decode(Link::Raw, &p), Err(Drop::BadLength));
        // Total length leaves no room for the TCP header.
        let mut p = ip4(DATA);
        p[2..4].copy_from_slice(&30u16.to_be_bytes());
        assert_eq!(decode(Link::Raw, &p), Err(Drop::BadLength));
        // TCP data offset below 5.
        let mut p = ip4(DATA);
        p[32] = 0x40;
        assert_eq!(decode(Link::Raw, &p), Err(Drop::BadLength));
        // TCP data offset beyond the IP payload (empty segment, offset 15).
        let mut p = ip4(b"");
        p[32] = 0xf0;
        assert_eq!(decode(Link::Raw, &p), Err(Drop::BadLength));
        // IPv6 payload length too small for TCP.
        let mut p = ip6(DATA);
        p[4..6].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(decode(Link::Raw, &p), Err(Drop::BadLength));
        // A shorter, consistent IP length just shortens the payload.
        let mut p = ip4(DATA);
        p[2..4].copy_from_slice(&(40 + 3u16).to_be_bytes());
        assert_eq!(decode(Link::Raw, &p).unwrap().payload, &DATA[..3]);
    }

    #[test]
    fn tcp_options_are_skipped() {
        let mut h = etherparse::TcpHeader::new(21, 40594, 7, 1024);
        h.syn = true;
        h.ack = true;
        h.acknowledgment_number = 8;
        h.set_options(&[
            etherparse::TcpOptionElement::MaximumSegmentSize(1460),
            etherparse::TcpOptionElement::SelectiveAcknowledgementPermitted,
        ])
        .unwrap();
        let b = PacketBuilder::ipv6(S6, C6, 64).tcp_header(h);
        let mut p = Vec::new();
        b.write(&mut p, b"hi").unwrap();
        let seg = decode(Link::Raw, &p).unwrap();
        assert_eq!(seg.flags, Flags::SYN | Flags::ACK);
        assert_eq!((seg.sport, seg.dport, seg.seq, seg.ack), (21, 40594, 7, 8));
        assert_eq!(seg.payload, b"hi");
    }

    const LINKS: [Link; 9] = Link::ALL;

    /// Does `inner` lie within `outer`?
    fn within(outer: &[u8], inner: &[u8]) -> bool {
        let (o, i) = (outer.as_ptr() as usize, inner.as_ptr() as usize);
        i >= o && i + inner.len() <= o + outer.len()
    }

    proptest! {
        #[test]
        fn never_panics_on_noise(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            for link in LINKS {
                if let Ok(seg) = decode(link, &bytes) {
                    prop_assert!(within(&bytes, seg.payload));
                }
            }
        }

        /// Noise rarely gets past the link layer; mutate a real frame so the
        /// IP and TCP paths see hostile bytes too.
        #[test]
        fn never_panics_on_mutated_frames(
            v6 in any::<bool>(),
            cut in 0usize..200,
            edits in proptest::collection::vec((0usize..200, any::<u8>()), 0..6),
        ) {
            let ip = if v6 { ip6(DATA) } else { ip4(DATA) };
            let framings: [(Link, Vec<u8>); 4] = [
                (Link::Ethernet, eth(if v6 { 0x86dd } else { 0x0800 })),
                (Link::Raw, Vec::new()),
                (Link::Ppp, vec![0xff, 0x03, 0x00, if v6 { 0x57 } else { 0x21 }]),
                (Link::Null, (if v6 { 24u32 } else { 2 }).to_le_bytes().to_vec()),
            ];
            for (link, prefix) in framings {
                let mut f = cat(&prefix, &ip);
                for &(at, b) in &edits {
                    if let Some(x) = f.get_mut(at) {
                        *x = b;
                    }
                }
                f.truncate(cut);
                if let Ok(seg) = decode(link, &f) {
                    prop_assert!(within(&f, seg.payload));
                }
            }
        }

        /// Whatever we build, we read back.
        #[test]
        fn roundtrip(
            v6 in any::<bool>(),
            sport in any::<u16>(), dport in any::<u16>(),
            seq in any::<u32>(), ack in any::<u32>(),
            flags in 0u8..0x40, ttl in 2u8..=255,
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut h = etherparse::TcpHeader::new(sport, dport, seq, 512);
            h.acknowledgment_number = ack;
            h.fin = flags & 0x01 != 0;
            h.syn = flags & 0x02 != 0;
            h.rst = flags & 0x04 != 0;
            h.psh = flags & 0x08 != 0;
            h.ack = flags & 0x10 != 0;
            h.urg = flags & 0x20 != 0;
            let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
            let mut f = Vec::new();
            if v6 {
                b.ipv6(C6, S6, ttl).tcp_header(h).write(&mut f, &payload).unwrap();
            } else {
                b.ipv4(C4, S4, ttl).tcp_header(h).write(&mut f, &payload).unwrap();
            }
            let seg = decode(Link::Ethernet, &f).unwrap();
            prop_assert_eq!((seg.sport, seg.dport, seg.seq, seg.ack), (sport, dport, seq, ack));
            prop_assert_eq!(seg.flags, Flags(flags));
            prop_assert_eq!(seg.payload, &payload[..]);
        }
    }
}

//! The link layer: strip a frame's framing and say which IP version follows
//! and whether the link header says this host sent the frame.
//!
//! Two link types come from packet sources after the firewall's decision:
//! NFLOG (Linux `log group N`) and pflog (pf's `log`). A pflog packet that pf
//! did not pass was never delivered and is refused here.

use super::Drop;

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
    /// DLT_NFLOG: Linux netfilter log; a header, then TLVs in host byte
    /// order, one of which holds the IP packet.
    Nflog,
    /// DLT_PFLOG: pf's log header (OpenBSD and FreeBSD layouts), then IP.
    Pflog,
}

impl Link {
    /// Every link type, for tests and fuzzing that must cover them all.
    pub const ALL: [Link; 11] = [
        Link::Ethernet,
        Link::Null,
        Link::Loop,
        Link::Raw,
        Link::LinuxSll,
        Link::LinuxSll2,
        Link::Ppp,
        Link::PppHdlc,
        Link::PppEther,
        Link::Nflog,
        Link::Pflog,
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
            117 => Some(Link::Pflog),
            239 => Some(Link::Nflog),
            276 => Some(Link::LinuxSll2),
            _ => None,
        }
    }
}

/// The network protocol the link layer announced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Net {
    V4,
    V6,
    /// The version nibble decides (raw IP).
    Either,
}

/// What is left of a frame once its link header is gone.
#[derive(Clone, Copy, Debug)]
pub(super) struct Inner<'a> {
    pub net: Net,
    /// The IP packet (possibly followed by link padding).
    pub packet: &'a [u8],
    /// The link header says this host sent the frame, so checksum offload
    /// may have left the TCP checksum unfinished.
    pub outgoing: bool,
}

impl<'a> Inner<'a> {
    fn incoming(net: Net, packet: &'a [u8]) -> Self {
        Inner {
            net,
            packet,
            outgoing: false,
        }
    }
}

mod eth {
    /// Destination MAC (6) and source MAC (6) come first.
    pub const TYPE: usize = 12;
    /// Bytes after the ethertype field.
    pub const TYPE_LEN: usize = 2;
    /// An 802.1Q/802.1ad tag: TCI, then the next ethertype.
    pub const TAG_LEN: usize = 4;
    pub const IPV4: u16 = 0x0800;
    pub const IPV6: u16 = 0x86dd;
    pub const PPPOE_SESSION: u16 = 0x8864;
    pub const VLAN_TAGS: [u16; 3] = [0x8100, 0x88a8, 0x9100];
}

/// DLT_NULL / DLT_LOOP.
mod null {
    pub const HEADER: usize = 4;
    pub const AF_INET: u32 = 2;
    /// AF_INET6 is 10 on Linux, 24 on OpenBSD/NetBSD, 28 on FreeBSD, 30 on
    /// macOS; a capture file may come from any of them.
    pub const AF_INET6: [u32; 4] = [10, 24, 28, 30];
}

/// Linux cooked capture v1: packet type, ARPHRD type, address length,
/// 8 address bytes, protocol.
mod sll {
    pub const PKTTYPE: usize = 0;
    pub const PROTOCOL: usize = 14;
    pub const HEADER: usize = 16;
}

/// Linux cooked capture v2: protocol, reserved, interface index, ARPHRD
/// type, packet type, address length, 8 address bytes.
mod sll2 {
    pub const PROTOCOL: usize = 0;
    pub const PKTTYPE: usize = 10;
    pub const HEADER: usize = 20;
}

/// `PACKET_OUTGOING` in the SLL/SLL2 packet type: sent by this host.
const PACKET_OUTGOING: u16 = 4;

mod ppp {
    pub const IPV4: u16 = 0x0021;
    pub const IPV6: u16 = 0x0057;
    /// HDLC address and control bytes (RFC 1662).
    pub const ADDRESS_CONTROL: [u8; 2] = [0xff, 0x03];
}

/// PPPoE session stage (RFC 2516): version/type, code, session id, length,
/// then a two-byte PPP protocol.
mod pppoe {
    pub const CODE: usize = 1;
    pub const PROTOCOL: usize = 6;
    pub const HEADER: usize = 8;
    /// Code 0 is session data; anything else is discovery, never IP.
    pub const SESSION_DATA: u8 = 0;
}

/// DLT_NFLOG (libpcap's pcap/nflog.h): family, version, resource id (big
/// endian), then TLVs whose length and type are in host byte order, each
/// padded to 4 bytes. The length counts the TLV header.
mod nflog {
    pub const FAMILY: usize = 0;
    pub const VERSION: usize = 1;
    pub const HEADER: usize = 4;
    pub const TLV_LEN: usize = 0;
    pub const TLV_TYPE: usize = 2;
    pub const TLV_HEADER: usize = 4;
    /// Netlink attribute types carry two flag bits on top.
    pub const TYPE_MASK: u16 = 0x3fff;
    /// NFULA_PACKET_HDR: hardware protocol (2), netfilter hook (1), pad (1).
    pub const PACKET_HDR: u16 = 1;
    pub const PACKET_HDR_HOOK: usize = 2;
    /// NFULA_PAYLOAD: the packet from its network header on.
    pub const PAYLOAD: u16 = 9;
    /// NF_INET_LOCAL_OUT: logged as this host sent it.
    pub const HOOK_LOCAL_OUT: u8 = 3;
    /// nfgenmsg families (NFPROTO_IPV4, NFPROTO_IPV6).
    pub const IPV4: u8 = 2;
    pub const IPV6: u8 = 10;
}

/// DLT_PFLOG: `struct pfloghdr`. OpenBSD's is 100 bytes (length field 100);
/// FreeBSD 14's length field says 69 (the offset of its trailing pad) and
/// it occupies 72. Both start length, af, action, reason, interface name,
/// ruleset name, rule numbers, uid/pid pairs, then the direction at 60.
mod pflog {
    pub const LENGTH: usize = 0;
    pub const AF: usize = 1;
    pub const ACTION: usize = 2;
    pub const DIR: usize = 60;
    /// The shortest header holding every field we read.
    pub const MIN_LENGTH: usize = DIR + 1;
    /// Headers are padded to this.
    pub const ALIGN: usize = 4;
    /// PF_PASS; every other action means the packet was not delivered.
    pub const PASS: u8 = 0;
    pub const AF_INET: u8 = 2;
    /// AF_INET6 on OpenBSD, FreeBSD, macOS.
    pub const AF_INET6: [u8; 3] = [24, 28, 30];
}

#[inline]
pub(super) fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([s[0], s[1]]))
}

#[inline]
fn ne16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_ne_bytes([s[0], s[1]]))
}

/// Strip the link layer.
pub(super) fn strip(link: Link, frame: &[u8]) -> Result<Inner<'_>, Drop> {
    match link {
        Link::Ethernet => ethernet(frame),
        Link::Null | Link::Loop => null(frame),
        Link::Raw => Ok(Inner::incoming(Net::Either, frame)),
        Link::LinuxSll => {
            let proto = be16(frame, sll::PROTOCOL).ok_or(Drop::Short)?;
            let pkttype = be16(frame, sll::PKTTYPE).ok_or(Drop::Short)?;
            Ok(Inner {
                net: ethertype(proto)?,
                packet: &frame[sll::HEADER..],
                outgoing: pkttype == PACKET_OUTGOING,
            })
        }
        Link::LinuxSll2 => {
            let proto = be16(frame, sll2::PROTOCOL).ok_or(Drop::Short)?;
            let rest = frame.get(sll2::HEADER..).ok_or(Drop::Short)?;
            Ok(Inner {
                net: ethertype(proto)?,
                packet: rest,
                outgoing: u16::from(frame[sll2::PKTTYPE]) == PACKET_OUTGOING,
            })
        }
        Link::Ppp | Link::PppHdlc => ppp(frame),
        Link::PppEther => pppoe(frame),
        Link::Nflog => nflog(frame),
        Link::Pflog => pflog(frame),
    }
}

fn ethertype(proto: u16) -> Result<Net, Drop> {
    match proto {
        eth::IPV4 => Ok(Net::V4),
        eth::IPV6 => Ok(Net::V6),
        _ => Err(Drop::NotIp),
    }
}

fn ethernet(frame: &[u8]) -> Result<Inner<'_>, Drop> {
    let mut at = eth::TYPE;
    let mut proto = be16(frame, at).ok_or(Drop::Short)?;
    while eth::VLAN_TAGS.contains(&proto) {
        at += eth::TAG_LEN;
        proto = be16(frame, at).ok_or(Drop::Short)?;
    }
    let rest = frame.get(at + eth::TYPE_LEN..).ok_or(Drop::Short)?;
    if proto == eth::PPPOE_SESSION {
        return pppoe(rest);
    }
    Ok(Inner::incoming(ethertype(proto)?, rest))
}

fn null(frame: &[u8]) -> Result<Inner<'_>, Drop> {
    let af = frame.get(..null::HEADER).ok_or(Drop::Short)?;
    // DLT_NULL is host order, DLT_LOOP network order, and files travel
    // between hosts: accept either. Families are small numbers, so the
    // order that yields a value below 2^16 wins.
    let mut family = u32::from_le_bytes([af[0], af[1], af[2], af[3]]);
    if family > 0xffff {
        family = family.swap_bytes();
    }
    let net = if family == null::AF_INET {
        Net::V4
    } else if null::AF_INET6.contains(&family) {
        Net::V6
    } else {
        return Err(Drop::NotIp);
    };
    Ok(Inner::incoming(net, &frame[null::HEADER..]))
}

/// PPP protocol field, optionally preceded by the HDLC address/control
/// bytes. A protocol field whose first byte is odd was compressed to one
/// byte (PFC, RFC 1661).
fn ppp(frame: &[u8]) -> Result<Inner<'_>, Drop> {
    let b = frame
        .strip_prefix(&ppp::ADDRESS_CONTROL[..])
        .unwrap_or(frame);
    let first = *b.first().ok_or(Drop::Short)?;
    let (proto, rest) = if first & 1 == 1 {
        (u16::from(first), &b[1..])
    } else {
        (be16(b, 0).ok_or(Drop::Short)?, &b[2..])
    };
    Ok(Inner::incoming(ppp_protocol(proto)?, rest))
}

fn ppp_protocol(proto: u16) -> Result<Net, Drop> {
    match proto {
        ppp::IPV4 => Ok(Net::V4),
        ppp::IPV6 => Ok(Net::V6),
        _ => Err(Drop::NotIp),
    }
}

fn pppoe(frame: &[u8]) -> Result<Inner<'_>, Drop> {
    let proto = be16(frame, pppoe::PROTOCOL).ok_or(Drop::Short)?;
    if frame[pppoe::CODE] != pppoe::SESSION_DATA {
        return Err(Drop::NotIp);
    }
    Ok(Inner::incoming(
        ppp_protocol(proto)?,
        &frame[pppoe::HEADER..],
    ))
}

fn nflog(frame: &[u8]) -> Result<Inner<'_>, Drop> {
    let header = frame.get(..nflog::HEADER).ok_or(Drop::Short)?;
    if header[nflog::VERSION] != 0 {
        return Err(Drop::NotIp);
    }
    let net = match header[nflog::FAMILY] {
        nflog::IPV4 => Net::V4,
        nflog::IPV6 => Net::V6,
        _ => return Err(Drop::NotIp),
    };
    let mut outgoing = false;
    let mut at = nflog::HEADER;
    while let Some(len) = ne16(frame, at + nflog::TLV_LEN) {
        let kind = ne16(frame, at + nflog::TLV_TYPE).ok_or(Drop::Short)? & nflog::TYPE_MASK;
        let len = usize::from(len);
        if len < nflog::TLV_HEADER {
            return Err(Drop::BadLength);
        }
        let value = frame
            .get(at + nflog::TLV_HEADER..at + len)
            .ok_or(Drop::Short)?;
        match kind {
            nflog::PAYLOAD => {
                return Ok(Inner {
                    net,
                    packet: value,
                    outgoing,
                });
            }
            nflog::PACKET_HDR => {
                outgoing = value.get(nflog::PACKET_HDR_HOOK) == Some(&nflog::HOOK_LOCAL_OUT);
            }
            _ => {}
        }
        // Each TLV is padded to four bytes.
        at += len.next_multiple_of(4);
    }
    // No payload: the log rule copied no packet bytes.
    Err(Drop::Short)
}

fn pflog(frame: &[u8]) -> Result<Inner<'_>, Drop> {
    let length = usize::from(*frame.get(pflog::LENGTH).ok_or(Drop::Short)?);
    if length < pflog::MIN_LENGTH {
        return Err(Drop::BadLength);
    }
    let header = frame.get(..pflog::MIN_LENGTH).ok_or(Drop::Short)?;
    let packet = frame
        .get(length.next_multiple_of(pflog::ALIGN)..)
        .ok_or(Drop::Short)?;
    if header[pflog::ACTION] != pflog::PASS {
        return Err(Drop::Blocked);
    }
    // The family uses the logging OS's own AF_INET6; the IP header's
    // version must agree with it.
    let net = match header[pflog::AF] {
        pflog::AF_INET => Net::V4,
        af if pflog::AF_INET6.contains(&af) => Net::V6,
        _ => return Err(Drop::NotIp),
    };
    // The direction is not read: a packet logged on its way out may have
    // been forwarded, so it says nothing about who computed the checksum.
    Ok(Inner::incoming(net, packet))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Checksum, decode};
    use super::*;

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
        assert_eq!(Link::from_linktype(117), Some(Link::Pflog));
        assert_eq!(Link::from_linktype(228), Some(Link::Raw));
        assert_eq!(Link::from_linktype(229), Some(Link::Raw));
        assert_eq!(Link::from_linktype(239), Some(Link::Nflog));
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
        for link in Link::ALL {
            assert_eq!(Link::ALL.iter().filter(|l| **l == link).count(), 1);
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
        let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
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
        assert_eq!(seg.checksum, Checksum::Valid);
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

    /// SLL header of the given packet type and protocol.
    fn sll(pkttype: u16, proto: u16) -> Vec<u8> {
        let mut h = pkttype.to_be_bytes().to_vec();
        // ARPHRD_ETHER, 6-byte address, padded to 8
        h.extend_from_slice(&[0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
        h.extend_from_slice(&proto.to_be_bytes());
        h
    }

    #[test]
    fn linux_sll() {
        check4(decode(Link::LinuxSll, &cat(&sll(0, 0x0800), &ip4(DATA))).unwrap());
        check6(decode(Link::LinuxSll, &cat(&sll(0, 0x86dd), &ip6(DATA))).unwrap());
        let f = cat(&sll(4, 0x0800), &ip4(DATA));
        let seg = decode(Link::LinuxSll, &f).unwrap();
        assert_eq!((seg.payload, seg.checksum), (DATA, Checksum::Unverified));
        let h = sll(0, 0x0806);
        assert_eq!(
            decode(Link::LinuxSll, &cat(&h, &ip4(DATA))),
            Err(Drop::NotIp)
        );
        assert_eq!(decode(Link::LinuxSll, &h[..15]), Err(Drop::Short));
    }

    /// SLL2 header of the given protocol and packet type.
    fn sll2(proto: u16, pkttype: u8) -> Vec<u8> {
        let mut h = proto.to_be_bytes().to_vec();
        // reserved, ifindex 3, ARPHRD_ETHER, packet type, addr len 6, address
        h.extend_from_slice(&[0, 0, 0, 0, 0, 3, 0, 1, pkttype, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(h.len(), 20);
        h
    }

    #[test]
    fn linux_sll2() {
        check4(decode(Link::LinuxSll2, &cat(&sll2(0x0800, 0), &ip4(DATA))).unwrap());
        check6(decode(Link::LinuxSll2, &cat(&sll2(0x86dd, 0), &ip6(DATA))).unwrap());
        let f = cat(&sll2(0x86dd, 4), &ip6(DATA));
        let seg = decode(Link::LinuxSll2, &f).unwrap();
        assert_eq!((seg.payload, seg.checksum), (DATA, Checksum::Unverified));
        assert_eq!(
            decode(Link::LinuxSll2, &sll2(0x0800, 0)[..19]),
            Err(Drop::Short)
        );
    }

    /// The checksum of a packet the cooked header says this host sent is
    /// not verified; the same bytes received are.
    #[test]
    fn outgoing_checksum_is_unverified() {
        let mut p = ip4(DATA);
        p[36] ^= 0xff; // TCP checksum
        let mut q = ip6(DATA);
        q[56] ^= 0xff;
        for (pkttype, expect) in [
            (0u8, Checksum::Bad),      // PACKET_HOST
            (1, Checksum::Bad),        // PACKET_BROADCAST
            (3, Checksum::Bad),        // PACKET_OTHERHOST (forwarded)
            (4, Checksum::Unverified), // PACKET_OUTGOING
        ] {
            let f = cat(&sll(u16::from(pkttype), 0x0800), &p);
            assert_eq!(decode(Link::LinuxSll, &f).unwrap().checksum, expect);
            let f = cat(&sll2(0x86dd, pkttype), &q);
            assert_eq!(decode(Link::LinuxSll2, &f).unwrap().checksum, expect);
        }
        // Outgoing or not, a good checksum of a received packet is Valid.
        let f = cat(&sll(0, 0x0800), &ip4(DATA));
        assert_eq!(
            decode(Link::LinuxSll, &f).unwrap().checksum,
            Checksum::Valid
        );
        // The IPv4 header checksum is always computed in software: checked
        // on outgoing packets too.
        let mut p = ip4(DATA);
        p[10] ^= 1;
        let f = cat(&sll(4, 0x0800), &p);
        assert_eq!(decode(Link::LinuxSll, &f), Err(Drop::BadIpChecksum));
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
    fn ethernet_short_and_not_ip() {
        let f = cat(&eth(0x0800), &ip4(DATA));
        assert_eq!(decode(Link::Ethernet, &f[..13]), Err(Drop::Short));
        assert_eq!(decode(Link::Ethernet, &f[..14]), Err(Drop::Short));
        let mut vlan = eth(0x8100);
        vlan.extend_from_slice(&[0, 1]);
        assert_eq!(decode(Link::Ethernet, &vlan), Err(Drop::Short));
        let f = cat(&eth(0x0806), &ip4(DATA));
        assert_eq!(decode(Link::Ethernet, &f), Err(Drop::NotIp));
        // 802.3 length field instead of an ethertype.
        let f = cat(&eth(100), &ip4(DATA));
        assert_eq!(decode(Link::Ethernet, &f), Err(Drop::NotIp));
        // Ethertype says IPv6, packet says 4.
        let f = cat(&eth(0x86dd), &ip4(DATA));
        assert_eq!(decode(Link::Ethernet, &f), Err(Drop::NotIp));
    }

    /// One NFLOG TLV in host byte order, padded to four bytes.
    fn tlv(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut v = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(value);
        while !v.len().is_multiple_of(4) {
            v.push(0);
        }
        v
    }

    /// An NFLOG record as the kernel writes it: header, packet header TLV
    /// (hook), prefix, then the payload.
    fn nflog_frame(family: u8, hook: u8, packet: &[u8]) -> Vec<u8> {
        let mut f = vec![family, 0, 0, 5]; // resource id 5, big endian
        let hw = if family == 10 { 0x86ddu16 } else { 0x0800 };
        let mut hdr = hw.to_be_bytes().to_vec();
        hdr.extend_from_slice(&[hook, 0]);
        f.extend(tlv(1, &hdr));
        f.extend(tlv(10, b"ftp\0")); // NFULA_PREFIX
        f.extend(tlv(5, &3u32.to_be_bytes())); // NFULA_IFINDEX_OUTDEV
        f.extend(tlv(9, packet));
        f
    }

    #[test]
    fn nflog_payload_tlv() {
        check4(decode(Link::Nflog, &nflog_frame(2, 2, &ip4(DATA))).unwrap());
        check6(decode(Link::Nflog, &nflog_frame(10, 2, &ip6(DATA))).unwrap());
        // An odd-sized payload is padded; the padding is not packet data.
        let p = ip4(b"PASV\r\n\x01");
        let f = nflog_frame(2, 1, &p);
        let seg = decode(Link::Nflog, &f).unwrap();
        assert_eq!(seg.payload, b"PASV\r\n\x01");
        // Netlink flag bits on the type are ignored.
        let mut f = vec![2, 0, 0, 0];
        f.extend(tlv(9 | 0x8000, &ip4(DATA)));
        check4(decode(Link::Nflog, &f).unwrap());
    }

    #[test]
    fn nflog_local_out_is_outgoing() {
        let mut p = ip4(DATA);
        p[36] ^= 0xff;
        // Forward hook: a received packet, verified.
        let f = nflog_frame(2, 2, &p);
        let seg = decode(Link::Nflog, &f).unwrap();
        assert_eq!(seg.checksum, Checksum::Bad);
        // LOCAL_OUT: sent by this host, offload may have left it partial.
        let f = nflog_frame(2, 3, &p);
        let seg = decode(Link::Nflog, &f).unwrap();
        assert_eq!(seg.checksum, Checksum::Unverified);
        // POST_ROUTING also sees forwarded packets: verified.
        let f = nflog_frame(2, 4, &p);
        let seg = decode(Link::Nflog, &f).unwrap();
        assert_eq!(seg.checksum, Checksum::Bad);
    }

    #[test]
    fn nflog_refusals() {
        // Family and packet disagree; unknown family; unknown version.
        assert_eq!(
            decode(Link::Nflog, &nflog_frame(2, 2, &ip6(DATA))),
            Err(Drop::NotIp)
        );
        assert_eq!(
            decode(Link::Nflog, &nflog_frame(7, 2, &ip4(DATA))),
            Err(Drop::NotIp)
        );
        let mut f = nflog_frame(2, 2, &ip4(DATA));
        f[1] = 1;
        assert_eq!(decode(Link::Nflog, &f), Err(Drop::NotIp));
        // No payload TLV (copy mode none), or a header alone.
        let mut f = vec![2, 0, 0, 0];
        f.extend(tlv(1, &[8, 0, 2, 0]));
        assert_eq!(decode(Link::Nflog, &f), Err(Drop::Short));
        assert_eq!(decode(Link::Nflog, &[2, 0, 0]), Err(Drop::Short));
        // A TLV shorter than its own header would loop forever.
        let mut f = vec![2, 0, 0, 0];
        f.extend_from_slice(&2u16.to_ne_bytes());
        f.extend_from_slice(&9u16.to_ne_bytes());
        f.extend(ip4(DATA));
        assert_eq!(decode(Link::Nflog, &f), Err(Drop::BadLength));
        // A payload TLV longer than the frame.
        let f = nflog_frame(2, 2, &ip4(DATA));
        assert_eq!(decode(Link::Nflog, &f[..f.len() - 4]), Err(Drop::Short));
    }

    /// OpenBSD's `struct pfloghdr`: 100 bytes, length field 100.
    fn pflog_openbsd(af: u8, action: u8, dir: u8) -> Vec<u8> {
        let mut h = vec![0u8; 100];
        h[0] = 100;
        h[1] = af;
        h[2] = action;
        h[4..7].copy_from_slice(b"em0");
        h[36..40].copy_from_slice(&7u32.to_be_bytes()); // rulenr
        h[60] = dir;
        h
    }

    /// FreeBSD 14's: length field 69 (offset of pad2), 72 bytes.
    fn pflog_freebsd(af: u8, action: u8, dir: u8) -> Vec<u8> {
        let mut h = vec![0u8; 72];
        h[0] = 69;
        h[1] = af;
        h[2] = action;
        h[4..8].copy_from_slice(b"vtn0");
        h[60] = dir;
        h[64..68].copy_from_slice(&0xdead_beefu32.to_be_bytes()); // ridentifier
        h
    }

    #[test]
    fn pflog_both_layouts_pass() {
        for dir in [1, 2] {
            check4(decode(Link::Pflog, &cat(&pflog_openbsd(2, 0, dir), &ip4(DATA))).unwrap());
            check6(decode(Link::Pflog, &cat(&pflog_openbsd(24, 0, dir), &ip6(DATA))).unwrap());
            check4(decode(Link::Pflog, &cat(&pflog_freebsd(2, 0, dir), &ip4(DATA))).unwrap());
            check6(decode(Link::Pflog, &cat(&pflog_freebsd(28, 0, dir), &ip6(DATA))).unwrap());
        }
        // macOS's AF_INET6 too.
        check6(decode(Link::Pflog, &cat(&pflog_freebsd(30, 0, 1), &ip6(DATA))).unwrap());
        // A bad checksum logged on the way out is still bad: the packet may
        // have been forwarded from whoever forged it.
        let mut p = ip4(DATA);
        p[36] ^= 0xff;
        let f = cat(&pflog_openbsd(2, 0, 2), &p);
        let seg = decode(Link::Pflog, &f).unwrap();
        assert_eq!(seg.checksum, Checksum::Bad);
    }

    #[test]
    fn pflog_blocked_is_never_delivered() {
        // PF_DROP, and any other action (scrub, nat, rdr, match ...).
        for action in [1, 2, 4, 8, 12] {
            for h in [pflog_openbsd(2, action, 1), pflog_freebsd(2, action, 1)] {
                assert_eq!(
                    decode(Link::Pflog, &cat(&h, &ip4(DATA))),
                    Err(Drop::Blocked)
                );
            }
            for h in [pflog_openbsd(24, action, 2), pflog_freebsd(28, action, 2)] {
                assert_eq!(
                    decode(Link::Pflog, &cat(&h, &ip6(DATA))),
                    Err(Drop::Blocked)
                );
            }
        }
    }

    #[test]
    fn pflog_refusals() {
        // The family must agree with the IP version, and be inet or inet6.
        let f = cat(&pflog_openbsd(24, 0, 1), &ip4(DATA));
        assert_eq!(decode(Link::Pflog, &f), Err(Drop::NotIp));
        let f = cat(&pflog_freebsd(2, 0, 1), &ip6(DATA));
        assert_eq!(decode(Link::Pflog, &f), Err(Drop::NotIp));
        for af in [0, 1, 10, 17] {
            let f = cat(&pflog_freebsd(af, 0, 1), &ip4(DATA));
            assert_eq!(decode(Link::Pflog, &f), Err(Drop::NotIp), "{af}");
        }
        // A length that cannot hold the fields, or runs past the frame.
        let mut h = pflog_freebsd(2, 0, 1);
        h[0] = 60;
        assert_eq!(
            decode(Link::Pflog, &cat(&h, &ip4(DATA))),
            Err(Drop::BadLength)
        );
        assert_eq!(
            decode(Link::Pflog, &pflog_openbsd(2, 0, 1)[..99]),
            Err(Drop::Short)
        );
        assert_eq!(decode(Link::Pflog, &[]), Err(Drop::Short));
        // The rounded length says where IP starts: 69 and 72 agree.
        let mut h = pflog_freebsd(2, 0, 1);
        h[0] = 72;
        check4(decode(Link::Pflog, &cat(&h, &ip4(DATA))).unwrap());
    }
}

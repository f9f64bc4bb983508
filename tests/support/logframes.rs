//! Test support: turn recorded Ethernet frames into what a firewall's log
//! would hand the daemon — pf's pflog (OpenBSD's and FreeBSD 14's header
//! layouts) and Linux NFLOG — and read classic pcap files.
//!
//! Include it with `#[path = "support/logframes.rs"] mod logframes;`. The
//! frames must be untagged Ethernet carrying IPv4 or IPv6 (the lab's
//! recordings are); link padding after the IP packet is dropped, since a
//! log carries the packet from its network header to its end.

use std::path::Path;

/// DLT_PFLOG.
pub const LINKTYPE_PFLOG: u32 = 117;
/// DLT_NFLOG.
pub const LINKTYPE_NFLOG: u32 = 239;

const ETHERNET_HEADER: usize = 14;

/// The two `struct pfloghdr` layouts.
#[derive(Clone, Copy, Debug)]
pub enum Pflog {
    /// 100 bytes, length field 100, AF_INET6 24.
    OpenBsd,
    /// Length field 69 (the offset of the trailing pad), 72 bytes on the
    /// wire, AF_INET6 28.
    FreeBsd,
}

/// pf's verdict on a logged packet.
#[derive(Clone, Copy, Debug)]
pub enum Action {
    Pass,
    Block,
}

impl Pflog {
    fn length_field(self) -> u8 {
        match self {
            Pflog::OpenBsd => 100,
            Pflog::FreeBsd => 69,
        }
    }
    fn af_inet6(self) -> u8 {
        match self {
            Pflog::OpenBsd => 24,
            Pflog::FreeBsd => 28,
        }
    }
}

/// A classic pcap file (either byte order, micro- or nanosecond stamps):
/// its link type and its frames with their timestamps in microseconds.
pub fn read_pcap(path: &Path) -> (u32, Vec<(u64, Vec<u8>)>) {
    let b = std::fs::read(path).unwrap();
    let magic = u32::from_le_bytes(b[0..4].try_into().unwrap());
    let (le, nanos) = match magic {
        0xa1b2_c3d4 => (true, false),
        0xa1b2_3c4d => (true, true),
        0xd4c3_b2a1 => (false, false),
        0x4d3c_b2a1 => (false, true),
        m => panic!("{}: not a classic pcap file (magic {m:#x})", path.display()),
    };
    let u32_at = |at: usize| {
        let w: [u8; 4] = b[at..at + 4].try_into().unwrap();
        if le {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        }
    };
    let linktype = u32_at(20);
    let mut frames = Vec::new();
    let mut at = 24;
    while at < b.len() {
        let secs = u64::from(u32_at(at));
        let frac = u64::from(u32_at(at + 4));
        let caplen = u32_at(at + 8) as usize;
        let us = if nanos { frac / 1000 } else { frac };
        frames.push((secs * 1_000_000 + us, b[at + 16..at + 16 + caplen].to_vec()));
        at += 16 + caplen;
    }
    (linktype, frames)
}

/// The IP packet an untagged Ethernet frame carries, without link padding.
pub fn ip_packet(frame: &[u8]) -> &[u8] {
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let ip = &frame[ETHERNET_HEADER..];
    let len = match ethertype {
        0x0800 => usize::from(u16::from_be_bytes([ip[2], ip[3]])),
        0x86dd => 40 + usize::from(u16::from_be_bytes([ip[4], ip[5]])),
        t => panic!("ethertype {t:#06x} is not IP"),
    };
    &ip[..len]
}

fn is_v6(ip: &[u8]) -> bool {
    ip[0] >> 4 == 6
}

/// The TCP payload of an IP packet (IPv6 without extension headers).
pub fn tcp_payload(ip: &[u8]) -> &[u8] {
    let ip_header = if is_v6(ip) {
        40
    } else {
        usize::from(ip[0] & 0x0f) * 4
    };
    let tcp = &ip[ip_header..];
    &tcp[usize::from(tcp[12] >> 4) * 4..]
}

/// The Ethernet frame's packet behind a pflog header of `layout`, logged on
/// `ifname` inbound with `action`.
pub fn pflog_frame(frame: &[u8], layout: Pflog, action: Action, ifname: &str) -> Vec<u8> {
    let ip = ip_packet(frame);
    let length = layout.length_field();
    let mut h = vec![0u8; usize::from(length).next_multiple_of(4)];
    h[0] = length;
    h[1] = if is_v6(ip) { layout.af_inet6() } else { 2 };
    // PF_PASS 0, PF_DROP 1; reason PFRES_MATCH 0.
    h[2] = match action {
        Action::Pass => 0,
        Action::Block => 1,
    };
    h[4..4 + ifname.len()].copy_from_slice(ifname.as_bytes());
    // Rule number 3 (network order), no subrule (-1), uid/pid unknown (-1).
    h[36..40].copy_from_slice(&3u32.to_be_bytes());
    h[40..60].fill(0xff);
    // PF_IN.
    h[60] = 1;
    h.extend_from_slice(ip);
    h
}

/// The Ethernet frame's packet as NFLOG group 1 logs it in the forward
/// path: packet header, outgoing interface index, then the payload TLV.
pub fn nflog_frame(frame: &[u8]) -> Vec<u8> {
    let ip = ip_packet(frame);
    let v6 = is_v6(ip);
    // nfgenmsg: NFPROTO_IPV4 2 / NFPROTO_IPV6 10, version 0, group (BE).
    let mut f = vec![if v6 { 10 } else { 2 }, 0, 0, 1];
    // NFULA_PACKET_HDR (1): hw protocol (BE), hook NF_INET_POST_ROUTING 4.
    let proto: u16 = if v6 { 0x86dd } else { 0x0800 };
    let mut hdr = proto.to_be_bytes().to_vec();
    hdr.extend_from_slice(&[4, 0]);
    tlv(&mut f, 1, &hdr);
    // NFULA_IFINDEX_OUTDEV (5), network order.
    tlv(&mut f, 5, &2u32.to_be_bytes());
    // NFULA_PAYLOAD (9).
    tlv(&mut f, 9, ip);
    f
}

/// One TLV: length (counting the 4-byte header) and type in host order,
/// value padded to 4 bytes.
fn tlv(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = u16::try_from(4 + value.len()).unwrap();
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(out.len().next_multiple_of(4), 0);
}

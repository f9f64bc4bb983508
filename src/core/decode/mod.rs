//! Packet decoding: one captured frame in, one TCP segment (or the reason
//! it was refused) out.
//!
//! Pure and stateless: no allocation, no copying (the payload borrows the
//! frame), and no panics whatever the bytes are. Each layer has its module:
//! `link` strips the framing and says which IP version follows and whether
//! the frame was sent by this host, `ip` checks the IPv4/IPv6 header, `tcp`
//! reads the TCP header, its flags and options and verifies its checksum.
//! Offsets are named constants per header; every read is bounds-checked, so
//! a hostile frame ends in a [`Drop`], never in a panic.
//!
//! # What a receiver would refuse, we refuse
//!
//! The evasion checks follow the original daemon's SECURITY section: packets
//! with IP options, IP fragments (and IPv6 extension headers, which can hide
//! the same tricks) and a ttl below 2 are refused, because the firewall or
//! the FTP server might see a different byte stream than we do. On top of
//! that, decode refuses what the receiving host's IP layer or the firewall's
//! connection tracking throws away, so the session never acts on bytes the
//! server did not read:
//!
//! - a bad IPv4 header checksum ([`Drop::BadIpChecksum`]): the header
//!   checksum is computed in software by every stack, so it is always
//!   verifiable, and receivers drop such packets;
//! - a flag mix that Linux connection tracking marks invalid
//!   ([`Drop::BadFlags`]): of FIN, SYN, RST, ACK and URG only SYN, SYN|URG,
//!   SYN|ACK, RST, RST|ACK, FIN|ACK, FIN|ACK|URG, ACK and ACK|URG are valid
//!   (PSH, ECE and CWR never matter). So SYN|RST, SYN|FIN, RST|FIN, a FIN
//!   without ACK, data without ACK and no flags at all are refused; what is
//!   left has one meaning, [`Control`];
//! - an IPv4-mapped address (`::ffff:a.b.c.d`) as source or destination of an
//!   IPv6 packet ([`Drop::MappedAddress`]). Linux refuses a TCP connection
//!   request from a mapped source (`tcp_v6_conn_request`; from 2017 to 2021
//!   `ip6_rcv_core` dropped every such packet), and the IANA special-purpose registry marks
//!   `::ffff:0:0/96` as neither a valid source, nor destination, nor
//!   forwardable. No TCP connection over IPv6 can have such an end, and
//!   refusing them here means no IPv6 packet can ever carry an IPv4
//!   session's key;
//! - on pflog, a packet pf did not pass ([`Drop::Blocked`]): it was never
//!   delivered.
//!
//! # TCP checksums and offload
//!
//! The TCP checksum (with the IPv4 or IPv6 pseudo-header) is verified
//! whenever the capture holds the whole segment, which decode requires (a
//! segment cut by the snapshot length is [`Drop::Short`]: its bytes cannot
//! be followed), and reported in [`Segment::checksum`]. The session layer,
//! not decode, refuses `Bad` segments, so they can be counted where the
//! session knows why.
//!
//! Checksum offload complicates this. A stack that offloads leaves only the
//! pseudo-header sum in the field and lets the NIC finish it after the
//! capture saw the packet. Virtual links (veth, virtio, tap) never finish
//! it: the packet crosses to the next namespace or guest, possibly through
//! a forwarding firewall, still unfinished, and the receiving kernel
//! accepts it unchecked because the packet never crossed a wire. GRO does the
//! same to segments it merged on receive. The namespace lab's captures show
//! this on every packet. So a checksum is [`Checksum::Unverified`] when
//!
//! - the link says this host sent the packet: Linux cooked capture (SLL,
//!   SLL2) packet type `PACKET_OUTGOING`, or an NFLOG packet logged in the
//!   `LOCAL_OUT` hook (an Ethernet header or pflog's direction cannot say
//!   this: forwarded packets go out too); or
//! - the field holds exactly the folded pseudo-header sum, the value
//!   offload leaves. A random corruption has that value once in 65,536
//!   times; a sender can write it on purpose, and a receiver behind a real
//!   wire would then drop the packet. That is why `Unverified` is a third
//!   answer and not `Valid`: the session decides what it is worth (for
//!   example, bytes acted on only once the receiver acknowledges them).
//!
//! Every other checksum is `Valid` or `Bad`.
//!
//! # Check order
//!
//! So the log names the most telling reason: link header present, link
//! verdict (pf action, address family), IP header present and sane, IP
//! options or IPv6 extension headers, fragment, ttl, protocol, then the
//! IPv4 header checksum or mapped IPv6 addresses, the captured length, the
//! TCP header and its flags. The structural checks come before the header
//! checksum so each counter keeps counting what it names, and only packets
//! we would follow pay for checksums.

mod ip;
mod link;
mod tcp;

use std::fmt;
use std::net::IpAddr;

pub use link::Link;
pub use tcp::{Checksum, Control, Flags, TcpOpts};

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
    /// The six classic flag bits, as on the wire.
    pub flags: Flags,
    /// The one meaning of the flags.
    pub control: Control,
    /// The raw window field, not yet scaled.
    pub window: u16,
    pub opts: TcpOpts,
    pub checksum: Checksum,
    pub payload: &'a [u8],
}

impl Segment<'_> {
    /// Does the segment carry an acknowledgement number?
    #[inline]
    pub fn has_ack(&self) -> bool {
        self.flags.has(Flags::ACK)
    }
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
    /// The IPv4 header checksum is wrong.
    BadIpChecksum,
    /// A TCP flag combination connection tracking calls invalid.
    BadFlags,
    /// An IPv4-mapped IPv6 address as source or destination.
    MappedAddress,
    /// Logged by pf with an action other than pass: never delivered.
    Blocked,
}

impl Drop {
    /// Number of drop reasons: the size of per-reason counter arrays.
    pub const COUNT: usize = 12;

    /// Every reason, in discriminant order (`ALL[d as usize] == d`).
    pub const ALL: [Drop; Drop::COUNT] = [
        Drop::Short,
        Drop::NotIp,
        Drop::IpOptions,
        Drop::Ipv6ExtHeader,
        Drop::Fragment,
        Drop::LowTtl,
        Drop::NotTcp,
        Drop::BadLength,
        Drop::BadIpChecksum,
        Drop::BadFlags,
        Drop::MappedAddress,
        Drop::Blocked,
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
            Drop::BadIpChecksum => "bad ip checksum",
            Drop::BadFlags => "bad tcp flags",
            Drop::MappedAddress => "ipv4-mapped ipv6 address",
            Drop::Blocked => "not passed by pf",
        }
    }

    /// One-word name of the reason's counter in the `stats:` line.
    pub fn counter(self) -> &'static str {
        match self {
            Drop::Short => "short",
            Drop::NotIp => "not-ip",
            Drop::IpOptions => "ip-options",
            Drop::Ipv6ExtHeader => "ipv6-ext",
            Drop::Fragment => "fragment",
            Drop::LowTtl => "ttl",
            Drop::NotTcp => "not-tcp",
            Drop::BadLength => "bad-length",
            Drop::BadIpChecksum => "ip-checksum",
            Drop::BadFlags => "bad-flags",
            Drop::MappedAddress => "mapped",
            Drop::Blocked => "blocked",
        }
    }
}

// `ALL` lists every reason once, in discriminant order, so `d as usize`
// indexes arrays of `Drop::COUNT` counters. A reason added to the enum but
// not to `ALL` fails the exhaustive matches above or this check.
const _: () = {
    let mut i = 0;
    while i < Drop::COUNT {
        assert!(Drop::ALL[i] as usize == i);
        i += 1;
    }
    assert!(Drop::Blocked as usize + 1 == Drop::COUNT);
};

impl fmt::Display for Drop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

/// Decode one captured frame of the given link type.
pub fn decode(link: Link, frame: &[u8]) -> Result<Segment<'_>, Drop> {
    let inner = link::strip(link, frame)?;
    ip::packet(inner)
}

/// Frames for the tests of every layer.
#[cfg(test)]
pub(crate) mod testutil {
    use super::*;
    use etherparse::PacketBuilder;
    use std::net::{Ipv4Addr, Ipv6Addr};

    pub const C4: [u8; 4] = [192, 0, 2, 2];
    pub const S4: [u8; 4] = [198, 51, 100, 2];
    pub const C6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    pub const S6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    pub const DATA: &[u8] = b"227 Entering Passive Mode (198,51,100,2,195,92)\r\n";

    /// IPv4 + TCP (PSH|ACK), client -> server port 21, valid checksums.
    pub fn ip4(payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ipv4(C4, S4, 64)
            .tcp(40594, 21, 1000, 65535)
            .psh()
            .ack(2000);
        let mut v = Vec::new();
        b.write(&mut v, payload).unwrap();
        v
    }

    pub fn ip6(payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ipv6(C6, S6, 64)
            .tcp(40594, 21, 1000, 65535)
            .psh()
            .ack(2000);
        let mut v = Vec::new();
        b.write(&mut v, payload).unwrap();
        v
    }

    /// Recompute the IPv4 header checksum of a packet (after editing it).
    pub fn fix_ip4(p: &mut [u8]) {
        let hl = usize::from(p[0] & 0x0f) * 4;
        p[10..12].copy_from_slice(&[0, 0]);
        let mut sum = 0u32;
        for w in p[..hl].chunks(2) {
            sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    }

    pub fn cat(prefix: &[u8], packet: &[u8]) -> Vec<u8> {
        let mut v = prefix.to_vec();
        v.extend_from_slice(packet);
        v
    }

    pub fn eth(ethertype: u16) -> Vec<u8> {
        let mut v = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
        v.extend_from_slice(&ethertype.to_be_bytes());
        v
    }

    pub fn check4(seg: Segment<'_>) {
        assert_eq!(seg.src, IpAddr::V4(Ipv4Addr::from(C4)));
        assert_eq!(seg.dst, IpAddr::V4(Ipv4Addr::from(S4)));
        assert_eq!((seg.sport, seg.dport), (40594, 21));
        assert_eq!((seg.seq, seg.ack), (1000, 2000));
        assert_eq!(seg.flags, Flags::PSH | Flags::ACK);
        assert_eq!(seg.control, Control::None);
        assert_eq!(seg.window, 65535);
        assert_eq!(seg.opts, TcpOpts::default());
        assert_eq!(seg.checksum, Checksum::Valid);
        assert_eq!(seg.payload, DATA);
    }

    pub fn check6(seg: Segment<'_>) {
        assert_eq!(seg.src, IpAddr::V6(Ipv6Addr::from(C6)));
        assert_eq!(seg.dst, IpAddr::V6(Ipv6Addr::from(S6)));
        assert_eq!((seg.sport, seg.dport), (40594, 21));
        assert_eq!((seg.seq, seg.ack), (1000, 2000));
        assert_eq!(seg.flags, Flags::PSH | Flags::ACK);
        assert_eq!(seg.control, Control::None);
        assert_eq!(seg.checksum, Checksum::Valid);
        assert_eq!(seg.payload, DATA);
    }

    /// Does `inner` lie within `outer`?
    pub fn within(outer: &[u8], inner: &[u8]) -> bool {
        let (o, i) = (outer.as_ptr() as usize, inner.as_ptr() as usize);
        i >= o && i + inner.len() <= o + outer.len()
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;
    use proptest::prelude::*;

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
                "bad length",
                "bad ip checksum",
                "bad tcp flags",
                "ipv4-mapped ipv6 address",
                "not passed by pf",
            ]
        );
        for (i, d) in Drop::ALL.iter().enumerate() {
            assert_eq!(*d as u8 as usize, i);
            assert_eq!(d.to_string(), d.reason());
            assert!(!d.counter().contains(' '), "{}", d.counter());
        }
        let mut names: Vec<&str> = Drop::ALL.iter().map(|d| d.counter()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Drop::COUNT);
    }

    #[test]
    fn has_ack_reads_the_flag() {
        let f = ip4(DATA);
        let seg = decode(Link::Raw, &f).unwrap();
        assert!(seg.has_ack());
        let mut p = ip4(b"");
        p[33] = 0x02; // SYN
        let seg = decode(Link::Raw, &p).unwrap();
        assert!(!seg.has_ack());
        assert_eq!(seg.control, Control::Syn);
    }

    proptest! {
        #[test]
        fn never_panics_on_noise(bytes in proptest::collection::vec(any::<u8>(), 0..160)) {
            for link in Link::ALL {
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
    }
}

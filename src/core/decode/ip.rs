//! IPv4 and IPv6 headers: the evasion checks, the IPv4 header checksum,
//! IPv4-mapped IPv6 addresses, and the sum of the pseudo-header the TCP
//! layer adds to its checksum.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::checksum::{add, be_term, fold, sum};
use super::link::{Inner, Net};
use super::{Drop, Segment, bytes, tcp};

/// IPv4 header (RFC 791), without options.
mod v4 {
    pub const VERSION_IHL: usize = 0;
    pub const TOTAL_LEN: usize = 2;
    pub const FLAGS_FRAGMENT: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
    pub const HEADER: usize = 20;
    /// IHL of a header without options, in 32-bit words.
    pub const IHL_PLAIN: u8 = 5;
    /// More-fragments bit and fragment offset.
    pub const FRAGMENT_MASK: u16 = 0x3fff;
}

/// IPv6 fixed header (RFC 8200).
mod v6 {
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: usize = 8;
    pub const DST: usize = 24;
    pub const HEADER: usize = 40;
    pub const FRAGMENT: u8 = 44;
    /// Hop-by-hop, routing, ESP, AH, destination options, mobility, HIP,
    /// shim6.
    pub const EXT_HEADERS: [u8; 8] = [0, 43, 50, 51, 60, 135, 139, 140];
}

const IPPROTO_TCP: u8 = 6;
const MIN_TTL: u8 = 2;

/// Decode the IP packet the link layer left, and the TCP segment in it.
#[inline]
pub(super) fn packet(inner: Inner<'_>) -> Result<Segment<'_>, Drop> {
    let version = inner.packet.first().ok_or(Drop::Short)? >> 4;
    match (inner.net, version) {
        (Net::V4 | Net::Either, 4) => ipv4(inner.packet, inner.outgoing),
        (Net::V6 | Net::Either, 6) => ipv6(inner.packet, inner.outgoing),
        _ => Err(Drop::NotIp),
    }
}

#[inline]
fn ipv4(p: &[u8], outgoing: bool) -> Result<Segment<'_>, Drop> {
    let h: &[u8; v4::HEADER] = p.first_chunk().ok_or(Drop::Short)?;
    let ihl = h[v4::VERSION_IHL] & 0x0f;
    if ihl < v4::IHL_PLAIN {
        return Err(Drop::BadLength);
    }
    if ihl > v4::IHL_PLAIN {
        return Err(Drop::IpOptions);
    }
    let total = usize::from(be16(h, v4::TOTAL_LEN));
    if total < v4::HEADER {
        return Err(Drop::BadLength);
    }
    if be16(h, v4::FLAGS_FRAGMENT) & v4::FRAGMENT_MASK != 0 {
        return Err(Drop::Fragment);
    }
    if h[v4::TTL] < MIN_TTL {
        return Err(Drop::LowTtl);
    }
    if h[v4::PROTOCOL] != IPPROTO_TCP {
        return Err(Drop::NotTcp);
    }
    // The addresses are summed once, for the header and the pseudo-header.
    // They end the header; the sums of fixed-size pieces compile to a few
    // loads and adds.
    let addresses = sum(&h[v4::SRC..]);
    if fold(add(sum(&h[..v4::SRC]), addresses)) != 0xffff {
        return Err(Drop::BadIpChecksum);
    }
    // Bytes past the total length are link padding: not ours.
    let body = p.get(v4::HEADER..total).ok_or(Drop::Short)?;
    // Pseudo-header (RFC 9293 3.1): addresses, protocol, TCP length.
    let pseudo = add(
        addresses,
        be_term(u64::from(IPPROTO_TCP) + body.len() as u64),
    );
    tcp::segment(
        IpAddr::V4(Ipv4Addr::from(bytes::<4, _>(h, v4::SRC))),
        IpAddr::V4(Ipv4Addr::from(bytes::<4, _>(h, v4::DST))),
        body,
        pseudo,
        outgoing,
    )
}

#[inline]
fn ipv6(p: &[u8], outgoing: bool) -> Result<Segment<'_>, Drop> {
    let h: &[u8; v6::HEADER] = p.first_chunk().ok_or(Drop::Short)?;
    let next = h[v6::NEXT_HEADER];
    if next == v6::FRAGMENT {
        return Err(Drop::Fragment);
    }
    if v6::EXT_HEADERS.contains(&next) {
        return Err(Drop::Ipv6ExtHeader);
    }
    if h[v6::HOP_LIMIT] < MIN_TTL {
        return Err(Drop::LowTtl);
    }
    if next != IPPROTO_TCP {
        return Err(Drop::NotTcp);
    }
    let src = Ipv6Addr::from(bytes::<16, _>(h, v6::SRC));
    let dst = Ipv6Addr::from(bytes::<16, _>(h, v6::DST));
    if src.to_ipv4_mapped().is_some() || dst.to_ipv4_mapped().is_some() {
        return Err(Drop::MappedAddress);
    }
    let total = v6::HEADER + usize::from(be16(h, v6::PAYLOAD_LEN));
    let body = p.get(v6::HEADER..total).ok_or(Drop::Short)?;
    // Pseudo-header (RFC 8200 8.1): addresses, upper-layer length, next
    // header.
    let pseudo = add(
        sum(&h[v6::SRC..v6::DST + 16]),
        be_term(u64::from(IPPROTO_TCP) + body.len() as u64),
    );
    tcp::segment(IpAddr::V6(src), IpAddr::V6(dst), body, pseudo, outgoing)
}

/// A big-endian field at a fixed place in a fixed-size header.
#[inline(always)]
fn be16<const M: usize>(h: &[u8; M], at: usize) -> u16 {
    u16::from_be_bytes(bytes(h, at))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Checksum, Link, decode};
    use super::*;
    use etherparse::PacketBuilder;

    #[test]
    fn short() {
        let f = cat(&eth(0x0800), &ip4(DATA));
        assert_eq!(decode(Link::Ethernet, &f[..33]), Err(Drop::Short));
        // Header complete, but snaplen cut the payload.
        assert_eq!(decode(Link::Ethernet, &f[..f.len() - 1]), Err(Drop::Short));
        let p = ip6(DATA);
        assert_eq!(decode(Link::Raw, &p[..39]), Err(Drop::Short));
        assert_eq!(decode(Link::Raw, &p[..p.len() - 1]), Err(Drop::Short));
    }

    /// Insert `n` bytes of IPv4 options (NOPs), keeping lengths consistent.
    fn with_options(p: &[u8], n: usize) -> Vec<u8> {
        let mut v = p[..20].to_vec();
        v.extend(std::iter::repeat_n(1u8, n));
        v.extend_from_slice(&p[20..]);
        v[0] = 0x40 | (5 + n / 4) as u8;
        let total = (v.len() as u16).to_be_bytes();
        v[2..4].copy_from_slice(&total);
        fix_ip4(&mut v);
        v
    }

    #[test]
    fn ip_options() {
        for n in [4, 40] {
            let p = with_options(&ip4(DATA), n);
            assert_eq!(decode(Link::Raw, &p), Err(Drop::IpOptions));
        }
    }

    #[test]
    fn fragment() {
        let mut p = ip4(DATA);
        p[6] |= 0x20; // more fragments
        assert_eq!(decode(Link::Raw, &p), Err(Drop::Fragment));
        let mut p = ip4(DATA);
        p[7] = 1; // offset 8
        assert_eq!(decode(Link::Raw, &p), Err(Drop::Fragment));
        let mut p = ip4(DATA);
        p[6] = 0x40; // don't fragment is fine
        fix_ip4(&mut p);
        check4(decode(Link::Raw, &p).unwrap());
        let mut p = ip6(DATA);
        p[6] = 44;
        assert_eq!(decode(Link::Raw, &p), Err(Drop::Fragment));
    }

    #[test]
    fn ipv6_extension_headers() {
        for next in [0, 43, 50, 51, 60, 135, 139, 140] {
            let mut p = ip6(DATA);
            p[6] = next;
            assert_eq!(decode(Link::Raw, &p), Err(Drop::Ipv6ExtHeader), "{next}");
        }
    }

    #[test]
    fn low_ttl() {
        for ttl in [0, 1] {
            let mut p = ip4(DATA);
            p[8] = ttl;
            fix_ip4(&mut p);
            assert_eq!(decode(Link::Raw, &p), Err(Drop::LowTtl));
            let mut p = ip6(DATA);
            p[7] = ttl;
            assert_eq!(decode(Link::Raw, &p), Err(Drop::LowTtl));
        }
        let mut p = ip4(DATA);
        p[8] = 2;
        fix_ip4(&mut p);
        check4(decode(Link::Raw, &p).unwrap());
    }

    #[test]
    fn not_tcp() {
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
    fn bad_length() {
        // IHL below 5.
        let mut p = ip4(DATA);
        p[0] = 0x44;
        assert_eq!(decode(Link::Raw, &p), Err(Drop::BadLength));
        // Total length shorter than the header.
        let mut p = ip4(DATA);
        p[2..4].copy_from_slice(&19u16.to_be_bytes());
        fix_ip4(&mut p);
        assert_eq!(decode(Link::Raw, &p), Err(Drop::BadLength));
        // Total length leaves no room for the TCP header.
        let mut p = ip4(DATA);
        p[2..4].copy_from_slice(&30u16.to_be_bytes());
        fix_ip4(&mut p);
        assert_eq!(decode(Link::Raw, &p), Err(Drop::BadLength));
        // IPv6 payload length too small for TCP.
        let mut p = ip6(DATA);
        p[4..6].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(decode(Link::Raw, &p), Err(Drop::BadLength));
        // A shorter, consistent IP length just shortens the payload (and
        // breaks the TCP checksum, which covered the rest).
        let mut p = ip4(DATA);
        p[2..4].copy_from_slice(&(40 + 3u16).to_be_bytes());
        fix_ip4(&mut p);
        let seg = decode(Link::Raw, &p).unwrap();
        assert_eq!(seg.payload, &DATA[..3]);
        assert_eq!(seg.checksum, Checksum::Bad);
    }

    #[test]
    fn ip_header_checksum() {
        // Any single-bit change in the header is caught.
        for byte in 0..20 {
            for bit in 0..8 {
                let mut p = ip4(DATA);
                p[byte] ^= 1 << bit;
                let r = decode(Link::Raw, &p);
                // Changing the version, IHL, length, fragment, ttl or
                // protocol bits may hit an earlier check first.
                if !matches!(
                    r,
                    Err(Drop::NotIp
                        | Drop::IpOptions
                        | Drop::BadLength
                        | Drop::Short
                        | Drop::Fragment
                        | Drop::LowTtl
                        | Drop::NotTcp)
                ) {
                    assert_eq!(r, Err(Drop::BadIpChecksum), "byte {byte} bit {bit}");
                }
            }
        }
        // The complement of the right checksum is wrong too.
        let mut p = ip4(DATA);
        p[10] ^= 0xff;
        p[11] ^= 0xff;
        assert_eq!(decode(Link::Raw, &p), Err(Drop::BadIpChecksum));
    }

    #[test]
    fn mapped_addresses_are_refused() {
        let mapped = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 2];
        for (src, dst) in [(mapped, S6), (C6, mapped), (mapped, mapped)] {
            let mut p = Vec::new();
            PacketBuilder::ipv6(src, dst, 64)
                .tcp(40594, 21, 1000, 65535)
                .syn()
                .write(&mut p, b"")
                .unwrap();
            assert_eq!(decode(Link::Raw, &p), Err(Drop::MappedAddress));
        }
        // IPv4-compatible (::a.b.c.d, deprecated) and NAT64 (64:ff9b::/96)
        // addresses are ordinary IPv6 addresses to the stack.
        for src in [
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 192, 0, 2, 2],
            [0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0, 192, 0, 2, 2],
        ] {
            let mut p = Vec::new();
            PacketBuilder::ipv6(src, S6, 64)
                .tcp(40594, 21, 1000, 65535)
                .syn()
                .write(&mut p, b"")
                .unwrap();
            assert!(decode(Link::Raw, &p).is_ok());
        }
    }
}

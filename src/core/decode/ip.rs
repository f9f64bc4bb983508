//! IPv4 and IPv6 headers: the evasion checks, the IPv4 header checksum,
//! IPv4-mapped IPv6 addresses, and the Internet checksum the TCP layer
//! uses with the pseudo-header built here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::link::{Inner, Net, be16};
use super::{Drop, Segment, tcp};

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
pub(super) fn packet(inner: Inner<'_>) -> Result<Segment<'_>, Drop> {
    let version = inner.packet.first().ok_or(Drop::Short)? >> 4;
    match (inner.net, version) {
        (Net::V4 | Net::Either, 4) => ipv4(inner.packet, inner.outgoing),
        (Net::V6 | Net::Either, 6) => ipv6(inner.packet, inner.outgoing),
        _ => Err(Drop::NotIp),
    }
}

fn ipv4(p: &[u8], outgoing: bool) -> Result<Segment<'_>, Drop> {
    let header = p.get(..v4::HEADER).ok_or(Drop::Short)?;
    let ihl = header[v4::VERSION_IHL] & 0x0f;
    if ihl < v4::IHL_PLAIN {
        return Err(Drop::BadLength);
    }
    if ihl > v4::IHL_PLAIN {
        return Err(Drop::IpOptions);
    }
    let total = usize::from(be16(header, v4::TOTAL_LEN).ok_or(Drop::Short)?);
    if total < v4::HEADER {
        return Err(Drop::BadLength);
    }
    if be16(header, v4::FLAGS_FRAGMENT).ok_or(Drop::Short)? & v4::FRAGMENT_MASK != 0 {
        return Err(Drop::Fragment);
    }
    if header[v4::TTL] < MIN_TTL {
        return Err(Drop::LowTtl);
    }
    if header[v4::PROTOCOL] != IPPROTO_TCP {
        return Err(Drop::NotTcp);
    }
    // The addresses are summed once, for the header and the pseudo-header.
    let addresses = sum(&header[v4::SRC..v4::DST + 4]);
    if fold(sum(&header[..v4::SRC]) + addresses) != 0xffff {
        return Err(Drop::BadIpChecksum);
    }
    // Bytes past the total length are link padding: not ours.
    let body = p.get(v4::HEADER..total).ok_or(Drop::Short)?;
    let src = &header[v4::SRC..v4::SRC + 4];
    let dst = &header[v4::DST..v4::DST + 4];
    // Pseudo-header (RFC 9293 3.1): addresses, protocol, TCP length.
    let pseudo = addresses + u64::from(IPPROTO_TCP) + body.len() as u64;
    tcp::segment(
        IpAddr::V4(Ipv4Addr::new(src[0], src[1], src[2], src[3])),
        IpAddr::V4(Ipv4Addr::new(dst[0], dst[1], dst[2], dst[3])),
        body,
        pseudo,
        outgoing,
    )
}

fn ipv6(p: &[u8], outgoing: bool) -> Result<Segment<'_>, Drop> {
    let header = p.get(..v6::HEADER).ok_or(Drop::Short)?;
    let next = header[v6::NEXT_HEADER];
    if next == v6::FRAGMENT {
        return Err(Drop::Fragment);
    }
    if v6::EXT_HEADERS.contains(&next) {
        return Err(Drop::Ipv6ExtHeader);
    }
    if header[v6::HOP_LIMIT] < MIN_TTL {
        return Err(Drop::LowTtl);
    }
    if next != IPPROTO_TCP {
        return Err(Drop::NotTcp);
    }
    let src = addr6(&header[v6::SRC..v6::SRC + 16]);
    let dst = addr6(&header[v6::DST..v6::DST + 16]);
    if src.to_ipv4_mapped().is_some() || dst.to_ipv4_mapped().is_some() {
        return Err(Drop::MappedAddress);
    }
    let total = v6::HEADER + usize::from(be16(header, v6::PAYLOAD_LEN).ok_or(Drop::Short)?);
    let body = p.get(v6::HEADER..total).ok_or(Drop::Short)?;
    // Pseudo-header (RFC 8200 8.1): addresses, upper-layer length, next
    // header.
    let pseudo = sum(&header[v6::SRC..v6::DST + 16]) + u64::from(IPPROTO_TCP) + body.len() as u64;
    tcp::segment(IpAddr::V6(src), IpAddr::V6(dst), body, pseudo, outgoing)
}

fn addr6(b: &[u8]) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(b);
    Ipv6Addr::from(a)
}

/// Ones' complement sum of `data` as big-endian 16-bit words (an odd last
/// byte is padded with zero), folded to 16 bits but returned wide, so sums
/// of pseudo-header fields can be added before the final [`fold`].
///
/// Eight bytes are added at a time in native byte order (RFC 1071 1.2):
/// 2^16 = 1 modulo 0xffff, so a 32-bit half counts as the sum of its two
/// words, and the byte order of every word is swapped alike, which one swap
/// of the folded result undoes. The accumulator gains less than 2^33 per
/// step, far from overflowing on any packet.
#[inline]
pub(super) fn sum(data: &[u8]) -> u64 {
    #[inline(always)]
    fn halves(w: u64) -> u64 {
        (w & 0xffff_ffff) + (w >> 32)
    }
    let mut chunks = data.chunks_exact(8);
    let mut acc = 0u64;
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        acc += halves(u64::from_ne_bytes(w));
    }
    // The tail word by word (a variable-length copy would call memcpy).
    let mut rest = chunks.remainder();
    if let [a, b, c, d, more @ ..] = rest {
        acc += u64::from(u32::from_ne_bytes([*a, *b, *c, *d]));
        rest = more;
    }
    if let [a, b, more @ ..] = rest {
        acc += u64::from(u16::from_ne_bytes([*a, *b]));
        rest = more;
    }
    if let [a] = rest {
        acc += u64::from(u16::from_ne_bytes([*a, 0]));
    }
    u64::from(u16::from_be(fold(acc)))
}

/// Fold a [`sum`] to 16 bits. Data with a correct checksum folds to 0xffff.
/// Four fixed steps, no loop: 64 bits to at most 2^32 + 2^32, then to
/// 17 bits, to 0x1fffe at most, to 16 bits.
#[inline]
pub(super) fn fold(acc: u64) -> u16 {
    let acc = (acc & 0xffff_ffff) + (acc >> 32);
    let acc = (acc & 0xffff) + (acc >> 16);
    let acc = (acc & 0xffff) + (acc >> 16);
    let acc = (acc & 0xffff) + (acc >> 16);
    acc as u16
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Checksum, Link, decode};
    use super::*;
    use etherparse::PacketBuilder;
    use proptest::prelude::*;

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

    #[test]
    fn sum_and_fold() {
        assert_eq!(fold(u64::MAX), 0xffff);
        assert_eq!(fold(0x1_0000), 1);
        assert_eq!(fold(0xffff_ffff_0000_0000), 0xffff);
        assert_eq!(fold(sum(&[])), 0);
        assert_eq!(fold(sum(&[0x12])), 0x1200);
        assert_eq!(fold(sum(&[0x12, 0x34])), 0x1234);
        assert_eq!(fold(sum(&[0x12, 0x34, 0x56])), 0x1234 + 0x5600);
        assert_eq!(fold(sum(&[0xff, 0xff, 0x00, 0x01])), 0x0001);
        // RFC 1071 section 3's example.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data)), 0xddf2);
    }

    /// The reference: RFC 1071's loop over 16-bit words.
    fn reference(data: &[u8]) -> u16 {
        let mut acc = 0u32;
        for w in data.chunks(2) {
            let hi = u32::from(w[0]) << 8;
            acc += hi | u32::from(*w.get(1).unwrap_or(&0));
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    proptest! {
        #[test]
        fn sum_matches_the_word_loop(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let ours = fold(sum(&data));
            let theirs = reference(&data);
            // 0 and 0xffff are both ones' complement zero.
            prop_assert!(
                ours == theirs || (ours | theirs == 0xffff && ours & theirs == 0),
                "{ours:#x} {theirs:#x}"
            );
        }
    }
}

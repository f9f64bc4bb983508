//! The TCP header: ports, sequence numbers, flags and their one meaning,
//! the window, the options a receiver acts on, and the checksum.
//!
//! Flags follow Linux connection tracking (`tcp_valid_flags`): a mix it
//! marks invalid is [`Drop::BadFlags`]. Options are parsed the way Linux's
//! `tcp_parse_options` does: an end-of-list option, a length below 2 or one
//! running past the header stops parsing (what was read so far stands; the
//! segment is not refused); MSS, window scale and SACK-permitted count only
//! on a SYN and only with their exact lengths, timestamps on any segment;
//! a window scale above 14 is taken as 14 (RFC 7323 2.3).

use std::net::IpAddr;
use std::ops::BitOr;

use super::ip::{fold, sum};
use super::{Drop, Segment};

/// TCP header (RFC 9293 3.1).
mod field {
    pub const SPORT: usize = 0;
    pub const DPORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    pub const DATA_OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: usize = 16;
    pub const HEADER: usize = 20;
}

/// Option kinds and their lengths (RFC 9293, RFC 7323, RFC 2018).
mod opt {
    pub const END: u8 = 0;
    pub const NOP: u8 = 1;
    pub const MSS: u8 = 2;
    pub const MSS_LEN: u8 = 4;
    pub const WSCALE: u8 = 3;
    pub const WSCALE_LEN: u8 = 3;
    pub const SACK_PERMITTED: u8 = 4;
    pub const SACK_PERMITTED_LEN: u8 = 2;
    pub const TIMESTAMP: u8 = 8;
    pub const TIMESTAMP_LEN: u8 = 10;
    /// The largest shift RFC 7323 allows.
    pub const MAX_WSCALE: u8 = 14;
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

/// What a segment's flags mean, once impossible mixes are refused. The ACK
/// bit stays readable through [`Segment::has_ack`]; PSH and URG never
/// change the meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// SYN without ACK: opens a connection.
    Syn,
    /// SYN|ACK: accepts one.
    SynAck,
    /// RST, with or without ACK.
    Rst,
    /// FIN|ACK (a FIN without ACK is refused as invalid).
    Fin,
    /// Plain ACK, with or without data.
    None,
}

impl Control {
    /// The meaning of `flags`, or None for a mix Linux connection tracking
    /// calls invalid. PSH (and ECE/CWR, already masked off) never matter.
    pub fn of(flags: Flags) -> Option<Control> {
        const SYN: u8 = Flags::SYN.0;
        const SYN_URG: u8 = SYN | Flags::URG.0;
        const SYN_ACK: u8 = SYN | Flags::ACK.0;
        const RST: u8 = Flags::RST.0;
        const RST_ACK: u8 = RST | Flags::ACK.0;
        const FIN_ACK: u8 = Flags::FIN.0 | Flags::ACK.0;
        const FIN_ACK_URG: u8 = FIN_ACK | Flags::URG.0;
        const ACK: u8 = Flags::ACK.0;
        const ACK_URG: u8 = ACK | Flags::URG.0;
        match flags.0 & !Flags::PSH.0 {
            SYN | SYN_URG => Some(Control::Syn),
            SYN_ACK => Some(Control::SynAck),
            RST | RST_ACK => Some(Control::Rst),
            FIN_ACK | FIN_ACK_URG => Some(Control::Fin),
            ACK | ACK_URG => Some(Control::None),
            _ => None,
        }
    }
}

/// The TCP options a receiver acts on. MSS, window scale and
/// SACK-permitted are read only from SYN segments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpOpts {
    pub mss: Option<u16>,
    /// Shift count, at most 14.
    pub wscale: Option<u8>,
    pub sack_permitted: bool,
    /// (TSval, TSecr).
    pub timestamp: Option<(u32, u32)>,
}

impl TcpOpts {
    /// Parse an option list (the header bytes after the fixed 20).
    pub fn parse(mut b: &[u8], syn: bool) -> TcpOpts {
        let mut o = TcpOpts::default();
        while let Some((&kind, rest)) = b.split_first() {
            match kind {
                opt::END => break,
                opt::NOP => {
                    b = rest;
                    continue;
                }
                _ => {}
            }
            let Some(&size) = rest.first() else { break };
            if size < 2 || usize::from(size) > b.len() {
                break; // silly or partial option: stop, as Linux does
            }
            let (this, next) = b.split_at(usize::from(size));
            let v = &this[2..];
            match (kind, size) {
                (opt::MSS, opt::MSS_LEN) if syn => o.mss = Some(u16::from_be_bytes([v[0], v[1]])),
                (opt::WSCALE, opt::WSCALE_LEN) if syn => {
                    o.wscale = Some(v[0].min(opt::MAX_WSCALE));
                }
                (opt::SACK_PERMITTED, opt::SACK_PERMITTED_LEN) if syn => o.sack_permitted = true,
                (opt::TIMESTAMP, opt::TIMESTAMP_LEN) => {
                    o.timestamp = Some((
                        u32::from_be_bytes([v[0], v[1], v[2], v[3]]),
                        u32::from_be_bytes([v[4], v[5], v[6], v[7]]),
                    ));
                }
                _ => {}
            }
            b = next;
        }
        o
    }
}

/// Was the TCP checksum right?
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checksum {
    Valid,
    Bad,
    /// Cannot be told: the link says this host sent the packet, or the
    /// field holds exactly the pseudo-header sum, which is what checksum
    /// offload leaves before the NIC finishes it (and what virtual links
    /// such as veth or virtio, and GRO on receive, pass on unfinished).
    /// A sender can also forge that value on purpose; see the module docs
    /// of `decode`.
    Unverified,
}

#[inline]
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// `body` is the whole IP payload, already cut to the IP length, so a TCP
/// header that does not fit is a length lie, not a short capture. `pseudo`
/// is the unfolded sum of the IP pseudo-header.
pub(super) fn segment(
    src: IpAddr,
    dst: IpAddr,
    body: &[u8],
    pseudo: u64,
    outgoing: bool,
) -> Result<Segment<'_>, Drop> {
    let h = body.get(..field::HEADER).ok_or(Drop::BadLength)?;
    let header_len = usize::from(h[field::DATA_OFFSET] >> 4) * 4;
    if header_len < field::HEADER || header_len > body.len() {
        return Err(Drop::BadLength);
    }
    let flags = Flags(h[field::FLAGS] & 0x3f);
    let control = Control::of(flags).ok_or(Drop::BadFlags)?;
    let checksum = if outgoing {
        Checksum::Unverified
    } else if fold(pseudo + sum(body)) == 0xffff {
        Checksum::Valid
    } else if u16::from_be_bytes([h[field::CHECKSUM], h[field::CHECKSUM + 1]]) == fold(pseudo) {
        // Exactly the pseudo-header sum: what checksum offload and GRO
        // leave in the field for the NIC or nobody to finish.
        Checksum::Unverified
    } else {
        Checksum::Bad
    };
    Ok(Segment {
        src,
        dst,
        sport: u16::from_be_bytes([h[field::SPORT], h[field::SPORT + 1]]),
        dport: u16::from_be_bytes([h[field::DPORT], h[field::DPORT + 1]]),
        seq: be32(h, field::SEQ),
        ack: be32(h, field::ACK),
        flags,
        control,
        window: u16::from_be_bytes([h[field::WINDOW], h[field::WINDOW + 1]]),
        opts: TcpOpts::parse(&body[field::HEADER..header_len], flags.has(Flags::SYN)),
        checksum,
        payload: &body[header_len..],
    })
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Link, decode};
    use super::*;
    use etherparse::{PacketBuilder, TcpHeader, TcpOptionElement};
    use proptest::prelude::*;

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

    /// Linux conntrack's table of valid mixes of FIN, SYN, RST, ACK, URG.
    #[test]
    fn control_table() {
        use Control::*;
        let (f, s, r, a, u) = (0x01u8, 0x02, 0x04, 0x10, 0x20);
        let valid = [
            (s, Syn),
            (s | u, Syn),
            (s | a, SynAck),
            (r, Rst),
            (r | a, Rst),
            (f | a, Fin),
            (f | a | u, Fin),
            (a, None),
            (a | u, None),
        ];
        for bits in 0u8..0x40 {
            let psh = bits & 0x08 != 0;
            let want = valid
                .iter()
                .find(|(v, _)| *v == bits & !0x08)
                .map(|(_, c)| *c);
            assert_eq!(Control::of(Flags(bits)), want, "{bits:#04x} psh {psh}");
        }
        // The ones that matter most to a follower of the stream.
        for bad in [s | r, s | f, r | f, f, 0, 0x08, u, s | a | u, s | f | a] {
            assert_eq!(Control::of(Flags(bad)), Option::None, "{bad:#04x}");
        }
    }

    #[test]
    fn bad_flags_are_dropped() {
        for bits in [0x06u8, 0x03, 0x05, 0x01, 0x00, 0x08, 0x23] {
            let mut p = ip4(DATA);
            p[33] = bits;
            assert_eq!(decode(Link::Raw, &p), Err(Drop::BadFlags), "{bits:#04x}");
        }
    }

    #[test]
    fn ecn_bits_are_masked() {
        let mut p = ip4(b"");
        p[33] = 0x02 | 0x40 | 0x80; // SYN + ECE + CWR
        let seg = decode(Link::Raw, &p).unwrap();
        assert_eq!(seg.flags, Flags::SYN);
        assert_eq!(seg.control, Control::Syn);
    }

    #[test]
    fn header_length_lies() {
        // TCP data offset below 5.
        let mut p = ip4(DATA);
        p[32] = 0x40;
        assert_eq!(decode(Link::Raw, &p), Err(Drop::BadLength));
        // TCP data offset beyond the IP payload (empty segment, offset 15).
        let mut p = ip4(b"");
        p[32] = 0xf0;
        assert_eq!(decode(Link::Raw, &p), Err(Drop::BadLength));
    }

    fn with_options(syn: bool, opts: &[TcpOptionElement], payload: &[u8]) -> Vec<u8> {
        let mut h = TcpHeader::new(21, 40594, 7, 1024);
        h.syn = syn;
        h.ack = true;
        h.acknowledgment_number = 8;
        h.set_options(opts).unwrap();
        let mut p = Vec::new();
        PacketBuilder::ipv6(S6, C6, 64)
            .tcp_header(h)
            .write(&mut p, payload)
            .unwrap();
        p
    }

    #[test]
    fn options_on_a_syn() {
        let p = with_options(
            true,
            &[
                TcpOptionElement::MaximumSegmentSize(1460),
                TcpOptionElement::SelectiveAcknowledgementPermitted,
                TcpOptionElement::Timestamp(0x0102_0304, 0),
                TcpOptionElement::Noop,
                TcpOptionElement::WindowScale(7),
            ],
            b"hi",
        );
        let seg = decode(Link::Raw, &p).unwrap();
        assert_eq!(seg.flags, Flags::SYN | Flags::ACK);
        assert_eq!(seg.control, Control::SynAck);
        assert_eq!((seg.sport, seg.dport, seg.seq, seg.ack), (21, 40594, 7, 8));
        assert_eq!(seg.window, 1024);
        assert_eq!(
            seg.opts,
            TcpOpts {
                mss: Some(1460),
                wscale: Some(7),
                sack_permitted: true,
                timestamp: Some((0x0102_0304, 0)),
            }
        );
        assert_eq!(seg.checksum, Checksum::Valid);
        assert_eq!(seg.payload, b"hi");
    }

    #[test]
    fn syn_only_options_are_ignored_later() {
        let p = with_options(
            false,
            &[
                TcpOptionElement::MaximumSegmentSize(1460),
                TcpOptionElement::WindowScale(7),
                TcpOptionElement::Timestamp(5, 6),
            ],
            b"",
        );
        let seg = decode(Link::Raw, &p).unwrap();
        assert_eq!(
            seg.opts,
            TcpOpts {
                timestamp: Some((5, 6)),
                ..TcpOpts::default()
            }
        );
    }

    #[test]
    fn window_scale_is_clamped() {
        for (shift, want) in [(0, 0), (14, 14), (15, 14), (255, 14)] {
            let o = TcpOpts::parse(&[3, 3, shift, 0], true);
            assert_eq!(o.wscale, Some(want));
        }
    }

    #[test]
    fn malformed_options_stop_parsing() {
        let ts = [8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
        let mss = [2, 4, 5, 0xb4];
        let cat2 = |a: &[u8], b: &[u8]| [a, b].concat();
        // Good lists first.
        assert_eq!(TcpOpts::parse(&mss, true).mss, Some(1460));
        assert_eq!(TcpOpts::parse(&ts, false).timestamp, Some((1, 2)));
        // End of list: what follows is not read.
        assert_eq!(TcpOpts::parse(&cat2(&[0], &mss), true), TcpOpts::default());
        // Length 0 or 1 ("silly"), or past the end ("partial"): stop, keep
        // what came before.
        for bad in [&[5u8, 0][..], &[5, 1], &[5, 12, 0, 0], &[2], &[8, 10, 0]] {
            let o = TcpOpts::parse(&cat2(&mss, bad), true);
            assert_eq!(
                o,
                TcpOpts {
                    mss: Some(1460),
                    ..TcpOpts::default()
                },
                "{bad:?}"
            );
        }
        // A silly length stops parsing even with good options after it.
        for silly in [&[5u8, 0][..], &[5, 1]] {
            let o = TcpOpts::parse(&cat2(&cat2(silly, &[1, 1]), &ts), true);
            assert_eq!(o.timestamp, Option::None, "{silly:?}");
        }
        // A known kind with the wrong length is skipped, not believed.
        let o = TcpOpts::parse(&[2, 3, 5, 2, 4, 1, 0], true);
        assert_eq!(o.mss, Some(256));
        let o = TcpOpts::parse(&[8, 6, 0, 0, 0, 1, 4, 2], true);
        assert_eq!((o.timestamp, o.sack_permitted), (Option::None, true));
        // Unknown options are skipped by their length.
        let o = TcpOpts::parse(&cat2(&[30, 4, 0xaa, 0xbb], &mss), true);
        assert_eq!(o.mss, Some(1460));
    }

    #[test]
    fn a_corrupted_segment_has_a_bad_checksum() {
        let p = ip4(DATA);
        for at in 20..p.len() {
            let mut q = p.clone();
            q[at] ^= 0x10;
            if let Ok(seg) = decode(Link::Raw, &q) {
                assert_eq!(seg.checksum, Checksum::Bad, "byte {at}");
            }
        }
        // The pseudo-header counts: the same segment to another address.
        let mut q = ip4(DATA);
        q[19] ^= 1;
        fix_ip4(&mut q);
        assert_eq!(decode(Link::Raw, &q).unwrap().checksum, Checksum::Bad);
        let mut q = ip6(DATA);
        q[39] ^= 1;
        assert_eq!(decode(Link::Raw, &q).unwrap().checksum, Checksum::Bad);
    }

    /// The value checksum offload leaves in the field: the folded
    /// pseudo-header sum, by the plain 16-bit word loop.
    fn partial(src: &[u8], dst: &[u8], tcp_len: usize) -> u16 {
        let mut acc = 6 + tcp_len as u32;
        for w in src.chunks(2).chain(dst.chunks(2)) {
            acc += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    #[test]
    fn offload_partial_checksum_is_unverified() {
        let mut p = ip4(DATA);
        let v = partial(&C4, &S4, p.len() - 20);
        p[36..38].copy_from_slice(&v.to_be_bytes());
        assert_eq!(
            decode(Link::Raw, &p).unwrap().checksum,
            Checksum::Unverified
        );
        // One off is simply bad.
        p[36..38].copy_from_slice(&(v ^ 1).to_be_bytes());
        assert_eq!(decode(Link::Raw, &p).unwrap().checksum, Checksum::Bad);
        let mut p = ip6(DATA);
        let v = partial(&C6, &S6, p.len() - 40);
        p[56..58].copy_from_slice(&v.to_be_bytes());
        assert_eq!(
            decode(Link::Raw, &p).unwrap().checksum,
            Checksum::Unverified
        );
    }

    fn option_strategy() -> impl Strategy<Value = TcpOptionElement> {
        prop_oneof![
            Just(TcpOptionElement::Noop),
            any::<u16>().prop_map(TcpOptionElement::MaximumSegmentSize),
            any::<u8>().prop_map(TcpOptionElement::WindowScale),
            Just(TcpOptionElement::SelectiveAcknowledgementPermitted),
            (any::<u32>(), any::<u32>()).prop_map(|(a, b)| TcpOptionElement::Timestamp(a, b)),
        ]
    }

    proptest! {
        /// Options written by an independent encoder read back as written;
        /// when one kind repeats, the last one counts, as in Linux.
        #[test]
        fn options_roundtrip(
            syn in any::<bool>(),
            opts in proptest::collection::vec(option_strategy(), 0..4),
        ) {
            let p = with_options(syn, &opts, b"x");
            let seg = decode(Link::Raw, &p).unwrap();
            let mut want = TcpOpts::default();
            for o in &opts {
                match *o {
                    TcpOptionElement::MaximumSegmentSize(m) if syn => want.mss = Some(m),
                    TcpOptionElement::WindowScale(w) if syn => want.wscale = Some(w.min(14)),
                    TcpOptionElement::SelectiveAcknowledgementPermitted if syn => {
                        want.sack_permitted = true;
                    }
                    TcpOptionElement::Timestamp(a, b) => want.timestamp = Some((a, b)),
                    _ => {}
                }
            }
            prop_assert_eq!(seg.opts, want);
            prop_assert_eq!(seg.payload, b"x");
        }

        /// Any checksum field value is Valid exactly when it is the one
        /// etherparse computes, over IPv4 and IPv6 and any payload.
        #[test]
        fn checksum_agrees_with_etherparse(
            v6 in any::<bool>(),
            addrs in any::<([u8; 16], [u8; 16])>(),
            seq in any::<u32>(),
            payload in proptest::collection::vec(any::<u8>(), 0..80),
            field in proptest::option::of(any::<u16>()),
        ) {
            let mut h = TcpHeader::new(40594, 21, seq, 512);
            h.ack = true;
            let (mut s6, mut d6) = addrs;
            // Keep clear of IPv4-mapped addresses.
            s6[0] |= 0x20;
            d6[0] |= 0x20;
            let (s4, d4) = ([s6[0], s6[1], s6[2], s6[3]], [d6[0], d6[1], d6[2], d6[3]]);
            let right = if v6 {
                h.calc_checksum_ipv6_raw(s6, d6, &payload).unwrap()
            } else {
                h.calc_checksum_ipv4_raw(s4, d4, &payload).unwrap()
            };
            let mut p = Vec::new();
            if v6 {
                PacketBuilder::ipv6(s6, d6, 64).tcp_header(h).write(&mut p, &payload).unwrap();
            } else {
                PacketBuilder::ipv4(s4, d4, 64).tcp_header(h).write(&mut p, &payload).unwrap();
            }
            let at = if v6 { 40 } else { 20 } + 16;
            let value = field.unwrap_or(right);
            p[at..at + 2].copy_from_slice(&value.to_be_bytes());
            let seg = decode(Link::Raw, &p).unwrap();
            // 0x0000 and 0xffff are the same number in ones' complement.
            let same = value == right || (value | right == 0xffff && value & right == 0);
            let tcp_len = p.len() - at + 16;
            let offload = if v6 { partial(&s6, &d6, tcp_len) } else { partial(&s4, &d4, tcp_len) };
            let want = if same {
                Checksum::Valid
            } else if value == offload {
                Checksum::Unverified
            } else {
                Checksum::Bad
            };
            prop_assert_eq!(seg.checksum, want);
        }

        /// Whatever we build, we read back.
        #[test]
        fn roundtrip(
            v6 in any::<bool>(),
            sport in any::<u16>(), dport in any::<u16>(),
            seq in any::<u32>(), ack in any::<u32>(), window in any::<u16>(),
            flags in 0u8..0x40, ttl in 2u8..=255,
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut h = TcpHeader::new(sport, dport, seq, window);
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
            match (decode(Link::Ethernet, &f), Control::of(Flags(flags))) {
                (Ok(seg), Some(control)) => {
                    prop_assert_eq!((seg.sport, seg.dport, seg.seq, seg.ack), (sport, dport, seq, ack));
                    prop_assert_eq!(seg.flags, Flags(flags));
                    prop_assert_eq!(seg.control, control);
                    prop_assert_eq!(seg.window, window);
                    prop_assert_eq!(seg.checksum, Checksum::Valid);
                    prop_assert_eq!(seg.payload, &payload[..]);
                }
                (Err(d), None) => prop_assert_eq!(d, Drop::BadFlags),
                (got, want) => prop_assert!(false, "{got:?} for {want:?}"),
            }
        }
    }
}

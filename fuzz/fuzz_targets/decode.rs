//! Fuzz target: `decode::decode` on arbitrary bytes for every link type.
//!
//! The first input byte picks the [`Link`], the rest is the frame. Decoding
//! must never panic, and an accepted segment must be consistent with the
//! frame it came from: its payload lies inside the frame (it borrows it),
//! both addresses share one family, only the six classic flag bits are
//! kept, the flags' one meaning agrees with them, no IPv6 address is
//! IPv4-mapped, and a window scale never exceeds 14.
#![no_main]

use std::net::IpAddr;

use ftpsesame::core::decode::{Control, Flags, Link, decode};
use libfuzzer_sys::fuzz_target;

const LINKS: [Link; Link::ALL.len()] = Link::ALL;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, frame)) = data.split_first() else {
        return;
    };
    let link = LINKS[usize::from(pick) % LINKS.len()];
    if let Ok(seg) = decode(link, frame) {
        let f = frame.as_ptr_range();
        let p = seg.payload.as_ptr_range();
        assert!(
            f.start <= p.start && p.end <= f.end,
            "payload outside the frame"
        );
        // Link header + smallest IPv4 header + smallest TCP header.
        assert!(seg.payload.len() + 40 <= frame.len(), "payload too long");
        assert_eq!(seg.src.is_ipv4(), seg.dst.is_ipv4(), "mixed families");
        assert_eq!(seg.flags.0 & 0xc0, 0, "ECE/CWR must be masked off");
        assert_eq!(Control::of(seg.flags), Some(seg.control), "control");
        assert_eq!(
            seg.has_ack(),
            seg.flags.has(Flags::ACK),
            "has_ack reads the flag"
        );
        for a in [seg.src, seg.dst] {
            if let IpAddr::V6(a) = a {
                assert!(a.to_ipv4_mapped().is_none(), "mapped address");
            }
        }
        assert!(seg.opts.wscale.is_none_or(|w| w <= 14), "window scale");
    }
});

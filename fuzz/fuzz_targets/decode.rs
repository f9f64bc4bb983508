//! Fuzz target: `decode::decode` on arbitrary bytes for every link type.
//!
//! The first input byte picks the [`Link`], the rest is the frame. Decoding
//! must never panic, and an accepted segment must be consistent with the
//! frame it came from: its payload lies inside the frame (it borrows it),
//! both addresses share one family, and only the six classic flag bits are
//! kept.
#![no_main]

use ftpsesame::core::decode::{Link, decode};
use libfuzzer_sys::fuzz_target;

const LINKS: [Link; 9] = Link::ALL;

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
    }
});

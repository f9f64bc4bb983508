//! Fuzz target: the whole engine fed a capture.
//!
//! Input layout (little-endian), close to a pcap file's records:
//!
//! ```text
//! byte 0         link type (index into LINKS) in the low nibble,
//!                bit 4: re-check sessions against the firewall state
//! then records:  u32 time delta (us), u16 length, `length & 0x7fff` bytes
//! ```
//!
//! Bit 15 of a record's length asks for an `Engine::tick` after the packet.
//! A record cut short by the end of the input is fed as it is (a truncated
//! capture). The engine runs with the dry-run firewall, a table of
//! `MAX_SESSIONS` and short timers, so eviction, expiry and purging all
//! happen within a few records; it must never hold more sessions than
//! allowed, and must hold none after `shutdown`.
#![no_main]

use ftpsesame::core::decode::Link;
use ftpsesame::core::engine::{Config, ControlPorts, Engine, Timeouts};
use ftpsesame::core::rule::RuleOptions;
use ftpsesame::firewall::dryrun::DryRun;
use libfuzzer_sys::fuzz_target;

const MAX_SESSIONS: usize = 8;
const SECOND: u64 = 1_000_000;
/// 2023-11-14, an ordinary capture start time.
const START: u64 = 1_700_000_000 * SECOND;

const LINKS: [Link; Link::ALL.len()] = Link::ALL;

fuzz_target!(
    init: {
        // Nothing in the engine logs at emerg: keep the fuzzer's stderr for
        // its own reports (and the run fast).
        ftpsesame::core::log::set_level(0);
    },
    |data: &[u8]| {
        let Some((&head, mut rest)) = data.split_first() else {
            return;
        };
        let cfg = Config {
            link: LINKS[usize::from(head & 0x0f) % LINKS.len()],
            max_sessions: MAX_SESSIONS,
            timeouts: Timeouts {
                half_open: 2 * SECOND,
                rule: 10 * SECOND,
                idle: 60 * SECOND,
                purge_every: SECOND,
            },
            live: false,
            recheck_state: head & 0x10 != 0,
            control_ports: ControlPorts::default(),
        };
        let mut engine = Engine::new(cfg, Box::new(DryRun::new(RuleOptions::default())));
        let mut now = START;
        while rest.len() >= 6 {
            let delta = u32::from_le_bytes(rest[0..4].try_into().unwrap());
            let len = u16::from_le_bytes(rest[4..6].try_into().unwrap());
            rest = &rest[6..];
            let n = usize::from(len & 0x7fff).min(rest.len());
            let (frame, tail) = rest.split_at(n);
            rest = tail;
            now = now.saturating_add(u64::from(delta));
            engine.packet(now, frame);
            assert!(engine.sessions() <= MAX_SESSIONS, "table over its limit");
            if len & 0x8000 != 0 {
                engine.tick(now);
                assert!(engine.sessions() <= MAX_SESSIONS);
            }
        }
        let _ = engine.stats_line();
        engine.shutdown();
        assert_eq!(engine.sessions(), 0, "sessions left after shutdown");
    }
);

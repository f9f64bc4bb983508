//! Counters: every limit and every drop is counted, and the whole set is
//! logged as one `stats:` line at exit and on SIGUSR1 (SIGINFO on BSD).
//!
//! Commit latency goes into a fixed log-linear histogram (16 steps per
//! power of two, about 6% resolution) so recording it never allocates.

use std::fmt;

use crate::core::decode::Drop;
use crate::core::session::Reject;

const SUB: u32 = 16;
const BUCKETS: usize = 64 * SUB as usize;

/// Fixed-size latency histogram in nanoseconds.
pub struct Histogram {
    counts: Box<[u64; BUCKETS]>,
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: Box::new([0; BUCKETS]),
            total: 0,
        }
    }
}

fn bucket(ns: u64) -> usize {
    if ns < u64::from(SUB) {
        return ns as usize;
    }
    let log = 63 - ns.leading_zeros(); // >= 4
    let shift = log - 4;
    let sub = (ns >> shift) as u32 & (SUB - 1);
    ((log - 3) * SUB + sub) as usize
}

fn bucket_low(b: usize) -> u64 {
    let b = b as u32;
    if b < SUB {
        return u64::from(b);
    }
    let log = b / SUB + 3;
    let sub = u64::from(b % SUB);
    (SUB as u64 + sub) << (log - 4)
}

impl Histogram {
    pub fn record(&mut self, ns: u64) {
        self.counts[bucket(ns).min(BUCKETS - 1)] += 1;
        self.total += 1;
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// The value at quantile `q` (0..=1), in nanoseconds (bucket floor).
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let want = ((self.total as f64 * q).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return bucket_low(b);
            }
        }
        bucket_low(BUCKETS - 1)
    }
}

/// All counters of one run.
#[derive(Default)]
pub struct Stats {
    pub packets: u64,
    /// One counter per drop reason, indexed by `Drop as usize`.
    pub drops: [u64; Drop::COUNT],
    pub sessions_active: u64,
    pub sessions_total: u64,
    /// Sessions met mid-stream, synced and vouched for.
    pub picked_up: u64,
    /// Pickups on probation started over from a contradicting pair.
    pub contested: u64,
    pub refused: u64,
    pub evicted: u64,
    pub untracked: u64,
    pub out_of_window: u64,
    /// Segments sessions did not take, by reason.
    pub rejects: [u64; Reject::ALL.len()],
    pub long_lines: u64,
    pub pending_overflow: u64,
    pub negotiations: u64,
    pub denied: u64,
    pub committed: u64,
    pub failed: u64,
    pub latency: Histogram,
}

impl Stats {
    pub fn dropped(&self) -> u64 {
        self.drops.iter().sum()
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stats: packets {}, dropped {} (",
            self.packets,
            self.dropped()
        )?;
        // The names come from the reasons themselves, so a new reason is
        // counted and named without touching this line.
        for (i, d) in Drop::ALL.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{} {}", d.counter(), self.drops[*d as usize])?;
        }
        write!(
            f,
            "), sessions {} active {} total {} picked up {} contested {} refused {} evicted {} untracked, out-of-window {}, long lines {}, \
             pending overflow {}, negotiations {}, denied {}, rules committed {} failed {}, commit latency p50 {}us p99 {}us",
            self.sessions_active,
            self.sessions_total,
            self.picked_up,
            self.contested,
            self.refused,
            self.evicted,
            self.untracked,
            self.out_of_window,
            self.long_lines,
            self.pending_overflow,
            self.negotiations,
            self.denied,
            self.committed,
            self.failed,
            self.latency.quantile(0.50) / 1000,
            self.latency.quantile(0.99) / 1000,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for ns in [
            0u64,
            1,
            15,
            16,
            17,
            31,
            32,
            1000,
            9_000,
            29_000,
            1_000_000,
            u64::MAX / 2,
        ] {
            let b = bucket(ns);
            assert!(b >= last);
            last = b;
            let low = bucket_low(b);
            assert!(low <= ns && ns - low <= ns / 16 + 1, "{ns} {low}");
        }
    }

    #[test]
    fn quantiles() {
        let mut h = Histogram::default();
        for i in 1..=100u64 {
            h.record(i * 1000);
        }
        let p50 = h.quantile(0.5);
        assert!((47_000..=50_000).contains(&p50), "{p50}");
        let p99 = h.quantile(0.99);
        assert!((93_000..=99_000).contains(&p99), "{p99}");
    }

    #[test]
    fn every_drop_reason_is_counted_and_named() {
        let mut s = Stats::default();
        for (i, d) in Drop::ALL.iter().enumerate() {
            s.drops[*d as usize] = 100 + i as u64;
        }
        let line = s.to_string();
        for (i, d) in Drop::ALL.iter().enumerate() {
            let item = format!("{} {}", d.counter(), 100 + i);
            assert!(line.contains(&item), "{item} in {line}");
        }
        assert_eq!(s.dropped(), (100..100 + Drop::COUNT as u64).sum::<u64>());
        assert!(line.contains(", blocked 111), sessions"), "{line}");
    }

    #[test]
    fn line_format() {
        let s = Stats {
            packets: 3,
            ..Default::default()
        };
        let line = s.to_string();
        assert!(
            line.starts_with("stats: packets 3, dropped 0 (short 0, not-ip 0, "),
            "{line}"
        );
        assert!(line.ends_with("commit latency p50 0us p99 0us"), "{line}");
    }
}

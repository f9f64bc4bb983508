//! Logging for the core: syslog's levels, the `-D` filter, the
//! [`logmsg!`](crate::logmsg) macro, a rate limit for messages that packets
//! can trigger, and [`Vis`] for untrusted protocol text.
//!
//! Where lines go is not the core's business: the program installs one
//! [`Sink`] (`os::log` does, for stderr and syslog); until then lines are
//! dropped. Callers check [`enabled`] (one atomic load) before formatting
//! anything, so a filtered message costs nothing on the hot path: no
//! formatting, no lock, no allocation.

use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};

/// syslog(3) priorities, 0 (emerg) to 7 (debug).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    Emerg = 0,
    Alert = 1,
    Crit = 2,
    Err = 3,
    Warning = 4,
    Notice = 5,
    Info = 6,
    Debug = 7,
}

/// The default `-D` level.
pub const DEFAULT_LEVEL: u8 = 5;

static LEVEL: AtomicU8 = AtomicU8::new(DEFAULT_LEVEL);

/// Writes one line that passed the filter (without its newline).
pub type Sink = fn(Level, fmt::Arguments<'_>);

static SINK: OnceLock<Sink> = OnceLock::new();

/// Set the `-D` level (0-7).
pub fn set_level(level: u8) {
    LEVEL.store(level.min(7), Ordering::Relaxed);
}

/// True when a message at `level` would be written.
#[inline]
pub fn enabled(level: Level) -> bool {
    level as u8 <= LEVEL.load(Ordering::Relaxed)
}

/// Send every line to `sink` from now on. The first call wins: the sink
/// is the program's choice, made once at start-up; a sink that changes
/// destination later (stderr, then syslog) keeps that state itself.
pub fn set_sink(sink: Sink) {
    let _ = SINK.set(sink);
}

/// Write one message if `level` passes the filter.
pub fn log(level: Level, args: fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    if let Some(sink) = SINK.get() {
        sink(level, args);
    }
}

/// `logmsg!(Level::Info, "format", args...)`: formats only when enabled.
#[macro_export]
macro_rules! logmsg {
    ($lvl:expr, $($arg:tt)*) => {
        if $crate::core::log::enabled($lvl) {
            $crate::core::log::log($lvl, format_args!($($arg)*));
        }
    };
}

/// Bounds how often a message that packets can trigger is written: at most
/// `per_second` in each second of (capture) time. The counters still count
/// every event; only the log lines are spared, so a flood of bad packets
/// cannot flood syslog.
#[derive(Debug)]
pub struct RateLimit {
    per_second: u32,
    second: u64,
    used: u32,
}

impl RateLimit {
    pub const fn new(per_second: u32) -> Self {
        RateLimit {
            per_second,
            second: 0,
            used: 0,
        }
    }

    /// True if a message at `now_us` may be written.
    pub fn allow(&mut self, now_us: u64) -> bool {
        let second = now_us / 1_000_000;
        if second != self.second {
            self.second = second;
            self.used = 0;
        }
        self.used = self.used.saturating_add(1);
        self.used <= self.per_second
    }
}

/// Make untrusted protocol text safe to log: printable ASCII is kept, other
/// bytes become `\ooo` octal escapes, like vis(3).
pub struct Vis<'a>(pub &'a [u8]);

impl fmt::Display for Vis<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in self.0 {
            if (0x20..0x7f).contains(&b) && b != b'\\' {
                fmt::Write::write_char(f, b as char)?;
            } else {
                write!(f, "\\{b:03o}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_per_second() {
        let mut r = RateLimit::new(2);
        assert!(r.allow(5_000_000) && r.allow(5_100_000));
        assert!(!r.allow(5_900_000));
        assert!(r.allow(6_000_000));
    }

    #[test]
    fn vis_escapes_controls() {
        assert_eq!(Vis(b"227 ok\x1b[2J\\").to_string(), "227 ok\\033[2J\\134");
    }

    #[test]
    fn levels_order() {
        assert!(Level::Err < Level::Debug);
        assert_eq!(Level::Notice as u8, DEFAULT_LEVEL);
    }
}

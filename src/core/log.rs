//! Logging: stderr in the foreground (`-d`), syslog (LOG_DAEMON, with the
//! pid) otherwise, filtered by the `-D` level.
//!
//! Levels are syslog's. Callers check [`enabled`] (one atomic load) before
//! formatting anything, so a filtered message costs nothing on the hot path.
//! A missing syslog daemon is not an error: messages are then dropped.

use std::fmt;
use std::io::Write;
use std::sync::Mutex;
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

enum Sink {
    Stderr,
    Syslog(Option<syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>>),
}

static SINK: Mutex<Sink> = Mutex::new(Sink::Stderr);

/// Set the `-D` level (0-7).
pub fn set_level(level: u8) {
    LEVEL.store(level.min(7), Ordering::Relaxed);
}

/// True when a message at `level` would be written.
#[inline]
pub fn enabled(level: Level) -> bool {
    level as u8 <= LEVEL.load(Ordering::Relaxed)
}

/// Write to stderr from now on.
pub fn to_stderr() {
    *SINK.lock().unwrap_or_else(|e| e.into_inner()) = Sink::Stderr;
}

/// True while messages go to stderr.
pub fn is_stderr() -> bool {
    matches!(
        *SINK.lock().unwrap_or_else(|e| e.into_inner()),
        Sink::Stderr
    )
}

/// Write to syslog from now on. Connects now, so it works after chroot.
pub fn to_syslog() {
    let formatter = syslog::Formatter3164 {
        facility: syslog::Facility::LOG_DAEMON,
        hostname: None,
        process: "ftpsesame".into(),
        pid: std::process::id(),
    };
    let logger = syslog::unix(formatter).ok();
    *SINK.lock().unwrap_or_else(|e| e.into_inner()) = Sink::Syslog(logger);
}

/// Write one message if `level` passes the filter.
pub fn log(level: Level, args: fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    let mut sink = SINK.lock().unwrap_or_else(|e| e.into_inner());
    match &mut *sink {
        Sink::Stderr => {
            let mut err = std::io::stderr().lock();
            let _ = err.write_fmt(args);
            let _ = err.write_all(b"\n");
        }
        Sink::Syslog(Some(logger)) => {
            let msg = args.to_string();
            let _ = match level {
                Level::Emerg => logger.emerg(msg),
                Level::Alert => logger.alert(msg),
                Level::Crit => logger.crit(msg),
                Level::Err => logger.err(msg),
                Level::Warning => logger.warning(msg),
                Level::Notice => logger.notice(msg),
                Level::Info => logger.info(msg),
                Level::Debug => logger.debug(msg),
            };
        }
        Sink::Syslog(None) => {}
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

//! Log sinks: where the core's log lines go. stderr in the foreground
//! (`-d`), syslog otherwise: facility LOG_DAEMON, tagged `ftpsesame[pid]`,
//! one datagram per line to the local socket (`/dev/log`, else
//! `/var/run/syslog` or `/var/run/log`), written by the `syslog` crate in
//! RFC 3164 form with a UTC time stamp (the crate never uses local time).
//!
//! The socket is connected before the daemon changes root to `/var/empty`.
//! A missing syslog daemon is not an error: lines are then dropped and
//! counted. A send fails once syslogd has been restarted (the connected
//! socket is dead); the sink then connects again by path at once, after
//! that at most once a second, and its first line on a new connection says
//! how many lines were lost. After the chroot the path is looked up inside
//! `/var/empty`, so lines written after a syslogd restart are lost until
//! ftpsesame restarts, unless syslogd also listens on `/var/empty/dev/log`
//! (FreeBSD `syslogd -l`, OpenBSD `syslogd -a`, rsyslog's imuxsock
//! `Socket`). glibc's syslog(3) opened before a chroot loses them the same
//! way. A `/dev/log` that systemd holds for journald outlives journald's
//! restarts, and macOS (no chroot) reconnects as is.
//!
//! Only lines that passed the `-D` filter get here; the lock and the
//! formatting into a `String` are paid per written line, never per packet.

use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::core::log::{self as core_log, Level};

type Logger = syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>;

/// How often a dead or missing syslog connection is tried again.
const RETRY: Duration = Duration::from_secs(1);

enum Sink {
    Stderr,
    Syslog(Syslog),
}

static SINK: Mutex<Sink> = Mutex::new(Sink::Stderr);

fn sink() -> MutexGuard<'static, Sink> {
    SINK.lock().unwrap_or_else(|e| e.into_inner())
}

fn install(new: Sink) {
    *sink() = new;
    core_log::set_sink(write);
}

/// Write to stderr from now on.
pub fn to_stderr() {
    install(Sink::Stderr);
}

/// Write to syslog from now on. Connects now, so it works after chroot.
pub fn to_syslog() {
    install(Sink::Syslog(Syslog::connect(None, Instant::now())));
}

/// True while messages go to stderr.
pub fn is_stderr() -> bool {
    matches!(*sink(), Sink::Stderr)
}

/// The core's sink: called only for lines that passed the `-D` filter.
fn write(level: Level, args: fmt::Arguments<'_>) {
    match &mut *sink() {
        Sink::Stderr => {
            let mut err = std::io::stderr().lock();
            let _ = err.write_fmt(args);
            let _ = err.write_all(b"\n");
        }
        Sink::Syslog(syslog) => syslog.send(level, args, Instant::now()),
    }
}

/// A connection to the local syslog daemon that is made again when a
/// send fails, while its path can be reached.
struct Syslog {
    /// None: the crate's standard paths.
    path: Option<PathBuf>,
    logger: Option<Logger>,
    /// Lines dropped since the last successful send.
    lost: u64,
    /// No reconnection before this instant.
    retry_at: Instant,
}

impl Syslog {
    fn connect(path: Option<PathBuf>, now: Instant) -> Self {
        let mut s = Syslog {
            path,
            logger: None,
            lost: 0,
            retry_at: now + RETRY,
        };
        s.logger = s.open();
        s
    }

    fn open(&self) -> Option<Logger> {
        let formatter = syslog::Formatter3164 {
            facility: syslog::Facility::LOG_DAEMON,
            hostname: None,
            process: "ftpsesame".into(),
            pid: std::process::id(),
        };
        match &self.path {
            None => syslog::unix(formatter),
            Some(path) => syslog::unix_custom(formatter, path),
        }
        .ok()
    }

    fn send(&mut self, level: Level, args: fmt::Arguments<'_>, now: Instant) {
        let msg = args.to_string();
        if let Some(logger) = &mut self.logger {
            if emit(logger, level, &msg).is_ok() {
                return;
            }
            // The daemon's end of the socket is gone: look for a new one now.
            self.logger = None;
            self.retry_at = now;
        }
        if now < self.retry_at {
            self.lost += 1;
            return;
        }
        self.retry_at = now + RETRY;
        self.logger = self.open();
        let Some(logger) = &mut self.logger else {
            self.lost += 1;
            return;
        };
        if self.lost > 0 {
            let note = format!(
                "syslog: {} log messages lost while syslogd was unreachable",
                self.lost
            );
            if emit(logger, Level::Warning, &note).is_ok() {
                self.lost = 0;
            }
        }
        if emit(logger, level, &msg).is_err() {
            self.logger = None;
            self.lost += 1;
        }
    }
}

fn emit(logger: &mut Logger, level: Level, msg: &str) -> syslog::Result<()> {
    match level {
        Level::Emerg => logger.emerg(msg),
        Level::Alert => logger.alert(msg),
        Level::Crit => logger.crit(msg),
        Level::Err => logger.err(msg),
        Level::Warning => logger.warning(msg),
        Level::Notice => logger.notice(msg),
        Level::Info => logger.info(msg),
        Level::Debug => logger.debug(msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;
    use std::path::Path;

    /// A stand-in for syslogd: a datagram socket at `path`.
    fn syslogd(path: &Path) -> UnixDatagram {
        let _ = std::fs::remove_file(path);
        let s = UnixDatagram::bind(path).expect("bind");
        s.set_nonblocking(true).expect("nonblocking");
        s
    }

    fn received(server: &UnixDatagram) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok(n) = server.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }

    /// A socket path in a directory of the test's own: tests run in
    /// parallel, and one removing a shared directory while another binds
    /// in it would fail the other.
    fn socket_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ftpsesame-log-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir.join("log")
    }

    fn cleanup(path: &Path) {
        let _ = std::fs::remove_file(path);
        let _ = path.parent().map(std::fs::remove_dir);
    }

    #[test]
    fn lines_carry_facility_level_and_tag() {
        let path = socket_path("tag");
        let server = syslogd(&path);
        let mut log = Syslog::connect(Some(path.clone()), Instant::now());
        log.send(
            Level::Notice,
            format_args!("#3 session init"),
            Instant::now(),
        );
        let got = received(&server);
        assert_eq!(got.len(), 1, "{got:?}");
        // LOG_DAEMON (3 << 3) | LOG_NOTICE (5) = 29.
        assert!(got[0].starts_with("<29>"), "{}", got[0]);
        let tag = format!(" ftpsesame[{}]: #3 session init", std::process::id());
        assert!(got[0].ends_with(&tag), "{}", got[0]);
        cleanup(&path);
    }

    #[test]
    fn reconnects_at_once_when_syslogd_restarted() {
        let path = socket_path("restart");
        let old = syslogd(&path);
        let t0 = Instant::now();
        let mut log = Syslog::connect(Some(path.clone()), t0);
        log.send(Level::Info, format_args!("before"), t0);
        assert_eq!(received(&old).len(), 1);
        drop(old);
        let new = syslogd(&path);
        log.send(Level::Info, format_args!("after"), t0);
        let got = received(&new);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].ends_with(": after"), "{}", got[0]);
        assert_eq!(log.lost, 0);
        cleanup(&path);
    }

    #[test]
    fn counts_lines_lost_while_syslogd_is_away() {
        let path = socket_path("away");
        let old = syslogd(&path);
        let t0 = Instant::now();
        let mut log = Syslog::connect(Some(path.clone()), t0);
        drop(old);
        std::fs::remove_file(&path).expect("unlink");
        log.send(Level::Info, format_args!("one"), t0);
        let new = syslogd(&path);
        log.send(Level::Info, format_args!("two"), t0);
        assert!(received(&new).is_empty(), "retried within {RETRY:?}");
        assert_eq!(log.lost, 2);
        log.send(Level::Err, format_args!("three"), t0 + RETRY);
        let got = received(&new);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].starts_with("<28>"), "{}", got[0]);
        assert!(
            got[0].ends_with(": syslog: 2 log messages lost while syslogd was unreachable"),
            "{}",
            got[0]
        );
        assert!(got[1].starts_with("<27>") && got[1].ends_with(": three"));
        assert_eq!(log.lost, 0);
        cleanup(&path);
    }

    #[test]
    fn no_syslogd_is_not_an_error() {
        let path = socket_path("none");
        let _ = std::fs::remove_file(&path);
        let t0 = Instant::now();
        let mut log = Syslog::connect(Some(path), t0);
        assert!(log.logger.is_none());
        log.send(Level::Notice, format_args!("nobody listens"), t0 + RETRY);
        assert_eq!(log.lost, 1);
        cleanup(&log.path.clone().expect("path"));
    }
}

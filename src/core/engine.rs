//! The pipeline: one captured frame in, firewall changes out.
//!
//! `Engine::packet` runs decode -> session -> reassembly -> ftp -> policy
//! -> firewall for one frame; `Engine::tick` does the periodic work
//! (half-open and rule expiry, state-table re-checks). Time is whatever
//! the caller says it is (microseconds): the capture's timestamps in
//! offline mode, so a replay is deterministic.
//!
//! The per-packet path allocates nothing: decoding borrows the frame, the
//! session lives in the table, complete lines are slices of the segment,
//! and rules are fixed-size values. Logging below LOG_INFO is never
//! formatted on it, and the commit happens before the `allowing` line is
//! written, because the data connection is racing that commit.

use std::net::SocketAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::core::decode::{self, Flags, Link, Segment};
use crate::core::ftp::{CommandEvent, Negotiation, ReplyEvent};
use crate::core::log::{self, Level, RateLimit, Vis};
use crate::core::policy::{self, Denied};
use crate::core::session::{Delivery, Key, Phase, Session, Stream, Table};
use crate::core::stats::Stats;
use crate::firewall::{Firewall, State};
use crate::logmsg;

const SECOND: u64 = 1_000_000;

/// Timers, in microseconds.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// A session that has not completed its handshake.
    pub half_open: u64,
    /// Rules of one negotiation.
    pub rule: u64,
    /// A session with no packets at all (its FIN was lost).
    pub idle: u64,
    /// How often the table is purged.
    pub purge_every: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            half_open: 30 * SECOND,
            rule: 180 * SECOND,
            idle: 86_400 * SECOND,
            purge_every: 60 * SECOND,
        }
    }
}

/// Engine settings.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub link: Link,
    pub max_sessions: usize,
    pub timeouts: Timeouts,
    /// Live capture: timestamps are wall-clock, so commit latency can be
    /// measured from the packet's capture time. Offline, it is measured
    /// from when the engine got the packet.
    pub live: bool,
    /// Re-check established sessions against the state table at purge.
    pub recheck_state: bool,
}

/// The whole platform-independent daemon.
pub struct Engine {
    cfg: Config,
    fw: Box<dyn Firewall>,
    table: Table,
    next_id: u32,
    next_purge: u64,
    /// Log lines that packets can trigger by the thousand.
    noisy: RateLimit,
    pub stats: Stats,
}

/// Wall-clock time in microseconds, the unit of capture timestamps.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl Engine {
    pub fn new(cfg: Config, fw: Box<dyn Firewall>) -> Self {
        Engine {
            table: Table::new(cfg.max_sessions),
            cfg,
            fw,
            next_id: 1,
            next_purge: 0,
            noisy: RateLimit::new(10),
            stats: Stats::default(),
        }
    }

    /// Number of live sessions.
    pub fn sessions(&self) -> usize {
        self.table.len()
    }

    /// One captured frame, taken at `ts` microseconds.
    pub fn packet(&mut self, ts: u64, frame: &[u8]) {
        self.stats.packets += 1;
        if ts >= self.next_purge {
            self.tick(ts);
        }
        let seg = match decode::decode(self.cfg.link, frame) {
            Ok(seg) => seg,
            Err(d) => {
                self.stats.drops[d as usize] += 1;
                if log::enabled(Level::Warning) && self.noisy.allow(ts) {
                    log::log(Level::Warning, format_args!("drop: {}", d.reason()));
                }
                return;
            }
        };
        let src = SocketAddr::new(seg.src, seg.sport);
        let dst = SocketAddr::new(seg.dst, seg.dport);
        let key = Key::new(src, dst);
        let f = seg.flags;
        if f.has(Flags::SYN) && !f.has(Flags::ACK) {
            self.syn(ts, key, src, dst, seg.seq);
            return;
        }
        let Some(sess) = self.table.get_mut(&key) else {
            return;
        };
        sess.last_seen = ts;
        let from_client = src == sess.client;
        if f.has(Flags::SYN) {
            if !from_client {
                self.syn_ack(key, &seg);
            }
            return;
        }
        if let Phase::SynSent { .. } = sess.phase {
            return; // nothing is trusted before the server answered
        }
        let ctx = Ctx {
            fw: &mut *self.fw,
            stats: &mut self.stats,
            cfg: &self.cfg,
            ts,
        };
        if ctx.segment(sess, from_client, &seg) {
            let sess = self.table.remove(&key).expect("session present");
            self.finish(sess);
        }
    }

    fn syn(&mut self, ts: u64, key: Key, client: SocketAddr, server: SocketAddr, isn: u32) {
        if let Some(s) = self.table.get_mut(&key) {
            // A retransmitted SYN; never let a SYN reset a live session.
            if matches!(s.phase, Phase::SynSent { .. }) && s.client == client {
                s.phase = Phase::SynSent { client_isn: isn };
            }
            return;
        }
        let id = self.next_id;
        match self
            .table
            .insert(key, Session::new(id, client, server, isn, ts))
        {
            Ok(evicted) => {
                self.next_id = self.next_id.wrapping_add(1).max(1);
                self.stats.sessions_total += 1;
                logmsg!(
                    Level::Info,
                    "#{id} session init: client {client}, server {server}"
                );
                if let Some(mut old) = evicted {
                    self.stats.evicted += 1;
                    logmsg!(Level::Info, "#{} evicted: handshake not completed", old.id);
                    clear_rules(&mut *self.fw, &mut old);
                }
            }
            Err(_) => {
                self.stats.refused += 1;
                if log::enabled(Level::Warning) && self.noisy.allow(ts) {
                    let max = self.cfg.max_sessions;
                    log::log(
                        Level::Warning,
                        format_args!("session table full ({max}), refusing {client}"),
                    );
                }
            }
        }
    }

    fn syn_ack(&mut self, key: Key, seg: &Segment<'_>) {
        let Some(sess) = self.table.get_mut(&key) else {
            return;
        };
        let Phase::SynSent { client_isn } = sess.phase else {
            return;
        };
        if seg.ack != client_isn.wrapping_add(1) {
            return; // does not answer this SYN
        }
        sess.c2s = Stream::new(client_isn.wrapping_add(1));
        sess.s2c = Stream::new(seg.seq.wrapping_add(1));
        let (id, client, server) = (sess.id, sess.client, sess.server);
        match self.fw.lookup(client, server) {
            Ok(State::Tracked { real_client }) => {
                sess.real_client = real_client;
                sess.phase = Phase::Verified;
            }
            Ok(State::NotTracked) => {
                logmsg!(Level::Notice, "#{id} session not in statetable");
                self.stats.untracked += 1;
                self.table.remove(&key);
            }
            Err(e) => {
                logmsg!(Level::Err, "#{id} state lookup failed: {e}");
                self.stats.untracked += 1;
                self.table.remove(&key);
            }
        }
    }

    fn finish(&mut self, mut sess: Session) {
        logmsg!(Level::Info, "#{} session finish", sess.id);
        clear_rules(&mut *self.fw, &mut sess);
    }

    /// Periodic work; call at least every few seconds (the engine also calls
    /// it from `packet` when capture time passes the next purge).
    pub fn tick(&mut self, now: u64) {
        if now < self.next_purge {
            return;
        }
        self.next_purge = now + self.cfg.timeouts.purge_every;
        let t = self.cfg.timeouts;
        // Expired rules first: the session lives on without them.
        for sess in self.table.iter_mut() {
            if sess.current.is_some() && sess.rules_expire <= now {
                clear_rules(&mut *self.fw, sess);
                logmsg!(Level::Debug, "#{} rules expired", sess.id);
            }
        }
        let recheck = self.cfg.recheck_state;
        let fw = &mut *self.fw;
        let mut gone = Vec::new();
        self.table.drain_where(
            |s| {
                if s.half_open() {
                    return now.saturating_sub(s.created) >= t.half_open;
                }
                if now.saturating_sub(s.last_seen) >= t.idle {
                    return true;
                }
                recheck && matches!(fw.lookup(s.client, s.server), Ok(State::NotTracked))
            },
            |s| gone.push(s),
        );
        for s in gone {
            self.finish(s);
        }
        self.stats.sessions_active = self.table.len() as u64;
    }

    /// Remove every rule this process committed (at exit).
    pub fn shutdown(&mut self) {
        let sessions: Vec<Session> = self.table.drain().collect();
        for mut s in sessions {
            clear_rules(&mut *self.fw, &mut s);
        }
        if let Err(e) = self.fw.flush() {
            logmsg!(Level::Err, "flushing rules failed: {e}");
        }
        self.stats.sessions_active = 0;
    }

    /// The `stats:` line.
    pub fn stats_line(&mut self) -> String {
        self.stats.sessions_active = self.table.len() as u64;
        self.stats.to_string()
    }
}

/// Take the session's rules out of the firewall. They are forgotten even
/// if that fails: nftables elements expire by their own timeout and pf's
/// anchors are flushed at exit, while retrying forever would help nobody.
fn clear_rules(fw: &mut dyn Firewall, sess: &mut Session) {
    let old = sess.rules();
    sess.current = None;
    if old.is_empty() {
        return;
    }
    if let Err(e) = fw.replace(sess.id, old.as_slice(), &[]) {
        logmsg!(Level::Err, "#{} removing rules failed: {e}", sess.id);
    }
}

/// What one established-session segment needs besides the session.
struct Ctx<'a> {
    fw: &'a mut dyn Firewall,
    stats: &'a mut Stats,
    cfg: &'a Config,
    ts: u64,
}

impl Ctx<'_> {
    /// Handle one segment of a verified session; true when it ends it.
    fn segment(mut self, sess: &mut Session, from_client: bool, seg: &Segment<'_>) -> bool {
        let f = seg.flags;
        let (this, other) = if from_client {
            (&mut sess.c2s, &mut sess.s2c)
        } else {
            (&mut sess.s2c, &mut sess.c2s)
        };
        if f.has(Flags::RST) {
            // RFC 5961 spirit: only a reset at the expected point counts.
            return seg.seq == this.next;
        }
        if f.has(Flags::ACK) && this.plausible(seg.seq, seg.payload.len()) {
            other.peer_acked(seg.ack);
            if from_client && sess.phase == Phase::Verified && seg.ack == other.next {
                sess.phase = Phase::Established;
            }
        }
        if sess.phase != Phase::Established {
            return false;
        }
        let this = if from_client {
            &mut sess.c2s
        } else {
            &mut sess.s2c
        };
        let data = match this.deliver(seg.seq, seg.payload) {
            Delivery::Data(d) | Delivery::AfterGap(d) => d,
            Delivery::Nothing => &[][..],
            Delivery::OutOfWindow => {
                self.stats.out_of_window += 1;
                logmsg!(Level::Debug, "#{} out-of-window segment ignored", sess.id);
                return false;
            }
        };
        // FIN counts once the stream reached it.
        let fin = f.has(Flags::FIN) && this.ends_here(seg.seq, seg.payload.len());
        if !data.is_empty() {
            self.lines(sess, from_client, data);
        }
        fin
    }

    fn lines(&mut self, sess: &mut Session, from_client: bool, data: &[u8]) {
        use crate::core::ftp::Command;
        let id = sess.id;
        let stats = &mut *self.stats;
        // The last negotiation in this segment: each one replaces the
        // session's rules, so only the last one would survive anyway.
        let mut found: Option<(Negotiation, LineCopy)> = None;
        let mut refused: Option<u16> = None;
        let Session { c2s, s2c, ftp, .. } = sess;
        let buf = if from_client {
            &mut c2s.lines
        } else {
            &mut s2c.lines
        };
        let long = buf.push(data, |line| {
            if from_client {
                logmsg!(Level::Debug, "#{id} command: {}", Vis(line));
                match ftp.client_line(line) {
                    CommandEvent::Queued(Command::Malformed) => {
                        logmsg!(Level::Warning, "#{id} parse_port failed: {}", Vis(line));
                    }
                    CommandEvent::Queued(Command::Port(port)) => {
                        logmsg!(Level::Info, "#{id} active: {}", Vis(line));
                        stats.negotiations += 1;
                        found = Some((Negotiation::Active { port, v6: None }, LineCopy::new(line)));
                    }
                    CommandEvent::Queued(Command::Eprt { port, v6 }) => {
                        logmsg!(Level::Info, "#{id} active: {}", Vis(line));
                        stats.negotiations += 1;
                        found = Some((
                            Negotiation::Active { port, v6: Some(v6) },
                            LineCopy::new(line),
                        ));
                    }
                    CommandEvent::Overflow => stats.pending_overflow += 1,
                    _ => {}
                }
                return;
            }
            logmsg!(Level::Debug, "#{id} reply: {}", Vis(line));
            match ftp.server_line(line) {
                // Active mode was opened at the command already (below).
                ReplyEvent::Negotiated(Negotiation::Active { .. }) => {}
                ReplyEvent::Negotiated(n) => {
                    stats.negotiations += 1;
                    found = Some((n, LineCopy::new(line)));
                }
                ReplyEvent::ActiveRefused { port } => refused = Some(port),
                ReplyEvent::ParseFailed => {
                    logmsg!(Level::Warning, "#{id} parse_port failed: {}", Vis(line))
                }
                ReplyEvent::Encrypted => logmsg!(
                    Level::Notice,
                    "#{id} control connection encrypted, not followed"
                ),
                ReplyEvent::None => {}
            }
        });
        self.stats.long_lines += u64::from(long);
        if let Some(port) = refused {
            self.active_refused(sess, port);
        }
        if let Some((n, line)) = found {
            self.negotiate(sess, n, &line);
        }
    }

    /// The server answered a PORT/EPRT with anything but 200: close the
    /// hole opened for it, if it is still the session's current one.
    fn active_refused(&mut self, sess: &mut Session, port: u16) {
        if !matches!(sess.current, Some(Negotiation::Active { port: p, .. }) if p == port) {
            return;
        }
        clear_rules(self.fw, sess);
        logmsg!(
            Level::Info,
            "#{} active: refused by the server, port {port} closed",
            sess.id
        );
    }

    fn negotiate(&mut self, sess: &mut Session, neg: Negotiation, reply: &LineCopy) {
        // Offline, latency is measured from here: the capture clock is not ours.
        let started = Instant::now();
        let id = sess.id;
        let new = match policy::rules(neg, sess.client.ip(), sess.server.ip(), sess.real_client) {
            Ok(set) => set,
            Err(Denied::LowPort(p)) => {
                self.stats.denied += 1;
                logmsg!(Level::Notice, "#{id} denying low port {p} request");
                return;
            }
            Err(Denied::WrongFamily) => {
                self.stats.denied += 1;
                logmsg!(
                    Level::Notice,
                    "#{id} denying EPRT for another address family"
                );
                return;
            }
        };
        let old = sess.rules();
        match self.fw.replace(id, old.as_slice(), new.as_slice()) {
            Ok(()) => {
                let ns = if self.cfg.live {
                    now_us().saturating_sub(self.ts) * 1000
                } else {
                    started.elapsed().as_nanos() as u64
                };
                self.stats.latency.record(ns);
                self.stats.committed += 1;
                sess.current = Some(neg);
                sess.rules_expire = self.ts + self.cfg.timeouts.rule;
                if let Negotiation::Passive { .. } = neg {
                    logmsg!(Level::Info, "#{id} passive: {}", Vis(reply.as_bytes()));
                }
                for (i, r) in new.as_slice().iter().enumerate() {
                    if i == 0 {
                        logmsg!(
                            Level::Info,
                            "#{id} allowing {} to {} port {}",
                            r.src,
                            r.dst,
                            r.port
                        );
                    } else {
                        logmsg!(
                            Level::Info,
                            "#{id} passive/nat: also allowing {} to {} port {}",
                            r.src,
                            r.dst,
                            r.port
                        );
                    }
                }
            }
            Err(e) => {
                self.stats.failed += 1;
                logmsg!(Level::Err, "#{id} commit failed: {e}");
            }
        }
    }
}

/// A reply line kept on the stack so it can be logged after the commit.
#[derive(Clone, Copy)]
struct LineCopy {
    buf: [u8; 128],
    len: u8,
}

impl LineCopy {
    fn new(line: &[u8]) -> Self {
        let mut c = LineCopy {
            buf: [0; 128],
            len: line.len().min(128) as u8,
        };
        c.buf[..c.len as usize].copy_from_slice(&line[..c.len as usize]);
        c
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }
}

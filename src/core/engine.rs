//! The pipeline: one captured frame in, firewall changes out.
//!
//! `Engine::packet` decodes a frame, routes the segment to its session
//! (a new one from a SYN to a control port, or, for a connection met
//! mid-stream, a pickup from a segment with data on a control port) and
//! carries out what the session decided
//! ([`Decisions`](crate::core::session::Decisions)): it alone asks the
//! state table, runs the policy, commits or removes rules, counts and
//! logs. `Engine::tick` does the periodic work (half-open and rule
//! expiry, state-table re-checks). Time is whatever the caller says it is
//! (microseconds): the capture's timestamps in offline mode, so a replay
//! is deterministic.
//!
//! The per-packet path allocates nothing: decoding borrows the frame, the
//! session lives in the table, complete lines are slices of the segment,
//! and rules are fixed-size values. Logging below LOG_INFO is never
//! formatted on it, and the commit happens before the `allowing` line is
//! written, because the data connection is racing that commit.

use std::net::SocketAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::core::decode::{self, Control, Flags, Link, Segment};
use crate::core::firewall::{Firewall, State};
use crate::core::ftp::Negotiation;
use crate::core::log::{self, Level, RateLimit, Vis};
use crate::core::policy::{self, Denied};
use crate::core::session::{Decision, Key, Note, Open, Reject, Session, Table, Withdrawal};
use crate::core::stats::Stats;
use crate::logmsg;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

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
    /// Ports FTP servers listen on: sessions start only from a SYN to one.
    pub control_ports: ControlPorts,
}

/// The control ports: the ones the capture expression names with `port N`
/// (also `tcp port N`, `dst port N`), else 21. At most eight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlPorts {
    ports: [u16; 8],
    len: u8,
}

impl Default for ControlPorts {
    fn default() -> Self {
        ControlPorts {
            ports: [21, 0, 0, 0, 0, 0, 0, 0],
            len: 1,
        }
    }
}

impl ControlPorts {
    /// The ports a pcap expression names as `port N` or `dst port N`
    /// (`ftp` is 21; `src port N` names the client side and `not port N`
    /// excludes, so neither counts); 21 when it names none.
    pub fn from_expression(expr: &str) -> Self {
        let words: Vec<&str> = expr
            .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
            .filter(|w| !w.is_empty())
            .collect();
        let mut ports = ControlPorts {
            ports: [0; 8],
            len: 0,
        };
        for (i, w) in words.iter().enumerate() {
            if *w != "port" {
                continue;
            }
            let before = |k: usize| i.checked_sub(k).map(|j| words[j]);
            let negated = |w: Option<&str>| matches!(w, Some("not" | "!"));
            if before(1) == Some("src")
                || negated(before(1))
                || (matches!(before(1), Some("tcp" | "dst")) && negated(before(2)))
            {
                continue;
            }
            let number = |n: &str| match n {
                "ftp" => Some(21),
                n => n.parse::<u16>().ok(),
            };
            if let Some(p) = words.get(i + 1).and_then(|n| number(n))
                && p != 0
                && !ports.contains(p)
                && (ports.len as usize) < ports.ports.len()
            {
                ports.ports[ports.len as usize] = p;
                ports.len += 1;
            }
        }
        if ports.len == 0 {
            return ControlPorts::default();
        }
        ports
    }

    pub fn contains(&self, port: u16) -> bool {
        self.ports[..self.len as usize].contains(&port)
    }
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
    /// The last passive reply read, for its log line after the commit.
    passive: LineCopy,
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
            passive: LineCopy {
                buf: [0; 128],
                len: 0,
            },
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
        let ports = &self.cfg.control_ports;
        // A client SYN to a control port, from a port that is not one.
        let client_syn =
            seg.control == Control::Syn && ports.contains(seg.dport) && !ports.contains(seg.sport);
        if client_syn && self.table.get_mut(&key).is_some_and(|s| s.picking_up()) {
            // A new connection on the endpoints of an unsynced pickup.
            self.table.remove(&key);
        }
        let sess = match self.table.get_mut(&key) {
            Some(sess) => sess,
            None if client_syn => return self.new_session(ts, key, src, dst, Some(&seg)),
            None => {
                let Some((client, server)) = mid_stream(ports, &seg, src, dst) else {
                    return;
                };
                self.new_session(ts, key, client, server, None);
                let Some(sess) = self.table.get_mut(&key) else {
                    return; // the table is full
                };
                sess
            }
        };
        let id = sess.id;
        let (stats, passive) = (&mut self.stats, &mut self.passive);
        let ds = sess.on_segment(&seg, ts, &mut |n| note(stats, passive, id, n));
        if ds.is_empty() {
            return;
        }
        let mut end = false;
        for d in ds.iter() {
            match d {
                Decision::Ignored(r) => ignored(&mut self.stats, id, r),
                Decision::Verify => {
                    let picked = sess.picking_up();
                    if !verify(&mut *self.fw, &mut self.stats, sess, &mut self.noisy, ts) {
                        end = true;
                        break;
                    }
                    if picked {
                        self.stats.picked_up += 1;
                        logmsg!(
                            Level::Info,
                            "#{id} session picked up: client {}, server {}",
                            sess.client,
                            sess.server
                        );
                    }
                }
                Decision::Withdraw { port, why } => withdraw(&mut *self.fw, sess, port, why),
                Decision::Reset => {
                    if !sess.rules().is_empty() {
                        logmsg!(Level::Notice, "#{id} pickup contested: its holes removed");
                    }
                    clear_rules(&mut *self.fw, sess);
                }
                Decision::Open(open) => {
                    let cfg = &self.cfg;
                    let line = &self.passive;
                    commit(&mut *self.fw, &mut self.stats, cfg, ts, sess, open, line)
                }
                Decision::End => {
                    let sess = self.table.remove(&key).expect("session present");
                    self.finish(sess);
                    return;
                }
            }
        }
        if end {
            self.table.remove(&key);
        }
    }

    fn new_session(
        &mut self,
        ts: u64,
        key: Key,
        client: SocketAddr,
        server: SocketAddr,
        syn: Option<&Segment<'_>>,
    ) {
        let id = self.next_id;
        let sess = match syn {
            Some(syn) => Session::new(id, client, server, syn, ts),
            None => Session::mid_stream(id, client, server, ts),
        };
        match self.table.insert(key, sess) {
            Ok(evicted) => {
                self.next_id = self.next_id.wrapping_add(1).max(1);
                if syn.is_some() {
                    self.stats.sessions_total += 1;
                    logmsg!(
                        Level::Info,
                        "#{id} session init: client {client}, server {server}"
                    );
                } else {
                    logmsg!(
                        Level::Debug,
                        "#{id} picking up: client {client}, server {server}"
                    );
                }
                if let Some(mut old) = evicted {
                    self.stats.evicted += 1;
                    if old.picking_up() {
                        logmsg!(Level::Debug, "#{} evicted: not picked up", old.id);
                    } else {
                        logmsg!(Level::Info, "#{} evicted: handshake not completed", old.id);
                    }
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

    fn finish(&mut self, mut sess: Session) {
        if sess.picking_up() {
            logmsg!(Level::Debug, "#{} not picked up", sess.id);
        } else {
            logmsg!(Level::Info, "#{} session finish", sess.id);
        }
        clear_rules(&mut *self.fw, &mut sess);
    }

    /// Periodic work; call at least every few seconds (the engine also calls
    /// it from `packet` when capture time passes the next purge).
    pub fn tick(&mut self, now: u64) {
        if now < self.next_purge {
            return;
        }
        self.next_purge = now + self.cfg.timeouts.purge_every;
        self.fw.expire(now);
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

    /// The `stats:` line. The segments sessions did not take are logged
    /// by reason on a `rejected:` line just before it.
    pub fn stats_line(&mut self) -> String {
        self.stats.sessions_active = self.table.len() as u64;
        logmsg!(Level::Notice, "rejected: {}", Rejects(&self.stats.rejects));
        self.stats.to_string()
    }
}

/// The (client, server) of a segment that may start a pickup: it carries
/// bytes and an acknowledgement, no SYN, FIN or RST, and exactly one of
/// its ends is on a control port (that end is the server). Bare ACKs do
/// not start one: the last ACK of every closed connection would, and an
/// idle connection's next command carries bytes anyway.
fn mid_stream(
    ports: &ControlPorts,
    seg: &Segment<'_>,
    src: SocketAddr,
    dst: SocketAddr,
) -> Option<(SocketAddr, SocketAddr)> {
    if seg.control != Control::None || !seg.flags.has(Flags::ACK) || seg.payload.is_empty() {
        return None;
    }
    match (ports.contains(seg.sport), ports.contains(seg.dport)) {
        (true, false) => Some((dst, src)),
        (false, true) => Some((src, dst)),
        _ => None,
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

/// A line kept so it can be logged after the commit.
struct LineCopy {
    buf: [u8; 128],
    len: u8,
}

impl LineCopy {
    fn set(&mut self, line: &[u8]) {
        let n = line.len().min(self.buf.len());
        self.buf[..n].copy_from_slice(&line[..n]);
        self.len = n as u8;
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

/// Count and log what a session read; keep a passive reply for the log
/// line that follows its commit.
fn note(stats: &mut Stats, passive: &mut LineCopy, id: u32, n: Note<'_>) {
    match n {
        Note::Command(line) => logmsg!(Level::Debug, "#{id} command: {}", Vis(line)),
        Note::Reply(line) => logmsg!(Level::Debug, "#{id} reply: {}", Vis(line)),
        Note::Active(line) => {
            stats.negotiations += 1;
            logmsg!(Level::Info, "#{id} active: {}", Vis(line));
        }
        Note::Passive(line) => {
            stats.negotiations += 1;
            passive.set(line);
        }
        Note::Malformed(line) => {
            logmsg!(Level::Warning, "#{id} parse_port failed: {}", Vis(line))
        }
        Note::Encrypted => logmsg!(
            Level::Notice,
            "#{id} control connection encrypted, not followed"
        ),
        Note::Overflow => stats.pending_overflow += 1,
        Note::LongLine => stats.long_lines += 1,
        Note::Contested => {
            stats.contested += 1;
            logmsg!(
                Level::Notice,
                "#{id} pickup contested: another pair of segments agrees, starting over from it"
            );
        }
    }
}

/// The per-reason reject counters, as `name N, ...`.
struct Rejects<'a>(&'a [u64; Reject::ALL.len()]);

impl std::fmt::Display for Rejects<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, r) in Reject::ALL.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{} {}", r.name(), self.0[*r as usize])?;
        }
        Ok(())
    }
}

/// A segment the session did not take.
fn ignored(stats: &mut Stats, id: u32, r: Reject) {
    stats.rejects[r as usize] += 1;
    if r.out_of_window() {
        stats.out_of_window += 1;
        logmsg!(Level::Debug, "#{id} out-of-window segment ignored");
    } else {
        logmsg!(Level::Debug, "#{id} segment ignored: {r}");
    }
}

/// Ask the state table about a session's connection; false when the
/// session must go.
fn verify(
    fw: &mut dyn Firewall,
    stats: &mut Stats,
    sess: &mut Session,
    noisy: &mut RateLimit,
    ts: u64,
) -> bool {
    let id = sess.id;
    match fw.lookup(sess.client, sess.server) {
        Ok(State::Tracked { real_client }) => {
            if sess.picking_up() && !agrees_with_table(fw, sess) {
                stats.untracked += 1;
                refuse_pickup(
                    sess,
                    "outside the state table's sequence windows",
                    noisy,
                    ts,
                );
                return false;
            }
            sess.verified(Some(real_client));
            true
        }
        Ok(State::NotTracked) => {
            stats.untracked += 1;
            if sess.picking_up() {
                refuse_pickup(sess, "not in statetable", noisy, ts);
            } else {
                logmsg!(Level::Notice, "#{id} session not in statetable");
            }
            false
        }
        Err(e) => {
            logmsg!(Level::Err, "#{id} state lookup failed: {e}");
            stats.untracked += 1;
            false
        }
    }
}

/// Log, rate-limited, that a pickup was refused and `why`: anyone can
/// send segments that agree with each other.
fn refuse_pickup(sess: &Session, why: &str, noisy: &mut RateLimit, ts: u64) {
    if log::enabled(Level::Notice) && noisy.allow(ts) {
        let (id, c, s) = (sess.id, sess.client, sess.server);
        log::log(
            Level::Notice,
            format_args!("#{id} pickup refused: {c} to {s} {why}"),
        );
    }
}

/// A pickup agrees with the state table's sequence windows, where the
/// table follows them; when it cannot be asked, the pickup stands on the
/// pair's agreement alone.
fn agrees_with_table(fw: &mut dyn Firewall, sess: &Session) -> bool {
    match fw.seqs(sess.client, sess.server) {
        Ok(Some(seqs)) => sess.agrees_with(&seqs),
        Ok(None) => true,
        Err(e) => {
            logmsg!(Level::Err, "#{} state windows lookup failed: {e}", sess.id);
            true
        }
    }
}

/// Close an active hole if it is the session's current one.
fn withdraw(fw: &mut dyn Firewall, sess: &mut Session, port: u16, why: Withdrawal) {
    if !matches!(sess.current, Some(Negotiation::Active { port: p, .. }) if p == port) {
        return;
    }
    clear_rules(fw, sess);
    let id = sess.id;
    match why {
        Withdrawal::Refused => logmsg!(
            Level::Info,
            "#{id} active: refused by the server, port {port} closed"
        ),
        Withdrawal::NoReply => logmsg!(Level::Info, "#{id} active: no reply, port {port} closed"),
    }
}

/// Run the policy on a negotiation and commit its rules, replacing the
/// session's.
fn commit(
    fw: &mut dyn Firewall,
    stats: &mut Stats,
    cfg: &Config,
    ts: u64,
    sess: &mut Session,
    open: Open,
    passive: &LineCopy,
) {
    // Offline, latency is measured from here: the capture clock is not ours.
    let started = Instant::now();
    let id = sess.id;
    let neg = open.neg;
    let new = match policy::rules(neg, sess.client.ip(), sess.server.ip(), sess.real_client) {
        Ok(set) => set,
        Err(Denied::LowPort(p)) => {
            stats.denied += 1;
            logmsg!(Level::Notice, "#{id} denying low port {p} request");
            return;
        }
        Err(Denied::WrongFamily) => {
            stats.denied += 1;
            logmsg!(
                Level::Notice,
                "#{id} denying EPRT for another address family"
            );
            return;
        }
    };
    let old = sess.rules();
    match fw.replace(id, old.as_slice(), new.as_slice()) {
        Ok(()) => {
            let ns = if cfg.live {
                now_us().saturating_sub(ts) * 1000
            } else {
                started.elapsed().as_nanos() as u64
            };
            stats.latency.record(ns);
            stats.committed += 1;
            sess.current = Some(neg);
            sess.rules_expire = ts + cfg.timeouts.rule;
            if let Negotiation::Passive { .. } = neg {
                logmsg!(Level::Info, "#{id} passive: {}", Vis(passive.as_bytes()));
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
            stats.failed += 1;
            logmsg!(Level::Err, "#{id} commit failed: {e}");
        }
    }
}

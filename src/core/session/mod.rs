//! Control-connection sessions: a pure state machine per connection.
//!
//! [`Session::on_segment`] takes one decoded segment and the capture clock
//! and returns [`Decisions`]; it never calls the firewall, counts or logs.
//! Per-line facts the engine logs or counts come out through a `Note`
//! callback as the lines are read, in stream order. The engine
//! (`core::engine`) routes segments here and carries the decisions out.
//!
//! A session starts from a client SYN to a control port (the engine
//! decides that), or mid-stream from a connection the daemon met open
//! (see [`pickup`]: it syncs on a pair of segments that agree, then
//! continues as below). From a SYN, it learns both initial sequence
//! numbers and the options of the handshake (window scaling,
//! timestamps), and asks the firewall's state table about the connection
//! ([`Decision::Verify`], answered by [`Session::verified`]). Direction comes from the session's key: a
//! segment whose source port is the server's control port comes from the
//! server; addresses are never compared (an IPv4-mapped IPv6 address is the
//! same endpoint as the IPv4 one).
//!
//! Each direction is a [`Stream`] as its receiver sees it: a segment's
//! bytes count only when the receiver would accept them (see
//! [`Stream::accept`]) and only in order; bytes ahead of a gap wait in a
//! bounded queue. The first client segment that acknowledges the server's
//! SYN completes the handshake, so a lost final ACK costs nothing.
//!
//! # Capture loss
//!
//! A capture drops packets when the box is busy, often in both directions
//! at once. Three rules recover from it, and a blind attacker (one who
//! does not know both sequence spaces) can satisfy none of them:
//!
//! 1. *Proven gap*: a segment ahead of the next expected byte is bridged
//!    when the receiver, in a segment of its own that was accepted,
//!    acknowledged every byte before it.
//! 2. *Held segment*: a segment that continues its stream but acknowledges
//!    bytes we did not see (its acknowledgement cannot be checked) is
//!    kept, not read, and read only once its receiver acknowledged all of
//!    it, from where the stream was when it arrived. Its own
//!    acknowledgement then counts too.
//! 3. *Resynchronisation*: when each direction has a segment that capture
//!    loss explains (ahead of a gap, or acknowledging bytes we did not
//!    see), the two must agree: the server's segment acknowledges the
//!    client's from its first byte up to at most its last, the client's
//!    acknowledges the server's the same way, and each starts no more than
//!    two windows (at most [`MAX_GAP`]) past what was delivered in its
//!    direction. Both directions then continue from the start of their
//!    segment (held as in rule 2), or from the other side's
//!    acknowledgement when the segment was too long to keep. Guessing one
//!    such pair needs both sequence numbers within a window: about one
//!    chance in 2^30.
//!
//! After bytes were skipped, reassembly discards up to the next end of
//! line (the first line boundary we can prove), the queue of pending
//! commands is emptied, and replies pair with commands again only once the
//! server acknowledges client bytes past the first line boundary after the
//! gap: a reply sent before the server read a command we saw answers a
//! command we did not see, and opens nothing.

mod pickup;
mod stream;
mod table;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};

pub use stream::{Candidate, MAX_GAP, OFO_BYTES, OFO_SEGS, Reject, Seg, Seq, Stream, Verdict};
pub use table::{Full, Key, Table};

use crate::core::decode::{Checksum, Control, Flags, Segment};
use crate::core::ftp::{Command, CommandEvent, Matcher, Negotiation, ReplyEvent};
use crate::core::policy::RuleSet;
use crate::core::reassembly::{Line, LineBuf};

/// Where a session is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Met mid-stream: waiting for a segment from each side that agree
    /// (see [`pickup`]).
    PickingUp,
    /// Client SYN seen.
    SynSent { client_isn: Seq, opts: SynOpts },
    /// Server SYN/ACK seen (or a pickup synced); waiting for the state
    /// table.
    Verifying,
    /// The firewall vouched for the connection; waiting for the client to
    /// acknowledge the server's SYN.
    Verified,
    /// Client acknowledged the server's SYN.
    Established,
}

/// TCP options of a SYN that matter to the receiver's rules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SynOpts {
    pub window: u16,
    pub wscale: Option<u8>,
    pub tsval: Option<u32>,
}

/// Why an active hole is withdrawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Withdrawal {
    /// The server answered the PORT/EPRT with something else than `200`.
    Refused,
    /// A new PORT/EPRT came before the reply to this one.
    NoReply,
}

/// A negotiation to open: the rules of `neg` replace the session's. The
/// line that negotiated it came just before as [`Note::Active`] or
/// [`Note::Passive`] (the engine keeps it to log after the commit), so a
/// decision stays a few bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Open {
    pub neg: Negotiation,
}

/// One thing the engine must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The segment was not taken (counted).
    Ignored(Reject),
    /// Ask the state table about the connection; answer with
    /// [`Session::verified`].
    Verify,
    /// Close the active hole for `port`, if it is the session's current one.
    Withdraw { port: u16, why: Withdrawal },
    /// Remove whatever the session has open: a contested pickup may have
    /// opened it on a spoofer's word.
    Reset,
    /// Open a negotiation (replacing the session's rules).
    Open(Open),
    /// The connection ended: remove the session and its rules.
    End,
}

/// What one segment decided, carried out in this order: ignored, verify,
/// withdraw, reset, open, end. Fixed size: a segment's many lines fold
/// into at most one of each, since each open replaces the session's rules
/// anyway.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Decisions {
    pub ignored: Option<Reject>,
    pub verify: bool,
    pub withdraw: Option<(u16, Withdrawal)>,
    pub reset: bool,
    pub open: Option<Open>,
    pub end: bool,
}

impl Decisions {
    /// True when there is nothing to do (most segments).
    pub fn is_empty(&self) -> bool {
        self.ignored.is_none()
            && !self.verify
            && self.withdraw.is_none()
            && !self.reset
            && self.open.is_none()
            && !self.end
    }

    /// The decisions, in the order they must be carried out. Lazy: only
    /// the ones present are built (an `Open` carries its line).
    pub fn iter(&self) -> impl Iterator<Item = Decision> + '_ {
        (0..6).filter_map(move |i| match i {
            0 => self.ignored.map(Decision::Ignored),
            1 => self.verify.then_some(Decision::Verify),
            2 => self
                .withdraw
                .map(|(port, why)| Decision::Withdraw { port, why }),
            3 => self.reset.then_some(Decision::Reset),
            4 => self.open.map(Decision::Open),
            _ => self.end.then_some(Decision::End),
        })
    }

    /// An active hole must go: if it was opened within this segment it is
    /// simply not opened; if it is the committed one, it is withdrawn.
    fn withdraw(&mut self, port: u16, why: Withdrawal, current: Option<Negotiation>) {
        if let Some(Open {
            neg: Negotiation::Active { port: p, .. },
            ..
        }) = self.open
            && p == port
        {
            self.open = None;
            return;
        }
        let committed = matches!(current, Some(Negotiation::Active { port: p, .. }) if p == port);
        if committed && self.open.is_none() && self.withdraw.is_none() {
            self.withdraw = Some((port, why));
        }
    }
}

/// A per-line fact for the log and the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Note<'a> {
    /// A client line given to the FTP matcher.
    Command(&'a [u8]),
    /// A server line given to the FTP matcher.
    Reply(&'a [u8]),
    /// A PORT/EPRT that negotiates active mode.
    Active(&'a [u8]),
    /// A reply that negotiates passive mode.
    Passive(&'a [u8]),
    /// A PORT/EPRT/227/229 whose address does not parse.
    Malformed(&'a [u8]),
    /// The connection switched to TLS.
    Encrypted,
    /// The command queue was full.
    Overflow,
    /// A line over the length limit was discarded.
    LongLine,
    /// A picked-up session on probation met a pair of segments that agree
    /// with each other but not with it, and started over from them.
    Contested,
}

/// When replies may pair with commands again after a gap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gate {
    /// Always (no gap since the last realignment).
    Open,
    /// Not until the client's first line boundary after the gap is known.
    Pending,
    /// Once the server acknowledged client bytes past this boundary.
    After(Seq),
}

/// Line reassembly of one direction, and where its last line ended.
#[derive(Debug, Default)]
struct Lines {
    buf: LineBuf,
    /// One past the last end of line (a proven boundary), None while
    /// discarding after a gap.
    eol: Option<Seq>,
}

impl Lines {
    fn at(first: Seq) -> Self {
        Lines {
            buf: LineBuf::default(),
            eol: Some(first),
        }
    }

    fn resync(&mut self) {
        self.buf.resync();
        self.eol = None;
    }
}

/// One FTP control connection.
#[derive(Debug)]
pub struct Session {
    /// `#N` in the log.
    pub id: u32,
    pub client: SocketAddr,
    pub server: SocketAddr,
    /// Client address before NAT, from the state table.
    pub real_client: IpAddr,
    pub phase: Phase,
    /// Capture time of the SYN, microseconds.
    pub created: u64,
    /// Capture time of the last packet, microseconds.
    pub last_seen: u64,
    /// Client to server.
    pub c2s: Stream,
    /// Server to client.
    pub s2c: Stream,
    c2s_lines: Lines,
    s2c_lines: Lines,
    ftp: Matcher,
    gate: Gate,
    /// The negotiation whose rules are committed now (set by the engine
    /// after a successful commit); the rules follow from it and the
    /// session's addresses ([`Session::rules`]).
    pub current: Option<Negotiation>,
    /// When the current rules expire, microseconds.
    pub rules_expire: u64,
    /// Met mid-stream rather than from its SYN: the pickup in progress,
    /// or on probation, or done (rare: boxed).
    pickup: Option<Box<pickup::Pickup>>,
}

/// The options of a SYN or SYN/ACK that the receivers' rules depend on.
fn syn_opts(seg: &Segment<'_>) -> SynOpts {
    SynOpts {
        window: seg.window,
        wscale: seg.opts.wscale,
        tsval: seg.opts.timestamp.map(|(val, _)| val),
    }
}

impl Session {
    /// A session for the client SYN `syn` (from `client` to `server`).
    pub fn new(
        id: u32,
        client: SocketAddr,
        server: SocketAddr,
        syn: &Segment<'_>,
        now: u64,
    ) -> Self {
        let phase = Phase::SynSent {
            client_isn: Seq(syn.seq),
            opts: syn_opts(syn),
        };
        Session::blank(id, client, server, phase, now)
    }

    /// A session for a connection met mid-stream, `client` being the end
    /// that is not on the control port. Nothing is trusted until both
    /// sides agree and the state table vouches (see [`pickup`]).
    pub fn mid_stream(id: u32, client: SocketAddr, server: SocketAddr, now: u64) -> Self {
        let mut s = Session::blank(id, client, server, Phase::PickingUp, now);
        s.pickup = Some(Box::default());
        s
    }

    fn blank(id: u32, client: SocketAddr, server: SocketAddr, phase: Phase, now: u64) -> Self {
        Session {
            id,
            client,
            server,
            real_client: client.ip(),
            phase,
            created: now,
            last_seen: now,
            c2s: Stream::default(),
            s2c: Stream::default(),
            c2s_lines: Lines::default(),
            s2c_lines: Lines::default(),
            ftp: Matcher::default(),
            gate: Gate::Open,
            current: None,
            rules_expire: 0,
            pickup: None,
        }
    }

    /// The rules committed for `current`.
    pub fn rules(&self) -> RuleSet {
        self.current
            .and_then(|n| {
                crate::core::policy::rules(n, self.client.ip(), self.server.ip(), self.real_client)
                    .ok()
            })
            .unwrap_or(RuleSet::EMPTY)
    }

    /// True until the firewall vouched for the connection and the client
    /// acknowledged the server's SYN.
    pub fn half_open(&self) -> bool {
        self.phase != Phase::Established
    }

    /// The state table's answer to [`Decision::Verify`]: the real (pre-NAT)
    /// client address when it tracks the connection, None when it does
    /// not (the engine then drops the session).
    pub fn verified(&mut self, real_client: Option<IpAddr>) {
        if let (Phase::Verifying, Some(real)) = (self.phase, real_client) {
            self.real_client = real;
            // A picked-up connection is past its handshake.
            self.phase = if self.pickup.is_some() {
                Phase::Established
            } else {
                Phase::Verified
            };
        }
    }

    /// Bytes held for this session beyond its fixed size (unfinished lines).
    pub fn buffered(&self) -> usize {
        self.c2s_lines.buf.pending() + self.s2c_lines.buf.pending()
    }

    /// One segment of this connection, captured at `now` microseconds.
    /// `notes` hears about each line read, in order.
    pub fn on_segment(
        &mut self,
        seg: &Segment<'_>,
        now: u64,
        notes: &mut impl FnMut(Note<'_>),
    ) -> Decisions {
        let mut ds = Decisions::default();
        self.last_seen = now;
        let from_client = seg.sport != self.server.port();
        if self.phase == Phase::PickingUp {
            ds.verify = self.glimpse(from_client, seg);
            return ds;
        }
        match (seg.control, self.phase) {
            (Control::Syn, Phase::SynSent { .. }) if from_client => {
                // A retransmitted (or renumbered) SYN before any answer.
                self.phase = Phase::SynSent {
                    client_isn: Seq(seg.seq),
                    opts: syn_opts(seg),
                };
                return ds;
            }
            (Control::Syn, _) => return ds, // never let a SYN reset a session
            (Control::SynAck, Phase::SynSent { client_isn, opts }) if !from_client => {
                if seg.ack != client_isn.0.wrapping_add(1) {
                    return ds; // does not answer this SYN
                }
                self.handshake(client_isn, opts, seg);
                ds.verify = true;
                return ds;
            }
            (Control::SynAck, _) => return ds,
            _ => {}
        }
        if matches!(self.phase, Phase::SynSent { .. } | Phase::Verifying) {
            return ds; // nothing is trusted before the firewall vouched
        }
        self.data(from_client, seg, &mut ds, notes);
        ds
    }

    /// Set both directions up from the SYN and the SYN/ACK.
    fn handshake(&mut self, client_isn: Seq, copts: SynOpts, synack: &Segment<'_>) {
        let sopts = syn_opts(synack);
        let mut c2s = Stream::new(client_isn + 1);
        let mut s2c = Stream::new(Seq(synack.seq) + 1);
        // Scaling only when both offered it; SYN windows are never scaled.
        if let (Some(cs), Some(ss)) = (copts.wscale, sopts.wscale) {
            c2s.rcv_scale = ss.min(14);
            s2c.rcv_scale = cs.min(14);
        }
        if let (Some(cts), Some(sts)) = (copts.tsval, sopts.tsval) {
            c2s.timestamps = true;
            s2c.timestamps = true;
            c2s.ts_recent = Some(cts);
            s2c.ts_recent = Some(sts);
        }
        c2s.receiver_acked(client_isn + 1, Some(u32::from(sopts.window)));
        s2c.right = Some(s2c.first + u32::from(copts.window));
        s2c.max_window = u32::from(copts.window);
        self.c2s = c2s;
        self.s2c = s2c;
        self.c2s_lines = Lines::at(client_isn + 1);
        self.s2c_lines = Lines::at(Seq(synack.seq) + 1);
        self.phase = Phase::Verifying;
    }

    /// The view of `seg` its stream judges.
    fn view<'a>(&self, from_client: bool, seg: &Segment<'a>) -> Seg<'a> {
        // The window in `seg` is its sender's receive window: it belongs to
        // the other direction, scaled by the sender's own shift.
        let peer = if from_client { &self.s2c } else { &self.c2s };
        Seg {
            seq: Seq(seg.seq),
            ack: seg.flags.has(Flags::ACK).then_some(Seq(seg.ack)),
            window: self
                .window_known()
                .then(|| u32::from(seg.window) << peer.rcv_scale),
            tsval: seg.opts.timestamp.map(|(val, _)| val),
            bad_checksum: seg.checksum == Checksum::Bad,
            fin: seg.control == Control::Fin,
            payload: seg.payload,
        }
    }

    /// A segment of a verified connection.
    fn data(
        &mut self,
        from_client: bool,
        seg: &Segment<'_>,
        ds: &mut Decisions,
        notes: &mut impl FnMut(Note<'_>),
    ) {
        let view = self.view(from_client, seg);
        let (this, peer) = if from_client {
            (&self.c2s, &self.s2c)
        } else {
            (&self.s2c, &self.c2s)
        };
        if seg.control == Control::Rst {
            // RFC 5961: only a reset at the next expected byte counts.
            if !view.bad_checksum && view.seq == this.next {
                ds.end = true;
            } else {
                ds.ignored = Some(Reject::Reset);
            }
            return;
        }
        let verdict = this.accept(&view, peer);
        let ahead = view.seq > this.next && (view.seq - this.next) as u32 <= MAX_GAP;
        if let Verdict::Ignore(r) | Verdict::Invalid(r) = verdict {
            let loss = r == Reject::AckUnsent || (r == Reject::Window && ahead);
            // On probation, a segment of another sequence space may be the
            // real endpoints contradicting what a spoofer sent first.
            let contest = self.on_probation()
                && matches!(r, Reject::Window | Reject::AckUnsent | Reject::AckTooOld);
            if loss || contest {
                self.candidate(from_client, &view, ds, notes);
            }
            ds.ignored = Some(r);
            return;
        }
        let Some(ack) = view.ack else {
            return; // accept() refuses segments without ACK
        };
        if from_client && self.phase == Phase::Verified {
            if ack < self.s2c.first {
                ds.ignored = Some(Reject::AckTooOld);
                return;
            }
            self.phase = Phase::Established;
        }
        // The sender acknowledged the other direction: that may prove a
        // gap there, which the capture lost.
        let peer = if from_client {
            &mut self.s2c
        } else {
            &mut self.c2s
        };
        peer.receiver_acked(ack, view.window);
        if peer.holding() {
            self.release(!from_client, ds, notes);
        }
        let peer = if from_client {
            &mut self.s2c
        } else {
            &mut self.c2s
        };
        if let Some(at) = peer.gap_proven() {
            peer.bridge(at);
            self.after_gap(!from_client);
            self.deliver(!from_client, ds, notes, |st, out| st.drain(out));
        }
        let this = if from_client {
            &mut self.c2s
        } else {
            &mut self.s2c
        };
        if view.seq > this.next && !view.payload.is_empty() {
            if this.acked >= view.seq {
                // The receiver already has every byte before it.
                this.bridge(view.seq);
                self.after_gap(from_client);
            } else {
                self.candidate(from_client, &view, ds, notes);
            }
        }
        let this = if from_client {
            &mut self.c2s
        } else {
            &mut self.s2c
        };
        if view.payload.is_empty() {
            this.note_sent(&view); // a bare ACK (or FIN): nothing to read
        } else {
            let taken = self.deliver(from_client, ds, notes, |st, out| st.take(&view, out));
            if let Err(r) = taken {
                ds.ignored = Some(r);
            }
        }
        let this = if from_client { &self.c2s } else { &self.s2c };
        if this.fin_here(&view) {
            ds.end = true;
        }
    }

    /// Run `op` on one direction's stream, reading what it delivers.
    fn deliver<R>(
        &mut self,
        from_client: bool,
        ds: &mut Decisions,
        notes: &mut impl FnMut(Note<'_>),
        op: impl FnOnce(&mut Stream, &mut dyn FnMut(Seq, &[u8])) -> R,
    ) -> R {
        let server_acked = self.c2s.acked;
        let Session {
            c2s,
            s2c,
            c2s_lines,
            s2c_lines,
            ftp,
            gate,
            current,
            ..
        } = self;
        let (stream, lines) = if from_client {
            (c2s, c2s_lines)
        } else {
            (s2c, s2c_lines)
        };
        let mut r = Reader {
            ftp,
            gate,
            current: *current,
            ds,
            notes,
            server_acked,
            from_client,
        };
        op(stream, &mut |at, data| r.feed(lines, at, data))
    }

    /// Bytes of one direction were lost: its lines restart at the next end
    /// of line, and commands and replies must realign.
    fn after_gap(&mut self, from_client: bool) {
        if from_client {
            self.c2s_lines.resync();
        } else {
            self.s2c_lines.resync();
        }
        self.ftp.realign();
        self.gate = match self.c2s_lines.eol {
            Some(boundary) => Gate::After(boundary),
            None => Gate::Pending,
        };
    }

    /// Keep a segment capture loss could explain, and see whether the two
    /// directions now agree on where they are (rule 2 in the module doc).
    fn candidate(
        &mut self,
        from_client: bool,
        view: &Seg<'_>,
        ds: &mut Decisions,
        notes: &mut impl FnMut(Note<'_>),
    ) {
        let Some(ack) = view.ack else {
            return;
        };
        if from_client {
            self.c2s.hold(view, ack);
        } else {
            self.s2c.hold(view, ack);
        }
        let (Some(c), Some(s)) = (self.c2s.candidate(), self.s2c.candidate()) else {
            return;
        };
        let near = |st: &Stream, at: Seq| {
            let reach = st.max_window.max(1 << 16).saturating_mul(2).min(MAX_GAP);
            at >= st.next && (at - st.next) as u32 <= reach
        };
        if !(near(&self.c2s, c.seq) && near(&self.s2c, s.seq) && pickup::agree(&c, &s)) {
            if self.on_probation() && self.contest(c, s) {
                notes(Note::Contested);
                ds.open = None;
                ds.withdraw = None;
                ds.reset = true;
            }
            return;
        }
        let client_gap = self.c2s.resync(s.ack);
        let server_gap = self.s2c.resync(c.ack);
        if client_gap {
            self.after_gap(true);
        }
        if server_gap {
            self.after_gap(false);
        }
        self.release(true, ds, notes);
        self.release(false, ds, notes);
        self.deliver(true, ds, notes, |st, out| st.drain(out));
        self.deliver(false, ds, notes, |st, out| st.drain(out));
    }

    /// Deliver a direction's held segment if its receiver now acknowledged
    /// it; its own acknowledgement then counts for the other direction.
    fn release(&mut self, from_client: bool, ds: &mut Decisions, notes: &mut impl FnMut(Note<'_>)) {
        let this = if from_client { &self.c2s } else { &self.s2c };
        if !this.holding() {
            return;
        }
        let Some(ack) = self.deliver(from_client, ds, notes, |st, out| st.release(out)) else {
            return;
        };
        let other = if from_client {
            &mut self.s2c
        } else {
            &mut self.c2s
        };
        // The receiver took the segment, so its acknowledgement was one it
        // found acceptable: those bytes were sent.
        if other.sent < ack {
            other.sent = ack;
        }
        other.receiver_acked(ack, None);
        if let Some(at) = other.gap_proven() {
            other.bridge(at);
            self.after_gap(!from_client);
            self.deliver(!from_client, ds, notes, |st, out| st.drain(out));
        }
    }
}

/// Reads delivered bytes as lines and gives them to the FTP matcher.
struct Reader<'a, N> {
    ftp: &'a mut Matcher,
    gate: &'a mut Gate,
    current: Option<Negotiation>,
    ds: &'a mut Decisions,
    notes: &'a mut N,
    /// The highest client byte the server acknowledged.
    server_acked: Seq,
    from_client: bool,
}

impl<N: FnMut(Note<'_>)> Reader<'_, N> {
    fn feed(&mut self, lines: &mut Lines, at: Seq, data: &[u8]) {
        if self.ftp.encrypted() {
            return;
        }
        let Lines { buf, eol } = lines;
        buf.push(data, |ev, end| {
            let pos = at + end as u32;
            *eol = Some(pos);
            match ev {
                Line::Synced => {
                    if self.from_client && *self.gate == Gate::Pending {
                        *self.gate = Gate::After(pos);
                    }
                }
                Line::TooLong => {
                    (self.notes)(Note::LongLine);
                    if self.from_client {
                        let ev = self.ftp.client_discarded();
                        self.command(ev, b"");
                    }
                }
                Line::Whole(line) if self.from_client => {
                    (self.notes)(Note::Command(line));
                    let ev = self.ftp.client_line(line);
                    self.command(ev, line);
                }
                Line::Whole(line) => {
                    (self.notes)(Note::Reply(line));
                    let pair = self.may_pair();
                    let ev = self.ftp.server_line(line, pair);
                    self.reply(ev, line);
                }
            }
        });
    }

    /// Replies pair with commands unless a gap left them unaligned.
    fn may_pair(&mut self) -> bool {
        match *self.gate {
            Gate::Open => true,
            Gate::Pending => false,
            Gate::After(boundary) => {
                let open = self.server_acked > boundary;
                if open {
                    *self.gate = Gate::Open;
                }
                open
            }
        }
    }

    fn command(&mut self, ev: CommandEvent, line: &[u8]) {
        match ev {
            CommandEvent::Queued(Command::Malformed) => (self.notes)(Note::Malformed(line)),
            CommandEvent::Queued(_) | CommandEvent::Ignored => {}
            CommandEvent::Overflow => (self.notes)(Note::Overflow),
            CommandEvent::Active { neg, unanswered } => {
                (self.notes)(Note::Active(line));
                if let Some(port) = unanswered {
                    self.ds.withdraw(port, Withdrawal::NoReply, self.current);
                }
                self.ds.open = Some(Open { neg });
            }
        }
    }

    fn reply(&mut self, ev: ReplyEvent, line: &[u8]) {
        match ev {
            ReplyEvent::None => {}
            ReplyEvent::Negotiated(neg) => {
                (self.notes)(Note::Passive(line));
                self.ds.open = Some(Open { neg });
            }
            ReplyEvent::ActiveRefused { port } => {
                self.ds.withdraw(port, Withdrawal::Refused, self.current)
            }
            ReplyEvent::ParseFailed => (self.notes)(Note::Malformed(line)),
            ReplyEvent::Encrypted => (self.notes)(Note::Encrypted),
        }
    }
}

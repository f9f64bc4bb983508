//! One direction of a control connection, as its receiver sees it.
//!
//! A [`Stream`] holds what the receiving TCP knows about the bytes coming
//! to it (the next byte it expects, its advertised window, the sender's
//! last timestamp, bytes that arrived ahead of a gap) and decides, with
//! [`Stream::accept`], whether the receiver would take a segment. Only
//! bytes it would take are handed to line reassembly, in order.
//!
//! Out-of-order bytes wait in a small queue and are delivered when the gap
//! fills. Overlaps are resolved as Linux's receiver resolves them
//! (`tcp_data_queue`, `tcp_data_queue_ofo`, `tcp_ofo_queue`): bytes already
//! delivered in order are never replaced; when an in-order segment fills a
//! gap, all of its bytes are delivered and the queued bytes it overlaps are
//! dropped; among queued segments, the one that starts earlier owns the
//! bytes they share, a segment wholly inside a queued one is dropped, one
//! that starts at the same place and reaches further replaces it, and one
//! that starts exactly where the last queued one ends is merged into it.

use std::cmp::Ordering;
use std::fmt;
use std::ops::{Add, Sub};

/// How far ahead of what we have seen a gap may reach, and how far behind
/// a segment may start, when the receiver's window is not known.
pub const MAX_GAP: u32 = 1 << 20;
/// Bytes held ahead of a gap, per direction.
pub const OFO_BYTES: usize = 2048;
/// Segments held ahead of a gap, per direction.
pub const OFO_SEGS: usize = 8;
/// Longest candidate payload kept for resynchronisation (a full line).
const HELD_BYTES: usize = 516;

/// A sequence number: ordered on the 32-bit circle (RFC 1982), so a
/// comparison is right as long as the two are less than 2^31 apart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seq(pub u32);

impl Add<u32> for Seq {
    type Output = Seq;
    #[inline]
    fn add(self, n: u32) -> Seq {
        Seq(self.0.wrapping_add(n))
    }
}

impl Sub for Seq {
    /// Signed distance `self - other`.
    type Output = i32;
    #[inline]
    fn sub(self, other: Seq) -> i32 {
        self.0.wrapping_sub(other.0) as i32
    }
}

impl PartialOrd for Seq {
    #[inline]
    fn partial_cmp(&self, other: &Seq) -> Option<Ordering> {
        Some((*self - *other).cmp(&0))
    }
}

impl Seq {
    /// The later of two sequence numbers.
    #[inline]
    pub fn max(self, other: Seq) -> Seq {
        if other > self { other } else { self }
    }

    /// Bytes from `self` up to `later` (0 if `later` is not after it).
    #[inline]
    pub fn until(self, later: Seq) -> u32 {
        (later - self).max(0) as u32
    }
}

/// Why a segment's bytes are not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Reject {
    /// The TCP checksum is wrong; the receiver drops it.
    BadChecksum,
    /// No ACK flag on a synchronised connection.
    NoAck,
    /// Acknowledges bytes the receiver was never seen to send.
    AckUnsent,
    /// Acknowledges bytes older than the sender's window allows.
    AckTooOld,
    /// Timestamp older than the last one taken (PAWS).
    Paws,
    /// Outside the receive window (or far behind what was delivered).
    Window,
    /// Ahead of bytes that were not seen and are not proven received.
    Gap,
    /// Ahead of a gap, but the out-of-order queue is full.
    QueueFull,
    /// A reset not at the next expected byte.
    Reset,
}

impl Reject {
    pub const ALL: [Reject; 9] = [
        Reject::BadChecksum,
        Reject::NoAck,
        Reject::AckUnsent,
        Reject::AckTooOld,
        Reject::Paws,
        Reject::Window,
        Reject::Gap,
        Reject::QueueFull,
        Reject::Reset,
    ];

    /// Short name for the counters line.
    pub fn name(self) -> &'static str {
        match self {
            Reject::BadChecksum => "bad-checksum",
            Reject::NoAck => "no-ack",
            Reject::AckUnsent => "ack-unsent",
            Reject::AckTooOld => "ack-too-old",
            Reject::Paws => "paws",
            Reject::Window => "window",
            Reject::Gap => "gap",
            Reject::QueueFull => "queue-full",
            Reject::Reset => "reset",
        }
    }

    /// True for the sequence-range refusals, logged and counted as
    /// "out-of-window" as before the other reasons existed.
    pub fn out_of_window(self) -> bool {
        matches!(self, Reject::Window | Reject::Gap)
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the receiver would do with a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Taken (its new bytes, if any, are in order or queued).
    Accept,
    /// Not taken, and not a sign of anything wrong (e.g. a gap that capture
    /// loss explains).
    Ignore(Reject),
    /// Not taken: the receiver discards it.
    Invalid(Reject),
}

/// The parts of a segment a stream judges. Built by the session from the
/// decoded segment.
#[derive(Clone, Copy, Debug)]
pub struct Seg<'a> {
    pub seq: Seq,
    pub ack: Option<Seq>,
    /// Advertised window, already scaled.
    pub window: Option<u32>,
    pub tsval: Option<u32>,
    pub bad_checksum: bool,
    pub fin: bool,
    pub payload: &'a [u8],
}

impl Seg<'_> {
    fn end(&self) -> Seq {
        self.seq + self.payload.len() as u32
    }
}

/// Bytes that arrived ahead of a gap: up to [`OFO_SEGS`] segments within
/// [`OFO_BYTES`] of the next expected byte. Each byte is kept at
/// `seq % OFO_BYTES`; `segs` (sorted by start) says which are present and
/// which segment owns them.
#[derive(Clone)]
struct Ofo {
    data: [u8; OFO_BYTES],
    segs: [(Seq, Seq); OFO_SEGS],
    len: usize,
}

impl Ofo {
    fn new() -> Self {
        Ofo {
            data: [0; OFO_BYTES],
            segs: [(Seq(0), Seq(0)); OFO_SEGS],
            len: 0,
        }
    }

    fn segs(&self) -> &[(Seq, Seq)] {
        &self.segs[..self.len]
    }

    fn remove(&mut self, i: usize) {
        self.segs.copy_within(i + 1..self.len, i);
        self.len -= 1;
    }

    fn write(&mut self, from: Seq, to: Seq, seq: Seq, payload: &[u8]) {
        let mut p = from;
        while p < to {
            self.data[p.0 as usize % OFO_BYTES] = payload[(p - seq) as usize];
            p = p + 1;
        }
    }

    /// Queue `payload` at `seq` (after `next`); false when it does not fit.
    fn insert(&mut self, seq: Seq, payload: &[u8]) -> bool {
        let end = seq + payload.len() as u32;
        // Wholly inside a queued segment that starts no later: all present.
        if self.segs().iter().any(|&(s, e)| s <= seq && end <= e) {
            return true;
        }
        // Merge into the last segment when it ends exactly here.
        if let Some(&(s, e)) = self.segs().last()
            && e == seq
        {
            let lower = self.max_end_before(s);
            self.write(lower.max(seq), end, seq, payload);
            self.segs[self.len - 1].1 = end;
            return true;
        }
        // Same start, reaching further: replaces it. Later segments it
        // covers wholly go; the ones it covers in part stay, losing the
        // shared bytes to it.
        let replaced = self.segs().iter().position(|&(s, _)| s == seq);
        let covered = self
            .segs()
            .iter()
            .filter(|&&(s, e)| s > seq && e <= end)
            .count();
        let grows = replaced.is_none() && covered == 0;
        if grows && self.len == OFO_SEGS {
            return false;
        }
        if let Some(i) = replaced {
            self.remove(i);
        }
        let mut i = 0;
        while i < self.len {
            let (s, e) = self.segs[i];
            if s > seq && e <= end {
                self.remove(i);
            } else {
                i += 1;
            }
        }
        let lower = self.max_end_before(seq);
        self.write(lower.max(seq), end, seq, payload);
        let at = self
            .segs()
            .iter()
            .position(|&(s, _)| s > seq)
            .unwrap_or(self.len);
        self.segs.copy_within(at..self.len, at + 1);
        self.segs[at] = (seq, end);
        self.len += 1;
        true
    }

    /// The furthest end of the segments that start before `seq`: their
    /// bytes win over a segment starting at `seq`.
    fn max_end_before(&self, seq: Seq) -> Seq {
        self.segs()
            .iter()
            .filter(|&&(s, _)| s < seq)
            .fold(seq, |m, &(_, e)| m.max(e))
    }

    /// Hand out, in order, the queued bytes from `next` on that are now
    /// contiguous; returns the new `next`.
    fn drain(&mut self, mut next: Seq, out: &mut dyn FnMut(Seq, &[u8])) -> Seq {
        while self.len > 0 && self.segs[0].0 <= next {
            let (_, end) = self.segs[0];
            while next < end {
                let at = next.0 as usize % OFO_BYTES;
                let n = (next.until(end) as usize).min(OFO_BYTES - at);
                out(next, &self.data[at..at + n]);
                next = next + n as u32;
            }
            self.remove(0);
        }
        next
    }

    /// Forget segments that end at or before `next`.
    fn forget_before(&mut self, next: Seq) {
        let mut i = 0;
        while i < self.len {
            if self.segs[i].1 <= next {
                self.remove(i);
            } else {
                i += 1;
            }
        }
    }

    fn first(&self) -> Option<Seq> {
        self.segs().first().map(|&(s, _)| s)
    }
}

impl fmt::Debug for Ofo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.segs()).finish()
    }
}

/// A segment that capture loss could explain: ahead of a gap, or
/// acknowledging bytes we did not see. Kept for resynchronisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub seq: Seq,
    pub end: Seq,
    pub ack: Seq,
    /// It carried bytes and its last one was `\n`.
    pub eol: bool,
}

/// The payload of the current [`Candidate`], when it is short enough.
/// While `pending`, it starts at or before the next expected byte and is
/// delivered as soon as the receiver acknowledges all of it.
struct Held {
    data: [u8; HELD_BYTES],
    len: usize,
    seq: Seq,
    ack: Seq,
    pending: bool,
    /// Where the stream was when it was held: released only from there,
    /// so bytes delivered meanwhile are never overwritten.
    from: Seq,
}

impl fmt::Debug for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Held({:?}, {})", self.seq, self.len)
    }
}

/// One direction of a control connection.
#[derive(Debug, Default)]
pub struct Stream {
    /// The next byte the receiver expects (everything before is delivered).
    pub next: Seq,
    /// One past the highest byte the sender was seen to send.
    pub sent: Seq,
    /// Highest acknowledgement the receiver sent (the sender's `snd_una`).
    pub acked: Seq,
    /// Where the sender's first data byte is (its ISN + 1).
    pub first: Seq,
    /// Right edge of the receiver's advertised window, once known.
    pub right: Option<Seq>,
    /// Largest window the receiver advertised.
    pub max_window: u32,
    /// Window scale the receiver applies (0 unless both sides offered it).
    pub rcv_scale: u8,
    /// Timestamps are on (both SYNs carried them): PAWS applies.
    pub timestamps: bool,
    /// The sender's last timestamp the receiver took.
    pub ts_recent: Option<u32>,
    /// Out-of-order bytes and the resynchronisation candidate, allocated
    /// the first time this direction needs them (rarely: on loss or
    /// reordering), so an orderly session stays small.
    spill: Option<Box<Spill>>,
}

/// What a direction keeps beyond its fixed state.
#[derive(Debug)]
struct Spill {
    ofo: Ofo,
    /// The latest segment capture loss could explain.
    candidate: Option<Candidate>,
    held: Held,
}

impl Stream {
    /// A stream whose first data byte has sequence number `first`.
    pub fn new(first: Seq) -> Self {
        Stream {
            next: first,
            sent: first,
            acked: first + u32::MAX, // nothing acknowledged yet: first - 1
            first,
            ..Stream::default()
        }
    }

    /// Bytes queued ahead of a gap.
    pub fn queued(&self) -> usize {
        self.spill.as_ref().map_or(0, |s| s.ofo.len)
    }

    /// How far behind `next` a segment may start and still be a
    /// retransmission rather than garbage.
    fn behind_limit(&self) -> u32 {
        self.max_window.clamp(1 << 16, MAX_GAP)
    }

    /// Would the receiver take `seg`? `peer` is the other direction (whose
    /// sender is this stream's receiver), for the acknowledgement checks.
    ///
    /// In Linux's order (`tcp_validate_incoming`, then `tcp_ack`), a
    /// segment is refused when
    ///  1. its checksum is wrong;
    ///  2. timestamps are on and its timestamp is older than the last one
    ///     taken by more than one tick (PAWS, RFC 7323);
    ///  3. its first new byte is outside the receive window (right edge:
    ///     the receiver's last acknowledgement plus its window, scaled only
    ///     when both SYNs offered scaling), or it starts or ends further
    ///     behind the next expected byte than a window, or (window unknown)
    ///     starts more than [`MAX_GAP`] ahead;
    ///  4. it has no ACK flag;
    ///  5. it acknowledges bytes the receiver was never seen to send
    ///     (`tcp_ack`: after `snd_nxt`), or bytes older than `snd_una`
    ///     minus the smaller of the largest window and the bytes
    ///     acknowledged so far (RFC 5961 5.2).
    ///
    /// A segment ahead of the next expected byte is accepted into the
    /// out-of-order queue by [`Stream::take`], which may still refuse it
    /// when the queue is full and the gap is not proven.
    pub fn accept(&self, seg: &Seg<'_>, peer: &Stream) -> Verdict {
        if seg.bad_checksum {
            return Verdict::Invalid(Reject::BadChecksum);
        }
        if let (true, Some(recent), Some(ts)) = (self.timestamps, self.ts_recent, seg.tsval)
            && recent.wrapping_sub(ts) as i32 > 1
        {
            return Verdict::Invalid(Reject::Paws);
        }
        let end = seg.end();
        if end <= self.next && !seg.payload.is_empty() {
            // Nothing new: a retransmission, unless it is far behind.
            if (self.next - end) as u32 > self.behind_limit() {
                return Verdict::Invalid(Reject::Window);
            }
        } else {
            let first_new = seg.seq.max(self.next);
            let inside = match self.right {
                // Data needs room for its first new byte; a bare ACK may
                // sit on the right edge (`tcp_sequence`, `tcp_data_queue`).
                Some(right) if seg.payload.is_empty() => first_new <= right,
                Some(right) => first_new < right,
                None => (first_new - self.next) as u32 <= MAX_GAP,
            };
            let behind = seg.seq < self.next && (self.next - seg.seq) as u32 > self.behind_limit();
            if !inside || behind {
                return Verdict::Invalid(Reject::Window);
            }
        }
        let Some(ack) = seg.ack else {
            return Verdict::Invalid(Reject::NoAck);
        };
        if ack > peer.sent {
            return Verdict::Ignore(Reject::AckUnsent);
        }
        let tolerance = peer
            .max_window
            .max(1 << 16)
            .min(peer.first.until(peer.acked));
        if ack < peer.acked && (peer.acked - ack) as u32 > tolerance {
            return Verdict::Invalid(Reject::AckTooOld);
        }
        Verdict::Accept
    }

    /// The receiver acknowledged `ack` with `window` in a segment that was
    /// itself accepted.
    pub fn receiver_acked(&mut self, ack: Seq, window: Option<u32>) {
        if ack > self.acked {
            self.acked = ack;
        }
        if let Some(w) = window {
            self.max_window = self.max_window.max(w);
            let right = ack + w;
            self.right = Some(self.right.map_or(right, |r| r.max(right)));
        }
    }

    /// Take an accepted segment: in-order bytes go to `out` (with their
    /// sequence number), bytes ahead of a gap are queued, queued bytes the
    /// segment makes contiguous follow. A refusal when the bytes are ahead
    /// of a gap and cannot be queued. (The caller bridges a proven gap
    /// first, see [`Stream::bridge`].)
    pub fn take(&mut self, seg: &Seg<'_>, out: &mut dyn FnMut(Seq, &[u8])) -> Result<(), Reject> {
        self.note_sent(seg);
        let end = seg.end();
        if end <= self.next || seg.payload.is_empty() {
            return Ok(());
        }
        if seg.seq > self.next {
            if end - self.next > OFO_BYTES as i32 {
                return Err(Reject::Gap);
            }
            if !self.spill().ofo.insert(seg.seq, seg.payload) {
                return Err(Reject::QueueFull);
            }
            return Ok(());
        }
        let fresh = &seg.payload[seg.seq.until(self.next) as usize..];
        let at = self.next;
        self.next = end;
        out(at, fresh);
        self.drain(out);
        self.overtaken();
        Ok(())
    }

    fn spill(&mut self) -> &mut Spill {
        self.spill.get_or_insert_with(|| {
            Box::new(Spill {
                ofo: Ofo::new(),
                candidate: None,
                held: Held {
                    data: [0; HELD_BYTES],
                    len: 0,
                    seq: Seq(0),
                    ack: Seq(0),
                    pending: false,
                    from: Seq(0),
                },
            })
        })
    }

    /// The latest segment capture loss could explain, if any.
    pub fn candidate(&self) -> Option<Candidate> {
        self.spill.as_ref().and_then(|s| s.candidate)
    }

    /// A candidate the stream has moved past is no longer one.
    fn overtaken(&mut self) {
        if let Some(s) = self.spill.as_mut()
            && s.candidate.is_some_and(|c| c.seq < self.next)
        {
            s.candidate = None;
        }
    }

    /// True when a held segment waits for its receiver's acknowledgement.
    pub fn holding(&self) -> bool {
        self.spill.as_ref().is_some_and(|s| s.held.pending)
    }

    /// Keep `seg` as this direction's candidate for resynchronisation,
    /// with its payload when it fits. A candidate that continues the
    /// stream (its acknowledgement could not be checked) waits for the
    /// receiver to acknowledge it.
    pub fn hold(&mut self, seg: &Seg<'_>, ack: Seq) {
        let end = seg.end();
        let next = self.next;
        let spill = self.spill();
        spill.candidate = Some(Candidate {
            seq: seg.seq,
            end,
            ack,
            eol: seg.payload.last() == Some(&b'\n'),
        });
        let held = &mut spill.held;
        held.seq = seg.seq;
        held.ack = ack;
        held.len = if seg.payload.len() <= HELD_BYTES {
            held.data[..seg.payload.len()].copy_from_slice(seg.payload);
            seg.payload.len()
        } else {
            0
        };
        held.pending = held.len > 0 && seg.seq <= next && end > next;
        held.from = next;
        if held.pending && self.sent < end {
            self.sent = end;
        }
    }

    /// Resynchronise on the candidate: the other side acknowledged this
    /// direction up to `acked`, at or after the candidate's start. Skip to
    /// the candidate when its payload was kept (it is delivered once the
    /// receiver acknowledged all of it, see [`Stream::release`]), else to
    /// `acked`. True when bytes were skipped.
    pub fn resync(&mut self, acked: Seq) -> bool {
        let Some(c) = self.spill.as_mut().and_then(|s| s.candidate.take()) else {
            return false;
        };
        if self.acked < acked {
            self.acked = acked;
        }
        let next = self.next;
        let kept = self
            .spill
            .as_mut()
            .map(|s| &mut s.held)
            .filter(|h| h.seq == c.seq && h.len > 0 && h.len as u32 == c.seq.until(c.end));
        match kept {
            Some(h) => {
                h.pending = true;
                h.from = next.max(c.seq);
                if self.sent < c.end {
                    self.sent = c.end;
                }
                self.bridge(c.seq)
            }
            None => self.bridge(acked),
        }
    }

    /// Deliver the held payload once the receiver acknowledged all of it
    /// (it took those very bytes), then what the queue holds. Returns the
    /// acknowledgement the held segment carried, now known to be one the
    /// receiver accepted.
    pub fn release(&mut self, out: &mut dyn FnMut(Seq, &[u8])) -> Option<Seq> {
        let (next, acked) = (self.next, self.acked);
        let h = self
            .spill
            .as_mut()
            .map(|s| &mut s.held)
            .filter(|h| h.pending)?;
        let end = h.seq + h.len as u32;
        if next != h.from || !(h.seq <= next && next < end) {
            h.pending = false; // other bytes were delivered meanwhile
            return None;
        }
        if acked < end {
            return None;
        }
        h.pending = false;
        out(next, &h.data[h.seq.until(next) as usize..h.len]);
        let ack = h.ack;
        self.next = end;
        self.drain(out);
        self.overtaken();
        Some(ack)
    }

    /// What an accepted segment tells even without new bytes: how far its
    /// sender got, and its timestamp.
    #[inline]
    pub fn note_sent(&mut self, seg: &Seg<'_>) {
        let sent = seg.end() + u32::from(seg.fin);
        if self.sent < sent {
            self.sent = sent;
        }
        if let (true, Some(ts)) = (self.timestamps, seg.tsval) {
            // Linux keeps the timestamp of segments that start at or before
            // the last acknowledgement (`tcp_replace_ts_recent`).
            if seg.seq <= self.next
                && self
                    .ts_recent
                    .is_none_or(|r| ts.wrapping_sub(r) as i32 >= 0)
            {
                self.ts_recent = Some(ts);
            }
        }
    }

    /// Deliver what the queue holds from `next` on.
    pub fn drain(&mut self, out: &mut dyn FnMut(Seq, &[u8])) {
        if let Some(s) = self.spill.as_mut() {
            s.ofo.forget_before(self.next);
            self.next = s.ofo.drain(self.next, out);
        }
    }

    /// The receiver has every byte before `at` though we did not see them
    /// all: skip to `at`. True when bytes were skipped (reassembly must
    /// restart at the next end of line).
    pub fn bridge(&mut self, at: Seq) -> bool {
        if self.sent < at {
            self.sent = at;
        }
        if self.acked < at {
            self.acked = at;
        }
        if let Some(s) = self.spill.as_mut() {
            s.candidate = None;
        }
        if at > self.next {
            self.next = at;
            if let Some(s) = self.spill.as_mut() {
                s.ofo.forget_before(at);
            }
            return true;
        }
        false
    }

    /// True when the receiver's acknowledgements prove the first queued
    /// segment follows bytes the capture lost.
    pub fn gap_proven(&self) -> Option<Seq> {
        let first = self.spill.as_ref()?.ofo.first()?;
        (first > self.next && self.acked >= first).then_some(first)
    }

    /// The segment ends exactly where the stream now is, so its FIN is the
    /// next thing in sequence.
    pub fn fin_here(&self, seg: &Seg<'_>) -> bool {
        seg.fin && seg.end() == self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(seq: u32, payload: &[u8]) -> Seg<'_> {
        Seg {
            seq: Seq(seq),
            ack: Some(Seq(1)),
            window: None,
            tsval: None,
            bad_checksum: false,
            fin: false,
            payload,
        }
    }

    /// Feed segments in arrival order; the bytes delivered, in order.
    fn deliver(first: u32, segs: &[(u32, &[u8])]) -> Vec<u8> {
        let mut s = Stream::new(Seq(first));
        let mut got = Vec::new();
        for &(seq, data) in segs {
            let _ = s.take(&seg(seq, data), &mut |at, d| {
                assert_eq!(at, Seq(first) + got.len() as u32);
                got.extend_from_slice(d)
            });
        }
        got
    }

    #[test]
    fn seq_orders_on_the_circle() {
        assert!(Seq(u32::MAX) < Seq(1));
        assert_eq!(Seq(1) - Seq(u32::MAX), 2);
        assert_eq!(Seq(5).until(Seq(3)), 0);
        assert_eq!(Seq(u32::MAX).max(Seq(2)), Seq(2));
    }

    #[test]
    fn overlaps_resolve_as_linux_does() {
        // (arrival order, bytes the receiving application reads)
        type Arrivals<'a> = &'a [(u32, &'a [u8])];
        let cases: &[(Arrivals<'_>, &[u8])] = &[
            // In order, then a retransmission: delivered once.
            (&[(100, b"PASV\r\n"), (100, b"PASV\r\n")], b"PASV\r\n"),
            // Partial retransmission reaching new bytes: old bytes stay.
            (&[(100, b"PAS"), (101, b"XSV\r\n")], b"PASV\r\n"),
            // Ahead of a gap, then the gap filled with different bytes
            // overlapping it: the in-order bytes win.
            (
                &[(105, b"PORT 1\r\n"), (100, b"NOOP\r\nXXXXX\r\n")],
                b"NOOP\r\nXXXXX\r\n",
            ),
            // Ahead of a gap, then a gap filler that ends inside it.
            (&[(104, b"ABCD"), (100, b"wxyzEF")], b"wxyzEFCD"),
            // Two queued segments: the one that starts earlier owns the overlap.
            (
                &[(104, b"ABCD"), (106, b"xyzw"), (100, b"0123")],
                b"0123ABCDzw",
            ),
            // Wholly inside a queued one: dropped.
            (&[(104, b"ABCD"), (105, b"xy"), (100, b"0123")], b"0123ABCD"),
            // Same start, longer: replaces it.
            (&[(104, b"AB"), (104, b"xyzw"), (100, b"0123")], b"0123xyzw"),
            // Starts earlier and covers a queued one: wins.
            (&[(106, b"AB"), (104, b"xyzw"), (100, b"0123")], b"0123xyzw"),
            // Merged into the last queued segment, then a later one
            // starting at the merged part does not replace it.
            (
                &[(104, b"AB"), (106, b"CD"), (106, b"xyz"), (100, b"0123")],
                b"0123ABCDz",
            ),
        ];
        for (arrivals, want) in cases {
            assert_eq!(
                String::from_utf8_lossy(&deliver(100, arrivals)),
                String::from_utf8_lossy(want),
                "{arrivals:?}"
            );
        }
    }

    #[test]
    fn queue_is_bounded() {
        let mut s = Stream::new(Seq(0));
        let mut out = |_: Seq, _: &[u8]| panic!("nothing is in order");
        for i in 0..OFO_SEGS as u32 {
            assert_eq!(s.take(&seg(10 + 3 * i, b"ab"), &mut out), Ok(()));
        }
        assert_eq!(s.take(&seg(200, b"ab"), &mut out), Err(Reject::QueueFull));
        assert_eq!(
            s.take(&seg(OFO_BYTES as u32, b"ab"), &mut out),
            Err(Reject::Gap)
        );
    }

    #[test]
    fn gap_bridged_when_the_receiver_acknowledged_it() {
        let mut s = Stream::new(Seq(1000));
        let mut got = Vec::new();
        s.take(&seg(1010, b"PASV\r\n"), &mut |_, _| panic!("gap"))
            .unwrap();
        assert_eq!(s.gap_proven(), None, "not proven yet");
        s.receiver_acked(Seq(1010), None);
        assert_eq!(s.gap_proven(), Some(Seq(1010)));
        assert!(s.bridge(Seq(1010)), "bytes were skipped");
        s.drain(&mut |_, d| got.extend_from_slice(d));
        assert_eq!(got, b"PASV\r\n");
        assert_eq!(s.next, Seq(1016));
    }
}

//! Mid-stream pickup: following a control connection whose start the
//! daemon did not see (it was restarted, or a standby firewall took the
//! traffic over).
//!
//! Such a session starts in [`Phase::PickingUp`] from an acknowledging
//! segment with data of the connection (the engine decides that: one end
//! on a control port, that end is the server). Nothing in it is read until the
//! two directions agree: the latest segment from each side is kept as a
//! [`Glimpse`] (sequence range and acknowledgement, no bytes), and the two
//! agree when the server's acknowledges the client's from its first byte
//! up to at most its last, and the client's acknowledges the server's the
//! same way (the resynchronisation rule of the module above, without a
//! known position to be near). A blind attacker who spoofs one side of a
//! real connection cannot make the real other side agree with it.
//!
//! On agreement each direction continues after its glimpse: its lines
//! start there only when the glimpse carried bytes ending in `\n` (a
//! proven line boundary: the agreement put those bytes where the receiver
//! is), else at the first end of line that follows. No command is queued
//! from before, so a reply opens nothing until its command was read after
//! the pickup; replies pair again only once the server acknowledged a
//! client line boundary (the gate after a gap). The window scale of the handshake is unknown:
//! the receive-window edge stays unknown (the window of [`MAX_GAP`]
//! applies) for the session's life. Timestamps are checked (PAWS) when
//! both glimpses carried them, as only a connection that negotiated them
//! sends them. Then the state table must vouch for the connection
//! ([`Decision::Verify`](super::Decision::Verify)), and where it follows
//! sequence numbers (pf), agree with where the pickup continues
//! ([`Session::agrees_with`]): then even a pair spoofed on both sides is
//! refused.
//!
//! Until a round trip of data after the pickup was acknowledged in both
//! directions, the pickup is on probation: a later pair of segments that
//! agree with each other but not with the positions taken (a connection
//! whose real endpoints contradict what a spoofer sent first) starts the
//! pickup over from that pair, and what the session had open goes
//! ([`Decision::Reset`](super::Decision::Reset)).

use super::{Candidate, Gate, Lines, MAX_GAP, Phase, Seq, Session, Stream};
use crate::core::decode::{Checksum, Control, Flags, Segment};
use crate::core::firewall::Seqs;

/// How far a pickup may be from the state table's windows.
const TABLE_SLACK: u32 = 1 << 16;

/// What is kept of one side's latest segment while picking up: its range
/// and acknowledgement as a resynchronisation [`Candidate`] is kept, and
/// what the receiver's rules need of it. No bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Glimpse {
    pub seg: Candidate,
    /// Raw window field (the scale is unknown).
    pub window: u16,
    pub tsval: Option<u32>,
}

impl Glimpse {
    fn of(seg: &Segment<'_>) -> Glimpse {
        Glimpse {
            seg: Candidate {
                seq: Seq(seg.seq),
                end: Seq(seg.seq) + seg.payload.len() as u32,
                ack: Seq(seg.ack),
                eol: seg.payload.last() == Some(&b'\n'),
            },
            window: seg.window,
            tsval: seg.opts.timestamp.map(|(val, _)| val),
        }
    }
}

/// A pickup in progress, or on probation after it.
#[derive(Debug, Default)]
pub(crate) struct Pickup {
    client: Option<Glimpse>,
    server: Option<Glimpse>,
    /// Where each direction continued (client, server), from agreement
    /// until probation is over.
    synced: Option<(Seq, Seq)>,
}

/// Each side's acknowledgement falls within the other's segment: the
/// client's from its first byte up to at most its last, and the same way
/// round.
pub(crate) fn agree(c: &Candidate, s: &Candidate) -> bool {
    s.ack >= c.seq && s.ack <= c.end && c.ack >= s.seq && c.ack <= s.end
}

impl Session {
    /// True while the session was met mid-stream and has not been synced
    /// and vouched for yet (it is not logged as a session until then).
    pub fn picking_up(&self) -> bool {
        self.phase == Phase::PickingUp || (self.phase == Phase::Verifying && self.pickup.is_some())
    }

    /// A segment of a connection met mid-stream: keep it as its side's
    /// glimpse, and sync when the two sides agree. True when synced (the
    /// state table must be asked).
    pub(super) fn glimpse(&mut self, from_client: bool, seg: &Segment<'_>) -> bool {
        if seg.control != Control::None
            || !seg.flags.has(Flags::ACK)
            || seg.checksum == Checksum::Bad
        {
            return false;
        }
        let p = self.pickup.get_or_insert_with(Box::default);
        let g = Glimpse::of(seg);
        if from_client {
            p.client = Some(g);
        } else {
            p.server = Some(g);
        }
        let (Some(c), Some(s)) = (p.client, p.server) else {
            return false;
        };
        if !agree(&c.seg, &s.seg) {
            return false;
        }
        self.sync(c, s);
        self.phase = Phase::Verifying;
        true
    }

    /// Both directions continue after their glimpses.
    fn sync(&mut self, c: Glimpse, s: Glimpse) {
        let ts = c.tsval.zip(s.tsval);
        self.c2s = picked_stream(c.seg, s.seg.ack, s.window, ts.map(|(c, _)| c));
        self.s2c = picked_stream(s.seg, c.seg.ack, c.window, ts.map(|(_, s)| s));
        self.c2s_lines = picked_lines(c.seg);
        self.s2c_lines = picked_lines(s.seg);
        self.ftp.realign();
        self.gate = match self.c2s_lines.eol {
            Some(boundary) => Gate::After(boundary),
            None => Gate::Pending,
        };
        let p = self.pickup.get_or_insert_with(Box::default);
        **p = Pickup {
            synced: Some((c.seg.end, s.seg.end)),
            ..Pickup::default()
        };
    }

    /// On probation, a pair that agrees with itself but not with where the
    /// streams are: start over from it. True when it did.
    pub(super) fn contest(&mut self, c: Candidate, s: Candidate) -> bool {
        let Some((cs, ss)) = self.pickup.as_ref().and_then(|p| p.synced) else {
            return false;
        };
        if self.c2s.acked > cs && self.s2c.acked > ss {
            // A round trip each way: probation is over.
            if let Some(p) = self.pickup.as_mut() {
                p.synced = None;
            }
            return false;
        }
        if !agree(&c, &s) {
            return false;
        }
        let glimpse = |seg| Glimpse {
            seg,
            window: 0,
            tsval: None,
        };
        self.sync(glimpse(c), glimpse(s));
        true
    }

    /// The state table follows sequence numbers (pf): both directions of a
    /// pickup must continue where the table would accept the sides' next
    /// bytes, give or take [`TABLE_SLACK`] (the capture may be ahead of or
    /// behind the table). A pair of spoofed segments that agree with each
    /// other does not agree with the table.
    pub fn agrees_with(&self, seqs: &Seqs) -> bool {
        seqs.client.holds(self.c2s.next.0, TABLE_SLACK)
            && seqs.server.holds(self.s2c.next.0, TABLE_SLACK)
    }

    /// The window of a picked-up session is never known (no scale).
    pub(super) fn window_known(&self) -> bool {
        self.pickup.is_none()
    }

    /// Synced mid-stream, and no round trip acknowledged both ways yet.
    pub(super) fn on_probation(&self) -> bool {
        self.pickup.as_ref().is_some_and(|p| p.synced.is_some())
    }
}

/// One direction continuing after glimpse `g`, which the receiver
/// acknowledged up to `acked` with raw window `window`.
fn picked_stream(g: Candidate, acked: Seq, window: u16, ts: Option<u32>) -> Stream {
    let mut st = Stream::new(g.end);
    // As if long established: old acknowledgements within a window are
    // tolerated, as for any connection past its first window.
    st.first = Seq(g.end.0.wrapping_sub(MAX_GAP));
    st.acked = acked;
    st.max_window = u32::from(window);
    st.timestamps = ts.is_some();
    st.ts_recent = ts;
    st
}

/// Lines of one direction after glimpse `g`: at a proven boundary when it
/// ended a line, else discarding to the next end of line. (The pair's
/// agreement put the glimpse where the receiver is; a blind attacker
/// cannot place bytes there.)
fn picked_lines(g: Candidate) -> Lines {
    if g.eol {
        Lines::at(g.end)
    } else {
        let mut l = Lines::default();
        l.resync();
        l
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::super::Decisions;
    use super::super::tests::{note_text, segment};
    use super::*;
    use crate::core::ftp::Negotiation;

    const PSH_ACK: Flags = Flags(Flags::PSH.0 | Flags::ACK.0);

    /// A connection met mid-stream: client bytes from 1000, server bytes
    /// from 5000 (what the real endpoints have); the state table knows it.
    struct Mid {
        sess: Session,
        c: SocketAddr,
        s: SocketAddr,
        cseq: u32,
        sseq: u32,
        notes: Vec<String>,
        verifies: usize,
    }

    impl Mid {
        fn new() -> Mid {
            let c: SocketAddr = "192.0.2.2:40594".parse().unwrap();
            let s: SocketAddr = "198.51.100.2:21".parse().unwrap();
            Mid {
                sess: Session::mid_stream(7, c, s, 0),
                c,
                s,
                cseq: 1000,
                sseq: 5000,
                notes: Vec::new(),
                verifies: 0,
            }
        }

        fn seg(&mut self, from_client: bool, seq: u32, ack: u32, data: &[u8]) -> Decisions {
            let (src, dst) = if from_client {
                (self.c, self.s)
            } else {
                (self.s, self.c)
            };
            let seg = segment(src, dst, seq, ack, PSH_ACK, data);
            let notes = &mut self.notes;
            let ds = self
                .sess
                .on_segment(&seg, 1, &mut |n| notes.push(note_text(n)));
            if ds.verify {
                // The engine asks the state table, which knows it.
                self.verifies += 1;
                self.sess.verified(Some(self.c.ip()));
            }
            ds
        }

        fn client(&mut self, data: &[u8]) -> Decisions {
            let ds = self.seg(true, self.cseq, self.sseq, data);
            self.cseq += data.len() as u32;
            ds
        }

        fn server(&mut self, data: &[u8]) -> Decisions {
            let ds = self.seg(false, self.sseq, self.cseq, data);
            self.sseq += data.len() as u32;
            ds
        }

        fn opened(ds: &Decisions) -> Option<Negotiation> {
            ds.open.map(|o| o.neg)
        }
    }

    const P227: &[u8] = b"227 Entering Passive Mode (198,51,100,2,195,80)\r\n";
    const PASSIVE: Option<Negotiation> = Some(Negotiation::Passive { port: 50000 });

    #[test]
    fn syncs_on_a_command_and_its_reply_then_follows() {
        let mut m = Mid::new();
        assert_eq!(m.client(b"TYPE I\r\n"), Decisions::default());
        assert!(m.sess.picking_up());
        let ds = m.server(b"200 Switching to Binary mode.\r\n");
        assert!(ds.verify, "the pair agrees: ask the state table");
        assert_eq!(m.sess.phase, Phase::Established);
        assert!(!m.sess.picking_up());
        assert_eq!(m.notes, Vec::<String>::new(), "nothing of the pair is read");
        // The client's line ended at a boundary the server acknowledged.
        assert_eq!(m.client(b"PASV\r\n"), Decisions::default());
        let ds = m.server(P227);
        assert_eq!(
            Mid::opened(&ds),
            PASSIVE,
            "{:?} {:?} {ds:?}",
            m.notes,
            m.sess
        );
        assert_eq!(m.notes[0], "command: PASV");
        let port = b"PORT 192,0,2,2,195,81\r\n";
        let ds = m.client(port);
        assert!(matches!(
            Mid::opened(&ds),
            Some(Negotiation::Active { port: 50001, .. })
        ));
        assert_eq!(m.verifies, 1);
    }

    #[test]
    fn a_reply_whose_command_came_before_the_pickup_opens_nothing() {
        let mut m = Mid::new();
        m.client(b"PASV\r\n");
        let ds = m.server(P227);
        assert!(ds.verify);
        assert_eq!(ds.open, None);
        m.client(b"EPSV\r\n");
        let ds = m.server(b"229 Entering Extended Passive Mode (|||50002|)\r\n");
        assert_eq!(Mid::opened(&ds), Some(Negotiation::Passive { port: 50002 }));
    }

    #[test]
    fn lines_start_at_the_first_proven_boundary() {
        // The client's glimpse ends inside a line: the next line's start is
        // not proven, so it is discarded up to its end.
        let mut m = Mid::new();
        m.client(b"TYPE");
        assert!(m.server(b"200 ok\r\n").verify);
        m.client(b" I\r\n");
        m.client(b"PASV\r\n");
        assert_eq!(Mid::opened(&m.server(P227)), PASSIVE);
        assert_eq!(
            m.notes[0], "command: PASV",
            "the rest of the unknown line is not a command"
        );
    }

    #[test]
    fn one_spoofed_side_never_syncs() {
        // A blind attacker sends a client PASV and a server 227 with
        // sequence numbers of its own; the real connection is idle.
        let mut m = Mid::new();
        for i in 0..50u32 {
            let ds = m.seg(true, 777_000 + i * 7919, 5000, b"PASV\r\n");
            assert!(!ds.verify);
            let ds = m.seg(false, 888_000 + i * 104_729, 1006 + i, P227);
            assert!(!ds.verify && ds.open.is_none(), "{i}");
        }
        assert!(m.sess.picking_up());
        // The real endpoints agree at once.
        m.client(b"TYPE I\r\n");
        assert!(m.server(b"200 ok\r\n").verify);
    }

    #[test]
    fn segments_that_cannot_be_taken_do_not_count() {
        let mut m = Mid::new();
        m.client(b"TYPE I\r\n");
        let mut seg = segment(m.s, m.c, 5000, 1008, PSH_ACK, b"200 ok\r\n");
        seg.checksum = crate::core::decode::Checksum::Bad;
        assert!(!m.sess.on_segment(&seg, 1, &mut |_| {}).verify);
        let mut seg = segment(m.s, m.c, 5000, 1008, PSH_ACK, b"200 ok\r\n");
        seg.flags = Flags::PSH;
        assert!(!m.sess.on_segment(&seg, 1, &mut |_| {}).verify, "no ACK");
        assert!(m.server(b"200 ok\r\n").verify);
    }

    #[test]
    fn on_probation_the_real_endpoints_win_over_a_spoofed_pair() {
        // A spoofer sends a pair that agrees with itself first.
        let mut m = Mid::new();
        m.seg(true, 70_000, 90_000, b"NOOP\r\n");
        assert!(m.seg(false, 90_000, 70_006, b"200 ok\r\n").verify);
        // On its word, a passive hole opens (as it could for the client's
        // own connection).
        m.seg(true, 70_006, 90_008, b"PASV\r\n");
        let ds = m.seg(false, 90_008, 70_012, P227);
        assert_eq!(Mid::opened(&ds), PASSIVE);
        // The real endpoints talk: out of the spoofed windows, but they
        // agree with each other, so the pickup starts over from them, and
        // what the spoofer's pickup opened goes.
        assert!(!m.client(b"TYPE I\r\n").reset);
        let ds = m.server(b"200 ok\r\n");
        assert!(ds.reset && ds.open.is_none(), "{ds:?}");
        assert!(m.notes.contains(&"Contested".to_string()), "{:?}", m.notes);
        m.client(b"PASV\r\n");
        assert_eq!(Mid::opened(&m.server(P227)), PASSIVE);
        // Probation is over (a round trip each way was acknowledged): a
        // spoofed pair now is only out of window.
        m.client(b"NOOP\r\n");
        m.notes.clear();
        m.seg(true, 70_100, 90_100, b"PASV\r\n");
        let ds = m.seg(false, 90_100, 70_106, P227);
        assert!(ds.open.is_none());
        assert!(!m.notes.contains(&"Contested".to_string()));
    }

    #[test]
    fn capture_loss_and_reordering_only_delay_the_pickup() {
        // The server's 200 is lost: the client's TYPE I and PASV never pair
        // with a server segment until the 227, which agrees with the PASV.
        let mut m = Mid::new();
        m.client(b"TYPE I\r\n");
        m.sseq += b"200 ok\r\n".len() as u32; // lost
        assert!(!m.client(b"PASV\r\n").verify);
        assert!(m.server(P227).verify, "the PASV and its 227 agree");
        m.client(b"EPSV\r\n");
        let ds = m.server(b"229 Entering Extended Passive Mode (|||50003|)\r\n");
        assert_eq!(Mid::opened(&ds), Some(Negotiation::Passive { port: 50003 }));

        // Reordered: the reply is captured before its command.
        let mut m = Mid::new();
        let (c, s) = (m.cseq, m.sseq);
        assert!(!m.seg(false, s, c + 8, b"200 ok\r\n").verify);
        assert!(m.seg(true, c, s, b"TYPE I\r\n").verify);
    }

    #[test]
    fn a_table_that_follows_sequence_numbers_must_agree() {
        use crate::core::firewall::SeqRange;
        let mut m = Mid::new();
        m.verifies = usize::MAX; // verify by hand below
        let c = segment(m.c, m.s, 1000, 5000, PSH_ACK, b"TYPE I\r\n");
        let s = segment(m.s, m.c, 5000, 1008, PSH_ACK, b"200 ok\r\n");
        m.sess.on_segment(&c, 1, &mut |_| {});
        assert!(m.sess.on_segment(&s, 1, &mut |_| {}).verify);
        let range = |lo: u32| SeqRange {
            lo,
            hi: lo + 64_000,
        };
        let table = |c, s| Seqs {
            client: range(c),
            server: range(s),
        };
        // Where the real endpoints are (the table saw a little more).
        assert!(m.sess.agrees_with(&table(1000, 5000)));
        assert!(m.sess.agrees_with(&table(1008 + 100, 5008 + 100)));
        // A pair spoofed on both sides, far from the table's windows.
        assert!(!m.sess.agrees_with(&table(900_000_000, 5000)));
        assert!(!m.sess.agrees_with(&table(1000, 3_000_000_000)));
    }
}

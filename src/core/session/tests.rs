//! The session at its seam: hand-built segments in, decisions and notes
//! out. One case per way the endpoints and the capture can disagree.

use std::net::{IpAddr, SocketAddr};

use super::*;
use crate::core::decode::{Checksum, Control, Flags, Segment, TcpOpts};
use crate::core::ftp::{Af, Negotiation};

const ACK: Flags = Flags::ACK;
const PSH_ACK: Flags = Flags(Flags::PSH.0 | Flags::ACK.0);

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A segment from `src` to `dst`.
pub(super) fn segment<'a>(
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: u32,
    flags: Flags,
    payload: &'a [u8],
) -> Segment<'a> {
    Segment {
        src: src.ip(),
        dst: dst.ip(),
        sport: src.port(),
        dport: dst.port(),
        seq,
        ack,
        flags,
        control: Control::of(flags).expect("a valid flag mix"),
        window: 65535,
        opts: TcpOpts::default(),
        checksum: Checksum::Valid,
        payload,
    }
}

/// A note as the tests compare it: `command: PASV`, `Contested`.
pub(super) fn note_text(n: Note<'_>) -> String {
    let text = |what: &str, l: &[u8]| format!("{what}: {}", String::from_utf8_lossy(l));
    match n {
        Note::Command(l) => text("command", l),
        Note::Reply(l) => text("reply", l),
        Note::Active(l) => text("active", l),
        Note::Passive(l) => text("passive", l),
        Note::Malformed(l) => text("malformed", l),
        other => format!("{other:?}"),
    }
}

/// A client SYN.
pub(super) fn syn(client: SocketAddr, server: SocketAddr, isn: u32) -> Segment<'static> {
    segment(client, server, isn, 0, Flags::SYN, b"")
}

/// One connection driven segment by segment, with what it said.
struct Conv {
    sess: Session,
    c: SocketAddr,
    s: SocketAddr,
    /// Next sequence numbers client and server will send.
    cseq: u32,
    sseq: u32,
    notes: Vec<String>,
    now: u64,
    /// Timestamps on every segment (the next TSval), when on.
    ts: Option<u32>,
    /// Window field on every segment after the handshake.
    window: u16,
    /// Applied to the next segment only.
    tweak: Option<fn(&mut Segment<'_>)>,
}

fn opened(ds: &Decisions) -> Option<Negotiation> {
    ds.open.map(|o| o.neg)
}

fn passive(port: u16) -> Option<Negotiation> {
    Some(Negotiation::Passive { port })
}

fn active(port: u16) -> Option<Negotiation> {
    Some(Negotiation::Active {
        port,
        af: Af::Unspecified,
    })
}

impl Conv {
    /// SYN, SYN/ACK (verified by the state table), and the client's ACK
    /// unless `final_ack` is false; then the server's greeting.
    fn new(final_ack: bool) -> Conv {
        Conv::between(sa("192.0.2.2:40594"), sa("198.51.100.2:21"), final_ack)
    }

    fn between(c: SocketAddr, s: SocketAddr, final_ack: bool) -> Conv {
        Conv::with(c, s, final_ack, None, None, 65535)
    }

    /// With window scaling `wscale` offered by both sides and timestamps
    /// from `ts` on, when given, and `window` in every window field.
    fn with(
        c: SocketAddr,
        s: SocketAddr,
        final_ack: bool,
        wscale: Option<u8>,
        ts: Option<u32>,
        window: u16,
    ) -> Conv {
        let mut first = syn(c, s, 1000);
        first.opts.wscale = wscale;
        first.opts.timestamp = ts.map(|t| (t, 0));
        let mut conv = Conv {
            sess: Session::new(1, c, s, &first, 0),
            c,
            s,
            cseq: 1001,
            sseq: 5001,
            notes: Vec::new(),
            now: 0,
            ts: ts.map(|t| t + 1),
            window,
            tweak: None,
        };
        conv.tweak = Some(if wscale.is_some() {
            |seg| seg.opts.wscale = Some(7)
        } else {
            |_| {}
        });
        let ds = conv.seg(false, 5000, 1001, Flags(Flags::SYN.0 | ACK.0), b"");
        assert!(ds.verify, "SYN/ACK asks the state table");
        assert!(conv.sess.half_open());
        conv.sess.verified(Some(c.ip()));
        if final_ack {
            assert_eq!(conv.seg(true, 1001, 5001, ACK, b""), Decisions::default());
            assert_eq!(conv.sess.phase, Phase::Established);
        }
        assert_eq!(conv.server(b"220 ready\r\n"), Decisions::default());
        conv
    }

    fn seg(
        &mut self,
        from_client: bool,
        seq: u32,
        ack: u32,
        flags: Flags,
        data: &[u8],
    ) -> Decisions {
        let (src, dst) = if from_client {
            (self.c, self.s)
        } else {
            (self.s, self.c)
        };
        self.now += 1000;
        let mut seg = segment(src, dst, seq, ack, flags, data);
        seg.window = self.window;
        if let Some(ts) = self.ts.as_mut() {
            seg.opts.timestamp = Some((*ts, 0));
            *ts += 1;
        }
        if let Some(tweak) = self.tweak.take() {
            tweak(&mut seg);
        }
        let notes = &mut self.notes;
        self.sess
            .on_segment(&seg, self.now, &mut |n| notes.push(note_text(n)))
    }

    /// The next in-sequence client segment, acknowledging all server bytes.
    fn client(&mut self, data: &[u8]) -> Decisions {
        let ds = self.seg(true, self.cseq, self.sseq, PSH_ACK, data);
        self.cseq = self.cseq.wrapping_add(data.len() as u32);
        ds
    }

    fn server(&mut self, data: &[u8]) -> Decisions {
        let ds = self.seg(false, self.sseq, self.cseq, PSH_ACK, data);
        self.sseq = self.sseq.wrapping_add(data.len() as u32);
        ds
    }

    /// The engine committed what `ds` opened.
    fn commit(&mut self, ds: &Decisions) {
        if let Some((port, _)) = ds.withdraw {
            assert_eq!(self.sess.current, active(port));
            self.sess.current = None;
        }
        if let Some(o) = ds.open {
            self.sess.current = Some(o.neg);
        }
    }
}

#[test]
fn passive_pairs_reply_with_command() {
    let mut c = Conv::new(true);
    assert_eq!(c.client(b"PASV\r\n"), Decisions::default());
    let ds = c.server(b"227 Entering Passive Mode (198,51,100,2,195,80)\r\n");
    assert_eq!(opened(&ds), passive(50000));
    assert_eq!(
        c.notes,
        [
            "reply: 220 ready",
            "command: PASV",
            "reply: 227 Entering Passive Mode (198,51,100,2,195,80)",
            "passive: 227 Entering Passive Mode (198,51,100,2,195,80)"
        ]
    );
}

#[test]
fn active_opens_at_the_command_and_closes_when_refused() {
    let mut c = Conv::new(true);
    let ds = c.client(b"PORT 192,0,2,2,195,81\r\n");
    assert_eq!(opened(&ds), active(50001));
    c.commit(&ds);
    let ds = c.server(b"500 no\r\n");
    assert_eq!(ds.withdraw, Some((50001, Withdrawal::Refused)));
    assert_eq!(ds.open, None);
}

#[test]
fn one_active_hole_waits_for_its_reply() {
    let mut c = Conv::new(true);
    let ds = c.client(b"PORT 192,0,2,2,195,81\r\n");
    c.commit(&ds);
    let ds = c.client(b"PORT 192,0,2,2,195,82\r\n");
    assert_eq!(ds.withdraw, Some((50001, Withdrawal::NoReply)));
    assert_eq!(opened(&ds), active(50002));
    c.commit(&ds);
    // Two in one segment: the first is never opened, nothing to withdraw
    // but the committed one.
    let ds = c.client(b"PORT 192,0,2,2,195,83\r\nPORT 192,0,2,2,195,84\r\n");
    assert_eq!(ds.withdraw, Some((50002, Withdrawal::NoReply)));
    assert_eq!(opened(&ds), active(50004));
    let order: Vec<Decision> = ds.iter().collect();
    assert!(matches!(
        order[..],
        [Decision::Withdraw { .. }, Decision::Open(_)]
    ));
}

#[test]
fn discarded_long_line_is_still_answered() {
    let mut c = Conv::new(true);
    let mut long = vec![b'A'; 600];
    long.extend_from_slice(b"\r\n");
    c.client(&long);
    let ds = c.client(b"PORT 192,0,2,2,195,81\r\n");
    c.commit(&ds);
    // The 500 answers the long line: the PORT's hole stays.
    assert_eq!(c.server(b"500 line too long\r\n"), Decisions::default());
    assert_eq!(c.sess.current, active(50001));
    assert!(c.notes.contains(&"LongLine".to_string()), "{:?}", c.notes);
}

#[test]
fn lost_final_ack_completes_with_the_first_acknowledging_segment() {
    let mut c = Conv::new(false);
    assert_eq!(c.sess.phase, Phase::Verified);
    c.client(b"PASV\r\n");
    assert_eq!(c.sess.phase, Phase::Established);
    let ds = c.server(b"227 Entering Passive Mode (198,51,100,2,195,80)\r\n");
    assert_eq!(opened(&ds), passive(50000));
}

#[test]
fn direction_comes_from_the_control_port() {
    // The client's own address in IPv4-mapped IPv6 form is the client.
    let mut c = Conv::new(true);
    c.client(b"PASV\r\n");
    let mapped = sa("[::ffff:192.0.2.2]:40594");
    let server = sa("[::ffff:198.51.100.2]:21");
    let reply = b"227 Entering Passive Mode (198,51,100,2,12,234)\r\n";
    let forged = segment(mapped, server, c.cseq, c.sseq, PSH_ACK, reply);
    let ds = c.sess.on_segment(&forged, 1, &mut |_| {});
    assert_eq!(opened(&ds), None);
    // Before the handshake, a "SYN/ACK" from the client side asks nothing.
    let (cl, sv) = (sa("192.0.2.2:40000"), sa("198.51.100.2:21"));
    let mut s = Session::new(2, cl, sv, &syn(cl, sv, 7), 0);
    let fake = segment(mapped, server, 99, 8, Flags(Flags::SYN.0 | ACK.0), b"");
    assert!(!s.on_segment(&fake, 1, &mut |_| {}).verify);
}

#[test]
fn bytes_the_receiver_discards_are_not_read() {
    type Case = (&'static str, fn(&mut Conv) -> (u32, u32), Reject);
    let cases: [Case; 6] = [
        (
            "bad checksum",
            |c| {
                c.tweak = Some(|s| s.checksum = Checksum::Bad);
                (c.cseq, c.sseq)
            },
            Reject::BadChecksum,
        ),
        (
            "acknowledges unsent bytes",
            |c| (c.cseq, c.sseq + 1000),
            Reject::AckUnsent,
        ),
        (
            "acknowledgement older than the window",
            |c| {
                // The server sent and the client acknowledged 100 kB.
                let big = vec![b'x'; 100_000];
                c.server(&big);
                c.client(b"");
                (c.cseq, c.sseq - 90_000)
            },
            Reject::AckTooOld,
        ),
        (
            "old timestamp",
            |c| {
                c.tweak = Some(|s| s.opts.timestamp = Some((3, 0)));
                (c.cseq, c.sseq)
            },
            Reject::Paws,
        ),
        (
            "far behind",
            |c| (c.cseq.wrapping_sub(2_000_000), c.sseq),
            Reject::Window,
        ),
        (
            "far ahead",
            |c| (c.cseq.wrapping_add(2_000_000), c.sseq),
            Reject::Window,
        ),
    ];
    for (name, make, want) in cases {
        let (cl, sv) = (sa("192.0.2.2:40594"), sa("198.51.100.2:21"));
        let mut c = Conv::with(cl, sv, true, None, Some(100), 65535);
        let (seq, ack) = make(&mut c);
        let ds = c.seg(true, seq, ack, PSH_ACK, b"PORT 192,0,2,2,195,81\r\n");
        assert_eq!(ds.ignored, Some(want), "{name}");
        assert_eq!(ds.open, None, "{name}");
        // The real stream goes on.
        let ds = c.client(b"PORT 192,0,2,2,195,82\r\n");
        assert_eq!(opened(&ds), active(50002), "{name}");
    }
}

#[test]
fn data_must_fit_the_receive_window() {
    let (cl, sv) = (sa("192.0.2.2:40594"), sa("198.51.100.2:21"));
    // A zero window: nothing fits until the server opens it.
    let mut c = Conv::with(cl, sv, true, None, None, 0);
    let ds = c.seg(true, c.cseq, c.sseq, PSH_ACK, b"PORT 192,0,2,2,195,81\r\n");
    assert_eq!(ds.ignored, Some(Reject::Window));
    c.window = 100;
    c.server(b"");
    let ds = c.client(b"PORT 192,0,2,2,195,82\r\n");
    assert_eq!(opened(&ds), active(50002));
    // Starting past the window's right edge: refused; inside: queued.
    let mut c = Conv::with(cl, sv, true, None, None, 10);
    let ds = c.seg(true, c.cseq + 10, c.sseq, PSH_ACK, b"x");
    assert_eq!(ds.ignored, Some(Reject::Window));
    let ds = c.seg(true, c.cseq + 9, c.sseq, PSH_ACK, b"x");
    assert_eq!(ds.ignored, None);
}

#[test]
fn window_scaling_only_when_both_offered() {
    let (cl, sv) = (sa("192.0.2.2:40594"), sa("198.51.100.2:21"));
    // Both offered 7: after the handshake a window field of 1 is 128 bytes.
    let mut c = Conv::with(cl, sv, true, Some(7), None, 1);
    c.server(b"");
    let ds = c.seg(true, c.cseq + 100, c.sseq, PSH_ACK, b"x");
    assert_eq!(ds.ignored, None, "inside 128 bytes: queued");
    let ds = c.seg(true, c.cseq + 130, c.sseq, PSH_ACK, b"x");
    assert_eq!(ds.ignored, Some(Reject::Window));
    // Only the client offered it: windows are not scaled.
    let mut first = syn(cl, sv, 1000);
    first.opts.wscale = Some(7);
    let mut s = Session::new(1, cl, sv, &first, 0);
    let mut synack = segment(sv, cl, 5000, 1001, Flags(Flags::SYN.0 | ACK.0), b"");
    synack.window = 1;
    assert!(s.on_segment(&synack, 1, &mut |_| {}).verify);
    s.verified(Some(cl.ip()));
    let mut ack = segment(sv, cl, 5001, 1001, ACK, b"");
    ack.window = 1;
    s.on_segment(&ack, 2, &mut |_| {});
    let x = segment(cl, sv, 1001 + 100, 5001, PSH_ACK, b"x");
    assert_eq!(
        s.on_segment(&x, 3, &mut |_| {}).ignored,
        Some(Reject::Window)
    );
}

#[test]
fn gap_filled_with_other_bytes_reads_the_filler() {
    let mut c = Conv::new(true);
    let base = c.cseq;
    // Ahead of a gap: the PORT waits; the gap filler overlaps it, and the
    // server's TCP reads the filler.
    let ds = c.seg(
        true,
        base + 6,
        c.sseq,
        PSH_ACK,
        b"PORT 192,0,2,2,195,81\r\n",
    );
    assert_eq!(ds, Decisions::default());
    let filler = b"NOOP\r\nXXXXXXXXXXXXXXXXXXXXX\r\n";
    let ds = c.seg(true, base, c.sseq, PSH_ACK, filler);
    assert_eq!(ds.open, None);
    assert!(
        c.notes
            .contains(&"command: XXXXXXXXXXXXXXXXXXXXX".to_string()),
        "{:?}",
        c.notes
    );
    assert!(!c.notes.iter().any(|n| n.contains("PORT")), "{:?}", c.notes);
}

#[test]
fn out_of_order_bytes_are_delivered_when_the_gap_fills() {
    let mut c = Conv::new(true);
    let base = c.cseq;
    assert_eq!(
        c.seg(true, base + 4, c.sseq, PSH_ACK, b"\r\n"),
        Decisions::default()
    );
    c.seg(true, base, c.sseq, PSH_ACK, b"PASV");
    c.cseq = base + 6;
    let ds = c.server(b"227 Entering Passive Mode (198,51,100,2,195,80)\r\n");
    assert_eq!(opened(&ds), passive(50000));
}

#[test]
fn resets_and_fins() {
    let mut c = Conv::new(true);
    let ds = c.seg(true, c.cseq + 5, c.sseq, Flags::RST, b"");
    assert_eq!(ds.ignored, Some(Reject::Reset));
    assert!(!ds.end);
    assert!(c.seg(true, c.cseq, c.sseq, Flags::RST, b"").end);
    let mut c = Conv::new(true);
    let ds = c.seg(
        false,
        c.sseq,
        c.cseq,
        Flags(Flags::FIN.0 | ACK.0),
        b"221 bye\r\n",
    );
    assert!(ds.end);
}

#[test]
fn a_gap_proven_by_the_receiver_is_bridged() {
    let mut c = Conv::new(true);
    // The client's "TYPE I\r\n" was not captured; the server's reply
    // acknowledges it, which proves it.
    c.cseq += 8;
    c.server(b"200 Type set\r\n");
    c.client(b"PASV\r\n");
    // Lines restart at the next end of line: the PASV line is discarded,
    // and its reply pairs with nothing.
    let ds = c.server(b"227 Entering Passive Mode (198,51,100,2,195,80)\r\n");
    assert_eq!(ds.open, None);
    c.client(b"PASV\r\n");
    let ds = c.server(b"227 Entering Passive Mode (198,51,100,2,195,81)\r\n");
    assert_eq!(opened(&ds), passive(50001));
}

#[test]
fn loss_in_both_directions_resynchronises() {
    let mut c = Conv::new(true);
    c.client(b"USER ftp\r\n");
    c.server(b"331 ok\r\n");
    // Not captured: client "TYPE I", server "200", client "PASV".
    c.cseq += 8;
    c.sseq += 14;
    c.cseq += 6;
    // The 227 starts past what we saw and acknowledges bytes we did not see.
    let ds = c.server(b"227 Entering Passive Mode (198,51,100,2,195,80)\r\n");
    assert_eq!(ds.open, None);
    assert!(ds.ignored.is_some());
    // The client's next segment agrees with it: resynchronised.
    c.client(b"RETR x\r\n");
    c.server(b"150 here it comes\r\n226 done\r\n");
    c.client(b"PASV\r\n");
    let ds = c.server(b"227 Entering Passive Mode (198,51,100,2,195,81)\r\n");
    assert_eq!(opened(&ds), passive(50001));
}

#[test]
fn guessed_numbers_do_not_resynchronise() {
    let mut c = Conv::new(true);
    c.client(b"PASV\r\n");
    // A blind attacker's pair: consistent with each other, but not with
    // the real sequence spaces.
    let (cs, ss) = (
        c.cseq.wrapping_add(3_000_000),
        c.sseq.wrapping_add(7_000_000),
    );
    let reply = b"227 Entering Passive Mode (198,51,100,2,12,234)\r\n";
    let ds = c.seg(false, ss, cs, PSH_ACK, reply);
    assert_eq!(ds.open, None);
    let ds = c.seg(true, cs, ss + reply.len() as u32, PSH_ACK, b"PASV\r\n");
    assert_eq!(ds.open, None);
    let ds = c.seg(false, ss + reply.len() as u32, cs + 6, PSH_ACK, reply);
    assert_eq!(ds.open, None);
    // The real conversation still works.
    let ds = c.server(b"227 Entering Passive Mode (198,51,100,2,195,80)\r\n");
    assert_eq!(opened(&ds), passive(50000));
}

#[test]
fn lines_are_noted_in_order() {
    let mut c = Conv::new(true);
    c.client(b"TYPE I\r\nPASV\r\nRE");
    c.client(b"TR x\r\n");
    c.server(b"200 ok\r\n227 (198,51,100,2,195,80)\r\n150 go\r\n");
    let lines: Vec<&str> = c
        .notes
        .iter()
        .map(String::as_str)
        .filter(|n| n.starts_with("command: ") || n.starts_with("reply: "))
        .collect();
    assert_eq!(
        lines,
        [
            "reply: 220 ready",
            "command: TYPE I",
            "command: PASV",
            "command: RETR x",
            "reply: 200 ok",
            "reply: 227 (198,51,100,2,195,80)",
            "reply: 150 go"
        ]
    );
}

#[test]
fn retransmitted_syn_renumbers_only_before_an_answer() {
    let (cl, sv) = (sa("192.0.2.2:40000"), sa("198.51.100.2:21"));
    let mut s = Session::new(2, cl, sv, &syn(cl, sv, 7), 0);
    s.on_segment(&syn(cl, sv, 70), 1, &mut |_| {});
    let old = segment(sv, cl, 500, 8, Flags(Flags::SYN.0 | ACK.0), b"");
    assert!(!s.on_segment(&old, 2, &mut |_| {}).verify);
    let new = segment(sv, cl, 500, 71, Flags(Flags::SYN.0 | ACK.0), b"");
    assert!(s.on_segment(&new, 3, &mut |_| {}).verify);
    s.verified(None);
    assert_eq!(
        s.phase,
        Phase::Verifying,
        "not tracked: the engine drops it"
    );
    let _ = IpAddr::from([0u8; 4]);
}

#[test]
fn held_bytes_never_replace_bytes_the_receiver_read() {
    // A PORT whose acknowledgement cannot be checked waits; the client's
    // real, shorter segment at the same place is read instead, and when
    // the server later acknowledges past the PORT's end nothing of the
    // PORT is delivered.
    let mut c = Conv::new(true);
    let ds = c.seg(
        true,
        c.cseq,
        c.sseq + 50,
        PSH_ACK,
        b"PORT 192,0,2,2,195,81\r\n",
    );
    assert_eq!(ds.ignored, Some(Reject::AckUnsent));
    c.client(b"NOOP\r\n");
    c.client(b"NOOP\r\nNOOP\r\nNOOP\r\n");
    let ds = c.server(b"200 ok\r\n200 ok\r\n200 ok\r\n200 ok\r\n");
    assert_eq!(ds.open, None);
    assert!(!c.notes.iter().any(|n| n.contains("195")), "{:?}", c.notes);
}

#[test]
fn a_held_segment_is_read_once_the_receiver_acknowledges_it() {
    // The server's "200" was not captured: the client's PASV acknowledges
    // bytes we never saw and waits; the server's 227 acknowledges the PASV,
    // which proves it.
    let mut c = Conv::new(true);
    c.client(b"TYPE I\r\n");
    c.sseq += 14; // "200 Type set\r\n", not captured
    let ds = c.client(b"PASV\r\n");
    assert_eq!(ds.ignored, Some(Reject::AckUnsent));
    c.server(b"227 Entering Passive Mode (198,51,100,2,195,80)\r\n");
    assert!(
        c.notes.contains(&"command: PASV".to_string()),
        "{:?}",
        c.notes
    );
    // The next exchange works.
    c.client(b"PASV\r\n");
    let ds = c.server(b"227 Entering Passive Mode (198,51,100,2,195,81)\r\n");
    assert_eq!(opened(&ds), passive(50001));
}

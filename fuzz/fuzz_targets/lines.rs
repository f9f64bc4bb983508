//! Fuzz target: one control connection's two byte streams, cut into
//! arbitrary segments, through the receiver's view of each direction
//! ([`Stream`]), line reassembly ([`LineBuf`]) and command/reply matching
//! ([`Matcher`]).
//!
//! Each segment says its direction, where it starts relative to what its
//! stream expects (in order, retransmitted, or past a gap) and what it
//! acknowledges of the other direction. Checked on every step:
//!
//! * `Stream::take` hands out bytes in order, each chunk starting where the
//!   stream was, and moves the expected sequence number by exactly what it
//!   handed out;
//! * no line is longer than `MAX_LINE` or contains an end of line, and the
//!   bytes held for an unfinished line stay within `MAX_LINE + 1`;
//! * the matcher's pending-command FIFO is bounded: a small model of it
//!   (a counter, popped by every reply that completes a command) must
//!   agree on when it overflows, and negotiations only come from the reply
//!   codes that mean them;
//! * logging a line with `Vis` yields printable ASCII only.
#![no_main]

use arbitrary::Arbitrary;
use ftpsesame::core::ftp::{CommandEvent, MAX_PENDING, Matcher, Negotiation, ReplyEvent};
use ftpsesame::core::log::Vis;
use ftpsesame::core::reassembly::{Line, LineBuf, MAX_LINE};
use ftpsesame::core::session::{Seg as View, Seq, Stream, Verdict};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Start {
    /// Exactly where the stream expects it (the common case).
    InOrder,
    /// Any distance from the expected sequence number, either way.
    Offset(i32),
}

#[derive(Arbitrary, Debug)]
struct Seg<'a> {
    /// false: client -> server, true: server -> client.
    from_server: bool,
    start: Start,
    /// Acknowledged bytes of the other direction, past its expected number.
    ack_ahead: u32,
    data: &'a [u8],
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    client_isn: u32,
    server_isn: u32,
    segs: Vec<Seg<'a>>,
}

/// The parts of the matcher's state the FIFO bound depends on, kept from
/// what the public API reveals plus the reply grammar (`NNN ` / `NNN-`).
#[derive(Default)]
struct Model {
    queued: usize,
    greeted: bool,
    encrypted: bool,
    multiline: Option<[u8; 3]>,
}

fn reply_code(line: &[u8]) -> Option<([u8; 3], bool)> {
    let code: [u8; 3] = line.get(..3)?.try_into().ok()?;
    if !code.iter().all(u8::is_ascii_digit) || !(b'1'..=b'5').contains(&code[0]) {
        return None;
    }
    match line.get(3) {
        None | Some(b' ') => Some((code, true)),
        Some(b'-') => Some((code, false)),
        _ => None,
    }
}

impl Model {
    fn client_line(&mut self, ev: CommandEvent) {
        match ev {
            CommandEvent::Active { .. } => {
                assert!(!self.encrypted, "queued after TLS");
                assert!(self.queued < MAX_PENDING, "FIFO grew past MAX_PENDING");
                self.queued += 1;
            }
            CommandEvent::Ignored => assert!(self.encrypted, "ignored while readable"),
            CommandEvent::Overflow => {
                assert!(!self.encrypted);
                assert_eq!(self.queued, MAX_PENDING, "overflow before the FIFO is full");
            }
            CommandEvent::Queued(_) => {
                assert!(!self.encrypted, "queued after TLS");
                assert!(self.queued < MAX_PENDING, "FIFO grew past MAX_PENDING");
                self.queued += 1;
            }
        }
    }

    fn server_line(&mut self, line: &[u8], ev: ReplyEvent) {
        if self.encrypted {
            assert_eq!(ev, ReplyEvent::None, "reply read after TLS");
            return;
        }
        // Which code (if any) this line completes a reply with.
        let done = match (self.multiline, reply_code(line)) {
            (Some(start), Some((code, true))) if code == start => {
                self.multiline = None;
                Some(start)
            }
            (Some(_), _) | (None, None) => None,
            (None, Some((code, true))) => Some(code),
            (None, Some((code, false))) => {
                self.multiline = Some(code);
                None
            }
        };
        let popped = match done {
            Some(code) if code[0] != b'1' => {
                if !self.greeted {
                    self.greeted = true;
                    false
                } else if self.queued > 0 {
                    self.queued -= 1;
                    true
                } else {
                    false
                }
            }
            _ => false,
        };
        let code = done.unwrap_or(*b"---");
        match ev {
            ReplyEvent::None => {}
            ReplyEvent::Negotiated(Negotiation::Active { .. }) => {
                panic!("active mode is decided at the command")
            }
            ReplyEvent::Negotiated(Negotiation::Passive { .. }) => {
                assert!(popped && (&code == b"227" || &code == b"229"));
            }
            ReplyEvent::ParseFailed => assert!(popped && (&code == b"227" || &code == b"229")),
            ReplyEvent::ActiveRefused { .. } => {
                assert!(
                    popped && &code != b"200",
                    "refusal of a PORT/EPRT answered 200"
                )
            }
            ReplyEvent::Encrypted => {
                assert!(popped && &code == b"234", "TLS without 234");
                self.encrypted = true;
            }
        }
    }
}

fn check_line(line: &[u8]) {
    assert!(line.len() <= MAX_LINE, "line of {} bytes", line.len());
    assert!(!line.contains(&b'\n'), "end of line inside a line");
    let shown = Vis(line).to_string();
    assert!(shown.bytes().all(|b| (0x20..0x7f).contains(&b)));
}

fuzz_target!(|input: Input<'_>| {
    // [client -> server, server -> client]
    let mut streams = [
        Stream::new(Seq(input.client_isn)),
        Stream::new(Seq(input.server_isn)),
    ];
    let mut lines = [LineBuf::default(), LineBuf::default()];
    let mut matcher = Matcher::default();
    let mut model = Model::default();
    for seg in &input.segs {
        let this = usize::from(seg.from_server);
        let other = 1 - this;
        let seq = match seg.start {
            Start::InOrder => streams[this].next,
            Start::Offset(d) => streams[this].next + d as u32,
        };
        let view = View {
            seq,
            ack: Some(streams[other].next + seg.ack_ahead),
            window: None,
            tsval: None,
            bad_checksum: false,
            fin: false,
            payload: seg.data,
        };
        let (a, b) = streams.split_at_mut(1);
        let (st, peer) = if this == 0 {
            (&mut a[0], &mut b[0])
        } else {
            (&mut b[0], &mut a[0])
        };
        if st.accept(&view, peer) != Verdict::Accept {
            continue;
        }
        peer.receiver_acked(view.ack.unwrap(), None);
        let before = st.next;
        let mut delivered = 0u32;
        let buf = &mut lines[this];
        let _ = st.take(&view, &mut |at, d| {
            assert_eq!(at, before + delivered, "not in order");
            delivered += d.len() as u32;
            buf.push(d, |line, _| {
                let line = match line {
                    Line::Whole(line) => line,
                    // A discarded long command is still answered.
                    Line::TooLong if !seg.from_server => {
                        model.client_line(matcher.client_discarded());
                        return;
                    }
                    Line::TooLong | Line::Synced => return,
                };
                check_line(line);
                if seg.from_server {
                    let ev = matcher.server_line(line, true);
                    model.server_line(line, ev);
                } else {
                    let ev = matcher.client_line(line);
                    model.client_line(ev);
                }
            });
        });
        assert_eq!(st.next, before + delivered, "moved without delivering");
        assert!(
            lines[this].pending() <= MAX_LINE + 1,
            "partial line unbounded"
        );
        assert_eq!(matcher.encrypted(), model.encrypted);
    }
});

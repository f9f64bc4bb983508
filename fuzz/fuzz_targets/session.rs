//! Fuzz target: the session state machine at its seam, fed a conversation
//! whose true byte streams are known, through a lossy, reordering capture,
//! with blind injections mixed in.
//!
//! The input gives the two true streams (client commands, server replies)
//! and a schedule. A real segment carries true bytes at their true
//! sequence numbers (new bytes, or a retransmission of old ones) and
//! acknowledges everything the other side sent; the capture may lose it
//! or show it late. A forged segment carries any bytes, flags and
//! acknowledgement, at a sequence number more than a window away from
//! where its direction really is, as a blind attacker must guess.
//!
//! Checked on every step:
//!
//! * nothing panics;
//! * every line the session reads (each `Command`/`Reply` note) is a whole
//!   line of the true stream of its direction: no byte of a forged segment,
//!   and no partial line after a gap, is ever read;
//! * every `Open` comes from a negotiating line read in that same step;
//! * the table-facing state stays sane: `Verify` only before the
//!   handshake completed (or the pickup synced).
//!
//! With `mid_stream`, the session is met mid-stream (no handshake: a
//! restart) and picks the connection up; the blind attacker then spoofs
//! one side only, as one who spoofs both can make a pickup start from a
//! pair of its own (see the pickup module).
#![no_main]

use std::net::SocketAddr;

use arbitrary::Arbitrary;
use ftpsesame::core::decode::{Checksum, Control, Flags, Segment, TcpOpts};
use ftpsesame::core::session::{Note, Session};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Op<'a> {
    /// The next `len` true bytes of one direction.
    Send {
        from_server: bool,
        len: u8,
        lost: bool,
    },
    /// True bytes again, from `back` bytes before the end of what was sent.
    Resend {
        from_server: bool,
        back: u16,
        len: u8,
        lost: bool,
    },
    /// Show the last lost segment after all (the capture reordered it).
    Late,
    /// A blind injection.
    Forge {
        from_server: bool,
        far: u32,
        ack: u32,
        flags: u8,
        data: &'a [u8],
    },
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    client_isn: u32,
    server_isn: u32,
    final_ack_lost: bool,
    mid_stream: bool,
    /// The side a mid-stream attacker spoofs.
    spoofs_server: bool,
    client: &'a [u8],
    server: &'a [u8],
    ops: Vec<Op<'a>>,
}

/// How far a forged segment starts from the true position, at least.
const BLIND: u32 = 1 << 22;

/// True when `line` is a whole line of `stream` (between line ends).
fn is_line_of(line: &[u8], stream: &[u8]) -> bool {
    let mut start = 0;
    for (i, &b) in stream.iter().enumerate() {
        if b == b'\n' {
            let l = &stream[start..i];
            let l = l.strip_suffix(b"\r").unwrap_or(l);
            if l == line {
                return true;
            }
            start = i + 1;
        }
    }
    false
}

struct Side {
    isn: u32,
    /// Bytes of the true stream sent so far.
    sent: usize,
}

fn segment<'a>(
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: u32,
    flags: Flags,
    payload: &'a [u8],
) -> Option<Segment<'a>> {
    Some(Segment {
        src: src.ip(),
        dst: dst.ip(),
        sport: src.port(),
        dport: dst.port(),
        seq,
        ack,
        flags,
        control: Control::of(flags)?,
        window: 65535,
        opts: TcpOpts::default(),
        checksum: Checksum::Valid,
        payload,
    })
}

fuzz_target!(|input: Input<'_>| {
    let c: SocketAddr = "192.0.2.2:40594".parse().unwrap();
    let s: SocketAddr = "198.51.100.2:21".parse().unwrap();
    let (client, server) = (input.client, input.server);
    let mut sides = [
        Side {
            isn: input.client_isn,
            sent: 0,
        },
        Side {
            isn: input.server_isn,
            sent: 0,
        },
    ];
    let seq_of = |side: &Side, at: usize| side.isn.wrapping_add(1).wrapping_add(at as u32);
    let mut sess;
    let mut picking = input.mid_stream;
    if input.mid_stream {
        sess = Session::mid_stream(1, c, s, 0);
    } else {
        sess = handshake(&input, c, s);
    }
    let psh_ack = Flags(Flags::PSH.0 | Flags::ACK.0);
    let mut late: Option<(bool, usize, usize)> = None;
    for (now, op) in input.ops.iter().enumerate() {
        run(
            &mut sess,
            &mut sides,
            &mut late,
            &mut picking,
            (c, s, client, server, psh_ack),
            &input,
            now,
            op,
            seq_of,
        );
    }
});

/// SYN, SYN/ACK (vouched for) and, unless lost, the final ACK.
fn handshake(input: &Input<'_>, c: SocketAddr, s: SocketAddr) -> Session {
    let syn = segment(c, s, input.client_isn, 0, Flags::SYN, b"").unwrap();
    let mut sess = Session::new(1, c, s, &syn, 0);
    let synack = segment(
        s,
        c,
        input.server_isn,
        input.client_isn.wrapping_add(1),
        Flags(Flags::SYN.0 | Flags::ACK.0),
        b"",
    )
    .unwrap();
    let ds = sess.on_segment(&synack, 1, &mut |_| {});
    assert!(ds.verify);
    sess.verified(Some(c.ip()));
    if !input.final_ack_lost {
        let ack = segment(
            c,
            s,
            input.client_isn.wrapping_add(1),
            input.server_isn.wrapping_add(1),
            Flags::ACK,
            b"",
        )
        .unwrap();
        sess.on_segment(&ack, 2, &mut |_| {});
    }
    sess
}

type Ends<'a> = (SocketAddr, SocketAddr, &'a [u8], &'a [u8], Flags);

/// One step of the schedule.
#[allow(clippy::too_many_arguments)]
fn run(
    sess: &mut Session,
    sides: &mut [Side; 2],
    late: &mut Option<(bool, usize, usize)>,
    picking: &mut bool,
    (c, s, client, server, psh_ack): Ends<'_>,
    input: &Input<'_>,
    now: usize,
    op: &Op<'_>,
    seq_of: impl Fn(&Side, usize) -> u32,
) {
    {
        // (from_server, start, end) of a real segment to show, if any.
        let real = match *op {
            Op::Send {
                from_server,
                len,
                lost,
            } => {
                let i = usize::from(from_server);
                let stream = if from_server { server } else { client };
                let start = sides[i].sent;
                let end = (start + usize::from(len)).min(stream.len());
                sides[i].sent = end;
                if lost {
                    *late = Some((from_server, start, end));
                    None
                } else {
                    Some((from_server, start, end))
                }
            }
            Op::Resend {
                from_server,
                back,
                len,
                lost,
            } => {
                let i = usize::from(from_server);
                let start = sides[i].sent.saturating_sub(usize::from(back));
                let end = (start + usize::from(len)).min(sides[i].sent);
                (!lost).then_some((from_server, start, end))
            }
            Op::Late => late.take(),
            Op::Forge { .. } => None,
        };
        // A mid-stream attacker spoofs one side only.
        if let Op::Forge { from_server, .. } = *op
            && input.mid_stream
            && from_server != input.spoofs_server
        {
            return;
        }
        let mut read: Vec<Vec<u8>> = Vec::new();
        let mut negotiated = false;
        let mut check = |n: Note<'_>, read: &mut Vec<Vec<u8>>| match n {
            Note::Active(line) | Note::Passive(line) => {
                assert!(
                    read.last().is_some_and(|l| l == line),
                    "negotiated by a line not read"
                );
                negotiated = true;
            }
            Note::Command(line) => {
                assert!(
                    is_line_of(line, client),
                    "read a line the client never sent"
                );
                read.push(line.to_vec());
            }
            Note::Reply(line) => {
                assert!(
                    is_line_of(line, server),
                    "read a line the server never sent"
                );
                read.push(line.to_vec());
            }
            _ => {}
        };
        let ds = if let Some((from_server, start, end)) = real {
            let (i, o) = if from_server { (1, 0) } else { (0, 1) };
            let stream = if from_server { server } else { client };
            let (src, dst) = if from_server { (s, c) } else { (c, s) };
            let seg = segment(
                src,
                dst,
                seq_of(&sides[i], start),
                seq_of(&sides[o], sides[o].sent),
                psh_ack,
                &stream[start..end],
            )
            .unwrap();
            sess.on_segment(&seg, 10 + now as u64, &mut |n| check(n, &mut read))
        } else if let Op::Forge {
            from_server,
            far,
            ack,
            flags,
            data,
        } = *op
        {
            let i = usize::from(from_server);
            let (src, dst) = if from_server { (s, c) } else { (c, s) };
            // At least BLIND away from the true position, either way.
            let off = BLIND + far % (u32::MAX - 2 * BLIND);
            let seq = seq_of(&sides[i], sides[i].sent).wrapping_add(off);
            let Some(seg) = segment(src, dst, seq, ack, Flags(flags & 0x3f), data) else {
                return;
            };
            sess.on_segment(&seg, 10 + now as u64, &mut |n| check(n, &mut read))
        } else {
            return;
        };
        if ds.open.is_some() {
            assert!(negotiated, "opened without a negotiating line in this step");
        }
        if ds.verify {
            assert!(*picking, "verify after the handshake");
            *picking = false;
            sess.verified(Some(c.ip()));
        }
    }
}

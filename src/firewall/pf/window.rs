//! pf's sequence windows, read from its states: which of the states copied
//! out of the table are the captured connection's, and what each side may
//! send next, in the numbers the capture sees.
//!
//! A state names its creator `src` (the side whose packet created it) and
//! keeps, per side, the highest sequence number sent (`seqlo`) and the
//! right edge of the window the other side granted (`seqhi`). pf passes a
//! segment from a side when it ends at or before `seqhi` and starts no
//! further back than `seqlo` minus the other side's largest window (scaled
//! when both sides offered scaling); that span is the side's range here.
//!
//! Where the capture sits: pf keeps each side's numbers as that side sends
//! them and adds the side's `seqdiff` (`modulate state`, `synproxy state`)
//! once they have passed the state. The creator's segments reach an
//! inbound state from the wire and an outbound one from the stack; the
//! other side's come from the opposite end. Which end the capture sees is
//! known only when the state translates the connection (NAT): the captured
//! endpoints then match its wire key or its stack key, not both. A state
//! with a `seqdiff` whose end is not known gives no ranges, nor does any
//! state of a connection that crosses several states when one of them
//! modulates (the numbers then depend on where the capture is relative to
//! each). No ranges means the pickup stands on its pair alone: a range in
//! the wrong numbering would refuse genuine pickups.

use std::net::SocketAddr;

use super::ffi::{Dir, FlatKey, FlatPeer, FlatState, SK_STACK, SK_WIRE, addr_bytes};
use crate::core::firewall::{SeqRange, Seqs};

/// An end of a state: where segments reach it from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Wire,
    Stack,
}

impl End {
    fn other(self) -> End {
        match self {
            End::Wire => End::Stack,
            End::Stack => End::Wire,
        }
    }
}

/// What one state says of the connection.
enum Reading {
    /// Not the connection's state.
    Other,
    /// The connection's, but its windows cannot be told in the capture's
    /// numbers (sloppy, a side never seen, a modulation of unknown end).
    Unknown { modulated: bool },
    /// The connection's ranges.
    Known { seqs: Seqs, modulated: bool },
}

/// Index of the client's endpoint in `key` when the key names exactly the
/// captured client and server, in either order.
fn client_at(key: &FlatKey, client: SocketAddr, server: SocketAddr) -> Option<usize> {
    let (af, c) = addr_bytes(client.ip());
    let (saf, s) = addr_bytes(server.ip());
    if key.af != af || saf != af {
        return None;
    }
    let at = |i: usize| (key.addr[i], u16::from_be(key.port[i]));
    if at(0) == (c, client.port()) && at(1) == (s, server.port()) {
        Some(0)
    } else if at(1) == (c, client.port()) && at(0) == (s, server.port()) {
        Some(1)
    } else {
        None
    }
}

/// What `sender` may send next, shifted by `shift` into the capture's
/// numbers; None when the state's own numbers make no range (the window
/// edge behind the sent edge).
fn range(sender: &FlatPeer, receiver: &FlatPeer, shift: u32) -> Option<SeqRange> {
    let scale = if sender.scaled != 0 && receiver.scaled != 0 {
        receiver.wscale & 0x0f
    } else {
        0
    };
    let back = u32::from(receiver.max_win) << scale;
    let lo = sender.seqlo.wrapping_sub(back);
    let hi = sender.seqhi;
    if (hi.wrapping_sub(sender.seqlo) as i32) < 0 {
        return None;
    }
    Some(SeqRange {
        lo: lo.wrapping_add(shift),
        hi: hi.wrapping_add(shift),
    })
}

fn read(st: &FlatState, client: SocketAddr, server: SocketAddr) -> Reading {
    let wire = client_at(&st.key[SK_WIRE], client, server);
    let stack = client_at(&st.key[SK_STACK], client, server);
    let modulated = st.src.seqdiff != 0 || st.dst.seqdiff != 0;
    let (client_idx, seen) = match (wire, stack) {
        (None, None) => return Reading::Other,
        (Some(w), Some(s)) if w != s => return Reading::Unknown { modulated },
        (Some(w), Some(_)) => (w, None),
        (Some(w), None) => (w, Some(End::Wire)),
        (None, Some(s)) => (s, Some(End::Stack)),
    };
    // seqlo 0 is pf's "nothing sent yet from this side".
    if st.sloppy != 0 || st.src.seqlo == 0 || st.dst.seqlo == 0 {
        return Reading::Unknown { modulated };
    }
    let outbound = st.dir == Dir::Out as u8;
    // pf orders a key as the creating packet travels on the wire for an
    // inbound state (source first) and reversed for an outbound one.
    let src_idx = usize::from(outbound);
    let src_home = if outbound { End::Stack } else { End::Wire };
    let shift = |peer: &FlatPeer, home: End| -> Option<u32> {
        match (peer.seqdiff, seen) {
            (0, _) => Some(0),
            (_, None) => None,
            (_, Some(end)) if end == home => Some(0),
            (d, Some(_)) => Some(d),
        }
    };
    let from_src = shift(&st.src, src_home).and_then(|s| range(&st.src, &st.dst, s));
    let from_dst = shift(&st.dst, src_home.other()).and_then(|s| range(&st.dst, &st.src, s));
    let (Some(from_src), Some(from_dst)) = (from_src, from_dst) else {
        return Reading::Unknown { modulated };
    };
    let seqs = if client_idx == src_idx {
        Seqs {
            client: from_src,
            server: from_dst,
        }
    } else {
        Seqs {
            client: from_dst,
            server: from_src,
        }
    };
    Reading::Known { seqs, modulated }
}

/// The smallest range on the circle holding both (they describe the same
/// side at nearly the same time, so they overlap or nearly do).
fn hull(a: SeqRange, b: SeqRange) -> SeqRange {
    SeqRange {
        lo: if (b.lo.wrapping_sub(a.lo) as i32) < 0 {
            b.lo
        } else {
            a.lo
        },
        hi: if (b.hi.wrapping_sub(a.hi) as i32) > 0 {
            b.hi
        } else {
            a.hi
        },
    }
}

/// The ranges the states of `client -> server` (as captured) give, among
/// `states`; None when none of them is the connection's or their numbers
/// cannot be told (see the module docs). Several unmodulated states (one
/// per interface the connection crosses) are joined into the widest range.
pub(crate) fn seqs_of(
    states: &[FlatState],
    client: SocketAddr,
    server: SocketAddr,
) -> Option<Seqs> {
    let mut found = 0;
    let mut any_modulated = false;
    let mut seqs: Option<Seqs> = None;
    for st in states {
        match read(st, client, server) {
            Reading::Other => continue,
            Reading::Unknown { modulated } => any_modulated |= modulated,
            Reading::Known { seqs: s, modulated } => {
                any_modulated |= modulated;
                seqs = Some(match seqs {
                    None => s,
                    Some(t) => Seqs {
                        client: hull(t.client, s.client),
                        server: hull(t.server, s.server),
                    },
                });
            }
        }
        found += 1;
    }
    if any_modulated && found > 1 {
        return None;
    }
    seqs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hull_spans_both_across_the_wrap() {
        let a = SeqRange {
            lo: u32::MAX - 5,
            hi: 10,
        };
        let b = SeqRange { lo: 2, hi: 40 };
        assert_eq!(
            hull(a, b),
            SeqRange {
                lo: u32::MAX - 5,
                hi: 40
            }
        );
        assert_eq!(
            hull(b, a),
            SeqRange {
                lo: u32::MAX - 5,
                hi: 40
            }
        );
    }

    #[test]
    fn window_edge_behind_the_sent_edge_is_no_range() {
        let sender = FlatPeer {
            seqlo: 1000,
            seqhi: 999,
            ..FlatPeer::default()
        };
        assert_eq!(range(&sender, &FlatPeer::default(), 0), None);
    }

    #[test]
    fn scale_applies_only_when_both_offered_it() {
        let sender = FlatPeer {
            seqlo: 1 << 20,
            seqhi: (1 << 20) + 100,
            wscale: 2,
            scaled: 1,
            ..FlatPeer::default()
        };
        let mut receiver = FlatPeer {
            max_win: 1000,
            wscale: 3,
            scaled: 1,
            ..FlatPeer::default()
        };
        assert_eq!(range(&sender, &receiver, 0).unwrap().lo, (1 << 20) - 8000);
        receiver.scaled = 0;
        assert_eq!(range(&sender, &receiver, 0).unwrap().lo, (1 << 20) - 1000);
    }
}

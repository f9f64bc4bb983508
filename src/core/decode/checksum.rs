//! The Internet checksum (RFC 1071), as the IP and TCP layers need it: a
//! sum that can be built from pieces (header fields, pseudo-header, data)
//! and folded once at the end.
//!
//! Sums are taken over 16-bit words read little-endian, that is with each
//! network-order word's bytes swapped. The ones' complement sum does not
//! care (RFC 1071 2(B): swapping every word swaps the sum), so a correct
//! checksum still folds to 0xffff, and values compared with a folded sum
//! are read little-endian too ([`le16`]). Little-endian rather than native
//! order keeps the arithmetic the same on every host, and costs nothing on
//! the little-endian ones.
//!
//! Eight bytes are added at a time with an end-around carry (RFC 1071
//! 1.2): 2^16 = 1 modulo 0xffff, so a 64-bit word counts as the sum of its
//! four 16-bit words, and 2^64 = 1 too, so a carry out of the top is added
//! back at the bottom.

/// Unfolded sum of `data` as 16-bit little-endian words (an odd last byte
/// is the low byte of a word whose high byte is zero). Sums add with
/// [`add`]; [`fold`] finishes them.
#[inline(always)]
pub(super) fn sum(data: &[u8]) -> u64 {
    sum_from(data, 0)
}

/// [`sum`] of `data[from..]` (0 if `from` is past the end). The bytes
/// before `from` are not summed, but may be read again to pick up a tail
/// of fewer than eight bytes, so a short rest after a header still costs
/// no byte loop.
#[inline(always)]
pub(super) fn sum_from(data: &[u8], from: usize) -> u64 {
    let Some(summed) = data.get(from..) else {
        return 0;
    };
    let mut acc = 0u64;
    let mut rest = summed;
    while let Some((c, more)) = rest.split_first_chunk::<8>() {
        acc = add(acc, u64::from_le_bytes(*c));
        rest = more;
    }
    let rest = rest.len();
    if rest == 0 {
        return acc;
    }
    match data.last_chunk::<8>() {
        // Load the last eight bytes and shift out those that are not part
        // of the rest: the rest starts a multiple of 8 after `from`, so each
        // of its bytes keeps its place (low or high) in its word. Unaligned,
        // branch-free and no copy, where a byte loop would cost one step
        // per byte.
        Some(last) => add(acc, u64::from_le_bytes(*last) >> (8 * (8 - rest))),
        // Fewer than eight bytes in all: not an IP packet; rare.
        None => summed
            .iter()
            .enumerate()
            .fold(acc, |a, (i, &b)| a + (u64::from(b) << (8 * (i & 1)))),
    }
}

/// `a + b` modulo 0xffff, as a 64-bit sum: the carry out of the top goes
/// back in at the bottom (it cannot carry again: the sum without it is at
/// most 2^64 - 2).
#[inline(always)]
pub(super) fn add(a: u64, b: u64) -> u64 {
    let (s, carry) = a.overflowing_add(b);
    s + u64::from(carry)
}

/// A network-order 16-bit field's value `v` (or a sum of such values, as
/// long as it stays below 2^56) as a term of a little-endian sum: its
/// bytes swapped, which is `v * 256` modulo 0xffff.
#[inline(always)]
pub(super) fn be_term(v: u64) -> u64 {
    v << 8
}

/// A 16-bit field read the way sums read words, to compare with a
/// [`fold`]ed sum.
#[inline(always)]
pub(super) fn le16(b: &[u8; 2]) -> u16 {
    u16::from_le_bytes(*b)
}

/// Fold a sum to 16 bits. Data with a correct checksum folds to 0xffff;
/// only a sum of nothing but zeros folds to 0. No loop: the two 32-bit
/// halves are added with an end-around carry, then the two 16-bit halves
/// of that by adding the word to itself rotated by 16 bits, whose top half
/// is their sum plus the carry out of the bottom half.
#[inline(always)]
pub(super) fn fold(acc: u64) -> u16 {
    let (low, carry) = (acc as u32).overflowing_add((acc >> 32) as u32);
    let x = low + u32::from(carry);
    (x.wrapping_add(x.rotate_right(16)) >> 16) as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sum_and_fold() {
        assert_eq!(fold(u64::MAX), 0xffff);
        assert_eq!(fold(0x1_0000), 1);
        assert_eq!(fold(0xffff_ffff_0000_0000), 0xffff);
        assert_eq!(fold(0x1_0000_0000), 1);
        assert_eq!(fold(sum(&[])), 0);
        assert_eq!(fold(sum(&[0x12])), 0x0012);
        assert_eq!(fold(sum(&[0x12, 0x34])), 0x3412);
        assert_eq!(fold(sum(&[0x12, 0x34, 0x56])), 0x3412 + 0x0056);
        assert_eq!(fold(sum(&[0xff, 0xff, 0x01, 0x00])), 0x0001);
        // RFC 1071 section 3's example, in swapped order.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data)), 0xf2dd);
        // Carries out of the top come back in.
        assert_eq!(add(u64::MAX, 2), 2);
        assert_eq!(fold(sum(&[0xff; 16])), 0xffff);
    }

    #[test]
    fn be_term_is_the_swapped_word() {
        for v in [0u64, 1, 6, 0x00ff, 0x1234, 0xffff, 0x1_0005] {
            let bytes = (v as u16).to_be_bytes();
            let carry = v >> 16;
            // The word as the data would hold it, plus what did not fit.
            let want = fold(sum(&bytes) + carry * 256);
            assert_eq!(fold(be_term(v)), want, "{v:#x}");
        }
        assert_eq!(le16(&[0x12, 0x34]), 0x3412);
    }

    /// Folding by RFC 1071's loop: add the carries back until none is left.
    fn fold_loop(mut acc: u64) -> u16 {
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    #[test]
    fn fold_edges() {
        let edges = [
            0,
            1,
            0xfffe,
            0xffff,
            0x1_0000,
            0x1_0001,
            0x1_fffe,
            0xffff_ffff,
        ];
        let more = [0x1_0000_0000, 0xffff_ffff_ffff, u64::MAX, u64::MAX - 1];
        for acc in edges
            .into_iter()
            .chain(more)
            .chain((0..64).map(|s| 0xffffu64 << s))
        {
            assert_eq!(fold(acc), fold_loop(acc), "{acc:#x}");
        }
    }

    /// The reference: RFC 1071's loop over big-endian 16-bit words.
    fn reference(data: &[u8]) -> u16 {
        let mut acc = 0u32;
        for w in data.chunks(2) {
            let hi = u32::from(w[0]) << 8;
            acc += hi | u32::from(*w.get(1).unwrap_or(&0));
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    proptest! {
        #[test]
        fn fold_is_the_loop(acc in any::<u64>()) {
            prop_assert_eq!(fold(acc), fold_loop(acc));
        }

        #[test]
        fn sum_matches_the_word_loop(
            data in proptest::collection::vec(any::<u8>(), 0..300),
            skip in 0usize..8,
        ) {
            // Every length, and every start (so every alignment) of the data.
            let data = data.get(skip..).unwrap_or(&[]);
            let ours = fold(sum(data)).swap_bytes();
            let theirs = reference(data);
            // 0 and 0xffff are both ones' complement zero.
            prop_assert!(
                ours == theirs || (ours | theirs == 0xffff && ours & theirs == 0),
                "{ours:#x} {theirs:#x}"
            );
        }

        /// Summing from an offset is summing what follows it, for every
        /// offset and length (so every short rest, with bytes to read
        /// before it or not).
        #[test]
        fn sum_from_is_the_sum_of_the_rest(
            data in proptest::collection::vec(any::<u8>(), 0..40),
            from in 0usize..48,
        ) {
            let rest = data.get(from..).unwrap_or(&[]);
            prop_assert_eq!(fold(sum_from(&data, from)), fold(sum(rest)));
        }

        /// Sums of pieces with an even length add up to the sum of the whole.
        #[test]
        fn pieces_add_up(data in proptest::collection::vec(any::<u8>(), 0..200), cut in 0usize..100) {
            let cut = (cut * 2).min(data.len() & !1);
            let (a, b) = data.split_at(cut);
            prop_assert_eq!(fold(add(sum(a), sum(b))), fold(sum(&data)));
        }

    }
}

//! Line reassembly for one direction of a control connection.
//!
//! FTP is line-oriented, and a command is only a command when it starts a
//! line. This module turns in-order stream bytes into complete lines, with
//! three guarantees the matcher relies on:
//!
//! * a line split across any number of segments is seen once, whole;
//! * bytes are never handed out unless a line ends (`\n`, optional `\r`):
//!   a partial line waits, so `NOOP ` + `PORT ...\r\n` is one `NOOP` line;
//! * memory is bounded: a line longer than [`MAX_LINE`] is discarded up to
//!   its end of line and counted; after a capture gap ([`LineBuf::resync`])
//!   bytes are discarded until the next end of line, the first boundary we
//!   can prove.
//!
//! Complete lines inside one segment are handed out as slices of it, so the
//! common case copies nothing; only a partial tail is buffered.

/// Longest line accepted, end of line not included.
pub const MAX_LINE: usize = 512;

/// What reassembly found, in stream order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A complete line, end-of-line marker stripped.
    Whole(&'a [u8]),
    /// A line longer than [`MAX_LINE`] ended here; its bytes were dropped.
    /// The peer still reads it as one line (and answers a command).
    TooLong,
    /// The end of line that ends a discard after a gap: lines start here.
    Synced,
}

/// Why bytes are being dropped up to the next end of line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Discard {
    Long,
    AfterGap,
}

/// Reassembly state of one direction: 16 bytes, since every session has
/// two. The buffer for a partial line is allocated the first time a line
/// is split across segments, and kept.
#[derive(Debug, Default)]
pub struct LineBuf {
    /// Start of a line whose end has not been seen yet: `len` bytes.
    partial: Option<Box<[u8; MAX_LINE + 1]>>,
    len: u16,
    /// Dropping bytes until the next `\n` (long line, or after a gap).
    discarding: Option<Discard>,
}

/// The first `byte` in `hay`. Eight bytes at a time (the word trick of
/// finding a zero byte in `word ^ byte * 0x01..01`): control-connection
/// lines are tens of bytes long and every one is scanned.
#[inline]
pub(crate) fn find_byte(hay: &[u8], byte: u8) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let pattern = LO * u64::from(byte);
    let mut chunks = hay.chunks_exact(8);
    let mut at = 0;
    for chunk in chunks.by_ref() {
        let x = u64::from_le_bytes(chunk.try_into().expect("8 bytes")) ^ pattern;
        let found = x.wrapping_sub(LO) & !x & HI;
        if found != 0 {
            // The lowest flagged byte is exact (only bytes above a real
            // zero byte can be flagged falsely).
            return Some(at + found.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == byte)
        .map(|i| at + i)
}

/// Strip the end-of-line marker's `\r`; None when the line is too long.
fn finish(line: &[u8]) -> Option<&[u8]> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    (line.len() <= MAX_LINE).then_some(line)
}

impl LineBuf {
    /// Append to the partial line (the caller checked that it fits).
    fn extend(&mut self, bytes: &[u8]) -> &[u8] {
        let buf = self
            .partial
            .get_or_insert_with(|| Box::new([0; MAX_LINE + 1]));
        let (from, to) = (usize::from(self.len), usize::from(self.len) + bytes.len());
        buf[from..to].copy_from_slice(bytes);
        self.len = to as u16;
        &buf[..to]
    }

    /// Feed in-order bytes; `on_line` gets each [`Line`] event with the
    /// number of bytes of `data` up to and including its `\n`.
    pub fn push(&mut self, data: &[u8], mut on_line: impl FnMut(Line<'_>, usize)) {
        let mut rest = data;
        while let Some(nl) = find_byte(rest, b'\n') {
            let (head, tail) = (&rest[..nl], &rest[nl + 1..]);
            let end = data.len() - tail.len();
            rest = tail;
            match self.discarding.take() {
                Some(Discard::Long) => on_line(Line::TooLong, end),
                Some(Discard::AfterGap) => on_line(Line::Synced, end),
                None => {
                    let pending = usize::from(self.len);
                    let whole = if pending == 0 {
                        finish(head)
                    } else if pending + head.len() <= MAX_LINE + 1 {
                        finish(self.extend(head))
                    } else {
                        None
                    };
                    match whole {
                        Some(line) => on_line(Line::Whole(line), end),
                        None => on_line(Line::TooLong, end),
                    }
                }
            }
            self.len = 0;
        }
        if self.discarding.is_none() && !rest.is_empty() {
            // +1: the `\r` of the end-of-line marker may already be here.
            if usize::from(self.len) + rest.len() > MAX_LINE + 1 {
                self.len = 0;
                self.discarding = Some(Discard::Long);
            } else {
                self.extend(rest);
            }
        }
    }

    /// Bytes were lost before what comes next: drop any partial line and
    /// everything up to the next end of line.
    pub fn resync(&mut self) {
        self.len = 0;
        self.discarding = Some(Discard::AfterGap);
    }

    /// Bytes held for an unfinished line (for memory accounting).
    pub fn pending(&self) -> usize {
        usize::from(self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lines(buf: &mut LineBuf, chunks: &[&[u8]]) -> (Vec<Vec<u8>>, u32) {
        let mut out = Vec::new();
        let mut long = 0;
        for c in chunks {
            buf.push(c, |l, end| {
                assert_eq!(c[end - 1], b'\n');
                match l {
                    Line::Whole(l) => out.push(l.to_vec()),
                    Line::TooLong => long += 1,
                    Line::Synced => {}
                }
            });
        }
        (out, long)
    }

    proptest! {
        #[test]
        fn find_byte_is_position(hay in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(0u8), Just(0x8a), any::<u8>()], 0..40), byte in prop_oneof![Just(b'\n'), any::<u8>()]) {
            prop_assert_eq!(find_byte(&hay, byte), hay.iter().position(|&b| b == byte));
        }
    }

    #[test]
    fn several_lines_in_one_segment() {
        let (out, _) = lines(&mut LineBuf::default(), &[b"PASV\r\nEPSV\nLIST\r\n"]);
        assert_eq!(
            out,
            vec![b"PASV".to_vec(), b"EPSV".to_vec(), b"LIST".to_vec()]
        );
    }

    #[test]
    fn split_mid_word_is_one_line() {
        let (out, _) = lines(
            &mut LineBuf::default(),
            &[b"PO", b"RT 1,2,3,4,5,6\r", b"\n"],
        );
        assert_eq!(out, vec![b"PORT 1,2,3,4,5,6".to_vec()]);
    }

    #[test]
    fn smuggled_command_stays_inside_its_line() {
        let (out, _) = lines(
            &mut LineBuf::default(),
            &[b"NOOP ", b"PORT 1,2,3,4,5,6\r\n"],
        );
        assert_eq!(out, vec![b"NOOP PORT 1,2,3,4,5,6".to_vec()]);
    }

    #[test]
    fn unterminated_line_is_never_handed_out() {
        let (out, _) = lines(&mut LineBuf::default(), &[b"PORT 1,2,3,4,5,6"]);
        assert!(out.is_empty());
    }

    #[test]
    fn long_line_discarded_to_its_end() {
        let big = vec![b'A'; MAX_LINE + 10];
        let (out, long) = lines(
            &mut LineBuf::default(),
            &[&big, b"PORT 1,2,3,4,5,6\r\nPASV\r\n"],
        );
        assert_eq!(out, vec![b"PASV".to_vec()]);
        assert_eq!(long, 1);
    }

    #[test]
    fn long_line_in_one_segment() {
        let mut seg = vec![b'A'; MAX_LINE + 1];
        seg.extend_from_slice(b"\r\nPASV\r\n");
        let (out, long) = lines(&mut LineBuf::default(), &[&seg]);
        assert_eq!(out, vec![b"PASV".to_vec()]);
        assert_eq!(long, 1);
    }

    #[test]
    fn max_line_is_accepted_with_crlf_split() {
        let line = vec![b'A'; MAX_LINE];
        let (out, long) = lines(&mut LineBuf::default(), &[&line, b"\r", b"\n"]);
        assert_eq!(long, 0);
        assert_eq!(out, vec![line]);
    }

    #[test]
    fn resync_waits_for_a_proven_boundary() {
        let mut b = LineBuf::default();
        let _ = lines(&mut b, &[b"NOO"]);
        b.resync();
        let (out, _) = lines(&mut b, &[b"P PORT 1,2,3,4,5,6\r\nPASV\r\n"]);
        assert_eq!(out, vec![b"PASV".to_vec()]);
    }

    proptest! {
        #[test]
        fn any_segmentation_yields_the_same_lines(
            text in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'P'), any::<u8>()], 0..2000),
            cuts in proptest::collection::vec(0usize..2000, 0..20),
        ) {
            let (whole, long_whole) = lines(&mut LineBuf::default(), &[&text]);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(text.len())).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut last = 0;
            for c in cuts { chunks.push(&text[last..c]); last = c; }
            chunks.push(&text[last..]);
            let (split, long_split) = lines(&mut LineBuf::default(), &chunks);
            prop_assert_eq!(whole, split);
            prop_assert_eq!(long_whole, long_split);
        }
    }
}

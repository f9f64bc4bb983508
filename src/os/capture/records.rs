//! Classic pcap files read straight from the file, a large buffer at a
//! time, for replays whose filter runs natively (see `super::tcpport`).

use std::path::Path;

use super::Frame;

/// Read buffer of [`Records`]: many packets per read, and room for the
/// longest record libpcap accepts.
pub(super) const RECORDS_BUFFER: usize = (256 + 4) << 10;
/// Header of a classic pcap file.
const FILE_HEADER: usize = 24;
/// Header of each record in it: seconds, microseconds, captured length,
/// length on the wire.
const RECORD_HEADER: usize = 16;
/// The largest snapshot length libpcap accepts for Ethernet.
const MAX_SNAPLEN: u32 = 262_144;

/// The records of a classic pcap file (microsecond timestamps, version
/// 2.4, either byte order), read straight from the file. Used only while
/// every record is plain: its header and bytes are all there and it is no
/// longer than the snapshot length. Anything else is left to libpcap (see
/// [`Records::run`]).
pub(super) struct Records {
    file: std::fs::File,
    buf: Box<[u8]>,
    /// The unread bytes are `buf[at..end]`.
    at: usize,
    end: usize,
    swapped: bool,
    snaplen: u32,
}

impl Records {
    /// The records of the file at `path`, if it is a regular file in the
    /// classic format; None for anything else (libpcap reads it).
    pub(super) fn open(path: &Path, buffer: usize) -> Option<Records> {
        use std::io::Read;
        if path == Path::new("-") {
            return None; // libpcap reads standard input
        }
        let mut file = std::fs::File::open(path).ok()?;
        if !file.metadata().ok()?.is_file() {
            return None;
        }
        let mut h = [0u8; FILE_HEADER];
        file.read_exact(&mut h).ok()?;
        let swapped = match u32::from_le_bytes([h[0], h[1], h[2], h[3]]) {
            0xa1b2_c3d4 => false,
            0xd4c3_b2a1 => true,
            _ => return None,
        };
        let word = |at: usize| {
            let v = u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
            if swapped { v.swap_bytes() } else { v }
        };
        let (major, minor) = (
            u16::from_le_bytes([h[4], h[5]]),
            u16::from_le_bytes([h[6], h[7]]),
        );
        let (major, minor) = if swapped {
            (major.swap_bytes(), minor.swap_bytes())
        } else {
            (major, minor)
        };
        let snaplen = word(16);
        if (major, minor) != (2, 4) || snaplen == 0 || snaplen > MAX_SNAPLEN {
            return None;
        }
        Some(Records {
            file,
            buf: vec![0; buffer].into_boxed_slice(),
            at: 0,
            end: 0,
            swapped,
            snaplen,
        })
    }

    /// Make `n` unread bytes available: Some(false) when the file ends
    /// first, None on a read error or when `n` does not fit the buffer.
    #[inline]
    fn fill(&mut self, n: usize) -> Option<bool> {
        if self.end - self.at >= n {
            return Some(true);
        }
        self.refill(n)
    }

    /// Move the unread bytes to the front and read until `n` are there.
    #[cold]
    fn refill(&mut self, n: usize) -> Option<bool> {
        use std::io::Read;
        if n > self.buf.len() {
            return None;
        }
        self.buf.copy_within(self.at..self.end, 0);
        self.end -= self.at;
        self.at = 0;
        while self.end < n {
            match self.file.read(&mut self.buf[self.end..]) {
                Ok(0) => return Some(false),
                Ok(k) => self.end += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
        Some(true)
    }

    /// Hand the records to `f` in order. None when all were read; else
    /// how many were handed out before the first one that is not plain
    /// (cut short, too long, unreadable), for libpcap to take over from.
    pub(super) fn run(&mut self, f: &mut impl FnMut(Frame<'_>)) -> Option<u64> {
        let mut done = 0u64;
        loop {
            match self.fill(RECORD_HEADER) {
                Some(true) => {}
                Some(false) if self.end == self.at => return None,
                _ => return Some(done),
            }
            let h = &self.buf[self.at..self.at + RECORD_HEADER];
            let word = |at: usize| {
                let v = u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
                if self.swapped { v.swap_bytes() } else { v }
            };
            let (sec, usec, caplen, wire) = (word(0), word(4), word(8), word(12));
            if caplen > self.snaplen || caplen > wire {
                return Some(done);
            }
            let len = RECORD_HEADER + caplen as usize;
            if self.fill(len) != Some(true) {
                return Some(done);
            }
            let data = &self.buf[self.at + RECORD_HEADER..self.at + len];
            f(Frame {
                ts: u64::from(sec) * 1_000_000 + u64::from(usec),
                data,
            });
            self.at += len;
            done += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::super::File;
    use super::*;

    /// A record: seconds, microseconds, wire length, captured bytes.
    type Rec = (u32, u32, u32, Vec<u8>);

    /// A classic pcap file of Ethernet records, in either byte order, then
    /// `tail` bytes.
    fn pcap_file(name: &str, swapped: bool, snaplen: u32, recs: &[Rec], tail: &[u8]) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "ftpsesame-capture-{}-{name}.pcap",
            std::process::id()
        ));
        let w32 = |v: u32| {
            if swapped {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let w16 = |v: u16| {
            if swapped {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut b = Vec::new();
        b.extend_from_slice(&w32(0xa1b2_c3d4));
        b.extend_from_slice(&w16(2));
        b.extend_from_slice(&w16(4));
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(&w32(snaplen));
        b.extend_from_slice(&w32(1));
        for (sec, usec, wire, data) in recs {
            b.extend_from_slice(&w32(*sec));
            b.extend_from_slice(&w32(*usec));
            b.extend_from_slice(&w32(data.len() as u32));
            b.extend_from_slice(&w32(*wire));
            b.extend_from_slice(data);
        }
        b.extend_from_slice(tail);
        std::fs::write(&path, b).unwrap();
        path
    }

    /// A TCP/IPv4 frame to or from port 21 (`to21`), or between others,
    /// `extra` bytes of payload long.
    fn ftp_frame(to21: bool, extra: usize, tag: u8) -> Vec<u8> {
        let mut f = vec![tag; 54 + extra];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[20..22].copy_from_slice(&[0x40, 0x00]);
        f[23] = 6;
        let (sp, dp) = if to21 { (40000u16, 21u16) } else { (40000, 80) };
        f[34..36].copy_from_slice(&sp.to_be_bytes());
        f[36..38].copy_from_slice(&dp.to_be_bytes());
        f
    }

    /// Everything `run` hands out, and how it ended; through libpcap only
    /// (`buffer` None) or read here with a buffer of `buffer` bytes.
    fn replay(path: &Path, buffer: Option<usize>) -> (Vec<(u64, Vec<u8>)>, Option<String>) {
        let mut file = File::open(path, "tcp and port 21").unwrap();
        assert!(file.native.is_some());
        file.records = buffer.and_then(|n| Records::open(path, n));
        assert_eq!(file.records.is_some(), buffer.is_some());
        let mut got = Vec::new();
        let end = file.run(|f| got.push((f.ts, f.data.to_vec())));
        (got, end.err().map(|e| e.to_string()))
    }

    #[test]
    fn records_read_here_are_the_ones_libpcap_reads() {
        let recs: Vec<Rec> = (0..40u32)
            .map(|i| {
                let f = ftp_frame(i % 3 != 0, (i as usize * 7) % 60, i as u8);
                (1_700_000_000 + i, i * 12345 % 1_000_000, f.len() as u32, f)
            })
            .collect();
        let mut long = recs.clone();
        long[20].3 = ftp_frame(true, 300, 7); // longer than the snapshot length
        long[20].2 = long[20].3.len() as u32;
        let mut cut_wire = recs.clone();
        cut_wire[5].2 = 10; // captured more than was on the wire
        // A record header promising 60 bytes, and 20 of them.
        let mut cut = [0u8; 36];
        cut[8..12].copy_from_slice(&60u32.to_le_bytes());
        cut[12..16].copy_from_slice(&60u32.to_le_bytes());
        let cases = [
            ("plain", false, 65535, &recs[..], &b""[..]),
            ("swapped", true, 65535, &recs, b""),
            ("long", false, 200, &long, b""),
            ("wire", false, 65535, &cut_wire, b""),
            ("cut-header", false, 65535, &recs, &[1, 2, 3]),
            ("cut-data", false, 65535, &recs, &cut),
        ];
        for (name, swapped, snaplen, recs, tail) in cases {
            let path = pcap_file(name, swapped, snaplen, recs, tail);
            let want = replay(&path, None);
            assert!(!want.0.is_empty(), "{name}");
            for buffer in [RECORDS_BUFFER, 200, 333] {
                assert_eq!(replay(&path, Some(buffer)), want, "{name}, buffer {buffer}");
            }
            std::fs::remove_file(&path).unwrap();
        }
    }
}

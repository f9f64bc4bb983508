//! Writes the committed seed corpus under `fuzz/seeds/<target>/`.
//!
//! Run once from `fuzz/` with `cargo run --example gen_seeds`; the output is
//! deterministic, so re-running only changes files when this generator
//! changes. Seeds are real FTP control exchanges (PASV/227, PORT/200,
//! EPSV/229, EPRT/200, AUTH/234) built with the test suite's pcap helper,
//! so the fuzzer starts from inputs that reach deep into the pipeline.

#[path = "../../tests/support/pcapgen.rs"]
mod pcapgen;

use std::fs;
use std::net::SocketAddr;
use std::path::Path;

use pcapgen::Conversation;

/// The control-connection lines of one exchange: (from_server, line).
type Dialogue = &'static [(bool, &'static [u8])];

const PASV: Dialogue = &[
    (true, b"220 ready\r\n"),
    (false, b"USER ftp\r\n"),
    (true, b"331 password\r\n"),
    (false, b"PASS x\r\n"),
    (true, b"230 ok\r\n"),
    (false, b"PASV\r\n"),
    (true, b"227 Entering Passive Mode (198,51,100,2,195,92)\r\n"),
    (false, b"RETR f\r\n"),
    (true, b"150 opening\r\n"),
    (true, b"226 done\r\n"),
];

const PORT: Dialogue = &[
    (true, b"220-welcome\r\n220 ready\r\n"),
    (false, b"PORT 192,0,2,2,195,80\r\n"),
    (true, b"200 PORT ok\r\n"),
    (false, b"LIST\r\n"),
    (true, b"150 here\r\n226 done\r\n"),
];

const EXTENDED: Dialogue = &[
    (true, b"220 ready\r\n"),
    (false, b"EPSV\r\n"),
    (true, b"229 Entering Extended Passive Mode (|||50012|)\r\n"),
    (false, b"EPRT |2|2001:db8::2|50013|\r\n"),
    (true, b"200 EPRT ok\r\n"),
];

const TLS: Dialogue = &[
    (true, b"220 ready\r\n"),
    (false, b"AUTH TLS\r\n"),
    (true, b"234 go ahead\r\n"),
    (false, b"\x16\x03\x01\x00\x05hello\r\nPASV\r\n"),
];

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

/// Handshake, the dialogue (one segment per entry), FIN exchange.
fn frames(client: &str, server: &str, d: Dialogue) -> Vec<Vec<u8>> {
    let mut c = Conversation::new(addr(client), addr(server), 1_000_000, 3_000_000_000);
    let mut out = c.handshake();
    for &(from_server, line) in d {
        out.push(if from_server {
            c.server(line)
        } else {
            c.client(line)
        });
    }
    out.extend(c.fin());
    out
}

/// Pipeline input: link byte, then (u32 delta, u16 len, frame) records;
/// the last record asks for a tick.
fn pipeline(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![0u8]; // Ethernet
    for (i, f) in frames.iter().enumerate() {
        let mut len = f.len() as u16;
        if i + 1 == frames.len() {
            len |= 0x8000;
        }
        out.extend_from_slice(&20_000u32.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(f);
    }
    out
}

/// The same frame under other link headers (decode's link byte first).
fn relinked(eth: &[u8]) -> Vec<Vec<u8>> {
    let ip = &eth[14..];
    let v6 = ip[0] >> 4 == 6;
    let mut out = vec![[&[0u8][..], eth].concat()];
    // Link::Raw
    out.push([&[3u8][..], ip].concat());
    // Link::Null: address family in host (here little-endian) order.
    let af: u32 = if v6 { 24 } else { 2 };
    out.push([&[1u8][..], &af.to_le_bytes(), ip].concat());
    // Link::LinuxSll: type, ARPHRD_ETHER, address length, address, protocol.
    let mut sll = vec![4u8, 0, 0, 0, 1, 0, 6];
    sll.extend_from_slice(&eth[6..12]);
    sll.extend_from_slice(&[0, 0]);
    sll.extend_from_slice(&eth[12..14]);
    out.push([&sll[..], ip].concat());
    // Link::Nflog: header (family, version, resource id), a packet header
    // TLV (forward hook) and the payload TLV, lengths and types in host
    // (here little-endian) order, each padded to four bytes.
    let tlv = |kind: u16, value: &[u8]| {
        let mut t = ((4 + value.len()) as u16).to_le_bytes().to_vec();
        t.extend_from_slice(&kind.to_le_bytes());
        t.extend_from_slice(value);
        t.resize(t.len().next_multiple_of(4), 0);
        t
    };
    let mut nflog = vec![9u8, if v6 { 10 } else { 2 }, 0, 0, 1];
    nflog.extend(tlv(1, &[eth[12], eth[13], 2, 0]));
    nflog.extend(tlv(9, ip));
    out.push(nflog);
    // Link::Pflog, OpenBSD's 100-byte header and FreeBSD's 69 (72) one,
    // both logging a pass on the way in.
    for (len, size, af6) in [(100u8, 100usize, 24u8), (69, 72, 28)] {
        let mut h = vec![0u8; size];
        h[0] = len;
        h[1] = if v6 { af6 } else { 2 };
        h[4..7].copy_from_slice(b"em0");
        h[60] = 1;
        out.push([&[10u8][..], &h, ip].concat());
    }
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).expect("mkdir");
    fs::write(dir.join(name), bytes).expect("write seed");
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let v4 = ("192.0.2.2:40594", "198.51.100.2:21");
    let v6 = ("[2001:db8::2]:40595", "[2001:db8:1::2]:21");
    let sets = [
        ("pasv", frames(v4.0, v4.1, PASV), PASV),
        ("port", frames(v4.0, v4.1, PORT), PORT),
        ("extended6", frames(v6.0, v6.1, EXTENDED), EXTENDED),
        ("tls", frames(v4.0, v4.1, TLS), TLS),
    ];
    for (name, frames, dialogue) in &sets {
        write(&root.join("pipeline"), name, &pipeline(frames));
        // decode: the first data segment of each direction, in seven framings.
        for (i, f) in frames[3..5].iter().enumerate() {
            for (j, framed) in relinked(f).iter().enumerate() {
                write(&root.join("decode"), &format!("{name}-{i}-{j}"), framed);
            }
        }
        // lines: the dialogue's bytes; the fuzzer cuts them into segments.
        let text: Vec<u8> = dialogue
            .iter()
            .flat_map(|(_, l)| l.iter().copied())
            .collect();
        write(&root.join("lines"), name, &text);
    }
    // Two sessions one after the other in one capture.
    let mut both = sets[0].1.clone();
    let other = frames("192.0.2.3:40600", "198.51.100.2:21", PORT);
    both.extend(other);
    write(&root.join("pipeline"), "two-sessions", &pipeline(&both));
}

//! Checks the pcap test-support writer against real readers: tcpdump and
//! libpcap (through the `pcap` crate), decoded with our own decoder.

#[path = "support/pcapgen.rs"]
mod pcapgen;

use std::fs::File;
use std::io::BufWriter;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;

use ftpsesame::core::decode::{Checksum, Control, Flags, Link, Segment, decode};
use pcapgen::{
    Conversation, LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_RAW, PcapWriter,
    break_tcp_checksum, ethernet_to_sll, offload_tcp_checksum, refresh_ipv4_checksum,
};

/// A capture file in the temp dir, removed on drop.
struct TempPcap(PathBuf);

impl TempPcap {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "ftpsesame-pcapgen-{}-{name}.pcap",
            std::process::id()
        ));
        TempPcap(p)
    }
}

impl Drop for TempPcap {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn write(path: &PathBuf, linktype: u32, frames: &[Vec<u8>]) {
    let mut w = PcapWriter::new(BufWriter::new(File::create(path).unwrap()), linktype).unwrap();
    for (i, f) in frames.iter().enumerate() {
        // 1.25 s after 2004-06-01, then 1 ms apart.
        w.packet(1_086_048_001_250_000 + i as u64 * 1000, f)
            .unwrap();
    }
    w.finish().unwrap();
}

const PASV_227: &[u8] = b"227 Entering Passive Mode (198,51,100,2,195,92)\r\n";

/// Close enough to 2^32 that the server's sequence numbers wrap.
const SERVER_ISN: u32 = 4_294_967_250;

/// A short FTP control session: handshake, banner, PASV, 227, close.
fn ftp_session(client: &str, server: &str) -> (Conversation, Vec<Vec<u8>>) {
    let client: SocketAddr = client.parse().unwrap();
    let server: SocketAddr = server.parse().unwrap();
    let mut c = Conversation::new(client, server, 1_000_000, SERVER_ISN);
    let mut frames = c.handshake();
    frames.push(c.server(b"220 ready\r\n"));
    frames.push(c.client(b"PASV\r\n"));
    frames.push(c.server(PASV_227));
    frames.extend(c.fin());
    (c, frames)
}

fn tcpdump(path: &PathBuf) -> Vec<String> {
    let out = Command::new("tcpdump")
        .args(["-r"])
        .arg(path)
        .args(["-nn", "-tt", "-S"])
        .output()
        .expect("tcpdump must be installed");
    assert!(
        out.status.success(),
        "tcpdump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Read with libpcap and decode every record.
// timeval's fields are narrower than i64 on some targets (FreeBSD tv_usec).
#[allow(clippy::unnecessary_cast)]
fn read_back(path: &PathBuf, expect_link: Link) -> Vec<(i64, i64, Vec<u8>)> {
    let mut cap = pcap::Capture::from_file(path).unwrap();
    let link = Link::from_linktype(cap.get_datalink().0).expect("supported link type");
    assert_eq!(link, expect_link);
    let mut out = Vec::new();
    while let Ok(p) = cap.next_packet() {
        assert_eq!(p.header.caplen, p.header.len);
        out.push((
            p.header.ts.tv_sec as i64,
            p.header.ts.tv_usec as i64,
            p.data.to_vec(),
        ));
    }
    out
}

fn seg(link: Link, frame: &[u8]) -> Segment<'_> {
    decode(link, frame).unwrap_or_else(|d| panic!("drop: {d}"))
}

#[test]
fn tcpdump_reads_ipv4_conversation() {
    let (_, frames) = ftp_session("192.0.2.2:40594", "198.51.100.2:21");
    let file = TempPcap::new("v4");
    write(&file.0, LINKTYPE_ETHERNET, &frames);
    let lines = tcpdump(&file.0);
    for l in &lines {
        println!("{l}");
    }
    assert_eq!(lines.len(), 9);
    assert!(lines[0].starts_with(
        "1086048001.250000 IP 192.0.2.2.40594 > 198.51.100.2.21: Flags [S], seq 1000000,"
    ));
    assert!(lines[1].contains(
        "IP 198.51.100.2.21 > 192.0.2.2.40594: Flags [S.], seq 4294967250, ack 1000001,"
    ));
    assert!(lines[3].contains("Flags [P.], seq 4294967251:4294967262, ack 1000001,"));
    assert!(lines[3].ends_with("length 11: FTP: 220 ready"));
    assert!(lines[5].ends_with("FTP: 227 Entering Passive Mode (198,51,100,2,195,92)"));
    assert!(lines[6].contains("192.0.2.2.40594 > 198.51.100.2.21: Flags [F.]"));
    assert!(lines[8].starts_with("1086048001.258000 "));
}

#[test]
fn tcpdump_reads_ipv6_conversation() {
    let (_, frames) = ftp_session("[2001:db8::2]:40594", "[2001:db8:1::2]:21");
    let file = TempPcap::new("v6");
    write(&file.0, LINKTYPE_ETHERNET, &frames);
    let lines = tcpdump(&file.0);
    assert_eq!(lines.len(), 9);
    assert!(
        lines[0].contains("IP6 2001:db8::2.40594 > 2001:db8:1::2.21: Flags [S]"),
        "{}",
        lines[0]
    );
    assert!(lines[4].contains("FTP: PASV"), "{}", lines[4]);
}

#[test]
fn conversation_decodes_to_expected_segments() {
    for (client, server) in [
        ("192.0.2.2:40594", "198.51.100.2:21"),
        ("[2001:db8::2]:40594", "[2001:db8:1::2]:21"),
    ] {
        let (conv, frames) = ftp_session(client, server);
        let file = TempPcap::new("decode");
        write(&file.0, LINKTYPE_ETHERNET, &frames);
        let records = read_back(&file.0, Link::Ethernet);
        assert_eq!(records.len(), 9);
        assert_eq!((records[0].0, records[0].1), (1_086_048_001, 250_000));
        assert_eq!((records[8].0, records[8].1), (1_086_048_001, 258_000));

        let segs: Vec<Segment<'_>> = records.iter().map(|r| seg(Link::Ethernet, &r.2)).collect();
        let (c, s) = (conv.client, conv.server);
        let isn = SERVER_ISN;
        let expect: [(SocketAddr, u32, u32, Flags, &[u8]); 9] = [
            (c, 1_000_000, 0, Flags::SYN, b""),
            (s, isn, 1_000_001, Flags::SYN | Flags::ACK, b""),
            (c, 1_000_001, isn + 1, Flags::ACK, b""),
            (
                s,
                isn + 1,
                1_000_001,
                Flags::PSH | Flags::ACK,
                b"220 ready\r\n",
            ),
            (c, 1_000_001, isn + 12, Flags::PSH | Flags::ACK, b"PASV\r\n"),
            (s, isn + 12, 1_000_007, Flags::PSH | Flags::ACK, PASV_227),
            // 49 reply bytes took the server's sequence number past 2^32.
            (c, 1_000_007, 15, Flags::FIN | Flags::ACK, b""),
            (s, 15, 1_000_008, Flags::FIN | Flags::ACK, b""),
            (c, 1_000_008, 16, Flags::ACK, b""),
        ];
        for (i, (g, (from, seq, ack, flags, payload))) in segs.iter().zip(expect).enumerate() {
            let to = if from == c { s } else { c };
            assert_eq!((g.src, g.sport), (from.ip(), from.port()), "frame {i}");
            assert_eq!((g.dst, g.dport), (to.ip(), to.port()), "frame {i}");
            assert_eq!((g.seq, g.ack, g.flags), (seq, ack, flags), "frame {i}");
            assert_eq!(g.payload, payload, "frame {i}");
            assert_eq!(g.checksum, Checksum::Valid, "frame {i}");
            assert_eq!(g.window, 65535, "frame {i}");
        }
        assert_eq!((conv.cseq, conv.sseq), (1_000_008, 16));
    }
}

#[test]
fn raw_injection_leaves_state_alone() {
    let client: SocketAddr = "192.0.2.2:40594".parse().unwrap();
    let server: SocketAddr = "198.51.100.2:21".parse().unwrap();
    let mut c = Conversation::new(client, server, 10, 20);
    c.handshake();
    let before = (c.cseq, c.sseq);
    let f = c.client_raw(5, b"PORT 1,2,3,4,5,6\r\n");
    let g = c.server_raw(99, b"227 x\r\n");
    assert_eq!((c.cseq, c.sseq), before);
    let (a, b) = (seg(Link::Ethernet, &f), seg(Link::Ethernet, &g));
    assert_eq!((a.seq, a.ack, a.sport), (5, 21, 40594));
    assert_eq!((b.seq, b.ack, b.sport), (99, 11, 21));
    assert_eq!(a.payload, b"PORT 1,2,3,4,5,6\r\n");
}

#[test]
fn raw_linktype_maps_through_libpcap() {
    // LINKTYPE_RAW (101) in the file comes back from libpcap as DLT_RAW
    // (12, or 14 on OpenBSD); both must decode as raw IP.
    let (_, frames) = ftp_session("[2001:db8::2]:40594", "[2001:db8:1::2]:21");
    let ip_only: Vec<Vec<u8>> = frames.iter().map(|f| f[14..].to_vec()).collect();
    let file = TempPcap::new("raw");
    write(&file.0, LINKTYPE_RAW, &ip_only);
    let records = read_back(&file.0, Link::Raw);
    assert_eq!(seg(Link::Raw, &records[4].2).payload, b"PASV\r\n");
    let lines = tcpdump(&file.0);
    assert_eq!(lines.len(), 9);
    assert!(
        lines[4].contains("IP6 2001:db8::2.40594 > 2001:db8:1::2.21: Flags [P.]"),
        "{}",
        lines[4]
    );
}

/// The lab's captures come from real stacks on veth links, which leave TCP
/// checksums to an offload that never happens: every one must decode as
/// Unverified (the pseudo-header sum), none as Bad.
#[test]
fn recorded_lab_captures_carry_offload_checksums() {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/captures"));
    let mut files = 0;
    let mut counts = [0usize; 3];
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "pcap") {
            continue;
        }
        files += 1;
        let mut cap = pcap::Capture::from_file(&path).unwrap();
        let link = Link::from_linktype(cap.get_datalink().0).expect("supported link type");
        let mut syns = 0;
        while let Ok(p) = cap.next_packet() {
            let seg = decode(link, p.data).unwrap_or_else(|d| panic!("{path:?}: drop: {d}"));
            counts[match seg.checksum {
                Checksum::Valid => 0,
                Checksum::Unverified => 1,
                Checksum::Bad => panic!("{path:?}: bad checksum"),
            }] += 1;
            syns += usize::from(seg.control == Control::Syn);
        }
        assert!(syns >= 1, "{path:?}");
    }
    assert!(files >= 18, "{files} captures");
    assert!(counts[1] > 0, "{counts:?}");
    println!("valid {}, unverified {}", counts[0], counts[1]);
}

/// The checksum helpers make exactly the states decode tells apart, and
/// a cooked capture of an outgoing frame reads back through libpcap.
#[test]
fn checksum_helpers_and_cooked_frames() {
    for (client, server) in [
        ("192.0.2.2:40594", "198.51.100.2:21"),
        ("[2001:db8::2]:40594", "[2001:db8:1::2]:21"),
    ] {
        let (_, frames) = ftp_session(client, server);
        let f = &frames[5]; // the 227 reply
        let mut bad = f.clone();
        break_tcp_checksum(&mut bad);
        assert_eq!(seg(Link::Ethernet, &bad).checksum, Checksum::Bad);
        let mut partial = f.clone();
        offload_tcp_checksum(&mut partial);
        assert_ne!(partial, *f);
        assert_eq!(seg(Link::Ethernet, &partial).checksum, Checksum::Unverified);
        // Outgoing on a cooked capture: unverified whatever the field says.
        let cooked: Vec<Vec<u8>> = [f.clone(), bad.clone(), partial]
            .iter()
            .map(|f| ethernet_to_sll(f, true))
            .collect();
        let file = TempPcap::new("sll");
        write(&file.0, LINKTYPE_LINUX_SLL, &cooked);
        let records = read_back(&file.0, Link::LinuxSll);
        for r in &records {
            let s = seg(Link::LinuxSll, &r.2);
            assert_eq!((s.checksum, s.payload), (Checksum::Unverified, PASV_227));
        }
        // Received, the broken one is bad again.
        let s = ethernet_to_sll(&bad, false);
        assert_eq!(seg(Link::LinuxSll, &s).checksum, Checksum::Bad);
    }
    // An edited IPv4 header needs its checksum refreshed.
    let (_, frames) = ftp_session("192.0.2.2:40594", "198.51.100.2:21");
    let mut f = frames[4].clone();
    f[14 + 8] = 5; // ttl
    assert!(decode(Link::Ethernet, &f).is_err());
    refresh_ipv4_checksum(&mut f);
    assert_eq!(seg(Link::Ethernet, &f).checksum, Checksum::Valid);
}

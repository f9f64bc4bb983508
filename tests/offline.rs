//! End-to-end through the real binary in offline mode: each test writes a
//! real pcap file, runs `ftpsesame -d -n -D 6 -r FILE` and checks the exact
//! log lines (the `allowing` lines are what admins grep for).

#[path = "support/pcapgen.rs"]
mod pcapgen;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output};

use pcapgen::{
    ACK, Conversation, LINKTYPE_ETHERNET, PSH, PcapWriter, SYN, TcpExtra, break_tcp_checksum,
    ethernet_tcp, ethernet_tcp_extra,
};

const C4: &str = "192.0.2.2:40594";
const S4: &str = "198.51.100.2:21";
const C6: &str = "[2001:db8:1::2]:40594";
const S6: &str = "[2001:db8:2::2]:21";

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Frames with timestamps 1 ms apart, written to a temporary pcap file.
struct Capture {
    frames: Vec<Vec<u8>>,
}

impl Capture {
    fn new() -> Self {
        Capture { frames: Vec::new() }
    }
    fn push(&mut self, f: Vec<u8>) {
        self.frames.push(f);
    }
    fn extend(&mut self, fs: Vec<Vec<u8>>) {
        self.frames.extend(fs);
    }
    fn write(&self, name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ftpsesame-offline-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.pcap"));
        let file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        let mut w = PcapWriter::new(file, LINKTYPE_ETHERNET).unwrap();
        for (i, f) in self.frames.iter().enumerate() {
            w.packet(1_700_000_000_000_000 + i as u64 * 1000, f)
                .unwrap();
        }
        w.finish().unwrap();
        path
    }
}

fn ftpsesame(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ftpsesame"))
        .args(args)
        .output()
        .unwrap()
}

/// Run the replay and return stderr lines.
fn replay(cap: &Capture, name: &str, extra: &[&str]) -> Vec<String> {
    let path = cap.write(name);
    let mut args = vec!["-d", "-n", "-D", "6"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-r", path.to_str().unwrap()]);
    let out = ftpsesame(&args);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "exit {:?}: {err}", out.status);
    err.lines().map(str::to_string).collect()
}

fn allowing(lines: &[String]) -> Vec<&str> {
    lines
        .iter()
        .filter(|l| l.contains(" allowing "))
        .map(String::as_str)
        .collect()
}

/// Replay `cap` with the default options and check its `allowing` lines
/// are `want`; returns all lines for further checks.
fn assert_allows(cap: &Capture, name: &str, want: &[&str]) -> Vec<String> {
    let lines = replay(cap, name, &[]);
    assert_eq!(allowing(&lines), want, "{lines:#?}");
    lines
}

fn stats_line(lines: &[String]) -> &str {
    lines
        .iter()
        .find(|l| l.starts_with("stats:"))
        .expect("stats line")
}

/// A capture of the handshake between `client` and `server` (initial
/// sequence numbers `client_isn`, `server_isn`) and the server's greeting,
/// with the conversation to go on from there.
fn greeted(
    client: &str,
    server: &str,
    client_isn: u32,
    server_isn: u32,
) -> (Capture, Conversation) {
    let mut cap = Capture::new();
    let mut c = Conversation::new(sa(client), sa(server), client_isn, server_isn);
    cap.extend(c.handshake());
    cap.push(c.server(b"220 ready\r\n"));
    (cap, c)
}

/// Greeting, then `exchanges` of (client line(s), server line(s)), then FIN.
fn session(client: &str, server: &str, exchanges: &[(&[u8], &[u8])]) -> Capture {
    let (mut cap, mut c) = greeted(client, server, 1_000_000, 4_000_000_000);
    for (cmd, reply) in exchanges {
        cap.push(c.client(cmd));
        cap.push(c.server(reply));
    }
    cap.extend(c.fin());
    cap
}

#[test]
fn pasv_ipv4() {
    let cap = session(
        C4,
        S4,
        &[(
            b"PASV\r\n",
            b"227 Entering Passive Mode (198,51,100,2,195,80)\r\n",
        )],
    );
    let lines = replay(&cap, "pasv4", &[]);
    assert!(
        lines.contains(
            &"#1 session init: client 192.0.2.2:40594, server 198.51.100.2:21".to_string()
        ),
        "{lines:#?}"
    );
    assert!(
        lines.contains(&"#1 passive: 227 Entering Passive Mode (198,51,100,2,195,80)".to_string()),
        "{lines:#?}"
    );
    assert_eq!(
        allowing(&lines),
        ["#1 allowing 192.0.2.2 to 198.51.100.2 port 50000"]
    );
    assert!(
        lines.contains(&"#1 session finish".to_string()),
        "{lines:#?}"
    );
}

#[test]
fn epsv_ipv6() {
    let cap = session(
        C6,
        S6,
        &[(
            b"EPSV\r\n",
            b"229 Entering Extended Passive Mode (|||50001|)\r\n",
        )],
    );
    assert_allows(
        &cap,
        "epsv6",
        &["#1 allowing 2001:db8:1::2 to 2001:db8:2::2 port 50001"],
    );
}

#[test]
fn port_ipv4() {
    let cap = session(
        C4,
        S4,
        &[(
            b"PORT 192,0,2,2,195,82\r\n",
            b"200 PORT command successful\r\n",
        )],
    );
    let lines = replay(&cap, "port4", &[]);
    assert!(
        lines.contains(&"#1 active: PORT 192,0,2,2,195,82".to_string()),
        "{lines:#?}"
    );
    assert_eq!(
        allowing(&lines),
        ["#1 allowing 198.51.100.2 to 192.0.2.2 port 50002"]
    );
}

#[test]
fn eprt_ipv6_and_third_party_address_ignored() {
    let cap = session(
        C6,
        S6,
        &[
            (b"EPRT |2|2001:db8:1::2|50003|\r\n", b"200 EPRT ok\r\n"),
            (b"EPRT |2|2001:db8:99::9|50004|\r\n", b"200 EPRT ok\r\n"),
        ],
    );
    assert_allows(
        &cap,
        "eprt6",
        &[
            "#1 allowing 2001:db8:2::2 to 2001:db8:1::2 port 50003",
            "#1 allowing 2001:db8:2::2 to 2001:db8:1::2 port 50004",
        ],
    );
}

#[test]
fn eprt_ipv4_third_party() {
    let cap = session(
        C4,
        S4,
        &[(b"EPRT |1|203.0.113.9|50005|\r\n", b"200 EPRT ok\r\n")],
    );
    assert_allows(
        &cap,
        "eprt4",
        &["#1 allowing 198.51.100.2 to 192.0.2.2 port 50005"],
    );
}

#[test]
fn pipelined_commands_pair_with_their_replies() {
    let cap = session(
        C4,
        S4,
        &[(
            b"TYPE I\r\nPASV\r\nRETR file\r\n",
            b"200 Type set to I\r\n227 Entering Passive Mode (198,51,100,2,195,86)\r\n150 Opening\r\n226 Done\r\n",
        )],
    );
    assert_allows(
        &cap,
        "pipelined",
        &["#1 allowing 192.0.2.2 to 198.51.100.2 port 50006"],
    );
}

#[test]
fn multiline_and_preliminary_replies() {
    let cap = session(
        C4,
        S4,
        &[
            (
                b"NOOP\r\n",
                b"200-first\r\n200-227 (198,51,100,2,0,80)\r\n200 end\r\n",
            ),
            (
                b"PASV\r\n",
                b"120 wait\r\n227-Entering Passive Mode (198,51,100,2,195,87)\r\n227 done\r\n",
            ),
        ],
    );
    assert_allows(
        &cap,
        "multiline",
        &["#1 allowing 192.0.2.2 to 198.51.100.2 port 50007"],
    );
}

#[test]
fn split_mid_word_is_a_valid_port() {
    let (mut cap, mut c) = greeted(C4, S4, 7, 9);
    cap.push(c.client(b"PO"));
    cap.push(c.client(b"RT 192,0,2,2,195,88\r\n"));
    cap.push(c.server(b"200 PORT ok\r\n"));
    assert_allows(
        &cap,
        "split",
        &["#1 allowing 198.51.100.2 to 192.0.2.2 port 50008"],
    );
}

#[test]
fn smuggled_port_after_noop_opens_nothing() {
    let (mut cap, mut c) = greeted(C4, S4, 7, 9);
    cap.push(c.client(b"NOOP "));
    cap.push(c.client(b"PORT 192,0,2,2,195,80\r\n"));
    cap.push(c.server(b"200 NOOP ok.\r\n"));
    let lines = replay(&cap, "smuggle", &[]);
    assert!(allowing(&lines).is_empty(), "{lines:#?}");
    assert!(!lines.iter().any(|l| l.contains("active:")), "{lines:#?}");
}

#[test]
fn blind_injection_opens_nothing() {
    let (mut cap, mut c) = greeted(C4, S4, 1000, 5000);
    // Injected from outside with guessed sequence numbers, both directions.
    cap.push(c.client_raw(c.cseq.wrapping_add(77_777), b"PORT 192,0,2,2,195,80\r\n"));
    cap.push(c.server_raw(c.sseq.wrapping_sub(2_000_000), b"200 PORT ok\r\n"));
    cap.push(c.client_raw(0xdead_beef, b"PASV\r\n"));
    cap.push(c.server_raw(
        0x1234_5678,
        b"227 Entering Passive Mode (198,51,100,2,195,80)\r\n",
    ));
    // The real stream goes on and must still work.
    cap.push(c.client(b"PASV\r\n"));
    cap.push(c.server(b"227 Entering Passive Mode (198,51,100,2,195,89)\r\n"));
    let lines = assert_allows(
        &cap,
        "inject",
        &["#1 allowing 192.0.2.2 to 198.51.100.2 port 50009"],
    );
    let stats = stats_line(&lines);
    assert!(stats.contains("out-of-window 4"), "{stats}");
}

#[test]
fn retransmission_is_not_delivered_twice() {
    let (mut cap, mut c) = greeted(C4, S4, 1000, 5000);
    let seq = c.cseq;
    cap.push(c.client(b"PASV\r\n"));
    cap.push(c.client_raw(seq, b"PASV\r\n")); // a second PASV would pair wrongly
    cap.push(c.server(b"227 Entering Passive Mode (198,51,100,2,195,90)\r\n"));
    cap.push(c.client(b"NOOP\r\n"));
    cap.push(c.server(b"200 ok (198,51,100,2,195,91)\r\n"));
    assert_allows(
        &cap,
        "retrans",
        &["#1 allowing 192.0.2.2 to 198.51.100.2 port 50010"],
    );
}

#[test]
fn low_port_denied_and_malformed_refused() {
    let cap = session(
        C4,
        S4,
        &[
            (
                b"PASV\r\n",
                b"227 Entering Passive Mode (198,51,100,2,0,80)\r\n",
            ),
            (b"PORT 192,0,2,2,300,1\r\n", b"200 PORT ok\r\n"),
            (
                b"PASV\r\n",
                b"227 Entering Passive Mode (198,51,100,2,999,1)\r\n",
            ),
        ],
    );
    let lines = replay(&cap, "lowport", &[]);
    assert!(
        lines.contains(&"#1 denying low port 80 request".to_string()),
        "{lines:#?}"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("parse_port failed"))
            .count(),
        2,
        "{lines:#?}"
    );
    assert!(allowing(&lines).is_empty());
}

#[test]
fn rule_text_at_debug_level() {
    let cap = session(
        C4,
        S4,
        &[(
            b"PASV\r\n",
            b"227 Entering Passive Mode (198,51,100,2,195,80)\r\n",
        )],
    );
    let lines = replay(&cap, "debug", &["-D7", "-t", "ftpok", "-q", "ftp"]);
    assert!(
        lines.contains(
            &"#1 rule: pass in log inet proto tcp from 192.0.2.2 to 198.51.100.2 port 50000 flags S/SAFR keep state tag ftpok queue ftp"
                .to_string()
        ),
        "{lines:#?}"
    );
}

#[test]
fn syn_flood_beyond_max_sessions_does_not_lock_out() {
    let mut cap = Capture::new();
    let server = sa(S4);
    let flood = |cap: &mut Capture, from: u16, n: u16| {
        for i in 0..n {
            let src = SocketAddr::new("203.0.113.7".parse().unwrap(), from + i);
            cap.push(ethernet_tcp(src, server, u32::from(i) * 7919, 0, SYN, b""));
        }
    };
    flood(&mut cap, 10_000, 50);
    let mut c = Conversation::new(sa(C4), server, 1, 2);
    let hs = c.handshake();
    cap.push(hs[0].clone());
    flood(&mut cap, 20_000, 5);
    cap.push(hs[1].clone());
    cap.push(hs[2].clone());
    flood(&mut cap, 30_000, 50);
    cap.push(c.server(b"220 ready\r\n"));
    cap.push(c.client(b"PASV\r\n"));
    cap.push(c.server(b"227 Entering Passive Mode (198,51,100,2,195,80)\r\n"));
    let lines = replay(&cap, "flood", &["-m", "10"]);
    assert_eq!(
        allowing(&lines),
        ["#51 allowing 192.0.2.2 to 198.51.100.2 port 50000"]
    );
    let stats = stats_line(&lines);
    assert!(stats.contains("0 refused 96 evicted"), "{stats}");
}

#[test]
fn untrusted_before_handshake() {
    // Data before the server answered the SYN is not read.
    let mut cap = Capture::new();
    let mut c = Conversation::new(sa(C4), sa(S4), 1, 2);
    let hs = c.handshake();
    cap.push(hs[0].clone());
    cap.push(c.server_raw(3, b"227 Entering Passive Mode (198,51,100,2,195,80)\r\n"));
    assert!(allowing(&replay(&cap, "prehandshake", &[])).is_empty());
}

#[test]
fn missing_file_is_one_clear_line() {
    let out = ftpsesame(&["-d", "-r", "/nonexistent/x.pcap"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("/nonexistent/x.pcap"), "{err}");
}

#[test]
fn command_line_errors() {
    let usage = "usage: ftpsesame [-dnR] [-D level] [-i interface] [-m maxsessions] [-q queue] [-r file] [-T family/table] [-t tag] [expression]\n";
    for args in [&["-D", "8"][..], &["-x"], &["-D"], &["-m", "abc"]] {
        let out = ftpsesame(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), usage, "{args:?}");
    }
    let long = "x".repeat(64);
    let out = ftpsesame(&["-t", &long]);
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        (Some(1), "tag too long")
    );
    let out = ftpsesame(&["-q", &long]);
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        (Some(1), "queue too long")
    );
}

#[test]
fn live_capture_needs_root() {
    // As root, run the binary as nobody via setpriv (util-linux); as a user, run it directly.
    let bin = env!("CARGO_BIN_EXE_ftpsesame");
    let out = if nix::unistd::geteuid().is_root() {
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                bin,
                "-d",
            ])
            .output()
            .unwrap()
    } else {
        Command::new(bin).arg("-d").output().unwrap()
    };
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs to start as root"),
        "{out:?}"
    );
}

#[test]
fn active_hole_opens_at_the_command_and_closes_when_refused() {
    // Some servers (pyftpdlib) connect before they answer 200, so the hole
    // opens when the PORT is seen; a refusal closes it again.
    let cap = session(
        C4,
        S4,
        &[
            (
                b"PORT 192,0,2,2,195,92\r\n",
                b"500 Illegal PORT command\r\n",
            ),
            (b"EPRT |1|192.0.2.2|50013|\r\n", b"200 ok\r\n"),
        ],
    );
    let lines = replay(&cap, "refused", &["-D7"]);
    assert_eq!(
        allowing(&lines),
        [
            "#1 allowing 198.51.100.2 to 192.0.2.2 port 50012",
            "#1 allowing 198.51.100.2 to 192.0.2.2 port 50013"
        ]
    );
    let closed = lines
        .iter()
        .position(|l| l == "#1 active: refused by the server, port 50012 closed")
        .expect("closed");
    let second = lines
        .iter()
        .position(|l| l.ends_with("port 50013"))
        .unwrap();
    assert!(closed < second, "{lines:#?}");
}

#[test]
fn drop_lines_are_rate_limited_but_counted() {
    let mut cap = Capture::new();
    let c = Conversation::new(sa(C4), sa(S4), 1, 2);
    for i in 0..100u32 {
        let mut f = c.client_raw(i, b"PORT 192,0,2,2,195,80\r\n");
        f[14 + 6] |= 0x20; // IPv4 "more fragments"
        cap.push(f);
    }
    // All 100 frames carry timestamps within the same tenth of a second.
    let lines = replay(&cap, "fragments", &[]);
    let logged = lines.iter().filter(|l| *l == "drop: fragment").count();
    assert!((1..=10).contains(&logged), "{logged} drop lines");
    let stats = stats_line(&lines);
    assert!(stats.contains("fragment 100"), "{stats}");
}

#[test]
fn syn_from_port_21_is_not_an_ftp_client() {
    // A client connects from source port 21 to a service that reflects
    // what it is sent (an echo server on port 7).
    let (mut cap, mut c) = greeted("192.0.2.2:21", "198.51.100.2:7", 100, 900);
    cap.push(c.client(b"PASV\r\n"));
    cap.push(c.server(b"227 Entering Passive Mode (198,51,100,2,12,234)\r\n"));
    let lines = replay(&cap, "from21", &[]);
    assert!(allowing(&lines).is_empty(), "{lines:#?}");
    assert!(
        !lines.iter().any(|l| l.contains("session init")),
        "{lines:#?}"
    );
}

#[test]
fn non_standard_control_port_from_the_expression() {
    let cap = session(
        C4,
        "198.51.100.2:2121",
        &[(
            b"PASV\r\n",
            b"227 Entering Passive Mode (198,51,100,2,195,80)\r\n",
        )],
    );
    let path = cap.write("port2121");
    let run = |expr: &[&str]| {
        let mut args = vec!["-d", "-n", "-D", "6", "-r", path.to_str().unwrap()];
        args.extend_from_slice(expr);
        let out = ftpsesame(&args);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        err.lines().map(str::to_string).collect::<Vec<_>>()
    };
    // Every TCP packet is read, but 2121 is not a control port by default.
    assert!(allowing(&run(&["tcp"])).is_empty());
    assert_eq!(
        allowing(&run(&["tcp", "port", "2121"])),
        ["#1 allowing 192.0.2.2 to 198.51.100.2 port 50000"]
    );
}

#[test]
fn ipv4_mapped_ipv6_cannot_speak_for_the_server() {
    // The client's real SYN, ACK and PASV, and a "SYN/ACK", greeting and
    // 227 the client sends from the IPv4-mapped form of its own address
    // (the server never answers).
    let mut cap = Capture::new();
    let me = sa("[::ffff:192.0.2.2]:40594");
    let them = sa("[::ffff:198.51.100.2]:21");
    let (c, s) = (sa(C4), sa(S4));
    cap.push(ethernet_tcp(c, s, 1000, 0, SYN, b""));
    cap.push(ethernet_tcp(me, them, 5000, 1001, SYN | ACK, b""));
    cap.push(ethernet_tcp(c, s, 1001, 5001, ACK, b""));
    cap.push(ethernet_tcp(me, them, 5001, 1001, PSH | ACK, b"220 hi\r\n"));
    cap.push(ethernet_tcp(c, s, 1001, 5009, PSH | ACK, b"PASV\r\n"));
    cap.push(ethernet_tcp(
        me,
        them,
        5009,
        1007,
        PSH | ACK,
        b"227 Entering Passive Mode (198,51,100,2,12,234)\r\n",
    ));
    let lines = replay(&cap, "mapped", &[]);
    assert!(allowing(&lines).is_empty(), "{lines:#?}");
}

#[test]
fn lost_final_handshake_ack() {
    let mut cap = Capture::new();
    let mut c = Conversation::new(sa(C4), sa(S4), 1000, 5000);
    let hs = c.handshake();
    cap.push(hs[0].clone());
    cap.push(hs[1].clone()); // the client's ACK was not captured
    cap.push(c.server(b"220 ready\r\n"));
    cap.push(c.client(b"PASV\r\n"));
    cap.push(c.server(b"227 Entering Passive Mode (198,51,100,2,195,80)\r\n"));
    assert_allows(
        &cap,
        "lostack",
        &["#1 allowing 192.0.2.2 to 198.51.100.2 port 50000"],
    );
}

#[test]
fn discarded_long_line_pairs_with_its_own_reply() {
    let mut long = vec![b'A'; 600];
    long.extend_from_slice(b"\r\nPORT 192,0,2,2,195,80\r\n");
    let cap = session(
        C4,
        S4,
        &[(&long, b"500 Command line too long\r\n200 PORT ok\r\n")],
    );
    let lines = assert_allows(
        &cap,
        "longline",
        &["#1 allowing 198.51.100.2 to 192.0.2.2 port 50000"],
    );
    assert!(!lines.iter().any(|l| l.contains("closed")), "{lines:#?}");
    assert!(stats_line(&lines).contains("long lines 1"));
}

#[test]
fn unanswered_port_commands_keep_one_hole() {
    let (mut cap, mut c) = greeted(C4, S4, 1000, 5000);
    for i in 0..16u32 {
        let p = 50000 + i;
        cap.push(c.client(format!("PORT 192,0,2,2,{},{}\r\n", p / 256, p % 256).as_bytes()));
    }
    let lines = replay(&cap, "pileup", &[]);
    assert_eq!(allowing(&lines).len(), 16, "{lines:#?}");
    let closed: Vec<&String> = lines.iter().filter(|l| l.contains("no reply")).collect();
    assert_eq!(closed.len(), 15, "{lines:#?}");
    assert_eq!(closed[0], "#1 active: no reply, port 50000 closed");
    assert_eq!(closed[14], "#1 active: no reply, port 50014 closed");
    // At shutdown only the last one is still there to remove.
}

#[test]
fn bytes_the_server_discards_open_nothing() {
    // Each injected PORT is in sequence but a real TCP would drop it; the
    // NOOP the client then sends at the same place is what the server reads.
    type Forge = fn(&Conversation) -> Vec<u8>;
    let port = b"PORT 192,0,2,2,195,80\r\n";
    let cases: [(&str, Forge); 2] = [
        ("no ACK flag", |c| {
            ethernet_tcp(
                c.client,
                c.server,
                c.cseq,
                c.sseq,
                PSH,
                b"PORT 192,0,2,2,195,80\r\n",
            )
        }),
        ("ACK for data never sent", |c| {
            ethernet_tcp(
                c.client,
                c.server,
                c.cseq,
                c.sseq.wrapping_add(100_000),
                PSH | ACK,
                b"PORT 192,0,2,2,195,80\r\n",
            )
        }),
    ];
    for (name, forge) in cases {
        let (mut cap, mut c) = greeted(C4, S4, 1000, 5000);
        cap.push(forge(&c));
        let noop = b"NOOP\r\nNOOP\r\nHELP NOOP\r\n";
        assert_eq!(noop.len(), port.len());
        cap.push(c.client(noop));
        cap.push(c.server(b"200 ok\r\n200 ok\r\n200 ok\r\n"));
        let lines = replay(&cap, "discarded", &[]);
        assert!(allowing(&lines).is_empty(), "{name}: {lines:#?}");
    }
}

#[test]
fn gap_filled_with_different_bytes_reads_the_filler() {
    // A PORT arrives ahead of a gap; the gap is then filled by a segment
    // that covers it with other bytes. The server's TCP reads the filler.
    let (mut cap, mut c) = greeted(C4, S4, 1000, 5000);
    cap.push(c.client_raw(c.cseq.wrapping_add(6), b"PORT 192,0,2,2,195,80\r\n"));
    cap.push(c.client(b"NOOP\r\nXXXXXXXXXXXXXXXXXXXXX\r\n"));
    cap.push(c.server(b"200 ok\r\n500 what\r\n"));
    let lines = replay(&cap, "gapfill", &["-D", "7"]);
    assert!(allowing(&lines).is_empty(), "{lines:#?}");
    let read: Vec<&String> = lines.iter().filter(|l| l.contains(" command: ")).collect();
    assert_eq!(
        read,
        ["#1 command: NOOP", "#1 command: XXXXXXXXXXXXXXXXXXXXX"]
    );
}

/// The TCP window field `window` and a timestamp option with TSval `tsval`.
fn stamped(tsval: u32, window: u16) -> TcpExtra {
    TcpExtra {
        window,
        wscale: None,
        timestamp: Some((tsval, 0)),
    }
}

/// A handshake with timestamps on both SYNs (TSval starting at `ts`) and
/// the server's window `window`; the greeting follows.
fn timestamped(cap: &mut Capture, c: &mut Conversation, ts: u32, window: u16) {
    let client = |t: u32| stamped(t, 65535);
    let server = |t: u32| stamped(t, window);
    cap.push(ethernet_tcp_extra(
        c.client,
        c.server,
        c.cseq,
        0,
        SYN,
        client(ts),
        b"",
    ));
    c.cseq += 1;
    let ack = c.cseq;
    cap.push(ethernet_tcp_extra(
        c.server,
        c.client,
        c.sseq,
        ack,
        SYN | ACK,
        server(ts),
        b"",
    ));
    c.sseq += 1;
    let (cs, ss) = (c.cseq, c.sseq);
    cap.push(ethernet_tcp_extra(
        c.client,
        c.server,
        cs,
        ss,
        ACK,
        client(ts + 1),
        b"",
    ));
    let greeting = b"220 ready\r\n";
    cap.push(ethernet_tcp_extra(
        c.server,
        c.client,
        ss,
        cs,
        PSH | ACK,
        server(ts + 1),
        greeting,
    ));
    c.sseq += greeting.len() as u32;
}

#[test]
fn segments_the_server_drops_open_nothing() {
    // Each forged PORT is one a Linux receiver discards; the client's real
    // bytes at the same place are what the server reads.
    let port = b"PORT 192,0,2,2,195,80\r\n";
    let noop = b"NOOP\r\nNOOP\r\nHELP NOOP\r\n";
    let ts = |t: u32| stamped(t, 65535);
    type Forge = fn(&Conversation, &[u8]) -> Vec<u8>;
    let cases: [(&str, Forge, u16); 5] = [
        (
            "bad TCP checksum",
            |c, p| {
                let mut f = c.client_raw(c.cseq, p);
                break_tcp_checksum(&mut f);
                f
            },
            65535,
        ),
        (
            "bad IP header checksum",
            |c, p| {
                let mut f = c.client_raw(c.cseq, p);
                f[14 + 10] ^= 0x41;
                f
            },
            65535,
        ),
        (
            "old timestamp",
            |c, p| {
                let x = stamped(1000, 65535);
                ethernet_tcp_extra(c.client, c.server, c.cseq, c.sseq, PSH | ACK, x, p)
            },
            65535,
        ),
        (
            "into a zero window",
            |c, p| {
                let x = stamped(5001, 65535);
                ethernet_tcp_extra(c.client, c.server, c.cseq, c.sseq, PSH | ACK, x, p)
            },
            0,
        ),
        (
            "overlapping, acknowledging unsent bytes",
            |c, p| {
                let x = stamped(5001, 65535);
                let ack = c.sseq.wrapping_add(70_000);
                ethernet_tcp_extra(c.client, c.server, c.cseq - 2, ack, PSH | ACK, x, p)
            },
            65535,
        ),
    ];
    for (name, forge, window) in cases {
        let mut cap = Capture::new();
        let mut c = Conversation::new(sa(C4), sa(S4), 1000, 5000);
        timestamped(&mut cap, &mut c, 5000, window);
        let mut forged = port.to_vec();
        if name.starts_with("overlapping") {
            forged = [&b"\r\n"[..], port].concat();
        }
        cap.push(forge(&c, &forged));
        // The server opens its window (if it was closed) and the client
        // sends what the server really reads.
        let (cs, ss) = (c.cseq, c.sseq);
        cap.push(ethernet_tcp_extra(
            c.server,
            c.client,
            ss,
            cs,
            ACK,
            ts(5002),
            b"",
        ));
        cap.push(ethernet_tcp_extra(
            c.client,
            c.server,
            cs,
            ss,
            PSH | ACK,
            ts(5003),
            noop,
        ));
        c.cseq += noop.len() as u32;
        let reply = b"200 ok\r\n200 ok\r\n214 ok\r\n";
        cap.push(ethernet_tcp_extra(
            c.server,
            c.client,
            ss,
            c.cseq,
            PSH | ACK,
            ts(5004),
            reply,
        ));
        let lines = replay(&cap, "dropped", &["-D", "7"]);
        assert!(allowing(&lines).is_empty(), "{name}: {lines:#?}");
        let read: Vec<&String> = lines.iter().filter(|l| l.contains(" command: ")).collect();
        assert_eq!(
            read,
            [
                "#1 command: NOOP",
                "#1 command: NOOP",
                "#1 command: HELP NOOP"
            ],
            "{name}"
        );
    }
}

/// A long anonymous session: `n` rounds of CWD, TYPE I, PASV, RETR; the
/// frames of round `lost` carrying TYPE I, its 200 and PASV are not
/// captured (both directions at once, as a busy box drops them).
fn long_session(n: u32, lost: Option<u32>) -> (Capture, Vec<u16>) {
    let (mut cap, mut c) = greeted(C4, S4, 77_000, 3_000_000_000);
    cap.push(c.client(b"USER anonymous\r\n"));
    cap.push(c.server(b"331 send password\r\n"));
    cap.push(c.client(b"PASS x@\r\n"));
    cap.push(c.server(b"230 welcome\r\n"));
    let mut ports = Vec::new();
    for i in 0..n {
        let port = 40000 + i as u16;
        ports.push(port);
        cap.push(c.client(format!("CWD /pub/{i}\r\n").as_bytes()));
        cap.push(c.server(b"250 ok\r\n"));
        let type_i = c.client(b"TYPE I\r\n");
        let ok = c.server(b"200 Type set to I\r\n");
        let pasv = c.client(b"PASV\r\n");
        if lost != Some(i) {
            cap.push(type_i);
            cap.push(ok);
            cap.push(pasv);
        }
        let reply = format!(
            "227 Entering Passive Mode (198,51,100,2,{},{})\r\n",
            port / 256,
            port % 256
        );
        cap.push(c.server(reply.as_bytes()));
        cap.push(c.client(b"RETR file\r\n"));
        cap.push(c.server(b"150 Opening BINARY mode data connection\r\n"));
        cap.push(c.server(b"226 Transfer complete\r\n"));
    }
    cap.extend(c.fin());
    (cap, ports)
}

fn allowed_ports(lines: &[String]) -> Vec<u16> {
    allowing(lines)
        .iter()
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn capture_loss_in_both_directions_recovers() {
    let (cap, ports) = long_session(300, Some(100));
    let lines = replay(&cap, "triple-loss", &[]);
    let got = allowed_ports(&lines);
    // Round 100 is lost with its PASV; round 101, whose replies follow a
    // resynchronisation, may be lost too; every other round opens.
    let want: Vec<u16> = ports
        .iter()
        .copied()
        .filter(|&p| p != 40100 && p != 40101)
        .collect();
    let missing: Vec<&u16> = want.iter().filter(|p| !got.contains(p)).collect();
    assert!(missing.is_empty(), "never opened: {missing:?}");
    assert!(got.iter().all(|p| ports.contains(p)), "{got:?}");
    assert!(lines.contains(&"#1 session finish".to_string()));
}

#[test]
fn guessed_numbers_after_a_gap_do_not_resynchronise() {
    // After the loss, an attacker injects a 227 and a matching client
    // segment with guessed numbers that agree with each other.
    let (mut cap, _) = long_session(2, Some(1));
    let fin = cap.frames.split_off(cap.frames.len() - 3);
    let (cl, sv) = (sa(C4), sa(S4));
    let reply = b"227 Entering Passive Mode (198,51,100,2,12,234)\r\n";
    for k in 0..64u32 {
        let cs = 0x1000_0000u32.wrapping_mul(k + 1).wrapping_add(12_345);
        let ss = 0x0900_0000u32.wrapping_mul(k + 3).wrapping_add(999);
        let end = ss.wrapping_add(reply.len() as u32);
        cap.push(ethernet_tcp(sv, cl, ss, cs, PSH | ACK, reply));
        cap.push(ethernet_tcp(cl, sv, cs, end, PSH | ACK, b"PASV\r\n"));
        cap.push(ethernet_tcp(sv, cl, end, cs + 6, PSH | ACK, reply));
    }
    cap.frames.extend(fin);
    let lines = replay(&cap, "guessed", &[]);
    assert!(!allowed_ports(&lines).contains(&3306), "{lines:#?}");
}

/// A capture that starts mid-session (the daemon was restarted): the
/// connection is picked up from the first command and its reply, the
/// negotiations after them open, in both families.
#[test]
fn a_capture_that_starts_mid_session_is_picked_up() {
    let mut cap = Capture::new();
    for (client, server, reply) in [
        (
            C4,
            S4,
            &b"227 Entering Passive Mode (198,51,100,2,195,80)\r\n"[..],
        ),
        (
            C6,
            S6,
            &b"229 Entering Extended Passive Mode (|||50000|)\r\n"[..],
        ),
    ] {
        let mut c = Conversation::new(sa(client), sa(server), 7_000_000, 3_000_000_000);
        let _unseen = (c.handshake(), c.server(b"220 ready\r\n"));
        let pasv: &[u8] = if client == C4 {
            b"PASV\r\n"
        } else {
            b"EPSV\r\n"
        };
        // The first pair only syncs: its command was not seen whole.
        cap.push(c.client(pasv));
        cap.push(c.server(reply));
        cap.push(c.client(pasv));
        cap.push(c.server(reply));
        cap.extend(c.fin());
    }
    let lines = assert_allows(
        &cap,
        "mid-session",
        &[
            "#1 allowing 192.0.2.2 to 198.51.100.2 port 50000",
            "#2 allowing 2001:db8:1::2 to 2001:db8:2::2 port 50000",
        ],
    );
    let picked: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("session picked up"))
        .collect();
    assert_eq!(
        picked,
        [
            "#1 session picked up: client 192.0.2.2:40594, server 198.51.100.2:21",
            "#2 session picked up: client [2001:db8:1::2]:40594, server [2001:db8:2::2]:21",
        ],
        "{lines:#?}"
    );
    assert!(
        stats_line(&lines).contains("0 active 0 total 2 picked up 0 contested"),
        "{}",
        stats_line(&lines)
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("session finish"))
            .count(),
        2
    );
}

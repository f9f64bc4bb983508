//! Sources after the firewall's decision, offline: every lab recording in
//! tests/captures (Ethernet) rewritten as pf would log it to pflog (both
//! header layouts) and as an NFLOG rule would log it, then replayed with
//! `ftpsesame -r`. A passed packet must open exactly the holes the Ethernet
//! original opens; a packet pf blocked was never delivered and must open
//! nothing; a packet logged on two interfaces is still one packet.

#[path = "support/logframes.rs"]
mod logframes;
#[path = "support/pcapgen.rs"]
mod pcapgen;

use std::path::{Path, PathBuf};
use std::process::Command;

use logframes::{
    Action, LINKTYPE_NFLOG, LINKTYPE_PFLOG, Pflog, ip_packet, nflog_frame, pflog_frame, read_pcap,
    tcp_payload,
};
use pcapgen::{LINKTYPE_ETHERNET, PcapWriter};

type Frames = Vec<(u64, Vec<u8>)>;

/// The Ethernet recordings (the `-nflog` ones are already logs).
fn recordings() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/captures");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "pcap")
                && !p.file_stem().unwrap().to_str().unwrap().ends_with("-nflog")
        })
        .collect();
    v.sort();
    assert_eq!(v.len(), 18, "three servers, six negotiations each");
    v
}

fn ethernet(path: &Path) -> Frames {
    let (linktype, frames) = read_pcap(path);
    assert_eq!(linktype, LINKTYPE_ETHERNET, "{}", path.display());
    frames
}

fn write(name: &str, linktype: u32, frames: &Frames) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ftpsesame-logsources-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.pcap"));
    let file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut w = PcapWriter::new(file, linktype).unwrap();
    for (ts, f) in frames {
        w.packet(*ts, f).unwrap();
    }
    w.finish().unwrap();
    path
}

struct Replay {
    allowing: Vec<String>,
    stats: String,
    log: String,
}

/// `ftpsesame -d -n -D 6 -r FILE` with the default expression, which a
/// log capture does not apply as a filter (libpcap cannot filter NFLOG, and
/// on pflog it would test the address family against Linux's AF_INET6).
fn replay(path: &Path) -> Replay {
    let out = Command::new(env!("CARGO_BIN_EXE_ftpsesame"))
        .args(["-d", "-n", "-D", "6", "-r"])
        .arg(path)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{}: {log}", path.display());
    let allowing = log
        .lines()
        .filter(|l| l.contains(" allowing "))
        .map(str::to_string)
        .collect();
    let stats = log
        .lines()
        .find(|l| l.starts_with("stats:"))
        .unwrap_or_else(|| panic!("{}: no stats line:\n{log}", path.display()))
        .to_string();
    Replay {
        allowing,
        stats,
        log,
    }
}

fn expected(path: &Path) -> Vec<String> {
    let want: Vec<String> = std::fs::read_to_string(path.with_extension("allowing"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert!(!want.is_empty(), "{}", path.display());
    want
}

fn name(path: &Path) -> &str {
    path.file_stem().unwrap().to_str().unwrap()
}

fn pflog(frames: &Frames, layout: Pflog, action: impl Fn(&[u8]) -> Action) -> Frames {
    frames
        .iter()
        .map(|(ts, f)| (*ts, pflog_frame(f, layout, action(f), "em0")))
        .collect()
}

/// Write `frames` as a pflog capture named after `rec` and `what`, and replay it.
fn replay_pflog(rec: &Path, what: &str, frames: &Frames) -> Replay {
    replay(&write(
        &format!("{}-pflog-{what}", name(rec)),
        LINKTYPE_PFLOG,
        frames,
    ))
}

const LAYOUTS: [Pflog; 2] = [Pflog::OpenBsd, Pflog::FreeBsd];

/// The packet that carries the negotiation: the server's 227/229 reply or
/// the client's PORT/EPRT command.
fn negotiates(frame: &[u8]) -> bool {
    let p = tcp_payload(ip_packet(frame));
    ["227 ", "229 ", "PORT ", "EPRT "]
        .iter()
        .any(|k| p.starts_with(k.as_bytes()))
}

#[test]
fn passed_pflog_packets_open_the_same_holes_in_both_layouts() {
    for rec in recordings() {
        let want = expected(&rec);
        let frames = ethernet(&rec);
        // The Ethernet original itself, through the same replay.
        assert_eq!(replay(&rec).allowing, want, "{}", rec.display());
        for layout in LAYOUTS {
            let r = replay_pflog(
                &rec,
                &format!("{layout:?}"),
                &pflog(&frames, layout, |_| Action::Pass),
            );
            assert_eq!(r.allowing, want, "{layout:?} {}:\n{}", rec.display(), r.log);
            assert!(r.stats.contains(" dropped 0 "), "{layout:?}: {}", r.stats);
            assert!(r.log.lines().any(|l| l == "#1 session finish"), "{}", r.log);
        }
    }
}

#[test]
fn a_blocked_negotiation_opens_nothing() {
    for rec in recordings() {
        let frames = ethernet(&rec);
        assert_eq!(
            frames.iter().filter(|(_, f)| negotiates(f)).count(),
            1,
            "{}",
            rec.display()
        );
        for layout in LAYOUTS {
            let r = replay_pflog(
                &rec,
                &format!("{layout:?}-blocked-reply"),
                &pflog(&frames, layout, |f| {
                    if negotiates(f) {
                        Action::Block
                    } else {
                        Action::Pass
                    }
                }),
            );
            assert_eq!(
                r.allowing,
                Vec::<String>::new(),
                "{}:\n{}",
                rec.display(),
                r.log
            );
            assert!(r.stats.contains(" blocked 1)"), "{}", r.stats);
            assert!(r.stats.contains(" negotiations 0,"), "{}", r.stats);
        }
    }
}

#[test]
fn a_connection_pf_blocked_throughout_opens_nothing() {
    for rec in recordings() {
        let frames = ethernet(&rec);
        for layout in LAYOUTS {
            let r = replay_pflog(
                &rec,
                &format!("{layout:?}-blocked"),
                &pflog(&frames, layout, |_| Action::Block),
            );
            assert_eq!(
                r.allowing,
                Vec::<String>::new(),
                "{}:\n{}",
                rec.display(),
                r.log
            );
            let n = frames.len();
            assert!(
                r.stats.contains(&format!("packets {n}, dropped {n} ")),
                "{}",
                r.stats
            );
            assert!(r.stats.contains(&format!(" blocked {n})")), "{}", r.stats);
            assert!(r.stats.contains(" 0 total "), "no session: {}", r.stats);
        }
    }
}

#[test]
fn a_packet_logged_on_two_interfaces_is_one_packet() {
    for rec in recordings() {
        let want = expected(&rec);
        let frames = ethernet(&rec);
        for layout in LAYOUTS {
            // pf logs a forwarded packet as it enters and as it leaves.
            let twice: Frames = frames
                .iter()
                .flat_map(|(ts, f)| {
                    [
                        (*ts, pflog_frame(f, layout, Action::Pass, "em0")),
                        (*ts, pflog_frame(f, layout, Action::Pass, "em1")),
                    ]
                })
                .collect();
            let r = replay_pflog(&rec, &format!("{layout:?}-twice"), &twice);
            assert_eq!(r.allowing, want, "{layout:?} {}:\n{}", rec.display(), r.log);
            assert!(
                r.stats.contains(&format!("packets {}, ", twice.len())),
                "{}",
                r.stats
            );
            assert!(r.log.lines().any(|l| l == "#1 session finish"), "{}", r.log);
        }
    }
}

#[test]
fn nflog_packets_open_the_same_holes() {
    for rec in recordings() {
        let want = expected(&rec);
        let frames: Frames = ethernet(&rec)
            .iter()
            .map(|(ts, f)| (*ts, nflog_frame(f)))
            .collect();
        let path = write(&format!("{}-nflog", name(&rec)), LINKTYPE_NFLOG, &frames);
        let r = replay(&path);
        assert_eq!(r.allowing, want, "{}:\n{}", rec.display(), r.log);
        assert!(r.stats.contains(" dropped 0 "), "{}", r.stats);
        assert!(r.log.lines().any(|l| l == "#1 session finish"), "{}", r.log);
    }
}

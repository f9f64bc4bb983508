//! Offline throughput: a generated capture with 100k concurrent control
//! connections and two negotiations each (1.4M packets), replayed with
//! `ftpsesame -r` and compared with `tcpdump -r FILE -w /dev/null` on the
//! same file in the same run. Reports packets/s, the time ratio and peak
//! RSS (from wait4's rusage). Not a test: it prints figures.
//!
//! `cargo bench --bench offline` (SESSIONS=N to change the size).

#[path = "../tests/support/pcapgen.rs"]
mod pcapgen;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Instant;

use pcapgen::{Conversation, LINKTYPE_ETHERNET, PcapWriter};

fn generate(path: &std::path::Path, sessions: u32) -> u64 {
    let file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut w = PcapWriter::new(file, LINKTYPE_ETHERNET).unwrap();
    let server = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2)), 21);
    let mut convs: Vec<Conversation> = (0..sessions)
        .map(|i| {
            let client = SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(192, 0, 2 + (i / 60000) as u8 % 254, 2)),
                1024 + (i % 60000) as u16,
            );
            Conversation::new(
                client,
                server,
                i.wrapping_mul(2_654_435_761),
                i.wrapping_mul(40503),
            )
        })
        .collect();
    let mut ts = 1_700_000_000_000_000u64;
    let mut n = 0u64;
    let mut put = |w: &mut PcapWriter<_>, f: &[u8]| {
        ts += 1;
        n += 1;
        w.packet(ts, f).unwrap();
    };
    for c in convs.iter_mut() {
        for f in c.handshake() {
            put(&mut w, &f);
        }
    }
    // Each server reply is acknowledged by a pure ACK from the client, so a
    // session is 3 (handshake) + 2 + 3 + 3 + 3 (FIN) = 14 frames.
    for c in convs.iter_mut() {
        put(&mut w, &c.server(b"220 ready\r\n"));
        put(&mut w, &c.client(b""));
    }
    for (k, c) in convs.iter_mut().enumerate() {
        let p = 50000 + (k % 1000) as u32;
        put(&mut w, &c.client(b"PASV\r\n"));
        let reply = format!(
            "227 Entering Passive Mode (198,51,100,2,{},{})\r\n",
            p / 256,
            p % 256
        );
        put(&mut w, &c.server(reply.as_bytes()));
        put(&mut w, &c.client(b""));
    }
    for c in convs.iter_mut() {
        put(&mut w, &c.client(b"EPSV\r\n"));
        put(
            &mut w,
            &c.server(b"229 Entering Extended Passive Mode (|||50999|)\r\n"),
        );
        put(&mut w, &c.client(b""));
    }
    for c in convs.iter_mut() {
        for f in c.fin() {
            put(&mut w, &f);
        }
    }
    w.finish().unwrap();
    n
}

/// Run a command, return (seconds, peak RSS KiB).
#[allow(clippy::zombie_processes)] // reaped by wait4 below, which also gives its rusage
fn measure(cmd: &mut Command) -> (f64, i64) {
    let start = Instant::now();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child; status and ru are valid out-pointers.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(r, pid);
    let st = std::process::ExitStatus::from_raw(status);
    assert!(st.success(), "{cmd:?} failed: {st}");
    (secs, ru.ru_maxrss)
}

fn main() {
    let sessions: u32 = std::env::var("SESSIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let path = std::env::temp_dir().join(format!("ftpsesame-bench-{sessions}.pcap"));
    let packets = generate(&path, sessions);
    let size = std::fs::metadata(&path).unwrap().len();
    println!(
        "capture: {packets} packets, {sessions} concurrent sessions, {} MB",
        size / 1_000_000
    );
    let bin = env!("CARGO_BIN_EXE_ftpsesame");
    let p = path.to_str().unwrap();
    let m = (sessions + 1000).to_string();
    let mut best = (f64::MAX, 0, f64::MAX);
    for _ in 0..3 {
        let (t_ours, rss) = measure(Command::new(bin).args(["-d", "-D", "5", "-m", &m, "-r", p]));
        let (t_tcpdump, _) = measure(Command::new("tcpdump").args(["-r", p, "-w", "/dev/null"]));
        if t_ours < best.0 {
            best = (t_ours, rss, t_tcpdump.min(best.2));
        }
        best.2 = best.2.min(t_tcpdump);
    }
    let (t_ours, rss, t_tcpdump) = best;
    println!(
        "ftpsesame -r: {t_ours:.3} s, {:.0} packets/s, peak RSS {} MB",
        packets as f64 / t_ours,
        rss / 1024
    );
    println!("tcpdump -r -w /dev/null: {t_tcpdump:.3} s");
    println!("ratio ftpsesame/tcpdump: {:.2}x", t_ours / t_tcpdump);
    if std::env::var_os("KEEP").is_none() {
        let _ = std::fs::remove_file(&path);
    }
}

//! Offline throughput: a generated capture with 100k concurrent control
//! connections and two negotiations each (1.4M packets), replayed with
//! `ftpsesame -r` and compared with `tcpdump -r FILE -w /dev/null` on the
//! same file in the same run. Reports packets/s, peak RSS (from wait4's
//! rusage) and the time ratio, by wall time and by CPU time, smallest and
//! median over the runs. Not a test: it prints figures.
//!
//! `cargo bench --bench offline`. Environment: SESSIONS=N changes the size,
//! RUNS=N the number of runs (5), VERBOSE=1 prints each run, KEEP=1 keeps
//! the capture, FTPSESAME_BIN=path times another build.

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

/// What one run of a program cost.
#[derive(Clone, Copy)]
struct Run {
    /// Elapsed seconds.
    wall: f64,
    /// User plus system CPU seconds: on a loaded machine this moves less
    /// than wall time, which includes waiting for a CPU.
    cpu: f64,
    /// Peak resident set, KiB.
    rss: i64,
}

/// Run a command to its end and say what it cost.
#[allow(clippy::zombie_processes)] // reaped by wait4 below, which also gives its rusage
fn measure(cmd: &mut Command) -> Run {
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
    let wall = start.elapsed().as_secs_f64();
    assert_eq!(r, pid);
    let st = std::process::ExitStatus::from_raw(status);
    assert!(st.success(), "{cmd:?} failed: {st}");
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Run {
        wall,
        cpu: secs(ru.ru_utime) + secs(ru.ru_stime),
        rss: ru.ru_maxrss,
    }
}

fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

/// Smallest and median of `v` (sorted in place).
fn min_median(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2])
}

fn main() {
    let sessions: u32 = env("SESSIONS").unwrap_or(100_000);
    let runs: usize = env("RUNS").unwrap_or(5).max(1);
    // The process id keeps concurrent runs from sharing one file.
    let path = std::env::temp_dir().join(format!(
        "ftpsesame-bench-{sessions}-{}.pcap",
        std::process::id()
    ));
    let packets = generate(&path, sessions);
    let size = std::fs::metadata(&path).unwrap().len();
    println!(
        "capture: {packets} packets, {sessions} concurrent sessions, {} MB",
        size / 1_000_000
    );
    // FTPSESAME_BIN times another build against tcpdump on this capture.
    let bin = std::env::var("FTPSESAME_BIN").unwrap_or(env!("CARGO_BIN_EXE_ftpsesame").into());
    let verbose = std::env::var_os("VERBOSE").is_some();
    let p = path.to_str().unwrap();
    let m = (sessions + 1000).to_string();
    // Each run times both programs back to back, so its ratio compares them
    // under about the same load.
    let (mut wall, mut cpu) = (Vec::new(), Vec::new());
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut rss = 0;
    for _ in 0..runs {
        let a = measure(Command::new(&bin).args(["-d", "-D", "5", "-m", &m, "-r", p]));
        let b = measure(Command::new("tcpdump").args(["-r", p, "-w", "/dev/null"]));
        if verbose {
            println!(
                "run: ftpsesame {:.3} s ({:.3} s cpu), tcpdump {:.3} s ({:.3} s cpu)",
                a.wall, a.cpu, b.wall, b.cpu
            );
        }
        wall.push(a.wall / b.wall);
        cpu.push(a.cpu / b.cpu);
        ours.push(a.wall);
        theirs.push(b.wall);
        rss = rss.max(a.rss);
    }
    let (t_ours, _) = min_median(&mut ours);
    let (t_tcpdump, _) = min_median(&mut theirs);
    let (wall_min, wall_median) = min_median(&mut wall);
    let (cpu_min, cpu_median) = min_median(&mut cpu);
    println!(
        "ftpsesame -r: {t_ours:.3} s, {:.0} packets/s, peak RSS {} MB",
        packets as f64 / t_ours,
        rss / 1024
    );
    println!("tcpdump -r -w /dev/null: {t_tcpdump:.3} s");
    println!(
        "ratio ftpsesame/tcpdump over {runs} runs: wall min {wall_min:.2}x median {wall_median:.2}x, \
         cpu min {cpu_min:.2}x median {cpu_median:.2}x"
    );
    if std::env::var_os("KEEP").is_none() {
        let _ = std::fs::remove_file(&path);
    }
}

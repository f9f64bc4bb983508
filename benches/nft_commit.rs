//! How long the nftables backend takes on its hot paths, against the real
//! kernel in a private network namespace (`fsnl-<pid>-bench`):
//!
//! - 10,000 `replace()` renegotiations (delete the previous element, add the
//!   next, wait for the ACK): what stands between a 227 reply and the
//!   client's SYN;
//! - 10,000 conntrack lookups of a tracked connection, and 10,000 of an
//!   untracked one (two CT_GETs each: original, then reply tuple).
//!
//! Prints p50/p99/max in microseconds and the heap allocations counted
//! during the timed loops (the commit path is meant to allocate nothing).
//! Run as root: `cargo bench --bench nft_commit`.
// Linux only: elsewhere main() just says so.
#![cfg_attr(not(target_os = "linux"), allow(dead_code, unused_imports))]

use std::alloc::{GlobalAlloc, Layout, System};
use std::fs::File;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[cfg(target_os = "linux")]
use ftpsesame::{
    core::rule::Rule,
    firewall::{Firewall, nft::Nft, nft::conntrack::Conntrack},
};

/// Counts allocations so the bench can show the commit path makes none.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const N: usize = 10_000;
const WARMUP: usize = 200;

const RULESET: &str = "
table inet filter {
    set ftpsesame4 { type ipv4_addr . ipv4_addr . inet_service; flags timeout; }
    set ftpsesame6 { type ipv6_addr . ipv6_addr . inet_service; flags timeout; }
    chain input {
        type filter hook input priority 0; policy accept;
        ct state established,related accept
        ip saddr . ip daddr . tcp dport @ftpsesame4 ct state new accept
    }
}
";

/// Deletes the namespace when the bench ends, however it ends.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn sh(args: &[&str]) {
    let ok = Command::new(args[0])
        .args(&args[1..])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "{args:?} failed");
}

/// Print p50/p99/max of `samples` (sorted in place).
fn report(what: &str, samples: &mut [Duration], allocs: u64) {
    samples.sort_unstable();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    println!(
        "{what:<37} n={:<6} p50 {:>6.1} us  p99 {:>6.1} us  max {:>7.1} us  allocations {allocs}",
        samples.len(),
        us(at(0.50)),
        us(at(0.99)),
        us(samples[samples.len() - 1]),
    );
}

/// Time `f` N times after WARMUP untimed calls; returns samples and the
/// allocations made during the timed calls.
fn time(mut f: impl FnMut(usize)) -> (Vec<Duration>, u64) {
    for i in 0..WARMUP {
        f(i);
    }
    let mut samples = Vec::with_capacity(N);
    let before = ALLOCS.load(Ordering::Relaxed);
    for i in WARMUP..WARMUP + N {
        let t = Instant::now();
        f(i);
        samples.push(t.elapsed());
    }
    let allocs = ALLOCS.load(Ordering::Relaxed) - before;
    (samples, allocs)
}

#[cfg(target_os = "linux")]
fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        if std::env::var("FTPSESAME_E2E").as_deref() == Ok("required") {
            eprintln!("nft_commit: needs root");
            std::process::exit(1);
        }
        println!("skipped: needs root");
        return;
    }
    let ns = Netns(format!("fsnl-{}-bench", std::process::id()));
    sh(&["ip", "netns", "add", &ns.0]);
    sh(&["ip", "-n", &ns.0, "link", "set", "lo", "up"]);
    sh(&[
        "ip",
        "-n",
        &ns.0,
        "addr",
        "add",
        "192.0.2.1/32",
        "dev",
        "lo",
    ]);
    let mut nft_cmd = Command::new("ip")
        .args(["netns", "exec", &ns.0, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("nft");
    nft_cmd
        .stdin
        .take()
        .unwrap()
        .write_all(RULESET.as_bytes())
        .unwrap();
    assert!(nft_cmd.wait().unwrap().success(), "nft -f");

    // This process is single-threaded: enter the namespace for good.
    let fd = File::open(format!("/run/netns/{}", ns.0)).expect("netns");
    // SAFETY: fd is a namespace file.
    assert_eq!(
        unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) },
        0
    );

    let mut nft = Nft::open(
        "inet",
        "filter",
        Duration::from_secs(180),
        ftpsesame::core::engine::ControlPorts::default(),
    )
    .expect("open");
    let src = "192.0.2.2".parse().unwrap();
    let dst = "198.51.100.2".parse().unwrap();
    let rule = |i: usize| Rule {
        src,
        dst,
        port: 1024 + (i % 60_000) as u16,
    };
    nft.replace(1, &[], &[rule(usize::MAX)]).unwrap();
    let (mut s, a) = time(|i| {
        let prev = if i == 0 { usize::MAX } else { i - 1 };
        nft.replace(1, &[rule(prev)], &[rule(i)]).unwrap();
    });
    report("replace() delete+add, ACKed", &mut s, a);

    let (mut s, a) = time(|i| {
        nft.replace(2, &[], &[rule(100_000 + i)]).unwrap();
        nft.replace(2, &[rule(100_000 + i)], &[]).unwrap();
    });
    for d in &mut s {
        *d /= 2;
    }
    report("replace() add or remove alone", &mut s, a);
    nft.flush().unwrap();

    let listener = TcpListener::bind("192.0.2.1:2121").unwrap();
    let stream = TcpStream::connect("192.0.2.1:2121").unwrap();
    let client: SocketAddr = stream.local_addr().unwrap();
    let server: SocketAddr = stream.peer_addr().unwrap();
    let mut ct = Conntrack::open().unwrap();
    assert_eq!(ct.lookup(client, server).unwrap(), Some(client.ip()));
    let (mut s, a) = time(|_| {
        assert!(ct.lookup(client, server).unwrap().is_some());
    });
    report("conntrack lookup, tracked", &mut s, a);

    let untracked: SocketAddr = "192.0.2.9:40000".parse().unwrap();
    let (mut s, a) = time(|_| {
        assert!(ct.lookup(untracked, server).unwrap().is_none());
    });
    report("conntrack lookup, untracked (2 GETs)", &mut s, a);
    drop((stream, listener));
}

#[cfg(not(target_os = "linux"))]
fn main() {
    println!("skipped: nftables is Linux-only");
}

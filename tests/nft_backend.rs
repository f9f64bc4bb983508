//! The nftables backend and the conntrack lookup against the real kernel.
//!
//! Every test builds its own network namespaces (`fsnl-<pid>-<n>`), loads a
//! ruleset there with `nft -f`, and runs the backend from a thread that
//! entered the namespace with setns(2): netlink sockets belong to the
//! namespace they are created in, so nothing here touches the host's
//! ruleset. Namespaces are deleted by a Drop guard, also on failure.
//!
//! Needs root. Without it the tests print "skipped: needs root", unless
//! FTPSESAME_E2E=required, in which case they fail.
#![cfg(target_os = "linux")]

use std::fs::File;
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ftpsesame::core::engine::ControlPorts;
use ftpsesame::core::log::{self, Level};
use ftpsesame::core::rule::Rule;
use ftpsesame::firewall::nft::Nft;
use ftpsesame::firewall::nft::conntrack::Conntrack;
use ftpsesame::firewall::{Error, Firewall, State};

const TIMEOUT: Duration = Duration::from_secs(180);

const DECL4: &str = "set ftpsesame4 { type ipv4_addr . ipv4_addr . inet_service; flags timeout; }";
const DECL6: &str = "set ftpsesame6 { type ipv6_addr . ipv6_addr . inet_service; flags timeout; }";

const RULESET: &str = "
table inet filter {
    set ftpsesame4 { type ipv4_addr . ipv4_addr . inet_service; flags timeout; }
    set ftpsesame6 { type ipv6_addr . ipv6_addr . inet_service; flags timeout; }
}
";

/// True when the test may run; prints the skip or panics when required.
fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let tools = ["ip", "nft"].iter().all(|t| {
        Command::new(t)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    });
    if root && tools {
        return true;
    }
    let why = if root {
        "needs ip and nft"
    } else {
        "needs root"
    };
    if std::env::var("FTPSESAME_E2E").as_deref() == Ok("required") {
        panic!("FTPSESAME_E2E=required but this test {why}");
    }
    println!("skipped: {why}");
    false
}

/// A namespace with `RULESET` loaded, or `None` when the test cannot run.
fn loaded() -> Option<Netns> {
    if !can_run() {
        return None;
    }
    let ns = Netns::new();
    ns.load(RULESET);
    Some(ns)
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace for one test; deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Netns {
        let name = format!(
            "fsnl-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        run(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Run a command inside the namespace; panics unless it succeeds.
    fn exec(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        run(&full)
    }

    /// Replace the namespace's ruleset with `ruleset`.
    fn load(&self, ruleset: &str) {
        self.exec(&["nft", "flush", "ruleset"]);
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawn nft");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(ruleset.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "nft -f failed:\n{ruleset}");
    }

    /// Elements of `inet filter <set>` per `nft -j`: ("src dst port", timeout s).
    fn elements(&self, set: &str) -> Vec<(String, u64)> {
        self.elements_expiring(set)
            .into_iter()
            .map(|(key, timeout, _)| (key, timeout))
            .collect()
    }

    /// Elements of `inet filter <set>` per `nft -j`: ("src dst port",
    /// timeout s, seconds left).
    fn elements_expiring(&self, set: &str) -> Vec<(String, u64, u64)> {
        let json = self.exec(&["nft", "-j", "list", "set", "inet", "filter", set]);
        let number = |rest: &str, field: &str| {
            rest.split(field)
                .nth(1)
                .map(|t| {
                    t.chars()
                        .take_while(char::is_ascii_digit)
                        .collect::<String>()
                })
                .and_then(|t| t.parse().ok())
                .unwrap_or(0)
        };
        let mut out = Vec::new();
        for part in json.split("\"concat\": [").skip(1) {
            let end = part.find(']').expect("concat list");
            let key = part[..end].replace('"', "").replace(", ", " ");
            // `]}` closes the key; its fields run to the next `}`.
            let rest = &part[end..];
            let rest = &rest[rest.find('}').map_or(rest.len(), |i| i + 1)..];
            let elem = &rest[..rest.find('}').unwrap_or(rest.len())];
            out.push((
                key,
                number(elem, "\"timeout\": "),
                number(elem, "\"expires\": "),
            ));
        }
        out
    }

    /// Open the backend on `family table` inside the namespace.
    fn open(&self, family: &str, table: &str) -> Result<Nft, Error> {
        self.enter(|| Nft::open(family, table, TIMEOUT, ControlPorts::default()))
    }

    /// Run `f` inside the namespace with the backend opened on `inet filter`.
    fn with_nft<T: Send>(&self, f: impl FnOnce(&mut Nft) -> T + Send) -> T {
        self.enter(|| f(&mut self.open("inet", "filter").expect("open")))
    }

    /// Run `f` on a thread that has entered this namespace.
    fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let fd = File::open(&path).expect("open netns");
                // SAFETY: fd is a namespace file; setns only affects this thread.
                let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .unwrap()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn rule(src: &str, dst: &str, port: u16) -> Rule {
    Rule {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        port,
    }
}

fn open_err(ns: &Netns) -> String {
    match ns.open("inet", "filter") {
        Ok(_) => panic!("open succeeded on a bad ruleset"),
        Err(e) => {
            assert!(matches!(e, Error::Ruleset(_)), "{e:?}");
            e.to_string()
        }
    }
}

#[test]
fn open_checks_table_and_sets() {
    let Some(ns) = loaded() else { return };
    ns.open("inet", "filter").expect("open");
    // Declared with `typeof` instead of `type`: the same key.
    ns.load(
        "table inet filter {
            set ftpsesame4 { typeof ip saddr . ip daddr . tcp dport; flags timeout; }
            set ftpsesame6 { typeof ip6 saddr . ip6 daddr . tcp dport; flags timeout; }
        }",
    );
    ns.open("inet", "filter").expect("open typeof sets");
    // Another table, named with -T.
    ns.load(&RULESET.replace("inet filter", "ip fw"));
    ns.open("ip", "fw").expect("open ip/fw");

    let cases: [(&str, &str); 5] = [
        ("table inet other { }", "does not exist"),
        (
            "table inet filter {\n set ftpsesame6 { type ipv6_addr . ipv6_addr . inet_service; flags timeout; }\n}",
            "set ftpsesame4 not found",
        ),
        (
            &RULESET.replace(
                "ipv4_addr . ipv4_addr . inet_service",
                "ipv4_addr . inet_service",
            ),
            "wrong key type",
        ),
        (
            &RULESET.replace(
                "ipv4_addr . ipv4_addr . inet_service; flags timeout;",
                "ipv4_addr . ipv4_addr . inet_service;",
            ),
            "lacks `flags timeout`",
        ),
        (
            &RULESET.replace(
                "ipv6_addr . ipv6_addr . inet_service",
                "ipv4_addr . ipv4_addr . inet_service",
            ),
            "set ftpsesame6 in table inet filter has the wrong key type",
        ),
    ];
    for (ruleset, problem) in cases {
        ns.load(ruleset);
        let e = open_err(&ns);
        println!("open() refused:\n{e}\n");
        assert!(e.contains(problem), "want `{problem}` in:\n{e}");
        assert!(e.contains(DECL4), "want the set line in:\n{e}");
        assert!(e.contains(DECL6), "want the set line in:\n{e}");
    }

    let e = match ns.open("inetx", "filter") {
        Ok(_) => panic!("bad family accepted"),
        Err(e) => e,
    };
    assert!(
        matches!(e, Error::UnknownFamily(ref f) if f == "inetx"),
        "{e:?}"
    );
    assert!(e.to_string().contains("unknown nftables family"), "{e}");
}

#[test]
fn replace_adds_renegotiates_and_removes() {
    let Some(ns) = loaded() else { return };
    let a = rule("192.0.2.2", "198.51.100.2", 50012);
    let b = rule("192.0.2.2", "198.51.100.2", 50013);
    let v6 = rule("2001:db8::2", "2001:db8:1::2", 1024);

    ns.with_nft(|nft| {
        nft.replace(1, &[], &[a, v6]).expect("add");
        let e4 = ns.elements("ftpsesame4");
        assert_eq!(e4.len(), 1, "{e4:?}");
        assert_eq!(e4[0].0, "192.0.2.2 198.51.100.2 50012");
        assert_eq!(e4[0].1, 180, "element timeout");
        let e6 = ns.elements("ftpsesame6");
        assert_eq!(e6.len(), 1, "{e6:?}");
        assert_eq!(e6[0].0, "2001:db8::2 2001:db8:1::2 1024");
        assert_eq!(e6[0].1, 180);

        // Renegotiation: the old hole closes as the new one opens.
        nft.replace(1, &[a, v6], &[b]).expect("renegotiate");
        let e4 = ns.elements("ftpsesame4");
        assert_eq!(e4.len(), 1, "{e4:?}");
        assert_eq!(e4[0].0, "192.0.2.2 198.51.100.2 50013");
        assert!(ns.elements("ftpsesame6").is_empty());

        // Same port again: the element stays.
        nft.replace(1, &[b], &[b]).expect("same rule");
        assert_eq!(ns.elements("ftpsesame4").len(), 1);

        // Session end.
        nft.replace(1, &[b], &[]).expect("remove");
        assert!(ns.elements("ftpsesame4").is_empty());
        assert!(ns.elements("ftpsesame6").is_empty());
    });
}

#[test]
fn shared_elements_are_refcounted() {
    let Some(ns) = loaded() else { return };
    let a = rule("192.0.2.2", "198.51.100.2", 50012);
    ns.with_nft(|nft| {
        nft.replace(1, &[], &[a]).unwrap();
        nft.replace(2, &[], &[a]).unwrap();
        nft.replace(1, &[a], &[]).unwrap();
        assert_eq!(
            ns.elements("ftpsesame4").len(),
            1,
            "still wanted by session 2"
        );
        nft.replace(2, &[a], &[]).unwrap();
        assert!(ns.elements("ftpsesame4").is_empty());
        // Removing what is no longer ours is a no-op, not an error.
        nft.replace(2, &[a], &[]).unwrap();
    });
}

#[test]
fn elements_gone_under_us_are_not_errors() {
    let Some(ns) = loaded() else { return };
    let a = rule("192.0.2.2", "198.51.100.2", 50012);
    let b = rule("192.0.2.3", "198.51.100.2", 50014);
    let c = rule("2001:db8::3", "2001:db8:1::2", 2000);
    ns.with_nft(|nft| {
        nft.replace(1, &[], &[a, c]).unwrap();
        ns.exec(&["nft", "flush", "set", "inet", "filter", "ftpsesame4"]);
        // The delete of `a` fails in the kernel; the add of `b` must still land.
        nft.replace(1, &[a, c], &[b])
            .expect("replace after external flush");
        let e4 = ns.elements("ftpsesame4");
        assert_eq!(e4.len(), 1, "{e4:?}");
        assert_eq!(e4[0].0, "192.0.2.3 198.51.100.2 50014");
        assert!(ns.elements("ftpsesame6").is_empty(), "c deleted");
    });
}

#[test]
fn flush_removes_only_ours() {
    let Some(ns) = loaded() else { return };
    ns.exec(&[
        "nft",
        "add",
        "element",
        "inet",
        "filter",
        "ftpsesame4",
        "{ 203.0.113.9 . 198.51.100.2 . 21 timeout 1h }",
    ]);
    ns.with_nft(|nft| {
        for i in 0..150u16 {
            nft.replace(
                u32::from(i),
                &[],
                &[
                    rule("192.0.2.2", "198.51.100.2", 40000 + i),
                    rule("2001:db8::2", "2001:db8:1::2", 40000 + i),
                ],
            )
            .unwrap();
        }
        assert_eq!(ns.elements("ftpsesame4").len(), 151);
        assert_eq!(ns.elements("ftpsesame6").len(), 150);
        // Some expire or vanish behind our back: still no error.
        ns.exec(&["nft", "flush", "set", "inet", "filter", "ftpsesame6"]);
        nft.flush().expect("flush");
        let e4 = ns.elements("ftpsesame4");
        assert_eq!(e4.len(), 1, "the admin's element stays: {e4:?}");
        assert_eq!(e4[0].0, "203.0.113.9 198.51.100.2 21");
        assert!(ns.elements("ftpsesame6").is_empty());
        // Nothing left to delete the second time.
        nft.flush().expect("second flush");
    });
}

#[test]
fn set_deleted_then_recreated() {
    let Some(ns) = loaded() else { return };
    let a = rule("192.0.2.2", "198.51.100.2", 50012);
    let b = rule("192.0.2.2", "198.51.100.2", 50013);
    ns.with_nft(|nft| {
        nft.replace(1, &[], &[a]).unwrap();
        ns.exec(&["nft", "delete", "set", "inet", "filter", "ftpsesame4"]);

        let e = nft.replace(2, &[], &[b]).expect_err("set is gone");
        // The finding comes with the failed commit, whose cause is ENOENT.
        assert!(matches!(e, Error::Ruleset(_)), "{e:?}");
        let errno = std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source())
            .find_map(|e| e.downcast_ref::<std::io::Error>())
            .and_then(std::io::Error::raw_os_error);
        assert_eq!(errno, Some(libc::ENOENT), "{e:?}");
        let e = e.to_string();
        println!("replace() on a deleted set:\n{e}");
        assert!(e.contains("ftpsesame4"), "{e}");
        assert!(e.contains(DECL4), "advice in:\n{e}");
        // Removing from a vanished set is fine.
        nft.replace(1, &[a], &[]).expect("delete from vanished set");

        ns.exec(&[
            "nft",
            "add",
            "set",
            "inet",
            "filter",
            "ftpsesame4",
            "{ type ipv4_addr . ipv4_addr . inet_service; flags timeout; }",
        ]);
        nft.replace(2, &[], &[b]).expect("works again");
        let e4 = ns.elements("ftpsesame4");
        assert_eq!(e4.len(), 1, "{e4:?}");
        assert_eq!(e4[0].0, "192.0.2.2 198.51.100.2 50013");
    });
}

/// Two namespaces joined by a veth pair: `client` (192.0.2.2, 2001:db8::2)
/// and `fw` (192.0.2.1, 2001:db8::1, plus 198.51.100.7 on lo) where
/// conntrack runs and locally sourced 198.51.100.7 is masqueraded.
/// `input` is the fw namespace's input chain body.
fn conntrack_lab(input: &str) -> (Netns, Netns) {
    let client = Netns::new();
    let fw = Netns::new();
    client.exec(&[
        "ip", "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", &fw.name,
    ]);
    client.exec(&["ip", "addr", "add", "192.0.2.2/24", "dev", "va"]);
    client.exec(&["ip", "addr", "add", "2001:db8::2/64", "dev", "va", "nodad"]);
    client.exec(&["ip", "link", "set", "va", "up"]);
    fw.exec(&["ip", "addr", "add", "192.0.2.1/24", "dev", "vb"]);
    fw.exec(&["ip", "addr", "add", "2001:db8::1/64", "dev", "vb", "nodad"]);
    fw.exec(&["ip", "addr", "add", "198.51.100.7/32", "dev", "lo"]);
    fw.exec(&["ip", "link", "set", "vb", "up"]);
    // Connections fw -> client leave from 198.51.100.7, so they get NATed.
    fw.exec(&[
        "ip",
        "route",
        "add",
        "192.0.2.2/32",
        "dev",
        "vb",
        "src",
        "198.51.100.7",
    ]);
    fw.load(&format!(
        "{RULESET}
table inet filter {{
    chain input {{ type filter hook input priority 0; policy accept; {input} }}
}}
table ip nat {{
    chain postrouting {{ type nat hook postrouting priority srcnat; ip saddr 198.51.100.7 oifname \"vb\" masquerade; }}
}}
"
    ));
    (client, fw)
}

#[test]
fn conntrack_finds_plain_and_masqueraded_clients() {
    if !can_run() {
        return;
    }
    let (client, fw) = conntrack_lab("ct state established,related accept;");

    // Plain: client -> fw, tracked on input.
    let l4 = fw.enter(|| TcpListener::bind("192.0.2.1:2121").unwrap());
    let l6 = fw.enter(|| TcpListener::bind("[2001:db8::1]:2121").unwrap());
    let c4 = client.enter(|| TcpStream::connect("192.0.2.1:2121").unwrap());
    let c6 = client.enter(|| TcpStream::connect("[2001:db8::1]:2121").unwrap());

    // Masqueraded: fw -> client from 198.51.100.7, seen on the wire as
    // 192.0.2.1:<port>.
    let lc = client.enter(|| TcpListener::bind("192.0.2.2:2121").unwrap());
    let out = fw.enter(|| TcpStream::connect("192.0.2.2:2121").unwrap());
    let (_acc, seen_from) = lc.accept().unwrap();
    let real: SocketAddr = out.local_addr().unwrap();
    assert_eq!(real.ip().to_string(), "198.51.100.7");
    assert_eq!(
        seen_from.ip().to_string(),
        "192.0.2.1",
        "masquerade applied"
    );

    let server_of_masq: SocketAddr = "192.0.2.2:2121".parse().unwrap();
    let untracked: SocketAddr = "192.0.2.2:9".parse().unwrap();
    let (c4_local, c4_peer) = (c4.local_addr().unwrap(), c4.peer_addr().unwrap());
    let (c6_local, c6_peer) = (c6.local_addr().unwrap(), c6.peer_addr().unwrap());

    fw.enter(|| {
        let mut ct = Conntrack::open().expect("conntrack socket");
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();

        assert_eq!(ct.lookup(c4_local, c4_peer).unwrap(), Some(ip("192.0.2.2")));
        assert_eq!(
            ct.lookup(c6_local, c6_peer).unwrap(),
            Some(ip("2001:db8::2"))
        );
        // Captured after NAT: the reply tuple gives the real client.
        assert_eq!(
            ct.lookup(seen_from, server_of_masq).unwrap(),
            Some(ip("198.51.100.7"))
        );
        // Captured before NAT: the original tuple.
        assert_eq!(
            ct.lookup(real, server_of_masq).unwrap(),
            Some(ip("198.51.100.7"))
        );
        assert_eq!(ct.lookup(untracked, c4_peer).unwrap(), None);
        assert_eq!(ct.lookup(c4_local, untracked).unwrap(), None);

        let mut nft = Nft::open("inet", "filter", TIMEOUT, ControlPorts::default()).expect("open");
        assert_eq!(
            nft.lookup(seen_from, server_of_masq).unwrap(),
            State::Tracked {
                real_client: ip("198.51.100.7"),
            }
        );
        assert_eq!(
            nft.lookup(c4_local, c4_peer).unwrap(),
            State::Tracked {
                real_client: ip("192.0.2.2"),
            }
        );
        assert_eq!(nft.lookup(untracked, c4_peer).unwrap(), State::NotTracked);
    });
    drop((l4, l6, c4, c6, lc, out));
}

#[test]
fn elements_open_the_hole() {
    if !can_run() {
        return;
    }
    let (client, fw) = conntrack_lab(
        "ct state established,related accept;
         ip saddr . ip daddr . tcp dport @ftpsesame4 ct state new accept;
         ip6 saddr . ip6 daddr . tcp dport @ftpsesame6 ct state new accept;
         tcp dport 5000-5999 drop;",
    );
    let _l4 = fw.enter(|| TcpListener::bind("192.0.2.1:5001").unwrap());
    let _l6 = fw.enter(|| TcpListener::bind("[2001:db8::1]:5001").unwrap());
    let to4: SocketAddr = "192.0.2.1:5001".parse().unwrap();
    let to6: SocketAddr = "[2001:db8::1]:5001".parse().unwrap();
    let connects = |to: SocketAddr| {
        client.enter(|| TcpStream::connect_timeout(&to, Duration::from_millis(300)).is_ok())
    };
    let hole4 = rule("192.0.2.2", "192.0.2.1", 5001);
    let hole6 = rule("2001:db8::2", "2001:db8::1", 5001);

    assert!(!connects(to4), "closed before the element exists");
    assert!(!connects(to6), "closed before the element exists");
    fw.with_nft(|nft| {
        nft.replace(1, &[], &[hole4, hole6]).unwrap();
        // The element exists when replace() returns: connect right away.
        assert!(connects(to4), "element lets the v4 connection in");
        assert!(connects(to6), "element lets the v6 connection in");
        nft.replace(1, &[hole4, hole6], &[]).unwrap();
        assert!(!connects(to4), "closed again after removal");
        assert!(!connects(to6), "closed again after removal");
    });
}

/// Log lines written while the tests run, at every level.
static LOGGED: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn capture_log() {
    fn sink(level: Level, args: std::fmt::Arguments<'_>) {
        LOGGED.lock().unwrap().push(format!("{level:?}: {args}"));
    }
    log::set_sink(sink);
    log::set_level(7);
}

/// The captured lines that contain `what`.
fn logged(what: &str) -> Vec<String> {
    LOGGED
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(what))
        .cloned()
        .collect()
}

/// `nft add element inet filter <set> { <elems> }` in `ns`.
fn add_elements(ns: &Netns, set: &str, elems: &str) {
    ns.exec(&[
        "nft",
        "add",
        "element",
        "inet",
        "filter",
        set,
        &format!("{{ {elems} }}"),
    ]);
}

/// `conntrack -I` a TCP entry in `state` with `timeout` seconds; `reply`
/// gives the reply tuple's (src, dst) when it is not the inverse (NAT).
fn ct_insert(ns: &Netns, state: &str, orig: (&str, &str, u16, u16), reply: Option<(&str, &str)>) {
    let (src, dst, sport, dport) = orig;
    let (sport, dport) = (sport.to_string(), dport.to_string());
    let mut args = vec![
        "conntrack",
        "-I",
        "-p",
        "tcp",
        "--state",
        state,
        "-s",
        src,
        "-d",
        dst,
        "--sport",
        &sport,
        "--dport",
        &dport,
        "--timeout",
        "600",
    ];
    if let Some((rsrc, rdst)) = reply {
        args.extend_from_slice(&[
            "-r",
            rsrc,
            "-q",
            rdst,
            "--reply-port-src",
            &dport,
            "--reply-port-dst",
            &sport,
        ]);
    }
    ns.exec(&args);
}

#[test]
fn open_adopts_holes_of_open_control_connections_and_removes_the_rest() {
    let Some(ns) = loaded() else { return };
    capture_log();
    if Command::new("conntrack").arg("-V").output().is_err() {
        assert_ne!(
            std::env::var("FTPSESAME_E2E").as_deref(),
            Ok("required"),
            "FTPSESAME_E2E=required but this test needs conntrack"
        );
        println!("skipped: needs conntrack");
        return;
    }
    // The control connections the state table holds.
    ct_insert(
        &ns,
        "ESTABLISHED",
        ("192.0.2.2", "198.51.100.2", 40000, 21),
        None,
    );
    ct_insert(
        &ns,
        "ESTABLISHED",
        ("2001:db8::2", "2001:db8:1::2", 40000, 21),
        None,
    );
    // Masqueraded client 198.51.100.7, seen by the server as 192.0.2.1.
    ct_insert(
        &ns,
        "ESTABLISHED",
        ("198.51.100.7", "192.0.2.9", 40001, 21),
        Some(("192.0.2.9", "192.0.2.1")),
    );
    // Not established, and established but not to a control port.
    ct_insert(
        &ns,
        "SYN_SENT",
        ("192.0.2.3", "198.51.100.2", 40002, 21),
        None,
    );
    ct_insert(
        &ns,
        "ESTABLISHED",
        ("192.0.2.4", "198.51.100.2", 40003, 80),
        None,
    );
    ct_insert(
        &ns,
        "ESTABLISHED",
        ("203.0.113.5", "198.51.100.2", 40004, 2121),
        None,
    );

    // What a killed instance left, part way through its 180 s.
    let left = "timeout 180s expires 100s";
    add_elements(
        &ns,
        "ftpsesame4",
        &format!(
            "192.0.2.2 . 198.51.100.2 . 50000 {left}, \
             198.51.100.2 . 192.0.2.2 . 50001 {left}, \
             198.51.100.7 . 192.0.2.9 . 50010 {left}, \
             192.0.2.1 . 192.0.2.9 . 50011 {left}, \
             192.0.2.9 . 192.0.2.1 . 50012 {left}, \
             192.0.2.3 . 198.51.100.2 . 50002 {left}, \
             192.0.2.4 . 198.51.100.2 . 50003 {left}, \
             192.0.2.5 . 198.51.100.2 . 50004 {left}, \
             198.51.100.7 . 192.0.2.10 . 50013 {left}, \
             192.0.2.2 . 203.0.113.7 . 50014 {left}, \
             203.0.113.5 . 198.51.100.2 . 50015 {left}, \
             203.0.113.9 . 198.51.100.2 . 21 timeout 1h"
        ),
    );
    add_elements(
        &ns,
        "ftpsesame6",
        &format!(
            "2001:db8::2 . 2001:db8:1::2 . 50000 {left}, \
             2001:db8:1::2 . 2001:db8::2 . 50001 {left}, \
             2001:db8::3 . 2001:db8:1::2 . 50002 {left}"
        ),
    );
    let keys = |set: &str| {
        let mut k: Vec<String> = ns.elements(set).into_iter().map(|e| e.0).collect();
        k.sort();
        k
    };
    assert_eq!(keys("ftpsesame4").len(), 12);

    let mut nft = ns.open("inet", "filter").expect("open");
    assert_eq!(
        keys("ftpsesame4"),
        vec![
            "192.0.2.1 192.0.2.9 50011",    // passive, after NAT
            "192.0.2.2 198.51.100.2 50000", // passive
            "192.0.2.9 192.0.2.1 50012",    // active, after NAT
            "198.51.100.2 192.0.2.2 50001", // active
            "198.51.100.7 192.0.2.9 50010", // passive/nat: the real client
            "203.0.113.9 198.51.100.2 21",  // the admin's own: another timeout
        ]
    );
    assert_eq!(
        keys("ftpsesame6"),
        vec![
            "2001:db8:1::2 2001:db8::2 50001",
            "2001:db8::2 2001:db8:1::2 50000"
        ]
    );
    // Adopted elements keep counting down: not re-added, not refreshed.
    for (key, timeout, expires) in ns
        .elements_expiring("ftpsesame4")
        .into_iter()
        .chain(ns.elements_expiring("ftpsesame6"))
    {
        if key.ends_with(" 21") {
            continue;
        }
        assert_eq!(timeout, 180, "{key}");
        assert!(
            expires > 0 && expires <= 100,
            "{key} expires in {expires} s"
        );
    }
    assert_eq!(
        logged("adopted 7 holes of control connections still open").len(),
        1,
        "{:?}",
        logged("adopted")
    );
    assert_eq!(
        logged("removed 7 stale holes").len(),
        1,
        "{:?}",
        logged("removed")
    );
    assert_eq!(
        logged("adopted hole 198.51.100.7 to 192.0.2.9 port 50010").len(),
        1,
        "{:?}",
        logged("adopted hole")
    );

    // A clean stop deletes the adopted holes too; the admin's stays.
    nft.flush().expect("flush");
    assert_eq!(keys("ftpsesame4"), vec!["203.0.113.9 198.51.100.2 21"]);
    assert!(keys("ftpsesame6").is_empty());
    drop(nft);

    // Another control port, named by the expression.
    add_elements(
        &ns,
        "ftpsesame4",
        &format!(
            "203.0.113.5 . 198.51.100.2 . 50015 {left}, 192.0.2.2 . 198.51.100.2 . 50000 {left}"
        ),
    );
    let ports = ControlPorts::from_expression("tcp and port 2121");
    ns.enter(|| Nft::open("inet", "filter", TIMEOUT, ports).expect("open"));
    assert_eq!(
        keys("ftpsesame4"),
        vec![
            "203.0.113.5 198.51.100.2 50015",
            "203.0.113.9 198.51.100.2 21"
        ]
    );
}

#[test]
fn open_removes_leftovers_when_nothing_is_tracked() {
    let Some(ns) = loaded() else { return };
    add_elements(
        &ns,
        "ftpsesame4",
        "192.0.2.5 . 198.51.100.2 . 50004 timeout 180s",
    );
    add_elements(
        &ns,
        "ftpsesame6",
        "2001:db8::5 . 2001:db8:1::2 . 50004 timeout 180s",
    );
    ns.open("inet", "filter").expect("open");
    assert!(ns.elements("ftpsesame4").is_empty(), "stale one removed");
    assert!(ns.elements("ftpsesame6").is_empty(), "stale one removed");
}

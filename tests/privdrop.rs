//! Privilege drop and pidfile, for real.
//!
//! Each case re-runs this test binary as a child process (the same test,
//! selected with `--exact`, with `PRIVDROP_ROLE` set) so that the chroot,
//! setuid and capability changes happen in a process of their own. The
//! child prints `report: key=value` lines, then says `report: ready` and
//! waits for stdin to close; meanwhile the parent, still root, inspects it
//! from outside through `/proc/<pid>/task/<tid>/`.
//!
//! Why the thread id: libtest runs a test on a thread of its own, and on
//! Linux capabilities (and keepcaps, and the bounding set) belong to a
//! thread, not a process. The daemon is single-threaded, so there the two
//! are the same; here we look at the thread that did the work.
//!
//! Root is needed for the drop cases. Without it they print
//! "skipped: needs root", or fail when FTPSESAME_E2E=required.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};

use ftpsesame::os::daemon::{drop_privileges, write_pidfile};

const ROLE: &str = "PRIVDROP_ROLE";

/// True when this process is the re-run child: it has done its part.
fn run_as_child() -> bool {
    let Ok(role) = std::env::var(ROLE) else {
        return false;
    };
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    match role.as_str() {
        "pidfile" => match write_pidfile(Path::new(&env("PIDFILE"))) {
            Ok(_) => report("pidfile", "ok"),
            Err(e) => report("pidfile", &format!("err {e}")),
        },
        "drop" => child_drop(&env("DROP_USER"), Path::new(&env("DROP_DIR")), &env),
        "daemonize" => child_daemonize(Path::new(&env("RESULT"))),
        "daemonize-fail" => child_daemonize_fail(),
        "daemonize-eintr" => child_daemonize_eintr(Path::new(&env("DIR"))),
        "daemonize-held" => child_daemonize_held(Path::new(&env("DIR"))),
        other => panic!("unknown {ROLE} {other}"),
    }
    true
}

fn report(key: &str, value: &str) {
    println!("\nreport: {key}={value}");
}

#[cfg(target_os = "linux")]
fn child_drop(user: &str, dir: &Path, env: &dyn Fn(&str) -> String) {
    let keep = env("DROP_KEEP") == "1";
    // SAFETY: plain syscalls without pointers.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    report("tid", &tid.to_string());
    // A network namespace of our own, so the netlink probe below reads an
    // empty ruleset instead of the host's. Done while still root.
    // SAFETY: no pointers; affects only this thread.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        report("unshare", &std::io::Error::last_os_error().to_string());
    }
    let pidfile = env("PIDFILE");
    let _guard = if pidfile.is_empty() {
        None
    } else {
        Some(write_pidfile(Path::new(&pidfile)).expect("pidfile as root"))
    };
    match drop_privileges(user, dir, keep) {
        Ok(()) => report("drop", "ok"),
        Err(e) => report("drop", &format!("err {e}")),
    }
    let marker = env("MARKER");
    if !marker.is_empty() {
        let seen = std::fs::read_to_string(Path::new("/").join(&marker));
        report("marker", seen.as_deref().unwrap_or("missing"));
    }
    let passwd = Path::new("/etc/passwd").exists();
    report("etc_passwd", if passwd { "present" } else { "absent" });
    match ftpsesame::os::daemon::effective_caps() {
        Some(c) => report("effective_caps", &format!("{c:#x}")),
        None => report("effective_caps", "none"),
    }
    match nft_list_tables() {
        Ok(n) => report("netlink", &format!("ok {n} tables")),
        Err(errno) => report("netlink", &format!("errno {errno}")),
    }
    report("ready", "");
    // Stay alive, as dropped, until the parent has looked at us.
    let mut sink = String::new();
    let _ = std::io::stdin().read_line(&mut sink);
}

/// Daemonize, then write what the daemon sees of itself to `result`
/// (through a rename, so the parent never reads half a file).
#[cfg(target_os = "linux")]
fn child_daemonize(result: &Path) {
    let before = std::process::id();
    let ready = ftpsesame::os::daemon::daemonize().expect("daemonize");
    let link = |p: &str| {
        std::fs::read_link(p)
            .map(|t| t.display().to_string())
            .unwrap_or_else(|e| e.to_string())
    };
    let text = format!(
        "before={before}\npid={}\nsid={}\ncwd={}\nfd0={}\nfd1={}\nfd2={}\n",
        std::process::id(),
        nix::unistd::getsid(None).unwrap(),
        std::env::current_dir().unwrap().display(),
        link("/proc/self/fd/0"),
        link("/proc/self/fd/1"),
        link("/proc/self/fd/2"),
    );
    let tmp = result.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, result).unwrap();
    ready.done();
    // The forked daemon has only this thread; libtest's main thread stayed
    // behind in the parent, so there is nothing to return to.
    // SAFETY: ends the process without running anything else.
    unsafe { libc::_exit(0) };
}

/// Daemonize and die before start-up completes: the waiting parent must
/// report failure.
#[cfg(target_os = "linux")]
fn child_daemonize_fail() {
    let ready = ftpsesame::os::daemon::daemonize().expect("daemonize");
    drop(ready);
    // SAFETY: ends the forked process at once, as a failed start-up would.
    unsafe { libc::_exit(3) };
}

/// Report this thread's id (the one that will wait in `daemonize`), say
/// ready, and daemonize; the daemon writes `forked` and waits for `go`.
#[cfg(target_os = "linux")]
fn daemonize_on_cue(dir: &Path) -> ftpsesame::os::daemon::Ready {
    // SAFETY: plain syscall without pointers.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    report("tid", &tid.to_string());
    report("ready", "");
    let ready = ftpsesame::os::daemon::daemonize().expect("daemonize");
    std::fs::write(dir.join("forked.tmp"), std::process::id().to_string()).unwrap();
    std::fs::rename(dir.join("forked.tmp"), dir.join("forked")).unwrap();
    // The bound only keeps a lost test from leaving a daemon behind.
    for _ in 0..3000 {
        if dir.join("go").exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    ready
}

/// A caller with a handler of its own (no SA_RESTART) daemonizes: a
/// signal interrupting the parent's wait must not read as a failure.
#[cfg(target_os = "linux")]
fn child_daemonize_eintr(dir: &Path) {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    extern "C" fn nothing(_: libc::c_int) {}
    let action = SigAction::new(
        SigHandler::Handler(nothing),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler does nothing at all.
    unsafe { sigaction(Signal::SIGUSR1, &action) }.unwrap();
    let ready = daemonize_on_cue(dir);
    ready.done();
    // SAFETY: ends the daemon without running anything else.
    unsafe { libc::_exit(0) };
}

/// The order main uses: daemonize, then install the handlers. The daemon
/// writes the events the handlers saw (SIGTERM sent before they existed).
#[cfg(target_os = "linux")]
fn child_daemonize_held(dir: &Path) {
    let ready = daemonize_on_cue(dir);
    let signals = ftpsesame::os::signals::Signals::install().expect("signals");
    let mut seen = Vec::new();
    signals.drain(&mut |e| seen.push(format!("{e:?}")));
    let tmp = dir.join("events.tmp");
    std::fs::write(&tmp, seen.join(" ")).unwrap();
    std::fs::rename(&tmp, dir.join("events")).unwrap();
    ready.done();
    // SAFETY: ends the daemon without running anything else.
    unsafe { libc::_exit(0) };
}

#[cfg(not(target_os = "linux"))]
fn child_daemonize_fail() {}

#[cfg(not(target_os = "linux"))]
fn child_daemonize_eintr(_: &Path) {}

#[cfg(not(target_os = "linux"))]
fn child_daemonize_held(_: &Path) {}

#[cfg(not(target_os = "linux"))]
fn child_daemonize(_: &Path) {
    unreachable!("the daemonize case runs on Linux only");
}

#[cfg(not(target_os = "linux"))]
fn child_drop(_: &str, _: &Path, _: &dyn Fn(&str) -> String) {
    unreachable!("the drop cases run on Linux only");
}

/// Send NFT_MSG_GETTABLE (a dump of all tables) on a NETLINK_NETFILTER
/// socket opened *now*. nfnetlink checks CAP_NET_ADMIN of the socket's
/// opener and of the sending thread on every message, reads included.
/// Ok(number of tables) or Err(errno from the kernel's answer).
#[cfg(target_os = "linux")]
fn nft_list_tables() -> Result<usize, i32> {
    use std::os::fd::{FromRawFd, OwnedFd};
    const NFNL_SUBSYS_NFTABLES: u16 = 10;
    const NFT_MSG_NEWTABLE: u16 = 0;
    const NFT_MSG_GETTABLE: u16 = 1;
    let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    // SAFETY: socket(2) with constant arguments.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_NETFILTER,
        )
    };
    if raw < 0 {
        return Err(errno());
    }
    // SAFETY: fresh descriptor, owned from here.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    use std::os::fd::AsRawFd;
    // A hang guard only; nothing is judged on time.
    let tv = libc::timeval {
        tv_sec: 5,
        tv_usec: 0,
    };
    // SAFETY: valid timeval of the stated size.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    // nlmsghdr (16 bytes) + nfgenmsg (family AF_UNSPEC = all, version 0).
    let mut msg = Vec::with_capacity(20);
    msg.extend_from_slice(&20u32.to_ne_bytes());
    msg.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE).to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // seq
    msg.extend_from_slice(&0u32.to_ne_bytes()); // pid: kernel assigns
    msg.extend_from_slice(&[0, 0, 0, 0]);
    // SAFETY: zeroed sockaddr_nl means "the kernel".
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: buffer and address valid for their lengths.
    let sent = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&kernel as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if sent < 0 {
        return Err(errno());
    }
    let mut tables = 0;
    let mut buf = vec![0u8; 65536];
    loop {
        // SAFETY: buffer valid for its length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(errno());
        }
        let mut rest = &buf[..n as usize];
        while rest.len() >= 16 {
            let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
            let kind = u16::from_ne_bytes(rest[4..6].try_into().unwrap());
            match kind as i32 {
                libc::NLMSG_DONE => return Ok(tables),
                libc::NLMSG_ERROR => {
                    let code = i32::from_ne_bytes(rest[16..20].try_into().unwrap());
                    return if code == 0 { Ok(tables) } else { Err(-code) };
                }
                _ if kind == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWTABLE => tables += 1,
                _ => {}
            }
            let step = (len + 3) & !3;
            if len < 16 || step > rest.len() {
                break;
            }
            rest = &rest[step..];
        }
    }
}

#[cfg(target_os = "linux")]
fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[cfg(target_os = "linux")]
/// Whether a root-only case may run; fails instead of skipping when the
/// end-to-end suite demands it.
fn root_or_skip(name: &str) -> bool {
    if is_root() {
        return true;
    }
    if std::env::var("FTPSESAME_E2E").as_deref() == Ok("required") {
        panic!("{name}: needs root, and FTPSESAME_E2E=required");
    }
    println!("skipped: needs root ({name})");
    false
}

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("ftpsesame-privdrop-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The child and what it reported up to "ready".
struct Rerun {
    child: Child,
    reports: Vec<(String, String)>,
    _stdout: BufReader<ChildStdout>,
}

impl Rerun {
    fn start(test: &str, role: &str, env: &[(&str, &str)]) -> Rerun {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(ROLE, role)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut reports = Vec::new();
        let mut line = String::new();
        while {
            line.clear();
            stdout.read_line(&mut line).unwrap() > 0
        } {
            // libtest may have printed "test name ... " on the same line.
            if let Some(at) = line.find("report: ") {
                let kv = &line.trim_end()[at + "report: ".len()..];
                let (k, v) = kv.split_once('=').unwrap();
                if k == "ready" {
                    break;
                }
                reports.push((k.to_string(), v.to_string()));
            }
        }
        Rerun {
            child,
            reports,
            _stdout: stdout,
        }
    }

    fn get(&self, key: &str) -> &str {
        self.reports
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("child did not report {key}: {:?}", self.reports))
    }

    /// Let the child go and check it exited cleanly.
    fn finish(mut self) {
        drop(self.child.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "child failed: {status}");
    }
}

#[test]
fn second_instance_is_refused() {
    if run_as_child() {
        return;
    }
    let scratch = Scratch::new("second");
    let path = scratch.0.join("ftpsesame.pid");
    let _held = write_pidfile(&path).unwrap();
    let other = Rerun::start(
        "second_instance_is_refused",
        "pidfile",
        &[("PIDFILE", path.to_str().unwrap())],
    );
    let want = format!("err already running (pid {})", std::process::id());
    assert_eq!(other.get("pidfile"), want);
    println!("second instance said: {}", &want[4..]);
    other.finish();
}

#[test]
fn unknown_user_is_a_clear_error() {
    if run_as_child() {
        return;
    }
    // The lookup comes first, so this is safe even as root: nothing changes.
    let err = drop_privileges("no-such-user-ftpsesame", Path::new("/nonexistent"), true);
    assert_eq!(
        err.map_err(|e| e.to_string()),
        Err("no such user: no-such-user-ftpsesame".to_string())
    );
}

/// Fields of /proc/<pid>/task/<tid>/status, and the thread's root.
#[cfg(target_os = "linux")]
struct Inspect {
    status: String,
    root: PathBuf,
}

#[cfg(target_os = "linux")]
impl Inspect {
    fn of(child: &Rerun) -> Inspect {
        let base = format!("/proc/{}/task/{}", child.child.id(), child.get("tid"));
        Inspect {
            status: std::fs::read_to_string(format!("{base}/status")).unwrap(),
            root: std::fs::read_link(format!("{base}/root")).unwrap(),
        }
    }

    fn field(&self, name: &str) -> Vec<&str> {
        let prefix = format!("{name}:");
        let line = self
            .status
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no {name} in status"));
        line[prefix.len()..].split_whitespace().collect()
    }

    fn mask(&self, name: &str) -> u64 {
        u64::from_str_radix(self.field(name)[0], 16).unwrap()
    }
}

/// The unprivileged user: Debian's `proxy`, else a temporary system user.
#[cfg(target_os = "linux")]
struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
    created: bool,
}

#[cfg(target_os = "linux")]
impl TestUser {
    fn get() -> TestUser {
        let mut name = "proxy".to_string();
        let mut created = false;
        if nix::unistd::User::from_name(&name).unwrap().is_none() {
            name = format!("ftpsesame-t{}", std::process::id() % 100000);
            let ok = Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                ])
                .arg(&name)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(ok, "no user proxy and useradd {name} failed");
            created = true;
        }
        let pw = nix::unistd::User::from_name(&name).unwrap().unwrap();
        TestUser {
            name,
            uid: pw.uid.as_raw(),
            gid: pw.gid.as_raw(),
            created,
        }
    }
}

#[cfg(target_os = "linux")]
impl Drop for TestUser {
    fn drop(&mut self) {
        if self.created {
            let _ = Command::new("userdel").arg(&self.name).status();
        }
    }
}

#[cfg(target_os = "linux")]
const CAP_NET_ADMIN: u64 = 1 << 12;

#[cfg(target_os = "linux")]
#[test]
fn drop_keeps_exactly_net_admin() {
    if run_as_child() || !root_or_skip("drop_keeps_exactly_net_admin") {
        return;
    }
    let user = TestUser::get();
    let scratch = Scratch::new("keep");
    let root = scratch.0.join("root");
    std::fs::create_dir(&root).unwrap();
    let marker = format!("marker-{}", std::process::id());
    std::fs::write(root.join(&marker), "inside the chroot").unwrap();
    let pidfile = scratch.0.join("ftpsesame.pid");

    let child = Rerun::start(
        "drop_keeps_exactly_net_admin",
        "drop",
        &[
            ("DROP_USER", &user.name),
            ("DROP_DIR", root.to_str().unwrap()),
            ("DROP_KEEP", "1"),
            ("MARKER", &marker),
            ("PIDFILE", pidfile.to_str().unwrap()),
        ],
    );
    assert_eq!(child.get("drop"), "ok");
    let seen = Inspect::of(&child);
    let (uid, gid) = (user.uid.to_string(), user.gid.to_string());
    assert_eq!(
        seen.field("Uid"),
        [&uid; 4],
        "real, effective, saved, fs uid"
    );
    assert_eq!(
        seen.field("Gid"),
        [&gid; 4],
        "real, effective, saved, fs gid"
    );
    assert_eq!(seen.field("Groups"), [&gid]);
    assert_eq!(seen.mask("CapEff"), CAP_NET_ADMIN);
    assert_eq!(seen.mask("CapPrm"), CAP_NET_ADMIN);
    assert_eq!(seen.mask("CapInh"), 0);
    assert_eq!(seen.mask("CapBnd"), CAP_NET_ADMIN);
    assert_eq!(seen.mask("CapAmb"), 0);
    assert_eq!(seen.root, root, "kernel's view of the chroot");
    assert_eq!(child.get("marker"), "inside the chroot");
    assert_eq!(child.get("etc_passwd"), "absent");
    assert_eq!(child.get("effective_caps"), format!("{CAP_NET_ADMIN:#x}"));
    // The point of keeping the capability: nfnetlink still answers.
    assert_eq!(child.get("netlink"), "ok 0 tables");
    // The pidfile stays locked by the dropped child and names it.
    let pid = child.child.id();
    assert_eq!(
        std::fs::read_to_string(&pidfile).unwrap(),
        format!("{pid}\n")
    );
    assert_eq!(
        write_pidfile(&pidfile).unwrap_err().to_string(),
        format!("already running (pid {pid})")
    );
    println!(
        "dropped to {} uid {uid} gid {gid} in {}: CapEff {:#x} CapPrm {:#x} CapBnd {:#x}, \
         NFT_MSG_GETTABLE dump {}",
        user.name,
        root.display(),
        seen.mask("CapEff"),
        seen.mask("CapPrm"),
        seen.mask("CapBnd"),
        child.get("netlink")
    );
    child.finish();
}

/// The control: the same probe without the capability is refused, so the
/// netlink check above can tell the difference.
#[cfg(target_os = "linux")]
#[test]
fn drop_without_net_admin_is_refused_by_nfnetlink() {
    if run_as_child() || !root_or_skip("drop_without_net_admin_is_refused_by_nfnetlink") {
        return;
    }
    let user = TestUser::get();
    let scratch = Scratch::new("nocap");
    // Not there yet: drop_privileges creates it.
    let root = scratch.0.join("var").join("empty");
    let child = Rerun::start(
        "drop_without_net_admin_is_refused_by_nfnetlink",
        "drop",
        &[
            ("DROP_USER", &user.name),
            ("DROP_DIR", root.to_str().unwrap()),
            ("DROP_KEEP", "0"),
        ],
    );
    assert_eq!(child.get("drop"), "ok");
    let seen = Inspect::of(&child);
    assert_eq!(seen.field("Uid"), [&user.uid.to_string(); 4]);
    assert_eq!(seen.mask("CapEff"), 0);
    assert_eq!(seen.mask("CapPrm"), 0);
    assert_eq!(seen.mask("CapBnd"), 0);
    assert_eq!(seen.root, root);
    assert_eq!(child.get("netlink"), format!("errno {}", libc::EPERM));
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(&root).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
    println!(
        "without CAP_NET_ADMIN: CapEff {:#x}, NFT_MSG_GETTABLE -> {}; created {} 0755 root",
        seen.mask("CapEff"),
        child.get("netlink"),
        root.display()
    );
    child.finish();
}

#[cfg(target_os = "linux")]
#[test]
fn chroot_into_a_file_is_a_clear_error() {
    if run_as_child() || !root_or_skip("chroot_into_a_file_is_a_clear_error") {
        return;
    }
    let user = TestUser::get();
    let scratch = Scratch::new("notdir");
    let file = scratch.0.join("plainfile");
    std::fs::write(&file, "").unwrap();
    let child = Rerun::start(
        "chroot_into_a_file_is_a_clear_error",
        "drop",
        &[
            ("DROP_USER", &user.name),
            ("DROP_DIR", file.to_str().unwrap()),
            ("DROP_KEEP", "1"),
        ],
    );
    assert_eq!(
        child.get("drop"),
        format!("err chroot {}: Not a directory", file.display())
    );
    child.finish();
}

#[cfg(target_os = "linux")]
#[test]
fn daemonize_detaches() {
    if run_as_child() {
        return;
    }
    let scratch = Scratch::new("daemonize");
    let result = scratch.0.join("result");
    let run = Rerun::start(
        "daemonize_detaches",
        "daemonize",
        &[("RESULT", result.to_str().unwrap())],
    );
    // start() returned at EOF: the re-run process exited and the daemon
    // let go of the pipe. The parent's own exit status must be 0.
    let parent = run.child.id();
    run.finish();
    // Wait for the daemon's report; the bound only keeps a broken daemon
    // from hanging the suite.
    let mut text = None;
    for _ in 0..1000 {
        if let Ok(t) = std::fs::read_to_string(&result) {
            text = Some(t);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let text = text.expect("the daemon never wrote its report");
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k} in {text}"))
            .to_string()
    };
    assert_eq!(get("before"), parent.to_string());
    assert_ne!(get("pid"), get("before"), "must run on in a child");
    assert_eq!(get("sid"), get("pid"), "must lead a new session");
    assert_eq!(get("cwd"), "/");
    for fd in ["fd0", "fd1", "fd2"] {
        assert_eq!(get(fd), "/dev/null", "{fd}");
    }
    println!(
        "daemonized: pid {} -> {}, session {}",
        get("before"),
        get("pid"),
        get("sid")
    );
}

#[test]
fn daemonize_reports_a_failed_start_up() {
    if run_as_child() {
        return;
    }
    let mut run = Rerun::start("daemonize_reports_a_failed_start_up", "daemonize-fail", &[]);
    drop(run.child.stdin.take());
    let status = run.child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(1),
        "the parent must exit 1 when the daemon dies first"
    );
}

/// Poll `done` every 10 ms for up to 10 s; the bound only keeps a broken
/// case from hanging the suite.
#[cfg(target_os = "linux")]
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("timed out waiting for {what}");
}

/// A line of /proc/<pid>/task/<tid>/status as a signal mask.
#[cfg(target_os = "linux")]
fn signal_mask(task: &str, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("{task}/status")).unwrap();
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in {task}/status"));
    u64::from_str_radix(line.trim(), 16).unwrap()
}

#[cfg(target_os = "linux")]
fn bit(signal: libc::c_int) -> u64 {
    1 << (signal - 1)
}

/// The parent of `daemonize` waits in read(2) for the daemon's word. A
/// signal its caller catches interrupts that read (EINTR); the parent must
/// wait on, not report a start-up failure that did not happen.
#[cfg(target_os = "linux")]
#[test]
fn daemonize_waits_through_a_caught_signal() {
    if run_as_child() {
        return;
    }
    let scratch = Scratch::new("eintr");
    let mut run = Rerun::start(
        "daemonize_waits_through_a_caught_signal",
        "daemonize-eintr",
        &[("DIR", scratch.0.to_str().unwrap())],
    );
    let (pid, tid) = (run.child.id(), run.get("tid").to_string());
    let task = format!("/proc/{pid}/task/{tid}");
    eventually("the daemon", || scratch.0.join("forked").exists());
    // Only a signal that lands in the read itself tells the difference.
    eventually("the parent's read(2)", || {
        std::fs::read_to_string(format!("{task}/syscall"))
            .is_ok_and(|s| s.split_whitespace().next() == Some(&libc::SYS_read.to_string()))
    });
    // Thread-directed: libtest's other thread must not take it instead.
    // SAFETY: plain syscall without pointers.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_tgkill,
            pid as libc::pid_t,
            tid.parse::<libc::pid_t>().unwrap(),
            libc::SIGUSR1,
        )
    };
    assert_eq!(rc, 0, "tgkill: {}", std::io::Error::last_os_error());
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(
        run.child.try_wait().unwrap(),
        None,
        "the parent stopped waiting when a signal interrupted its read"
    );
    std::fs::write(scratch.0.join("go"), "").unwrap();
    drop(run.child.stdin.take());
    let status = run.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "the daemon did start");
}

/// Between the fork and `Signals::install` the daemon has no handlers. A
/// SIGTERM that arrives then must neither kill it (no cleanup, and a
/// start-up reported as failed) nor be lost: it is held until the handlers
/// are in, and they see it. Meanwhile the waiting parent keeps its own
/// signal mask.
#[cfg(target_os = "linux")]
#[test]
fn a_sigterm_before_the_handlers_is_held_for_them() {
    if run_as_child() {
        return;
    }
    let scratch = Scratch::new("held");
    let mut run = Rerun::start(
        "a_sigterm_before_the_handlers_is_held_for_them",
        "daemonize-held",
        &[("DIR", scratch.0.to_str().unwrap())],
    );
    let parent = format!("/proc/{}/task/{}", run.child.id(), run.get("tid"));
    eventually("the daemon", || scratch.0.join("forked").exists());
    let daemon: i32 = std::fs::read_to_string(scratch.0.join("forked"))
        .unwrap()
        .parse()
        .unwrap();
    let term = bit(libc::SIGTERM);
    assert_eq!(
        signal_mask(&parent, "SigBlk") & term,
        0,
        "the parent must wait with its own mask"
    );
    let task = format!("/proc/{daemon}/task/{daemon}");
    assert_ne!(signal_mask(&task, "SigBlk") & term, 0, "held in the daemon");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    eventually("SIGTERM pending in the daemon", || {
        signal_mask(&task, "ShdPnd") & term != 0
    });
    std::fs::write(scratch.0.join("go"), "").unwrap();
    drop(run.child.stdin.take());
    let status = run.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "start-up completed");
    let events = std::fs::read_to_string(scratch.0.join("events"))
        .expect("the daemon lived to write its events");
    assert_eq!(events, "Terminate");
    println!("SIGTERM held from the fork to Signals::install, then seen as {events}");
}

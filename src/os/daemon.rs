//! Becoming a daemon: detach from the terminal, claim the pidfile, and
//! give up root.
//!
//! The order matters and is the caller's job: open everything that needs
//! root first (capture handle, `/dev/pf` or the netlink socket), then
//! [`daemonize`], then [`write_pidfile`] (so it records the child's pid and
//! the child holds the lock) and the signal handlers (`Signals::install`,
//! which must come after the fork), then [`drop_privileges`]. From then on
//! the process lives in an empty chroot as an unprivileged user.
//!
//! On Linux the nftables backend talks nfnetlink, and the kernel checks
//! CAP_NET_ADMIN of the *sending process* on every message, not only of
//! whoever opened the socket. So with `keep_net_admin` the process keeps
//! exactly that one capability across the uid switch and nothing else; on
//! the BSDs and macOS the already-open pf descriptor is all it needs and
//! the flag is ignored.

use std::fmt;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};
use nix::unistd::{ForkResult, Gid, Uid, User};

/// Why becoming a daemon, claiming the pidfile, dropping privileges or
/// raising the priority failed: one variant per step. `Display` is the log
/// line (system errors without their "(os error N)" except in the
/// `daemonize` steps); the system error is the `source()`.
#[derive(Debug)]
pub enum Error {
    /// A step of [`daemonize`] (pipe, sigprocmask, fork, setsid, chdir,
    /// /dev/null, dup2).
    Daemonize {
        step: &'static str,
        source: io::Error,
    },
    /// [`daemonize`] was called with signal handlers already installed.
    SignalsFirst,
    /// Opening or writing the pidfile.
    Pidfile { path: PathBuf, source: io::Error },
    /// Locking the pidfile failed for a reason other than another holder.
    PidfileLock { path: PathBuf, source: Errno },
    /// Another process holds the pidfile's lock; its pid if the file says.
    AlreadyRunning { path: PathBuf, pid: Option<u32> },
    /// The user to become does not exist.
    NoSuchUser { user: String },
    /// Looking the user up failed.
    Getpwnam { user: String, source: Errno },
    /// Creating the chroot directory.
    Mkdir { dir: PathBuf, source: io::Error },
    /// chroot(2) into the directory.
    Chroot { dir: PathBuf, source: Errno },
    /// chdir("/") inside the new root.
    Chdir { dir: PathBuf, source: Errno },
    /// setgroups(2) to the user's group alone.
    Setgroups { gid: u32, source: Errno },
    /// setgid(2).
    Setgid { gid: u32, source: Errno },
    /// setuid(2).
    Setuid { uid: u32, source: Errno },
    /// Root could be regained after setuid.
    StillRoot { uid: u32 },
    /// A step of keeping or dropping Linux capabilities: `what` names the
    /// prctl or syscall, `cap` the capability number it was asked about.
    Capability {
        what: &'static str,
        cap: Option<libc::c_ulong>,
        source: Errno,
    },
    /// Capabilities other than the ones asked for survived.
    CapabilitiesKept { effective: u64, permitted: u64 },
    /// sched_setscheduler(SCHED_FIFO).
    Realtime(io::Error),
    /// No real-time scheduling on this system.
    NoRealtime,
    /// setpriority(-20).
    Nice(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The step is the variant's business, not the admin's: the
            // message is the one ftpsesame has always printed.
            Error::Daemonize { source, .. } => write!(f, "daemonize: {source}"),
            Error::SignalsFirst => {
                f.write_str("daemonize: signal handlers installed before the fork")
            }
            Error::Pidfile { path, source } => {
                write!(f, "pidfile {}: {}", path.display(), plain(source))
            }
            Error::PidfileLock { path, source } => {
                write!(f, "pidfile {}: lock: {}", path.display(), source.desc())
            }
            Error::AlreadyRunning { pid: Some(pid), .. } => {
                write!(f, "already running (pid {pid})")
            }
            Error::AlreadyRunning { path, pid: None } => {
                write!(f, "already running (pidfile {} is locked)", path.display())
            }
            Error::NoSuchUser { user } => write!(f, "no such user: {user}"),
            Error::Getpwnam { user, source } => write!(f, "getpwnam {user}: {}", source.desc()),
            Error::Mkdir { dir, source } => {
                write!(f, "mkdir {}: {}", dir.display(), plain(source))
            }
            Error::Chroot { dir, source } => {
                write!(f, "chroot {}: {}", dir.display(), source.desc())
            }
            Error::Chdir { dir, source } => {
                write!(f, "chdir / in {}: {}", dir.display(), source.desc())
            }
            Error::Setgroups { gid, source } => write!(f, "setgroups {gid}: {}", source.desc()),
            Error::Setgid { gid, source } => write!(f, "setgid {gid}: {}", source.desc()),
            Error::Setuid { uid, source } => write!(f, "setuid {uid}: {}", source.desc()),
            Error::StillRoot { uid } => write!(f, "still able to become root after setuid {uid}"),
            Error::Capability {
                what,
                cap: Some(cap),
                source,
            } => write!(f, "{what} {cap}: {}", source.desc()),
            Error::Capability {
                what,
                cap: None,
                source,
            } => write!(f, "{what}: {}", source.desc()),
            Error::CapabilitiesKept {
                effective,
                permitted,
            } => write!(
                f,
                "capabilities not dropped: effective {effective:#x}, permitted {permitted:#x}"
            ),
            Error::Realtime(e) => write!(f, "SCHED_FIFO: {}", plain(e)),
            Error::NoRealtime => {
                f.write_str("real-time scheduling is not available on this system")
            }
            Error::Nice(e) => write!(f, "setpriority: {}", plain(e)),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Daemonize { source, .. }
            | Error::Pidfile { source, .. }
            | Error::Mkdir { source, .. }
            | Error::Realtime(source)
            | Error::Nice(source) => Some(source),
            Error::PidfileLock { source, .. }
            | Error::Getpwnam { source, .. }
            | Error::Chroot { source, .. }
            | Error::Chdir { source, .. }
            | Error::Setgroups { source, .. }
            | Error::Setgid { source, .. }
            | Error::Setuid { source, .. }
            | Error::Capability { source, .. } => Some(source),
            Error::SignalsFirst
            | Error::AlreadyRunning { .. }
            | Error::NoSuchUser { .. }
            | Error::StillRoot { .. }
            | Error::CapabilitiesKept { .. }
            | Error::NoRealtime => None,
        }
    }
}

/// Fork; the child carries on detached (new session, cwd `/`, standard
/// descriptors on `/dev/null`) and the parent waits until the child calls
/// [`Ready::done`]: it then exits 0, or 1 if the child died or dropped the
/// handle first. So `service ftpsesame start` fails when start-up fails
/// after the fork, and the pidfile exists by the time the command returns
/// (what rc.subr and systemd's `Type=forking` read).
///
/// Signals: call [`Signals::install`](crate::os::signals::Signals::install)
/// after this, in the child, so that the parent keeps the dispositions it
/// started with and shares no signal pipe with the daemon (installing
/// first is refused). The signals `Signals` handles are blocked across the
/// fork: the parent gets its mask back at once, while the child returns
/// with them still blocked and `Signals::install` unblocks them once its
/// handlers are in place. A SIGTERM that reaches the daemon in between is
/// therefore delivered then, and ends it cleanly, rather than killing it
/// with the default action or being lost.
///
/// Call it while the process is single-threaded (before anything spawns a
/// thread): only the calling thread survives a fork.
pub fn daemonize() -> Result<Ready, Error> {
    let step = |step| {
        move |e: Errno| Error::Daemonize {
            step,
            source: e.into(),
        }
    };
    if crate::os::signals::installed() {
        return Err(Error::SignalsFirst);
    }
    // Whatever the parent buffered must go out once, not twice.
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    let (rd, wr) = nix::unistd::pipe().map_err(step("pipe"))?;
    let mut before = SigSet::empty();
    pthread_sigmask(
        SigmaskHow::SIG_BLOCK,
        Some(&crate::os::signals::caught()),
        Some(&mut before),
    )
    .map_err(step("sigprocmask"))?;
    // SAFETY: the caller guarantees a single-threaded process, so the child
    // may go on running ordinary Rust code.
    match unsafe { nix::unistd::fork() } {
        Err(e) => {
            let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&before), None);
            return Err(step("fork")(e));
        }
        Ok(ForkResult::Parent { .. }) => {
            let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&before), None);
            drop(wr);
            wait_for_child(rd)
        }
        Ok(ForkResult::Child) => drop(rd),
    }
    nix::unistd::setsid().map_err(step("setsid"))?;
    let io_step = |step| move |source| Error::Daemonize { step, source };
    std::env::set_current_dir("/").map_err(io_step("chdir"))?;
    let null = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(io_step("/dev/null"))?;
    for target in 0..=2 {
        // SAFETY: dup2 onto the standard descriptors; `null` stays valid.
        if unsafe { libc::dup2(null.as_raw_fd(), target) } < 0 {
            return Err(io_step("dup2")(io::Error::last_os_error()));
        }
    }
    // `null` itself is closed on drop unless it already was 0, 1 or 2;
    // in that case it is one of the std descriptors and must stay open.
    if null.as_raw_fd() <= 2 {
        std::mem::forget(null);
    }
    Ok(Ready(wr))
}

/// The parent's side: wait for the child's byte and exit accordingly. A
/// signal the caller catches may interrupt the read; that says nothing
/// about the child, so the read is simply resumed.
fn wait_for_child(rd: OwnedFd) -> ! {
    let mut byte = [0u8; 1];
    let ok = loop {
        match nix::unistd::read(&rd, &mut byte) {
            Err(Errno::EINTR) => continue,
            Ok(n) => break n == 1,
            Err(_) => break false,
        }
    };
    if !ok {
        let _ = io::stderr().write_all(b"ftpsesame: start-up failed, see the system log\n");
    }
    // _exit: the child owns every shared resource from here on; no
    // atexit handlers or destructors may run in the parent.
    // SAFETY: ends the process without running anything else.
    unsafe { libc::_exit(if ok { 0 } else { 1 }) }
}

/// The child's half of the start-up handshake with the waiting parent.
#[derive(Debug)]
pub struct Ready(OwnedFd);

impl Ready {
    /// Start-up is complete: release the parent with exit status 0.
    pub fn done(self) {
        let _ = nix::unistd::write(&self.0, b"1");
    }
}

/// The claimed pidfile. Holding it holds the lock; dropping it (or exiting)
/// releases the lock.
///
/// The file itself is deliberately never removed: by the time the daemon
/// exits it is chrooted and unprivileged, so it can neither see nor unlink
/// `/var/run/ftpsesame.pid`. A stale file is harmless because the lock, not
/// the file's existence, decides whether an instance is running: the next
/// start takes the free lock and overwrites the old pid.
#[derive(Debug)]
pub struct Pidfile {
    // Kept open for the lock; never read or written again.
    _file: Flock<File>,
}

/// Write our pid to `path` (mode 0644, old content replaced) and keep it
/// locked. Fails with "already running (pid N)" while another process holds
/// the lock. Call it as root, after [`daemonize`], before [`drop_privileges`].
pub fn write_pidfile(path: &Path) -> Result<Pidfile, Error> {
    let failed = |source| Error::Pidfile {
        path: path.to_path_buf(),
        source,
    };
    // No O_TRUNC: a running instance's pid must survive our failed attempt.
    // O_NOFOLLOW: root must not be tricked into writing through a symlink.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(failed)?;
    let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(locked) => locked,
        Err((mut file, Errno::EWOULDBLOCK)) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(Error::AlreadyRunning {
                path: path.to_path_buf(),
                pid: text.trim().parse().ok(),
            });
        }
        Err((_, source)) => {
            return Err(Error::PidfileLock {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let write = |file: &mut File| -> io::Result<()> {
        // The umask may have narrowed the mode of a new file; an old file
        // may have had any mode.
        file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        writeln!(file, "{}", std::process::id())?;
        file.sync_data()
    };
    write(&mut file).map_err(failed)?;
    Ok(Pidfile { _file: file })
}

/// Become `user` inside the chroot `dir`, for good.
///
/// Steps, in order: look the user up (needs `/etc/passwd`, so before the
/// chroot); create `dir` (root-owned, 0755) if absent; chroot into it and
/// chdir `/`; on Linux with `keep_net_admin`, prepare to keep exactly
/// CAP_NET_ADMIN; `setgroups([gid])`, setgid, setuid; then check that root
/// cannot be regained. The process is unchanged if the lookup, mkdir or
/// chroot fails; after a later failure it is half-dropped and must exit.
///
/// Call it while single-threaded: on Linux capabilities, keepcaps and the
/// bounding set belong to the calling thread only.
pub fn drop_privileges(user: &str, dir: &Path, keep_net_admin: bool) -> Result<(), Error> {
    let pw = match User::from_name(user) {
        Ok(Some(pw)) => pw,
        Ok(None) => {
            return Err(Error::NoSuchUser {
                user: user.to_string(),
            });
        }
        Err(source) => {
            return Err(Error::Getpwnam {
                user: user.to_string(),
                source,
            });
        }
    };
    if !dir.exists() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|source| Error::Mkdir {
                dir: dir.to_path_buf(),
                source,
            })?;
    }
    nix::unistd::chroot(dir).map_err(|source| Error::Chroot {
        dir: dir.to_path_buf(),
        source,
    })?;
    nix::unistd::chdir("/").map_err(|source| Error::Chdir {
        dir: dir.to_path_buf(),
        source,
    })?;

    #[cfg(target_os = "linux")]
    caps::prepare(keep_net_admin)?;
    #[cfg(not(target_os = "linux"))]
    let _ = keep_net_admin; // pf needs only the descriptor opened as root

    let gid = pw.gid.as_raw();
    // libc, not nix: nix has no setgroups on macOS, and the length type
    // differs per system (`as _` fits both).
    // SAFETY: one valid gid_t, length 1.
    if unsafe { libc::setgroups(1 as _, &gid) } != 0 {
        return Err(Error::Setgroups {
            gid,
            source: Errno::last(),
        });
    }
    nix::unistd::setgid(Gid::from_raw(gid)).map_err(|source| Error::Setgid { gid, source })?;
    let uid = pw.uid.as_raw();
    nix::unistd::setuid(pw.uid).map_err(|source| Error::Setuid { uid, source })?;

    #[cfg(target_os = "linux")]
    caps::finish(keep_net_admin)?;

    // Paranoia, as every privilege-separated daemon does: prove it stuck.
    if uid != 0
        && (nix::unistd::setuid(Uid::from_raw(0)).is_ok() || nix::unistd::geteuid().is_root())
    {
        return Err(Error::StillRoot { uid });
    }
    Ok(())
}

/// Scheduling for the race with the data connection: the rule must be in
/// before the client's SYN, a few hundred microseconds after the reply, so
/// the daemon should run as soon as its packet arrives. By default it takes
/// the highest nice priority; `realtime` asks for SCHED_FIFO instead (Linux
/// and FreeBSD; the kernel's real-time throttling still leaves the rest of
/// the system its share). Call while root.
pub fn raise_priority(realtime: bool) -> Result<&'static str, Error> {
    if realtime {
        #[cfg(any(target_os = "linux", target_os = "freebsd"))]
        {
            let param = libc::sched_param { sched_priority: 10 };
            // SAFETY: plain syscall on our own process with a valid param.
            if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
                return Err(Error::Realtime(io::Error::last_os_error()));
            }
            return Ok("real-time (SCHED_FIFO 10)");
        }
        #[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
        return Err(Error::NoRealtime);
    }
    // SAFETY: plain syscall on our own process.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS as _, 0, -20) } != 0 {
        return Err(Error::Nice(io::Error::last_os_error()));
    }
    Ok("nice -20")
}

/// The effective capability mask of this process, for logging (Linux only).
///
/// Asks the kernel (capget) rather than reading `/proc/self/status`
/// `CapEff`: the value is the same, but `/proc` is gone inside the chroot,
/// which is exactly when this is worth logging.
pub fn effective_caps() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        caps::get().ok().map(|set| set.effective)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// An io::Error as "Operation not permitted", without "(os error 1)".
fn plain(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => Errno::from_raw(n).desc().to_string(),
        None => e.to_string(),
    }
}

/// Linux capabilities through the raw syscalls (capability header v3: two
/// 32-bit words per set).
#[cfg(target_os = "linux")]
mod caps {
    use nix::errno::Errno;

    use super::Error;

    fn failed(what: &'static str, cap: Option<libc::c_ulong>) -> impl FnOnce(Errno) -> Error {
        move |source| Error::Capability { what, cap, source }
    }

    pub(super) const CAP_NET_ADMIN: u32 = 12;
    const VERSION_3: u32 = 0x2008_0522;

    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }

    /// The three sets of this process, as 64-bit masks.
    pub(super) struct Sets {
        pub(super) effective: u64,
        pub(super) permitted: u64,
        pub(super) inheritable: u64,
    }

    pub(super) fn get() -> Result<Sets, Errno> {
        let mut header = Header {
            version: VERSION_3,
            pid: 0,
        };
        let mut data = [Data::default(); 2];
        // SAFETY: header and a two-element data array, as v3 requires.
        let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
        Errno::result(rc)?;
        let join = |lo: u32, hi: u32| u64::from(lo) | u64::from(hi) << 32;
        Ok(Sets {
            effective: join(data[0].effective, data[1].effective),
            permitted: join(data[0].permitted, data[1].permitted),
            inheritable: join(data[0].inheritable, data[1].inheritable),
        })
    }

    fn set(sets: &Sets) -> Result<(), Errno> {
        let mut header = Header {
            version: VERSION_3,
            pid: 0,
        };
        let split = |v: u64, word: usize| (v >> (32 * word)) as u32;
        let data: [Data; 2] = std::array::from_fn(|w| Data {
            effective: split(sets.effective, w),
            permitted: split(sets.permitted, w),
            inheritable: split(sets.inheritable, w),
        });
        // SAFETY: as in get(); the kernel only reads `data`.
        let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
        Errno::result(rc).map(drop)
    }

    fn prctl(option: libc::c_int, arg: libc::c_ulong) -> Result<libc::c_int, Errno> {
        // SAFETY: plain integer arguments; unused ones are zero.
        Errno::result(unsafe { libc::prctl(option, arg, 0 as libc::c_ulong, 0, 0) })
    }

    /// While still root: empty the bounding set but for CAP_NET_ADMIN (or
    /// entirely), clear the ambient set, and ask the kernel to keep the
    /// permitted set across setuid.
    pub(super) fn prepare(keep_net_admin: bool) -> Result<(), Error> {
        // Walk capability numbers until the kernel says the number is
        // unknown; that copes with kernels older or newer than libc.
        for cap in 0..64 {
            match prctl(libc::PR_CAPBSET_READ, cap) {
                Err(Errno::EINVAL) => break,
                Err(e) => return Err(failed("PR_CAPBSET_READ", Some(cap))(e)),
                Ok(0) => continue,
                Ok(_) if keep_net_admin && cap == libc::c_ulong::from(CAP_NET_ADMIN) => {}
                Ok(_) => prctl(libc::PR_CAPBSET_DROP, cap)
                    .map(drop)
                    .map_err(failed("PR_CAPBSET_DROP", Some(cap)))?,
            }
        }
        // Ambient capabilities would survive setuid on their own; none wanted.
        // EINVAL: a kernel without ambient sets (before 4.3) has none to clear.
        match prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as _) {
            Ok(_) | Err(Errno::EINVAL) => {}
            Err(e) => return Err(failed("clear ambient capabilities", None)(e)),
        }
        if keep_net_admin {
            prctl(libc::PR_SET_KEEPCAPS, 1).map_err(failed("PR_SET_KEEPCAPS", None))?;
        }
        Ok(())
    }

    /// After setuid: permitted = effective = {CAP_NET_ADMIN} (or nothing),
    /// inheritable empty, and keepcaps off again.
    pub(super) fn finish(keep_net_admin: bool) -> Result<(), Error> {
        let mask = if keep_net_admin {
            1u64 << CAP_NET_ADMIN
        } else {
            0
        };
        set(&Sets {
            effective: mask,
            permitted: mask,
            inheritable: 0,
        })
        .map_err(failed("capset", None))?;
        if keep_net_admin {
            prctl(libc::PR_SET_KEEPCAPS, 0).map_err(failed("PR_SET_KEEPCAPS", None))?;
        }
        let now = get().map_err(failed("capget", None))?;
        if now.effective != mask || now.permitted != mask || now.inheritable != 0 {
            return Err(Error::CapabilitiesKept {
                effective: now.effective,
                permitted: now.permitted,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("ftpsesame-daemon-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn unknown_user_is_refused_before_anything_changes() {
        // A name with a space cannot exist in /etc/passwd, so this can never
        // reach the chroot even when the tests run as root.
        let base = scratch("nouser");
        let dir = base.join("never-created");
        let err = drop_privileges("ftpsesame no such user", &dir, true).unwrap_err();
        assert!(matches!(err, Error::NoSuchUser { .. }), "{err:?}");
        assert_eq!(err.to_string(), "no such user: ftpsesame no such user");
        assert!(!dir.exists(), "mkdir must come after the user lookup");
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn pidfile_holds_our_pid_with_mode_0644() {
        let dir = scratch("pid");
        let path = dir.join("x.pid");
        std::fs::write(&path, "999999999 stale and longer than a pid\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let guard = write_pidfile(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("{}\n", std::process::id()));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        // flock belongs to the open file description, so even a second open
        // in this same process is refused while the guard lives.
        let err = write_pidfile(&path).unwrap_err();
        let pid = std::process::id();
        assert!(
            matches!(err, Error::AlreadyRunning { pid: Some(p), .. } if p == pid),
            "{err:?}"
        );
        assert_eq!(err.to_string(), format!("already running (pid {pid})"));
        // The refused attempt must not have clobbered the content.
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        drop(guard);
        let again = write_pidfile(&path);
        assert!(again.is_ok(), "lock released on drop: {again:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pidfile_refuses_symlinks() {
        let dir = scratch("link");
        let target = dir.join("target");
        std::fs::write(&target, "keep me").unwrap();
        let link = dir.join("x.pid");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = write_pidfile(&link).unwrap_err();
        // O_NOFOLLOW: ELOOP on Linux and OpenBSD, EMLINK on FreeBSD.
        assert!(matches!(err, Error::Pidfile { .. }), "{err:?}");
        let io = std::error::Error::source(&err)
            .and_then(|e| e.downcast_ref::<io::Error>())
            .expect("the io::Error is the source");
        assert!(io.raw_os_error().is_some(), "{io:?}");
        assert_eq!(
            err.to_string(),
            format!("pidfile {}: {}", link.display(), plain(io))
        );
        assert!(!err.to_string().contains("os error"), "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_locked_pidfile_without_a_pid_names_the_file() {
        let dir = scratch("nopid");
        let path = dir.join("x.pid");
        let guard = write_pidfile(&path).unwrap();
        std::fs::write(&path, "not a pid\n").unwrap();
        let err = write_pidfile(&path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("already running (pidfile {} is locked)", path.display())
        );
        drop(guard);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The texts admins grep for, one per step that has its own variant.
    #[test]
    fn messages_name_the_step_as_before() {
        let dir = PathBuf::from("/var/empty");
        let cases: [(Error, &str); 9] = [
            (
                Error::Daemonize {
                    step: "fork",
                    source: Errno::EAGAIN.into(),
                },
                "daemonize: Resource temporarily unavailable (os error 11)",
            ),
            (
                Error::Chroot {
                    dir: dir.clone(),
                    source: Errno::ENOTDIR,
                },
                "chroot /var/empty: Not a directory",
            ),
            (
                Error::Chdir {
                    dir: dir.clone(),
                    source: Errno::EACCES,
                },
                "chdir / in /var/empty: Permission denied",
            ),
            (
                Error::Mkdir {
                    dir,
                    source: io::Error::from_raw_os_error(libc::EROFS),
                },
                "mkdir /var/empty: Read-only file system",
            ),
            (
                Error::Setuid {
                    uid: 13,
                    source: Errno::EPERM,
                },
                "setuid 13: Operation not permitted",
            ),
            (
                Error::Capability {
                    what: "PR_CAPBSET_DROP",
                    cap: Some(12),
                    source: Errno::EPERM,
                },
                "PR_CAPBSET_DROP 12: Operation not permitted",
            ),
            (
                Error::Capability {
                    what: "capset",
                    cap: None,
                    source: Errno::EPERM,
                },
                "capset: Operation not permitted",
            ),
            (
                Error::CapabilitiesKept {
                    effective: 0x1000,
                    permitted: 0x3000,
                },
                "capabilities not dropped: effective 0x1000, permitted 0x3000",
            ),
            (
                Error::Nice(io::Error::from_raw_os_error(libc::EACCES)),
                "setpriority: Permission denied",
            ),
        ];
        for (err, text) in cases {
            assert_eq!(err.to_string(), text);
            let has_source = std::error::Error::source(&err).is_some();
            assert_eq!(
                has_source,
                !matches!(err, Error::CapabilitiesKept { .. }),
                "{err:?}"
            );
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn effective_caps_matches_proc_status() {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("CapEff:")).unwrap();
        let want = u64::from_str_radix(line["CapEff:".len()..].trim(), 16).unwrap();
        assert_eq!(effective_caps(), Some(want));
    }
}

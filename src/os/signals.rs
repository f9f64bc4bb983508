//! Signals as poll()able events (the self-pipe trick).
//!
//! The daemon is one thread around one poll() loop. A signal handler may do
//! almost nothing safely, so ours only writes the signal number as one byte
//! into a non-blocking pipe. The loop polls the pipe's read end next to the
//! capture descriptor and, when it is readable, calls [`Signals::drain`] to
//! turn the bytes into [`Event`]s and act on them at a safe point.
//!
//! SA_RESTART is deliberately not set: a signal interrupts a blocking call
//! with EINTR, so the loop comes round to the pipe at once.
//!
//! SIGHUP is ignored: the daemon has no configuration to reload, and a
//! hang-up must not end it without removing its rules. SIGPIPE is ignored
//! too (a vanished peer must show up as EPIPE).
//!
//! A daemon installs the handlers after [`daemonize`](crate::os::daemon::daemonize),
//! in the child, which has the signals of `caught()` blocked until then;
//! installing unblocks them, so one that arrived in between is handled now.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::sys::signal::{
    SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal, pthread_sigmask, sigaction,
};

/// What a signal asks the daemon to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// SIGTERM, SIGINT, SIGQUIT: clean up and exit.
    Terminate,
    /// SIGUSR1 (and SIGINFO, ^T, on the BSDs and macOS): log statistics.
    Stats,
}

/// The signals we handle and what each means.
const HANDLED: &[(Signal, Event)] = &[
    (Signal::SIGTERM, Event::Terminate),
    (Signal::SIGINT, Event::Terminate),
    (Signal::SIGQUIT, Event::Terminate),
    (Signal::SIGUSR1, Event::Stats),
    #[cfg(any(
        target_os = "freebsd",
        target_os = "openbsd",
        target_os = "netbsd",
        target_os = "dragonfly",
        target_os = "macos"
    ))]
    (Signal::SIGINFO, Event::Stats),
];

/// Ignored while installed, restored to the default on drop.
const IGNORED: &[Signal] = &[Signal::SIGHUP];

/// Every signal whose disposition [`Signals::install`] sets, handled or
/// ignored, but for SIGPIPE (which no one sends on purpose): the set
/// `daemonize` keeps blocked in the child until the handlers are in.
pub(crate) fn caught() -> SigSet {
    let mut set = SigSet::empty();
    for &(signal, _) in HANDLED {
        set.add(signal);
    }
    for &signal in IGNORED {
        set.add(signal);
    }
    set
}

/// True while a [`Signals`] exists.
pub(crate) fn installed() -> bool {
    WRITE_FD.load(Ordering::SeqCst) >= 0
}

/// Write end of the pipe for the handler; -1 when nothing is installed.
static WRITE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(signo: libc::c_int) {
    // Only async-signal-safe work here: an atomic load and write(2). errno
    // is restored because the interrupted code may be about to read it.
    let saved = Errno::last_raw();
    let fd = WRITE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = signo as u8;
        // A full pipe drops the byte: the loop has plenty already pending.
        // SAFETY: one byte from a live local; a bad fd only yields EBADF.
        unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
    }
    Errno::set_raw(saved);
}

/// The installed handlers and their pipe. Only one may exist at a time;
/// dropping it restores the default dispositions.
#[derive(Debug)]
pub struct Signals {
    read: OwnedFd,
    write: OwnedFd,
}

impl Signals {
    /// Create the pipe (both ends non-blocking and close-on-exec), install
    /// the handlers, ignore SIGHUP and SIGPIPE, then unblock the signals
    /// `daemonize` held back: one that arrived since the fork is handled
    /// at this point.
    pub fn install() -> std::io::Result<Signals> {
        let (read, write) = nix::unistd::pipe()?;
        for fd in [&read, &write] {
            // pipe + fcntl rather than pipe2: macOS has no pipe2, and we are
            // single-threaded here, so there is no exec to race with.
            fcntl(fd.as_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
            fcntl(fd.as_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
        }
        if WRITE_FD
            .compare_exchange(-1, write.as_raw_fd(), Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "signal handlers already installed",
            ));
        }
        let signals = Signals { read, write };
        let action = SigAction::new(
            SigHandler::Handler(on_signal),
            SaFlags::empty(),
            SigSet::empty(),
        );
        for &(signal, _) in HANDLED {
            // SAFETY: the handler is async-signal-safe (see on_signal).
            // On error `signals` drops, which undoes what was done.
            unsafe { sigaction(signal, &action) }?;
        }
        let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
        for &signal in IGNORED.iter().chain(&[Signal::SIGPIPE]) {
            // SAFETY: ignoring a signal installs no code.
            unsafe { sigaction(signal, &ignore) }?;
        }
        pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&caught()), None)?;
        Ok(signals)
    }

    /// The read end, to poll for POLLIN.
    pub fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// Read every pending signal and report each as an event, in arrival
    /// order. Returns when the pipe is empty; never blocks.
    pub fn drain(&self, out: &mut impl FnMut(Event)) {
        let mut buf = [0u8; 64];
        loop {
            match nix::unistd::read(&self.read, &mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    for &byte in &buf[..n] {
                        if let Some(event) = event_for(libc::c_int::from(byte)) {
                            out(event);
                        }
                    }
                }
                Err(Errno::EINTR) => continue,
                // EAGAIN: empty. Anything else cannot happen on our own pipe
                // and would repeat forever, so stop either way.
                Err(_) => return,
            }
        }
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
        for signal in HANDLED
            .iter()
            .map(|&(signal, _)| signal)
            .chain(IGNORED.iter().copied())
        {
            // SAFETY: restoring the default disposition installs no code.
            let _ = unsafe { sigaction(signal, &default) };
        }
        // Unhook the handler before the fd number can be reused by a file.
        let _ = WRITE_FD.compare_exchange(
            self.write.as_raw_fd(),
            -1,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }
}

fn event_for(signo: libc::c_int) -> Option<Event> {
    HANDLED
        .iter()
        .find(|(signal, _)| *signal as libc::c_int == signo)
        .map(|&(_, event)| event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::BorrowedFd;
    use std::sync::Mutex;

    // The handlers are process-wide and test threads run in parallel: one
    // test at a time may own them.
    static OWNER: Mutex<()> = Mutex::new(());

    fn events(signals: &Signals) -> Vec<Event> {
        let mut seen = Vec::new();
        signals.drain(&mut |e| seen.push(e));
        seen
    }

    fn readable(signals: &Signals) -> bool {
        // SAFETY: the fd lives as long as `signals`, which outlives this call.
        let fd = unsafe { BorrowedFd::borrow_raw(signals.fd()) };
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        let n = poll(&mut fds, PollTimeout::ZERO).unwrap();
        n == 1 && fds[0].revents().unwrap().contains(PollFlags::POLLIN)
    }

    #[test]
    fn usr1_is_stats_and_makes_the_pipe_readable() {
        let _own = OWNER.lock().unwrap_or_else(|e| e.into_inner());
        let signals = Signals::install().unwrap();
        assert!(!readable(&signals));
        // raise() delivers to this thread before it returns.
        nix::sys::signal::raise(Signal::SIGUSR1).unwrap();
        assert!(readable(&signals));
        assert_eq!(events(&signals), [Event::Stats]);
        assert!(!readable(&signals), "drain must empty the pipe");
        assert_eq!(events(&signals), []);
    }

    #[test]
    fn term_int_quit_in_order_and_hup_ignored() {
        let _own = OWNER.lock().unwrap_or_else(|e| e.into_inner());
        let signals = Signals::install().unwrap();
        // Without our handler SIGTERM would end the test binary right here,
        // and SIGHUP without the ignore.
        for s in [
            Signal::SIGTERM,
            Signal::SIGHUP,
            Signal::SIGINT,
            Signal::SIGQUIT,
        ] {
            nix::sys::signal::raise(s).unwrap();
        }
        assert_eq!(
            events(&signals),
            [Event::Terminate, Event::Terminate, Event::Terminate]
        );
    }

    #[test]
    fn a_signal_held_before_install_is_handled_by_it() {
        let _own = OWNER.lock().unwrap_or_else(|e| e.into_inner());
        // As daemonize leaves the child: the caught signals blocked.
        let mut before = SigSet::empty();
        pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&caught()), Some(&mut before)).unwrap();
        // Default action is to terminate; blocked, it only waits.
        nix::sys::signal::raise(Signal::SIGTERM).unwrap();
        nix::sys::signal::raise(Signal::SIGHUP).unwrap();
        assert!(!installed());
        let signals = Signals::install().unwrap();
        assert!(installed());
        let now = SigSet::thread_get_mask().unwrap();
        assert!(!now.contains(Signal::SIGTERM) && !now.contains(Signal::SIGHUP));
        assert_eq!(events(&signals), [Event::Terminate]);
        drop(signals);
        assert!(!installed());
        pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&before), None).unwrap();
    }

    #[test]
    fn daemonize_refuses_to_fork_with_handlers_installed() {
        let _own = OWNER.lock().unwrap_or_else(|e| e.into_inner());
        let _signals = Signals::install().unwrap();
        // Refused before any fork, so this test process carries on alone.
        let err = crate::os::daemon::daemonize().unwrap_err();
        assert!(
            matches!(err, crate::os::daemon::Error::SignalsFirst),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "daemonize: signal handlers installed before the fork"
        );
    }

    #[test]
    fn caught_is_what_install_sets() {
        let set = caught();
        for s in [
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGQUIT,
            Signal::SIGUSR1,
            Signal::SIGHUP,
        ] {
            assert!(set.contains(s), "{s}");
        }
        assert!(!set.contains(Signal::SIGPIPE) && !set.contains(Signal::SIGUSR2));
    }

    #[test]
    fn sigpipe_is_ignored() {
        let _own = OWNER.lock().unwrap_or_else(|e| e.into_inner());
        let _signals = Signals::install().unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        drop(r);
        // Would kill the process if SIGPIPE still had its default action.
        assert_eq!(nix::unistd::write(&w, b"x"), Err(Errno::EPIPE));
    }

    #[test]
    fn second_install_is_refused_until_the_first_is_dropped() {
        let _own = OWNER.lock().unwrap_or_else(|e| e.into_inner());
        let first = Signals::install().unwrap();
        let err = Signals::install().unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
        drop(first);
        let again = Signals::install().unwrap();
        nix::sys::signal::raise(Signal::SIGUSR1).unwrap();
        assert_eq!(events(&again), [Event::Stats]);
    }

    #[test]
    fn pipe_ends_are_nonblocking_and_cloexec() {
        let _own = OWNER.lock().unwrap_or_else(|e| e.into_inner());
        let signals = Signals::install().unwrap();
        for fd in [signals.read.as_fd(), signals.write.as_fd()] {
            let fl = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL).unwrap());
            assert!(fl.contains(OFlag::O_NONBLOCK));
            let fdfl = FdFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFD).unwrap());
            assert!(fdfl.contains(FdFlag::FD_CLOEXEC));
        }
    }
}

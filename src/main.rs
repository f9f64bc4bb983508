//! ftpsesame(8): the program. Parses the command line, opens the capture
//! and the firewall while root, becomes a daemon, drops privileges, then
//! runs one poll loop over the capture, the signal pipe and the purge
//! timer. All decisions are made by `ftpsesame::core::engine`.

use std::fmt;
use std::path::Path;
use std::process::ExitCode;

use ftpsesame::core::engine::{Config, ControlPorts, Engine, Timeouts, now_us};
use ftpsesame::core::log::{self as core_log, Level};
use ftpsesame::core::rule::RuleOptions;
use ftpsesame::firewall;
use ftpsesame::firewall::dryrun::DryRun;
use ftpsesame::firewall::{Backend, Firewall};
use ftpsesame::logmsg;
use ftpsesame::os::capture;
use ftpsesame::os::cli::{self, Options};
use ftpsesame::os::daemon;
use ftpsesame::os::log;
use ftpsesame::os::signals::{Event, Signals};
use ftpsesame::os::source::{self, Source, Spec};

const PIDFILE: &str = "/var/run/ftpsesame.pid";
const CHROOT: &str = "/var/empty";
const USER: &str = "proxy";
/// Packets read per wake-up before signals and timers get a look.
const BATCH: usize = 256;

/// Why the program stops with exit status 1: an edge's error, or one of
/// main's own steps. `Display` is the message.
#[derive(Debug)]
enum Fatal {
    Cli(cli::Error),
    NotRoot,
    Capture(capture::Error),
    /// Opening the packet source `-i` names.
    Source(source::Error),
    /// Reading from the open source `name`.
    Read {
        name: String,
        source: source::Error,
    },
    Firewall(firewall::Error),
    Daemon(daemon::Error),
    Signals(std::io::Error),
    Poll(std::io::Error),
}

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fatal::Cli(e) => e.fmt(f),
            Fatal::NotRoot => f.write_str("needs to start as root"),
            Fatal::Capture(e) => e.fmt(f),
            Fatal::Source(e) => e.fmt(f),
            // libpcap's errors name the interface already.
            Fatal::Read {
                source: source @ source::Error::Capture(_),
                ..
            } => source.fmt(f),
            Fatal::Read { name, source } => write!(f, "{name}: {source}"),
            Fatal::Firewall(e) => e.fmt(f),
            Fatal::Daemon(e) => e.fmt(f),
            Fatal::Signals(e) => write!(f, "signals: {e}"),
            Fatal::Poll(e) => write!(f, "poll: {e}"),
        }
    }
}

impl From<cli::Error> for Fatal {
    fn from(e: cli::Error) -> Self {
        Fatal::Cli(e)
    }
}

impl From<capture::Error> for Fatal {
    fn from(e: capture::Error) -> Self {
        Fatal::Capture(e)
    }
}

impl From<source::Error> for Fatal {
    fn from(e: source::Error) -> Self {
        Fatal::Source(e)
    }
}

impl From<firewall::Error> for Fatal {
    fn from(e: firewall::Error) -> Self {
        Fatal::Firewall(e)
    }
}

impl From<daemon::Error> for Fatal {
    fn from(e: daemon::Error) -> Self {
        Fatal::Daemon(e)
    }
}

fn main() -> ExitCode {
    let Err(err) = run() else {
        return ExitCode::SUCCESS;
    };
    match err {
        // A BSD tool's answer to a bad command line: the usage line alone.
        Fatal::Cli(cli::Error::Usage) => eprintln!("{err}"),
        _ => {
            logmsg!(Level::Err, "{err}");
            if !log::is_stderr() {
                eprintln!("ftpsesame: {err}");
            }
        }
    }
    ExitCode::FAILURE
}

fn run() -> Result<(), Fatal> {
    log::to_stderr();
    let opts = cli::parse(std::env::args_os())?;
    core_log::set_level(opts.level);
    let rule_opts = RuleOptions {
        tag: opts.tag.clone(),
        queue: opts.queue.clone(),
    };
    match &opts.file {
        Some(path) => offline(&opts, path, rule_opts),
        None => live(&opts, rule_opts),
    }
}

fn config(opts: &Options, link: ftpsesame::core::decode::Link, live: bool) -> Config {
    Config {
        link,
        max_sessions: opts.max_sessions as usize,
        timeouts: Timeouts::default(),
        live,
        recheck_state: live && !opts.dry_run,
        control_ports: ControlPorts::from_expression(&opts.expression),
    }
}

/// `-r`: replay a capture file through the engine, touching nothing.
fn offline(opts: &Options, path: &Path, rule_opts: RuleOptions) -> Result<(), Fatal> {
    let mut file = capture::File::open(path, &opts.expression)?;
    let mut engine = Engine::new(
        config(opts, file.link, false),
        Box::new(DryRun::new(rule_opts)),
    );
    let result = file.run(|f| engine.packet(f.ts, f.data));
    engine.shutdown();
    logmsg!(Level::Notice, "{}", engine.stats_line());
    result.map_err(Fatal::Capture)
}

/// The backend for this OS.
fn open_firewall(
    opts: &Options,
    rule_opts: RuleOptions,
) -> Result<Box<dyn Firewall>, firewall::Error> {
    #[cfg(target_os = "linux")]
    let native = Backend::Nft {
        family: opts.table_family.clone(),
        table: opts.table_name.clone(),
        control_ports: ControlPorts::from_expression(&opts.expression),
    };
    #[cfg(not(target_os = "linux"))]
    let native = Backend::Pf(rule_opts.clone());
    let backend = if opts.dry_run {
        Backend::DryRun(rule_opts)
    } else {
        native
    };
    firewall::open(backend)
}

fn live(opts: &Options, rule_opts: RuleOptions) -> Result<(), Fatal> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Fatal::NotRoot);
    }
    let spec = Spec::parse(opts.interface.as_deref())?;
    let mut cap = Source::open(&spec, &opts.expression)?;
    let fw = open_firewall(opts, rule_opts)?;
    // Fork before installing the signal handlers: the waiting parent keeps
    // its own dispositions and shares no signal pipe with the daemon, and
    // the child holds the signals back until `install` (see daemonize).
    let (_pidfile, ready) = if opts.foreground {
        (None, None)
    } else {
        let ready = daemon::daemonize()?;
        log::to_syslog();
        (
            Some(daemon::write_pidfile(Path::new(PIDFILE))?),
            Some(ready),
        )
    };
    let signals = Signals::install().map_err(Fatal::Signals)?;
    match daemon::raise_priority(opts.realtime) {
        Ok(how) => logmsg!(Level::Debug, "scheduling: {how}"),
        Err(e) => logmsg!(Level::Warning, "cannot raise priority: {e}"),
    }
    if cfg!(target_os = "macos") && !opts.dry_run {
        // The pfctl crate reopens /dev/pf for every change.
        logmsg!(Level::Notice, "macOS: keeping privileges for /dev/pf");
    } else {
        // An inline source's verdicts are nfnetlink messages too.
        let keep_net_admin = cfg!(target_os = "linux") && (!opts.dry_run || spec.inline());
        daemon::drop_privileges(USER, Path::new(CHROOT), keep_net_admin)?;
    }
    // Only an interface capture applies the expression.
    let filter = match spec {
        Spec::Interface(_) => format!(" for \"{}\"", opts.expression),
        _ => String::new(),
    };
    logmsg!(
        Level::Notice,
        "listening on {}{filter}{}",
        cap.name(),
        if opts.dry_run { " (dry run)" } else { "" }
    );
    let mut engine = Engine::new(config(opts, cap.link(), true), fw);
    if let Some(ready) = ready {
        ready.done();
    }
    let result = run_loop(&mut cap, &signals, &mut engine);
    engine.shutdown();
    logmsg!(Level::Notice, "{}", engine.stats_line());
    if let Some(c) = cap.counters() {
        logmsg!(Level::Notice, "{}: {c}", cap.name());
    }
    if let Some(d) = cap.kernel_drops() {
        logmsg!(Level::Notice, "capture: {d} packets dropped by the kernel");
    }
    result
}

fn run_loop(cap: &mut Source, signals: &Signals, engine: &mut Engine) -> Result<(), Fatal> {
    let name = cap.name();
    let [src0, src1] = cap.fds();
    // Packets the kernel dropped because we fell behind: said while running,
    // at most once a second, since each one may have been a negotiation.
    let mut dropped = 0;
    let mut next_drop_check = 0;
    loop {
        let mut fds = [
            libc::pollfd {
                fd: src0,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: src1, // a second socket (divert, per family) or -1
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: signals.fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: fds is a valid array of pollfd for the duration of the call.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 1000) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(Fatal::Poll(e));
            }
        }
        let revents = fds[0].revents | fds[1].revents;
        if revents != 0 {
            let n = cap
                .read(BATCH, |f| engine.packet(f.ts, f.data))
                .map_err(|source| Fatal::Read {
                    name: name.clone(),
                    source,
                })?;
            if n == 0 && revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
                return Err(capture::Error::Gone { interface: name }.into());
            }
        }
        let mut quit = false;
        signals.drain(&mut |ev| match ev {
            Event::Terminate => quit = true,
            Event::Stats => {
                logmsg!(Level::Notice, "{}", engine.stats_line());
                if let Some(c) = cap.counters() {
                    logmsg!(Level::Notice, "{name}: {c}");
                }
            }
        });
        if quit {
            logmsg!(Level::Notice, "exiting on signal");
            return Ok(());
        }
        let now = now_us();
        if now >= next_drop_check {
            next_drop_check = now + 1_000_000;
            if let Some(d) = cap.kernel_drops().filter(|&d| d > dropped) {
                logmsg!(
                    Level::Warning,
                    "capture: {} packets dropped by the kernel ({d} in all)",
                    d - dropped
                );
                dropped = d;
            }
        }
        engine.tick(now);
    }
}

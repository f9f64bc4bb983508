//! ftpsesame(8): the program. Parses the command line, opens the capture
//! and the firewall while root, becomes a daemon, drops privileges, then
//! runs one poll loop over the capture, the signal pipe and the purge
//! timer. All decisions are made by `ftpsesame::core::engine`.

use std::path::Path;
use std::process::ExitCode;

use ftpsesame::core::engine::{Config, ControlPorts, Engine, Timeouts, now_us};
use ftpsesame::core::log::{self, Level};
use ftpsesame::core::rule::RuleOptions;
use ftpsesame::firewall;
use ftpsesame::firewall::Firewall;
use ftpsesame::firewall::dryrun::DryRun;
use ftpsesame::logmsg;
use ftpsesame::os::capture::{self, Live};
use ftpsesame::os::cli::{self, CliError, Options};
use ftpsesame::os::daemon;
use ftpsesame::os::signals::{Event, Signals};

const PIDFILE: &str = "/var/run/ftpsesame.pid";
const CHROOT: &str = "/var/empty";
const USER: &str = "proxy";
/// Packets read per wake-up before signals and timers get a look.
const BATCH: usize = 256;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            if msg.starts_with("usage:") {
                eprintln!("{msg}");
            } else {
                logmsg!(Level::Err, "{msg}");
                if !log::is_stderr() {
                    eprintln!("ftpsesame: {msg}");
                }
            }
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let opts = cli::parse(std::env::args_os()).map_err(|CliError(msg)| msg)?;
    log::set_level(opts.level);
    log::to_stderr();
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
fn offline(opts: &Options, path: &Path, rule_opts: RuleOptions) -> Result<(), String> {
    let mut file = capture::File::open(path, &opts.expression)?;
    let mut engine = Engine::new(
        config(opts, file.link, false),
        Box::new(DryRun::new(rule_opts)),
    );
    let result = file.run(|f| engine.packet(f.ts, f.data));
    engine.shutdown();
    logmsg!(Level::Notice, "{}", engine.stats_line());
    result
}

/// The backend for this OS.
fn open_firewall(opts: &Options, rule_opts: RuleOptions) -> Result<Box<dyn Firewall>, String> {
    if opts.dry_run {
        return Ok(Box::new(DryRun::new(rule_opts)));
    }
    firewall::open(&opts.table_family, &opts.table_name, rule_opts).map_err(|e| e.to_string())
}

fn live(opts: &Options, rule_opts: RuleOptions) -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("needs to start as root".into());
    }
    let mut cap = Live::open(opts.interface.as_deref(), &opts.expression)?;
    let fw = open_firewall(opts, rule_opts)?;
    let signals = Signals::install().map_err(|e| format!("signals: {e}"))?;
    let (_pidfile, ready) = if opts.foreground {
        (None, None)
    } else {
        let ready = daemon::daemonize().map_err(|e| format!("daemonize: {e}"))?;
        log::to_syslog();
        (
            Some(daemon::write_pidfile(Path::new(PIDFILE))?),
            Some(ready),
        )
    };
    match daemon::raise_priority(opts.realtime) {
        Ok(how) => logmsg!(Level::Debug, "scheduling: {how}"),
        Err(e) => logmsg!(Level::Warning, "cannot raise priority: {e}"),
    }
    if cfg!(target_os = "macos") && !opts.dry_run {
        // The pfctl crate reopens /dev/pf for every change.
        logmsg!(Level::Notice, "macOS: keeping privileges for /dev/pf");
    } else {
        let keep_net_admin = cfg!(target_os = "linux") && !opts.dry_run;
        daemon::drop_privileges(USER, Path::new(CHROOT), keep_net_admin)?;
    }
    logmsg!(
        Level::Notice,
        "listening on {} for \"{}\"{}",
        cap.interface,
        opts.expression,
        if opts.dry_run { " (dry run)" } else { "" }
    );
    let mut engine = Engine::new(config(opts, cap.link, true), fw);
    if let Some(ready) = ready {
        ready.done();
    }
    let result = run_loop(&mut cap, &signals, &mut engine);
    engine.shutdown();
    logmsg!(Level::Notice, "{}", engine.stats_line());
    if let Some(d) = cap.kernel_drops() {
        logmsg!(Level::Notice, "capture: {d} packets dropped by the kernel");
    }
    result
}

fn run_loop(cap: &mut Live, signals: &Signals, engine: &mut Engine) -> Result<(), String> {
    // Packets the kernel dropped because we fell behind: said while running,
    // at most once a second, since each one may have been a negotiation.
    let mut dropped = 0;
    let mut next_drop_check = 0;
    loop {
        let mut fds = [
            libc::pollfd {
                fd: cap.fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: signals.fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: fds is a valid array of two pollfd for the duration of the call.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 1000) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(format!("poll: {e}"));
            }
        }
        if fds[0].revents != 0 {
            let n = cap
                .read(BATCH, |f| engine.packet(f.ts, f.data))
                .map_err(|e| format!("{}: {e}", cap.interface))?;
            if n == 0 && fds[0].revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
                return Err(format!(
                    "{}: capture failed (interface gone?)",
                    cap.interface
                ));
            }
        }
        let mut quit = false;
        signals.drain(&mut |ev| match ev {
            Event::Terminate => quit = true,
            Event::Stats => logmsg!(Level::Notice, "{}", engine.stats_line()),
            Event::Hangup => {}
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

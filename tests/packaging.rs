//! Packaging checks: the manual page, the README and the service files
//! must agree with the binary.
//!
//! Users meet the program through `man ftpsesame`, the rc.d scripts and the
//! README, so an option added to `cli::USAGE` without documentation, or a
//! service file that starts a path nothing installs, fails here. The
//! external linters (mandoc, shellcheck, systemd-analyze) are required: a
//! missing one fails the test with the Debian package to install, because a
//! skipped lint is a lint nobody runs.

use std::collections::{BTreeMap, BTreeSet};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ftpsesame::os::cli::USAGE;
use ftpsesame::os::cli::{
    DEFAULT_EXPRESSION, DEFAULT_MAX_SESSIONS, DEFAULT_TABLE, MAX_MAX_SESSIONS,
};

/// Where the install instructions and every service file put the binary.
const INSTALL_PATH: &str = "/usr/local/sbin/ftpsesame";
/// The daemon's default pidfile (DESIGN.md, "Defaults").
const PIDFILE: &str = "/var/run/ftpsesame.pid";

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

/// Run an external tool; a missing tool is a failure that names the package.
fn run(cmd: &mut Command, package: &str) -> Output {
    match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "{:?} not found: install the Debian package `{package}` \
             (tests/run.sh installs it)",
            cmd.get_program()
        ),
        Err(e) => panic!("running {:?}: {e}", cmd.get_program()),
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Options in the usage line, in order, with whether they take a value:
/// `[-dn]` gives d and n, `[-D level]` gives D.
fn usage_options() -> Vec<(char, bool)> {
    let mut opts = Vec::new();
    for group in USAGE.split('[').skip(1) {
        let group = group.split(']').next().unwrap();
        if let Some(rest) = group.strip_prefix('-') {
            match rest.split_once(' ') {
                Some((letter, _value)) => opts.extend(letter.chars().map(|c| (c, true))),
                None => opts.extend(rest.chars().map(|c| (c, false))),
            }
        }
    }
    opts
}

fn usage_letters() -> Vec<char> {
    usage_options().into_iter().map(|(c, _)| c).collect()
}

/// The usage line without its `usage: ` prefix.
fn synopsis() -> &'static str {
    USAGE
        .strip_prefix("usage: ")
        .expect("USAGE starts with `usage: `")
}

/// Render the manual page as plain text (mandoc's overstrike removed).
fn man_text() -> String {
    let out = run(
        Command::new("mandoc")
            .args(["-T", "ascii"])
            .arg(repo("man/ftpsesame.8")),
        "mandoc",
    );
    assert!(out.status.success(), "mandoc failed: {}", text(&out));
    let raw = String::from_utf8(out.stdout).unwrap();
    let mut plain = String::with_capacity(raw.len());
    for c in raw.chars() {
        if c == '\u{8}' {
            plain.pop();
        } else {
            plain.push(c);
        }
    }
    plain
}

fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `name=value` assignments at the start of lines, quotes removed.
fn shell_vars(script: &str) -> BTreeMap<String, String> {
    script
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .map(|(k, v)| (k.to_string(), v.trim().trim_matches('"').to_string()))
        .collect()
}

/// The letters this file finds in USAGE are the options the program takes,
/// so the documentation checks below cannot pass on a misparsed usage line.
#[test]
fn usage_letters_are_real_options() {
    let accepts = |args: &[&str]| {
        ftpsesame::os::cli::parse(std::iter::once("ftpsesame").chain(args.iter().copied())).is_ok()
    };
    let opts = usage_options();
    assert_eq!(
        opts.iter().filter(|(_, has_value)| *has_value).count(),
        USAGE.matches("[-").count() - 1,
        "one group of plain flags, one group per option with a value: {opts:?}"
    );
    for (letter, has_value) in &opts {
        let flag = format!("-{letter}");
        if *has_value {
            assert!(!accepts(&[&flag]), "{flag} needs a value");
            assert!(
                ["7", DEFAULT_TABLE].iter().any(|v| accepts(&[&flag, v])),
                "{flag} is not an option of cli::parse"
            );
        } else {
            assert!(accepts(&[&flag]), "{flag} is not a flag of cli::parse");
        }
    }
    assert!(!accepts(&["-Z"]) && !accepts(&["-Z", "7"]));
    let unique: BTreeSet<char> = usage_letters().into_iter().collect();
    assert_eq!(unique.len(), opts.len());
}

#[test]
fn every_option_is_in_the_man_page() {
    let man = read("man/ftpsesame.8");
    // Entries of the option list: `.It Fl D Ar level`.
    let documented: BTreeSet<char> = man
        .lines()
        .filter_map(|l| l.strip_prefix(".It Fl "))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter(|w| w.len() == 1)
        .filter_map(|w| w.chars().next())
        .collect();
    let usage: BTreeSet<char> = usage_letters().into_iter().collect();
    for letter in &usage {
        assert!(
            documented.contains(letter),
            "-{letter} is in the usage but has no `.It Fl {letter}` entry in man/ftpsesame.8"
        );
        assert!(man.contains(&format!("Fl {letter}")));
    }
    assert_eq!(
        documented, usage,
        "the man page documents options the program does not have"
    );
}

#[test]
fn man_synopsis_is_the_usage_line() {
    let page = man_text();
    let start = page.find("SYNOPSIS").expect("SYNOPSIS section") + "SYNOPSIS".len();
    let end = start + page[start..].find("\n\n").expect("end of SYNOPSIS");
    assert_eq!(squash(&page[start..end]), synopsis());
}

#[test]
fn man_page_states_the_defaults() {
    let page = squash(&man_text());
    for needle in [
        format!("The default is {DEFAULT_MAX_SESSIONS}."),
        format!("from 1 to {MAX_MAX_SESSIONS}"),
        format!(
            "The default is {} (notice)",
            ftpsesame::core::log::DEFAULT_LEVEL
        ),
        DEFAULT_EXPRESSION.to_string(),
        DEFAULT_TABLE.to_string(),
        PIDFILE.to_string(),
        "/var/empty".to_string(),
    ] {
        assert!(page.contains(&needle), "man page lacks {needle:?}");
    }
}

#[test]
fn mandoc_lint_is_clean() {
    let out = run(
        Command::new("mandoc")
            .args(["-T", "lint", "-W", "warning"])
            .arg(repo("man/ftpsesame.8")),
        "mandoc",
    );
    let msgs = text(&out);
    assert!(
        out.status.success() && msgs.is_empty(),
        "mandoc -Tlint -W warning: {msgs}"
    );
}

#[test]
fn every_option_is_in_the_readme() {
    let readme = read("README.md");
    for letter in usage_letters() {
        let flag = format!("`-{letter}");
        let found = readme
            .match_indices(&flag)
            .any(|(i, _)| matches!(readme[i + flag.len()..].chars().next(), Some(' ' | '`')));
        assert!(found, "README.md does not document `-{letter}`");
    }
    assert!(
        readme.contains(&format!("`{}`", synopsis())),
        "README.md should quote the usage line"
    );
}

#[test]
fn readme_starts_with_the_two_commands() {
    let readme = read("README.md");
    let install = readme.find("## Install").expect("Install section");
    let head = &readme[..install];
    // Shown as a root shell types them: a fresh Debian has no sudo.
    let demo = head
        .find("```sh\ntests/lab/demo.sh\n```")
        .expect("demo command");
    let suite = head
        .find("```sh\ntests/run.sh\n```")
        .expect("test suite command");
    assert!(demo < suite);
    assert!(
        head[..demo].contains("As root"),
        "README must say the demo runs as root"
    );
}

#[test]
fn rc_scripts_pass_shellcheck() {
    for script in ["rc.d/freebsd/ftpsesame", "rc.d/openbsd/ftpsesame"] {
        let out = run(
            Command::new("shellcheck")
                .args(["-s", "sh"])
                .arg(repo(script)),
            "shellcheck",
        );
        assert!(out.status.success(), "shellcheck {script}:\n{}", text(&out));
    }
}

#[test]
fn freebsd_script_matches_the_binary() {
    let script = read("rc.d/freebsd/ftpsesame");
    let vars = shell_vars(&script);
    let get = |k: &str| vars.get(k).map(String::as_str);
    assert_eq!(get("name"), Some("ftpsesame"));
    assert_eq!(get("rcvar"), Some("ftpsesame_enable"));
    assert_eq!(get("command"), Some(INSTALL_PATH));
    assert_eq!(get("pidfile"), Some(PIDFILE));
    assert_eq!(get("required_modules"), Some("pf"));
    let header: Vec<&str> = script.lines().take_while(|l| l.starts_with('#')).collect();
    assert!(header.contains(&"# PROVIDE: ftpsesame"), "{header:?}");
    assert!(
        header
            .iter()
            .any(|l| l.starts_with("# REQUIRE:") && l.split_whitespace().any(|w| w == "pf")),
        "must start after pf: {header:?}"
    );
    assert!(
        header
            .iter()
            .any(|l| l.starts_with("# KEYWORD:") && l.contains("shutdown")),
        "must be stopped at shutdown so the rules are removed: {header:?}"
    );
    assert!(script.contains("\n. /etc/rc.subr\n"));
    assert!(script.contains("load_rc_config \"$name\""));
    assert_eq!(script.lines().last(), Some("run_rc_command \"$1\""));
}

#[test]
fn openbsd_script_matches_the_binary() {
    let script = read("rc.d/openbsd/ftpsesame");
    let vars = shell_vars(&script);
    assert_eq!(vars.get("daemon").map(String::as_str), Some(INSTALL_PATH));
    // rc.subr must see `daemon` before it is sourced.
    let daemon_at = script.find("\ndaemon=").unwrap();
    let subr_at = script
        .find("\n. /etc/rc.d/rc.subr\n")
        .expect("sources rc.subr");
    assert!(daemon_at < subr_at);
    assert_eq!(script.lines().last(), Some("rc_cmd \"$1\""));
}

/// `Key=Value` lines of a systemd unit, per key in order.
fn unit_keys(unit: &str) -> BTreeMap<String, Vec<String>> {
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in unit.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with('[') {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            keys.entry(k.to_string()).or_default().push(v.to_string());
        }
    }
    keys
}

#[test]
fn systemd_unit_matches_the_binary() {
    let unit = read("rc.d/linux/ftpsesame.service");
    let keys = unit_keys(&unit);
    let one = |k: &str| match keys.get(k).map(Vec::as_slice) {
        Some([v]) => v.as_str(),
        other => panic!("{k}: expected one value, got {other:?}"),
    };
    assert_eq!(
        one("ExecStart").split_whitespace().next(),
        Some(INSTALL_PATH)
    );
    // On Linux /var/run is a symlink to /run; systemd wants the /run name.
    assert_eq!(one("PIDFile"), PIDFILE.replacen("/var/run/", "/run/", 1));
    // The daemon forks; PIDFile only means something for a forking service.
    assert_eq!(one("Type"), "forking");
    assert_eq!(one("KillSignal"), "SIGTERM");
}

#[test]
fn systemd_unit_verifies() {
    // systemd-analyze refuses a unit whose binary is not installed, so the
    // copy it checks runs /bin/true; the path itself is checked above.
    let dir = std::env::temp_dir().join(format!("ftpsesame-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let unit = read("rc.d/linux/ftpsesame.service")
        .replace(&format!("ExecStart={INSTALL_PATH}"), "ExecStart=/bin/true");
    let path = dir.join("ftpsesame.service");
    std::fs::write(&path, unit).unwrap();
    let out = run(
        Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&path),
        "systemd",
    );
    std::fs::remove_dir_all(&dir).unwrap();
    let msgs = text(&out);
    // Unknown keys are only warnings with exit 0, so silence is the test.
    assert!(
        out.status.success() && msgs.is_empty(),
        "systemd-analyze verify: {msgs}"
    );
}

/// The counters line documented in the README and the man page has the
/// same fields, in the same order, as the one the daemon writes.
#[test]
fn documented_counters_match_the_daemon() {
    // Every run of digits becomes N; white space is folded.
    let shape = |s: &str| -> String {
        let mut out = String::new();
        let mut in_num = false;
        for c in s.split_whitespace().collect::<Vec<_>>().join(" ").chars() {
            if c.is_ascii_digit() {
                if !in_num {
                    out.push('N');
                }
                in_num = true;
            } else {
                in_num = false;
                out.push(c);
            }
        }
        out
    };
    let real = shape(&ftpsesame::core::stats::Stats::default().to_string());
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let line = readme
        .lines()
        .find(|l| l.starts_with("stats: "))
        .expect("README has a stats: example");
    assert_eq!(shape(line), real);
    let man =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/man/ftpsesame.8")).unwrap();
    let start = man
        .find("stats: packets")
        .expect("man page has a stats: example");
    let block = &man[start..start + man[start..].find(".Ed").unwrap()];
    assert_eq!(
        shape(&block.split_whitespace().collect::<Vec<_>>().join(" ")),
        real
    );
}

//! Command line: getopt-compatible options, as the original daemon had.
//!
//! Parsing is done by clap but every error path is ours: any bad option or
//! value prints the usage line on stderr and exits 1, like a BSD tool.
//! Option letters combine (`-dn`), values attach (`-D7`), and the first
//! word that is not an option starts the pcap expression: every word from
//! there on is joined with spaces.

use std::fmt;
use std::path::PathBuf;

use clap::Parser;

use crate::core::rule::NAME_MAX;

/// The usage line, printed on any command-line error.
pub const USAGE: &str = "usage: ftpsesame [-dnR] [-D level] [-i interface] [-m maxsessions] \
[-q queue] [-r file] [-T family/table] [-t tag] [expression]";

/// Default pcap expression.
pub const DEFAULT_EXPRESSION: &str = "tcp and port 21";
/// Default `-m`.
pub const DEFAULT_MAX_SESSIONS: u32 = 1000;
/// Largest `-m`.
pub const MAX_MAX_SESSIONS: u32 = 1_000_000;
/// Default nftables table (`-T`).
pub const DEFAULT_TABLE: &str = "inet/filter";

#[derive(Parser, Debug)]
#[command(
    name = "ftpsesame",
    disable_help_flag = true,
    disable_version_flag = true,
    args_override_self = true
)]
struct Raw {
    #[arg(short = 'd')]
    foreground: bool,
    #[arg(short = 'n')]
    dry_run: bool,
    #[arg(short = 'R')]
    realtime: bool,
    #[arg(short = 'D', value_parser = clap::value_parser!(u8).range(0..=7))]
    level: Option<u8>,
    #[arg(short = 'i')]
    interface: Option<String>,
    #[arg(short = 'm', value_parser = clap::value_parser!(u32).range(1..=MAX_MAX_SESSIONS as i64))]
    max_sessions: Option<u32>,
    #[arg(short = 'q')]
    queue: Option<String>,
    #[arg(short = 'r')]
    file: Option<PathBuf>,
    #[arg(short = 'T')]
    table: Option<String>,
    #[arg(short = 't')]
    tag: Option<String>,
    #[arg(trailing_var_arg = true)]
    expression: Vec<String>,
}

/// Everything the command line decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// `-d`: stay in the foreground, log to stderr.
    pub foreground: bool,
    /// `-n` (or `-r`): never touch the firewall.
    pub dry_run: bool,
    /// `-R`: real-time scheduling instead of nice -20.
    pub realtime: bool,
    /// `-D`: syslog level 0-7.
    pub level: u8,
    /// `-i`: capture interface (None: pcap's default device).
    pub interface: Option<String>,
    /// `-m`: session table size.
    pub max_sessions: u32,
    /// `-q`: queue name for rules.
    pub queue: Option<String>,
    /// `-r`: read this capture file instead of an interface.
    pub file: Option<PathBuf>,
    /// `-T`: nftables table family and name.
    pub table_family: String,
    pub table_name: String,
    /// `-t`: tag for rules.
    pub tag: Option<String>,
    /// The pcap expression.
    pub expression: String,
}

/// Why the command line was refused. `Display` is the message for stderr.
#[derive(Debug, PartialEq, Eq)]
pub enum Error {
    /// A bad option, value or table: shown as the usage line ([`USAGE`]).
    Usage,
    /// `-t` or `-q` longer than a pf tag or queue name can be.
    TooLong { what: &'static str },
    /// `-t` or `-q` empty or with a blank or control character in it.
    NotAWord { what: &'static str },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage => f.write_str(USAGE),
            Error::TooLong { what } => write!(f, "{what} too long"),
            Error::NotAWord { what } => write!(f, "{what} must be a single word"),
        }
    }
}

impl std::error::Error for Error {}

/// Parse `args` (including the program name).
pub fn parse<I, T>(args: I) -> Result<Options, Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    // clap's own message is not shown: a BSD tool answers with its usage.
    let raw = Raw::try_parse_from(args).map_err(|_| Error::Usage)?;
    for (what, value) in [("tag", &raw.tag), ("queue", &raw.queue)] {
        if let Some(v) = value {
            if v.len() > NAME_MAX {
                return Err(Error::TooLong { what });
            }
            if v.is_empty() || v.bytes().any(|b| !b.is_ascii_graphic()) {
                return Err(Error::NotAWord { what });
            }
        }
    }
    let table = raw.table.as_deref().unwrap_or(DEFAULT_TABLE);
    let (table_family, table_name) = match table.split_once('/') {
        Some((f, n)) if ["inet", "ip", "ip6"].contains(&f) && !n.is_empty() => {
            (f.to_string(), n.to_string())
        }
        _ => return Err(Error::Usage),
    };
    let expression = if raw.expression.is_empty() {
        DEFAULT_EXPRESSION.to_string()
    } else {
        raw.expression.join(" ")
    };
    Ok(Options {
        foreground: raw.foreground,
        dry_run: raw.dry_run || raw.file.is_some(),
        realtime: raw.realtime,
        level: raw.level.unwrap_or(crate::core::log::DEFAULT_LEVEL),
        interface: raw.interface,
        max_sessions: raw.max_sessions.unwrap_or(DEFAULT_MAX_SESSIONS),
        queue: raw.queue,
        file: raw.file,
        table_family,
        table_name,
        tag: raw.tag,
        expression,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Options, Error> {
        parse(std::iter::once("ftpsesame").chain(args.iter().copied()))
    }

    #[test]
    fn defaults() {
        let o = p(&[]).unwrap();
        assert!(!o.foreground && !o.dry_run);
        assert_eq!(o.level, 5);
        assert_eq!(o.max_sessions, 1000);
        assert_eq!(o.expression, "tcp and port 21");
        assert_eq!(
            (o.table_family.as_str(), o.table_name.as_str()),
            ("inet", "filter")
        );
    }

    #[test]
    fn getopt_forms() {
        let o = p(&["-dn", "-D7", "-iem0", "tcp", "and", "port", "2121"]).unwrap();
        assert!(o.foreground && o.dry_run && !o.realtime);
        assert!(p(&["-dR"]).unwrap().realtime);
        assert_eq!(o.level, 7);
        assert_eq!(o.interface.as_deref(), Some("em0"));
        assert_eq!(o.expression, "tcp and port 2121");
    }

    #[test]
    fn expression_stops_option_parsing() {
        let o = p(&["host", "-D", "x"]).unwrap();
        assert_eq!(o.expression, "host -D x");
        assert_eq!(o.level, 5);
    }

    #[test]
    fn file_implies_dry_run() {
        let o = p(&["-r", "x.pcap"]).unwrap();
        assert!(o.dry_run);
    }

    #[test]
    fn bad_values_give_usage() {
        for args in [
            &["-D", "8"][..],
            &["-D", "x"],
            &["-x"],
            &["-m", "0"],
            &["-m", "1000001"],
            &["-h"],
            &["-T", "bridge/x"],
        ] {
            assert_eq!(p(args), Err(Error::Usage), "{args:?}");
        }
        assert_eq!(Error::Usage.to_string(), USAGE);
    }

    #[test]
    fn long_names() {
        let long = "x".repeat(64);
        let err = p(&["-t", &long]).unwrap_err();
        assert_eq!(err, Error::TooLong { what: "tag" });
        assert_eq!(err.to_string(), "tag too long");
        let err = p(&["-q", &long]).unwrap_err();
        assert_eq!(err, Error::TooLong { what: "queue" });
        assert_eq!(err.to_string(), "queue too long");
        assert!(p(&["-t", &"x".repeat(63)]).is_ok());
    }

    #[test]
    fn names_must_be_one_word() {
        for bad in ["", "a b", "tab\there", "caf\u{e9}"] {
            let err = p(&["-t", bad]).unwrap_err();
            assert_eq!(err, Error::NotAWord { what: "tag" }, "{bad:?}");
            assert_eq!(err.to_string(), "tag must be a single word");
        }
        let err = p(&["-q", "a b"]).unwrap_err();
        assert_eq!(err.to_string(), "queue must be a single word");
    }
}

//! The firewall seam: everything the engine asks of pf or nftables.
//!
//! The engine above this trait is pure; a backend is the only code that
//! talks to the kernel's packet filter. Three exist: `nft` (Linux,
//! nftables sets over netlink plus conntrack for the state check), `pf`
//! (FreeBSD/OpenBSD ioctls, macOS through the pfctl crate) and `dryrun`
//! (`-n`/`-r`: log what would be done, touch nothing).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::rule::Rule;

pub mod dryrun;
pub mod macos;
#[cfg(target_os = "linux")]
pub mod nft;
pub mod pf;

#[cfg(target_os = "macos")]
pub use macos::PfMac;
#[cfg(any(target_os = "freebsd", target_os = "openbsd"))]
pub use pf::Pf;

/// A failed firewall operation, with a message fit for the log.
#[derive(Debug)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error(e.to_string())
    }
}

/// Result of looking a control connection up in the firewall's state table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Tracked. `real_client` is the client's address before NAT; it equals
    /// the captured client address when no NAT is involved.
    Tracked { real_client: IpAddr },
    /// The firewall has no state for this connection: do not trust it.
    NotTracked,
}

/// A packet-filter backend.
///
/// Sessions are identified by the engine's session number (`#N` in the
/// log); pf uses it for the anchor name, nftables only for bookkeeping.
pub trait Firewall {
    /// Look the control connection `client -> server` up in the state table,
    /// as captured (after any NAT on the capture interface).
    fn lookup(&mut self, client: SocketAddr, server: SocketAddr) -> Result<State, Error>;

    /// Replace the rules of `session`: remove `old` (what was committed for
    /// it before) and add `new`, as one transaction where the firewall
    /// allows. `new` empty means "remove the session's rules".
    fn replace(&mut self, session: u32, old: &[Rule], new: &[Rule]) -> Result<(), Error>;

    /// Remove everything this process added (shutdown, or start-up clean-up).
    fn flush(&mut self) -> Result<(), Error>;
}

/// Open this OS's real backend. Linux: nftables sets in `family/table`.
pub fn open(
    family: &str,
    table: &str,
    opts: crate::rule::RuleOptions,
) -> Result<Box<dyn Firewall>, Error> {
    #[cfg(target_os = "linux")]
    {
        let _ = opts;
        Ok(Box::new(nft::Nft::open(family, table, RULE_TIMEOUT)?))
    }
    #[cfg(any(target_os = "freebsd", target_os = "openbsd"))]
    {
        let _ = (family, table);
        Ok(Box::new(pf::Pf::open(opts)?))
    }
    #[cfg(target_os = "macos")]
    {
        let _ = (family, table);
        Ok(Box::new(macos::PfMac::open(opts)?))
    }
}

/// Lifetime of a rule (nftables element timeout; pf rules are removed by
/// the engine's purge).
pub const RULE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(180);

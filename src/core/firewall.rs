//! The firewall seam as the engine sees it: what it asks of a packet
//! filter, in rules and addresses only. The backends that implement it
//! live in `crate::firewall`; the engine above it is pure.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::core::rule::Rule;

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

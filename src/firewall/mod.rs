//! The firewall seam: everything the engine asks of pf or nftables.
//!
//! The engine above this trait is pure; a backend is the only code that
//! talks to the kernel's packet filter. Three exist: `nft` (Linux,
//! nftables sets over netlink plus conntrack for the state check), `pf`
//! (one engine over `/dev/pf` on FreeBSD/OpenBSD and over the pfctl crate
//! on macOS) and `dryrun` (`-n`/`-r`: log what would be done as pf text,
//! touch nothing). [`open`] picks one from a [`Backend`]; a failure is an
//! [`Error`] naming the step that failed.

#[cfg(target_os = "linux")]
use crate::core::engine::ControlPorts;
pub use crate::core::firewall::{Error, Firewall, State};
use crate::core::rule::RuleOptions;

pub mod dryrun;
#[cfg(any(test, target_os = "macos"))]
mod macos;
#[cfg(target_os = "linux")]
pub mod nft;
pub(crate) mod pf;

/// Which backend to open, with what only that backend needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// nftables sets in table `family table` (`-T`); `control_ports` are
    /// the ports whose connections, still established, keep the holes a
    /// previous instance left.
    #[cfg(target_os = "linux")]
    Nft {
        family: String,
        table: String,
        control_ports: ControlPorts,
    },
    /// pf anchors, rules made with `-t`/`-q`.
    #[cfg(any(target_os = "freebsd", target_os = "openbsd", target_os = "macos"))]
    Pf(RuleOptions),
    /// Log the rules as pf text, touch nothing.
    DryRun(RuleOptions),
}

/// Open `backend`: check that the kernel's packet filter is ready for it
/// and take over what a previous instance left behind (nftables keeps the
/// holes of control connections still established and deletes the rest;
/// pf holds a dead instance's anchors for one rule timeout).
pub fn open(backend: Backend) -> Result<Box<dyn Firewall>, Error> {
    match backend {
        #[cfg(target_os = "linux")]
        Backend::Nft {
            family,
            table,
            control_ports,
        } => Ok(Box::new(nft::Nft::open(
            &family,
            &table,
            RULE_TIMEOUT,
            control_ports,
        )?)),
        #[cfg(any(target_os = "freebsd", target_os = "openbsd", target_os = "macos"))]
        Backend::Pf(opts) => {
            #[cfg(target_os = "macos")]
            let dev = {
                macos::check_options(&opts)?;
                macos::MacDevice::open()?
            };
            #[cfg(not(target_os = "macos"))]
            let dev = pf::device::BsdDevice::open()?;
            Ok(Box::new(pf::engine::PfEngine::new(
                dev,
                opts,
                std::process::id(),
                pf::alive::process_alive,
                RULE_TIMEOUT,
            )?))
        }
        Backend::DryRun(opts) => Ok(Box::new(dryrun::DryRun::new(opts))),
    }
}

/// Lifetime of a rule (nftables element timeout; pf rules are removed by
/// the engine's purge, and adopted anchors after this long).
#[cfg(any(
    target_os = "linux",
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "macos"
))]
const RULE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(180);

//! The firewall seam: everything the engine asks of pf or nftables.
//!
//! The engine above this trait is pure; a backend is the only code that
//! talks to the kernel's packet filter. Three exist: `nft` (Linux,
//! nftables sets over netlink plus conntrack for the state check), `pf`
//! (FreeBSD/OpenBSD ioctls, macOS through the pfctl crate) and `dryrun`
//! (`-n`/`-r`: log what would be done, touch nothing).

pub use crate::core::firewall::{Error, Firewall, State};

pub mod dryrun;
pub mod macos;
#[cfg(target_os = "linux")]
pub mod nft;
pub mod pf;

#[cfg(target_os = "macos")]
pub use macos::PfMac;
#[cfg(any(target_os = "freebsd", target_os = "openbsd"))]
pub use pf::Pf;

/// Open this OS's real backend. Linux: nftables sets in `family/table`.
pub fn open(
    family: &str,
    table: &str,
    opts: crate::core::rule::RuleOptions,
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

//! ftpsesame: follow FTP control connections and open exactly the
//! firewall holes their data connections need.
//!
//! ```text
//!  os::capture ──frame, ts──▶ core::engine ──Rule──▶ firewall::{nft, pf, macos, dryrun}
//!                              │  core::decode      link + IP + TCP, evasion checks
//!                              │  core::session     table, handshake, both TCP streams
//!                              │  core::reassembly  lines
//!                              │  core::ftp         commands and replies paired
//!                              │  core::policy      negotiation -> rules (core::rule)
//!                              └  core::stats, core::log
//! ```
//!
//! Three parts, data flowing one way:
//! - [`core`]: pure and platform-independent, bytes and a clock in,
//!   decisions out. It defines the [`core::firewall::Firewall`] trait and
//!   names nothing else outside itself.
//! - [`os`]: the edges — packet sources, the command line, daemonizing,
//!   privileges, signals.
//! - [`firewall`]: the backends that implement the trait against the
//!   kernel (nftables and conntrack over netlink, pf ioctls, macOS pfctl)
//!   or against nothing (dry run).
//!
//! `main.rs` wires them together; nothing else crosses between `os` and
//! `firewall`.

pub mod core;
pub mod firewall;
pub mod os;

//! ftpsesame: follow FTP control connections and open exactly the
//! firewall holes their data connections need.
//!
//! ```text
//!  os::source ──frame, ts──▶ core::engine ──Rule──▶ firewall::{nft, pf, macos, dryrun}
//!  (pcap, nflog,               │  core::decode      link + IP + TCP, checksums, evasion
//!   nfqueue, divert:           │  core::session     table, handshake, both TCP streams
//!   inline sources release     │                    as their receivers see them
//!   each packet after          │  core::reassembly  lines
//!   the engine returns)        │  core::ftp         commands and replies paired
//!                              │  core::policy      negotiation -> rules (core::rule)
//!                              └  core::stats, core::log
//! ```
//!
//! Three parts, data flowing one way:
//! - [`core`]: pure and platform-independent, bytes and a clock in,
//!   decisions out. It defines the [`core::firewall::Firewall`] trait and
//!   names nothing else outside itself.
//! - [`os`]: the edges — packet sources, the command line, daemonizing,
//!   privileges, signals, log sinks, netlink plumbing.
//! - [`firewall`]: the backends that implement the trait against the
//!   kernel (nftables and conntrack over netlink, pf ioctls, macOS pfctl)
//!   or against nothing (dry run).
//!
//! `main.rs` wires them together; nothing else crosses between `os` and
//! `firewall`.

pub mod core;
pub mod firewall;
pub mod os;

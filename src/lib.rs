//! ftpsesame: watch FTP control connections, open exactly the firewall
//! holes their data connections need.
//!
//! Data flows one way (see README): capture -> [`decode`] -> [`session`]
//! (handshake, sequence tracking) -> [`reassembly`] (lines) -> [`ftp`]
//! (negotiations) -> [`policy`] (rules) -> [`firewall`] backend.
//! Everything but `capture`, `daemon` and the kernel backends is pure and
//! tested without root.

pub mod bpflock;
pub mod capture;
pub mod cli;
#[cfg(target_os = "linux")]
pub mod conntrack;
pub mod daemon;
pub mod decode;
pub mod engine;
pub mod firewall;
pub mod ftp;
pub mod log;
#[cfg(target_os = "linux")]
pub mod netlink;
pub mod policy;
pub mod reassembly;
pub mod rule;
pub mod session;
pub mod signals;
pub mod stats;

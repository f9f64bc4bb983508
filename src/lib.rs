//! ftpsesame: watch FTP control connections, open exactly the firewall
//! holes their data connections need.
//!
//! Data flows one way (see README): capture -> [`decode`] -> [`session`]
//! (handshake, sequence tracking) -> [`reassembly`] (lines) -> [`ftp`]
//! (negotiations) -> [`policy`] (rules) -> [`firewall`] backend.
//! Everything but `capture`, `daemon` and the kernel backends is pure and
//! tested without root.

pub mod core;
pub mod firewall;
pub mod os;

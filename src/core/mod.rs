//! The pure core: bytes and a clock in, decisions out. Nothing here opens
//! a file, a socket or a device; the only outside part it names is the
//! [`firewall::Firewall`] trait it defines, which the backends implement.

pub mod decode;
pub mod engine;
pub mod firewall;
pub mod ftp;
pub mod log;
pub mod policy;
pub mod reassembly;
pub mod rule;
pub mod session;
pub mod stats;

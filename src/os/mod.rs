//! The operating system's edges: packet sources (libpcap capture and the
//! bpf lock, NFQUEUE, divert sockets, chosen in `source`), the command
//! line, daemonizing and privileges, signals, log sinks, and the netlink
//! plumbing the queue source and the nftables backend both speak.
//! They hand frames and a clock to the core and carry nothing back but
//! what `main` wires.

pub(crate) mod bpflock;
pub mod capture;
pub mod cli;
pub mod daemon;
pub mod divert;
pub mod log;
#[cfg(target_os = "linux")]
pub(crate) mod netlink;
#[cfg(target_os = "linux")]
pub mod nfqueue;
pub mod signals;
pub mod source;

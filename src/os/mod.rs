//! The operating system's edges: packet sources (libpcap capture and the
//! bpf lock, NFQUEUE, divert sockets, chosen in `source`), the command
//! line, daemonizing and privileges, signals.
//! They hand frames and a clock to the core and carry nothing back but
//! what `main` wires.

pub mod bpflock;
pub mod capture;
pub mod cli;
pub mod daemon;
pub mod divert;
#[cfg(target_os = "linux")]
pub mod nfqueue;
pub mod signals;
pub mod source;

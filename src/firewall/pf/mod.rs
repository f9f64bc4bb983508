//! The pf backend: FreeBSD and OpenBSD through `/dev/pf`, macOS through
//! the pfctl crate; one engine for all three.
//!
//! Every session's rules live in their own anchor, `ftpsesame/<pid>.<id>`
//! (the admin's pf.conf says `anchor "ftpsesame/*"`). A change is one pf
//! transaction on that anchor: DIOCXBEGIN, DIOCADDRULE per rule,
//! DIOCXCOMMIT; removing a session's rules is the same transaction with no
//! rules, after which pf drops the empty anchor. A child anchor of an
//! ftpsesame that is no longer running is adopted at start and removed the
//! same way one rule timeout later (its sessions may still be using it), or
//! at exit, so a crash does not leave holes open until reboot.
//!
//! Layers, each testable on its own:
//! - [`ffi`]: the flat rule/lookup structs and the mapping from the rule
//!   model (tested everywhere), plus the C glue's functions (BSD only);
//! - [`text`]: the flat rule as pf.conf text;
//! - `seam`: the `PfDevice` trait, the only thing that touches pf;
//! - `engine`: `PfEngine`, transactions, state check, per-session
//!   bookkeeping, anchor names and clean-up over any `PfDevice` (tested on
//!   Linux against a recording fake, with scripted liveness);
//! - `window`: a connection's sequence windows from the states a dump of
//!   the table copied out (pure), for a pickup to agree with;
//! - the devices: `device::BsdDevice` (the real `/dev/pf`, FreeBSD/OpenBSD)
//!   and `firewall::macos::MacDevice` (the pfctl crate); `firewall::open`
//!   gives the engine either one and `alive::process_alive`, the liveness
//!   probe (signal 0), which is the only OS call outside the devices.
//!
//! On Linux only `ffi`'s rule mapping and `text` are built (the dry-run
//! prints pf text); the engine and its seam exist where pf does, and in
//! tests.

pub(crate) mod ffi;
pub(crate) mod text;

#[cfg(any(
    test,
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "macos"
))]
pub(crate) mod alive;
#[cfg(any(target_os = "freebsd", target_os = "openbsd"))]
pub(crate) mod device;
#[cfg(any(
    test,
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "macos"
))]
pub(crate) mod engine;
#[cfg(any(
    test,
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "macos"
))]
pub(crate) mod seam;
#[cfg(any(
    test,
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "macos"
))]
pub(crate) mod window;

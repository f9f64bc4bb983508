//! The ioctl seam: the few pf operations the backend needs, as a trait.
//!
//! The transaction, bookkeeping and clean-up logic in `engine::PfEngine`
//! is generic over this trait so it compiles and is tested on every OS. Two
//! devices implement it for real: `device::BsdDevice` (FreeBSD/OpenBSD, the
//! C glue) and `firewall::macos::MacDevice` (the pfctl crate). pf cannot
//! exist on Linux, so the tests use a recording fake here.

use super::ffi::{FlatNatlook, FlatRule, FlatState};
use crate::firewall::Error;

/// What a read of the state table gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    all(target_os = "macos", not(test)),
    expect(dead_code, reason = "macOS's device reads no windows")
)]
pub(crate) enum Dump {
    /// The table was read: `states` in all, `matched` of them TCP states
    /// of the queried connection (the first `out.len()` of them copied).
    Read { states: usize, matched: usize },
    /// The table would take more than the byte limit to read: about
    /// `states` states; nothing was read.
    TooLarge { states: usize },
    /// This device cannot export sequence windows.
    Unsupported,
}

/// Tickets of an open transaction: the ruleset ticket from DIOCXBEGIN and,
/// where the OS wants one with every rule (FreeBSD), the address-pool
/// ticket from DIOCBEGINADDRS (0 elsewhere).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ticket {
    pub(crate) rules: u32,
    pub(crate) pool: u32,
}

/// What the backend asks of `/dev/pf`.
pub(crate) trait PfDevice {
    /// DIOCGETSTATUS: is pf enabled?
    fn running(&mut self) -> Result<bool, Error>;
    /// DIOCNATLOOK with `q`'s direction; true and `q.rsaddr` filled when the
    /// state table has the connection.
    fn natlook(&mut self, q: &mut FlatNatlook) -> Result<bool, Error>;
    /// DIOCXBEGIN on `anchor`'s filter ruleset (plus DIOCBEGINADDRS).
    fn begin(&mut self, anchor: &str) -> Result<Ticket, Error>;
    /// DIOCADDRULE into the open transaction.
    fn add_rule(&mut self, anchor: &str, ticket: Ticket, rule: &FlatRule) -> Result<(), Error>;
    /// DIOCXCOMMIT: the anchor now holds exactly the rules added.
    fn commit(&mut self, anchor: &str, ticket: Ticket) -> Result<(), Error>;
    /// DIOCXROLLBACK: abandon the transaction, the anchor is unchanged.
    fn rollback(&mut self, anchor: &str, ticket: Ticket) -> Result<(), Error>;
    /// DIOCGETRULESETS/DIOCGETRULESET: names of the anchors under `parent`.
    fn list_anchors(&mut self, parent: &str) -> Result<Vec<String>, Error>;
    /// DIOCGETSTATES (OpenBSD) or DIOCGETSTATESV2 (FreeBSD): read the whole
    /// state table if that takes at most `max_bytes`, and copy into `out`
    /// the TCP states whose wire or stack key names `q`'s two endpoints, in
    /// either order (`q.dir` is not used). The default, for devices that
    /// cannot read windows (macOS through the pfctl crate), says so.
    fn states(
        &mut self,
        _q: &FlatNatlook,
        _max_bytes: usize,
        _out: &mut [FlatState],
    ) -> Result<Dump, Error> {
        Ok(Dump::Unsupported)
    }
}

/// `/dev/pf` opened read-write, as both real devices need it.
#[cfg(any(target_os = "freebsd", target_os = "openbsd", target_os = "macos"))]
pub(crate) fn open_dev_pf() -> Result<std::fs::File, Error> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/pf")
        .map_err(|source| Error::Open {
            what: "open /dev/pf",
            source,
        })
}

#[cfg(test)]
pub(crate) mod fake {
    //! A recording `/dev/pf` with a tiny model of anchors, enough to check
    //! call sequences and their effect.

    use std::collections::BTreeMap;
    use std::io;
    use std::net::IpAddr;

    use super::*;

    #[derive(Clone, Debug, PartialEq, Eq)]
    pub(crate) enum Call {
        Running,
        Natlook { dir: u8 },
        Begin(String),
        AddRule(String, Ticket, FlatRule),
        Commit(String, Ticket),
        Rollback(String, Ticket),
        List(String),
        States { max_bytes: usize },
    }

    /// Bytes one state takes in the kernel's export (FreeBSD's
    /// `pf_state_export`), for the fake's size limit.
    pub(crate) const STATE_BYTES: usize = 384;

    #[derive(Default)]
    pub(crate) struct Recorder {
        pub(crate) calls: Vec<Call>,
        pub(crate) enabled: bool,
        /// Answer of natlook per direction code (1 in, 2 out).
        pub(crate) states: BTreeMap<u8, IpAddr>,
        /// Committed anchors (full path) and their rules.
        pub(crate) anchors: BTreeMap<String, Vec<FlatRule>>,
        /// Make add_rule fail for this port (host order).
        pub(crate) fail_port: Option<u16>,
        /// The state table `states` answers from, all returned whatever
        /// the query (the engine must pick the connection's own).
        pub(crate) table: Vec<FlatState>,
        /// States the table holds besides `table`, counted for its size.
        pub(crate) other_states: usize,
        next_ticket: u32,
        open: BTreeMap<String, (Ticket, Vec<FlatRule>)>,
    }

    impl Recorder {
        pub(crate) fn new() -> Self {
            Recorder {
                enabled: true,
                next_ticket: 100,
                ..Default::default()
            }
        }
    }

    fn ioctl_error(name: &'static str, errno: i32) -> Error {
        Error::Ioctl {
            name,
            source: io::Error::from_raw_os_error(errno),
        }
    }

    impl PfDevice for Recorder {
        fn running(&mut self) -> Result<bool, Error> {
            self.calls.push(Call::Running);
            Ok(self.enabled)
        }

        fn natlook(&mut self, q: &mut FlatNatlook) -> Result<bool, Error> {
            self.calls.push(Call::Natlook { dir: q.dir });
            match self.states.get(&q.dir) {
                Some(IpAddr::V4(a)) => {
                    q.rsaddr = [0; 16];
                    q.rsaddr[..4].copy_from_slice(&a.octets());
                    Ok(true)
                }
                Some(IpAddr::V6(a)) => {
                    q.rsaddr = a.octets();
                    Ok(true)
                }
                None => Ok(false),
            }
        }

        fn begin(&mut self, anchor: &str) -> Result<Ticket, Error> {
            self.calls.push(Call::Begin(anchor.to_string()));
            self.next_ticket += 1;
            let t = Ticket {
                rules: self.next_ticket,
                pool: self.next_ticket + 1000,
            };
            self.open.insert(anchor.to_string(), (t, Vec::new()));
            Ok(t)
        }

        fn add_rule(&mut self, anchor: &str, ticket: Ticket, rule: &FlatRule) -> Result<(), Error> {
            self.calls
                .push(Call::AddRule(anchor.to_string(), ticket, *rule));
            if Some(u16::from_be(rule.port)) == self.fail_port {
                return Err(ioctl_error("DIOCADDRULE", libc::EINVAL));
            }
            match self.open.get_mut(anchor) {
                Some((t, rules)) if *t == ticket => {
                    rules.push(*rule);
                    Ok(())
                }
                _ => Err(ioctl_error("DIOCADDRULE", libc::EBUSY)),
            }
        }

        fn commit(&mut self, anchor: &str, ticket: Ticket) -> Result<(), Error> {
            self.calls.push(Call::Commit(anchor.to_string(), ticket));
            match self.open.remove(anchor) {
                Some((t, rules)) if t == ticket => {
                    // pf drops an anchor whose ruleset becomes empty.
                    if rules.is_empty() {
                        self.anchors.remove(anchor);
                    } else {
                        self.anchors.insert(anchor.to_string(), rules);
                    }
                    Ok(())
                }
                _ => Err(ioctl_error("DIOCXCOMMIT", libc::EBUSY)),
            }
        }

        fn rollback(&mut self, anchor: &str, ticket: Ticket) -> Result<(), Error> {
            self.calls.push(Call::Rollback(anchor.to_string(), ticket));
            self.open.remove(anchor);
            Ok(())
        }

        fn states(
            &mut self,
            _q: &FlatNatlook,
            max_bytes: usize,
            out: &mut [FlatState],
        ) -> Result<Dump, Error> {
            self.calls.push(Call::States { max_bytes });
            let states = self.table.len() + self.other_states;
            if states * STATE_BYTES > max_bytes {
                return Ok(Dump::TooLarge { states });
            }
            for (slot, st) in out.iter_mut().zip(&self.table) {
                *slot = *st;
            }
            Ok(Dump::Read {
                states,
                matched: self.table.len(),
            })
        }

        fn list_anchors(&mut self, parent: &str) -> Result<Vec<String>, Error> {
            self.calls.push(Call::List(parent.to_string()));
            let prefix = format!("{parent}/");
            Ok(self
                .anchors
                .keys()
                .filter_map(|k| k.strip_prefix(&prefix))
                .filter(|rest| !rest.contains('/'))
                .map(str::to_string)
                .collect())
        }
    }
}

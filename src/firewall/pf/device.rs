//! The real `/dev/pf` (FreeBSD, OpenBSD): [`PfDevice`] over the C glue.
//!
//! All knowledge of pf's structures stays in `pfglue.c`; this file only
//! owns the descriptor, turns names into C strings and errno into
//! [`Error::Ioctl`]s with the ioctl's name, as pfctl would print them.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use super::ffi::{self, FlatNatlook, FlatRule, FlatState};
use super::seam::{Dump, PfDevice, Ticket, open_dev_pf};
use crate::firewall::Error;

/// The state dump's ioctl, as pfctl would name it in an error.
#[cfg(target_os = "freebsd")]
const STATES_IOCTL: &str = "DIOCGETSTATESV2";
#[cfg(not(target_os = "freebsd"))]
const STATES_IOCTL: &str = "DIOCGETSTATES";

/// `/dev/pf`, opened read-write.
pub(crate) struct BsdDevice {
    file: File,
}

fn check(name: &'static str, rc: libc::c_int) -> Result<libc::c_int, Error> {
    if rc < 0 {
        Err(Error::Ioctl {
            name,
            source: io::Error::from_raw_os_error(-rc),
        })
    } else {
        Ok(rc)
    }
}

fn c_name(s: &str) -> Result<CString, Error> {
    CString::new(s).map_err(|_| Error::BadName {
        what: "anchor name",
        why: "contains NUL",
    })
}

/// Call the glue function `f` with `anchor` as a C string, its result
/// checked as ioctl `name`.
fn on_anchor(
    name: &'static str,
    anchor: &str,
    f: impl FnOnce(*const libc::c_char) -> libc::c_int,
) -> Result<libc::c_int, Error> {
    let a = c_name(anchor)?;
    check(name, f(a.as_ptr()))
}

impl BsdDevice {
    /// Open `/dev/pf` and check that the glue was built with the same flat
    /// layout as this crate (the build already asserts it; this catches a
    /// stale object file).
    pub(crate) fn open() -> Result<BsdDevice, Error> {
        // SAFETY: plain functions returning sizeof.
        let (rs, ns, ss) = unsafe {
            (
                ffi::ftps_rule_size(),
                ffi::ftps_natlook_size(),
                ffi::ftps_state_size(),
            )
        };
        if rs != std::mem::size_of::<FlatRule>()
            || ns != std::mem::size_of::<FlatNatlook>()
            || ss != std::mem::size_of::<FlatState>()
        {
            return Err(Error::Open {
                what: "pf glue",
                source: io::Error::new(io::ErrorKind::InvalidData, "layout mismatch"),
            });
        }
        Ok(BsdDevice {
            file: open_dev_pf()?,
        })
    }

    fn fd(&self) -> libc::c_int {
        self.file.as_raw_fd()
    }
}

impl PfDevice for BsdDevice {
    fn running(&mut self) -> Result<bool, Error> {
        // SAFETY: fd is open; the call only reads status into its own memory.
        let rc = check("DIOCGETSTATUS", unsafe { ffi::ftps_pf_running(self.fd()) })?;
        Ok(rc == 1)
    }

    fn natlook(&mut self, q: &mut FlatNatlook) -> Result<bool, Error> {
        // SAFETY: q is a valid, exclusively borrowed FlatNatlook.
        let rc = check("DIOCNATLOOK", unsafe { ffi::ftps_pf_natlook(self.fd(), q) })?;
        Ok(rc == 1)
    }

    fn begin(&mut self, anchor: &str) -> Result<Ticket, Error> {
        let mut t = Ticket { rules: 0, pool: 0 };
        // SAFETY: the anchor is NUL-terminated; the tickets are valid
        // out-pointers.
        on_anchor("DIOCXBEGIN", anchor, |a| unsafe {
            ffi::ftps_pf_begin(self.fd(), a, &mut t.rules, &mut t.pool)
        })?;
        Ok(t)
    }

    fn add_rule(&mut self, anchor: &str, ticket: Ticket, rule: &FlatRule) -> Result<(), Error> {
        // SAFETY: the anchor is NUL-terminated; rule is a valid FlatRule
        // whose name fields were built NUL-terminated by FlatRule::new.
        on_anchor("DIOCADDRULE", anchor, |a| unsafe {
            ffi::ftps_pf_add_rule(self.fd(), a, ticket.rules, ticket.pool, rule)
        })?;
        Ok(())
    }

    fn commit(&mut self, anchor: &str, ticket: Ticket) -> Result<(), Error> {
        // SAFETY: the anchor is NUL-terminated.
        on_anchor("DIOCXCOMMIT", anchor, |a| unsafe {
            ffi::ftps_pf_commit(self.fd(), a, ticket.rules)
        })?;
        Ok(())
    }

    fn rollback(&mut self, anchor: &str, ticket: Ticket) -> Result<(), Error> {
        // SAFETY: the anchor is NUL-terminated.
        on_anchor("DIOCXROLLBACK", anchor, |a| unsafe {
            ffi::ftps_pf_rollback(self.fd(), a, ticket.rules)
        })?;
        Ok(())
    }

    fn states(
        &mut self,
        q: &FlatNatlook,
        max_bytes: usize,
        out: &mut [FlatState],
    ) -> Result<Dump, Error> {
        let cap = u32::try_from(out.len()).unwrap_or(u32::MAX);
        let mut total = 0u32;
        // SAFETY: q is a valid FlatNatlook; out is writable for cap
        // elements, which is all the glue writes; total is a valid
        // out-pointer.
        let rc = unsafe {
            ffi::ftps_pf_states(self.fd(), q, max_bytes, out.as_mut_ptr(), cap, &mut total)
        };
        let states = total as usize;
        match -rc {
            libc::EFBIG => Ok(Dump::TooLarge { states }),
            // No window export here, or a kernel that no longer knows the
            // ioctl or this export's version.
            libc::EOPNOTSUPP | libc::ENOTTY | libc::ENODEV => Ok(Dump::Unsupported),
            _ => {
                let matched = check(STATES_IOCTL, rc)? as usize;
                Ok(Dump::Read { states, matched })
            }
        }
    }

    fn list_anchors(&mut self, parent: &str) -> Result<Vec<String>, Error> {
        let p = c_name(parent)?;
        let mut n = 0u32;
        // SAFETY: p is NUL-terminated; n is a valid out-pointer.
        check("DIOCGETRULESETS", unsafe {
            ffi::ftps_pf_anchor_count(self.fd(), p.as_ptr(), &mut n)
        })?;
        let mut names = Vec::with_capacity(n as usize);
        let mut buf = [0 as libc::c_char; 64];
        for nr in 0..n {
            // SAFETY: buf is writable for its length; the glue NUL-terminates.
            check("DIOCGETRULESET", unsafe {
                ffi::ftps_pf_anchor_name(self.fd(), p.as_ptr(), nr, buf.as_mut_ptr(), buf.len())
            })?;
            // SAFETY: the glue wrote a NUL-terminated string into buf.
            let name = unsafe { CStr::from_ptr(buf.as_ptr()) };
            names.push(name.to_string_lossy().into_owned());
        }
        Ok(names)
    }
}

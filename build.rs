//! Compiles the C glue on FreeBSD and OpenBSD, against the system's own
//! headers: the pf glue (src/firewall/pf/pfglue.c, <net/pfvar.h>: pf's
//! structs differ between the BSDs and between OpenBSD releases, so only
//! the target's headers know them) and the bpf lock (src/os/bpflock.c,
//! <net/bpf.h>). Other targets build nothing here.
//!
//! FTPSESAME_WERROR=1 (set by tests/cross/check.sh) turns C warnings into
//! errors; a user's build on a newer release is not failed for a warning.

use std::env;

/// Each C file and the static library it becomes.
const GLUE: &[(&str, &str)] = &[
    ("src/firewall/pf/pfglue.c", "ftpsesame_pfglue"),
    ("src/os/bpflock.c", "ftpsesame_bpflock"),
];

fn main() {
    for (file, _) in GLUE {
        println!("cargo:rerun-if-changed={file}");
    }
    println!("cargo:rerun-if-env-changed=FTPSESAME_WERROR");
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os != "freebsd" && os != "openbsd" {
        return;
    }
    let werror = env::var("FTPSESAME_WERROR").as_deref() == Ok("1");
    for (file, lib) in GLUE {
        let mut b = cc::Build::new();
        b.file(file).warnings(true).extra_warnings(true);
        if werror {
            b.warnings_into_errors(true);
        }
        b.compile(lib);
    }
    if os == "freebsd" {
        // FreeBSD 14 reports pf's status as a packed nvlist (libnv, base).
        println!("cargo:rustc-link-lib=nv");
    }
}

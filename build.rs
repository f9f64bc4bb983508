//! Compiles the pf glue (src/firewall/pf/pfglue.c) on FreeBSD and OpenBSD,
//! against the system's own <net/pfvar.h>: pf's structs differ between the
//! BSDs and between OpenBSD releases, so only the target's headers know
//! them. Other targets build nothing here.
//!
//! FTPSESAME_WERROR=1 (set by tests/cross/check.sh) turns C warnings into
//! errors; a user's build on a newer release is not failed for a warning.

use std::env;

fn main() {
    println!("cargo:rerun-if-changed=src/firewall/pf/pfglue.c");
    println!("cargo:rerun-if-env-changed=FTPSESAME_WERROR");
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os != "freebsd" && os != "openbsd" {
        return;
    }
    let mut b = cc::Build::new();
    b.file("src/firewall/pf/pfglue.c")
        .warnings(true)
        .extra_warnings(true);
    if env::var("FTPSESAME_WERROR").as_deref() == Ok("1") {
        b.warnings_into_errors(true);
    }
    b.compile("ftpsesame_pfglue");
    if os == "freebsd" {
        // FreeBSD 14 reports pf's status as a packed nvlist (libnv, base).
        println!("cargo:rustc-link-lib=nv");
    }
}

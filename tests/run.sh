#!/usr/bin/env bash
# The whole test suite, as CI runs it (`bash .ci/run` calls this script).
# Run as root on Debian. It first runs the README's first command,
# tests/lab/demo.sh, after removing libpcap's headers, so the demo's own
# install step is what brings them back (in CI's fresh clone the demo's
# build links from scratch). Then it installs what the rest needs (apt,
# pip, Rust if missing), checks formatting and lints, runs every Rust test
# (unit, offline replay, netlink backends in network namespaces, privilege
# drop), the cross-target checks, the namespace-lab end-to-end tests with
# real FTP servers, and bounded fuzzing.
set -euo pipefail
cd "$(dirname "$0")/.."
export FTPSESAME_E2E=required
export CARGO_TERM_COLOR=never

step() { printf '\n==> %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    echo "tests/run.sh: run as root (network namespaces, nftables, privilege drop)" >&2
    exit 1
fi

step "the README's first command without libpcap's headers: tests/lab/demo.sh"
# The demo must install everything the build needs itself; removing the
# headers (libpcap0.8-dev provides pcap.h and libpcap.so) proves it does.
if dpkg-query -W -f='${Status}' libpcap0.8-dev 2>/dev/null | grep -q "install ok installed"; then
    DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq libpcap0.8-dev >/dev/null
fi
if [ -e /usr/include/pcap.h ]; then
    echo "tests/run.sh: /usr/include/pcap.h still present after removing libpcap0.8-dev" >&2
    exit 1
fi
env -u FTPSESAME_BIN tests/lab/demo.sh

step "installing build and test dependencies"
tests/deps.sh
: "${HOME:=/root}"
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"

step "formatting and lints"
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings

step "unit, replay and kernel-backend tests"
cargo build --release
cargo test --release -- --test-threads=2

if [ -x tests/cross/check.sh ]; then
    step "cross-target checks (FreeBSD, OpenBSD, macOS)"
    tests/cross/check.sh
fi

if [ -f tests/lab/test_e2e.py ]; then
    step "end-to-end lab tests"
    FTPSESAME_BIN="$PWD/target/release/ftpsesame" python3 -m pytest -q tests/lab
fi

if [ -x tests/fuzz.sh ]; then
    step "fuzzing (bounded)"
    tests/fuzz.sh
fi
echo
echo "all test stages passed"

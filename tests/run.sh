#!/usr/bin/env bash
# The whole test suite, as CI runs it (`bash .ci/run` calls this script).
# Run as root on Debian: it installs what it needs (apt, pip, rustup), then
# checks formatting and lints, runs every Rust test (unit, offline replay,
# netlink backends in network namespaces, privilege drop), the cross-target
# checks, and the namespace-lab end-to-end tests with real FTP servers.
set -euo pipefail
cd "$(dirname "$0")/.."
export FTPSESAME_E2E=required
export CARGO_TERM_COLOR=never

step() { printf '\n==> %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    echo "tests/run.sh: run as root (network namespaces, nftables, privilege drop)" >&2
    exit 1
fi

step "installing build and test dependencies"
tests/deps.sh

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

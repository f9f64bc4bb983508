#!/usr/bin/env bash
# Cross-target checks for the BSD and macOS code, run on Linux.
#
# - the C glue (src/firewall/pf/pfglue.c, src/os/bpflock.c) compiled with
#   zig's clang against FreeBSD 14's and OpenBSD's own <net/pfvar.h> and
#   <net/bpf.h>, -Wall -Wextra -Werror;
# - cargo check and clippy -D warnings for x86_64-unknown-freebsd and
#   x86_64-apple-darwin (the build script compiles the glue for FreeBSD
#   through CC_<target> = tests/cross/zigcc);
# - cargo +nightly check -Z build-std for x86_64-unknown-openbsd (no
#   prebuilt std for it), again compiling the glue.
#
# Installs what it needs (rustup targets, rust-src on nightly, clippy, the
# ziglang package from PyPI) and exits non-zero on the first failure.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cross="$root/tests/cross"
cd "$root"

passed=0
step() {
	echo "== $*"
}
ok() {
	passed=$((passed + 1))
	echo "ok: $*"
}
trap 'rc=$?; if [ $rc -ne 0 ]; then echo "cross: $passed passed, 1 failed"; fi' EXIT

step "tools"
if ! python3 -m ziglang version >/dev/null 2>&1; then
	python3 -m pip install --quiet ziglang
fi
echo "zig $(python3 -m ziglang version)"
rustup target add x86_64-unknown-freebsd x86_64-apple-darwin
rustup component add clippy
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
rustup component add rust-src --toolchain nightly

# The pcap crate's build script would probe the host's libpcap; pin the
# version the BSDs and macOS ship (1.10.x) so the cfgs are deterministic.
export LIBPCAP_VER=1.10.4
# Warnings in the C glue fail these builds.
export FTPSESAME_WERROR=1
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1}
export CC_x86_64_unknown_freebsd="$cross/zigcc"
export AR_x86_64_unknown_freebsd="$cross/zigar"
export CC_x86_64_unknown_openbsd="$cross/zigcc"
export AR_x86_64_unknown_openbsd="$cross/zigar"

tmp=$(mktemp -d)
trap 'rc=$?; rm -rf "$tmp"; if [ $rc -ne 0 ]; then echo "cross: $passed passed, 1 failed"; fi' EXIT

for t in x86_64-freebsd x86_64-openbsd; do
	for c in src/firewall/pf/pfglue.c src/os/bpflock.c; do
		name=$(basename "$c" .c)
		step "$name.c for $t"
		ZIG_TARGET=$t "$cross/zigcc" -Wall -Wextra -Werror -c \
			"$c" -o "$tmp/$name-$t.o"
		ok "$name.c $t"
	done
done

step "cargo check x86_64-unknown-freebsd"
ZIG_TARGET=x86_64-freebsd cargo check --all-targets --target x86_64-unknown-freebsd
ok "check freebsd"
step "cargo clippy x86_64-unknown-freebsd"
ZIG_TARGET=x86_64-freebsd cargo clippy --all-targets --target x86_64-unknown-freebsd -- -D warnings
ok "clippy freebsd"

step "cargo check x86_64-apple-darwin"
cargo check --all-targets --target x86_64-apple-darwin
ok "check macos"
step "cargo clippy x86_64-apple-darwin"
cargo clippy --all-targets --target x86_64-apple-darwin -- -D warnings
ok "clippy macos"

step "cargo +nightly check -Z build-std x86_64-unknown-openbsd"
ZIG_TARGET=x86_64-openbsd cargo +nightly check -Z build-std --target x86_64-unknown-openbsd
ok "check openbsd"

echo "cross: $passed passed, 0 failed"

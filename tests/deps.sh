#!/usr/bin/env bash
# Install what building and testing ftpsesame needs on Debian, idempotently:
# the C toolchain and libpcap's headers, the kernel tools the tests drive,
# Rust (1.85 or newer) if there is none, and the lab's tools (tests/lab/deps.sh).
# Run as root. A Rust installed by rustup lives in ~/.cargo/bin: callers put
# it on their PATH (demo.sh and run.sh do).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
: "${HOME:=/root}"
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"
RUST_MIN=1.85

if [ "$(id -u)" -ne 0 ]; then
    echo "deps.sh: run as root (apt-get)" >&2
    exit 1
fi

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

apt_updated=
apt_update() {
    [ -n "$apt_updated" ] || apt-get update -qq
    apt_updated=1
}

need_apt=()
for pkg in gcc libc6-dev pkg-config libpcap-dev tcpdump nftables conntrack iproute2 mandoc \
           shellcheck systemd python3-pip python3-scapy util-linux procps; do
    installed "$pkg" || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
    apt_update
    apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# version_ge A B: true when version A >= B (dotted numbers).
version_ge() {
    [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]
}

rust_ok() {
    command -v cargo >/dev/null 2>&1 && command -v rustc >/dev/null 2>&1 &&
        version_ge "$(rustc --version | awk '{print $2}')" "$RUST_MIN"
}

# candidate_ge PKG: true when apt can install PKG at version >= RUST_MIN.
candidate_ge() {
    local v
    v=$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}')
    [ -n "$v" ] && [ "$v" != "(none)" ] && version_ge "${v#*:}" "$RUST_MIN"
}

# Rust from Debian's own packages when they are recent enough (rustc on
# Debian 13; rustc-web, the toolchain Debian 12 keeps current for its
# browsers), else Debian's rustup package, which fetches the stable toolchain.
if ! rust_ok; then
    apt_update
    if candidate_ge rustc && candidate_ge cargo; then
        apt-get install -y -qq rustc cargo rustfmt rust-clippy >/dev/null
    elif candidate_ge rustc-web && candidate_ge cargo-web; then
        apt-get install -y -qq rustc-web cargo-web rustfmt-web rust-web-clippy >/dev/null
    elif apt-cache policy rustup 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        apt-get install -y -qq rustup >/dev/null
        rustup default stable
        PATH="$HOME/.cargo/bin:$PATH"
    fi
    hash -r
    if ! rust_ok; then
        echo "deps.sh: no Rust $RUST_MIN or newer could be installed; install it with rustup" >&2
        exit 1
    fi
fi
if command -v rustup >/dev/null 2>&1; then
    rustup component add rustfmt clippy >/dev/null 2>&1 || true
fi
echo "deps.sh: $(rustc --version), $(dpkg-query -W -f='libpcap-dev ${Version}' libpcap-dev)"

if [ -x tests/lab/deps.sh ]; then
    tests/lab/deps.sh
fi

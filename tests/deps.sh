#!/usr/bin/env bash
# Install what building and testing ftpsesame needs on Debian, idempotently.
set -euo pipefail
need_apt=()
for pkg in libpcap-dev tcpdump nftables conntrack iproute2 mandoc shellcheck systemd \
           python3-pip python3-scapy util-linux procps; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "deps.sh: cargo not found; install Rust with rustup first" >&2
    exit 1
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
if [ -x tests/lab/deps.sh ]; then
    tests/lab/deps.sh
fi

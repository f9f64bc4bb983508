#!/usr/bin/env bash
# Installs what the network lab needs, idempotently (safe to run again).
#
# Debian's FTP servers conflict with each other as packages, so vsftpd is
# installed and proftpd is only unpacked (with the libraries it needs that
# are not already present) under $FSLAB_PROFTPD_ROOT, where lab.sh runs it
# from with LD_LIBRARY_PATH.
set -euo pipefail

: "${FSLAB_PROFTPD_ROOT:=/var/tmp/ftpsesame-lab/proftpd}"
PY=${PYTHON:-python3}

if [ "$(id -u)" != 0 ]; then
    echo "deps.sh: needs root (apt-get)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# iptables: iptables-nft's NFQUEUE target, for kernels without nftables' queue.
APT_PKGS=(vsftpd lftp curl nftables iptables iproute2 conntrack conntrackd tcpdump python3-pip)
missing=()
for p in "${APT_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# proftpd: unpack proftpd-core and its library dependencies (never install:
# that would remove vsftpd).
if [ ! -x "$FSLAB_PROFTPD_ROOT/usr/sbin/proftpd" ] ||
    ! LD_LIBRARY_PATH="$FSLAB_PROFTPD_ROOT/usr/lib/x86_64-linux-gnu" \
        "$FSLAB_PROFTPD_ROOT/usr/sbin/proftpd" -v >/dev/null 2>&1; then
    dl=$(mktemp -d)
    trap 'rm -rf "$dl"' EXIT
    apt-cache policy proftpd-core | grep -q 'Candidate: [0-9]' || apt-get update -qq
    # Only the libraries that are not installed yet, transitively.
    libs=()
    for l in $(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
        --no-breaks --no-replaces --no-enhances proftpd-core |
        sed -n 's/^ *\(Pre\)\{0,1\}Depends: \(lib[^ <>:]*\)$/\2/p' | sort -u); do
        dpkg-query -W -f='${Status}' "$l" 2>/dev/null | grep -q 'ok installed' || libs+=("$l")
    done
    (cd "$dl" && chmod 777 . && apt-get download -qq proftpd-core "${libs[@]}")
    mkdir -p "$FSLAB_PROFTPD_ROOT"
    for deb in "$dl"/*.deb; do
        dpkg -x "$deb" "$FSLAB_PROFTPD_ROOT"
    done
    LD_LIBRARY_PATH="$FSLAB_PROFTPD_ROOT/usr/lib/x86_64-linux-gnu" \
        "$FSLAB_PROFTPD_ROOT/usr/sbin/proftpd" -v
fi

# Python side: the pyftpdlib server and the test runner.
if ! "$PY" -c 'import pyftpdlib, pytest' 2>/dev/null; then
    # Debian 12 refuses the first form (PEP 668): say nothing about it.
    "$PY" -m pip install -q pyftpdlib pytest 2>/dev/null ||
        "$PY" -m pip install -q --break-system-packages pyftpdlib pytest
fi
echo "deps.sh: lab dependencies present"

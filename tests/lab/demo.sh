#!/usr/bin/env bash
# See ftpsesame work: `tests/lab/demo.sh`, as root, on a Debian machine.
#
# Installs everything the build and the lab need (tests/deps.sh, the same
# step as the test suite: libpcap's headers, Rust if missing, the FTP
# servers), builds the daemon, builds a three-namespace lab (client,
# firewall, server) whose firewall drops FTP data connections unless
# ftpsesame opens them, runs the daemon on the firewall with debug logging,
# and shows a passive and an active transfer succeeding; then stops the
# daemon and shows the same transfers blocked.  Everything it creates is
# removed on exit, whatever happens.  Exit status 0 when all went as
# expected.  FTPSESAME_BIN=path skips the build and runs that binary.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
BIN=${FTPSESAME_BIN:-$REPO/target/release/ftpsesame}

if [ "$(id -u)" != 0 ]; then
    echo "demo.sh: run as root (it installs packages, creates network namespaces and nftables rules)" >&2
    exit 1
fi

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "installing build and lab dependencies (tests/deps.sh)"
"$REPO/tests/deps.sh"
# A Rust installed by rustup is not on root's PATH until the next login.
: "${HOME:=/root}"
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"

if [ -z "${FTPSESAME_BIN:-}" ]; then
    say "building ftpsesame (cargo build --release)"
    (cd "$REPO" && cargo build --release)
fi

# shellcheck source=lab.sh
source "$HERE/lab.sh"
LOG=$(mktemp /tmp/ftpsesame-demo.XXXXXX.log)
OUT=$(mktemp -d /tmp/ftpsesame-demo.XXXXXX)
DAEMON=
# shellcheck disable=SC2317  # called by the trap
cleanup() {
    [ -n "$DAEMON" ] && kill "$DAEMON" 2>/dev/null && wait "$DAEMON" 2>/dev/null
    lab_down
    rm -rf "$OUT"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "bringing up the lab: $FSLAB_C 192.0.2.2 -> $FSLAB_FW -> $FSLAB_S 198.51.100.2 (vsftpd)"
lab_up
lab_server_start vsftpd
echo "firewall forward chain (policy drop; data connections only via @ftpsesame4/6):"
ip netns exec "$FSLAB_FW" nft list chain inet filter forward | sed 's/^/    /'

WANT=$(sha256sum "$FSLAB_PUB/big.bin" | cut -d' ' -f1)
FAILED=0

# transfer LABEL EXPECT(ok|blocked) TIMEOUT curl-options...
transfer() {
    local label=$1 expect=$2 timeout=$3 got
    shift 3
    rm -f "$OUT/file"
    ip netns exec "$FSLAB_C" curl -sS --max-time "$timeout" "$@" -o "$OUT/file" \
        "ftp://$FSLAB_SERVER4/big.bin" 2>"$OUT/err" || true
    got=$([ -f "$OUT/file" ] && sha256sum "$OUT/file" | cut -d' ' -f1 || echo none)
    if [ "$got" = "$WANT" ]; then
        if [ "$expect" = ok ]; then
            echo "OK       $label: 1 MiB transferred, sha256 matches"
        else
            echo "UNEXPECTED $label: transferred although it should be blocked"
            FAILED=1
        fi
    else
        if [ "$expect" = blocked ]; then
            echo "BLOCKED  $label: no data connection within ${timeout}s (as expected; $(tr -d '\n' <"$OUT/err"))"
        else
            echo "FAILED   $label: $(tr -d '\n' <"$OUT/err")"
            FAILED=1
        fi
    fi
}

say "starting: ip netns exec $FSLAB_FW $BIN -d -D 7 -i $FSLAB_FW_CLIENT_IF   (log: $LOG)"
ip netns exec "$FSLAB_FW" "$BIN" -d -D 7 -i "$FSLAB_FW_CLIENT_IF" 2>"$LOG" &
DAEMON=$!
for _ in $(seq 50); do
    # Ready once it has dropped root (capture and firewall handles are open).
    [ "$(awk '/^Uid:/ {print $2}' /proc/$DAEMON/status 2>/dev/null)" = "$(id -u proxy)" ] && break
    kill -0 "$DAEMON" 2>/dev/null || break
    sleep 0.1
done
if ! kill -0 "$DAEMON" 2>/dev/null; then
    echo "ftpsesame exited at startup:"
    cat "$LOG"
    DAEMON=
    exit 1
fi

say "transfers with ftpsesame running"
transfer "passive (EPSV)" ok 20
transfer "active (PORT)" ok 20 -P - --disable-eprt
sleep 0.5
echo "set elements left after the sessions ended: $(lab_elements | wc -l)"

say "ftpsesame log"
sed 's/^/    /' "$LOG"

say "stopping ftpsesame (SIGTERM)"
if kill -TERM "$DAEMON" 2>/dev/null; then
    rc=0
    wait "$DAEMON" || rc=$?
    echo "exit status $rc; set elements left: $(lab_elements | wc -l)"
    [ "$rc" = 0 ] || FAILED=1
else
    echo "ftpsesame had already exited"
    FAILED=1
fi
DAEMON=

say "the same transfers without ftpsesame"
transfer "passive (EPSV)" blocked 3
transfer "active (PORT)" blocked 3
echo "data SYNs dropped by the firewall: $(lab_dropped_syns)"

if [ $FAILED = 0 ]; then
    say "demo OK: ftpsesame opened exactly the data connections FTP negotiated"
else
    say "demo FAILED (see above)"
fi
exit $FAILED

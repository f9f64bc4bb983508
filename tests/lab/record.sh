#!/usr/bin/env bash
# Record real FTP control connections in the lab as regression captures.
#
# For every server (vsftpd, proftpd, pyftpdlib) and negotiation (PASV, EPSV,
# PORT, EPRT over IPv4; EPSV, EPRT over IPv6) this runs one real transfer
# through the lab with the daemon running, while tcpdump records the control
# connection on the firewall. It keeps the capture as
# tests/captures/SERVER-FAMILY-MODE.pcap and the daemon's `allowing` lines as
# .allowing beside it; tests/replay.rs replays each capture with -r and
# expects the same lines. Run as root: `tests/lab/record.sh` (uses the
# namespace prefix fsrec, so it can run beside the other lab users).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
BIN=${FTPSESAME_BIN:-$REPO/target/release/ftpsesame}
OUT=$REPO/tests/captures
export FSLAB=${FSLAB:-fsrec}
# shellcheck source=lab.sh
source "$HERE/lab.sh"
TMP=$(mktemp -d)
cleanup() {
    lab_down
    rm -rf "$TMP"
}
trap cleanup EXIT

lab_up
mkdir -p "$OUT"
for server in vsftpd proftpd pyftpdlib; do
    lab_server_start "$server"
    for cell in 4:pasv 4:epsv 4:port 4:eprt 6:epsv 6:eprt; do
        fam=${cell%%:*} mode=${cell#*:}
        name=$server-ipv$fam-$mode
        host=$FSLAB_SERVER4
        [ "$fam" = 6 ] && host=$FSLAB_SERVER6
        ip netns exec "$FSLAB_FW" tcpdump -i to-c --immediate-mode -U -s 0 -w "$TMP/$name.pcap" "tcp port 21" 2>/dev/null &
        dump=$!
        ip netns exec "$FSLAB_FW" "$BIN" -d -D 6 -i to-c >"$TMP/$name.log" 2>&1 &
        daemon=$!
        sleep 0.5
        ip netns exec "$FSLAB_C" python3 "$HERE/ftpget.py" get "$host" small.txt "$mode" "$TMP/out" >/dev/null
        sleep 0.5
        kill "$daemon"
        wait "$daemon"
        kill "$dump"
        wait "$dump" || true
        grep -E '^#[0-9]+ (allowing|passive/nat: also allowing) ' "$TMP/$name.log" | sed 's/^#[0-9]* /#1 /' >"$OUT/$name.allowing"
        [ -s "$OUT/$name.allowing" ] || { echo "record: $name: the daemon allowed nothing" >&2; cat "$TMP/$name.log" >&2; exit 1; }
        cp "$TMP/$name.pcap" "$OUT/$name.pcap"
        echo "recorded $name: $(cat "$OUT/$name.allowing")"
    done
    lab_server_stop || true
done

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
#
# `tests/lab/record.sh --nflog` records instead what the firewall's NFLOG
# rule (lab.sh --nflog) logs after the forward filter, for vsftpd over IPv4
# with PASV and IPv6 with EPSV, as SERVER-FAMILY-MODE-nflog.pcap. An NFLOG
# group has one reader, so tcpdump reads the group and the daemon follows
# the same transfer on to-c: its lines are the expectation for the log.
set -euo pipefail
nflog=0
[ "${1:-}" = --nflog ] && nflog=1
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

servers="vsftpd proftpd pyftpdlib"
cells="4:pasv 4:epsv 4:port 4:eprt 6:epsv 6:eprt"
suffix=
dump_from=(-i to-c)
settle=0.5
if [ $nflog = 1 ]; then
    lab_up --nflog
    servers=vsftpd cells="4:pasv 6:epsv" suffix=-nflog
    # libpcap cannot filter NFLOG: the log rule selects port 21.
    dump_from=(-i "nflog:$FSLAB_NFLOG_GROUP")
    # The kernel batches log messages for up to a second before it sends
    # them (tcpdump does not ask for each one at once): wait for the last.
    settle=2
else
    lab_up
fi
mkdir -p "$OUT"
for server in $servers; do
    lab_server_start "$server"
    for cell in $cells; do
        fam=${cell%%:*} mode=${cell#*:}
        name=$server-ipv$fam-$mode$suffix
        host=$FSLAB_SERVER4
        [ "$fam" = 6 ] && host=$FSLAB_SERVER6
        filter=("tcp port 21")
        [ $nflog = 1 ] && filter=()
        ip netns exec "$FSLAB_FW" tcpdump "${dump_from[@]}" --immediate-mode -U -s 0 -w "$TMP/$name.pcap" "${filter[@]}" 2>/dev/null &
        dump=$!
        ip netns exec "$FSLAB_FW" "$BIN" -d -D 6 -i to-c >"$TMP/$name.log" 2>&1 &
        daemon=$!
        sleep 0.5
        ip netns exec "$FSLAB_C" python3 "$HERE/ftpget.py" get "$host" small.txt "$mode" "$TMP/out" >/dev/null
        sleep "$settle"
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

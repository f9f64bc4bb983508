#!/usr/bin/env bash
# The ftpsesame network lab: three network namespaces joined by veth pairs.
#
#   fslab-c (client)          fslab-fw (firewall)           fslab-s (server)
#   eth0 192.0.2.2/24  ---  to-c 192.0.2.1/24
#        2001:db8:1::2/64        2001:db8:1::1/64
#                                to-s 198.51.100.1/24  ---  eth0 198.51.100.2/24
#                                     2001:db8:2::1/64           2001:db8:2::2/64
#
# The firewall forwards with an nftables ruleset in table `inet filter` whose
# forward chain drops by default; FTP data connections get through in one of
# three modes:
#   sesame  (default) only through the sets ftpsesame4/ftpsesame6, which the
#           daemon fills;
#   helper  the kernel FTP helper (`ct helper set "ftp"`), the performance peer;
#   open    an open port range (passive 50000-50999, active 1024-65535 from the
#           server side).
# Every TCP SYN that reaches the end of the forward chain is counted by the
# named counter `dropped_syn` before the policy drops it; port 21 is always
# accepted, so these are the dropped data SYNs.  `--nat` masquerades the client
# on the server-side interface to-s.
# Two options feed the daemon's packet sources after the filter:
#   --nfqueue  control packets (TCP port 21, both directions, IPv4 and IPv6)
#              go to NFQUEUE 0 with bypass, in mangle POSTROUTING (after the
#              forward filter), through iptables-nft: this kernel lacks
#              nftables' own `queue` statement.  For `ftpsesame -i nfqueue:0`.
#   --nflog    the same packets are logged to NFLOG group 1 by a postrouting
#              chain.  For `ftpsesame -i nflog:1`.
#
# Use as a CLI (`lab.sh up [--helper|--open] [--nat]`, `lab.sh down`, see
# usage below) or source it and call the lab_* functions.  Namespace names
# start with $FSLAB (default fslab).  This file installs nothing: deps.sh does.
# Traffic never leaves the namespaces; the root namespace is not touched
# except for files under $FSLAB_DIR and the directory /var/empty the daemon
# chroots to.

: "${FSLAB:=fslab}"
: "${FSLAB_DIR:=/var/tmp/ftpsesame-lab}"
: "${FSLAB_PROFTPD_ROOT:=$FSLAB_DIR/proftpd}"
FSLAB_C=$FSLAB-c
FSLAB_FW=$FSLAB-fw
FSLAB_S=$FSLAB-s
FSLAB_RUN=$FSLAB_DIR/run-$FSLAB
FSLAB_PUB=$FSLAB_RUN/pub

# Addresses for scripts that source this file.
# shellcheck disable=SC2034
FSLAB_CLIENT4=192.0.2.2
FSLAB_SERVER4=198.51.100.2
# shellcheck disable=SC2034
FSLAB_CLIENT6=2001:db8:1::2
FSLAB_SERVER6=2001:db8:2::2
FSLAB_FW_CLIENT_IF=to-c
FSLAB_FW_SERVER_IF=to-s

lab_ns_exists() {
    ip netns list | awk '{print $1}' | grep -qxF "$1"
}

lab_exists() {
    lab_ns_exists "$FSLAB_FW"
}

# The inline queue and the log group the lab's source options use.
FSLAB_QUEUE=0
FSLAB_NFLOG_GROUP=1

# lab_up [--helper|--open|--sesame] [--nat] [--nfqueue] [--nflog]
lab_up() {
    lab_down
    local ns
    for ns in "$FSLAB_C" "$FSLAB_FW" "$FSLAB_S"; do
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        # Addresses must be usable at once: no duplicate address detection.
        ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 \
            net.ipv6.conf.default.accept_dad=0
    done
    # Create each pair inside the firewall namespace and move the peer
    # straight into its host: no interface ever appears in the root namespace.
    ip -n "$FSLAB_FW" link add "$FSLAB_FW_CLIENT_IF" type veth peer name eth0 netns "$FSLAB_C"
    ip -n "$FSLAB_FW" link add "$FSLAB_FW_SERVER_IF" type veth peer name eth0 netns "$FSLAB_S"

    ip -n "$FSLAB_C" addr add 192.0.2.2/24 dev eth0
    ip -n "$FSLAB_C" addr add 2001:db8:1::2/64 dev eth0 nodad
    ip -n "$FSLAB_FW" addr add 192.0.2.1/24 dev "$FSLAB_FW_CLIENT_IF"
    ip -n "$FSLAB_FW" addr add 2001:db8:1::1/64 dev "$FSLAB_FW_CLIENT_IF" nodad
    ip -n "$FSLAB_FW" addr add 198.51.100.1/24 dev "$FSLAB_FW_SERVER_IF"
    ip -n "$FSLAB_FW" addr add 2001:db8:2::1/64 dev "$FSLAB_FW_SERVER_IF" nodad
    ip -n "$FSLAB_S" addr add 198.51.100.2/24 dev eth0
    ip -n "$FSLAB_S" addr add 2001:db8:2::2/64 dev eth0 nodad
    ip -n "$FSLAB_C" link set eth0 up
    ip -n "$FSLAB_S" link set eth0 up
    ip -n "$FSLAB_FW" link set "$FSLAB_FW_CLIENT_IF" up
    ip -n "$FSLAB_FW" link set "$FSLAB_FW_SERVER_IF" up
    ip -n "$FSLAB_C" route add default via 192.0.2.1
    ip -n "$FSLAB_C" -6 route add default via 2001:db8:1::1
    ip -n "$FSLAB_S" route add default via 198.51.100.1
    ip -n "$FSLAB_S" -6 route add default via 2001:db8:2::1
    ip netns exec "$FSLAB_FW" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1

    lab_fw_load "$@"
    lab_files
    # The daemon's chroot directory (a Debian system has none by default).
    [ -d /var/empty ] || mkdir -m 755 /var/empty
}

# lab_ns_kill NS SIGNAL: signal every process in namespace NS (by pid).
lab_ns_kill() {
    local pids
    mapfile -t pids < <(ip netns pids "$1" 2>/dev/null)
    [ ${#pids[@]} -gt 0 ] && kill -s "$2" "${pids[@]}" 2>/dev/null
    return 0
}

# Kill what runs in our namespaces (only processes we started live there),
# then delete them.  Quiet and idempotent.
lab_down() {
    local ns
    for ns in "$FSLAB_C" "$FSLAB_FW" "$FSLAB_S"; do
        lab_ns_exists "$ns" && lab_ns_kill "$ns" TERM
    done
    sleep 0.1
    for ns in "$FSLAB_C" "$FSLAB_FW" "$FSLAB_S"; do
        lab_ns_exists "$ns" || continue
        lab_ns_kill "$ns" KILL
        ip netns del "$ns"
    done
    rm -f "$FSLAB_RUN"/*.pid
    return 0
}

# Print the firewall ruleset for a mode:
# lab_fw_rules [--helper|--open|--sesame] [--nat] [--nfqueue] [--nflog]
# (--nfqueue adds nothing here: lab_fw_load adds its iptables-nft rules.)
lab_fw_rules() {
    local mode=sesame nat=0 nflog=0 a
    for a in "$@"; do
        case $a in
        --helper) mode=helper ;;
        --open) mode=open ;;
        --sesame) mode=sesame ;;
        --nat) nat=1 ;;
        --nflog) nflog=1 ;;
        --nfqueue) ;;
        *) echo "lab_fw_rules: unknown option $a" >&2; return 1 ;;
        esac
    done
    cat <<EOF
flush ruleset
table inet filter {
	counter dropped_syn { }
	set ftpsesame4 { type ipv4_addr . ipv4_addr . inet_service; flags timeout; }
	set ftpsesame6 { type ipv6_addr . ipv6_addr . inet_service; flags timeout; }
EOF
    if [ $mode = helper ]; then
        cat <<EOF
	ct helper ftp { type "ftp" protocol tcp; l3proto inet; }
	chain prerouting {
		type filter hook prerouting priority filter; policy accept;
		tcp dport 21 ct helper set "ftp"
	}
EOF
    fi
    cat <<EOF
	chain forward {
		type filter hook forward priority filter; policy drop;
		ct state established,related accept
		meta l4proto { icmp, ipv6-icmp } accept
		tcp dport 21 ct state new accept
		ip saddr . ip daddr . tcp dport @ftpsesame4 ct state new accept
		ip6 saddr . ip6 daddr . tcp dport @ftpsesame6 ct state new accept
EOF
    if [ $mode = open ]; then
        cat <<EOF
		iifname "$FSLAB_FW_CLIENT_IF" tcp dport 50000-50999 ct state new accept
		iifname "$FSLAB_FW_SERVER_IF" tcp dport 1024-65535 ct state new accept
EOF
    fi
    cat <<EOF
		tcp flags & (fin | syn | rst | ack) == syn counter name "dropped_syn"
	}
EOF
    if [ $nflog = 1 ]; then
        # After the forward filter: only packets it passed are logged.
        cat <<EOF
	chain log_control {
		type filter hook postrouting priority filter; policy accept;
		tcp dport 21 log group $FSLAB_NFLOG_GROUP
		tcp sport 21 log group $FSLAB_NFLOG_GROUP
	}
EOF
    fi
    cat <<EOF
}
EOF
    if [ $nat = 1 ]; then
        cat <<EOF
table inet nat {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "$FSLAB_FW_SERVER_IF" masquerade
	}
}
EOF
    fi
}

# Replace the firewall's ruleset and forget its connections:
# lab_fw_load [--helper|--open|--sesame] [--nat] [--nfqueue] [--nflog]
lab_fw_load() {
    local rules a ipt port
    rules=$(lab_fw_rules "$@") || return 1
    printf '%s\n' "$rules" | ip netns exec "$FSLAB_FW" nft -f - || return 1
    for a in "$@"; do
        [ "$a" = --nfqueue ] || continue
        # mangle POSTROUTING comes after the forward filter (and before
        # source NAT); bypass: packets flow unobserved while no daemon is bound.
        for ipt in iptables-nft ip6tables-nft; do
            for port in --dport --sport; do
                ip netns exec "$FSLAB_FW" "$ipt" -t mangle -A POSTROUTING -p tcp "$port" 21 \
                    -j NFQUEUE --queue-num "$FSLAB_QUEUE" --queue-bypass || return 1
            done
        done
    done
    ip netns exec "$FSLAB_FW" conntrack -F 2>/dev/null
    return 0
}

# Dropped data SYNs so far.
lab_dropped_syns() {
    ip netns exec "$FSLAB_FW" nft list counter inet filter dropped_syn |
        sed -n 's/.*packets \([0-9]*\).*/\1/p'
}

# Elements of both sets, one per line (empty output: none).
lab_elements() {
    local s
    for s in ftpsesame4 ftpsesame6; do
        ip netns exec "$FSLAB_FW" nft -j list set inet filter $s |
            python3 -c 'import json,sys
for o in json.load(sys.stdin)["nftables"]:
    for e in o.get("set", {}).get("elem", []):
        print(json.dumps(e))'
    done
}

# Test files served by every server: a 1 MiB random file and a small one.
lab_files() {
    mkdir -p "$FSLAB_PUB"
    chmod 755 "$FSLAB_DIR" "$FSLAB_RUN" "$FSLAB_PUB"
    [ -s "$FSLAB_PUB/big.bin" ] || head -c 1048576 /dev/urandom >"$FSLAB_PUB/big.bin"
    [ -s "$FSLAB_PUB/small.txt" ] || echo "ftpsesame lab small file" >"$FSLAB_PUB/small.txt"
    chmod 644 "$FSLAB_PUB"/*
}

lab_vsftpd_conf() {
    cat <<EOF
listen=NO
listen_ipv6=YES
background=NO
anonymous_enable=YES
no_anon_password=YES
anon_root=$FSLAB_PUB
local_enable=NO
write_enable=NO
pasv_enable=YES
pasv_min_port=50000
pasv_max_port=50999
port_enable=YES
connect_from_port_20=NO
seccomp_sandbox=NO
xferlog_enable=NO
dual_log_enable=NO
syslog_enable=NO
vsftpd_log_file=$FSLAB_RUN/vsftpd.log
secure_chroot_dir=$FSLAB_RUN/vsftpd-empty
max_per_ip=0
max_clients=0
EOF
}

lab_proftpd_conf() {
    cat <<EOF
ServerName "ftpsesame lab"
ServerType standalone
DefaultServer on
Port 21
UseIPv6 on
User nobody
Group nogroup
PidFile $FSLAB_RUN/proftpd.pid
ScoreboardFile $FSLAB_RUN/proftpd.scoreboard
DelayTable none
WtmpLog off
UseReverseDNS off
PassivePorts 50000 50999
MaxInstances 200
<Anonymous $FSLAB_PUB>
	User ftp
	Group nogroup
	UserAlias anonymous ftp
	RequireValidShell off
	<Limit WRITE>
		DenyAll
	</Limit>
</Anonymous>
EOF
}

# Start one FTP server in the server namespace on port 21 (IPv4 and IPv6),
# stopping the one that ran before: lab_server_start vsftpd|proftpd|pyftpdlib
lab_server_start() {
    local kind=$1 ld
    lab_server_stop
    lab_files
    case $kind in
    vsftpd)
        mkdir -p "$FSLAB_RUN/vsftpd-empty"
        lab_vsftpd_conf >"$FSLAB_RUN/vsftpd.conf"
        ip netns exec "$FSLAB_S" vsftpd "$FSLAB_RUN/vsftpd.conf" \
            </dev/null >>"$FSLAB_RUN/server.log" 2>&1 &
        ;;
    proftpd)
        lab_proftpd_conf >"$FSLAB_RUN/proftpd.conf"
        ld=$FSLAB_PROFTPD_ROOT/usr/lib/x86_64-linux-gnu
        LD_LIBRARY_PATH=$ld ip netns exec "$FSLAB_S" \
            "$FSLAB_PROFTPD_ROOT/usr/sbin/proftpd" -n -q -c "$FSLAB_RUN/proftpd.conf" \
            </dev/null >>"$FSLAB_RUN/server.log" 2>&1 &
        ;;
    pyftpdlib)
        # Runs as root in the namespace; pyftpdlib serves anonymous read-only.
        ip netns exec "$FSLAB_S" python3 -m pyftpdlib -i :: -p 21 -d "$FSLAB_PUB" \
            -r 50000-50999 </dev/null >>"$FSLAB_RUN/server.log" 2>&1 &
        ;;
    *)
        echo "lab_server_start: unknown server $kind" >&2
        return 1
        ;;
    esac
    echo $! >"$FSLAB_RUN/server.pid"
    echo "$kind" >"$FSLAB_RUN/server.kind"
    lab_wait_port "$FSLAB_S" "$FSLAB_SERVER4" 21 && lab_wait_port "$FSLAB_S" "$FSLAB_SERVER6" 21
}

lab_server_stop() {
    local pid
    [ -f "$FSLAB_RUN/server.pid" ] || return 0
    pid=$(cat "$FSLAB_RUN/server.pid")
    rm -f "$FSLAB_RUN/server.pid" "$FSLAB_RUN/server.kind"
    kill "$pid" 2>/dev/null || return 0
    local _
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    kill -9 "$pid" 2>/dev/null
    # Session children of the server (vsftpd, proftpd fork per client) that
    # outlived their parent: everything left in the server namespace is ours.
    lab_ns_kill "$FSLAB_S" KILL
}

# Wait (up to 5 s) until something listens on ADDR:PORT inside namespace NS.
lab_wait_port() {
    local ns=$1 addr=$2 port=$3 _
    for _ in $(seq 100); do
        if ip netns exec "$ns" python3 -c '
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=0.5)
s.recv(1)
' "$addr" "$port" 2>/dev/null; then
            return 0
        fi
        sleep 0.05
    done
    echo "lab: nothing listens on [$addr]:$port in $ns" >&2
    return 1
}

# ---------------------------------------------------------------- faults and captures
#
# The fidelity harness (test_fidelity.py) runs FTP through a faulty network,
# captures on the firewall and compares what the daemon reassembles from the
# capture with what the server logged.  It needs servers that log the
# protocol, client addresses of their own, packet loss, reordering and
# duplication, and a capture.

# The servers' protocol log (vsftpd's log_ftp_protocol, pyftpdlib's debug log).
FSLAB_PROTOCOL_LOG=$FSLAB_RUN/protocol.log
# NFQUEUE number of the user-space impairer (impair.py).
FSLAB_IMPAIR_QUEUE=7
FSLAB_LAB_DIR=$(dirname "${BASH_SOURCE[0]}")

lab_vsftpd_conf_logged() {
    lab_vsftpd_conf
    # Later lines win: every command and reply, to a file of its own.
    cat <<EOF
xferlog_enable=YES
xferlog_std_format=NO
log_ftp_protocol=YES
vsftpd_log_file=$FSLAB_PROTOCOL_LOG
EOF
}

# Like lab_server_start, with the protocol logged to $FSLAB_PROTOCOL_LOG
# (emptied first): lab_server_start_logged vsftpd|pyftpdlib
lab_server_start_logged() {
    local kind=$1
    lab_server_stop
    lab_files
    : >"$FSLAB_PROTOCOL_LOG"
    case $kind in
    vsftpd)
        mkdir -p "$FSLAB_RUN/vsftpd-empty"
        lab_vsftpd_conf_logged >"$FSLAB_RUN/vsftpd-logged.conf"
        ip netns exec "$FSLAB_S" vsftpd "$FSLAB_RUN/vsftpd-logged.conf" \
            </dev/null >>"$FSLAB_RUN/server.log" 2>&1 &
        ;;
    pyftpdlib)
        # -D logs each command (`<- `) and reply (`-> `) with the client's
        # address and port.
        ip netns exec "$FSLAB_S" python3 -m pyftpdlib -i :: -p 21 -d "$FSLAB_PUB" \
            -r 50000-50999 -D </dev/null >>"$FSLAB_PROTOCOL_LOG" 2>&1 &
        ;;
    *)
        echo "lab_server_start_logged: no protocol log for $kind" >&2
        return 1
        ;;
    esac
    echo $! >"$FSLAB_RUN/server.pid"
    echo "$kind-logged" >"$FSLAB_RUN/server.kind"
    lab_wait_port "$FSLAB_S" "$FSLAB_SERVER4" 21
}

# lab_client_addrs N: give the client 192.0.2.10 .. 192.0.2.(9+N) besides
# 192.0.2.2, so that concurrent clients can be told apart by address alone.
lab_client_addrs() {
    local i
    for i in $(seq 10 $((9 + $1))); do
        ip -n "$FSLAB_C" addr replace "192.0.2.$i/24" dev eth0 || return 1
    done
}

# The ends of the firewall's two links, as "namespace interface".
lab_link_ends() {
    printf '%s\n' "$FSLAB_C eth0" "$FSLAB_FW $FSLAB_FW_CLIENT_IF" \
        "$FSLAB_FW $FSLAB_FW_SERVER_IF" "$FSLAB_S eth0"
}

# True if the kernel has netem (and FSLAB_NO_NETEM is not set).
lab_has_netem() {
    [ -z "${FSLAB_NO_NETEM:-}" ] || return 1
    tc -n "$FSLAB_C" qdisc add dev eth0 root netem delay 0ms 2>/dev/null || return 1
    tc -n "$FSLAB_C" qdisc del dev eth0 root 2>/dev/null
    return 0
}

# Where the user-space impairer hooks in when the kernel has no netem: the
# client's output and the firewall's forward path, FTP control traffic only.
# One rule a line: the namespace, then the rule's iptables arguments in
# table mangle.
lab_impair_rules() {
    local q="-j NFQUEUE --queue-num $FSLAB_IMPAIR_QUEUE --queue-bypass"
    printf '%s\n' "$FSLAB_C OUTPUT -p tcp --dport 21 $q" \
        "$FSLAB_FW FORWARD -p tcp --dport 21 $q" \
        "$FSLAB_FW FORWARD -p tcp --sport 21 $q"
}

# lab_netem_set LOSS DUP REORDER: lose, duplicate and reorder that many
# percent of the packets on both of the firewall's links, in both
# directions.  With the kernel's netem: a qdisc on each of the four link
# ends (reordered packets skip the 5 ms delay the others get).  Without it:
# impair.py on an NFQUEUE in the client namespace (before the capture) and
# in the firewall's forward path (after the capture towards the server,
# before it towards the client), for port 21 only.  Prints which it used.
lab_netem_set() {
    local loss=$1 dup=$2 reorder=$3 ns dev rest t
    lab_netem_clear >/dev/null
    if lab_has_netem; then
        while read -r ns dev; do
            tc -n "$ns" qdisc add dev "$dev" root netem loss "$loss%" duplicate "$dup%" \
                delay 5ms reorder "$reorder%" || return 1
        done < <(lab_link_ends)
        echo netem
        return 0
    fi
    for ns in "$FSLAB_C" "$FSLAB_FW"; do
        ip netns exec "$ns" python3 "$FSLAB_LAB_DIR/impair.py" \
            "$FSLAB_IMPAIR_QUEUE" "$loss" "$dup" "$reorder" \
            </dev/null >"$FSLAB_RUN/impair-$ns.log" 2>&1 &
        echo $! >"$FSLAB_RUN/impair-$ns.pid"
    done
    for ns in "$FSLAB_C" "$FSLAB_FW"; do
        for t in $(seq 100); do
            grep -q ready "$FSLAB_RUN/impair-$ns.log" 2>/dev/null && break
            if [ "$t" = 100 ]; then
                cat "$FSLAB_RUN/impair-$ns.log" >&2
                return 1
            fi
            sleep 0.05
        done
    done
    while read -r ns rest; do
        # shellcheck disable=SC2086
        ip netns exec "$ns" iptables-nft -t mangle -A $rest || return 1
        # shellcheck disable=SC2086
        ip netns exec "$ns" ip6tables-nft -A $rest || return 1
    done < <(lab_impair_rules)
    echo impair
}

# Undo lab_netem_set; prints the impairers' counters, if any ran.  Idempotent.
lab_netem_clear() {
    local ns dev rest pid
    while read -r ns dev; do
        lab_ns_exists "$ns" && tc -n "$ns" qdisc del dev "$dev" root 2>/dev/null
    done < <(lab_link_ends)
    while read -r ns rest; do
        lab_ns_exists "$ns" || continue
        # shellcheck disable=SC2086
        while ip netns exec "$ns" iptables-nft -t mangle -D $rest 2>/dev/null; do :; done
        # shellcheck disable=SC2086
        while ip netns exec "$ns" ip6tables-nft -D $rest 2>/dev/null; do :; done
    done < <(lab_impair_rules)
    for ns in "$FSLAB_C" "$FSLAB_FW"; do
        [ -f "$FSLAB_RUN/impair-$ns.pid" ] || continue
        pid=$(cat "$FSLAB_RUN/impair-$ns.pid")
        rm -f "$FSLAB_RUN/impair-$ns.pid"
        if kill "$pid" 2>/dev/null; then
            while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
        fi
        grep 'impair: packets' "$FSLAB_RUN/impair-$ns.log" | sed "s/^/$ns /"
    done
    return 0
}

# lab_capture_start FILE [IFACE [FILTER]]: tcpdump in the firewall namespace
# (default: on the client-facing interface, FTP control traffic), writing
# each packet to FILE as it comes; returns once it listens.
lab_capture_start() {
    local file=$1 iface=${2:-$FSLAB_FW_CLIENT_IF} filter=${3:-tcp port 21} t
    lab_capture_stop >/dev/null
    # --immediate-mode: no packet waits in a kernel buffer block, where
    # stopping would lose it.
    ip netns exec "$FSLAB_FW" tcpdump -i "$iface" -s 0 -B 32768 -U --immediate-mode -Z root -w "$file" "$filter" \
        </dev/null >"$FSLAB_RUN/capture.log" 2>&1 &
    echo $! >"$FSLAB_RUN/capture.pid"
    for t in $(seq 100); do
        grep -q listening "$FSLAB_RUN/capture.log" && return 0
        [ "$t" = 100 ] || sleep 0.05
    done
    cat "$FSLAB_RUN/capture.log" >&2
    return 1
}

# Stop the capture; prints tcpdump's counters (captured, dropped by kernel).
lab_capture_stop() {
    local pid
    [ -f "$FSLAB_RUN/capture.pid" ] || return 0
    pid=$(cat "$FSLAB_RUN/capture.pid")
    rm -f "$FSLAB_RUN/capture.pid"
    if kill -INT "$pid" 2>/dev/null; then
        while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    fi
    grep -E 'captured|dropped' "$FSLAB_RUN/capture.log"
    return 0
}

lab_usage() {
    cat >&2 <<EOF
usage: lab.sh up [--helper|--open] [--nat] [--nfqueue] [--nflog]
                                          create the lab (default mode: sesame sets only)
       lab.sh mode [--helper|--open|--sesame] [--nat] [--nfqueue] [--nflog]
                                          reload the firewall ruleset
       lab.sh server vsftpd|proftpd|pyftpdlib|stop
       lab.sh rules [--helper|--open] [--nat]  print the ruleset
       lab.sh dropped | elements | status
       lab.sh down
EOF
    return 1
}

lab_main() {
    local cmd=${1:-}
    shift || true
    case $cmd in
    up) lab_up "$@" ;;
    down) lab_down ;;
    mode) lab_fw_load "$@" ;;
    rules) lab_fw_rules "$@" ;;
    server) if [ "${1:-}" = stop ]; then lab_server_stop; else lab_server_start "$@"; fi ;;
    dropped) lab_dropped_syns ;;
    elements) lab_elements ;;
    status)
        ip netns list | grep "^$FSLAB-" || echo "lab is down"
        lab_exists && ip netns exec "$FSLAB_FW" nft list ruleset
        ;;
    *) lab_usage ;;
    esac
}

# Run as a script (not sourced): `lab_script_main NAME MAIN ARGS...` runs
# MAIN ARGS... with unset variables as errors, and only as root.
lab_script_main() {
    local name=$1 main=$2
    shift 2
    set -u
    if [ "$(id -u)" != 0 ]; then
        echo "$name: needs root (network namespaces)" >&2
        exit 1
    fi
    "$main" "$@"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    lab_script_main lab.sh lab_main "$@"
fi

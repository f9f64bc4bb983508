#!/usr/bin/env bash
# The high-availability variant of the network lab: two firewalls in
# parallel between client and server, their connection-tracking tables kept
# in sync by conntrackd over a dedicated link.
#
#                        fw1 ($FSLAB-fw1)
#                   to-c 192.0.2.1        to-s 198.51.100.1
#                        2001:db8:1::1         2001:db8:2::1
#                   sync 203.0.113.1
#   client ($FSLAB-c)     |                             server ($FSLAB-s)
#   br0 192.0.2.2   ------+                      +----- br0 198.51.100.2
#       2001:db8:1::2     |  (sync link, UDP)    |          2001:db8:2::2
#   ports eth1, eth2 -----+                      +----- ports eth1, eth2
#                   sync 203.0.113.2
#                   to-c 192.0.2.3        to-s 198.51.100.3
#                        2001:db8:1::3         2001:db8:2::3
#                        fw2 ($FSLAB-fw2)
#
# Client and server each hold a bridge br0 whose ports eth1 and eth2 are the
# peers of fw1's and fw2's to-c (client side) or to-s (server side): both
# firewalls sit on the same two segments, as a firewall pair does on its LAN
# switches.  Client and server route through one firewall at a time (their
# default routes); `ha_move` points both at the other one and can take the
# old one's links down, which is what a failover does to the traffic.
#
# Both firewalls load lab.sh's ruleset (sesame mode by default: forward
# policy drop, port 21 accepted, sets ftpsesame4/ftpsesame6, counter
# dropped_syn) and run conntrackd in FTFW mode over UDP on the link `sync`:
# each one sends the changes of its own conntrack table to the other, which
# keeps them in its external cache; a takeover commits that cache into the
# kernel table (`conntrackd -c`, what keepalived's primary-backup.sh does on
# becoming primary, see ha_takeover), and `ha_move` does this before moving
# the routes.
#
# Both firewalls run with
#   net.netfilter.nf_conntrack_tcp_loose=0
#       the kernel never creates an entry from a mid-stream TCP segment (the
#       default 1 would: a moved connection would then pass fw2 as `ct state
#       new` through the port-21 rule without any sync, and the lab would
#       prove nothing about conntrackd).  With 0, a segment of a connection
#       fw2 has no entry for is invalid and dropped by the policy: only the
#       entry conntrackd synced and committed carries the connection;
#   net.netfilter.nf_conntrack_tcp_be_liberal=0 (the default)
#       window tracking stays on for the firewalls' own connections.
#       Entries that conntrackd commits carry the per-entry "be liberal"
#       flag (conntrackd's TCPWindowTracking is off by default), so the
#       first segments after a takeover are not judged against windows fw2
#       never saw; no global relaxation is needed.
# The kernel FTP helper is not used by the sesame ruleset.
#
# Use as a CLI (`ha.sh up`, `ha.sh move fw2 [--down]`, see usage below) or
# source it and call the ha_* functions (lab.sh's lab_* functions come
# along: lab_server_start, lab_files... work unchanged, since client and
# server namespaces have lab.sh's names).  NAT (`--nat`) is refused: the two
# firewalls masquerade to different addresses, so a NATed connection cannot
# move.  Traffic never leaves the namespaces; conntrackd's files (config,
# control socket, lock, log) live under $FSLAB_DIR/run-$FSLAB.

HA_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lab.sh source-path=SCRIPTDIR
. "$HA_HERE/lab.sh"

HA_FW1=$FSLAB-fw1
HA_FW2=$FSLAB-fw2
HA_SYNC_IF=sync
HA_SYNC_PORT=3780

# ha_ns NAME: the namespace of firewall NAME (fw1 or fw2).
ha_ns() {
    case $1 in
    fw1) echo "$HA_FW1" ;;
    fw2) echo "$HA_FW2" ;;
    *) echo "ha: unknown firewall $1 (fw1 or fw2)" >&2; return 1 ;;
    esac
}

# ha_other NAME: the other firewall.
ha_other() {
    case $1 in
    fw1) echo fw2 ;;
    fw2) echo fw1 ;;
    *) echo "ha: unknown firewall $1 (fw1 or fw2)" >&2; return 1 ;;
    esac
}

# ha_addr NAME KEY: one of a firewall's addresses; KEY is c4, c6 (client
# side), s4, s6 (server side) or sync.
ha_addr() {
    local n
    case $1 in fw1) n=1 ;; fw2) n=3 ;; *) echo "ha: unknown firewall $1" >&2; return 1 ;; esac
    case $2 in
    c4) echo "192.0.2.$n" ;;
    c6) echo "2001:db8:1::$n" ;;
    s4) echo "198.51.100.$n" ;;
    s6) echo "2001:db8:2::$n" ;;
    sync) [ "$1" = fw1 ] && echo 203.0.113.1 || echo 203.0.113.2 ;;
    *) echo "ha: unknown address key $2" >&2; return 1 ;;
    esac
}

ha_exists() {
    lab_ns_exists "$HA_FW1" && lab_ns_exists "$HA_FW2"
}

# ha_up [--sesame|--helper|--open]: build the lab, load the ruleset on both
# firewalls, start conntrackd on both, route through fw1.
ha_up() {
    local a
    for a in "$@"; do
        [ "$a" = --nat ] && { echo "ha_up: --nat is not supported (see ha.sh)" >&2; return 1; }
    done
    ha_down
    local ns fw port
    for ns in "$FSLAB_C" "$HA_FW1" "$HA_FW2" "$FSLAB_S"; do
        ip netns add "$ns" || return 1
        ip -n "$ns" link set lo up
        # Addresses must be usable at once (no duplicate address
        # detection) and IPv6 ones must survive a link taken down.
        ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 \
            net.ipv6.conf.default.accept_dad=0 net.ipv6.conf.all.keep_addr_on_down=1 \
            net.ipv6.conf.default.keep_addr_on_down=1
    done
    for ns in "$FSLAB_C" "$FSLAB_S"; do
        ip -n "$ns" link add br0 type bridge stp_state 0 forward_delay 0
    done
    for fw in fw1 fw2; do
        ns=$(ha_ns $fw)
        port=eth${fw#fw}
        # Pairs are created in the firewall and the peer moved straight into
        # its host, as in lab.sh: nothing appears in the root namespace.
        ip -n "$ns" link add "$FSLAB_FW_CLIENT_IF" type veth peer name "$port" netns "$FSLAB_C"
        ip -n "$ns" link add "$FSLAB_FW_SERVER_IF" type veth peer name "$port" netns "$FSLAB_S"
        ip -n "$FSLAB_C" link set "$port" master br0 up
        ip -n "$FSLAB_S" link set "$port" master br0 up
        ip -n "$ns" addr add "$(ha_addr $fw c4)/24" dev "$FSLAB_FW_CLIENT_IF"
        ip -n "$ns" addr add "$(ha_addr $fw c6)/64" dev "$FSLAB_FW_CLIENT_IF" nodad
        ip -n "$ns" addr add "$(ha_addr $fw s4)/24" dev "$FSLAB_FW_SERVER_IF"
        ip -n "$ns" addr add "$(ha_addr $fw s6)/64" dev "$FSLAB_FW_SERVER_IF" nodad
        ip -n "$ns" link set "$FSLAB_FW_CLIENT_IF" up
        ip -n "$ns" link set "$FSLAB_FW_SERVER_IF" up
        ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
    done
    ip -n "$HA_FW1" link add "$HA_SYNC_IF" type veth peer name "$HA_SYNC_IF" netns "$HA_FW2"
    for fw in fw1 fw2; do
        ns=$(ha_ns $fw)
        ip -n "$ns" addr add "$(ha_addr $fw sync)/24" dev "$HA_SYNC_IF"
        ip -n "$ns" link set "$HA_SYNC_IF" up
    done
    ip -n "$FSLAB_C" addr add 192.0.2.2/24 dev br0
    ip -n "$FSLAB_C" addr add 2001:db8:1::2/64 dev br0 nodad
    ip -n "$FSLAB_S" addr add 198.51.100.2/24 dev br0
    ip -n "$FSLAB_S" addr add 2001:db8:2::2/64 dev br0 nodad
    ip -n "$FSLAB_C" link set br0 up
    ip -n "$FSLAB_S" link set br0 up

    ha_fw_load "$@" || return 1
    lab_files
    [ -d /var/empty ] || mkdir -m 755 /var/empty
    ha_conntrackd_start fw1 || return 1
    ha_conntrackd_start fw2 || return 1
    ha_route fw1
}

# Kill what runs in the lab's namespaces, delete them (and a plain lab of the
# same prefix).  Quiet and idempotent.
ha_down() {
    local ns
    for ns in "$HA_FW1" "$HA_FW2"; do
        lab_ns_exists "$ns" && lab_ns_kill "$ns" TERM
    done
    lab_down
    for ns in "$HA_FW1" "$HA_FW2"; do
        lab_ns_exists "$ns" || continue
        lab_ns_kill "$ns" KILL
        ip netns del "$ns"
    done
    rm -f "$FSLAB_RUN"/conntrackd-fw?.ctl "$FSLAB_RUN"/conntrackd-fw?.lock \
        "$FSLAB_RUN"/conntrackd-fw?.pid
    return 0
}

# ha_fw_load [--sesame|--helper|--open]: the same ruleset on both firewalls
# (conntrack emptied), then the conntrack sysctls described above; running
# conntrackds are restarted with empty caches.
ha_fw_load() {
    local fw ns
    for fw in fw1 fw2; do
        ns=$(ha_ns $fw)
        FSLAB_FW=$ns lab_fw_load "$@" || return 1
        # The sysctls exist once the ruleset made conntrack live in the namespace.
        ip netns exec "$ns" sysctl -qw net.netfilter.nf_conntrack_tcp_loose=0 \
            net.netfilter.nf_conntrack_tcp_be_liberal=0 || return 1
    done
    # Empty caches: restart running conntrackds (a flush is not reliable,
    # see ha_takeover).
    for fw in fw1 fw2; do
        if [ -f "$FSLAB_RUN/conntrackd-$fw.pid" ]; then
            ha_conntrackd_start "$fw" || return 1
        fi
    done
    return 0
}

# ha_reset [--sesame|--helper|--open]: back to the state ha_up leaves: all
# links up, traffic through fw1, rulesets reloaded, tables and caches empty.
ha_reset() {
    ha_links fw1 up && ha_links fw2 up && ha_route fw1 && ha_fw_load "$@"
}

# ha_conntrackd_conf NAME: conntrackd.conf for firewall NAME.
ha_conntrackd_conf() {
    local fw=$1 other
    other=$(ha_other "$fw") || return 1
    cat <<EOF
Sync {
	Mode FTFW {
		ResendQueueSize 131072
		PurgeTimeout 60
		ACKWindowSize 300
		StartupResync on
	}
	UDP {
		IPv4_address $(ha_addr "$fw" sync)
		IPv4_Destination_Address $(ha_addr "$other" sync)
		Port $HA_SYNC_PORT
		Interface $HA_SYNC_IF
		SndSocketBuffer 1249280
		RcvSocketBuffer 1249280
		Checksum on
	}
}
General {
	Systemd no
	HashSize 8192
	HashLimit 65536
	LogFile $FSLAB_RUN/conntrackd-$fw.log
	Syslog off
	LockFile $FSLAB_RUN/conntrackd-$fw.lock
	UNIX {
		Path $FSLAB_RUN/conntrackd-$fw.ctl
	}
	NetlinkBufferSize 2097152
	NetlinkBufferSizeMaxGrowth 8388608
	Filter From Userspace {
		Protocol Accept {
			TCP
		}
		Address Ignore {
			IPv4_address 127.0.0.1
			IPv6_address ::1
			IPv4_address $(ha_addr fw1 c4)
			IPv4_address $(ha_addr fw1 s4)
			IPv4_address $(ha_addr fw1 sync)
			IPv4_address $(ha_addr fw2 c4)
			IPv4_address $(ha_addr fw2 s4)
			IPv4_address $(ha_addr fw2 sync)
			IPv6_address $(ha_addr fw1 c6)
			IPv6_address $(ha_addr fw1 s6)
			IPv6_address $(ha_addr fw2 c6)
			IPv6_address $(ha_addr fw2 s6)
		}
	}
}
EOF
}

# ha_ctd NAME ARGS...: run a conntrackd client command against NAME's daemon.
ha_ctd() {
    local fw=$1 ns
    shift
    ns=$(ha_ns "$fw") || return 1
    ip netns exec "$ns" conntrackd -C "$FSLAB_RUN/conntrackd-$fw.conf" "$@"
}

# ha_conntrackd_start NAME: (re)start conntrackd on firewall NAME, with
# empty caches (in the foreground of a background job, pid in
# conntrackd-NAME.pid) and wait until it answers on its control socket.
ha_conntrackd_start() {
    local fw=$1 ns _
    ns=$(ha_ns "$fw") || return 1
    ha_conntrackd_stop "$fw" --kill
    mkdir -p "$FSLAB_RUN"
    ha_conntrackd_conf "$fw" >"$FSLAB_RUN/conntrackd-$fw.conf"
    rm -f "$FSLAB_RUN/conntrackd-$fw.lock" "$FSLAB_RUN/conntrackd-$fw.ctl"
    ip netns exec "$ns" conntrackd -C "$FSLAB_RUN/conntrackd-$fw.conf" \
        </dev/null >>"$FSLAB_RUN/conntrackd-$fw.out" 2>&1 &
    echo $! >"$FSLAB_RUN/conntrackd-$fw.pid"
    for _ in $(seq 100); do
        ha_ctd "$fw" -s >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "ha: conntrackd on $fw does not answer; its log:" >&2
    tail -5 "$FSLAB_RUN/conntrackd-$fw.log" "$FSLAB_RUN/conntrackd-$fw.out" >&2
    return 1
}

# ha_running PID: the process exists and is not a zombie.
ha_running() {
    local st
    st=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null)
    [ -n "$st" ] && [ "$st" != Z ]
}

# ha_conntrackd_stop NAME [--kill]: SIGTERM or, with --kill, SIGKILL.
ha_conntrackd_stop() {
    local fw=$1 sig=TERM pid _
    [ "${2:-}" = --kill ] && sig=KILL
    [ -f "$FSLAB_RUN/conntrackd-$fw.pid" ] || return 0
    pid=$(cat "$FSLAB_RUN/conntrackd-$fw.pid")
    rm -f "$FSLAB_RUN/conntrackd-$fw.pid"
    kill -s $sig "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do
        # Gone, or a zombie waiting for a reaper: it no longer runs.
        ha_running "$pid" || return 0
        sleep 0.03
    done
    kill -9 "$pid" 2>/dev/null
    return 0
}

# ha_commit NAME: commit NAME's external cache (the other firewall's
# connections) into NAME's kernel table, as a takeover does.
ha_commit() {
    ha_ctd "$1" -c >/dev/null
}

# ha_takeover NAME: what a keepalived notify script does on NAME becoming
# primary (conntrackd's primary-backup.sh): commit the external cache into
# the kernel table, reload the internal cache from the kernel and send it
# all to the peer, so that the peer's external cache holds the connections
# NAME now carries (a commit alone creates no event the peer would hear of;
# without this, a later move back would find the peer without them).
# A commit over an entry NAME still holds from the last time it carried the
# connection (its windows now stale: strict tracking drops the returning
# segments) makes that entry pass the connection again; seen here on moving
# back to fw1.  The script's cache flush is left out:
# conntrackd 1.4.7 refuses to flush the external cache once a commit was
# requested ("ignoring flush command, commit still in progress", for good).
ha_takeover() {
    ha_commit "$1" && ha_ctd "$1" -R >/dev/null && ha_ctd "$1" -B >/dev/null
}

# ha_route NAME: client and server route through firewall NAME.
ha_route() {
    local fw=$1
    ha_ns "$fw" >/dev/null || return 1
    ip -n "$FSLAB_C" route replace default via "$(ha_addr "$fw" c4)" &&
        ip -n "$FSLAB_C" -6 route replace default via "$(ha_addr "$fw" c6)" &&
        ip -n "$FSLAB_S" route replace default via "$(ha_addr "$fw" s4)" &&
        ip -n "$FSLAB_S" -6 route replace default via "$(ha_addr "$fw" s6)"
}

# ha_links NAME up|down: firewall NAME's links to client and server.
# Bringing them up waits (up to 3 s) until both are operationally up: the
# kernel turns a carrier on with a delay of up to a second, during which the
# interface queues nothing out (IPv6 neighbour discovery then stalls).
ha_links() {
    local ns _
    ns=$(ha_ns "$1") || return 1
    ip -n "$ns" link set "$FSLAB_FW_CLIENT_IF" "$2" &&
        ip -n "$ns" link set "$FSLAB_FW_SERVER_IF" "$2" || return 1
    [ "$2" = up ] || return 0
    for _ in $(seq 150); do
        [ "$(ip -n "$ns" -br link show dev "$FSLAB_FW_CLIENT_IF" | awk '{print $2}')" = UP ] &&
            [ "$(ip -n "$ns" -br link show dev "$FSLAB_FW_SERVER_IF" | awk '{print $2}')" = UP ] &&
            return 0
        sleep 0.02
    done
    echo "ha: links of $1 not up after 3 s" >&2
    return 1
}

# ha_move NAME [--down] [--no-commit]: fail over to firewall NAME: unless
# --no-commit (or NAME already carries the traffic), take over (ha_takeover);
# bring its links up, route client and server through it; with --down also
# take the other firewall's links to client and server down (the sync link
# stays).
ha_move() {
    local fw=$1 down=0 commit=1 a
    ha_ns "$fw" >/dev/null || return 1
    shift
    for a in "$@"; do
        case $a in
        --down) down=1 ;;
        --no-commit) commit=0 ;;
        *) echo "ha_move: unknown option $a" >&2; return 1 ;;
        esac
    done
    if [ $commit = 1 ] && [ "$(ha_active)" != "$fw" ]; then
        ha_takeover "$fw" || return 1
    fi
    ha_links "$fw" up || return 1
    ha_route "$fw" || return 1
    if [ $down = 1 ]; then ha_links "$(ha_other "$fw")" down || return 1; fi
    return 0
}

# ha_active: the firewall the client's IPv4 default route points at.
ha_active() {
    case $(ip -n "$FSLAB_C" route show default) in
    *"via $(ha_addr fw1 c4) "*) echo fw1 ;;
    *"via $(ha_addr fw2 c4) "*) echo fw2 ;;
    *) echo none ;;
    esac
}

# ha_conntrack NAME [conntrack filter args...]: NAME's kernel table, TCP only.
ha_conntrack() {
    local ns
    ns=$(ha_ns "$1") || return 1
    shift
    ip netns exec "$ns" conntrack -L -p tcp "$@" 2>/dev/null
}

# ha_elements NAME: elements of both sets on firewall NAME, one JSON per line.
ha_elements() {
    local ns
    ns=$(ha_ns "$1") || return 1
    FSLAB_FW=$ns lab_elements
}

# ha_dropped_syns NAME: data SYNs dropped so far on firewall NAME.
ha_dropped_syns() {
    local ns
    ns=$(ha_ns "$1") || return 1
    FSLAB_FW=$ns lab_dropped_syns
}

ha_usage() {
    cat >&2 <<EOF
usage: ha.sh up [--helper|--open]              create the HA lab (default mode: sesame)
       ha.sh mode [--helper|--open|--sesame]   reload both firewalls' rulesets
       ha.sh reset [--helper|--open|--sesame]  links up, through fw1, rulesets reloaded
       ha.sh server vsftpd|proftpd|pyftpdlib|stop
       ha.sh move fw1|fw2 [--down] [--no-commit]   fail over to that firewall
       ha.sh commit fw1|fw2                    commit its external cache to its kernel
       ha.sh takeover fw1|fw2                  commit, resync from the kernel, bulk send
       ha.sh conntrack|cache|elements|dropped fw1|fw2
       ha.sh active | status | down
EOF
    return 1
}

ha_main() {
    local cmd=${1:-}
    shift || true
    case $cmd in
    up) ha_up "$@" ;;
    down) ha_down ;;
    mode) ha_fw_load "$@" ;;
    reset) ha_reset "$@" ;;
    server) if [ "${1:-}" = stop ]; then lab_server_stop; else lab_server_start "$@"; fi ;;
    move) ha_move "$@" ;;
    commit) ha_commit "$@" ;;
    takeover) ha_takeover "$@" ;;
    conntrack) ha_conntrack "$@" ;;
    cache) ha_ctd "${1:-}" -e ;;
    elements) ha_elements "$@" ;;
    dropped) ha_dropped_syns "$@" ;;
    active) ha_active ;;
    status)
        ip netns list | grep "^$FSLAB-" || echo "lab is down"
        ha_exists && echo "active: $(ha_active)" && ha_ctd fw1 -s && ha_ctd fw2 -s
        ;;
    *) ha_usage ;;
    esac
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    lab_script_main ha.sh ha_main "$@"
fi

#!/usr/bin/env python3
"""The race benchmark: can the firewall open the hole before the client's data SYN?

N back-to-back passive transfers of a small file on ONE control connection
(ftplib, PASV, RETR), through the lab firewall, in these modes in the same run:

    daemon   ftpsesame fills the nftables sets, capturing on an interface
             (skipped, like the next two, if the binary is missing)
    nfqueue  the same, inline: control packets held in NFQUEUE 0 until the
             daemon has committed their hole (`-i nfqueue:0`)
    nflog    the same, from NFLOG group 1 after the filter (`-i nflog:1`)
    helper   the kernel FTP helper, the performance peer
    open     an open passive port range: the floor, no tracking at all

For each mode it reports the data SYNs the firewall dropped (named counter
`dropped_syn`: every dropped SYN is a lost race costing a 1 s retransmit),
total time, and ratios to the kernel helper; in daemon mode also the daemon's
commit latency from its `stats:` log line (asked for with SIGUSR1, else read at
exit).  Bounded: N transfers or --time-limit seconds per mode, whichever first.
`--load K` runs K busy loops in the firewall namespace during each mode.
`--latency` captures the control packets on both firewall interfaces and
reports how long each spent crossing the firewall (in to out), p50/p99: for
nfqueue mode that is the verdict latency, the time a packet is held.

    sudo tests/lab/race.py [-n 1000] [--modes daemon,nfqueue,helper,open] [--load 2]
                           [--latency] [--time-limit 300]

This is a measurement, not a test: it prints figures and exits 0 unless the lab
itself fails.
"""

import argparse
import ftplib
import json
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def inner(host, n, file, limit, timeout):
    """Runs inside the client namespace: the transfer loop on one connection."""
    ftp = ftplib.FTP(timeout=timeout)
    ftp.connect(host, 21)
    ftp.login()
    ftp.voidcmd("TYPE I")
    ftp.set_pasv(True)  # IPv4: ftplib sends PASV
    done = failures = 0
    slowest = 0.0
    t0 = time.monotonic()
    while done + failures < n and time.monotonic() - t0 < limit:
        t = time.monotonic()
        try:
            conn = ftp.transfercmd("RETR " + file)
            with conn:
                while conn.recv(65536):
                    pass
            ftp.voidresp()
            done += 1
        except (OSError, ftplib.Error) as e:
            failures += 1
            print(f"race: transfer {done + failures}: {e}", file=sys.stderr)
            # A failed transfer may leave a reply pending; start a new session.
            ftp.close()
            ftp = ftplib.FTP(timeout=timeout)
            ftp.connect(host, 21)
            ftp.login()
            ftp.voidcmd("TYPE I")
        slowest = max(slowest, time.monotonic() - t)
    total = time.monotonic() - t0
    try:
        ftp.quit()
    except (OSError, ftplib.Error):
        pass
    print(json.dumps({"done": done, "failures": failures, "seconds": total, "slowest": slowest}))


LATENCY = re.compile(r"commit latency p50 ([\d.]+)\s*(ns|us|µs|ms|s) p99 ([\d.]+)\s*(ns|us|µs|ms|s)")


def stats_line(text):
    lines = [line for line in text.splitlines() if "stats:" in line]
    return lines[-1] if lines else None


DAEMON_MODES = {"daemon": None, "nfqueue": "nfqueue", "nflog": "nflog"}


def read_pcap(path):
    """(ts_ns, outgoing, key) per packet of a `tcpdump -i any` capture (Linux
    cooked v1 or v2, nanosecond timestamps); key identifies a TCP segment."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return []
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xA1B23C4D, 0xA1B2C3D4) else ">"
    nano = struct.unpack(endian + "I", data[:4])[0] == 0xA1B23C4D
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    out, off = [], 24
    while off + 16 <= len(data):
        sec, frac, caplen, _ = struct.unpack(endian + "IIII", data[off:off + 16])
        pkt = data[off + 16:off + 16 + caplen]
        off += 16 + caplen
        if linktype == 113:  # LINUX_SLL
            pkttype, hdr = struct.unpack(">H", pkt[0:2])[0], 16
        elif linktype == 276:  # LINUX_SLL2
            pkttype, hdr = pkt[10], 20
        else:
            continue
        ip = pkt[hdr:]
        if not ip:
            continue
        if ip[0] >> 4 == 4:
            ihl = (ip[0] & 15) * 4
            addrs, tcp, plen = ip[12:20], ip[ihl:], struct.unpack(">H", ip[2:4])[0] - ihl
        elif ip[0] >> 4 == 6:
            addrs, tcp, plen = ip[8:40], ip[40:], struct.unpack(">H", ip[4:6])[0]
        else:
            continue
        if len(tcp) < 20:
            continue
        key = (addrs, tcp[0:4], tcp[4:12], tcp[13], plen)
        ts = sec * 1_000_000_000 + (frac if nano else frac * 1000)
        out.append((ts, pkttype == 4, key))  # 4: PACKET_OUTGOING
    return out


def crossing_times(path):
    """Microseconds each control packet spent in the firewall: from its
    arrival on one interface to its departure on the other."""
    arrived, times = {}, []
    for ts, outgoing, key in read_pcap(path):
        if not outgoing:
            arrived.setdefault(key, ts)
        elif key in arrived:
            times.append((ts - arrived.pop(key)) / 1000)
    return sorted(times)


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


class Capture:
    """tcpdump of the control packets on all firewall interfaces."""

    def __init__(self, labpy):
        fd, self.path = tempfile.mkstemp(prefix="race-", suffix=".pcap")
        os.close(fd)
        self.proc = subprocess.Popen(
            labpy.netns(labpy.NS_FW, "tcpdump", "-i", "any", "-n", "-U", "-s", "200",
                        "--time-stamp-precision=nano", "-w", self.path, "tcp port 21"),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.proc.stderr.readline()  # "listening on any ..."

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(10)
        times = crossing_times(self.path)
        os.unlink(self.path)
        return times


def run_mode(lab, labpy, mode, args):
    source = DAEMON_MODES.get(mode)
    lab.mode("sesame" if mode in DAEMON_MODES else mode, source=source)
    daemon = None
    if mode in DAEMON_MODES:
        # The level admins run it at (-D 5), on the source chosen.
        extra = ("-D", str(args.level)) + (("-R",) if args.realtime else ())
        daemon = labpy.Daemon(labpy.SOURCES[source] if source else args.interface, extra)
        if not daemon.wait_ready():
            daemon.stop()
            return {"mode": mode, "error": "daemon did not start: " + daemon.text()[-300:]}
    cmd = labpy.netns(labpy.NS_C, sys.executable, os.path.abspath(__file__), "--inner",
                      labpy.ADDR[4]["server"], str(args.n), args.file, str(args.time_limit),
                      str(args.timeout))
    capture = Capture(labpy) if args.latency else None
    with labpy.cpu_hogs(args.load):
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.time_limit + 120)
    res = {"mode": mode}
    if capture:
        res["crossing_us"] = capture.stop()
    try:
        res.update(json.loads(p.stdout.strip().splitlines()[-1]))
    except (IndexError, ValueError):
        res["error"] = "client: " + p.stderr[-300:]
    res["dropped_syns"] = lab.dropped_syns()
    if daemon:
        if daemon.catches(signal.SIGUSR1):
            daemon.signal(signal.SIGUSR1)
        end = time.monotonic() + 3
        while daemon.catches(signal.SIGUSR1) and stats_line(daemon.text()) is None and time.monotonic() < end:
            time.sleep(0.05)
        try:
            with open(f"/proc/{daemon.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            res["daemon_cpu_s"] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            res["daemon_cpu_s"] = None
        rc = daemon.stop()
        res["daemon_exit"] = rc
        res["stats"] = stats_line(daemon.text())
        res["elements_left"] = len(lab.elements())
    return res


def report(results):
    helper = next((r for r in results if r["mode"] == "helper" and "seconds" in r), None)
    print(f"{'mode':<8} {'done':>6} {'failed':>6} {'dropped SYNs':>13} {'total s':>9} "
          f"{'ms/transfer':>12} {'slowest ms':>11} {'vs helper':>10}")
    for r in results:
        if "seconds" not in r:
            print(f"{r['mode']:<8} {r.get('error', 'no result')}")
            continue
        per = 1000 * r["seconds"] / max(1, r["done"] + r["failures"])
        ratio = f"{r['seconds'] / helper['seconds']:.2f}x" if helper else "-"
        print(f"{r['mode']:<8} {r['done']:>6} {r['failures']:>6} {r['dropped_syns']:>13} "
              f"{r['seconds']:>9.2f} {per:>12.3f} {1000 * r['slowest']:>11.1f} {ratio:>10}")
    for r in results:
        times = r.get("crossing_us")
        if times:
            print(f"{r['mode']}: control packets crossing the firewall: {len(times)}, "
                  f"p50 {percentile(times, 0.5):.0f} us, p99 {percentile(times, 0.99):.0f} us, "
                  f"max {times[-1]:.0f} us")
    for r in results:
        if r["mode"] in DAEMON_MODES and "seconds" in r:
            m = LATENCY.search(r.get("stats") or "")
            latency = f"p50 {m.group(1)}{m.group(2)} p99 {m.group(3)}{m.group(4)}" if m else "not reported"
            print(f"{r['mode']}: commit latency {latency}; cpu {r.get('daemon_cpu_s')} s; exit {r['daemon_exit']}; "
                  f"elements left {r['elements_left']}; stats line: {r.get('stats')}")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--inner":
        host, n, file, limit, timeout = sys.argv[2:7]
        inner(host, int(n), file, float(limit), float(timeout))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1000, help="transfers per mode (default 1000)")
    ap.add_argument("--modes", default="daemon,helper,open",
                    help="comma-separated, from daemon,nfqueue,nflog,helper,open")
    ap.add_argument("--load", type=int, default=0, help="busy loops on the firewall during each mode")
    ap.add_argument("--latency", action="store_true",
                    help="capture control packets on the firewall: time spent crossing it")
    ap.add_argument("--server", default="vsftpd", choices=("vsftpd", "proftpd", "pyftpdlib"))
    ap.add_argument("--file", default="small.txt")
    ap.add_argument("--time-limit", type=float, default=300, help="seconds per mode (default 300)")
    ap.add_argument("--interface", default="to-c", help="daemon capture interface (to-c or to-s)")
    ap.add_argument("--realtime", action="store_true", help="run the daemon with -R (SCHED_FIFO)")
    ap.add_argument("--level", type=int, default=5, help="daemon -D level (default 5)")
    ap.add_argument("--timeout", type=float, default=10, help="socket timeout of the client")
    args = ap.parse_args()
    if not 1 <= args.n <= 100000:
        ap.error("-n must be within 1..100000")
    sys.path.insert(0, HERE)
    import labpy

    reason = labpy.missing_prerequisites()
    if reason:
        print("race.py: " + reason, file=sys.stderr)
        return 1
    modes = [m for m in args.modes.split(",") if m]
    if not os.access(labpy.daemon_bin(), os.X_OK):
        for m in [m for m in modes if m in DAEMON_MODES]:
            print(f"race.py: {labpy.daemon_bin()} missing: {m} mode skipped", file=sys.stderr)
            modes.remove(m)
    lab = labpy.Lab()
    results = []
    try:
        lab.up()
        lab.server(args.server)
        print(f"race: {args.n} passive transfers of {args.file} per mode on one control "
              f"connection, server {args.server}, modes {','.join(modes)}, "
              f"{args.load} busy loops", flush=True)
        for mode in modes:
            results.append(run_mode(lab, labpy, mode, args))
            print(f"race: {mode} done", flush=True)
    finally:
        lab.down()
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

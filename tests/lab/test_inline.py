"""Packet sources after the filter: the daemon fed by NFQUEUE (inline) and NFLOG.

The lab's firewall sends every control packet (TCP port 21, both directions,
IPv4 and IPv6) to NFQUEUE 0 with bypass (`lab.sh --nfqueue`) or logs it to
NFLOG group 1 (`--nflog`), after the forward filter.  In NFQUEUE mode the
daemon releases a packet only after the negotiation it carries is committed,
so a data SYN can never reach the firewall before its hole: the firewall's
dropped-data-SYN counter must stay 0, whatever the load.  That makes these
correctness tests, not timing tests.

  * nfqueue: vsftpd, proftpd and pyftpdlib against curl, lftp and ftplib, IPv4
    and IPv6, passive and active; passive through masquerade;
  * nfqueue: 1,000 passive transfers with two busy loops on the two CPUs: none
    fails, no data SYN dropped, nothing left held in the queue;
  * nfqueue: with the daemon stopped the full queue lets packets pass rather
    than drop them (fail-open), and every held packet is released on resume;
  * nfqueue: SIGKILL during a transfer: the control connection goes on (bypass),
    no packet stays held, data connections fail as without the daemon, and a
    restarted daemon binds the queue again and works;
  * an expression given with a queue or log source is not applied as a
    filter (a notice says so), but still names the control ports;
  * nflog: transfers through the daemon reading NFLOG.

Without root or a tool the tests skip, or FAIL when FTPSESAME_E2E=required.
"""

import os
import signal
import socket
import struct
import subprocess
import time

import pytest

import labpy
from labpy import ADDR, NS_C, SOURCES, Cell, Daemon, Lab

OK_TIMEOUT = 20.0
BLOCKED_TIMEOUT = 3.0
LOAD_TRANSFERS = 1000


# Grouped by server (a server switch costs a restart). IPv6 has only EPSV/EPRT.
CELLS = [
    Cell("vsftpd", 4, "pasv", "curl"),
    Cell("vsftpd", 4, "epsv", "curl"),
    Cell("vsftpd", 4, "port", "curl"),
    Cell("vsftpd", 4, "eprt", "curl"),
    Cell("vsftpd", 6, "epsv", "curl"),
    Cell("vsftpd", 6, "eprt", "curl"),
    Cell("vsftpd", 4, "eprt", "lftp"),
    Cell("proftpd", 4, "pasv", "lftp"),
    Cell("proftpd", 4, "port", "lftp"),
    Cell("proftpd", 6, "epsv", "lftp"),
    Cell("proftpd", 4, "epsv", "ftplib"),
    Cell("pyftpdlib", 4, "pasv", "ftplib"),
    Cell("pyftpdlib", 4, "port", "ftplib"),
    Cell("pyftpdlib", 6, "epsv", "ftplib"),
    Cell("pyftpdlib", 6, "eprt", "ftplib"),
]
NAT_CELLS = [Cell("vsftpd", 4, "pasv", "curl"), Cell("proftpd", 4, "epsv", "ftplib")]


@pytest.fixture(scope="module")
def lab():
    yield from labpy.lab_up(Lab, labpy.missing_inline_prerequisites(), labpy.missing_daemon_bin())


@pytest.fixture
def start_daemon(lab):
    """start_daemon(source, *extra) -> a ready Daemon reading SOURCES[source];
    stopped after the test."""
    yield from labpy.daemon_starter(lambda source, *extra: Daemon(SOURCES[source], extra))


def allowing(cell):
    c, s = ADDR[cell.family]["client"], ADDR[cell.family]["server"]
    return f"allowing {c} to {s} port" if cell.passive else f"allowing {s} to {c} port"


def daemon_transfers(lab, start_daemon, cell, source, nat=False):
    """The cell's transfer with the control packets fed to a daemon through
    `source` (through masquerade if `nat`): it succeeds and the daemon logs
    the hole.  Returns the daemon."""
    lab.mode("sesame", nat=nat, source=source)
    lab.server(cell.server)
    d = start_daemon(source)
    res = lab.transfer(cell.client, cell.family, cell.mode, timeout=OK_TIMEOUT)
    assert res.ok, f"{cell}{' through NAT' if nat else ''}: {res.detail}\n{d.text()}"
    assert allowing(cell) in d.text(), d.text()
    return d


def assert_nothing_held(lab):
    held = lab.queues()
    assert held.get(0, 0) == 0, f"packets still held in queue 0: {held}"


# ---------------------------------------------------------------- nfqueue


@pytest.mark.parametrize("cell", CELLS, ids=str)
def test_nfqueue_transfers(lab, start_daemon, cell):
    d = daemon_transfers(lab, start_daemon, cell, "nfqueue")
    assert lab.dropped_syns() == 0, "a data SYN beat its hole although the reply was held"
    assert lab.wait_elements(lambda e: e == []) == [], "elements left after the session"
    assert_nothing_held(lab)
    assert d.stop() == 0, d.text()
    assert "packets accepted in" in d.text(), d.text()


@pytest.mark.parametrize("cell", NAT_CELLS, ids=str)
def test_nfqueue_nat_passive(lab, start_daemon, cell):
    """Masquerade on to-s: the queue (mangle POSTROUTING, before source NAT)
    shows the client's real address, which the forward chain matches."""
    daemon_transfers(lab, start_daemon, cell, "nfqueue", nat=True)
    assert lab.dropped_syns() == 0
    assert lab.wait_elements(lambda e: e == []) == []


def test_nfqueue_under_cpu_load(lab, start_daemon):
    """1,000 passive transfers on one control connection while two busy loops
    compete for both CPUs: the hold makes the race impossible to lose."""
    lab.mode("sesame", source="nfqueue")
    lab.server("vsftpd")
    d = start_daemon("nfqueue")
    with labpy.cpu_hogs(2):
        r = lab.passive_loop(LOAD_TRANSFERS, limit=150)
    assert r["failures"] == 0, f"{r}\n{d.text()[-2000:]}"
    assert r["done"] == LOAD_TRANSFERS, f"only {r['done']} transfers in the time limit: {r}"
    assert lab.dropped_syns() == 0, f"data SYNs dropped under load: {lab.dropped_syns()}"
    assert_nothing_held(lab)
    assert d.stop() == 0
    log = d.text()
    assert log.count("allowing 192.0.2.2 to 198.51.100.2 port") == LOAD_TRANSFERS, log[-2000:]
    assert " 0 overruns" in log, log[-1000:]


SLOW_GET = r"""
import ftplib, hashlib, sys, time
ftp = ftplib.FTP(sys.argv[1], timeout=20)
ftp.login()
ftp.voidcmd("TYPE I")
conn = ftp.transfercmd("RETR big.bin")
h = hashlib.sha256()
while True:
    block = conn.recv(16384)
    if not block:
        break
    h.update(block)
    time.sleep(0.03)
conn.close()
ftp.voidresp()  # the 226 crosses the firewall after the kill
ftp.quit()
print(h.hexdigest())
"""


def test_nfqueue_daemon_killed_mid_transfer(lab, start_daemon):
    """SIGKILL while a download runs and another session holds a negotiated
    data connection: the kernel unbinds the queue, bypass lets the control
    connections finish, nothing stays held, new data connections fail as
    without the daemon, and a new daemon binds the queue again."""
    lab.mode("sesame", source="nfqueue")
    lab.server("vsftpd")
    d = start_daemon("nfqueue")
    holder, reply = lab.hold(4, "pasv", timeout=15)
    # A download the client reads slowly (16 KiB every 30 ms: 2 s for 1 MiB),
    # whatever the buffers hold, so the kill lands in the middle of it.
    slow = subprocess.Popen(labpy.netns(NS_C, "python3", "-c", SLOW_GET, ADDR[4]["server"]),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Both sessions have their hole (the slow one's 227 was released after
        # it), then the download runs for a moment.
        els = lab.wait_elements(lambda e: len(e) >= 2)
        assert len(els) >= 2, f"no hole for the download: {els}\n{d.text()}"
        time.sleep(0.3)
        assert slow.poll() is None, "download finished before the kill"
        assert lab.queues().get(0) is not None, "queue 0 not bound while the daemon runs"
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait(5)
        end = time.monotonic() + 5
        while 0 in lab.queues() and time.monotonic() < end:
            time.sleep(0.05)
        assert 0 not in lab.queues(), "queue still bound after the daemon died"
        digest, err = slow.communicate(timeout=30)
        assert slow.returncode == 0, f"download broken by the kill: {err}"
        assert digest.strip() == labpy.sha256_file(os.path.join(labpy.PUB, "big.bin"))
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(20) == 0, "held session could not QUIT: control traffic stuck"
    finally:
        for p in (slow, holder):
            if p.poll() is None:
                p.kill()
                p.wait()
    # No daemon: the control connection passes unobserved, the data one is blocked.
    res = lab.transfer("curl", 4, "pasv", timeout=BLOCKED_TIMEOUT)
    assert not res.ok, "data connection got through with no daemon"
    blocked = lab.dropped_syns()
    assert blocked > 0, "the data SYN was not dropped"
    d2 = start_daemon("nfqueue")
    res = lab.transfer("curl", 4, "epsv", timeout=OK_TIMEOUT)
    assert res.ok, f"after restart: {res.detail}\n{d2.text()}"
    assert lab.dropped_syns() == blocked, "a data SYN dropped after the restart"
    assert_nothing_held(lab)


def raw_syns(n, first_port=20000):
    """`n` SYNs to the server's port 21 from the client, from consecutive
    source ports, over a raw socket (no client sockets, no handshakes)."""
    src, dst = ADDR[4]["client"], ADDR[4]["server"]
    with labpy.in_netns(NS_C):
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    try:
        for i in range(n):
            hdr = struct.pack("!HHIIBBHHH", first_port + i, 21, 1000 * i + 1, 0, 5 << 4, 0x02,
                              64240, 0, 0)
            pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(hdr))
            data = pseudo + hdr
            total = sum(struct.unpack(f"!{len(data) // 2}H", data))
            while total >> 16:
                total = (total & 0xFFFF) + (total >> 16)
            hdr = hdr[:16] + struct.pack("!H", ~total & 0xFFFF) + hdr[18:]
            s.sendto(hdr, (dst, 0))
    finally:
        s.close()


def test_nfqueue_full_queue_fails_open(lab, start_daemon):
    """A stopped daemon: the kernel holds 1,024 packets and lets the rest pass
    unobserved instead of dropping them (fail-open); once the daemon runs
    again it releases every held packet and goes on working."""
    lab.mode("sesame", source="nfqueue")
    lab.server("vsftpd")
    d = start_daemon("nfqueue")
    d.signal(signal.SIGSTOP)
    try:
        raw_syns(1200)
        end = time.monotonic() + 5
        while lab.queue_stats()[0]["held"] < 1024 and time.monotonic() < end:
            time.sleep(0.05)
        q = lab.queue_stats()[0]
        assert q["held"] == 1024, f"queue not full: {q}"
        assert q["dropped"] == 0, f"the full queue dropped packets instead of passing them: {q}"
    finally:
        d.signal(signal.SIGCONT)
    end = time.monotonic() + 5
    while lab.queues().get(0) and time.monotonic() < end:
        time.sleep(0.05)
    assert lab.queues() == {0: 0}, f"packets still held after the daemon resumed: {lab.queue_stats()}"
    res = lab.transfer("curl", 4, "pasv", timeout=OK_TIMEOUT)
    assert res.ok, f"after the flood: {res.detail}\n{d.text()[-2000:]}"
    assert lab.dropped_syns() == 0
    assert d.stop() == 0, d.text()[-2000:]
    q = lab.queue_stats()
    assert q == {}, f"queue still bound after the daemon exited: {q}"


@pytest.mark.parametrize("source", ["nfqueue", "nflog"])
def test_expression_names_control_ports_only(lab, start_daemon, source):
    lab.mode("sesame", source=source)
    lab.server("vsftpd")
    d = start_daemon(source, "tcp", "and", "(port", "2121", "or", "port", "21)")
    assert 'expression "tcp and (port 2121 or port 21)" not applied as a filter' in d.text(), d.text()
    res = lab.transfer("curl", 4, "pasv", timeout=OK_TIMEOUT)
    assert res.ok, f"{source}: {res.detail}\n{d.text()}"


# ---------------------------------------------------------------- nflog


@pytest.mark.parametrize("cell", [Cell("vsftpd", 4, "pasv", "curl"), Cell("vsftpd", 6, "eprt", "curl"),
                                  Cell("pyftpdlib", 4, "port", "ftplib"),
                                  Cell("proftpd", 6, "epsv", "lftp")], ids=str)
def test_nflog_transfers(lab, start_daemon, cell):
    d = daemon_transfers(lab, start_daemon, cell, "nflog")
    assert lab.wait_elements(lambda e: e == []) == [], "elements left after the session"
    assert "session finish" in d.text()

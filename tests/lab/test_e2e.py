"""End-to-end tests: real FTP servers and clients through a real nftables firewall.

The lab (lab.sh) is built once for the session and always torn down.  Each test
loads the firewall ruleset it needs, so conntrack and the dropped-SYN counter
start empty.

Baselines (need no daemon, pass as soon as the lab works):
  * every matrix cell transfers with the kernel FTP helper and with an open port
    range, and is blocked in the default (sets only) mode, with the data SYN
    counted as dropped;
  * the same for the NAT lab.
Daemon tests (need target/release/ftpsesame or $FTPSESAME_BIN):
  * every cell transfers with the daemon running, its holes are logged and gone
    when the session ends;
  * passive through masquerade with the daemon on the server-side interface;
  * live elements exist while a session holds a negotiation and vanish on QUIT;
  * SIGTERM removes every element and exits 0;
  * the process runs chrooted to /var/empty as `proxy` with only CAP_NET_ADMIN.

Without root or a tool the tests skip, or FAIL when FTPSESAME_E2E=required.
"""

import os
import pwd
import signal
import subprocess
import time

import pytest

import labpy
from labpy import ADDR, CLIENT_IF, SERVER_IF, Cell, Daemon, Lab

OK_TIMEOUT = 20.0  # generous: a lost race costs a 1 s SYN retransmit
BLOCKED_TIMEOUT = 3.0  # a blocked data connection must not stall the suite


# PASV and PORT carry only IPv4 addresses (RFC 2428 defines EPSV/EPRT for
# IPv6), and clients refuse them on IPv6, so IPv6 cells are EPSV and EPRT.
MODES_BY_FAMILY = {4: ("pasv", "epsv", "port", "eprt"), 6: ("epsv", "eprt")}
CELLS = [
    Cell(server, fam, mode, client)
    for server, client in (("vsftpd", "curl"), ("proftpd", "curl"), ("pyftpdlib", "ftplib"))
    for fam, modes in MODES_BY_FAMILY.items()
    for mode in modes
] + [
    Cell("vsftpd", 4, "pasv", "lftp"),
    Cell("vsftpd", 4, "port", "lftp"),
    Cell("proftpd", 6, "epsv", "lftp"),
    Cell("vsftpd", 4, "epsv", "ftplib"),
    Cell("vsftpd", 6, "eprt", "ftplib"),
    Cell("proftpd", 4, "port", "ftplib"),
    Cell("proftpd", 4, "pasv", "ftplib"),
]
NAT_CELLS = [Cell("vsftpd", 4, "pasv", "curl"), Cell("vsftpd", 4, "epsv", "curl"),
             Cell("proftpd", 4, "pasv", "ftplib")]


@pytest.fixture(scope="session")
def lab():
    yield from labpy.lab_up(Lab, labpy.missing_prerequisites())


@pytest.fixture
def daemon_bin():
    reason = labpy.missing_daemon_bin()
    if reason:
        labpy.unavailable(reason)
    return labpy.daemon_bin()


@pytest.fixture
def start_daemon(lab, daemon_bin):
    """start_daemon(iface, *extra) -> Daemon, ready; stopped after the test."""
    yield from labpy.daemon_starter(lambda iface, *extra: Daemon(iface, extra))


def assert_ok(res, what):
    assert res.ok, f"{what}: transfer failed: {res.detail}"


def assert_blocked(lab, cell, res):
    assert not res.ok, f"{cell}: transfer succeeded, but the firewall should block it"
    assert lab.dropped_syns() > 0, f"{cell}: failed, but no data SYN hit the drop counter: {res.detail}"


def no_elements(els):
    return els == []


# ---------------------------------------------------------------- baselines


@pytest.mark.parametrize("cell", CELLS, ids=str)
def test_kernel_helper_transfers(lab, cell):
    lab.mode("helper")
    lab.server(cell.server)
    assert_ok(lab.transfer(cell.client, cell.family, cell.mode, timeout=OK_TIMEOUT), cell)
    assert lab.dropped_syns() == 0


@pytest.mark.parametrize("cell", CELLS, ids=str)
def test_open_range_transfers(lab, cell):
    lab.mode("open")
    lab.server(cell.server)
    assert_ok(lab.transfer(cell.client, cell.family, cell.mode, timeout=OK_TIMEOUT), cell)


@pytest.mark.parametrize("cell", CELLS, ids=str)
def test_blocked_by_default(lab, cell):
    lab.mode("sesame")
    lab.server(cell.server)
    assert_blocked(lab, cell, lab.transfer(cell.client, cell.family, cell.mode, timeout=BLOCKED_TIMEOUT))


@pytest.mark.parametrize("cell", NAT_CELLS, ids=str)
def test_nat_kernel_helper_transfers(lab, cell):
    lab.mode("helper", nat=True)
    lab.server(cell.server)
    assert_ok(lab.transfer(cell.client, cell.family, cell.mode, timeout=OK_TIMEOUT), cell)


@pytest.mark.parametrize("cell", NAT_CELLS, ids=str)
def test_nat_blocked_by_default(lab, cell):
    lab.mode("sesame", nat=True)
    lab.server(cell.server)
    assert_blocked(lab, cell, lab.transfer(cell.client, cell.family, cell.mode, timeout=BLOCKED_TIMEOUT))


def test_control_connection_passes(lab):
    """Port 21 is open in the default mode: only data connections are blocked."""
    lab.mode("sesame")
    lab.server("vsftpd")
    r = lab.transfer("curl", 4, "pasv", timeout=BLOCKED_TIMEOUT)
    assert not r.ok
    # curl got as far as the data connection: the control dialogue worked.
    assert "28" in r.detail or "timed out" in r.detail.lower() or "Timeout" in r.detail, r.detail


# ---------------------------------------------------------------- the daemon


@pytest.mark.parametrize("cell", CELLS, ids=str)
def test_daemon_transfers(lab, start_daemon, cell):
    lab.mode("sesame")
    lab.server(cell.server)
    d = start_daemon(CLIENT_IF)
    res = lab.transfer(cell.client, cell.family, cell.mode, timeout=OK_TIMEOUT)
    assert_ok(res, f"{cell} with the daemon; log:\n{d.text()}")
    log = d.text()
    client, server = ADDR[cell.family]["client"], ADDR[cell.family]["server"]
    if cell.passive:
        assert f"allowing {client} to {server} port" in log, log
    else:
        assert f"allowing {server} to {client} port" in log, log
    els = lab.wait_elements(no_elements)
    assert els == [], f"elements left after the session ended: {els}\n{log}"
    assert "session finish" in d.text()
    assert d.proc.poll() is None, "daemon died"


@pytest.mark.parametrize("cell", NAT_CELLS, ids=str)
def test_daemon_nat_passive(lab, start_daemon, cell):
    """Client masqueraded on to-s; the daemon captures there and must also allow
    the real client address (the forward chain sees the pre-NAT source)."""
    lab.mode("sesame", nat=True)
    lab.server(cell.server)
    d = start_daemon(SERVER_IF)
    res = lab.transfer(cell.client, cell.family, cell.mode, timeout=OK_TIMEOUT)
    assert_ok(res, f"{cell} through NAT with the daemon; log:\n{d.text()}")
    log = d.text()
    assert f"passive/nat: also allowing {ADDR[4]['client']} to {ADDR[4]['server']} port" in log, log
    els = lab.wait_elements(no_elements)
    assert els == [], f"elements left after the session ended: {els}\n{log}"


def element_ports(els):
    """Data ports of the elements (elem JSON: {"elem": {"val": {"concat": [a, b, port]}, ...}})."""
    ports = []
    for e in els:
        val = e["elem"]["val"] if isinstance(e, dict) and "elem" in e else e
        ports.append(val["concat"][2])
    return ports


@pytest.mark.parametrize("family,mode", [(4, "pasv"), (6, "epsv"), (4, "port"), (6, "eprt")])
def test_daemon_elements_live_while_session_holds(lab, start_daemon, family, mode):
    lab.mode("sesame")
    lab.server("vsftpd")
    d = start_daemon(CLIENT_IF, "-T", "inet/filter")
    p, reply = lab.hold(family, mode)
    try:
        els = lab.wait_elements(lambda e: reply["port"] in element_ports(e))
        assert reply["port"] in element_ports(els), f"no element for {reply}: {els}\n{d.text()}"
        assert len(els) == 1, f"exactly one hole per negotiation: {els}"
    finally:
        p.stdin.write("\n")
        p.stdin.flush()
        p.wait(10)
    els = lab.wait_elements(no_elements)
    assert els == [], f"elements left after QUIT: {els}\n{d.text()}"


def test_daemon_sigterm_removes_elements(lab, start_daemon):
    lab.mode("sesame")
    lab.server("proftpd")
    d = start_daemon(CLIENT_IF)
    holds = [lab.hold(4, "pasv"), lab.hold(6, "epsv")]
    try:
        els = lab.wait_elements(lambda e: len(e) >= 2)
        assert len(els) >= 2, f"expected elements of two sessions: {els}\n{d.text()}"
        assert d.stop() == 0, f"SIGTERM: exit code not 0\n{d.text()}"
        assert lab.elements() == [], "SIGTERM left elements behind"
    finally:
        for p, _ in holds:
            p.kill()
            p.wait()
    # With the daemon gone, the lab blocks again.
    res = lab.transfer("curl", 4, "pasv", timeout=BLOCKED_TIMEOUT)
    assert not res.ok, "transfer succeeded after the daemon stopped"


def test_daemon_privileges(lab, start_daemon):
    lab.mode("sesame")
    d = start_daemon(CLIENT_IF)
    st = labpy.proc_status(d.pid)
    proxy = pwd.getpwnam("proxy")
    assert st["Uid"].split() == [str(proxy.pw_uid)] * 4, st["Uid"]
    assert st["Gid"].split() == [str(proxy.pw_gid)] * 4, st["Gid"]
    assert st["CapEff"] == "0000000000001000", f"CapEff {st['CapEff']}: only CAP_NET_ADMIN"
    assert st["CapPrm"] == "0000000000001000", f"CapPrm {st['CapPrm']}"
    assert os.readlink(f"/proc/{d.pid}/root") == "/var/empty"
    assert os.getpriority(os.PRIO_PROCESS, d.pid) == -20, "the daemon races data connections at nice -20"
    # Still working after the drop: nfnetlink needs the kept capability.
    lab.server("vsftpd")
    assert_ok(lab.transfer("curl", 4, "epsv", timeout=OK_TIMEOUT), f"after privilege drop; log:\n{d.text()}")


def test_daemon_mode_pidfile_no_syslog(lab, daemon_bin):
    """Without -d: the start command returns once the daemon is up (exit 0),
    the pidfile names it, it works whether or not a syslog daemon listens
    (CI machines have none), and SIGTERM removes what it added."""
    lab.mode("sesame")
    lab.server("vsftpd")
    pidfile = "/var/run/ftpsesame.pid"
    start = subprocess.run(labpy.netns(labpy.NS_FW, labpy.daemon_bin(), "-i", CLIENT_IF),
                           capture_output=True, text=True, timeout=10)
    assert start.returncode == 0, f"start failed: {start.stderr}"
    with open(pidfile) as f:
        pid = int(f.read())
    try:
        assert labpy.proc_status(pid)["Uid"].split()[0] == str(pwd.getpwnam("proxy").pw_uid)
        assert_ok(lab.transfer("curl", 4, "pasv", timeout=OK_TIMEOUT), "daemonized")
    finally:
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if not os.path.exists(f"/proc/{pid}"):
                break
            time.sleep(0.05)
    assert not os.path.exists(f"/proc/{pid}"), "daemon did not exit on SIGTERM"
    assert lab.elements() == [], "elements left after SIGTERM"


def test_daemon_realtime_option(lab, start_daemon):
    lab.mode("sesame")
    d = start_daemon(CLIENT_IF, "-R")
    assert os.sched_getscheduler(d.pid) == os.SCHED_FIFO
    assert os.sched_getparam(d.pid).sched_priority == 10
    lab.server("vsftpd")
    assert_ok(lab.transfer("curl", 4, "pasv", timeout=OK_TIMEOUT), f"with -R; log:\n{d.text()}")


def test_daemon_stats_on_sigusr1(lab, start_daemon):
    """The benchmark reads commit latency from the `stats:` line (race.py)."""
    lab.mode("sesame")
    lab.server("vsftpd")
    d = start_daemon(CLIENT_IF)
    assert_ok(lab.transfer("curl", 4, "pasv", timeout=OK_TIMEOUT), d.text())
    if d.catches(signal.SIGUSR1):
        d.signal(signal.SIGUSR1)
        end = time.monotonic() + 5
        while "stats:" not in d.text() and time.monotonic() < end:
            time.sleep(0.05)
    if "stats:" not in d.text():
        d.stop()  # the line may come only at exit
    assert "commit latency p50" in d.text(), d.text()

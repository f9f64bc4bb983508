"""Fault tests: what the live daemon does when its world breaks under it.

  * the nftables set is deleted while it runs: commits fail and are logged,
    the daemon lives, and works again once the set is back;
  * the capture interface disappears: the daemon (which kept only
    CAP_NET_ADMIN and cannot reopen a capture) removes its elements and
    exits with status 1 and a message naming the interface;
  * SIGKILL: the elements stay, with their kernel timeout running down; a
    restarted daemon adopts the one whose control connection is still open
    (it keeps counting down) and works;
  * SIGKILL and restart while a held control connection suffers 5 % loss,
    duplication and reordering: the new daemon picks it up and 10 of 10
    transfers in it work;
  * session churn: thousands of sessions opened and closed, RSS stable and
    no element left behind.  FTPSESAME_CHURN_SECONDS (default 45) and
    FTPSESAME_CHURN_SESSIONS (default 10000) bound it; the long run is
    FTPSESAME_CHURN_SECONDS=600.

    FSLAB=fsadv FTPSESAME_E2E=required python3 -m pytest -v -s tests/lab/test_faults.py
"""

import ftplib
import json
import os
import signal
import subprocess
import time

import pytest

import labpy
from labpy import ADDR, CLIENT_IF, NS_C, NS_FW, Daemon, in_netns
from test_adversarial import lab  # noqa: F401  (module-scoped lab fixture)

OK_TIMEOUT = 20.0


@pytest.fixture
def daemons(lab):  # noqa: F811
    reason = labpy.missing_daemon_bin()
    if reason:
        labpy.unavailable(reason)
    lab.mode("sesame")
    lab.server("vsftpd")
    yield from labpy.daemon_starter()


def transfer_ok(lab, d, mode="pasv", family=4):  # noqa: F811
    r = lab.transfer("curl", family, mode, timeout=OK_TIMEOUT)
    assert r.ok, f"{mode} transfer failed: {r.detail}\n{d.text()[-3000:]}"


def fw(*cmd, check=True):
    return subprocess.run(labpy.netns(NS_FW, *cmd), capture_output=True, text=True, check=check)


# ---------------------------------------------------------------- set deleted


def delete_set4():
    """Delete the rule using @ftpsesame4 (a set in use cannot go), then the set."""
    chain = json.loads(fw("nft", "-j", "-a", "list", "chain", "inet", "filter", "forward").stdout)
    handles = [o["rule"]["handle"] for o in chain["nftables"]
               if "rule" in o and "ftpsesame4" in json.dumps(o["rule"]["expr"])]
    assert handles, "no rule uses @ftpsesame4"
    for h in handles:
        fw("nft", "delete", "rule", "inet", "filter", "forward", "handle", str(h))
    fw("nft", "delete", "set", "inet", "filter", "ftpsesame4")


def test_set_deleted_under_running_daemon(daemons, lab):  # noqa: F811
    d = daemons()
    transfer_ok(lab, d)
    delete_set4()
    r = lab.transfer("curl", 4, "pasv", timeout=3.0)
    assert not r.ok, "transfer succeeded without the set and its rule"
    assert "commit failed" in d.text(), d.text()
    assert d.proc.poll() is None, "daemon died when its set went away"
    # IPv6 has its own set, untouched: still works.
    transfer_ok(lab, d, "epsv", 6)
    # The set comes back (the whole ruleset reloaded): the same daemon recovers.
    lab.mode("sesame")
    transfer_ok(lab, d)
    assert lab.wait_elements(lambda e: e == []) == [], d.text()


# ---------------------------------------------------------------- interface gone


def restore_client_link():
    """Recreate the client-side veth pair as lab.sh builds it."""
    c, f = NS_C, NS_FW
    cmds = [
        ["ip", "-n", f, "link", "add", CLIENT_IF, "type", "veth", "peer", "name", "eth0", "netns", c],
        ["ip", "-n", c, "addr", "add", "192.0.2.2/24", "dev", "eth0"],
        ["ip", "-n", c, "addr", "add", "2001:db8:1::2/64", "dev", "eth0", "nodad"],
        ["ip", "-n", f, "addr", "add", "192.0.2.1/24", "dev", CLIENT_IF],
        ["ip", "-n", f, "addr", "add", "2001:db8:1::1/64", "dev", CLIENT_IF, "nodad"],
        ["ip", "-n", c, "link", "set", "eth0", "up"],
        ["ip", "-n", f, "link", "set", CLIENT_IF, "up"],
        ["ip", "-n", c, "route", "add", "default", "via", "192.0.2.1"],
        ["ip", "-n", c, "-6", "route", "add", "default", "via", "2001:db8:1::1"],
    ]
    for cmd in cmds:
        subprocess.run(cmd, check=True, capture_output=True)


def test_capture_interface_removed(daemons, lab):  # noqa: F811
    d = daemons()
    p, reply = lab.hold(4, "pasv")
    try:
        els = lab.wait_elements(lambda e: e != [])
        assert els, f"no element while holding: {d.text()}"
        fw("ip", "link", "del", CLIENT_IF)
        try:
            rc = d.proc.wait(10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"daemon still running 10 s after {CLIENT_IF} vanished "
                        f"(cpu {cpu_seconds(d.pid):.1f} s):\n{d.text()}")
        text = d.text()
        assert rc == 1, f"exit status {rc}:\n{text}"
        assert CLIENT_IF in text.splitlines()[-1] or CLIENT_IF in text, text
        print(f"\ninterface removed: exit {rc}; last lines: {text.strip().splitlines()[-3:]}")
        assert lab.elements() == [], "elements left behind by the exiting daemon"
    finally:
        p.kill()
        p.wait()
        restore_client_link()
    # Back: a new daemon on the re-added interface works.
    d2 = daemons()
    transfer_ok(lab, d2)


def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return -1.0


# ---------------------------------------------------------------- SIGKILL


def test_sigkill_then_restart(daemons, lab):  # noqa: F811
    d = daemons()
    p, reply = lab.hold(4, "pasv")
    try:
        els = lab.wait_elements(lambda e: reply["port"] in ports(e))
        assert reply["port"] in ports(els), d.text()
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait(5)
        stale = [e for e in lab.elements() if ports([e]) == [reply["port"]]]
        assert stale, "a killed daemon cannot have removed its element"
        e0 = stale[0]["elem"]
        assert e0["timeout"] <= 180 and e0["expires"] <= e0["timeout"], e0
        time.sleep(1.5)
        e1 = [e for e in lab.elements() if ports([e]) == [reply["port"]]][0]["elem"]
        assert e1["expires"] < e0["expires"], f"kernel timeout not running: {e0} -> {e1}"
        # Restart: a clean table; it works, and removes what it adds.
        d2 = daemons()
        transfer_ok(lab, d2)
        time.sleep(0.3)
        left = lab.elements()
        assert all(ports([e]) == [reply["port"]] for e in left), f"new daemon left: {left}"
        assert "session init" in d2.text() and "#1 session init" in d2.text(), d2.text()
        assert "adopted 1 holes of control connections still open" in d2.text(), d2.text()
        print(f"\nSIGKILL: stale element expires in {e1['expires']} s (timeout {e1['timeout']} s); "
              f"restarted daemon left {len(left)} element(s) (the stale one: {bool(left)})")
    finally:
        p.kill()
        p.wait()
        # Do not leave the stale hole to the next test.
        fw("nft", "flush", "set", "inet", "filter", "ftpsesame4", check=False)


def ports(els):
    return [e["elem"]["val"]["concat"][2] for e in els]


# ---------------------------------------------------------------- churn

CHURN_SECONDS = float(os.environ.get("FTPSESAME_CHURN_SECONDS", "45"))
CHURN_SESSIONS = int(os.environ.get("FTPSESAME_CHURN_SESSIONS", "10000"))


def rss_kib(pid):
    return int(labpy.proc_status(pid)["VmRSS"].split()[0])


def test_session_churn(daemons, lab):  # noqa: F811
    """Sessions opened, negotiated (PASV: a hole each) and closed in a loop."""
    d = daemons("-D", "5")
    host = ADDR[4]["server"]
    done = failed = 0
    samples = []
    t0 = time.monotonic()
    with in_netns(NS_C):
        while done < CHURN_SESSIONS and time.monotonic() - t0 < CHURN_SECONDS:
            try:
                ftp = ftplib.FTP(timeout=5)
                ftp.connect(host, 21)
                ftp.login()
                ftp.sendcmd("PASV")
                ftp.quit()
                done += 1
            except (OSError, ftplib.Error):
                failed += 1
            if (done + failed) % 250 == 0:
                samples.append((done, rss_kib(d.pid)))
    seconds = time.monotonic() - t0
    assert d.proc.poll() is None, d.text()
    els = lab.wait_elements(lambda e: e == [], timeout=10)
    d.signal(signal.SIGUSR1)
    time.sleep(0.3)
    stats = [line for line in d.text().splitlines() if "stats:" in line][-1:]
    print(f"\nchurn: {done} sessions ({failed} failed) in {seconds:.0f} s; RSS samples (sessions, KiB): "
          f"{samples[:2]} ... {samples[-2:]}; {stats}")
    assert els == [], f"elements left after {done} sessions: {els[:5]}"
    assert failed <= done // 100, f"{failed} sessions failed"
    assert done >= 100, "too few sessions to say anything"
    # Stable: after the first tenth, RSS may wobble but not grow with sessions.
    base = samples[len(samples) // 10][1] if samples else rss_kib(d.pid)
    end = rss_kib(d.pid)
    assert end - base < 2048, f"RSS grew from {base} to {end} KiB over {done} sessions"


# ---------------------------------------------------------------- restart under faults


def test_restart_under_faults_picks_up(daemons, lab):  # noqa: F811
    """SIGKILL and a new daemon while a control connection stays open and its
    packets are lost, duplicated and reordered (5 % each, both links, some
    lost after the capture saw them): the new daemon still picks the session
    up, and 10 of 10 later transfers in it work."""
    from halab import Control, session_lines

    d = daemons()
    c = Control(4, "pasv", timeout=OK_TIMEOUT)
    try:
        assert c.get(), d.text()
        how = labpy.lab("lab_netem_set", "5", "5", "5").stdout.strip()
        try:
            d.proc.send_signal(signal.SIGKILL)
            d.proc.wait(5)
            d2 = daemons()
            ok, t0 = 0, time.monotonic()
            for i in range(10):
                try:
                    ok += bool(c.get())
                except OSError as e:
                    print(f"  transfer {i + 1}: {e!r}")
            took = time.monotonic() - t0
        finally:
            impaired = labpy.lab("lab_netem_clear", check=False).stdout.strip()
        text = d2.text()
        picked = session_lines(text, c.sport, "session picked up")
        assert ok == 10, f"{ok} of 10 under faults:\n{text[-4000:]}"
        assert len(picked) == 1, text
        print(f"\nrestart under 5 % loss, duplication and reordering ({how}): {ok} of 10 "
              f"transfers in {took:.1f} s; {picked[0].strip()}; impairers: {impaired!r}")
        c.ftp.quit()
    finally:
        c.close()

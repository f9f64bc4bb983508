"""HA lab tests: two firewalls, conntrackd between them, failover mid-session.

The HA lab (ha.sh, halab.py) puts fw1 and fw2 in parallel between client and
server, both with lab.sh's sesame ruleset, the kernel FTP helper unused,
nf_conntrack_tcp_loose=0 (a firewall passes a moved connection only if it
holds its entry), and conntrackd in FTFW mode over UDP on a dedicated link.
What these tests show:

  * an FTP control connection opened through fw1 reaches fw2's conntrackd
    external cache, and fw2's kernel table once committed (IPv4, IPv6);
  * moving the traffic to fw2 (commit, routes, fw1's links down) keeps a
    control connection held open across the move working (NOOP/PWD), while a
    second one whose entry fw2 lacks dies: it is the synced entry that
    carries the connection; moving back to fw1 by routes alone works too;
  * ftpsesame on fw1 opens passive, EPSV (IPv6) and active data connections
    through fw1, for fresh clients and inside a control connection the test
    holds (halab.Control); without the daemon the data SYN is dropped and
    counted on fw1;
  * ftpsesame on fw2 during the move opens nothing for the moved connection
    while no negotiation crosses it, and serves sessions that begin through
    fw2;
  * mid-stream pickup, in passive IPv4, EPSV IPv6 and active (PORT) mode:
      restart   the daemon on fw1 is killed (SIGKILL) or stopped (SIGTERM)
                and started again while a control connection stays open; 10
                of 10 later transfers in it succeed, the new daemon logs
                `session picked up` for it once, and what it opened goes
                with the session (a killed daemon's own holes stay, counting
                down, adopted; a clean stop leaves none);
      takeover  the traffic moves to fw2 (conntrackd synced the entry); fw2's
                daemon picks the session up and 10 of 10 transfers work
                through fw2, fw1 opening nothing more;
      spoofing  a control connection open before the daemon started, idle:
                30 segments injected from the client's network on its
                4-tuple, with sequence numbers of the attacker's own
                (PASV/EPSV, PORT/EPRT to 3306 from the client; 227/229 from
                the server's address, dropped at fw1's ingress after the
                capture), create no session, no element, and connections
                to 3306 fail both ways; the real transfer that follows is
                picked up and works.
    The daemon races each data connection's SYN while it captures; a lost
    race costs the client one SYN retransmission (a second), so the count of
    SYNs fw1 dropped is printed, not asserted.

Facts measured here (see ha.sh for the setup):
conntrackd syncs the control connection's entry in ~20-40 ms; it carries
no sequence numbers or windows (TCPWindowTracking off: committed entries
are "be liberal"), so on Linux after a takeover the kernel's state table
vouches for the 4-tuple only, not for sequence numbers; ftpsesame on fw1
exits with status 1 ("to-c: capture failed (interface gone?)") when fw1's
links go down, so move(down=False) keeps fw1's daemon alive when a test
needs it after the move.

The lab functions the tests use: halab.HALab (up, down, reset, mode,
server, move, commit, takeover, active, conntrack, cache, wait_synced, forget,
elements, wait_elements, dropped_syns, ruleset, daemon), halab.FwDaemon
(wait_ready, text, stop, kill, signal), halab.Control (sport, noop, get,
close); in the shell, ha.sh's ha_* functions.

    FSLAB=fsha FSLAB_DIR=/var/tmp/ftpsesame-lab-fsha FTPSESAME_E2E=required \\
        python3 -m pytest -v -s tests/lab/test_ha.py

Needs root, the lab tools and conntrackd (tests/lab/deps.sh) and
target/release/ftpsesame (or $FTPSESAME_BIN) for the daemon tests.  Without
them the tests skip, or FAIL when FTPSESAME_E2E=required.
"""

import ftplib
import socket
import time

import pytest

import halab
import labpy
from halab import Control, HALab
from labpy import in_netns

OK_TIMEOUT = 20.0
BLOCKED_TIMEOUT = 3.0
DEAD_TIMEOUT = 2.0  # a control connection without an entry on its firewall


@pytest.fixture(scope="module")
def lab():
    yield from labpy.lab_up(HALab, halab.missing_prerequisites())


@pytest.fixture
def ha(lab):
    """The lab as ha_up leaves it (through fw1, empty tables), vsftpd serving."""
    lab.reset()
    lab.server("vsftpd")
    assert lab.active() == "fw1"
    return lab


@pytest.fixture
def daemons(ha):
    """start(fw, *extra) -> a ready daemon on that firewall; all stopped after."""
    reason = labpy.missing_daemon_bin()
    if reason:
        labpy.unavailable(reason)
    started = []

    def start(fw, *extra):
        d = ha.daemon(fw, *extra)
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


@pytest.fixture
def controls():
    """open(family, mode, timeout) -> a Control; all closed after the test."""
    opened = []

    def open_(family=4, mode="pasv", timeout=5.0):
        c = Control(family, mode, timeout)
        opened.append(c)
        return c

    yield open_
    for c in opened:
        c.close()


def entry(lines, sport):
    """The line about client port `sport` (conntrack or conntrackd output)."""
    found = [line for line in lines if f" sport={sport} " in line]
    return found[0] if found else None


def wait_kernel_entry(lab, fw, sport, timeout=2.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        e = entry(lab.conntrack(fw), sport)
        if e:
            return e
        time.sleep(0.02)
    return None


# ---------------------------------------------------------------- sync


@pytest.mark.parametrize("family", [4, 6])
def test_control_connection_synced_to_fw2(ha, controls, family):
    c = controls(family)
    c.noop()
    assert entry(ha.conntrack("fw1"), c.sport), "no entry on fw1, which carries the traffic"
    dt = ha.wait_synced("fw2", c.sport)
    assert dt is not None, f"not in fw2's external cache: {ha.cache('fw2')}"
    cached = entry(ha.cache("fw2"), c.sport)
    assert "ESTABLISHED" in cached and " dport=21 " in cached, cached
    assert f"src={labpy.ADDR[family]['client']} " in cached, cached
    # The external cache is not the kernel table: fw2 holds nothing until
    # the takeover commits it.
    assert entry(ha.conntrack("fw2"), c.sport) is None, ha.conntrack("fw2")
    ha.commit("fw2")
    committed = wait_kernel_entry(ha, "fw2", c.sport)
    assert committed, f"commit left fw2's table without it: {ha.conntrack('fw2')}"
    assert "ESTABLISHED" in committed and " dport=21 " in committed, committed
    assert "helper=" not in committed, committed
    print(f"\nIPv{family}: control connection in fw2's external cache {dt * 1000:.0f} ms after "
          f"the NOOP returned (poll 20 ms); committed: {committed}")


# ---------------------------------------------------------------- move


@pytest.mark.parametrize("family", [4, 6])
def test_control_connection_survives_move(ha, controls, family):
    for fw in halab.FIREWALLS:
        assert "helper" not in ha.ruleset(fw), f"{fw} uses a conntrack helper"
    kept = controls(family)
    lost = controls(family, timeout=DEAD_TIMEOUT)
    kept.noop()
    lost.noop()
    for c in (kept, lost):
        assert ha.wait_synced("fw2", c.sport) is not None, ha.cache("fw2")
    ha.takeover("fw2")
    for c in (kept, lost):
        assert wait_kernel_entry(ha, "fw2", c.sport), ha.conntrack("fw2")
    # The control: fw2 never learned `lost`.
    assert ha.forget("fw2", lost.sport), ha.conntrack("fw2")

    t0 = time.monotonic()
    ha.move("fw2", down=True, commit=False)
    moved = time.monotonic() - t0
    assert ha.active() == "fw2"
    t1 = time.monotonic()
    rtt = kept.noop()
    recovered = time.monotonic() - t1
    assert entry(ha.conntrack("fw2"), kept.sport), "fw2 carried it without its entry?"
    with pytest.raises(OSError):
        lost.noop()
    lost.close()
    assert "helper=" not in " ".join(ha.conntrack("fw2")), ha.conntrack("fw2")

    # And back, by routes alone (fw2's links stay up).
    ha.move("fw1")
    assert ha.active() == "fw1"
    back = kept.noop()
    kept.ftp.quit()
    print(f"\nIPv{family}: move took {moved * 1000:.0f} ms (commit done before); first NOOP+PWD "
          f"through fw2 {recovered * 1000:.1f} ms ({rtt * 1000:.1f} ms of round trips), "
          f"the connection without an entry on fw2 timed out after {DEAD_TIMEOUT:.0f} s; "
          f"back through fw1: {back * 1000:.1f} ms")


# ---------------------------------------------------------------- daemon on fw1


def test_daemon_on_fw1_opens_data_connections(ha, daemons, controls):
    blocked = ha.transfer("curl", 4, "pasv", timeout=BLOCKED_TIMEOUT)
    assert not blocked.ok, "passive transfer through fw1 without the daemon"
    assert ha.dropped_syns("fw1") >= 1, "the blocked data SYN was not counted on fw1"
    d = daemons("fw1")
    for family, mode in ((4, "pasv"), (6, "epsv")):
        r = ha.transfer("curl", family, mode, timeout=OK_TIMEOUT)
        assert r.ok, f"IPv{family} {mode} through fw1: {r.detail}\n{d.text()[-3000:]}"
    # Inside control connections the test holds: the three modes the pickup
    # tests restart the daemon under.
    for family, mode in ((4, "pasv"), (6, "epsv"), (4, "port")):
        c = controls(family, mode, timeout=OK_TIMEOUT)
        for _ in range(2):
            assert c.get(), f"IPv{family} {mode} held session: bytes differ"
        c.ftp.quit()
    text = d.text()
    assert text.count("session init") == 5, text
    assert "allowing 192.0.2.2 to 198.51.100.2 port" in text, text
    assert "allowing 2001:db8:1::2 to 2001:db8:2::2 port" in text, text
    assert ha.wait_elements(lambda e: e == [], fw="fw1") == [], d.text()
    assert ha.elements("fw2") == [] and ha.dropped_syns("fw2") == 0, "traffic crossed fw2"
    assert d.stop() == 0, d.text()


# ---------------------------------------------------------------- daemon on fw2


def test_fw2_daemon_during_move(ha, daemons, controls):
    """What ftpsesame on fw2 says about a control connection moved onto it
    when no negotiation follows: it picks it up, and opens nothing."""
    d1 = daemons("fw1")
    d2 = daemons("fw2")
    c = controls(4, "pasv", timeout=OK_TIMEOUT)
    assert c.get(), d1.text()
    assert ha.wait_synced("fw2", c.sport) is not None
    before = len(d2.text())
    ha.move("fw2", down=True)
    c.noop()
    c.ftp.voidcmd("SYST")
    time.sleep(0.3)
    after_move = d2.text()[before:]
    assert d2.proc.poll() is None, d2.text()
    # No negotiation crossed fw2: nothing may open.
    assert "allowing" not in after_move, after_move
    assert "session picked up" in after_move, after_move
    assert ha.elements("fw2") == []
    fw1_state = "running" if d1.proc.poll() is None else f"exited {d1.proc.returncode}"
    # Sessions that begin through fw2 are fw2's daemon's.
    r = ha.transfer("curl", 4, "pasv", timeout=OK_TIMEOUT)
    assert r.ok, f"new session through fw2: {r.detail}\n{d2.text()[-3000:]}"
    assert "allowing 192.0.2.2 to 198.51.100.2 port" in d2.text()[before:], d2.text()
    print(f"\nfw2's daemon (-d -D 7) while the moved control connection crossed it "
          f"(client port {c.sport}): {len(after_move.splitlines())} line(s)")
    for line in after_move.splitlines():
        print("  | " + line)
    print(f"fw1's daemon after its links went down: {fw1_state}; last lines: "
          f"{d1.text().strip().splitlines()[-2:]}")
    try:
        c.ftp.quit()
    except (OSError, ftplib.Error):
        pass


# ---------------------------------------------------------------- pickup

MODES = [(4, "pasv"), (6, "epsv"), (4, "port")]
TRANSFERS = 10


def picked_up_lines(d, sport):
    return halab.session_lines(d.text(), sport, "session picked up")


def holes(elements):
    """The (src, dst, port) of set elements, without their countdown."""
    return {tuple(e["elem"]["val"]["concat"]) for e in elements}


def transfers(c, d, n=TRANSFERS):
    """n downloads in control connection c; the count that returned the file."""
    ok = 0
    for i in range(n):
        t0 = time.monotonic()
        try:
            ok += bool(c.get())
        except (OSError, ftplib.Error) as e:
            print(f"  transfer {i + 1}: {e!r}")
        took = time.monotonic() - t0
        if took > 0.5:
            print(f"  transfer {i + 1} took {took:.2f} s")
    return ok


@pytest.mark.parametrize("stop", ["kill", "stop"])
@pytest.mark.parametrize("family,mode", MODES)
def test_restart_picks_up_the_control_connection(ha, daemons, controls, family, mode, stop):
    """A daemon killed (SIGKILL) or stopped (SIGTERM) and started again while
    a control connection stays open: the new daemon picks it up, and every
    later transfer in it works."""
    d = daemons("fw1")
    c = controls(family, mode, timeout=OK_TIMEOUT)
    assert c.get(), d.text()
    getattr(d, stop)()
    # A clean stop removes its holes; a killed daemon's stay, counting down
    # their kernel timeout (the next one adopts them, see the man page).
    left = holes(ha.elements("fw1"))
    assert (left == set()) == (stop == "stop"), left
    dropped = ha.dropped_syns("fw1")
    d = daemons("fw1")
    t0 = time.monotonic()
    ok = transfers(c, d)
    took = time.monotonic() - t0
    text = d.text()
    assert ok == TRANSFERS, f"{ok} of {TRANSFERS} after {stop}:\n{text[-4000:]}"
    assert len(picked_up_lines(d, c.sport)) == 1, text
    assert f"{labpy.ADDR[family]['client']}]:" in picked_up_lines(d, c.sport)[0] or \
        f"{labpy.ADDR[family]['client']}:" in picked_up_lines(d, c.sport)[0]
    assert "session init" not in text, "a new session where the old one goes on?"
    # Capturing, the daemon races each data connection's SYN; a SYN that
    # wins is dropped and sent again a second later, so the transfer still
    # works. Reported, not asserted: it depends on the machine's load.
    retried = ha.dropped_syns("fw1") - dropped
    c.ftp.quit()
    # What the new daemon opened goes with the session.
    remains = ha.wait_elements(lambda e: holes(e) <= left, fw="fw1")
    assert holes(remains) <= left, (remains, left)
    print(f"\nIPv{family} {mode}, after {stop}: {ok} of {TRANSFERS} transfers in "
          f"{took:.2f} s ({retried} data SYN(s) sent again); "
          f"{picked_up_lines(d, c.sport)[0].strip()}")


@pytest.mark.parametrize("family,mode", MODES)
def test_takeover_picks_up_on_fw2(ha, daemons, controls, family, mode):
    """Traffic moves from fw1 to fw2 mid-session (conntrackd synced the
    control connection's entry): fw2's daemon picks the session up and the
    transfers that follow work through fw2."""
    daemons("fw1")
    d2 = daemons("fw2")
    c = controls(family, mode, timeout=OK_TIMEOUT)
    assert c.get()
    assert ha.wait_synced("fw2", c.sport) is not None, ha.cache("fw2")
    fw1_before = holes(ha.elements("fw1"))
    ha.move("fw2", down=True)
    assert ha.active() == "fw2"
    c.noop()
    ok = transfers(c, d2)
    text = d2.text()
    assert ok == TRANSFERS, f"{ok} of {TRANSFERS} through fw2:\n{text[-4000:]}"
    assert len(picked_up_lines(d2, c.sport)) == 1, text
    retried = ha.dropped_syns("fw2")
    assert holes(ha.elements("fw1")) <= fw1_before, "fw1 opened more"
    c.ftp.quit()
    assert ha.wait_elements(lambda e: e == [], fw="fw2") == [], text
    print(f"\nIPv{family} {mode}: takeover by fw2, {ok} of {TRANSFERS} transfers "
          f"({retried} data SYN(s) sent again); "
          f"{picked_up_lines(d2, c.sport)[0].strip()}")



DB_PORT = 3306  # (198,51,100,2,12,234)


def forged_segments(S, c, mac_fw, rng):
    """Frames a blind attacker in the client's network sends on c's 4-tuple:
    negotiations from the client and replies from the server, each with
    sequence and acknowledgement numbers of its own (the real ones are
    unknown to it), so no two agree with the real connection or each other."""
    fam = c.family
    client, server = labpy.ADDR[fam]["client"], labpy.ADDR[fam]["server"]
    ip = S["IP"] if fam == 4 else S["IPv6"]
    hi, lo = DB_PORT >> 8, DB_PORT & 0xFF
    if fam == 4:
        commands = ["PASV", f"PORT 192,0,2,2,{hi},{lo}"]
        replies = [f"227 Entering Passive Mode (198,51,100,2,{hi},{lo})."]
    else:
        commands = ["EPSV", f"EPRT |2|{client}|{DB_PORT}|"]
        replies = [f"229 Entering Extended Passive Mode (|||{DB_PORT}|)."]
    mac_c = labpy.link_mac(labpy.NS_C, "eth1")
    frames = []
    for _ in range(10):
        for line in commands:
            frames.append(S["Ether"](src=mac_c, dst=mac_fw) / ip(src=client, dst=server) /
                          S["TCP"](sport=c.sport, dport=21, flags="PA", window=502,
                                   seq=rng.getrandbits(32), ack=rng.getrandbits(32)) /
                          (line + "\r\n").encode())
        for line in replies:
            frames.append(S["Ether"](src=mac_c, dst=mac_fw) / ip(src=server, dst=client) /
                          S["TCP"](sport=21, dport=c.sport, flags="PA", window=502,
                                   seq=rng.getrandbits(32), ack=rng.getrandbits(32)) /
                          (line + "\r\n").encode())
    return frames


@pytest.mark.parametrize("family", [4, 6])
def test_spoofed_segments_do_not_seed_a_pickup(ha, daemons, controls, family):
    """A control connection open before the daemon started, idle: segments
    injected on its 4-tuple with sequence numbers the receivers would not
    accept create no session and open nothing; the real endpoints' next
    transfer is picked up and works."""
    import random

    S = labpy.import_scapy()
    if S is None:
        labpy.unavailable("python3-scapy missing (apt-get install python3-scapy)")
    ns = halab.NS["fw1"]
    server = labpy.ADDR[family]["server"]
    ipv = "ip" if family == 4 else "ip6"
    # Anti-spoofing at fw1's ingress, after the capture: forged replies are
    # seen by the daemon but never routed back to the client.
    labpy.nft(ns, f"""
table netdev fsha_antispoof {{
    chain ingress {{
        type filter hook ingress device "{labpy.CLIENT_IF}" priority 0; policy accept;
        {ipv} saddr {server} drop
    }}
}}
""")
    try:
        c = controls(family, "pasv" if family == 4 else "epsv", timeout=OK_TIMEOUT)
        c.noop()
        d = daemons("fw1")
        frames = forged_segments(S, c, labpy.link_mac(ns, labpy.CLIENT_IF),
                                 random.Random(0x5eed + family))
        with in_netns(labpy.NS_C):
            raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        try:
            raw.bind(("eth1", 0))
            for f in frames:
                raw.send(bytes(f))
        finally:
            raw.close()
        time.sleep(0.5)
        text = d.text()
        assert halab.session_lines(text, c.sport, "session picked up", "session init") == [], text
        assert "allowing" not in text, text
        assert ha.elements("fw1") == [], text
        assert not labpy.probe(family, labpy.NS_C, labpy.NS_S, DB_PORT), "client reached 3306"
        assert not labpy.probe(family, labpy.NS_S, labpy.NS_C, DB_PORT), "server reached 3306"
        # The real endpoints agree at once, and the transfer works.
        assert c.get(), d.text()
        assert len(picked_up_lines(d, c.sport)) == 1, d.text()
        print(f"\nIPv{family}: {len(frames)} forged segments on the idle connection: no session, "
              f"no hole; then {picked_up_lines(d, c.sport)[0].strip()}")
        c.ftp.quit()
    finally:
        labpy.nft(ns, "delete table netdev fsha_antispoof")

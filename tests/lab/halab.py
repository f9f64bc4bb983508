"""Python side of the HA lab (ha.sh): two firewalls, conntrackd, failover.

Client and server namespaces are lab.sh's, so labpy.Lab's clients
(`transfer`, `hold`) and servers (`server`) work unchanged; what differs is
that there are two firewalls, named "fw1" and "fw2", and every firewall
query takes the name of the one it asks (None: the one traffic goes
through).  A `Control` is an FTP control connection the test process itself
holds open across a failover, in the client namespace.
"""

import hashlib
import json
import os
import signal
import shutil
import subprocess
import tempfile
import time

import ftpget
import labpy
from labpy import ADDR, CLIENT_IF, NS_C, PREFIX, PUB, in_netns, netns

HA_SH = os.path.join(labpy.HERE, "ha.sh")
FIREWALLS = ("fw1", "fw2")
NS = {"fw1": PREFIX + "-fw1", "fw2": PREFIX + "-fw2"}
FW_ADDR = {
    "fw1": {4: {"client_side": "192.0.2.1", "server_side": "198.51.100.1"},
            6: {"client_side": "2001:db8:1::1", "server_side": "2001:db8:2::1"},
            "sync": "203.0.113.1"},
    "fw2": {4: {"client_side": "192.0.2.3", "server_side": "198.51.100.3"},
            6: {"client_side": "2001:db8:1::3", "server_side": "2001:db8:2::3"},
            "sync": "203.0.113.2"},
}


def ha(fn, *args, check=True):
    """Call one function of ha.sh (lab.sh's come along)."""
    r = subprocess.run(
        ["bash", "-c", 'source "$1" && shift && "$@"', "ha", HA_SH, fn, *args],
        capture_output=True,
        text=True,
    )
    if check and r.returncode != 0:
        raise RuntimeError(f"ha.sh {fn} {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def missing_prerequisites():
    """Why the HA lab cannot run here, or None."""
    reason = labpy.missing_prerequisites()
    if reason:
        return reason
    if shutil.which("conntrackd") is None:
        return "conntrackd not found (run tests/lab/deps.sh)"
    return None


class HALab(labpy.Lab):
    """The HA lab; traffic starts through fw1."""

    def up(self, mode="sesame"):
        ha("ha_up", "--" + mode)
        self.fw = ("--" + mode,)
        self.server_kind = None

    def down(self):
        ha("ha_down", check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def mode(self, mode="sesame", nat=False):
        """Load the ruleset on both firewalls (conntrack, counters and
        conntrackd's caches emptied); traffic stays where it is."""
        if nat:
            raise ValueError("the HA lab has no NAT mode")
        ha("ha_fw_load", "--" + mode)
        self.fw = ("--" + mode,)

    def reset(self, mode="sesame"):
        """All links up, traffic through fw1, rulesets reloaded, empty tables."""
        ha("ha_reset", "--" + mode)
        self.fw = ("--" + mode,)

    def move(self, fw, down=False, commit=True):
        """Fail over to `fw`: unless commit=False, replace its kernel table
        by its conntrackd external cache and take over (see ha.sh's ha_move);
        route client and server through it, and with down=True take the
        other firewall's client and server links down."""
        ha("ha_move", fw, *(["--down"] if down else []), *([] if commit else ["--no-commit"]))

    def commit(self, fw):
        """Commit `fw`'s external cache into its kernel table."""
        ha("ha_commit", fw)

    def takeover(self, fw):
        """What `fw` does on becoming primary (ha.sh's ha_takeover): commit,
        flush conntrackd's caches, resync from the kernel, send all to the
        peer."""
        ha("ha_takeover", fw)

    def active(self):
        """The firewall the client routes through: "fw1", "fw2" or "none"."""
        return ha("ha_active").stdout.strip()

    def _fw(self, fw):
        return fw or self.active()

    def conntrack(self, fw=None, *filter_args):
        """Lines of `conntrack -L -p tcp [filter_args]` on a firewall."""
        out = ha("ha_conntrack", self._fw(fw), *filter_args, check=False).stdout
        return [line for line in out.splitlines() if line.startswith("tcp")]

    def cache(self, fw):
        """Lines of `fw`'s conntrackd external cache (the other firewall's
        connections, as synced)."""
        out = ha("ha_ctd", fw, "-e").stdout
        return [line for line in out.splitlines() if line.startswith("tcp")]

    def wait_synced(self, fw, sport, timeout=5.0):
        """Seconds until a TCP connection from client port `sport` shows in
        `fw`'s external cache, or None if it does not within `timeout`."""
        t0 = time.monotonic()
        want = f" sport={sport} "
        while time.monotonic() - t0 < timeout:
            if any(want in line for line in self.cache(fw)):
                return time.monotonic() - t0
            time.sleep(0.02)
        return None

    def forget(self, fw, sport):
        """Delete the connection from client port `sport` from `fw`'s kernel
        table (a firewall that never learned it)."""
        subprocess.run(netns(NS[fw], "conntrack", "-D", "-p", "tcp", "--orig-port-src", str(sport)),
                       capture_output=True, check=False)
        return not any(f" sport={sport} " in line for line in self.conntrack(fw))

    def elements(self, fw=None):
        out = ha("ha_elements", self._fw(fw)).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def wait_elements(self, pred, timeout=5.0, fw=None):
        end = time.monotonic() + timeout
        while True:
            els = self.elements(fw)
            if pred(els) or time.monotonic() > end:
                return els
            time.sleep(0.05)

    def dropped_syns(self, fw=None):
        return int(ha("ha_dropped_syns", self._fw(fw)).stdout.strip() or 0)

    def ruleset(self, fw):
        return subprocess.run(netns(NS[fw], "nft", "list", "ruleset"), capture_output=True,
                              text=True, check=True).stdout

    def daemon(self, fw, *extra, iface=CLIENT_IF):
        """Start ftpsesame -d -D 7 on firewall `fw`; returns it once ready.
        The caller stops it (FwDaemon.stop) or kills it (FwDaemon.kill)."""
        d = FwDaemon(fw, iface, extra)
        if not d.wait_ready():
            d.stop()
            raise RuntimeError(f"daemon on {fw} not ready:\n{d.text()}")
        return d


def session_lines(text, sport, *events):
    """The lines of daemon log `text` about the session of client port
    `sport` that tell one of `events` (`session picked up`, `session init`)."""
    return [line for line in text.splitlines()
            if any(e in line for e in events) and f":{sport}, server" in line]


class FwDaemon(labpy.Daemon):
    """labpy.Daemon, on the named firewall of the HA lab."""

    def __init__(self, fw, iface=CLIENT_IF, extra=(), log_path=None):
        if log_path is None:
            fd, log_path = tempfile.mkstemp(prefix=f"fsha-daemon-{fw}-", suffix=".log")
            os.close(fd)
        self.fw = fw
        self.log_path = log_path
        self.log = open(log_path, "w")
        cmd = netns(NS[fw], labpy.daemon_bin(), "-d", "-D", "7", "-i", iface, *extra)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        self.pid = self.proc.pid

    def kill(self):
        """SIGKILL, as a crash: nothing of the daemon's own clean-up runs."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(5)
        self.log.close()
        return self.proc.returncode


class Control:
    """An FTP control connection held open by the test process, in the client
    namespace, anonymous and in binary mode; data connections use `mode`
    (pasv, epsv, port, eprt).  Every call raises on failure (OSError,
    ftplib.Error), including a socket timeout of `timeout` seconds."""

    def __init__(self, family=4, mode="pasv", timeout=5.0):
        self.family = family
        with in_netns(NS_C):
            self.ftp = ftpget.connect(ADDR[family]["server"], mode, timeout)
        self.sport = self.ftp.sock.getsockname()[1]

    def noop(self):
        """NOOP then PWD; returns the seconds the two round trips took."""
        t0 = time.monotonic()
        self.ftp.voidcmd("NOOP")
        self.ftp.pwd()
        return time.monotonic() - t0

    def get(self, file="small.txt"):
        """Download `file` over a new data connection; True if the bytes are
        the served file's."""
        h = hashlib.sha256()
        with in_netns(NS_C):
            self.ftp.retrbinary("RETR " + file, h.update)
        return h.hexdigest() == labpy.sha256_file(os.path.join(PUB, file))

    def close(self):
        try:
            self.ftp.close()
        except OSError:
            pass

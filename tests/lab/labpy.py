"""Python side of the network lab: drives lab.sh, runs clients, servers and the daemon.

Used by the lab's tests, halab.py and race.py.  Every network action happens inside the lab's
namespaces (`ip netns exec`); this module only starts processes and reads the
firewall's state (set elements, the dropped-SYN counter).
"""

import hashlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
LAB_SH = os.path.join(HERE, "lab.sh")
REPO = os.path.dirname(os.path.dirname(HERE))
PREFIX = os.environ.get("FSLAB", "fslab")
NS_C, NS_FW, NS_S = PREFIX + "-c", PREFIX + "-fw", PREFIX + "-s"
LAB_DIR = os.environ.get("FSLAB_DIR", "/var/tmp/ftpsesame-lab")
PUB = os.path.join(LAB_DIR, "run-" + PREFIX, "pub")
PROFTPD = os.path.join(os.environ.get("FSLAB_PROFTPD_ROOT", LAB_DIR + "/proftpd"), "usr/sbin/proftpd")
CLIENT_IF, SERVER_IF = "to-c", "to-s"
ADDR = {
    4: {"client": "192.0.2.2", "server": "198.51.100.2", "fw_server_side": "198.51.100.1"},
    6: {"client": "2001:db8:1::2", "server": "2001:db8:2::2", "fw_server_side": "2001:db8:2::1"},
}
DATA_MODES = ("pasv", "epsv", "port", "eprt")
# Packet sources after the filter that lab.sh can feed (`--nfqueue`, `--nflog`),
# and the -i each one gives the daemon.
SOURCES = {"nfqueue": "nfqueue:0", "nflog": "nflog:1"}
REQUIRED = os.environ.get("FTPSESAME_E2E") == "required"


def unavailable(reason):
    """Skip the running test, or fail it when FTPSESAME_E2E=required."""
    import pytest  # only the tests call this; race.py runs without pytest

    if REQUIRED:
        pytest.fail(f"FTPSESAME_E2E=required but {reason}")
    pytest.skip(reason)


def daemon_bin():
    return os.environ.get("FTPSESAME_BIN", os.path.join(REPO, "target/release/ftpsesame"))


def missing_daemon_bin():
    """Why the daemon cannot be started, or None."""
    path = daemon_bin()
    if not os.access(path, os.X_OK):
        return f"daemon binary {path} missing (cargo build --release, or set FTPSESAME_BIN)"
    return None


def missing_prerequisites():
    """Why the lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, nftables)"
    for tool in ("ip", "nft", "conntrack", "vsftpd", "curl", "lftp"):
        if shutil.which(tool) is None:
            return f"{tool} not found (run tests/lab/deps.sh)"
    if not os.access(PROFTPD, os.X_OK):
        return f"{PROFTPD} missing (run tests/lab/deps.sh)"
    try:
        import pyftpdlib  # noqa: F401
    except ImportError:
        return "python module pyftpdlib missing (run tests/lab/deps.sh)"
    return None


def missing_inline_prerequisites():
    """Why the lab cannot queue packets here (lab.sh --nfqueue), or None."""
    reason = missing_prerequisites()
    if reason:
        return reason
    for tool in ("iptables-nft", "ip6tables-nft"):
        if shutil.which(tool) is None:
            return f"{tool} not found (run tests/lab/deps.sh)"
    return None


def lab(fn, *args, check=True):
    """Call one function of lab.sh."""
    return subprocess.run(
        ["bash", "-c", 'source "$1" && shift && "$@"', "lab", LAB_SH, fn, *args],
        check=check,
        capture_output=True,
        text=True,
    )


def netns(ns, *cmd):
    return ["ip", "netns", "exec", ns, *cmd]


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Cell:
    """One transfer of the test matrix: server, address family, data mode, client."""

    server: str
    family: int
    mode: str
    client: str

    def __str__(self):
        return f"{self.server}-ipv{self.family}-{self.mode}-{self.client}"

    @property
    def passive(self):
        return self.mode in ("pasv", "epsv")


@dataclass
class Result:
    ok: bool
    seconds: float
    detail: str


class Lab:
    """The three namespaces, one firewall mode and one FTP server at a time."""

    def __init__(self):
        self.server_kind = None
        self.fw = None
        self.tmp = tempfile.mkdtemp(prefix="fslab-out-")

    def up(self):
        lab("lab_up")
        self.fw = ("--sesame",)
        self.server_kind = None

    def down(self):
        lab("lab_down", check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def mode(self, mode="sesame", nat=False, source=None):
        """Load the firewall ruleset (resets the counter and conntrack);
        `source` ("nfqueue" or "nflog") also sends control packets there."""
        args = ("--" + mode,) + (("--nat",) if nat else ()) + (("--" + source,) if source else ())
        lab("lab_fw_load", *args)
        self.fw = args

    def server(self, kind):
        if kind != self.server_kind:
            r = lab("lab_server_start", kind, check=False)
            if r.returncode != 0:
                raise RuntimeError(f"server {kind} did not start: {r.stderr}")
            self.server_kind = kind

    def dropped_syns(self):
        return int(lab("lab_dropped_syns").stdout.strip() or 0)

    def elements(self):
        out = lab("lab_elements").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def wait_elements(self, pred, timeout=5.0):
        """Poll the sets until pred(elements) holds; return the last elements."""
        end = time.monotonic() + timeout
        while True:
            els = self.elements()
            if pred(els) or time.monotonic() > end:
                return els
            time.sleep(0.05)

    def transfer(self, client, family, mode, file="big.bin", timeout=10.0):
        """Download `file` from the server through the firewall; Result.ok only
        when the bytes arrive intact."""
        host = ADDR[family]["server"]
        out = os.path.join(self.tmp, f"{client}-{family}-{mode}.out")
        if os.path.exists(out):
            os.unlink(out)
        cmd = client_command(client, host, family, mode, file, out, timeout)
        t0 = time.monotonic()
        try:
            p = subprocess.run(netns(NS_C, *cmd), capture_output=True, text=True, timeout=timeout + 5)
            rc, err = p.returncode, (p.stderr + p.stdout).strip()
        except subprocess.TimeoutExpired:
            rc, err = -1, "client killed after timeout"
        dt = time.monotonic() - t0
        want = sha256_file(os.path.join(PUB, file))
        got = sha256_file(out) if os.path.exists(out) else None
        if rc == 0 and got == want:
            return Result(True, dt, "checksum ok")
        return Result(False, dt, f"rc={rc} sha256 {'matches' if got == want else 'differs'}: {err[-400:]}")

    def passive_loop(self, n, file="small.txt", limit=120.0, timeout=10.0):
        """`n` passive transfers back to back on one ftplib control connection
        (race.py's client loop); returns its JSON: done, failures, seconds, slowest."""
        cmd = netns(NS_C, "python3", os.path.join(HERE, "race.py"), "--inner", ADDR[4]["server"],
                    str(n), file, str(limit), str(timeout))
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=limit + 60)
        try:
            return json.loads(p.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            raise RuntimeError("transfer loop failed: " + p.stderr[-400:]) from None

    def queue_stats(self):
        """The firewall's bound nfnetlink queues, {number: {"held": packets held
        now, "dropped": packets the kernel dropped because the queue was full,
        "user_dropped": messages it could not deliver}}."""
        p = subprocess.run(netns(NS_FW, "cat", "/proc/net/netfilter/nfnetlink_queue"),
                           capture_output=True, text=True)
        stats = {}
        for line in p.stdout.splitlines():
            f = line.split()
            if len(f) >= 7:
                stats[int(f[0])] = {"held": int(f[2]), "dropped": int(f[5]), "user_dropped": int(f[6])}
        return stats

    def queues(self):
        """The firewall's bound nfnetlink queues: {number: packets held now}."""
        return {n: q["held"] for n, q in self.queue_stats().items()}

    def hold(self, family, mode, timeout=10.0):
        """Start a session that negotiated a data connection and waits; returns
        (process, reply dict).  Write a line to process.stdin to end it."""
        cmd = netns(NS_C, "python3", os.path.join(HERE, "ftpget.py"), "hold",
                    ADDR[family]["server"], mode, "--timeout", str(timeout))
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        line = p.stdout.readline()
        if not line:
            p.kill()
            raise RuntimeError("hold session failed: " + p.stderr.read())
        return p, json.loads(line)


def client_command(client, host, family, mode, file, out, timeout):
    url_host = f"[{host}]" if family == 6 else host
    if client == "curl":
        cmd = ["curl", "-sS", "--max-time", str(timeout), "-o", out]
        if mode == "pasv":
            cmd.append("--disable-epsv")
        elif mode in ("port", "eprt"):
            cmd += ["-P", "-"]
            if mode == "port":
                cmd.append("--disable-eprt")
        return cmd + [f"ftp://{url_host}/{file}"]
    if client == "lftp":
        # lftp negotiates EPSV/EPRT on IPv6 by itself; on IPv4 prefer-epsv picks.
        settings = [
            f"set net:timeout {int(timeout)}",
            "set net:max-retries 1",
            "set net:reconnect-interval-base 1",
            "set ftp:passive-mode " + ("on" if mode in ("pasv", "epsv") else "off"),
            "set ftp:prefer-epsv " + ("yes" if mode == "epsv" else "no"),
        ]
        script = "; ".join(settings + [f"open ftp://{url_host}", f"get {file} -o {out}"])
        return ["lftp", "-c", script]
    if client == "ftplib":
        return ["python3", os.path.join(HERE, "ftpget.py"), "get", host, file, mode, out,
                "--timeout", str(timeout)]
    raise ValueError(client)


class Daemon:
    """ftpsesame running in the firewall namespace, logging to a file."""

    def __init__(self, iface, extra=(), log_path=None):
        if log_path is None:
            fd, log_path = tempfile.mkstemp(prefix="fslab-daemon-", suffix=".log")
            os.close(fd)
        self.log_path = log_path
        self.log = open(log_path, "w")
        cmd = netns(NS_FW, daemon_bin(), "-d", "-D", "7", "-i", iface, *extra)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        self.pid = self.proc.pid  # `ip netns exec` execs the daemon: same pid

    def wait_ready(self, timeout=5.0):
        """Ready once privileges are dropped (capture and firewall are open by
        then).  Returns False if it never got there."""
        proxy_uid = pwd.getpwnam("proxy").pw_uid
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                return False
            st = proc_status(self.pid)
            if st.get("Uid", "").split()[:1] == [str(proxy_uid)]:
                time.sleep(0.1)  # let it enter its capture loop
                return True
            time.sleep(0.02)
        return False

    def text(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def catches(self, sig):
        """True if the daemon handles `sig` (SigCgt in /proc): sending SIGUSR1 to
        a process that does not would kill it."""
        mask = int(proc_status(self.pid).get("SigCgt", "0"), 16)
        return bool(mask & (1 << (int(sig) - 1)))

    def signal(self, sig):
        if self.proc.poll() is None:
            os.kill(self.pid, sig)

    def stop(self, timeout=5.0):
        """SIGTERM, wait; returns the exit code (None if it had to be killed)."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return None
        self.log.close()
        return self.proc.returncode


class cpu_hogs:
    """Context manager: `n` busy loops in the firewall namespace (the daemon's
    competition for the CPUs), killed on exit."""

    def __init__(self, n=2):
        self.n = n
        self.procs = []

    def __enter__(self):
        for _ in range(self.n):
            self.procs.append(subprocess.Popen(netns(NS_FW, "python3", "-c", "while 1: pass")))
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.kill()
            p.wait()
        return False


def proc_status(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    except OSError:
        return {}


# ------------------------------------------------- in-process namespace access
#
# Adversarial and fault tests need sockets (raw ones too) inside the lab's
# namespaces without a subprocess per packet.  setns(2) on CLONE_NEWNET
# changes only the calling thread, and a socket stays in the namespace it was
# created in, so `with in_netns(NS_C): s = socket.socket(...)` is enough.

CLONE_NEWNET = 0x40000000
_libc = None


def _setns(fd):
    global _libc
    if _libc is None:
        import ctypes

        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class in_netns:
    """Context manager: run the block's socket calls in network namespace `ns`
    (a name from `ip netns`); the thread returns to its own namespace after."""

    def __init__(self, ns):
        self.ns = ns

    def __enter__(self):
        self.home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/var/run/netns/{self.ns}", os.O_RDONLY)
        try:
            _setns(target)
        except OSError:
            os.close(self.home)
            raise
        finally:
            os.close(target)
        return self

    def __exit__(self, *exc):
        try:
            _setns(self.home)
        finally:
            os.close(self.home)
        return False


def link_mac(ns, ifname):
    """MAC address of interface `ifname` in namespace `ns`."""
    out = subprocess.run(["ip", "-n", ns, "-j", "link", "show", "dev", ifname],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)[0]["address"]


def nft(ns, script):
    """Feed an nft script to the firewall of namespace `ns`."""
    subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=script,
                   check=True, capture_output=True, text=True)


def lab_up(make, *reasons):
    """Generator behind the tests' `lab` fixtures: the first of `reasons`
    that is not None makes the test unavailable; else yields make() once it
    is up, and always tears it down."""
    for reason in reasons:
        if reason:
            unavailable(reason)
    lab = make()
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


def daemon_starter(make=None, after=None):
    """Generator behind the tests' daemon fixtures: yields start(*args) ->
    make(*args) once that Daemon is ready (by default start(*extra) runs one
    on the client-side interface with `extra` arguments); every daemon
    started is stopped afterwards and, if given, after(daemon) runs for each
    (e.g. to check nothing was left behind)."""
    if make is None:
        make = lambda *extra: Daemon(CLIENT_IF, extra)  # noqa: E731
    started = []

    def start(*args):
        d = make(*args)
        started.append(d)
        assert d.wait_ready(), f"daemon not ready (privileges never dropped):\n{d.text()}"
        return d

    yield start
    for d in started:
        d.stop()
        if after:
            after(d)


def import_scapy():
    """scapy's layers, or None.  Debian's python3-scapy lives in dist-packages,
    which a non-Debian python3 (pyenv, venv) does not search: try it last."""
    try:
        import scapy  # noqa: F401
    except ImportError:
        for d in ("/usr/lib/python3/dist-packages",):
            if os.path.isdir(os.path.join(d, "scapy")) and d not in sys.path:
                sys.path.append(d)
    try:
        import logging

        logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
        from scapy.layers import inet, inet6, l2

        return {
            "Ether": l2.Ether,
            "IP": inet.IP,
            "TCP": inet.TCP,
            "fragment": inet.fragment,
            "IPOption_NOP": inet.IPOption_NOP,
            "IPOption_Router_Alert": inet.IPOption_Router_Alert,
            "IPv6": inet6.IPv6,
            "DestOpt": inet6.IPv6ExtHdrDestOpt,
            "Frag6": inet6.IPv6ExtHdrFragment,
            "HopByHop": inet6.IPv6ExtHdrHopByHop,
        }
    except ImportError:
        return None


def probe(family, from_ns, to_ns, port, timeout=2.0):
    """Real TCP connection from namespace `from_ns` to a listener on `port` in
    `to_ns`, through the firewall: True if it connects."""
    to_addr = ADDR[family]["server" if to_ns == NS_S else "client"]
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    with in_netns(to_ns):
        lst = socket.socket(af, socket.SOCK_STREAM)
    with in_netns(from_ns):
        cli = socket.socket(af, socket.SOCK_STREAM)
    try:
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind((to_addr, port))
        lst.listen(1)
        cli.settimeout(timeout)
        try:
            cli.connect((to_addr, port))
            return True
        except OSError:
            return False
    finally:
        cli.close()
        lst.close()

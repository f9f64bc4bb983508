"""Fidelity under faults: the lines the daemon reassembles against what the FTP server read.

Real FTP sessions run through the lab while the network loses, reorders
and duplicates packets (lab_netem_set: 5 % each by default), the firewall
captures the control traffic on its client-facing interface, and the
servers log every command they read (vsftpd's log_ftp_protocol,
pyftpdlib's debug log).  The capture is then replayed offline through the
daemon (`ftpsesame -r FILE -d -D 7`), which logs each line it reassembled
(`#N command: ...`, `#N reply: ...`), and the two are compared per control
connection:

  * fidelity: the daemon's commands of a connection must be a subsequence
    of the server's: each line it reports equals the server's line at the
    matching position.  Lines may be missing (a gap the capture cannot
    fill), but a line that is not the server's, or is only part of one (a
    gap must be resumed at a whole line), is a divergence.  Divergences =
    the daemon's lines minus the longest common subsequence of both lists;
    the test wants 0.  One exception, counted apart as "unanswered": the
    last lines of a connection that the server's TCP took but its
    application never read (pyftpdlib stalls a connection now and then
    under loss), when they are exactly the lines the client sent after the
    server's last one, as the full capture shows.
  * negotiations: every PASV/EPSV the server answered with 227/229 and
    every PORT/EPRT it answered with 200, found = the daemon allowed that
    port in the same connection.  Found must be > 0; the ratio is reported
    (capture loss may cost some, a stalled session costs all the rest).

The same capture is replayed a second time after deleting 1.5 % of its
packets at random, and a few runs of three consecutive packets of one
connection (both directions at once), to model a capture that loses what
the endpoints still receive; the same invariant must hold.

The workload: W clients, each on an address of its own (192.0.2.10...),
each running sessions one after the other; mostly a scripted ftplib
session (simple commands, commands split over two segments, pipelined
bursts, all four negotiations, small downloads), sometimes curl or lftp.
A server connection is matched to the daemon's session by the client's
address and port: pyftpdlib logs both; vsftpd logs only the address and
the second, so its connections are matched to the capture's handshakes
from that address by time and by the lines the client sent (each
client's sessions never overlap).

    FSLAB=fsnm FTPSESAME_E2E=required python3 -m pytest -v -s tests/lab/test_fidelity.py

FTPSESAME_FIDELITY_COMMANDS (default 1000) is the number of commands per
server; the full run is FTPSESAME_FIDELITY_COMMANDS=10000.
FTPSESAME_FIDELITY_FAULTS="loss dup reorder" (percent, default "5 5 5").
"""

import calendar
import ftplib
import os
import random
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

import pytest

import labpy
from labpy import ADDR, NS_C, in_netns

sys.path.insert(0, labpy.HERE)
import ftpget  # noqa: E402  (the lab's mode-aware ftplib client)

COMMANDS = int(os.environ.get("FTPSESAME_FIDELITY_COMMANDS", "1000"))
FAULTS = os.environ.get("FTPSESAME_FIDELITY_FAULTS", "5 5 5").split()
WORKERS = int(os.environ.get("FTPSESAME_FIDELITY_WORKERS", "12"))
CAPTURE_LOSS = 0.015  # packets deleted from the capture at random
BURSTS = 0.002  # runs of three consecutive packets of one connection deleted
SERVER = ADDR[4]["server"]


def client_addr(i):
    return f"192.0.2.{10 + i}"


# ---------------------------------------------------------------- the workload

SIMPLE = ["NOOP", "PWD", "SYST", "TYPE A", "TYPE I", "CWD /", "CWD nowhere", "SIZE small.txt",
          "MDTM small.txt", "MODE S", "STRU F", "CWD /", "NOOP"]


class Worker(threading.Thread):
    """One client address running sessions back to back until it has sent
    its share of commands.  The thread lives in the client namespace."""

    def __init__(self, index, commands, seed, tmp):
        super().__init__(daemon=True)
        self.addr = client_addr(index)
        self.budget = commands
        self.rng = random.Random(seed)
        self.tmp = tmp
        self.sent = 0
        self.sessions = 0
        self.errors = []

    def run(self):
        with in_netns(NS_C):
            while self.sent < self.budget:
                kind = self.rng.random()
                try:
                    if kind < 0.06:
                        self.curl()
                    elif kind < 0.09:
                        self.lftp()
                    else:
                        self.scripted()
                except (OSError, EOFError, ftplib.Error, subprocess.TimeoutExpired) as e:
                    self.errors.append(f"{type(e).__name__}: {e}")
                    time.sleep(1.0)  # let the server finish the broken session
                self.sessions += 1

    # -- scripted ftplib sessions

    def scripted(self):
        mode = self.rng.choice(ftpget.MODES)
        ftp = ftpget.ModeFTP(mode, timeout=20)
        try:
            ftp.connect(SERVER, 21, source_address=(self.addr, 0))
            ftp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            ftp.login()
            self.sent += 2  # USER, PASS (if asked for: an upper bound is fine)
            for _ in range(self.rng.randint(8, 40)):
                if self.sent >= self.budget:
                    break
                self.step(ftp)
            ftp.sendcmd("QUIT")
            self.sent += 1
            # The server ends the connection after its last log line: only
            # then may this address start its next session.
            ftp.sock.settimeout(20)
            while ftp.sock.recv(4096):
                pass
        finally:
            ftp.close()

    def ask(self, ftp, command):
        """One command and its reply, whatever the reply says."""
        ftp.putcmd(command)
        self.sent += 1
        return ftp.getmultiline()

    def step(self, ftp):
        r = self.rng.random()
        if r < 0.45:
            self.ask(ftp, self.rng.choice(SIMPLE))
        elif r < 0.55:
            # One command in two segments.
            line = self.rng.choice(["NOOP", "PWD", "SYST", "TYPE I"]) + "\r\n"
            cut = self.rng.randint(1, len(line) - 1)
            ftp.sock.sendall(line[:cut].encode())
            time.sleep(0.002)
            ftp.sock.sendall(line[cut:].encode())
            ftp.getmultiline()
            self.sent += 1
        elif r < 0.70:
            # A pipelined burst: each command a segment of its own, or all in one.
            burst = [self.rng.choice(["NOOP", "PWD", "SYST", "TYPE I", "TYPE A"])
                     for _ in range(self.rng.randint(2, 5))]
            data = [(c + "\r\n").encode() for c in burst]
            if self.rng.random() < 0.5:
                data = [b"".join(data)]
            for d in data:
                ftp.sock.sendall(d)
            for _ in burst:
                ftp.getmultiline()
            self.sent += len(burst)
        elif r < 0.90:
            # A negotiation that is not used.
            if ftp.mode in ("pasv", "epsv"):
                ftp.makepasv()
            else:
                ftp.makeport().close()
            self.sent += 1
        else:
            # A download over a negotiated data connection.
            ftp.retrbinary("RETR small.txt", lambda block: None)
            self.sent += 2

    # -- real clients

    def curl(self):
        mode = self.rng.choice(["pasv", "epsv", "port", "eprt"])
        out = os.path.join(self.tmp, f"curl-{self.addr}.out")
        cmd = labpy.client_command("curl", SERVER, 4, mode, "small.txt", out, 20)
        cmd[1:1] = ["--interface", self.addr]
        if mode in ("port", "eprt"):
            cmd[cmd.index("-P") + 1] = self.addr
        subprocess.run(cmd, capture_output=True, timeout=60)
        self.sent += 8

    def lftp(self):
        mode = self.rng.choice(["pasv", "port"])
        out = os.path.join(self.tmp, f"lftp-{self.addr}.out")
        cmd = labpy.client_command("lftp", SERVER, 4, mode, "small.txt", out, 20)
        cmd[2] = f"set net:socket-bind-ipv4 {self.addr}; " + cmd[2]
        subprocess.run(cmd, capture_output=True, timeout=60)
        self.sent += 8


def run_workload(commands, tmp):
    per = max(1, commands // WORKERS)
    workers = [Worker(i, per, 1000 + i, tmp) for i in range(WORKERS)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return workers


# ---------------------------------------------------------------- captures


def read_pcap(path):
    """(header, [(record header, frame)]) of a classic pcap file."""
    with open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack_from("<I", data)[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    out, off = [], 24
    while off + 16 <= len(data):
        incl = struct.unpack_from(endian + "I", data, off + 8)[0]
        out.append((data[off:off + 16], data[off + 16:off + 16 + incl]))
        off += 16 + incl
    return data[:24], out


def tcp_of(frame):
    """(src, sport, dst, dport, flags, seq, payload) of an Ethernet +
    IPv4/IPv6 + TCP frame, or None."""
    etype = struct.unpack_from("!H", frame, 12)[0]
    if etype == 0x0800 and frame[23] == 6:
        ihl = (frame[14] & 0x0F) * 4
        src, dst = socket.inet_ntop(socket.AF_INET, frame[26:30]), socket.inet_ntop(socket.AF_INET, frame[30:34])
        t, end = 14 + ihl, 14 + struct.unpack_from("!H", frame, 16)[0]
    elif etype == 0x86DD and frame[20] == 6:
        src, dst = socket.inet_ntop(socket.AF_INET6, frame[22:38]), socket.inet_ntop(socket.AF_INET6, frame[38:54])
        t, end = 54, 54 + struct.unpack_from("!H", frame, 18)[0]
    else:
        return None
    sport, dport, seq = struct.unpack_from("!HHI", frame, t)
    return src, sport, dst, dport, frame[t + 13], seq, frame[t + (frame[t + 12] >> 4) * 4:end]


def connections(records):
    """Each control connection the server answered, in the order of their
    first SYN: (client address, port, the client's lines as sent on the
    wire up to the first byte the capture lacks, time of the first SYN).  A SYN with a new
    initial sequence number, or after the connection ended (FIN or RST
    seen), starts a new connection on the same port."""
    conns, open_ = [], {}
    for hdr, frame in records:
        t = tcp_of(frame)
        if t is None:
            continue
        src, sport, dst, dport, flags, seq, payload = t
        key = (src, sport) if dport == 21 else (dst, dport)
        if flags & 0x12 == 0x02 and dport == 21:
            # A retransmitted SYN has the same initial sequence number.
            if key not in open_ or open_[key]["isn"] != seq:
                sec, usec = struct.unpack_from("<II", hdr)  # this host writes little-endian
                open_[key] = {"key": key, "answered": False, "isn": seq, "bytes": {}, "time": sec + usec / 1e6}
                conns.append(open_[key])
        elif key in open_:
            c = open_[key]
            if sport == 21:
                c["answered"] = True  # its SYN/ACK, or anything after it
            if flags & 0x05:
                del open_[key]
            elif dport == 21 and payload:
                c["bytes"].setdefault((seq - c["isn"] - 1) & 0xFFFFFFFF, bytes(payload))
    out = []
    for c in conns:
        if not c["answered"]:
            continue
        stream = b""
        for off in sorted(c["bytes"]):
            if off > len(stream):
                break
            stream += c["bytes"][off][len(stream) - off:]
        lines = [normalize(x.rstrip(b"\r").decode("latin-1")) for x in stream.split(b"\n")[:-1]]
        out.append((c["key"][0], c["key"][1], lines, c["time"]))
    return out


def thin_capture(src, dst, seed=7):
    """Write src to dst without 1.5 % of its packets, and without a few runs
    of three consecutive packets of one connection; returns how many went."""
    header, records = read_pcap(src)
    rng = random.Random(seed)
    drop_next = {}  # connection -> packets still to delete
    kept, deleted = [], 0
    for rec in records:
        t = tcp_of(rec[1])
        conn = frozenset([(t[0], t[1]), (t[2], t[3])]) if t else None
        if drop_next.get(conn, 0) > 0:
            drop_next[conn] -= 1
            deleted += 1
            continue
        r = rng.random()
        if r < CAPTURE_LOSS:
            deleted += 1
            continue
        if r < CAPTURE_LOSS + BURSTS and conn is not None:
            drop_next[conn] = 2
            deleted += 1
            continue
        kept.append(rec)
    with open(dst, "wb") as f:
        f.write(header)
        for h, frame in kept:
            f.write(h + frame)
    return deleted, len(records)


# ---------------------------------------------------------------- the two logs


@dataclass
class Conn:
    """One control connection as the server or the daemon saw it."""

    commands: list = field(default_factory=list)
    replies: list = field(default_factory=list)
    # Server: the data ports it agreed to (227/229 replies, 200 to PORT/EPRT).
    # Daemon: the ports it allowed.
    ports: list = field(default_factory=list)
    time: float = 0.0  # vsftpd: when it logged the connection (whole seconds)



def normalize(line):
    """A line as both sides can be compared.  The servers mask passwords,
    and log other bytes than printable ASCII each their own way (vsftpd as
    `?`, pyftpdlib not at all; clients send Telnet IAC sequences before
    ABOR), so only printable characters other than `?` are compared."""
    line = "".join(ch for ch in line if " " <= ch <= "~" and ch != "?")
    return "PASS" if line.upper().startswith("PASS ") else line


def unvis(text):
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


PASV_RE = re.compile(r"^227 .*\((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)")
EPSV_RE = re.compile(r"^229 .*\(\|\|\|(\d+)\|\)")


def active_port(command):
    m = re.match(r"PORT \d+,\d+,\d+,\d+,(\d+),(\d+)$", command, re.I)
    if m:
        return int(m.group(1)) * 256 + int(m.group(2))
    m = re.match(r"EPRT \|\d\|[^|]+\|(\d+)\|$", command, re.I)
    return int(m.group(1)) if m else None


def accepted_ports(conn, whole_replies):
    """Pair each command with its final reply (1xx and the greeting skipped)
    and keep the negotiations the server agreed to.  pyftpdlib logs a
    multi-line reply as one record (whole_replies), vsftpd its lines."""
    finals = [r for r in conn.replies if r[:1] in "2345" and not r.startswith("220")
              and (whole_replies or r[3:4] != "-")]
    for cmd, reply in zip(conn.commands, finals):
        m = PASV_RE.match(reply)
        if m:
            conn.ports.append(int(m.group(5)) * 256 + int(m.group(6)))
        elif (m := EPSV_RE.match(reply)):
            conn.ports.append(int(m.group(1)))
        elif reply.startswith("200") and active_port(cmd) is not None:
            conn.ports.append(active_port(cmd))


def logged(conn, is_command, arg):
    """File one line a server logged for `conn`: a command or a reply."""
    (conn.commands if is_command else conn.replies).append(normalize(arg or ""))


def with_accepted_ports(conns_by_key, whole_replies):
    """`conns_by_key` ({key: [Conn, ...]}) once every Conn in it has its
    accepted ports (see accepted_ports)."""
    for conns in conns_by_key.values():
        for c in conns:
            accepted_ports(c, whole_replies)
    return conns_by_key


def parse_vsftpd(text):
    """{client address: [Conn, ...]} in connection order.  A CONNECT line
    starts a connection; vsftpd logs from a new process after login, so a
    process first seen after that belongs to the address's newest one."""
    by_addr = defaultdict(list)
    pid_conn = {}
    line_re = re.compile(r'\[pid (\d+)\] (?:\[[^\]]*\] )?(CONNECT|FTP command|FTP response): '
                         r'Client "(?:::ffff:)?([^"]+)"(?:, "(.*)")?$')
    for line in text.splitlines():
        m = line_re.search(line)
        if not m:
            continue
        pid, what, addr, arg = m.groups()
        if what == "CONNECT":
            stamp = time.strptime(line[:24], "%a %b %d %H:%M:%S %Y")
            c = Conn(time=calendar.timegm(stamp))  # vsftpd logs GMT (use_localtime=NO)
            by_addr[addr].append(c)
            pid_conn[pid] = c
            continue
        c = pid_conn.get(pid)
        if c is None:
            if not by_addr[addr]:
                continue
            c = pid_conn[pid] = by_addr[addr][-1]
        logged(c, what == "FTP command", arg)
    return with_accepted_ports(by_addr, False)


def parse_pyftpdlib(text):
    """{(client address, port): [Conn, ...]} (a port may be used again)."""
    by_key = defaultdict(list)
    line_re = re.compile(r"\] (?:::ffff:)?([\d.]+):(\d+)-\[[^\]]*\] (<-|->|FTP session opened)(?: (.*))?$")
    for line in text.splitlines():
        m = line_re.search(line)
        if not m:
            continue
        addr, port, what, arg = m.groups()
        key = (addr, int(port))
        if what == "FTP session opened" or not by_key[key]:
            by_key[key].append(Conn())
            if what == "FTP session opened":
                continue
        c = by_key[key][-1]
        logged(c, what == "<-", arg)
    return with_accepted_ports(by_key, True)


def parse_daemon(text):
    """[((client address, port), Conn)] in the daemon's session order."""
    sessions, by_id = [], {}
    for line in text.splitlines():
        m = re.match(r"#(\d+) (session init: client (\S+):(\d+),|command: |reply: |allowing \S+ to \S+ port (\d+))",
                     line)
        if not m:
            continue
        sid = m.group(1)
        if m.group(3):
            c = Conn()
            by_id[sid] = c
            sessions.append(((m.group(3), int(m.group(4))), c))
            continue
        c = by_id.get(sid)
        if c is None:
            continue
        if m.group(5):
            c.ports.append(int(m.group(5)))
        elif m.group(2) == "command: ":
            c.commands.append(normalize(unvis(line[m.end():])))
        else:
            c.replies.append(unvis(line[m.end():]))
    return sessions


def lcs(a, b):
    """Length of the longest common subsequence of two lists."""
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def trailing_extra(daemon, server):
    """How many of the daemon's last lines come after all of the server's
    (greedy subsequence match of the rest)."""
    j = 0
    for i, line in enumerate(daemon):
        while j < len(server) and server[j] != line:
            j += 1
        if j == len(server):
            return len(daemon) - i
        j += 1
    return 0


def first_divergence(daemon, server):
    """The first daemon line that breaks the subsequence (for the message)."""
    j = 0
    for i, line in enumerate(daemon):
        while j < len(server) and server[j] != line:
            j += 1
        if j == len(server):
            return i, line
        j += 1
    return None


@dataclass
class Figures:
    connections: int = 0
    commands: int = 0  # read by the server
    reported: int = 0  # reported by the daemon
    divergences: int = 0
    missing: int = 0
    accepted: int = 0
    found: int = 0
    unmatched: int = 0  # daemon sessions with lines but no server connection
    unanswered: int = 0  # last commands of a connection the server never read nor answered
    examples: list = field(default_factory=list)

    def __str__(self):
        ratio = self.found / self.accepted if self.accepted else 0.0
        return (f"{self.connections} connections, {self.commands} commands read by the server, "
                f"{self.reported} reported by the daemon ({self.missing} missing), "
                f"{self.divergences} divergences; negotiations accepted {self.accepted}, "
                f"found {self.found} ({ratio:.1%}); unmatched daemon sessions {self.unmatched}, "
                f"unanswered last commands {self.unanswered}")


def compare(server_conns, daemon_sessions, wire):
    """server_conns: {(address, port): [Conn, ...]}; the daemon's sessions
    are matched to them in order of occurrence of their (address, port).
    wire: {(address, port): [lines the client sent, ...]} from the full
    capture, the same way."""
    fig = Figures()
    seen = defaultdict(int)
    used = set()
    for key, d in daemon_sessions:
        n = seen[key]
        seen[key] += 1
        conns = server_conns.get(key, [])
        if n >= len(conns):
            if d.commands:
                fig.unmatched += 1
                fig.divergences += len(d.commands)
                fig.examples.append(f"{key}: daemon session with no server connection: {d.commands[:3]}")
            continue
        s = conns[n]
        used.add((key, n))
        common = lcs(d.commands, s.commands)
        bad = len(d.commands) - common
        # Commands at the very end that the server's TCP took but its
        # application never read (pyftpdlib stalls a connection now and
        # then under loss): lines the client sent after the last one the
        # server read, as the full capture shows them, in order. A capture
        # with loss may miss some of them, as it may miss any line, so the
        # daemon's tail must be a subsequence of what was sent after that
        # point (all of it, in a full capture, since nothing is missed).
        tail = trailing_extra(d.commands, s.commands)
        sent = wire.get(key, [])
        sent = sent[n] if n < len(sent) else []
        after = sent[len(s.commands):]
        if (bad and bad == tail and sent[:len(s.commands)] == s.commands
                and lcs(d.commands[-tail:], after) == tail):
            fig.unanswered += tail
            fig.reported -= tail
            bad = 0
        fig.reported += len(d.commands)
        fig.divergences += bad
        if bad and len(fig.examples) < 5:
            i, line = first_divergence(d.commands, s.commands)
            fig.examples.append(f"{key}: daemon line {i} {line!r} not in the server's sequence; "
                                f"daemon {d.commands[max(0, i - 3):i + 3]} server has {len(s.commands)} lines")
        allowed = set(d.ports)
        fig.accepted += len(s.ports)
        fig.found += sum(1 for p in s.ports if p in allowed)
    for key, conns in server_conns.items():
        for n, s in enumerate(conns):
            fig.connections += 1
            fig.commands += len(s.commands)
            if (key, n) not in used:
                fig.accepted += len(s.ports)
    fig.missing = fig.commands - (fig.reported - fig.divergences)
    return fig


def common_prefix(a, b):
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def server_connections(kind, text, caps):
    """{(client address, port): [Conn, ...]}.  vsftpd does not log the
    client's port: each connection of the capture takes the vsftpd
    connection from the same address, logged between its SYN and the
    address's next connection, whose commands start most like the lines
    the client sent (the
    capture itself may lack a handshake: tcpdump can drop packets).  A
    vsftpd connection left over is kept under port -1, -2...: its
    commands count, as missing."""
    if kind == "pyftpdlib":
        return parse_pyftpdlib(text)
    by_addr = parse_vsftpd(text)
    out = defaultdict(list)
    for addr, conns in by_addr.items():
        if addr == SERVER:
            continue  # lab_wait_port's probe from the server's own namespace
        free = list(range(len(conns)))
        mine = [c for c in caps if c[0] == addr]
        for i, (_, port, lines, t) in enumerate(mine):
            # Logged after the SYN (retransmitted SYNs may delay it) and
            # before this address's next connection began.
            until = mine[i + 1][3] if i + 1 < len(mine) else float("inf")
            near = [j for j in free if int(t) - 1 <= conns[j].time <= until + 1]
            if not near:
                continue
            best = max(near, key=lambda j: (common_prefix(conns[j].commands, lines), -abs(conns[j].time - t)))
            free.remove(best)
            out[(addr, port)].append(conns[best])
        for k, j in enumerate(free):
            out[(addr, -1 - k)].append(conns[j])
    return out


def replay(pcap):
    p = subprocess.run([labpy.daemon_bin(), "-r", pcap, "-d", "-D", "7"], capture_output=True,
                       text=True, errors="replace", timeout=600)
    assert p.returncode == 0, f"replay failed ({p.returncode}): {p.stderr[-2000:]}"
    return p.stderr + p.stdout


# ---------------------------------------------------------------- the test


@pytest.fixture(scope="module")
def lab():
    reason = labpy.missing_prerequisites()
    if reason:
        labpy.unavailable(reason)
    for tool in ("tcpdump", "tc", "iptables-nft"):
        if shutil.which(tool) is None:
            labpy.unavailable(f"{tool} not found")
    reason = labpy.missing_daemon_bin()
    if reason:
        labpy.unavailable(reason)
    lab = labpy.Lab()
    try:
        lab.up()
        labpy.lab("lab_client_addrs", str(WORKERS))
        yield lab
    finally:
        labpy.lab("lab_netem_clear", check=False)
        labpy.lab("lab_capture_stop", check=False)
        lab.down()


@pytest.mark.parametrize("kind", ["vsftpd", "pyftpdlib"])
def test_fidelity_under_faults(lab, kind):
    # Data connections through an open port range: what is measured is the
    # replay, not the live firewall.
    lab.mode("open")
    r = labpy.lab("lab_server_start_logged", kind, check=False)
    assert r.returncode == 0, f"{kind} did not start: {r.stderr}"
    lab.server_kind = kind + "-logged"
    # Kept after the run (the lab's run directory) for a look at what failed.
    pcap = os.path.join(labpy.LAB_DIR, "run-" + labpy.PREFIX, f"fidelity-{kind}.pcap")
    how = labpy.lab("lab_netem_set", *FAULTS).stdout.strip()
    t0 = time.monotonic()
    try:
        labpy.lab("lab_capture_start", pcap)
        workers = run_workload(COMMANDS, lab.tmp)
        time.sleep(1.0)  # the last packets into the capture file
    finally:
        captured = labpy.lab("lab_capture_stop", check=False).stdout.strip()
        impaired = labpy.lab("lab_netem_clear", check=False).stdout.strip()
    seconds = time.monotonic() - t0
    time.sleep(0.5)  # the server's last log lines
    log_path = os.path.join(labpy.LAB_DIR, "run-" + labpy.PREFIX, "protocol.log")
    with open(log_path, errors="replace") as f:
        server_log = f.read()
    shutil.copy(log_path, pcap + ".server.log")
    labpy.lab("lab_server_stop")
    lab.server_kind = None
    errors = [e for w in workers for e in w.errors]
    print(f"\n{kind}: faults {FAULTS} ({how}) for {seconds:.0f} s; {sum(w.sessions for w in workers)} sessions, "
          f"{len(errors)} client errors {errors[:3]}; capture: {captured!r}; impairers: {impaired!r}")

    _, records = read_pcap(pcap)
    caps = connections(records)
    server = server_connections(kind, server_log, caps)
    wire = defaultdict(list)
    for addr, port, lines, _ in caps:
        wire[(addr, port)].append(lines)
    full = compare(server, parse_daemon(replay(pcap)), wire)
    print(f"{kind} full capture ({len(records)} packets): {full}")
    for e in full.examples:
        print("   ", e)

    thin = pcap + ".thin"
    deleted, total = thin_capture(pcap, thin)
    lossy = compare(server, parse_daemon(replay(thin)), wire)
    print(f"{kind} capture without {deleted} of {total} packets: {lossy}")
    for e in lossy.examples:
        print("   ", e)

    assert full.commands >= COMMANDS * 0.9, f"workload too small: {full.commands} commands"
    # Not vacuous: the daemon reported lines, and a line it did not get
    # right would count.
    assert full.reported >= full.commands // 2, f"the daemon reported too few lines: {full}"
    daemon = parse_daemon(replay(pcap))
    planted = next(d for _, d in daemon if len(d.commands) > 3)
    planted.commands[2] += "X"
    assert compare(server, daemon, wire).divergences == full.divergences + 1, "a planted divergence went unseen"
    assert full.divergences == 0, f"full capture: {full}\n" + "\n".join(full.examples)
    assert lossy.divergences == 0, f"capture with loss: {lossy}\n" + "\n".join(lossy.examples)
    assert full.found > 0 and lossy.found > 0, f"no negotiation found: {full} / {lossy}"

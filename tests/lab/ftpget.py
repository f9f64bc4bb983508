#!/usr/bin/env python3
"""FTP client with an explicit data-connection mode, run inside the client namespace.

Python's ftplib picks PASV/PORT for IPv4 and EPSV/EPRT for IPv6 by itself; the lab
needs each of the four negotiations on demand, so this client overrides the two
places where ftplib chooses (makepasv, makeport).

    ftpget.py get HOST FILE MODE OUT [--timeout S]
        download FILE anonymously with MODE (pasv, epsv, port, eprt) into OUT;
        prints one JSON line {"bytes": N, "sha256": ...}; exit 1 on failure.
    ftpget.py hold HOST MODE [--timeout S]
        log in, negotiate one data connection with MODE but never use it, print
        one JSON line {"reply": "227 ...", "port": N}, then wait for a line on
        stdin before QUIT: keeps a session (and its firewall hole) alive on demand.
"""

import argparse
import ftplib
import hashlib
import json
import socket
import sys

MODES = ("pasv", "epsv", "port", "eprt")


class ModeFTP(ftplib.FTP):
    """ftplib.FTP that negotiates data connections exactly as `mode` says."""

    def __init__(self, mode, timeout):
        super().__init__(timeout=timeout)
        self.mode = mode
        self.set_pasv(mode in ("pasv", "epsv"))
        self.last_reply = ""
        self.last_port = 0

    def makepasv(self):
        peer = self.sock.getpeername()[0]
        if self.mode == "pasv":
            self.last_reply = self.sendcmd("PASV")
            # Like ftplib's default: connect to the control peer, not the
            # address in the reply.
            _, port = ftplib.parse227(self.last_reply)
        else:
            self.last_reply = self.sendcmd("EPSV")
            _, port = ftplib.parse229(self.last_reply, peer)
        self.last_port = port
        return peer, port

    def makeport(self):
        host = self.sock.getsockname()[0]
        sock = socket.socket(self.sock.family, socket.SOCK_STREAM)
        sock.bind((host, 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        if self.mode == "port":
            self.last_reply = self.sendport(host, port)
        else:
            self.last_reply = self.sendeprt(host, port)
        self.last_port = port
        sock.settimeout(self.timeout)
        return sock


def connect(host, mode, timeout):
    ftp = ModeFTP(mode, timeout)
    ftp.connect(host, 21)
    ftp.login()
    ftp.voidcmd("TYPE I")
    return ftp


def get(args):
    ftp = connect(args.host, args.mode, args.timeout)
    digest = hashlib.sha256()
    size = 0
    with open(args.out, "wb") as out:

        def sink(block):
            nonlocal size
            digest.update(block)
            size += len(block)
            out.write(block)

        ftp.retrbinary("RETR " + args.file, sink)
    ftp.quit()
    print(json.dumps({"bytes": size, "sha256": digest.hexdigest()}), flush=True)


def hold(args):
    ftp = connect(args.host, args.mode, args.timeout)
    if args.mode in ("pasv", "epsv"):
        ftp.makepasv()
    else:
        listener = ftp.makeport()  # keep the listener open while we hold
        del listener
    print(json.dumps({"reply": ftp.last_reply, "port": ftp.last_port}), flush=True)
    sys.stdin.readline()
    ftp.quit()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("get")
    g.add_argument("host")
    g.add_argument("file")
    g.add_argument("mode", choices=MODES)
    g.add_argument("out")
    g.add_argument("--timeout", type=float, default=10)
    h = sub.add_parser("hold")
    h.add_argument("host")
    h.add_argument("mode", choices=MODES)
    h.add_argument("--timeout", type=float, default=10)
    args = p.parse_args()
    try:
        get(args) if args.cmd == "get" else hold(args)
    except (OSError, EOFError, ftplib.Error) as e:
        print(f"ftpget: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

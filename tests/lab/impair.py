#!/usr/bin/env python3
"""Packet loss, reordering and duplication in user space, for kernels without `tc netem`.

    impair.py QUEUE LOSS DUP REORDER [--delay MS] [--seed N]

Binds NFQUEUE number QUEUE (the caller's iptables-nft rule sends packets to
it) and gives each packet one verdict: dropped with probability LOSS %,
otherwise accepted; with probability REORDER % the verdict waits --delay ms
(default 5) while later packets pass, so they overtake it; with probability
DUP % an extra copy is sent a millisecond later through a raw socket (it
takes the host's output path, so the queue never sees it again).  Runs until
SIGTERM; prints its counters on stderr when it ends.

Plain netlink, no library: nfnetlink_queue's config, packet and verdict
messages are a handful of fixed structures.
"""

import argparse
import heapq
import random
import select
import signal
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS = 1, 2
NFQA_PACKET_HDR, NFQA_PAYLOAD = 1, 10
NFQA_VERDICT_HDR = 2
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_PACKET = 2
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2
NF_DROP, NF_ACCEPT = 0, 1


def attr(kind, data):
    a = struct.pack("=HH", 4 + len(data), kind) + data
    return a + b"\0" * (-len(a) % 4)


def message(kind, queue, attrs, flags=NLM_F_REQUEST):
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue)) + b"".join(attrs)
    return struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | kind, flags, 0, 0) + body


def attrs_of(data):
    out = {}
    while len(data) >= 4:
        length, kind = struct.unpack_from("=HH", data)
        if length < 4:
            break
        out[kind & 0x7FFF] = data[4:length]
        data = data[(length + 3) & ~3:]
    return out


class Impairer:
    def __init__(self, queue, loss, dup, reorder, delay, seed):
        self.queue = queue
        self.p_loss, self.p_dup, self.p_reorder = loss / 100, dup / 100, reorder / 100
        self.delay = delay / 1000
        self.rng = random.Random(seed)
        self.nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.nl.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        self.nl.bind((0, 0))
        self.raw = {
            4: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW),
            6: socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW),
        }
        self.held = []  # (release time, seq, verdict id)
        self.copies = []  # (send time, seq, packet)
        self.n = 0
        self.counts = {"packets": 0, "dropped": 0, "reordered": 0, "duplicated": 0}
        self.config(attr(NFQA_CFG_CMD, struct.pack("=BBH", NFQNL_CFG_CMD_BIND, 0, 0)))
        self.config(attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0xFFFF, NFQNL_COPY_PACKET)))

    def config(self, a):
        self.nl.send(message(NFQNL_MSG_CONFIG, self.queue, [a], NLM_F_REQUEST | NLM_F_ACK))
        reply = self.nl.recv(65536)
        _, kind = struct.unpack_from("=IH", reply)
        if kind == NLMSG_ERROR:
            err = struct.unpack_from("=i", reply, 16)[0]
            if err:
                raise OSError(-err, f"nfqueue config: error {-err}")

    def verdict(self, pid, v):
        self.nl.send(message(NFQNL_MSG_VERDICT, self.queue, [attr(NFQA_VERDICT_HDR, struct.pack("!II", v, pid))]))

    def packet(self, body):
        a = attrs_of(body[4:])  # past nfgenmsg
        if NFQA_PACKET_HDR not in a:
            return
        pid = struct.unpack_from("!I", a[NFQA_PACKET_HDR])[0]
        payload = a.get(NFQA_PAYLOAD, b"")
        self.counts["packets"] += 1
        now = time.monotonic()
        r = self.rng.random
        if r() < self.p_loss:
            self.counts["dropped"] += 1
            self.verdict(pid, NF_DROP)
            return
        if payload and r() < self.p_dup:
            self.counts["duplicated"] += 1
            self.n += 1
            heapq.heappush(self.copies, (now + 0.001, self.n, payload))
        if r() < self.p_reorder:
            self.counts["reordered"] += 1
            self.n += 1
            heapq.heappush(self.held, (now + self.delay, self.n, pid))
            return
        self.verdict(pid, NF_ACCEPT)

    def send_copy(self, pkt):
        version = pkt[0] >> 4
        try:
            if version == 4:
                self.raw[4].sendto(pkt, (socket.inet_ntop(socket.AF_INET, pkt[16:20]), 0))
            elif version == 6:
                self.raw[6].sendto(pkt, (socket.inet_ntop(socket.AF_INET6, pkt[24:40]), 0))
        except OSError:
            pass  # a lost duplicate is only a duplicate

    def due(self):
        now = time.monotonic()
        while self.held and self.held[0][0] <= now:
            self.verdict(heapq.heappop(self.held)[2], NF_ACCEPT)
        while self.copies and self.copies[0][0] <= now:
            self.send_copy(heapq.heappop(self.copies)[2])
        nxt = [q[0][0] for q in (self.held, self.copies) if q]
        return max(0.0, min(nxt) - now) if nxt else None

    def run(self):
        stop = []
        signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
        signal.signal(signal.SIGINT, lambda *_: stop.append(1))
        print("impair: ready", file=sys.stderr, flush=True)
        while not stop:
            timeout = self.due()
            try:
                ready, _, _ = select.select([self.nl], [], [], 0.5 if timeout is None else timeout)
            except InterruptedError:
                continue
            if not ready:
                continue
            data = self.nl.recv(1 << 17)
            while len(data) >= 16:
                length, kind = struct.unpack_from("=IH", data)
                if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                    self.packet(data[16:length])
                data = data[(length + 3) & ~3:]
        for _, _, pid in self.held:
            self.verdict(pid, NF_ACCEPT)
        print("impair: " + ", ".join(f"{k} {v}" for k, v in self.counts.items()), file=sys.stderr, flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("queue", type=int)
    p.add_argument("loss", type=float)
    p.add_argument("dup", type=float)
    p.add_argument("reorder", type=float)
    p.add_argument("--delay", type=float, default=5.0, help="ms a reordered packet waits")
    p.add_argument("--seed", type=int, default=None)
    a = p.parse_args()
    Impairer(a.queue, a.loss, a.dup, a.reorder, a.delay, a.seed).run()


if __name__ == "__main__":
    main()

"""A userspace delay/jitter shim on an NFQUEUE (this kernel has no ``sch_netem``).

Run inside a lab namespace, it binds netfilter queue ``--queue``, receives only each
packet's metadata (never its payload) and gives the kernel its ACCEPT verdict once the
packet's delay has passed: ``delay ± jitter`` milliseconds, drawn uniformly per packet.
With jitter, packets may be reordered, as with netem.  The iptables rule sending packets
here uses ``--queue-bypass``, so traffic flows (undelayed) if the shim is not running;
the queue is configured fail-open, so a full queue never drops traffic either.

Speaks nfnetlink_queue directly over a netlink socket (no libnetfilter_queue needed):

    python -m warpgate.lab.delay --queue 0 --delay-ms 25 --jitter-ms 5
"""

from __future__ import annotations

import argparse
import heapq
import logging
import os
import random
import select
import signal
import socket
import struct
import sys
import time

log = logging.getLogger(__name__)

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_CFG_QUEUE_MAXLEN = 3
NFQA_CFG_MASK = 4
NFQA_CFG_FLAGS = 5
NFQA_CFG_F_FAIL_OPEN = 1
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NF_ACCEPT = 1
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLMSG_ERROR = 2
QUEUE_MAXLEN = 8192
#: A shim never runs longer than this (``lab down`` normally stops it long before).
MAX_LIFETIME = 7 * 24 * 3600.0


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _message(msg: int, queue: int, attrs: bytes, seq: int, flags: int = NLM_F_REQUEST) -> bytes:
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue)) + attrs
    kind = (NFNL_SUBSYS_QUEUE << 8) | msg
    return struct.pack("=IHHII", 16 + len(body), kind, flags, seq, 0) + body


def _parse_attrs(data: bytes, pos: int, end: int) -> dict[int, bytes]:
    attrs = {}
    while pos + 4 <= end:
        length, kind = struct.unpack_from("=HH", data, pos)
        if length < 4:
            break
        attrs[kind & 0x7FFF] = data[pos + 4 : pos + length]
        pos += length + (-length % 4)
    return attrs


class DelayShim:
    """Holds each queued packet's verdict until its delay has passed."""

    def __init__(self, queue: int, delay_ms: float, jitter_ms: float, seed: int | None = None):
        self.queue = queue
        self.delay = delay_ms / 1000.0
        self.jitter = jitter_ms / 1000.0
        self.rng = random.Random(seed)
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((0, 0))
        self.seq = 0
        self.pending: list[tuple[float, int]] = []  # heap of (due time, packet id)

    def _request(self, msg: int, attrs: bytes) -> None:
        """Send a config request and wait (bounded) for the kernel's acknowledgement."""
        self.seq += 1
        self.sock.send(_message(msg, self.queue, attrs, self.seq, NLM_F_REQUEST | NLM_F_ACK))
        self.sock.settimeout(2.0)
        try:
            data = self.sock.recv(65536)
        finally:
            self.sock.settimeout(None)
        _length, kind = struct.unpack_from("=IH", data)
        if kind == NLMSG_ERROR:
            errno = -struct.unpack_from("=i", data, 16)[0]
            if errno:
                raise OSError(errno, f"nfqueue config: {os.strerror(errno)}")

    def bind(self) -> None:
        cmd = struct.pack("!BBH", NFQNL_CFG_CMD_BIND, 0, 0)
        self._request(NFQNL_MSG_CONFIG, _attr(NFQA_CFG_CMD, cmd))
        params = struct.pack("!IB", 0, NFQNL_COPY_META)
        flags = struct.pack("!I", NFQA_CFG_F_FAIL_OPEN)
        self._request(
            NFQNL_MSG_CONFIG,
            _attr(NFQA_CFG_PARAMS, params)
            + _attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", QUEUE_MAXLEN))
            + _attr(NFQA_CFG_MASK, flags)
            + _attr(NFQA_CFG_FLAGS, flags),
        )

    def _verdict(self, packet_id: int) -> None:
        self.seq += 1
        hdr = struct.pack("!II", NF_ACCEPT, packet_id)
        self.sock.send(
            _message(NFQNL_MSG_VERDICT, self.queue, _attr(NFQA_VERDICT_HDR, hdr), self.seq)
        )

    def _receive(self, now: float) -> None:
        data = self.sock.recv(1 << 16, socket.MSG_DONTWAIT)
        pos = 0
        while pos + 16 <= len(data):
            length, kind = struct.unpack_from("=IH", data, pos)
            if length < 16:
                break
            if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                attrs = _parse_attrs(data, pos + 20, pos + length)
                hdr = attrs.get(NFQA_PACKET_HDR)
                if hdr is not None:
                    packet_id = struct.unpack_from("!I", hdr)[0]
                    wait = self.delay + self.rng.uniform(-self.jitter, self.jitter)
                    heapq.heappush(self.pending, (now + max(0.0, wait), packet_id))
            pos += length + (-length % 4)

    def serve(self, stop: list[bool], max_lifetime: float = MAX_LIFETIME) -> None:
        deadline = time.monotonic() + max_lifetime
        while not stop[0] and time.monotonic() < deadline:
            now = time.monotonic()
            while self.pending and self.pending[0][0] <= now:
                self._verdict(heapq.heappop(self.pending)[1])
            # Short idle wake-ups so a SIGTERM (which only sets a flag) ends us promptly.
            timeout = 0.1 if not self.pending else min(0.1, max(0.0, self.pending[0][0] - now))
            try:
                if select.select([self.sock], [], [], timeout)[0]:
                    self._receive(time.monotonic())
            except InterruptedError:
                continue
            except BlockingIOError:
                continue
            except OSError as exc:  # ENOBUFS: the kernel dropped messages; go on
                log.warning("nfqueue %d: %s", self.queue, exc)
        for _due, packet_id in self.pending:  # release what is held before leaving
            self._verdict(packet_id)
        self.pending.clear()

    def close(self) -> None:
        self.sock.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="NFQUEUE delay/jitter shim")
    parser.add_argument("--queue", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, required=True)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    stop = [False]

    def on_signal(signum: int, frame: object) -> None:
        stop[0] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    shim = DelayShim(args.queue, args.delay_ms, args.jitter_ms)
    try:
        shim.bind()
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        shim.serve(stop)
    finally:
        shim.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

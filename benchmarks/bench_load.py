"""A node under load: many inbound links and a flood of garbage on its TCP and UDP ports,
while a real peer measures its echo latency.

The *hub* node and the real *peer* run in this process (127.0.0.1).  Other processes,
started by this script, play the crowd and the attackers:

* ``crowd``: opens ``--links`` authenticated links to the hub and keeps them open, idle;
* ``tcp-flood``: ``--tcp-conns`` connections that send random bytes as fast as they can
  (each is dropped by the hub at its first bad frame and opened again);
* ``udp-flood``: random datagrams as fast as one process can send them, a quarter of them
  dressed as first UDP handshake messages from ever new senders (each costs the hub
  the Noise work of an answer and a half-open handshake slot).

Phases: baseline (hub and peer alone), crowd (links idle), crowd + flood.  For each:
median and 99th-percentile echo round trip of 64-byte messages over the peer's TCP link
(and, alone and under the flood, over a UDP link too, with the rounds lost), and the ratio
to the baseline of the same transport; the hub process's peak RSS (``resource.getrusage``); what the
hub dropped.  Prints numbers; asserts nothing.

    python benchmarks/bench_load.py [--links 1000] [--rounds 400] [--flood-seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from warpgate import NODE_TEST_CONF, Node, auto_connect, dict_child
from warpgate.link.tcp import LINK_MAGIC

HERE = os.path.abspath(__file__)
ROOT = os.path.dirname(os.path.dirname(HERE))


def raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# --- the other processes -------------------------------------------------------------


async def crowd(address_hex: str, links: int) -> None:
    raise_fd_limit(links + 200)
    conf = dict_child({"identity_name": "crowd"}, NODE_TEST_CONF)
    async with Node(ip="127.0.0.1", port=0, conf=conf) as node:
        await node.start()
        address = bytes.fromhex(address_hex)
        opened = []
        for start in range(0, links, 50):
            batch = await asyncio.gather(
                *(
                    auto_connect(node, address, methods=["direct"], timeout=60)
                    for _ in range(min(50, links - start))
                )
            )
            opened += [link for link, _ in batch]
        print(f"ready {len(opened)}", flush=True)
        # Hold the links until the parent closes our stdin.
        await asyncio.to_thread(sys.stdin.read)


async def tcp_flood(port: int, conns: int, seconds: float) -> None:
    end = time.monotonic() + seconds
    sent = 0
    junk = random.randbytes(1 << 16)

    async def one() -> None:
        nonlocal sent
        while time.monotonic() < end:
            try:
                _reader, writer = await asyncio.open_connection("127.0.0.1", port)
                # Half start like a link (the magic), half not: both paths of the parser.
                writer.write(LINK_MAGIC if random.random() < 0.5 else b"")
                while time.monotonic() < end:
                    writer.write(junk[: random.randrange(1, len(junk))])
                    await writer.drain()
                    sent += 1
            except (ConnectionError, OSError):
                await asyncio.sleep(0.001)

    await asyncio.gather(*(one() for _ in range(conns)))
    print(f"tcp-flood writes {sent}", flush=True)


def udp_flood(port: int, seconds: float) -> None:
    end = time.monotonic() + seconds
    sent = 0
    junk = [random.randbytes(n) for n in (1, 37, 100, 600, 1200)]
    key = random.randbytes(32)  # any 32 bytes pass as an X25519 ephemeral key
    pad = bytes(256 - 37)  # first handshake messages must be padded to 256 bytes
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        while time.monotonic() < end:
            for i in range(256):
                if i % 4 == 0:  # a new sender index each time: a new half-open handshake
                    data = b"\xd0" + (sent & 0xFFFFFFFF).to_bytes(4, "big") + key + pad
                else:
                    data = junk[i % 5]
                try:
                    sock.sendto(data, ("127.0.0.1", port))
                    sent += 1
                except OSError:
                    pass
    print(f"udp-flood datagrams {sent}", flush=True)


# --- the hub and the measuring peer ---------------------------------------------------


async def echo_rounds(link: Any, rounds: int) -> list[float]:
    times = []
    payload = b"x" * 64
    for _ in range(rounds):
        begin = time.perf_counter()
        await link.send(payload)
        await link.recv(timeout=30)
        times.append(time.perf_counter() - begin)
    return times


async def udp_echo_rounds(link: Any, rounds: int) -> tuple[list[float], int]:
    """Like :func:`echo_rounds` over a UDP link, which may lose messages: a round whose
    echo is not back within 0.5 s counts as lost (late echoes are skipped)."""
    times, lost = [], 0
    for i in range(rounds):
        payload = i.to_bytes(4, "big") + b"x" * 60
        begin = time.perf_counter()
        await link.send(payload)
        try:
            async with asyncio.timeout(0.5):
                while await link.recv() != payload:
                    pass
            times.append(time.perf_counter() - begin)
        except TimeoutError:
            lost += 1
    return times, lost


def summary(times: list[float]) -> tuple[float, float]:
    ordered = sorted(times)
    return statistics.median(ordered) * 1e3, ordered[int(len(ordered) * 0.99) - 1] * 1e3


def spawn(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.Popen(
        [sys.executable, HERE, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


async def main(links: int, rounds: int, flood_seconds: float, tcp_conns: int) -> None:
    raise_fd_limit(links + 500)
    hub_conf = dict_child({"identity_name": "hub", "handshake_timeout": 2.0}, NODE_TEST_CONF)
    peer_conf = dict_child({"identity_name": "peer"}, NODE_TEST_CONF)
    async with (
        Node(ip="127.0.0.1", port=0, conf=hub_conf) as hub,
        Node(ip="127.0.0.1", port=0, conf=peer_conf) as peer,
    ):
        await hub.start()
        await peer.start()
        accepted: list[Any] = []

        async def serve() -> None:
            while True:
                link = await hub.accept()
                accepted.append(link)
                if link.remote_key == peer.public_key:
                    echoes.add(asyncio.create_task(echo(link)))

        async def echo(link: Any) -> None:
            async for msg in link:
                await link.send(msg)

        echoes: set[asyncio.Task[None]] = set()
        server = asyncio.create_task(serve())
        link, _ = await auto_connect(peer, hub.address(), methods=["direct"])
        ulink, _ = await auto_connect(peer, hub.address(), methods=["direct"], transport="udp")
        await echo_rounds(link, 50)  # warm-up
        await udp_echo_rounds(ulink, 50)
        rows = []

        base = await echo_rounds(link, rounds)
        rows.append(("baseline (hub + peer)", base, peak_rss_mib(), {}))
        ubase, ulost = await udp_echo_rounds(ulink, rounds)
        rows.append(("  same, over a UDP link", ubase, peak_rss_mib(), {"lost": ulost}))

        started = time.perf_counter()
        crowd_proc = spawn("crowd", hub.address().hex(), str(links))
        assert crowd_proc.stdout is not None
        line = await asyncio.to_thread(crowd_proc.stdout.readline)
        crowd_open = time.perf_counter() - started
        for _ in range(200):
            if len(accepted) >= links + 1:
                break
            await asyncio.sleep(0.05)
        with_crowd = await echo_rounds(link, rounds)
        rows.append((f"{links} idle inbound links", with_crowd, peak_rss_mib(), {}))

        before = (hub.dropped_connections, hub.dropped_datagrams, hub.udp.dropped)
        floods = [
            spawn("tcp-flood", str(hub.listen_port), str(tcp_conns), str(flood_seconds)),
            spawn("udp-flood", str(hub.listen_port), str(flood_seconds)),
        ]
        await asyncio.sleep(1.0)  # let the flood build up
        flooded = await echo_rounds(link, rounds)
        uflooded, uflood_lost = await udp_echo_rounds(ulink, rounds)
        flood_reports = [(await asyncio.to_thread(p.communicate))[0].strip() for p in floods]
        listener = hub.listeners[0]
        udp_queue_drops = listener.udp_protocol.dropped if listener.udp_protocol else 0
        dropped = {
            "tcp connections dropped": hub.dropped_connections - before[0],
            "datagrams dropped": hub.dropped_datagrams - before[1],
            "udp-link datagrams dropped": hub.udp.dropped - before[2],
            "datagrams dropped at the queue": udp_queue_drops,
        }
        rows.append(
            (f"{links} links + TCP and UDP garbage flood", flooded, peak_rss_mib(), dropped)
        )
        rows.append(("  same, over a UDP link", uflooded, peak_rss_mib(), {"lost": uflood_lost}))

        alive = sum(not inbound.closed for inbound in accepted)
        assert crowd_proc.stdin is not None
        crowd_proc.stdin.close()
        await asyncio.to_thread(crowd_proc.wait, 30)
        server.cancel()

    base_median = summary(base)[0]
    ubase_median = summary(ubase)[0]
    print(
        f"crowd: {line.strip()} links opened in {crowd_open:.1f} s; hub links still open "
        f"after the flood: {alive}"
    )
    print(f"attackers: {'; '.join(flood_reports)}")
    print()
    print(
        f"{'phase':42} {'median ms':>10} {'p99 ms':>8} {'x baseline':>10} {'hub peak RSS MiB':>17}"
    )
    for name, times, rss, extra in rows:
        median, p99 = summary(times)
        ref = ubase_median if "UDP link" in name else base_median
        print(f"{name:42} {median:10.3f} {p99:8.3f} {median / ref:10.2f} {rss:17.1f}")
        for key, value in extra.items():
            print(f"    {key}: {value}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("crowd", "tcp-flood", "udp-flood"):
        role, rest = sys.argv[1], sys.argv[2:]
        os.environ.setdefault("WARPGATE_HOME", tempfile.mkdtemp(prefix=f"bench-load-{role}-"))
        if role == "crowd":
            asyncio.run(crowd(rest[0], int(rest[1])))
        elif role == "tcp-flood":
            asyncio.run(tcp_flood(int(rest[0]), int(rest[1]), float(rest[2])))
        else:
            udp_flood(int(rest[0]), float(rest[1]))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--links", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=400)
    parser.add_argument("--flood-seconds", type=float, default=8.0)
    parser.add_argument("--tcp-conns", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        os.environ["WARPGATE_HOME"] = home
        asyncio.run(main(args.links, args.rounds, args.flood_seconds, args.tcp_conns))

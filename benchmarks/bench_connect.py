"""Time to first echoed message: warpgate auto_connect vs a plain asyncio TCP connect.

Baseline: ``asyncio.open_connection`` to an echo server on loopback, send 5 bytes,
read them back.  Measured: ``auto_connect`` (direct method, authenticated and
encrypted link) to a node whose inbound links echo, send 5 bytes, receive them back.
Target (issue 4): warpgate <= 3x the baseline.

Connecting again to a peer resumes a ticket from the first link (the short handshake of
``warpgate.sansio.link_resumption``); that is the measured case.  The first link between
two nodes (the full handshake: the dialler's tickets are dropped before each run) is
measured and printed beside it, and so is TLS 1.3 from the standard library (``ssl``,
OpenSSL: an ECDSA P-256 server certificate, the client verifying it; no client
certificate, so one side less authenticated than a warpgate link) as a reference.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import statistics
import tempfile
import time
from pathlib import Path

from warpgate import NODE_TEST_CONF, Node, auto_connect, dict_child
from warpgate.testing.certs import self_signed


async def plain_echo_server(tls: ssl.SSLContext | None = None) -> tuple[asyncio.Server, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass  # a TLS client may close without close_notify
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=tls)
    return server, server.sockets[0].getsockname()[1]


async def baseline_once(port: int, tls: ssl.SSLContext | None = None) -> float:
    begin = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
    writer.write(b"hello")
    await reader.readexactly(5)
    elapsed = time.perf_counter() - begin
    writer.close()
    try:
        await writer.wait_closed()
    except ConnectionError:
        pass
    return elapsed


def tls13_contexts(directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts for TLS 1.3 with a self-signed P-256 certificate."""
    cert, key = self_signed(directory)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(cert)
    for context in (server, client):
        context.minimum_version = ssl.TLSVersion.TLSv1_3
    return server, client


async def main(runs: int, home: Path) -> None:
    server, port = await plain_echo_server()
    tls_server_context, tls_client = tls13_contexts(home / "tls")
    tls_server, tls_port = await plain_echo_server(tls_server_context)
    conf_a = dict_child({"identity_name": "bench-a"}, NODE_TEST_CONF)
    conf_b = dict_child({"identity_name": "bench-b"}, NODE_TEST_CONF)
    async with (
        Node(ip="127.0.0.1", port=0, conf=conf_a) as a,
        Node(ip="127.0.0.1", port=0, conf=conf_b) as b,
    ):
        await a.start()
        await b.start()

        async def echo_links() -> None:
            async def serve(link):  # type: ignore[no-untyped-def]
                async for msg in link:
                    await link.send(msg)

            async with asyncio.TaskGroup() as tg:
                while True:
                    tg.create_task(serve(await b.accept()))

        echo_task = asyncio.create_task(echo_links())
        address = b.address()

        async def warpgate_once(first_link: bool = False) -> float:
            if first_link:
                a.link_tickets.forget(b.public_key)
            begin = time.perf_counter()
            link, _ = await auto_connect(a, address)
            await link.send(b"hello")
            await link.recv()
            elapsed = time.perf_counter() - begin
            await link.close()
            return elapsed

        await baseline_once(port)
        await warpgate_once()  # warm-up: key derivation caches, imports
        base = [await baseline_once(port) for _ in range(runs)]
        ours = [await warpgate_once() for _ in range(runs)]
        first = [await warpgate_once(first_link=True) for _ in range(runs)]
        await baseline_once(tls_port, tls_client)
        tls = [await baseline_once(tls_port, tls_client) for _ in range(runs)]
        echo_task.cancel()
    for listening in (server, tls_server):
        listening.close()
        await listening.wait_closed()
    b_med, w_med = statistics.median(base) * 1000, statistics.median(ours) * 1000
    f_med = statistics.median(first) * 1000
    t_med = statistics.median(tls) * 1000
    print(f"runs: {runs}")
    print(f"baseline asyncio connect + echo: median {b_med:.3f} ms")
    print(f"warpgate auto_connect + echo:   median {w_med:.3f} ms (resumed link)")
    print(f"ratio {w_med / b_med:.2f}x (target <= 3x)")
    print(f"first link (full handshake):    median {f_med:.3f} ms, {f_med / b_med:.2f}x")
    print(f"reference, TLS 1.3 (stdlib ssl): median {t_med:.3f} ms, {t_med / b_med:.2f}x")


def stand_in_for_x25519() -> None:
    """Diagnostic only (``--x25519-stand-in``): replace the handshakes' X25519 key
    generation and DH by a pooled key and a hash of the two public keys, so what the
    rest of a connect costs can be read off.  Never for anything but this measurement."""
    import hashlib
    import itertools

    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from warpgate.sansio import noise

    pool = itertools.cycle([X25519PrivateKey.generate() for _ in range(64)])

    def ephemeral(self: noise.NoiseHandshake) -> X25519PrivateKey:
        if self._e is None:
            self._e = next(pool)
        return self._e

    def dh(private: X25519PrivateKey, public: bytes) -> bytes:
        low, high = sorted((private.public_key().public_bytes_raw(), bytes(public)))
        return hashlib.sha256(low + high).digest()

    noise.NoiseHandshake._ephemeral = ephemeral  # type: ignore[method-assign]
    noise._dh = dh


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument(
        "--x25519-stand-in",
        action="store_true",
        help="diagnostic: X25519 replaced by a hash, to show what everything else costs",
    )
    args = parser.parse_args()
    if args.x25519_stand_in:
        stand_in_for_x25519()
    with tempfile.TemporaryDirectory() as home:
        os.environ["WARPGATE_HOME"] = home
        asyncio.run(main(args.runs, Path(home)))

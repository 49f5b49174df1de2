"""Send a file to a peer found by nickname, checked with SHA-256 at the other end.

Terminal 1 (also runs the name, STUN and MQTT servers, on loopback):

    python contrib/examples/transfer.py receive bob --embedded infra.json -o inbox/

Terminal 2:

    python contrib/examples/transfer.py send photo.jpg bob --conf infra.json

The file goes over the link's byte stream (``link.stream()``), after a header with
its name, size and hash; the receiver answers whether the hash matched.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
from pathlib import Path

from common import add_infra_options, conf_for

from warpgate import Gate

CHUNK = 1 << 20


async def send(gate: Gate, path: Path, to: str) -> int:
    data = path.read_bytes()
    link = await gate.connect(gate.peer.find(to))
    header = {"name": path.name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    await link.send(json.dumps(header).encode())
    await link.stream().write(data)
    verdict = (await link.recv(timeout=60)).decode()
    await link.close()
    print(f"* sent {path.name} ({len(data)} bytes): receiver says {verdict}", flush=True)
    return 0 if verdict == "ok" else 1


async def receive(gate: Gate, out_dir: Path) -> int:
    print(f"* {gate.full_name} waiting for a file", flush=True)
    link = await gate.accept()
    header = json.loads(await link.recv(timeout=30))
    stream, digest, left = link.stream(), hashlib.sha256(), header["size"]
    target = out_dir / Path(header["name"]).name  # never a path the sender chose
    with target.open("wb") as f:
        while left:
            chunk = await stream.readexactly(min(CHUNK, left))
            f.write(chunk)
            digest.update(chunk)
            left -= len(chunk)
    ok = digest.hexdigest() == header["sha256"]
    await link.send(b"ok" if ok else b"checksum mismatch")
    await asyncio.sleep(0.1)  # let the answer leave before closing
    await link.close()
    if not ok:
        target.unlink()
    print(f"* {'received' if ok else 'discarded'} {target} ({header['size']} bytes)", flush=True)
    return 0 if ok else 1


async def main(args: argparse.Namespace) -> int:
    async with conf_for(args) as conf, Gate(args.name, conf, port=args.port) as gate:
        if args.command == "send":
            return await send(gate, args.file, args.to)
        return await receive(gate, args.output)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    sender = commands.add_parser("send", help="send FILE to TO")
    sender.add_argument("file", type=Path)
    sender.add_argument("to", help="the receiver's nickname")
    sender.add_argument("--as", dest="name", default="sender", help="your nickname")
    receiver = commands.add_parser("receive", help="wait for one file")
    receiver.add_argument("name", help="your nickname")
    receiver.add_argument("-o", "--output", type=Path, default=Path("."))
    for sub in (sender, receiver):
        add_infra_options(sub)
    try:
        sys.exit(asyncio.run(main(parser.parse_args())))
    except KeyboardInterrupt:
        sys.exit(130)

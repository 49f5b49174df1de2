"""Chat between two Gates, found by nickname.

Terminal 1 (also runs the name, STUN and MQTT servers, on loopback):

    python contrib/examples/chat.py alice --embedded infra.json

Terminal 2:

    python contrib/examples/chat.py bob --conf infra.json --to alice

Each line typed is sent to the other side, which prints it as ``bob.p2p> ...``.
Ctrl-D (end of input) leaves the chat; the other side is told and exits too.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from common import add_infra_options, conf_for, stdin_lines

from warpgate import Gate, Link, LinkClosed


async def chat(link: Link, me: str) -> None:
    await link.send(me.encode())  # first message: who we are
    them = (await link.recv(timeout=10)).decode()
    print(f"* chatting with {them} over {link.path}", flush=True)

    async def show() -> None:
        async for msg in link:  # ends when the peer leaves
            print(f"{them}> {msg.decode(errors='replace')}", flush=True)
        print(f"* {them} left", flush=True)

    async def type_lines() -> None:
        async for line in stdin_lines():
            await link.send(line.encode())

    shown = asyncio.create_task(show())
    typed = asyncio.create_task(type_lines())
    await asyncio.wait([shown, typed], return_when=asyncio.FIRST_COMPLETED)
    typed.cancel()
    await link.close("bye")
    await shown


async def main(args: argparse.Namespace) -> None:
    async with conf_for(args) as conf, Gate(args.name, conf, port=args.port) as gate:
        me = gate.full_name or args.name
        if args.to:
            link = await gate.connect(gate.peer.find(args.to))
        else:
            print(f"* {me} waiting for someone to chat with", flush=True)
            link = await gate.accept()
        try:
            await chat(link, me)
        except LinkClosed:
            print("* the other side went away", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="your nickname")
    parser.add_argument("--to", help="nickname to chat with (default: wait for them)")
    add_infra_options(parser)
    try:
        asyncio.run(main(parser.parse_args()))
    except KeyboardInterrupt:
        sys.exit(130)

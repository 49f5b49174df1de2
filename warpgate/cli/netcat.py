"""``warpgate listen`` / ``warpgate connect``: stdin and stdout over an authenticated,
encrypted link, like netcat.

Each side sends what it reads from stdin and writes what the peer sends to stdout; at
end of input it tells the peer (a half-close, as with TCP).  The session ends when both
sides have finished sending, or when the link breaks.  Status goes to stderr.

On the wire each link message starts with a type byte: ``d`` data, ``e`` end of input.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from warpgate.cli.peer_options import (
    CommandError,
    StdinReader,
    accept_one,
    add_common,
    add_target,
    connect_to_target,
    quiet_logs,
    run_command,
    started_gate,
)
from warpgate.link.link import Link, LinkClosed

DATA, END = b"d", b"e"


def add_parser(commands: argparse._SubParsersAction) -> None:
    listen = commands.add_parser(
        "listen",
        help="wait for one peer; stdin/stdout over the link (like nc -l)",
        description=(
            "Start a node, register --name with the PNP servers and/or write "
            "--address-file, wait for one peer ('warpgate connect'), then copy stdin to "
            "the peer and the peer's data to stdout until both sides end their input."
        ),
    )
    listen.add_argument("--name", help="nickname to register (and keystore identity)")
    add_common(listen, serving=True)
    listen.set_defaults(func=cmd_listen)

    connect = commands.add_parser(
        "connect",
        help="connect to a peer by NAME or ADDRFILE; stdin/stdout over the link (like nc)",
        description=(
            "Connect to a listening peer by nickname (alice or alice.p2p), address file "
            "or address text, trying every traversal method, then copy stdin to the "
            "peer and the peer's data to stdout."
        ),
    )
    add_target(connect, "connect")
    add_common(connect, serving=False)
    connect.set_defaults(func=cmd_connect)


def cmd_listen(args: argparse.Namespace) -> int:
    quiet_logs(args)
    return run_command(_listen(args), "listen")


def cmd_connect(args: argparse.Namespace) -> int:
    quiet_logs(args)
    return run_command(_connect(args), "connect")


async def _listen(args: argparse.Namespace) -> int:
    identity = args.name or "listen"
    async with started_gate(args, identity, register=args.name) as gate:
        link = await accept_one(gate, args, doing="listening", who="peers", peer_command="connect")
        return await pump(link)


async def _connect(args: argparse.Namespace) -> int:
    async with started_gate(args, args.identity) as gate:
        return await pump(await connect_to_target(gate, args))


async def pump(link: Link) -> int:
    """Copy stdin to the link and the link to stdout until both directions end."""
    reader = StdinReader()
    out = sys.stdout.buffer
    peer_done = asyncio.Event()

    async def upstream() -> None:
        while True:
            chunk = await reader.queue.get()
            if not chunk:
                await link.send(END)
                return
            await link.send(DATA + chunk)

    async def downstream() -> None:
        async for msg in link:
            kind, body = msg[:1], msg[1:]
            if kind == DATA:
                out.write(body)
                out.flush()
            elif kind == END:
                peer_done.set()
                return
        raise LinkClosed("the peer closed the link before ending its input")

    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(upstream())
            tg.create_task(downstream())
    except* (LinkClosed, OSError) as group:
        raise CommandError(
            f"the link broke: {group.exceptions[0]}", "check the peer; -v shows more"
        ) from None
    finally:
        await link.close()
    return 0

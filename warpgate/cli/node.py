"""``warpgate node``: start a node, print its address, run until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path

from warpgate.node.node import Node
from warpgate.node.node_defs import NODE_CONF, NODE_TEST_CONF
from warpgate.sansio.address import NodeAddress


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "node",
        help="start a node and print its address; runs until Ctrl-C",
        description=(
            "Start a warpgate node with the default configuration (NODE_CONF), print "
            "its address in a copyable text form, and serve until interrupted."
        ),
    )
    parser.add_argument("--port", type=int, default=None, help="listen port (default: derived)")
    parser.add_argument(
        "--ip", action="append", default=None, help="listen only on this address (repeatable)"
    )
    parser.add_argument(
        "--name", default=None, help="identity name in the keystore (default: 'node')"
    )
    parser.add_argument(
        "--test-conf",
        action="store_true",
        help="use NODE_TEST_CONF: no NTP, STUN, UPnP, signalling or nickname",
    )
    parser.add_argument(
        "--address-file", type=Path, help="also write the binary address to this file"
    )
    parser.add_argument("--quiet", action="store_true", help="no per-phase progress lines")
    parser.set_defaults(func=cmd_node)


def cmd_node(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    conf = dict(NODE_TEST_CONF if args.test_conf else NODE_CONF)
    if args.name:
        conf["identity_name"] = args.name
    node = Node(ip=args.ip, port=args.port, conf=conf)
    loop = asyncio.get_running_loop()
    async with node:
        await node.start(out=not args.quiet)
        text = NodeAddress.decode(node.address()).to_text()
        print(f"node id:  {node.node_id}")
        print(f"port:     {node.listen_port} (tcp+udp)")
        print(f"address:  {text}")
        if args.address_file:
            args.address_file.write_bytes(node.address())
            print(f"address written to {args.address_file}")
        # Handlers first: whoever reads "serving" may press Ctrl-C at once.
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):  # Windows
                loop.add_signal_handler(sig, node.request_stop)
        print("serving; press Ctrl-C to stop", flush=True)
        await node.wait_stopped()
    print("stopped", file=sys.stderr)
    return 0

"""What both examples share: the conf that finds the other peer, and stdin lines."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from warpgate import NODE_CONF, dict_child
from warpgate.demo import EmbeddedInfra


def add_infra_options(parser: argparse.ArgumentParser) -> None:
    # 0: any free port.  The default port is derived from the machine id, so two
    # peers on one machine (as when trying the examples) would want the same one.
    parser.add_argument("--port", type=int, default=0, help="listen port (default: any)")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--conf", type=Path, help="JSON conf naming the servers to use")
    group.add_argument(
        "--embedded",
        type=Path,
        metavar="CONF_OUT",
        help="start name, STUN and MQTT servers on 127.0.0.1 here; write their conf",
    )


@contextlib.asynccontextmanager
async def conf_for(args: argparse.Namespace) -> AsyncIterator[dict[str, Any]]:
    """The node conf: from --conf, or from servers this process runs (--embedded)."""
    if args.conf is not None:
        yield dict_child(json.loads(args.conf.read_text()), NODE_CONF)
        return
    with tempfile.TemporaryDirectory() as tmp:
        async with EmbeddedInfra(Path(tmp)) as infra:
            infra.write_conf(args.embedded)
            print(f"* servers up; the other side uses --conf {args.embedded}", flush=True)
            try:
                yield dict_child(infra.conf(), NODE_CONF)
            finally:
                args.embedded.unlink(missing_ok=True)


async def stdin_lines() -> AsyncIterator[str]:
    """Lines typed on stdin, without blocking the event loop (a daemon thread reads, so
    a pending read never keeps the program alive)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str] = asyncio.Queue()

    def read() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, line)
        loop.call_soon_threadsafe(queue.put_nowait, "")

    threading.Thread(target=read, daemon=True).start()
    while line := await queue.get():
        yield line.rstrip("\n")

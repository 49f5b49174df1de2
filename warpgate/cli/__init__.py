"""The ``warpgate`` command."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence

from warpgate._version import __version__
from warpgate.errors import WarpgateError

log = logging.getLogger("warpgate.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="warpgate",
        description="Direct peer-to-peer links across NATs and firewalls.",
        epilog="Run 'warpgate COMMAND --help' for a command's options. Docs: docs/index.md",
    )
    parser.add_argument("--version", action="version", version=f"warpgate {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    from warpgate.cli import demo, nat, netcat, node, plugins, serve, transfer

    demo.add_parser(commands)
    netcat.add_parser(commands)
    transfer.add_parser(commands)
    plugins.add_parser(commands)
    node.add_parser(commands)
    nat.add_parser(commands)
    serve.add_parser(commands)
    try:
        from warpgate.lab import cli as lab_cli
    except ImportError as exc:  # the lab is Linux-only; the rest of the CLI is not
        log.debug("lab commands unavailable: %s", exc)
    else:
        lab_cli.add_parser(commands)
    return parser


def _terminate(signum: int, frame: object) -> None:
    # Commands that serve (node, serve) install their own SIGTERM handler on their loop.
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if argv is None:  # the real command: SIGTERM (systemd, timeout, kill) cleans up as Ctrl-C
        with contextlib.suppress(ValueError, OSError):
            signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("warpgate: interrupted; everything it started was stopped", file=sys.stderr)
        return 130
    except WarpgateError as exc:
        print(f"warpgate: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if argv is None:  # the real command, not a test calling main([...])
            # The work is over: a Ctrl-C now would only interrupt interpreter shutdown
            # (joining worker threads) and end the process without a word.
            with contextlib.suppress(ValueError, OSError):
                signal.signal(signal.SIGINT, signal.SIG_IGN)


if __name__ == "__main__":
    sys.exit(main())

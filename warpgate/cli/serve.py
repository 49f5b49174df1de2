"""``warpgate serve``: run the infrastructure a deployment needs, embedded.

``warpgate serve stun --listen IP[:PORT] [--alternate IP[:PORT]]`` runs a STUN server
(RFC 5780 behaviour tests with an alternate address); ``warpgate serve mqtt --listen
IP[:PORT]`` runs the embedded MQTT broker for signalling.  Each prints what it serves and
the conf a node needs to use it, then runs until Ctrl-C or SIGTERM (exit status 0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from warpgate.errors import UnavailableError

log = logging.getLogger(__name__)

STUN_PORT = 3478
MQTT_PORT = 1883


def parse_endpoint(text: str) -> tuple[str, int | None]:
    """``IP``, ``IP:PORT``, ``[IPv6]:PORT`` or a bare IPv6 → (ip, port or None)."""
    text = text.strip()
    port: int | None = None
    host = text
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise argparse.ArgumentTypeError(f"bad address {text!r}")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise argparse.ArgumentTypeError(f"bad address {text!r}")
            port = _port(rest[1:], text)
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = _port(port_text, text)
    try:
        ip = str(ipaddress.ip_address(host))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{host!r} is not an IP address") from None
    return ip, port


def _port(text: str, whole: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad port in {whole!r}") from None
    if not 0 <= port <= 0xFFFF:
        raise argparse.ArgumentTypeError(f"port out of range in {whole!r}")
    return port


def _fmt(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser(
        "serve",
        help="run infrastructure: a STUN server, an MQTT broker",
        description=(
            "Run a piece of infrastructure in this process until Ctrl-C: a STUN server "
            "(with two addresses it answers RFC 5780 NAT behaviour tests) or the embedded "
            "MQTT broker for signalling.  Each prints the conf nodes need to use it."
        ),
    )
    services = parser.add_subparsers(dest="service", metavar="SERVICE")
    parser.set_defaults(func=lambda args: _print_help(parser))

    stun_parser = services.add_parser(
        "stun",
        help="a STUN server (RFC 8489; RFC 5780 tests with --alternate)",
        description=(
            "Serve STUN Binding over UDP and TCP.  With --alternate (a second IP of this "
            "host) it binds IP:PORT, IP:ALTPORT, ALTIP:PORT and ALTIP:ALTPORT and answers "
            "the RFC 5780 tests (OTHER-ADDRESS, CHANGE-REQUEST) that 'warpgate nat' runs."
        ),
    )
    stun_parser.add_argument(
        "--listen",
        required=True,
        type=parse_endpoint,
        metavar="IP[:PORT]",
        help=f"primary address (port {STUN_PORT} if omitted; 0 = any free port)",
    )
    stun_parser.add_argument(
        "--alternate",
        type=parse_endpoint,
        metavar="IP[:PORT]",
        help="second IP (and port, default primary port + 1) for RFC 5780",
    )
    stun_parser.add_argument(
        "--rate", type=float, default=None, help="requests per second per source IP"
    )
    stun_parser.add_argument("--burst", type=int, default=None, help="token bucket size")
    stun_parser.add_argument("--no-tcp", action="store_true", help="serve UDP only")
    stun_parser.set_defaults(func=cmd_stun)

    mqtt_parser = services.add_parser(
        "mqtt",
        help="the embedded MQTT broker for signalling (needs warpgate[server])",
        description="Run the embedded MQTT broker (amqtt) that nodes use for signalling.",
    )
    mqtt_parser.add_argument(
        "--listen",
        required=True,
        type=parse_endpoint,
        metavar="IP[:PORT]",
        help=f"address to listen on (port {MQTT_PORT} if omitted; 0 = any free port)",
    )
    mqtt_parser.set_defaults(func=cmd_mqtt)


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _error(text: str) -> int:
    print(f"warpgate: error: {text}", file=sys.stderr, flush=True)
    return 1


async def _serve_until_signal(stop: Callable[[], Awaitable[None]]) -> None:
    """Wait for SIGINT/SIGTERM, then run ``stop``."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # Windows
            loop.add_signal_handler(sig, stopping.set)
            installed.append(sig)
    print("serving; press Ctrl-C to stop", flush=True)
    try:
        await stopping.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await stop()
    print("stopped", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- stun


def cmd_stun(args: argparse.Namespace) -> int:
    return asyncio.run(_run_stun(args))


async def _run_stun(args: argparse.Namespace) -> int:
    from warpgate.stun.server import StunServer

    ip, port = args.listen
    conf: dict[str, Any] = {"tcp": not args.no_tcp}
    if args.rate is not None:
        conf["rate"] = args.rate
    if args.burst is not None:
        conf["burst"] = args.burst
    alt_ip, alt_port = args.alternate if args.alternate else (None, None)
    try:
        server = StunServer((ip, STUN_PORT if port is None else port), alt_ip, alt_port, conf=conf)
    except ValueError as exc:
        return _error(str(exc))
    try:
        await server.start()
    except OSError as exc:
        return _error(f"cannot listen on {_fmt(ip, port or STUN_PORT)}: {exc.strerror or exc}")
    try:
        primary = _fmt(*server.primary)
        transports = "udp" if args.no_tcp else "udp+tcp"
        print(f"STUN server on {primary} ({transports})", flush=False)
        if server.other_address is not None:
            print(f"  RFC 5780: other address {_fmt(*server.other_address)}")
            print("  listening " + ", ".join(_fmt(*a) for a in server.addresses))
        else:
            print("  no alternate address: CHANGE-REQUEST answered with 420 (plain STUN)")
        if ipaddress.ip_address(server.primary[0]).is_unspecified:
            print("  (replace the wildcard address with one clients can reach)")
        print("client conf:")
        print(f'  "stun_servers": {json.dumps([primary])}', flush=True)
    except BaseException:
        await server.close()
        raise
    await _serve_until_signal(server.close)
    return 0


# ---------------------------------------------------------------------- mqtt


def cmd_mqtt(args: argparse.Namespace) -> int:
    return asyncio.run(_run_mqtt(args))


async def _run_mqtt(args: argparse.Namespace) -> int:
    from warpgate.serve.mqtt_broker import EmbeddedMqttBroker

    ip, port = args.listen
    port = MQTT_PORT if port is None else port
    broker = EmbeddedMqttBroker(ip, port)
    amqtt_log = logging.getLogger("amqtt")
    quiet = logging.getLogger().getEffectiveLevel() >= logging.WARNING
    saved = amqtt_log.level
    if quiet:  # amqtt logs a traceback for a bind error; we print one line instead
        amqtt_log.setLevel(logging.CRITICAL)
    try:
        await broker.start()
    except UnavailableError as exc:
        return _error(str(exc))
    except Exception as exc:  # amqtt wraps bind errors in its own exception types
        await broker.stop()
        cause = exc
        while cause.__cause__ is not None and not isinstance(cause, OSError):
            cause = cause.__cause__  # type: ignore[assignment]
        why = cause.strerror if isinstance(cause, OSError) and cause.strerror else cause
        return _error(f"cannot listen on {_fmt(ip, port)}: {why}")
    finally:
        amqtt_log.setLevel(saved)
    print(f"MQTT broker on {broker.url} (anonymous; signal messages are end-to-end encrypted)")
    print("client conf:")
    print(f'  "mqtt_brokers": {json.dumps([broker.url])}', flush=True)
    await _serve_until_signal(broker.stop)
    return 0

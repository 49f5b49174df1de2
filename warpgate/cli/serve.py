"""``warpgate serve``: run the infrastructure a deployment needs, embedded.

``warpgate serve`` alone runs everything in one process: a PNP name server, a STUN
server and the embedded MQTT broker (``--no-pnp``, ``--no-stun``, ``--no-mqtt`` switch
one off).  ``warpgate serve pnp|stun|mqtt --listen IP[:PORT]`` runs one service with
its own options.  Each prints what it serves and the conf a node needs to use it, then
runs until Ctrl-C or SIGTERM (exit status 0); a port in use is a one-line error and
exit status 1.
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
from warpgate.net.hostport import format_hostport
from warpgate.serve.stack import (
    MQTT_PORT,
    PNP_PORT,
    STUN_PORT,
    ServeError,
    ServeOptions,
    ServeStack,
    bind_error_text,
)

log = logging.getLogger(__name__)


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


def _default_db() -> str:
    from warpgate.identity.paths import default_install_path

    return str(default_install_path() / "pnp.db")


def _add_pnp_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        default=None,
        metavar="PATH|URL",
        help="name store: a SQLite file (default: pnp.db in the data directory, "
        "$WARPGATE_HOME), sqlite:///path or postgresql://user:pass@host/db",
    )
    parser.add_argument(
        "--names-per-ip",
        type=int,
        default=20,
        help="live names one IPv4 address or IPv6 /64 may hold (default 20)",
    )
    parser.add_argument(
        "--pnp-rate", type=float, default=50.0, help="PNP requests per second per address"
    )
    parser.add_argument("--pnp-burst", type=float, default=100.0, help="PNP token bucket size")
    parser.add_argument(
        "--max-ttl", type=int, default=30 * 86400, help="longest name lifetime, seconds"
    )


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "serve",
        help="run infrastructure: PNP names + STUN + MQTT broker, or one of them",
        description=(
            "Run infrastructure in this process until Ctrl-C.  Without a SERVICE: a PNP "
            "name server, a STUN server and the embedded MQTT broker together (switch "
            "one off with --no-pnp, --no-stun, --no-mqtt).  With a SERVICE: only that one.  "
            "Prints the conf nodes need to use what runs."
        ),
    )
    parser.add_argument(
        "--listen",
        dest="all_listen",
        type=parse_endpoint,
        default=("127.0.0.1", None),
        metavar="IP",
        help="address every service listens on (default 127.0.0.1; 0.0.0.0 or :: for all)",
    )
    parser.add_argument("--no-pnp", action="store_true", help="no PNP name server")
    parser.add_argument("--no-stun", action="store_true", help="no STUN server")
    parser.add_argument("--no-mqtt", action="store_true", help="no MQTT broker")
    parser.add_argument(
        "--pnp-port", type=int, default=PNP_PORT, help=f"PNP port, UDP+TCP (default {PNP_PORT})"
    )
    parser.add_argument(
        "--stun-port", type=int, default=STUN_PORT, help=f"STUN port (default {STUN_PORT})"
    )
    parser.add_argument(
        "--mqtt-port", type=int, default=MQTT_PORT, help=f"MQTT port (default {MQTT_PORT})"
    )
    parser.add_argument(
        "--stun-alternate",
        metavar="IP",
        default=None,
        help="a second IP of this host: the STUN server then answers RFC 5780 tests",
    )
    _add_pnp_options(parser)
    services = parser.add_subparsers(dest="service", metavar="SERVICE")
    parser.set_defaults(func=cmd_all)

    pnp_parser = services.add_parser(
        "pnp",
        help="a PNP name server (nicknames), on SQLite or PostgreSQL",
        description=(
            "Serve PNP (Peer Name Protocol) over UDP and TCP on one port: signed "
            "registrations of nicknames, first key owns a name until it expires.  "
            "Storage on a SQLite file or a PostgreSQL database (--db URL)."
        ),
    )
    pnp_parser.add_argument(
        "--listen",
        required=True,
        type=parse_endpoint,
        metavar="IP[:PORT]",
        help=f"address to listen on (port {PNP_PORT} if omitted; 0 = any free port)",
    )
    _add_pnp_options(pnp_parser)
    pnp_parser.set_defaults(func=cmd_pnp)

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
        where = format_hostport(ip, port or STUN_PORT)
        return _error(f"cannot listen on {where}: {exc.strerror or exc}")
    try:
        primary = format_hostport(*server.primary)
        transports = "udp" if args.no_tcp else "udp+tcp"
        print(f"STUN server on {primary} ({transports})", flush=False)
        if server.other_address is not None:
            print(f"  RFC 5780: other address {format_hostport(*server.other_address)}")
            print("  listening " + ", ".join(format_hostport(*a) for a in server.addresses))
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
    from warpgate.serve.mqtt_broker import EmbeddedMqttBroker, quiet_amqtt

    ip, port = args.listen
    port = MQTT_PORT if port is None else port
    broker = EmbeddedMqttBroker(ip, port)
    try:
        with quiet_amqtt():  # a bind error is one line here, not amqtt's traceback
            await broker.start()
    except UnavailableError as exc:
        return _error(str(exc))
    except Exception as exc:  # amqtt wraps bind errors in its own exception types
        await broker.stop()
        return _error(f"cannot listen on {format_hostport(ip, port)}: {bind_error_text(exc)}")
    print(f"MQTT broker on {broker.url} (anonymous; signal messages are end-to-end encrypted)")
    print("client conf:")
    print(f'  "mqtt_brokers": {json.dumps([broker.url])}', flush=True)
    await _serve_until_signal(broker.stop)
    return 0


# ---------------------------------------------------------------------- pnp and all


def _options(args: argparse.Namespace, **overrides: Any) -> ServeOptions:
    return ServeOptions(
        store=args.db or _default_db(),
        names_per_ip=args.names_per_ip,
        rate=args.pnp_rate,
        burst=args.pnp_burst,
        max_ttl=args.max_ttl,
        **overrides,
    )


def cmd_pnp(args: argparse.Namespace) -> int:
    ip, port = args.listen
    options = _options(
        args, host=ip, pnp_port=PNP_PORT if port is None else port, stun=False, mqtt=False
    )
    return asyncio.run(_run_stack(options))


def cmd_all(args: argparse.Namespace) -> int:
    ip, port = args.all_listen
    if port is not None:
        return _error("--listen takes an IP only here; set ports with --pnp-port etc.")
    options = _options(
        args,
        host=ip,
        pnp=not args.no_pnp,
        stun=not args.no_stun,
        mqtt=not args.no_mqtt,
        pnp_port=args.pnp_port,
        stun_port=args.stun_port,
        mqtt_port=args.mqtt_port,
        stun_alternate=args.stun_alternate,
    )
    return asyncio.run(_run_stack(options))


async def _run_stack(options: ServeOptions) -> int:
    stack = ServeStack(options)
    try:
        await stack.start()
    except ServeError as exc:
        return _error(str(exc))
    try:
        for line in stack.describe():
            print(line)
        if stack.wildcard:
            print("  (replace the wildcard address with one clients can reach)")
        print("client conf:")
        print(json.dumps(stack.client_conf(), indent=2), flush=True)
    except BaseException:
        await stack.stop()
        raise
    await _serve_until_signal(stack.stop)
    return 0

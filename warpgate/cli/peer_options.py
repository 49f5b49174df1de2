"""What ``listen``, ``connect``, ``send`` and ``receive`` share: which servers to use,
starting a node for the command, reading a target, and one-line errors with a hint.

Conf comes from, in order: ``NODE_CONF`` (or ``NODE_TEST_CONF`` with ``--offline``),
``--conf FILE`` (a JSON object, e.g. the one ``--embedded-infra`` writes), then the
``--pnp``/``--mqtt``/``--stun`` flags.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

from warpgate.config import dict_child
from warpgate.connect import ConnectError, auto_connect
from warpgate.errors import AddressError, ConfigError, UnavailableError, WarpgateError
from warpgate.gate import Gate
from warpgate.link.link import Link
from warpgate.node.node_defs import NODE_CONF, NODE_TEST_CONF
from warpgate.sansio.address import NodeAddress, is_text_address

log = logging.getLogger(__name__)

UNREGISTER_TIMEOUT = 2.0  # seconds; a server that is gone must not hold up the exit


class CommandError(Exception):
    """A failure the user can act on: ``what`` happened, ``hint`` says what to try."""

    def __init__(self, what: str, hint: str = "") -> None:
        super().__init__(what)
        self.what, self.hint = what, hint

    def line(self, command: str) -> str:
        text = f"warpgate {command}: error: {self.what}"
        return f"{text}; try: {self.hint}" if self.hint else text


def run_command(coro: Coroutine[Any, Any, int], command: str) -> int:
    """Run a command's coroutine; any failure becomes one line on stderr and exit 1.

    The last ``except`` is the safety net for a bug: still one line (the traceback goes
    to the log at -v), never a Python traceback on a user's terminal.
    """
    try:
        return asyncio.run(coro)
    except CommandError as exc:
        print(exc.line(command), file=sys.stderr, flush=True)
        return 1
    except (WarpgateError, OSError, ValueError, RuntimeError) as exc:
        log.debug("warpgate %s failed", command, exc_info=True)
        line = CommandError(
            f"unexpected {type(exc).__name__}: {_first_line(exc)}",
            "-v shows the details; please report it",
        ).line(command)
        print(line, file=sys.stderr, flush=True)
        return 1


def add_target(parser: argparse.ArgumentParser, identity: str) -> None:
    """The connecting side's peer (``NAME|ADDRFILE``) and its own keystore identity
    (``--as``, default ``identity``)."""
    parser.add_argument("target", metavar="NAME|ADDRFILE", help="nickname or address file")
    parser.add_argument("--as", dest="identity", default=identity, help="keystore identity")


def add_common(parser: argparse.ArgumentParser, *, serving: bool) -> None:
    """The flags every peer command takes; ``serving`` adds the listening side's."""
    group = parser.add_argument_group("servers and conf")
    group.add_argument("--conf", type=Path, metavar="FILE", help="JSON conf overrides")
    group.add_argument(
        "--pnp", action="append", metavar="HOST:PORT", help="PNP name server (repeatable)"
    )
    group.add_argument(
        "--mqtt", action="append", metavar="URL", help="MQTT broker for signalling (repeatable)"
    )
    group.add_argument("--stun", action="append", metavar="HOST:PORT", help="STUN server")
    group.add_argument(
        "--offline",
        action="store_true",
        help="NODE_TEST_CONF: no public servers (address files, this machine or LAN)",
    )
    group.add_argument("--ip", action="append", help="listen only on this address (repeatable)")
    group.add_argument("--port", type=int, default=0, help="listen port (default: any free)")
    group.add_argument(
        "--timeout", type=float, default=15.0, help="seconds to connect (default 15)"
    )
    if serving:
        group.add_argument(
            "--address-file", type=Path, metavar="FILE", help="write this node's address here"
        )
        group.add_argument(
            "--embedded-infra",
            type=Path,
            metavar="CONF_FILE",
            help=(
                "start PNP, STUN and MQTT servers in this process on the first --ip "
                "(default 127.0.0.1) and write the conf peers need to CONF_FILE"
            ),
        )


def build_conf(args: argparse.Namespace, identity: str, extra: dict[str, Any]) -> dict[str, Any]:
    conf = dict_child({}, NODE_TEST_CONF if args.offline else NODE_CONF)
    if args.conf is not None:
        try:
            loaded = json.loads(args.conf.read_text())
        except OSError as exc:
            raise CommandError(
                f"cannot read {args.conf}: {exc.strerror or exc}", "check the --conf path"
            ) from None
        except ValueError as exc:
            raise CommandError(
                f"{args.conf} is not JSON: {exc}", "a --conf file holds one JSON object"
            ) from None
        if not isinstance(loaded, dict):
            raise CommandError(f"{args.conf} holds no JSON object", 'write {"key": value}')
        conf = dict_child(loaded, conf)
    if args.pnp:
        conf["pnp_servers"] = list(args.pnp)
    if args.mqtt:
        conf["mqtt_brokers"] = list(args.mqtt)
        conf["sig_pipe_no"] = max(1, int(conf.get("sig_pipe_no") or 0))
    if args.stun:
        conf["stun_servers"] = list(args.stun)
        conf["enable_stun_clients"] = True
    return dict_child(dict(extra, identity_name=identity, enable_nickname=False), conf)


@contextlib.asynccontextmanager
async def started_gate(
    args: argparse.Namespace, identity: str, *, register: str | None = None
) -> AsyncIterator[Gate]:
    """A started :class:`Gate` (and the embedded servers when asked for), all stopped
    on exit whatever happens; registers ``register`` as its nickname."""
    async with contextlib.AsyncExitStack() as stack:
        extra: dict[str, Any] = {}
        infra_file = getattr(args, "embedded_infra", None)
        if infra_file is not None:
            from warpgate.demo.infra import EmbeddedInfra
            from warpgate.serve.stack import ServeError

            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wg-infra-")))
            host = (args.ip or ["127.0.0.1"])[0]
            try:
                infra = await stack.enter_async_context(EmbeddedInfra(workdir, host))
            except (ServeError, OSError) as exc:
                why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                raise CommandError(
                    f"cannot start the embedded servers on {host}: {why}",
                    "another --ip, or point at running servers with --pnp/--mqtt",
                ) from None
            infra.write_conf(infra_file)
            stack.callback(lambda: infra_file.unlink(missing_ok=True))
            extra = infra.conf()
            for line in infra.describe():
                status(line)
            status(f"peers use: --conf {infra_file}")
        conf = build_conf(args, identity, {})
        if extra:
            conf = dict_child(extra, conf)
            conf["enable_nickname"] = False
        try:
            gate = Gate(identity, conf, ip=args.ip, port=args.port)
            await stack.enter_async_context(gate)
        except ConfigError as exc:
            raise CommandError(str(exc), "check --ip, --port and the --conf keys") from None
        except OSError as exc:
            raise CommandError(
                f"cannot start the node: {exc.strerror or exc}", "another --port or --ip"
            ) from None
        if register:
            await _register(gate, register)
            # Take the name back on the way out (Ctrl-C included), so a peer asking
            # for it later hears "nobody is registered" instead of timing out on a
            # dead address.
            stack.push_async_callback(_unregister, gate, register)
        yield gate


async def _unregister(gate: Gate, name: str) -> None:
    for service in gate.node.name_services.values():
        unregister = getattr(service, "unregister", None)
        if unregister is None:
            continue
        try:
            await asyncio.wait_for(unregister(name), UNREGISTER_TIMEOUT)
        except (WarpgateError, LookupError, OSError, TimeoutError) as exc:
            log.info("could not take the name %r back from %s: %s", name, service.name, exc)


async def _register(gate: Gate, name: str) -> None:
    from warpgate.pnp.client import NameTakenError, PnpUnreachableError

    servers = gate.node.conf.get("pnp_servers") or []
    # The hosts backend needs no server: a names file (conf names_file) is enough.
    if not servers and not gate.node.conf.get("names_file"):
        raise CommandError(
            f"--name {name} needs a PNP name server, and none is configured",
            "--pnp HOST:PORT, --conf FILE, --embedded-infra FILE, or --address-file instead",
        )
    try:
        full = await gate.node.nickname(name)
    except NameTakenError:
        raise CommandError(
            f"the name {name!r} belongs to another key on {', '.join(servers)}",
            "another --name",
        ) from None
    except (PnpUnreachableError, TimeoutError, OSError) as exc:
        raise CommandError(
            f"no PNP server answered ({', '.join(servers)}): {_first_line(exc)}",
            "start one (warpgate serve pnp, or --embedded-infra FILE) or check --pnp",
        ) from None
    except (WarpgateError, LookupError) as exc:
        raise CommandError(
            f"cannot register {name!r}: {_first_line(exc)}", "another --name"
        ) from None
    gate.registered_name = full  # type: ignore[attr-defined]
    status(f"registered as {full}")


async def accept_one(
    gate: Gate, args: argparse.Namespace, *, doing: str, who: str, peer_command: str
) -> Link:
    """Write ``--address-file``, say what this node is ``doing`` and how ``who`` (the
    peers) reach it with ``warpgate PEER_COMMAND ...``, and wait for one peer's link."""
    if args.address_file is not None:
        try:
            args.address_file.write_bytes(gate.address())
        except OSError as exc:
            raise CommandError(
                f"cannot write {args.address_file}: {exc.strerror or exc}",
                "another --address-file",
            ) from None
        status(f"address written to {args.address_file}")
    status(f"{doing} as {listening_as(gate)}")
    status(f"{who} run: {how_to_reach(gate, args, peer_command)}")
    link = await gate.accept()
    status(f"connected: {link.path}")
    return link


async def connect_to_target(gate: Gate, args: argparse.Namespace) -> Link:
    """A link to ``args.target`` (a name, address file or address text) by every
    traversal method; a failure is a :class:`CommandError` that says what to try."""
    dest = read_target(gate, args.target)
    try:
        link, _ = await auto_connect(gate.node, dest, timeout=args.timeout)
    except (WarpgateError, OSError, ValueError) as exc:
        raise explain_connect_error(exc, args.target) from None
    status(f"connected: {link.path}")
    return link


def listening_as(gate: Gate) -> str:
    """The registered nickname, else the address text (what a peer passes to connect)."""
    name = getattr(gate, "registered_name", None)
    return name or NodeAddress.decode(gate.address()).to_text()


def how_to_reach(gate: Gate, args: argparse.Namespace, command: str) -> str:
    """The command line a peer runs to reach this one (the name, else the address file,
    else the address text), with the conf flags it needs."""
    target = getattr(gate, "registered_name", None) or (
        str(args.address_file) if args.address_file is not None else listening_as(gate)
    )
    flags = f" --conf {args.embedded_infra}" if args.embedded_infra is not None else ""
    return f"warpgate {command} {target}{flags}"


def read_target(gate: Gate, target: str) -> str | bytes:
    """An address file's contents, an address text, or a nickname (TLD added)."""
    path = Path(target)
    if path.is_file():
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CommandError(f"cannot read {target}: {exc.strerror or exc}") from None
        with contextlib.suppress(UnicodeDecodeError):
            text = data.decode("ascii").strip()
            if is_text_address(text):
                return text
        try:
            NodeAddress.decode(data)
        except (AddressError, ValueError) as exc:
            raise CommandError(
                f"{target} does not hold a warpgate address ({_first_line(exc)})",
                "use the file 'warpgate listen --address-file' wrote",
            ) from None
        return data
    if is_text_address(target) and target.startswith("wg"):
        return target
    if "/" in target or target.endswith((".bin", ".addr")):
        raise CommandError(f"no such address file: {target}", "check the path")
    if not _configured_services(gate):
        raise CommandError(
            f"{target!r} is a name, and no name service is configured to look it up",
            "--pnp HOST:PORT, --conf FILE (as --embedded-infra writes), or an address file",
        )
    if "." not in target:
        # A bare name gets the TLD of the first name service that has one (pnp: .p2p
        # or .peer, hosts: .lan): a text without a dot would be taken for an address.
        target = f"{target}.{_default_tld(gate)}"
    return target


def _configured_services(gate: Gate) -> list[Any]:
    """The name services that have what they need (pnp: servers, hosts: a names file;
    others, from plugins, are taken as configured).  Both built-ins are installed;
    usually only one is configured."""
    conf = gate.node.conf
    usable = {"pnp": bool(conf.get("pnp_servers")), "hosts": bool(conf.get("names_file"))}
    return [s for n, s in gate.node.name_services.items() if usable.get(n, True)]


def _default_tld(gate: Gate) -> str:
    """The TLD of the first configured name service."""
    for service in _configured_services(gate):
        if getattr(service, "tld", None):
            return str(service.tld)
    return "p2p"


def explain_connect_error(exc: BaseException, target: str) -> CommandError:
    """A one-line reason (and hint) for a failed connect."""
    text = _first_line(exc)
    if isinstance(exc, UnavailableError):
        return CommandError(text, "--pnp HOST:PORT or --conf FILE, or an address file")
    if isinstance(exc, ConnectError) and "no name service knows" in text:
        return CommandError(
            f"nobody is registered as {target!r}",
            "check the name and that the peer is listening (warpgate listen --name NAME)",
        )
    if isinstance(exc, ConnectError) and "own" in text:
        return CommandError(text, "connect to another node")
    attempts = getattr(exc, "attempts", [])
    tried = ", ".join(sorted({a.method for a in attempts})) or "nothing"
    failed = [a for a in attempts if a.error]
    if failed:  # what an attempt ran into says more than "could not connect"
        text = f"{failed[0].candidate.describe()}: {failed[0].error}"
    if isinstance(exc, ConnectError):
        return CommandError(
            f"could not reach {target} ({text}; tried {tried})",
            "is the peer still running? -v shows every attempt",
        )
    if isinstance(exc, AddressError):
        return CommandError(f"bad address for {target}: {text}", "check the address")
    return CommandError(f"could not reach {target}: {text}", "-v shows what happened")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def quiet_logs(args: argparse.Namespace) -> None:
    """Without -v, only errors are logged: stderr is for status and one-line errors
    (a NAT test that is inconclusive on loopback is not news to a netcat user)."""
    if getattr(args, "verbose", 0) == 0:
        for name in ("warpgate", "warpgate_plugins"):
            logging.getLogger(name).setLevel(logging.ERROR)
        # A client socket reset while the embedded broker stops (Ctrl-C) is expected,
        # and amqtt can leave a cancelled task behind for asyncio to report.
        for name in ("amqtt", "asyncio", "warpgate_plugins.mqtt.transport.paho"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def status(text: str) -> None:
    """A status line on stderr (stdout carries the data)."""
    print(text, file=sys.stderr, flush=True)


class StdinReader:
    """Reads stdin in a daemon thread (works for ttys, pipes and files, everywhere);
    chunks arrive on an asyncio queue, ``b""`` at end of input.

    A daemon thread, so a read that never returns cannot keep the process alive.
    """

    def __init__(self, chunk: int = 65536) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(16)
        self._loop = asyncio.get_running_loop()
        self._chunk = chunk
        self._thread = threading.Thread(target=self._run, name="stdin", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        stream = sys.stdin.buffer
        while True:
            try:
                # typeshed types stdin.buffer as BinaryIO, which has no read1; at run
                # time it is a BufferedReader (read1: what has arrived, up to chunk).
                data = stream.read1(self._chunk)  # type: ignore[union-attr]
            except (OSError, ValueError):
                data = b""
            try:
                asyncio.run_coroutine_threadsafe(self.queue.put(data), self._loop).result()
            except Exception:  # the loop is gone: the command has ended
                return
            if not data:
                return

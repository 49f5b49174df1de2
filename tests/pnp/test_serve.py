"""``warpgate serve`` and ``warpgate serve pnp`` as a user runs them: real processes,
real sockets on loopback, the printed conf used by clients, Ctrl-C, ports in use."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from warpgate.pnp.client import PnpClient, parse_server
from warpgate.stun.client import stun_binding

READY = "serving; press Ctrl-C to stop"


class Served:
    def __init__(self, proc: asyncio.subprocess.Process, lines: list[str]) -> None:
        self.proc, self.lines = proc, lines

    @property
    def conf(self) -> dict[str, Any]:
        start = self.lines.index("client conf:") + 1
        end = self.lines.index(READY)
        result: dict[str, Any] = json.loads("\n".join(self.lines[start:end]))
        return result


async def _run(*args: str, timeout: float = 30.0) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "warpgate", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@asynccontextmanager
async def serving(
    *args: str, timeout: float = 30.0, stop_with: signal.Signals = signal.SIGINT
) -> AsyncIterator[Served]:
    """Run ``warpgate serve ARGS`` until it prints READY; Ctrl-C it (or send
    ``stop_with``, SIGTERM as systemd does) afterwards and check it exits 0."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "warpgate", "serve", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(timeout):
            while READY not in lines:
                raw = await proc.stdout.readline()
                if not raw:
                    early = (await proc.stderr.read()).decode()
                    raise AssertionError(f"serve exited early: {lines} {early}")
                lines.append(raw.decode().rstrip("\n"))
        yield Served(proc, lines)
    finally:
        if proc.returncode is None:
            proc.send_signal(stop_with)
        try:
            _, err = await asyncio.wait_for(proc.communicate(), 20)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
    assert proc.returncode == 0, err.decode()
    assert "stopped" in err.decode()
    assert "Traceback" not in err.decode()


async def test_serve_pnp(tmp_path: Path) -> None:
    db = tmp_path / "sub" / "names.db"
    async with serving("pnp", "--listen", "127.0.0.1:0", "--db", str(db)) as served:
        (server,) = served.conf["pnp_servers"]
        assert set(served.conf) == {"pnp_servers"}
        client = PnpClient([parse_server(server)], timeout=2.0)
        key = ec.generate_private_key(ec.SECP256R1())
        await client.put("alice", b"addr", key, ttl=600)
        assert (await client.get("alice")).value == b"addr"
    assert db.exists()
    # a restarted server still has the name
    async with serving("pnp", "--listen", "127.0.0.1:0", "--db", str(db)) as served:
        client = PnpClient([parse_server(served.conf["pnp_servers"][0])], timeout=2.0)
        assert (await client.get("alice")).value == b"addr"


async def test_serve_all_in_one(tmp_path: Path) -> None:
    args = ["--pnp-port", "0", "--stun-port", "0", "--mqtt-port", "0"]
    async with serving(*args, "--db", str(tmp_path / "pnp.db")) as served:
        conf = served.conf
        assert set(conf) == {"pnp_servers", "stun_servers", "mqtt_brokers"}
        pnp = PnpClient([parse_server(conf["pnp_servers"][0])], timeout=2.0)
        with pytest.raises(LookupError):
            await pnp.get("nobody")
        host, port = parse_server(conf["stun_servers"][0])
        result = await stun_binding((host, port), timeout=3.0)
        assert result.mapped[0] == "127.0.0.1"
        mqtt = conf["mqtt_brokers"][0].removeprefix("mqtt://")
        mhost, mport = mqtt.rsplit(":", 1)
        _, writer = await asyncio.open_connection(mhost, int(mport))
        writer.close()
        await writer.wait_closed()


async def test_serve_switches(tmp_path: Path) -> None:
    async with serving(
        "--no-stun",
        "--no-mqtt",
        "--pnp-port",
        "0",
        "--db",
        str(tmp_path / "p.db"),
        stop_with=signal.SIGTERM,
    ) as served:
        assert set(served.conf) == {"pnp_servers"}
    rc, _, err = await _run("serve", "--no-pnp", "--no-stun", "--no-mqtt")
    assert rc == 1 and "nothing to serve" in err


def _busy_port() -> tuple[socket.socket, socket.socket, int]:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    port = udp.getsockname()[1]
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", port))
    tcp.listen()
    return udp, tcp, port


async def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    udp, tcp, port = _busy_port()
    try:
        db = str(tmp_path / "p.db")
        rc, _, err = await _run("serve", "pnp", "--listen", f"127.0.0.1:{port}", "--db", db)
        assert rc == 1
        assert f"cannot start on 127.0.0.1:{port}" in err and "in use" in err
        assert "Traceback" not in err
        # all-in-one: the MQTT port is taken; the error names the broker, and the PNP
        # and STUN servers it had started are stopped (the process exits)
        rc, _, err = await _run(
            "serve", "--pnp-port", "0", "--stun-port", "0", "--mqtt-port", str(port), "--db", db
        )
        assert rc == 1
        assert "MQTT broker cannot start" in err and "in use" in err
        assert "Traceback" not in err
    finally:
        udp.close()
        tcp.close()


async def test_bad_store_url_is_a_clear_error() -> None:
    rc, _, err = await _run("serve", "pnp", "--listen", "127.0.0.1:0", "--db", "mysql://x/y")
    assert rc == 1 and "unsupported store URL" in err
    # a database that cannot be reached is named (without its password), not a bind error
    db = "postgresql://pnp:secret@127.0.0.1:1/names"
    rc, _, err = await _run("serve", "pnp", "--listen", "127.0.0.1:0", "--db", db)
    assert rc == 1 and "cannot be opened" in err and "secret" not in err
    assert "Traceback" not in err


def test_systemd_unit_runs_a_valid_command() -> None:
    import shlex

    from warpgate.cli import build_parser

    unit = Path(__file__).parents[2] / "contrib" / "systemd" / "warpgate-serve.service"
    lines = unit.read_text().splitlines()
    (exec_start,) = [ln.split("=", 1)[1] for ln in lines if ln.startswith("ExecStart=")]
    argv = shlex.split(exec_start)
    assert argv[0].endswith("/warpgate")
    args = build_parser().parse_args(argv[1:])
    assert args.func.__name__ == "cmd_all"
    assert args.all_listen == ("0.0.0.0", None)
    assert "StateDirectory=warpgate-serve" in lines
    assert args.db.startswith("/var/lib/warpgate-serve/")


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback here")
async def test_serve_all_in_one_on_ipv6(tmp_path: Path) -> None:
    args = ["--listen", "::1", "--pnp-port", "0", "--stun-port", "0", "--mqtt-port", "0"]
    async with serving(*args, "--db", str(tmp_path / "pnp.db")) as served:
        conf = served.conf
        (pnp_server,) = conf["pnp_servers"]
        assert pnp_server.startswith("[::1]:")
        pnp = PnpClient([parse_server(pnp_server)], timeout=2.0)
        key = ec.generate_private_key(ec.SECP256R1())
        await pnp.put("six", b"v6", key, ttl=600)
        assert (await pnp.get("six")).value == b"v6"
        broker = conf["mqtt_brokers"][0]
        assert broker.startswith("mqtt://[::1]:")
        _, writer = await asyncio.open_connection("::1", int(broker.rsplit(":", 1)[1]))
        writer.close()
        await writer.wait_closed()

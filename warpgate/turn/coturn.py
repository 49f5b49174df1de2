"""Run a private coturn on loopback, for tests and benchmarks on one machine.

The server binds 127.0.0.1 on a free port with long-term credentials, relays to loopback
peers (``allow-loopback-peers``, off in coturn by default), optionally caps allocations
per user (``user-quota``), and counts as started only once it answered a STUN Binding.
It runs in a private temporary directory and is stopped (and waited for) on exit; on
Linux it also gets SIGTERM if the thread that started it dies first (a killed test or
CLI process), so it never outlives its user.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from warpgate.errors import WarpgateError
from warpgate.sansio import stun

START_TIMEOUT = 10.0
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
# Loaded once, in the parent: the child only calls into it between fork and exec.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


class CoturnUnavailable(WarpgateError, RuntimeError):
    """coturn (``turnserver``) is not installed or did not start."""


@dataclass
class Coturn:
    host: str
    port: int
    username: str
    password: str
    realm: str
    workdir: Path
    process: subprocess.Popen[bytes]

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def log_text(self) -> str:
        with contextlib.suppress(OSError):
            return (self.workdir / "turnserver.log").read_text(errors="replace")
        return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the thread that started it ends, so a
    test or CLI process that is killed (no ``finally`` runs) leaves no coturn behind."""
    # Only a foreign call here: loading a library in a forked child could deadlock.
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_udp_tcp_port() -> int:
    """A loopback port free for both UDP and TCP, as coturn listens on both (bounded
    tries: a port free for UDP may be taken for TCP)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise CoturnUnavailable("no free loopback port for coturn")


def answers_stun(port: int) -> bool:
    """Whether a STUN server on loopback ``port`` answers a binding request (200 ms)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        msg = stun.StunMessage(stun.StunMethod.BINDING, stun.StunClass.REQUEST)
        try:
            sock.sendto(stun.encode(msg), ("127.0.0.1", port))
            data, _ = sock.recvfrom(2048)
        except OSError:
            return False
        return stun.is_stun(data)


def write_config(
    workdir: Path,
    *,
    ip: str,
    port: int,
    username: str,
    password: str,
    realm: str,
    user_quota: int = 0,
    extra: str = "",
) -> Path:
    """A coturn config for one listening and relay address with long-term credentials
    (and optionally a per-user allocation quota); returns its path."""
    conf = workdir / "turnserver.conf"
    loopback = ipaddress.ip_address(ip).is_loopback
    conf.write_text(
        f"listening-ip={ip}\n"
        f"relay-ip={ip}\n"
        f"listening-port={port}\n"
        "min-port=40000\nmax-port=48000\n"
        f"realm={realm}\n"
        "lt-cred-mech\n"
        f"user={username}:{password}\n"
        + (f"user-quota={user_quota}\n" if user_quota else "")
        # coturn refuses loopback peers unless told; only ever for a loopback server.
        + ("allow-loopback-peers\n" if loopback else "")
        + "fingerprint\nno-tls\nno-dtls\nno-cli\nno-multicast-peers\n"
        f"userdb={workdir / 'turndb'}\n"
        f"pidfile={workdir / 'turnserver.pid'}\n"
        f"log-file={workdir / 'turnserver.log'}\n"
        "simple-log\n" + extra
    )
    return conf


def find_turnserver() -> str:
    binary = shutil.which("turnserver") or shutil.which("turnserver", path="/usr/bin:/usr/sbin")
    if binary is None:
        raise CoturnUnavailable("coturn is not installed (Debian package: coturn)")
    return binary


@contextlib.contextmanager
def loopback_coturn(
    *,
    username: str = "warpgate",
    password: str = "warpgate-secret",
    realm: str = "warpgate.test",
    user_quota: int = 0,
    extra: str = "",
) -> Iterator[Coturn]:
    """Start coturn on 127.0.0.1; yield its :class:`Coturn`; stop it on exit."""
    binary = find_turnserver()
    workdir = Path(tempfile.mkdtemp(prefix="wg-coturn-"))
    port = free_udp_tcp_port()
    conf = write_config(
        workdir,
        ip="127.0.0.1",
        port=port,
        username=username,
        password=password,
        realm=realm,
        user_quota=user_quota,
        extra=extra,
    )
    out = open(workdir / "stdout.log", "wb")  # closed in the finally below
    proc = subprocess.Popen(
        [binary, "-c", str(conf)],
        stdout=out,
        stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )
    server = Coturn("127.0.0.1", port, username, password, realm, workdir, proc)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not answers_stun(port):
            if proc.poll() is not None:
                raise CoturnUnavailable(
                    f"coturn exited with {proc.returncode}: {server.log_text()[-500:]}"
                )
            if time.monotonic() > deadline:
                raise CoturnUnavailable(f"coturn did not answer in {START_TIMEOUT:g} s")
            time.sleep(0.05)
        yield server
    finally:
        server.stop()
        out.close()
        shutil.rmtree(workdir, ignore_errors=True)

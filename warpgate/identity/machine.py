"""A stable machine id and the listen port derived from it."""

from __future__ import annotations

import functools
import hashlib
import logging
import platform
import sys
import uuid
from pathlib import Path

log = logging.getLogger(__name__)

MACHINE_ID_SIZE = 16
PORT_RANGE = (10000, 60000)


def dhash(data: bytes | str) -> int:
    """A deterministic 64-bit hash (unlike ``hash()``, the same in every process)."""
    if isinstance(data, str):
        data = data.encode()
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big")


def field_wrap(value: int, bounds: tuple[int, int] | list[int]) -> int:
    """Map ``value`` into ``[low, high)``."""
    low, high = bounds
    if high <= low:
        raise ValueError(f"empty range {bounds!r}")
    return low + value % (high - low)


@functools.cache
def _platform_id() -> bytes:
    """The OS's own per-installation id where there is one (read once per process: it
    does not change while the OS runs)."""
    if sys.platform.startswith("linux"):
        for candidate in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
            try:
                text = Path(candidate).read_text().strip()
            except OSError:
                continue
            if text:
                return text.encode()
    if sys.platform == "win32":
        try:
            import winreg

            with winreg.OpenKey(
                winreg.HKEY_LOCAL_MACHINE, r"SOFTWARE\Microsoft\Cryptography"
            ) as key:
                return str(winreg.QueryValueEx(key, "MachineGuid")[0]).encode()
        except OSError:
            pass
    return platform.node().encode()


def compute_machine_id(default_mac: str | None = None) -> bytes:
    """16 bytes that stay the same across reboots of one machine.

    Hashes the OS installation id with the MAC address of the interface holding the
    default route (``uuid.getnode()`` when none is known).  The MAC makes hosts that
    share an OS image -- containers, network namespaces of a lab -- distinct machines.
    """
    mac = (default_mac or f"{uuid.getnode():012x}").lower().encode()
    digest = hashlib.sha256(b"warpgate-machine-id/1\0" + _platform_id() + b"\0" + mac)
    return digest.digest()[:MACHINE_ID_SIZE]


def derived_ports(machine_id: bytes, count: int) -> list[int]:
    """The listen ports a machine tries in order: the first is
    ``field_wrap(dhash(machine_id), [10000, 60000])`` as spec/nodes.md says; the rest
    are fallbacks for when it is taken (say, a second node on the same machine)."""
    ports = [field_wrap(dhash(machine_id), PORT_RANGE)]
    salt = 1
    while len(ports) < count and salt < count * 4:
        port = field_wrap(dhash(machine_id + salt.to_bytes(2, "big")), PORT_RANGE)
        if port not in ports:
            ports.append(port)
        salt += 1
    return ports

"""Thin, bounded wrappers around the system tools the lab drives (iproute2, nft, ...).

Everything here runs a program with a timeout; nothing is left running.  The root
namespace is never configured from here: every network command carries ``-n NS`` or runs
under ``ip netns exec NS``.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence

from warpgate.lab.errors import LabError, LabUnavailable, MissingBinary

log = logging.getLogger(__name__)

#: Program → Debian package that provides it (what an error tells the user to install).
BINARY_PACKAGES: dict[str, str] = {
    "ip": "iproute2",
    "nft": "nftables",
    "mosquitto": "mosquitto",
    "turnserver": "coturn",
    "chronyd": "chrony",
    "miniupnpd": "miniupnpd-nftables",
    "iptables": "iptables",
}

#: Programs every topology needs, whatever servers it runs.
CORE_BINARIES = ("ip", "nft")

#: Upper bound for one administrative command (ip, nft, sysctl); they take milliseconds.
COMMAND_TIMEOUT = 10.0


def find_binary(name: str) -> str:
    """Return the path of ``name`` (also looking in the sbin directories) or raise."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/local/sbin")
    if path is None:
        raise MissingBinary(name, BINARY_PACKAGES.get(name, name))
    return path


def missing_binaries(names: Iterable[str]) -> list[MissingBinary]:
    """The errors for every program in ``names`` that is not installed."""
    missing = []
    for name in names:
        try:
            find_binary(name)
        except MissingBinary as exc:
            missing.append(exc)
    return missing


def check_platform() -> None:
    """Raise :class:`LabUnavailable` unless this is Linux and we are root."""
    if not sys.platform.startswith("linux"):
        raise LabUnavailable(f"the lab needs Linux network namespaces (this is {sys.platform})")
    if os.geteuid() != 0:
        raise LabUnavailable("the lab needs root (network namespaces and netfilter)")


def run(
    argv: Sequence[str],
    *,
    input: str | None = None,
    timeout: float = COMMAND_TIMEOUT,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` to completion within ``timeout`` and return its result.

    A failure (non-zero exit with ``check``, or timeout) raises :class:`LabError` carrying
    the command and its stderr, which is what one needs to debug a broken topology.
    """
    log.debug("run %s", " ".join(argv))
    try:
        proc = subprocess.run(
            list(argv), input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"command timed out after {timeout}s: {' '.join(argv)}") from exc
    except FileNotFoundError as exc:
        raise MissingBinary(argv[0], BINARY_PACKAGES.get(argv[0], argv[0])) from exc
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        if input:
            detail += "\n--- input ---\n" + input
        raise LabError(f"command failed ({proc.returncode}): {' '.join(argv)}\n{detail}")
    return proc


def ip_batch(commands: Sequence[str], *, netns: str | None = None) -> None:
    """Run iproute2 commands in one process (``ip -batch``), inside ``netns`` if given."""
    if not commands:
        return
    argv = ["ip"]
    if netns is not None:
        argv += ["-n", netns]
    run([*argv, "-batch", "-"], input="\n".join(commands) + "\n")


def netns_exec_argv(netns: str, argv: Sequence[str]) -> list[str]:
    """The argv that runs ``argv`` inside network namespace ``netns``."""
    return ["ip", "netns", "exec", netns, *argv]


def list_netns() -> list[str]:
    """Names of all network namespaces known to iproute2."""
    proc = run(["ip", "netns", "list"], check=False)
    # Lines look like "name" or "name (id: 3)".
    return [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]


def netns_pids(netns: str) -> list[int]:
    """PIDs of the processes living in ``netns``."""
    proc = run(["ip", "netns", "pids", netns], check=False)
    return [int(tok) for tok in proc.stdout.split() if tok.isdigit()]

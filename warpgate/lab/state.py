"""Lab state on disk, so ``warpgate lab exec/status/down`` work across invocations, and
the cleanup that finds and removes everything an earlier run left behind.

One JSON file per lab in :data:`STATE_DIR`.  Processes are recorded with their start
time, so a PID the kernel has since reused for something else is never signalled.
Namespaces are recognised by the lab's name pattern (``wgl`` + 6 hex digits + ``-``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from warpgate.lab.system import list_netns, netns_pids, run

log = logging.getLogger(__name__)

STATE_DIR = Path(os.environ.get("WARPGATE_LAB_STATE_DIR", "/run/warpgate-lab"))
#: Per-namespace files ``ip netns exec`` mounts over /etc (the lab writes resolv.conf).
NETNS_ETC = Path("/etc/netns")
PREFIX_RE = re.compile(r"^(wgl[0-9a-f]{6})-")
#: How long a stopped process gets between SIGTERM and SIGKILL.
STOP_GRACE = 2.0


def new_prefix() -> str:
    """A fresh, unique-enough lab name prefix (``wgl`` + 6 hex digits)."""
    return "wgl" + secrets.token_hex(3)


@dataclass
class ProcessRecord:
    pid: int
    name: str
    netns: str
    start_time: str  # field 22 of /proc/PID/stat, to detect PID reuse


@dataclass
class LabState:
    prefix: str
    topology: dict[str, Any]
    namespaces: list[str]
    workdir: str
    created: float = field(default_factory=time.time)
    processes: list[ProcessRecord] = field(default_factory=list)
    servers: dict[str, Any] = field(default_factory=dict)
    probes: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return STATE_DIR / f"{self.prefix}.json"

    def save(self) -> None:
        STATE_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(self.path)

    @classmethod
    def load(cls, path: Path) -> LabState:
        data = json.loads(path.read_text())
        data["processes"] = [ProcessRecord(**p) for p in data.get("processes", [])]
        return cls(**data)


def list_states() -> list[LabState]:
    """Every readable lab state file, newest first."""
    states = []
    if STATE_DIR.is_dir():
        for path in sorted(STATE_DIR.glob("wgl*.json")):
            try:
                states.append(LabState.load(path))
            except (OSError, ValueError, TypeError) as exc:
                log.warning("ignoring unreadable lab state %s: %s", path, exc)
    states.sort(key=lambda s: s.created, reverse=True)
    return states


def process_start_time(pid: int) -> str | None:
    """The start time of ``pid`` from /proc, or None if it does not exist (or exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; fields after it are fixed.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        # Exited, waiting to be reaped: by us if it is our child, otherwise by init
        # (which, in some containers, takes its time).  Either way it is gone.
        return None
    return fields[19]


def stop_pids(pids: Sequence[tuple[int, str | None]], *, grace: float = STOP_GRACE) -> None:
    """SIGTERM each (pid, expected start time), then SIGKILL survivors after ``grace``.

    A pid whose start time differs from the expected one (reused) is left alone; None
    means "whatever runs under that pid now" and is only used for processes found
    inside a lab namespace.
    """
    alive: list[tuple[int, str | None]] = []
    for pid, start in pids:
        now = process_start_time(pid)
        if now is None or (start is not None and now != start):
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            alive.append((pid, now))
    deadline = time.monotonic() + grace
    while alive and time.monotonic() < deadline:
        # Reap our own children so they do not linger as zombies (which look alive).
        for pid, _ in alive:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
        alive = [(p, s) for p, s in alive if process_start_time(p) == s]
        if alive:
            time.sleep(0.02)
    for pid, _ in alive:
        log.warning("process %d did not stop on SIGTERM; killing it", pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, 0)


def destroy_namespaces(namespaces: list[str]) -> None:
    """Stop every process inside ``namespaces`` (by PID) and delete them."""
    existing = set(list_netns())
    targets = [ns for ns in namespaces if ns in existing]
    stray = [(pid, None) for ns in targets for pid in netns_pids(ns) if pid != os.getpid()]
    if stray:
        stop_pids(stray)
    for ns in targets:
        run(["ip", "netns", "delete", ns], check=False)
    for ns in namespaces:
        if PREFIX_RE.match(ns):
            shutil.rmtree(NETNS_ETC / ns, ignore_errors=True)
    with contextlib.suppress(OSError):
        NETNS_ETC.rmdir()  # only if empty: nothing but the lab used it


def teardown_state(state: LabState) -> None:
    """Remove one lab completely: its processes, namespaces, work dir and state file."""
    stop_pids([(p.pid, p.start_time) for p in state.processes])
    destroy_namespaces(state.namespaces)
    # A namespace may have been added after the state was last written.
    destroy_namespaces([ns for ns in list_netns() if ns.startswith(state.prefix + "-")])
    if state.workdir and Path(state.workdir).name.startswith("warpgate-lab-"):
        shutil.rmtree(state.workdir, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        state.path.unlink()


def cleanup_all(prefix: str | None = None) -> list[str]:
    """Remove every lab of earlier runs (or only lab ``prefix``); returns prefixes removed.

    Finds labs both by state file and by namespace name, so a run that died before
    writing (or after losing) its state file is still cleaned up.
    """
    removed = []
    for state in list_states():
        if prefix is None or state.prefix == prefix:
            teardown_state(state)
            removed.append(state.prefix)
    leftovers = []
    for ns in list_netns():
        m = PREFIX_RE.match(ns)
        if m and (prefix is None or m.group(1) == prefix):
            leftovers.append(ns)
            if m.group(1) not in removed:
                removed.append(m.group(1))
    destroy_namespaces(leftovers)
    # /etc/netns entries whose namespace is gone.
    if NETNS_ETC.is_dir():
        live = set(list_netns())
        for path in NETNS_ETC.glob("wgl*"):
            m = PREFIX_RE.match(path.name)
            if m and path.name not in live and (prefix is None or m.group(1) == prefix):
                shutil.rmtree(path, ignore_errors=True)
    # Work dirs of labs whose state file was lost (the name carries the prefix).
    for path in Path(tempfile.gettempdir()).glob("warpgate-lab-wgl*"):
        m = PREFIX_RE.match(path.name.removeprefix("warpgate-lab-"))
        if m and path.is_dir() and (prefix is None or m.group(1) == prefix):
            if m.group(1) in removed or not any(ns.startswith(m.group(1)) for ns in list_netns()):
                shutil.rmtree(path, ignore_errors=True)
    return removed

"""Run Python code of *this* process inside a lab namespace, without a subprocess.

Linux keeps the network namespace per thread, and a socket belongs for life to the
namespace it was created in.  So a worker thread that calls ``setns(2)`` can create
sockets (or run a whole asyncio loop) "inside" a lab host, and sockets it hands back stay
there even when used from the main thread.  Python 3.11 has no ``os.setns``; ctypes
calls libc's.

Each call uses a fresh thread that dies afterwards, so no thread of this process is ever
left in a lab namespace by accident.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import socket
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from warpgate.lab.errors import LabError, LabUnavailable

T = TypeVar("T")

_CLONE_NEWNET = 0x40000000
_NETNS_DIR = "/run/netns"
_libc: Any = None


def _setns_fn() -> Any:
    global _libc
    if not sys.platform.startswith("linux"):
        raise LabUnavailable("network namespaces exist only on Linux")
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    return _libc.setns


def enter_netns(netns: str) -> None:
    """Move the *calling thread* into ``netns`` (only ever call from a worker thread)."""
    setns = _setns_fn()
    fd = os.open(os.path.join(_NETNS_DIR, netns), os.O_RDONLY | os.O_CLOEXEC)
    try:
        if setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({netns}): {os.strerror(err)}")
    finally:
        os.close(fd)


def call_in_netns(netns: str, fn: Callable[..., T], *args: Any, timeout: float = 60.0) -> T:
    """Run ``fn(*args)`` in a fresh thread inside ``netns`` and return its result.

    Exceptions propagate.  If ``fn`` does not finish within ``timeout`` a
    :class:`LabError` is raised (the daemon thread is abandoned; make ``fn`` bounded).
    """
    box: dict[str, Any] = {}

    def worker() -> None:
        try:
            enter_netns(netns)
            box["result"] = fn(*args)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=worker, name=f"netns-{netns}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise LabError(f"code in namespace {netns} did not finish within {timeout}s")
    if "error" in box:
        raise box["error"]
    result: T = box["result"]
    return result


def socket_in_netns(
    netns: str,
    family: int = socket.AF_INET,
    type: int = socket.SOCK_DGRAM,
    proto: int = 0,
) -> socket.socket:
    """A new socket living in ``netns``; usable from any thread (and any event loop)."""
    return call_in_netns(netns, socket.socket, family, type, proto)


def run_coroutine_in_netns(
    netns: str, coro_fn: Callable[..., Awaitable[T]], *args: Any, timeout: float = 60.0
) -> T:
    """Run ``coro_fn(*args)`` on a new event loop in a thread inside ``netns``.

    Everything the coroutine creates (sockets, servers, connections) lives in the
    namespace.  The whole run is bounded by ``timeout``.
    """

    async def bounded() -> T:
        return await asyncio.wait_for(coro_fn(*args), timeout)

    def runner() -> T:
        return asyncio.run(bounded())

    # The thread join gets a little slack over the coroutine's own deadline so the
    # coroutine's TimeoutError (with its traceback) wins over the generic one.
    return call_in_netns(netns, runner, timeout=timeout + 5.0)


async def arun_coroutine_in_netns(
    netns: str, coro_fn: Callable[..., Awaitable[T]], *args: Any, timeout: float = 60.0
) -> T:
    """Async form of :func:`run_coroutine_in_netns`: awaits it without blocking the loop."""
    return await asyncio.to_thread(run_coroutine_in_netns, netns, coro_fn, *args, timeout=timeout)

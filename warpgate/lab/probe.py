"""The lab's NAT probe: observe a host's real RFC 4787 mapping and filtering.

One UDP socket on the host talks to three public endpoints served by a responder in
``inet``: A1:P1, A2:P1 and A2:P2 (two addresses, two ports).  Each answers with the
source address it saw, the host's *external* address:

* all equal to the socket's own address → no NAT (``none``);
* one external port for all → endpoint-independent mapping (``EIM``);
* same port towards both ports of A2 but another towards A1 → ``ADM``;
* otherwise → address-and-port-dependent mapping (``APDM``).

Then A1:P1 is asked to have two *uncontacted* endpoints send to that external address:
A3:P1 (another address) and A1:P2 (another port of a contacted address):

* both arrive → ``EIF`` (``none`` if there is no NAT at all);
* only the one from A1:P2 → address-dependent filtering (``ADF``);
* neither → ``APDF``.

No answer at all → ``blocked``.

Behind a NAT, with a neighbour on the same LAN, a socket there then checks
*hairpinning*: both send to the other's external address; does anything arrive?

Every wait is bounded: the probe takes well under 0.5 s (about 0.2 s more without
hairpinning, about 1 s on a UDP-blocked host).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import select
import socket
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from warpgate.lab.netns import socket_in_netns
from warpgate.lab.topology import PROBE_ADDRESSES

log = logging.getLogger(__name__)

PROBE_PORTS = (3479, 3480)
_A1, _A2, _A3 = PROBE_ADDRESSES
_P1, _P2 = PROBE_PORTS
MAP_ENDPOINTS = ((_A1, _P1), (_A2, _P1), (_A2, _P2))
OTHER_IP = (_A3, _P1)
OTHER_PORT = (_A1, _P2)
RESPONDER_ENDPOINTS = (*MAP_ENDPOINTS, OTHER_IP, OTHER_PORT)

_ROUNDS = 3
_ROUND_WAIT = 0.3
_STRAGGLER_WAIT = 0.15
_HAIRPIN_ROUNDS = 5
_HAIRPIN_WAIT = 0.04
#: A responder never outlives this, even if its owner forgets to stop it.
MAX_RESPONDER_LIFETIME = 120.0


@dataclass(frozen=True)
class ProbeResult:
    """What the probe observed for one host."""

    mapping: str  # none | EIM | ADM | APDM | blocked
    filtering: str  # none | EIF | ADF | APDF | blocked
    local: tuple[str, int]
    external: tuple[str, int] | None  # as seen by A1:P1
    mapped: dict[str, tuple[str, int] | None]  # endpoint "ip:port" → external address
    #: Whether a second socket of the host reached this one via its external address
    #: (None: not applicable, no NAT or UDP blocked) and the source it arrived from.
    hairpin: bool | None = None
    hairpin_source: tuple[str, int] | None = None

    @property
    def verdict(self) -> tuple[str, str]:
        return (self.mapping, self.filtering)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ProbeResponder:
    """The probe's public side: five UDP sockets in ``inet``, served by one thread."""

    def __init__(self, inet_netns: str) -> None:
        self._socks: dict[tuple[str, int], socket.socket] = {}
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = os.pipe()
        try:
            for ep in RESPONDER_ENDPOINTS:
                sock = socket_in_netns(inet_netns, socket.AF_INET, socket.SOCK_DGRAM)
                self._socks[ep] = sock
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(ep)
                sock.setblocking(False)
        except BaseException:
            self.close()
            raise

    def start(self) -> ProbeResponder:
        self._thread = threading.Thread(target=self._serve, name="probe-responder", daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        by_fd = {s.fileno(): (ep, s) for ep, s in self._socks.items()}
        deadline = time.monotonic() + MAX_RESPONDER_LIFETIME
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self._wake_r, *by_fd], [], [], min(left, 1.0))
            if self._wake_r in ready:
                return
            for fd in ready:
                ep, sock = by_fd[fd]
                # OSError too: an ICMP error from a filtering NAT lands on the socket.
                with contextlib.suppress(OSError):
                    data, src = sock.recvfrom(512)
                    self._handle(ep, sock, data, src)

    def _handle(
        self, ep: tuple[str, int], sock: socket.socket, data: bytes, src: tuple[str, int]
    ) -> None:
        words = data.decode("ascii", "replace").split()
        if len(words) != 2:
            return
        verb, nonce = words
        try:
            if verb == "MAP":
                sock.sendto(f"MAPPED {src[0]} {src[1]} {nonce}".encode(), src)
            elif verb == "PUNCH" and ep == MAP_ENDPOINTS[0]:
                self._socks[OTHER_IP].sendto(f"OTHER-IP {nonce}".encode(), src)
                self._socks[OTHER_PORT].sendto(f"OTHER-PORT {nonce}".encode(), src)
                sock.sendto(f"PUNCHED {nonce}".encode(), src)
        except OSError as exc:  # e.g. an ICMP error queued on the socket
            log.debug("probe responder: %s", exc)

    def close(self) -> None:
        if self._thread is not None:
            os.write(self._wake_w, b"x")
            self._thread.join(5.0)
            self._thread = None
        for sock in self._socks.values():
            sock.close()
        self._socks.clear()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def __enter__(self) -> ProbeResponder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _receive(
    sock: socket.socket, nonce: str, until: float
) -> list[tuple[list[str], tuple[str, int]]]:
    """Datagrams carrying ``nonce``: waits for the first until ``until``, then drains."""
    got = []
    for i in range(64):  # bounded: at most this many datagrams per wait
        left = max(0.0, until - time.monotonic()) if i == 0 else 0.0
        if not select.select([sock], [], [], left)[0]:
            break
        with contextlib.suppress(OSError):
            data, src = sock.recvfrom(512)
            words = data.decode("ascii", "replace").split()
            if words and words[-1] == nonce:
                got.append((words, src))
    return got


def _external(sock: socket.socket, nonce: str) -> tuple[str, int] | None:
    """``sock``'s external address as A1:P1 sees it (bounded retries)."""
    for _ in range(_ROUNDS):
        with contextlib.suppress(OSError):
            sock.sendto(f"MAP {nonce}".encode(), MAP_ENDPOINTS[0])
        for words, src in _receive(sock, nonce, time.monotonic() + _ROUND_WAIT):
            if words[0] == "MAPPED" and src == MAP_ENDPOINTS[0]:
                return (words[1], int(words[2]))
    return None


def probe_hairpin(
    sock: socket.socket, external: tuple[str, int], other: socket.socket
) -> tuple[bool, tuple[str, int] | None]:
    """Can ``other`` (a socket on a LAN neighbour) reach ``sock`` through ``sock``'s
    external address?  Both send to each other's external address (so a
    filtering NAT sees each side open its way first); returns (hairpinned, the source
    ``sock`` saw, which RFC 4787 REQ-9 wants to be ``other``'s external address).
    """
    if other.getsockname()[1] == 0:
        other.bind(("0.0.0.0", 0))
    other.setblocking(False)
    nonce = os.urandom(6).hex()
    other_external = _external(other, nonce)
    if other_external is None:
        return False, None
    for _ in range(_HAIRPIN_ROUNDS):
        with contextlib.suppress(OSError):
            sock.sendto(f"HAIRPIN {nonce}".encode(), other_external)
        with contextlib.suppress(OSError):
            other.sendto(f"HAIRPIN {nonce}".encode(), external)
        for words, src in _receive(sock, nonce, time.monotonic() + _HAIRPIN_WAIT):
            if words[0] == "HAIRPIN":
                return True, src
    return False, None


def _key(ep: tuple[str, int]) -> str:
    return f"{ep[0]}:{ep[1]}"


def run_probe(sock: socket.socket, local_ip: str) -> ProbeResult:
    """Probe with ``sock`` (an unbound or bound UDP socket in the host's namespace)."""
    if sock.getsockname()[1] == 0:
        sock.bind(("0.0.0.0", 0))
    local = (local_ip, sock.getsockname()[1])
    sock.setblocking(False)
    nonce = os.urandom(6).hex()
    mapped: dict[tuple[str, int], tuple[str, int] | None] = dict.fromkeys(MAP_ENDPOINTS)

    def receive(until: float) -> list[tuple[list[str], tuple[str, int]]]:
        return _receive(sock, nonce, until)

    for _ in range(_ROUNDS):
        pending = [ep for ep, ext in mapped.items() if ext is None]
        if not pending:
            break
        for ep in pending:
            with contextlib.suppress(OSError):
                sock.sendto(f"MAP {nonce}".encode(), ep)
        end = time.monotonic() + _ROUND_WAIT
        while time.monotonic() < end and any(mapped[ep] is None for ep in pending):
            for words, src in receive(end):
                if words[0] == "MAPPED" and src in mapped:
                    mapped[src] = (words[1], int(words[2]))

    answers = {_key(ep): ext for ep, ext in mapped.items()}
    if all(ext is None for ext in mapped.values()):
        return ProbeResult("blocked", "blocked", local, None, answers)

    exts = [ext for ext in mapped.values() if ext is not None]
    if all(ext == local for ext in exts):
        mapping = "none"
    elif len(set(exts)) == 1:
        mapping = "EIM"
    elif mapped[MAP_ENDPOINTS[1]] == mapped[MAP_ENDPOINTS[2]]:
        mapping = "ADM"
    else:
        mapping = "APDM"

    seen: set[str] = set()
    punched = False
    for _ in range(_ROUNDS):
        with contextlib.suppress(OSError):
            sock.sendto(f"PUNCH {nonce}".encode(), MAP_ENDPOINTS[0])
        end = time.monotonic() + _ROUND_WAIT
        while time.monotonic() < end and not punched:
            for words, _src in receive(end):
                seen.add(words[0])
                punched = punched or words[0] == "PUNCHED"
        if punched:
            # The punches left before the acknowledgement; give stragglers a moment.
            for words, _src in receive(time.monotonic() + _STRAGGLER_WAIT):
                seen.add(words[0])
            break

    if not punched:
        filtering = "blocked"
    elif "OTHER-IP" in seen:
        filtering = "none" if mapping == "none" else "EIF"
    elif "OTHER-PORT" in seen:
        filtering = "ADF"
    else:
        filtering = "APDF"
    return ProbeResult(mapping, filtering, local, mapped[MAP_ENDPOINTS[0]], answers)


def probe_host(
    host_netns: str, local_ip: str, *, neighbour_netns: str | None = None
) -> ProbeResult:
    """Run the probe from a fresh UDP socket inside ``host_netns``.

    With ``neighbour_netns`` (another host on the same LAN), a socket there then checks
    hairpinning, when there is a NAT.  (A second socket on the *same* host cannot: after
    the router's DNAT such a packet has source == destination, which Linux drops as
    martian; real Linux-based routers behave alike.)
    """
    with socket_in_netns(host_netns, socket.AF_INET, socket.SOCK_DGRAM) as sock:
        result = run_probe(sock, local_ip)
        if (
            neighbour_netns is None
            or result.external is None
            or result.mapping in ("none", "blocked")
        ):
            return result
        with socket_in_netns(neighbour_netns, socket.AF_INET, socket.SOCK_DGRAM) as other:
            ok, source = probe_hairpin(sock, result.external, other)
        return dataclasses.replace(result, hairpin=ok, hairpin_source=source)

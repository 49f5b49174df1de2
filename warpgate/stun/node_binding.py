"""STUN from a node's listening UDP socket, and NAT classification per listener.

The mapping peers see is the one of the node's listening socket, so the tests run from
it: :func:`binding_from_listener` sends through ``listener.udp`` and registers the
transaction in ``node.stun_transactions``; ``Node.handle_datagram`` hands it the STUN
answers arriving on that socket.  :func:`observe_listener` runs the RFC 5780 tests and
:func:`classify_listeners` turns them into :class:`~warpgate.stun.nat.NatReport` per
IPv4 listener, cached with a TTL.  Everything is bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from warpgate.sansio.address import NatType
from warpgate.stun.client import (
    DEFAULT_TIMEOUT,
    BindingResult,
    BindingTransaction,
    StunUnavailable,
    _fmt,
    race_bindings,
    stun_binding,
)
from warpgate.stun.nat import Filtering, Mapping, NatCache, NatReport, Observations, classify

if TYPE_CHECKING:
    from warpgate.net.servers import Listener
    from warpgate.node.node import Node

__all__ = [
    "CACHE",
    "binding_from_listener",
    "classify_listeners",
    "observe_listener",
    "parse_server",
    "resolve_servers",
]

log = logging.getLogger(__name__)

Address = tuple[str, int]

DEFAULT_PORT = 3478
ALLOCATION_SAMPLES = 3
#: Reports of every node in this process, by (local address, servers).
CACHE = NatCache()


class _ListenerTransaction(BindingTransaction):
    """Remembers where its answer came from (the datagram's source address)."""

    source: Address | None = None

    def feed(self, data: bytes, addr: object = None) -> bool:
        taken = super().feed(data, addr)
        if taken and self.source is None and isinstance(addr, tuple) and len(addr) >= 2:
            self.source = (str(addr[0]), int(addr[1]))
        return taken


def parse_server(text: str) -> Address:
    """``"host:port"``, ``"[v6]:port"`` or ``"host"`` (port 3478) → (host, port)."""
    text = text.strip()
    if not text:
        raise ValueError("empty STUN server")
    host, port = text, DEFAULT_PORT
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"bad STUN server {text!r}")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            port = int(rest.removeprefix(":"))
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = int(port_text)
    if not host or not 0 < port < 0x10000:
        raise ValueError(f"bad STUN server {text!r}")
    return host, port


async def resolve_servers(
    servers: Sequence[Address], *, family: int = socket.AF_INET, timeout: float = 2.0
) -> tuple[list[Address], dict[str, str]]:
    """Resolve each server to one address of ``family``; return them (in order) and the
    failures."""
    loop = asyncio.get_running_loop()
    failures: dict[str, str] = {}

    async def one(server: Address) -> Address | None:
        with contextlib.suppress(ValueError):
            ip = ipaddress.ip_address(server[0])
            if (ip.version == 4) == (family == socket.AF_INET):
                return (str(ip), server[1])
            failures[_fmt(server)] = f"not an IPv{4 if family == socket.AF_INET else 6} address"
            return None
        try:
            async with asyncio.timeout(timeout):
                infos = await loop.getaddrinfo(
                    server[0], server[1], family=family, type=socket.SOCK_DGRAM
                )
        except (OSError, TimeoutError) as exc:
            failures[_fmt(server)] = f"cannot resolve: {exc or 'timeout'}"
            return None
        if not infos:
            failures[_fmt(server)] = "cannot resolve: no addresses"
            return None
        addr = infos[0][4]
        return (str(addr[0]), int(addr[1]))

    found = await asyncio.gather(*(one(s) for s in servers))
    resolved: list[Address] = []
    for addr in found:
        if addr is not None and addr not in resolved:
            resolved.append(addr)
    return resolved, failures


async def binding_from_listener(
    node: Node,
    listener: Listener,
    server: Address,
    *,
    change_ip: bool = False,
    change_port: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    software: str | None = None,
) -> BindingResult:
    """One Binding request sent from ``listener``'s UDP socket to ``server`` (an IP
    literal and port); the answer arrives through ``node.handle_datagram``.

    ``response_origin`` of the result is the server's RESPONSE-ORIGIN, or the answer's
    source address when the server sent none.  Raises :class:`StunUnavailable`.
    """
    udp = listener.udp
    if udp is None or udp.is_closing():
        raise StunUnavailable({_fmt(server): "the listener has no open UDP socket"})
    txn = _ListenerTransaction(
        server, change_ip=change_ip, change_port=change_port, software=software
    )
    txn.local = listener.local
    node.stun_transactions[txn.transaction_id] = txn

    def send(data: bytes) -> None:
        if udp.is_closing():
            raise OSError("the listening socket is closed")
        udp.sendto(data, server)

    try:
        result = await txn.run(send, timeout=timeout)
    finally:
        node.stun_transactions.pop(txn.transaction_id, None)
    if result.response_origin is None and txn.source is not None:
        result = replace(result, response_origin=txn.source)
    return result


async def _attempt(
    coro: Awaitable[BindingResult],
    label: str,
    errors: list[str],
) -> BindingResult | None:
    try:
        return await coro
    except StunUnavailable as exc:
        errors.append(f"{label}: {'; '.join(exc.outcomes.values())}")
    except OSError as exc:
        errors.append(f"{label}: {exc}")
    return None


async def _first_answers(
    node: Node, listener: Listener, servers: Sequence[Address], timeout: float, errors: list[str]
) -> tuple[BindingResult | None, BindingResult | None]:
    """Test I against every server at once.  Returns the primary answer (one with
    OTHER-ADDRESS preferred) and a second server's answer (another IP) if one came in
    before the primary was settled."""
    tasks = {
        asyncio.ensure_future(binding_from_listener(node, listener, s, timeout=timeout)): s
        for s in servers
    }
    answers: list[BindingResult] = []
    try:
        pending = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                exc = task.exception()
                if exc is None:
                    answers.append(task.result())
                elif isinstance(exc, StunUnavailable):
                    errors.extend(f"{k}: {v}" for k, v in exc.outcomes.items())
                else:
                    errors.append(f"{_fmt(tasks[task])}: {exc!r}")
            if any(a.other_address for a in answers) or len(answers) >= 2:
                break
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if not answers:
        return None, None
    primary = next((a for a in answers if a.other_address), answers[0])
    second = next((a for a in answers if a.server[0] != primary.server[0]), None)
    return primary, second


async def _allocation(
    ip: str, server: Address, timeout: float, errors: list[str]
) -> tuple[tuple[int, int], ...]:
    """Bindings from fresh sockets on ``ip``, one after the other (the order matters for
    sequential allocation)."""
    samples: list[tuple[int, int]] = []
    for _ in range(ALLOCATION_SAMPLES):
        result = await _attempt(
            stun_binding(server, local_addr=(ip, 0), timeout=timeout),
            "allocation",
            errors,
        )
        if result is None or result.local is None:
            break
        samples.append((result.local[1], result.mapped[1]))
    return tuple(samples)


def _changed(result: BindingResult | None, expect: Address) -> bool | None:
    """True: answered from ``expect``; False: no answer; None: answered from elsewhere
    (a server that ignores CHANGE-REQUEST must not pass for EIF)."""
    if result is None:
        return False
    if result.response_origin is None or result.response_origin == expect:
        return True
    return None


async def observe_listener(
    node: Node, listener: Listener, servers: Sequence[Address], *, timeout: float
) -> Observations:
    """Run the mapping, filtering and allocation tests from ``listener``; ``servers`` are
    resolved (IP literal, port).  Bounded by ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    errors: list[str] = []

    def left(share: float = 1.0) -> float:
        return max(0.05, (deadline - loop.time()) * share)

    local = listener.local
    primary, second = await _first_answers(node, listener, servers, left(0.6), errors)
    if primary is None:
        tcp = await _attempt(
            race_bindings(servers, transport="tcp", local_addr=(local[0], 0), timeout=left()),
            "tcp",
            errors,
        )
        return Observations(
            local=local, tcp_mapped=tcp.mapped if tcp else None, errors=tuple(errors)
        )

    server = primary.server
    other = primary.other_address
    step = min(left(), max(1.0, 5 * primary.rtt))
    alloc_task = asyncio.ensure_future(_allocation(local[0], server, min(left(), 1.0), errors))
    change_both = change_port = None
    alt_ip = alt_ip_port = None
    try:
        if other is not None and other[0] != server[0] and other[1] != server[1]:
            # Filtering first: nothing may be sent to the other address before, or the
            # NAT's filter would let its answers in.
            both, port = await asyncio.gather(
                _attempt(
                    binding_from_listener(
                        node, listener, server, change_ip=True, change_port=True, timeout=step
                    ),
                    "change ip+port",
                    errors,
                ),
                _attempt(
                    binding_from_listener(node, listener, server, change_port=True, timeout=step),
                    "change port",
                    errors,
                ),
            )
            change_both = _changed(both, other)
            change_port = _changed(port, (server[0], other[1]))
            step = min(left(), max(1.0, 5 * primary.rtt))
            ip_res, ip_port_res = await asyncio.gather(
                _attempt(
                    binding_from_listener(node, listener, (other[0], server[1]), timeout=step),
                    "other ip",
                    errors,
                ),
                _attempt(
                    binding_from_listener(node, listener, other, timeout=step),
                    "other ip+port",
                    errors,
                ),
            )
            alt_ip = ip_res.mapped if ip_res else None
            alt_ip_port = ip_port_res.mapped if ip_port_res else None
        elif other is not None:
            errors.append(f"{_fmt(server)}: OTHER-ADDRESS {_fmt(other)} is not usable")
        allocation = await alloc_task
    finally:
        alloc_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await alloc_task
    return Observations(
        local=local,
        primary=primary.mapped,
        alt_ip=alt_ip,
        alt_ip_port=alt_ip_port,
        second_server=second.mapped if second else None,
        change_both=change_both,
        change_port=change_port,
        allocation=allocation,
        server=server,
        other_address=other,
        errors=tuple(errors),
    )


def _unknown(local: Address, why: str) -> NatReport:
    return NatReport(
        local=local,
        external=None,
        mapping=Mapping.UNKNOWN,
        filtering=Filtering.UNKNOWN,
        nat_type=NatType.UNKNOWN,
        errors=(why,),
    )


def stun_listeners(node: Node, servers: Sequence[Address]) -> list[Listener]:
    """The listeners to classify: IPv4, not loopback (unless every server is a loopback
    address, as in tests: a loopback server is reachable from loopback only)."""
    all_loopback = bool(servers) and all(ipaddress.ip_address(s[0]).is_loopback for s in servers)
    return [
        lst
        for lst in node.listeners
        if lst.ip.version == 4 and (all_loopback or not lst.ip.is_loopback)
    ]


async def classify_listeners(
    node: Node,
    servers: Sequence[Address],
    *,
    timeout: float,
    cache_ttl: float = 0.0,
    cache: NatCache = CACHE,
) -> dict[str, NatReport]:
    """Classify every IPv4 listener of ``node`` (concurrently) and store the reports in
    ``node.nat_reports`` (by listener IP).  Never raises for network trouble: a failed
    classification is an ``unknown`` report with the reason in ``errors``."""

    async def one(listener: Listener) -> NatReport:
        local = listener.local
        key = (local, tuple(servers))
        now = time.monotonic()
        cached = cache.get(key, ttl=cache_ttl, now=now)
        if cached is not None:
            return cached
        try:
            async with asyncio.timeout(timeout + 1.0):
                obs = await observe_listener(node, listener, servers, timeout=timeout)
        except TimeoutError:
            return _unknown(local, f"classification took longer than {timeout:.1f}s")
        except Exception as exc:  # a bug must not stop start-up; say so loudly
            log.exception("NAT classification of %s failed", _fmt(local))
            return _unknown(local, f"failed: {exc!r}")
        report = classify(obs)
        if report.nat_type is not NatType.UNKNOWN or report.external is not None:
            cache.put(key, report, now=now)
        return report

    listeners = stun_listeners(node, servers)
    reports = await asyncio.gather(*(one(lst) for lst in listeners))
    for listener, report in zip(listeners, reports, strict=True):
        node.nat_reports[str(listener.ip)] = report
        if report.nat_type is NatType.UNKNOWN:
            log.warning(
                "NAT behind %s: unknown (%s)",
                _fmt(report.local),
                "; ".join(report.errors) or "inconclusive tests",
            )
        else:
            log.info(
                "NAT behind %s: %s (mapping %s, filtering %s), external %s, ports %s",
                _fmt(report.local),
                report.nat_type.name.lower(),
                report.mapping,
                report.filtering,
                _fmt(report.external) if report.external else "?",
                report.port_allocation.name.lower(),
            )
    return dict(node.nat_reports)

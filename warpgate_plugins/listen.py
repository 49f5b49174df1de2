"""Phase 7, ``listen_on_ifs``: TCP and UDP servers on every selected address."""

from __future__ import annotations

import functools
import ipaddress
import logging
from typing import TYPE_CHECKING

from warpgate.errors import PhaseError, PortInUseError
from warpgate.identity.machine import derived_ports
from warpgate.net.servers import IP, Listener, open_listeners
from warpgate.plugin import hookimpl

if TYPE_CHECKING:
    from warpgate.node.node import Node

log = logging.getLogger(__name__)

DERIVED_PORT_TRIES = 8
LOOPBACKS: tuple[IP, ...] = (ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1"))


def listen_addresses(node: Node) -> list[tuple[IP, int]]:
    """Every (ip, scope id) to bind, without duplicates, loopback added when asked."""
    found: dict[IP, int] = {}
    for iface in node.ifs:
        for ip in iface.listen_ips():
            found.setdefault(ip, iface.scope_id)
    if node.conf["listen_loopback"] and not node.ip_wanted:
        families = {ip.version for ip in found}
        for ip in LOOPBACKS:
            if ip.version in families or not found:
                found.setdefault(ip, 0)
    return list(found.items())


async def _close_all(listeners: list[Listener]) -> None:
    for listener in listeners:
        await listener.close()


@hookimpl(trylast=True)
async def warpgate_listen_on_ifs(node: Node) -> str:
    addrs = listen_addresses(node)
    if not addrs:
        raise PhaseError("no address to listen on", phase="listen_on_ifs")
    ports = (
        [node.port] if node.port is not None else derived_ports(node.machine_id, DERIVED_PORT_TRIES)
    )
    last_error: PortInUseError | None = None
    for port in ports:
        try:
            listeners = await _open(node, addrs, port)
        except PortInUseError as exc:
            if node.port is not None:
                raise  # the user asked for this port: say so rather than pick another
            log.info("derived port %d is taken (%s); trying the next derived port", port, exc)
            last_error = exc
            continue
        except OSError as exc:
            if _missing_v6(exc) and any(ip.version == 6 for ip, _ in addrs):
                # A host with IPv6 disabled still lists ::1 or addresses it cannot bind.
                log.info("IPv6 listen failed (%s); continuing with IPv4 only", exc)
                addrs = [(ip, s) for ip, s in addrs if ip.version == 4]
                listeners = await _open(node, addrs, port)
            else:
                raise
        node.listeners = listeners
        node.listen_port = listeners[0].port
        node.add_cleanup(functools.partial(_close_all, listeners))
        return f"{len(listeners)} addresses"
    raise PortInUseError(
        f"all {len(ports)} ports derived from this machine's id are taken "
        f"({', '.join(map(str, ports))}); pass Node(port=...) or port=0",
        port=ports[0],
    ) from last_error


def _missing_v6(exc: OSError) -> bool:
    return exc.errno in (97, 99, 47, 49)  # EAFNOSUPPORT / EADDRNOTAVAIL (Linux, BSD)


async def _open(node: Node, addrs: list[tuple[IP, int]], port: int) -> list[Listener]:
    return await open_listeners(
        addrs,
        port,
        reuse_addr=node.conf["reuse_addr"],
        tcp_factory=node.tcp_protocol_factory(),
        on_datagram=node.handle_datagram,
    )

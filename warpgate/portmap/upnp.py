"""UPnP IGD port mapping through ``miniupnpc`` (a blocking C library).

Every call here blocks; :mod:`warpgate.portmap` runs them in a worker thread with a bound.
The router's answers are checked: the external address must be a real address, and each
mapping is read back (``GetSpecificPortMappingEntry``) and must point at us.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import urllib.parse
from typing import Any

from warpgate.portmap.types import PortMapError, PortMapping

log = logging.getLogger(__name__)

DESCRIPTION = "warpgate"


SSDP_ADDRESS = ("239.255.255.250", 1900)


def _preflight(root_url: str | None) -> None:
    """Resolve where miniupnpc is about to send through Python's own resolver first.

    miniupnpc's sockets are invisible to Python, so a policy installed on
    ``socket.getaddrinfo`` (a sandbox, the test suite's network guard) would not see the
    SSDP multicast or the HTTP request; asking it first lets it refuse.
    """
    if root_url:
        parts = urllib.parse.urlsplit(root_url)
        host, port = parts.hostname or "", parts.port or 80
    else:
        host, port = SSDP_ADDRESS
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM if not root_url else 0)
    except OSError as exc:
        raise PortMapError(f"no UPnP gateway: cannot reach {host}:{port} ({exc})") from None


class UpnpSession:
    """One IGD, found by SSDP discovery or given by its description URL."""

    def __init__(
        self,
        *,
        root_url: str | None = None,
        discover_delay: float = 1.0,
        lifetime: int = 3600,
    ) -> None:
        self.root_url = root_url
        self.discover_delay = discover_delay
        self.lifetime = lifetime
        self.mappings: list[PortMapping] = []
        self._upnp: Any = None
        self._lock = threading.Lock()  # miniupnpc objects are not thread-safe

    def _connect(self) -> Any:
        try:
            import miniupnpc
        except ImportError as exc:
            raise PortMapError("miniupnpc is not installed") from exc
        if self._upnp is not None:
            return self._upnp
        _preflight(self.root_url)
        upnp = miniupnpc.UPnP()
        try:
            if self.root_url:
                upnp.selectigd(self.root_url)
            else:
                upnp.discoverdelay = max(1, int(self.discover_delay * 1000))
                if upnp.discover() < 1:
                    raise PortMapError("no UPnP device answered discovery")
                upnp.selectigd()
        except PortMapError:
            raise
        except Exception as exc:  # miniupnpc raises plain Exception
            why = str(exc)
            if why in ("", "Success"):  # miniupnpc's text when no IGD is usable/connected
                why = "no connected IGD answered"
            raise PortMapError(f"no UPnP gateway: {why}") from None
        self._upnp = upnp
        return upnp

    def map(self, internal_port: int, protocols: tuple[str, ...]) -> list[PortMapping]:
        """Discover the IGD and map ``internal_port`` for each protocol (blocking)."""
        with self._lock:
            upnp = self._connect()
            external = ""
            try:
                external = str(upnp.externalipaddress() or "")
                ip = ipaddress.ip_address(external)
            except ValueError:
                raise PortMapError(
                    f"UPnP gateway reports a bogus external address {external!r}"
                ) from None
            except Exception as exc:
                raise PortMapError(f"UPnP GetExternalIPAddress failed: {exc}") from None
            if ip.is_unspecified or ip.is_loopback or ip.is_multicast:
                raise PortMapError(f"UPnP gateway reports an impossible external address {ip}")
            lanaddr = str(upnp.lanaddr)
            made: list[PortMapping] = []
            try:
                for protocol in protocols:
                    made.append(self._add(upnp, protocol, lanaddr, internal_port, str(ip)))
            except BaseException:
                for m in made:
                    self._delete(upnp, m)
                raise
            self.mappings = made
            return made

    def _add(
        self, upnp: Any, protocol: str, lanaddr: str, port: int, external_ip: str
    ) -> PortMapping:
        proto = protocol.upper()
        lease = self.lifetime
        ok = False
        try:
            ok = bool(upnp.addportmapping(port, proto, lanaddr, port, DESCRIPTION, "", lease))
        except TypeError:  # an old binding without the lease argument
            lease = 0
        except Exception as exc:
            log.debug("upnp: %s mapping with lease %d refused (%s)", proto, lease, exc)
            lease = 0
        if not ok:
            try:  # IGDv1 routers may only allow permanent leases (error 725)
                ok = bool(upnp.addportmapping(port, proto, lanaddr, port, DESCRIPTION, ""))
            except Exception as exc:
                raise PortMapError(f"UPnP AddPortMapping {proto} {port} refused: {exc}") from None
            lease = 0
        if not ok:
            raise PortMapError(f"UPnP AddPortMapping {proto} {port} refused")
        try:
            entry = upnp.getspecificportmapping(port, proto)
        except Exception as exc:
            entry = None
            log.debug("upnp: reading back %s %d failed: %s", proto, port, exc)
        mapping = PortMapping("upnp", protocol, lanaddr, port, external_ip, port, lease, "upnp")
        if not entry or str(entry[0]) != lanaddr or int(entry[1]) != port:
            self._delete(upnp, mapping)
            raise PortMapError(
                f"UPnP gateway accepted {proto} {port} but reports {entry!r} for it (not us)"
            )
        return mapping

    @staticmethod
    def _delete(upnp: Any, mapping: PortMapping) -> None:
        try:
            upnp.deleteportmapping(mapping.external_port, mapping.protocol.upper(), "")
        except Exception as exc:
            log.info("upnp: removing %s failed: %s", mapping.describe(), exc)

    def refresh(self) -> list[PortMapping]:
        """Add the same mappings again (extends their lease)."""
        if not self.mappings:
            return []
        port = self.mappings[0].internal_port
        return self.map(port, tuple(m.protocol for m in self.mappings))

    def unmap(self) -> None:
        with self._lock:
            if self._upnp is None:
                return
            for m in self.mappings:
                self._delete(self._upnp, m)
            self.mappings = []

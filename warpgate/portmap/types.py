"""What a port mapping is, whichever protocol made it."""

from __future__ import annotations

from dataclasses import dataclass

from warpgate.errors import WarpgateError


class PortMapError(WarpgateError):
    """A gateway could not be found, refused, or answered something impossible."""


@dataclass(frozen=True)
class PortMapping:
    """One forwarded port on the home router: ``external_ip:external_port`` (on the
    router's WAN side) reaches ``internal_ip:internal_port`` (this node)."""

    method: str  # "upnp", "pcp" or "natpmp"
    protocol: str  # "udp" or "tcp"
    internal_ip: str
    internal_port: int
    external_ip: str
    external_port: int
    lifetime: int  # seconds granted; 0 = permanent (UPnP routers that refuse leases)
    gateway: str  # the router's address (NAT-PMP/PCP) or its description URL (UPnP)

    def describe(self) -> str:
        return (
            f"{self.method} {self.protocol} {self.external_ip}:{self.external_port}"
            f" -> {self.internal_ip}:{self.internal_port}"
        )

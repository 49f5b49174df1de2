"""A small async NAT-PMP (RFC 6886) / PCP (RFC 6887) client over UDP.

It talks to one gateway (normally the default gateway, port 5351), retransmits as the
RFCs say (250 ms, doubling) but for a bounded number of attempts, accepts answers only
from the gateway's address (a connected socket) and only when they match the request
(opcode, protocol, internal port, PCP nonce).  A gateway that answers with nonsense (no
external port, zero lifetime, an unspecified address) is treated as refusing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import socket
from collections.abc import Callable
from typing import Any, TypeVar

from warpgate.portmap.types import PortMapError, PortMapping
from warpgate.sansio import natpmp as codec

log = logging.getLogger(__name__)

T = TypeVar("T")


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(64)
        self.error: Exception | None = None

    def datagram_received(self, data: bytes, addr: Any) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        self.error = exc


class NatPmpClient:
    """One gateway, one UDP socket; use as ``async with NatPmpClient(gw) as client``."""

    def __init__(
        self,
        gateway: str,
        port: int = codec.NATPMP_PORT,
        *,
        attempts: int = 4,
        initial_rto: float = codec.NATPMP_INITIAL_RTO,
    ) -> None:
        self.gateway = gateway
        self.port = port
        self.attempts = max(1, attempts)
        self.initial_rto = initial_rto
        self._transport: asyncio.DatagramTransport | None = None
        self._proto: _Datagrams | None = None

    async def __aenter__(self) -> NatPmpClient:
        loop = asyncio.get_running_loop()
        # Resolve through socket.getaddrinfo even for an IP literal (asyncio skips it for
        # those), so a policy installed there (a sandbox, the test network guard) applies.
        try:
            infos = await loop.getaddrinfo(self.gateway, self.port, type=socket.SOCK_DGRAM)
        except OSError as exc:
            raise PortMapError(f"cannot reach {self.gateway}:{self.port} ({exc})") from None
        family, _, _, _, sockaddr = infos[0]
        host, port = sockaddr[0], sockaddr[1]
        # A UDP lookup of a host name or IP gives AF_INET/AF_INET6 (host, port, ...) only.
        assert isinstance(host, str) and isinstance(port, int), sockaddr
        self._transport, self._proto = await loop.create_datagram_endpoint(
            _Datagrams, remote_addr=(host, port), family=family
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    @property
    def local_ip(self) -> str:
        assert self._transport is not None
        return str(self._transport.get_extra_info("sockname")[0])

    async def request(self, payload: bytes, match: Callable[[bytes], T | None]) -> T:
        """Send ``payload`` until ``match`` accepts an answer; bounded retransmissions."""
        assert self._transport is not None and self._proto is not None
        loop = asyncio.get_running_loop()
        for wait in codec.retransmit_schedule(self.initial_rto, self.attempts):
            self._transport.sendto(payload)
            deadline = loop.time() + wait
            while (left := deadline - loop.time()) > 0:
                try:
                    data = await asyncio.wait_for(self._proto.queue.get(), left)
                except TimeoutError:
                    break
                try:
                    answer = match(data)
                except codec.NatPmpError as exc:
                    log.debug("natpmp %s: ignoring malformed answer: %s", self.gateway, exc)
                    continue
                if answer is not None:
                    return answer
            if isinstance(self._proto.error, ConnectionRefusedError):
                raise PortMapError(f"{self.gateway}:{self.port} refused (nothing listening)")
        raise PortMapError(f"no answer from {self.gateway}:{self.port} ({self.attempts} tries)")

    # -- NAT-PMP ---------------------------------------------------------------------

    async def external_address(self) -> ipaddress.IPv4Address:
        def match(data: bytes) -> codec.NatPmpResponse | None:
            answer = codec.decode_natpmp_response(data)
            return answer if answer.__class__ is not codec.NatPmpMapResponse else None

        answer: codec.NatPmpResponse = await self.request(
            codec.encode_natpmp_external_request(), match
        )
        if answer.result != codec.NatPmpResult.SUCCESS:
            raise PortMapError(f"NAT-PMP: {codec.result_name(0, answer.result)}")
        assert isinstance(answer, codec.NatPmpExternalResponse)
        _check_external_ip(answer.external_ip)
        return answer.external_ip

    async def natpmp_map(
        self, protocol: str, internal_port: int, lifetime: int, external_port: int = 0
    ) -> codec.NatPmpMapResponse:
        payload = codec.encode_natpmp_map_request(
            protocol, internal_port, external_port or internal_port, lifetime
        )

        def match(data: bytes) -> codec.NatPmpResponse | None:
            answer = codec.decode_natpmp_response(data)
            if isinstance(answer, codec.NatPmpVersionResponse):
                return answer
            if isinstance(answer, codec.NatPmpMapResponse) and (
                answer.protocol == protocol and answer.internal_port == internal_port
            ):
                return answer
            return None

        answer: codec.NatPmpResponse = await self.request(payload, match)
        if answer.result != codec.NatPmpResult.SUCCESS:
            raise PortMapError(f"NAT-PMP map {protocol}: {codec.result_name(0, answer.result)}")
        assert isinstance(answer, codec.NatPmpMapResponse)
        if lifetime and (answer.external_port == 0 or answer.lifetime == 0):
            raise PortMapError(
                f"NAT-PMP map {protocol}: gateway claims success but gave port "
                f"{answer.external_port}, lifetime {answer.lifetime}"
            )
        return answer

    async def natpmp_unmap(self, protocol: str, internal_port: int) -> None:
        payload = codec.encode_natpmp_map_request(protocol, internal_port, 0, 0)

        def match(data: bytes) -> object | None:
            answer = codec.decode_natpmp_response(data)
            port = getattr(answer, "internal_port", internal_port)
            return answer if port == internal_port else None

        await self.request(payload, match)

    # -- PCP -------------------------------------------------------------------------

    async def pcp_map(
        self,
        protocol: str,
        internal_port: int,
        lifetime: int,
        nonce: bytes,
        external_port: int = 0,
    ) -> codec.PcpMapResponse:
        payload = codec.encode_pcp_map_request(
            nonce=nonce,
            protocol=protocol,
            internal_port=internal_port,
            lifetime=lifetime,
            client_ip=self.local_ip,
            external_port=external_port or internal_port,
        )
        proto = 17 if protocol == "udp" else 6

        def match(data: bytes) -> object | None:
            answer = codec.decode_response(data)
            if isinstance(answer, codec.NatPmpVersionResponse | codec.PcpErrorResponse):
                return answer
            if isinstance(answer, codec.PcpMapResponse) and (
                answer.nonce == nonce
                and answer.protocol == proto
                and answer.internal_port == internal_port
            ):
                return answer
            return None

        answer = await self.request(payload, match)
        if isinstance(answer, codec.NatPmpVersionResponse | codec.NatPmpExternalResponse):
            raise PcpUnsupported(f"{self.gateway} speaks NAT-PMP only")
        assert isinstance(answer, codec.PcpMapResponse | codec.PcpErrorResponse)
        if answer.result == codec.PcpResult.UNSUPP_VERSION:
            raise PcpUnsupported(f"{self.gateway}: PCP version unsupported")
        if answer.result != codec.PcpResult.SUCCESS:
            raise PortMapError(f"PCP map {protocol}: {codec.result_name(2, answer.result)}")
        assert isinstance(answer, codec.PcpMapResponse)
        if lifetime:
            if answer.external_port == 0 or answer.lifetime == 0:
                raise PortMapError(
                    f"PCP map {protocol}: gateway claims success but gave port "
                    f"{answer.external_port}, lifetime {answer.lifetime}"
                )
            _check_external_ip(answer.external_ip)
        return answer


class PcpUnsupported(PortMapError):
    """The gateway answered PCP with "unsupported version": fall back to NAT-PMP."""


def _check_external_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    if ip.is_unspecified or ip.is_multicast or ip.is_loopback:
        raise PortMapError(f"gateway reports an impossible external address {ip}")


async def map_natpmp(
    gateway: str,
    internal_port: int,
    *,
    protocols: tuple[str, ...] = ("udp", "tcp"),
    lifetime: int,
    port: int = codec.NATPMP_PORT,
    attempts: int = 4,
    pcp: bool = True,
) -> tuple[list[PortMapping], NatPmpSession]:
    """Map ``internal_port`` for each protocol: PCP first (when ``pcp``), NAT-PMP when the
    gateway does not speak PCP.  Returns the mappings and a session to refresh/unmap."""
    session = NatPmpSession(gateway, port, attempts, internal_port, protocols, lifetime, pcp)
    mappings = await session.map()
    return mappings, session


class NatPmpSession:
    """What :func:`map_natpmp` mapped, so it can be refreshed and removed."""

    def __init__(
        self,
        gateway: str,
        port: int,
        attempts: int,
        internal_port: int,
        protocols: tuple[str, ...],
        lifetime: int,
        pcp: bool = True,
    ) -> None:
        self.gateway, self.port, self.attempts = gateway, port, attempts
        self.internal_port, self.protocols, self.lifetime = internal_port, protocols, lifetime
        self.use_pcp = pcp
        self.nonces = {p: secrets.token_bytes(codec.PCP_NONCE_SIZE) for p in protocols}
        self.mappings: list[PortMapping] = []

    @property
    def method(self) -> str:
        return "pcp" if self.use_pcp else "natpmp"

    async def map(self) -> list[PortMapping]:
        async with NatPmpClient(self.gateway, self.port, attempts=self.attempts) as client:
            if self.use_pcp:
                try:
                    return await self._map_pcp(client)
                except PcpUnsupported as exc:
                    log.info("portmap: %s; trying NAT-PMP", exc)
                    self.use_pcp = False
            return await self._map_natpmp(client)

    async def _map_pcp(self, client: NatPmpClient) -> list[PortMapping]:
        for protocol in self.protocols:
            previous = self._external_port(protocol)
            answer = await client.pcp_map(
                protocol, self.internal_port, self.lifetime, self.nonces[protocol], previous
            )
            self._record(
                PortMapping(
                    method="pcp",
                    protocol=protocol,
                    internal_ip=client.local_ip,
                    internal_port=self.internal_port,
                    external_ip=str(answer.external_ip),
                    external_port=answer.external_port,
                    lifetime=answer.lifetime,
                    gateway=self.gateway,
                )
            )
        return self._ordered()

    async def _map_natpmp(self, client: NatPmpClient) -> list[PortMapping]:
        external_ip = await client.external_address()
        for protocol in self.protocols:
            previous = self._external_port(protocol)
            answer = await client.natpmp_map(protocol, self.internal_port, self.lifetime, previous)
            self._record(
                PortMapping(
                    method="natpmp",
                    protocol=protocol,
                    internal_ip=client.local_ip,
                    internal_port=self.internal_port,
                    external_ip=str(external_ip),
                    external_port=answer.external_port,
                    lifetime=answer.lifetime,
                    gateway=self.gateway,
                )
            )
        return self._ordered()

    def _ordered(self) -> list[PortMapping]:
        order = {p: i for i, p in enumerate(self.protocols)}
        self.mappings.sort(key=lambda m: order.get(m.protocol, 99))
        return list(self.mappings)

    def _record(self, mapping: PortMapping) -> None:
        """Keep mappings as they are made, so a cancelled map() can still be undone."""
        others = [m for m in self.mappings if m.protocol != mapping.protocol]
        self.mappings = [*others, mapping]

    def _external_port(self, protocol: str) -> int:
        for m in self.mappings:
            if m.protocol == protocol:
                return m.external_port
        return 0

    async def refresh(self) -> list[PortMapping]:
        return await self.map()

    async def unmap(self) -> None:
        if not self.mappings:
            return
        async with NatPmpClient(self.gateway, self.port, attempts=self.attempts) as client:
            for m in self.mappings:
                if self.use_pcp:
                    await client.pcp_map(
                        m.protocol, m.internal_port, 0, self.nonces[m.protocol], m.external_port
                    )
                else:
                    await client.natpmp_unmap(m.protocol, m.internal_port)
        self.mappings = []

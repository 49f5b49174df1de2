"""Just enough STUN (RFC 5389) and TURN (RFC 5766) for the lab to check coturn answers:
a Binding request and the XOR-MAPPED-ADDRESS of the response; an Allocate with
long-term credentials.  Private to the lab; warpgate's real STUN
codec lives elsewhere.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import struct

MAGIC_COOKIE = 0x2112A442
BINDING_REQUEST = 0x0001
BINDING_SUCCESS = 0x0101
XOR_MAPPED_ADDRESS = 0x0020
MAPPED_ADDRESS = 0x0001
OTHER_ADDRESS = 0x802C


def binding_request() -> tuple[bytes, bytes]:
    """A Binding request with no attributes, and its 12-byte transaction id."""
    tid = os.urandom(12)
    return struct.pack("!HHI", BINDING_REQUEST, 0, MAGIC_COOKIE) + tid, tid


def _attributes(data: bytes) -> dict[int, bytes]:
    attrs: dict[int, bytes] = {}
    pos = 20
    while pos + 4 <= len(data):
        kind, length = struct.unpack_from("!HH", data, pos)
        attrs.setdefault(kind, data[pos + 4 : pos + 4 + length])
        pos += 4 + length + (-length % 4)  # attributes are padded to 4 bytes
    return attrs


def _address(value: bytes, xor: bool) -> tuple[str, int]:
    family, port = struct.unpack_from("!xBH", value)
    if family != 0x01:
        raise ValueError("only IPv4 addresses are understood here")
    raw = struct.unpack_from("!I", value, 4)[0]
    if xor:
        port ^= MAGIC_COOKIE >> 16
        raw ^= MAGIC_COOKIE
    return socket.inet_ntoa(struct.pack("!I", raw)), port


def parse_binding_response(data: bytes, tid: bytes) -> dict[str, tuple[str, int]]:
    """Addresses in a Binding success response: ``mapped`` and, if present, ``other``.

    Raises ValueError for anything that is not the success response to ``tid``.
    """
    if len(data) < 20:
        raise ValueError("short STUN message")
    kind, length, cookie = struct.unpack_from("!HHI", data)
    if cookie != MAGIC_COOKIE or data[8:20] != tid:
        raise ValueError("not a response to our request")
    if kind != BINDING_SUCCESS:
        raise ValueError(f"STUN message type 0x{kind:04x} is not a Binding success")
    attrs = _attributes(data[: 20 + length])
    out: dict[str, tuple[str, int]] = {}
    if XOR_MAPPED_ADDRESS in attrs:
        out["mapped"] = _address(attrs[XOR_MAPPED_ADDRESS], xor=True)
    elif MAPPED_ADDRESS in attrs:
        out["mapped"] = _address(attrs[MAPPED_ADDRESS], xor=False)
    else:
        raise ValueError("no mapped address in the response")
    if OTHER_ADDRESS in attrs:
        out["other"] = _address(attrs[OTHER_ADDRESS], xor=False)
    return out


def binding(
    sock: socket.socket, server: tuple[str, int], *, tries: int = 3, wait: float = 0.5
) -> dict[str, tuple[str, int]]:
    """Send Binding requests on ``sock`` (blocking UDP) until one is answered.

    Bounded: ``tries`` requests, ``wait`` seconds each.  Raises TimeoutError otherwise.
    """
    old_timeout = sock.gettimeout()
    try:
        for _ in range(tries):
            request, tid = binding_request()
            sock.sendto(request, server)
            sock.settimeout(wait)
            try:
                for _ in range(8):  # ignore a few stray datagrams per try
                    data, _addr = sock.recvfrom(2048)
                    try:
                        return parse_binding_response(data, tid)
                    except ValueError:
                        continue
            except TimeoutError:
                continue
        raise TimeoutError(f"no STUN Binding response from {server[0]}:{server[1]}")
    finally:
        sock.settimeout(old_timeout)


# ---------------------------------------------------------------- TURN (RFC 5766)

ALLOCATE_REQUEST = 0x0003
ALLOCATE_SUCCESS = 0x0103
ALLOCATE_ERROR = 0x0113
REFRESH_REQUEST = 0x0004
REFRESH_SUCCESS = 0x0104
USERNAME = 0x0006
MESSAGE_INTEGRITY = 0x0008
ERROR_CODE = 0x0009
LIFETIME = 0x000D
REALM = 0x0014
NONCE = 0x0015
XOR_RELAYED_ADDRESS = 0x0016
REQUESTED_TRANSPORT = 0x0019
_UDP = 17


def _attr(kind: int, value: bytes) -> bytes:
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * (-len(value) % 4)


def _request(kind: int, attrs: bytes, key: bytes | None) -> tuple[bytes, bytes]:
    """A request with ``attrs``; with ``key``, MESSAGE-INTEGRITY is appended."""
    tid = os.urandom(12)
    if key is None:
        return struct.pack("!HHI", kind, len(attrs), MAGIC_COOKIE) + tid + attrs, tid
    # The integrity covers the header with a length that already counts the MI attribute.
    header = struct.pack("!HHI", kind, len(attrs) + 24, MAGIC_COOKIE) + tid
    mac = hmac.new(key, header + attrs, hashlib.sha1).digest()
    return header + attrs + _attr(MESSAGE_INTEGRITY, mac), tid


def _exchange(
    sock: socket.socket, server: tuple[str, int], message: bytes, tid: bytes, tries: int
) -> tuple[int, dict[int, bytes]]:
    old_timeout = sock.gettimeout()
    try:
        for _ in range(tries):
            sock.sendto(message, server)
            sock.settimeout(0.5)
            try:
                for _ in range(8):
                    data, _addr = sock.recvfrom(2048)
                    if len(data) >= 20 and data[8:20] == tid:
                        kind, length = struct.unpack_from("!HH", data)
                        return kind, _attributes(data[: 20 + length])
            except TimeoutError:
                continue
        raise TimeoutError(f"no TURN response from {server[0]}:{server[1]}")
    finally:
        sock.settimeout(old_timeout)


def allocate(
    sock: socket.socket,
    server: tuple[str, int],
    username: str,
    password: str,
    *,
    tries: int = 3,
) -> tuple[tuple[str, int], bytes]:
    """Make a TURN allocation over UDP with long-term credentials.

    Returns the relayed address and the state needed by :func:`release`.  Raises
    ValueError when the server refuses.
    """
    transport = _attr(REQUESTED_TRANSPORT, bytes([_UDP, 0, 0, 0]))
    message, tid = _request(ALLOCATE_REQUEST, transport, None)
    kind, attrs = _exchange(sock, server, message, tid, tries)
    if kind != ALLOCATE_ERROR or REALM not in attrs or NONCE not in attrs:
        raise ValueError(f"expected a 401 challenge, got message type 0x{kind:04x}")
    realm, nonce = attrs[REALM], attrs[NONCE]
    key = hashlib.md5(username.encode() + b":" + realm + b":" + password.encode()).digest()
    creds = _attr(USERNAME, username.encode()) + _attr(REALM, realm) + _attr(NONCE, nonce)
    message, tid = _request(ALLOCATE_REQUEST, transport + creds, key)
    kind, attrs = _exchange(sock, server, message, tid, tries)
    if kind != ALLOCATE_SUCCESS:
        code = attrs.get(ERROR_CODE, b"\0\0\0\0")
        raise ValueError(f"allocation refused: {code[2] * 100 + code[3]} {code[4:]!r}")
    return _address(attrs[XOR_RELAYED_ADDRESS], xor=True), key + b"|" + creds


def release(sock: socket.socket, server: tuple[str, int], state: bytes) -> None:
    """Delete the allocation (a Refresh with LIFETIME 0)."""
    key, creds = state[:16], state[17:]
    message, tid = _request(REFRESH_REQUEST, _attr(LIFETIME, b"\0\0\0\0") + creds, key)
    kind, _attrs = _exchange(sock, server, message, tid, 3)
    if kind != REFRESH_SUCCESS:
        raise ValueError(f"refresh refused: message type 0x{kind:04x}")

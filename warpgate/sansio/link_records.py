"""Link records (sans-IO): application messages and control records inside the
transport ciphers a link handshake produced.

Each Noise transport message carries one record: a type byte then its body.  An
application message larger than one Noise message (64 KiB less overhead) is sent as
``MORE`` records followed by an ``END`` record and reassembled by the receiver, up to
``max_message`` bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from warpgate.sansio.link_handshake import LinkProtocolError
from warpgate.sansio.noise import MAX_MESSAGE, TAG_SIZE, CipherState, NoiseError

MORE = 0x00
END = 0x01
CLOSE = 0x02
PING = 0x03
PONG = 0x04
MAX_CHUNK = MAX_MESSAGE - TAG_SIZE - 1


@dataclass(frozen=True)
class Message:
    data: bytes


@dataclass(frozen=True)
class Closed:
    reason: str


@dataclass(frozen=True)
class Ping:
    body: bytes


@dataclass(frozen=True)
class Pong:
    body: bytes


Event = Message | Closed | Ping | Pong


class _Plain:
    """A stand-in cipher for benchmarks with encryption switched off (both sides agreed)."""

    def encrypt(self, plaintext: bytes, ad: bytes = b"") -> bytes:
        return plaintext

    def decrypt(self, ciphertext: bytes, ad: bytes = b"") -> bytes:
        return ciphertext

    def encrypt_with_nonce(self, nonce: int, plaintext: bytes, ad: bytes = b"") -> bytes:
        return plaintext

    def decrypt_with_nonce(self, nonce: int, ciphertext: bytes, ad: bytes = b"") -> bytes:
        return ciphertext


class RecordCodec:
    """Seal outgoing messages into records and open incoming ones."""

    def __init__(
        self,
        send: CipherState | None,
        receive: CipherState | None,
        *,
        max_message: int,
    ) -> None:
        self._send = send if send is not None else _Plain()
        self._receive = receive if receive is not None else _Plain()
        self.max_message = max_message
        self._partial: list[bytes] = []
        self._partial_size = 0

    def seal_message(self, data: bytes) -> list[bytes]:
        """The Noise messages carrying ``data`` (one per 64 KiB chunk)."""
        if len(data) > self.max_message:
            raise ValueError(f"message of {len(data)} bytes exceeds {self.max_message}")
        view = memoryview(data)
        out = []
        for start in range(0, max(len(data), 1), MAX_CHUNK):
            chunk = view[start : start + MAX_CHUNK]
            last = start + MAX_CHUNK >= len(data)
            out.append(self._send.encrypt(bytes([END if last else MORE]) + chunk))
        return out

    def seal_control(self, kind: int, body: bytes = b"") -> bytes:
        return self._send.encrypt(bytes([kind]) + body)

    def open(self, record: bytes) -> Event | None:
        """Decrypt one record; returns an event, or ``None`` for a partial message."""
        try:
            plain = self._receive.decrypt(record)
        except NoiseError as exc:
            raise LinkProtocolError(f"record failed authentication: {exc}") from exc
        if not plain:
            raise LinkProtocolError("empty record")
        kind, body = plain[0], plain[1:]
        if kind in (MORE, END):
            self._partial_size += len(body)
            if self._partial_size > self.max_message:
                raise LinkProtocolError(f"peer sent a message larger than {self.max_message} bytes")
            if kind == MORE:
                self._partial.append(body)
                return None
            if self._partial:
                self._partial.append(body)
                body = b"".join(self._partial)
                self._partial.clear()
            self._partial_size = 0
            return Message(body)
        if kind == CLOSE:
            return Closed(body.decode("utf-8", "replace")[:200])
        if kind == PING:
            return Ping(body)
        if kind == PONG:
            return Pong(body)
        raise LinkProtocolError(f"unknown record type {kind}")


_NONCE = 8


class DatagramRecordCodec(RecordCodec):
    """Records for UDP links: one record per datagram, each with its own explicit 8-byte
    nonce (datagrams are lost and reordered, so the counter cannot be implicit) and an
    anti-replay window on receive.  Messages are not fragmented: at most
    ``max_message`` bytes, one datagram each."""

    def __init__(
        self,
        send: CipherState | None,
        receive: CipherState | None,
        *,
        max_message: int,
        window: int = 2048,
    ) -> None:
        from warpgate.sansio.replay import ReplayWindow

        super().__init__(send, receive, max_message=max_message)
        self._next_nonce = 0
        self.window = ReplayWindow(window)
        self.rejected = 0

    def _seal(self, kind: int, body: bytes) -> bytes:
        nonce = self._next_nonce
        self._next_nonce += 1
        return nonce.to_bytes(_NONCE, "big") + self._send.encrypt_with_nonce(
            nonce, bytes([kind]) + body
        )

    def seal_message(self, data: bytes) -> list[bytes]:
        if len(data) > self.max_message:
            raise ValueError(f"message of {len(data)} bytes exceeds {self.max_message}")
        return [self._seal(END, data)]

    def seal_control(self, kind: int, body: bytes = b"") -> bytes:
        return self._seal(kind, body)

    def open(self, record: bytes) -> Event | None:
        """Authenticate one datagram; ``None`` when it is a replay, too old or forged
        (dropped and counted: on UDP anyone can send us anything)."""
        if len(record) < _NONCE + 1:
            self.rejected += 1
            return None
        nonce = int.from_bytes(record[:_NONCE], "big")
        if not self.window.check(nonce):
            self.rejected += 1
            return None
        try:
            plain = self._receive.decrypt_with_nonce(nonce, record[_NONCE:])
        except NoiseError:
            self.rejected += 1
            return None
        self.window.accept(nonce)  # only authenticated datagrams move the window
        if not plain:
            raise LinkProtocolError("empty record")
        kind, body = plain[0], plain[1:]
        if kind == END:
            if len(body) > self.max_message:
                raise LinkProtocolError(f"peer sent a message larger than {self.max_message}")
            return Message(body)
        if kind == CLOSE:
            return Closed(body.decode("utf-8", "replace")[:200])
        if kind == PING:
            return Ping(body)
        if kind == PONG:
            return Pong(body)
        raise LinkProtocolError(f"unknown record type {kind}")

"""Link records (sans-IO): application messages and control records inside the
transport ciphers a link handshake produced.

A record is a type byte and a transport message of the handshake's ciphers (the body,
encrypted).  The type travels in clear, next to the ciphertext, and is authenticated as
the AEAD's associated data: a changed type fails decryption, and neither side copies a
large body just to prepend or strip one byte.

On streams a record is ``type u8 | ciphertext length u24 | ciphertext``, up to
:data:`MAX_RECORD` (1 MiB) of ciphertext: above Noise's 65,535-byte message limit, which
exists for Noise's own 16-bit length fields (the AEADs are safe far beyond; AES-GCM to
64 GiB per message).  One record for a 64 KiB message, instead of two that the receiver
must join, is worth a fifth of the link's bulk throughput.  A larger application message
is sent as ``MORE`` records followed by an ``END`` record and reassembled by the
receiver, up to ``max_message`` bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from warpgate.sansio.link_handshake import LinkProtocolError
from warpgate.sansio.noise import TAG_SIZE, CipherState, NoiseError

MORE = 0x00
END = 0x01
CLOSE = 0x02
PING = 0x03
PONG = 0x04
MAX_RECORD = 1 << 20  # largest record ciphertext, tag included
MAX_CHUNK = MAX_RECORD - TAG_SIZE  # largest plaintext in one record
RECORD_HEADER = 4  # on streams: type u8 | ciphertext length u24
_KIND_AD = [bytes([k]) for k in range(256)]


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
        return bytes(ciphertext)  # records may arrive as memoryviews

    def encrypt_with_nonce(self, nonce: int, plaintext: bytes, ad: bytes = b"") -> bytes:
        return plaintext

    def encrypt_into(self, plaintext: bytes | memoryview, ad: bytes, out: memoryview) -> None:
        out[: len(plaintext)] = plaintext

    def decrypt_with_nonce(self, nonce: int, ciphertext: bytes, ad: bytes = b"") -> bytes:
        return bytes(ciphertext)


Record = tuple[int, bytes]  # (type, ciphertext)


class RecordCodec:
    """Seal outgoing messages into records and open incoming ones (stream transports:
    implicit nonces, records in order)."""

    def __init__(
        self,
        send: CipherState | None,
        receive: CipherState | None,
        *,
        max_message: int,
    ) -> None:
        self._send = send if send is not None else _Plain()
        self._receive = receive if receive is not None else _Plain()
        for cipher in (send, receive):
            if cipher is not None:
                cipher.max_message = MAX_RECORD
        self.max_message = max_message
        self._partial: list[bytes] = []
        self._partial_size = 0

    def seal_message(self, data: bytes) -> list[Record]:
        """The records carrying ``data`` (one per :data:`MAX_CHUNK` bytes)."""
        if len(data) > self.max_message:
            raise ValueError(f"message of {len(data)} bytes exceeds {self.max_message}")
        if len(data) <= MAX_CHUNK:
            return [(END, self._send.encrypt(data, _KIND_AD[END]))]
        out = []
        for start in range(0, len(data), MAX_CHUNK):
            kind = END if start + MAX_CHUNK >= len(data) else MORE
            # Slicing bytes copies, but the cipher's bytes fast path more than pays for it.
            out.append((kind, self._send.encrypt(data[start : start + MAX_CHUNK], _KIND_AD[kind])))
        return out

    def seal_control(self, kind: int, body: bytes = b"") -> Record:
        return (kind, self._send.encrypt(body, _KIND_AD[kind]))

    def seal_message_wire(self, data: bytes) -> bytearray:
        """``data`` as it goes on a stream: every record's header and ciphertext, built
        in one buffer so the transport gets a single write and nothing is joined."""
        if len(data) > self.max_message:
            raise ValueError(f"message of {len(data)} bytes exceeds {self.max_message}")
        overhead = TAG_SIZE if not isinstance(self._send, _Plain) else 0
        chunks = max(1, -(-len(data) // MAX_CHUNK))
        wire = bytearray(len(data) + chunks * (RECORD_HEADER + overhead))
        out = memoryview(wire)
        view = memoryview(data)
        pos = 0
        for start in range(0, max(len(data), 1), MAX_CHUNK):
            chunk = view[start : start + MAX_CHUNK]
            kind = END if start + MAX_CHUNK >= len(data) else MORE
            size = len(chunk) + overhead
            out[pos] = kind
            out[pos + 1] = size >> 16
            out[pos + 2] = (size >> 8) & 0xFF
            out[pos + 3] = size & 0xFF
            self._send.encrypt_into(
                chunk, _KIND_AD[kind], out[pos + RECORD_HEADER : pos + RECORD_HEADER + size]
            )
            pos += RECORD_HEADER + size
        return wire

    def open(self, record: Record) -> Event | None:
        """Decrypt one record; returns an event, or ``None`` for a partial message."""
        kind, ciphertext = record
        if kind > PONG:
            raise LinkProtocolError(f"unknown record type {kind}")
        try:
            body = self._receive.decrypt(ciphertext, _KIND_AD[kind])
        except NoiseError as exc:
            raise LinkProtocolError(f"record failed authentication: {exc}") from exc
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
        return _control(kind, body)


class RecordStreamParser:
    """Cut a byte stream into records (type u8 | length u24 | ciphertext).

    Fed whatever the socket returned; keeps at most one partial record between calls, so
    at most :data:`MAX_RECORD` + 4 bytes: a longer length is refused before anything is
    buffered (:class:`LinkProtocolError`).
    (asyncio's ``readexactly`` deletes from the front of its buffer on every call, a
    memmove of everything queued behind; reading big chunks and parsing them here keeps
    bulk transfers linear.)
    """

    HEADER = RECORD_HEADER

    def __init__(self) -> None:
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Record]:
        """The complete records in what has arrived; ciphertexts are memoryviews into
        the received bytes where possible (the cipher reads them where they are)."""
        view = memoryview(data)
        records: list[Record] = []
        pos = 0
        buf = self._buffer
        if buf:  # finish the record left partial last time, copying only its bytes
            if len(buf) < self.HEADER:
                take = min(self.HEADER - len(buf), len(data))
                buf += view[:take]
                pos = take
                if len(buf) < self.HEADER:
                    return records
            missing = self.HEADER + _size(buf[1], buf[2], buf[3]) - len(buf)
            take = min(missing, len(data) - pos)
            buf += view[pos : pos + take]
            pos += take
            if take < missing:
                return records
            records.append((buf[0], bytes(buf[self.HEADER :])))
            buf.clear()
        end = len(data)
        while end - pos >= self.HEADER:
            size = _size(data[pos + 1], data[pos + 2], data[pos + 3])
            start = pos + self.HEADER
            if end - start < size:
                break
            records.append((data[pos], view[start : start + size]))  # type: ignore[arg-type]
            pos = start + size
        if pos < end:
            buf += view[pos:]
        return records


def _size(high: int, mid: int, low: int) -> int:
    size = (high << 16) | (mid << 8) | low
    if size > MAX_RECORD:
        raise LinkProtocolError(f"record of {size} bytes exceeds {MAX_RECORD}")
    return size


def _control(kind: int, body: bytes) -> Event:
    if kind == CLOSE:
        return Closed(body.decode("utf-8", "replace")[:200])
    if kind == PING:
        return Ping(body)
    if kind == PONG:
        return Pong(body)
    raise LinkProtocolError(f"unexpected record type {kind}")


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
        return (
            nonce.to_bytes(_NONCE, "big")
            + _KIND_AD[kind]
            + self._send.encrypt_with_nonce(nonce, body, _KIND_AD[kind])
        )

    def seal_message(self, data: bytes) -> list[bytes]:  # type: ignore[override]
        if len(data) > self.max_message:
            raise ValueError(f"message of {len(data)} bytes exceeds {self.max_message}")
        return [self._seal(END, data)]

    def seal_control(self, kind: int, body: bytes = b"") -> bytes:  # type: ignore[override]
        return self._seal(kind, body)

    def open(self, record: bytes) -> Event | None:  # type: ignore[override]
        """Authenticate one datagram; ``None`` when it is a replay, too old or forged
        (dropped and counted: on UDP anyone can send us anything)."""
        if len(record) < _NONCE + 1:
            self.rejected += 1
            return None
        nonce = int.from_bytes(record[:_NONCE], "big")
        kind = record[_NONCE]
        if kind > PONG or kind == MORE or not self.window.check(nonce):
            self.rejected += 1
            return None
        try:
            body = self._receive.decrypt_with_nonce(nonce, record[_NONCE + 1 :], _KIND_AD[kind])
        except NoiseError:
            self.rejected += 1
            return None
        self.window.accept(nonce)  # only authenticated datagrams move the window
        if kind == END:
            if len(body) > self.max_message:
                raise LinkProtocolError(f"peer sent a message larger than {self.max_message}")
            return Message(body)
        return _control(kind, body)

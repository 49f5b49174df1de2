"""The ``hosts`` name backend: nicknames in a hosts-style file (``name  address``).

For a site that needs no name server: a file on a shared disk, or one an administrator
(or configuration management) writes and copies to every machine.  Each line is::

    # comments and blank lines are ignored
    alice   wg1...address-text...   sig=<128 hex digits>

The address text (see docs/address.md) carries the node's public key, so a line says
which key owns the name.  The optional ``sig=`` is an ECDSA-P256-SHA256 signature by
that key over ``b"warpgate names v1\\x00" + name + b"\\x00" + address bytes``: a node
that registers itself writes one, and with ``names_file_signed`` on, unsigned or badly
signed lines are ignored (logged), so whoever can write the file still cannot claim a
name for a key they do not hold.

Registration (``names_file_writable``, on by default) adds or updates the node's own
line under an exclusive ``flock`` on ``<file>.lock`` and replaces the file atomically;
a name held by another key is refused with :class:`~warpgate.pnp.client.NameTakenError`.
Entries do not expire: the file is the authority.  With ``names_file_writable`` off
the file is read-only and ``nickname(name)`` only succeeds when the file already maps
``name`` to this node's key.

Names are ``name.<names_file_tld>`` (default ``.lan``); ``resolve`` also takes a bare
name.  An empty ``names_file`` (the default) leaves the backend inactive: quiet unless
it is selected explicitly in ``conf["plugins"]["name_service"]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from warpgate.errors import AddressError, ConfigError, UnavailableError, WarpgateError
from warpgate.plugin import hookimpl
from warpgate.plugin.stack import stack_for
from warpgate.plugin.types import NameServiceInfo
from warpgate.pnp.client import NameTakenError
from warpgate.sansio.address import NodeAddress, parse_address
from warpgate.sansio.pnp import PnpError, normalise_name

if TYPE_CHECKING:
    from warpgate.node.node import Node

log = logging.getLogger(__name__)

DOMAIN = b"warpgate names v1\x00"
MAX_FILE = 4 * 1024 * 1024  # a names file larger than this is refused, not read
HEADER = "# warpgate names file: <name> <address> [sig=<hex>]; see docs/names.md\n"


@dataclass(frozen=True)
class Entry:
    name: str
    address: NodeAddress
    signature: bytes = b""  # 64 bytes r || s, or empty

    @property
    def owner(self) -> bytes:
        return self.address.public_key

    def line(self) -> str:
        sig = f"  sig={self.signature.hex()}" if self.signature else ""
        return f"{self.name}  {self.address.to_text()}{sig}\n"


def signed_bytes(name: str, address: NodeAddress) -> bytes:
    return DOMAIN + name.encode("ascii") + b"\x00" + address.encode()


def sign_entry(name: str, address: NodeAddress, key: ec.EllipticCurvePrivateKey) -> Entry:
    der = key.sign(signed_bytes(name, address), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return Entry(name, address, r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def signature_ok(entry: Entry) -> bool:
    """Whether ``entry`` carries a valid signature by the key in its address."""
    if len(entry.signature) != 64:
        return False
    try:
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), entry.owner)
        sig = encode_dss_signature(
            int.from_bytes(entry.signature[:32], "big"), int.from_bytes(entry.signature[32:], "big")
        )
        key.verify(sig, signed_bytes(entry.name, entry.address), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def parse_names(text: str, *, source: str = "names file") -> dict[str, Entry]:
    """Parse a names file.  Bad lines are logged and skipped, never raised: one
    typo must not take every other name down.  The first line of a name wins."""
    entries: dict[str, Entry] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        try:
            if len(fields) not in (2, 3):
                raise ValueError("expected '<name> <address> [sig=<hex>]'")
            name = normalise_name(fields[0])
            address = parse_address(fields[1])
            signature = b""
            if len(fields) == 3:
                if not fields[2].startswith("sig="):
                    raise ValueError("the third field must be sig=<hex>")
                signature = bytes.fromhex(fields[2][4:])
                if len(signature) != 64:
                    raise ValueError("sig= must be 128 hex digits")
        except (ValueError, PnpError, AddressError) as exc:
            log.warning("%s line %d ignored: %s", source, number, exc)
            continue
        if name in entries:
            log.warning("%s line %d ignored: %r is already named above", source, number, name)
            continue
        entries[name] = Entry(name, address, signature)
    return entries


class HostsNames:
    name = "hosts"

    def __init__(self, node: Node) -> None:
        self.node = node
        raw = node.conf.get("names_file") or ""
        if not isinstance(raw, str | os.PathLike):
            raise ConfigError("conf key 'names_file' must be a path (or '' for none)")
        self.path = Path(raw).expanduser() if str(raw) else None
        self.writable = bool(node.conf.get("names_file_writable", True))
        self.signed = bool(node.conf.get("names_file_signed", False))
        tld = str(node.conf.get("names_file_tld", "lan")).strip().lower().lstrip(".")
        try:
            self.tld = normalise_name(tld)
        except PnpError as exc:
            raise ConfigError(f"conf key 'names_file_tld': {exc}") from None
        wanted = stack_for(node, "name_service")
        self.explicit = wanted is not None and self.name in wanted
        self._cache: tuple[tuple[int, int, int], dict[str, Entry]] | None = None

    async def start(self) -> None:
        if self.path is None and self.explicit and self.node.conf["enable_nickname"]:
            log.warning("hosts nicknames are unavailable: conf key 'names_file' is empty")

    # -- reading ------------------------------------------------------------------------

    def _read(self) -> dict[str, Entry]:
        """The file's entries, re-read only when its size, mtime or inode changed."""
        assert self.path is not None
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return {}
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if self._cache is not None and self._cache[0] == stamp:
            return self._cache[1]
        if st.st_size > MAX_FILE:
            raise UnavailableError(f"names file {self.path} is over {MAX_FILE} bytes")
        text = self.path.read_text("utf-8", errors="replace")
        entries = parse_names(text, source=str(self.path))
        if self.signed:
            for name, entry in list(entries.items()):
                if not signature_ok(entry):
                    log.warning("%s: %r ignored: not signed by its key", self.path, name)
                    del entries[name]
        self._cache = (stamp, entries)
        return entries

    def _bare(self, name: str) -> str:
        text = name.strip().lower()
        if "." in text:
            text, _, tld = text.rpartition(".")
            if tld != self.tld:
                raise LookupError(f"{name!r} is not a names-file name (they end in .{self.tld})")
        try:
            return normalise_name(text)
        except PnpError as exc:
            raise LookupError(str(exc)) from None

    async def resolve(self, name: str) -> bytes:
        bare = self._bare(name)
        if self.path is None:
            raise LookupError("no names file (conf key 'names_file' is empty)")
        entries = await asyncio.to_thread(self._read)
        entry = entries.get(bare)
        if entry is None:
            raise LookupError(f"{bare!r} is not in the names file {self.path}")
        return entry.address.encode()

    # -- registering --------------------------------------------------------------------

    async def register(self, name: str, node: Any) -> str:
        starting = not getattr(node, "started", True)
        if self.path is None and not self.explicit:
            return ""  # inactive: installed but not configured
        try:
            return await self._register(name, node)
        except (WarpgateError, LookupError, OSError) as exc:
            if not starting:
                raise
            log.warning("hosts: the nickname %r was not registered during start-up: %s", name, exc)
            return ""

    async def _register(self, name: str, node: Any) -> str:
        if self.path is None:
            raise UnavailableError(
                "hosts nicknames need a names file: set conf key 'names_file' to a path"
            )
        bare = self._bare(name)
        if node.private_key is None:
            raise RuntimeError("the node has no identity yet: await node.start() first")
        entry = sign_entry(bare, parse_address(node.address()), node.private_key)
        await asyncio.to_thread(self._write_entry, entry)
        full = f"{bare}.{self.tld}"
        log.info("hosts: registered %s in %s", full, self.path)
        return full

    def _write_entry(self, entry: Entry) -> None:
        assert self.path is not None
        if not self.writable:
            current = self._read().get(entry.name)
            if current is not None and current.owner == entry.owner:
                return  # the administrator already names this node
            raise UnavailableError(
                f"the names file {self.path} is read-only (names_file_writable is off) "
                f"and does not name this node {entry.name!r}"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "a") as lock:
            # Serialises writers on this machine (and on shared disks with working
            # locks); the atomic rename below means readers never need the lock.
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if self.path.stat().st_size > MAX_FILE:
                    raise UnavailableError(f"names file {self.path} is over {MAX_FILE} bytes")
                text = self.path.read_text("utf-8", errors="replace")
            except FileNotFoundError:
                text = HEADER
            current = parse_names(text, source=str(self.path)).get(entry.name)
            if current is not None and current.owner != entry.owner:
                raise NameTakenError(
                    f"the name {entry.name!r} belongs to another key in the names file {self.path}"
                )
            if current is not None and current.address == entry.address and signature_ok(current):
                return  # already there (ECDSA is randomised: do not rewrite the same line)
            self._replace(_with_entry(text, entry))

    def _replace(self, text: str) -> None:
        assert self.path is not None
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(FileNotFoundError):
                os.chmod(tmp, self.path.stat().st_mode & 0o777)
            if not self.path.exists():
                os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    async def unregister(self, name: str) -> None:
        """Remove this node's line for ``name`` (another key's line is refused)."""
        bare = self._bare(name)
        if self.path is None or not self.writable:
            raise UnavailableError("the names file is not configured or not writable")
        assert self.node.public_key
        await asyncio.to_thread(self._remove, bare, self.node.public_key)

    def _remove(self, bare: str, owner: bytes) -> None:
        assert self.path is not None
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not self.path.exists():
                return
            text = self.path.read_text("utf-8")
            current = parse_names(text, source=str(self.path)).get(bare)
            if current is None:
                return
            if current.owner != owner:
                raise NameTakenError(f"the name {bare!r} belongs to another key")
            self._replace(_without(text, bare))


def _line_name(line: str) -> str | None:
    fields = line.split("#", 1)[0].split()
    return fields[0].lower() if fields else None


def _with_entry(text: str, entry: Entry) -> str:
    """``text`` with ``entry``'s line replaced in place, or appended; comments kept."""
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if _line_name(line) == entry.name:
            lines[i] = entry.line()
            return "".join(lines)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    return "".join(lines) + entry.line()


def _without(text: str, name: str) -> str:
    return "".join(ln for ln in text.splitlines(keepends=True) if _line_name(ln) != name)


@hookimpl
def warpgate_conf_defaults() -> Mapping[str, Any]:
    return {
        "names_file": "",
        "names_file_writable": True,
        "names_file_signed": False,
        "names_file_tld": "lan",
    }


@hookimpl
def warpgate_register_name_services() -> list[NameServiceInfo]:
    return [
        NameServiceInfo(
            name="hosts",
            factory=HostsNames,
            description="nicknames in a hosts-style file (conf names_file)",
        )
    ]

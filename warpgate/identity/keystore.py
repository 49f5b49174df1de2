"""A keystore of ECDSA (P-256) keypairs, one PEM file per identity name.

Files are created with mode 0600 inside a 0700 directory and never overwritten:
a key that exists but cannot be read is an error the user must resolve, because
replacing it would silently give the node a new identity.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from warpgate.errors import KeystoreError

log = logging.getLogger(__name__)

CURVE = ec.SECP256R1()

# Parsed keys by (path, inode, size, mtime): a process starting several nodes (or a
# Gate restarting one) parses each key file once, and any change to the file is seen.
_parsed: dict[tuple[str, int, int, int], ec.EllipticCurvePrivateKey] = {}


def public_key_bytes(key: ec.EllipticCurvePublicKey) -> bytes:
    """The 33-byte SEC1 compressed encoding used in node addresses."""
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)


def load_public_key(data: bytes) -> ec.EllipticCurvePublicKey:
    """Parse a compressed (or uncompressed) SEC1 P-256 public key."""
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(CURVE, data)
    except ValueError as exc:
        raise KeystoreError(f"not a valid P-256 public key: {exc}") from exc


class Keystore:
    """Keypairs stored under ``<root>/keys/<name>.pem``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.dir = self.root / "keys"

    def path_for(self, name: str) -> Path:
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise KeystoreError(f"invalid identity name {name!r}")
        return self.dir / f"{name}.pem"

    def load_or_create(self, name: str) -> ec.EllipticCurvePrivateKey:
        """The keypair called ``name``, generated and saved on first use."""
        path = self.path_for(name)
        if path.exists():
            return self.load(name)
        key = ec.generate_private_key(CURVE)
        try:
            self._write_new(path, key)
        except FileExistsError:
            # Another process created it between our check and write: use theirs.
            return self.load(name)
        log.info("created identity %r in %s", name, path)
        return key

    def load(self, name: str) -> ec.EllipticCurvePrivateKey:
        path = self.path_for(name)
        try:
            st = path.stat()
        except OSError as exc:
            raise KeystoreError(f"cannot read identity key {path}: {exc.strerror or exc}") from exc
        cache_key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
        cached = _parsed.get(cache_key)
        if cached is not None:
            return cached
        key = self._parse(path)
        _parsed[cache_key] = key
        return key

    def _parse(self, path: Path) -> ec.EllipticCurvePrivateKey:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise KeystoreError(
                f"cannot read identity key {path}: {exc.strerror or exc}; check its "
                "permissions (it should belong to you, mode 0600)"
            ) from exc
        self._warn_if_loose(path)
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise KeystoreError(
                f"identity key {path} is corrupted or not a warpgate key ({exc}). It was "
                "left untouched. Restore it from a backup, or move it aside to create a "
                "new identity (peers and name records will no longer recognise this node)."
            ) from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != CURVE.name:
            raise KeystoreError(
                f"identity key {path} is not a P-256 ECDSA key; it was left untouched. "
                "Move it aside to create a new identity."
            )
        return key

    def _write_new(self, path: Path, key: ec.EllipticCurvePrivateKey) -> None:
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise KeystoreError(f"cannot create keystore directory {self.dir}: {exc}") from exc
        # Write a private temp file, then hard-link it into place: the link fails if the
        # name exists, so a key is never replaced, and readers never see half a file.
        tmp = self.dir / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError as exc:
            raise KeystoreError(f"cannot write identity key {path}: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)

    @staticmethod
    def _warn_if_loose(path: Path) -> None:
        if sys.platform == "win32":
            return
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            log.warning(
                "identity key %s is readable by others (mode %o); run: chmod 600 %s",
                path,
                mode,
                path,
            )

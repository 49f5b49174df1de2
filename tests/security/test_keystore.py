"""Claims about key storage (docs/security.md, "Key storage")."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from warpgate.identity.keystore import Keystore


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_identity_key_file_is_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        Keystore(tmp_path).load_or_create("alice")
    finally:
        os.umask(old)
    key_file = tmp_path / "keys" / "alice.pem"
    assert _mode(key_file) == 0o600
    assert _mode(key_file.parent) == 0o700
    assert not [p for p in key_file.parent.iterdir() if p.name.startswith(".")], "temp left"


def test_identity_key_is_never_overwritten(tmp_path: Path) -> None:
    store = Keystore(tmp_path)
    first = store.load_or_create("alice")
    before = (tmp_path / "keys" / "alice.pem").read_bytes()
    again = Keystore(tmp_path).load_or_create("alice")
    assert (tmp_path / "keys" / "alice.pem").read_bytes() == before
    assert first.private_numbers() == again.private_numbers()


def test_key_file_readable_by_others_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = Keystore(tmp_path)
    store.load_or_create("alice")
    key_file = tmp_path / "keys" / "alice.pem"
    key_file.chmod(0o644)
    caplog.set_level(logging.WARNING)
    Keystore(tmp_path)._parse(key_file)  # parse, not the in-process cache
    assert "readable by others" in caplog.text and "chmod 600" in caplog.text


def test_identity_names_cannot_escape_the_keystore(tmp_path: Path) -> None:
    from warpgate.errors import KeystoreError

    for name in ("../evil", "a/b", ".hidden", ""):
        with pytest.raises(KeystoreError):
            Keystore(tmp_path).load_or_create(name)
    assert not (tmp_path / "evil.pem").exists()

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from warpgate.errors import KeystoreError
from warpgate.identity.keystore import Keystore, load_public_key, public_key_bytes
from warpgate.identity.machine import (
    PORT_RANGE,
    compute_machine_id,
    derived_ports,
    dhash,
    field_wrap,
)
from warpgate.identity.paths import default_install_path, resolve_install_path


def test_key_is_created_once_then_reloaded(tmp_path: Path) -> None:
    store = Keystore(tmp_path)
    first = store.load_or_create("alice")
    again = Keystore(tmp_path).load_or_create("alice")
    assert public_key_bytes(first.public_key()) == public_key_bytes(again.public_key())
    other = store.load_or_create("bob")
    assert public_key_bytes(other.public_key()) != public_key_bytes(first.public_key())


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_key_file_is_private(tmp_path: Path) -> None:
    store = Keystore(tmp_path)
    store.load_or_create("alice")
    assert stat.S_IMODE(store.path_for("alice").stat().st_mode) == 0o600
    assert stat.S_IMODE(store.dir.stat().st_mode) == 0o700
    assert not list(store.dir.glob("*.tmp")), "no temp file may be left behind"


def test_corrupted_key_is_reported_and_never_overwritten(tmp_path: Path) -> None:
    store = Keystore(tmp_path)
    store.load_or_create("alice")
    path = store.path_for("alice")
    path.write_bytes(b"-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n")
    before = path.read_bytes()
    with pytest.raises(KeystoreError, match="corrupted.*left untouched"):
        store.load_or_create("alice")
    assert path.read_bytes() == before


def test_wrong_key_type_is_refused(tmp_path: Path) -> None:
    store = Keystore(tmp_path)
    store.dir.mkdir(parents=True)
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    store.path_for("alice").write_bytes(pem)
    with pytest.raises(KeystoreError, match="not a P-256"):
        store.load_or_create("alice")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads anything")
def test_unreadable_key_is_a_clear_error(tmp_path: Path) -> None:
    store = Keystore(tmp_path)
    store.load_or_create("alice")
    store.path_for("alice").chmod(0)
    with pytest.raises(KeystoreError, match="cannot read"):
        store.load("alice")


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden"])
def test_bad_identity_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(KeystoreError):
        Keystore(tmp_path).path_for(name)


def test_public_key_round_trip(tmp_path: Path) -> None:
    key = Keystore(tmp_path).load_or_create("k")
    raw = public_key_bytes(key.public_key())
    assert len(raw) == 33 and raw[0] in (2, 3)
    assert public_key_bytes(load_public_key(raw)) == raw
    with pytest.raises(KeystoreError):
        load_public_key(b"\x02" + b"\xff" * 32)


def test_machine_id_is_stable_and_depends_on_the_mac() -> None:
    a = compute_machine_id("02:00:00:00:00:01")
    assert a == compute_machine_id("02:00:00:00:00:01")
    assert len(a) == 16
    assert a != compute_machine_id("02:00:00:00:00:02")


def test_port_derivation() -> None:
    mid = compute_machine_id("02:00:00:00:00:01")
    ports = derived_ports(mid, 8)
    assert ports[0] == field_wrap(dhash(mid), [10000, 60000])
    assert len(set(ports)) == 8
    assert all(PORT_RANGE[0] <= p < PORT_RANGE[1] for p in ports)
    assert derived_ports(mid, 8) == ports, "deterministic across calls"


def test_field_wrap_and_dhash() -> None:
    assert field_wrap(0, (5, 10)) == 5 and field_wrap(7, (5, 10)) == 7
    assert dhash("x") == dhash(b"x") and 0 <= dhash("x") < 2**64
    with pytest.raises(ValueError):
        field_wrap(1, (5, 5))


def test_install_path_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARPGATE_HOME", str(tmp_path / "h"))
    assert default_install_path() == tmp_path / "h"
    assert resolve_install_path(str(tmp_path / "x")) == tmp_path / "x"
    monkeypatch.delenv("WARPGATE_HOME")
    assert default_install_path().name == "warpgate"

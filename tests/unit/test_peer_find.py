"""``peer.find``: bare names are left to each name service's own namespace."""

from __future__ import annotations

import pytest

from warpgate import PeerHandle, peer


def test_bare_name_stays_bare_so_every_backend_can_resolve_it() -> None:
    assert peer.find(" bob ") == PeerHandle("bob")


def test_full_name_is_kept() -> None:
    assert peer.find("bob.peer").name == "bob.peer"


@pytest.mark.parametrize("tld", [".lan", "lan"])
def test_explicit_tld_is_appended_to_a_bare_name(tld: str) -> None:
    assert peer.find("bob", tld=tld).name == "bob.lan"
    assert peer.find("bob.p2p", tld=tld).name == "bob.p2p"


def test_empty_name_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        peer.find("  ")

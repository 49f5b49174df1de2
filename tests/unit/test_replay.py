"""ReplayWindow: in order, reordering, duplicates, too old, jumps, limits, and a
hypothesis comparison against a simple reference model."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warpgate.sansio.noise import CipherState, NoiseError
from warpgate.sansio.replay import DEFAULT_WINDOW, ReplayWindow

FUZZ = settings(max_examples=200, deadline=None)
LIMIT = 2**64 - 1


class ReferenceWindow:
    """The obvious model: a set of everything seen plus the 'too old' rule."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.seen: set[int] = set()
        self.highest = -1

    def accept(self, nonce: int) -> bool:
        if nonce < 0 or nonce >= LIMIT or nonce in self.seen:
            return False
        if self.highest >= 0 and nonce <= self.highest - self.size:
            return False
        self.seen.add(nonce)
        self.highest = max(self.highest, nonce)
        return True


def test_defaults() -> None:
    window = ReplayWindow()
    assert window.size == DEFAULT_WINDOW == 2048
    assert window.highest == -1


@pytest.mark.parametrize("size", [0, -64, 63, 65, 100, 2049])
def test_size_must_be_positive_multiple_of_64(size: int) -> None:
    with pytest.raises(ValueError):
        ReplayWindow(size)


def test_in_order() -> None:
    window = ReplayWindow(64)
    for n in range(1000):
        assert window.check(n)
        assert window.accept(n)
        assert window.highest == n
        assert not window.check(n)
        assert not window.accept(n)


def test_out_of_order_within_window() -> None:
    window = ReplayWindow(64)
    order = (10, 5, 7, 0, 11, 9, 8, 6, 1, 2, 3, 4)
    for n in order:
        assert window.accept(n), n
    assert window.highest == 11
    for n in range(12):
        assert not window.check(n)
        assert not window.accept(n)
    assert window.accept(70)  # window is now 7..70
    assert not window.accept(6)  # too old
    assert not window.accept(7)  # inside, but seen
    for n in range(12, 70):
        assert window.accept(n)


def test_duplicates_rejected() -> None:
    window = ReplayWindow(128)
    assert window.accept(100)
    assert window.accept(50)
    assert not window.accept(50)
    assert not window.accept(100)
    assert window.accept(101)
    assert not window.accept(50)


def test_window_edges() -> None:
    window = ReplayWindow(64)
    assert window.accept(1000)
    assert window.check(1000 - 63)  # the oldest nonce still inside the window
    assert not window.check(1000 - 64)  # one older: too old
    assert window.accept(937)
    assert not window.accept(936)
    assert window.highest == 1000
    # Nonces not yet seen stay acceptable while the window slides over them.
    assert window.accept(1001)
    assert window.check(938)
    assert not window.check(937)  # seen and now exactly at the old edge


def test_too_old_before_anything_far_ahead() -> None:
    window = ReplayWindow(64)
    assert window.accept(0)
    assert window.accept(64)  # window now 1..64
    assert not window.accept(0)
    assert window.accept(1)


def test_huge_jump_forward_clears() -> None:
    window = ReplayWindow(2048)
    for n in range(3000):
        window.accept(n)
    jump = 3000 + 10_000_000
    assert window.accept(jump)
    assert window.highest == jump
    # Everything within the new window except the jump itself is fresh.
    for n in range(jump - 2047, jump):
        assert window.check(n)
    assert not window.check(jump - 2048)
    assert not window.check(2999)
    # A jump of exactly the window size also clears.
    assert window.accept(jump + 2048)
    assert window.check(jump + 1)
    assert not window.check(jump)


def test_nonce_limits() -> None:
    window = ReplayWindow()
    assert not window.accept(-1)
    assert not window.accept(LIMIT)
    assert not window.accept(LIMIT + 5)
    assert not window.check(True)  # type: ignore[arg-type]
    assert window.highest == -1
    assert window.accept(LIMIT - 1)
    assert window.highest == LIMIT - 1
    assert not window.accept(LIMIT - 1)
    assert window.accept(LIMIT - 2)


def test_check_has_no_side_effects() -> None:
    window = ReplayWindow(64)
    for n in (5, 1000, 3):
        window.check(n)
    assert window.highest == -1
    assert window.accept(5)


def test_typical_datagram_use() -> None:
    """Decrypt first, then accept: forged packets never move the window."""
    key = bytes(range(32))
    send, recv = CipherState(key), CipherState(key)
    window = ReplayWindow(64)
    packets = [(n, send.encrypt_with_nonce(n, f"m{n}".encode())) for n in range(5)]

    def receive(nonce: int, ciphertext: bytes) -> bytes | None:
        if not window.check(nonce):
            return None
        try:
            plaintext = recv.decrypt_with_nonce(nonce, ciphertext)
        except NoiseError:
            return None
        return plaintext if window.accept(nonce) else None

    forged = bytes(len(packets[0][1]))
    assert receive(10**9, forged) is None
    assert window.highest == -1  # the forgery did not slide the window
    for nonce, ct in reversed(packets):
        assert receive(nonce, ct) == f"m{nonce}".encode()
    for nonce, ct in packets:
        assert receive(nonce, ct) is None  # replays


@FUZZ
@given(
    size=st.sampled_from([64, 128, 256]),
    nonces=st.lists(
        st.one_of(
            st.integers(0, 600),
            st.integers(-3, 3),
            st.integers(LIMIT - 300, LIMIT + 2),
        ),
        max_size=300,
    ),
)
def test_matches_reference_model(size: int, nonces: list[int]) -> None:
    window = ReplayWindow(size)
    model = ReferenceWindow(size)
    for nonce in nonces:
        expected = model.accept(nonce)
        assert window.check(nonce) is expected
        assert window.accept(nonce) is expected
        assert window.highest == model.highest


@FUZZ
@given(
    start=st.integers(0, 10_000),
    steps=st.lists(st.integers(-300, 300), max_size=300),
)
def test_matches_reference_model_random_walk(start: int, steps: list[int]) -> None:
    """Nonces near a moving frontier, like reordered datagrams."""
    window = ReplayWindow(128)
    model = ReferenceWindow(128)
    nonce = start
    for step in steps:
        nonce = max(0, nonce + step)
        assert window.accept(nonce) is model.accept(nonce)
        assert window.highest == model.highest

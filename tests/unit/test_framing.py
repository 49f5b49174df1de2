"""Length-prefixed framing: encoding, incremental decoding, limits, fuzzing."""

from __future__ import annotations

import os
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warpgate.errors import FrameError
from warpgate.sansio.framing import (
    DEFAULT_MAX_FRAME,
    MAX_FRAME_LIMIT,
    FrameDecoder,
    encode_frame,
)

FUZZ = settings(max_examples=300, deadline=None)


def test_encode_golden() -> None:
    assert encode_frame(b"") == b"\x00\x00\x00\x00"
    assert encode_frame(b"hi") == b"\x00\x00\x00\x02hi"
    assert encode_frame(b"x" * 258) == b"\x00\x00\x01\x02" + b"x" * 258
    assert encode_frame(bytearray(b"ab")) == b"\x00\x00\x00\x02ab"
    assert encode_frame(memoryview(b"abc")[1:]) == b"\x00\x00\x00\x02bc"


def test_encode_limits() -> None:
    assert DEFAULT_MAX_FRAME == 16 * 1024 * 1024
    assert encode_frame(b"abcd", max_size=4) == b"\x00\x00\x00\x04abcd"
    with pytest.raises(FrameError, match=r"5 bytes, more than max_size \(4\)"):
        encode_frame(b"abcde", max_size=4)
    with pytest.raises(FrameError):
        encode_frame(bytes(DEFAULT_MAX_FRAME + 1))
    assert len(encode_frame(bytes(DEFAULT_MAX_FRAME))) == DEFAULT_MAX_FRAME + 4
    assert encode_frame(b"", max_size=0) == bytes(4)


@pytest.mark.parametrize("bad", [-1, MAX_FRAME_LIMIT + 1])
def test_bad_max_size(bad: int) -> None:
    with pytest.raises(ValueError, match="max_size"):
        FrameDecoder(max_size=bad)
    with pytest.raises(ValueError, match="max_size"):
        encode_frame(b"", max_size=bad)


def test_one_frame() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(encode_frame(b"hello")) == [b"hello"]
    assert decoder.buffered == 0
    assert decoder.feed(b"") == []


def test_zero_length_frames() -> None:
    decoder = FrameDecoder(max_size=0)
    assert decoder.feed(bytes(4) * 3) == [b"", b"", b""]
    assert decoder.feed(bytes(2)) == []
    assert decoder.buffered == 2
    assert decoder.feed(bytes(2)) == [b""]
    assert decoder.buffered == 0


def test_many_frames_in_one_chunk() -> None:
    payloads = [os.urandom(n) for n in range(200)]
    stream = b"".join(encode_frame(p) for p in payloads)
    decoder = FrameDecoder()
    assert decoder.feed(stream + encode_frame(b"partial")[:7]) == payloads
    assert decoder.buffered == 7
    assert decoder.feed(b"tial") == [b"partial"]


def test_split_at_every_byte_boundary() -> None:
    payloads = [b"", b"a", b"hello world", bytes(300), b""]
    stream = b"".join(encode_frame(p) for p in payloads)
    for cut in range(len(stream) + 1):
        decoder = FrameDecoder()
        got = decoder.feed(stream[:cut])
        assert decoder.buffered + sum(4 + len(p) for p in got) == cut
        got += decoder.feed(stream[cut:])
        assert got == payloads, cut
        assert decoder.buffered == 0


def test_one_byte_at_a_time() -> None:
    payloads = [b"", b"a", b"hello world", bytes(300), b""]
    stream = b"".join(encode_frame(p) for p in payloads)
    decoder = FrameDecoder()
    got: list[bytes] = []
    for i in range(len(stream)):
        got += decoder.feed(stream[i : i + 1])
    assert got == payloads
    assert decoder.buffered == 0


def test_accepts_bytearray_and_memoryview() -> None:
    stream = encode_frame(b"abc") + encode_frame(b"de")
    decoder = FrameDecoder()
    assert decoder.feed(bytearray(stream[:5])) == []
    assert decoder.feed(memoryview(stream)[5:]) == [b"abc", b"de"]


def test_returned_frames_are_independent_bytes() -> None:
    chunk = bytearray(encode_frame(b"abc"))
    decoder = FrameDecoder()
    (frame,) = decoder.feed(chunk)
    chunk[4:7] = b"xyz"
    assert type(frame) is bytes
    assert frame == b"abc"


def test_oversize_declared_length_fails_for_good() -> None:
    decoder = FrameDecoder(max_size=10)
    good = encode_frame(b"ok")
    with pytest.raises(FrameError, match=r"declares 11 bytes, more than max_size \(10\)"):
        decoder.feed(good + b"\x00\x00\x00\x0b")
    assert decoder.failed
    with pytest.raises(FrameError, match="failed earlier"):
        decoder.feed(good)
    with pytest.raises(FrameError):
        decoder.feed(b"")


def test_oversize_detected_from_header_alone() -> None:
    decoder = FrameDecoder(max_size=1024)
    assert decoder.feed(b"\x00\x01") == []
    with pytest.raises(FrameError):
        decoder.feed(b"\x00\x00")  # declares 65536, no payload needed to know
    assert decoder.failed


def test_oversize_after_buffered_partial() -> None:
    decoder = FrameDecoder(max_size=100)
    assert decoder.feed(encode_frame(b"x" * 50)[:20]) == []
    with pytest.raises(FrameError):
        decoder.feed(encode_frame(b"x" * 50)[20:] + b"\xff\xff\xff\xff")


def test_max_size_frame_is_accepted() -> None:
    decoder = FrameDecoder(max_size=5)
    assert decoder.feed(encode_frame(b"12345")) == [b"12345"]
    assert not decoder.failed


def test_large_frames_in_small_chunks() -> None:
    payloads = [os.urandom(200_000), b"", os.urandom(70_000), os.urandom(3)]
    stream = b"".join(encode_frame(p) for p in payloads) * 5
    decoder = FrameDecoder()
    got: list[bytes] = []
    view = memoryview(stream)
    for i in range(0, len(stream), 4093):
        got += decoder.feed(view[i : i + 4093])
    assert got == payloads * 5
    assert decoder.buffered == 0


def test_buffer_is_compacted() -> None:
    # Many small frames fed with a partial one always pending must not grow memory.
    frame = encode_frame(b"y" * 1000)
    decoder = FrameDecoder()
    decoder.feed(frame[:10])
    for _ in range(2000):
        assert decoder.feed(frame[10:] + frame[:10]) == [b"y" * 1000]
        assert decoder.buffered == 10
    assert len(decoder._buf) < 200_000


frame_lists = st.lists(st.binary(max_size=300), max_size=30)


@FUZZ
@given(frame_lists, st.data())
def test_fuzz_arbitrary_chunking(payloads: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(encode_frame(p) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=40)))
    decoder = FrameDecoder()
    got: list[bytes] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        got += decoder.feed(stream[start:cut])
        start = cut
    assert got == payloads
    assert decoder.buffered == 0


@FUZZ
@given(st.lists(st.binary(max_size=64), max_size=20), st.integers(0, 64))
def test_fuzz_arbitrary_bytes(chunks: list[bytes], max_size: int) -> None:
    decoder = FrameDecoder(max_size=max_size)
    fed = 0
    produced = 0
    try:
        for chunk in chunks:
            frames = decoder.feed(chunk)
            fed += len(chunk)
            produced += sum(4 + len(f) for f in frames)
            assert all(len(f) <= max_size for f in frames)
            assert produced + decoder.buffered == fed
    except FrameError:
        assert decoder.failed
        with pytest.raises(FrameError):
            decoder.feed(b"")


def test_big_frame_in_small_chunks_is_linear() -> None:
    # Re-copying the pending bytes on every feed would make this quadratic (~32 GB of
    # copying); the bytearray + offset design does it in milliseconds.
    payload = os.urandom(DEFAULT_MAX_FRAME)
    stream = memoryview(encode_frame(payload))
    decoder = FrameDecoder()
    start = time.perf_counter()
    got: list[bytes] = []
    for i in range(0, len(stream), 4096):
        got += decoder.feed(stream[i : i + 4096])
    elapsed = time.perf_counter() - start
    assert got == [payload]
    assert elapsed < 5.0, f"16 MiB in 4 KiB chunks took {elapsed:.2f}s"

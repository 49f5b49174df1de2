"""A hypothesis strategy that damages genuine messages.

Random bytes rarely get past a parser's first length or version check; mutating a valid
encoding (flip, truncate, insert, delete, duplicate, overwrite a length-like field)
reaches the code behind those checks, which is where bugs hide.
"""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st


@st.composite
def mutated(draw: st.DrawFn, seeds: Sequence[bytes], max_mutations: int = 4) -> bytes:
    data = bytearray(draw(st.sampled_from(list(seeds))))
    for _ in range(draw(st.integers(1, max_mutations))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete", "dup", "u16"]))
        at = draw(st.integers(0, len(data)))
        if op == "flip" and data:
            i = min(at, len(data) - 1)
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[min(at, len(data) - 1)] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF]))
        elif op == "truncate":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif op == "dup":
            data[at:at] = data[at : at + draw(st.integers(1, 32))]
        elif op == "u16" and len(data) >= 2:
            i = min(at, len(data) - 2)
            data[i : i + 2] = draw(st.sampled_from([0, 1, 0x7FFF, 0xFFFF])).to_bytes(2, "big")
    return bytes(data)

"""Fixed keys and times for the signal envelope tests: the golden vectors are computed
from them, so they never change (a change here changes every golden vector)."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec

from warpgate.identity.keystore import public_key_bytes

CURVE = ec.SECP256R1()
ALICE = ec.derive_private_key(0xA11CE, CURVE)
BOB = ec.derive_private_key(0xB0B, CURVE)
EVE = ec.derive_private_key(0xE5E, CURVE)
EPHEMERAL = ec.derive_private_key(0xE9E, CURVE)  # version 1's sender ephemeral key
ALICE_PUB = public_key_bytes(ALICE.public_key())
BOB_PUB = public_key_bytes(BOB.public_key())
EVE_PUB = public_key_bytes(EVE.public_key())
NOW = 1_800_000_000.0
NONCE = bytes(range(16))

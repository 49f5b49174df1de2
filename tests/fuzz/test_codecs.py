"""Fuzzing every stateless parser of network bytes.

Each parser gets random bytes and damaged genuine messages (``mutate.mutated``), and must
either return a value or raise its one documented error type -- never anything else.
Where a parser accepts the input, the value must survive a re-encode round trip where
the codec has one.  Settings come from ``profile.FUZZ`` (bounded in CI; ``WARPGATE_FUZZ=long``
for a long run, see docs/fuzzing.md).
"""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.mutate import mutated
from tests.fuzz.profile import FUZZ
from tests.mqtt.envelope_keys import ALICE, BOB, BOB_PUB, NOW
from warpgate.errors import AddressError
from warpgate.sansio import natpmp, pnp, stun
from warpgate.sansio.address import (
    MAX_ADDRESS_SIZE,
    NodeAddress,
    decode_address,
    parse_address,
)
from warpgate.sansio.envelope import (
    EnvelopeError,
    ReplayCache,
    open_envelope,
    parse_receipt,
    seal_envelope,
)
from warpgate.sansio.signal_messages import (
    ReverseConnect,
    SignalMessageError,
    decode_signal_message,
)
from warpgate_plugins.mqtt.messages import (
    Kind,
    Message,
    MessageError,
    decode_message,
    decode_response,
)

DATA = Path(__file__).parents[1] / "data"

# --- address --------------------------------------------------------------------------

ADDRESS_SEEDS = [p.read_bytes() for p in sorted(DATA.glob("address_v1_*.bin"))]


def _address_round_trip(data: bytes) -> None:
    try:
        addr = decode_address(data)
    except AddressError:
        return
    assert decode_address(addr.encode()) == addr
    assert NodeAddress.from_text(addr.to_text()) == addr


@FUZZ
@given(st.binary(max_size=MAX_ADDRESS_SIZE + 16))
def test_address_decoder_random_bytes(data: bytes) -> None:
    _address_round_trip(data)


@FUZZ
@given(mutated(ADDRESS_SEEDS))
def test_address_decoder_damaged_addresses(data: bytes) -> None:
    _address_round_trip(data)


@FUZZ
@given(st.one_of(st.text(max_size=300), st.from_regex(r"wg1[a-z2-7]{0,300}", fullmatch=True)))
def test_address_text_form(text: str) -> None:
    try:
        addr = parse_address(text)
    except AddressError:
        return
    assert parse_address(addr.to_text()) == addr


# --- STUN -----------------------------------------------------------------------------

_STUN = json.loads((DATA / "stun_rfc5769.json").read_text())["vectors"]
STUN_SEEDS = [bytes.fromhex(" ".join(v["hex"])) for v in _STUN.values()] + [
    stun.encode(
        stun.StunMessage(
            stun.StunMethod.BINDING,
            stun.StunClass.SUCCESS,
            attributes=(
                (stun.Attr.XOR_MAPPED_ADDRESS, ("203.0.113.7", 40000)),
                (stun.Attr.OTHER_ADDRESS, ("2001:db8::1", 3479)),
                (stun.Attr.ERROR_CODE, stun.ErrorCode(420, "Unknown")),
                (stun.Attr.UNKNOWN_ATTRIBUTES, (0x7777, 0x0042)),
                (stun.Attr.CHANGE_REQUEST, stun.ChangeRequest(True, False)),
                (stun.Attr.RESPONSE_PORT, 5000),
                (stun.Attr.SOFTWARE, "warpgate fuzz"),
            ),
        ),
        integrity_key=b"key",
        integrity_sha256=True,
    )
]


def _stun_checks(data: bytes) -> None:
    assert isinstance(stun.is_stun(data), bool)
    assert isinstance(stun.verify_fingerprint(data), bool)
    assert isinstance(stun.verify_integrity(data, b"key"), bool)
    try:
        stun.message_length(data[:20])
    except stun.StunError:
        pass
    try:
        msg = stun.decode(data)
    except stun.StunError:
        return
    # Whatever the decoder accepts, the encoder can send back (a server echoes values).
    again = stun.decode(stun.encode(msg, fingerprint=False))
    computed = {
        stun.Attr.MESSAGE_INTEGRITY,
        stun.Attr.MESSAGE_INTEGRITY_SHA256,
        stun.Attr.FINGERPRINT,
    }
    assert [a for a in again.attributes if a[0] not in computed] == [
        a for a in msg.attributes if a[0] not in computed
    ]


@FUZZ
@given(st.binary(max_size=600))
def test_stun_random_bytes(data: bytes) -> None:
    _stun_checks(data)


@FUZZ
@given(mutated(STUN_SEEDS))
def test_stun_damaged_messages(data: bytes) -> None:
    _stun_checks(data)


@FUZZ
@given(st.binary(min_size=20, max_size=200))
def test_stun_with_valid_header_and_random_body(body: bytes) -> None:
    body = body[20:] + bytes(-len(body[20:]) % 4)
    header = bytes([0x01, 0x01]) + len(body).to_bytes(2, "big") + b"\x21\x12\xa4\x42"
    _stun_checks(header + os.urandom(12) + body)


# --- NAT-PMP / PCP ---------------------------------------------------------------------

NATPMP_SEEDS = [
    natpmp.encode_natpmp_external_response(0, 1234, "203.0.113.1"),
    natpmp.encode_natpmp_map_response("udp", 0, 99, 4000, 40000, 3600),
    natpmp.encode_pcp_map_response(
        result=0,
        lifetime=7200,
        epoch=5,
        nonce=bytes(range(12)),
        protocol=17,
        internal_port=4000,
        external_port=40000,
        external_ip=ipaddress.ip_address("203.0.113.9"),
    ),
    natpmp.encode_natpmp_external_request(),
]


def _natpmp_checks(data: bytes) -> None:
    for decode in (
        natpmp.decode_response,
        natpmp.decode_natpmp_response,
        natpmp.decode_pcp_response,
    ):
        try:
            decode(data)
        except natpmp.NatPmpError:
            pass


@FUZZ
@given(st.binary(max_size=1200))
def test_natpmp_pcp_random_bytes(data: bytes) -> None:
    _natpmp_checks(data)


@FUZZ
@given(mutated(NATPMP_SEEDS))
def test_natpmp_pcp_damaged_responses(data: bytes) -> None:
    _natpmp_checks(data)


# --- PNP --------------------------------------------------------------------------------

_PNP_KEY = ec.derive_private_key(0x5EED, ec.SECP256R1())
PNP_REQUEST_SEEDS = [
    pnp.encode_request(pnp.make_get("alice", 7)),
    pnp.encode_request(
        pnp.make_signed(
            pnp.Op.PUT,
            "alice",
            key=_PNP_KEY,
            request_id=8,
            timestamp_ms=1_800_000_000_000,
            nonce=bytes(16),
            ttl=3600,
            value=b"v" * 40,
        )
    ),
    pnp.encode_request(
        pnp.make_signed(
            pnp.Op.DELETE,
            "bob-2",
            key=_PNP_KEY,
            request_id=9,
            timestamp_ms=1_800_000_000_000,
            nonce=bytes(range(16)),
        )
    ),
]
PNP_RESPONSE_SEEDS = [
    pnp.encode_response(pnp.Response(pnp.Status.OK, 7, 1_800_000_000_000, bytes(33), b"addr")),
    pnp.encode_response(pnp.Response(pnp.Status(2), 8, message="name is taken")),
]


def _pnp_request_checks(data: bytes) -> None:
    assert isinstance(pnp.peek_request_id(data), int)
    try:
        req = pnp.decode_request(data)
    except pnp.PnpError:
        return
    assert pnp.decode_request(pnp.encode_request(req)) == req
    if req.op != pnp.Op.GET:
        try:
            pnp.verify_request(req)
        except pnp.PnpError:
            pass


def _pnp_response_checks(data: bytes) -> None:
    try:
        resp = pnp.decode_response(data)
    except pnp.PnpError:
        return
    assert pnp.decode_response(pnp.encode_response(resp)) == resp


@FUZZ
@given(st.binary(max_size=pnp.MAX_PACKET + 20))
def test_pnp_random_bytes(data: bytes) -> None:
    _pnp_request_checks(data)
    _pnp_response_checks(data)


@FUZZ
@given(mutated(PNP_REQUEST_SEEDS))
def test_pnp_damaged_requests(data: bytes) -> None:
    _pnp_request_checks(data)


@FUZZ
@given(mutated(PNP_RESPONSE_SEEDS))
def test_pnp_damaged_responses(data: bytes) -> None:
    _pnp_response_checks(data)


# --- signal envelope, receipts, signal messages -----------------------------------------


def _seal(payload: bytes, nonce: bytes = bytes(16)) -> bytes:
    return seal_envelope(
        payload, sender_private_key=ALICE, recipient_public_key=BOB_PUB, now=NOW, nonce=nonce
    )


ENVELOPE_SEEDS = [_seal(b""), _seal(b"hello bob" * 20)]


def _open(data: bytes) -> None:
    try:
        opened = open_envelope(data, BOB, BOB_PUB, NOW, replay_cache=ReplayCache())
    except EnvelopeError:
        return
    # Only an untouched envelope may open; a damaged one that opens is a forgery.
    assert data in ENVELOPE_SEEDS, "a modified envelope was accepted"
    assert opened.sender


@FUZZ
@given(st.binary(max_size=800))
def test_envelope_random_bytes(data: bytes) -> None:
    _open(data)
    try:
        parse_receipt(data)
    except EnvelopeError:
        pass


@FUZZ
@given(mutated(ENVELOPE_SEEDS, max_mutations=2))
def test_envelope_damaged_envelopes_never_open(data: bytes) -> None:
    _open(data)


_REVERSE = ReverseConnect(b"intent-1", decode_address(ADDRESS_SEEDS[0])).encode()
SIGNAL_SEEDS = [_REVERSE]


def _signal_checks(data: bytes) -> None:
    try:
        msg = decode_signal_message(data)
    except SignalMessageError:
        return
    assert decode_signal_message(msg.encode()) == msg


@FUZZ
@given(st.binary(max_size=600))
def test_signal_message_random_bytes(data: bytes) -> None:
    _signal_checks(data)


@FUZZ
@given(mutated(SIGNAL_SEEDS))
def test_signal_message_damaged(data: bytes) -> None:
    _signal_checks(data)


MQTT_SEEDS = [
    Message(Kind.DATA, bytes(8), b"payload").encode(),
    Message(Kind.RESPONSE, bytes(range(8)), bytes(8) + b"\x00ok").encode(),
]


@FUZZ
@given(st.one_of(st.binary(max_size=100), mutated(MQTT_SEEDS)))
def test_mqtt_signal_messages(data: bytes) -> None:
    try:
        msg = decode_message(data)
    except MessageError:
        return
    assert decode_message(msg.encode()) == msg
    try:
        decode_response(msg.body)
    except MessageError:
        pass

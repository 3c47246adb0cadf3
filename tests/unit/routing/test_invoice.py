"""Payment requests: signed by the payee's node key, a strict codec with one-line errors."""
from __future__ import annotations

import base64
import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eschaton.core.link.identity import NodeKeys
from eschaton.core.routing.invoice import PREFIX, BadRequest, PaymentRequest

KEYS = NodeKeys.generate(random.Random(3).randbytes)
OTHER = NodeKeys.generate(random.Random(4).randbytes)
HASH = hashlib.sha256(b"p").digest()


def _req(**kw: object) -> PaymentRequest:
    args: dict[str, object] = dict(payment_hash=HASH, amount=12_345, created=1_700_000_000,
                                   expiry=3600, secret=b"\x05" * 32, final_delta=18,
                                   description="2 GB of bandwidth, Dezember é")
    args.update(kw)
    return PaymentRequest.create(KEYS, **args)  # type: ignore[arg-type]


def test_round_trip_and_signature() -> None:
    req = _req()
    text = req.encode()
    assert text.startswith(PREFIX)
    back = PaymentRequest.decode(text)
    assert back == req
    assert back.payee == KEYS.node_id.raw
    assert PaymentRequest.decode(text.upper().replace(PREFIX.upper(), PREFIX)) == req  # case-insensitive
    assert PaymentRequest.decode("  " + text + "\n") == req


def test_expiry() -> None:
    req = _req()
    req.check(req.created + 3599)
    with pytest.raises(BadRequest, match="expired 1 s ago"):
        req.check(req.created + 3601)


def _body_with_sig_of(other: NodeKeys, req: PaymentRequest) -> str:
    from eschaton.core.routing.invoice import DOMAIN
    raw = req.body() + other.sign(DOMAIN + req.body())
    return PREFIX + base64.b32encode(raw).decode().rstrip("=").lower()


def test_a_request_signed_by_another_key_is_refused() -> None:
    with pytest.raises(BadRequest, match="signature does not verify"):
        PaymentRequest.decode(_body_with_sig_of(OTHER, _req()))


@pytest.mark.parametrize("text,match", [
    ("lnbc1xyz", "does not start with"),
    (PREFIX + "!!!!", "base32"),
    (PREFIX + "aaaa", "too short"),
])
def test_malformed_requests_are_one_line(text: str, match: str) -> None:
    with pytest.raises(BadRequest, match=match) as info:
        PaymentRequest.decode(text)
    assert "\n" not in str(info.value)


def test_every_changed_field_is_refused() -> None:
    text = _req().encode()
    raw = bytearray(base64.b32decode(text[len(PREFIX):].upper() + "=" * (-len(text[len(PREFIX):]) % 8)))
    for where in range(len(raw)):
        bad = bytearray(raw)
        bad[where] ^= 0x01
        enc = PREFIX + base64.b32encode(bytes(bad)).decode().rstrip("=").lower()
        with pytest.raises(BadRequest):
            PaymentRequest.decode(enc)


def test_create_refuses_bad_fields() -> None:
    with pytest.raises(ValueError):
        _req(amount=0)
    with pytest.raises(ValueError):
        _req(description="x" * 257)
    with pytest.raises(ValueError):
        _req(payment_hash=b"short")


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=400))
def test_fuzz_decode_text(text: str) -> None:
    try:
        PaymentRequest.decode(PREFIX + text)
    except BadRequest as exc:
        assert "\n" not in str(exc)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=500))
def test_fuzz_decode_bytes(raw: bytes) -> None:
    enc = PREFIX + base64.b32encode(raw).decode().rstrip("=").lower()
    with pytest.raises(BadRequest):
        PaymentRequest.decode(enc)  # nothing random carries a valid signature

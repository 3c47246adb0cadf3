"""Payment requests: what a payee asks to be paid, signed with its node key.

Rules / theory of operation:
- A request carries the payment hash, the amount (satoshis), when it was made and for how long
  it holds (seconds), the payee's node id, a payment secret, the least timeout distance the
  payee wants on its escrow (blocks), and a description. The payee signs it with its node key
  (ed25519, the key whose public half is its node id: ``NodeKeys.sign``), over a domain tag and
  the body, so a request cannot pass for any other signed object of the node.
- Proof of payment: the preimage of the hash together with the signed request shows the payee
  was paid what it asked (only the payee knew the preimage until the payment committed).
- The payment secret rides in the payee's onion layer: a payee accepts an escrow for the hash
  only with the secret of its request, so an intermediate hop cannot probe the payee by
  offering escrows under a hash it saw.
- Text form: ``eschreq1`` followed by the body and signature in lower-case base32 without
  padding (case-insensitive on input, so it survives a QR code or a phone keyboard).
- Decoding is strict and its errors are one line (``BadRequest``): the prefix, the alphabet, the
  length, the version, a non-canonical or invalid node id, bad UTF-8, trailing bytes, a
  signature that does not verify. ``check(now)`` refuses an expired request.
"""
from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass

from eschaton.core.link.identity import BadNodeId, NodeId, NodeKeys
from eschaton.errors import RemoteError

PREFIX = "eschreq1"
VERSION = 1
DOMAIN = b"eschaton/routing/request/v1\x00"
MAX_DESCRIPTION = 256
"""Bytes of UTF-8; enough for "bandwidth, 2 GB, December" and short enough for a QR code."""
MAX_AMOUNT = 21_000_000 * 100_000_000
_HEAD = struct.Struct(">B32sQQI32s32sHH")
SIG_LEN = 64


class BadRequest(RemoteError):
    """A payment request that does not parse, does not verify or has expired (one line)."""


@dataclass(frozen=True, slots=True)
class PaymentRequest:
    payment_hash: bytes
    """sha256 of the preimage the payee holds."""
    amount: int
    """Satoshis the payee asks for."""
    created: int
    """Seconds since the epoch when the payee made the request."""
    expiry: int
    """Seconds after ``created`` during which the payee accepts the payment."""
    payee: bytes
    """The payee's node id (32 bytes)."""
    secret: bytes
    """32 bytes the payer puts in the payee's onion layer."""
    final_delta: int
    """The least number of blocks between the height and the payee's escrow timeout."""
    description: str
    sig: bytes = b""

    def body(self) -> bytes:
        desc = self.description.encode()
        return _HEAD.pack(VERSION, self.payment_hash, self.amount, self.created, self.expiry,
                          self.payee, self.secret, self.final_delta, len(desc)) + desc

    @classmethod
    def create(cls, keys: NodeKeys, *, payment_hash: bytes, amount: int, created: int, expiry: int,
               secret: bytes, final_delta: int, description: str = "") -> PaymentRequest:
        """A request signed by ``keys`` (the payee's node key); raises ``ValueError`` on bad fields."""
        if len(payment_hash) != 32 or len(secret) != 32:
            raise ValueError("payment hash and secret are 32 bytes")
        if not 0 < amount <= MAX_AMOUNT:
            raise ValueError(f"amount {amount} outside 1..{MAX_AMOUNT}")
        if not 0 < expiry < 1 << 32 or not 0 <= created < 1 << 63 or not 0 <= final_delta < 1 << 16:
            raise ValueError("expiry, created or final delta out of range")
        if len(description.encode()) > MAX_DESCRIPTION:
            raise ValueError(f"description longer than {MAX_DESCRIPTION} bytes")
        unsigned = cls(payment_hash, amount, created, expiry, keys.node_id.raw, secret, final_delta,
                       description)
        sig = keys.sign(DOMAIN + unsigned.body())
        return cls(payment_hash, amount, created, expiry, keys.node_id.raw, secret, final_delta,
                   description, sig)

    def encode(self) -> str:
        raw = self.body() + self.sig
        return PREFIX + base64.b32encode(raw).decode().rstrip("=").lower()

    @classmethod
    def decode(cls, text: str) -> PaymentRequest:
        """Parse and verify the signature; raises ``BadRequest`` with one line."""
        text = text.strip().lower()
        if not text.startswith(PREFIX):
            raise BadRequest(f"not a payment request: it does not start with {PREFIX!r}")
        data = text[len(PREFIX):].upper()
        if len(data) > 2 * (_HEAD.size + MAX_DESCRIPTION + SIG_LEN):
            raise BadRequest("payment request too long")
        try:
            raw = base64.b32decode(data + "=" * (-len(data) % 8))
        except (binascii.Error, ValueError):
            raise BadRequest("payment request is not valid base32") from None
        if len(raw) < _HEAD.size + SIG_LEN:
            raise BadRequest(f"payment request of {len(raw)} bytes is too short")
        (version, phash, amount, created, expiry, payee, secret, final_delta,
         dlen) = _HEAD.unpack_from(raw)
        if version != VERSION:
            raise BadRequest(f"payment request version {version} unknown")
        if dlen > MAX_DESCRIPTION:
            raise BadRequest(f"payment request description of {dlen} bytes (at most {MAX_DESCRIPTION})")
        if len(raw) != _HEAD.size + dlen + SIG_LEN:
            raise BadRequest("payment request length does not match its description length")
        try:
            desc = raw[_HEAD.size:_HEAD.size + dlen].decode()
        except UnicodeDecodeError:
            raise BadRequest("payment request description is not UTF-8") from None
        if not 0 < amount <= MAX_AMOUNT:
            raise BadRequest(f"payment request amount {amount} out of range")
        if expiry == 0 or created >= 1 << 63:
            raise BadRequest("payment request times out of range")
        try:
            node = NodeId(payee)
        except BadNodeId:
            raise BadRequest("payment request payee is not a valid node id") from None
        req = cls(phash, amount, created, expiry, payee, secret, final_delta, desc,
                  raw[-SIG_LEN:])
        if req.encode() != text:
            raise BadRequest("payment request is not in canonical form")
        if not node.verify(DOMAIN + req.body(), req.sig):
            raise BadRequest("payment request signature does not verify against its payee")
        return req

    @property
    def expires(self) -> int:
        return self.created + self.expiry

    def check(self, now: int) -> None:
        """Raises ``BadRequest`` if the request has expired at ``now`` (seconds since the epoch)."""
        if now >= self.expires:
            raise BadRequest(f"payment request expired {now - self.expires} s ago")

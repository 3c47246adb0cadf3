"""The onion: fixed-size layered hop instructions (Sphinx, as in Lightning's BOLT 4), sans-IO.

Rules / theory of operation:
- A packet is ``version (1) || ephemeral X25519 key (32) || routing info (MAX_HOPS x FRAME) ||
  HMAC (32)``, always ``PACKET_LEN`` bytes, whatever the route's length. A hop sees a packet of
  that size before and after it peels its layer, so neither the size nor the position in the
  route says how far the payee is.
- Keys. A hop's onion key is the X25519 form of its node id (``NodeId.x25519()``): the key the
  node already has for its links, so nothing new is announced or stored. The payer draws a fresh
  session scalar ``e``; hop ``i`` sees the ephemeral key ``E_i = b_{i-1}...b_0 e G`` and derives
  the shared secret ``ss_i = SHA256(X25519(sk_i, E_i))``; the blinding factor
  ``b_i = SHA256(E_i || ss_i)`` turns ``E_i`` into ``E_{i+1}`` (one more X25519 multiplication,
  which clamps ``b_i``; the payer applies the same clamped factors to ``X25519(e, P_i)``, and
  scalar multiplications commute). So the ephemeral keys of two hops are unlinkable without
  their secrets.
- From ``ss_i``: ``rho`` keys a ChaCha20 keystream (libsodium's IETF ChaCha20-Poly1305 over
  zeros, tag dropped: the keystream is what it encrypts with), ``mu`` keys HMAC-SHA256 over
  routing info || associated data. The associated data is the escrow's payment hash, so an onion
  cannot be replayed under another hash. No home-made cipher: X25519, ChaCha20, HMAC-SHA256.
- Peeling: check the HMAC (constant time) before anything else; append ``FRAME`` zero bytes,
  XOR the keystream, read the first frame (this hop's payload and the next HMAC) and keep the
  rest as the next routing info. An all-zero next HMAC means "you are the payee". The payer's
  *filler* makes the bytes that the shifts pull in at the end line up with what the later hops'
  HMACs cover, so every hop's HMAC checks.
- Failures are ``BadOnion`` (a ``RemoteError``) with one line: wrong length, unknown version, a
  key that is not a valid point, an HMAC that does not match, a payload that does not parse. A
  hop that refuses an onion fails the escrow upstream; it never forwards a packet it could not
  authenticate.
"""
from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import nacl.bindings as sodium

from eschaton.errors import RemoteError

VERSION = 0
MAX_HOPS = 20
HMAC_LEN = 32
KEY_LEN = 32
PAYLOAD_LEN = 48
"""kind (1) || next node id or payee secret (32) || amount to forward (8) || timeout (4) || zero (3)."""
FRAME = PAYLOAD_LEN + HMAC_LEN
ROUTING_LEN = MAX_HOPS * FRAME
PACKET_LEN = 1 + KEY_LEN + ROUTING_LEN + HMAC_LEN

KIND_FORWARD = 1
KIND_FINAL = 2
_ZERO_HMAC = bytes(HMAC_LEN)
_NONCE = bytes(12)


class BadOnion(RemoteError):
    """An onion packet this hop refuses (one line: why)."""


@dataclass(frozen=True, slots=True)
class HopPayload:
    """What one hop learns from its layer.

    ``next_node`` is the successor's node id (32 bytes) for a forwarding hop. For the payee
    (``final``) the same 32 bytes carry the payment secret of its payment request (zeros when
    the payment has none), which tells the payee the payer really read its request.
    """

    final: bool
    next_node: bytes
    amount: int
    """Satoshis to offer the successor (forwarding hop) or to receive (payee)."""
    timeout: int
    """Absolute height: the timeout of the escrow to offer the successor, or the least the
    payee accepts for the escrow it receives."""

    def encode(self) -> bytes:
        if len(self.next_node) != 32:
            raise ValueError("next node / secret must be 32 bytes")
        if not (0 < self.amount < 1 << 63 and 0 <= self.timeout < 1 << 32):
            raise ValueError("amount or timeout out of range")
        kind = KIND_FINAL if self.final else KIND_FORWARD
        return struct.pack(">B32sQI3x", kind, self.next_node, self.amount, self.timeout)

    @classmethod
    def decode(cls, raw: bytes) -> HopPayload:
        if len(raw) != PAYLOAD_LEN:
            raise BadOnion(f"onion payload of {len(raw)} bytes, expected {PAYLOAD_LEN}")
        kind, nxt, amount, timeout = struct.unpack(">B32sQI3x", raw)
        if kind not in (KIND_FORWARD, KIND_FINAL):
            raise BadOnion(f"onion payload of unknown kind {kind}")
        if raw[-3:] != b"\0\0\0":
            raise BadOnion("onion payload has non-zero reserved bytes")
        if not 0 < amount < 1 << 63:
            raise BadOnion(f"onion amount {amount} out of range")
        return cls(kind == KIND_FINAL, nxt, amount, timeout)


@dataclass(frozen=True, slots=True)
class Peeled:
    """The result of peeling one layer: this hop's payload and the packet for the successor."""

    payload: HopPayload
    next_packet: bytes | None
    """``PACKET_LEN`` bytes to hand the successor, or None at the payee."""
    shared_secret: bytes
    """This hop's secret with the payer (for an encrypted failure reason, later)."""


def _key(label: bytes, secret: bytes) -> bytes:
    return hmac.new(label, secret, hashlib.sha256).digest()


def _stream(key: bytes, n: int) -> bytes:
    # ChaCha20 keystream: the AEAD's ciphertext of n zero bytes (its tag is the last 16 bytes).
    out = sodium.crypto_aead_chacha20poly1305_ietf_encrypt(bytes(n), None, _NONCE, key)
    return bytes(out[:n])


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def _mul(scalar: bytes, point: bytes) -> bytes:
    try:
        return bytes(sodium.crypto_scalarmult(scalar, point))
    except Exception as exc:  # libsodium refuses small-order points (all-zero result)
        raise BadOnion(f"onion key is not a usable X25519 point: {exc}") from None


def _secret(point: bytes) -> bytes:
    return hashlib.sha256(point).digest()


def _blind(ephemeral: bytes, secret: bytes) -> bytes:
    return hashlib.sha256(ephemeral + secret).digest()


def _mac(secret: bytes, info: bytes, assoc: bytes) -> bytes:
    return hmac.new(_key(b"mu", secret), info + assoc, hashlib.sha256).digest()


def _secrets(session: bytes, hop_keys: Sequence[bytes]) -> tuple[bytes, list[bytes]]:
    """The first ephemeral key and each hop's shared secret (the payer's side of the ECDH)."""
    ephemeral = bytes(sodium.crypto_scalarmult_base(session))
    first = ephemeral
    blinds: list[bytes] = []
    secrets: list[bytes] = []
    for pk in hop_keys:
        point = _mul(session, pk)
        for b in blinds:
            point = _mul(b, point)
        ss = _secret(point)
        secrets.append(ss)
        blind = _blind(ephemeral, ss)
        blinds.append(blind)
        ephemeral = _mul(blind, ephemeral)
    return first, secrets


def build(session: bytes, hops: Sequence[tuple[bytes, HopPayload]], assoc: bytes) -> bytes:
    """The packet for the first hop. ``hops``: (X25519 onion key, payload) in path order, the
    payee last (its payload ``final``). ``session``: 32 random bytes, fresh for each packet
    (randomness is the caller's input). ``assoc``: the payment hash."""
    if not 1 <= len(hops) <= MAX_HOPS:
        raise ValueError(f"a route has 1..{MAX_HOPS} hops, not {len(hops)}")
    if len(session) != 32:
        raise ValueError("session key must be 32 bytes")
    if not hops[-1][1].final or any(p.final for _, p in hops[:-1]):
        raise ValueError("exactly the last hop's payload is final")
    first, secrets = _secrets(session, [pk for pk, _ in hops])
    n = len(hops)
    filler = b""
    for ss in secrets[:-1]:
        filler += bytes(FRAME)
        stream = _stream(_key(b"rho", ss), ROUTING_LEN + FRAME)
        filler = _xor(filler, stream[ROUTING_LEN + FRAME - len(filler):])
    # Pseudo-random initial padding: the payee's unused tail looks like ciphertext.
    info = _stream(_key(b"pad", session), ROUTING_LEN)
    next_mac = _ZERO_HMAC
    for i in range(n - 1, -1, -1):
        frame = hops[i][1].encode() + next_mac
        info = frame + info[:ROUTING_LEN - FRAME]
        info = _xor(info, _stream(_key(b"rho", secrets[i]), ROUTING_LEN))
        if i == n - 1 and filler:
            info = info[:ROUTING_LEN - len(filler)] + filler
        next_mac = _mac(secrets[i], info, assoc)
    return bytes([VERSION]) + first + info + next_mac


def peel(packet: bytes, x25519_private: bytes, assoc: bytes) -> Peeled:
    """This hop's layer of ``packet`` (received with an escrow under the hash ``assoc``)."""
    if len(packet) != PACKET_LEN:
        raise BadOnion(f"onion of {len(packet)} bytes, expected {PACKET_LEN}")
    if packet[0] != VERSION:
        raise BadOnion(f"onion version {packet[0]} unknown")
    ephemeral = packet[1:1 + KEY_LEN]
    info = packet[1 + KEY_LEN:1 + KEY_LEN + ROUTING_LEN]
    mac = packet[1 + KEY_LEN + ROUTING_LEN:]
    ss = _secret(_mul(x25519_private, ephemeral))
    if not hmac.compare_digest(mac, _mac(ss, info, assoc)):
        raise BadOnion("onion HMAC does not match (tampered, or not for this hop or hash)")
    plain = _xor(info + bytes(FRAME), _stream(_key(b"rho", ss), ROUTING_LEN + FRAME))
    payload = HopPayload.decode(plain[:PAYLOAD_LEN])
    next_mac = plain[PAYLOAD_LEN:FRAME]
    last = next_mac == _ZERO_HMAC
    if last != payload.final:
        raise BadOnion("onion payload's kind does not match its position")
    if last:
        return Peeled(payload, None, ss)
    next_ephemeral = _mul(_blind(ephemeral, ss), ephemeral)
    return Peeled(payload, bytes([VERSION]) + next_ephemeral + plain[FRAME:] + next_mac, ss)


# Failures travel back to the payer encrypted (BOLT 4's scheme, fixed size): the hop that fails
# seals ``reason (1) || zeros`` with an HMAC under its shared secret and XORs a keystream; every
# hop on the way back XORs its own keystream. Only the payer, who knows every shared secret,
# peels them in order and finds which hop failed (the first HMAC that checks) and why. A hop on
# the way back sees a constant-size blob it cannot read or alter unnoticed.
FAILURE_MSG_LEN = 32
FAILURE_LEN = HMAC_LEN + FAILURE_MSG_LEN


def failure_create(secret: bytes, reason: int) -> bytes:
    """The failure blob a hop (shared secret ``secret``) returns upstream."""
    msg = bytes([reason]) + bytes(FAILURE_MSG_LEN - 1)
    sealed = hmac.new(_key(b"um", secret), msg, hashlib.sha256).digest() + msg
    return failure_forward(secret, sealed)


def failure_forward(secret: bytes, blob: bytes) -> bytes:
    """Add this hop's layer to a failure coming back from downstream."""
    if len(blob) != FAILURE_LEN:
        blob = bytes(FAILURE_LEN)  # garbage from downstream: pass on a blob the payer cannot attribute
    return _xor(blob, _stream(_key(b"ammag", secret), FAILURE_LEN))


def failure_secrets(session: bytes, hop_keys: Sequence[bytes]) -> list[bytes]:
    """The payer's shared secret with each hop (to read failures)."""
    return _secrets(session, hop_keys)[1]


def failure_read(secrets: Sequence[bytes], blob: bytes) -> tuple[int, int] | None:
    """(index of the failing hop, its reason code), or None if no hop's HMAC checks."""
    if len(blob) != FAILURE_LEN:
        return None
    for i, ss in enumerate(secrets):
        blob = _xor(blob, _stream(_key(b"ammag", ss), FAILURE_LEN))
        mac, msg = blob[:HMAC_LEN], blob[HMAC_LEN:]
        if hmac.compare_digest(mac, hmac.new(_key(b"um", ss), msg, hashlib.sha256).digest()):
            return i, msg[0]
    return None

"""Node identity: one ed25519 key whose public half is the node id.

Rules / theory of operation:
- A node has one long-term secret: a 32-byte ed25519 seed. Its public key (32 bytes, shown as
  64 lower-case hex digits) is the node id. Beacons are signed with it directly.
- Links use Noise over X25519. The Noise static key is the X25519 conversion of the ed25519 key
  (libsodium's ``crypto_sign_ed25519_{pk,sk}_to_curve25519``), so knowing a node id is knowing
  its Noise static key: a dialler needs nothing but the id.
- The conversion forgets the sign of the ed25519 x-coordinate, so two ids (A and -A) would map
  to one X25519 key. To keep "one key, one id" we accept only *canonical* ids, whose sign bit
  (top bit of the last byte) is 0. Key generation draws seeds until the public key is canonical
  (two draws on average). A peer claiming a non-canonical id is refused.
- Randomness is an input: ``NodeKeys.generate`` takes a ``random_bytes`` callable.
- Secrets never appear in ``repr``/``str`` (they must never reach a log).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import nacl.bindings
import nacl.exceptions
import nacl.signing

from eschaton.errors import LocalError, RemoteError


class IdentityError(LocalError):
    """A key or node id we were given (config, key file) is invalid."""


class BadNodeId(RemoteError):
    """A peer presented a node id that is not a valid canonical ed25519 public key."""


def _to_x25519_public(raw: bytes) -> bytes | None:
    if len(raw) != 32 or raw[31] & 0x80:
        return None
    try:
        return bytes(nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(raw))
    except nacl.exceptions.CryptoError:
        return None  # not a point on the curve, or of small order


@dataclass(frozen=True, slots=True)
class NodeId:
    """A node's public identity (canonical ed25519 public key)."""

    raw: bytes

    def __post_init__(self) -> None:
        if _to_x25519_public(self.raw) is None:
            raise BadNodeId(f"not a canonical ed25519 public key: {self.raw.hex()[:64]!r}")

    @classmethod
    def from_hex(cls, text: str) -> NodeId:
        """Parse 64 hex digits; raises ``IdentityError`` (for config and CLI input)."""
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise IdentityError(f"node id {text!r} is not hex") from None
        if len(raw) != 32:
            raise IdentityError(f"node id {text!r} is not 32 bytes (64 hex digits)")
        try:
            return cls(raw)
        except BadNodeId as exc:
            raise IdentityError(str(exc)) from None

    def hex(self) -> str:
        return self.raw.hex()

    def short(self) -> str:
        """First 12 hex digits, for logs."""
        return self.raw.hex()[:12]

    def x25519(self) -> bytes:
        """The Noise static public key of this node."""
        out = _to_x25519_public(self.raw)
        assert out is not None  # checked in __post_init__
        return out

    def verify(self, message: bytes, signature: bytes) -> bool:
        """True if ``signature`` is this node's ed25519 signature of ``message``."""
        if len(signature) != 64:
            return False
        try:
            nacl.signing.VerifyKey(self.raw).verify(message, signature)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError):
            return False
        return True

    def __str__(self) -> str:
        return self.raw.hex()

    def __repr__(self) -> str:
        return f"NodeId({self.raw.hex()})"


class NodeKeys:
    """The node's secret key material. Build with ``from_seed`` or ``generate``."""

    __slots__ = ("_signing", "node_id", "_x25519_private")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise IdentityError("node key seed must be 32 bytes")
        signing = nacl.signing.SigningKey(seed)
        pk = bytes(signing.verify_key.encode())
        if pk[31] & 0x80:
            raise IdentityError("node key seed gives a non-canonical public key (sign bit set)")
        self._signing = signing
        self.node_id = NodeId(pk)
        self._x25519_private = bytes(signing.to_curve25519_private_key().encode())

    @classmethod
    def from_seed(cls, seed: bytes) -> NodeKeys:
        return cls(seed)

    @classmethod
    def generate(cls, random_bytes: Callable[[int], bytes]) -> NodeKeys:
        """Draw seeds until the public key is canonical (about two draws)."""
        for _ in range(256):
            seed = random_bytes(32)
            pk = bytes(nacl.signing.SigningKey(seed).verify_key.encode())
            if not pk[31] & 0x80:
                return cls(seed)
        raise IdentityError("random source produced 256 non-canonical keys; is it broken?")

    def seed(self) -> bytes:
        """The secret seed, for the key store only."""
        return bytes(self._signing.encode())

    def x25519_private(self) -> bytes:
        """The Noise static private key."""
        return self._x25519_private

    def sign(self, message: bytes) -> bytes:
        return bytes(self._signing.sign(message).signature)

    def __repr__(self) -> str:
        return f"NodeKeys(node_id={self.node_id.short()}…)"

    __str__ = __repr__

"""Oracle announcements, outcome preimages and the proof that an oracle cheated.

An oracle commits to an event by publishing, under its ed25519 key, a list of outcomes each with
``sha256(preimage)``, and a deadline height. When the event resolves it publishes exactly one
preimage. Anyone holding the announcement and two preimages for two different outcomes holds a
``FraudProof`` that any third party can verify with nothing but the oracle's public key.

pynacl is used for ed25519 (it does no I/O); randomness (the preimages) is an input.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from eschaton.core.channel.errors import OracleError

_TAG = b"eschaton/oracle/v1"
MAX_OUTCOMES = 16


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


@dataclass(frozen=True, slots=True)
class Announcement:
    oracle_pubkey: bytes  # 32-byte ed25519
    event_id: str
    outcomes: tuple[str, ...]
    hashes: tuple[bytes, ...]  # sha256 of each outcome's preimage
    deadline: int  # block height by which the oracle promises to reveal
    signature: bytes  # 64-byte ed25519 over ``message()``

    def message(self) -> bytes:
        out = bytearray(_TAG)
        ev = self.event_id.encode()
        out += len(ev).to_bytes(2, "big") + ev + self.deadline.to_bytes(4, "big")
        out += len(self.outcomes).to_bytes(1, "big")
        for label, h in zip(self.outcomes, self.hashes, strict=True):
            lb = label.encode()
            out += len(lb).to_bytes(2, "big") + lb + h
        return bytes(out)

    @property
    def digest(self) -> bytes:
        """Identifies the announcement (signature included) inside channel state."""
        return _h(self.message() + self.signature)

    def verify(self) -> None:
        """Raise ``OracleError`` unless well-formed and signed by ``oracle_pubkey``."""
        if len(self.oracle_pubkey) != 32 or len(self.signature) != 64:
            raise OracleError("bad oracle key or signature length")
        if not 2 <= len(self.outcomes) <= MAX_OUTCOMES or len(self.hashes) != len(self.outcomes):
            raise OracleError("an announcement needs 2..16 outcomes, one hash each")
        if any(len(h) != 32 for h in self.hashes) or len(set(self.hashes)) != len(self.hashes):
            raise OracleError("outcome hashes must be distinct 32-byte values")
        if len(set(self.outcomes)) != len(self.outcomes):
            raise OracleError("outcome labels must be distinct")
        if not 0 < self.deadline < 500_000_000:
            raise OracleError("deadline must be a block height")
        try:
            VerifyKey(self.oracle_pubkey).verify(self.message(), self.signature)
        except (BadSignatureError, ValueError) as e:
            raise OracleError("announcement signature does not verify") from e

    def outcome_of(self, preimage: bytes) -> int:
        """Index of the outcome ``preimage`` reveals; raises ``OracleError`` if none."""
        if len(preimage) != 32:
            raise OracleError("preimages are 32 bytes")
        h = _h(preimage)
        for i, x in enumerate(self.hashes):
            if x == h:
                return i
        raise OracleError("preimage matches no outcome of the announcement")

    def to_fields(self) -> dict[str, object]:
        return {
            "oracle_pubkey": self.oracle_pubkey, "event_id": self.event_id,
            "outcomes": list(self.outcomes), "hashes": list(self.hashes),
            "deadline": self.deadline, "signature": self.signature,
        }

    @classmethod
    def from_fields(cls, d: dict[str, Any]) -> Announcement:
        try:
            outcomes = d["outcomes"]
            hashes = d["hashes"]
            assert isinstance(outcomes, list) and isinstance(hashes, list)
            a = cls(
                oracle_pubkey=bytes(d["oracle_pubkey"]),
                event_id=str(d["event_id"]),
                outcomes=tuple(str(x) for x in outcomes),
                hashes=tuple(bytes(x) for x in hashes),
                deadline=int(d["deadline"]),
                signature=bytes(d["signature"]),
            )
        except (KeyError, TypeError, ValueError, AssertionError) as e:
            raise OracleError(f"malformed announcement: {e}") from e
        return a


class Oracle:
    """An oracle's signing side (used by oracle services, tests and the demo)."""

    def __init__(self, seed: bytes) -> None:
        self._key = SigningKey(seed)

    @property
    def pubkey(self) -> bytes:
        return bytes(self._key.verify_key)

    def announce(self, event_id: str, outcomes: list[str], preimages: list[bytes], deadline: int) -> Announcement:
        if len(preimages) != len(outcomes) or any(len(p) != 32 for p in preimages):
            raise OracleError("one 32-byte preimage per outcome")
        unsigned = Announcement(self.pubkey, event_id, tuple(outcomes),
                                tuple(_h(p) for p in preimages), deadline, b"\x00" * 64)
        sig = self._key.sign(unsigned.message()).signature
        return Announcement(self.pubkey, event_id, tuple(outcomes), unsigned.hashes, deadline, bytes(sig))


@dataclass(frozen=True, slots=True)
class FraudProof:
    """Two preimages for two different outcomes of one signed announcement."""

    announcement: Announcement
    preimage_a: bytes
    preimage_b: bytes

    def verify(self) -> bool:
        try:
            self.announcement.verify()
            a = self.announcement.outcome_of(self.preimage_a)
            b = self.announcement.outcome_of(self.preimage_b)
        except OracleError:
            return False
        return a != b


def verify_fraud_proof(proof: FraudProof) -> bool:
    return proof.verify()

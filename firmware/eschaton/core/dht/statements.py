"""Signed statements: canonical bencode dictionaries signed by a node key, valid for a span of
blocks, found by signer and by any sub-element path.

Rules / theory of operation:
- The signed bytes are ``DOMAIN || bencode({"body", "from", "until", "signer"})``; bencode is
  canonical (one encoding per value), so signer and verifier agree on the bytes without any
  re-serialisation ambiguity, and the domain keeps a statement's signature from meaning anything
  in another protocol that signs with the same node key.
- ``from``/``until`` are block heights (inclusive); a statement outside them is not returned,
  and a holder drops it once the tip passes ``until``.
- A path is a list of dictionary keys (bytes) and list indices (ints) walked from the body;
  ``get_path`` answers "missing" rather than raising, so a query over statements of different
  shapes simply does not match the ones without the element.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from eschaton.core.dht.errors import RecordError
from eschaton.core.link.identity import BadNodeId, NodeId
from eschaton.core.wire import bencode

DOMAIN = b"eschaton-dht-statement-v1"
MISSING = object()


@dataclass(frozen=True, slots=True)
class Statement:
    body: dict[bytes, bencode.BValue]
    valid_from: int
    valid_until: int
    signer: bytes
    sig: bytes

    def signed_bytes(self) -> bytes:
        return signed_bytes(self.body, self.valid_from, self.valid_until, self.signer)

    def to_value(self) -> dict[str, bencode.EValue]:
        return {"body": self.body, "from": self.valid_from, "until": self.valid_until,
                "signer": self.signer, "sig": self.sig}

    def verify(self) -> bool:
        try:
            nid = NodeId(self.signer)
        except BadNodeId:
            return False
        return nid.verify(self.signed_bytes(), self.sig)

    def valid_at(self, height: int) -> bool:
        return self.valid_from <= height <= self.valid_until


def signed_bytes(body: dict[bytes, bencode.BValue], valid_from: int, valid_until: int,
                 signer: bytes) -> bytes:
    return DOMAIN + bencode.encode(
        {"body": body, "from": valid_from, "until": valid_until, "signer": signer})


def sign(sign_fn: Callable[[bytes], bytes], signer: bytes,
         body: dict[bytes, bencode.BValue], valid_from: int, valid_until: int) -> Statement:
    """A statement signed with ``sign_fn`` (the node key's ``sign``)."""
    if not 0 <= valid_from <= valid_until:
        raise ValueError("a statement's validity must be 0 <= from <= until")
    sig = sign_fn(signed_bytes(body, valid_from, valid_until, signer))
    return Statement(body, valid_from, valid_until, signer, sig)


def from_value(v: bencode.BValue) -> Statement:
    """A statement from its decoded dict, checked for shape (not yet for its signature)."""
    if not isinstance(v, dict) or set(v) != {b"t", b"body", b"from", b"until", b"signer", b"sig"}:
        raise RecordError("statement: want exactly t, body, from, until, signer, sig")
    body, vf, vu, signer, sig = (v[b"body"], v[b"from"], v[b"until"], v[b"signer"], v[b"sig"])
    if not isinstance(body, dict):
        raise RecordError("statement: body must be a dictionary")
    if not (isinstance(vf, int) and isinstance(vu, int) and 0 <= vf <= vu < 2**32):
        raise RecordError("statement: want 0 <= from <= until < 2**32")
    if not (isinstance(signer, bytes) and len(signer) == 32):
        raise RecordError("statement: signer must be a 32-byte node id")
    if not (isinstance(sig, bytes) and len(sig) == 64):
        raise RecordError("statement: sig must be 64 bytes")
    return Statement(body, vf, vu, signer, sig)


def get_path(value: bencode.BValue, path: Sequence[bytes | int]) -> object:
    """The element at ``path`` under ``value``, or ``MISSING``."""
    cur: bencode.BValue = value
    for step in path:
        if isinstance(step, bytes) and isinstance(cur, dict) and step in cur:
            cur = cur[step]
        elif isinstance(step, int) and isinstance(cur, list) and 0 <= step < len(cur):
            cur = cur[step]
        else:
            return MISSING
    return cur

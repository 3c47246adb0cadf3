"""Strict readers for wire dicts, and ed25519 signing helpers.

Messages travel as flat dicts of int / bytes / str (what the wire codec carries). Readers check
the exact key set, every type and every range, and raise ``Malformed``: a message from a peer is
either entirely valid or refused. A str field may also arrive as UTF-8 bytes, because bencode
does not tell the two apart; for the same reason keys may be str or UTF-8 bytes.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping

from nacl.exceptions import CryptoError
from nacl.signing import SigningKey, VerifyKey

from eschaton.core.microgrid.canonical import Plain, encode
from eschaton.core.microgrid.errors import BadSignature, Malformed

MAX_INT = (1 << 63) - 1
"""Largest integer in any field: fits the wire codec's unsigned 64-bit fields with room."""
PUBKEY_LEN = 32
SIG_LEN = 64
HASH_LEN = 32


class Reader:
    """Reads one wire dict; ``done()`` refuses keys nobody asked for."""

    __slots__ = ("_d", "_seen", "_what")

    def __init__(self, raw: object, what: str) -> None:
        if not isinstance(raw, Mapping):
            raise Malformed(f"{what}: expected a dict, got {type(raw).__name__}")
        # Keys may be str or, straight from bencode, UTF-8 bytes.
        self._d: dict[str, object] = {}
        for k, v in raw.items():
            if isinstance(k, bytes | bytearray):
                try:
                    k = bytes(k).decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise Malformed(f"{what}: a key is not utf-8") from exc
            if not isinstance(k, str) or k in self._d:
                raise Malformed(f"{what}: bad or duplicate key {k!r}")
            self._d[k] = v
        self._seen: set[str] = set()
        self._what = what

    def _get(self, key: str) -> object:
        self._seen.add(key)
        if key not in self._d:
            raise Malformed(f"{self._what}: missing field {key!r}")
        return self._d[key]

    def uint(self, key: str, lo: int = 0, hi: int = MAX_INT) -> int:
        v = self._get(key)
        if isinstance(v, bool) or not isinstance(v, int):
            raise Malformed(f"{self._what}.{key}: expected an integer")
        if not lo <= v <= hi:
            raise Malformed(f"{self._what}.{key}: {v} outside {lo}..{hi}")
        return v

    def raw(self, key: str, *lengths: int) -> bytes:
        v = self._get(key)
        if not isinstance(v, bytes | bytearray):
            raise Malformed(f"{self._what}.{key}: expected bytes")
        if len(v) not in lengths:
            raise Malformed(f"{self._what}.{key}: length {len(v)} not in {lengths}")
        return bytes(v)

    def text(self, key: str, max_len: int = 64) -> str:
        v = self._get(key)
        if isinstance(v, bytes | bytearray):
            try:
                v = bytes(v).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise Malformed(f"{self._what}.{key}: invalid utf-8") from exc
        if not isinstance(v, str):
            raise Malformed(f"{self._what}.{key}: expected a string")
        if not 0 < len(v) <= max_len or not v.isprintable():
            raise Malformed(f"{self._what}.{key}: empty, too long or unprintable")
        return v

    def done(self) -> None:
        extra = set(self._d) - self._seen
        if extra:
            raise Malformed(f"{self._what}: unexpected fields {sorted(extra)}")


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def sign(key: SigningKey, domain: bytes, body: dict[str, Plain]) -> bytes:
    """ed25519 signature over ``domain || canonical(body)``; the domain stops cross-type reuse."""
    return bytes(key.sign(domain + encode(body)).signature)


def verify(pubkey: bytes, domain: bytes, body: dict[str, Plain], sig: bytes, what: str) -> None:
    try:
        VerifyKey(pubkey).verify(domain + encode(body), sig)
    except (CryptoError, ValueError, TypeError) as exc:
        raise BadSignature(f"{what}: signature does not verify") from exc


def pubkey_of(key: SigningKey) -> bytes:
    return bytes(key.verify_key)

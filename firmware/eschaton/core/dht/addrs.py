"""Signed transport addresses of DHT contacts, and the bounds on dialing them, sans-IO.

Rules / theory of operation:
- A node signs its own address record: its node key, up to ``MAX_URLS`` transport URLs
  (``tcp://host:port``) and a sequence number (a later record replaces an earlier one), with its
  ed25519 node key over ``"eschaton-dht-addr-v1" ‖ bencode(key, seq, urls)``. Nobody can
  publish an address for a key it does not hold, so a lookup cannot be steered to a third
  party's machine by a forged contact; the link handshake still proves the key on arrival.
- ``decode`` is strict (canonical bencode, exact keys, bounded sizes, URLs of the ``tcp``
  scheme with a host and a port) and raises only ``MessageError``; ``verify`` checks the
  signature. ``AddrBook.learn`` keeps only verified records, the newest per key, at most
  ``max_entries`` (the oldest learned go first).
- ``DialBudget`` caps dials to contacts without a link: at most ``in_flight`` at once and
  ``per_minute`` started in any 60 s (a token bucket), so a peer handing out many contacts
  cannot make this node dial the world.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from eschaton.core.dht.errors import MessageError
from eschaton.core.link.identity import BadNodeId, NodeId
from eschaton.core.wire import bencode
from eschaton.core.wire.errors import BencodeError

DOMAIN = b"eschaton-dht-addr-v1"
MAX_URLS = 4
MAX_URL = 200
MAX_RECORD = 1024
_LIMITS = bencode.Limits(max_size=MAX_RECORD, max_depth=3, max_items=16)


@dataclass(frozen=True, slots=True)
class AddrRecord:
    key: bytes
    seq: int
    urls: tuple[str, ...]
    sig: bytes

    def signed_bytes(self) -> bytes:
        return DOMAIN + bencode.encode({"key": self.key, "seq": self.seq,
                                        "urls": [u.encode() for u in self.urls]})

    def verify(self) -> bool:
        try:
            return NodeId(self.key).verify(self.signed_bytes(), self.sig)
        except (BadNodeId, ValueError):  # not a canonical ed25519 point
            return False


def check_url(url: str) -> str:
    if len(url) > MAX_URL:
        raise MessageError("address URL too long")
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError:
        raise MessageError("address URL is malformed") from None
    if u.scheme != "tcp" or not u.hostname or not port or u.path or u.query or u.fragment:
        raise MessageError("address URL must be tcp://host:port")
    return url


def sign(sign_fn: Callable[[bytes], bytes], key: bytes, urls: tuple[str, ...], seq: int) -> AddrRecord:
    if not 0 < len(urls) <= MAX_URLS:
        raise MessageError(f"an address record carries 1..{MAX_URLS} URLs")
    urls = tuple(check_url(u) for u in urls)
    unsigned = AddrRecord(key, seq, urls, b"")
    return AddrRecord(key, seq, urls, sign_fn(unsigned.signed_bytes()))


def encode(r: AddrRecord) -> bytes:
    return bencode.encode({"key": r.key, "seq": r.seq, "urls": [u.encode() for u in r.urls], "sig": r.sig})


def decode(data: bytes) -> AddrRecord:
    """A record from the wire, strictly (``MessageError``); the signature is not checked here."""
    try:
        v = bencode.decode(data, _LIMITS)
    except BencodeError as exc:
        raise MessageError(f"address record: {exc}") from None
    if not isinstance(v, dict) or set(v) != {b"key", b"seq", b"urls", b"sig"}:
        raise MessageError("address record: want key, seq, urls and sig")
    key, seq, urls, sig = v[b"key"], v[b"seq"], v[b"urls"], v[b"sig"]
    if not (isinstance(key, bytes) and len(key) == 32 and isinstance(sig, bytes) and len(sig) == 64
            and isinstance(seq, int) and 0 <= seq < 2**63 and isinstance(urls, list)
            and 0 < len(urls) <= MAX_URLS and all(isinstance(u, bytes) for u in urls)):
        raise MessageError("address record: bad field")
    try:
        text = tuple(check_url(u.decode("ascii")) for u in urls if isinstance(u, bytes))
    except UnicodeDecodeError:
        raise MessageError("address URL is not ASCII") from None
    return AddrRecord(key, seq, text, sig)


class AddrBook:
    """Verified address records by node key (bounded)."""

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._by_key: OrderedDict[bytes, AddrRecord] = OrderedDict()
        self.bad = 0
        """Records refused (malformed or badly signed)."""

    def __len__(self) -> int:
        return len(self._by_key)

    def learn(self, data: bytes) -> AddrRecord | None:
        """Keep ``data`` if it decodes, verifies and is newer than what we hold; else None."""
        try:
            r = decode(data)
        except MessageError:
            self.bad += 1
            return None
        old = self._by_key.get(r.key)
        if old is not None and old.seq >= r.seq:
            return None
        if not r.verify():
            self.bad += 1
            return None
        self._by_key[r.key] = r
        self._by_key.move_to_end(r.key)
        while len(self._by_key) > self.max_entries:
            self._by_key.popitem(last=False)
        return r

    def get(self, key: bytes) -> AddrRecord | None:
        return self._by_key.get(key)


class DialBudget:
    def __init__(self, in_flight: int = 8, per_minute: int = 60) -> None:
        self.in_flight = in_flight
        self.per_minute = per_minute
        self._busy = 0
        self._tokens = float(per_minute)
        self._at: float | None = None

    def take(self, now: float) -> bool:
        """May a dial start now? (If so it counts until ``done``.)"""
        if self._at is not None:
            self._tokens = min(float(self.per_minute), self._tokens + (now - self._at) * self.per_minute / 60.0)
        self._at = now
        if self._busy >= self.in_flight or self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        self._busy += 1
        return True

    def done(self) -> None:
        self._busy = max(0, self._busy - 1)

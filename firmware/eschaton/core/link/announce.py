"""Signed service announcements: a node that serves its chain over Electrum (a village's
gateway, ``[chain] serve``) says so next to its beacons, so houses find the chain with no URL
written in their configuration (sans-IO).

An announcement is one UDP datagram on the discovery port: ``b"esa1" || ed25519 signature (64)
|| body``, the body a canonical bencode dict ``{id, seq, ts, chain}``, signed over
``b"eschaton-announce/1\\0" || body`` with the key of ``id``. ``chain`` is the Electrum URL, a
wildcard host (``tcp://0.0.0.0:50001``) meaning "the address you hear this from" (resolved by
the receiver as beacon URLs are: ``beacon.resolve_urls``).

It is a datagram of its own, not a beacon field: a node of an earlier version refuses a beacon
with a field it does not know, and would no longer see the gateway as a neighbour; a datagram
with another magic it counts as one refused beacon and ignores.

The signature says who announced; it does not make the TCP server at the address that node's
(the address comes from the unsigned datagram source, and Electrum has no authentication). A
house therefore follows only an announcer it trusts: one of ``[chain] gateways``, or the first
one it hears, which it then pins (trust on first use, ``eschaton.net.chainfind``).
"""
from __future__ import annotations

from dataclasses import dataclass

from eschaton.core.link.beacon import MAX_URL_LEN, resolve_urls
from eschaton.core.link.identity import BadNodeId, NodeId, NodeKeys
from eschaton.core.wire import bencode
from eschaton.core.wire.errors import EncodeError, WireError

MAGIC = b"esa1"
DOMAIN = b"eschaton-announce/1\x00"
MAX_ANNOUNCEMENT = 600
_LIMITS = bencode.Limits(max_size=MAX_ANNOUNCEMENT, max_depth=1, max_items=8)


class AnnouncementError(WireError):
    """A malformed or badly signed announcement."""


@dataclass(frozen=True, slots=True)
class ChainAnnouncement:
    node_id: NodeId
    seq: int
    ts_ms: int
    url: str
    """As announced (may have a wildcard host; see ``resolved``)."""

    def resolved(self, source: str) -> str | None:
        """The URL with a wildcard host replaced by ``source``'s address (None: cannot)."""
        urls = resolve_urls([self.url], source)
        return urls[0] if urls else None


def _valid_url(url: str) -> bool:
    raw = url.encode("utf-8", "replace")
    return (0 < len(raw) <= MAX_URL_LEN and url.startswith("tcp://")
            and all(0x21 <= c < 0x7F for c in raw))


def make_chain_announcement(keys: NodeKeys, *, url: str, ts_ms: int, seq: int) -> bytes:
    if not _valid_url(url):
        raise EncodeError(f"announcement: {url!r} is not a tcp:// URL of <= {MAX_URL_LEN} bytes")
    body = bencode.encode({"id": keys.node_id.raw, "seq": seq, "ts": ts_ms, "chain": url})
    return MAGIC + keys.sign(DOMAIN + body) + body


def is_announcement(datagram: bytes) -> bool:
    return datagram[:4] == MAGIC


def parse_chain_announcement(datagram: bytes) -> ChainAnnouncement:
    """Decode and verify an announcement (freshness is the receiver's to judge)."""
    if len(datagram) > MAX_ANNOUNCEMENT:
        raise AnnouncementError(f"announcement of {len(datagram)} bytes exceeds {MAX_ANNOUNCEMENT}")
    if len(datagram) < 4 + 64 + 2 or datagram[:4] != MAGIC:
        raise AnnouncementError("not an announcement (bad magic or too short)")
    sig, body = datagram[4:68], datagram[68:]
    try:
        fields = bencode.decode(body, _LIMITS)
    except WireError as exc:
        raise AnnouncementError(f"announcement body: {exc}") from None
    if not isinstance(fields, dict) or set(fields) != {b"id", b"seq", b"ts", b"chain"}:
        raise AnnouncementError("announcement body is not {id, seq, ts, chain}")
    raw_id, seq, ts, url = fields[b"id"], fields[b"seq"], fields[b"ts"], fields[b"chain"]
    if not isinstance(raw_id, bytes) or len(raw_id) != 32:
        raise AnnouncementError("announcement id is not 32 bytes")
    if not isinstance(seq, int) or not 0 <= seq < 1 << 64 or not isinstance(ts, int) \
            or not 0 <= ts < 1 << 64:
        raise AnnouncementError("announcement seq or ts is not a u64")
    if not isinstance(url, bytes) or not _valid_url(text := url.decode("utf-8", "replace")):
        raise AnnouncementError("announcement chain URL is malformed")
    try:
        node_id = NodeId(raw_id)
    except BadNodeId as exc:
        raise AnnouncementError(str(exc)) from None
    if not node_id.verify(DOMAIN + body, sig):
        raise AnnouncementError(f"bad announcement signature for node {node_id.short()}")
    return ChainAnnouncement(node_id, seq, ts, text)

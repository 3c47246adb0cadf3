"""Signed neighbour-discovery beacons: codec and validator (sans-IO).

Rules / theory of operation:
- A beacon is one UDP datagram: ``b"esb1" || ed25519 signature (64) || body``. The body is a
  canonical bencode dict ``{id, seq, ts, urls, name?}``; the signature covers
  ``b"eschaton-beacon/1\\0" || body`` with the key of ``id``, so nobody can announce URLs for a
  node id they do not hold.
- ``ts`` is the sender's wall clock in milliseconds and ``seq`` a per-run counter. From a node
  in the table, a beacon is accepted only if ``(ts, seq)`` is strictly greater than the last
  accepted pair (replays refused, restarts fine since the clock moved on). That needs no
  agreement between the two clocks, only that the sender's clock moves forward; a sender whose
  clock is set back is refused until it expires (``expiry`` seconds), then found afresh.
- A first beacon (a node not in the table) cannot be checked for freshness without trusting
  both wall clocks. A Raspberry Pi has no real-time clock, and a village mesh often has no NTP:
  two nodes booted with clocks hours apart would never find each other. So by default a first
  beacon is accepted whatever its ``ts``, and ``NeighbourFound.clock_offset`` tells how far the
  sender's clock is from ours (the node warns when it exceeds ``max_skew``). The worst a
  replayed old beacon can then do is announce a node at an old address for ``expiry`` seconds:
  the link handshake authenticates the node, so a dial there fails. ``strict_clock=True``
  (synchronised clocks) also refuses a first beacon more than ``max_age`` old or ``max_skew``
  in the future.
- Expiry counts on ``seen``, a monotonic clock, so a wall clock corrected by seconds or hours
  neither expires every neighbour at once nor keeps lost ones forever.
- A URL whose host is a wildcard (``tcp://0.0.0.0:9735``, ``tcp://[::]:9735``) means "the
  address you hear this beacon from": a node listening on every interface cannot know which of
  its addresses a neighbour can reach, and the receiver can, from the datagram's source. The
  table resolves such URLs against the source before it reports or stores them (a wildcard URL
  from an unknown source is dropped). The source is not signed, so it can be spoofed; the same
  argument as for replays holds: the link handshake authenticates the node, and a dial to a
  wrong address fails.
- ``NeighbourTable`` turns accepted beacons into events (found / changed / lost) and bounds its
  memory. Our own broadcasts come back to us and are ignored silently.
- Only ``BeaconError`` (a ``WireError``) leaves ``parse_beacon``/``NeighbourTable.receive``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from eschaton.core.link.identity import BadNodeId, NodeId, NodeKeys
from eschaton.core.wire import bencode
from eschaton.core.wire.errors import EncodeError, WireError

MAGIC = b"esb1"
DOMAIN = b"eschaton-beacon/1\x00"
MAX_BEACON = 1200
"""Largest beacon datagram (fits one unfragmented packet on any LAN or mesh)."""
MAX_URLS = 8
MAX_URL_LEN = 200
_URL_CHARS = frozenset(range(0x21, 0x7F))
_LIMITS = bencode.Limits(max_size=MAX_BEACON, max_depth=2, max_items=32)


class BeaconError(WireError):
    """A beacon that is malformed, badly signed, stale or replayed."""


@dataclass(frozen=True, slots=True)
class Beacon:
    """A verified beacon."""

    node_id: NodeId
    seq: int
    ts_ms: int
    urls: tuple[str, ...]
    name: str = ""


def _valid_url(url: str) -> bool:
    raw = url.encode("utf-8", "replace")
    return 0 < len(raw) <= MAX_URL_LEN and "://" in url and all(c in _URL_CHARS for c in raw)


def make_beacon(keys: NodeKeys, *, urls: Sequence[str], ts_ms: int, seq: int,
                name: str = "") -> bytes:
    """Sign and encode a beacon announcing ``urls`` for our node."""
    if len(urls) > MAX_URLS or not all(_valid_url(u) for u in urls):
        raise EncodeError(f"beacon: need at most {MAX_URLS} printable URLs of <= {MAX_URL_LEN} bytes")
    body_fields: dict[str, bencode.EValue] = {
        "id": keys.node_id.raw, "seq": seq, "ts": ts_ms, "urls": list(urls)}
    if name:
        body_fields["name"] = name[:64]
    body = bencode.encode(body_fields)
    out = MAGIC + keys.sign(DOMAIN + body) + body
    if len(out) > MAX_BEACON:
        raise EncodeError(f"beacon of {len(out)} bytes exceeds {MAX_BEACON}")
    return out


def parse_beacon(datagram: bytes) -> Beacon:
    """Decode and verify the signature of a beacon (freshness is checked by the table)."""
    if len(datagram) > MAX_BEACON:
        raise BeaconError(f"beacon of {len(datagram)} bytes exceeds {MAX_BEACON}")
    if len(datagram) < 4 + 64 + 2 or datagram[:4] != MAGIC:
        raise BeaconError("not a beacon (bad magic or too short)")
    sig, body = datagram[4:68], datagram[68:]
    fields = bencode.decode(body, _LIMITS)  # BencodeError is a WireError
    if not isinstance(fields, dict):
        raise BeaconError("beacon body is not a dict")
    unknown = set(fields) - {b"id", b"seq", b"ts", b"urls", b"name"}
    if unknown:
        raise BeaconError(f"beacon has unknown fields {sorted(unknown)!r}")
    raw_id, seq, ts, urls, name = (fields.get(k) for k in (b"id", b"seq", b"ts", b"urls", b"name"))
    if not isinstance(raw_id, bytes) or len(raw_id) != 32:
        raise BeaconError("beacon id is not 32 bytes")
    if not isinstance(seq, int) or not 0 <= seq < 1 << 64:
        raise BeaconError("beacon seq is not a u64")
    if not isinstance(ts, int) or not 0 <= ts < 1 << 64:
        raise BeaconError("beacon ts is not a u64")
    if not isinstance(urls, list) or len(urls) > MAX_URLS:
        raise BeaconError("beacon urls is not a short list")
    url_texts: list[str] = []
    for u in urls:
        if not isinstance(u, bytes):
            raise BeaconError("beacon url is not a string")
        text = u.decode("utf-8", "replace")
        if not _valid_url(text):
            raise BeaconError("beacon url is malformed")
        url_texts.append(text)
    if name is not None and (not isinstance(name, bytes) or len(name) > 64):
        raise BeaconError("beacon name is not short text")
    try:
        node_id = NodeId(raw_id)
    except BadNodeId as exc:
        raise BeaconError(str(exc)) from None
    if not node_id.verify(DOMAIN + body, sig):
        raise BeaconError(f"bad beacon signature for node {node_id.short()}")
    return Beacon(node_id, seq, ts, tuple(url_texts),
                  name.decode("utf-8", "replace") if isinstance(name, bytes) else "")


_WILDCARD_HOSTS = ("0.0.0.0", "[::]")


def resolve_urls(urls: Sequence[str], source: str) -> tuple[str, ...]:
    """``urls`` with wildcard hosts replaced by the host of ``source`` (``ip:port`` or
    ``[ip6]:port``, as the datagram arrived); wildcard URLs are dropped when the source is
    unknown. Other URLs are returned unchanged."""
    source_host = source.rsplit(":", 1)[0] if ":" in source else ""
    if source_host and ":" in source_host and not source_host.startswith("["):
        source_host = f"[{source_host}]"  # a bare IPv6 address
    out: list[str] = []
    for url in urls:
        scheme, sep, rest = url.partition("://")
        host, colon, port = rest.rpartition(":")
        if sep and colon and host in _WILDCARD_HOSTS:
            if not source_host:
                continue
            url = f"{scheme}://{source_host}:{port}"
        out.append(url)
    return tuple(out)


# ---- events ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class NeighbourFound:
    node_id: NodeId
    urls: tuple[str, ...]
    name: str
    source: str
    """Where the datagram came from (``ip:port``). The urls are what to dial (wildcard hosts in
    them already replaced by this address)."""
    clock_offset: float = 0.0
    """Seconds the sender's wall clock is ahead of ours (negative: behind), from its first beacon."""


@dataclass(frozen=True, slots=True)
class NeighbourChanged:
    node_id: NodeId
    urls: tuple[str, ...]
    name: str
    source: str


@dataclass(frozen=True, slots=True)
class NeighbourLost:
    node_id: NodeId


NeighbourEvent = NeighbourFound | NeighbourChanged | NeighbourLost


@dataclass(slots=True)
class _Entry:
    ts_ms: int
    seq: int
    urls: tuple[str, ...]
    name: str
    last_seen: float
    """Monotonic seconds when its last beacon was accepted."""


class NeighbourTable:
    """Validates beacons for replay (and, with ``strict_clock``, freshness) and tracks who is around."""

    def __init__(self, own: NodeId, *, max_age: float = 60.0, max_skew: float = 30.0,
                 expiry: float = 90.0, max_neighbours: int = 256, strict_clock: bool = False) -> None:
        self.own = own
        self.max_age = max_age
        """With ``strict_clock``: oldest acceptable first beacon, seconds before our clock."""
        self.max_skew = max_skew
        """With ``strict_clock``: furthest acceptable first beacon, seconds after our clock.
        Without: the clock offset above which the adapter warns."""
        self.strict_clock = strict_clock
        self.expiry = expiry
        """Seconds without a beacon after which a neighbour is lost."""
        self.max_neighbours = max_neighbours
        self._table: dict[NodeId, _Entry] = {}

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._table

    def neighbours(self) -> dict[NodeId, tuple[str, ...]]:
        return {k: v.urls for k, v in self._table.items()}

    def receive(self, datagram: bytes, now: float, source: str = "",
                seen: float | None = None) -> list[NeighbourEvent]:
        """Check one datagram; raises ``BeaconError`` if it must be refused. ``now`` is our wall
        clock, ``seen`` our monotonic clock (default ``now``), both in seconds."""
        beacon = parse_beacon(datagram)
        if beacon.node_id == self.own:
            return []
        seen = now if seen is None else seen
        now_ms = int(now * 1000)
        entry = self._table.get(beacon.node_id)
        if entry is not None:
            if (beacon.ts_ms, beacon.seq) <= (entry.ts_ms, entry.seq):
                raise BeaconError(f"replayed beacon from {beacon.node_id.short()}")
        elif self.strict_clock:
            if beacon.ts_ms < now_ms - int(self.max_age * 1000):
                raise BeaconError(f"stale beacon from {beacon.node_id.short()}")
            if beacon.ts_ms > now_ms + int(self.max_skew * 1000):
                raise BeaconError(f"beacon from {beacon.node_id.short()} is from the future")
        urls = resolve_urls(beacon.urls, source)
        if entry is None:
            if len(self._table) >= self.max_neighbours:
                oldest = min(self._table, key=lambda k: self._table[k].last_seen)
                del self._table[oldest]
            self._table[beacon.node_id] = _Entry(beacon.ts_ms, beacon.seq, urls, beacon.name, seen)
            return [NeighbourFound(beacon.node_id, urls, beacon.name, source,
                                   (beacon.ts_ms - now_ms) / 1000)]
        changed = (entry.urls, entry.name) != (urls, beacon.name)
        entry.ts_ms, entry.seq, entry.last_seen = beacon.ts_ms, beacon.seq, seen
        entry.urls, entry.name = urls, beacon.name
        if changed:
            return [NeighbourChanged(beacon.node_id, urls, beacon.name, source)]
        return []

    def touch(self, node_id: NodeId, seen: float) -> bool:
        """Keep a neighbour from expiring because it was heard by other means (a Bluetooth LE
        advertisement carrying its id prefix, unsigned: a spoofed one can only delay its loss,
        and a dial to a node that is gone fails). False when it is not in the table."""
        entry = self._table.get(node_id)
        if entry is None:
            return False
        entry.last_seen = max(entry.last_seen, seen)
        return True

    def next_deadline(self) -> float | None:
        if not self._table:
            return None
        return min(e.last_seen for e in self._table.values()) + self.expiry

    def expire(self, seen: float) -> list[NeighbourEvent]:
        """Neighbours silent for ``expiry`` seconds of the clock ``receive`` got as ``seen``."""
        gone = [k for k, e in self._table.items() if seen >= e.last_seen + self.expiry]
        for k in gone:
            del self._table[k]
        return [NeighbourLost(k) for k in gone]

"""Electrum protocol versions: negotiation and which methods each version has.

Rules / theory of operation (the protocol's ``server.version``):
- A client names one version or a ``[min, max]`` range. The server answers with the highest
  version both speak, ``min(client max, server max)``, snapped down to a version the protocol
  defines (1.5 was skipped); if that is below ``max(client min, server min)`` there is none in
  common and the server refuses and closes the connection.
- Only the first ``server.version`` counts. A session that never sent one speaks the lowest
  version the server has (1.4), as ElectrumX does, so old clients of this server keep working.
- What changes with the version (the only shape differences between 1.4 and 1.6):
  ``blockchain.block.headers`` answers one concatenated ``hex`` string up to 1.4.2 and a
  ``headers`` list from 1.6; ``blockchain.scripthash.unsubscribe`` exists from 1.4.2;
  ``blockchain.relayfee`` is gone in 1.6, replaced by ``mempool.get_info``;
  ``blockchain.transaction.broadcast_package`` is new in 1.6.
- 1.7 is not offered: no published specification defines it. The draft's
  ``blockchain.outpoint.subscribe`` is served in every version as an extension (see server.py).
"""
from __future__ import annotations

from typing import Any

Version = tuple[int, ...]

# Every version the protocol defines that this server speaks, lowest first.
KNOWN: tuple[Version, ...] = ((1, 4), (1, 4, 1), (1, 4, 2), (1, 6))
MIN: Version = KNOWN[0]
MAX: Version = KNOWN[-1]

V1_4_2: Version = (1, 4, 2)
V1_6: Version = (1, 6)

# method -> (first version that has it, first version that no longer has it or None)
_SPAN: dict[str, tuple[Version, Version | None]] = {
    "blockchain.scripthash.unsubscribe": (V1_4_2, None),
    "blockchain.relayfee": (MIN, V1_6),
    "mempool.get_info": (V1_6, None),
    "blockchain.transaction.broadcast_package": (V1_6, None),
}


class VersionRefused(ValueError):
    """No version in common, or an unreadable version argument."""


def parse(s: Any) -> Version:
    if not isinstance(s, str):
        raise VersionRefused(f"protocol version must be a string, got {s!r}")
    try:
        v = tuple(int(p) for p in s.split("."))
    except ValueError:
        raise VersionRefused(f"bad protocol version {s!r}") from None
    if len(v) < 2 or any(p < 0 for p in v):
        raise VersionRefused(f"bad protocol version {s!r}")
    while len(v) > 2 and v[-1] == 0:  # "1.4.0" is "1.4"
        v = v[:-1]
    return v


def text(v: Version) -> str:
    return ".".join(str(p) for p in v)


def negotiate(requested: Any) -> Version:
    """The version to speak for a client's ``protocol_version`` argument (None: the default,
    "1.4"), or ``VersionRefused``."""
    lo: Version
    hi: Version
    if requested is None:
        lo = hi = (1, 4)
    elif isinstance(requested, list | tuple):
        if len(requested) != 2:
            raise VersionRefused(f"protocol version range must be [min, max], got {requested!r}")
        lo, hi = parse(requested[0]), parse(requested[1])
    else:
        lo = hi = parse(requested)
    floor = max(lo, MIN)
    best = [v for v in KNOWN if v <= min(hi, MAX)]
    if not best or best[-1] < floor:
        raise VersionRefused(f"unsupported protocol version {_show(requested)}: "
                             f"this server speaks {text(MIN)} to {text(MAX)}")
    return best[-1]


def has_method(method: str, v: Version) -> bool:
    span = _SPAN.get(method)
    if span is None:
        return True
    since, until = span
    return v >= since and (until is None or v < until)


def _show(requested: Any) -> str:
    if isinstance(requested, list | tuple):
        return "[" + ", ".join(str(r) for r in requested) + "]"
    return str(requested)

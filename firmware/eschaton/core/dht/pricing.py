"""Prices of DHT queries: terms, quotes, the asker's ceiling, and a forwarder's own cost.

Rules / theory of operation:
- A holder's ``Terms`` price an answer per query (``base``), per result and per started KiB of
  the answer; ``quote(results, size)`` is what a given answer costs. The holder quotes after it
  has evaluated the query and before it sends the answer; the asker pays the quote (through the
  payments facade) and only then gets the records: an unpaid query is refused.
- The asker states a ceiling (``--max-price``): a quote above it is refused *before* anything is
  paid (``TooExpensive``, a local decision, not the peer's fault).
- A node that has no result and forwards the query to a channel neighbour quotes the
  neighbour's price plus its own ``base`` (its cost of forwarding), so each hop pays the next
  and charges the previous, and the asker sees one price per hop and pays only its neighbour.
- All amounts are integer satoshis; sums are checked against 2**63 - 1 (the store's integers).
"""
from __future__ import annotations

from dataclasses import dataclass

from eschaton.core.dht.errors import DhtLocalError, Refused

MAX_SAT = 2**63 - 1


class TooExpensive(DhtLocalError):
    """A quote exceeds the asker's ceiling; nothing was paid."""


@dataclass(frozen=True, slots=True)
class Terms:
    """What a node charges for answering queries."""

    base: int = 1
    """Satoshis per query answered (or forwarded)."""
    per_result: int = 1
    """Satoshis per record returned."""
    per_kib: int = 1
    """Satoshis per started KiB of the answer."""

    def __post_init__(self) -> None:
        if min(self.base, self.per_result, self.per_kib) < 0:
            raise DhtLocalError("prices must not be negative")

    def quote(self, results: int, size: int) -> int:
        total = self.base + self.per_result * results + self.per_kib * -(-size // 1024)
        if total > MAX_SAT:
            raise Refused("quote exceeds 2**63 - 1 satoshis")
        return total

    def forward(self, neighbour_quote: int) -> int:
        """Our quote for an answer a neighbour quoted ``neighbour_quote`` for."""
        if not 0 <= neighbour_quote <= MAX_SAT - self.base:
            raise Refused("forwarded quote out of range")
        return neighbour_quote + self.base


def accept(quote: int, max_price: int) -> int:
    """``quote`` if it is within the asker's ceiling, else ``TooExpensive``."""
    if quote > max_price:
        raise TooExpensive(f"price {quote} sat exceeds --max-price {max_price} sat")
    return quote

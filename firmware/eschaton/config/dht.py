"""``[dht]``: the DHT service, its prices, bounds and forwarding (docs/dht.md)."""
from __future__ import annotations

from dataclasses import dataclass

from eschaton.config import defaults as D
from eschaton.config.section import Section


@dataclass(frozen=True, slots=True)
class DhtConfig:
    enabled: bool = True
    """Run the DHT service (announce its feature bit, hold records, answer queries)."""
    k: int = D.DHT_K
    """Bucket size and replication factor."""
    alpha: int = D.DHT_ALPHA
    """Queries in flight per lookup."""
    rate: float = D.DHT_RATE
    """Requests per second one peer may make, sustained."""
    burst: float = D.DHT_BURST
    """Requests one peer may make in a burst."""
    price_base_sat: int = D.DHT_PRICE_BASE_SAT
    """Satoshis per query answered, and a forwarder's own margin on a neighbour's quote."""
    price_per_result_sat: int = D.DHT_PRICE_PER_RESULT_SAT
    """Satoshis per record in an answer."""
    price_per_kib_sat: int = D.DHT_PRICE_PER_KIB_SAT
    """Satoshis per started KiB of an answer."""
    max_price_sat: int = D.DHT_MAX_PRICE_SAT
    """The most this node pays for one query of its own when the caller names no --max-price."""
    per_publisher_records: int = D.DHT_PER_PUBLISHER_RECORDS
    """Most records one publisher may keep here."""
    per_publisher_kib: int = D.DHT_PER_PUBLISHER_KIB
    """Most KiB of records one publisher may keep here."""
    total_kib: int = D.DHT_TOTAL_KIB
    """Most KiB of records this node keeps in all."""
    forward: bool = True
    """Forward a query with no result here to the channel neighbours (pricing in our margin)."""
    forward_hops: int = D.DHT_FORWARD_HOPS
    """How many hops beyond this node a query of ours may be forwarded."""
    dials_per_minute: int = D.DHT_DIALS_PER_MINUTE
    """Links this node may dial per minute to reach DHT contacts at their signed addresses (0:
    reach only the peers it is linked to)."""
    dials_in_flight: int = D.DHT_DIALS_IN_FLIGHT
    """Such dials at once."""


def parse_dht(root: Section) -> DhtConfig:
    s = root.sub("dht")
    enabled = s.get_bool("enabled", True)
    k = s.get_int("k", D.DHT_K, 1, 64)
    alpha = s.get_int("alpha", min(D.DHT_ALPHA, k), 1, 16)  # a small k lowers the default
    if alpha > k:
        raise s.err("alpha", f"must not exceed k ({k})")
    rate = s.get_float("rate", D.DHT_RATE, 0.1, 100_000.0)
    burst = s.get_float("burst", D.DHT_BURST, 1.0, 1_000_000.0)
    base = s.get_int("price_base_sat", D.DHT_PRICE_BASE_SAT, 0, 1_000_000)
    per_result = s.get_int("price_per_result_sat", D.DHT_PRICE_PER_RESULT_SAT, 0, 1_000_000)
    per_kib = s.get_int("price_per_kib_sat", D.DHT_PRICE_PER_KIB_SAT, 0, 1_000_000)
    max_price = s.get_int("max_price_sat", D.DHT_MAX_PRICE_SAT, 0, 100_000_000)
    pub_records = s.get_int("per_publisher_records", D.DHT_PER_PUBLISHER_RECORDS, 1, 1_000_000)
    pub_kib = s.get_int("per_publisher_kib", D.DHT_PER_PUBLISHER_KIB, 16, 1_048_576)
    total_kib = s.get_int("total_kib", D.DHT_TOTAL_KIB, 16, 16_777_216)
    if total_kib < pub_kib:
        raise s.err("total_kib", f"must be at least per_publisher_kib ({pub_kib})")
    forward = s.get_bool("forward", True)
    hops = s.get_int("forward_hops", D.DHT_FORWARD_HOPS, 0, 8)
    dials = s.get_int("dials_per_minute", D.DHT_DIALS_PER_MINUTE, 0, 10_000)
    in_flight = s.get_int("dials_in_flight", D.DHT_DIALS_IN_FLIGHT, 1, 256)
    s.done()
    return DhtConfig(enabled, k, alpha, rate, burst, base, per_result, per_kib, max_price,
                     pub_records, pub_kib, total_kib, forward, hops, dials, in_flight)

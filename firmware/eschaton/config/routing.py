"""``[routing]``: this node's fee policy for forwarding multi-hop payments (docs/multihop.md)."""
from __future__ import annotations

from dataclasses import dataclass

from eschaton.config import defaults as D
from eschaton.config.section import Section


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    fee_base_sat: int = D.ROUTING_FEE_BASE_SAT
    """Satoshis charged per forwarded payment."""
    fee_ppm: int = D.ROUTING_FEE_PPM
    """Millionths of the forwarded amount."""
    fee_hold_ppm: int = D.ROUTING_FEE_HOLD_PPM
    """Millionths of the amount per thousand blocks the outgoing escrow may stay open (the price
    of the time the channel is reserved)."""
    delta: int = D.ROUTING_DELTA
    """Blocks between the timeouts of the escrow received and the one offered: at least
    ``ROUTING_MIN_DELTA``, what the node's margins need to claim on chain in time."""


def parse_routing(root: Section) -> RoutingConfig:
    s = root.sub("routing")
    base = s.get_int("fee_base_sat", D.ROUTING_FEE_BASE_SAT, 0, 1_000_000)
    ppm = s.get_int("fee_ppm", D.ROUTING_FEE_PPM, 0, 1_000_000)
    hold = s.get_int("fee_hold_ppm", D.ROUTING_FEE_HOLD_PPM, 0, 1_000_000)
    delta = s.get_int("delta", D.ROUTING_DELTA, D.ROUTING_MIN_DELTA, 2016)
    s.done()
    return RoutingConfig(base, ppm, hold, delta)

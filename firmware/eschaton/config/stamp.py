"""``[stamp]``: the timestamping service (docs/timestamping.md)."""
from __future__ import annotations

from dataclasses import dataclass

from eschaton.config import defaults as D
from eschaton.config.section import Section


@dataclass(frozen=True, slots=True)
class StampConfig:
    round_s: float = D.STAMP_ROUND_S
    """Seconds a round collects digests after its first one before it is committed."""
    max_digests: int = D.STAMP_MAX_DIGESTS
    """A round closes early once it holds this many digests."""
    fee_target_blocks: int = D.STAMP_FEE_TARGET_BLOCKS
    """Fee policy of the commitment transaction: the chain's fee estimate for this target."""
    confirmations: int = D.STAMP_CONFIRMATIONS
    """Depth at which a round counts as complete (proofs are written from the first block)."""
    upstream: str = ""
    """Node id (64 hex digits) of a peer to send round roots to instead of committing them."""
    price_sat: int = D.STAMP_PRICE_SAT
    """Price per digest a peer pays (through a payment request this node signs; 0: free)."""
    max_price_sat: int = D.STAMP_MAX_PRICE_SAT
    """The most this node pays an upstream peer per digest (its rounds' roots with ``upstream``,
    and ``stamp --upstream`` without ``--max-price``)."""


def parse_stamp(root: Section) -> StampConfig:
    s = root.sub("stamp")
    round_s = s.get_float("round_s", D.STAMP_ROUND_S, 0.01, 86_400.0)
    max_digests = s.get_int("max_digests", D.STAMP_MAX_DIGESTS, 1, 10_000_000)
    target = s.get_int("fee_target_blocks", D.STAMP_FEE_TARGET_BLOCKS, 1, 1008)
    confs = s.get_int("confirmations", D.STAMP_CONFIRMATIONS, 1, 100)
    upstream = s.get_str("upstream", "")
    if upstream and (len(upstream) != 64 or any(c not in "0123456789abcdef" for c in upstream)):
        raise s.err("upstream", "must be a node id (64 lowercase hex digits)")
    price = s.get_int("price_sat", D.STAMP_PRICE_SAT, 0, 1_000_000)
    max_price = s.get_int("max_price_sat", D.STAMP_MAX_PRICE_SAT, 0, 1_000_000)
    s.done()
    return StampConfig(round_s, max_digests, target, confs, upstream, price, max_price)

"""A forwarding node's fee and timeout policy, and the on-chain margins its timeout delta must cover.

Rules / theory of operation:
- The fee a hop charges for forwarding ``amount`` is
  ``base + amount x ppm / 10^6 + amount x hold_ppm x blocks / 10^9``, rounded up, where
  ``blocks`` is how long the hop's outgoing liquidity may stay reserved: the outgoing escrow's
  timeout minus the current height. The last term is the design's "how long a trade channel
  will need to be reserved" (``hold_ppm`` is in millionths per thousand blocks).
- The payer computes it at its own height; a hop whose view of the chain lags a little would
  ask more. A hop therefore charges ``blocks - HEIGHT_GRACE`` (never below 0), so a payer up to
  ``HEIGHT_GRACE`` blocks ahead is never refused for it.
- The timeout delta a hop announces must cover, after its downstream escrow times out
  (``T_out``): seeing a downstream claim that confirmed at the last moment (``confirm`` blocks
  of depth), getting its own upstream version and claim confirmed (``2 x confirm``) and a
  ``safety`` margin for a busy chain. ``Margins.min_delta`` is that sum; a policy with a smaller
  delta is refused when the config is read. (``docs/multihop.md`` has the arithmetic.)
"""
from __future__ import annotations

from dataclasses import dataclass

HEIGHT_GRACE = 3
MAX_FEE_BASE = 1_000_000
MAX_PPM = 1_000_000


@dataclass(frozen=True, slots=True)
class Margins:
    confirm: int = 6
    """Blocks within which a transaction we broadcast confirms, or a confirmed one is final to us."""
    safety: int = 6
    """Extra blocks for a chain that is slow or busy."""

    def min_delta(self) -> int:
        """The least timeout delta that keeps a hop whole on chain (see the rules)."""
        return 3 * self.confirm + self.safety

    def upstream_room(self) -> int:
        """Blocks an upstream escrow must have past its version's nLockTime: confirm the version,
        confirm the claim, and the safety margin."""
        return 2 * self.confirm + self.safety


@dataclass(frozen=True, slots=True)
class FeePolicy:
    base: int = 1
    """Satoshis per forwarded payment."""
    ppm: int = 1000
    """Millionths of the forwarded amount."""
    hold_ppm: int = 10
    """Millionths of the amount per thousand blocks the outgoing escrow may stay open."""
    delta: int = 24
    """Blocks between the incoming and the outgoing escrow's timeouts."""

    def check(self, margins: Margins) -> None:
        """Raises ``ValueError`` with one line if the policy is unsafe or out of range."""
        if not 0 <= self.base <= MAX_FEE_BASE or not 0 <= self.ppm <= MAX_PPM or not 0 <= self.hold_ppm <= MAX_PPM:
            raise ValueError(f"fee policy out of range (base <= {MAX_FEE_BASE}, ppm <= {MAX_PPM})")
        if self.delta < margins.min_delta():
            raise ValueError(f"timeout delta {self.delta} below the on-chain minimum {margins.min_delta()} "
                             f"(3 x confirm {margins.confirm} + safety {margins.safety})")
        if self.delta > 2016:
            raise ValueError(f"timeout delta {self.delta} above 2016 blocks")

    def fee(self, amount: int, blocks: int) -> int:
        """The fee for forwarding ``amount`` with the outgoing escrow open up to ``blocks``."""
        blocks = max(0, blocks)
        num = self.ppm * amount * 1000 + self.hold_ppm * amount * blocks
        return self.base + -(-num // 1_000_000_000)

    def fee_at(self, amount: int, out_timeout: int, height: int) -> int:
        """What the hop asks at ``height`` (with the grace for a payer ahead of it)."""
        return self.fee(amount, out_timeout - height - HEIGHT_GRACE)

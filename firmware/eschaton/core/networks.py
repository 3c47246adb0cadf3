"""Per-network constants: address prefixes, dust, block interval, and the channel parameters a
node proposes and accepts there, in real block time (docs/chain.md, "Networks").

Regtest keeps the numbers the node has always used (blocks are mined on demand, so a block is
no unit of time there). On the public networks a block is about ten minutes and the numbers
follow from what each parameter protects:

- ``locktime_step`` is the window in which a party must get its newest version confirmed once
  the counterparty broadcasts an older one: it must cover the longest time a node may be offline
  (its uplink down, a power cut) plus the confirmation itself. Mainnet: 144 blocks, a day.
  Signet: 36 blocks, six hours (play money, quicker tests). Testnet: 72 blocks, because testnet's
  minimum-difficulty rule lets block storms eat a window in minutes.
- ``lifetime`` is how long the capital may be locked if the peer vanishes; the direction-switch
  budget is ``(lifetime - safety_margin) // locktime_step``. Mainnet: 13 weeks and 90 switches
  (a re-anchor renews the budget cooperatively); signet: 4 weeks; testnet: 8 weeks
  (its larger step); each about 110 switches.
- ``min_depth``: confirmations of the funding before the channel opens, so a reorg cannot
  undo it: 1 on a private chain, 3 on the test networks, 6 on mainnet.
- Fees come from the backend's estimate for confirmation within one step window, never below
  the relay minimum computed from the largest version's vsize (``params.min_fee_step``).
"""
from __future__ import annotations

from dataclasses import dataclass

from eschaton.core.channel.params import (
    DEFAULT_MAX_CONTRACTS,
    DUST_LIMIT,
    ChannelParams,
    Policy,
    min_fee_step,
    version_vsize_bound,
)

NETWORKS = ("regtest", "signet", "testnet", "mainnet")


@dataclass(frozen=True, slots=True)
class Network:
    name: str
    """``regtest``, ``signet``, ``testnet`` or ``mainnet`` (the config's spelling)."""
    embit: str
    """embit's name of the network (its address and key version tables)."""
    hrp: str
    """Bech32 human-readable part of segwit addresses."""
    p2pkh: int
    """Base58 version byte of P2PKH addresses."""
    p2sh: int
    """Base58 version byte of P2SH addresses."""
    dust_limit: int
    """Outputs below this many satoshis are non-standard (P2PKH at the 3 sat/vB dust relay fee)."""
    block_interval_s: int
    """Target seconds between blocks."""
    lifetime: int
    """Default channel lifetime, blocks."""
    locktime_step: int
    """Default nLockTime step per direction switch, blocks."""
    min_depth: int
    """Confirmations of a funding transaction before its channel opens."""
    safety_margin: int
    """Blocks a new epoch's nLockTime stays above the tip."""
    fee_from_estimate: bool
    """Fees from the backend's estimate (False: regtest's fixed fees)."""
    min_lifetime: int
    """Acceptor policy: shortest lifetime accepted, blocks."""
    min_locktime_step: int
    """Acceptor policy: shortest step accepted, blocks (the peer's offline window)."""
    min_escrow_delta: int
    """Acceptor policy: shortest escrow delta accepted, blocks."""

    def hours(self, blocks: int) -> float:
        return blocks * self.block_interval_s / 3600

    def policy(self) -> Policy:
        """What a node on this network accepts from an opener."""
        return Policy(min_lifetime_blocks=self.min_lifetime, max_acceptor_contribution=0,
                      min_locktime_step=self.min_locktime_step, min_escrow_delta=self.min_escrow_delta,
                      min_depth=self.min_depth)


_TABLE = {
    "regtest": Network("regtest", "regtest", "bcrt", 0x6F, 0xC4, DUST_LIMIT, 600,
                       lifetime=1008, locktime_step=6, min_depth=1, safety_margin=3,
                       fee_from_estimate=False, min_lifetime=20, min_locktime_step=1, min_escrow_delta=2),
    "signet": Network("signet", "signet", "tb", 0x6F, 0xC4, DUST_LIMIT, 600,
                      lifetime=4032, locktime_step=36, min_depth=3, safety_margin=6,
                      fee_from_estimate=True, min_lifetime=144, min_locktime_step=6, min_escrow_delta=6),
    "testnet": Network("testnet", "test", "tb", 0x6F, 0xC4, DUST_LIMIT, 600,
                       lifetime=8064, locktime_step=72, min_depth=3, safety_margin=6,
                       fee_from_estimate=True, min_lifetime=144, min_locktime_step=6, min_escrow_delta=6),
    "mainnet": Network("mainnet", "main", "bc", 0x00, 0x05, DUST_LIMIT, 600,
                       lifetime=13_104, locktime_step=144, min_depth=6, safety_margin=6,
                       fee_from_estimate=True, min_lifetime=1008, min_locktime_step=36, min_escrow_delta=36),
}


def network(name: str) -> Network:
    """The table's row for ``name`` (the config's spelling, or embit's: ``main``, ``test``)."""
    for n in _TABLE.values():
        if name in (n.name, n.embit):
            return n
    raise ValueError(f"unknown network {name!r} (one of {', '.join(NETWORKS)})")


MAX_ESTIMATE_TARGET = 1008  # bitcoind's estimatesmartfee answers targets up to 1008 blocks
FEE_STEP_DIVISOR = 10  # each switch adds a tenth of the initial fee (see channel_fees)


@dataclass(frozen=True, slots=True)
class ChannelFees:
    initial_fee: int
    fee_step: int


def estimate_target(net: Network, locktime_step: int) -> int:
    """The confirmation target to ask the backend for: the newest version must confirm within
    one step window once an older one is broadcast."""
    return max(1, min(MAX_ESTIMATE_TARGET, locktime_step))


def channel_fees(net: Network, sat_per_kvb: int | None, funding_fee: int,
                 max_contracts: int = DEFAULT_MAX_CONTRACTS, policy: Policy | None = None) -> ChannelFees:
    """Initial refund fee and fee step for a new channel.

    Regtest keeps its fixed numbers (at least 2,000 sat or the funding's own fee; the relay
    minimum step). Elsewhere the initial fee is the estimated rate (``sat_per_kvb``; None or
    non-positive: no estimate) over the largest version, so even a version full of contracts
    confirms at the rate the market asked for when the channel opened; each switch adds a tenth
    of it, so after ten switches the newest version pays twice that rate, room for a fee market
    that rises over the channel's weeks. Neither is ever below the relay minimum (1 sat/vB over
    the largest version, ``min_fee_step``), nor above what a peer's ``policy`` (default: the
    default Policy) accepts. ``funding_fee`` only counts on regtest, as it always has."""
    floor = min_fee_step(max_contracts)
    if not net.fee_from_estimate:
        return ChannelFees(max(2_000, funding_fee), floor)
    limits = policy or Policy()
    rate = sat_per_kvb if sat_per_kvb is not None and sat_per_kvb > 0 else 0
    at_rate = -(-rate * version_vsize_bound(2 + max_contracts) // 1000)
    initial = min(limits.max_initial_fee, max(floor, at_rate))
    step = min(limits.max_fee_step, max(floor, -(-initial // FEE_STEP_DIVISOR)))
    return ChannelFees(initial, step)


BUDGET_WARNING = (3, 16)  # switches left at which new channels warn (and re-anchor), see budget_warning


def budget_warning(lifetime: int, step: int, margin: int) -> int:
    """Switches left at which a new channel warns, and its opener's node re-anchors: about a
    tenth of the budget. Early enough that the switches made while the re-anchor is signed
    (the peer's payments in flight, a turn round trip) never exhaust it; a long channel gets
    more headroom, a short one at least the historical three."""
    lo, hi = BUDGET_WARNING
    return max(lo, min(hi, max(0, lifetime - margin) // max(1, step) // 10))


def open_params(net: Network, capacity: int, height: int, fees: ChannelFees, lifetime: int = 0,
                step: int = 0) -> ChannelParams:
    """The parameters a node on ``net`` proposes for a single-funded channel of ``capacity``
    opened at ``height``; ``lifetime`` and ``step`` in blocks, 0: the network's defaults."""
    lifetime = lifetime or net.lifetime
    step = step or net.locktime_step
    return ChannelParams(opener_contribution=capacity, acceptor_contribution=0, lifetime=height + lifetime,
                         locktime_step=step, fee_step=fees.fee_step, initial_fee=fees.initial_fee,
                         max_payment=capacity, reserve=0, escrow_delta=max(2, step),
                         safety_margin=net.safety_margin, min_depth=net.min_depth,
                         low_switch_warning=budget_warning(lifetime, step, net.safety_margin))

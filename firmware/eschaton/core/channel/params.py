"""Channel parameters and their negotiation.

The opener proposes a ``ChannelParams``; the acceptor checks it against its ``Policy`` and either
accepts it unchanged or refuses with ``ParamsRejected`` naming the field. There is no haggling
round: a refused opener may propose again with other numbers.

Rules / why each parameter exists:
- ``lifetime`` is the initial refund's nLockTime (a block height). Every direction switch moves
  nLockTime ``locktime_step`` blocks earlier, so ``(lifetime - height - safety_margin) //
  locktime_step`` bounds the switches left. ``locktime_step`` is also the window in which the
  holder of a newer version must get it confirmed before the previous one becomes valid.
- ``fee_step`` is added to the refund fee at each direction switch (paid by the party whose
  signature opens the new epoch) so that miners prefer the newer version and a mempool lets it
  replace an older one: ``min_fee_step(max_contracts)`` is the smallest safe value. It is a
  reserve, not a cost: only a version that reaches the chain pays it (``Version.fee_paid``).
- ``reserve`` (the design's risk deposit): a party may not pay, escrow or stake itself below it.
- ``max_payment`` bounds a single payment, escrow or stake.
- ``max_contracts`` bounds the hash-locked outputs (escrows + bet stakes) in one version, keeping
  the refund transaction small and standard.
- ``escrow_delta`` is how many blocks after a version's nLockTime a hash-locked output can be
  reclaimed by its payer; the payee must claim with the preimage before then.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

from eschaton.core.channel.errors import ParamsRejected

DUST_LIMIT = 546  # outputs below this are non-standard; the refund builder folds them into the fee
MAX_LOCKTIME_HEIGHT = 499_999_999
DEFAULT_MAX_CONTRACTS = 8
INCREMENTAL_RELAY_FEE = 1  # sat/vB: bitcoind's default -incrementalrelayfee, and the embedded mempool's

# Upper bounds of a version's serialised parts (docs/channels.md, "Fee step"), in bytes.
_VERSION_BASE = 4 + 1 + 36 + 1 + 4 + 1 + 4  # version, input count, outpoint, empty scriptSig, nSequence, output count, nLockTime
_OUTPUT_MAX = 8 + 1 + 34  # value, script length, the largest standard script (P2WSH, P2TR)
# Witness, in weight units: marker and flag, item count, the empty CHECKMULTISIG dummy, two
# low-S DER signatures with their sighash byte (at most 72 bytes each), the 2-of-2 script (71).
_VERSION_WITNESS = 2 + 1 + 1 + 2 * (1 + 72) + 1 + 71


def version_vsize_bound(outputs: int) -> int:
    """The largest vsize a version with ``outputs`` outputs (at most 252) can have."""
    weight = 4 * (_VERSION_BASE + outputs * _OUTPUT_MAX) + _VERSION_WITNESS
    return -(-weight // 4)


def min_fee_step(max_contracts: int) -> int:
    """The smallest ``fee_step`` with which any newer version replaces any older one in a
    mempool (BIP125 rule 4 as bitcoind applies it: the replacement pays at least the replaced
    fee plus ``incrementalrelayfee`` times its own vsize); the largest version has both balance
    outputs and ``max_contracts`` hash-locked outputs."""
    return INCREMENTAL_RELAY_FEE * version_vsize_bound(2 + max_contracts)


@dataclass(frozen=True, slots=True)
class ChannelParams:
    opener_contribution: int
    """Satoshis the opener puts into the 2-of-2."""
    acceptor_contribution: int
    """Satoshis the acceptor puts into the 2-of-2 (0 for a single-funded channel)."""
    lifetime: int
    """nLockTime (block height) of the initial refund: the channel's maximum life."""
    locktime_step: int
    """Blocks nLockTime moves earlier at each direction switch."""
    fee_step: int
    """Satoshis the refund fee rises at each direction switch."""
    initial_fee: int
    """Fee of the initial refund, paid by the opener."""
    max_payment: int
    """Largest single payment, escrow or stake."""
    reserve: int
    """Balance floor a party cannot pay itself below (risk deposit)."""
    max_contracts: int = DEFAULT_MAX_CONTRACTS
    """Most escrows + bet stake outputs open at once."""
    escrow_delta: int = 36
    """Blocks after a version's nLockTime before a hash-locked output's payer can reclaim it."""
    safety_margin: int = 6
    """A new epoch's nLockTime must stay at least this far above the current height."""
    min_depth: int = 1
    """Confirmations of the funding transaction before the channel opens."""
    low_switch_warning: int = 3
    """Offer a re-anchor (cooperative close and reopen) when this few switches are left."""

    @property
    def capacity(self) -> int:
        return self.opener_contribution + self.acceptor_contribution

    def to_fields(self) -> dict[str, int]:
        return {n: int(getattr(self, n)) for n in _PARAM_NAMES}

    @classmethod
    def from_fields(cls, d: dict[str, object]) -> ChannelParams:
        vals: dict[str, int] = {}
        for f in fields(cls):
            v = d.get(f.name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise ParamsRejected(f"parameter {f.name} missing or not an integer")
            vals[f.name] = v
        return cls(**vals)

    def check_sane(self, height: int) -> None:
        """Checks every party must apply, whatever its policy."""
        for f in fields(self):
            if getattr(self, f.name) < 0:
                raise ParamsRejected(f"{f.name} is negative")
        if self.capacity <= 0:
            raise ParamsRejected("capacity must be positive")
        if self.opener_contribution < self.initial_fee + DUST_LIMIT:
            raise ParamsRejected("opener contribution must cover the initial fee plus dust")
        if self.locktime_step < 1:
            raise ParamsRejected("locktime_step must be at least one block")
        if self.fee_step < 1:
            raise ParamsRejected("fee_step must be at least one satoshi")
        if not height + self.safety_margin + self.locktime_step <= self.lifetime <= MAX_LOCKTIME_HEIGHT:
            raise ParamsRejected("lifetime must be a block height beyond one step from now")
        if self.max_payment < 1:
            raise ParamsRejected("max_payment must be positive")
        if self.escrow_delta < 1:
            raise ParamsRejected("escrow_delta must be at least one block")
        if self.min_depth < 1:
            raise ParamsRejected("min_depth must be at least one")
        if self.max_contracts > 32:
            raise ParamsRejected("max_contracts above 32 would make refunds non-standard")

    def switches_left(self, locktime: int, height: int) -> int:
        """Direction switches still possible from a version at ``locktime`` when the tip is ``height``."""
        # A switch to locktime - k*step is allowed while it stays >= height + safety_margin.
        return max(0, (locktime - height - self.safety_margin) // self.locktime_step)


@dataclass(frozen=True, slots=True)
class Policy:
    """What an acceptor is willing to agree to. Defaults are conservative for a small node."""

    min_lifetime_blocks: int = 144
    max_lifetime_blocks: int = 52_560  # about a year
    min_locktime_step: int = 6
    max_fee_step: int = 5_000
    max_initial_fee: int = 50_000
    min_reserve: int = 0
    max_capacity: int = 10 * 100_000_000
    max_acceptor_contribution: int = 0
    max_contracts: int = 16
    min_escrow_delta: int = 12
    min_depth: int = 1
    """Fewest funding confirmations accepted: on a public network a reorg may undo fewer."""

    def check(self, p: ChannelParams, height: int) -> None:
        p.check_sane(height)
        if not self.min_lifetime_blocks <= p.lifetime - height <= self.max_lifetime_blocks:
            raise ParamsRejected("lifetime outside policy")
        if p.locktime_step < self.min_locktime_step:
            raise ParamsRejected("locktime_step below policy")
        if p.fee_step > self.max_fee_step:
            raise ParamsRejected("fee_step above policy")
        if p.initial_fee > self.max_initial_fee:
            raise ParamsRejected("initial_fee above policy")
        if p.reserve < self.min_reserve:
            raise ParamsRejected("reserve below policy")
        if p.capacity > self.max_capacity:
            raise ParamsRejected("capacity above policy")
        if p.acceptor_contribution > self.max_acceptor_contribution:
            raise ParamsRejected("acceptor_contribution above policy")
        if p.max_contracts > self.max_contracts:
            raise ParamsRejected("max_contracts above policy")
        if p.escrow_delta < self.min_escrow_delta:
            raise ParamsRejected("escrow_delta below policy")
        if p.min_depth < self.min_depth:
            raise ParamsRejected("min_depth below policy")


_PARAM_NAMES = tuple(f.name for f in fields(ChannelParams))  # once: fields() is slow per call

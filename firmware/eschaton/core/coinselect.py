"""Coin selection and fee arithmetic for P2WPKH wallets (pure).

Rules:
- Confirmed coins are preferred to unconfirmed ones, then larger to smaller (largest-first keeps
  the number of inputs, and so the fee, small on a node that mostly receives small payments).
- The fee is ``ceil(vsize * feerate / 1000)`` with feerate in sat/kvB, never below the 1 sat/vB
  relay floor.
- Change below the dust limit is not created; it goes to the fee instead.
- Immature coinbase outputs are never selected (consensus would refuse the spend).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from eschaton.errors import LocalError

P2WPKH_INPUT_VBYTES = 68  # 41 base bytes + (1+72+1+33)/4 witness, rounded up
TX_OVERHEAD_VBYTES = 11  # version, locktime, counts, segwit marker (10.5 rounded up)
DUST_P2WPKH = 294  # bitcoind's dust threshold for a P2WPKH output at 3 sat/vB
MIN_RELAY_FEERATE = 1000  # sat/kvB
COINBASE_MATURITY = 100


class InsufficientFunds(LocalError):
    def __init__(self, needed: int, available: int) -> None:
        self.needed = needed
        self.available = available
        super().__init__(f"insufficient funds: need {needed} sat, have {available} sat spendable")


@dataclass(frozen=True, slots=True)
class Coin:
    key: str  # opaque identity, e.g. "txid:vout"
    value: int
    height: int | None  # None while unconfirmed
    coinbase: bool = False


@dataclass(frozen=True, slots=True)
class Selection:
    coins: tuple[Coin, ...]
    fee: int
    change: int  # 0 when no change output is made


def output_vbytes(script_pubkey_len: int) -> int:
    return 8 + 1 + script_pubkey_len


def fee_for(vbytes: int, feerate_kvb: int) -> int:
    rate = max(feerate_kvb, MIN_RELAY_FEERATE)
    return -(-vbytes * rate // 1000)


def spendable(coin: Coin, tip_height: int) -> bool:
    if coin.coinbase:
        return coin.height is not None and tip_height + 1 - coin.height >= COINBASE_MATURITY
    return True


def select(
    coins: Sequence[Coin],
    output_script_lens: Sequence[int],
    amount: int,
    feerate_kvb: int,
    tip_height: int,
    change_script_len: int = 22,
) -> Selection:
    """Pick coins paying ``amount`` (the sum of the outputs) plus fee, with change if worth it.

    ``amount`` may be 0 for a transaction whose only output is data (OP_RETURN): it then pays
    the fee alone."""
    if amount < 0:
        raise LocalError("amount must not be negative")
    usable = [c for c in coins if spendable(c, tip_height)]
    usable.sort(key=lambda c: (c.height is None, -c.value, c.key))
    base = TX_OVERHEAD_VBYTES + sum(output_vbytes(n) for n in output_script_lens)
    chosen: list[Coin] = []
    total = 0
    for coin in usable:
        chosen.append(coin)
        total += coin.value
        vbytes = base + P2WPKH_INPUT_VBYTES * len(chosen)
        fee_no_change = fee_for(vbytes, feerate_kvb)
        if total < amount + fee_no_change:
            continue
        fee_with_change = fee_for(vbytes + output_vbytes(change_script_len), feerate_kvb)
        change = total - amount - fee_with_change
        if change >= DUST_P2WPKH:
            return Selection(tuple(chosen), fee_with_change, change)
        return Selection(tuple(chosen), total - amount, 0)
    needed = amount + fee_for(base + P2WPKH_INPUT_VBYTES * max(1, len(usable)), feerate_kvb)
    raise InsufficientFunds(needed, sum(c.value for c in usable))

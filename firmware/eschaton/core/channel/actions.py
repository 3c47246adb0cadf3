"""What the channel core hands to its adapter (actions), and the plain inputs it takes.

The adapter executes a list of actions strictly in order; ``PersistThenSend`` is the only way a
signature leaves (make the snapshot durable, then send).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eschaton.core import tx as T
from eschaton.core.channel.errors import ProtocolViolation
from eschaton.core.channel.messages import Message
from eschaton.core.channel.versions import Version


@dataclass(frozen=True, slots=True)
class FundingInput:
    """A segwit output one party contributes to the funding transaction."""

    txid: str
    vout: int
    value: int
    script_pubkey: bytes

    def to_fields(self) -> dict[str, Any]:
        return {"txid": self.txid, "vout": self.vout, "value": self.value, "script_pubkey": self.script_pubkey}

    @classmethod
    def from_fields(cls, d: Any) -> FundingInput:
        try:
            fi = cls(str(d["txid"]), int(d["vout"]), int(d["value"]), bytes(d["script_pubkey"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ProtocolViolation(f"malformed funding input: {e}") from e
        if len(fi.txid) != 64 or not _is_segwit(fi.script_pubkey) or fi.value <= 0:
            raise ProtocolViolation("funding inputs must be positive segwit v0 outputs")
        return fi


def _is_segwit(spk: bytes) -> bool:
    return (len(spk) == 22 and spk[:2] == b"\x00\x14") or (len(spk) == 34 and spk[:2] == b"\x00\x20")


def _txout_fields(o: T.TxOut) -> dict[str, Any]:
    return {"value": o.value, "script_pubkey": o.script_pubkey}


def _txout_from(d: Any) -> T.TxOut:
    try:
        o = T.TxOut(int(d["value"]), bytes(d["script_pubkey"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ProtocolViolation(f"malformed change output: {e}") from e
    if o.value <= 0 or not o.script_pubkey:
        raise ProtocolViolation("change outputs must be positive")
    return o


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """A version for the store's history (the watcher needs old ones to recognise and sweep)."""

    version: Version
    peer_signature: bytes | None
    txid: str


@dataclass(frozen=True, slots=True)
class PersistThenSend:
    """Make the channel's state durable, then send ``messages``.

    ``state`` returns the channel's snapshot and is called when the store writes the action: at
    once outside a group commit, at the commit inside one. The snapshot written is therefore the
    channel's state at that moment, which covers this action's state and any later one of the same
    channel staged in the same commit (of which only the newest was ever written). Why a callable:
    a snapshot costs about as much as a version's digest, and a pipelined burst of 32 versions
    used to build 32 snapshots on each side to write one.
    """

    channel_id: bytes
    state: Callable[[], dict[str, Any]]
    versions: tuple[StoredVersion, ...] = ()
    messages: tuple[Message, ...] = ()
    durable: bool = True

    @property
    def snapshot(self) -> dict[str, Any]:
        """The channel's snapshot now (built on each access)."""
        return self.state()


@dataclass(frozen=True, slots=True)
class Send:
    """A message that carries no new commitment (acks of duplicates, errors)."""

    message: Message


@dataclass(frozen=True, slots=True)
class Broadcast:
    channel_id: bytes
    raw_tx: bytes
    label: str


@dataclass(frozen=True, slots=True)
class SignFunding:
    """Sign our inputs ``input_indices`` of ``unsigned_tx``, then call ``Channel.funding_signed``."""

    channel_id: bytes
    unsigned_tx: bytes
    input_indices: tuple[int, ...]
    inputs: tuple[FundingInput, ...]


@dataclass(frozen=True, slots=True)
class Notify:
    channel_id: bytes
    kind: str
    data: dict[str, Any] = field(default_factory=dict)


Action = PersistThenSend | Send | Broadcast | SignFunding | Notify


@dataclass(frozen=True, slots=True)
class ChannelStatus:
    channel_id: bytes
    state: str
    role: str
    balances: tuple[int, int]
    local_balance: int
    remote_balance: int
    fee: int
    escrows: int
    bets: int
    number: int
    locktime: int
    switches_left: int
    budget_low: bool
    have_turn: bool
    fee_paid: int = 0
    """Our share of ``fee``: the fee reserve a cooperative close or a re-anchor gives back."""
    close_balance: int = 0
    """What a cooperative close now would pay us (balance plus our fee share, less our part of
    the close's own fee); 0 while escrows or bets are open."""

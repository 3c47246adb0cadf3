"""Payment records: what a payment id names, and the outcomes it can have.

Rules / theory of operation:
- A payment id names one payment: a channel and an amount. The caller may choose it (a retry
  sends the same id again) or the node makes one. It is bound to its channel and amount the
  first time the node signs for it; reusing it with other parameters is refused.
- ``PENDING``: the version paying it is signed and durable (the record is written in the SAME
  transaction as the channel state that holds that version, before the signature leaves), and
  the peer has not acknowledged it yet. A signed version is never withdrawn: it is resent on
  every reconnect until the peer acknowledges it, so a pending payment can only complete.
- ``COMPLETE``: the peer acknowledged the version (the channel's current number reached the
  record's ``number``). Recording it is bookkeeping: it is derivable again from the channel
  after a crash (the peer's reestablish brings the acknowledgement back).
- ``FAILED``: nothing was signed, or what was signed never became durable and never left (the
  store could not write: a full disk). The id may be sent again with the same channel and
  amount, which tries again: nothing of it was paid, so that cannot pay twice.
- States are persisted by name; the table below is the only way a record changes state.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from eschaton.errors import LocalError

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


class PaymentState(Enum):
    PENDING = "pending"
    COMPLETE = "complete"
    FAILED = "failed"


# state -> states it may move to (a new record starts PENDING or FAILED)
TRANSITIONS: dict[PaymentState, frozenset[PaymentState]] = {
    PaymentState.PENDING: frozenset({PaymentState.COMPLETE}),
    PaymentState.COMPLETE: frozenset(),
    PaymentState.FAILED: frozenset({PaymentState.PENDING, PaymentState.FAILED}),
}


class PaymentError(LocalError):
    """A payment request the node refuses (bad id, an id reused with other parameters)."""


def check_id(pid: str) -> str:
    if not ID_PATTERN.fullmatch(pid):
        raise PaymentError(f"bad payment id {pid!r}: 1 to 64 letters, digits or . _ : - "
                           "(starting with a letter or digit)")
    return pid


@dataclass(frozen=True, slots=True)
class PaymentRecord:
    id: str
    channel_id: bytes
    amount: int
    state: PaymentState
    number: int  # the channel version that pays it (0 while nothing is signed)
    created_at: float
    updated_at: float
    error: str = ""

    def to(self, state: PaymentState, now: float, *, number: int | None = None, error: str = "") -> PaymentRecord:
        if state not in TRANSITIONS[self.state]:
            raise PaymentError(f"payment {self.id} cannot go from {self.state.value} to {state.value}")
        return replace(self, state=state, updated_at=now, error=error,
                       number=self.number if number is None else number)

    def conflict(self, channel_id: bytes, amount: int) -> str | None:
        """Why a request with this id and these parameters is not a retry of this payment."""
        if channel_id == self.channel_id and amount == self.amount:
            return None
        return (f"payment id {self.id} is already used for {self.amount} sat on channel "
                f"{self.channel_id.hex()}; a retry must repeat them, a new payment needs a new id")

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "channel": self.channel_id.hex(), "amount": self.amount,
                "state": self.state.value, "version": self.number,
                "created": _iso(self.created_at), "updated": _iso(self.updated_at), "error": self.error}


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")

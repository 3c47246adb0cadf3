"""What the microgrid cores hand back: records to persist first, then actions to perform.

An adapter handles a returned list in two passes: persist every ``Record`` (one transaction),
then perform the other decisions in order. ``CutSupply`` and ``RestoreSupply`` carry a deadline
(the core's ``now`` + ``ACTUATION_DEADLINE_MS``) by which the valve or contactor must have moved.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from eschaton.core.microgrid.errors import Refusal
from eschaton.core.microgrid.invoice import Invoice
from eschaton.core.microgrid.ledger import Entry

ACTUATION_DEADLINE_MS = 1000


@dataclass(frozen=True, slots=True)
class Record:
    """Append this entry to the ledger before acting on anything else in the list."""

    entry: Entry


@dataclass(frozen=True, slots=True)
class SendInvoice:
    """Send ``invoice.to_wire()`` to the buyer."""

    invoice: Invoice


@dataclass(frozen=True, slots=True)
class Pay:
    """Pay ``amount_sat`` over the trade channel to the seller, naming ``ref``.

    ``payment_id`` is unique per payment and rebuilt identically from the ledger after a
    restart, so the channel can use it as its idempotency key.
    """

    meter_id: str
    payment_id: bytes
    ref: bytes
    """The invoice id paid (or the agreement id for a prepayment)."""
    amount_sat: int


@dataclass(frozen=True, slots=True)
class CutSupply:
    """Close the valve / open the contactor feeding ``meter_id`` by ``deadline_ms``."""

    meter_id: str
    deadline_ms: int
    unpaid_sat: int
    credit_limit_sat: int


@dataclass(frozen=True, slots=True)
class RestoreSupply:
    """Reopen supply to ``meter_id`` by ``deadline_ms``."""

    meter_id: str
    deadline_ms: int


@dataclass(frozen=True, slots=True)
class Refused:
    """A peer's message was refused; the refusal is also in a ``Record``. Nothing was paid."""

    error: Refusal


Decision: TypeAlias = Record | SendInvoice | Pay | CutSupply | RestoreSupply | Refused

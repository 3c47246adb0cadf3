"""Glue between the microgrid cores and the durable ledger: persist, then act.

Theory of operation:
- Each call forwards to the sans-IO core, then hands the returned decisions to ``_settle``:
  every ``Record`` is appended to the ledger in one fsynced transaction FIRST; only then are the
  actions returned (and supply commands passed to the actuator, synchronously, so a cut happens
  within the same call, milliseconds after the reading, well inside the 1 s deadline).
- If the ledger write fails, the core's in-memory state is ahead of the disk. The service then
  refuses every further call (``ServiceFailed``); the node must restart it, which rebuilds the
  core from the ledger, i.e. from what really happened.
- ``open`` verifies the whole hash chain before trusting the ledger.
- Compaction: every ``compact_every`` entries the core records a checkpoint (its whole state in
  one entry) and the ledger archives the entries before it (``SqliteLedger.archive_before``),
  so a node running for years restarts by replaying at most that many entries, and its ledger
  file stops growing (the archive file grows instead, and can be moved off the node). If
  archiving fails, the checkpoint stays and the next one archives everything before it.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

from nacl.signing import SigningKey

from eschaton.core.microgrid.buyer import BuyerCore, Tolerance
from eschaton.core.microgrid.decisions import (
    CutSupply,
    Decision,
    Pay,
    Record,
    Refused,
    RestoreSupply,
)
from eschaton.core.microgrid.ledger import Entry
from eschaton.core.microgrid.seller import SellerCore
from eschaton.core.microgrid.terms import Acceptance, Offer, Tariff
from eschaton.errors import TransientError
from eschaton.microgrid.ledger import LedgerIOError, SqliteLedger

Actuator = Callable[[str, bool], None]
"""``actuator(meter_id, supply_on)``: open (True) or close (False) the supply to a meter."""


class ServiceFailed(TransientError):
    """A ledger write failed earlier; restart the service to rebuild from the ledger."""


COMPACT_EVERY = 10_000
"""Entries between checkpoints (a restart replays at most this many)."""


class _Service:
    core: SellerCore | BuyerCore

    def __init__(self, ledger: SqliteLedger, compact_every: int = COMPACT_EVERY) -> None:
        self.ledger = ledger
        self.compact_every = compact_every
        head, _ = ledger.head()
        self._since = head - ledger.first_seq() + 1 if head else 0
        self._failed = False

    def _settle(self, decisions: list[Decision]) -> list[Decision]:
        if self._failed:
            raise ServiceFailed("microgrid service must be restarted after a ledger failure")
        records = [d.entry for d in decisions if isinstance(d, Record)]
        self._append(records)
        self._since += len(records)
        if records and self._since >= self.compact_every:
            self._compact(records[-1].at_ms)
        return [d for d in decisions if not isinstance(d, Record)]

    def _append(self, records: list[Entry]) -> tuple[int, bytes]:
        try:
            return self.ledger.append(records)
        except BaseException:
            self._failed = True
            raise

    def _compact(self, now_ms: int) -> None:
        seq, _ = self._append([d.entry for d in self.core.checkpoint(now_ms) if isinstance(d, Record)])
        self._since = 1
        with contextlib.suppress(LedgerIOError):  # the next checkpoint archives this part too
            self.ledger.archive_before(seq)

    def _guard(self) -> None:
        if self._failed:
            raise ServiceFailed("microgrid service must be restarted after a ledger failure")

    def close(self) -> None:
        self.ledger.close()


class SellerService(_Service):
    """A seller core bound to its ledger and (optionally) the supply actuator."""

    def __init__(self, core: SellerCore, ledger: SqliteLedger,
                 actuator: Actuator | None = None, compact_every: int = COMPACT_EVERY) -> None:
        super().__init__(ledger, compact_every)
        self.core: SellerCore = core
        self.actuator = actuator

    @classmethod
    def open(cls, path: str | Path, key: SigningKey,
             actuator: Actuator | None = None, compact_every: int = COMPACT_EVERY) -> SellerService:
        ledger = SqliteLedger(path)
        try:
            core = SellerCore.restore(key, ledger.verify())
        except BaseException:
            ledger.close()
            raise
        return cls(core, ledger, actuator, compact_every)

    def _act(self, decisions: list[Decision]) -> list[Decision]:
        actions = self._settle(decisions)
        if self.actuator is not None:
            for d in actions:
                if isinstance(d, CutSupply | RestoreSupply):
                    self.actuator(d.meter_id, isinstance(d, RestoreSupply))
        return actions

    def offer(self, *, offer_id: bytes, tariff: Tariff, meter_id: str, start_units: int,
              now_ms: int, expires_ms: int, buyer: bytes = b"") -> Offer:
        self._guard()
        o, ds = self.core.offer(offer_id=offer_id, tariff=tariff, meter_id=meter_id,
                                start_units=start_units, now_ms=now_ms, expires_ms=expires_ms,
                                buyer=buyer)
        self._settle(ds)
        return o

    def renegotiate(self, meter_id: str, *, offer_id: bytes, tariff: Tariff, now_ms: int,
                    expires_ms: int) -> Offer:
        self._guard()
        o, ds = self.core.renegotiate(meter_id, offer_id=offer_id, tariff=tariff, now_ms=now_ms,
                                      expires_ms=expires_ms)
        self._settle(ds)
        return o

    def on_acceptance(self, raw: object, now_ms: int) -> list[Decision]:
        self._guard()
        return self._act(self.core.on_acceptance(Acceptance.from_wire(raw), now_ms))

    def accept(self, raw_offer: object, now_ms: int) -> Acceptance:
        """Accept the buyer's renegotiation (a higher credit limit may restore supply)."""
        self._guard()
        acc, ds = self.core.accept(Offer.from_wire(raw_offer), now_ms)
        self._act(ds)
        return acc

    def on_reading(self, meter_id: str, cum_units: int, reading_ms: int,
                   now_ms: int) -> list[Decision]:
        """Returns ``SendInvoice`` / ``CutSupply`` actions (cuts already applied if an actuator
        is bound)."""
        self._guard()
        return self._act(self.core.on_reading(meter_id, cum_units, reading_ms, now_ms))

    def on_payment(self, ref: bytes, payment_id: bytes, amount_sat: int,
                   now_ms: int, meter_hint: str = "", payer: bytes = b"") -> list[Decision]:
        self._guard()
        return self._act(self.core.on_payment(ref, payment_id, amount_sat, now_ms, meter_hint, payer))

    def resend_invoices(self) -> list[Decision]:
        """``SendInvoice`` for each contract's latest invoice (call once after start)."""
        self._guard()
        return self.core.resend_invoices()

    def reassert_supply(self, now_ms: int) -> list[Decision]:
        """Drive every actuator to its recorded state (call once after start)."""
        self._guard()
        return self._act(self.core.supply_commands(now_ms))


class BuyerService(_Service):
    """A buyer core bound to its ledger."""

    def __init__(self, core: BuyerCore, ledger: SqliteLedger,
                 compact_every: int = COMPACT_EVERY) -> None:
        super().__init__(ledger, compact_every)
        self.core: BuyerCore = core

    @classmethod
    def open(cls, path: str | Path, key: SigningKey,
             tolerance: Tolerance | None = None, compact_every: int = COMPACT_EVERY) -> BuyerService:
        ledger = SqliteLedger(path)
        try:
            core = BuyerCore.restore(key, ledger.verify(), tolerance)
        except BaseException:
            ledger.close()
            raise
        return cls(core, ledger, compact_every)

    def accept(self, raw_offer: object, now_ms: int, *, own_meter: str | None = None) -> Acceptance:
        self._guard()
        acc, ds = self.core.accept(Offer.from_wire(raw_offer), now_ms, own_meter=own_meter)
        self._settle(ds)
        return acc

    def propose(self, meter_id: str, *, offer_id: bytes, tariff: Tariff, now_ms: int,
                expires_ms: int) -> Offer:
        self._guard()
        o, ds = self.core.propose(meter_id, offer_id=offer_id, tariff=tariff, now_ms=now_ms,
                                  expires_ms=expires_ms)
        self._settle(ds)
        return o

    def on_acceptance(self, raw: object, now_ms: int) -> None:
        self._guard()
        self._settle(self.core.on_acceptance(Acceptance.from_wire(raw), now_ms))

    def on_own_reading(self, meter_id: str, cum_units: int, reading_ms: int) -> None:
        self.core.on_own_reading(meter_id, cum_units, reading_ms)

    def on_invoice(self, raw: object, now_ms: int) -> list[Pay]:
        """Check and record an invoice; returns the payments to make (after they are durable).

        A refused invoice is recorded, then its typed ``Refusal`` is raised.
        """
        self._guard()
        actions = self._settle(self.core.on_invoice(raw, now_ms))
        for d in actions:
            if isinstance(d, Refused):
                raise d.error
        return [d for d in actions if isinstance(d, Pay)]

    def prepay(self, meter_id: str, amount_sat: int, now_ms: int) -> list[Pay]:
        self._guard()
        return [d for d in self._settle(self.core.prepay(meter_id, amount_sat, now_ms))
                if isinstance(d, Pay)]

    def pay_outstanding(self, meter_id: str, now_ms: int) -> list[Pay]:
        self._guard()
        return [d for d in self._settle(self.core.pay_outstanding(meter_id, now_ms))
                if isinstance(d, Pay)]

    def on_payment_confirmed(self, payment_id: bytes, now_ms: int) -> None:
        self._guard()
        self._settle(self.core.on_payment_confirmed(payment_id, now_ms))

    def on_payment_failed(self, payment_id: bytes, now_ms: int) -> None:
        self._guard()
        self._settle(self.core.on_payment_failed(payment_id, now_ms))

    def pending_payments(self) -> list[Pay]:
        return self.core.pending_payments()

"""Crash and restart: both sides rebuild from their SQLite ledgers; nothing is paid twice or lost."""
from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eschaton.core.microgrid.decisions import Pay, SendInvoice
from eschaton.core.microgrid.errors import Replayed
from eschaton.core.microgrid.ledger import Entry, EntryKind
from eschaton.core.microgrid.supply import SupplyState
from eschaton.core.microgrid.terms import Tariff
from eschaton.microgrid.service import COMPACT_EVERY, BuyerService, SellerService
from tests.unit.microgrid.helpers import BUYER_KEY, METER, SELLER_KEY, T0, water

SCALE = 1000 * 1000


class Village:
    """A seller and a buyer service on SQLite files, restartable at will."""

    def __init__(self, d: Path, tariff: Tariff, compact_every: int = COMPACT_EVERY) -> None:
        self.dir = d
        self.compact_every = compact_every
        self.switch: list[tuple[str, bool]] = []
        self.open()
        offer = self.seller.offer(offer_id=b"o" * 16, tariff=tariff, meter_id=METER,
                                  start_units=0, now_ms=T0, expires_ms=T0 + 60_000)
        acc = self.buyer.accept(offer.to_wire(), T0 + 1)
        self.seller.on_acceptance(acc.to_wire(), T0 + 2)
        self.in_flight: list[Pay] = []

    def open(self) -> None:
        self.seller = SellerService.open(self.dir / "seller.db", SELLER_KEY,
                                         actuator=lambda m, on: self.switch.append((m, on)),
                                         compact_every=self.compact_every)
        self.buyer = BuyerService.open(self.dir / "buyer.db", BUYER_KEY,
                                       compact_every=self.compact_every)

    def restart(self, now_ms: int) -> None:
        """Both processes die (in-memory state lost) and start again from their ledgers."""
        self.seller.close()
        self.buyer.close()
        self.open()
        self.seller.reassert_supply(now_ms)
        # The seller may have recorded an invoice and died before sending it: send it again.
        for d in self.seller.resend_invoices():
            assert isinstance(d, SendInvoice)
            try:
                pays = self.buyer.on_invoice(d.invoice.to_wire(), now_ms)
            except Replayed:
                pays = []
            for p in pays:
                self.pay(p, now_ms)
        # The node asks its channel about payments whose outcome it did not see; here the
        # channel says they went through, so they reach the seller (idempotent by payment id).
        for pay in self.buyer.pending_payments():
            self.pay(pay, now_ms)

    def pay(self, pay: Pay, now_ms: int) -> None:
        self.seller.on_payment(pay.ref, pay.payment_id, pay.amount_sat, now_ms)
        self.buyer.on_payment_confirmed(pay.payment_id, now_ms)

    def read(self, units: int, at_ms: int, *, pay: bool = True) -> list[SendInvoice]:
        invoices = [d for d in self.seller.on_reading(METER, units, at_ms, at_ms)
                    if isinstance(d, SendInvoice)]
        for inv in invoices:
            for p in self.buyer.on_invoice(inv.invoice.to_wire(), at_ms):
                if pay:
                    self.pay(p, at_ms)
        return invoices

    def close(self) -> None:
        self.seller.close()
        self.buyer.close()


def test_restart_rebuilds_state_and_a_replayed_invoice_pays_nothing(tmp_path: Path) -> None:
    v = Village(tmp_path, water(1000, credit_limit_sat=3))
    v.read(2000, T0 + 1000)
    # The buyer records the payment as sent, then the node dies before the channel pays.
    [last] = v.read(9000, T0 + 2000, pay=False)
    assert v.switch == [(METER, False)]  # 9 sat unpaid > 3: cut, through the actuator
    seller_before, buyer_before = v.seller.core.status(METER), v.buyer.core.status(METER)
    assert buyer_before.pending_sat == 7
    v.seller.close()
    v.buyer.close()
    v.open()
    assert v.seller.core.status(METER) == seller_before
    assert v.buyer.core.status(METER) == buyer_before
    assert v.seller.core.status(METER).supply is SupplyState.CUT
    # The seller resends its last invoice after the restart: refused as a replay, pays 0.
    with pytest.raises(Replayed):
        v.buyer.on_invoice(last.invoice.to_wire(), T0 + 3000)
    assert v.buyer.core.status(METER).paid_sat == 9
    # The pending payment is reconciled with the channel and reaches the seller once.
    [pending] = v.buyer.pending_payments()
    v.pay(pending, T0 + 3100)
    v.pay(pending, T0 + 3200)  # redelivered by the channel: counted once
    assert v.seller.core.status(METER).paid_sat == 9
    assert v.seller.core.status(METER).supply is SupplyState.ON
    assert v.switch[-1] == (METER, True)
    # Nothing lost: the stream continues where it stopped.
    [nxt] = v.read(10_000, T0 + 4000)
    assert nxt.invoice.seq == last.invoice.seq + 1
    assert v.seller.core.status(METER).paid_sat == v.buyer.core.status(METER).paid_sat == 10
    v.close()


def test_invoice_recorded_but_never_sent_is_resent_after_restart(tmp_path: Path) -> None:
    v = Village(tmp_path, water(1000, credit_limit_sat=100))
    v.read(1000, T0 + 1000)
    # The seller records invoice 2 and dies before sending it; the meter then stops.
    v.seller.on_reading(METER, 4000, T0 + 2000, T0 + 2000)
    v.restart(T0 + 3000)
    assert v.buyer.core.status(METER).last_seq == 2
    assert v.seller.core.status(METER).paid_sat == 4
    v.close()


def test_failed_payment_is_paid_on_the_next_invoice(tmp_path: Path) -> None:
    v = Village(tmp_path, water(1000, credit_limit_sat=100))
    v.read(5000, T0 + 1000, pay=False)
    [pending] = v.buyer.pending_payments()
    v.buyer.on_payment_failed(pending.payment_id, T0 + 1500)
    v.restart(T0 + 1600)  # the failure was recorded: nothing pending after restart
    assert v.buyer.core.status(METER).paid_sat == 0
    v.read(6000, T0 + 2000)
    assert v.seller.core.status(METER).paid_sat == 6
    # The meter stops; a failed payment is retried at once, under a fresh payment id.
    v.read(9000, T0 + 3000, pay=False)
    [pending] = v.buyer.pending_payments()
    v.buyer.on_payment_failed(pending.payment_id, T0 + 3100)
    [retry] = v.buyer.pay_outstanding(METER, T0 + 3200)
    assert retry.amount_sat == 3 and retry.payment_id != pending.payment_id
    assert v.buyer.pay_outstanding(METER, T0 + 3300) == []  # already on its way
    v.pay(retry, T0 + 3400)
    assert v.seller.core.status(METER).paid_sat == 9
    v.close()


@settings(max_examples=30, deadline=None)
@given(price=st.integers(1, 5_000_000),
       steps=st.lists(st.tuples(st.integers(0, 100_000), st.sampled_from(["ok", "lost", "unsent", "crash"])),
                      min_size=1, max_size=15),
       compact_every=st.sampled_from([COMPACT_EVERY, 2, 5]))
def test_random_crashes_never_double_pay_nor_lose(price: int, steps: list[tuple[int, str]],
                                                  compact_every: int) -> None:
    """Also with ledgers compacted every few entries: restarts then replay from a checkpoint."""
    with tempfile.TemporaryDirectory() as d:
        v = Village(Path(d), water(price, credit_limit_sat=10**12), compact_every)
        cum, t = 0, T0
        for step, what in steps:
            cum += step
            t += 1000
            if what == "unsent":  # recorded by the seller, never sent
                v.seller.on_reading(METER, cum, t, t)
            else:
                v.read(cum, t, pay=what == "ok")
            if what == "crash":
                v.restart(t)
            paid = v.seller.core.status(METER).paid_sat
            assert paid <= cum * price // SCALE
        v.restart(t + 1)
        assert v.seller.core.status(METER).paid_sat == cum * price // SCALE
        assert v.buyer.core.status(METER).paid_sat == cum * price // SCALE
        for service in (v.seller, v.buyer):  # the archive and the ledger form one chain
            archived = service.ledger.verify_archive()
            held = len(service.ledger.verify())
            assert archived + held == service.ledger.head()[0]
            assert held <= 2 * compact_every + 4  # compaction really happened (when due)
        v.close()


OPS = st.lists(st.tuples(st.sampled_from(["read", "read", "read", "lose", "fail", "prepay",
                                          "seller_reneg", "buyer_reneg", "checkpoint"]),
                         st.integers(0, 50_000)), min_size=1, max_size=25)


@settings(max_examples=60, deadline=None)
@given(ops=OPS)
def test_restoring_from_recorded_entries_gives_the_live_state(
        ops: list[tuple[str, int]]) -> None:
    """Event sourcing is complete: whatever happened, replaying the records rebuilds it."""
    from eschaton.core.microgrid.buyer import BuyerCore
    from eschaton.core.microgrid.decisions import Decision, Record
    from eschaton.core.microgrid.errors import MicrogridError, Refusal
    from eschaton.core.microgrid.seller import SellerCore
    from eschaton.core.microgrid.terms import Acceptance, Offer

    seller, buyer = SellerCore(SELLER_KEY), BuyerCore(BUYER_KEY)
    s_log: list[Decision] = []
    b_log: list[Decision] = []

    def s(ds: list[Decision]) -> list[Decision]:
        s_log.extend(ds)
        return ds

    def b(ds: list[Decision]) -> list[Decision]:
        b_log.extend(ds)
        return ds

    tariff = water(1500, credit_limit_sat=20, fee_sat=1, fee_period_ms=5000)
    offer, ds = seller.offer(offer_id=b"o" * 16, tariff=tariff, meter_id=METER, start_units=0,
                             now_ms=T0, expires_ms=T0 + 10**9)
    s(ds)
    acc, ds = buyer.accept(offer, T0)
    b(ds)
    s(seller.on_acceptance(acc, T0))
    cum, t = 0, T0
    for n, (op, x) in enumerate(ops):
        t += 1000
        if op in ("read", "lose", "fail"):
            cum += x
            for d in s(seller.on_reading(METER, cum, t, t)):
                if isinstance(d, SendInvoice) and op != "lose":
                    for p in b(buyer.on_invoice(d.invoice.to_wire(), t)):
                        if isinstance(p, Pay) and op == "fail":
                            b(buyer.on_payment_failed(p.payment_id, t))
                        elif isinstance(p, Pay):
                            s(seller.on_payment(p.ref, p.payment_id, p.amount_sat, t))
                            b(buyer.on_payment_confirmed(p.payment_id, t))
        elif op == "checkpoint":
            s(seller.checkpoint(t))
            b(buyer.checkpoint(t))
        elif op == "prepay":
            for p in b(buyer.prepay(METER, x % 100 + 1, t)):
                if isinstance(p, Pay):
                    s(seller.on_payment(p.ref, p.payment_id, p.amount_sat, t))
        elif op == "seller_reneg":
            try:
                o, ds = seller.renegotiate(METER, offer_id=bytes([n]) * 16,
                                           tariff=water(x + 1, credit_limit_sat=20), now_ms=t,
                                           expires_ms=t + 500)
            except MicrogridError:  # our previous offer is still open: skip the op
                continue
            s(ds)
            try:
                a, ds = buyer.accept(Offer.from_wire(o.to_wire()), t)
                b(ds)
                s(seller.on_acceptance(Acceptance.from_wire(a.to_wire()), t))
            except Refusal:
                pass
        else:
            o, ds = buyer.propose(METER, offer_id=bytes([n]) * 16,
                                  tariff=water(x + 1, credit_limit_sat=20), now_ms=t,
                                  expires_ms=t + 500)
            b(ds)
            try:
                a, ds = seller.accept(Offer.from_wire(o.to_wire()), t)
                s(ds)
                b(buyer.on_acceptance(Acceptance.from_wire(a.to_wire()), t))
            except Refusal:
                pass
    s_entries = [d.entry for d in s_log if isinstance(d, Record)]
    b_entries = [d.entry for d in b_log if isinstance(d, Record)]

    def from_last_checkpoint(entries: list[Entry]) -> list[Entry]:
        cps = [i for i, e in enumerate(entries) if e.kind is EntryKind.CHECKPOINT]
        return entries[cps[-1]:] if cps else entries

    # Whole ledgers, and compacted ones (from their last checkpoint on), rebuild the same state.
    for s_part, b_part in ((s_entries, b_entries),
                           (from_last_checkpoint(s_entries), from_last_checkpoint(b_entries))):
        s2 = SellerCore.restore(SELLER_KEY, s_part)
        b2 = BuyerCore.restore(BUYER_KEY, b_part)
        # The latest reading is not recorded (the meter is cumulative); everything else must match.
        unrecorded = {"metered_units": 0, "metered_due_sat": 0, "unpaid_sat": 0}
        assert replace(s2.status(METER), **unrecorded) == replace(seller.status(METER), **unrecorded)
        assert b2.status(METER) == buyer.status(METER)
        assert b2.pending_payments() == buyer.pending_payments()
    assert buyer.status(METER).agreement_id in (seller.status(METER).agreement_id,
                                                seller.agreement(METER).offer.prev_agreement)

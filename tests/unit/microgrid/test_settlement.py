"""Streaming settlement: balances, cut-off and restore, prepaid credit, fees, renegotiation."""
from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eschaton.core.microgrid.decisions import CutSupply, Pay, Record, RestoreSupply, SendInvoice
from eschaton.core.microgrid.errors import Expired, MeterRegression, StaleOffer, UnknownAgreement
from eschaton.core.microgrid.ledger import EntryKind
from eschaton.core.microgrid.supply import SupplyState
from eschaton.core.microgrid.terms import Acceptance, Offer
from tests.unit.microgrid.helpers import METER, T0, make_pair, records, water

SCALE = 1000 * 1000  # mL per litre * msat per sat


@settings(max_examples=150, deadline=None)
@given(price=st.integers(1, 50_000_000), start=st.integers(0, 10**9),
       steps=st.lists(st.integers(0, 250_000), min_size=1, max_size=40))
def test_payments_equal_metered_units_times_price(price: int, start: int,
                                                  steps: list[int]) -> None:
    pair = make_pair(water(price, credit_limit_sat=10**12), start_units=start)
    cum = start
    for i, step in enumerate(steps):
        cum += step
        pair.read(cum, T0 + 1000 * (i + 1))
        total_paid = sum(p.amount_sat for p in pair.paid)
        assert total_paid == (cum - start) * price // SCALE
        assert Fraction(total_paid) <= Fraction((cum - start) * price, SCALE)
    assert not pair.refused
    assert pair.seller.status(METER).paid_sat == sum(p.amount_sat for p in pair.paid)


@settings(max_examples=100, deadline=None)
@given(price=st.integers(1, 5_000_000), interval=st.integers(0, 5000),
       steps=st.lists(st.tuples(st.integers(0, 100_000), st.booleans()), min_size=1,
                      max_size=40))
def test_lost_invoices_never_overpay_and_catch_up(price: int, interval: int,
                                                  steps: list[tuple[int, bool]]) -> None:
    """Invoices dropped in transit and a pay interval: never more than owed, nothing lost."""
    pair = make_pair(water(price, pay_interval_ms=interval, credit_limit_sat=10**12))
    cum, t = 0, T0
    for step, delivered in steps:
        cum += step
        t += 1000
        pair.read(cum, t, deliver=delivered)
        assert sum(p.amount_sat for p in pair.paid) <= cum * price // SCALE
    t += interval + 1
    pair.read(cum + 1, t)  # the next invoice that arrives settles everything
    assert sum(p.amount_sat for p in pair.paid) == (cum + 1) * price // SCALE


def test_cut_at_the_reading_that_passes_the_credit_limit_and_restore_on_payment() -> None:
    # 1000 msat per litre = 1 sat per litre; credit limit 5 sat; invoices are not delivered.
    pair = make_pair(water(1000, credit_limit_sat=5))
    out = pair.read(5000, T0 + 1000, deliver=False)  # 5 sat due: exactly at the limit
    assert [type(d) for d in out if not isinstance(d, Record)] == [SendInvoice]
    out = pair.read(5999, T0 + 2000, deliver=False)  # still 5 sat (floor)
    assert not any(isinstance(d, CutSupply) for d in out)
    out = pair.read(6000, T0 + 3000, deliver=False)  # 6 sat > 5: cut at this very reading
    assert [d for d in out if isinstance(d, CutSupply)] == [CutSupply(METER, T0 + 4000, 6, 5)]
    assert [r.entry.kind for r in records(out)] == [EntryKind.INVOICE_ISSUED,
                                                    EntryKind.SUPPLY_CUT]
    assert pair.seller.status(METER).supply is SupplyState.CUT
    # Usage seen while cut (water left in the pipe) does not cut twice.
    out = pair.read(7000, T0 + 4000, deliver=False)
    assert not any(isinstance(d, CutSupply) for d in out)
    # The buyer gets the latest invoice and pays all of it: supply is restored.
    pair.deliver([d for d in out if isinstance(d, SendInvoice)], T0 + 5000)
    assert [p.amount_sat for p in pair.paid] == [7]
    assert [d for d in pair.seller_out if isinstance(d, RestoreSupply)] == [
        RestoreSupply(METER, T0 + 6000)]
    assert pair.seller.status(METER).supply is SupplyState.ON
    assert pair.seller.status(METER).unpaid_sat == 0


def test_partial_payment_restores_only_under_the_limit() -> None:
    pair = make_pair(water(1000, credit_limit_sat=5))
    out = pair.read(20_000, T0 + 1000, deliver=False)  # 20 sat due
    inv = next(d.invoice for d in out if isinstance(d, SendInvoice))
    assert any(isinstance(d, CutSupply) for d in out)
    assert not any(isinstance(d, RestoreSupply)
                   for d in pair.seller.on_payment(inv.invoice_id, b"p1", 10, T0 + 2000))
    assert pair.seller.status(METER).supply is SupplyState.CUT  # 10 unpaid > 5
    assert any(isinstance(d, RestoreSupply)
               for d in pair.seller.on_payment(inv.invoice_id, b"p2", 5, T0 + 3000))
    # A payment event delivered twice counts once.
    assert pair.seller.on_payment(inv.invoice_id, b"p2", 5, T0 + 4000) == []
    assert pair.seller.status(METER).paid_sat == 15


def test_prepaid_credit_with_zero_credit_limit() -> None:
    pair = make_pair(water(1000, credit_limit_sat=0))
    for pay in [d for d in pair.buyer.prepay(METER, 10, T0 + 100) if isinstance(d, Pay)]:
        pair.settle(pay, T0 + 100)
    assert pair.seller.status(METER).unpaid_sat == -10
    out = pair.read(10_000, T0 + 1000)  # 10 sat used: covered by the prepayment
    assert not any(isinstance(d, CutSupply) for d in out)
    assert pair.paid[-1].amount_sat == 10  # only the prepayment; the invoice owed nothing more
    out = pair.read(11_000, T0 + 2000, deliver=False)
    assert any(isinstance(d, CutSupply) for d in out)


def test_access_fee_is_charged_per_completed_period() -> None:
    pair = make_pair(water(1000, fee_sat=50, fee_period_ms=3_600_000, credit_limit_sat=10**6))
    pair.read(1000, T0 + 3_599_999)
    assert sum(p.amount_sat for p in pair.paid) == 1
    pair.read(1000, T0 + 3_600_000)
    assert sum(p.amount_sat for p in pair.paid) == 51
    pair.read(2000, T0 + 3 * 3_600_000 + 5)
    assert sum(p.amount_sat for p in pair.paid) == 2 + 150


def test_seller_renegotiation_applies_to_future_units_only() -> None:
    pair = make_pair(water(1000, credit_limit_sat=10**6))
    pair.read(10_000, T0 + 1000)  # 10 sat at the old price
    offer, _ = pair.seller.renegotiate(METER, offer_id=b"r" * 16,
                                       tariff=water(3000, credit_limit_sat=10**6),
                                       now_ms=T0 + 1500, expires_ms=T0 + 60_000)
    # While our offer is outstanding no invoice may follow its anchor.
    held = pair.read(11_000, T0 + 1600)
    assert not any(isinstance(d, SendInvoice) for d in held)
    acc, ds = pair.buyer.accept(Offer.from_wire(offer.to_wire()), T0 + 1700)
    assert records(ds)[0].entry.kind is EntryKind.RENEGOTIATION
    pair.seller.on_acceptance(Acceptance.from_wire(acc.to_wire()), T0 + 1800)
    pair.read(12_000, T0 + 2000)  # 2 litres at 3 sat each
    assert sum(p.amount_sat for p in pair.paid) == 10 + 6
    assert pair.buyer.status(METER).agreement_id == pair.seller.status(METER).agreement_id


def test_buyer_renegotiation_and_stale_offers() -> None:
    pair = make_pair(water(1000, credit_limit_sat=10**6))
    pair.read(4000, T0 + 1000)
    offer, _ = pair.buyer.propose(METER, offer_id=b"b" * 16, tariff=water(500, credit_limit_sat=10**6),
                                  now_ms=T0 + 1100, expires_ms=T0 + 5000)
    parsed = Offer.from_wire(offer.to_wire())
    # The seller issued another invoice meanwhile: the proposal's anchor is stale.
    pair.read(5000, T0 + 1200, deliver=False)
    with pytest.raises(StaleOffer):
        pair.seller.accept(parsed, T0 + 1300)
    # A fresh proposal anchored at the invoice the buyer now holds is accepted.
    pair.read(6000, T0 + 1400)
    offer, _ = pair.buyer.propose(METER, offer_id=b"c" * 16, tariff=water(500, credit_limit_sat=10**6),
                                  now_ms=T0 + 1500, expires_ms=T0 + 5000)
    with pytest.raises(Expired):
        pair.seller.accept(Offer.from_wire(offer.to_wire()), T0 + 5001)
    acc, _ = pair.seller.accept(Offer.from_wire(offer.to_wire()), T0 + 1600)
    pair.buyer.on_acceptance(Acceptance.from_wire(acc.to_wire()), T0 + 1700)
    pair.read(8000, T0 + 2000)  # 2 litres at 0.5 sat
    assert sum(p.amount_sat for p in pair.paid) == 6 + 1
    assert not pair.refused


def test_meter_going_backwards_is_refused() -> None:
    pair = make_pair(water(1000))
    pair.read(1000, T0 + 1000)
    with pytest.raises(MeterRegression):
        pair.read(999, T0 + 2000)


def test_renegotiation_acceptance_too_late_lapses_on_both_sides() -> None:
    pair = make_pair(water(1000, credit_limit_sat=10**6))
    pair.read(2000, T0 + 1000)
    offer, _ = pair.seller.renegotiate(METER, offer_id=b"r" * 16,
                                       tariff=water(9000, credit_limit_sat=10**6),
                                       now_ms=T0 + 1100, expires_ms=T0 + 2000)
    acc, _ = pair.buyer.accept(Offer.from_wire(offer.to_wire()), T0 + 1900)  # in time...
    pair.read(3000, T0 + 3000)  # ...but the seller's hold ended and it invoiced at the old price
    with pytest.raises(StaleOffer):
        pair.seller.on_acceptance(Acceptance.from_wire(acc.to_wire()), T0 + 3100)
    # The buyer got that invoice under the old agreement: it recorded the lapse and paid.
    assert not pair.refused
    assert sum(p.amount_sat for p in pair.paid) == 3
    kinds = [r.entry.kind for r in records(pair.buyer.on_invoice(
        pair.seller.resend_invoices()[0].invoice.to_wire(), T0 + 3200))]  # type: ignore[union-attr]
    assert kinds == [EntryKind.INVOICE_REFUSED]  # the same invoice again is a replay
    assert pair.buyer.status(METER).agreement_id == pair.seller.status(METER).agreement_id
    pair.read(4000, T0 + 4000)
    assert sum(p.amount_sat for p in pair.paid) == 4 and not pair.refused


def test_late_acceptance_is_honoured_when_nothing_was_invoiced_since() -> None:
    pair = make_pair(water(1000, credit_limit_sat=10**6))
    pair.read(2000, T0 + 1000)
    offer, _ = pair.seller.renegotiate(METER, offer_id=b"r" * 16,
                                       tariff=water(9000, credit_limit_sat=10**6),
                                       now_ms=T0 + 1100, expires_ms=T0 + 2000)
    acc, _ = pair.buyer.accept(Offer.from_wire(offer.to_wire()), T0 + 1900)
    pair.seller.on_acceptance(Acceptance.from_wire(acc.to_wire()), T0 + 9000)  # slow link
    pair.read(3000, T0 + 10_000)
    assert sum(p.amount_sat for p in pair.paid) == 2 + 9 and not pair.refused


def test_an_open_offer_binds_the_first_acceptor_only() -> None:
    from eschaton.core.microgrid.buyer import BuyerCore
    from eschaton.core.microgrid.seller import SellerCore
    from tests.unit.microgrid.helpers import BUYER_KEY, OTHER_KEY, SELLER_KEY

    seller = SellerCore(SELLER_KEY)
    offer, _ = seller.offer(offer_id=b"o" * 16, tariff=water(1000), meter_id=METER,
                            start_units=0, now_ms=T0, expires_ms=T0 + 60_000)
    first, _ = BuyerCore(BUYER_KEY).accept(offer, T0 + 1)
    second, _ = BuyerCore(OTHER_KEY).accept(offer, T0 + 2)
    other, _ = seller.offer(offer_id=b"p" * 16, tariff=water(800), meter_id=METER,
                            start_units=0, now_ms=T0, expires_ms=T0 + 60_000)
    third, _ = BuyerCore(OTHER_KEY).accept(other, T0 + 2)
    seller.on_acceptance(first, T0 + 3)
    with pytest.raises(UnknownAgreement):  # that offer is settled
        seller.on_acceptance(second, T0 + 4)
    with pytest.raises(StaleOffer):  # another offer for the same meter: the meter is taken
        seller.on_acceptance(third, T0 + 5)
    assert seller.agreement(METER).buyer == bytes(BUYER_KEY.verify_key)


def test_renegotiation_raising_the_credit_limit_restores_supply() -> None:
    pair = make_pair(water(1000, credit_limit_sat=5))
    pair.read(9000, T0 + 1000, deliver=False)
    assert pair.seller.status(METER).supply is SupplyState.CUT
    offer, _ = pair.buyer.propose(METER, offer_id=b"b" * 16, tariff=water(1000, credit_limit_sat=10),
                                  now_ms=T0 + 1100, expires_ms=T0 + 5000)
    # The buyer never accepted invoice 1, so its proposal is anchored before it: stale.
    with pytest.raises(StaleOffer):
        pair.seller.accept(Offer.from_wire(offer.to_wire()), T0 + 1200)
    inv = pair.seller.resend_invoices()[0]
    assert isinstance(inv, SendInvoice)
    for d in pair.buyer.on_invoice(inv.invoice.to_wire(), T0 + 1300):
        if isinstance(d, Pay):
            pair.buyer.on_payment_failed(d.payment_id, T0 + 1301)  # the channel is down
    offer, _ = pair.buyer.propose(METER, offer_id=b"c" * 16, tariff=water(1000, credit_limit_sat=10),
                                  now_ms=T0 + 1400, expires_ms=T0 + 5000)
    acc, out = pair.seller.accept(Offer.from_wire(offer.to_wire()), T0 + 1500)
    assert [d for d in out if isinstance(d, RestoreSupply)] == [RestoreSupply(METER, T0 + 2500)]
    assert pair.seller.status(METER).supply is SupplyState.ON

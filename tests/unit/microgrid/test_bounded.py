"""A seller's state stays bounded however long a contract runs, and a checkpoint carries it."""
from __future__ import annotations

import pytest

from eschaton.core.microgrid import seller as seller_mod
from eschaton.core.microgrid.decisions import Pay, Record, SendInvoice
from eschaton.core.microgrid.errors import UnknownContract
from eschaton.core.microgrid.seller import SellerCore
from tests.unit.microgrid.helpers import METER, OTHER_KEY, SELLER_KEY, T0, make_pair, water


def test_old_invoice_ids_are_forgotten_and_a_payment_naming_one_is_credited_by_meter(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(seller_mod, "REF_WINDOW", 3)
    pr = make_pair(water(1_000_000, credit_limit_sat=10**9))
    invoices = []
    for i in range(1, 8):
        invoices += [d.invoice for d in pr.read(i * 1000, T0 + i * 1000, deliver=False)
                     if isinstance(d, SendInvoice)]
    assert len(invoices) == 7
    refs = pr.seller._refs
    assert [inv.invoice_id in refs for inv in invoices] == [False] * 4 + [True] * 3
    paid = pr.seller.status(METER).paid_sat
    buyer = pr.buyer.pubkey
    with pytest.raises(UnknownContract):
        pr.seller.on_payment(invoices[0].invoice_id, b"p1", 5, T0 + 9000)
    with pytest.raises(UnknownContract):  # another buyer's money may not credit this meter
        pr.seller.on_payment(invoices[0].invoice_id, b"p1", 5, T0 + 9000, meter_hint=METER,
                             payer=OTHER_KEY.verify_key.encode())
    pr.seller.on_payment(invoices[0].invoice_id, b"p1", 5, T0 + 9000, meter_hint=METER, payer=buyer)
    pr.seller.on_payment(invoices[-1].invoice_id, b"p2", 7, T0 + 9000)
    assert pr.seller.status(METER).paid_sat == paid + 12
    with pytest.raises(UnknownContract):
        pr.seller.on_payment(b"\x00" * 32, b"p3", 1, T0 + 9000, meter_hint="no-such-meter", payer=buyer)


def test_payment_ids_are_remembered_within_a_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(seller_mod, "PAYMENT_WINDOW", 4)
    pr = make_pair(water(1_000_000, credit_limit_sat=10**9))
    ref = pr.seller.agreement(METER).agreement_id
    for i in range(10):
        pr.seller.on_payment(ref, bytes([i]), 1, T0 + 100 + i)
    assert pr.seller.status(METER).paid_sat == 10
    assert pr.seller.on_payment(ref, bytes([9]), 1, T0 + 200) == []  # a redelivery: ignored
    assert list(pr.seller._payment_ids) == [bytes([i]) for i in range(6, 10)]


def test_a_checkpoint_alone_rebuilds_the_seller(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(seller_mod, "REF_WINDOW", 2)
    pr = make_pair(water(1_000_000, credit_limit_sat=3, fee_sat=1, fee_period_ms=1000))
    for i in range(1, 6):
        pr.read(i * 700, T0 + i * 1000, deliver=i != 3)
    pr.seller.renegotiate(METER, offer_id=b"r" * 16, tariff=water(2_000_000, credit_limit_sat=3),
                          now_ms=T0 + 6000, expires_ms=T0 + 60_000)  # an open offer is state too
    [cp] = [d for d in pr.seller.checkpoint(T0 + 7000) if isinstance(d, Record)]
    restored = SellerCore.restore(SELLER_KEY, [cp.entry])
    assert restored.snapshot() == pr.seller.snapshot()
    assert restored.status(METER) == pr.seller.status(METER)
    # And it goes on exactly as the live one does: same decisions on a reading (invoicing is
    # held by the open offer; the unpaid amount cuts supply) and on a payment.
    live = pr.seller.on_reading(METER, 9000, T0 + 8000, T0 + 8000)
    assert live == restored.on_reading(METER, 9000, T0 + 8000, T0 + 8000) != []
    last = pr.seller.resend_invoices()
    assert last == restored.resend_invoices() != []
    inv = last[0].invoice  # type: ignore[attr-defined]
    assert pr.seller.on_payment(inv.invoice_id, b"pay", 40, T0 + 9000) == \
        restored.on_payment(inv.invoice_id, b"pay", 40, T0 + 9000)
    assert restored.snapshot() == pr.seller.snapshot()


def test_a_checkpoint_alone_rebuilds_the_buyer() -> None:
    from eschaton.core.microgrid.buyer import BuyerCore
    from tests.unit.microgrid.helpers import BUYER_KEY

    pr = make_pair(water(1_000_000, credit_limit_sat=10**9), own_start=0)
    pr.buyer.on_own_reading("house-b/inlet", 5000, T0 + 5000)
    for i in range(1, 4):
        out = pr.seller.on_reading(METER, i * 1000, T0 + i * 1000, T0 + i * 1000)
        for d in out:
            if isinstance(d, SendInvoice):
                pays = [p for p in pr.buyer.on_invoice(d.invoice.to_wire(), T0 + i * 1000)
                        if isinstance(p, Pay)]
                if i != 2:  # the second payment's outcome is still unknown
                    for p in pays:
                        pr.buyer.on_payment_confirmed(p.payment_id, T0 + i * 1000)
    [cp] = [d for d in pr.buyer.checkpoint(T0 + 7000) if isinstance(d, Record)]
    restored = BuyerCore.restore(BUYER_KEY, [cp.entry])
    assert restored.snapshot() == pr.buyer.snapshot()
    assert restored.status(METER) == pr.buyer.status(METER)
    assert restored.pending_payments() == pr.buyer.pending_payments() != []

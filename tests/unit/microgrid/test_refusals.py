"""Every bad invoice is refused with a typed error, recorded in the ledger, and nothing is paid."""
from __future__ import annotations

from pathlib import Path

import pytest

from eschaton.core.microgrid.buyer import Tolerance
from eschaton.core.microgrid.decisions import Pay, Refused, SendInvoice
from eschaton.core.microgrid.errors import (
    BadSignature,
    CumulativeDecreased,
    FromTheFuture,
    Malformed,
    OverMetered,
    Refusal,
    Replayed,
    UnknownAgreement,
    WrongAmount,
)
from eschaton.core.microgrid.invoice import Invoice
from eschaton.core.microgrid.ledger import EntryKind
from eschaton.core.microgrid.terms import Acceptance, Offer
from eschaton.microgrid.ledger import SqliteLedger
from eschaton.microgrid.service import BuyerService
from tests.unit.microgrid.helpers import (
    BUYER_KEY,
    METER,
    OTHER_KEY,
    OWN_METER,
    SELLER_KEY,
    T0,
    Pair,
    make_pair,
    water,
)


def _invoice(pair: Pair, units: int, at_ms: int) -> Invoice:
    out = pair.seller.on_reading(METER, units, at_ms, at_ms)
    return next(d.invoice for d in out if isinstance(d, SendInvoice))


def _signed(pair: Pair, **changes: object) -> dict[str, object]:
    """A correctly signed invoice with some fields changed (as a dishonest seller would)."""
    st = pair.seller.status(METER)
    fields: dict[str, object] = dict(agreement_id=st.agreement_id, seq=st.last_seq + 1,
                                     meter_id=METER, cum_units=st.invoiced_units,
                                     cum_due_sat=st.invoiced_due_sat, reading_ms=T0 + 5000)
    fields.update(changes)
    return Invoice.create(SELLER_KEY, **fields).to_wire()  # type: ignore[arg-type]


def _refuse(pair: Pair, raw: object, now_ms: int, error: type[Refusal]) -> None:
    paid_before = pair.buyer.status(METER).paid_sat
    out = pair.buyer.on_invoice(raw, now_ms)
    assert not any(isinstance(d, Pay) for d in out)
    refused = [d for d in out if isinstance(d, Refused)]
    assert len(refused) == 1 and type(refused[0].error) is error
    rec = out[0]
    assert rec.entry.kind is EntryKind.INVOICE_REFUSED  # type: ignore[union-attr]
    assert rec.entry.body["reason"] == error.reason  # type: ignore[union-attr]
    assert pair.buyer.status(METER).paid_sat == paid_before


@pytest.fixture
def pair() -> Pair:
    p = make_pair(water(1000, credit_limit_sat=10**6), own_start=500,
                  tolerance=Tolerance(abs_units=50, rel_ppm=10_000, max_clock_skew_ms=2000))
    p.buyer.on_own_reading(OWN_METER, 500 + 3000, T0 + 1000)
    p.read(3000, T0 + 1000)
    assert [x.amount_sat for x in p.paid] == [3]
    return p


@pytest.mark.parametrize("mutate", [
    lambda w: {k: v for k, v in w.items() if k != "cum_due_sat"},
    lambda w: dict(w, extra=1),
    lambda w: dict(w, seq=-1),
    lambda w: dict(w, seq="2"),
    lambda w: dict(w, cum_units=True),
    lambda w: dict(w, sig=b"\x00" * 10),
    lambda w: dict(w, agreement_id=b"short"),
    lambda w: dict(w, meter_id=b"\xff\xfe"),
    lambda w: dict(w, v=2),
    lambda w: [w],
    lambda w: None,
])
def test_malformed_invoice(pair: Pair, mutate: object) -> None:
    raw = mutate(_invoice(pair, 4000, T0 + 2000).to_wire())  # type: ignore[operator]
    _refuse(pair, raw, T0 + 2000, Malformed)


def test_unsigned_and_badly_signed_invoices(pair: Pair) -> None:
    pair.buyer.on_own_reading(OWN_METER, 500 + 4000, T0 + 2000)
    good = _invoice(pair, 4000, T0 + 2000).to_wire()
    _refuse(pair, dict(good, sig=bytes(64)), T0 + 2000, BadSignature)
    _refuse(pair, dict(good, cum_due_sat=1), T0 + 2000, BadSignature)  # altered after signing
    forged = Invoice.create(OTHER_KEY, agreement_id=pair.seller.status(METER).agreement_id,
                            seq=2, meter_id=METER, cum_units=4000, cum_due_sat=4,
                            reading_ms=T0 + 2000)
    _refuse(pair, forged.to_wire(), T0 + 2000, BadSignature)
    # The genuine invoice is still accepted afterwards.
    assert any(isinstance(d, Pay) for d in pair.buyer.on_invoice(good, T0 + 2000))


def test_invoice_for_more_than_was_metered(pair: Pair) -> None:
    # Our meter saw 3000 mL since the start; tolerance is 50 + 1% of 3000 = 80.
    _refuse(pair, _signed(pair, cum_units=3081, cum_due_sat=3), T0 + 6000, OverMetered)
    ok = _signed(pair, cum_units=3080, cum_due_sat=3, seq=2)
    assert not any(isinstance(d, Refused) for d in pair.buyer.on_invoice(ok, T0 + 6000))


def test_replayed_invoice_pays_nothing(pair: Pair) -> None:
    inv = _invoice(pair, 3050, T0 + 2000)
    assert any(isinstance(d, Pay) for d in pair.buyer.on_invoice(inv.to_wire(), T0 + 2000)) is False
    # Same invoice again, and an older one: both replays.
    _refuse(pair, inv.to_wire(), T0 + 2001, Replayed)
    _refuse(pair, _signed(pair, seq=1, cum_units=3000), T0 + 2002, Replayed)


def test_wrong_amount_decrease_future_and_unknown(pair: Pair) -> None:
    _refuse(pair, _signed(pair, cum_units=3050, cum_due_sat=4), T0 + 6000, WrongAmount)
    _refuse(pair, _signed(pair, cum_units=2999, cum_due_sat=3), T0 + 6000, CumulativeDecreased)
    _refuse(pair, _signed(pair, reading_ms=T0 + 9000), T0 + 6000, FromTheFuture)
    _refuse(pair, _signed(pair, agreement_id=bytes(32)), T0 + 6000, UnknownAgreement)


def test_refusals_are_durable_and_raised_by_the_service(tmp_path: Path) -> None:
    from eschaton.core.microgrid.seller import SellerCore

    seller = SellerCore(SELLER_KEY)
    offer, _ = seller.offer(offer_id=b"o" * 16, tariff=water(1000), meter_id=METER,
                            start_units=0, now_ms=T0, expires_ms=T0 + 60_000)
    svc = BuyerService.open(tmp_path / "buyer.db", BUYER_KEY, Tolerance(abs_units=10))
    svc.on_own_reading(OWN_METER, 100, T0)
    acc = svc.accept(offer.to_wire(), T0 + 1, own_meter=OWN_METER)
    seller.on_acceptance(Acceptance.from_wire(acc.to_wire()), T0 + 2)
    inv = next(d.invoice for d in seller.on_reading(METER, 2000, T0 + 10, T0 + 10)
               if isinstance(d, SendInvoice))
    with pytest.raises(Malformed):
        svc.on_invoice({k: v for k, v in inv.to_wire().items() if k != "seq"}, T0 + 19)
    with pytest.raises(BadSignature):
        svc.on_invoice(dict(inv.to_wire(), sig=bytes(64)), T0 + 20)
    svc.on_own_reading(OWN_METER, 100 + 1989, T0 + 21)  # 11 mL short of the invoice: > 10
    with pytest.raises(OverMetered):
        svc.on_invoice(inv.to_wire(), T0 + 21)
    svc.on_own_reading(OWN_METER, 100 + 1990, T0 + 22)
    assert [p.amount_sat for p in svc.on_invoice(inv.to_wire(), T0 + 22)] == [2]
    with pytest.raises(Replayed):
        svc.on_invoice(inv.to_wire(), T0 + 23)
    svc.close()
    with SqliteLedger(tmp_path / "buyer.db") as ledger:
        kinds = [(e.kind, e.body.get("reason")) for e in ledger.verify()]
    assert kinds == [(EntryKind.AGREEMENT, None),
                     (EntryKind.INVOICE_REFUSED, "malformed"),
                     (EntryKind.INVOICE_REFUSED, "bad_signature"),
                     (EntryKind.INVOICE_REFUSED, "over_metered"),
                     (EntryKind.INVOICE_ACCEPTED, None), (EntryKind.PAYMENT_SENT, None),
                     (EntryKind.INVOICE_REFUSED, "replayed")]


def test_offer_tampering_and_wrong_party() -> None:
    from eschaton.core.microgrid.seller import SellerCore
    from eschaton.core.microgrid.terms import Agreement

    seller = SellerCore(SELLER_KEY)
    offer, _ = seller.offer(offer_id=b"o" * 16, tariff=water(1000), meter_id=METER,
                            start_units=0, now_ms=T0, expires_ms=T0 + 60_000,
                            buyer=bytes(BUYER_KEY.verify_key))
    with pytest.raises(BadSignature):
        Offer.from_wire(dict(offer.to_wire(), price_msat=1))
    with pytest.raises(Malformed):
        Offer.from_wire(dict(offer.to_wire(), base_per_unit=1))
    stranger = Acceptance.create(OTHER_KEY, offer, T0 + 1)
    from eschaton.core.microgrid.errors import StaleOffer

    with pytest.raises(StaleOffer):
        Agreement.bind(offer, stranger)
    late = Acceptance.create(BUYER_KEY, offer, T0 + 60_001)
    from eschaton.core.microgrid.errors import Expired

    with pytest.raises(Expired):
        seller.on_acceptance(late, T0 + 60_001)


def test_invoice_straight_from_bencode_is_accepted(pair: Pair) -> None:
    """Bencode gives bytes keys and bytes for str fields: both are understood."""
    from eschaton.core.wire.bencode import decode as bdecode
    from eschaton.core.wire.bencode import encode as bencode

    pair.buyer.on_own_reading(OWN_METER, 500 + 4000, T0 + 2000)
    raw = bdecode(bencode(_invoice(pair, 4000, T0 + 2000).to_wire()))
    assert isinstance(raw, dict) and all(isinstance(k, bytes) for k in raw)
    assert [p.amount_sat for p in pair.buyer.on_invoice(raw, T0 + 2000)
            if isinstance(p, Pay)] == [1]
    offer = Offer.from_wire(bdecode(bencode(pair.seller.agreement(METER).offer.to_wire())))
    assert offer == pair.seller.agreement(METER).offer

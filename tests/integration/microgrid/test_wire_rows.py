"""The mg_* wire rows carry the microgrid core's signed dicts exactly (encode, decode, verify)."""
from __future__ import annotations

from nacl.signing import SigningKey

from eschaton.core.microgrid.buyer import BuyerCore
from eschaton.core.microgrid.invoice import Invoice
from eschaton.core.microgrid.seller import SellerCore
from eschaton.core.microgrid.terms import Acceptance, Offer, Service, Tariff
from eschaton.core.wire.codec import decode_message, encode_message, make
from eschaton.daemon.microgrid import from_wire_fields


def _roundtrip(name: str, d: dict) -> dict:
    wm = decode_message(encode_message(make(name, **d)))
    assert wm.name == name
    return from_wire_fields(wm)


def test_offer_acceptance_invoice_survive_the_wire_with_signatures() -> None:
    seller, buyer = SellerCore(SigningKey(b"s" * 32)), BuyerCore(SigningKey(b"b" * 32))
    tariff = Tariff(Service.WATER, "litre", "mL", price_msat=20_000, credit_limit_sat=100,
                    pay_interval_ms=1000)
    offer, _ = seller.offer(offer_id=b"o" * 16, tariff=tariff, meter_id="h2-water", start_units=7,
                            now_ms=1_000, expires_ms=60_000, buyer=buyer.pubkey)
    got = Offer.from_wire(_roundtrip("mg_offer", offer.to_wire()))
    assert got == offer
    acc, _ = buyer.accept(got, 1_100)
    assert Acceptance.from_wire(_roundtrip("mg_accept", acc.to_wire())) == acc
    seller.on_acceptance(acc, 1_200)
    ds = seller.on_reading("h2-water", 5_007, 2_500, 2_500)
    inv = next(d.invoice for d in ds if hasattr(d, "invoice"))
    back = Invoice.from_wire(_roundtrip("mg_invoice", inv.to_wire()))
    assert back == inv and back.invoice_id == inv.invoice_id
    back.verify(seller.pubkey)

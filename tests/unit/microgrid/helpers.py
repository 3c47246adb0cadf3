"""A seller and a buyer wired back to back, with messages passed as wire dicts."""
from __future__ import annotations

from dataclasses import dataclass, field

from nacl.signing import SigningKey

from eschaton.core.microgrid.buyer import BuyerCore, Tolerance
from eschaton.core.microgrid.decisions import Decision, Pay, Record, Refused, SendInvoice
from eschaton.core.microgrid.seller import SellerCore
from eschaton.core.microgrid.terms import Acceptance, Offer, Service, Tariff

SELLER_KEY = SigningKey(bytes(range(32)))
BUYER_KEY = SigningKey(bytes(range(32, 64)))
OTHER_KEY = SigningKey(bytes(range(64, 96)))
T0 = 1_800_000_000_000  # ms since the epoch
METER = "house-b/water"
OWN_METER = "house-b/inlet"


def water(price_msat: int = 2_000, **kw: int) -> Tariff:
    return Tariff(service=Service.WATER, unit="litre", base_unit="mL", price_msat=price_msat,
                  **kw)


@dataclass
class Pair:
    seller: SellerCore
    buyer: BuyerCore
    refused: list[Refused] = field(default_factory=list)
    paid: list[Pay] = field(default_factory=list)
    seller_out: list[Decision] = field(default_factory=list)

    def read(self, units: int, at_ms: int, *, deliver: bool = True) -> list[Decision]:
        """A seller meter reading; invoices go to the buyer and payments back (if deliver)."""
        out = self.seller.on_reading(METER, units, at_ms, at_ms)
        if deliver:
            self.deliver(out, at_ms)
        return out

    def deliver(self, decisions: list[Decision], now_ms: int) -> list[Decision]:
        back: list[Decision] = []
        for d in decisions:
            if isinstance(d, SendInvoice):
                back += self.buyer.on_invoice(d.invoice.to_wire(), now_ms)
        for d in back:
            if isinstance(d, Refused):
                self.refused.append(d)
            elif isinstance(d, Pay):
                self.settle(d, now_ms)
        return back

    def settle(self, pay: Pay, now_ms: int) -> list[Decision]:
        self.paid.append(pay)
        self.buyer.on_payment_confirmed(pay.payment_id, now_ms)
        out = self.seller.on_payment(pay.ref, pay.payment_id, pay.amount_sat, now_ms)
        self.seller_out += out
        return out


def make_pair(tariff: Tariff, *, start_units: int = 0, own_start: int | None = None,
              tolerance: Tolerance | None = None) -> Pair:
    seller = SellerCore(SELLER_KEY)
    buyer = BuyerCore(BUYER_KEY, tolerance)
    offer, _ = seller.offer(offer_id=b"o" * 16, tariff=tariff, meter_id=METER,
                            start_units=start_units, now_ms=T0, expires_ms=T0 + 60_000)
    own = None
    if own_start is not None:
        buyer.on_own_reading(OWN_METER, own_start, T0)
        own = OWN_METER
    acc, _ = buyer.accept(Offer.from_wire(offer.to_wire()), T0 + 10, own_meter=own)
    seller.on_acceptance(Acceptance.from_wire(acc.to_wire()), T0 + 20)
    return Pair(seller, buyer)


def records(decisions: list[Decision]) -> list[Record]:
    return [d for d in decisions if isinstance(d, Record)]

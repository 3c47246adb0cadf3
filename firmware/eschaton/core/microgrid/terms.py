"""Tariffs, signed offers, signed acceptances and agreements.

Rules / theory of operation:
- Money is integers only. A tariff prices a *unit* (litre, kWh) in millisatoshi, and a meter
  counts *base units* (mL, Wh). The amount due for ``n`` base units is
      ``usage_sat(n) = floor(n * price_msat / (base_per_unit * 1000))``
  always computed on the CUMULATIVE count since the agreement's anchor, never per increment, so
  rounding never accumulates: the total billed is at most one satoshi below the exact value and
  never above it.
- The access fee is charged in arrears, per *completed* period since the agreement's anchor
  time: ``fees_sat(t) = fee_sat * floor((t - anchor_ms) / fee_period_ms)``. A period cut short
  by a renegotiation is not charged (favours the buyer, keeps the rule one line).
- An agreement = an offer signed by its proposer + an acceptance signed by the other party. The
  offer names the *anchor*: the invoice (sequence number, cumulative units, cumulative amount due,
  reading time) after which it applies. The first agreement anchors at sequence 0 with the
  seller's meter reading at the start and nothing due. A renegotiation names the previous
  agreement and anchors at the latest invoice, so it changes the price of future units only:
      ``due(units, t) = anchor_due_sat + usage_sat(units - anchor_units) + fees_sat(t)``
  and the cumulative amount due stays continuous across renegotiations (rounding restarts at each
  anchor: at most one satoshi per agreement in the buyer's favour).
- Identifiers: ``offer_hash = sha256(canonical(offer wire dict))``; ``agreement_id =
  sha256(domain || canonical(acceptance wire dict))`` (the acceptance names the offer hash, so
  the id binds both signatures).
"""
from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace

from nacl.signing import SigningKey

from eschaton.core.microgrid.canonical import Plain, encode
from eschaton.core.microgrid.errors import BadTerms, Expired, Malformed, StaleOffer
from eschaton.core.microgrid.fields import (
    HASH_LEN,
    MAX_INT,
    PUBKEY_LEN,
    SIG_LEN,
    Reader,
    pubkey_of,
    sha256,
    sign,
    verify,
)

VERSION = 1
OFFER_DOMAIN = b"eschaton/microgrid/offer/v1\x00"
ACCEPT_DOMAIN = b"eschaton/microgrid/acceptance/v1\x00"
AGREEMENT_DOMAIN = b"eschaton/microgrid/agreement/v1\x00"
MSAT_PER_SAT = 1000
MAX_PRICE_MSAT = 10**12
"""At most 1,000,000 sat per unit: far above any real price, and keeps products in 64+64 bits."""
OFFER_ID_LEN = 16


class Service(enum.Enum):
    WATER = "water"
    ELECTRICITY = "electricity"
    BANDWIDTH = "bandwidth"


UNITS: dict[tuple[Service, str, str], int] = {
    (Service.WATER, "litre", "mL"): 1000,
    (Service.WATER, "litre", "L"): 1,
    (Service.ELECTRICITY, "kWh", "Wh"): 1000,
    (Service.ELECTRICITY, "kWh", "kWh"): 1,
    (Service.BANDWIDTH, "MB", "B"): 1_000_000,
    (Service.BANDWIDTH, "GB", "B"): 1_000_000_000,
}
"""(service, priced unit, meter base unit) -> base units per priced unit. Only these pairs exist:
a typo in a unit must not silently change a price by a factor of 1000."""


@dataclass(frozen=True, slots=True)
class Tariff:
    """The economic terms of an offer."""

    service: Service
    unit: str
    """The priced unit: "litre", "kWh", "MB" or "GB" (decimal: 10**6 and 10**9 bytes)."""
    base_unit: str
    """What the meter counts: "mL", "L", "Wh", "kWh" or "B" (bytes)."""
    price_msat: int
    """Millisatoshi per priced unit."""
    fee_sat: int = 0
    """Access fee per completed period (0 = none)."""
    fee_period_ms: int = 0
    """Length of an access fee period; must be > 0 when ``fee_sat`` is."""
    credit_limit_sat: int = 0
    """Unpaid amount (due - paid) the seller tolerates; above it supply is cut. 0 = prepaid only."""
    pay_interval_ms: int = 0
    """Least time between two invoices (0 = invoice every reading that changes the amount)."""

    def __post_init__(self) -> None:
        if (self.service, self.unit, self.base_unit) not in UNITS:
            raise BadTerms(f"unknown unit pair {self.service.value}/{self.unit}/{self.base_unit}")
        if not 0 <= self.price_msat <= MAX_PRICE_MSAT:
            raise BadTerms(f"price_msat {self.price_msat} outside 0..{MAX_PRICE_MSAT}")
        for name in ("fee_sat", "fee_period_ms", "credit_limit_sat", "pay_interval_ms"):
            v = getattr(self, name)
            if not 0 <= v <= MAX_INT:
                raise BadTerms(f"{name} {v} outside 0..{MAX_INT}")
        if self.fee_sat and not self.fee_period_ms:
            raise BadTerms("an access fee needs a fee period")

    @property
    def base_per_unit(self) -> int:
        return UNITS[(self.service, self.unit, self.base_unit)]

    def usage_sat(self, base_units: int) -> int:
        """Satoshis due for ``base_units`` counted from the anchor (floor; see module rules)."""
        if base_units < 0:
            raise BadTerms("usage cannot be negative")
        return base_units * self.price_msat // (self.base_per_unit * MSAT_PER_SAT)

    def fees_sat(self, elapsed_ms: int) -> int:
        """Access fees for ``elapsed_ms`` since the anchor: completed periods only."""
        if not self.fee_sat or elapsed_ms <= 0:
            return 0
        return self.fee_sat * (elapsed_ms // self.fee_period_ms)

    def to_wire(self) -> dict[str, Plain]:
        return {
            "service": self.service.value, "unit": self.unit, "base_unit": self.base_unit,
            "base_per_unit": self.base_per_unit, "price_msat": self.price_msat,
            "fee_sat": self.fee_sat, "fee_period_ms": self.fee_period_ms,
            "credit_limit_sat": self.credit_limit_sat, "pay_interval_ms": self.pay_interval_ms,
        }

    @classmethod
    def read(cls, r: Reader) -> Tariff:
        service_name = r.text("service", 16)
        try:
            service = Service(service_name)
        except ValueError as exc:
            raise Malformed(f"unknown service {service_name!r}") from exc
        try:
            t = cls(service=service, unit=r.text("unit", 16), base_unit=r.text("base_unit", 16),
                    price_msat=r.uint("price_msat", 0, MAX_PRICE_MSAT),
                    fee_sat=r.uint("fee_sat"), fee_period_ms=r.uint("fee_period_ms"),
                    credit_limit_sat=r.uint("credit_limit_sat"),
                    pay_interval_ms=r.uint("pay_interval_ms"))
        except BadTerms as exc:
            raise Malformed(str(exc)) from exc
        if r.uint("base_per_unit") != t.base_per_unit:
            raise Malformed("base_per_unit does not match the unit pair")
        return t


@dataclass(frozen=True, slots=True)
class Anchor:
    """The invoice point after which an agreement applies."""

    seq: int
    """Sequence number of the last invoice under the previous terms (0 for a new contract)."""
    units: int
    """Cumulative meter reading (base units) at that point."""
    due_sat: int
    """Cumulative amount due at that point."""
    at_ms: int
    """Reading time at that point."""


@dataclass(frozen=True, slots=True)
class Offer:
    """Signed terms for one meter. Build with ``Offer.create``; parse with ``Offer.from_wire``."""

    offer_id: bytes
    tariff: Tariff
    meter_id: str
    seller: bytes
    buyer: bytes
    """The buyer's key, or b"" for an open offer anyone may accept (first agreement only)."""
    proposer: bytes
    expires_ms: int
    prev_agreement: bytes
    """b"" for a new contract, else the agreement this one supersedes."""
    anchor: Anchor
    sig: bytes

    def body(self) -> dict[str, Plain]:
        d = self.tariff.to_wire()
        d.update({
            "v": VERSION, "offer_id": self.offer_id, "meter_id": self.meter_id,
            "seller": self.seller, "buyer": self.buyer, "proposer": self.proposer,
            "expires_ms": self.expires_ms, "prev_agreement": self.prev_agreement,
            "anchor_seq": self.anchor.seq, "anchor_units": self.anchor.units,
            "anchor_due_sat": self.anchor.due_sat, "anchor_ms": self.anchor.at_ms,
        })
        return d

    def to_wire(self) -> dict[str, Plain]:
        d = self.body()
        d["sig"] = self.sig
        return d

    @property
    def offer_hash(self) -> bytes:
        return sha256(encode(self.to_wire()))

    @classmethod
    def create(cls, key: SigningKey, *, offer_id: bytes, tariff: Tariff, meter_id: str,
               seller: bytes, buyer: bytes, expires_ms: int, anchor: Anchor,
               prev_agreement: bytes = b"") -> Offer:
        """Sign new terms; the key's owner is the proposer (seller or buyer)."""
        unsigned = cls(offer_id=offer_id, tariff=tariff, meter_id=meter_id, seller=seller,
                       buyer=buyer, proposer=pubkey_of(key), expires_ms=expires_ms,
                       prev_agreement=prev_agreement, anchor=anchor, sig=b"")
        # Round-trip through the strict reader so we never sign what a peer would refuse.
        try:
            cls._parse(dict(unsigned.body(), sig=bytes(SIG_LEN)))
        except Malformed as exc:
            raise BadTerms(str(exc)) from exc
        if unsigned.proposer not in (seller, buyer):
            raise BadTerms("the proposer must be the seller or the buyer")
        sig = sign(key, OFFER_DOMAIN, unsigned.body())
        return replace(unsigned, sig=sig)

    @classmethod
    def _parse(cls, raw: object) -> Offer:
        r = Reader(raw, "offer")
        if r.uint("v") != VERSION:
            raise Malformed("offer: unsupported version")
        o = cls(
            offer_id=r.raw("offer_id", OFFER_ID_LEN), tariff=Tariff.read(r),
            meter_id=r.text("meter_id"), seller=r.raw("seller", PUBKEY_LEN),
            buyer=r.raw("buyer", 0, PUBKEY_LEN), proposer=r.raw("proposer", PUBKEY_LEN),
            expires_ms=r.uint("expires_ms"), prev_agreement=r.raw("prev_agreement", 0, HASH_LEN),
            anchor=Anchor(seq=r.uint("anchor_seq"), units=r.uint("anchor_units"),
                          due_sat=r.uint("anchor_due_sat"), at_ms=r.uint("anchor_ms")),
            sig=r.raw("sig", SIG_LEN),
        )
        r.done()
        if o.buyer == o.seller:
            raise Malformed("offer: seller and buyer are the same key")
        if o.prev_agreement and not o.buyer:
            raise Malformed("offer: a renegotiation names its buyer")
        if not o.prev_agreement and (o.anchor.seq != 0 or o.anchor.due_sat != 0):
            raise Malformed("offer: a new contract anchors at sequence 0 with nothing due")
        return o

    @classmethod
    def from_wire(cls, raw: object) -> Offer:
        """Parse and verify a peer's offer; raises ``Malformed`` or ``BadSignature``."""
        o = cls._parse(raw)
        if o.proposer not in (o.seller, o.buyer):
            raise Malformed("offer: the proposer is neither seller nor buyer")
        verify(o.proposer, OFFER_DOMAIN, o.body(), o.sig, "offer")
        return o


@dataclass(frozen=True, slots=True)
class Acceptance:
    """The counterparty's signature on an offer."""

    offer_hash: bytes
    acceptor: bytes
    accepted_ms: int
    sig: bytes

    def body(self) -> dict[str, Plain]:
        return {"v": VERSION, "offer_hash": self.offer_hash, "acceptor": self.acceptor,
                "accepted_ms": self.accepted_ms}

    def to_wire(self) -> dict[str, Plain]:
        return dict(self.body(), sig=self.sig)

    @classmethod
    def create(cls, key: SigningKey, offer: Offer, now_ms: int) -> Acceptance:
        body = cls(offer_hash=offer.offer_hash, acceptor=pubkey_of(key), accepted_ms=now_ms,
                   sig=b"")
        return cls(body.offer_hash, body.acceptor, body.accepted_ms,
                   sign(key, ACCEPT_DOMAIN, body.body()))

    @classmethod
    def from_wire(cls, raw: object) -> Acceptance:
        r = Reader(raw, "acceptance")
        if r.uint("v") != VERSION:
            raise Malformed("acceptance: unsupported version")
        a = cls(offer_hash=r.raw("offer_hash", HASH_LEN), acceptor=r.raw("acceptor", PUBKEY_LEN),
                accepted_ms=r.uint("accepted_ms"), sig=r.raw("sig", SIG_LEN))
        r.done()
        verify(a.acceptor, ACCEPT_DOMAIN, a.body(), a.sig, "acceptance")
        return a


@dataclass(frozen=True, slots=True)
class Agreement:
    """An offer and its acceptance, both verified. Build with ``Agreement.bind``."""

    offer: Offer
    acceptance: Acceptance

    @classmethod
    def bind(cls, offer: Offer, acceptance: Acceptance) -> Agreement:
        """Check that the acceptance accepts this offer, in time, by the right party."""
        if acceptance.offer_hash != offer.offer_hash:
            raise StaleOffer("acceptance names another offer")
        if acceptance.accepted_ms > offer.expires_ms:
            raise Expired("offer accepted after its expiry")
        if acceptance.acceptor == offer.proposer:
            raise StaleOffer("an offer cannot be accepted by its own proposer")
        expected = offer.buyer if offer.proposer == offer.seller else offer.seller
        if expected and acceptance.acceptor != expected:
            raise StaleOffer("acceptance signed by a party the offer does not name")
        return cls(offer, acceptance)

    @property
    def agreement_id(self) -> bytes:
        return sha256(AGREEMENT_DOMAIN + encode(self.acceptance.to_wire()))

    @property
    def seller(self) -> bytes:
        return self.offer.seller

    @property
    def buyer(self) -> bytes:
        return self.offer.buyer or self.acceptance.acceptor

    @property
    def tariff(self) -> Tariff:
        return self.offer.tariff

    @property
    def anchor(self) -> Anchor:
        return self.offer.anchor

    @property
    def meter_id(self) -> str:
        return self.offer.meter_id

    def due_at(self, units: int, at_ms: int) -> int:
        """Cumulative satoshis due at a cumulative meter reading (see module rules)."""
        a = self.anchor
        if units < a.units:
            raise BadTerms("reading below the agreement's anchor")
        return a.due_sat + self.tariff.usage_sat(units - a.units) + self.tariff.fees_sat(
            at_ms - a.at_ms)

    def to_wire(self) -> dict[str, Plain]:
        return {"offer": self.offer.to_wire(), "acceptance": self.acceptance.to_wire()}

    @classmethod
    def from_wire(cls, raw: object) -> Agreement:
        if not isinstance(raw, Mapping) or set(raw) != {"offer", "acceptance"}:
            raise Malformed("agreement: expected {offer, acceptance}")
        return cls.bind(Offer.from_wire(raw["offer"]), Acceptance.from_wire(raw["acceptance"]))

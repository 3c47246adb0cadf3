"""Signed cumulative invoices.

An invoice never says "pay N for this increment"; it says "under agreement A, at reading time T
the meter showed U base units in total and the total due is D". Everything is cumulative, so a
lost, duplicated or reordered invoice cannot make anyone pay twice: the buyer pays
``D - paid_so_far`` and refuses any invoice whose sequence number it has already passed.
"""
from __future__ import annotations

from dataclasses import dataclass

from nacl.signing import SigningKey

from eschaton.core.microgrid.canonical import Plain, encode
from eschaton.core.microgrid.errors import Malformed
from eschaton.core.microgrid.fields import HASH_LEN, SIG_LEN, Reader, sha256, sign, verify
from eschaton.core.microgrid.terms import VERSION

INVOICE_DOMAIN = b"eschaton/microgrid/invoice/v1\x00"


@dataclass(frozen=True, slots=True)
class Invoice:
    agreement_id: bytes
    """The agreement whose tariff prices this invoice."""
    seq: int
    """Per-contract sequence number, strictly increasing across renegotiations, from 1."""
    meter_id: str
    cum_units: int
    """Cumulative meter reading in base units (the meter's own counter)."""
    cum_due_sat: int
    """Total satoshis due since the contract began, per the agreements' rounding rule."""
    reading_ms: int
    """When the meter was read (ms since the epoch)."""
    sig: bytes
    """The seller's ed25519 signature."""

    def body(self) -> dict[str, Plain]:
        return {"v": VERSION, "agreement_id": self.agreement_id, "seq": self.seq,
                "meter_id": self.meter_id, "cum_units": self.cum_units,
                "cum_due_sat": self.cum_due_sat, "reading_ms": self.reading_ms}

    def to_wire(self) -> dict[str, Plain]:
        return dict(self.body(), sig=self.sig)

    @property
    def invoice_id(self) -> bytes:
        """sha256 of the canonical signed invoice: the reference a payment names."""
        return sha256(encode(self.to_wire()))

    @classmethod
    def create(cls, key: SigningKey, *, agreement_id: bytes, seq: int, meter_id: str,
               cum_units: int, cum_due_sat: int, reading_ms: int) -> Invoice:
        unsigned = cls(agreement_id, seq, meter_id, cum_units, cum_due_sat, reading_ms, b"")
        return cls(agreement_id, seq, meter_id, cum_units, cum_due_sat, reading_ms,
                   sign(key, INVOICE_DOMAIN, unsigned.body()))

    @classmethod
    def from_wire(cls, raw: object) -> Invoice:
        """Parse (not verify: the signer's key comes from the agreement). Raises ``Malformed``."""
        r = Reader(raw, "invoice")
        if r.uint("v") != VERSION:
            raise Malformed("invoice: unsupported version")
        inv = cls(agreement_id=r.raw("agreement_id", HASH_LEN), seq=r.uint("seq", 1),
                  meter_id=r.text("meter_id"), cum_units=r.uint("cum_units"),
                  cum_due_sat=r.uint("cum_due_sat"), reading_ms=r.uint("reading_ms"),
                  sig=r.raw("sig", SIG_LEN))
        r.done()
        return inv

    def verify(self, seller: bytes) -> None:
        """Raises ``BadSignature`` unless ``seller`` signed this invoice."""
        verify(seller, INVOICE_DOMAIN, self.body(), self.sig, "invoice")

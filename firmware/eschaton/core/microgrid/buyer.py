"""The buyer's side: accept terms, check every invoice, pay exactly what is owed, no more.

Rules / theory of operation:
- An invoice is accepted only if, in this order: it parses strictly; its meter and agreement are
  ours and current; the seller's signature verifies; its sequence number is above the last
  accepted one (else ``Replayed``); units, amount and reading time never decrease; the reading is
  not from the future (beyond ``Tolerance.max_clock_skew_ms``); the amount equals the agreed
  tariff applied to the units exactly (``Agreement.due_at``); and, when we have our own meter on
  the connection, the units since the contract began do not exceed what our meter counted over
  the same span plus the tolerance. Any failure is a typed ``Refusal``: recorded in the ledger
  as ``invoice_refused`` with its reason, returned as ``Refused``; nothing is paid.
- Payment: we pay ``cumulative_due - cumulative_paid`` where ``cumulative_paid`` counts every
  payment we recorded as sent (including ones not yet confirmed). The ``payment_sent`` entry is
  recorded BEFORE the ``Pay`` action runs, so after a crash the ledger never under-counts what
  may have left: a replayed or repeated invoice pays 0, and ``pending_payments()`` lists the
  payments whose outcome the node must check with the trade channel (same deterministic
  ``payment_id``). ``on_payment_failed`` gives the amount back: it is paid with the next
  invoice, or at once by ``pay_outstanding``. Payment ids are ``sha256(domain || ref ||
  canonical(n))`` with ``n`` the number of payments recorded before: unique and rebuilt
  identically from the ledger.
- Renegotiation: we accept the seller's new terms only when they are anchored exactly at the
  last invoice we accepted; our own proposals are anchored there too. Terms apply to future
  units only (see ``terms``). If the seller's next invoice still names the previous agreement
  with a sequence number past the anchor (our acceptance reached it too late), the
  renegotiation lapsed: we record ``renegotiation_lapsed`` and continue under the old terms.
- State changes only through ``apply(entry)``; ``BuyerCore.restore`` replays a ledger. Our own
  meter's latest reading is not recorded (the meter is cumulative; feed a fresh reading after a
  restart before handling invoices). ``checkpoint`` records the whole state in one entry, after
  which the older entries may be archived (see ``ledger``).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from nacl.signing import SigningKey

from eschaton.core.microgrid.canonical import Plain, decode, encode
from eschaton.core.microgrid.decisions import Decision, Pay, Record, Refused
from eschaton.core.microgrid.errors import (
    BadTerms,
    CumulativeDecreased,
    Expired,
    FromTheFuture,
    IllegalTransition,
    MeterRegression,
    MicrogridError,
    OverMetered,
    Refusal,
    Replayed,
    StaleOffer,
    UnknownAgreement,
    UnknownContract,
    WrongAgreement,
    WrongAmount,
)
from eschaton.core.microgrid.fields import pubkey_of, sha256
from eschaton.core.microgrid.invoice import Invoice
from eschaton.core.microgrid.ledger import (
    Entry,
    EntryKind,
    body_bytes,
    body_dict,
    body_int,
    body_list,
    body_text,
)
from eschaton.core.microgrid.terms import Acceptance, Agreement, Anchor, Offer, Tariff

PAY_DOMAIN = b"eschaton/microgrid/payment/v1\x00"
PPM = 1_000_000
RAW_LOG_LIMIT = 512


@dataclass(frozen=True, slots=True)
class Tolerance:
    """How far an invoice may exceed our own meter before we refuse it."""

    abs_units: int = 0
    """Base units the seller's count may exceed ours by (meter resolution, reading skew)."""
    rel_ppm: int = 0
    """Plus this many parts per million of what our meter counted (meter accuracy class)."""
    max_clock_skew_ms: int = 5000
    """How far ahead of our clock an invoice's reading time may be."""


@dataclass(frozen=True, slots=True)
class BuyerStatus:
    meter_id: str
    agreement_id: bytes
    last_seq: int
    accepted_units: int
    accepted_due_sat: int
    paid_sat: int
    """Everything recorded as sent, confirmed or not."""
    pending_sat: int
    """Sent but not yet confirmed by the channel."""


class _Contract:
    __slots__ = ("agreements", "last", "paid", "pending", "own_meter", "own_start",
                 "seller_start", "proposal", "sent", "last_invoice_id")

    def __init__(self, agreement: Agreement, own_meter: str, own_start: int) -> None:
        self.agreements = [agreement]
        self.last: Anchor = agreement.anchor
        self.paid = 0
        self.pending: dict[bytes, Pay] = {}
        self.own_meter = own_meter
        self.own_start = own_start
        self.seller_start = agreement.anchor.units
        self.proposal: Offer | None = None
        self.sent = 0  # payments ever recorded as sent: makes every payment id unique
        self.last_invoice_id = b""

    @property
    def current(self) -> Agreement:
        return self.agreements[-1]

    def to_plain(self) -> dict[str, Plain]:
        # Signed objects travel as their canonical bytes: the codec bounds nesting depth.
        a, prop = self.last, self.proposal
        return {"agreements": [encode(ag.to_wire()) for ag in self.agreements],
                "last": [a.seq, a.units, a.due_sat, a.at_ms], "paid": self.paid,
                "pending": [[p.payment_id, p.ref, p.amount_sat] for p in self.pending.values()],
                "own_meter": self.own_meter, "own_start": self.own_start,
                "seller_start": self.seller_start,
                "proposal": [] if prop is None else [encode(prop.to_wire())],
                "sent": self.sent, "last_invoice_id": self.last_invoice_id}

    @classmethod
    def from_plain(cls, meter_id: str, v: Plain) -> _Contract:
        d = body_dict(v)
        ags = [Agreement.from_wire(decode(body_bytes(x))) for x in body_list(d["agreements"])]
        c = cls(ags[0], body_text(d["own_meter"]), body_int(d["own_start"]))
        c.agreements = ags
        c.last = Anchor(*(body_int(x) for x in body_list(d["last"])))
        c.paid = body_int(d["paid"])
        for item in body_list(d["pending"]):
            pid, ref, amount = body_list(item)
            c.pending[body_bytes(pid)] = Pay(meter_id, body_bytes(pid), body_bytes(ref), body_int(amount))
        c.seller_start = body_int(d["seller_start"])
        c.proposal = next((Offer.from_wire(decode(body_bytes(x))) for x in body_list(d["proposal"])), None)
        c.sent = body_int(d["sent"])
        c.last_invoice_id = body_bytes(d["last_invoice_id"])
        return c


class BuyerCore:
    """Sans-IO buyer. Feed it offers, invoices, own-meter readings and payment outcomes."""

    def __init__(self, key: SigningKey, tolerance: Tolerance | None = None) -> None:
        self._key = key
        self.pubkey = pubkey_of(key)
        self.tolerance = tolerance or Tolerance()
        self._contracts: dict[str, _Contract] = {}
        self._own: dict[str, tuple[int, int]] = {}

    @classmethod
    def restore(cls, key: SigningKey, entries: Iterable[Entry],
                tolerance: Tolerance | None = None) -> BuyerCore:
        core = cls(key, tolerance)
        for e in entries:
            core.apply(e)
        return core

    # --- terms -----------------------------------------------------------------------------

    def on_own_reading(self, meter_id: str, cum_units: int, reading_ms: int) -> None:
        """A reading of our own meter on a connection (base units, cumulative)."""
        prev = self._own.get(meter_id)
        if prev is not None and (cum_units < prev[0] or reading_ms < prev[1]):
            raise MeterRegression(f"own meter {meter_id} went backwards")
        self._own[meter_id] = (cum_units, reading_ms)

    def accept(self, offer: Offer, now_ms: int, *,
               own_meter: str | None = None) -> tuple[Acceptance, list[Decision]]:
        """Accept the seller's ``offer`` (verified by ``Offer.from_wire``); our policy decided
        the terms are fine. ``own_meter`` names our meter on this connection, whose latest
        reading becomes its starting point for the over-metering check."""
        if now_ms > offer.expires_ms:
            raise Expired("offer expired")
        if offer.proposer != offer.seller or offer.buyer not in (b"", self.pubkey):
            raise StaleOffer("not a seller's offer to us")
        c = self._contracts.get(offer.meter_id)
        if not offer.prev_agreement:
            if c is not None:
                raise StaleOffer(f"meter {offer.meter_id} already has a contract")
        else:
            if c is None or offer.prev_agreement != c.current.agreement_id:
                raise StaleOffer("renegotiation of an agreement that is not our current one")
            if offer.seller != c.current.seller or offer.tariff.service != c.current.tariff.service:
                raise StaleOffer("renegotiation changes the seller or the service")
            if offer.anchor != c.last:
                raise StaleOffer("renegotiation is not anchored at our last accepted invoice")
        acc = Acceptance.create(self._key, offer, now_ms)
        agreement = Agreement.bind(offer, acc)
        if offer.prev_agreement:
            entry = Entry(EntryKind.RENEGOTIATION, now_ms, {"agreement": agreement.to_wire()})
        else:
            own_start = 0
            if own_meter is not None:
                if own_meter not in self._own:
                    raise MicrogridError(f"read own meter {own_meter} before accepting")
                own_start = self._own[own_meter][0]
            entry = Entry(EntryKind.AGREEMENT, now_ms, {
                "agreement": agreement.to_wire(), "own_meter": own_meter or "",
                "own_start": own_start})
        return acc, [self._commit(entry)]

    def propose(self, meter_id: str, *, offer_id: bytes, tariff: Tariff, now_ms: int,
                expires_ms: int) -> tuple[Offer, list[Decision]]:
        """Propose new terms to the seller, anchored at our last accepted invoice."""
        c = self._contract(meter_id)
        cur = c.current
        if tariff.service != cur.tariff.service:
            raise BadTerms("a renegotiation cannot change the service")
        o = Offer.create(self._key, offer_id=offer_id, tariff=tariff, meter_id=meter_id,
                         seller=cur.seller, buyer=self.pubkey, expires_ms=expires_ms,
                         anchor=c.last, prev_agreement=cur.agreement_id)
        return o, [self._commit(Entry(EntryKind.OFFER_MADE, now_ms, {"offer": o.to_wire()}))]

    def on_acceptance(self, acceptance: Acceptance, now_ms: int) -> list[Decision]:
        """The seller accepted our proposal."""
        c = next((c for c in self._contracts.values() if c.proposal is not None
                  and c.proposal.offer_hash == acceptance.offer_hash), None)
        if c is None or c.proposal is None:
            raise UnknownAgreement("acceptance of an offer we did not make")
        # No check of now_ms against the expiry: the seller dated its signature no later than
        # the expiry (Agreement.bind) and has switched terms; a slow link must not split us.
        if c.proposal.anchor != c.last:
            raise StaleOffer("we accepted invoices after proposing; propose again")
        agreement = Agreement.bind(c.proposal, acceptance)
        return [self._commit(Entry(EntryKind.RENEGOTIATION, now_ms,
                                   {"agreement": agreement.to_wire()}))]

    # --- invoices and payments -------------------------------------------------------------

    def on_invoice(self, raw: object, now_ms: int) -> list[Decision]:
        """Check a seller's invoice (its wire dict, or an ``Invoice``) and pay what is owed."""
        inv: Invoice | None = raw if isinstance(raw, Invoice) else None
        try:
            if inv is None:
                inv = Invoice.from_wire(raw)
            c = self._check(inv, now_ms)
        except Refusal as err:
            return self._refuse(err, inv, raw, now_ms)
        out: list[Decision] = []
        if inv.agreement_id != c.current.agreement_id:  # _check allowed it: a lapse
            out.append(self._commit(Entry(EntryKind.RENEGOTIATION_LAPSED, now_ms, {
                "meter_id": inv.meter_id, "agreement_id": c.current.agreement_id})))
        out.append(self._commit(Entry(EntryKind.INVOICE_ACCEPTED, now_ms,
                                      {"invoice": inv.to_wire()})))
        owed = inv.cum_due_sat - c.paid
        if owed > 0:
            out += self._pay(c, inv.meter_id, inv.invoice_id, owed, now_ms)
        return out

    @staticmethod
    def _lapsed(c: _Contract, inv: Invoice) -> bool:
        """The seller invoiced under the previous agreement after the anchor of the current one,
        before any invoice under the current one: it never saw our acceptance in time, so the
        renegotiation did not take effect (the seller refuses the late acceptance too)."""
        cur = c.current
        return (len(c.agreements) >= 2 and inv.agreement_id == c.agreements[-2].agreement_id
                and c.last.seq == cur.anchor.seq and inv.seq > cur.anchor.seq)

    def _check(self, inv: Invoice, now_ms: int) -> _Contract:
        c = self._contracts.get(inv.meter_id)
        if c is None:
            raise UnknownAgreement(f"no contract for meter {inv.meter_id}")
        ids = [a.agreement_id for a in c.agreements]
        if inv.agreement_id not in ids:
            raise UnknownAgreement("invoice names an agreement we do not have")
        inv.verify(c.current.seller)
        if inv.seq <= c.last.seq:
            raise Replayed(f"invoice {inv.seq} is not after the last accepted {c.last.seq}")
        agreement = c.current
        if inv.agreement_id != agreement.agreement_id:
            if not self._lapsed(c, inv):
                raise WrongAgreement("invoice priced under superseded terms")
            agreement = c.agreements[-2]
        if (inv.cum_units < c.last.units or inv.cum_due_sat < c.last.due_sat
                or inv.reading_ms < c.last.at_ms):
            raise CumulativeDecreased("units, amount or reading time went down")
        if inv.reading_ms > now_ms + self.tolerance.max_clock_skew_ms:
            raise FromTheFuture(f"reading time {inv.reading_ms} is ahead of now {now_ms}")
        expected = agreement.due_at(inv.cum_units, inv.reading_ms)
        if inv.cum_due_sat != expected:
            raise WrongAmount(f"amount {inv.cum_due_sat} sat, the tariff gives {expected} sat")
        if c.own_meter:
            own_now = self._own.get(c.own_meter, (c.own_start, 0))[0]
            own = own_now - c.own_start
            allowed = own + self.tolerance.abs_units + own * self.tolerance.rel_ppm // PPM
            claimed = inv.cum_units - c.seller_start
            if claimed > allowed:
                raise OverMetered(f"invoiced {claimed} units, our meter allows {allowed}")
        return c

    def _refuse(self, err: Refusal, inv: Invoice | None, raw: object,
                now_ms: int) -> list[Decision]:
        body: dict[str, Plain] = {"reason": err.reason, "detail": str(err)[:RAW_LOG_LIMIT]}
        if inv is not None:
            body["invoice"] = inv.to_wire()
        else:
            body["raw"] = repr(raw)[:RAW_LOG_LIMIT]
        entry = Entry(EntryKind.INVOICE_REFUSED, now_ms, body)
        return [self._commit(entry), Refused(err)]

    def prepay(self, meter_id: str, amount_sat: int, now_ms: int) -> list[Decision]:
        """Pay ahead (prepaid credit); the seller counts it against future usage."""
        if amount_sat <= 0:
            raise MicrogridError("a prepayment must be positive")
        c = self._contract(meter_id)
        return self._pay(c, meter_id, c.current.agreement_id, amount_sat, now_ms)

    def pay_outstanding(self, meter_id: str, now_ms: int) -> list[Decision]:
        """Pay what the last accepted invoice still leaves owing (after a failed payment, when
        no newer invoice is coming because the meter stopped). Nothing if nothing is owed."""
        c = self._contract(meter_id)
        owed = c.last.due_sat - c.paid
        if owed <= 0:
            return []
        return self._pay(c, meter_id, c.last_invoice_id or c.current.agreement_id, owed, now_ms)

    def _pay(self, c: _Contract, meter_id: str, ref: bytes, amount: int,
             now_ms: int) -> list[Decision]:
        # Deterministic (a restart rebuilds the same counter) and never reused.
        pid = sha256(PAY_DOMAIN + ref + encode(c.sent))
        pay = Pay(meter_id, pid, ref, amount)
        rec = self._commit(Entry(EntryKind.PAYMENT_SENT, now_ms, {
            "meter_id": meter_id, "payment_id": pid, "ref": ref, "amount_sat": amount}))
        return [rec, pay]

    def on_payment_confirmed(self, payment_id: bytes, now_ms: int) -> list[Decision]:
        """The channel settled this payment. Unknown or already settled ids are ignored."""
        meter_id = self._pending_meter(payment_id)
        if meter_id is None:
            return []
        return [self._commit(Entry(EntryKind.PAYMENT_CONFIRMED, now_ms, {
            "meter_id": meter_id, "payment_id": payment_id}))]

    def on_payment_failed(self, payment_id: bytes, now_ms: int) -> list[Decision]:
        """The channel could not pay: the amount is owed again (paid on the next invoice)."""
        meter_id = self._pending_meter(payment_id)
        if meter_id is None:
            return []
        return [self._commit(Entry(EntryKind.PAYMENT_FAILED, now_ms, {
            "meter_id": meter_id, "payment_id": payment_id}))]

    def pending_payments(self) -> list[Pay]:
        """Payments recorded as sent whose outcome is unknown (check them after a restart)."""
        return [p for _, c in sorted(self._contracts.items()) for p in c.pending.values()]

    def _pending_meter(self, payment_id: bytes) -> str | None:
        return next((m for m, c in self._contracts.items() if payment_id in c.pending), None)

    # --- queries ---------------------------------------------------------------------------

    def meters(self) -> list[str]:
        return sorted(self._contracts)

    def agreement(self, meter_id: str) -> Agreement:
        return self._contract(meter_id).current

    def status(self, meter_id: str) -> BuyerStatus:
        c = self._contract(meter_id)
        return BuyerStatus(meter_id=meter_id, agreement_id=c.current.agreement_id,
                           last_seq=c.last.seq, accepted_units=c.last.units,
                           accepted_due_sat=c.last.due_sat, paid_sat=c.paid,
                           pending_sat=sum(p.amount_sat for p in c.pending.values()))

    def _contract(self, meter_id: str) -> _Contract:
        c = self._contracts.get(meter_id)
        if c is None:
            raise UnknownContract(f"no agreement covers meter {meter_id}")
        return c

    # --- state changes: only here ----------------------------------------------------------

    def _commit(self, entry: Entry) -> Record:
        self.apply(entry)
        return Record(entry)

    def snapshot(self) -> dict[str, Plain]:
        """The whole recorded state as plain values (the body of a checkpoint entry)."""
        return {"contracts": {m: c.to_plain() for m, c in self._contracts.items()}}

    def checkpoint(self, now_ms: int) -> list[Decision]:
        """Record the whole state, so the entries before this one can be archived."""
        return [self._commit(Entry(EntryKind.CHECKPOINT, now_ms, {"state": self.snapshot()}))]

    def apply(self, entry: Entry) -> None:
        """Apply one ledger entry to the state (used live and when restoring)."""
        b = entry.body
        k = entry.kind
        if k is EntryKind.AGREEMENT:
            ag = Agreement.from_wire(b["agreement"])
            self._contracts[ag.meter_id] = _Contract(
                ag, body_text(b["own_meter"]) if b["own_meter"] else "", body_int(b["own_start"]))
        elif k is EntryKind.RENEGOTIATION:
            ag = Agreement.from_wire(b["agreement"])
            c = self._contracts[ag.meter_id]
            c.agreements.append(ag)
            c.proposal = None
        elif k is EntryKind.RENEGOTIATION_LAPSED:
            c = self._contracts[body_text(b["meter_id"])]
            if c.current.agreement_id != body_bytes(b["agreement_id"]) or len(c.agreements) < 2:
                raise IllegalTransition("lapse of an agreement that is not the current one")
            c.agreements.pop()
        elif k is EntryKind.OFFER_MADE:
            o = Offer.from_wire(b["offer"])
            self._contracts[o.meter_id].proposal = o
        elif k is EntryKind.INVOICE_ACCEPTED:
            inv = Invoice.from_wire(b["invoice"])
            c = self._contracts[inv.meter_id]
            c.last = Anchor(inv.seq, inv.cum_units, inv.cum_due_sat, inv.reading_ms)
            c.last_invoice_id = inv.invoice_id
        elif k is EntryKind.INVOICE_REFUSED:
            pass  # a refusal changes nothing: that is the point
        elif k is EntryKind.PAYMENT_SENT:
            c = self._contracts[body_text(b["meter_id"])]
            pay = Pay(body_text(b["meter_id"]), body_bytes(b["payment_id"]), body_bytes(b["ref"]),
                      body_int(b["amount_sat"]))
            c.paid += pay.amount_sat
            c.pending[pay.payment_id] = pay
            c.sent += 1
        elif k is EntryKind.PAYMENT_CONFIRMED:
            self._contracts[body_text(b["meter_id"])].pending.pop(body_bytes(b["payment_id"]))
        elif k is EntryKind.PAYMENT_FAILED:
            c = self._contracts[body_text(b["meter_id"])]
            c.paid -= c.pending.pop(body_bytes(b["payment_id"])).amount_sat
        elif k is EntryKind.CHECKPOINT:
            self._contracts = {m: _Contract.from_plain(m, v)
                               for m, v in body_dict(body_dict(b["state"])["contracts"]).items()}
        else:
            raise IllegalTransition(f"a buyer ledger has no {k.value} entries")

"""The seller's side of a metered supply: offers, cumulative invoices, payments, cut/restore.

Rules / theory of operation:
- One contract per meter: the meter measures what flows to one buyer. A contract is a chain of
  agreements (the first, then each renegotiation), each anchored at an invoice (see ``terms``).
- ``on_reading`` prices the cumulative reading under the current agreement. An invoice is issued
  when the amount or units changed and either ``pay_interval_ms`` has passed since the last
  invoice's reading or supply is about to be cut (so the buyer always holds an invoice for the
  amount that got it cut). While our own renegotiation offer is outstanding, invoicing is held
  (the offer is anchored at our latest invoice, so no invoice may follow it under the old terms).
- Credit: ``unpaid = cumulative due - cumulative paid``; a negative value is prepaid credit. The
  moment a reading makes ``unpaid > credit_limit_sat`` while supply is on, the core emits
  ``CutSupply`` with a deadline of now + 1 s. When payments (or a renegotiated, higher limit)
  bring ``unpaid <= credit_limit_sat`` again, it emits ``RestoreSupply``. There is no grace period: the credit limit itself is the
  grace (size it to cover one pay interval plus a payment round trip), which keeps the rule
  exact and the buyer's exposure bounded by one number both sides signed.
- A renegotiation acceptance is honoured whenever it arrives, as long as it was signed before the
  offer's expiry and we have not invoiced since its anchor; otherwise it lapsed (``StaleOffer``),
  and the buyer, seeing our next invoice still under the previous agreement, drops it as well.
- Payments are idempotent by payment id: a payment event delivered twice counts once. The
  state stays bounded however long a contract runs: the last ``PAYMENT_WINDOW`` payment ids are
  remembered (a redelivery comes after a reconnect, long before that many newer payments; past
  it, the node's cap of credit at what the trade channel really moved still stops a double
  credit), and a payment names an invoice among the contract's last ``REF_WINDOW`` ones, its
  agreement, or else is credited to the meter it names (``meter_hint``) if that meter's buyer
  is the payer.
- ``checkpoint`` records the whole state in one entry (see ``ledger``), after which the older
  entries may be archived: a restart then replays from the checkpoint.
- State changes only through ``apply(entry)``; every public method builds entries, applies them
  and returns them as ``Record`` decisions ahead of the actions, so ``SellerCore.restore(key,
  ledger entries)`` rebuilds the same state after a restart. The one exception is the latest
  meter reading, which is not recorded (too frequent): the meter is cumulative, so the first
  reading after a restart brings it back and nothing is lost.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from nacl.signing import SigningKey

from eschaton.core.microgrid.canonical import Plain, decode, encode
from eschaton.core.microgrid.decisions import (
    ACTUATION_DEADLINE_MS,
    CutSupply,
    Decision,
    Record,
    RestoreSupply,
    SendInvoice,
)
from eschaton.core.microgrid.errors import (
    BadTerms,
    Expired,
    IllegalTransition,
    MeterRegression,
    MicrogridError,
    StaleOffer,
    UnknownAgreement,
    UnknownContract,
)
from eschaton.core.microgrid.fields import pubkey_of
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
from eschaton.core.microgrid.supply import SupplyState, transition
from eschaton.core.microgrid.terms import Acceptance, Agreement, Anchor, Offer, Tariff

REF_WINDOW = 1024
"""Invoice ids per contract that a payment may name (older ones: credited by meter)."""
PAYMENT_WINDOW = 4096
"""Payment ids remembered, to ignore a payment delivered again."""
ACCEPT_LATENESS_MS = 60_000
"""How long after its expiry an acceptance of a new-contract offer may still arrive (transit
delay; the buyer's signature must still date it no later than the expiry)."""


@dataclass(frozen=True, slots=True)
class ContractStatus:
    """A read-only summary of one contract (for the API, the CLI and tests)."""

    meter_id: str
    agreement_id: bytes
    last_seq: int
    invoiced_units: int
    invoiced_due_sat: int
    metered_units: int
    metered_due_sat: int
    paid_sat: int
    unpaid_sat: int
    """Metered due minus paid; negative means prepaid credit."""
    supply: SupplyState


class _Contract:
    __slots__ = ("agreements", "last", "metered_units", "metered_ms", "metered_due", "paid",
                 "supply", "pending", "last_invoice", "invoice_ids")

    def __init__(self, agreement: Agreement) -> None:
        self.agreements = [agreement]
        a = agreement.anchor
        self.last = a  # the latest invoice (or the anchor before any invoice)
        self.metered_units, self.metered_ms, self.metered_due = a.units, a.at_ms, a.due_sat
        self.paid = 0
        self.supply = SupplyState.ON
        self.pending: Offer | None = None
        self.last_invoice: Invoice | None = None
        self.invoice_ids: deque[bytes] = deque()  # the newest REF_WINDOW, oldest first

    @property
    def current(self) -> Agreement:
        return self.agreements[-1]

    def to_plain(self) -> dict[str, Plain]:
        # Signed objects travel as their canonical bytes: the codec bounds nesting depth.
        a, pending, inv = self.last, self.pending, self.last_invoice
        return {"agreements": [encode(ag.to_wire()) for ag in self.agreements],
                "last": [a.seq, a.units, a.due_sat, a.at_ms],
                "metered": [self.metered_units, self.metered_ms, self.metered_due],
                "paid": self.paid, "supply": self.supply.value,
                "pending": [] if pending is None else [encode(pending.to_wire())],
                "last_invoice": [] if inv is None else [encode(inv.to_wire())],
                "invoice_ids": list(self.invoice_ids)}

    @classmethod
    def from_plain(cls, v: Plain) -> _Contract:
        d = body_dict(v)
        ags = [Agreement.from_wire(decode(body_bytes(x))) for x in body_list(d["agreements"])]
        c = cls(ags[0])
        c.agreements = ags
        c.last = Anchor(*(body_int(x) for x in body_list(d["last"])))
        c.metered_units, c.metered_ms, c.metered_due = (body_int(x) for x in body_list(d["metered"]))
        c.paid = body_int(d["paid"])
        c.supply = SupplyState(body_text(d["supply"]))
        c.pending = next((Offer.from_wire(decode(body_bytes(x))) for x in body_list(d["pending"])), None)
        c.last_invoice = next((Invoice.from_wire(decode(body_bytes(x)))
                               for x in body_list(d["last_invoice"])), None)
        c.invoice_ids = deque(body_bytes(x) for x in body_list(d["invoice_ids"]))
        return c


class SellerCore:
    """Sans-IO seller. Feed it readings, acceptances and payments with ``now_ms``."""

    def __init__(self, key: SigningKey) -> None:
        self._key = key
        self.pubkey = pubkey_of(key)
        self._contracts: dict[str, _Contract] = {}
        self._new_offers: dict[bytes, Offer] = {}
        self._refs: dict[bytes, str] = {}
        self._payment_ids: dict[bytes, None] = {}  # insertion-ordered: the oldest goes first

    @classmethod
    def restore(cls, key: SigningKey, entries: Iterable[Entry]) -> SellerCore:
        """Rebuild the state a ledger describes (entries in ledger order)."""
        core = cls(key)
        for e in entries:
            core.apply(e)
        return core

    # --- offers and agreements -------------------------------------------------------------

    def offer(self, *, offer_id: bytes, tariff: Tariff, meter_id: str, start_units: int,
              now_ms: int, expires_ms: int, buyer: bytes = b"") -> tuple[Offer, list[Decision]]:
        """Publish signed terms for a meter with no contract yet (``buyer`` b"" = open offer)."""
        if meter_id in self._contracts:
            raise MicrogridError(f"meter {meter_id} already has a contract; renegotiate instead")
        o = Offer.create(self._key, offer_id=offer_id, tariff=tariff, meter_id=meter_id,
                         seller=self.pubkey, buyer=buyer, expires_ms=expires_ms,
                         anchor=Anchor(0, start_units, 0, now_ms))
        return o, [self._commit(Entry(EntryKind.OFFER_MADE, now_ms, {"offer": o.to_wire()}))]

    def renegotiate(self, meter_id: str, *, offer_id: bytes, tariff: Tariff, now_ms: int,
                    expires_ms: int) -> tuple[Offer, list[Decision]]:
        """Offer new terms for future units, anchored at our latest invoice (holds invoicing)."""
        c = self._contract(meter_id)
        cur = c.current
        if tariff.service != cur.tariff.service:
            raise BadTerms("a renegotiation cannot change the service")
        if c.pending is not None and now_ms <= c.pending.expires_ms:
            raise MicrogridError("our previous renegotiation offer is still open")
        o = Offer.create(self._key, offer_id=offer_id, tariff=tariff, meter_id=meter_id,
                         seller=self.pubkey, buyer=cur.buyer, expires_ms=expires_ms,
                         anchor=c.last, prev_agreement=cur.agreement_id)
        return o, [self._commit(Entry(EntryKind.OFFER_MADE, now_ms, {"offer": o.to_wire()}))]

    def on_acceptance(self, acceptance: Acceptance, now_ms: int) -> list[Decision]:
        """The buyer accepted one of our offers. Raises a ``Refusal`` if it does not fit."""
        h = acceptance.offer_hash
        offer = self._new_offers.get(h)
        if offer is None:
            offer = next((c.pending for c in self._contracts.values()
                          if c.pending is not None and c.pending.offer_hash == h), None)
        if offer is None:
            raise UnknownAgreement("acceptance of an offer we did not make (or already settled)")
        agreement = Agreement.bind(offer, acceptance)  # signed no later than the expiry
        if not offer.prev_agreement:
            if offer.meter_id in self._contracts:
                raise StaleOffer(f"meter {offer.meter_id} was taken by another acceptance")
            if now_ms > offer.expires_ms + ACCEPT_LATENESS_MS:
                raise Expired("acceptance arrived long after the offer expired")
        elif offer.anchor != self._contracts[offer.meter_id].last:
            # We invoiced under the old terms after the hold ended: the renegotiation lapsed
            # (the buyer sees our next invoice under the old agreement and drops it too).
            raise StaleOffer("acceptance arrived after we resumed invoicing under the old terms")
        out = [self._commit(self._agreement_entry(agreement, now_ms))]
        return out + self._maybe_restore(offer.meter_id, now_ms)

    def accept(self, offer: Offer, now_ms: int) -> tuple[Acceptance, list[Decision]]:
        """Accept the buyer's renegotiation ``offer`` (verified by ``Offer.from_wire``).

        Whether the terms are acceptable is the caller's policy; this checks they fit the
        contract: same parties, meter and service, anchored exactly at our latest invoice.
        """
        c = self._contract(offer.meter_id)
        cur = c.current
        if now_ms > offer.expires_ms:
            raise Expired("offer expired")
        if (offer.prev_agreement != cur.agreement_id or offer.seller != self.pubkey
                or offer.buyer != cur.buyer or offer.proposer != cur.buyer
                or offer.tariff.service != cur.tariff.service):
            raise StaleOffer("offer does not continue the current agreement")
        if offer.anchor != c.last or (c.pending is not None and now_ms <= c.pending.expires_ms):
            raise StaleOffer("offer is not anchored at our latest invoice")
        acc = Acceptance.create(self._key, offer, now_ms)
        agreement = Agreement.bind(offer, acc)
        out = [self._commit(self._agreement_entry(agreement, now_ms))]
        return acc, out + self._maybe_restore(offer.meter_id, now_ms)

    def _agreement_entry(self, agreement: Agreement, now_ms: int) -> Entry:
        kind = EntryKind.RENEGOTIATION if agreement.offer.prev_agreement else EntryKind.AGREEMENT
        return Entry(kind, now_ms, {"agreement": agreement.to_wire()})

    # --- metering and payments -------------------------------------------------------------

    def on_reading(self, meter_id: str, cum_units: int, reading_ms: int,
                   now_ms: int) -> list[Decision]:
        """A cumulative reading of a contracted meter (base units, exact integer)."""
        c = self._contract(meter_id)
        if cum_units < c.metered_units or reading_ms < c.metered_ms:
            raise MeterRegression(
                f"meter {meter_id}: reading ({cum_units} at {reading_ms}) is below the previous "
                f"({c.metered_units} at {c.metered_ms})")
        agreement = c.current
        due = agreement.due_at(cum_units, reading_ms)
        c.metered_units, c.metered_ms, c.metered_due = cum_units, reading_ms, due
        out: list[Decision] = []
        limit = agreement.tariff.credit_limit_sat
        must_cut = c.supply is SupplyState.ON and due - c.paid > limit
        held = c.pending is not None and now_ms <= c.pending.expires_ms
        changed = cum_units != c.last.units or due != c.last.due_sat
        interval_over = reading_ms - c.last.at_ms >= agreement.tariff.pay_interval_ms
        if changed and not held and (interval_over or must_cut):
            inv = Invoice.create(self._key, agreement_id=agreement.agreement_id,
                                 seq=c.last.seq + 1, meter_id=meter_id, cum_units=cum_units,
                                 cum_due_sat=due, reading_ms=reading_ms)
            out.append(self._commit(Entry(EntryKind.INVOICE_ISSUED, now_ms,
                                          {"invoice": inv.to_wire()})))
            out.append(SendInvoice(inv))
        if must_cut:
            out.append(self._commit(Entry(EntryKind.SUPPLY_CUT, now_ms, {
                "meter_id": meter_id, "unpaid_sat": due - c.paid, "credit_limit_sat": limit})))
            out.append(CutSupply(meter_id, now_ms + ACTUATION_DEADLINE_MS, due - c.paid, limit))
        return out

    def on_payment(self, ref: bytes, payment_id: bytes, amount_sat: int,
                   now_ms: int, meter_hint: str = "", payer: bytes = b"") -> list[Decision]:
        """The trade channel received ``amount_sat`` naming ``ref`` (an invoice or agreement id).
        ``meter_hint`` and ``payer`` (the paying buyer's key) credit a ``ref`` older than the
        window we keep, only to a meter of that same buyer: crediting another buyer's meter
        would let the payer's money be counted twice (once there, once against its own).

        A ``payment_id`` seen before is ignored (channels may redeliver after a restart).
        """
        if payment_id in self._payment_ids:
            return []
        meter_id = self._refs.get(ref)
        hinted = self._contracts.get(meter_hint)
        if meter_id is None and hinted is not None and payer and hinted.current.buyer == payer:
            meter_id = meter_hint
        if meter_id is None:
            raise UnknownContract("payment names no invoice or agreement of ours")
        if amount_sat <= 0:
            raise MicrogridError("a payment must be positive")
        out: list[Decision] = [self._commit(Entry(EntryKind.PAYMENT_RECEIVED, now_ms, {
            "meter_id": meter_id, "payment_id": payment_id, "ref": ref,
            "amount_sat": amount_sat}))]
        return out + self._maybe_restore(meter_id, now_ms)

    def _maybe_restore(self, meter_id: str, now_ms: int) -> list[Decision]:
        """Restore supply if it is cut and the unpaid amount is within the credit limit (after
        a payment, or a renegotiation that raised the limit)."""
        c = self._contracts[meter_id]
        if c.supply is SupplyState.ON or c.metered_due - c.paid > c.current.tariff.credit_limit_sat:
            return []
        return [self._commit(Entry(EntryKind.SUPPLY_RESTORED, now_ms, {
                    "meter_id": meter_id, "unpaid_sat": c.metered_due - c.paid})),
                RestoreSupply(meter_id, now_ms + ACTUATION_DEADLINE_MS)]

    def supply_commands(self, now_ms: int) -> list[Decision]:
        """The command that re-asserts each meter's recorded supply state (use after a restart:
        the actuator may have lost power between the ledger write and the action)."""
        out: list[Decision] = []
        for meter_id, c in sorted(self._contracts.items()):
            if c.supply is SupplyState.CUT:
                out.append(CutSupply(meter_id, now_ms + ACTUATION_DEADLINE_MS,
                                     c.metered_due - c.paid, c.current.tariff.credit_limit_sat))
            else:
                out.append(RestoreSupply(meter_id, now_ms + ACTUATION_DEADLINE_MS))
        return out

    def resend_invoices(self) -> list[Decision]:
        """The latest invoice of every contract, to send again after a restart: it may have been
        recorded but never sent. The buyer refuses a duplicate as a replay and pays nothing."""
        return [SendInvoice(c.last_invoice) for _, c in sorted(self._contracts.items())
                if c.last_invoice is not None]

    # --- queries ---------------------------------------------------------------------------

    def has_payment(self, payment_id: bytes) -> bool:
        """Whether ``payment_id`` was credited (within the window of ids kept)."""
        return payment_id in self._payment_ids

    def meters(self) -> list[str]:
        return sorted(self._contracts)

    def agreement(self, meter_id: str) -> Agreement:
        return self._contract(meter_id).current

    def status(self, meter_id: str) -> ContractStatus:
        c = self._contract(meter_id)
        return ContractStatus(
            meter_id=meter_id, agreement_id=c.current.agreement_id, last_seq=c.last.seq,
            invoiced_units=c.last.units, invoiced_due_sat=c.last.due_sat,
            metered_units=c.metered_units, metered_due_sat=c.metered_due, paid_sat=c.paid,
            unpaid_sat=c.metered_due - c.paid, supply=c.supply)

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
        """The whole state as plain values (the body of a checkpoint entry). The meters' latest
        readings are included: they are real readings, only too frequent to record one by one."""
        return {"contracts": {m: c.to_plain() for m, c in self._contracts.items()},
                "new_offers": [encode(o.to_wire()) for o in self._new_offers.values()],
                "refs": [[r, m] for r, m in self._refs.items()],
                "payment_ids": list(self._payment_ids)}

    def checkpoint(self, now_ms: int) -> list[Decision]:
        """Record the whole state, so the entries before this one can be archived."""
        return [self._commit(Entry(EntryKind.CHECKPOINT, now_ms, {"state": self.snapshot()}))]

    def _load(self, state: Plain) -> None:
        d = body_dict(state)
        self._contracts = {m: _Contract.from_plain(v) for m, v in body_dict(d["contracts"]).items()}
        offers = [Offer.from_wire(decode(body_bytes(x))) for x in body_list(d["new_offers"])]
        self._new_offers = {o.offer_hash: o for o in offers}
        self._refs = {}
        for pair in body_list(d["refs"]):
            ref, meter = body_list(pair)
            self._refs[body_bytes(ref)] = body_text(meter)
        self._payment_ids = dict.fromkeys(body_bytes(x) for x in body_list(d["payment_ids"]))

    def apply(self, entry: Entry) -> None:
        """Apply one ledger entry to the state (used live and when restoring)."""
        b = entry.body
        k = entry.kind
        if k is EntryKind.OFFER_MADE:
            o = Offer.from_wire(b["offer"])
            if o.prev_agreement:
                self._contracts[o.meter_id].pending = o
            else:
                self._new_offers[o.offer_hash] = o
        elif k in (EntryKind.AGREEMENT, EntryKind.RENEGOTIATION):
            ag = Agreement.from_wire(b["agreement"])
            if k is EntryKind.AGREEMENT:
                self._new_offers.pop(ag.offer.offer_hash, None)
                self._contracts[ag.meter_id] = _Contract(ag)
            else:
                c = self._contracts[ag.meter_id]
                c.agreements.append(ag)
                c.pending = None
            self._refs[ag.agreement_id] = ag.meter_id
        elif k is EntryKind.INVOICE_ISSUED:
            inv = Invoice.from_wire(b["invoice"])
            c = self._contracts[inv.meter_id]
            c.last = Anchor(inv.seq, inv.cum_units, inv.cum_due_sat, inv.reading_ms)
            c.last_invoice = inv
            if inv.reading_ms >= c.metered_ms:
                c.metered_units, c.metered_ms, c.metered_due = (
                    inv.cum_units, inv.reading_ms, inv.cum_due_sat)
            iid = inv.invoice_id
            self._refs[iid] = inv.meter_id
            c.invoice_ids.append(iid)
            if len(c.invoice_ids) > REF_WINDOW:
                self._refs.pop(c.invoice_ids.popleft(), None)
        elif k is EntryKind.PAYMENT_RECEIVED:
            c = self._contracts[body_text(b["meter_id"])]
            c.paid += body_int(b["amount_sat"])
            self._payment_ids[body_bytes(b["payment_id"])] = None
            if len(self._payment_ids) > PAYMENT_WINDOW:
                del self._payment_ids[next(iter(self._payment_ids))]
        elif k is EntryKind.SUPPLY_CUT:
            c = self._contracts[body_text(b["meter_id"])]
            c.supply = transition(c.supply, SupplyState.CUT)
        elif k is EntryKind.SUPPLY_RESTORED:
            c = self._contracts[body_text(b["meter_id"])]
            c.supply = transition(c.supply, SupplyState.ON)
        elif k is EntryKind.CHECKPOINT:
            self._load(b["state"])
        else:
            raise IllegalTransition(f"a seller ledger has no {k.value} entries")


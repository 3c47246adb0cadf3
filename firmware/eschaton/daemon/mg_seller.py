"""The microgrid's seller side: offers, proposals from the buyer, credits from payment events,
readings to invoices (``eschaton.daemon.microgrid``)."""
from __future__ import annotations

import logging
import os
import time
from typing import Any

from eschaton.config.microgrid import SellConfig
from eschaton.core.microgrid.decisions import SendInvoice
from eschaton.core.microgrid.errors import MeterRegression
from eschaton.core.microgrid.ledger import Entry
from eschaton.core.microgrid.policy import check_buyer_proposal
from eschaton.core.microgrid.terms import Offer, Service, Tariff
from eschaton.core.microgrid.wire import to_wire
from eschaton.core.wire.codec import Message as WireMessage
from eschaton.core.wire.codec import make
from eschaton.daemon.mg_base import OFFER_RESEND_S, MicrogridBase
from eschaton.daemon.mg_supply import Readings
from eschaton.daemon.payments import PaymentEvent, PaymentReceived, Payments
from eschaton.errors import EschatonError, LocalError

log = logging.getLogger("eschaton.microgrid")


class SellerSide(MicrogridBase):
    async def _offer(self, s: SellConfig) -> None:
        assert self.seller is not None
        if self._session(s.buyer) is None:
            return
        t = time.monotonic()
        if t - self._offered.get(s.meter, -1e9) < OFFER_RESEND_S:
            return
        self._offered[s.meter] = t
        now = self.clock()
        tariff = Tariff(Service(s.service), s.unit, s.base_unit, price_msat=s.price_msat,
                        fee_sat=s.fee_sat, fee_period_ms=s.fee_period_ms,
                        credit_limit_sat=s.credit_limit_sat, pay_interval_ms=s.pay_interval_ms)
        offer = self.seller.offer(offer_id=os.urandom(16), tariff=tariff, meter_id=s.meter,
                                  start_units=self.supply.base_units(s.meter, s.base_unit), now_ms=now,
                                  expires_ms=now + int(s.offer_ttl_s * 1000),
                                  buyer=bytes.fromhex(s.buyer))
        self._sync_recent()
        await self._send(s.buyer, to_wire("mg_offer", offer.to_wire()))

    async def _on_buyer_proposal(self, peer: str, s: SellConfig, d: dict[str, Any]) -> None:
        """The buyer proposes new terms for a meter we sell: our configured terms are the floor."""
        assert self.seller is not None
        try:
            check_buyer_proposal(Offer.from_wire(d), bytes.fromhex(peer), s.price_msat,
                                 s.credit_limit_sat, s.fee_sat)
            acc = self.seller.accept(d, self.clock())
        except EschatonError as e:
            self._refused(peer, "mg_offer", e)
            await self._send(peer, make("mg_refused", meter_id=s.meter[:64],
                                        reason=str(getattr(e, "reason", "refused"))[:32],
                                        detail=str(e)[:256]))
            return
        self._sync_recent()
        await self._send(peer, to_wire("mg_accept", acc.to_wire()))

    def _is_cut(self, meter: str) -> bool:
        assert self.seller is not None
        return bool(self.seller.core.status(meter).supply.value == "cut")

    def _buyers(self) -> set[str]:
        return {s.buyer for s in self.sells.values()}

    def _catch_up(self, pays: Payments) -> None:
        """Count what the buyers' channels received while we were not listening (a crash
        between a channel's commit and our count): see ``eschaton.microgrid.received``."""
        assert self.received is not None
        for peer in self._buyers():
            for cid, role in pays.channels_with(peer):
                pos = self.received.position(cid)
                if pos is None and role == "opener":
                    now = pays.position(cid)
                    if now is not None:
                        self.received.seed(cid, peer, *now)  # our own funding: not a payment
                    continue
                ev = pays.catch_up(cid, *(pos or (0, 0)))
                if ev is not None:
                    log.info("channel %s received %d sat while the microgrid was down",
                             cid.hex()[:12], ev.amount)
                    self._on_payment_event(ev)

    def _on_payment_event(self, ev: PaymentEvent) -> None:
        if not isinstance(ev, PaymentReceived) or self.received is None or ev.peer not in self._buyers():
            return
        if self.received.add(ev.channel_id, ev.peer, ev.amount, ev.number, ev.balance):
            log.debug("channel %s received %d sat (version %d)", ev.channel_id.hex()[:12], ev.amount, ev.number)

    def _uncredited(self, peer: str) -> int:
        """What the channels with ``peer`` received, minus what we already credited."""
        assert self.seller is not None and self.received is not None
        credited = sum(self.seller.core.status(m).paid_sat for m in self.seller.core.meters()
                       if self.seller.core.agreement(m).buyer.hex() == peer
                       and (m not in self.sells or self.sells[m].via == "channel"))  # not paid via routing
        return self.received.total(peer) - credited

    async def _on_mg_paid(self, peer: str, wm: WireMessage) -> None:
        if self.seller is None:
            return
        cid = wm.get_bytes("channel_id")
        if all(c != cid for c, _role in self.node.channels.payments.channels_with(peer)):
            return self._refused(peer, "mg_paid", LocalError("names a channel this peer does not hold"))
        claimed = int(wm["amount_sat"])  # type: ignore[arg-type]
        pid, ref = wm.get_bytes("payment_id"), wm.get_bytes("ref")
        if self.seller.core.has_payment(pid):
            return  # a resent notice: already credited
        credit = min(claimed, self._uncredited(peer))
        if credit <= 0:
            return self._refused(peer, "mg_paid", LocalError(
                f"claims {claimed} sat but the channel received nothing uncredited"))
        if credit < claimed:
            log.warning("mg_paid claims %d sat; crediting only the %d the channel moved", claimed, credit)
        try:
            self.seller.on_payment(ref, pid, credit, self.clock(), meter_hint=wm.get_text("meter_id"),
                                   payer=bytes.fromhex(peer))
        except EschatonError as e:
            return self._refused(peer, "mg_paid", e)
        self._sync_recent()

    def _seller_tick(self, now: int, readings: Readings) -> list[tuple[str, WireMessage]]:
        out: list[tuple[str, WireMessage]] = []
        contracted = set(self.seller.core.meters()) if self.seller is not None else set()
        for s in self.sells.values():
            if s.meter not in contracted:
                continue
            units = readings.get(s.meter, s.base_unit)
            if units is None:
                continue  # no reading yet (an energy meter before its first answer)
            assert self.seller is not None
            try:
                actions = self.seller.on_reading(s.meter, units, now, now)
            except MeterRegression as e:
                # After a power cut the journal may resume a little below the last invoice:
                # wait until the meter has passed it again.
                log.debug("%s", e)
                continue
            for a in actions:
                if isinstance(a, SendInvoice):
                    out.append((s.buyer, to_wire("mg_invoice", a.invoice.to_wire())))
        for ls, det in self._loss:
            entries: list[Entry] = []
            for name in (ls.bulk, *ls.downstream):
                units = readings.get(name, "mL")
                if units is None:
                    continue
                for ev in det.on_reading(name, units, now):
                    entries.append(ev.entry())
            if entries and self.loss_ledger is not None:
                self.loss_ledger.append(entries)
        return out

    async def _on_readings(self, readings: Readings) -> None:
        """Readings pushed by the metering facade: offers still unanswered, invoices, losses."""
        if self._closed or (self.seller is None and self.loss_ledger is None):
            return
        if self.seller is not None:
            contracted = set(self.seller.core.meters())
            for s in self.sells.values():
                if s.meter not in contracted:
                    await self._offer(s)
        sends = self._seller_tick(self.clock(), readings)
        self._sync_recent()
        for peer, wm in sends:
            await self._send(peer, wm)

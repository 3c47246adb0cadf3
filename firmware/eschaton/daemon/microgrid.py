"""The node-side microgrid service: meters, valves, peer links and trade channels joined to the
microgrid cores (``eschaton.microgrid.service``).

Rules / theory of operation:
- Terms, invoices and payments are decided by the sans-IO cores and recorded in their
  append-only ledgers (``microgrid-seller.db``, ``microgrid-buyer.db``) before anything is sent
  or actuated. This module only routes: readings in, messages out, channel payments both ways.
- Signing key: the node's own ed25519 identity. A seller's offer key therefore *is* its node id,
  and the buyer accepts an offer only from the configured seller over that seller's own link.
- Seller: the metering facade (``mg_supply.Supply``) pushes readings of the contracted meters
  (pulse counts -> exact integer base units by the meter's calibration, floor) at most every
  ``reading_interval_s``, after the meters' own polls; each is fed to ``SellerService.on_reading``;
  invoices go to the buyer as ``mg_invoice``; a cut or restore is actuated synchronously inside
  that call (valve or relay), so it happens milliseconds after the reading that crossed the
  credit limit. A meter without an agreement stays shut; the offer is (re)sent while the buyer
  is linked and has not accepted.
- Payments are credited from the channel, not from the buyer's word: ``mg_paid`` names the
  invoice and payment id, and the seller credits at most what the trade channels with that buyer
  received and is not yet credited. "Received" is counted from the payments facade's
  ``PaymentReceived`` events (``eschaton.microgrid.received``: per channel, the last version
  counted, durable; caught up from the channel at start, so no event is lost to a crash). A
  repeated payment id is ignored by the core.
- Buyer: invoices are checked by ``BuyerService`` (own meter fed first, when configured); a
  refusal is recorded in the ledger, answered with ``mg_refused`` and pays nothing. Payments run
  one at a time per seller in a worker task (a channel update waits for the peer's ack, which
  must not block the link's receive loop), through the payments facade with the microgrid
  payment id as the channel payment id. Before a channel update starts, a durable intent
  (payment id, channel, our balance before) is written; after a crash each payment the ledger
  shows as unresolved is settled by the channel's record of that id: complete -> confirmed
  (and ``mg_paid`` resent), failed or never signed -> failed (the amount is paid again with
  the next invoice). An intent written by firmware that paid without ids has no record: it is
  settled by the balance it noted (moved -> confirmed). So a payment is never made twice and
  never lost.
- A buyer on hold (``microgrid.hold``) keeps only the latest invoice per meter (invoices are
  cumulative) and handles it when released.
- Sales paid through the network (``via = "routing"``, the "virtual ISP"): the buyer holds no
  channel with the seller, only a link; it pays each payment its core decides with a multi-hop
  payment to a request the seller makes for it (``eschaton.daemon.mg_routed``), and the seller
  credits a request once its routing service was paid it.
- Loss/bypass: ``[[microgrid.loss]]`` feeds our own meters to ``LossDetector``; alarms and
  clears go into their own hash-chained ledger (``microgrid-loss.db``).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nacl.signing import SigningKey

from eschaton.config.microgrid import BuyConfig, MicrogridConfig, SellConfig
from eschaton.core.microgrid.buyer import Tolerance
from eschaton.core.microgrid.decisions import Pay, SendInvoice
from eschaton.core.microgrid.errors import Refusal
from eschaton.core.microgrid.loss import LossConfig, LossDetector
from eschaton.core.microgrid.policy import check_seller_offer
from eschaton.core.microgrid.terms import Offer
from eschaton.core.microgrid.wire import from_wire_fields, retariff, summary, to_wire
from eschaton.core.wire.codec import Message as WireMessage
from eschaton.core.wire.codec import make
from eschaton.daemon.events import EventStream
from eschaton.daemon.mg_base import OFFER_RESEND_S, RECENT, ROUTINE, MicrogridBase, now_ms  # noqa: F401
from eschaton.daemon.mg_buyer import BuyerSide
from eschaton.daemon.mg_intents import (
    INTENT_MIGRATIONS,  # noqa: F401  (the store's migration tests)
    Intents,
)
from eschaton.daemon.mg_seller import SellerSide
from eschaton.daemon.mg_supply import (
    MicrogridConfigError,  # noqa: F401
    Supply,
)
from eschaton.errors import EschatonError, LocalError
from eschaton.microgrid.ledger import SqliteLedger
from eschaton.microgrid.received import Received
from eschaton.microgrid.service import BuyerService, SellerService
from eschaton.net.router import Handler, ServiceRoutes

if TYPE_CHECKING:
    from eschaton.net.session import Session

log = logging.getLogger("eschaton.microgrid")
_Intents = Intents  # the name the store tests and vectors use
_to_wire = to_wire


class MicrogridService(SellerSide, BuyerSide):
    """See the module docstring. Built and closed by the node's composition root."""

    def __init__(self, node: Any, config: MicrogridConfig, key: SigningKey,
                 clock: Callable[[], int] = now_ms) -> None:
        self.node = node
        self.config = config
        self.clock = clock  # ms; injected so that tests and replays decide what time it is
        self.supply = Supply(node, config, clock=clock)
        self.key = key
        self.pubkey = bytes(key.verify_key.encode())
        d: Path = node.datadir
        self.sells: dict[str, SellConfig] = {s.meter: s for s in config.sell}
        self.buys: dict[str, BuyConfig] = {b.seller: b for b in config.buy}
        self.seller: SellerService | None = None
        self.buyer: BuyerService | None = None
        self.intents = None
        self.received = None
        self._linked: dict[str, asyncio.Event] = {}  # peer -> set once its link came up
        # Ledger entries (source "microgrid"), supply switches ("supply") and refusals
        # ("refusals") go to the node's one event stream; status reads them back from it.
        self.stream = getattr(node, "stream", None) or EventStream()
        self.supply.listeners.append(self._switched)
        self.held: dict[str, bool] = {}  # seller meter id -> buyer pays on hold
        self._stash: dict[str, tuple[str, dict[str, Any]]] = {}  # meter -> (seller hex, invoice)
        self._offered: dict[str, float] = {}  # meter -> monotonic time of the last offer sent
        self._payq: dict[str, asyncio.Queue[Pay | None]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._seen: dict[str, int] = {"seller": 0, "buyer": 0, "loss": 0}
        self._loss = [(ls, LossDetector(LossConfig(
            bulk_meter=ls.bulk, downstream=frozenset(ls.downstream), window_ms=int(ls.window_s * 1000),
            alarm_abs_units=ls.alarm_units, alarm_rel_ppm=ls.alarm_ppm,
            clear_abs_units=ls.clear_units, clear_rel_ppm=ls.clear_ppm))) for ls in config.loss]
        self._closed = False
        self._unresolved: dict[bytes, Pay] = {}
        self._asks: dict[tuple[str, bytes], asyncio.Future[str]] = {}  # buyer: requests awaited
        self._asked: OrderedDict[bytes, Any] = OrderedDict()  # seller: payment id -> request made
        self._paid_source: Any = None  # the routing service telling us of paid requests
        self.supply.check_names()
        self.loss_ledger: SqliteLedger | None = None
        if config.sell:
            self.seller = SellerService.open(d / "microgrid-seller.db", key, actuator=self.supply.actuate)
            self.received = Received(d / "microgrid-received.db")
        if config.loss:
            # Its own hash-chained ledger: loss events are not contract decisions (a seller
            # ledger rebuilds contracts and has no such entries).
            self.loss_ledger = SqliteLedger(d / "microgrid-loss.db")
            self.loss_ledger.verify()
        if config.buy:
            # One tolerance per buyer ledger: the most lenient configured (they rarely differ).
            tol = Tolerance(abs_units=max(b.tolerance_units for b in config.buy),
                            rel_ppm=max(b.tolerance_ppm for b in config.buy))
            self.buyer = BuyerService.open(d / "microgrid-buyer.db", key, tol)
            self.intents = Intents(d / "microgrid-intents.db")
            # Payments a crash left unresolved: only these are settled against the channel at
            # start (payments recorded from now on are in the pay queue, not unresolved).
            self._unresolved = {p.payment_id: p for p in self.buyer.pending_payments()}

    @classmethod
    async def open(cls, node: Any) -> MicrogridService | None:
        cfg = getattr(node.config, "microgrid", None)
        if cfg is None:
            return None
        key = SigningKey(node.keys.seed())
        svc = cls(node, cfg, key)
        if svc.seller is not None:
            svc.seller.reassert_supply(svc.clock())
        for s in cfg.sell:
            # No agreement yet: the supply stays shut until the buyer accepts terms.
            if svc.seller is not None and s.meter not in svc.seller.core.meters():
                svc.supply.actuate(s.meter, False, record=False)
        if node.channels is not None and svc.received is not None:
            node.channels.payments.subscribe(svc._on_payment_event)
            svc._catch_up(node.channels.payments)
        if any(s.via == "routing" for s in cfg.sell):
            # Told of every request paid so far when routing starts (after us), then of each one.
            svc._paid_source = node.service("routing")
            svc._paid_source.paid_listeners.append(svc._on_request_paid)
        # Readings are pushed by the metering facade (no ticker here): each one bills.
        svc.supply.reading_listeners.append(svc._on_readings)
        svc.supply.start()
        svc._sync_recent()
        return svc  # the network starts later: links to microgrid peers reach ``link_up``

    async def close(self) -> None:
        self._closed = True
        self._close_routed()
        await self.supply.stop()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for svc in (self.seller, self.buyer, self.intents, self.loss_ledger, self.received):
            if svc is not None:
                svc.close()

    def link_up(self, session: Any) -> None:
        if self._closed:
            return
        peer = session.remote.hex()
        if session.link.peer_runs("microgrid"):
            self._link_event(peer).set()
        loop = asyncio.get_running_loop()
        loop.create_task(self._on_link_up(peer))

    async def _on_link_up(self, peer: str) -> None:
        if self.seller is not None:
            for s in self.sells.values():
                if s.buyer == peer:
                    self._offered.pop(s.meter, None)
            for d in self.seller.resend_invoices():
                if isinstance(d, SendInvoice) and self.sells.get(d.invoice.meter_id, None) is not None \
                        and self.sells[d.invoice.meter_id].buyer == peer:
                    await self._send(peer, to_wire("mg_invoice", d.invoice.to_wire()))
        if self.buyer is not None and peer in self.buys:
            self._worker(peer)
            assert self.intents is not None
            for meter, ref, pid, amount, cid in reversed(self.intents.confirmed()):
                await self._send(peer, make("mg_paid", meter_id=meter, ref=ref, payment_id=pid,
                                            amount_sat=amount, channel_id=cid))

    def routes(self) -> ServiceRoutes:
        """The microgrid's rows of the wire table and their handlers (each gets the peer's id)."""

        def by_peer(fn: Callable[[str, WireMessage], Awaitable[None]]) -> Handler:
            def handle(session: Session, wm: WireMessage) -> Awaitable[None]:
                assert session.remote is not None  # routed messages come from open links
                return fn(session.remote.hex(), wm)
            return handle

        return ServiceRoutes("microgrid", {
            "mg_offer": by_peer(self._on_mg_offer),
            "mg_accept": by_peer(self._on_mg_accept),
            "mg_invoice": by_peer(self._on_mg_invoice),
            "mg_paid": by_peer(self._on_mg_paid),
            "mg_refused": by_peer(self._on_mg_refused),
            "mg_ask": by_peer(self._on_mg_ask),
            "mg_request": by_peer(self._on_mg_request),
        }, opened=self.link_up)

    async def renegotiate(self, meter: str, *, price_msat: int | None = None,
                          credit_limit_sat: int | None = None, fee_sat: int | None = None) -> dict[str, Any]:
        """Offer new terms for future units of ``meter``: as its seller (new terms take effect
        when the buyer accepts) or as its buyer (a proposal the seller may accept)."""
        now = self.clock()
        if self.seller is not None and meter in self.sells and meter in self.seller.core.meters():
            cur = self.seller.core.agreement(meter)
            tariff = retariff(cur.tariff, price_msat, credit_limit_sat, fee_sat)
            offer = self.seller.renegotiate(meter, offer_id=os.urandom(16), tariff=tariff, now_ms=now,
                                            expires_ms=now + int(self.sells[meter].offer_ttl_s * 1000))
            peer = self.sells[meter].buyer
        elif self.buyer is not None and meter in self.buyer.core.meters():
            cur = self.buyer.core.agreement(meter)
            tariff = retariff(cur.tariff, price_msat, credit_limit_sat, fee_sat)
            offer = self.buyer.propose(meter, offer_id=os.urandom(16), tariff=tariff, now_ms=now,
                                       expires_ms=now + 60_000)
            peer = cur.seller.hex()
        else:
            raise LocalError(f"no agreement covers meter {meter}")
        self._sync_recent()
        sent = await self._send(peer, to_wire("mg_offer", offer.to_wire()))
        return {"meter": meter, "offer": offer.offer_hash.hex(), "sent": sent,
                "price_msat": tariff.price_msat, "credit_limit_sat": tariff.credit_limit_sat}

    async def _on_mg_accept(self, peer: str, wm: WireMessage) -> None:
        """An acceptance of one of our offers: as seller (first terms or our renegotiation) or
        as buyer (the seller accepted our proposal). The offer it names decides which."""
        err: Exception = LocalError("acceptance from a peer we have no contract with")
        if self.seller is not None and any(s.buyer == peer for s in self.sells.values()):
            try:
                self.seller.on_acceptance(from_wire_fields(wm), self.clock())
            except (Refusal, EschatonError) as e:
                err = e
            else:
                for meter in self.seller.core.meters():
                    s = self.sells.get(meter)
                    ag = self.seller.core.agreement(meter)
                    if s is not None and ag.buyer.hex() == peer and not self._is_cut(meter):
                        self.supply.actuate(meter, True)  # agreed: the supply opens
                self._sync_recent()
                return None
        if self.buyer is not None and peer in self.buys:
            try:
                self.buyer.on_acceptance(from_wire_fields(wm), self.clock())
            except (Refusal, EschatonError) as e:
                err = e
            else:
                self._sync_recent()
                return None
        return self._refused(peer, "mg_accept", err)

    def status(self) -> dict[str, Any]:
        self._sync_recent()
        sells = []
        if self.seller is not None:
            contracted = set(self.seller.core.meters())
            for s in self.sells.values():
                row: dict[str, Any] = {"meter": s.meter, "buyer": s.buyer, "service": s.service,
                                       "base_unit": s.base_unit, "price_msat": s.price_msat,
                                       "credit_limit_sat": s.credit_limit_sat, "via": s.via,
                                       "units": self.supply.base_units(s.meter, s.base_unit),
                                       "agreed": s.meter in contracted}
                if s.meter in contracted:
                    st = self.seller.core.status(s.meter)
                    agreed = self.seller.core.agreement(s.meter).tariff
                    row.update(agreed_price_msat=agreed.price_msat,
                               agreed_credit_limit_sat=agreed.credit_limit_sat)
                    row.update(agreement=st.agreement_id.hex(), invoices=st.last_seq,
                               anchor_units=self.seller.core.agreement(s.meter).anchor.units,
                               invoiced_units=st.invoiced_units, invoiced_sat=st.invoiced_due_sat,
                               metered_units=st.metered_units, due_sat=st.metered_due_sat,
                               paid_sat=st.paid_sat, unpaid_sat=st.unpaid_sat,
                               supply=st.supply.value)
                else:
                    row["supply"] = "none"
                sells.append(row)
        buys = []
        if self.buyer is not None:
            for meter in self.buyer.core.meters():
                bst = self.buyer.core.status(meter)
                buys.append({"meter": meter, "seller": self.buyer.core.agreement(meter).seller.hex(),
                             "agreement": bst.agreement_id.hex(), "invoices": bst.last_seq,
                             "accepted_units": bst.accepted_units, "accepted_sat": bst.accepted_due_sat,
                             "paid_sat": bst.paid_sat, "pending_sat": bst.pending_sat,
                             "via": self.buys[self.buyer.core.agreement(meter).seller.hex()].via
                             if self.buyer.core.agreement(meter).seller.hex() in self.buys else "channel",
                             "held": bool(self.held.get(meter))})
        recent = [{**{k: v for k, v in e.data.items() if k not in ("ledger_seq", "entry_at_ms")},
                   "seq": e.data["ledger_seq"], "kind": e.kind, "at_ms": e.data["entry_at_ms"]}
                  for e in self.stream.latest("microgrid", n=RECENT)]
        notable = [e for e in recent if e["kind"] not in ROUTINE][-20:]
        return {"sell": sells, "buy": buys, "recent": recent[-30:], "notable": notable,
                "actuations": [{**e.data, "at_ms": e.at_ms} for e in self.stream.latest("supply", n=RECENT)],
                "refusals": [{**e.data, "at_ms": e.at_ms} for e in self.stream.latest("refusals", n=RECENT)]}

    def ledger(self, role: str) -> list[dict[str, Any]]:
        led = {"seller": self.seller.ledger if self.seller else None,
               "buyer": self.buyer.ledger if self.buyer else None,
               "loss": self.loss_ledger}[role]
        if led is None:
            return []
        out = []
        for e in led.verify():
            out.append({"kind": e.kind.value, "at_ms": e.at_ms, **summary(e.kind.value, e.body)})
        return out

    async def _on_mg_offer(self, peer: str, wm: WireMessage) -> None:
        """Terms from a seller we buy from, or a proposal from the buyer of a meter we sell."""
        b = self.buys.get(peer)
        d = from_wire_fields(wm)
        s = self.sells.get(str(d.get("meter_id", "")))
        if self.seller is not None and s is not None and s.buyer == peer:
            return await self._on_buyer_proposal(peer, s, d)
        if self.buyer is None or b is None:
            return self._refused(peer, "mg_offer", LocalError("we buy nothing from this peer"))
        try:
            offer = Offer.from_wire(d)
            check_seller_offer(offer, bytes.fromhex(peer), b.max_price_msat, b.max_credit_limit_sat)
            if offer.meter_id in self.buyer.core.meters() and not offer.prev_agreement:
                ag = self.buyer.core.agreement(offer.meter_id)
                if ag.seller.hex() == peer:
                    # The seller re-offers: it never got our acceptance (lost in a crash).
                    # Resend it; the seller binds it if it still holds that offer.
                    await self._send(peer, to_wire("mg_accept", ag.acceptance.to_wire()))
                    return
                raise LocalError(f"we already have an agreement for meter {offer.meter_id}")
            if b.meter is not None:
                self.buyer.on_own_reading(b.meter, self.supply.base_units(b.meter, offer.tariff.base_unit), self.clock())
            acc = self.buyer.accept(d, self.clock(), own_meter=b.meter)
        except EschatonError as e:
            self._refused(peer, "mg_offer", e)
            await self._send(peer, make("mg_refused", meter_id=str(d.get("meter_id", ""))[:64],
                                        reason=str(getattr(e, "reason", "refused"))[:32],
                                        detail=str(e)[:256]))
            return
        self._sync_recent()
        await self._send(peer, to_wire("mg_accept", acc.to_wire()))

    def _switched(self, meter: str, on: bool) -> None:
        self.stream.emit("supply", "actuation", {"meter_id": meter, "on": on})

    async def _on_mg_refused(self, peer: str, wm: WireMessage) -> None:
        meter = str(wm["meter_id"])
        s = self.sells.get(meter)
        if s is not None and s.buyer == peer and self.seller is not None \
                and meter not in self.seller.core.meters():
            # The buyer turned our terms down: offer again in a minute, not every few seconds
            # (each offer is a ledger entry).
            self._offered[meter] = time.monotonic() + 60.0 - OFFER_RESEND_S
        self.stream.emit("refusals", "refused_by_peer", {
            "peer": peer[:16], "what": "refused_by_peer", "reason": str(wm["reason"]),
            "detail": str(wm["detail"]), "meter_id": str(wm["meter_id"])})
        log.warning("peer %s refused our %s message: %s (%s)", peer[:12], wm["meter_id"],
                    wm["reason"], wm["detail"])


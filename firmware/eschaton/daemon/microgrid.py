"""The node-side microgrid service: meters, valves, peer links and trade channels joined to the
microgrid cores (``eschaton.microgrid.service``).

Rules / theory of operation:
- Terms, invoices and payments are decided by the sans-IO cores and recorded in their
  append-only ledgers (``microgrid-seller.db``, ``microgrid-buyer.db``) before anything is sent
  or actuated. This module only routes: readings in, messages out, channel payments both ways.
- Signing key: the node's own ed25519 identity. A seller's offer key therefore *is* its node id,
  and the buyer accepts an offer only from the configured seller over that seller's own link.
- Seller: every ``reading_interval_s`` each contracted meter is read (pulse counts -> exact
  integer base units by the meter's calibration, floor) and fed to ``SellerService.on_reading``;
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
- Loss/bypass: ``[[microgrid.loss]]`` feeds our own meters to ``LossDetector``; alarms and
  clears go into their own hash-chained ledger (``microgrid-loss.db``).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nacl.signing import SigningKey

from eschaton.channel.payments import PaymentState
from eschaton.config.microgrid import BuyConfig, MicrogridConfig, SellConfig
from eschaton.core.link.identity import NodeId
from eschaton.core.microgrid.buyer import Tolerance
from eschaton.core.microgrid.decisions import Pay, SendInvoice
from eschaton.core.microgrid.errors import MeterRegression, Refusal
from eschaton.core.microgrid.ledger import Entry
from eschaton.core.microgrid.loss import LossConfig, LossDetector
from eschaton.core.microgrid.terms import Offer, Service, Tariff
from eschaton.core.wire.codec import Message as WireMessage
from eschaton.core.wire.codec import make
from eschaton.core.wire.messages import BY_NAME
from eschaton.daemon.events import EventStream
from eschaton.daemon.payments import NoChannel, PaymentEvent, PaymentReceived, Payments
from eschaton.errors import EschatonError, LocalError
from eschaton.microgrid.ledger import SqliteLedger
from eschaton.microgrid.received import Received
from eschaton.microgrid.service import BuyerService, SellerService
from eschaton.net.router import Handler, ServiceRoutes

if TYPE_CHECKING:
    from eschaton.net.session import Session
from eschaton.store.sqlite import Connection, Migration, open_db

log = logging.getLogger("eschaton.microgrid")

RECENT = 200  # ledger entries and events kept in memory for status
OFFER_RESEND_S = 5.0
ROUTINE = frozenset({"invoice_issued", "invoice_accepted", "payment_sent", "payment_confirmed",
                     "payment_received"})  # left out of status "notable"


class MicrogridConfigError(LocalError):
    pass


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def from_wire_fields(wm: WireMessage) -> dict[str, Any]:
    """The core's wire dict from a decoded ``mg_*`` row (the row's fields are the dict's)."""
    return dict(wm.fields)


def _to_wire(name: str, d: dict[str, Any]) -> WireMessage:
    spec = BY_NAME[name]
    return make(name, **{f.name: d[f.name] for f in spec.fields})


def _summary(kind: str, body: Any) -> dict[str, Any]:
    """A short, JSON-friendly view of a ledger entry body (for status and the demo)."""
    out: dict[str, Any] = {}
    if not isinstance(body, dict):
        return out
    inv = body.get("invoice")
    if isinstance(inv, dict):
        for k in ("meter_id", "seq", "cum_units", "cum_due_sat"):
            if k in inv:
                out[k] = inv[k]
    ag = body.get("agreement")
    if isinstance(ag, dict) and isinstance(ag.get("offer"), dict):
        out["meter_id"] = ag["offer"].get("meter_id")
    if isinstance(body.get("offer"), dict):
        out["meter_id"] = body["offer"].get("meter_id")
    for k in ("meter_id", "amount_sat", "unpaid_sat", "credit_limit_sat", "reason", "detail",
              "loss_units", "bulk_units"):
        v = body.get(k)
        if isinstance(v, int | str):
            out[k] = v
        elif isinstance(v, bytes):
            out[k] = v.decode("utf-8", "replace")
    for k in ("payment_id", "ref"):
        v = body.get(k)
        if isinstance(v, bytes):
            out[k] = v.hex()[:16]
    return out


def _intents_v1(db: Connection) -> None:
    # IF NOT EXISTS: firmware before schema versions made this table at version 0.
    db.execute("CREATE TABLE IF NOT EXISTS intents (payment_id BLOB PRIMARY KEY, "
               "meter_id TEXT NOT NULL, ref BLOB NOT NULL, channel_id BLOB NOT NULL, "
               "balance_before INTEGER NOT NULL, amount INTEGER NOT NULL, "
               "state TEXT NOT NULL, at_ms INTEGER NOT NULL)")


INTENT_MIGRATIONS: tuple[Migration, ...] = (_intents_v1,)


class _Intents:
    """Durable payment intents of the buyer: written (fsynced, ``synchronous=FULL``) before a
    channel update starts. Versioned like every store (``INTENT_MIGRATIONS``)."""

    def __init__(self, path: Path) -> None:
        self.db = open_db(path, INTENT_MIGRATIONS, synchronous="FULL")
        self._settled = 0

    def add(self, pay: Pay, cid: bytes, before: int) -> None:
        self.db.execute("INSERT OR REPLACE INTO intents VALUES (?, ?, ?, ?, ?, ?, 'started', ?)",
                        (pay.payment_id, pay.meter_id, pay.ref, cid, before, pay.amount_sat, now_ms()))

    def get(self, payment_id: bytes) -> tuple[bytes, int, int] | None:
        row = self.db.execute("SELECT channel_id, balance_before, amount FROM intents "
                              "WHERE payment_id = ?", (payment_id,)).fetchone()
        return None if row is None else (bytes(row[0]), int(row[1]), int(row[2]))

    KEEP_SETTLED = 1000
    """Settled intents kept (only the newest confirmed ones are ever resent); older ones are
    pruned, so a buyer paying every few seconds for years keeps a small file."""

    def set_state(self, payment_id: bytes, state: str) -> None:
        self.db.execute("UPDATE intents SET state = ? WHERE payment_id = ?", (state, payment_id))
        self._settled += 1
        if self._settled % 100 == 0:
            self.prune()

    def prune(self) -> int:
        return int(self.db.execute(
            "DELETE FROM intents WHERE state != 'started' AND payment_id NOT IN (SELECT payment_id "
            "FROM intents WHERE state != 'started' ORDER BY rowid DESC LIMIT ?)",
            (self.KEEP_SETTLED,)).rowcount)

    def confirmed(self, limit: int = 20) -> list[tuple[str, bytes, bytes, int, bytes]]:
        rows = self.db.execute("SELECT meter_id, ref, payment_id, amount, channel_id FROM intents "
                               "WHERE state = 'confirmed' ORDER BY at_ms DESC LIMIT ?", (limit,))
        return [(str(m), bytes(r), bytes(p), int(a), bytes(c)) for m, r, p, a, c in rows]

    def close(self) -> None:
        self.db.close()


class MicrogridService:
    """See the module docstring. Built and closed by the node's composition root."""

    def __init__(self, node: Any, config: MicrogridConfig, key: SigningKey) -> None:
        self.node = node
        self.config = config
        self.key = key
        self.pubkey = bytes(key.verify_key.encode())
        d: Path = node.datadir
        self.sells: dict[str, SellConfig] = {s.meter: s for s in config.sell}
        self.buys: dict[str, BuyConfig] = {b.seller: b for b in config.buy}
        self.seller: SellerService | None = None
        self.buyer: BuyerService | None = None
        self.intents: _Intents | None = None
        self.received: Received | None = None
        self._linked: dict[str, asyncio.Event] = {}  # peer -> set once its link came up
        # Ledger entries (source "microgrid"), supply switches ("supply") and refusals
        # ("refusals") go to the node's one event stream; status reads them back from it.
        self.stream: EventStream = getattr(node, "stream", None) or EventStream()
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
        self._check_names()
        self.loss_ledger: SqliteLedger | None = None
        if config.sell:
            self.seller = SellerService.open(d / "microgrid-seller.db", key, actuator=self._actuate)
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
            self.intents = _Intents(d / "microgrid-intents.db")
            # Payments a crash left unresolved: only these are settled against the channel at
            # start (payments recorded from now on are in the pay queue, not unresolved).
            self._unresolved = {p.payment_id: p for p in self.buyer.pending_payments()}

    # --- lifecycle -------------------------------------------------------------------------

    @classmethod
    async def open(cls, node: Any) -> MicrogridService | None:
        cfg = getattr(node.config, "microgrid", None)
        if cfg is None:
            return None
        key = SigningKey(node.keys.seed())
        svc = cls(node, cfg, key)
        if svc.seller is not None:
            svc.seller.reassert_supply(now_ms())
        for s in cfg.sell:
            # No agreement yet: the supply stays shut until the buyer accepts terms.
            if svc.seller is not None and s.meter not in svc.seller.core.meters():
                svc._actuate(s.meter, False, record=False)
        if node.channels is not None and svc.received is not None:
            node.channels.payments.subscribe(svc._on_payment_event)
            svc._catch_up(node.channels.payments)
        loop = asyncio.get_running_loop()
        svc._tasks.append(loop.create_task(svc._ticker()))
        svc._sync_recent()
        return svc  # the network starts later: links to microgrid peers reach ``link_up``

    async def close(self) -> None:
        self._closed = True
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for svc in (self.seller, self.buyer, self.intents, self.loss_ledger, self.received):
            if svc is not None:
                svc.close()

    def _check_names(self) -> None:
        m = self.node.metering
        meters = set(m.pulse_meters) | set(m.modbus_meters) if m is not None else set()
        bandwidth = set(self.node.bandwidth.names) if self.node.bandwidth is not None else set()
        meters |= bandwidth
        valves = set(m.valves) if m is not None else set()
        relays = set(m.relays) if m is not None else set()
        src = self.node.config.source
        for i, s in enumerate(self.config.sell):
            if s.meter not in meters:
                raise MicrogridConfigError(f"{src}: microgrid.sell[{i}].meter: no [[meter]] named {s.meter!r}")
            if s.valve is not None and s.valve not in valves:
                raise MicrogridConfigError(f"{src}: microgrid.sell[{i}].valve: no [[valve]] named {s.valve!r}")
            if s.relay is not None and s.relay not in relays:
                raise MicrogridConfigError(f"{src}: microgrid.sell[{i}].relay: no [[relay]] named {s.relay!r}")
            if (s.meter in bandwidth) != (s.service == Service.BANDWIDTH.value):
                raise MicrogridConfigError(
                    f"{src}: microgrid.sell[{i}]: meter {s.meter!r} is "
                    + ("a [[bandwidth]] meter; sell it as service = \"bandwidth\"" if s.meter in bandwidth
                       else "not a [[bandwidth]] meter; bandwidth is sold from [[bandwidth]] meters"))
        for i, b in enumerate(self.config.buy):
            if b.meter is not None and b.meter not in meters:
                raise MicrogridConfigError(f"{src}: microgrid.buy[{i}].meter: no [[meter]] named {b.meter!r}")
        for i, ls in enumerate(self.config.loss):
            for name in (ls.bulk, *ls.downstream):
                if name not in meters:
                    raise MicrogridConfigError(f"{src}: microgrid.loss[{i}]: no [[meter]] named {name!r}")

    # --- meters and valves -------------------------------------------------------------------

    def _bandwidth(self, meter: str) -> Any:
        """The node's bandwidth meters if ``meter`` is one of them, else None."""
        bw = self.node.bandwidth
        return bw if bw is not None and meter in bw.names else None

    def base_units(self, meter: str, base_unit: str) -> int:
        """The meter's cumulative count in exact integer base units (floor of the calibration)."""
        bw = self._bandwidth(meter)
        if bw is not None:
            # Bytes the journal made durable (as for pulse meters: no invoice ahead of the meter).
            return int(bw.total(meter))
        m = self.node.metering
        scale = 1000 if base_unit in ("mL", "Wh") else 1
        pm = m.pulse_meters.get(meter)
        if pm is not None:
            # Bill only what the totals journal made durable: after a power cut the meter
            # resumes from that total, so no invoice can ever be ahead of the meter.
            total = m.journal.total(meter) if m.journal is not None else pm.total
            return int(Fraction(total * scale) / Fraction(pm.counts_per_unit))
        reading = m.last_energy.get(meter)
        if reading is None:
            raise LocalError(f"meter {meter} has no reading yet")
        return int(Fraction(reading.import_kwh) * scale)

    def _actuate(self, meter_id: str, on: bool, record: bool = True) -> None:
        s = self.sells.get(meter_id)
        bw = self._bandwidth(meter_id)
        if s is None or (self.node.metering is None and bw is None):
            return
        if bw is not None:
            (bw.restore if on else bw.cut)(meter_id)  # the client's addresses leave/join the cut set
        elif s.valve is not None:
            (self.node.metering.open_valve if on else self.node.metering.close_valve)(s.valve)
        elif s.relay is not None:
            self.node.metering.switch(s.relay, on)
        if record:
            self.stream.emit("supply", "actuation", {"meter_id": meter_id, "on": on})
        log.info("supply %s: %s", meter_id, "open" if on else "closed")

    # --- links -------------------------------------------------------------------------------

    def _session(self, peer_hex: str) -> Any:
        """The open link to ``peer_hex`` if that peer runs the microgrid service (its ``init``
        said so): a peer without it is never sent offers or invoices, as if it were away."""
        if self.node.net is None:
            return None  # the network is not up yet
        try:
            s = self.node.net.session(NodeId.from_hex(peer_hex))
        except Exception:  # a malformed id in memory cannot happen (config checked); be safe
            return None
        return s if s is not None and s.link.peer_runs("microgrid") else None

    async def _send(self, peer_hex: str, wm: WireMessage) -> bool:
        s = self._session(peer_hex)
        if s is None:
            return False
        try:
            await s.send(wm)
        except Exception as e:  # supervision boundary: a dead link; resent when it is back
            log.info("microgrid send %s to %s failed: %s", wm.name, peer_hex[:12], e)
            return False
        return True

    def _link_event(self, peer: str) -> asyncio.Event:
        return self._linked.setdefault(peer, asyncio.Event())

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
                    await self._send(peer, _to_wire("mg_invoice", d.invoice.to_wire()))
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
        }, opened=self.link_up)

    def _refused(self, peer: str, what: str, err: Exception) -> None:
        reason = getattr(err, "reason", type(err).__name__)
        self.stream.emit("refusals", "refused", {"peer": peer[:16], "what": what, "reason": str(reason),
                                                 "detail": str(err)[:200]})
        log.warning("refused %s from %s: %s", what, peer[:12], err)

    # --- seller side -------------------------------------------------------------------------

    async def _offer(self, s: SellConfig) -> None:
        assert self.seller is not None
        if self._session(s.buyer) is None:
            return
        t = time.monotonic()
        if t - self._offered.get(s.meter, -1e9) < OFFER_RESEND_S:
            return
        self._offered[s.meter] = t
        now = now_ms()
        tariff = Tariff(Service(s.service), s.unit, s.base_unit, price_msat=s.price_msat,
                        fee_sat=s.fee_sat, fee_period_ms=s.fee_period_ms,
                        credit_limit_sat=s.credit_limit_sat, pay_interval_ms=s.pay_interval_ms)
        offer = self.seller.offer(offer_id=os.urandom(16), tariff=tariff, meter_id=s.meter,
                                  start_units=self.base_units(s.meter, s.base_unit), now_ms=now,
                                  expires_ms=now + int(s.offer_ttl_s * 1000),
                                  buyer=bytes.fromhex(s.buyer))
        self._sync_recent()
        await self._send(s.buyer, _to_wire("mg_offer", offer.to_wire()))

    async def _on_buyer_proposal(self, peer: str, s: SellConfig, d: dict[str, Any]) -> None:
        """The buyer proposes new terms for a meter we sell: our configured terms are the floor."""
        assert self.seller is not None
        try:
            offer = Offer.from_wire(d)
            if offer.proposer.hex() != peer:
                raise LocalError("proposal is not signed by the peer that sent it")
            t = offer.tariff
            if t.price_msat < s.price_msat or t.credit_limit_sat > s.credit_limit_sat \
                    or t.fee_sat < s.fee_sat:
                raise LocalError("proposed terms are below this seller's terms")
            acc = self.seller.accept(d, now_ms())
        except EschatonError as e:
            self._refused(peer, "mg_offer", e)
            await self._send(peer, make("mg_refused", meter_id=s.meter[:64],
                                        reason=str(getattr(e, "reason", "refused"))[:32],
                                        detail=str(e)[:256]))
            return
        self._sync_recent()
        await self._send(peer, _to_wire("mg_accept", acc.to_wire()))

    async def renegotiate(self, meter: str, *, price_msat: int | None = None,
                          credit_limit_sat: int | None = None, fee_sat: int | None = None) -> dict[str, Any]:
        """Offer new terms for future units of ``meter``: as its seller (new terms take effect
        when the buyer accepts) or as its buyer (a proposal the seller may accept)."""
        now = now_ms()
        if self.seller is not None and meter in self.sells and meter in self.seller.core.meters():
            cur = self.seller.core.agreement(meter)
            tariff = _retariff(cur.tariff, price_msat, credit_limit_sat, fee_sat)
            offer = self.seller.renegotiate(meter, offer_id=os.urandom(16), tariff=tariff, now_ms=now,
                                            expires_ms=now + int(self.sells[meter].offer_ttl_s * 1000))
            peer = self.sells[meter].buyer
        elif self.buyer is not None and meter in self.buyer.core.meters():
            cur = self.buyer.core.agreement(meter)
            tariff = _retariff(cur.tariff, price_msat, credit_limit_sat, fee_sat)
            offer = self.buyer.propose(meter, offer_id=os.urandom(16), tariff=tariff, now_ms=now,
                                       expires_ms=now + 60_000)
            peer = cur.seller.hex()
        else:
            raise LocalError(f"no agreement covers meter {meter}")
        self._sync_recent()
        sent = await self._send(peer, _to_wire("mg_offer", offer.to_wire()))
        return {"meter": meter, "offer": offer.offer_hash.hex(), "sent": sent,
                "price_msat": tariff.price_msat, "credit_limit_sat": tariff.credit_limit_sat}

    async def _on_mg_accept(self, peer: str, wm: WireMessage) -> None:
        """An acceptance of one of our offers: as seller (first terms or our renegotiation) or
        as buyer (the seller accepted our proposal). The offer it names decides which."""
        err: Exception = LocalError("acceptance from a peer we have no contract with")
        if self.seller is not None and any(s.buyer == peer for s in self.sells.values()):
            try:
                self.seller.on_acceptance(from_wire_fields(wm), now_ms())
            except (Refusal, EschatonError) as e:
                err = e
            else:
                for meter in self.seller.core.meters():
                    s = self.sells.get(meter)
                    ag = self.seller.core.agreement(meter)
                    if s is not None and ag.buyer.hex() == peer and not self._is_cut(meter):
                        self._actuate(meter, True)  # agreed: the supply opens
                self._sync_recent()
                return None
        if self.buyer is not None and peer in self.buys:
            try:
                self.buyer.on_acceptance(from_wire_fields(wm), now_ms())
            except (Refusal, EschatonError) as e:
                err = e
            else:
                self._sync_recent()
                return None
        return self._refused(peer, "mg_accept", err)

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
                       if self.seller.core.agreement(m).buyer.hex() == peer)
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
            self.seller.on_payment(ref, pid, credit, now_ms(), meter_hint=wm.get_text("meter_id"),
                                   payer=bytes.fromhex(peer))
        except EschatonError as e:
            return self._refused(peer, "mg_paid", e)
        self._sync_recent()

    def _seller_tick(self, now: int) -> list[tuple[str, WireMessage]]:
        out: list[tuple[str, WireMessage]] = []
        contracted = set(self.seller.core.meters()) if self.seller is not None else set()
        for s in self.sells.values():
            if s.meter not in contracted:
                continue
            units = self.base_units(s.meter, s.base_unit)
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
                    out.append((s.buyer, _to_wire("mg_invoice", a.invoice.to_wire())))
        for ls, det in self._loss:
            entries: list[Entry] = []
            for name in (ls.bulk, *ls.downstream):
                for ev in det.on_reading(name, self.base_units(name, "mL"), now):
                    entries.append(ev.entry())
            if entries and self.loss_ledger is not None:
                self.loss_ledger.append(entries)
        return out

    # --- buyer side --------------------------------------------------------------------------

    async def _on_mg_offer(self, peer: str, wm: WireMessage) -> None:
        b = self.buys.get(peer)
        d = from_wire_fields(wm)
        s = self.sells.get(str(d.get("meter_id", "")))
        if self.seller is not None and s is not None and s.buyer == peer:
            return await self._on_buyer_proposal(peer, s, d)
        if self.buyer is None or b is None:
            return self._refused(peer, "mg_offer", LocalError("we buy nothing from this peer"))
        try:
            offer = Offer.from_wire(d)
            if offer.seller.hex() != peer:
                raise LocalError("offer is not signed by the peer that sent it")
            if offer.tariff.price_msat > b.max_price_msat:
                raise LocalError(f"price {offer.tariff.price_msat} msat above our maximum {b.max_price_msat}")
            if offer.tariff.credit_limit_sat > b.max_credit_limit_sat:
                raise LocalError("credit limit above our maximum")
            if offer.meter_id in self.buyer.core.meters() and not offer.prev_agreement:
                ag = self.buyer.core.agreement(offer.meter_id)
                if ag.seller.hex() == peer:
                    # The seller re-offers: it never got our acceptance (lost in a crash).
                    # Resend it; the seller binds it if it still holds that offer.
                    await self._send(peer, _to_wire("mg_accept", ag.acceptance.to_wire()))
                    return
                raise LocalError(f"we already have an agreement for meter {offer.meter_id}")
            if b.meter is not None:
                self.buyer.on_own_reading(b.meter, self.base_units(b.meter, offer.tariff.base_unit), now_ms())
            acc = self.buyer.accept(d, now_ms(), own_meter=b.meter)
        except EschatonError as e:
            self._refused(peer, "mg_offer", e)
            await self._send(peer, make("mg_refused", meter_id=str(d.get("meter_id", ""))[:64],
                                        reason=str(getattr(e, "reason", "refused"))[:32],
                                        detail=str(e)[:256]))
            return
        self._sync_recent()
        await self._send(peer, _to_wire("mg_accept", acc.to_wire()))

    async def _on_mg_invoice(self, peer: str, wm: WireMessage) -> None:
        d = from_wire_fields(wm)
        if self.buyer is None or peer not in self.buys:
            return self._refused(peer, "mg_invoice", LocalError("we buy nothing from this peer"))
        meter = str(d.get("meter_id", ""))
        if self.held.get(meter):
            self._stash[meter] = (peer, d)
            return
        await self._handle_invoice(peer, d)

    async def _handle_invoice(self, peer: str, d: dict[str, Any]) -> None:
        assert self.buyer is not None
        b = self.buys[peer]
        now = now_ms()
        try:
            meter = str(d.get("meter_id", ""))
            if b.meter is not None and meter in self.buyer.core.meters():
                base = self.buyer.core.agreement(meter).tariff.base_unit
                self.buyer.on_own_reading(b.meter, self.base_units(b.meter, base), now)
            pays = self.buyer.on_invoice(d, now)
        except Refusal as e:
            self._sync_recent()
            self._refused(peer, "mg_invoice", e)
            await self._send(peer, make("mg_refused", meter_id=str(d.get("meter_id", ""))[:64],
                                        reason=str(e.reason)[:32], detail=str(e)[:256]))
            return
        self._sync_recent()
        for p in pays:
            self._worker(peer).put_nowait(p)

    def hold(self, meter: str, paused: bool) -> None:
        self.held[meter] = paused
        if not paused:
            stashed = self._stash.pop(meter, None)
            if stashed is not None:
                asyncio.get_running_loop().create_task(self._handle_invoice(*stashed))

    def _worker(self, peer: str) -> asyncio.Queue[Pay | None]:
        q = self._payq.get(peer)
        if q is None:
            q = self._payq[peer] = asyncio.Queue()
            self._tasks.append(asyncio.get_running_loop().create_task(self._pay_worker(peer, q)))
        return q

    @property
    def _pays(self) -> Payments:
        return self.node.channels.payments  # type: ignore[no-any-return]

    async def _pay_worker(self, peer: str, q: asyncio.Queue[Pay | None]) -> None:
        assert self.buyer is not None and self.intents is not None
        await self._resolve_pending(peer)
        while True:
            pay = await q.get()
            if pay is None:
                return
            await self._pay(peer, pay)

    async def _pay(self, peer: str, pay: Pay) -> None:
        assert self.buyer is not None and self.intents is not None
        if all(p.payment_id != pay.payment_id for p in self.buyer.pending_payments()):
            return  # already resolved (confirmed or failed): never start it again
        try:  # wait up to a minute for an open channel with room (on channel changes, not polled)
            ch = await self._pays.wait_channel(peer, pay.amount_sat,
                                               also=lambda: self._session(peer) is not None)
        except NoChannel as e:
            self.buyer.on_payment_failed(pay.payment_id, now_ms())
            self._sync_recent()
            log.warning("%s", e)
            return
        cid = ch.channel_id
        self.intents.add(pay, cid, self._pays.balance(cid))
        try:
            await self._pays.pay(ch, pay.amount_sat, pay.payment_id.hex())
        except Exception as e:  # supervision boundary: the channel decides what happened
            log.warning("channel payment of %d sat failed: %s", pay.amount_sat, e)
            await self._settle_intent(peer, pay.payment_id)
            return
        self.buyer.on_payment_confirmed(pay.payment_id, now_ms())
        self.intents.set_state(pay.payment_id, "confirmed")
        self._sync_recent()
        await self._send(peer, make("mg_paid", meter_id=pay.meter_id, ref=pay.ref,
                                    payment_id=pay.payment_id, amount_sat=pay.amount_sat,
                                    channel_id=cid))

    async def _settle_intent(self, peer: str, payment_id: bytes) -> None:
        """After a failure or a crash: did the channel move the money? Confirmed payments are
        announced to the seller (again: it ignores a payment id it has credited)."""
        assert self.buyer is not None and self.intents is not None
        it = self.intents.get(payment_id)
        if it is None:
            # Recorded as sent, but the channel update never started.
            self.buyer.on_payment_failed(payment_id, now_ms())
            self._sync_recent()
            return
        cid, before, amount = it
        # An update still in flight may complete when the link comes back (reestablish resends
        # it): deciding "failed" before it settles could pay the same amount twice.
        hid = payment_id.hex()
        rec = self._pays.get(hid)
        while rec is not None and rec.state is PaymentState.PENDING and not self._closed:
            try:
                await self._pays.quiet(cid)
            except EschatonError:
                continue  # still in flight: it can only complete, so keep waiting
            self._pays.settle()
            rec = self._pays.get(hid)
            break
        if rec is None or rec.state is PaymentState.PENDING:
            # An intent of firmware that paid without ids (or a channel gone while its version
            # was in flight): the balance noted before the update decides.
            with contextlib.suppress(EschatonError):
                await self._pays.quiet(cid)
            moved = before - self._pays.balance(cid) >= amount
        else:
            moved = rec.state is PaymentState.COMPLETE
        pay = next((p for p in self.buyer.pending_payments() if p.payment_id == payment_id), None)
        if moved:
            self.buyer.on_payment_confirmed(payment_id, now_ms())
            self.intents.set_state(payment_id, "confirmed")
            if pay is not None:
                await self._send(peer, make("mg_paid", meter_id=pay.meter_id, ref=pay.ref,
                                            payment_id=payment_id, amount_sat=amount, channel_id=cid))
        else:
            self.buyer.on_payment_failed(payment_id, now_ms())
            self.intents.set_state(payment_id, "failed")
        self._sync_recent()

    async def _resolve_pending(self, peer: str) -> None:
        """Settle payments left unresolved by a crash, then pay what is still outstanding."""
        assert self.buyer is not None
        pend = [p for p in self._unresolved.values()
                if self.buyer.core.agreement(p.meter_id).seller.hex() == peer]
        if self._session(peer) is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._link_event(peer).wait(), 60.0)
        for p in pend:
            await self._settle_intent(peer, p.payment_id)
            self._unresolved.pop(p.payment_id, None)
        for meter in self.buyer.core.meters():
            if self.buyer.core.agreement(meter).seller.hex() == peer and not self.held.get(meter):
                for pay in self.buyer.pay_outstanding(meter, now_ms()):
                    await self._pay(peer, pay)
        self._sync_recent()

    # --- ticker ------------------------------------------------------------------------------

    async def _ticker(self) -> None:
        while True:
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # supervision boundary: keep billing on the next tick
                log.exception("microgrid tick failed")
            await asyncio.sleep(self.config.reading_interval_s)

    async def _tick(self) -> None:
        if (self.node.metering is None and self.node.bandwidth is None) or (
                self.seller is None and self.loss_ledger is None):
            return
        if self.seller is not None:
            contracted = set(self.seller.core.meters())
            for s in self.sells.values():
                if s.meter not in contracted:
                    await self._offer(s)
        sends = self._seller_tick(now_ms())
        self._sync_recent()
        for peer, wm in sends:
            await self._send(peer, wm)

    # --- status ------------------------------------------------------------------------------

    def _sync_recent(self) -> None:
        for role, led in (("seller", self.seller.ledger if self.seller else None),
                          ("buyer", self.buyer.ledger if self.buyer else None),
                          ("loss", self.loss_ledger)):
            if led is None:
                continue
            for seq, kind, at_ms, payload in led.entries_after(self._seen[role]):
                try:
                    _, e = Entry.from_payload(bytes(payload))
                    body = _summary(kind, e.body)
                except EschatonError:
                    body = {}
                self.stream.emit("microgrid", str(kind), {**body, "role": role, "ledger_seq": int(seq),
                                                          "entry_at_ms": int(at_ms)})
                self._seen[role] = int(seq)

    def status(self) -> dict[str, Any]:
        self._sync_recent()
        sells = []
        if self.seller is not None:
            contracted = set(self.seller.core.meters())
            for s in self.sells.values():
                row: dict[str, Any] = {"meter": s.meter, "buyer": s.buyer, "service": s.service,
                                       "base_unit": s.base_unit, "price_msat": s.price_msat,
                                       "credit_limit_sat": s.credit_limit_sat,
                                       "units": self.base_units(s.meter, s.base_unit),
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
            out.append({"kind": e.kind.value, "at_ms": e.at_ms, **_summary(e.kind.value, e.body)})
        return out

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


# --- API commands (registered when eschaton.daemon.commands imports this module) ---------------

from eschaton.api.registry import ApiError, Param, command  # noqa: E402


def _retariff(t: Tariff, price_msat: int | None, credit_limit_sat: int | None,
              fee_sat: int | None) -> Tariff:
    return Tariff(t.service, t.unit, t.base_unit,
                  price_msat=t.price_msat if price_msat is None else price_msat,
                  fee_sat=t.fee_sat if fee_sat is None else fee_sat, fee_period_ms=t.fee_period_ms,
                  credit_limit_sat=t.credit_limit_sat if credit_limit_sat is None else credit_limit_sat,
                  pay_interval_ms=t.pay_interval_ms)


def _svc(node: Any) -> MicrogridService:
    mg = getattr(node, "microgrid", None)
    if mg is None:
        raise ApiError("this node has no [microgrid] section")
    return mg  # type: ignore[no-any-return]


@command("microgrid.status", "contracts sold and bought, meters, supply, recent ledger entries")
async def microgrid_status(node: Any) -> dict[str, Any]:
    return _svc(node).status()


@command("microgrid.hold", "stop (or resume) paying a seller's invoices for a meter",
         Param("meter", str, "the seller's meter id"),
         Param("paused", bool, "true: hold payments; false: pay what is due", required=False,
               default=True))
async def microgrid_hold(node: Any, meter: str, paused: bool) -> dict[str, Any]:
    mg = _svc(node)
    if mg.buyer is None or meter not in mg.buyer.core.meters():
        raise ApiError(f"no agreement to buy from meter {meter!r}")
    mg.hold(meter, paused)
    return {"meter": meter, "held": paused}


@command("microgrid.ledger", "every entry of the seller or buyer ledger (hash chain verified)",
         Param("role", str, "seller, buyer or loss", required=False, default="seller"))
async def microgrid_ledger(node: Any, role: str) -> list[dict[str, Any]]:
    if role not in ("seller", "buyer", "loss"):
        raise ApiError("role must be seller, buyer or loss")
    return _svc(node).ledger(role)


@command("microgrid.renegotiate", "offer new terms for future units of a meter (seller or buyer side)",
         Param("meter", str, "the meter id of the agreement"),
         Param("price_msat", int, "new price in msat per unit", required=False),
         Param("credit_limit_sat", int, "new credit limit in sat", required=False),
         Param("fee_sat", int, "new access fee per period in sat", required=False))
async def microgrid_renegotiate(node: Any, meter: str, price_msat: int | None, credit_limit_sat: int | None,
                                fee_sat: int | None) -> dict[str, Any]:
    for name, v in (("price_msat", price_msat), ("credit_limit_sat", credit_limit_sat), ("fee_sat", fee_sat)):
        if v is not None and v < 0:
            raise ApiError(f"{name} must not be negative")
    return await _svc(node).renegotiate(meter, price_msat=price_msat, credit_limit_sat=credit_limit_sat,
                                        fee_sat=fee_sat)

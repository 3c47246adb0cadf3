"""What the microgrid's seller and buyer sides share: their state, the links they talk over,
refusals and the ledger view in the event stream (``eschaton.daemon.microgrid``)."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from eschaton.config.microgrid import BuyConfig, MicrogridConfig, SellConfig
from eschaton.core.link.identity import NodeId
from eschaton.core.microgrid.decisions import Pay
from eschaton.core.microgrid.ledger import Entry
from eschaton.core.microgrid.loss import LossDetector
from eschaton.core.microgrid.wire import summary
from eschaton.core.wire.codec import Message as WireMessage
from eschaton.daemon.events import EventStream
from eschaton.daemon.mg_intents import Intents
from eschaton.daemon.mg_supply import Supply
from eschaton.errors import EschatonError
from eschaton.microgrid.ledger import SqliteLedger
from eschaton.microgrid.received import Received
from eschaton.microgrid.service import BuyerService, SellerService

log = logging.getLogger("eschaton.microgrid")

RECENT = 200  # ledger entries and events kept in memory for status
OFFER_RESEND_S = 5.0
ROUTINE = frozenset({"invoice_issued", "invoice_accepted", "payment_sent", "payment_confirmed",
                     "payment_received"})  # left out of status "notable"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class MicrogridBase:
    """State shared by the sides (set by ``MicrogridService.__init__``) and the link helpers."""

    node: Any
    config: MicrogridConfig
    clock: Callable[[], int]
    supply: Supply
    stream: EventStream
    sells: dict[str, SellConfig]
    buys: dict[str, BuyConfig]
    seller: SellerService | None
    buyer: BuyerService | None
    intents: Intents | None
    received: Received | None
    loss_ledger: SqliteLedger | None
    held: dict[str, bool]
    _linked: dict[str, asyncio.Event]
    _stash: dict[str, tuple[str, dict[str, Any]]]
    _offered: dict[str, float]
    _payq: dict[str, asyncio.Queue[Pay | None]]
    _tasks: list[asyncio.Task[None]]
    _seen: dict[str, int]
    _loss: list[tuple[Any, LossDetector]]
    _closed: bool
    _unresolved: dict[bytes, Pay]

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

    def _refused(self, peer: str, what: str, err: Exception) -> None:
        reason = getattr(err, "reason", type(err).__name__)
        self.stream.emit("refusals", "refused", {"peer": peer[:16], "what": what, "reason": str(reason),
                                                 "detail": str(err)[:200]})
        log.warning("refused %s from %s: %s", what, peer[:12], err)

    def _sync_recent(self) -> None:
        for role, led in (("seller", self.seller.ledger if self.seller else None),
                          ("buyer", self.buyer.ledger if self.buyer else None),
                          ("loss", self.loss_ledger)):
            if led is None:
                continue
            for seq, kind, at_ms, payload in led.entries_after(self._seen[role]):
                try:
                    _, e = Entry.from_payload(bytes(payload))
                    body = summary(kind, e.body)
                except EschatonError:
                    body = {}
                self.stream.emit("microgrid", str(kind), {**body, "role": role, "ledger_seq": int(seq),
                                                          "entry_at_ms": int(at_ms)})
                self._seen[role] = int(seq)

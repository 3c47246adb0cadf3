"""Reaching DHT contacts that are not linked: signed addresses, dialed within a budget.

Rules / theory of operation (records and bounds: ``eschaton.core.dht.addrs``):
- The node signs its own address record (``[network] advertise``, else its listen URLs that
  name a host and a port) with a fresh sequence number at start, and sends it to every DHT peer
  as the link opens (``dht_addrs``).
- Before a ``dht_nodes`` or ``dht_values`` answer naming contacts, the service sends the signed
  records it holds for them (one ``dht_addrs``, on the same link, so they arrive first).
  Received records are verified before they are kept; a bad one is counted and dropped.
- A request to a contact without a link is held while the contact is dialed at its signed
  URLs (``NetNode.connect``, the link handshake proves the key), if the budget allows; the held
  requests go out when the link opens, or fail at once if the dial fails. Without a record or
  budget the request fails at once, as before.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from eschaton.core.dht import addrs
from eschaton.core.dht.errors import MessageError
from eschaton.core.dht.rpc import Send
from eschaton.core.link.identity import NodeId
from eschaton.core.wire.codec import Message, make
from eschaton.errors import EschatonError

if TYPE_CHECKING:
    from eschaton.daemon.dht import DhtService

log = logging.getLogger("eschaton.dht")
MAX_PER_ANSWER = 32


def own_urls(node: Any) -> tuple[str, ...]:
    """The URLs other nodes can dial us at: advertised ones, else concrete tcp listen URLs."""
    net = node.config.network
    urls = [u for u in (net.advertise or net.listen) if u.startswith("tcp://")]
    out = []
    for u in urls:
        try:
            s = urlsplit(u)
            if s.hostname in (None, "", "0.0.0.0", "::") or not s.port:  # noqa: S104 - a listen wildcard
                continue
        except ValueError:
            continue
        out.append(u)
    return tuple(out[: addrs.MAX_URLS])


class Dialer:
    def __init__(self, svc: DhtService, node: Any, *, per_minute: int, in_flight: int) -> None:
        self.svc = svc
        self.node = node
        self.book = addrs.AddrBook()
        self.budget = addrs.DialBudget(in_flight, per_minute)
        self.enabled = per_minute > 0
        self.own: bytes | None = None
        self._held: dict[bytes, list[Send]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.dials = 0
        """Dials started (for ``dht stats``)."""

    def start(self) -> None:
        keys: Any = getattr(self.node, "keys", None)
        urls = own_urls(self.node) if keys is not None else ()
        if urls:
            rec = addrs.sign(keys.sign, keys.node_id.raw, urls, int(time.time() * 1000))
            self.own = addrs.encode(rec)
            self.book.learn(self.own)

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def hello(self) -> Message | None:
        return None if self.own is None else make("dht_addrs", records=[self.own])

    def learn(self, msg: Message) -> None:
        v = msg["records"]
        for r in v if isinstance(v, list) else []:
            if isinstance(r, bytes):
                self.book.learn(r)

    def annotate(self, msg: Message) -> Message | None:
        """The records of the contacts an answer names, to send just before it."""
        if msg.name not in ("dht_nodes", "dht_values"):
            return None
        v = msg["nodes"]
        recs = []
        for k in v if isinstance(v, list) else []:
            rec = self.book.get(k) if isinstance(k, bytes) else None
            if rec is not None:
                recs.append(addrs.encode(rec))
        return make("dht_addrs", records=recs[:MAX_PER_ANSWER]) if recs else None

    def hold(self, s: Send) -> bool:
        """Hold ``s`` while its contact is dialed (True), or say it cannot be reached (False)."""
        if s.to in self._held:
            self._held[s.to].append(s)
            return True
        rec = self.book.get(s.to)
        if not self.enabled or rec is None or self.node.net is None or not self.budget.take(time.monotonic()):
            return False
        self._held[s.to] = [s]
        self.dials += 1
        t = asyncio.get_running_loop().create_task(self._dial(rec))
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return True

    def opened(self, peer: bytes) -> list[Send]:
        """A link to ``peer`` opened: the requests held for it."""
        return self._held.pop(peer, [])

    async def _dial(self, rec: addrs.AddrRecord) -> None:
        try:
            for url in rec.urls:
                try:
                    await self.node.net.connect(NodeId(rec.key), url)
                    return  # the service's ``opened`` sends what was held
                except (EschatonError, OSError, MessageError, ValueError) as e:
                    log.info("dht: dial %s at %s failed: %s", rec.key.hex()[:12], url, e)
        finally:
            self.budget.done()
            left = self._held.pop(rec.key, [])
            if left:  # not opened (or opened without the DHT): fail them now
                await self.svc.failed_sends(left)

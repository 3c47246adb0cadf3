"""The channel service's links (``eschaton.daemon.channels``): its rows of the wire table, one
writer task per linked peer, and what happens when a link comes up or goes down (reestablish
every channel with that peer; drop its queue, since reestablish resends).

A peer may have two open links for a moment: when both nodes dial at once, the links cross and
the mesh closes one as the duplicate (``eschaton.net.mesh``), and that may be the newer one, on
which the writer was just started. Every open link per peer is kept, and when the link the writer
sends on closes while another stays open, the writer moves to the one that stays and every
channel with that peer is reestablished there: what went out on the closed link may be lost
with it, and reestablish resends it (receivers ignore what they already have, so nothing is
signed or acknowledged twice)."""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from eschaton.core.channel.messages import Message
from eschaton.core.wire.codec import Message as WireMessage
from eschaton.daemon import chanwire
from eschaton.daemon.chan_base import ChannelBase, Refused
from eschaton.errors import RemoteError
from eschaton.net.router import ServiceRoutes

log = logging.getLogger("eschaton.channels")


class ChannelLinks(ChannelBase):

    def _send(self, msg: Message) -> None:
        peer = self.peers.map.get(msg.channel_id)
        if peer is None:
            log.error("no peer recorded for channel %s; message %s dropped", msg.channel_id.hex()[:12], msg.NAME)
            return
        q = self._outq.get(peer)
        if q is None:
            return  # no link: reestablish resends when the peer is back
        q.put_nowait(chanwire.to_wire(msg))

    def routes(self) -> ServiceRoutes:
        """The channel rows of the wire table: each goes to the channel core (``_on_message``);
        links to peers that run the channel service start and stop their writers."""
        on = self._on_message
        return ServiceRoutes("channel", {
            "open_channel": on, "accept_channel": on, "refund_signature": on,
            "funding_signatures": on, "channel_ready": on, "update": on, "update_ack": on,
            "mutual_propose": on, "mutual_sign": on, "close_proposal": on, "close_accept": on,
            "reestablish": on, "turn_request": on, "turn_grant": on, "channel_error": on,
            "reanchor_propose": on, "reanchor_refund": on, "reanchor_anchor": on,
            "escrow_fulfil": on, "escrow_fail": on,
        }, opened=self._link_up, closed=self._link_down)

    def _on_message(self, session: Any, wm: WireMessage) -> None:
        try:
            self.receive(session, wm)
        except Refused as e:
            # Already answered with channel_error by the endpoint; keep the link.
            log.warning("refused %s from %s: %s", wm.name, session.remote.short(), e)

    def _link_up(self, session: Any) -> None:
        peer = session.remote.hex()
        self._open_links.setdefault(peer, []).append(session)
        self._attach(peer, session)

    def _attach(self, peer: str, session: Any) -> None:
        """Send to ``peer`` on ``session`` from now on, and reestablish every channel with it."""
        old = self._writers.pop(peer, None)
        if old is not None:
            old.cancel()
        q: asyncio.Queue[WireMessage] = asyncio.Queue()
        self._outq[peer] = q
        self._link_of[peer] = session
        self._writers[peer] = asyncio.get_running_loop().create_task(self._writer(session, q))
        for cid, p in self.peers.map.items():
            if p == peer and cid in self.endpoint.channels:
                if self.endpoint.channels[cid].asks_turn:
                    self.turn_requests_resent += 1
                    log.info("channel %s: asking for the turn again on the new link", cid.hex()[:12])
                try:
                    self.endpoint.reconnect(cid)
                except RemoteError as e:
                    log.warning("reestablish of %s failed: %s", cid.hex()[:12], e)
                self.payments.escrows.commit_due(self.endpoint.channels[cid])  # fulfilled before a restart
                self._retry_reanchor(self.endpoint.channels[cid])  # a failed automatic re-anchor, again
        self._poke()  # waiters for a linked peer (``Payments.wait_channel``) look again

    def linked(self, peer: str) -> bool:
        """Whether channel messages to ``peer`` go out now (its link is up)."""
        return peer in self._outq

    def _link_down(self, session: Any, _event: Any = None) -> None:
        peer = session.remote.hex() if session.remote is not None else ""
        links = self._open_links.get(peer, [])
        if session in links:
            links.remove(session)
        if not links:
            self._open_links.pop(peer, None)
        # Only the link that owns the writer may take it down: when a newer link replaced this
        # one, the old link's close arrives after the new one is up, and removing the new queue
        # would silently drop every later channel message to a peer that is still linked.
        if self._link_of.get(peer) is session:
            self._link_of.pop(peer, None)
            writer = self._writers.pop(peer, None)
            if writer is not None:
                writer.cancel()
            self._outq.pop(peer, None)
        if peer in self._link_of:
            return
        # No writer (its link just closed, or a send on it failed), yet another link to the peer
        # may still be open: a crossed link that stays while the duplicate closes.
        stays = [s for s in links if s.is_open]
        if stays:
            log.info("link to %s closed; channel messages go on its other open link", peer[:12])
            self._attach(peer, stays[-1])

    async def _writer(self, session: Any, q: asyncio.Queue[WireMessage]) -> None:
        while True:
            burst = [await q.get()]
            while not q.empty():
                burst.append(q.get_nowait())
            try:
                await session.send_many(burst)
            except Exception as e:  # supervision boundary: a dead link; reestablish will resend
                peer = session.remote.hex()
                log.info("send to %s failed: %s", peer[:12], e)
                if self._link_of.get(peer) is session:
                    # The queue must not outlive its writer, or later messages would wait in it
                    # forever; without a queue they are dropped and resent on the next link.
                    self._outq.pop(peer, None)
                    self._link_of.pop(peer, None)
                    self._writers.pop(peer, None)
                return

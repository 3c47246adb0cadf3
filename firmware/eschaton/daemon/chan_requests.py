"""The channel service's local requests (``eschaton.daemon.channels``): open a channel, wait for
the turn, run a single-signed update and wait for its acknowledgement, one request at a time
per channel (``exclusive``) while the peer's turn requests wait."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

from eschaton.channel.payments import PaymentRecord
from eschaton.core.channel import Channel, ChannelParams, FundingInput
from eschaton.core.channel.params import DEFAULT_MAX_CONTRACTS
from eschaton.core.channel.updates import MAX_INFLIGHT
from eschaton.core.networks import channel_fees, estimate_target, network, open_params
from eschaton.core.wire.codec import Message as WireMessage
from eschaton.daemon.chan_base import (
    REQUEST_TIMEOUT,
    WAIT_NOTE,
    ChannelBase,
    ChannelRequestError,
    PeerUnavailable,
)
from eschaton.errors import RemoteError, TransientError

log = logging.getLogger("eschaton.channels")


class ChannelRequests(ChannelBase):

    def channel(self, cid_hex: str) -> Channel:
        try:
            cid = bytes.fromhex(cid_hex)
        except ValueError:
            raise ChannelRequestError(f"bad channel id {cid_hex!r}") from None
        ch = self.endpoint.channels.get(cid)
        if ch is None:
            raise ChannelRequestError(f"no channel {cid_hex}")
        return ch

    async def wait_for(self, pred: Callable[[], bool], what: str, timeout: float = REQUEST_TIMEOUT) -> None:
        """Wait until ``pred()`` holds, at most ``timeout`` s. ``what`` names what we wait for:
        a wait longer than ``WAIT_NOTE`` logs it once, and its end (see the rules)."""
        if pred():
            return

        async def waiting() -> None:
            async with self._changed:
                await self._changed.wait_for(pred)

        loop = asyncio.get_running_loop()
        start = loop.time()
        note = loop.call_later(WAIT_NOTE, log.info, "waiting for %s (up to %.0f s)", what, timeout)
        try:
            await asyncio.wait_for(waiting(), timeout)
        except TimeoutError:
            log.warning("gave up waiting for %s after %.0f s", what, timeout)
            raise TransientError(f"timed out waiting for {what}") from None
        finally:
            note.cancel()
        took = loop.time() - start
        if took >= WAIT_NOTE:
            log.info("waited %.1f s for %s", took, what)

    def _session_for(self, cid: bytes) -> Any:
        peer = self.peers.map.get(cid)
        if peer is None or peer not in self._outq:
            raise PeerUnavailable("the channel's peer is not linked")
        return peer

    async def open_channel(self, peer_hex: str, capacity: int, lifetime: int = 0, step: int = 0) -> Channel:
        """Open a channel; ``lifetime`` and ``step`` in blocks, 0: the network's defaults."""
        from eschaton.core.link.identity import NodeId

        try:
            peer = NodeId.from_hex(peer_hex)
        except Exception as e:  # typed identity errors and ValueError alike
            raise ChannelRequestError(f"bad peer id: {e}") from e
        if self.node.net.session(peer) is None:
            raise PeerUnavailable(f"peer {peer_hex[:16]} is not linked")
        if capacity <= 0:
            raise ChannelRequestError("capacity must be positive")
        wallet = self.node.wallet
        coins, change, _fee, _keys = await wallet.funding_inputs(capacity)
        inputs = [FundingInput(u.outpoint.txid, u.outpoint.vout, u.value, u.script_pubkey) for u in coins]
        h = self.height
        try:
            params = await self.channel_params(capacity, lifetime, step, _fee, h)
        except BaseException:
            wallet.release([u.outpoint for u in coins])
            raise
        cid = os.urandom(32)
        self.peers.set(cid, peer.hex())
        try:
            ch = self.endpoint.open(channel_id=cid, params=params, payout_script=wallet.payout_script(),
                                    inputs=inputs, change=[change] if change else [], height=h)
        except Exception:
            wallet.release([u.outpoint for u in coins])
            raise
        self._poke()
        return ch

    async def channel_params(self, capacity: int, lifetime: int, step: int, funding_fee: int,
                             height: int) -> ChannelParams:
        """The parameters this node proposes for a new channel: the network's table
        (core/networks.py) in real block time, fees from the backend's estimate for one step
        window where the network has a fee market (docs/chain.md, "Networks")."""
        net = network(self.node.config.chain.network)
        estimate: int | None = None
        if net.fee_from_estimate:
            try:
                estimate = await self.node.chain.estimate_fee(estimate_target(net, step or net.locktime_step))
            except Exception as e:  # no estimate (a young chain, a server without one): the relay floor
                log.warning("no fee estimate from the chain backend (%s): the relay minimum", e)
        # The fee step is at least the smallest that lets any newer version replace any older one
        # in a mempool (docs/channels.md, "Fee step"); a reserve the cooperative close gives back.
        fees = channel_fees(net, estimate, funding_fee, DEFAULT_MAX_CONTRACTS, self.endpoint.policy)
        return open_params(net, capacity, height, fees, lifetime, step)

    async def ensure_turn(self, ch: Channel) -> None:
        """Ask for the turn and wait for it. A request lost on the way (the link dropped, the
        holder restarted) is asked again by the core when the link is back (see the rules)."""
        if ch.have_turn:
            return
        self._session_for(ch.channel_id)
        self.endpoint.execute(ch, ch.request_turn())
        await self.wait_for(lambda: ch.have_turn, f"the peer to grant the turn on channel {ch.channel_id.hex()[:12]}")

    @contextlib.asynccontextmanager
    async def exclusive(self, cid: bytes) -> AsyncIterator[None]:
        """One local request at a time on a channel; the peer's turn requests wait meanwhile."""
        lock = self._locks.setdefault(cid, asyncio.Lock())
        self._lock_waiters += 1
        self._queued[cid] = self._queued.get(cid, 0) + 1
        try:
            await lock.acquire()
        except BaseException:
            self._unqueue(cid)
            raise
        finally:
            self._lock_waiters -= 1
        try:
            self._busy.add(cid)
            try:
                yield
            finally:
                self._busy.discard(cid)
                self._unqueue(cid)
                self._redeliver(cid)
        finally:
            lock.release()

    def _unqueue(self, cid: bytes) -> None:
        n = self._queued.get(cid, 0) - 1
        if n > 0:
            self._queued[cid] = n
        else:
            self._queued.pop(cid, None)

    def _hold_turn_request(self, cid: bytes, session: Any, wm: WireMessage) -> bool:
        """Hold the peer's turn request back instead of handing it to the core (see the rules):
        while a local request of ours runs with nothing in flight yet, and, for at most
        ``turn_dwell`` seconds, while local requests of ours are queued on the channel."""
        ch = self.endpoint.channels.get(cid)
        if ch is None:
            return False
        if cid in self._busy and ch.pending is None:
            self._deferred[cid] = (session, wm)  # see "exclusive" above
            return True
        if self.turn_dwell > 0 and ch.have_turn and cid not in self._dwelt and self._active(cid, ch):
            self._deferred[cid] = (session, wm)  # a resent request replaces the held one
            if cid not in self._dwell:
                self.turn_dwells += 1
                self._dwell[cid] = asyncio.get_running_loop().call_later(self.turn_dwell, self._dwell_over, cid)
            return True
        self._dwelt.discard(cid)  # handed to the core: the next request gets a dwell of its own
        return False

    def _active(self, cid: bytes, ch: Channel) -> bool:
        """We are paying on the channel: a local request is queued, a version of ours is in
        flight, or we signed one within the last dwell (callers that pay one request after
        the other leave short gaps between their requests)."""
        last = self._last_local.get(cid)
        return (self._queued.get(cid, 0) > 0 or ch.pending is not None
                or (last is not None and asyncio.get_running_loop().time() - last < self.turn_dwell))

    def _dwell_over(self, cid: bytes) -> None:
        self._dwell.pop(cid, None)
        self._dwelt.add(cid)
        self._redeliver(cid)

    def _redeliver(self, cid: bytes) -> None:
        if cid in self._dwell:
            return  # still dwelling: ours go first; the dwell's end hands the request over
        held = self._deferred.pop(cid, None)
        if held is None:
            self._dwelt.discard(cid)
            return
        session, wm = held
        try:
            self.receive(session, wm)
        except RemoteError as e:
            log.warning("deferred turn request on %s refused: %s", cid.hex()[:12], e)

    def peer_has(self, cid: bytes, feature: int) -> bool:
        """Whether the (linked) peer of ``cid`` announced ``feature`` (an extension bit)."""
        peer = self._session_for(cid)
        session = self._link_of.get(peer)
        return session is not None and feature in session.link.peer_features

    async def run_local(self, ch: Channel, method: str, *args: Any) -> Any:
        """Run a local request that signs no version (an escrow's fulfil or fail): its state is
        committed with the open group commit before its message leaves (dropped if the peer is
        not linked: the core resends what must arrive on reestablish); a failed commit raises."""
        self._open_rx()
        value = self.endpoint.call(ch.channel_id, method, *args, self.height)
        committed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._rx_waiters.append(committed)
        self._local_staged += 1
        self._poke()
        await committed
        return value

    async def run_update(self, ch: Channel, method: str, *args: Any) -> Any:
        """Run a single-signed request and wait until the peer acknowledged its version."""
        value, mine, committed = await self.stage_update(ch, method, *args)
        await committed  # a failed commit is reported now, not as a timeout
        cid = ch.channel_id
        # By channel id: the channel object is replaced if a later commit fails and it is reloaded.
        await self.wait_for(lambda: cid in self.endpoint.channels and self.endpoint.channels[cid].current.number >= mine,
                            f"the peer to acknowledge {method} on channel {cid.hex()[:12]}")
        return value

    async def stage_update(self, ch: Channel, method: str, *args: Any,
                           payment: PaymentRecord | None = None) -> tuple[Any, int, asyncio.Future[None]]:
        """Sign a single-signed request into the open group commit.

        Returns the request's value, the number of the version it signed, and a future of the
        commit (raises the store's error if it failed; then nothing was sent)."""
        async with self.exclusive(ch.channel_id):
            self._session_for(ch.channel_id)
            while True:
                if ch.state.name == "REANCHORING":
                    # The peer proposed a re-anchor (ours holds the lock until it is signed):
                    # two round trips, then payments go on over the new anchor.
                    await self.wait_for(lambda: ch.state.name != "REANCHORING",
                                        f"the re-anchor of channel {ch.channel_id.hex()[:12]} to be signed")
                if ch.pending is not None and (ch.turn_requested or ch.pending_kind != "update"):
                    # The peer waits for the turn (or a mutual step is open): let it through first.
                    await self.wait_for(lambda: ch.pending is None, "the versions in flight to be acknowledged "
                                        f"on channel {ch.channel_id.hex()[:12]} (the peer asked for the turn)")
                await self.ensure_turn(ch)
                if ch.pending is None or ch.pending_kind != "update" or len(ch.outbox) < MAX_INFLIGHT:
                    break
                # The core signs at most MAX_INFLIGHT versions ahead of the peer's acks. Once
                # they come in, look again: the core may have granted the turn to the peer.
                await self.wait_for(lambda: ch.pending is None or len(ch.outbox) < MAX_INFLIGHT,
                                    f"the peer to acknowledge versions in flight on channel {ch.channel_id.hex()[:12]}")
            # Staged in the batch that commits when the event loop next turns (see the rules):
            # concurrent requests, on this channel or others, share one fsync.
            self._open_rx()
            value = self.endpoint.call(ch.channel_id, method, *args, self.height, payment=payment)
            committed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._rx_waiters.append(committed)
            self._local_staged += 1
            mine = ch.pending.number if ch.pending is not None else ch.current.number
            self._last_local[ch.channel_id] = asyncio.get_running_loop().time()
            self._redeliver(ch.channel_id)  # our version is out: the core grants after the ack
            self._poke()
        # Outside the lock: later requests pipeline behind ours. Acks are cumulative, and a
        # version the peer signs after a turn switch has a higher number than all of ours.
        return value, mine, committed

"""Trade channels inside the node: the channel endpoint driven over encrypted peer links.

Rules / theory of operation:
- The channel core decides, the ``ChannelEndpoint`` persists before it sends (fsync, then the
  signature leaves), and this service only routes: outgoing channel messages go to the peer
  that owns the channel, incoming ones are checked against that owner first.
- Which peer owns which channel is itself durable (``channel_peers`` table of the channel store)
  before ``open_channel`` is sent or an incoming open is accepted: it is written in the same
  transaction as the channel's first state, so after a crash every channel knows where to resend.
- Links come and go. Messages for an absent peer are dropped: when the link comes back,
  ``reestablish`` resends the last state (the core keeps its outbox), so nothing is lost.
- Local requests (pay, escrow, close) wait for the peer's answer with a timeout: a payment is
  reported done only when the peer's acknowledgement has been persisted. A wait that lasts
  longer than ``WAIT_NOTE`` says once, at info level, what it waits for (and how long it took
  when it ends), so a stalled channel is never silent.
- Turn requests: the core keeps asking (``reestablish`` resends a request not yet granted), so
  after a relink, or a restart of the holder that forgot the request, the grant comes one round
  trip after the link is back; ``turn_requests_resent`` counts those second asks.
- Local requests on one channel run one at a time (``exclusive``). While one runs and has no
  version in flight, the peer's ``turn_request`` is held back and handed to the core once our
  version is out (the core then grants after the ack): otherwise a request arriving right after
  the grant we waited for would take the turn away before we used it, and our request would
  wait for a grant that never comes.
- Dwell (``[channel] turn_dwell_ms``, default 300 ms): a turn request that arrives while we
  hold the turn and are paying on the channel (a local request queued, a version of ours in
  flight, or one signed within the last dwell) is held back for the dwell; then the core grants
  once our versions are acked. A request that finds us idle goes through at once. With
  payments flowing both ways, each side's queued payments share one direction switch instead of
  one switch each (every switch spends nLockTime budget and reserves a fee step). The price: a
  reverse payment waits up to the dwell (plus a round trip) for the turn; the dwell stays below
  the 2 s after which a waiting request logs why it waits. Only the current request is held
  (a resent one replaces it) and only in memory: the peer asks again on every reestablish.
- Local requests are signed one at a time but waited for together: the lock is released once
  our version is out, so concurrent payments on one channel pipeline (the core allows several
  single-signed versions in flight) and each caller returns when the ack covering its version
  is in. A peer that asked for the turn is not starved: new requests wait until nothing is in
  flight, and the core grants then.
- Group commit: every channel message dispatched before the event loop next turns (a burst
  read from one or several links), and every local single-signed request (pay, escrow offer,
  commit, rollback) made before then, is handled inside one ``endpoint.batch()``; one fsync
  covers them all, and only after it do messages leave, broadcasts start and payment events
  (``PaymentReceived`` of the payments facade, which the microgrid seller credits from) go out. If that commit fails (a full disk), the channels are
  reloaded from the store: nothing of the batch was sent. The local callers staged in it are
  told at once with the store's error (``stage_update`` hands each a future of the commit):
  waiting for an acknowledgement that cannot come would only turn a definite failure into a
  timeout. The peers are then asked to reestablish (after a delay that doubles while commits
  keep failing), so what they sent in the lost batch comes again once the disk can take it.
- Payments carry ids (``eschaton.daemon.payments``): a retried request never pays twice.
- Per-channel keys come from one secret derived from the wallet seed, so the channel store
  holds no private keys and a backup of the seed plus the store restores everything.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from embit import bip39

from eschaton.chain.backend import NewTip, Reorg
from eschaton.channel.driver import ChannelEndpoint, KeyFundingSigner
from eschaton.channel.payments import PaymentRecord
from eschaton.channel.store import ChannelStore, DiskFull, StoreError
from eschaton.channel.watcher import ChannelWatcher
from eschaton.config import defaults as D
from eschaton.core.channel import Channel, ChannelParams, FundingInput, Notify, Policy, SignFunding
from eschaton.core.channel.errors import ProtocolViolation
from eschaton.core.channel.keys import derive_channel_key
from eschaton.core.channel.messages import Message, OpenChannel, TurnRequest
from eschaton.core.channel.params import DEFAULT_MAX_CONTRACTS, min_fee_step
from eschaton.core.channel.updates import MAX_INFLIGHT
from eschaton.core.wire.codec import Message as WireMessage
from eschaton.daemon import chanwire
from eschaton.daemon.activity import ActivitySummary
from eschaton.daemon.events import EventStream
from eschaton.daemon.payments import PaymentEvent, Payments
from eschaton.errors import LocalError, RemoteError, TransientError
from eschaton.net.router import ServiceRoutes

log = logging.getLogger("eschaton.channels")

REQUEST_TIMEOUT = 30.0
WAIT_NOTE = 2.0  # s: a local request still waiting after this says, once, what it waits for
HOLD_TURNS = 64  # at most this many loop turns a group commit waits for queued local requests
REANCHOR_FEE = 2_000  # sat, paid by the proposer for the re-anchor transaction
REANCHOR_TIMEOUT = 3600.0  # the new anchor must confirm: on a real chain that takes blocks
RESYNC_DELAY = (0.5, 30.0)  # s: first and longest wait before reestablishing after a failed commit


class ChannelRequestError(LocalError):
    pass


class PeerUnavailable(TransientError):
    pass


class _PeerMap:
    """channel id -> peer node id (hex), kept by the channel store (``channel_peers``): staged
    there before anything about the channel is sent and committed with the channel's first
    state. ``map`` is the in-memory copy every lookup reads."""

    def __init__(self, store: ChannelStore) -> None:
        self.store = store
        self.map: dict[bytes, str] = store.peers()

    def set(self, cid: bytes, peer: str) -> None:
        self.store.stage_peer(cid, peer)
        self.map[cid] = peer


def channel_secret(mnemonic: str, passphrase: str = "") -> bytes:  # the words alone must not sign
    return hashlib.sha256(b"eschaton/channel-secret/v1" + bip39.mnemonic_to_seed(mnemonic, passphrase)).digest()


class ChannelService:
    def __init__(self, node: Any, store: ChannelStore, peers: _PeerMap, secret: bytes, policy: Policy) -> None:
        self.node = node
        self.store = store
        self.peers = peers
        self._secret = secret
        self.height = 0
        self._changed = asyncio.Condition()
        self._outq: dict[str, asyncio.Queue[WireMessage]] = {}
        self._writers: dict[str, asyncio.Task[None]] = {}
        self._link_of: dict[str, Any] = {}  # peer -> the session its writer sends on
        self.endpoint = ChannelEndpoint(store, self.key_for, self._send, self._sign_funding, policy)
        self.endpoint.listeners.append(self._on_notify)
        self.watcher = ChannelWatcher(node.chain, self.endpoint)
        # Events other than single payments (opens, closes, escrows, budget warnings, refused
        # messages) and the payments facade's events go to the node's one stream.
        self.stream: EventStream = getattr(node, "stream", None) or EventStream()
        self.activity = ActivitySummary(log)
        self._locks: dict[bytes, asyncio.Lock] = {}
        self._busy: set[bytes] = set()
        self._deferred: dict[bytes, tuple[Any, WireMessage]] = {}
        cfg = getattr(getattr(node, "config", None), "channel", None)
        self.turn_dwell: float = cfg.turn_dwell if cfg is not None else D.TURN_DWELL_MS / 1000
        self._queued: dict[bytes, int] = {}  # local requests waiting for or holding a channel's lock
        self._dwell: dict[bytes, asyncio.TimerHandle] = {}  # a held turn request's dwell, running
        self._dwelt: set[bytes] = set()  # the held turn request has had its dwell
        self._last_local: dict[bytes, float] = {}  # loop time of our last signed local request
        self.turn_dwells = 0  # turn requests held for a dwell (node status)
        self._rx: contextlib.AbstractContextManager[None] | None = None  # the open group-commit batch (see the rules)
        self._rx_waiters: list[asyncio.Future[None]] = []  # local requests staged in it: told its outcome
        self._resync_delay = 0.0  # after a failed commit: wait before reestablishing (0: none due)
        self._resync: asyncio.TimerHandle | None = None
        self._rx_turns = 0  # loop turns the open batch was held for local requests queued on a lock
        self._lock_waiters = 0  # local requests waiting for a channel's lock
        self._local_staged = 0  # local requests staged so far (counter)
        self._local_mark = 0  # ... as of the batch's last look
        self.turn_requests_resent = 0  # turn requests asked again on a relink (node status)
        self.payments = Payments(self)
        self.payments.subscribe(self._to_stream)

    # --- lifecycle -------------------------------------------------------------------------

    @classmethod
    async def open(cls, node: Any) -> ChannelService:
        d: Path = node.datadir
        store = ChannelStore(d / "channels.db")
        peers = _PeerMap(store)
        policy = Policy(min_lifetime_blocks=20, max_acceptor_contribution=0, min_locktime_step=1,
                        min_escrow_delta=2)
        svc = cls(node, store, peers, channel_secret(node.wallet.seed.mnemonic, node.wallet.seed.passphrase), policy)
        svc.endpoint.restore()
        svc.height = (await node.chain.tip()).height
        node.chain.subscribe(svc._on_chain)
        await svc.watcher.start()
        await svc.watcher.sync()
        return svc

    async def close(self) -> None:
        self.activity.flush()
        self._close_rx(force=True)  # commit (and answer) a burst still open before the store closes
        await self.watcher.stop()
        for t in self._writers.values():
            t.cancel()
        if self._resync is not None:
            self._resync.cancel()
        try:
            self.store.close()
        except DiskFull as e:  # held bookkeeping only (see the store's rules): the signed state is on disk
            log.error("%s; bookkeeping since the last commit is lost", e)

    def key_for(self, cid: bytes) -> bytes:
        return derive_channel_key(self._secret, cid)

    def _on_chain(self, ev: Any) -> None:
        if isinstance(ev, NewTip):
            self.height = ev.tip.height
        elif isinstance(ev, Reorg):
            self.height = ev.fork_height
        self._poke()

    def _to_stream(self, ev: PaymentEvent) -> None:
        self.stream.emit_typed("payments", ev)

    def _on_notify(self, n: Notify) -> None:
        if n.kind == "payment":
            # A payment the peer made us. Notifications follow the commit of their state
            # (``ChannelEndpoint.batch``), so the version that carries it is durable now.
            self.payments.received(n.channel_id, int(n.data["amount"]), int(n.data["number"]),
                                   int(n.data["balance"]))
        if self.activity.note(n.channel_id.hex()[:12], n.kind, n.data):
            return  # one per payment: counted into the periodic summary line (daemon/activity.py)
        self.stream.emit("channel", n.kind, {"channel": n.channel_id, **n.data})
        log.info("channel %s: %s", n.channel_id.hex()[:12], n.kind)
        if n.kind == "switch_budget_low":
            ch = self.endpoint.channels.get(n.channel_id)
            # The opener re-anchors (one side only, so both do not propose at once); the
            # acceptor's core answers the proposal by itself. If it fails (open contracts, the
            # peer offline), the budget warning stays in the notifications and a later attempt
            # or a cooperative close remains: the channel never silently becomes unusable.
            if ch is not None and ch.role == "opener":
                asyncio.get_running_loop().create_task(self._auto_reanchor(ch))

    async def _auto_reanchor(self, ch: Channel) -> None:
        try:
            await self.reanchor(ch)
        except (LocalError, RemoteError, TransientError) as e:
            log.warning("automatic re-anchor of %s failed: %s", ch.channel_id.hex()[:12], e)

    async def reanchor(self, ch: Channel, lifetime_blocks: int | None = None, fee: int = REANCHOR_FEE) -> None:
        """Move the channel to a new 2-of-2 output with a fresh nLockTime budget."""
        span = lifetime_blocks or max(ch.params.lifetime - ch.funding_locktime, ch.params.locktime_step * 4)
        async with self.exclusive(ch.channel_id):
            self._session_for(ch.channel_id)
            # Payments may still be in flight (they pipeline): a re-anchor needs both signatures.
            await self.wait_for(lambda: ch.pending is None, "the versions in flight to be acknowledged")
            await self.ensure_turn(ch)
            self.endpoint.call(ch.channel_id, "reanchor_channel", self.height + span, fee, self.height)
            self._redeliver(ch.channel_id)
            self._poke()
            await self.wait_for(lambda: ch.state.name != "REANCHORING", "the re-anchor to confirm",
                                timeout=REANCHOR_TIMEOUT)

    def _poke(self) -> None:
        """Wake waiters after any change; the watcher only if the channels' chain needs changed
        (it follows blocks by itself: a payment must not cost the chain server a query)."""
        self.payments.settle()
        self.watcher.channels_changed()

        async def notify() -> None:
            async with self._changed:
                self._changed.notify_all()

        asyncio.get_running_loop().create_task(notify())

    # --- funding -----------------------------------------------------------------------------

    def _sign_funding(self, req: SignFunding) -> dict[int, list[bytes]]:
        keys = [self.node.wallet.privkey_for(fi.script_pubkey) for fi in req.inputs]
        if any(k is None for k in keys):
            raise ProtocolViolation("a funding input is not this wallet's")
        return KeyFundingSigner([k for k in keys if k is not None])(req)

    # --- links -------------------------------------------------------------------------------

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
        }, opened=self._link_up, closed=self._link_down)

    def _on_message(self, session: Any, wm: WireMessage) -> None:
        try:
            self.receive(session, wm)
        except _Refused as e:
            # Already answered with channel_error by the endpoint; keep the link.
            log.warning("refused %s from %s: %s", wm.name, session.remote.short(), e)

    def _link_up(self, session: Any) -> None:
        peer = session.remote.hex()
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
        self._poke()  # waiters for a linked peer (``Payments.wait_channel``) look again

    def linked(self, peer: str) -> bool:
        """Whether channel messages to ``peer`` go out now (its link is up)."""
        return peer in self._outq

    def _link_down(self, session: Any, _event: Any = None) -> None:
        peer = session.remote.hex() if session.remote is not None else ""
        # Only the link that owns the writer may take it down: when a newer link replaced this
        # one, the old link's close arrives after the new one is up, and removing the new queue
        # would silently drop every later channel message to a peer that is still linked.
        if self._link_of.get(peer) is not session:
            return
        self._link_of.pop(peer, None)
        writer = self._writers.pop(peer, None)
        if writer is not None:
            writer.cancel()
        self._outq.pop(peer, None)

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

    def _open_rx(self) -> None:
        if self._rx is None:
            self._local_mark = self._local_staged
            self._rx = self.endpoint.batch()
            self._rx.__enter__()
            asyncio.get_running_loop().call_soon(self._close_rx)

    def _close_rx(self, force: bool = False) -> None:
        if (self._rx is not None and not force and self._lock_waiters
                and self._local_staged != self._local_mark and self._rx_turns < HOLD_TURNS):
            # Local requests queued on a channel's lock take it one loop turn after another: hold
            # the batch open for them (a few turns, microseconds) so that they share its fsync,
            # as long as each turn staged another one (a request that waits for the peer instead
            # needs this batch's messages out: then it commits).
            self._local_mark = self._local_staged
            self._rx_turns += 1
            asyncio.get_running_loop().call_soon(self._close_rx)
            return
        self._rx_turns = 0
        cm, self._rx = self._rx, None
        waiters, self._rx_waiters = self._rx_waiters, []
        if cm is None:
            return
        try:
            cm.__exit__(None, None, None)
        except Exception as e:  # the disk failed: memory is ahead of it, and nothing was sent
            if isinstance(e, StoreError):
                log.error("%s; nothing of this commit was sent, reloading channels from the store", e)
            else:
                log.exception("channel store commit failed; reloading channels from the store")
            err = e if isinstance(e, StoreError) else StoreError(f"channel store commit failed: {e}")
            for w in waiters:
                if not w.done():
                    w.set_exception(err)
            self.store.drop_held()
            self.endpoint.restore()  # reads only: what is on disk is what was sent
            self._schedule_resync()
            self._poke()
            return
        self._resync_delay = 0.0
        for w in waiters:
            if not w.done():
                w.set_result(None)
        self._poke()

    def _schedule_resync(self) -> None:
        """After a failed commit: reestablish every linked channel, later (see the rules)."""
        lo, hi = RESYNC_DELAY
        self._resync_delay = min(max(self._resync_delay * 2, lo), hi)
        if self._resync is None:
            self._resync = asyncio.get_running_loop().call_later(self._resync_delay, self._do_resync)

    def _do_resync(self) -> None:
        self._resync = None
        for cid, peer in self.peers.map.items():
            if peer in self._outq and cid in self.endpoint.channels:
                try:
                    self.endpoint.reconnect(cid)
                except (RemoteError, StoreError) as e:
                    log.warning("reestablish of %s failed: %s", cid.hex()[:12], e)

    def receive(self, session: Any, wm: WireMessage) -> None:
        msg = chanwire.from_wire(wm)
        self._open_rx()
        peer = session.remote.hex()
        owner = self.peers.map.get(msg.channel_id)
        if isinstance(msg, OpenChannel) and msg.channel_id not in self.endpoint.channels:
            if owner is not None and owner != peer:
                raise ProtocolViolation("channel id already used with another peer")
            self.peers.set(msg.channel_id, peer)
            kw = {"payout_script": self.node.wallet.payout_script(), "inputs": [], "change": []}
            try:
                self.endpoint.receive(msg, self.height, kw)
            finally:
                self._poke()
            return
        if owner != peer:
            raise ProtocolViolation("message for a channel this peer does not hold")
        if isinstance(msg, TurnRequest) and self._hold_turn_request(msg.channel_id, session, wm):
            return
        try:
            self.endpoint.receive(msg, self.height)
        except RemoteError as e:
            self.stream.emit("channel", "refused", {"channel": msg.channel_id, "message": msg.NAME,
                                                    "error": type(e).__name__, "detail": str(e)})
            raise _Refused(str(e)) from e
        finally:
            self._poke()

    # --- requests ----------------------------------------------------------------------------

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

    async def open_channel(self, peer_hex: str, capacity: int, lifetime: int, step: int) -> Channel:
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
        # The smallest fee step that lets any newer version replace any older one in a mempool
        # (docs/channels.md, "Fee step"); it is a reserve the cooperative close gives back.
        params = ChannelParams(opener_contribution=capacity, acceptor_contribution=0, lifetime=h + lifetime,
                               locktime_step=step, fee_step=min_fee_step(DEFAULT_MAX_CONTRACTS),
                               initial_fee=max(2_000, _fee),
                               max_payment=capacity, reserve=0, escrow_delta=max(2, step), safety_margin=3,
                               min_depth=1, low_switch_warning=3)
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


class _Refused(RemoteError):
    """A channel message the core refused; the link stays up and the channel unchanged."""

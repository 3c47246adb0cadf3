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
  longer than ``WAIT_NOTE`` (``chan_base``) says once, at info level, what it waits for (and
  how long it took when it ends), so a stalled channel is never silent.
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
- Where things are: this module opens, closes and commits (the group commit above, the
  reanchor); ``chan_links`` routes the channel rows and runs a writer per linked peer;
  ``chan_requests`` runs local requests (open, turn, single-signed updates, ``exclusive``, the
  dwell); ``chan_base`` holds what they share.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from pathlib import Path
from typing import Any

from embit import bip39

from eschaton.chain.backend import NewTip, Reorg
from eschaton.channel.driver import ChannelEndpoint, KeyFundingSigner
from eschaton.channel.store import ChannelStore, DiskFull, StoreError
from eschaton.channel.watcher import ChannelWatcher
from eschaton.config import defaults as D
from eschaton.core.channel import Channel, Notify, Policy, SignFunding
from eschaton.core.channel.errors import ProtocolViolation
from eschaton.core.channel.keys import derive_channel_key
from eschaton.core.channel.messages import OpenChannel, TurnRequest
from eschaton.core.networks import network
from eschaton.core.wire.codec import Message as WireMessage
from eschaton.daemon import chanwire
from eschaton.daemon.activity import ActivitySummary
from eschaton.daemon.chan_base import Refused
from eschaton.daemon.chan_links import ChannelLinks
from eschaton.daemon.chan_requests import ChannelRequests
from eschaton.daemon.events import EventStream
from eschaton.daemon.payments import PaymentEvent, Payments
from eschaton.errors import LocalError, RemoteError, TransientError

log = logging.getLogger("eschaton.channels")

HOLD_TURNS = 64  # at most this many loop turns a group commit waits for queued local requests
REANCHOR_FEE = 2_000  # sat, paid by the proposer for the re-anchor transaction
REANCHOR_TIMEOUT = 3600.0  # s: ``channel reanchor --wait`` waits this long for the re-anchor to confirm
PRUNE_EVERY = 600.0  # s between two prunings of the payment records
PRUNE_CHUNK = 2_000  # payment records pruned in one transaction (about 0.1 s here)
RESYNC_DELAY = (0.5, 30.0)  # s: first and longest wait before reestablishing after a failed commit


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


class ChannelService(ChannelLinks, ChannelRequests):
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
        self._open_links: dict[str, list[Any]] = {}  # peer -> its open links, oldest first
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
        # Payment records kept (days, newest per channel): pruned at start and every PRUNE_EVERY.
        self.retention: tuple[int, int] = (
            (cfg.payment_retention_days, cfg.payment_records) if cfg is not None
            else (D.PAYMENT_RETENTION_DAYS, D.PAYMENT_RECORDS))
        # The count cap never prunes a record younger than this: a client that retries within it
        # without saying when it first asked is answered from its record, never paid twice,
        # however fast the node pays (the store may then hold more than the cap for that long).
        self.keep_at_least_s = 3600.0 * (cfg.payment_keep_hours if cfg is not None else D.PAYMENT_KEEP_HOURS)
        self._pruner: asyncio.Handle | None = None
        self.payments_pruned = 0  # payment records pruned since start (node status)
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
        self._auto_reanchors: set[bytes] = set()  # channels with an automatic re-anchor running
        self.payments = Payments(self)
        self.payments.subscribe(self._to_stream)

    # --- lifecycle -------------------------------------------------------------------------

    @classmethod
    async def open(cls, node: Any) -> ChannelService:
        d: Path = node.datadir
        store = ChannelStore(d / "channels.db")
        peers = _PeerMap(store)
        # What this node accepts from an opener: the network's row of core/networks.py (regtest:
        # short lifetimes and steps for tests and demos).
        policy = network(node.config.chain.network).policy()
        svc = cls(node, store, peers, channel_secret(node.wallet.seed.mnemonic, node.wallet.seed.passphrase), policy)
        svc.endpoint.restore()
        svc.height = (await node.chain.tip()).height
        node.chain.subscribe(svc._on_chain)
        await svc.watcher.start()
        await svc.watcher.sync()
        svc.prune()
        return svc

    def prune(self) -> None:
        """Prune payment records past the retention (see the rules), then again in PRUNE_EVERY s."""
        days, keep = self.retention
        try:
            now = time.time()
            n = self.store.prune_payments(now - days * 86_400, keep, PRUNE_CHUNK, now - self.keep_at_least_s)
        except StoreError as e:  # a full disk: the records stay, nothing is lost; try again later
            log.warning("%s", e)
            n = 0
        self.payments_pruned += n
        # A backlog (the first start after an upgrade) goes a chunk per loop turn: payments and
        # links keep running between chunks.
        loop = asyncio.get_running_loop()
        self._pruner = loop.call_later(PRUNE_EVERY, self.prune) if n < PRUNE_CHUNK else loop.call_soon(self.prune)

    async def close(self) -> None:
        self.activity.flush()
        self._close_rx(force=True)  # commit (and answer) a burst still open before the store closes
        await self.watcher.stop()
        for t in self._writers.values():
            t.cancel()
        if self._resync is not None:
            self._resync.cancel()
        if self._pruner is not None:
            self._pruner.cancel()
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
        if n.kind.startswith("escrow_") or n.kind in ("turn", "opened"):
            self.payments.escrows.on_notify(n)
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
                self._start_auto_reanchor(ch)
        elif n.kind in ("reanchor_contested", "reanchor_unconfirmed"):
            log.warning("channel %s: re-anchor %s not confirmed (%s); broadcasting it again",
                        n.channel_id.hex()[:12], str(n.data.get("txid", ""))[:16], n.kind)

    def _start_auto_reanchor(self, ch: Channel) -> None:
        if ch.channel_id in self._auto_reanchors:
            return  # one at a time: a warning during a running attempt adds nothing
        self._auto_reanchors.add(ch.channel_id)
        asyncio.get_running_loop().create_task(self._auto_reanchor(ch))

    async def _auto_reanchor(self, ch: Channel) -> None:
        cid = ch.channel_id
        try:
            await self.reanchor(ch)
        except (LocalError, RemoteError, TransientError) as e:
            # Tried again when the peer's link is next up (``_link_up``).
            log.warning("automatic re-anchor of %s failed: %s", cid.hex()[:12], e)
        finally:
            self._auto_reanchors.discard(cid)

    def _retry_reanchor(self, ch: Channel) -> None:
        """On a link-up: an opener's channel whose budget warning was given and not answered by
        a re-anchor (an attempt failed) tries again."""
        if (ch.role == "opener" and ch.state.name == "OPEN" and ch.budget_warned
                and ch.status(self.height).budget_low):
            self._start_auto_reanchor(ch)

    async def reanchor(self, ch: Channel, lifetime_blocks: int | None = None, fee: int = REANCHOR_FEE) -> None:
        """Move the channel to a new 2-of-2 output with a fresh nLockTime budget.

        Returns once the re-anchor transaction R is signed by both and the channel pays on R's
        output (two round trips after the turn is ours), not when R confirms: the watcher
        follows R from then on (``docs/channels.md``, Re-anchor). Holds the channel's lock
        only for the proposal; our payments wait for it, the peer's turn request is granted as
        it ends."""
        span = lifetime_blocks or max(ch.params.lifetime - ch.funding_locktime, ch.params.locktime_step * 4)
        cid = ch.channel_id
        short = cid.hex()[:12]
        async with self.exclusive(cid):
            self._session_for(cid)
            # Payments may still be in flight (they pipeline): a re-anchor needs both signatures.
            await self.wait_for(lambda: ch.pending is None,
                                f"the versions in flight on channel {short} to be acknowledged before a re-anchor")
            await self.ensure_turn(ch)
            log.info("channel %s: re-anchoring (%d switches left)", short, ch.status(self.height).switches_left)
            self.endpoint.call(cid, "reanchor_channel", self.height + span, fee, self.height)
            self._poke()
            # By channel id: the channel object is replaced if a commit fails and it is reloaded.
            await self.wait_for(lambda: cid not in self.endpoint.channels
                                or self.endpoint.channels[cid].state.name != "REANCHORING",
                                f"the peer to sign the re-anchor of channel {short}")

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
            raise Refused(str(e)) from e
        finally:
            self._poke()

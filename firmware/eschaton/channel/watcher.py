"""The chain watcher: reacts to what anyone broadcasts against our channels.

Rules / theory of operation:
- Level-triggered: ``sync()`` looks at the chain as it is (tip, funding confirmations, who spent
  the funding output, which contract outputs are still unspent) and feeds the facts to each
  channel core; chain subscriptions only wake it up. After a crash or a missed event, the next
  ``sync()`` does the right thing anyway.
- When it looks (each look costs the chain server a tip query and two per channel, over the
  mesh when the backend is remote): on chain events (a new block, a reorg, a watched outpoint
  spent), every ``period`` seconds (a slow safety net for a lost event), and when the channels'
  on-chain needs change (``channels_changed``: a broadcast queued, a channel that appeared or
  changed state). Payments change none of these, so a channel carrying payments all day costs
  the chain server nothing between blocks. A direction switch moves the nLockTime budget: that
  is checked against the last height seen (``check_budget``), without asking the chain.
- A channel that moved to a re-anchor transaction R before R confirmed still has its earlier
  anchor followed here (``watched_anchors``): each look tells the core who spends it, and the
  core forgets R once confirmed, or broadcasts it again (missing from the mempool, or an old
  version competing for the old output).
- The core decides what to broadcast: our best version as soon as it is final when the peer
  broadcast anything else, when the channel's nLockTime budget runs out, or on a unilateral
  close. The watcher sends the core's broadcasts and keeps the refusal reasons (``non-final``
  until nLockTime, ``insufficient fee`` if another version in the mempool pays as much).
- Sweeps: when a version with hash-locked outputs confirms, each contract output we may claim is
  claimed with the preimage (escrow preimages from the channel, oracle preimages given to
  ``learn_preimage``); each we own is reclaimed once its CLTV timeout has passed. An escrow we
  paid that the payee claimed tells us its preimage (read from the claim's witness, once per
  spend): the channel keeps it and reports ``escrow_fulfilled``, as if the payee had sent it.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from eschaton.chain.backend import (
    BroadcastRefused,
    ChainBackend,
    ChainEvent,
    OutPoint,
    Spend,
    UnknownTransaction,
)
from eschaton.channel.driver import ChannelEndpoint
from eschaton.core import script as S
from eschaton.core.channel import Channel, ChannelState
from eschaton.core.channel.sweep import claim_tx, preimage_from_claim, reclaim_tx
from eschaton.core.channel.transactions import OutputInfo, version_outputs

log = logging.getLogger(__name__)

_FUNDING_WATCH = {ChannelState.REFUND_SIGNED, ChannelState.FUNDING_BROADCAST, ChannelState.OPEN, ChannelState.REANCHORING,
                  ChannelState.CLOSING, ChannelState.FORCE_CLOSING, ChannelState.CLOSED}


@dataclass(frozen=True, slots=True)
class BroadcastResult:
    channel_id: bytes
    label: str
    txid: str | None
    refused: str | None  # the chain's reason, or None when accepted


# s between looks when nothing asks for one: the safety net for a chain event lost on the way
# (events are the normal trigger), not the way blocks are noticed.
PERIOD = 60.0


class ChannelWatcher:
    def __init__(self, backend: ChainBackend, endpoint: ChannelEndpoint, *, sweep_fee: int = 1_000,
                 period: float = PERIOD) -> None:
        self.backend = backend
        self.endpoint = endpoint
        self.sweep_fee = sweep_fee
        self.period = period
        self.syncs = 0  # passes so far (node status)
        self._needs: tuple[tuple[bytes, ChannelState, str, int], ...] = ()  # as of the last pass
        self._height = 0  # the tip's height at the last pass
        self._locktimes: dict[bytes, int] = {}  # each channel's current nLockTime, budget checked
        self.preimages: set[bytes] = set()
        self._inspected: set[tuple[str, int]] = set()  # spends of our escrows already read (``_learn``)
        self.results: list[BroadcastResult] = []
        self._wake = asyncio.Event()
        self._watched: set[OutPoint] = set()
        self._task: asyncio.Task[None] | None = None

    def learn_preimage(self, preimage: bytes) -> None:
        """An oracle's published preimage (bets are claimed with it)."""
        self.preimages.add(preimage)

    # ---- running --------------------------------------------------------------------------

    def _on_event(self, ev: ChainEvent) -> None:
        self.wake()

    def wake(self) -> None:
        """Look at the chain again soon (after a chain event, or when a channel queued a broadcast)."""
        self._wake.set()

    def channels_changed(self) -> None:
        """The channels moved (a message, a local request): look again only if what they need
        from the chain did (see the rules); a payment alone does not."""
        if self.endpoint.broadcasts or self._channel_needs() != self._needs:
            self._wake.set()
            return
        if not self._height:
            return  # no pass yet: the first one checks every budget
        for cid, ch in self.endpoint.channels.items():
            lt = ch.current.locktime
            if self._locktimes.get(cid) != lt:
                self._locktimes[cid] = lt
                self.endpoint.execute(ch, ch.check_budget(self._height))

    def _channel_needs(self) -> tuple[tuple[bytes, ChannelState, str, int], ...]:
        """What decides which chain facts the channels need: each one's state, anchor, and the
        earlier anchors it still follows (re-anchors not confirmed yet)."""
        return tuple((cid, ch.state, ch.setup.funding_txid if ch.setup is not None else "", len(ch.anchors))
                     for cid, ch in self.endpoint.channels.items())

    async def start(self) -> None:
        self.backend.subscribe(self._on_event)
        for ch in self.endpoint.channels.values():
            if ch.setup is not None:
                await self.backend.watch_outpoint(OutPoint(ch.setup.funding_txid, ch.setup.funding_vout))
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancel that arrives
            # as the event is set (a block), and stop() would then wait for ever.
            try:
                async with asyncio.timeout(self.period):
                    await self._wake.wait()
            except TimeoutError:
                pass  # the periodic look
            self._wake.clear()
            try:
                await self.sync()
            except Exception:  # supervision boundary: keep watching, the next event retries
                log.exception("channel watcher sync failed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    # ---- one pass -------------------------------------------------------------------------

    async def sync(self) -> None:
        self.syncs += 1
        self._needs = self._channel_needs()  # a change during this pass wakes the next one
        tip = await self.backend.tip()
        h = self._height = tip.height
        await self._flush()
        for ch in list(self.endpoint.channels.values()):
            if ch.setup is None or ch.state not in _FUNDING_WATCH:
                continue
            fo = OutPoint(ch.setup.funding_txid, ch.setup.funding_vout)
            if fo not in self._watched:  # a new channel, or a re-anchored one
                await self.backend.watch_outpoint(fo)
                self._watched.add(fo)
            try:
                confs = (await self.backend.tx_status(ch.setup.funding_txid)).confirmations
            except UnknownTransaction:
                confs = 0
            self._locktimes[ch.channel_id] = ch.current.locktime
            self.endpoint.execute(ch, ch.on_block(h, confs))
            spend = await self.backend.spender(fo)
            if ch.setup is None or OutPoint(ch.setup.funding_txid, ch.setup.funding_vout) != fo:
                continue  # moved to a re-anchor during this look: what we saw was the old anchor's (next look)
            if spend is not None:
                self.endpoint.execute(ch, ch.on_funding_spent(spend.txid, spend.height is not None, h))
            await self._flush()
            if spend is not None and spend.height is not None:
                await self._sweep(ch, spend.txid, h)
            await self._follow_anchors(ch, h)
        await self._flush()

    async def _follow_anchors(self, ch: Channel, height: int) -> None:
        """Re-anchors the channel moved to before they confirmed: the core learns who spends
        each earlier anchor (R confirmed, R missing from the mempool, an old version)."""
        for txid, vout in ch.watched_anchors():
            op = OutPoint(txid, vout)
            if op not in self._watched:
                await self.backend.watch_outpoint(op)
                self._watched.add(op)
            spend = await self.backend.spender(op)
            self.endpoint.execute(ch, ch.on_old_anchor(txid, vout, spend.txid if spend is not None else None,
                                                       spend is not None and spend.height is not None, height))
            await self._flush()

    async def _flush(self) -> None:
        for cid, raw, label in self.endpoint.take_broadcasts():
            try:
                txid = await self.backend.broadcast(raw)
                self.results.append(BroadcastResult(cid, label, txid, None))
                log.info("broadcast %s for channel %s: %s", label, cid.hex()[:12], txid)
            except BroadcastRefused as e:
                self.results.append(BroadcastResult(cid, label, None, e.reason))
                log.info("broadcast %s for channel %s refused: %s", label, cid.hex()[:12], e.reason)

    async def _learn(self, ch: Channel, out: OutputInfo, spent: Spend) -> None:
        """An escrow we paid was spent by someone else: if the payee claimed it, its witness
        holds the preimage, which we keep (a forwarding node claims upstream with it)."""
        key = (spent.txid, spent.input_index)
        if key in self._inspected:
            return
        try:
            raw = await self.backend.get_transaction(spent.txid)
        except UnknownTransaction:
            return  # looked at again on the next sync
        self._inspected.add(key)
        pre = preimage_from_claim(raw, spent.input_index, out)
        if pre is not None:
            log.info("channel %s: escrow %d claimed on chain; preimage learned", ch.channel_id.hex()[:12],
                     out.contract_id)
            self.endpoint.execute(ch, ch.learn_preimage(out.contract_id, out.value, pre))

    async def _sweep(self, ch: Channel, txid: str, height: int) -> None:
        row = self.endpoint.store.version_by_txid(txid)
        if row is None or row.channel_id != ch.channel_id or ch.setup is None:
            return  # a cooperative close: nothing hash-locked to sweep
        known = {S.sha256(p): p for p in list(ch.preimages.values()) + list(self.preimages)}
        priv = self.endpoint.key_for(ch.channel_id)
        for vout, out in enumerate(version_outputs(row.version, ch.setup)):
            if out.kind == "balance":
                continue
            spent = await self.backend.spender(OutPoint(txid, vout))
            if spent is not None:
                if out.kind == "escrow" and out.role == ch.role and not known.keys() & set(out.hashes):
                    await self._learn(ch, out, spent)
                continue
            raw: bytes | None = None
            label = f"{out.kind} {out.contract_id}"
            if out.claim_role == ch.role:
                pre = next((known[h] for h in out.hashes if h in known), None)
                if pre is not None:
                    raw = claim_tx(out, txid, vout, pre, priv, ch.payout_script, self.sweep_fee)
                    label = "claim " + label
            elif out.role == ch.role and height >= out.timeout:
                raw = reclaim_tx(out, txid, vout, priv, ch.payout_script, self.sweep_fee)
                label = "reclaim " + label
            if raw is not None:
                self.endpoint.broadcasts.append((ch.channel_id, raw, label))
        await self._flush()

"""The stamp service: timestamps digests in rounds committed to the chain (or an upstream node).

Theory of operation (the pure parts are in ``eschaton.core.stamp``):
- ``submit`` (API ``stamp.submit``, or a peer's ``stamp_submit``) writes the digests to the
  store before it answers: an acknowledged digest survives a crash and gets its proof later.
- The round loop closes a round when ``Schedule`` says so: it builds the round's tree, and
  either sends the root upstream (``[stamp] upstream``) or funds ``OP_RETURN <root>`` from the
  node's wallet; the signed transaction is stored with the round (state COMMITTING) before it
  is broadcast, so a crash in between rebroadcasts the same transaction.
- On every chain event the committed rounds are checked: confirmed -> the tail (root ->
  txid -> block Merkle root -> attestation) is built from the block; back in the mempool ->
  COMMITTED; unknown to the chain -> rebroadcast, or a new commitment if its coins are spent.
  Rounds near the tip stay watched after they complete, so a reorg updates their proofs.
- Upstream: a downstream round's root is one digest of ours with the peer as its origin; when
  its round confirms, the peer gets ``stamp_proof`` (its root's proof through our tree); the
  peer resends its batch until then, and a resend of a proven digest is answered at once.
- Peers pay ``[stamp] price_sat`` per digest (``eschaton.daemon.stamp_paid``): a downstream
  round's root is a paid batch of one, bought at most at ``[stamp] max_price_sat``; ``stamp.submit``
  with ``upstream`` stamps the digests through that peer (paying it) instead of locally.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from eschaton.api.registry import ApiError, Command, CommandTable, Param
from eschaton.chain.backend import BroadcastRefused, UnknownTransaction
from eschaton.core.stamp import ots
from eschaton.core.stamp.chain import block_path, branch_path, commitment_path
from eschaton.core.stamp.ops import ProofError, run
from eschaton.core.stamp.rounds import RoundState, Schedule
from eschaton.core.stamp.tree import NONCE_LEN, Tree
from eschaton.core.wire.codec import Message, make
from eschaton.daemon.service import STOPPED, Health, State
from eschaton.daemon.stamp_paid import PaidStamps, StampRefused
from eschaton.daemon.stamp_store import LOCAL, Round, StampStore
from eschaton.errors import EschatonError
from eschaton.net.router import ServiceRoutes

if TYPE_CHECKING:
    from eschaton.daemon.node import Node
    from eschaton.net.session import Session

log = logging.getLogger("eschaton.stamp")
STAMP = CommandTable()
RESEND_S = 2.0
"""How often a round waiting for its upstream's proof sends its root again."""
REORG_WINDOW = 6
"""Complete rounds this close to the tip are still checked on every block."""
MAX_SUBMIT = 10_000
"""Digests per API request."""


class StampService:
    name = "stamp"

    def __init__(self, node: Node, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.node = node
        self.cfg = node.config.stamp
        self.schedule = Schedule(self.cfg.round_s, self.cfg.max_digests)
        self.store: StampStore | None = None
        self._clock = clock
        self._wake = asyncio.Event()
        self._chain_moved = True
        self._task: asyncio.Task[None] | None = None
        self._opened_at: float | None = None
        self._trees: dict[int, Tree] = {}
        self._last_resend = 0.0
        self.error = ""
        self.paid = PaidStamps(self)

    # --- Service ---------------------------------------------------------------------------

    async def start(self) -> None:
        self.store = StampStore(self.node.datadir / "stamp.sqlite")
        if self.store.count_open():
            self._opened_at = self._clock()  # digests accepted before a restart: a fresh round clock
        if self.node.chain is not None:
            self.node.chain.subscribe(self._on_chain)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        self.paid.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.store is not None:
            self.store.close()
            self.store = None

    def health(self) -> Health:
        if self.store is None:
            return STOPPED
        c = self.store.counts()
        detail = f"{self.store.count_open()} waiting, {c['committed'] + c['committing']} committing, " \
                 f"{c['complete'] + c['confirmed']} proven"
        if self.error:
            return Health(State.DEGRADED, f"{detail}; {self.error}")
        return Health(State.OK, detail)

    def commands(self) -> Mapping[str, Command]:
        return STAMP

    def routes(self) -> ServiceRoutes:
        return ServiceRoutes("stamp", {
            "stamp_submit": self._on_stamp_submit,
            "stamp_proof": self._on_stamp_proof,
            "stamp_quote_req": self.paid.on_quote_req,
            "stamp_quote": self.paid.on_reply,
            "stamp_paid_submit": self.paid.on_paid_submit,
            "stamp_answer": self.paid.on_reply,
        })

    # --- digests in ------------------------------------------------------------------------

    def submit(self, digests: list[bytes], origin: str = LOCAL) -> list[int]:
        assert self.store is not None
        ids = self.store.accept(digests, origin)  # durable before anyone hears "accepted"
        self.accepted()
        return ids

    def accepted(self) -> None:
        """Digests were written to the store: the round clock starts if it was idle."""
        if self._opened_at is None:
            self._opened_at = self._clock()
        self._wake.set()

    def _on_chain(self, _ev: Any) -> None:
        self._chain_moved = True
        self._wake.set()

    # --- the loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                await self._step()
                self.error = ""
            except asyncio.CancelledError:
                raise
            except Exception as e:  # supervision boundary: log, report in health, try again later
                self.error = str(e)
                log.warning("stamp round failed: %s", e)
                await asyncio.sleep(1.0)
            deadline = self.schedule.deadline(self._opened_at)
            wait = RESEND_S if deadline is None else max(0.0, min(RESEND_S, deadline - self._clock()))
            # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancel that arrives
            # as the event is set (a chain event), and stop() would then wait for ever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            self._wake.clear()

    async def _step(self) -> None:
        assert self.store is not None
        now = self._clock()
        count = self.store.count_open()
        if self.schedule.due(self._opened_at, count, now):
            await self._close_round()
            self._opened_at = self._clock() if self.store.count_open() else None
        for r in self.store.rounds((RoundState.COMMITTING,)):
            await self._broadcast(r)
        if self._chain_moved:
            self._chain_moved = False
            await self._check_commitments()
        if now - self._last_resend >= RESEND_S:
            self._last_resend = now
            await self._resend_upstream()

    async def _close_round(self) -> None:
        assert self.store is not None
        rows = self.store.open_digests(self.cfg.max_digests)
        tree = Tree([d for _, d in rows], os.urandom(NONCE_LEN * len(rows)))
        if self.cfg.upstream:
            rid = self.store.close_round([i for i, _ in rows], tree.root, tree.nonces, RoundState.UPSTREAM,
                                         None, None, self.cfg.upstream)
            self._trees[rid] = tree
            self._last_resend = 0.0
            log.info("round %d of %d digests sent upstream", rid, len(rows))
            return
        if self.node.wallet is None:
            raise EschatonError("no wallet to fund the commitment")
        from eschaton.core.tx import serialize, txid

        tx = await self.node.wallet.fund_data(tree.root, self.cfg.fee_target_blocks)
        rid = self.store.close_round([i for i, _ in rows], tree.root, tree.nonces, RoundState.COMMITTING,
                                     serialize(tx), txid(tx), "")
        self._trees[rid] = tree
        log.info("round %d of %d digests committing in %s", rid, len(rows), txid(tx))

    async def _broadcast(self, r: Round) -> None:
        """Send a COMMITTING round's transaction; fund a new one if the chain refuses it for good."""
        assert self.store is not None and self.node.chain is not None and r.raw_tx is not None
        try:
            await self.node.chain.broadcast(r.raw_tx)
        except BroadcastRefused as e:
            if await self._known(r.txid):
                pass  # sent before a crash (in the mempool or a block): the same commitment stands
            else:
                from eschaton.core.tx import serialize, txid

                log.info("commitment of round %d refused (%s): funding a new one", r.id, e.reason)
                tx = await self.node.wallet.fund_data(r.root, self.cfg.fee_target_blocks)
                self.store.update(r, RoundState.COMMITTING, raw_tx=serialize(tx), txid=txid(tx))
                await self.node.chain.broadcast(r.raw_tx)
        self.store.update(r, RoundState.COMMITTED)
        self._chain_moved = True

    async def _known(self, txid: str | None) -> bool:
        assert self.node.chain is not None
        if txid is None:
            return False
        try:
            await self.node.chain.tx_status(txid)
        except UnknownTransaction:
            return False
        return True

    async def _check_commitments(self) -> None:
        assert self.store is not None and self.node.chain is not None
        chain = self.node.chain
        tip = (await chain.tip()).height
        for r in self.store.rounds((RoundState.COMMITTED, RoundState.CONFIRMED, RoundState.COMPLETE),
                                   min_height=tip - REORG_WINDOW):
            if r.upstream or r.txid is None:
                continue
            try:
                st = await chain.tx_status(r.txid)
            except UnknownTransaction:
                log.info("commitment of round %d dropped: committing again", r.id)
                self.store.update(r, RoundState.COMMITTING, height=None, block_hash=None)
                await self._broadcast(r)
                continue
            if st.height is None:
                if r.state is not RoundState.COMMITTED:
                    log.info("commitment of round %d back in the mempool (reorg)", r.id)
                    self.store.update(r, RoundState.COMMITTED, height=None, block_hash=None)
                continue
            if st.block_hash != r.block_hash:
                tail = await self._tail(r, st.height)
                self.store.update(r, RoundState.CONFIRMED, height=st.height, block_hash=st.block_hash, tail=tail)
                log.info("round %d confirmed at height %d", r.id, st.height)
                await self._deliver(r)
            if r.state is RoundState.CONFIRMED and st.confirmations >= self.cfg.confirmations:
                self.store.update(r, RoundState.COMPLETE)

    async def _tail(self, r: Round, height: int) -> bytes:
        assert r.raw_tx is not None
        c_path, txid = commitment_path(r.raw_tx, r.root)
        inner: Any = getattr(self.node.chain, "inner", self.node.chain)
        if hasattr(inner, "session") and hasattr(inner, "_call"):  # Electrum: the branch, not the block
            from eschaton.core.merkle import from_hex

            m = await inner._call("blockchain.transaction.get_merkle", txid[::-1].hex(), height)
            b_path = branch_path([from_hex(x) for x in m["merkle"]], int(m["pos"]))
            if run(txid, b_path) != (await header(self.node.chain, height))[36:68]:
                raise EschatonError(f"the chain server's branch for {txid[::-1].hex()} does not reach block {height}")
        else:
            b_path, _root = block_path(await blocks(self.node.chain, height), txid)
        return ots.linear_bytes(c_path + b_path, ots.bitcoin(height))

    # --- proofs out ------------------------------------------------------------------------

    def tree(self, r: Round) -> Tree:
        t = self._trees.get(r.id)
        if t is None:
            assert self.store is not None
            t = Tree([d for d, _ in self.store.round_digests(r.id)], r.nonces)
            self._trees[r.id] = t
        return t

    def proof(self, digest: bytes, origin: str = LOCAL) -> tuple[str, bytes | None]:
        """(state, the proof from ``digest`` to its attestation: operations then attestation)."""
        assert self.store is not None
        where = self.store.find(digest, origin)
        if where is None:
            return "unknown", None
        rid, leaf = where
        if rid is None or leaf is None:
            return "waiting", None
        r = self.store.round(rid)
        if r.tail is None:
            return r.state.value, None
        return r.state.value, self.tree(r).path_bytes(leaf) + r.tail

    def ots_file(self, digest: bytes) -> tuple[str, bytes | None]:
        state, body = self.proof(digest)
        if body is None:
            return state, None
        return state, ots.file_prefix(digest) + body

    async def _deliver(self, r: Round) -> None:
        """Send the proofs of a round's digests that came from peers."""
        assert self.store is not None
        for leaf, (digest, origin) in enumerate(self.store.round_digests(r.id)):
            if origin != LOCAL and r.tail is not None:
                await self._send(origin, make("stamp_proof", digest=digest,
                                              proof=self.tree(r).path_bytes(leaf) + r.tail))

    async def send_to(self, peer: str, msg: Message) -> bool:
        return await self._send(peer, msg)

    async def _send(self, peer: str, msg: Message) -> bool:
        from eschaton.core.link.identity import NodeId

        net = self.node.net
        session = net.session(NodeId.from_hex(peer)) if net is not None else None
        if session is None:
            return False
        try:
            await session.send(msg)
        except EschatonError as e:  # the link closed, or the peer does not run the service
            log.info("stamp message to %s not sent: %s", peer[:12], e)
            return False
        return True

    async def _resend_upstream(self) -> None:
        assert self.store is not None
        for r in self.store.rounds((RoundState.UPSTREAM,)):
            self.paid.root_batch(r.upstream, r.root, self.cfg.max_price_sat)
        self.paid.resend(self._clock())

    async def _on_stamp_submit(self, session: Session, msg: Message) -> None:
        assert session.remote is not None
        peer = session.remote.hex()
        digest = msg.get_bytes("digest")
        state, body = self.proof(digest, peer)
        if body is not None:
            await session.send(make("stamp_proof", digest=digest, proof=body))
        elif state == "unknown":
            if self.cfg.price_sat:  # unpaid: stamps are bought as batches (stamp_paid)
                await session.send(make("stamp_answer", ref=digest, code="unpaid",
                                        detail=f"the price is {self.cfg.price_sat} sat per digest: ask for a quote"))
                return
            self.submit([digest], peer)

    async def _on_stamp_proof(self, session: Session, msg: Message) -> None:
        assert session.remote is not None and self.store is not None
        digest, body = msg.get_bytes("digest"), msg.get_bytes("proof")
        peer = session.remote.hex()
        r = self.store.round_with_root(digest, peer)
        sent = self.store.sent(digest, peer)
        if (r is None or r.state not in (RoundState.UPSTREAM, RoundState.COMPLETE)) and sent is None:
            return
        try:  # strict: the whole proof must decode, end in a Bitcoin attestation
            f = ots.decode(ots.file_prefix(digest) + body)
            if not any(a.height is not None for _, a in f.timestamp.leaves()):
                raise ProofError("no Bitcoin attestation")
        except ProofError as e:
            log.info("proof from %s refused: %s", peer[:12], e)
            return
        if sent is not None and sent[1] != body:
            self.store.put_proof(digest, peer, body)
        if r is None or r.state not in (RoundState.UPSTREAM, RoundState.COMPLETE):
            return
        if r.tail != body:
            heights = [a.height for _, a in f.timestamp.leaves() if a.height is not None]
            self.store.update(r, RoundState.COMPLETE, tail=body, height=min(heights))
            log.info("round %d proven through upstream %s", r.id, peer[:12])
            await self._deliver(r)

    def status(self) -> dict[str, Any]:
        assert self.store is not None
        payments, digests, sat = self.store.earned()
        batches, bought, spent = self.store.spent()
        return {"waiting": self.store.count_open(), "rounds": self.store.counts(),
                "upstream": self.cfg.upstream or None, "price_sat": self.cfg.price_sat,
                "max_price_sat": self.cfg.max_price_sat,
                "earned": {"payments": payments, "digests": digests, "sat": sat},
                "spent": {"batches": batches, "digests": bought, "sat": spent},
                "health": self.health().detail}

    def upstream_file(self, digest: bytes, peer: str) -> tuple[str, bytes | None]:
        """(state, the .ots file) of a digest stamped through ``peer``."""
        assert self.store is not None
        sent = self.store.sent(digest, peer)
        if sent is None:
            return "unknown", None
        if sent[1] is not None:
            return "proven", ots.file_prefix(digest) + sent[1]
        b = self.store.batch(sent[0])
        return (b.state if b is not None else "unknown"), None

    async def submit_upstream(self, peer: str, digests: list[bytes], max_price: int) -> None:
        """Stamp ``digests`` through ``peer`` (paying it): each new one once, whatever the retries.
        Raises ``StampRefused`` if the peer refused them or asks more than ``max_price``."""
        refused = []
        for b in self.paid.new_batches(peer, digests, max_price):
            # Shielded: a client that goes away does not stop a batch half-way through a payment
            # (the loop would finish it anyway; this way it finishes now).
            task = asyncio.ensure_future(self.paid.drive(b))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            b = await asyncio.shield(task)
            if b.state == "refused":
                refused.append(b.detail)
        if refused:
            raise StampRefused(refused[0])


async def blocks(chain: Any, height: int) -> bytes:
    """The raw block at ``height`` from the node's chain backend."""
    inner = getattr(chain, "inner", chain)
    node = getattr(inner, "node", None)
    if node is not None and getattr(node, "index", None) is not None:
        raw = node.index.raw_block(height)
        if raw is None:
            raise EschatonError(f"no block at height {height}")
        return bytes(raw)
    call = getattr(inner, "_call", None)
    if call is not None and hasattr(inner, "creds"):  # bitcoind's RPC
        return bytes.fromhex(await call("getblock", await call("getblockhash", height), 0))
    raise EschatonError("this chain backend cannot serve blocks for proofs (use the embedded chain or rpc)")


async def header(chain: Any, height: int) -> bytes:
    """The 80-byte header at ``height`` (an Electrum client of a chain serves headers, not blocks)."""
    inner = getattr(chain, "inner", chain)
    if hasattr(inner, "session") and hasattr(inner, "_call"):  # Electrum: blockchain.block.header
        return bytes.fromhex(await inner._call("blockchain.block.header", height))
    call = getattr(inner, "_call", None)
    if call is not None and hasattr(inner, "creds"):  # bitcoind's RPC
        return bytes.fromhex(await call("getblockheader", await call("getblockhash", height), False))
    return (await blocks(chain, height))[:80]


# --- API commands --------------------------------------------------------------------------------


def _hex32(text: str, what: str) -> bytes:
    try:
        b = bytes.fromhex(text)
    except ValueError:
        raise ApiError(f"{what}: not hex") from None
    if len(b) != 32:
        raise ApiError(f"{what}: must be 32 bytes (64 hex digits)")
    return b


@STAMP.command("stamp.submit", "timestamp sha256 digests (comma-separated hex); returns each one's state",
               Param("digests", str, "64-hex-digit sha256 digests, comma-separated"),
               Param("upstream", str, "stamp through this peer (node id), paying it, instead of locally",
                     required=False, default=""),
               Param("max_price", int, "with upstream: the most to pay per digest (default [stamp] max_price_sat)",
                     required=False, default=-1))
async def stamp_submit(node: Any, digests: str, upstream: str, max_price: int) -> dict[str, Any]:
    ds = [_hex32(d.strip(), "digest") for d in digests.split(",") if d.strip()]
    if not ds or len(ds) > MAX_SUBMIT:
        raise ApiError(f"give 1..{MAX_SUBMIT} digests")
    svc: StampService = node.service("stamp")
    if upstream:
        peer = upstream.lower()
        if len(peer) != 64 or any(c not in "0123456789abcdef" for c in peer):
            raise ApiError("upstream: must be a node id (64 hex digits)")
        try:
            await svc.submit_upstream(peer, ds, svc.cfg.max_price_sat if max_price < 0 else max_price)
        except StampRefused as e:
            raise ApiError(f"refused by {peer[:12]}: {e}") from None
        except EschatonError as e:
            raise ApiError(str(e)) from None
        files = [svc.upstream_file(d, peer) for d in ds]
    else:
        svc.submit(ds)
        files = [svc.ots_file(d) for d in ds]
    out = [{"digest": d.hex(), "state": state, "ots": f.hex() if f else None} for d, (state, f) in zip(ds, files, strict=True)]
    return {"accepted": len(ds), "digests": out}


@STAMP.command("stamp.proofs", "the state and proof of digests submitted before (read-only)",
               Param("digests", str, "64-hex-digit sha256 digests, comma-separated"))
async def stamp_proofs(node: Any, digests: str) -> dict[str, Any]:
    ds = [_hex32(d.strip(), "digest") for d in digests.split(",") if d.strip()]
    if not ds or len(ds) > MAX_SUBMIT:
        raise ApiError(f"give 1..{MAX_SUBMIT} digests")
    svc: StampService = node.service("stamp")
    out = []
    for d in ds:
        state, f = svc.ots_file(d)
        out.append({"digest": d.hex(), "state": state, "ots": f.hex() if f else None})
    return {"digests": out}


AFTER_BLOCKS = 6
"""Block hashes an "after" statement embeds (the tip and five below it: a short reorg leaves one)."""


async def _block_hash(chain: Any, height: int) -> bytes:
    from eschaton.core.txcodec import sha256d

    return sha256d(await header(chain, height))


@STAMP.command("stamp.after", "an 'after' statement: a digest with the latest block hashes (stamp it next)",
               Param("digest", str, "the data's sha256, hex"))
async def stamp_after(node: Any, digest: str) -> dict[str, Any]:
    from eschaton.core.stamp import after

    d = _hex32(digest, "digest")
    tip = (await node.chain.tip()).height
    blocks_ = [(h, await _block_hash(node.chain, h)) for h in range(tip, max(-1, tip - AFTER_BLOCKS), -1)]
    return {"statement": after.statement(blocks_, d).hex(), "after_height": tip}


@STAMP.command("stamp.after_check", "check an 'after' statement against this node's chain",
               Param("statement", str, "the statement, hex"))
async def stamp_after_check(node: Any, statement: str) -> dict[str, Any]:
    from eschaton.core.stamp import after

    try:
        raw = bytes.fromhex(statement)
    except ValueError:
        raise ApiError("statement: not hex") from None
    tip = (await node.chain.tip()).height
    try:
        blocks_, _d = after.parse(raw)
        known = {h: await _block_hash(node.chain, h) for h, _ in blocks_ if 0 <= h <= tip}
        got = after.check(raw, known.get)
    except ProofError as e:
        raise ApiError(str(e)) from e
    return {"after_height": got.height, "digest": got.data_digest.hex()}


@STAMP.command("stamp.status", "rounds, waiting digests, upstream")
async def stamp_status(node: Any) -> dict[str, Any]:
    return dict(node.service("stamp").status())


@STAMP.command("stamp.batches", "the batches this node sent to upstream peers: state, price, payment")
async def stamp_batches(node: Any) -> dict[str, Any]:
    store = node.service("stamp").store
    return {"batches": [{"ref": b.ref.hex(), "peer": b.peer, "state": b.state, "digests": len(b.digests) // 32,
                         "price_sat": b.price, "amount_sat": b.amount, "max_price_sat": b.max_price,
                         "payment": b.payment_id or None, "detail": b.detail}
                        for b in store.batches(("new", "quoted", "paid", "accepted", "refused"))]}


@STAMP.command("stamp.verify", "verify an .ots proof (hex) for a file digest against this node's chain",
               Param("ots", str, "the .ots file, hex"), Param("digest", str, "the file's sha256, hex"))
async def stamp_verify(node: Any, ots: str, digest: str) -> dict[str, Any]:
    from eschaton.core.stamp import ots as codec
    from eschaton.core.stamp.verify import verify

    try:
        proof = codec.decode(bytes.fromhex(ots))
    except ValueError:
        raise ApiError("ots: not hex") from None
    except ProofError as e:
        raise ApiError(str(e)) from e
    roots: dict[int, bytes | None] = {}
    tip = (await node.chain.tip()).height
    for _msg, att in proof.timestamp.leaves():
        h = att.height
        if h is not None and h not in roots:
            roots[h] = (await header(node.chain, h))[36:68] if 0 <= h <= tip else None
    try:
        v = verify(proof, _hex32(digest, "digest"), roots.get)
    except ProofError as e:
        raise ApiError(f"proof does not verify: {e}") from e
    return {"verified": True, "height": v.height, "unchecked": v.pending}

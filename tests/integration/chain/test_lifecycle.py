"""Locktime refunds, reorgs that reverse confirmations, and restarts (clean and SIGKILL)."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from eschaton.chain.backend import (
    BroadcastRefused,
    NewTip,
    OutPoint,
    OutpointSpent,
    Reorg,
    UnknownTransaction,
)
from eschaton.chain.embedded.chain import EmbeddedChain
from eschaton.chain.embedded.engine import ChainNode, NodeUpdate
from tests.integration.chain.conftest import Funded
from tests.unit.chain.helpers import Key, build_tx, multisig_2of2, p2wsh, sign_p2wsh, spend_p2wpkh

FEE = 2_000
REPO = Path(__file__).resolve().parents[3]


def _snapshot(node: ChainNode, spks: list[bytes]) -> dict[str, object]:
    chain = EmbeddedChain(node, owns_node=False)
    try:
        return {
            "tip": node.tip().block_hash,
            "height": node.tip().height,
            "utxos": sorted((str(u.outpoint), u.value, u.height) for s in spks for u in chain.list_unspent_sync(s)),
            "mempool": sorted(node.mempool.entries),
        }
    finally:
        chain.close_sync()


def test_two_of_two_refund_with_height_locktime(funded: Funded) -> None:
    f = funded
    a, b = f.key, Key(2)
    ms = multisig_2of2(a.pub, b.pub)
    cb = f.coinbase(1)
    value = cb.value - FEE
    funding = f.node.broadcast(spend_p2wpkh(cb.txid, 0, cb.value, a, [(value, p2wsh(ms))]))
    f.node.mine(1)
    lock = f.node.tip_row().height + 3
    refund = build_tx([(funding, 0)], [(value - FEE, a.p2wpkh)], locktime=lock)
    sign_p2wsh(refund, 0, ms, value, [a, b], pre=[b""])
    raw = refund.serialize()
    f.node.mine(2)  # tip = lock - 1: the next block has height lock, not yet past the locktime
    assert f.node.tip_row().height == lock - 1
    with pytest.raises(BroadcastRefused) as e:
        f.node.broadcast(raw)
    assert e.value.reason == "non-final"
    f.node.mine(1)
    txid = f.node.broadcast(raw)
    f.node.mine(1)
    assert f.node.index is not None
    assert f.node.index.tx_location(txid) == (lock + 1, f.node.tip().block_hash)
    assert f.node.index.spender(funding, 0) == (txid, 0, lock + 1)


def test_longer_branch_reverses_a_confirmation(funded: Funded) -> None:
    f = funded
    chain = EmbeddedChain(f.node, owns_node=False)
    events: list[object] = []
    chain.subscribe(events.append)
    k = f.key
    cb = f.coinbase(1)
    op = OutPoint(cb.txid, 0)
    asyncio.run(chain.watch_outpoint(op))
    pay = spend_p2wpkh(cb.txid, 0, cb.value, k, [(cb.value - FEE, Key(5).p2wpkh)])
    txid = f.node.broadcast(pay)
    fork = f.node.tip()
    (confirm_block,) = f.node.mine(1)
    st = chain.tx_status_sync(txid)
    assert (st.height, st.block_hash, st.confirmations) == (fork.height + 1, confirm_block, 1)
    assert chain.spender_sync(op).height == fork.height + 1  # type: ignore[union-attr]
    assert [u.outpoint.txid for u in chain.list_unspent_sync(Key(5).p2wpkh)] == [txid]

    # Equal work: no reorg.
    side = f.node.mine_branch(fork.block_hash, 1)
    assert f.node.tip().block_hash == confirm_block
    # One more block on the side branch, holding a conflicting spend of the same coin.
    steal = spend_p2wpkh(cb.txid, 0, cb.value, k, [(cb.value - 3 * FEE, Key(6).p2wpkh)])
    events.clear()
    branch = f.node.mine_branch(fork.block_hash, 2, txs=[steal])
    assert branch[0] != side[0]
    assert f.node.tip().block_hash == branch[-1]
    with pytest.raises(UnknownTransaction):
        chain.tx_status_sync(txid)  # evicted: its input is spent by the new branch
    spend = chain.spender_sync(op)
    assert spend is not None and spend.height == fork.height + 1 and spend.txid != txid
    assert chain.list_unspent_sync(Key(5).p2wpkh) == []
    assert [u.value for u in chain.list_unspent_sync(Key(6).p2wpkh)] == [cb.value - 3 * FEE]
    assert isinstance(events[0], Reorg) and events[0].fork_height == fork.height
    assert events[0].disconnected == (confirm_block,)
    assert isinstance(events[1], NewTip) and events[1].tip.block_hash == branch[-1]
    assert any(isinstance(e, OutpointSpent) and e.spend.txid == spend.txid for e in events[2:])

    # Reorg back with a branch that does not conflict: the payment returns via the mempool.
    pay2 = spend_p2wpkh(f.coinbase(2).txid, 0, f.coinbase(2).value, k, [(f.coinbase(2).value - FEE, k.p2wpkh)])
    t2 = f.node.broadcast(pay2)
    f.node.mine(1)
    assert chain.tx_status_sync(t2).confirmations == 1
    f.node.mine_branch(branch[-1], 2)  # from before the block with t2
    assert chain.tx_status_sync(t2).in_mempool
    # The index's spent coins match the kernel's undo data across the reorgs.
    assert f.node.audit(depth=10) == []
    chain.close_sync()


def test_restart_keeps_tip_index_and_mempool(funded: Funded) -> None:
    f = funded
    k = f.key
    cb = f.coinbase(1)
    f.node.broadcast(spend_p2wpkh(cb.txid, 0, cb.value, k, [(cb.value - FEE, Key(5).p2wpkh)]))
    f.node.mine(1)
    cb2 = f.coinbase(2)
    f.node.broadcast(spend_p2wpkh(cb2.txid, 0, cb2.value, k, [(cb2.value - FEE, Key(5).p2wpkh)]))
    spks = [k.p2wpkh, Key(5).p2wpkh]
    before = _snapshot(f.node, spks)
    f.node.close()
    f.node = ChainNode(f.datadir)
    assert _snapshot(f.node, spks) == before
    assert len(before["mempool"]) == 1  # type: ignore[arg-type]


def test_index_missing_a_kernel_block_is_repaired(funded: Funded) -> None:
    """As if the process died after the kernel connected a block but before the index committed."""
    f = funded
    k = f.key
    cb = f.coinbase(1)
    txid = f.node.broadcast(spend_p2wpkh(cb.txid, 0, cb.value, k, [(cb.value - FEE, Key(5).p2wpkh)]))
    f.node.mine(1)
    before = _snapshot(f.node, [k.p2wpkh, Key(5).p2wpkh])
    assert f.node.index is not None
    f.node.index.begin()
    f.node.index.disconnect_tip()
    f.node.index.commit()
    f.node.close()
    f.node = ChainNode(f.datadir)
    assert _snapshot(f.node, [k.p2wpkh, Key(5).p2wpkh]) == before
    assert f.node.index is not None and f.node.index.tx_location(txid) is not None


_CHILD = r"""
import json, sys, time
sys.path[:0] = [sys.argv[2], sys.argv[3]]
from eschaton.chain.embedded.engine import ChainNode, NodeUpdate
from tests.unit.chain.helpers import Key, spend_p2wpkh
node = ChainNode(sys.argv[1])
k = Key(1)
node.mine(105, k.p2wpkh)
c = node.index.coins_for_script(k.p2wpkh)[0]
node.broadcast(spend_p2wpkh(c.txid, c.vout, c.value, k, [(c.value - 2000, Key(5).p2wpkh)]))
node.mine(3)
c = node.index.coins_for_script(k.p2wpkh)[0]
node.broadcast(spend_p2wpkh(c.txid, c.vout, c.value, k, [(c.value - 2000, Key(5).p2wpkh)]))
print(json.dumps({"tip": node.tip().block_hash, "height": node.tip().height}), flush=True)
time.sleep(60)
"""


@pytest.mark.timeout(120)
def test_sigkilled_owner_recovers(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(tmp_path), str(REPO / "firmware"), str(REPO)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        state = json.loads(proc.stdout.readline())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    node = ChainNode(tmp_path)
    try:
        assert node.tip().block_hash == state["tip"]
        assert node._kernel_tip() == (state["height"], state["tip"])
        assert len(node.mempool) == 1
        chain = EmbeddedChain(node, owns_node=False)
        k5 = chain.list_unspent_sync(Key(5).p2wpkh)
        assert len(k5) == 2 and sum(1 for u in k5 if u.height is None) == 1
        node.mine(1)  # the kernel and the index agree well enough to extend the chain
        assert len(node.mempool) == 0
        assert node.audit(depth=20) == []
        chain.close_sync()
    finally:
        node.close()


def test_batch_keeps_blocks_before_a_rejected_one(funded: Funded) -> None:
    """Write-ahead indexing inside a batch: a rejected block takes back only its own writes."""
    from eschaton.chain.embedded.blocks import build_block
    from eschaton.chain.errors import BlockRejected
    from eschaton.core.txcodec import decode_block, decode_tx

    f = funded
    k = f.key
    c1, c2 = f.coinbase(1), f.coinbase(2)
    good = decode_tx(spend_p2wpkh(c1.txid, 0, c1.value, k, [(c1.value - FEE, Key(5).p2wpkh)]))
    bad = decode_tx(spend_p2wpkh(c2.txid, 0, c2.value + 1, k, [(c2.value - FEE, Key(5).p2wpkh)]))
    tip = f.node.tip()
    t = f.node.block_time(tip.median_time_past)
    b1 = build_block(tip.block_hash, tip.height + 1, t, k.p2wpkh, [good], FEE)
    h1 = decode_block(b1).header.hash
    b2 = build_block(h1, tip.height + 2, t + 1, k.p2wpkh, [bad], FEE)
    b3 = build_block(decode_block(b2).header.hash, tip.height + 3, t + 2, k.p2wpkh, [], 0)
    updates: list[NodeUpdate] = []
    f.node.listeners.append(updates.append)
    # b2 is refused in the middle of the call (written ahead inside the open transaction), and
    # b3, built on it, is never submitted.
    with pytest.raises(BlockRejected) as e:
        f.node.submit_blocks([b1, b2, b3])
    assert e.value.reason == "block-script-verify-flag-failed"
    assert f.node.tip().block_hash == h1
    assert f.node.index is not None and f.node.index.tx_location(good.txid) == (tip.height + 1, h1)
    assert f.node.index.coin(c2.txid, 0) is not None
    assert [[h for h, _ in u.connected] for u in updates] == [[tip.height + 1]]
    assert f.node.audit(depth=5) == []
    f.node.close()
    f.node = ChainNode(f.datadir)
    assert f.node.tip().block_hash == h1 and f.node.audit(depth=5) == []


def _bad_block(f: Funded) -> tuple[bytes, str, str]:
    """A block on the tip whose only spend overclaims its input (the kernel refuses its script):
    (raw, block hash, spent coinbase txid)."""
    from eschaton.chain.embedded.blocks import build_block
    from eschaton.core.txcodec import decode_block, decode_tx

    k = f.key
    c = f.coinbase(2)
    bad = decode_tx(spend_p2wpkh(c.txid, 0, c.value + 1, k, [(c.value - FEE, Key(5).p2wpkh)]))
    tip = f.node.tip()
    raw = build_block(tip.block_hash, tip.height + 1, f.node.block_time(tip.median_time_past), k.p2wpkh, [bad], FEE)
    return raw, decode_block(raw).header.hash, c.txid


def test_rejected_block_written_ahead_leaves_no_trace(funded: Funded) -> None:
    """The index writes (and, for the call's last block, commits) a block on the tip while the
    kernel validates it; a refused block must come out again, coins and all."""
    from eschaton.chain.errors import BlockRejected

    f = funded
    raw, bh, spent = _bad_block(f)
    tip = f.node.tip()
    updates: list[object] = []
    f.node.listeners.append(updates.append)
    with pytest.raises(BlockRejected) as e:
        f.node.submit_block(raw)
    assert e.value.reason == "block-script-verify-flag-failed"
    assert f.node.tip() == tip and updates == []
    assert f.node.index is not None
    assert f.node.index.block_by_hash(bh) is None and f.node.index.coin(spent, 0) is not None
    assert f.node.index.tip_times() == f.node.index.last_times(tip.height)
    assert f.node.audit(depth=5) == []
    f.node.mine(1)  # and the chain goes on from the old tip
    assert f.node.tip().height == tip.height + 1 and len(updates) == 1
    f.node.close()
    f.node = ChainNode(f.datadir)
    assert f.node.tip().height == tip.height + 1 and f.node.audit(depth=5) == []


def test_crash_after_write_ahead_drops_an_invalid_block(funded: Funded) -> None:
    """As if the process died after the index committed a block written ahead but before the
    kernel's verdict: on open, the kernel refuses the stored block and the index follows it."""
    from eschaton.core.txcodec import decode_block

    f = funded
    raw, bh, spent = _bad_block(f)
    tip = f.node.tip()
    idx = f.node.index
    assert idx is not None
    idx.begin()
    idx.connect_block(tip.height + 1, decode_block(raw))
    idx.commit()
    assert idx.coin(spent, 0) is None
    f.node.close()
    f.node = ChainNode(f.datadir)
    assert f.node.tip() == tip
    assert f.node.index is not None
    assert f.node.index.block_by_hash(bh) is None and f.node.index.coin(spent, 0) is not None
    assert f.node.audit(depth=5) == []


def test_tip_time_cache_follows_reorgs(funded: Funded) -> None:
    """The index caches the tip's last 11 block times (median time past); a reorg must not
    leave the old branch's times in it."""
    from eschaton.chain.embedded.blocks import median_time_past

    f = funded
    idx = f.node.index
    assert idx is not None
    f.node.mine(3)
    fork = idx.block_at(f.node.tip().height - 3)
    assert fork is not None
    before = idx.tip_times()
    # The competing branch's blocks are timed later, so its times differ from the old branch's.
    f.node.clock = lambda: float(before[-1] + 3600)
    f.node.mine_branch(fork.hash, 5)
    tip = f.node.tip()
    assert tip.height == fork.height + 5
    assert idx.tip_times() == idx.last_times(tip.height) != before
    assert tip.median_time_past == median_time_past(idx.last_times(tip.height))
    f.node.mine(1)
    assert idx.tip_times() == idx.last_times(tip.height + 1)


def test_blocks_the_kernel_lost_are_fed_back_from_the_index(funded: Funded) -> None:
    """As if the kernel lost its last blocks in a crash (it flushes lazily) while the index had
    committed them: on open, the index feeds its blocks back, the kernel takes them, and both end
    at the index's tip with nothing rolled back."""
    from eschaton.chain.embedded.blocks import build_block
    from eschaton.core.txcodec import decode_block, decode_tx

    f = funded
    k = f.key
    c = f.coinbase(1)
    spend = decode_tx(spend_p2wpkh(c.txid, 0, c.value, k, [(c.value - FEE, Key(5).p2wpkh)]))
    tip = f.node.tip()
    t = f.node.block_time(tip.median_time_past)
    b1 = build_block(tip.block_hash, tip.height + 1, t, k.p2wpkh, [spend], FEE)
    b2 = build_block(decode_block(b1).header.hash, tip.height + 2, t + 1, k.p2wpkh, [], 0)
    idx = f.node.index
    assert idx is not None
    idx.begin()  # the index alone: the kernel never sees these two blocks in this process
    idx.connect_block(tip.height + 1, decode_block(b1))
    idx.connect_block(tip.height + 2, decode_block(b2))
    idx.commit()
    assert f.node._kernel_tip() == (tip.height, tip.block_hash)
    f.node.close()
    f.node = ChainNode(f.datadir)
    h2 = decode_block(b2).header.hash
    assert f.node._kernel_tip() == (tip.height + 2, h2)
    assert f.node.tip().block_hash == h2
    assert f.node.index is not None and f.node.index.tx_location(spend.txid) == (tip.height + 1, decode_block(b1).header.hash)
    assert f.node.audit(depth=5) == []

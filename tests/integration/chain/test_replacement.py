"""Full replace-by-fee in the embedded mempool, with bitcoind's rules and reason strings."""
from __future__ import annotations

import pytest

from eschaton.chain.backend import BroadcastRefused
from eschaton.chain.embedded.engine import ChainNode, NodeUpdate
from tests.integration.chain.conftest import Funded
from tests.unit.chain.helpers import Key, spend_p2wpkh


def _mempool_rows(node: ChainNode) -> set[str]:
    assert node.index is not None
    return {t for t, _, _ in node.index.mempool_rows()}


def test_higher_fee_replaces_conflict_and_its_descendants(funded: Funded) -> None:
    f, k = funded, funded.key
    cb = f.coinbase(1)
    old = f.node.broadcast(spend_p2wpkh(cb.txid, 0, cb.value, k, [(cb.value - 1_000, k.p2wpkh)]))
    child = f.node.broadcast(spend_p2wpkh(old, 0, cb.value - 1_000, k, [(cb.value - 2_000, k.p2wpkh)]))
    updates: list[NodeUpdate] = []
    f.node.listeners.append(updates.append)
    # Pays more than old + child together, at a higher rate, plus the relay fee for itself.
    new = f.node.broadcast(spend_p2wpkh(cb.txid, 0, cb.value, k, [(cb.value - 2_500, Key(7).p2wpkh)]))
    assert new in f.node.mempool and old not in f.node.mempool and child not in f.node.mempool
    assert _mempool_rows(f.node) == {new}  # the persisted mempool follows
    assert len(updates) == 1 and [t.txid for t in updates[0].mempool_added] == [new]
    assert sorted(updates[0].mempool_removed) == sorted([old, child])
    f.node.mine(1)
    assert f.node.index is not None and f.node.index.tx_location(new) is not None
    assert f.node.index.tx_location(old) is None


@pytest.mark.parametrize("fee, reason, detail", [
    (1_000, "insufficient fee", "new feerate"),                  # same rate as the conflict
    (900, "insufficient fee", "new feerate"),                    # lower rate
])
def test_replacement_must_pay_a_higher_rate(funded: Funded, fee: int, reason: str, detail: str) -> None:
    f, k = funded, funded.key
    cb = f.coinbase(1)
    old = f.node.broadcast(spend_p2wpkh(cb.txid, 0, cb.value, k, [(cb.value - 1_000, k.p2wpkh)]))
    with pytest.raises(BroadcastRefused) as e:
        f.node.broadcast(spend_p2wpkh(cb.txid, 0, cb.value, k, [(cb.value - fee, Key(7).p2wpkh)]))
    assert (e.value.reason, detail in e.value.detail) == (reason, True)
    assert old in f.node.mempool and _mempool_rows(f.node) == {old}


def test_replacement_must_cover_descendants_and_its_own_relay_fee(funded: Funded) -> None:
    f, k = funded, funded.key
    cb = f.coinbase(1)
    old = f.node.broadcast(spend_p2wpkh(cb.txid, 0, cb.value, k, [(cb.value - 1_000, k.p2wpkh)]))
    f.node.broadcast(spend_p2wpkh(old, 0, cb.value - 1_000, k, [(cb.value - 6_000, k.p2wpkh)]))  # fee 5,000
    with pytest.raises(BroadcastRefused) as e:  # higher rate than old, but less than old + child
        f.node.broadcast(spend_p2wpkh(cb.txid, 0, cb.value, k, [(cb.value - 3_000, Key(7).p2wpkh)]))
    assert e.value.reason == "insufficient fee" and "less fees than conflicting txs" in e.value.detail
    with pytest.raises(BroadcastRefused) as e:  # covers them, but not its own relay fee on top
        f.node.broadcast(spend_p2wpkh(cb.txid, 0, cb.value, k, [(cb.value - 6_050, Key(7).p2wpkh)]))
    assert e.value.reason == "insufficient fee" and "not enough additional fees" in e.value.detail


def test_replacement_may_not_add_unconfirmed_inputs(funded: Funded) -> None:
    f, k = funded, funded.key
    cb1, cb2 = f.coinbase(1), f.coinbase(2)
    old = f.node.broadcast(spend_p2wpkh(cb1.txid, 0, cb1.value, k, [(cb1.value - 1_000, k.p2wpkh)]))
    other = f.node.broadcast(spend_p2wpkh(cb2.txid, 0, cb2.value, k, [(cb2.value - 1_000, k.p2wpkh)]))
    from tests.unit.chain.helpers import build_tx, sign_p2wpkh

    tx = build_tx([(cb1.txid, 0), (other, 0)], [(cb1.value + cb2.value - 50_000, Key(7).p2wpkh)])
    sign_p2wpkh(tx, 0, k, cb1.value)
    sign_p2wpkh(tx, 1, k, cb2.value - 1_000)
    with pytest.raises(BroadcastRefused) as e:
        f.node.broadcast(tx.serialize())
    assert e.value.reason == "replacement-adds-unconfirmed"
    assert old in f.node.mempool and other in f.node.mempool

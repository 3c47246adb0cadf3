"""The mempool and block validation both refuse bad transactions, each with its reason."""
from __future__ import annotations

import hashlib

import pytest

from eschaton.chain.backend import BroadcastRefused
from eschaton.chain.errors import BlockRejected
from tests.integration.chain.conftest import Funded
from tests.unit.chain.helpers import (
    Key,
    build_tx,
    hashlock_script,
    high_s,
    multisig_2of2,
    p2wsh,
    sign_p2wpkh,
    sign_p2wsh,
    spend_p2wpkh,
)

FEE = 2_000
PREIMAGE = b"the secret preimage for a test!!"


def _fund_scripts(f: Funded) -> tuple[str, bytes, bytes]:
    """Confirm a tx paying a hashlock P2WSH (vout 0) and a 2-of-2 P2WSH (vout 1)."""
    k = f.key
    cb = f.coinbase(1)
    hl = hashlock_script(hashlib.sha256(PREIMAGE).digest(), k.pub)
    ms = multisig_2of2(k.pub, Key(2).pub)
    out = [(100_000_000, p2wsh(hl)), (100_000_000, p2wsh(ms)), (cb.value - 200_000_000 - FEE, k.p2wpkh)]
    txid = f.node.broadcast(spend_p2wpkh(cb.txid, 0, cb.value, k, out))
    f.node.mine(1, k.p2wpkh)
    return txid, hl, ms


def _bad_cases(f: Funded) -> dict[str, tuple[bytes, str, str]]:
    """name -> (raw tx, mempool reason, block reason). Tip is 102 after funding."""
    k = f.key
    fund_txid, hl, _ = _fund_scripts(f)
    cb2 = f.coinbase(2)
    to = [(cb2.value - FEE, k.p2wpkh)]
    cases: dict[str, tuple[bytes, str, str]] = {}

    good = spend_p2wpkh(cb2.txid, 0, cb2.value, k, to)
    sig_start = good.index(k.pub) - 2 - 72  # locate the signature near its pubkey; flip inside S
    tx = build_tx([(cb2.txid, 0)], to)
    sign_p2wpkh(tx, 0, k, cb2.value)
    sig = tx.vin[0].witness.items[0]
    bad_sig = bytearray(good)
    pos = good.index(sig) + len(sig) - 3
    bad_sig[pos] ^= 0x01
    assert sig_start >= 0
    cases["bad signature"] = (bytes(bad_sig), "mandatory-script-verify-flag-failed", "block-script-verify-flag-failed")

    tx = build_tx([(fund_txid, 0)], [(100_000_000 - FEE, k.p2wpkh)])
    sign_p2wsh(tx, 0, hl, 100_000_000, [k], pre=[b"wrong preimage, 32 bytes long!!!"])
    # the witness must be [sig, preimage, script]: the signature sits on top of the preimage
    items = tx.vin[0].witness.items
    tx.vin[0].witness.items = [items[1], items[0], items[2]]
    cases["wrong preimage"] = (tx.serialize(), "mandatory-script-verify-flag-failed", "block-script-verify-flag-failed")

    height = f.node.tip_row().height
    cases["non-final locktime"] = (
        spend_p2wpkh(cb2.txid, 0, cb2.value, k, to, locktime=height + 5),
        "non-final",
        "bad-txns-nonfinal",
    )
    young = f.coinbase(height - 98)  # depth 99 at the next block
    cases["immature coinbase"] = (
        spend_p2wpkh(young.txid, 0, young.value, k, [(young.value - FEE, k.p2wpkh)]),
        "bad-txns-premature-spend-of-coinbase",
        "bad-txns-premature-spend-of-coinbase",
    )
    cases["missing outpoint"] = (
        spend_p2wpkh("ab" * 32, 0, 50_000, k, [(40_000, k.p2wpkh)]),
        "bad-txns-inputs-missingorspent",
        "bad-txns-inputs-missingorspent",
    )
    return cases


def test_mempool_and_blocks_refuse_with_reasons(funded: Funded) -> None:
    f = funded
    cases = _bad_cases(f)
    assert len(cases) == 5
    for name, (raw, pool_reason, block_reason) in cases.items():
        with pytest.raises(BroadcastRefused) as e:
            f.node.broadcast(raw)
        assert e.value.reason == pool_reason, name
        tip = f.node.tip()
        with pytest.raises(BlockRejected) as b:
            f.node.mine_branch(tip.block_hash, 1, txs=[raw])
        assert b.value.reason == block_reason, (name, b.value.detail)
        assert f.node.tip() == tip, name
        assert len(f.node.mempool) == 0


def test_good_hashlock_spend_is_accepted(funded: Funded) -> None:
    f = funded
    fund_txid, hl, _ = _fund_scripts(f)
    tx = build_tx([(fund_txid, 0)], [(100_000_000 - FEE, f.key.p2wpkh)])
    sign_p2wsh(tx, 0, hl, 100_000_000, [f.key], pre=[PREIMAGE])
    items = tx.vin[0].witness.items
    tx.vin[0].witness.items = [items[1], items[0], items[2]]
    txid = f.node.broadcast(tx.serialize())
    f.node.mine(1)
    assert f.node.index is not None and f.node.index.tx_location(txid) is not None


def test_double_spend_mempool_and_chain(funded: Funded) -> None:
    f = funded
    k = f.key
    cb = f.coinbase(1)
    a = spend_p2wpkh(cb.txid, 0, cb.value, k, [(cb.value - 2 * FEE, k.p2wpkh)])
    b = spend_p2wpkh(cb.txid, 0, cb.value, k, [(cb.value - FEE, Key(7).p2wpkh)])  # a lower fee
    f.node.broadcast(a)
    with pytest.raises(BroadcastRefused) as e:
        f.node.broadcast(b)
    assert e.value.reason == "insufficient fee"  # a conflict that does not pay more is refused
    f.node.mine(1)
    with pytest.raises(BroadcastRefused) as e:
        f.node.broadcast(b)
    assert e.value.reason == "bad-txns-inputs-missingorspent"
    tip = f.node.tip()
    with pytest.raises(BlockRejected) as r:
        f.node.mine_branch(tip.block_hash, 1, txs=[b])
    assert r.value.reason == "bad-txns-inputs-missingorspent"
    # Both spends in one block of a longer branch from the parent: the second finds its input gone
    # (a side-branch block is only fully validated when its branch gets more work).
    assert f.node.index is not None
    parent = f.node.index.block_at(tip.height - 1)
    assert parent is not None
    with pytest.raises(BlockRejected) as r:
        f.node.mine_branch(parent.hash, 2, txs=[a, b])
    assert r.value.reason == "bad-txns-inputs-missingorspent"
    assert f.node.tip() == tip


def test_malformed_bytes(funded: Funded) -> None:
    f = funded
    for raw in (b"", b"\x00" * 10, b"\x02\x00\x00\x00garbage"):
        with pytest.raises(BroadcastRefused) as e:
            f.node.broadcast(raw)
        assert e.value.reason == "TX decode failed"
    tip = f.node.tip()
    assert f.node.index is not None
    raw_block = f.node.index.raw_block(tip.height)
    assert raw_block is not None
    with pytest.raises(BlockRejected) as b:
        f.node.submit_block(raw_block + b"\x00")
    assert b.value.reason == "block-decode-failed"
    with pytest.raises(BlockRejected):
        f.node.submit_block(raw_block[:100])
    assert f.node.tip() == tip


def test_policy_dust_fee_low_s(funded: Funded) -> None:
    f = funded
    k = f.key
    cb = f.coinbase(1)
    with pytest.raises(BroadcastRefused) as e:
        f.node.broadcast(spend_p2wpkh(cb.txid, 0, cb.value, k, [(293, k.p2wpkh), (cb.value - 293 - FEE, k.p2wpkh)]))
    assert e.value.reason == "dust"
    with pytest.raises(BroadcastRefused) as e:
        f.node.broadcast(spend_p2wpkh(cb.txid, 0, cb.value, k, [(cb.value - 50, k.p2wpkh)]))
    assert e.value.reason == "min relay fee not met"
    # A high-S twin of a valid signature passes consensus but not policy.
    tx = build_tx([(cb.txid, 0)], [(cb.value - FEE, k.p2wpkh)])
    sign_p2wpkh(tx, 0, k, cb.value)
    tx.vin[0].witness.items[0] = high_s(tx.vin[0].witness.items[0])
    with pytest.raises(BroadcastRefused) as e:
        f.node.broadcast(tx.serialize())
    assert e.value.reason == "non-mandatory-script-verify-flag"
    assert "S value" in e.value.detail


def test_minimalif_policy(funded: Funded) -> None:
    """OP_IF <k> OP_CHECKSIG OP_ELSE OP_RETURN OP_ENDIF: selector 0x02 is consensus-true but not minimal."""
    f = funded
    k = f.key
    script = b"\x63" + bytes([33]) + k.pub + b"\xac\x67\x6a\x68"
    cb = f.coinbase(1)
    fund = f.node.broadcast(spend_p2wpkh(cb.txid, 0, cb.value, k, [(cb.value - FEE, p2wsh(script))]))
    value = cb.value - FEE
    for selector, ok in ((b"\x02", False), (b"\x01", True)):
        tx = build_tx([(fund, 0)], [(value - FEE, k.p2wpkh)])
        sign_p2wsh(tx, 0, script, value, [k], extra=[selector])
        if ok:
            f.node.broadcast(tx.serialize())
        else:
            with pytest.raises(BroadcastRefused) as e:
                f.node.broadcast(tx.serialize())
            assert e.value.reason == "non-mandatory-script-verify-flag"
            assert "minimal" in e.value.detail


def test_broadcast_of_arbitrary_bytes_only_ever_refuses(funded: Funded) -> None:
    """Random and mutated transactions reach the mempool path: a typed refusal or acceptance, never a crash."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    f = funded
    cb = f.coinbase(1)
    good = spend_p2wpkh(cb.txid, 0, cb.value, f.key, [(cb.value - FEE, f.key.p2wpkh)])

    @settings(max_examples=300, deadline=None)
    @given(st.one_of(
        st.binary(max_size=200),
        st.lists(st.tuples(st.integers(0, len(good) - 1), st.integers(0, 255)), min_size=1, max_size=3).map(
            lambda muts: bytes(_mutate(good, muts))),
    ))
    def check(raw: bytes) -> None:
        try:
            f.node.broadcast(raw)
        except BroadcastRefused as e:
            assert e.reason
        f.node.mempool.remove(list(f.node.mempool.entries))  # keep the coin spendable for the next example

    check()
    assert f.node.tip().height == 101


def _mutate(raw: bytes, muts: list[tuple[int, int]]) -> bytearray:
    b = bytearray(raw)
    for pos, val in muts:
        b[pos] = val
    return b

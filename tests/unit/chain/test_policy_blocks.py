"""Pure parts of the embedded chain: standardness rules, block building helpers, tx selection."""
from __future__ import annotations

import hashlib

import pytest

from eschaton.chain.embedded import policy
from eschaton.chain.embedded.blocks import (
    build_block,
    median_time_past,
    push_int,
    subsidy,
)
from eschaton.chain.embedded.mempool import Entry, Mempool, is_final
from eschaton.core.txcodec import decode_block, decode_tx, merkle_root
from tests.unit.chain.helpers import Key, build_tx, hashlock_script, high_s, multisig_2of2, p2wsh

GENESIS = "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"


def test_dust_thresholds_match_bitcoind() -> None:
    k = Key(1)
    p2pkh = b"\x76\xa9\x14" + b"\x11" * 20 + b"\x88\xac"
    assert policy.dust_threshold(p2pkh) == 546
    assert policy.dust_threshold(k.p2wpkh) == 294
    assert policy.dust_threshold(p2wsh(b"\x51")) == 330
    assert policy.dust_threshold(b"\x51\x20" + b"\x22" * 32) == 330
    assert policy.dust_threshold(b"\x6a\x04abcd") == 0


def test_script_types() -> None:
    k = Key(1)
    assert policy.script_type(k.p2wpkh) == "witness_v0_keyhash"
    assert policy.script_type(p2wsh(b"\x51")) == "witness_v0_scripthash"
    assert policy.script_type(b"\x6a\x04abcd") == "nulldata"
    assert policy.script_type(b"\x00\x15" + b"\x00" * 21) is None  # v0 program of a wrong size
    assert policy.script_type(b"\x51") is None


def test_high_s_detection() -> None:
    k = Key(1)
    sig = k.sign(hashlib.sha256(b"m").digest())
    assert not policy.is_high_s_signature(sig)
    assert policy.is_high_s_signature(high_s(sig))
    assert not policy.is_high_s_signature(b"\x01" * 32)  # a preimage is not a signature


def test_minimal_if_tracer() -> None:
    k = Key(1)
    script = b"\x63" + bytes([33]) + k.pub + b"\xac\x67\x6a\x68"
    sig = k.sign(b"\x00" * 32)
    assert policy.trace_minimal_if(script, [sig, b"\x01"])
    assert policy.trace_minimal_if(script, [sig, b""])
    assert not policy.trace_minimal_if(script, [sig, b"\x02"])
    assert not policy.trace_minimal_if(script, [sig, b"\x01\x00"])
    # selector consumed after hashing and a CHECKSIG result: OP_IF on the result of OP_EQUAL
    hl = hashlock_script(hashlib.sha256(b"x").digest(), k.pub)
    assert policy.trace_minimal_if(hl, [sig, b"x"])
    ms = multisig_2of2(k.pub, Key(2).pub)
    assert policy.trace_minimal_if(ms, [b"", sig, sig])


def test_bip34_height_encoding() -> None:
    assert push_int(1) == b"\x51" and push_int(16) == b"\x60"
    assert push_int(17) == b"\x01\x11"
    assert push_int(128) == b"\x02\x80\x00"
    assert push_int(1000) == b"\x02\xe8\x03"
    assert subsidy(0) == 50 * 10**8 and subsidy(150) == 25 * 10**8 and subsidy(150 * 64) == 0


def test_built_block_decodes_with_commitment() -> None:
    k = Key(1)
    raw = build_block(GENESIS, 1, 1_700_000_000, k.p2wpkh, [], 0, extra=b"x")
    blk = decode_block(raw)
    cb = blk.txs[0]
    assert cb.is_coinbase and cb.inputs[0].script_sig[:1] == b"\x51"
    assert cb.inputs[0].witness == (b"\x00" * 32,)
    assert cb.outputs[1].script_pubkey[:6] == bytes.fromhex("6a24aa21a9ed")
    assert blk.header.merkle_root == merkle_root([bytes.fromhex(cb.txid)[::-1]])
    assert int(blk.header.hash, 16) <= 0x7FFFFF << (8 * (0x20 - 3))


def test_median_time_past() -> None:
    assert median_time_past([5, 1, 3]) == 3
    assert median_time_past(list(range(100))) == 94  # the last 11: 89..99


def test_is_final_rules() -> None:
    tx = decode_tx(build_tx([("11" * 32, 0)], [(1000, Key(1).p2wpkh)], locktime=100).serialize())
    assert not is_final(tx, 100, 0) and is_final(tx, 101, 0)
    t2 = decode_tx(build_tx([("11" * 32, 0)], [(1000, Key(1).p2wpkh)], locktime=100, sequence=0xFFFFFFFF).serialize())
    assert is_final(t2, 50, 0)  # all inputs final: nLockTime ignored
    t3 = decode_tx(build_tx([("11" * 32, 0)], [(1000, Key(1).p2wpkh)], locktime=600_000_000).serialize())
    assert not is_final(t3, 10**6, 600_000_000) and is_final(t3, 10**6, 600_000_001)


def test_select_orders_by_feerate_and_keeps_parents_first() -> None:
    k = Key(1)
    mp = Mempool()

    def add(txid_in: str, fee: int, added: int) -> Entry:
        tx = decode_tx(build_tx([(txid_in, 0)], [(100_000, k.p2wpkh)]).serialize())
        parents = {txid_in} if txid_in in mp.entries else set()
        e = Entry(tx, fee, added, parents)
        mp.entries[tx.txid] = e
        mp.spent[(txid_in, 0)] = tx.txid
        return e

    low_parent = add("aa" * 32, 100, 1)
    rich_child = add(low_parent.tx.txid, 10_000, 2)
    mid = add("bb" * 32, 5_000, 3)
    order = [e.tx.txid for e in mp.select()]
    assert order.index(low_parent.tx.txid) < order.index(rich_child.tx.txid)
    assert order[0] == mid.tx.txid
    assert mp.descendants([low_parent.tx.txid]) == [low_parent.tx.txid, rich_child.tx.txid]
    assert set(mp.remove(mp.descendants([low_parent.tx.txid]))) == {low_parent.tx.txid, rich_child.tx.txid}
    assert not mp.spent.get((low_parent.tx.txid, 0)) and len(mp) == 1


@pytest.mark.parametrize("bad", [b"\x00" * 79, b"\x00" * 80 + b"\x01", b"\x00" * 80 + b"\xfd\x01"], ids=["short", "missing-tx", "non-canonical"])
def test_block_decode_errors_are_typed(bad: bytes) -> None:
    from eschaton.chain.errors import TxDecodeError

    with pytest.raises(TxDecodeError):
        decode_block(bad)

"""Property tests: proofs verify, and any single-bit tamper of a proof or record fails."""
from __future__ import annotations

import hashlib
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from eschaton.core import merkle
from eschaton.core.dht import records, smt, statements, sumtree
from eschaton.core.dht.errors import ProofError, RecordError
from eschaton.core.dht.txproof import TxProof
from eschaton.core.link.identity import NodeKeys
from eschaton.core.txcodec import sha256d

KEYS = NodeKeys.generate(random.Random(5).randbytes)
small = st.binary(min_size=0, max_size=12)
trees = st.dictionaries(small, small, min_size=0, max_size=40)


def flip(data: bytes, bit: int) -> bytes:
    b = bytearray(data)
    b[(bit // 8) % len(b)] ^= 1 << (bit % 8)
    return bytes(b)


def rejected(data: bytes, key: bytes, ctx: records.Context) -> bool:
    try:
        records.check(data, key, ctx)
    except RecordError:
        return True
    return False


@settings(max_examples=150, deadline=None)
@given(trees, small)
def test_smt_inclusion_and_exclusion_verify(items: dict[bytes, bytes], probe: bytes) -> None:
    tree = smt.Tree(items)
    for k, v in items.items():
        p = smt.Proof.decode(tree.prove(k).encode())
        assert smt.verify_inclusion(tree.root, k, v, p)
        assert not smt.verify_exclusion(tree.root, k, p)
        assert not smt.verify_inclusion(tree.root, k, v + b"!", p)
    p = tree.prove(probe)
    if probe in items:
        assert smt.verify_inclusion(tree.root, probe, items[probe], p)
    else:
        assert smt.verify_exclusion(tree.root, probe, p)
        assert not smt.verify_inclusion(tree.root, probe, b"", p)


@settings(max_examples=150, deadline=None)
@given(trees.filter(bool), small, st.integers(min_value=0))
def test_any_bit_flip_of_an_smt_entry_fails(items: dict[bytes, bytes], probe: bytes,
                                            bit: int) -> None:
    tree = smt.Tree(items)
    first = sorted(items)[0]
    for k, v in ((first, items[first]), (probe, items.get(probe))):  # an inclusion, and either
        entry = records.SmtEntry(tree.root, k, v, tree.prove(k))
        data = records.encode(entry)
        dkey = records.smt_key(tree.root, k)
        assert records.check(data, dkey, records.Context(0, lambda h: False)) == entry
        assert rejected(flip(data, bit), dkey, records.Context(0, lambda h: False))
        # The asker's trusted root with one bit flipped rejects the (untouched) proof.
        bad_root = flip(tree.root, bit)
        if v is None:
            assert not smt.verify_exclusion(bad_root, k, entry.proof)
        else:
            assert not smt.verify_inclusion(bad_root, k, v, entry.proof)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 2**40), min_size=1, max_size=40), st.data())
def test_sum_tree_proofs_verify_and_bit_flips_fail(values: list[int], data: st.DataObject) -> None:
    leaves = [(hashlib.sha256(b"%d" % i).digest(), v) for i, v in enumerate(values)]
    t = sumtree.SumTree(leaves)
    assert t.root[1] == sum(values)
    i = data.draw(st.integers(0, len(leaves) - 1))
    label, value = leaves[i]
    enc = sumtree.encode_proof(t.prove(i))
    assert sumtree.verify(t.root, label, value, sumtree.decode_proof(enc))
    bit = data.draw(st.integers(min_value=0))
    try:
        tampered = sumtree.decode_proof(flip(enc, bit)) if enc != b"le" else None
    except ProofError:
        tampered = None
    if tampered is not None:
        assert not sumtree.verify(t.root, label, value, tampered)
    proof = t.prove(i)
    assert not sumtree.verify((t.root[0], t.root[1] + 1), label, value, proof)
    assert not sumtree.verify((flip(t.root[0], bit), t.root[1]), label, value, proof)
    assert not sumtree.verify(t.root, flip(label, bit), value, proof)
    assert not sumtree.verify(t.root, label, value + 1, proof)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 60), st.data())
def test_tx_proof_bit_flips_fail(n: int, data: st.DataObject) -> None:
    txids = [hashlib.sha256(b"tx%d" % i).digest() for i in range(n)]
    tree = merkle.Tree(txids)
    header = b"\x01" * 36 + tree.root + b"\x02" * 12
    ctx = records.Context(0, {sha256d(header)}.__contains__)
    i = data.draw(st.integers(0, n - 1))
    rec = records.encode(TxProof(txids[i], header, i, tuple(tree.branch(i))))
    key = records.tx_key(txids[i])
    assert not rejected(rec, key, ctx)
    assert rejected(flip(rec, data.draw(st.integers(min_value=0))), key, ctx)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.binary(max_size=6), st.integers(0, 99) | small, max_size=6),
       st.integers(min_value=0))
def test_statement_bit_flips_fail(body: dict[bytes, int | bytes], bit: int) -> None:
    s = statements.sign(KEYS.sign, KEYS.node_id.raw, dict(body), 0, 10)
    rec = records.encode(s)
    key = records.signer_key(KEYS.node_id.raw)
    ctx = records.Context(5, lambda h: False)
    assert not rejected(rec, key, ctx)
    assert rejected(flip(rec, bit), key, ctx)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 255), st.integers(min_value=0))
def test_preimage_bit_flips_fail(seed: int, bit: int) -> None:
    rec = records.encode(records.Preimage(("sha256", "sha256d", "hash160")[seed % 3],
                                          bytes([seed]) * (seed % 50)))
    key = records.key_of(records.decode(rec))
    assert rejected(flip(rec, bit), key, records.Context(0, lambda h: False))

"""The timestamping core: tree paths, the commitment and block paths, the ``.ots`` codec, the
verifier, and "after" statements. Interop with the reference library (opentimestamps, the
client's own package) is checked both ways."""
from __future__ import annotations

import hashlib
import io
import math
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eschaton.core.stamp import after, ots
from eschaton.core.stamp.chain import commitment_path, merkle_branch
from eschaton.core.stamp.ops import ProofError, run
from eschaton.core.stamp.tree import NONCE_LEN, Tree
from eschaton.core.stamp.verify import verify
from eschaton.core.txcodec import sha256d
from tests.unit.stamp.helpers import commitment_tx, stamped

digests = st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=70)


@given(digests)
@settings(max_examples=60, deadline=None)
def test_every_path_reaches_the_root_within_the_size_bound(ds: list[bytes]) -> None:
    tree = Tree(ds, os.urandom(NONCE_LEN * len(ds)))
    bulk = tree.all_path_bytes()
    levels = math.ceil(math.log2(len(ds))) if len(ds) > 1 else 0
    for i, d in enumerate(ds):
        assert run(d, tree.path(i)) == tree.root
        assert bulk[i] == tree.path_bytes(i) == b"".join(op.encode() for op in tree.path(i))
        # 35 bytes per level (prepend/append 32 + sha256), 19 for the nonce step
        assert len(bulk[i]) <= 35 * levels + 19


def test_a_leaf_shows_no_other_digest() -> None:
    ds = [bytes([i]) * 32 for i in range(8)]
    tree = Tree(ds, os.urandom(NONCE_LEN * 8))
    for i in range(8):
        shown = b"".join(op.arg for op in tree.path(i))
        assert not any(d in shown for j, d in enumerate(ds) if j != i)


@given(st.integers(1, 40), st.data())
@settings(max_examples=40, deadline=None)
def test_merkle_branch_reaches_the_block_root(n: int, data: st.DataObject) -> None:
    from eschaton.core.txcodec import merkle_root

    ids = [hashlib.sha256(bytes([i])).digest() for i in range(n)]
    i = data.draw(st.integers(0, n - 1))
    assert run(ids[i], merkle_branch(ids, i)) == merkle_root(ids)


def test_commitment_path_is_the_txid_of_the_stripped_transaction() -> None:
    root = os.urandom(32)
    raw = commitment_tx(root)
    path, txid = commitment_path(raw, root)
    from eschaton.core.txcodec import decode_tx

    assert run(root, path) == txid == bytes.fromhex(decode_tx(raw).txid)[::-1]
    with pytest.raises(ProofError):
        commitment_path(raw, os.urandom(32))


def test_proofs_verify_and_roundtrip() -> None:
    ds = [hashlib.sha256(bytes([i])).digest() for i in range(11)]
    _tree, files, mroot = stamped(ds, height=9)
    for d, f in zip(ds, files, strict=True):
        proof = ots.decode(f)
        assert proof.encode() == f
        assert verify(proof, d, lambda h: mroot if h == 9 else None).height == 9
        with pytest.raises(ProofError, match="another file"):
            verify(proof, ds[0] if d != ds[0] else ds[1], lambda h: mroot if h == 9 else None)
        with pytest.raises(ProofError):  # the same proof naming a block that does not hold it
            verify(proof, d, lambda h: sha256d(bytes([h])))


def test_the_reference_library_reads_and_writes_the_same_bytes() -> None:
    from opentimestamps.core.notary import BitcoinBlockHeaderAttestation
    from opentimestamps.core.serialize import (
        BytesDeserializationContext,
        StreamSerializationContext,
    )
    from opentimestamps.core.timestamp import DetachedTimestampFile

    ds = [os.urandom(32) for _ in range(5)]
    _tree, files, mroot = stamped(ds, height=3)
    for f in files:
        ref = DetachedTimestampFile.deserialize(BytesDeserializationContext(f))
        (msg, att), = ref.timestamp.all_attestations()
        assert isinstance(att, BitcoinBlockHeaderAttestation) and att.height == 3 and msg == mroot
        out = io.BytesIO()
        ref.serialize(StreamSerializationContext(out))
        assert out.getvalue() == f
        assert ots.decode(out.getvalue()).encode() == f


@pytest.fixture(scope="module")
def one_proof() -> tuple[bytes, bytes, bytes]:
    ds = [hashlib.sha256(bytes([i])).digest() for i in range(6)]
    _tree, files, mroot = stamped(ds, height=4)
    return ds[3], files[3], mroot


@given(st.data())
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_single_bit_change_of_the_proof_fails(one_proof: tuple[bytes, bytes, bytes],
                                                    data: st.DataObject) -> None:
    digest, f, mroot = one_proof
    bit = data.draw(st.integers(0, len(f) * 8 - 1))
    bad = bytearray(f)
    bad[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(ProofError):
        verify(ots.decode(bytes(bad)), digest, lambda h: mroot if h == 4 else sha256d(bytes([h])))


def test_every_single_bit_change_of_the_proof_fails(one_proof: tuple[bytes, bytes, bytes]) -> None:
    """Exhaustively, not just sampled: a proof has no bit that does not matter."""
    digest, f, mroot = one_proof
    for bit in range(len(f) * 8):
        bad = bytearray(f)
        bad[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(ProofError):
            verify(ots.decode(bytes(bad)), digest, lambda h: mroot if h == 4 else sha256d(bytes([h])))


@given(st.binary(min_size=1, max_size=64), st.data())
@settings(max_examples=200, deadline=None)
def test_any_single_bit_change_of_the_file_fails(content: bytes, data: st.DataObject) -> None:
    d = hashlib.sha256(content).digest()
    _tree, files, mroot = stamped([d, os.urandom(32)], height=2, others=1)
    bit = data.draw(st.integers(0, len(content) * 8 - 1))
    bad = bytearray(content)
    bad[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(ProofError, match="another file"):
        verify(ots.decode(files[0]), hashlib.sha256(bytes(bad)).digest(), lambda h: mroot)


@given(st.binary(max_size=600))
@settings(max_examples=500, deadline=None)
def test_decoder_fuzz_raises_only_proof_errors(tail: bytes) -> None:
    for data in (tail, ots.MAGIC + tail, ots.MAGIC + b"\x01\x08" + tail):
        try:
            ots.decode(data)
        except ProofError:
            pass


@given(st.data())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_decoder_fuzz_mutations_of_a_real_proof(one_proof: tuple[bytes, bytes, bytes], data: st.DataObject) -> None:
    _d, f, _m = one_proof
    cut = data.draw(st.integers(0, len(f)))
    junk = data.draw(st.binary(max_size=40))
    for mutated in (f[:cut], f[:cut] + junk + f[cut:], f + junk):
        try:
            ots.decode(mutated)
        except ProofError:
            pass


def test_decoder_refusals_are_one_line() -> None:
    _d, f, _m = stamped([os.urandom(32)])[0], stamped([os.urandom(32)])[1][0], None
    cases = {
        b"garbage": "bad magic",
        ots.MAGIC + b"\x02": "version 2",
        ots.MAGIC + b"\x01\x02" + b"\x00" * 20: "only sha256",
        f + b"\x00": "trailing",
        f[:-1]: "truncated",
        ots.MAGIC + b"\x01\x08" + b"\x00" * 32 + b"\x67" + b"\x00": "unsupported operation 0x67",
    }
    for data, msg in cases.items():
        with pytest.raises(ProofError, match=msg):
            ots.decode(data)


def test_after_statements() -> None:
    chain = {h: hashlib.sha256(b"block%d" % h).digest() for h in range(20)}
    d = os.urandom(32)
    stmt = after.statement([(19, chain[19]), (18, chain[18]), (17, chain[17])], d)
    assert after.check(stmt, chain.get) == after.After(19, d)
    # the tip was reorged away: the next embedded block still holds
    reorged = dict(chain)
    reorged[19] = os.urandom(32)
    assert after.check(stmt, reorged.get).height == 18
    with pytest.raises(ProofError, match="proves nothing"):
        after.check(stmt, lambda h: None)
    with pytest.raises(ProofError, match="malformed"):
        after.check(stmt[:-1], chain.get)
    with pytest.raises(ValueError):
        after.statement([(17, chain[17]), (18, chain[18])], d)

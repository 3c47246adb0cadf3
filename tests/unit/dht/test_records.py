"""Record kinds: each verifies before it is stored or returned; the decoder is strict."""
from __future__ import annotations

import hashlib
import random

import pytest

from eschaton.core import merkle
from eschaton.core.dht import records, smt, statements
from eschaton.core.dht.errors import RecordError, Refused
from eschaton.core.dht.protocol import DhtNode
from eschaton.core.dht.routing import Contact
from eschaton.core.dht.txproof import TxProof
from eschaton.core.link.identity import NodeKeys
from eschaton.core.txcodec import sha256d


def keys(seed: int) -> NodeKeys:
    return NodeKeys.generate(random.Random(seed).randbytes)


def header_over(root: bytes, nonce: int = 0) -> bytes:
    return (b"\x01\x00\x00\x00" + b"\x22" * 32 + root + (1700000000).to_bytes(4, "little")
            + b"\xff\xff\x7f\x20" + nonce.to_bytes(4, "little"))


CTX = records.Context(height=100, known_header=lambda h: False)


def test_preimages_for_each_algorithm() -> None:
    data = b"the preimage"
    want = {"sha256": hashlib.sha256(data).digest(), "sha256d": sha256d(data),
            "hash160": hashlib.new("ripemd160", hashlib.sha256(data).digest()).digest()}
    for alg, dig in want.items():
        rec = records.encode(records.Preimage(alg, data))
        r = records.check(rec, records.preimage_key(alg, dig), CTX)
        assert isinstance(r, records.Preimage) and r.digest == dig
        # The same bytes under another digest's key are refused: a key is the content's hash.
        with pytest.raises(RecordError, match="belong"):
            records.check(rec, records.preimage_key(alg, bytes(len(dig))), CTX)


def test_signed_statement_verifies_only_while_valid_and_untampered() -> None:
    k = keys(1)
    body = {b"svc": b"weather", b"geo": {b"lat": 4712, b"lon": 815}, b"tags": [b"a", b"b"]}
    st = statements.sign(k.sign, k.node_id.raw, body, 90, 120)
    rec = records.encode(st)
    key = records.signer_key(k.node_id.raw)
    assert records.check(rec, key, CTX) == st
    with pytest.raises(RecordError, match="verify"):
        records.check(rec, key, records.Context(121, CTX.known_header))  # past its validity
    with pytest.raises(RecordError, match="verify"):
        records.check(rec, key, records.Context(89, CTX.known_header))
    forged = records.encode(statements.Statement(
        {**body, b"svc": b"weather!"}, 90, 120, st.signer, st.sig))
    with pytest.raises(RecordError, match="verify"):
        records.check(forged, key, CTX)
    other = keys(2)  # someone else's signature under our signer's name
    theirs = statements.sign(other.sign, k.node_id.raw, body, 90, 120)
    with pytest.raises(RecordError, match="verify"):
        records.check(records.encode(theirs), key, CTX)
    assert statements.get_path(st.body, [b"geo", b"lat"]) == 4712
    assert statements.get_path(st.body, [b"tags", 1]) == b"b"
    assert statements.get_path(st.body, [b"geo", b"alt"]) is statements.MISSING


def test_smt_entries_inclusion_and_exclusion() -> None:
    tree = smt.Tree({b"alice": b"1", b"bob": b"2", b"carol": b"3"})
    inc = records.SmtEntry(tree.root, b"bob", b"2", tree.prove(b"bob"))
    exc = records.SmtEntry(tree.root, b"dave", None, tree.prove(b"dave"))
    for r in (inc, exc):
        assert records.check(records.encode(r), records.smt_key(tree.root, r.key), CTX) == r
    lie = records.SmtEntry(tree.root, b"bob", None, tree.prove(b"bob"))  # "bob is absent"
    with pytest.raises(RecordError, match="verify"):
        records.check(records.encode(lie), records.smt_key(tree.root, b"bob"), CTX)
    lie2 = records.SmtEntry(tree.root, b"bob", b"3", tree.prove(b"bob"))
    with pytest.raises(RecordError, match="verify"):
        records.check(records.encode(lie2), records.smt_key(tree.root, b"bob"), CTX)


def test_tx_proof_verifies_against_the_askers_headers_only() -> None:
    txids = [hashlib.sha256(bytes([i])).digest() for i in range(7)]
    tree = merkle.Tree(txids)
    header = header_over(tree.root)
    known = {sha256d(header)}
    ctx = records.Context(100, known.__contains__)
    p = TxProof(txids[5], header, 5, tuple(tree.branch(5)))
    assert records.check(records.encode(p), records.tx_key(txids[5]), ctx) == p
    assert p.block_hash == sha256d(header)
    with pytest.raises(RecordError, match="verify"):  # a header the asker does not hold
        records.check(records.encode(p), records.tx_key(txids[5]), CTX)
    wrong = TxProof(txids[5], header, 4, tuple(tree.branch(5)))
    with pytest.raises(RecordError, match="verify"):
        records.check(records.encode(wrong), records.tx_key(txids[5]), ctx)
    fake_header = header_over(tree.root, nonce=1)  # a header over the same root, not on chain
    fake = TxProof(txids[5], fake_header, 5, tuple(tree.branch(5)))
    with pytest.raises(RecordError, match="verify"):
        records.check(records.encode(fake), records.tx_key(txids[5]), ctx)


@pytest.mark.parametrize("data, why", [
    (b"", "end of input"),
    (b"le", "dictionary"),
    (b"d1:t3:zzze", "unknown kind"),
    (b"d3:alg3:md54:data1:x1:t3:pree", "alg must be"),
    (b"d3:alg6:sha2564:data1:x5:extrai1e1:t3:pree", "exactly"),
    (b"d1:t3:pre3:alg6:sha2564:data1:xe", "not strictly sorted"),  # keys out of order: not canonical
    (b"d1:t3:stme", "exactly"),
    (b"d1:t2:txe", "exactly"),
])
def test_decoder_names_what_is_wrong(data: bytes, why: str) -> None:
    with pytest.raises(RecordError, match=why):
        records.decode(data)


def test_node_verifies_before_storing_and_charges_the_sender() -> None:
    holder = DhtNode(b"\x07" * 32)
    peer = Contact(b"\x08" * 32)
    good = records.encode(records.Preimage("sha256", b"x"))
    key = records.key_of(records.decode(good))
    holder.on_store(peer, key, good, 0.0, CTX)
    assert holder.store.usage(peer.key) == (1, len(good))
    assert peer in holder.table  # learned from the request
    with pytest.raises(RecordError):
        holder.on_store(peer, key, records.encode(records.Preimage("sha256", b"y")), 0.0, CTX)
    data, contacts = holder.on_find_value(Contact(b"\x09" * 32), key, 1.0, CTX)
    assert data == [good] and contacts == []
    flood = DhtNode(b"\x0a" * 32)
    with pytest.raises(Refused, match="rate"):
        for _ in range(1000):
            flood.on_find_node(peer, key, 0.0)

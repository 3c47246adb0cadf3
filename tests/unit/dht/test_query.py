"""The query language: semantics, map/reduce with a checkable root, and a strict decoder."""
from __future__ import annotations

import fnmatch
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eschaton.core.dht import query as q
from eschaton.core.dht import records, smt, statements, sumtree
from eschaton.core.dht.errors import ProofError, QueryError, RecordError
from eschaton.core.link.identity import NodeKeys

DOC = {b"t": b"stm", b"signer": b"\x01" * 32,
       b"body": {b"svc": b"weather-station", b"price": 40, b"geo": {b"cc": b"CH"},
                 b"tags": [b"rain", b"wind"]}}


def run(query: q.Query) -> bool:
    back = q.decode(q.encode(query))  # every query also survives its own wire encoding
    assert back == query
    assert isinstance(back, q.Eq | q.Prefix | q.Glob | q.Range | q.InBloom | q.Has | q.And
                      | q.Or | q.Not)
    return q.matches(back, DOC)


def test_operators() -> None:
    svc, price = (b"body", b"svc"), (b"body", b"price")
    assert run(q.Eq(svc, b"weather-station")) and not run(q.Eq(svc, b"weather"))
    assert not run(q.Eq(price, b"40"))  # types matter: an int is not its digits
    assert run(q.Prefix(svc, b"weather")) and not run(q.Prefix(price, b"4"))
    assert run(q.Glob(svc, b"w*-st?tion")) and not run(q.Glob(svc, b"*rain*"))
    assert run(q.Range(price, 10, 40)) and not run(q.Range(price, 41, 99))
    assert run(q.Range((b"body", b"geo", b"cc"), b"AA", b"DZ"))
    assert not run(q.Range(price, b"a", b"z"))
    assert run(q.InBloom((b"body", b"geo", b"cc"), q.Bloom.build([b"CH", b"DE"], 64, 4)))
    assert not run(q.InBloom((b"body", b"geo", b"cc"), q.Bloom.build([b"FR"], 64, 4)))
    assert run(q.InBloom(price, q.Bloom.build([40], 64, 3)))
    assert run(q.Eq((b"body", b"tags", 1), b"wind")) and run(q.Has((b"body", b"geo")))
    assert not run(q.Has((b"body", b"alt")))
    both = q.And((q.Prefix(svc, b"weather"), q.Range(price, 0, 50)))
    assert run(both) and run(q.Or((q.Eq(svc, b"x"), both)))
    assert run(q.Not(q.Eq((b"body", b"alt"), 1)))  # a missing element never matches
    assert not run(q.And((both, q.Not(q.Eq((b"signer",), b"\x01" * 32)))))


@settings(max_examples=400, deadline=None)
@given(st.text("ab*?", max_size=8), st.text("ab", max_size=10))
def test_glob_agrees_with_fnmatch(pattern: str, s: str) -> None:
    assert q.glob_match(pattern.encode(), s.encode()) == fnmatch.fnmatchcase(s, pattern)


def test_map_reduce_root_checks_against_statements() -> None:
    keys = NodeKeys.generate(random.Random(3).randbytes)
    docs = []
    for i in range(9):
        st_ = statements.sign(keys.sign, keys.node_id.raw,
                              {b"kind": b"reading" if i % 3 else b"other", b"wh": 100 + i}, 0, 9)
        data = records.encode(st_)
        docs.append((records.record_id(data), records.decode(data)))
    values = [(rid, {b"body": s.body, b"signer": s.signer}) for rid, s in docs
              if isinstance(s, statements.Statement)]
    job = q.decode(q.encode(q.Sum(q.Eq((b"body", b"kind"), b"reading"), (b"body", b"wh"))))
    assert isinstance(job, q.Sum)
    tree = q.map_reduce(job, values)
    root = tree.root
    assert root[1] == sum(100 + i for i in range(9) if i % 3)
    # The asker checks a leaf it knows (a record it fetched) against the answer's root.
    leaves = sorted((rid, 100 + i) for i, (rid, _) in enumerate(docs) if i % 3)
    for idx, (rid, v) in enumerate(leaves):
        assert sumtree.verify(root, rid, v, tree.prove(idx))
    assert not sumtree.verify(root, leaves[0][0], leaves[0][1] - 1, tree.prove(0))


@pytest.mark.parametrize("data, why", [
    (b"le", "operator is a list"),
    (b"l2:eqe", "takes 2 arguments"),
    (b"l3:xyzle0:e", "unknown operator"),
    (b"l5:rangel1:ae1:ai1ee", "one type"),
    (b"l5:rangel1:aei5ei1ee", "lo <= hi"),
    (b"l5:bloomle0:i1ee", "Bloom filter has 1"),
    (b"l5:bloomle1:xi99ee", "hash functions"),
    (b"l3:andlee", "non-empty"),
    (b"l3:sume", "sum wants"),
    (b"l3:hasl" + b"1:a" * 9 + b"ee", "at most 8 steps"),
    (b"l3:hasli-1eee", "path step"),
])
def test_decoder_names_what_is_wrong(data: bytes, why: str) -> None:
    with pytest.raises(QueryError, match=why):
        q.decode(data)


def test_decoder_bounds_nesting_and_size() -> None:
    deep: q.Query = q.Has((b"a",))
    for _ in range(q.MAX_DEPTH + 1):
        deep = q.Not(deep)
    with pytest.raises(QueryError, match="deeper|nested"):
        q.decode(q.encode(deep))
    wide = q.Or(tuple(q.Has((b"a",)) for _ in range(q.MAX_NODES)))
    with pytest.raises(QueryError, match="operators"):
        q.decode(q.encode(wide))
    with pytest.raises(QueryError, match="exceeds"):
        q.decode(b"l3:hasl" + b"1:a" * 5000 + b"ee")


SAMPLE_QUERY = q.encode(q.Sum(q.And((q.Glob((b"body", b"svc"), b"w*"), q.Not(q.Range(
    (b"body", b"price"), 0, 9)), q.InBloom((b"x",), q.Bloom(b"\x00\xff", 2)))), (b"body", b"p")))


def _mutations() -> st.SearchStrategy[bytes]:
    def mutate(args: tuple[int, int, bool, int]) -> bytes:
        pos, byte, cut, n = args
        b = bytearray(SAMPLE_QUERY)
        b[pos % len(b)] = byte
        return bytes(b[:n]) if cut else bytes(b)
    return st.tuples(st.integers(0), st.integers(0, 255), st.booleans(),
                     st.integers(0, len(SAMPLE_QUERY))).map(mutate)


@settings(max_examples=800, deadline=None)
@given(st.binary(max_size=200) | _mutations())
def test_query_decoder_never_crashes(data: bytes) -> None:
    try:
        parsed = q.decode(data)
    except QueryError:
        return
    assert q.encode(parsed) == data  # whatever is accepted is canonical
    if not isinstance(parsed, q.Sum):
        q.matches(parsed, DOC)  # and evaluates without raising


SAMPLE_RECORDS = [
    records.encode(records.Preimage("hash160", b"abc")),
    records.encode(statements.sign(NodeKeys.generate(random.Random(1).randbytes).sign,
                                   b"\x05" * 32, {b"a": [1, {b"b": b"c"}]}, 1, 2)),
    records.encode(records.SmtEntry(smt.Tree({b"k": b"v", b"j": b"w"}).root, b"x", None,
                                    smt.Tree({b"k": b"v", b"j": b"w"}).prove(b"x"))),
    records.encode(records.decode(b"d6:branchl32:" + b"\x01" * 32 + b"e6:header80:" + b"\x02" * 80
                                  + b"5:indexi1e1:t2:tx4:txid32:" + b"\x03" * 32 + b"e")),
]


@settings(max_examples=800, deadline=None)
@given(st.sampled_from(SAMPLE_RECORDS), st.integers(0), st.integers(0, 255), st.booleans(),
       st.integers(0, 400))
def test_record_decoder_never_crashes(base: bytes, pos: int, byte: int, cut: bool,
                                      n: int) -> None:
    b = bytearray(base)
    b[pos % len(b)] = byte
    data = bytes(b[:n]) if cut else bytes(b)
    try:
        r = records.decode(data)
    except RecordError:
        return
    assert records.encode(r) == data
    records.verify(r, records.Context(1, lambda h: False))  # verification never raises either


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_proof_decoders_never_crash(data: bytes) -> None:
    for dec in (smt.Proof.decode, sumtree.decode_proof):
        try:
            dec(data)
        except ProofError:
            pass
    try:
        records.decode(data)
    except RecordError:
        pass

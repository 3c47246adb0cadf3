"""A small typed query language over record values, with a strict decoder and map/reduce.

Rules / theory of operation:
- A query is a tree of operators, each a bencode list ``[op, ...]``:
  ``["eq", path, value]`` exact value (bytes or int); ``["pre", path, bytes]`` byte prefix;
  ``["glob", path, pattern]`` wildcard (``*`` any run, ``?`` one byte); ``["range", path, lo,
  hi]`` inclusive, both ints or both bytes; ``["bloom", path, bits, k]`` Bloom membership;
  ``["has", path]``; ``["and", [q...]]``, ``["or", [q...]]``, ``["not", q]``. A path is a list
  of dictionary keys (bytes) and list indices (ints), walked with ``statements.get_path``.
- A missing element never matches a leaf operator (so ``not`` of it does match).
- The decoder is strict and bounded (size, nodes, nesting, path length, pattern and filter sizes)
  and raises only ``QueryError``: a query comes from a peer, and evaluating it costs the holder.
  Glob matching is the linear two-pointer algorithm, never a regex (no backtracking blow-up).
- Map/reduce: ``["sum", query, path]`` maps each matching record to the non-negative integer at
  ``path`` and reduces them into a Merkle sum tree (``sumtree.py``) over (record id, value); the
  answer is its root and total, and the asker checks leaves against it.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from eschaton.core.dht.errors import QueryError
from eschaton.core.dht.statements import MISSING, get_path
from eschaton.core.dht.sumtree import MAX_VALUE, SumTree
from eschaton.core.wire import bencode
from eschaton.core.wire.errors import BencodeError

MAX_QUERY = 8192
MAX_NODES = 64
MAX_DEPTH = 8
MAX_PATH = 8
MAX_PATTERN = 256
MAX_BLOOM_BYTES = 4096
MAX_BLOOM_K = 16

Path = tuple[bytes | int, ...]


@dataclass(frozen=True, slots=True)
class Eq:
    path: Path
    value: bytes | int


@dataclass(frozen=True, slots=True)
class Prefix:
    path: Path
    prefix: bytes


@dataclass(frozen=True, slots=True)
class Glob:
    path: Path
    pattern: bytes


@dataclass(frozen=True, slots=True)
class Range:
    path: Path
    lo: bytes | int
    hi: bytes | int


@dataclass(frozen=True, slots=True)
class Bloom:
    """A Bloom filter of ``len(bits) * 8`` bits and ``k`` hash functions."""

    bits: bytes
    k: int

    @classmethod
    def build(cls, items: Sequence[bytes | int], nbytes: int, k: int) -> Bloom:
        arr = bytearray(nbytes)
        for it in items:
            for pos in _positions(_item_bytes(it), nbytes * 8, k):
                arr[pos >> 3] |= 1 << (pos & 7)
        return cls(bytes(arr), k)

    def __contains__(self, item: bytes | int) -> bool:
        return all(self.bits[p >> 3] >> (p & 7) & 1
                   for p in _positions(_item_bytes(item), len(self.bits) * 8, self.k))


def _item_bytes(it: bytes | int) -> bytes:
    return it if isinstance(it, bytes) else bencode.encode(it)


def _positions(item: bytes, m: int, k: int) -> list[int]:
    return [int.from_bytes(hashlib.sha256(bytes([i]) + item).digest()[:8], "big") % m
            for i in range(k)]


@dataclass(frozen=True, slots=True)
class InBloom:
    path: Path
    bloom: Bloom


@dataclass(frozen=True, slots=True)
class Has:
    path: Path


@dataclass(frozen=True, slots=True)
class And:
    terms: tuple[Query, ...]


@dataclass(frozen=True, slots=True)
class Or:
    terms: tuple[Query, ...]


@dataclass(frozen=True, slots=True)
class Not:
    term: Query


Query = Eq | Prefix | Glob | Range | InBloom | Has | And | Or | Not


@dataclass(frozen=True, slots=True)
class Sum:
    """Map/reduce: the sum of the integer at ``path`` over records matching ``query``."""

    query: Query
    path: Path


def glob_match(pattern: bytes, s: bytes) -> bool:
    """``*`` matches any run of bytes, ``?`` one byte; linear, without backtracking blow-up."""
    p = i = 0
    star = -1
    mark = 0
    while i < len(s):
        if p < len(pattern) and pattern[p] != 0x2A and (pattern[p] == 0x3F or pattern[p] == s[i]):
            p += 1
            i += 1
        elif p < len(pattern) and pattern[p] == 0x2A:
            star, mark = p, i
            p += 1
        elif star >= 0:
            p = star + 1
            mark += 1
            i = mark
        else:
            return False
    while p < len(pattern) and pattern[p] == 0x2A:
        p += 1
    return p == len(pattern)


def matches(q: Query, doc: bencode.BValue) -> bool:
    """True if ``doc`` (a decoded record value) satisfies ``q``."""
    if isinstance(q, And):
        return all(matches(t, doc) for t in q.terms)
    if isinstance(q, Or):
        return any(matches(t, doc) for t in q.terms)
    if isinstance(q, Not):
        return not matches(q.term, doc)
    v = get_path(doc, q.path)
    if v is MISSING:
        return False
    if isinstance(q, Has):
        return True
    if isinstance(q, Eq):
        return type(v) is type(q.value) and v == q.value
    if isinstance(q, Prefix):
        return isinstance(v, bytes) and v.startswith(q.prefix)
    if isinstance(q, Glob):
        return isinstance(v, bytes) and glob_match(q.pattern, v)
    if isinstance(q, Range):
        if isinstance(v, int) and isinstance(q.lo, int) and isinstance(q.hi, int):
            return q.lo <= v <= q.hi
        if isinstance(v, bytes) and isinstance(q.lo, bytes) and isinstance(q.hi, bytes):
            return q.lo <= v <= q.hi
        return False
    if isinstance(v, bytes | int):
        return v in q.bloom
    return False


def map_reduce(s: Sum, docs: Sequence[tuple[bytes, bencode.BValue]]) -> SumTree:
    """The sum tree over (record id, value at ``s.path``) of the documents matching."""
    leaves = []
    for rid, doc in docs:
        if matches(s.query, doc):
            v = get_path(doc, s.path)
            if isinstance(v, int) and 0 <= v <= MAX_VALUE:
                leaves.append((rid, v))
    leaves.sort()
    return SumTree(leaves)


# --- encoding -------------------------------------------------------------------------------

def to_value(q: Query) -> bencode.EValue:
    if isinstance(q, And | Or):
        return [b"and" if isinstance(q, And) else b"or", [to_value(t) for t in q.terms]]
    if isinstance(q, Not):
        return [b"not", to_value(q.term)]
    path = list(q.path)
    if isinstance(q, Eq):
        return [b"eq", path, q.value]
    if isinstance(q, Prefix):
        return [b"pre", path, q.prefix]
    if isinstance(q, Glob):
        return [b"glob", path, q.pattern]
    if isinstance(q, Range):
        return [b"range", path, q.lo, q.hi]
    if isinstance(q, Has):
        return [b"has", path]
    return [b"bloom", path, q.bloom.bits, q.bloom.k]


def encode(q: Query | Sum) -> bytes:
    if isinstance(q, Sum):
        return bencode.encode([b"sum", to_value(q.query), list(q.path)])
    return bencode.encode(to_value(q))


def decode(data: bytes) -> Query | Sum:
    """Strict, bounded decode of a query or a map/reduce; only ``QueryError`` leaves."""
    try:
        v = bencode.decode(data, bencode.Limits(max_size=MAX_QUERY, max_depth=2 * MAX_DEPTH + 4,
                                                max_items=1024))
    except BencodeError as exc:
        raise QueryError(f"query: {exc}") from None
    if isinstance(v, list) and v[:1] == [b"sum"]:
        if len(v) != 3:
            raise QueryError("query: sum wants [sum, query, path]")
        return Sum(_Decoder().query(v[1], 0), _path(v[2]))
    return _Decoder().query(v, 0)


def _path(v: bencode.BValue) -> Path:
    if not isinstance(v, list) or len(v) > MAX_PATH:
        raise QueryError(f"query: a path is a list of at most {MAX_PATH} steps")
    out: list[bytes | int] = []
    for step in v:
        if isinstance(step, bytes) and len(step) <= 64:
            out.append(step)
        elif isinstance(step, int) and 0 <= step < 2**16:
            out.append(step)
        else:
            raise QueryError("query: a path step is a key of <= 64 bytes or an index")
    return tuple(out)


def _scalar(v: bencode.BValue, what: str) -> bytes | int:
    if isinstance(v, bytes | int):
        return v
    raise QueryError(f"query: {what} must be bytes or an integer")


class _Decoder:
    def __init__(self) -> None:
        self.nodes = 0

    def query(self, v: bencode.BValue, depth: int) -> Query:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise QueryError(f"query: more than {MAX_NODES} operators")
        if depth > MAX_DEPTH:
            raise QueryError(f"query: nested deeper than {MAX_DEPTH}")
        if not isinstance(v, list) or not v or not isinstance(v[0], bytes):
            raise QueryError("query: an operator is a list [op, ...]")
        op, args = v[0], v[1:]
        want = {b"eq": 2, b"pre": 2, b"glob": 2, b"range": 3, b"bloom": 3, b"has": 1,
                b"and": 1, b"or": 1, b"not": 1}.get(op)
        if want is None:
            raise QueryError(f"query: unknown operator {op[:16]!r}")
        if len(args) != want:
            raise QueryError(f"query: {op.decode()} takes {want} arguments")
        if op in (b"and", b"or"):
            terms = args[0]
            if not isinstance(terms, list) or not 1 <= len(terms) <= MAX_NODES:
                raise QueryError(f"query: {op.decode()} takes a non-empty list of queries")
            sub = tuple(self.query(t, depth + 1) for t in terms)
            return And(sub) if op == b"and" else Or(sub)
        if op == b"not":
            return Not(self.query(args[0], depth + 1))
        path = _path(args[0])
        if op == b"has":
            return Has(path)
        if op == b"eq":
            return Eq(path, _scalar(args[1], "eq's value"))
        if op in (b"pre", b"glob"):
            b = args[1]
            if not isinstance(b, bytes) or len(b) > MAX_PATTERN:
                raise QueryError(f"query: a prefix or pattern is at most {MAX_PATTERN} bytes")
            return Prefix(path, b) if op == b"pre" else Glob(path, b)
        if op == b"range":
            lo, hi = _scalar(args[1], "range's lo"), _scalar(args[2], "range's hi")
            if type(lo) is not type(hi) or lo > hi:  # type: ignore[operator]
                raise QueryError("query: range wants lo <= hi of one type")
            return Range(path, lo, hi)
        bits, k = args[1], args[2]
        if not isinstance(bits, bytes) or not 1 <= len(bits) <= MAX_BLOOM_BYTES:
            raise QueryError(f"query: a Bloom filter has 1..{MAX_BLOOM_BYTES} bytes")
        if not isinstance(k, int) or not 1 <= k <= MAX_BLOOM_K:
            raise QueryError(f"query: a Bloom filter has 1..{MAX_BLOOM_K} hash functions")
        return InBloom(path, Bloom(bits, k))

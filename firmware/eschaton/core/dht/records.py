"""Record kinds of the DHT, their keys, and the one strict decoder for all of them.

Rules / theory of operation:
- A record is a canonical bencode dictionary whose ``t`` names its kind; its id is the sha256 of
  its encoding. Every record is verified before it is stored and again before it is returned
  (``verify``): a holder never serves what it could not check, and an asker re-checks anyway.
- Kinds, and the DHT key each lives under (so an asker can compute where to look):
  - ``pre``: a preimage ``data`` of ``alg`` (sha256, sha256d, hash160); key = H(tag, alg, digest).
    Self-verifying.
  - ``stm``: a signed statement (``statements.py``); key = H(tag, signer), so all statements of a
    signer meet at one place and queries select among them by sub-element paths. Verified by
    signature and validity height.
  - ``smt``: a key/value with its sparse Merkle proof under a root (``smt.py``); value absent
    means an exclusion proof; key = H(tag, root, key). Verified against the root, which the asker
    trusts from elsewhere (typically a signed statement naming it).
  - ``tx``: a transaction's block header and Merkle branch (``txproof.py``); key = H(tag, txid).
    Verified against the verifier's headers.
- ``decode`` raises only ``RecordError`` (a ``RemoteError``): whatever a peer sends.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from eschaton.core.dht import smt, statements, txproof
from eschaton.core.dht.errors import ProofError, RecordError
from eschaton.core.dht.statements import Statement
from eschaton.core.dht.txproof import TxProof
from eschaton.core.txcodec import sha256d
from eschaton.core.wire import bencode
from eschaton.core.wire.errors import BencodeError

MAX_RECORD = 16 * 1024
LIMITS = bencode.Limits(max_size=MAX_RECORD, max_depth=8, max_items=1024)
ALGS = ("sha256", "sha256d", "hash160")
DIGEST_LEN = {"sha256": 32, "sha256d": 32, "hash160": 20}


def digest(alg: str, data: bytes) -> bytes:
    if alg == "sha256":
        return hashlib.sha256(data).digest()
    if alg == "sha256d":
        return sha256d(data)
    if alg == "hash160":
        return hashlib.new("ripemd160", hashlib.sha256(data).digest()).digest()
    raise RecordError(f"unknown hash algorithm {alg!r}")


def _key(*parts: bytes) -> bytes:
    h = hashlib.sha256(b"eschaton-dht-key-v1")
    for p in parts:
        h.update(len(p).to_bytes(2, "big") + p)
    return h.digest()


def preimage_key(alg: str, dig: bytes) -> bytes:
    return _key(b"pre", alg.encode(), dig)


def signer_key(signer: bytes) -> bytes:
    return _key(b"stm", signer)


def smt_key(root: bytes, key: bytes) -> bytes:
    return _key(b"smt", root, key)


def tx_key(txid: bytes) -> bytes:
    return _key(b"tx", txid)


@dataclass(frozen=True, slots=True)
class Preimage:
    alg: str
    data: bytes

    @property
    def digest(self) -> bytes:
        return digest(self.alg, self.data)


@dataclass(frozen=True, slots=True)
class SmtEntry:
    root: bytes
    key: bytes
    value: bytes | None  # None: the proof shows the key absent
    proof: smt.Proof


Record = Preimage | Statement | SmtEntry | TxProof


@dataclass(frozen=True, slots=True)
class Context:
    """What a verifier knows: the chain tip and which block hashes are on its best chain."""

    height: int
    known_header: Callable[[bytes], bool]


def encode(r: Record) -> bytes:
    if isinstance(r, Preimage):
        return bencode.encode({"t": "pre", "alg": r.alg, "data": r.data})
    if isinstance(r, Statement):
        v: dict[str, bencode.EValue] = dict(r.to_value())
        v["t"] = "stm"
        return bencode.encode(v)
    if isinstance(r, SmtEntry):
        d: dict[str, bencode.EValue] = {"t": "smt", "root": r.root, "key": r.key,
                                        "proof": bencode.decode(r.proof.encode())}
        if r.value is not None:
            d["value"] = r.value
        return bencode.encode(d)
    return bencode.encode({"t": "tx", "txid": r.txid, "header": r.header, "index": r.index,
                           "branch": list(r.branch)})


def record_id(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def decode(data: bytes) -> Record:
    """Strict decode of one record; only ``RecordError`` leaves."""
    try:
        v = bencode.decode(data, LIMITS)
    except BencodeError as exc:
        raise RecordError(f"record: {exc}") from None
    return from_value(v)


def from_value(v: bencode.BValue) -> Record:
    if not isinstance(v, dict) or b"t" not in v:
        raise RecordError("record: want a dictionary with a kind t")
    t = v[b"t"]
    if t == b"pre":
        if set(v) != {b"t", b"alg", b"data"}:
            raise RecordError("preimage: want exactly t, alg, data")
        alg, data = v[b"alg"], v[b"data"]
        if not isinstance(alg, bytes) or alg.decode("ascii", "replace") not in ALGS:
            raise RecordError(f"preimage: alg must be one of {', '.join(ALGS)}")
        if not isinstance(data, bytes):
            raise RecordError("preimage: data must be bytes")
        return Preimage(alg.decode(), data)
    if t == b"stm":
        return statements.from_value(v)
    if t == b"smt":
        if not {b"t", b"root", b"key", b"proof"} <= set(v) <= {b"t", b"root", b"key", b"proof",
                                                                 b"value"}:
            raise RecordError("smt entry: want t, root, key, proof and optional value")
        root, key, value = v[b"root"], v[b"key"], v.get(b"value")
        if not (isinstance(root, bytes) and len(root) == 32):
            raise RecordError("smt entry: root must be 32 bytes")
        if not (isinstance(key, bytes) and len(key) <= 256):
            raise RecordError("smt entry: key must be at most 256 bytes")
        if value is not None and not isinstance(value, bytes):
            raise RecordError("smt entry: value must be bytes")
        try:
            proof = smt.Proof.from_value(v[b"proof"])
        except ProofError as exc:
            raise RecordError(str(exc)) from None
        return SmtEntry(root, key, value, proof)
    if t == b"tx":
        return txproof.from_value(v)
    raise RecordError(f"record: unknown kind {t!r}")


def key_of(r: Record) -> bytes:
    """The DHT key ``r`` lives under."""
    if isinstance(r, Preimage):
        return preimage_key(r.alg, r.digest)
    if isinstance(r, Statement):
        return signer_key(r.signer)
    if isinstance(r, SmtEntry):
        return smt_key(r.root, r.key)
    return tx_key(r.txid)


def verify(r: Record, ctx: Context) -> bool:
    """True if ``r`` checks out for a verifier that knows ``ctx``."""
    if isinstance(r, Preimage):
        return True  # its key is computed from its content: it cannot lie about its digest
    if isinstance(r, Statement):
        return r.valid_at(ctx.height) and r.verify()
    if isinstance(r, SmtEntry):
        if r.value is None:
            return smt.verify_exclusion(r.root, r.key, r.proof)
        return smt.verify_inclusion(r.root, r.key, r.value, r.proof)
    return r.verify(ctx.known_header)


def check(data: bytes, key: bytes, ctx: Context) -> Record:
    """Decode ``data`` and require it to verify and to belong under ``key``."""
    r = decode(data)
    if key_of(r) != key:
        raise RecordError("record does not belong under this key")
    if not verify(r, ctx):
        raise RecordError("record does not verify")
    return r

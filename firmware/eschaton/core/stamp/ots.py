"""The OpenTimestamps ``.ots`` file: a detached timestamp of a file, and its strict codec.

Format (as the OpenTimestamps reference client writes it):

    magic (31 bytes) | varuint major version (1) | file hash op (0x08 sha256) | digest (32 bytes)
    | timestamp

A timestamp is a tree: at each node the message so far, a set of attestations and a set of
operations each leading to a child timestamp. A node lists its items, every item but the last
preceded by 0xff (a fork); an attestation item is 0x00, an 8-byte tag and its payload as
varbytes; an operation item is the operation's encoding followed by the child's timestamp.

Rules:
- ``decode`` is strict: exact magic, version 1, sha256 as the file hash, operations from
  ``ops`` only, a depth limit of 256 (as the reference), every payload consumed exactly, no
  trailing bytes, at least one item per node. Anything else is one ``ProofError`` line.
- Unknown attestation tags are kept (the format allows new notaries) but never verify.
- We write linear proofs (one path, one attestation), which the reference reads as a tree with
  one branch; ``Timestamp`` can hold a full tree, so files with forks decode too.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from eschaton.core.stamp.ops import SHA256, Op, ProofError, Reader, varbytes, varuint

MAGIC = b"\x00OpenTimestamps\x00\x00Proof\x00\xbf\x89\xe2\xe8\x84\xe8\x92\x94"
VERSION = 1
BITCOIN_TAG = bytes.fromhex("0588960d73d71901")
PENDING_TAG = bytes.fromhex("83dfe30d2ef90c8e")
MAX_DEPTH = 256
MAX_PAYLOAD = 8192
MAX_URI = 1000


@dataclass(frozen=True, slots=True)
class Attestation:
    """``tag`` and raw ``payload``; ``height`` for Bitcoin block-header attestations."""

    tag: bytes
    payload: bytes

    @property
    def height(self) -> int | None:
        if self.tag != BITCOIN_TAG:
            return None
        r = Reader(self.payload)
        return r.varuint()

    def encode(self) -> bytes:
        return self.tag + varbytes(self.payload)


def bitcoin(height: int) -> Attestation:
    return Attestation(BITCOIN_TAG, varuint(height))


def pending(uri: str) -> Attestation:
    return Attestation(PENDING_TAG, varbytes(uri.encode()))


def _check_attestation(a: Attestation) -> None:
    r = Reader(a.payload)
    if a.tag == BITCOIN_TAG:
        r.varuint()
    elif a.tag == PENDING_TAG:
        uri = r.varbytes(MAX_URI)
        if not all(0x20 < c < 0x7F for c in uri):
            raise ProofError("pending attestation URI has characters outside printable ASCII")
    else:
        return
    if not r.done():
        raise ProofError("trailing bytes in an attestation")


@dataclass(slots=True)
class Timestamp:
    msg: bytes
    attestations: list[Attestation] = field(default_factory=list)
    ops: list[tuple[Op, Timestamp]] = field(default_factory=list)

    def encode(self) -> bytes:
        out = bytearray()
        self._encode(out)
        return bytes(out)

    def _encode(self, out: bytearray) -> None:
        items: list[Attestation | tuple[Op, Timestamp]] = [*self.attestations, *self.ops]
        if not items:
            raise ValueError("an empty timestamp cannot be written")
        for i, item in enumerate(items):
            if i < len(items) - 1:
                out.append(0xFF)
            if isinstance(item, Attestation):
                out.append(0x00)
                out += item.encode()
            else:
                out += item[0].encode()
                item[1]._encode(out)

    def leaves(self) -> list[tuple[bytes, Attestation]]:
        """Every attestation with the message it attests (the message at its node)."""
        out: list[tuple[bytes, Attestation]] = []
        stack = [self]
        while stack:
            t = stack.pop()
            out.extend((t.msg, a) for a in t.attestations)
            stack.extend(child for _, child in t.ops)
        return out


def linear(msg: bytes, path: list[Op] | tuple[Op, ...], attestation: Attestation) -> Timestamp:
    """The one-branch timestamp ``msg -> path -> attestation``."""
    root = node = Timestamp(msg)
    for op in path:
        child = Timestamp(op.apply(node.msg))
        node.ops.append((op, child))
        node = child
    node.attestations.append(attestation)
    return root


def linear_bytes(path: list[Op] | tuple[Op, ...], attestation: Attestation) -> bytes:
    """The encoding of ``linear(...)`` without building the tree (ops need not be replayed)."""
    return b"".join(op.encode() for op in path) + b"\x00" + attestation.encode()


def _decode_ts(r: Reader, msg: bytes, depth: int) -> Timestamp:
    if depth > MAX_DEPTH:
        raise ProofError("proof nested too deeply")
    ts = Timestamp(msg)
    while True:
        tag = r.byte()
        fork = tag == 0xFF
        if fork:
            tag = r.byte()
        if tag == 0x00:
            a = Attestation(r.take(8), r.varbytes(MAX_PAYLOAD))
            _check_attestation(a)
            ts.attestations.append(a)
        else:
            op = r.op(tag)
            ts.ops.append((op, _decode_ts(r, op.apply(msg), depth + 1)))
        if not fork:
            return ts


@dataclass(frozen=True, slots=True)
class DetachedFile:
    """A ``.ots`` file: the sha256 digest of a file and its timestamp."""

    timestamp: Timestamp

    @property
    def digest(self) -> bytes:
        return self.timestamp.msg

    def encode(self) -> bytes:
        return MAGIC + varuint(VERSION) + bytes([SHA256]) + self.timestamp.msg + self.timestamp.encode()


def decode(data: bytes) -> DetachedFile:
    if data[:len(MAGIC)] != MAGIC:
        raise ProofError("not an OpenTimestamps proof (bad magic)")
    r = Reader(data)
    r.pos = len(MAGIC)
    version = r.varuint()
    if version != VERSION:
        raise ProofError(f"unsupported OpenTimestamps version {version}")
    if r.byte() != SHA256:
        raise ProofError("only sha256 file digests are supported")
    ts = _decode_ts(r, r.take(32), 0)
    if not r.done():
        raise ProofError(f"{len(data) - r.pos} trailing bytes after the proof")
    return DetachedFile(ts)


def file_prefix(digest: bytes) -> bytes:
    """What precedes the timestamp of ``digest`` in a ``.ots`` file: the file is this followed
    by an encoded path and attestation (``linear_bytes``)."""
    return MAGIC + varuint(VERSION) + bytes([SHA256]) + digest

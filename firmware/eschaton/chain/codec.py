"""Strict decoding of consensus-serialised transactions and blocks.

Why hand-written and not embit or pbk: libbitcoinkernel's transaction parser accepts trailing
garbage (it stops reading after nLockTime), and embit raises assorted built-in exceptions on bad
input. The mempool needs one decode path that either returns a fully-consumed, well-formed
transaction or raises ``TxDecodeError`` (bitcoind's ``TX decode failed``), and it needs txid,
wtxid, weight and the witness stacks cheaply. This module is that path; it is pure (hashlib only).

Rules (Bitcoin Core's ``UnserializeTransaction``):
- An empty vin count followed by a non-zero flag byte means the extended (segwit) format; the
  flag must be 0x01, and a witness section whose stacks are all empty is refused ("superfluous
  witness record").
- Compact sizes must be canonical and at most 0x02000000 (MAX_SIZE).
- Every byte must be consumed.
"""
from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from eschaton.chain.errors import TxDecodeError

MAX_SIZE = 0x02000000
WITNESS_SCALE_FACTOR = 4


def sha256d(b: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(b).digest()).digest()


@dataclass(frozen=True, slots=True)
class TxIn:
    prev_txid: bytes  # 32 bytes, internal (little-endian) order
    prev_vout: int
    script_sig: bytes
    sequence: int
    witness: tuple[bytes, ...]

    @property
    def prev_txid_hex(self) -> str:
        """Display-order hex of the spent transaction."""
        return self.prev_txid[::-1].hex()

    @property
    def is_null(self) -> bool:
        return self.prev_vout == 0xFFFFFFFF and self.prev_txid == b"\x00" * 32


@dataclass(frozen=True, slots=True)
class TxOut:
    value: int
    script_pubkey: bytes


@dataclass(frozen=True, slots=True)
class Tx:
    version: int
    inputs: tuple[TxIn, ...]
    outputs: tuple[TxOut, ...]
    locktime: int
    raw: bytes
    txid: str  # display-order hex
    wtxid: str
    base_size: int  # size without witness data

    @property
    def has_witness(self) -> bool:
        return any(i.witness for i in self.inputs)

    @property
    def weight(self) -> int:
        return self.base_size * (WITNESS_SCALE_FACTOR - 1) + len(self.raw)

    @property
    def vsize(self) -> int:
        return (self.weight + WITNESS_SCALE_FACTOR - 1) // WITNESS_SCALE_FACTOR

    @property
    def is_coinbase(self) -> bool:
        return len(self.inputs) == 1 and self.inputs[0].is_null


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes, pos: int = 0) -> None:
        self.buf = buf
        self.pos = pos

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.buf):
            raise TxDecodeError("unexpected end of data")
        b = self.buf[self.pos : end]
        self.pos = end
        return b

    def u8(self) -> int:
        if self.pos >= len(self.buf):
            raise TxDecodeError("unexpected end of data")
        v = self.buf[self.pos]
        self.pos += 1
        return v

    def u32(self) -> int:
        if self.pos + 4 > len(self.buf):
            raise TxDecodeError("unexpected end of data")
        v: int = struct.unpack_from("<I", self.buf, self.pos)[0]
        self.pos += 4
        return v

    def i64(self) -> int:
        if self.pos + 8 > len(self.buf):
            raise TxDecodeError("unexpected end of data")
        v: int = struct.unpack_from("<q", self.buf, self.pos)[0]
        self.pos += 8
        return v

    def compact(self) -> int:
        first = self.u8()
        if first < 0xFD:
            n = first
        elif first == 0xFD:
            n = int.from_bytes(self.take(2), "little")
            if n < 0xFD:
                raise TxDecodeError("non-canonical compact size")
        elif first == 0xFE:
            n = int.from_bytes(self.take(4), "little")
            if n < 0x10000:
                raise TxDecodeError("non-canonical compact size")
        else:
            n = int.from_bytes(self.take(8), "little")
            if n < 0x100000000:
                raise TxDecodeError("non-canonical compact size")
        if n > MAX_SIZE:
            raise TxDecodeError("compact size too large")
        return n

    def var_bytes(self) -> bytes:
        return self.take(self.compact())

    def count(self, min_item_size: int) -> int:
        """A vector length, refused early when the remaining bytes cannot hold it."""
        n = self.compact()
        if n * min_item_size > len(self.buf) - self.pos:
            raise TxDecodeError("vector longer than the data")
        return n


def _read_tx(r: _Reader) -> Tx:
    start = r.pos
    version = struct.unpack("<i", r.take(4))[0]
    n_in = r.count(41)
    segwit = False
    if n_in == 0:
        flag = r.u8()
        if flag != 0:
            if flag != 1:
                raise TxDecodeError("unknown transaction optional data")
            segwit = True
            n_in = r.count(41)
    ins_raw: list[tuple[bytes, int, bytes, int]] = []
    for _ in range(n_in):
        prev = r.take(32)
        vout = r.u32()
        ss = r.var_bytes()
        seq = r.u32()
        ins_raw.append((prev, vout, ss, seq))
    n_out = r.count(9)
    outs: list[TxOut] = []
    for _ in range(n_out):
        value = r.i64()
        outs.append(TxOut(value, r.var_bytes()))
    after_outputs = r.pos
    witnesses: list[tuple[bytes, ...]] = [() for _ in range(n_in)]
    if segwit:
        for i in range(n_in):
            n_items = r.count(1)
            witnesses[i] = tuple(r.var_bytes() for _ in range(n_items))
        if not any(witnesses):
            raise TxDecodeError("superfluous witness record")
    witness_end = r.pos
    locktime = r.u32()
    end = r.pos
    raw = r.buf[start:end]
    if segwit:
        # The txid commits to the legacy serialisation: drop marker+flag and the witness section.
        stripped = raw[:4] + r.buf[start + 6 : after_outputs] + r.buf[witness_end:end]
    else:
        stripped = raw
    inputs = tuple(TxIn(p, v, s, q, w) for (p, v, s, q), w in zip(ins_raw, witnesses, strict=True))
    return Tx(
        version=version,
        inputs=inputs,
        outputs=tuple(outs),
        locktime=locktime,
        raw=bytes(raw),
        txid=sha256d(stripped)[::-1].hex(),
        wtxid=sha256d(raw)[::-1].hex(),
        base_size=len(stripped),
    )


def decode_tx(data: bytes) -> Tx:
    """Decode one transaction that must span all of ``data``; raises ``TxDecodeError``."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TxDecodeError("not bytes")
    data = bytes(data)
    r = _Reader(data)
    tx = _read_tx(r)
    if r.pos != len(data):
        raise TxDecodeError("trailing data after transaction")
    return tx


@dataclass(frozen=True, slots=True)
class BlockHeader:
    version: int
    prev_hash: str  # display hex
    merkle_root: bytes  # internal order
    time: int
    bits: int
    nonce: int
    hash: str  # display hex


@dataclass(frozen=True, slots=True)
class Block:
    header: BlockHeader
    txs: tuple[Tx, ...]
    raw: bytes


def decode_header(data: bytes) -> BlockHeader:
    if len(data) < 80:
        raise TxDecodeError("block header too short")
    version, prev, merkle, t, bits, nonce = struct.unpack_from("<i32s32sIII", data, 0)
    return BlockHeader(version, prev[::-1].hex(), merkle, t, bits, nonce, sha256d(data[:80])[::-1].hex())


def decode_block(data: bytes) -> Block:
    """Decode a full block; raises ``TxDecodeError`` (block decode failures share the type)."""
    data = bytes(data)
    header = decode_header(data)
    r = _Reader(data, 80)
    n = r.count(60)
    txs = tuple(_read_tx(r) for _ in range(n))
    if r.pos != len(data):
        raise TxDecodeError("trailing data after block")
    return Block(header, txs, data)


def merkle_root(hashes: list[bytes]) -> bytes:
    """Merkle root over internal-order 32-byte hashes (Bitcoin's duplicate-last rule)."""
    if not hashes:
        return b"\x00" * 32
    layer = list(hashes)
    while len(layer) > 1:
        if len(layer) % 2:
            layer.append(layer[-1])
        layer = [sha256d(layer[i] + layer[i + 1]) for i in range(0, len(layer), 2)]
    return layer[0]


def compact_size(n: int) -> bytes:
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + n.to_bytes(2, "little")
    if n <= 0xFFFFFFFF:
        return b"\xfe" + n.to_bytes(4, "little")
    return b"\xff" + n.to_bytes(8, "little")

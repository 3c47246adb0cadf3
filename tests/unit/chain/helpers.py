"""Transaction building for chain tests: embit for serialisation and BIP143, coincurve to sign.

These are test fixtures (the product's own builders live in ``eschaton.core``); they stay small
and build exactly the shapes the chain tests need.
"""
from __future__ import annotations

import hashlib

import coincurve
from embit.script import Script, Witness
from embit.transaction import Transaction, TransactionInput, TransactionOutput

SIGHASH_ALL = 1


class Key:
    def __init__(self, seed: int) -> None:
        self.priv = coincurve.PrivateKey(hashlib.sha256(b"eschaton-test-%d" % seed).digest())
        self.pub = self.priv.public_key.format(compressed=True)

    def sign(self, digest: bytes) -> bytes:
        """DER signature (low-S, as libsecp256k1 produces) plus SIGHASH_ALL."""
        return self.priv.sign(digest, hasher=None) + bytes([SIGHASH_ALL])

    @property
    def p2wpkh(self) -> bytes:
        return b"\x00\x14" + hash160(self.pub)


def hash160(b: bytes) -> bytes:
    return hashlib.new("ripemd160", hashlib.sha256(b).digest()).digest()


def push(data: bytes) -> bytes:
    assert len(data) < 76
    return bytes([len(data)]) + data


def p2wsh(witness_script: bytes) -> bytes:
    return b"\x00\x20" + hashlib.sha256(witness_script).digest()


def multisig_2of2(a: bytes, b: bytes) -> bytes:
    return b"\x52" + push(a) + push(b) + b"\x52\xae"


def hashlock_script(h: bytes, pub: bytes) -> bytes:
    """OP_SHA256 <h> OP_EQUALVERIFY <pub> OP_CHECKSIG"""
    return b"\xa8" + push(h) + b"\x88" + push(pub) + b"\xac"


def build_tx(
    inputs: list[tuple[str, int]],
    outputs: list[tuple[int, bytes]],
    locktime: int = 0,
    sequence: int = 0xFFFFFFFE,
) -> Transaction:
    vin = [TransactionInput(bytes.fromhex(txid), vout, sequence=sequence) for txid, vout in inputs]
    vout = [TransactionOutput(value, Script(spk)) for value, spk in outputs]
    return Transaction(version=2, vin=vin, vout=vout, locktime=locktime)


def sighash(tx: Transaction, index: int, script_code: bytes, value: int) -> bytes:
    return tx.sighash_segwit(index, Script(script_code), value)


def sign_p2wpkh(tx: Transaction, index: int, key: Key, value: int) -> None:
    script_code = b"\x76\xa9\x14" + hash160(key.pub) + b"\x88\xac"
    sig = key.sign(sighash(tx, index, script_code, value))
    tx.vin[index].witness = Witness([sig, key.pub])


def sign_p2wsh(tx: Transaction, index: int, witness_script: bytes, value: int, keys: list[Key],
               extra: list[bytes] | None = None, pre: list[bytes] | None = None) -> None:
    """Witness = pre + [sigs...] + extra + [witness_script] (multisig gets pre=[b''])."""
    digest = sighash(tx, index, witness_script, value)
    sigs = [k.sign(digest) for k in keys]
    tx.vin[index].witness = Witness((pre or []) + sigs + (extra or []) + [witness_script])


def spend_p2wpkh(prev_txid: str, vout: int, value: int, key: Key, outputs: list[tuple[int, bytes]],
                 locktime: int = 0, sequence: int = 0xFFFFFFFE) -> bytes:
    tx = build_tx([(prev_txid, vout)], outputs, locktime, sequence)
    sign_p2wpkh(tx, 0, key, value)
    return tx.serialize()


def high_s(sig: bytes) -> bytes:
    """The (n - s) twin of a low-S DER signature: valid for consensus, refused by policy."""
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    der, ht = sig[:-1], sig[-1:]
    len_r = der[3]
    r = der[4 : 4 + len_r]
    s = int.from_bytes(der[6 + len_r :], "big")
    s2 = (n - s).to_bytes(33, "big").lstrip(b"\x00")
    if s2[0] & 0x80:
        s2 = b"\x00" + s2
    body = b"\x02" + bytes([len(r)]) + r + b"\x02" + bytes([len(s2)]) + s2
    return b"\x30" + bytes([len(body)]) + body + ht

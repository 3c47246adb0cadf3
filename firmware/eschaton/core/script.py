"""Output scripts and witnesses for trade channels, escrow, bets, data and the wallet.

Theory of operation:
- Everything is segwit v0 (P2WSH / P2WPKH). Segwit txids do not commit to signatures, which
  removes the malleability caveat of the original trade-channel design: a refund signed against
  a funding txid stays valid whatever happens to the funding transaction's witness.
- Keys are 33-byte compressed secp256k1 public keys. Builders validate their inputs and raise
  ``ScriptError`` (a ``LocalError``): a script we build from bad parts is our own bug or bad
  input from our caller, never something to send to a peer.
- ``hashlock_cltv`` is the escrow/bet primitive. The design's escrow output has no timeout; ours
  has a CLTV refund branch so that funds can never be stuck if the preimage is never revealed.
  The preimage is pinned to 32 bytes with OP_SIZE so that a claimant cannot push an oversized
  preimage that would make the witness non-standard.

embit builds the standard templates; the two custom scripts are assembled here from opcodes
because no library offers these exact templates.
"""
from __future__ import annotations

import hashlib

from embit import script as _escript

from eschaton.errors import LocalError

OP_0 = 0x00
OP_1 = 0x51
OP_2 = 0x52
OP_IF = 0x63
OP_ELSE = 0x67
OP_ENDIF = 0x68
OP_DROP = 0x75
OP_EQUAL = 0x87
OP_EQUALVERIFY = 0x88
OP_SIZE = 0x82
OP_SHA256 = 0xA8
OP_CHECKSIG = 0xAC
OP_CHECKMULTISIG = 0xAE
OP_CHECKLOCKTIMEVERIFY = 0xB1
OP_RETURN = 0x6A

MAX_OP_RETURN = 80  # bitcoind's default -datacarriersize payload
LOCKTIME_THRESHOLD = 500_000_000  # below: block height; at or above: unix time


class ScriptError(LocalError):
    """A script could not be built from the given parts."""


def _check_pubkey(pk: bytes) -> None:
    if len(pk) != 33 or pk[0] not in (2, 3):
        raise ScriptError("public key must be 33 bytes, compressed")


def push_data(data: bytes) -> bytes:
    """Minimal push of ``data`` (as MINIMALDATA requires for the sizes we use)."""
    n = len(data)
    if n < 0x4C:
        return bytes([n]) + data
    if n <= 0xFF:
        return b"\x4c" + bytes([n]) + data
    if n <= 0xFFFF:
        return b"\x4d" + n.to_bytes(2, "little") + data
    raise ScriptError("push too large")


def push_int(n: int) -> bytes:
    """Minimal encoding of a non-negative script number (CScriptNum)."""
    if n < 0:
        raise ScriptError("negative script number")
    if n == 0:
        return bytes([OP_0])
    if n <= 16:
        return bytes([OP_1 - 1 + n])
    out = bytearray()
    while n:
        out.append(n & 0xFF)
        n >>= 8
    if out[-1] & 0x80:
        out.append(0)
    return push_data(bytes(out))


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def multisig_2of2(pubkey_a: bytes, pubkey_b: bytes) -> bytes:
    """The 2-of-2 witness script, keys in lexicographic order so both sides derive the same bytes."""
    _check_pubkey(pubkey_a)
    _check_pubkey(pubkey_b)
    if pubkey_a == pubkey_b:
        raise ScriptError("2-of-2 needs two distinct keys")
    k1, k2 = sorted((pubkey_a, pubkey_b))
    return bytes([OP_2]) + push_data(k1) + push_data(k2) + bytes([OP_2, OP_CHECKMULTISIG])


def multisig_order(witness_script: bytes) -> tuple[bytes, bytes]:
    """The two keys of a 2-of-2 script, in the order their signatures must appear."""
    if (
        len(witness_script) != 71
        or witness_script[0] != OP_2
        or witness_script[1] != 33
        or witness_script[35] != 33
        or witness_script[69:] != bytes([OP_2, OP_CHECKMULTISIG])
    ):
        raise ScriptError("not a 2-of-2 witness script")
    return witness_script[2:35], witness_script[36:69]


def hashlock_cltv(payment_hash: bytes, claim_pubkey: bytes, refund_pubkey: bytes, timeout: int) -> bytes:
    """Pay ``claim_pubkey`` on the SHA-256 preimage of ``payment_hash``, or ``refund_pubkey`` after ``timeout``.

    ``timeout`` is an absolute nLockTime (a block height below 500,000,000).
    """
    if len(payment_hash) != 32:
        raise ScriptError("payment hash must be 32 bytes")
    _check_pubkey(claim_pubkey)
    _check_pubkey(refund_pubkey)
    if not 0 < timeout < LOCKTIME_THRESHOLD:
        raise ScriptError("timeout must be a block height between 1 and 499,999,999")
    return (
        bytes([OP_IF, OP_SIZE])
        + push_int(32)
        + bytes([OP_EQUALVERIFY, OP_SHA256])
        + push_data(payment_hash)
        + bytes([OP_EQUALVERIFY])
        + push_data(claim_pubkey)
        + bytes([OP_ELSE])
        + push_int(timeout)
        + bytes([OP_CHECKLOCKTIMEVERIFY, OP_DROP])
        + push_data(refund_pubkey)
        + bytes([OP_ENDIF, OP_CHECKSIG])
    )


def p2wsh(witness_script: bytes) -> bytes:
    """The P2WSH output script committing to ``witness_script``."""
    if not witness_script or len(witness_script) > 3600:
        raise ScriptError("witness script must be 1..3600 bytes (standardness limit)")
    return bytes(_escript.p2wsh(_escript.Script(witness_script)).data)


def p2wpkh(pubkey: bytes) -> bytes:
    _check_pubkey(pubkey)
    return bytes([OP_0, 20]) + hashlib.new("ripemd160", sha256(pubkey)).digest()


def p2wpkh_script_code(pubkey: bytes) -> bytes:
    """BIP143 scriptCode for a P2WPKH input (the P2PKH template)."""
    _check_pubkey(pubkey)
    h = hashlib.new("ripemd160", sha256(pubkey)).digest()
    return bytes([0x76, 0xA9, 20]) + h + bytes([0x88, 0xAC])


def op_return(data: bytes) -> bytes:
    """A provably unspendable data output (timestamps, anchors)."""
    if len(data) > MAX_OP_RETURN:
        raise ScriptError(f"OP_RETURN payload is limited to {MAX_OP_RETURN} bytes")
    return bytes([OP_RETURN]) + push_data(data)


# --- witnesses ----------------------------------------------------------------------------


def witness_p2wpkh(signature: bytes, pubkey: bytes) -> list[bytes]:
    return [signature, pubkey]


def witness_2of2(witness_script: bytes, sigs_by_pubkey: dict[bytes, bytes]) -> list[bytes]:
    """Witness for the 2-of-2; signatures are placed in the script's key order."""
    k1, k2 = multisig_order(witness_script)
    try:
        return [b"", sigs_by_pubkey[k1], sigs_by_pubkey[k2], witness_script]
    except KeyError as e:
        raise ScriptError("missing a signature for the 2-of-2") from e


def witness_hashlock_claim(witness_script: bytes, signature: bytes, preimage: bytes) -> list[bytes]:
    return [signature, preimage, b"\x01", witness_script]


def witness_hashlock_refund(witness_script: bytes, signature: bytes) -> list[bytes]:
    # An empty element selects OP_ELSE and satisfies MINIMALIF.
    return [signature, b"", witness_script]


# --- addresses ----------------------------------------------------------------------------

NETWORKS = ("regtest", "test", "main", "signet")


# The config's network names (core/networks.py) beside embit's.
_CONFIG_NAMES = {"main": "mainnet", "test": "testnet"}
_EMBIT_NAMES = {v: k for k, v in _CONFIG_NAMES.items()}


def address_to_script(address: str, network: str = "regtest") -> bytes:
    """Decode an address for ``network`` (embit's name or the config's: ``mainnet``,
    ``testnet``); raises ScriptError for anything malformed or foreign."""
    from embit.networks import NETWORKS as _NETS

    network = _EMBIT_NAMES.get(network, network)
    if network not in _NETS:
        raise ScriptError(f"unknown network {network!r}")
    try:
        spk = bytes(_escript.address_to_scriptpubkey(address.strip()).data)
    except Exception as e:  # embit raises several unrelated types for garbage input
        raise ScriptError(f"malformed address {address!r}") from e
    # Re-encode to check the network prefix: embit decodes any network's address.
    try:
        again = _escript.Script(spk).address(_NETS[network])
    except Exception as e:
        raise ScriptError(f"unsupported address type {address!r}") from e
    if again.lower() != address.strip().lower():
        raise ScriptError(f"address {address!r} is not a {_CONFIG_NAMES.get(network, network)} address")
    return spk


def script_to_address(script_pubkey: bytes, network: str = "regtest") -> str | None:
    from embit.networks import NETWORKS as _NETS

    try:
        return str(_escript.Script(script_pubkey).address(_NETS[network]))
    except Exception:  # not every script has an address form
        return None

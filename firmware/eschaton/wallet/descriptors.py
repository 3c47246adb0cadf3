"""Output descriptors (BIP380/BIP382) of the BIP84 wallet, for watch-only or full import elsewhere.

Two descriptors, receive and change, in the form Bitcoin Core's ``listdescriptors``, BDK and
Sparrow use: ``wpkh([fingerprint/84h/coinh/0h]xpub/0/*)#checksum``. The key is a plain BIP32
``xpub``/``tpub`` (never SLIP-132 ``zpub``: the script type is the descriptor's ``wpkh``), with
its origin, so a signer that holds the seed recognises its own keys in a PSBT. ``private=True``
puts the account ``xprv``/``tprv`` in place of the public key: a full backup, as secret as the seed.
"""
from __future__ import annotations

from dataclasses import dataclass

from embit.descriptor.checksum import add_checksum

from eschaton.wallet.seed import Seed

RECEIVE, CHANGE = 0, 1


@dataclass(frozen=True, slots=True)
class Descriptors:
    receive: str
    change: str


def origin(seed: Seed) -> str:
    """``[fingerprint/84h/coinh/0h]``: the key origin of the account."""
    return f"[{seed.fingerprint().hex()}/84h/{seed.coin_type}h/0h]"


def descriptors(seed: Seed, *, private: bool = False) -> Descriptors:
    account = seed.account()  # carries the network's xprv/tprv version bytes
    key = account.to_base58() if private else account.to_public().to_base58()
    prefix = f"wpkh({origin(seed)}{key}"
    return Descriptors(add_checksum(f"{prefix}/{RECEIVE}/*)"), add_checksum(f"{prefix}/{CHANGE}/*)"))

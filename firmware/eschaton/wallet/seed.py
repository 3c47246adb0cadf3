"""The wallet seed: a BIP39 mnemonic stored with mode 0600, and BIP84 key derivation.

Rules:
- The seed file is created with O_EXCL and mode 0600 in one system call, so it is never readable
  by others even for an instant, whatever the umask. An existing seed is never overwritten.
- The mnemonic never appears in logs, errors or ``repr``.
- Keys follow BIP84: m/84'/coin'/0'/change/index, coin 0 on mainnet and 1 elsewhere.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from embit import bip32, bip39
from embit.networks import NETWORKS

from eschaton.errors import LocalError

SEED_FILE = "seed"


class SeedError(LocalError):
    pass


def _write_secret(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)  # the directory entry must survive a power cut too
    finally:
        os.close(dfd)


@dataclass(frozen=True)
class Seed:
    mnemonic: str = field(repr=False)
    network: str = "regtest"

    @property
    def coin_type(self) -> int:
        return 0 if self.network == "main" else 1

    def root(self) -> bip32.HDKey:
        seed = bip39.mnemonic_to_seed(self.mnemonic)
        return bip32.HDKey.from_seed(seed, version=NETWORKS[self.network]["xprv"])

    def fingerprint(self) -> bytes:
        return bytes(self.root().my_fingerprint)

    def path(self, change: int, index: int) -> tuple[int, ...]:
        h = 0x80000000
        return (84 + h, self.coin_type + h, h, change, index)

    def account(self) -> bip32.HDKey:
        h = 0x80000000
        return self.root().derive([84 + h, self.coin_type + h, h])


def load_or_create(wallet_dir: Path, network: str = "regtest", mnemonic: str | None = None) -> Seed:
    path = wallet_dir / SEED_FILE
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise SeedError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
        words = path.read_text().strip()
        if not bip39.mnemonic_is_valid(words):
            raise SeedError(f"{path} does not hold a valid BIP39 mnemonic")
        return Seed(words, network)
    if mnemonic is None:
        mnemonic = bip39.mnemonic_from_bytes(os.urandom(32))
    elif not bip39.mnemonic_is_valid(mnemonic):
        raise SeedError("invalid BIP39 mnemonic")
    _write_secret(path, (mnemonic + "\n").encode())
    return Seed(mnemonic, network)

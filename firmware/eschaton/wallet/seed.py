"""The wallet seed: a BIP39 mnemonic (and optional passphrase) stored with mode 0600, and BIP84
key derivation.

Rules:
- The seed file is created with O_EXCL and mode 0600 in one system call, so it is never readable
  by others even for an instant, whatever the umask; its directory is 0700.
- An existing seed is never overwritten silently. ``restore(force=True)`` first hard-links the old
  seed to ``seed.replaced-<time>`` (0600, durable), then renames the new seed over it: at every
  instant one complete seed file is in place, and the old one can always be put back.
- The mnemonic and passphrase never appear in logs, errors or ``repr``. An invalid mnemonic is
  reported by word position, never by the word itself (a mistyped word is still most of a secret).
- Keys follow BIP84: m/84'/coin'/0'/change/index, coin 0 on mainnet and 1 elsewhere.
- File format: line 1 the mnemonic, line 2 (only if set) the BIP39 passphrase verbatim.
"""
from __future__ import annotations

import os
import stat
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from embit import bip32, bip39
from embit.networks import NETWORKS

from eschaton.errors import LocalError
from eschaton.store.private import private_dir

SEED_FILE = "seed"
STATE_FILE = "state.json"  # next indices (wallet.py); dropped with a replaced seed
BACKUP_PREFIX = "seed.replaced-"
WORD_COUNTS = (12, 15, 18, 21, 24)  # BIP39: 128 to 256 bits of entropy
MAX_PASSPHRASE = 1024  # characters; far above any real one, bounds what we hash and store


class SeedError(LocalError):
    pass


def normalize_mnemonic(text: str) -> str:
    """NFKD, lower case, single spaces: the form BIP39 hashes."""
    return " ".join(unicodedata.normalize("NFKD", text).lower().split())


def check_mnemonic(text: str) -> str:
    """The normalized mnemonic, or a ``SeedError`` that names what is wrong without any word."""
    words = normalize_mnemonic(text).split()
    if not words:
        raise SeedError("no mnemonic given")
    if len(words) not in WORD_COUNTS:
        raise SeedError(f"a BIP39 mnemonic has 12, 15, 18, 21 or 24 words, this one has {len(words)}")
    known = set(bip39.WORDLIST)
    bad = [i + 1 for i, w in enumerate(words) if w not in known]
    if bad:
        where = ", ".join(str(i) for i in bad)
        raise SeedError(f"word {where} of the mnemonic is not in the BIP39 English word list"
                        if len(bad) == 1 else
                        f"words {where} of the mnemonic are not in the BIP39 English word list")
    mnemonic = " ".join(words)
    try:
        bip39.mnemonic_to_bytes(mnemonic)
    except ValueError:
        raise SeedError("the mnemonic's checksum does not match: a word is wrong or out of order") from None
    return mnemonic


def check_passphrase(text: str) -> str:
    """The NFKD form BIP39 hashes; one line, bounded (it is stored as line 2 of the seed file)."""
    if "\n" in text or "\r" in text:
        raise SeedError("the passphrase must be one line")
    if len(text) > MAX_PASSPHRASE:
        raise SeedError(f"the passphrase is longer than {MAX_PASSPHRASE} characters")
    return unicodedata.normalize("NFKD", text)


def _fsync_dir(path: Path) -> None:
    dfd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dfd)  # the directory entry must survive a power cut too
    finally:
        os.close(dfd)


def _write_secret(path: Path, data: bytes) -> None:
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the open() mode passes through the umask; this does not
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    _fsync_dir(path.parent)


def _encode(mnemonic: str, passphrase: str) -> bytes:
    return (mnemonic + "\n" + (passphrase + "\n" if passphrase else "")).encode()


@dataclass(frozen=True)
class Seed:
    mnemonic: str = field(repr=False)
    network: str = "regtest"
    passphrase: str = field(default="", repr=False)

    @property
    def coin_type(self) -> int:
        return 0 if self.network == "main" else 1

    def root(self) -> bip32.HDKey:
        seed = bip39.mnemonic_to_seed(self.mnemonic, self.passphrase)
        return bip32.HDKey.from_seed(seed, version=NETWORKS[self.network]["xprv"])

    def fingerprint(self) -> bytes:
        return bytes(self.root().my_fingerprint)

    def path(self, change: int, index: int) -> tuple[int, ...]:
        h = 0x80000000
        return (84 + h, self.coin_type + h, h, change, index)

    def account(self) -> bip32.HDKey:
        h = 0x80000000
        return self.root().derive([84 + h, self.coin_type + h, h])


def read_seed(wallet_dir: Path, network: str = "regtest") -> Seed:
    """The stored seed; refuses a file others can read, or one that is not a valid mnemonic."""
    path = wallet_dir / SEED_FILE
    try:
        st = path.stat()
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise SeedError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
        text = path.read_text()
    except FileNotFoundError:
        raise SeedError(f"no wallet in {wallet_dir}") from None
    except PermissionError:
        raise SeedError(f"cannot read {path}: only its owner may") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SeedError(f"cannot read {path}: {getattr(e, 'strerror', None) or 'not text'}") from None
    if text.endswith("\n"):
        text = text[:-1]
    lines = text.split("\n")
    if len(lines) > 2:
        raise SeedError(f"{path} does not hold a valid BIP39 mnemonic")
    try:
        words = check_mnemonic(lines[0])
    except SeedError:
        raise SeedError(f"{path} does not hold a valid BIP39 mnemonic") from None
    return Seed(words, network, lines[1] if len(lines) > 1 else "")


def load_or_create(wallet_dir: Path, network: str = "regtest", mnemonic: str | None = None) -> Seed:
    path = wallet_dir / SEED_FILE
    if path.exists():
        return read_seed(wallet_dir, network)
    if mnemonic is None:
        mnemonic = bip39.mnemonic_from_bytes(os.urandom(32))
    else:
        mnemonic = check_mnemonic(mnemonic)
    _write_secret(path, _encode(mnemonic, ""))
    return Seed(mnemonic, network)


@dataclass(frozen=True, slots=True)
class Restored:
    seed: Seed
    backup: Path | None  # where the replaced seed was kept, if one was replaced
    unchanged: bool  # the same mnemonic and passphrase were already in place


def restore(wallet_dir: Path, mnemonic: str, passphrase: str = "", *, force: bool = False,
            network: str = "regtest") -> Restored:
    """Install ``mnemonic`` (+ ``passphrase``) as the wallet's seed.

    Restoring the seed that is already there changes nothing (a retried restore is harmless).
    A different existing seed is replaced only with ``force``, after a 0600 backup of it.
    The next-index state is dropped with the old seed: the gap scan rebuilds it from the chain.
    """
    words = check_mnemonic(mnemonic)
    phrase = check_passphrase(passphrase)
    new = Seed(words, network, phrase)
    private_dir(wallet_dir)
    path = wallet_dir / SEED_FILE
    if not path.exists():
        _write_secret(path, _encode(words, phrase))
        _drop_state(wallet_dir)
        return Restored(new, None, False)
    try:
        old: Seed | None = read_seed(wallet_dir, network)
    except SeedError:
        old = None  # unreadable or corrupt: only --force may replace it, and it is kept
    if old is not None and (old.mnemonic, old.passphrase) == (words, phrase):
        return Restored(new, None, True)
    if not force:
        raise SeedError(f"a different wallet seed is already in {wallet_dir}; --force replaces it "
                        f"(the old seed is kept as {BACKUP_PREFIX}<time>)")
    backup = _backup_name(wallet_dir)
    os.link(path, backup, follow_symlinks=False)
    os.chmod(backup, 0o600)
    _fsync_dir(wallet_dir)
    tmp = wallet_dir / (SEED_FILE + ".new")
    tmp.unlink(missing_ok=True)  # left by a restore that died before its rename
    _write_secret(tmp, _encode(words, phrase))
    os.replace(tmp, path)
    _fsync_dir(wallet_dir)
    _drop_state(wallet_dir)
    return Restored(new, backup, False)


def _backup_name(wallet_dir: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for n in range(1000):
        p = wallet_dir / (f"{BACKUP_PREFIX}{stamp}" + (f".{n}" if n else ""))
        if not p.exists():
            return p
    raise SeedError(f"too many seed backups in {wallet_dir}")


def _drop_state(wallet_dir: Path) -> None:
    # The indices belong to the old keys; the gap scan finds the new seed's used ones again.
    (wallet_dir / STATE_FILE).unlink(missing_ok=True)

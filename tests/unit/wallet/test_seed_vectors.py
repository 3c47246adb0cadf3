"""The wallet's seed and BIP84 derivation against the official BIP39 and BIP84 test vectors
(stored as data in tests/vectors/wallet), and the mnemonic checks that guard ``restore``."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from embit import bip32, bip39
from embit.ec import PrivateKey
from embit.networks import NETWORKS

from eschaton.core import script
from eschaton.wallet.descriptors import descriptors
from eschaton.wallet.seed import Seed, SeedError, check_mnemonic, check_passphrase
from eschaton.wallet.wallet import Wallet

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "wallet"
BIP84 = json.loads((VECTORS / "bip84.json").read_text())
BIP39 = json.loads((VECTORS / "bip39.json").read_text())
MAIN = NETWORKS["main"]


def test_bip39_vectors() -> None:
    for entropy, mnemonic, seed_hex, xprv in BIP39["vectors"]:
        assert bip39.mnemonic_from_bytes(bytes.fromhex(entropy)) == mnemonic
        assert check_mnemonic(mnemonic) == mnemonic
        # What a user types: any case, any spacing, one word a line.
        assert check_mnemonic("  " + mnemonic.upper().replace(" ", " \n ") + "\n") == mnemonic
        seed = Seed(mnemonic, "main", BIP39["passphrase"])
        assert bip39.mnemonic_to_seed(seed.mnemonic, seed.passphrase).hex() == seed_hex
        assert seed.root().to_base58() == xprv


def test_bip84_vectors_through_the_wallet(tmp_path: Path) -> None:
    # The Wallet derives its keys without the chain; no backend is needed for that.
    w = Wallet(tmp_path / "w", None, "main", mnemonic=BIP84["mnemonic"])  # type: ignore[arg-type]
    assert w.seed.root().to_base58(version=MAIN["zprv"]) == BIP84["rootnode"]
    account = w.seed.account()
    assert account.to_base58(version=MAIN["zprv"]) == BIP84["account0"]["xpriv"]
    assert account.to_public().to_base58(version=MAIN["zpub"]) == BIP84["account0"]["xpub"]
    # The standard xpub/xprv (what descriptors carry) are the same keys under BIP32's versions.
    zpub = bip32.HDKey.from_string(BIP84["account0"]["xpub"])
    assert account.to_public().to_base58() == zpub.to_base58(version=MAIN["xpub"])
    assert account.to_base58() == bip32.HDKey.from_string(BIP84["account0"]["xpriv"]).to_base58(version=MAIN["xprv"])

    receive = [a for a in BIP84["addresses"] if a["change"] == 0]
    assert [w.new_address() for _ in receive] == [a["address"] for a in receive]  # index 0, then 1
    for a in BIP84["addresses"]:
        k = w._key(a["change"], a["index"])
        assert k.pubkey.hex() == a["pubkey"]
        assert script.script_to_address(k.script_pubkey, "main") == a["address"]
        assert PrivateKey(k.privkey).wif(MAIN) == a["privkey"]
        assert w.privkey_for(k.script_pubkey) == k.privkey
        assert w.seed.path(a["change"], a["index"]) == (84 | 1 << 31, 1 << 31, 1 << 31, a["change"], a["index"])


def test_descriptors_carry_the_vector_account_key() -> None:
    seed = Seed(BIP84["mnemonic"], "main")
    xpub = bip32.HDKey.from_string(BIP84["account0"]["xpub"]).to_base58(version=MAIN["xpub"])
    d = descriptors(seed)
    assert d.receive.split("#")[0] == f"wpkh([73c5da0a/84h/0h/0h]{xpub}/0/*)"
    assert d.change.split("#")[0] == f"wpkh([73c5da0a/84h/0h/0h]{xpub}/1/*)"
    xprv = bip32.HDKey.from_string(BIP84["account0"]["xpriv"]).to_base58(version=MAIN["xprv"])
    assert descriptors(seed, private=True).receive.split("#")[0] == f"wpkh([73c5da0a/84h/0h/0h]{xprv}/0/*)"
    # Off mainnet: coin type 1 and tpub (what Sparrow, Core and BDK expect on test networks).
    assert descriptors(Seed(BIP84["mnemonic"], "regtest")).receive.startswith("wpkh([73c5da0a/84h/1h/0h]tpub")


def test_a_passphrase_is_a_different_wallet() -> None:
    plain = Seed(BIP84["mnemonic"], "regtest")
    other = Seed(BIP84["mnemonic"], "regtest", "correct horse")
    assert plain.fingerprint() != other.fingerprint()
    assert "correct horse" not in repr(other) and "abandon" not in repr(other)
    # The channel keys too: whoever holds the words but not the passphrase cannot sign channel
    # states. Without a passphrase they are what they always were (open channels keep their keys).
    from eschaton.daemon.channels import channel_secret

    assert channel_secret(other.mnemonic, other.passphrase) != channel_secret(plain.mnemonic)
    assert channel_secret(plain.mnemonic, "") == hashlib.sha256(
        b"eschaton/channel-secret/v1" + bip39.mnemonic_to_seed(plain.mnemonic)).digest()
    # BIP39 hashes the NFKD form: a composed and a decomposed accent are one passphrase.
    assert Seed(BIP84["mnemonic"], "regtest", check_passphrase("caf\u00e9")).fingerprint() == \
        Seed(BIP84["mnemonic"], "regtest", check_passphrase("cafe\u0301")).fingerprint()


@pytest.mark.parametrize(("text", "message"), [
    ("", "no mnemonic"),
    ("abandon " * 11, "12, 15, 18, 21 or 24 words, this one has 11"),
    ("abandon " * 13, "this one has 13"),
    ("abandon " * 11 + "aboutt", "word 12 of the mnemonic is not in the BIP39"),
    ("abandonn abandon abandon abandon abandon abandon abandon abandon abandon abandon abandonn about",
     "words 1, 11 of the mnemonic"),
    ("abandon " * 12, "checksum does not match"),
    ("about " + "abandon " * 11, "checksum does not match"),  # right words, wrong order
])
def test_bad_mnemonics_name_the_fault_never_the_words(text: str, message: str) -> None:
    with pytest.raises(SeedError) as e:
        check_mnemonic(text)
    assert message in str(e.value)
    for word in set(text.split()):
        assert word not in str(e.value)


def test_passphrase_checks() -> None:
    with pytest.raises(SeedError, match="one line"):
        check_passphrase("a\nb")
    with pytest.raises(SeedError, match="longer than"):
        check_passphrase("x" * 2000)

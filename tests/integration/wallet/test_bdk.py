"""Interoperability with BDK (bdkpython), a wallet library we do not write, on the embedded chain:
BDK signs our PSBTs with its default options, we sign and finalize BDK's, and BDK imports our
descriptors and derives the very addresses our wallet hands out."""
from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import bdkpython as bdk
import pytest
from embit.psbt import PSBT

from eschaton.chain.embedded.chain import EmbeddedChain
from eschaton.core import coinselect, psbt, script
from eschaton.core.tx import TxOut, serialize
from eschaton.wallet.descriptors import descriptors
from eschaton.wallet.wallet import CHANGE, RECEIVE, Wallet

# Bitcoin Core's listdescriptors form, which Sparrow's "Import descriptor" also reads.
DESCRIPTOR = re.compile(r"wpkh\(\[[0-9a-f]{8}/84h/[01]h/0h\][tx]p(ub|rv)[1-9A-HJ-NP-Za-km-z]{107,108}"
                        r"/[01]/\*\)#[02-9ac-hj-np-z]{8}")


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def env(tmp_path: Path):
    chain = EmbeddedChain.open(str(tmp_path / "chain"))
    alice = Wallet(tmp_path / "alice", chain)
    bob = Wallet(tmp_path / "bob", chain)
    yield chain, alice, bob
    chain.close_sync()


def bdk_wallet(w: Wallet, *, private: bool) -> bdk.Wallet:
    d = descriptors(w.seed, private=private)
    return bdk.Wallet(bdk.Descriptor(d.receive, bdk.NetworkKind.TEST),
                      bdk.Descriptor(d.change, bdk.NetworkKind.TEST),
                      bdk.Network.REGTEST, bdk.Persister.new_in_memory())


def test_bdk_signs_our_psbt_with_default_options(env) -> None:
    chain, alice, bob = env
    run(chain.mine(1, script.address_to_script(alice.new_address())))
    run(chain.mine(coinselect.COINBASE_MATURITY))
    unsigned = run(alice.create_psbt([TxOut(2_000_000, script.address_to_script(bob.new_address()))]))
    assert all(i.non_witness_utxo is not None for i in PSBT.from_base64(unsigned).inputs)

    signer = bdk_wallet(alice, private=True)  # BDK holding the seed, as a desktop wallet would
    # What a PSBT with witness_utxo alone gets from BDK's defaults (the old export).
    bare = PSBT.from_base64(unsigned)
    for i in bare.inputs:
        i.non_witness_utxo = None
    with pytest.raises(bdk.SignerError.MissingNonWitnessUtxo):
        signer.sign(bdk.Psbt(bare.to_base64()))

    p = bdk.Psbt(unsigned)
    assert signer.sign(p) is True  # default SignOptions: no trust_witness_utxo; also finalized
    tx = p.extract_tx()
    # Our import accepts BDK's result, checks its signatures, and the chain takes it.
    ours = psbt.finalize(p.serialize())
    assert serialize(ours) == tx.serialize()
    run(chain.broadcast(tx.serialize()))
    run(chain.mine(1))
    assert run(bob.balance()).confirmed == 2_000_000


def test_we_sign_and_finalize_a_psbt_bdk_built(env) -> None:
    chain, miner, alice = env
    run(chain.mine(1, script.address_to_script(miner.new_address())))
    run(chain.mine(coinselect.COINBASE_MATURITY))
    watch = bdk_wallet(alice, private=False)  # watch-only BDK over our public descriptors
    first = watch.reveal_next_address(bdk.KeychainKind.EXTERNAL).address
    assert str(first) == alice.new_address()
    funding = run(miner.fund_outputs([TxOut(5_000_000, bytes(first.script_pubkey().to_bytes()))]))
    run(chain.broadcast(serialize(funding)))
    run(chain.mine(1))
    # No Electrum server here: hand BDK the funding transaction itself.
    watch.apply_unconfirmed_txs([bdk.UnconfirmedTx(tx=bdk.Transaction(serialize(funding)),
                                                   last_seen=int(time.time()))])
    assert watch.balance().total.to_sat() == 5_000_000

    pay_to = bdk.Address(miner.new_address(), bdk.Network.REGTEST)
    built = (bdk.TxBuilder().add_recipient(pay_to.script_pubkey(), bdk.Amount.from_sat(1_000_000))
             .fee_rate(bdk.FeeRate.from_sat_per_vb(2)).finish(watch))
    signed = alice.sign_psbt(built.serialize())
    assert watch.finalize_psbt(bdk.Psbt(signed)) is True  # BDK agrees our signatures complete it
    tx = psbt.finalize(signed)
    run(chain.broadcast(serialize(tx)))
    run(chain.mine(1))
    st = run(chain.tx_status(tx.txid().hex()))
    assert st.confirmations == 1
    # BDK's change went to our change chain: our wallet sees exactly what is left.
    assert run(alice.balance()).confirmed == 5_000_000 - 1_000_000 - watch.calculate_fee(bdk.Transaction(serialize(tx))).to_sat()


def test_bdk_imports_our_descriptors_and_derives_our_addresses(env) -> None:
    _chain, alice, _ = env
    pub, priv = descriptors(alice.seed), descriptors(alice.seed, private=True)
    for d in (pub.receive, pub.change, priv.receive, priv.change):
        assert DESCRIPTOR.fullmatch(d), d
    for text, change in ((pub.receive, RECEIVE), (pub.change, CHANGE), (priv.receive, RECEIVE)):
        desc = bdk.Descriptor(text, bdk.NetworkKind.TEST)  # BDK verifies the checksum
        for i in range(30):
            ours = script.script_to_address(alice._key(change, i).script_pubkey, "regtest")
            assert str(desc.derive_address(i, bdk.Network.REGTEST)) == ours
    assert [alice.new_address() for _ in range(3)] == [
        str(bdk.Descriptor(pub.receive, bdk.NetworkKind.TEST).derive_address(i, bdk.Network.REGTEST))
        for i in range(3)]
    # BDK's own rendering of the public half of our private descriptor is our public descriptor.
    as_pub = str(bdk.Descriptor(priv.receive, bdk.NetworkKind.TEST).as_public())
    assert as_pub.split("#")[0].replace("'", "h") == pub.receive.split("#")[0]
    # A damaged checksum is refused (so the checksum we print is one BDK really checked).
    body, cs = pub.receive.split("#")
    with pytest.raises(bdk.DescriptorError):
        bdk.Descriptor(f"{body}#{cs[::-1]}", bdk.NetworkKind.TEST)

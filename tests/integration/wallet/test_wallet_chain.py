"""The wallet and the transaction layer on the real embedded chain (libbitcoinkernel)."""
from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from eschaton.chain.backend import BroadcastRefused, OutPoint
from eschaton.chain.embedded.chain import EmbeddedChain
from eschaton.core import coinselect, script
from eschaton.core.tx import (
    SEQUENCE_LOCKTIME,
    TxIn,
    TxOut,
    build_tx,
    pubkey_of,
    serialize,
    set_witness,
    sign_input,
    txid,
)
from eschaton.wallet.wallet import Wallet, outpoint_of

BLOCK_REWARD = 50 * 100_000_000


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def env(tmp_path: Path):
    chain = EmbeddedChain.open(str(tmp_path / "chain"))
    alice = Wallet(tmp_path / "alice", chain)
    bob = Wallet(tmp_path / "bob", chain)
    yield chain, alice, bob, tmp_path
    chain.close_sync()


def test_seed_is_private_and_survives(env) -> None:
    chain, alice, _bob, tmp = env
    seed = tmp / "alice" / "seed"
    assert stat.S_IMODE(seed.stat().st_mode) == 0o600
    again = Wallet(tmp / "alice", chain)
    assert again.seed.mnemonic == alice.seed.mnemonic
    assert alice.seed.mnemonic not in repr(alice.seed)
    os.chmod(seed, 0o644)
    with pytest.raises(Exception, match="readable by others"):
        Wallet(tmp / "alice", chain)


def test_mine_mature_send_and_change(env) -> None:
    chain, alice, bob, _ = env
    addr = alice.new_address()
    run(chain.mine(1, script.address_to_script(addr)))
    # A coinbase of height h may be spent in block h+100: with the tip at 99 it is still immature.
    run(chain.mine(coinselect.COINBASE_MATURITY - 2))
    bal = run(alice.balance())
    assert bal.immature == BLOCK_REWARD and bal.confirmed == 0
    run(chain.mine(1))
    bal = run(alice.balance())
    assert bal.confirmed == BLOCK_REWARD and bal.immature == 0

    txid_ = run(alice.send(bob.new_address(), 12_345_678))
    assert run(chain.tx_status(txid_)).in_mempool
    assert run(bob.balance()).unconfirmed == 12_345_678
    run(chain.mine(1))
    assert run(bob.balance()).confirmed == 12_345_678
    a = run(alice.balance())
    fee = BLOCK_REWARD - 12_345_678 - a.spendable
    assert 0 < fee < 1_000  # one P2WPKH input, two outputs at the relay floor

    with pytest.raises(coinselect.InsufficientFunds):
        run(bob.send(alice.new_address(), 12_345_678))
    with pytest.raises(Exception, match="positive"):
        run(bob.send(alice.new_address(), 0))
    with pytest.raises(script.ScriptError):
        run(bob.send("bcrt1qnotanaddress", 1000))


def fund_alice(chain: EmbeddedChain, alice: Wallet) -> None:
    run(chain.mine(1, script.address_to_script(alice.new_address())))
    run(chain.mine(coinselect.COINBASE_MATURITY))


def test_2of2_funding_and_refund_at_locktime(env) -> None:
    chain, alice, _bob, _ = env
    fund_alice(chain, alice)
    ka, kb = b"\x01" * 32, b"\x02" * 32
    ws = script.multisig_2of2(pubkey_of(ka), pubkey_of(kb))
    spk = script.p2wsh(ws)
    funding = run(alice.fund_script(spk, 1_000_000))
    op = outpoint_of(funding, spk)
    tip = run(chain.tip()).height
    lock = tip + 5
    refund = build_tx([TxIn(op.txid, op.vout, SEQUENCE_LOCKTIME)],
                      [TxOut(499_500, script.p2wpkh(pubkey_of(ka))),
                       TxOut(499_500, script.p2wpkh(pubkey_of(kb)))], locktime=lock)
    sigs = {pubkey_of(k): sign_input(refund, 0, ws, 1_000_000, k) for k in (ka, kb)}
    set_witness(refund, 0, script.witness_2of2(ws, sigs))
    # The refund is fully signed before the funding transaction is broadcast.
    assert run(chain.broadcast(serialize(funding))) == txid(funding)
    run(chain.mine(1))
    assert run(chain.tx_status(op.txid)).confirmations == 1
    # Tip is now lock-4; mine to lock-1: the next block would be `lock`, where it is still non-final.
    run(chain.mine(lock - 1 - run(chain.tip()).height))
    with pytest.raises(BroadcastRefused) as e:
        run(chain.broadcast(serialize(refund)))
    assert e.value.reason == "non-final"
    run(chain.mine(1))
    rid = run(chain.broadcast(serialize(refund)))
    run(chain.mine(1))
    st = run(chain.tx_status(rid))
    assert st.confirmations == 1 and st.height == lock + 1
    spend = run(chain.spender(op))
    assert spend is not None and spend.txid == rid
    assert run(chain.get_utxo(op)) is None


def test_reorg_reverses_confirmation_and_wallet_follows(env) -> None:
    chain, alice, bob, _ = env
    fund_alice(chain, alice)
    fork_point = run(chain.tip()).block_hash
    tid = run(alice.send(bob.new_address(), 7_000_000))
    run(chain.mine(1))
    assert run(bob.balance()).confirmed == 7_000_000
    assert run(chain.tx_status(tid)).confirmations == 1
    # A longer competing branch without the payment reverses the confirmation.
    run(chain.mine_branch(fork_point, 2))
    st = run(chain.tx_status(tid))
    assert st.confirmations == 0 and st.height is None
    bal = run(bob.balance())
    assert bal.confirmed == 0
    # bitcoind returns disconnected transactions to the mempool; so does the embedded chain.
    assert bal.unconfirmed == 7_000_000 and st.in_mempool
    run(chain.mine(1))
    assert run(bob.balance()).confirmed == 7_000_000


def test_restart_keeps_tip_index_and_wallet(tmp_path: Path) -> None:
    chain = EmbeddedChain.open(str(tmp_path / "chain"))
    alice = Wallet(tmp_path / "alice", chain)
    bob = Wallet(tmp_path / "bob", chain)
    fund_alice(chain, alice)
    tid = run(alice.send(bob.new_address(), 3_000_000))
    run(chain.mine(1))
    before = (run(chain.tip()), run(alice.balance()), run(bob.balance()), run(chain.tx_status(tid)),
              run(chain.spender(OutPoint(tid, 0))))
    chain.close_sync()

    chain2 = EmbeddedChain.open(str(tmp_path / "chain"))
    try:
        alice2 = Wallet(tmp_path / "alice", chain2)
        bob2 = Wallet(tmp_path / "bob", chain2)
        after = (run(chain2.tip()), run(alice2.balance()), run(bob2.balance()), run(chain2.tx_status(tid)),
                 run(chain2.spender(OutPoint(tid, 0))))
        assert after == before
        assert bob2.new_address() != bob.new_address()  # indices persisted, no address reuse
    finally:
        chain2.close_sync()


def test_psbt_export_sign_import(env) -> None:
    from eschaton.core import psbt

    chain, alice, bob, _ = env
    fund_alice(chain, alice)
    spk = script.address_to_script(bob.new_address())
    unsigned = run(alice.create_psbt([TxOut(2_000_000, spk)]))
    with pytest.raises(psbt.PsbtError):
        psbt.finalize(unsigned)  # no signatures yet
    signed = alice.sign_psbt(unsigned)  # stands in for an external signer holding the keys
    tx = psbt.finalize(signed)
    run(chain.broadcast(serialize(tx)))
    run(chain.mine(1))
    assert run(bob.balance()).confirmed == 2_000_000
    with pytest.raises(Exception, match="no key"):
        bob.sign_psbt(unsigned)

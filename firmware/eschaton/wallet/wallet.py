"""A BIP84 (P2WPKH) wallet over any ``ChainBackend``.

Rules:
- Addresses come from two chains, receive (0) and change (1). The wallet watches every derived
  key plus a gap of ``GAP`` unused ones, so coins sent to addresses handed out by an older copy
  of the state are still found.
- The state file (next indices) is written atomically: temp file, fsync, rename, fsync dir.
  Losing it loses nothing: the gap scan finds the coins again.
- Spending holds an exclusive lock on the wallet directory so that two processes sharing one
  datadir cannot select the same coins.
- A transaction is broadcast only after it has been fully signed; ``fund_script`` returns a
  signed transaction without broadcasting it, so a channel can get its refund signed first.
"""
from __future__ import annotations

import asyncio
import fcntl
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from embit.transaction import Transaction

from eschaton.chain.backend import ChainBackend, OutPoint, Utxo
from eschaton.core import coinselect, psbt, script
from eschaton.core.tx import (
    SEQUENCE_LOCKTIME,
    TxIn,
    TxOut,
    build_tx,
    p2wpkh_code_for,
    serialize,
    set_witness,
    sign_input,
    txid,
)
from eschaton.errors import LocalError
from eschaton.wallet.seed import STATE_FILE, Seed, load_or_create

GAP = 20
RECEIVE, CHANGE = 0, 1


class WalletError(LocalError):
    pass


@dataclass(frozen=True, slots=True)
class Balance:
    confirmed: int
    unconfirmed: int
    immature: int

    @property
    def spendable(self) -> int:
        return self.confirmed + self.unconfirmed


@dataclass(frozen=True, slots=True)
class _Key:
    change: int
    index: int
    privkey: bytes
    pubkey: bytes
    script_pubkey: bytes


class Wallet:
    def __init__(self, wallet_dir: Path, backend: ChainBackend, network: str = "regtest",
                 mnemonic: str | None = None) -> None:
        self.dir = Path(wallet_dir)
        self.backend = backend
        self.network = network
        self.seed: Seed = load_or_create(self.dir, network, mnemonic)
        self._account = self.seed.account()
        self._keys: dict[tuple[int, int], _Key] = {}
        self._by_script: dict[bytes, _Key] = {}
        self._next = self._load_state()
        self._reserved: set[str] = set()

    # --- state ---------------------------------------------------------------------------

    def _state_path(self) -> Path:
        return self.dir / STATE_FILE

    def _load_state(self) -> dict[int, int]:
        try:
            raw = json.loads(self._state_path().read_text())
            return {RECEIVE: int(raw["receive"]), CHANGE: int(raw["change"])}
        except FileNotFoundError:
            return {RECEIVE: 0, CHANGE: 0}
        except (ValueError, KeyError, TypeError) as e:
            raise WalletError(f"{self._state_path()} is corrupt: {e}") from e

    def _save_state(self) -> None:
        path = self._state_path()
        tmp = path.with_suffix(".tmp")
        data = json.dumps({"receive": self._next[RECEIVE], "change": self._next[CHANGE]}).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dfd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._next = self._load_state()
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # --- keys ----------------------------------------------------------------------------

    def _key(self, change: int, index: int) -> _Key:
        k = self._keys.get((change, index))
        if k is None:
            child = self._account.derive([change, index])
            priv = bytes(child.secret)
            pub = bytes(child.sec())
            k = _Key(change, index, priv, pub, script.p2wpkh(pub))
            self._keys[(change, index)] = k
            self._by_script[k.script_pubkey] = k
        return k

    def _watched(self) -> list[_Key]:
        return [self._key(c, i) for c in (RECEIVE, CHANGE) for i in range(self._next[c] + GAP)]

    def _fresh(self, change: int) -> _Key:
        k = self._key(change, self._next[change])
        self._next[change] += 1
        self._save_state()
        return k

    def new_address(self) -> str:
        with self._locked():
            k = self._fresh(RECEIVE)
        addr = script.script_to_address(k.script_pubkey, self.network)
        assert addr is not None
        return addr

    def owns(self, script_pubkey: bytes) -> bool:
        self._watched()
        return script_pubkey in self._by_script

    # --- coins ---------------------------------------------------------------------------

    async def utxos(self) -> list[Utxo]:
        # Asked all at once: over a remote backend each question is a round trip, and Electrum
        # servers hold small replies back to batch them (ElectrumX pads and waits up to 1 s).
        lists = await asyncio.gather(*(self.backend.list_unspent(k.script_pubkey) for k in self._watched()))
        out: list[Utxo] = [u for lst in lists for u in lst]
        # Advance the indices past used keys, so a restored wallet keeps its gap ahead.
        used = {(self._by_script[u.script_pubkey].change, self._by_script[u.script_pubkey].index)
                for u in out}
        moved = False
        for change, index in used:
            if index >= self._next[change]:
                self._next[change] = index + 1
                moved = True
        if moved:
            self._save_state()
            return await self.utxos()
        return out

    async def balance(self) -> Balance:
        tip = (await self.backend.tip()).height
        conf = unconf = immature = 0
        for u in await self.utxos():
            coin = coinselect.Coin(str(u.outpoint), u.value, u.height, u.coinbase)
            if not coinselect.spendable(coin, tip):
                immature += u.value
            elif u.height is None:
                unconf += u.value
            else:
                conf += u.value
        return Balance(conf, unconf, immature)

    # --- spending ------------------------------------------------------------------------

    async def _build(self, outputs: Sequence[TxOut], locktime: int = 0,
                     target_blocks: int = 6) -> tuple[Transaction, list[Utxo]]:
        for o in outputs:
            # A data output (OP_RETURN) carries no value; every other output must.
            if o.value <= 0 and not (o.value == 0 and o.script_pubkey[:1] == bytes([script.OP_RETURN])):
                raise WalletError("amount must be positive")
        tip = await self.backend.tip()
        feerate = await self.backend.estimate_fee(target_blocks)
        utxos = [u for u in await self.utxos() if str(u.outpoint) not in self._reserved]
        by_key = {str(u.outpoint): u for u in utxos}
        coins = [coinselect.Coin(str(u.outpoint), u.value, u.height, u.coinbase) for u in utxos]
        sel = coinselect.select(coins, [len(o.script_pubkey) for o in outputs],
                                sum(o.value for o in outputs), feerate, tip.height)
        spent = [by_key[c.key] for c in sel.coins]
        outs = list(outputs)
        if sel.change:
            outs.append(TxOut(sel.change, self._fresh(CHANGE).script_pubkey))
        # Anti fee-sniping as bitcoind does: lock to the current tip unless told otherwise.
        lt = locktime or tip.height
        tx = build_tx([TxIn(u.outpoint.txid, u.outpoint.vout, SEQUENCE_LOCKTIME) for u in spent],
                      outs, locktime=lt)
        return tx, spent

    def _sign(self, tx: Transaction, spent: Sequence[Utxo]) -> None:
        for i, u in enumerate(spent):
            k = self._by_script[u.script_pubkey]
            sig = sign_input(tx, i, p2wpkh_code_for(u.script_pubkey), u.value, k.privkey)
            set_witness(tx, i, script.witness_p2wpkh(sig, k.pubkey))

    async def fund_outputs(self, outputs: Sequence[TxOut]) -> Transaction:
        """A signed transaction paying ``outputs`` from our coins; not broadcast."""
        with self._locked():
            tx, spent = await self._build(outputs)
            self._sign(tx, spent)
        return tx

    async def fund_data(self, payload: bytes, target_blocks: int = 6) -> Transaction:
        """A signed transaction with one ``OP_RETURN payload`` output (and change); not broadcast.

        The fee rate is the chain's estimate for ``target_blocks``."""
        with self._locked():
            tx, spent = await self._build([TxOut(0, script.op_return(payload))], target_blocks=target_blocks)
            self._sign(tx, spent)
        return tx

    async def fund_script(self, script_pubkey: bytes, amount: int) -> Transaction:
        return await self.fund_outputs([TxOut(amount, script_pubkey)])

    async def send(self, address: str, amount: int) -> str:
        spk = script.address_to_script(address, self.network)
        if amount <= 0:
            raise WalletError("amount must be positive")
        with self._locked():
            tx, spent = await self._build([TxOut(amount, spk)])
            self._sign(tx, spent)
            return await self.backend.broadcast(serialize(tx))

    async def funding_inputs(self, amount: int, extra_vbytes: int = 0) -> tuple[list[Utxo], TxOut | None, int, list[bytes]]:
        """Coins for ``amount`` inside a jointly built funding transaction.

        Returns (coins, change output or None, our fee share, private keys of the coins). The
        coins are reserved in this process until ``release`` so that two opens never pick the
        same ones; a restart forgets reservations, and the chain then refuses a double spend.
        """
        if amount <= 0:
            raise WalletError("amount must be positive")
        with self._locked():
            tip = await self.backend.tip()
            feerate = await self.backend.estimate_fee(6)
            utxos = [u for u in await self.utxos() if str(u.outpoint) not in self._reserved]
            by_key = {str(u.outpoint): u for u in utxos}
            coins = [coinselect.Coin(str(u.outpoint), u.value, u.height, u.coinbase) for u in utxos]
            # Our share of the funding tx: our inputs and change, plus the 2-of-2 output's bytes.
            sel = coinselect.select(coins, [34 + extra_vbytes], amount, feerate, tip.height)
            spent = [by_key[c.key] for c in sel.coins]
            change = TxOut(sel.change, self._fresh(CHANGE).script_pubkey) if sel.change else None
        self._reserved.update(str(u.outpoint) for u in spent)
        keys = [self._by_script[u.script_pubkey].privkey for u in spent]
        return spent, change, sel.fee, keys

    def release(self, outpoints: Sequence[OutPoint]) -> None:
        for op in outpoints:
            self._reserved.discard(str(op))

    def payout_script(self) -> bytes:
        """A fresh receive script for channel payouts."""
        with self._locked():
            return self._fresh(RECEIVE).script_pubkey

    def privkey_for(self, script_pubkey: bytes) -> bytes | None:
        self._watched()
        k = self._by_script.get(script_pubkey)
        return k.privkey if k is not None else None

    # --- PSBT ----------------------------------------------------------------------------

    async def create_psbt(self, outputs: Sequence[TxOut]) -> str:
        """An unsigned PSBT paying ``outputs`` from our coins, for an external signer.

        Each input carries its whole previous transaction (``non_witness_utxo``) as well as
        ``witness_utxo``, so signers that refuse unproven amounts (BDK's defaults) sign it."""
        with self._locked():
            tx, spent = await self._build(outputs)
        fp = self.seed.fingerprint()
        origins = {}
        prev_txs = {}
        for i, u in enumerate(spent):
            k = self._by_script[u.script_pubkey]
            origins[i] = (k.pubkey, psbt.KeyOrigin(fp, self.seed.path(k.change, k.index)))
            prev_txs[i] = await self.backend.get_transaction(u.outpoint.txid)
        return psbt.export_psbt(tx, [TxOut(u.value, u.script_pubkey) for u in spent], origins,
                                prev_txs=prev_txs)

    def sign_psbt(self, b64: str) -> str:
        """Add our signatures to every input of ``b64`` we hold keys for."""
        p = psbt.parse_psbt(b64)
        spent = psbt.spent_outputs(p)
        self._watched()
        signed = 0
        for i, out in enumerate(spent):
            k = self._by_script.get(out.script_pubkey)
            if k is None:
                continue
            sig = sign_input(p.tx, i, p2wpkh_code_for(out.script_pubkey), out.value, k.privkey)
            psbt.add_signature(p, i, k.pubkey, sig)
            signed += 1
        if not signed:
            raise WalletError("this wallet holds no key for any input of the PSBT")
        return str(p.to_base64())


def outpoint_of(tx: Transaction, script_pubkey: bytes) -> OutPoint:
    for i, o in enumerate(tx.vout):
        if bytes(o.script_pubkey.data) == script_pubkey:
            return OutPoint(txid(tx), i)
    raise WalletError("transaction does not pay that script")

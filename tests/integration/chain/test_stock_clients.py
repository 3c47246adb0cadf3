"""Stock wallets, unmodified, against ``eschaton chain serve``: Debian's Electrum 4.3.4 (headless,
as a daemon driven by its own command line) and BDK (bdkpython). Each syncs the headers, finds
the coins mined to it, believes confirmations only with merkle proofs, and pays; the chain sees
the payment (``eschaton chain tx``)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bdkpython as bdk
import pytest

from tests.conftest import need_tool
from tests.integration.node.harness import _env, cli_json, eschaton_cmd, poll

pytestmark = pytest.mark.timeout(180)

PAY_TO = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"  # BIP173's test key, on regtest
COIN = 100_000_000


@dataclass
class Served:
    datadir: Path
    port: int

    def chain(self, *args: str) -> Any:
        return cli_json("chain", *args, "--datadir", str(self.datadir))


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[Served]:
    """``eschaton chain serve`` owning a fresh chain; its TCP port as it prints it."""
    datadir = tmp_path / "node"
    proc = subprocess.Popen([*eschaton_cmd(), "chain", "serve", "--datadir", str(datadir)],
                            stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.fullmatch(r"serving chain at height 0 on 127\.0\.0\.1:(\d+)\n", line)
        assert m, line
        yield Served(datadir, int(m.group(1)))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0


class Electrum:
    """The ``electrum`` program with its own data directory, regtest, one server."""

    def __init__(self, home: Path, port: int) -> None:
        self.exe = need_tool("electrum")
        self.home = home
        self.port = port
        self.pid: int | None = None

    def _exec(self, *args: str, offline: bool = False) -> subprocess.CompletedProcess[str]:
        argv = [self.exe, "--regtest", "-D", str(self.home), *args]
        if offline:
            argv.append("--offline")
        p = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=self._env())
        assert p.returncode == 0, f"electrum {' '.join(args)}: {p.stderr.strip() or p.stdout.strip()}"
        return p

    def run(self, *args: str, offline: bool = False) -> str:
        return self._exec(*args, offline=offline).stdout.strip()

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args))

    def start(self) -> None:
        p = self._exec("daemon", "-d", "--oneserver", "--server", f"127.0.0.1:{self.port}:t")
        out = p.stdout + p.stderr
        m = re.search(r"starting daemon \(PID (\d+)\)", out)
        assert m, out
        self.pid = int(m.group(1))

    def stop(self) -> None:
        try:
            self.run("stop")
        except AssertionError:
            if self.pid is not None:
                os.kill(self.pid, signal.SIGKILL)  # the daemon we started, by its pid

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["HOME"] = str(self.home)  # nothing of the user's own Electrum is read or written
        return env


def _history(e: Electrum) -> list[dict[str, Any]]:
    return list(e.json("onchain_history")["transactions"])


@pytest.mark.slow
def test_electrum_4_3_4_syncs_verifies_and_pays(served: Served, tmp_path: Path) -> None:
    e = Electrum(tmp_path / "electrum", served.port)
    assert e.run("version", offline=True) == "4.3.4"
    e.run("create", offline=True)
    try:
        e.start()
        assert e.json("load_wallet") is True
        addr = e.run("getunusedaddress")
        served.chain("mine", "101", "--to", addr)
        tip = served.chain("info")

        def synced() -> bool:
            info = e.json("getinfo")
            return bool(info["connected"] and info["blockchain_height"] == 101 and e.json("is_synchronized"))

        poll(synced, "Electrum to sync 101 headers and its wallet", timeout=60)
        # Electrum's own header chain ends at our tip
        assert e.json("getinfo")["server_height"] == tip["height"]
        # 101 coinbases: two are mature (heights 1, 2), the rest still maturing
        assert e.json("getbalance") == {"confirmed": "100", "unmatured": "4950"}

        # Every coinbase counts as confirmed only once its merkle proof checked out against the
        # header: Electrum reports 0 confirmations for an unverified transaction.
        hist = poll(lambda: (h := _history(e)) and all(t["confirmations"] > 0 for t in h) and h,
                    "Electrum to verify every transaction's merkle proof")
        assert [t["height"] for t in hist] == list(range(1, 102))
        assert [t["confirmations"] for t in hist] == [102 - t["height"] for t in hist]
        assert all(t["txpos_in_block"] == 0 for t in hist)  # the proof's position: the coinbase

        raw = e.run("payto", PAY_TO, "1.5")
        txid = e.run("broadcast", raw)
        seen = served.chain("tx", txid)
        assert seen["in_mempool"] is True and seen["hex"] == raw
        served.chain("mine", "1")
        paid = poll(lambda: next((t for t in _history(e) if t["txid"] == txid and t["confirmations"] == 1), None),
                    "Electrum to see its payment confirmed at 102")
        assert paid["height"] == 102 and paid["incoming"] is False and paid["bc_value"].startswith("-1.5")
        assert served.chain("tx", txid)["height"] == 102
    finally:
        e.stop()


def _bdk_wallet() -> bdk.Wallet:
    words = "abandon " * 11 + "about"
    key = bdk.DescriptorSecretKey(bdk.NetworkKind.TEST, bdk.Mnemonic.from_string(words.strip()), None)
    ext = bdk.Descriptor.new_bip84(key, bdk.KeychainKind.EXTERNAL, bdk.NetworkKind.TEST)
    chg = bdk.Descriptor.new_bip84(key, bdk.KeychainKind.INTERNAL, bdk.NetworkKind.TEST)
    return bdk.Wallet(ext, chg, bdk.Network.REGTEST, bdk.Persister.new_in_memory())


def test_bdk_full_scan_sync_build_sign_broadcast(served: Served) -> None:
    w = _bdk_wallet()
    addr = str(w.reveal_next_address(bdk.KeychainKind.EXTERNAL).address)
    served.chain("mine", "101", "--to", addr)
    tip = served.chain("info")
    client = bdk.ElectrumClient(f"tcp://127.0.0.1:{served.port}")

    w.apply_update(client.full_scan(w.start_full_scan().build(), 10, 10, False))
    cp = w.latest_checkpoint()
    # BDK negotiates 1.6 and reads 1.6's header list: it follows the chain to our tip
    assert (cp.height, str(cp.hash)) == (tip["height"], tip["hash"])
    bal = w.balance()
    assert (bal.confirmed.to_sat(), bal.immature.to_sat()) == (2 * 50 * COIN, 99 * 50 * COIN)
    # confirmed with anchors in our blocks
    heights = sorted(t.chain_position.confirmation_block_time.block_id.height for t in w.transactions())
    assert heights == list(range(1, 102))

    dest = bdk.Address(PAY_TO, bdk.Network.REGTEST)
    psbt = (bdk.TxBuilder().add_recipient(dest.script_pubkey(), bdk.Amount.from_sat(COIN))
            .fee_rate(bdk.FeeRate.from_sat_per_vb(2)).finish(w))
    assert w.sign(psbt) is True
    tx = psbt.extract_tx()
    txid = str(client.transaction_broadcast(tx))
    assert txid == str(tx.compute_txid())
    assert served.chain("tx", txid)["in_mempool"] is True

    w.apply_update(client.sync(w.start_sync_with_revealed_spks().build(), 10, False))
    fee = w.calculate_fee(tx).to_sat()
    assert w.balance().total.to_sat() == 101 * 50 * COIN - COIN - fee
    served.chain("mine", "1")
    w.apply_update(client.sync(w.start_sync_with_revealed_spks().build(), 10, False))
    pos = w.get_tx(tx.compute_txid()).chain_position
    assert pos.confirmation_block_time.block_id.height == 102
    assert w.latest_checkpoint().height == 102

"""Crash harness: SIGKILL a node process (two endpoints, two stores) at random steps during open,
payments, escrows and close; restart, reconcile, and settle on the real chain.

After every kill: both sides reconcile to the same version, no agreed version is lost, each
side's best version is valid for the funding output (kernel script check) and pays it at least
its agreed balance, and the cooperative close that follows confirms on the chain paying each
side at least its agreed balance. 200 trials when CI=true; ESCHATON_CRASH_TRIALS sets the count
(a soak run); locally the default is 40.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from eschaton.chain import kernel
from eschaton.chain.embedded.chain import EmbeddedChain
from eschaton.core import script as S
from eschaton.core import tx as T
from tests.conftest import IN_CI
from tests.integration.channel.crash_node import PAYOUT, WALLET

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
ROOT = Path(__file__).resolve().parents[3]
TRIALS = int(os.environ.get("ESCHATON_CRASH_TRIALS", "200" if IN_CI else "40"))
FUND_VALUE = 20_000_000


def _child(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'firmware'}:{ROOT}")
    return subprocess.run([sys.executable, "-m", "tests.integration.channel.crash_node", *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def _fan_out(chain: EmbeddedChain, n: int) -> list[tuple[str, int]]:
    """Split mature coinbases into ``n`` funding coins for the wallet key."""
    spk = S.p2wpkh(T.pubkey_of(WALLET))
    chain.node.mine(101 + n // 200, spk)
    chain.node.mine(100)
    coins = [u for u in chain.list_unspent_sync(spk) if u.coinbase]
    out: list[tuple[str, int]] = []
    code = S.p2wpkh_script_code(T.pubkey_of(WALLET))
    while len(out) < n:
        u = coins.pop()
        k = min(200, n - len(out))
        tx = T.build_tx([T.TxIn(u.outpoint.txid, u.outpoint.vout, T.SEQUENCE_FINAL)],
                        [T.TxOut(FUND_VALUE, spk)] * k + [T.TxOut(u.value - k * FUND_VALUE - 50_000, spk)])
        T.set_witness(tx, 0, [T.sign_input(tx, 0, code, u.value, WALLET), T.pubkey_of(WALLET)])
        txid = chain.node.broadcast(T.serialize(tx))
        out.extend((txid, i) for i in range(k))
    # The node process works at height 300 (its funding nLockTime): bring the chain past it.
    chain.node.mine(max(1, 305 - chain.node.tip().height))
    return out


def _paid(raw_hex: str) -> tuple[int, int]:
    outs = T.outputs_of(T.parse_tx(bytes.fromhex(raw_hex)))
    return (sum(o.value for o in outs if o.script_pubkey == PAYOUT["a"]),
            sum(o.value for o in outs if o.script_pubkey == PAYOUT["b"]))


def test_sigkill_at_random_steps_then_reconcile_and_settle(tmp_path: Path) -> None:
    chain = EmbeddedChain.open(str(tmp_path / "chain"))
    try:
        coins = _fan_out(chain, TRIALS)
        dry = _child("run", str(tmp_path / "dry"), "0", "0",
                     json.dumps({"txid": coins[0][0], "vout": coins[0][1], "value": FUND_VALUE}))
        assert dry.returncode == 0, dry.stderr
        steps = int(dry.stdout.strip().splitlines()[-1].split()[1])
        rng = random.Random(int(os.environ.get("ESCHATON_CRASH_SEED", "20261126")))
        phases = {"open": 0, "middle": 0, "close": 0}
        killed = 0
        for trial in range(TRIALS):
            d = tmp_path / f"t{trial}"
            d.mkdir()
            phase = rng.choice(["open", "middle", "middle", "close"])
            kill_at = {"open": rng.randint(1, 12), "middle": rng.randint(13, steps - 8),
                       "close": rng.randint(steps - 7, steps + 2)}[phase]
            phases[phase] += 1
            txid, vout = coins[trial]
            seed = str(trial)
            run = _child("run", str(d), seed, str(kill_at), json.dumps({"txid": txid, "vout": vout, "value": FUND_VALUE}))
            assert run.returncode in (0, -signal.SIGKILL), run.stderr
            killed += run.returncode == -signal.SIGKILL
            agreed = [line.split() for line in run.stdout.splitlines() if line.startswith("AGREED")]
            rec = _child("recover", str(d), seed)
            assert rec.returncode == 0, f"trial {trial} kill_at {kill_at}: {rec.stderr[-2000:]}"
            report = json.loads(rec.stdout.strip().splitlines()[-1])
            ctx = f"trial {trial} kill_at {kill_at}: {report}"
            if not report["channel"] or not report["opened"]:
                assert not agreed, ctx  # nothing was ever agreed, and no funding input was signed
                continue
            last = int(agreed[-1][1]) if agreed else 0
            assert report["number"] >= last, ctx  # no agreed version lost
            rb = report["reconciled"]
            anchors = [line.split()[1] for line in (run.stdout + rec.stdout).splitlines() if line.startswith("ANCHOR")]
            # Unilateral safety: each side's best version is valid and pays it its agreed balance.
            # The output the channel now lives on: the funding's, or the (last) re-anchor's.
            anchor_hex = anchors[-1] if anchors else report["funding"]
            live = T.outputs_of(T.parse_tx(bytes.fromhex(anchor_hex)))[0]
            assert live.value == report["capacity"], ctx
            for side, i in (("best_a", 0), ("best_b", 1)):
                raw = bytes.fromhex(report[side])
                kernel.verify_input(live.script_pubkey, live.value, raw, 0)
                assert _paid(report[side])[i] >= rb[i], ctx
            # The real settlement: funding (and re-anchor) and cooperative close confirmed by the chain.
            chain.node.broadcast(bytes.fromhex(report["funding"]))
            if anchors:
                chain.node.broadcast(bytes.fromhex(anchors[-1]))
            close_txid = chain.node.broadcast(bytes.fromhex(report["close"]))
            chain.node.mine(1)
            assert chain.tx_status_sync(close_txid).confirmations == 1, ctx
            paid = _paid(report["close"])
            assert paid[0] >= rb[0] and paid[1] >= rb[1], ctx
            assert list(paid) == report["final"], ctx
        assert killed >= TRIALS * 0.8, (killed, TRIALS)
        assert all(phases.values()), phases
    finally:
        chain.close_sync()

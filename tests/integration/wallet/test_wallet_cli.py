"""``eschaton wallet`` end to end through the console script, on the embedded chain."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def esc(*args: str, datadir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "eschaton", *args, "--datadir", str(datadir)],
                          capture_output=True, text=True, timeout=120)


def test_wallet_cli_flow_and_errors(tmp_path: Path) -> None:
    r = esc("wallet", "address", "--json", datadir=tmp_path)
    assert r.returncode == 0, r.stderr
    addr = json.loads(r.stdout)["address"]
    assert addr.startswith("bcrt1")
    assert esc("chain", "mine", "101", "--to", addr, datadir=tmp_path).returncode == 0
    bal = json.loads(esc("wallet", "balance", "--json", datadir=tmp_path).stdout)
    assert bal["confirmed"] == 2 * 50 * 10**8 and bal["immature"] == 99 * 50 * 10**8

    other = esc("wallet", "address", datadir=tmp_path / "other").stdout.strip()
    r = esc("wallet", "send", other, "250000", "--json", datadir=tmp_path)
    assert r.returncode == 0, r.stderr
    txid = json.loads(r.stdout)["txid"]
    tx = json.loads(esc("chain", "tx", txid, "--json", datadir=tmp_path).stdout)
    assert tx["in_mempool"] is True

    bad = [
        (("wallet", "send", "bcrt1qnotvalid", "1000"), 1, "malformed address"),
        (("wallet", "send", other, "0"), 2, "must be positive"),
        (("wallet", "send", other, "-5"), 2, "must be positive"),
        (("wallet", "send", other, "abc"), 2, "whole number"),
        (("wallet", "send", other, str(10**15)), 1, "insufficient funds"),
        (("wallet", "psbt-finalize", "bm90IGEgcHNidA=="), 1, "PSBT"),
    ]
    for args, code, text in bad:
        r = esc(*args, datadir=tmp_path)
        assert r.returncode == code, (args, r.stderr)
        assert text in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr

    # PSBT round trip through the CLI: create, sign (this wallet stands in for the external signer), finalize.
    b64 = json.loads(esc("wallet", "psbt-create", other, "50000", "--json", datadir=tmp_path).stdout)["psbt"]
    signed = json.loads(esc("wallet", "psbt-sign", b64, "--json", datadir=tmp_path).stdout)["psbt"]
    r = esc("wallet", "psbt-finalize", signed, "--json", datadir=tmp_path)
    assert r.returncode == 0, r.stderr
    final_txid = json.loads(r.stdout)["txid"]
    assert esc("chain", "mine", "1", datadir=tmp_path).returncode == 0
    st = json.loads(esc("chain", "tx", final_txid, "--json", datadir=tmp_path).stdout)
    assert st["confirmations"] == 1

"""The SPV client's header file: private, versioned (migrated from an empty file, newer refused),
bound to its network, and a reorg's losing branch deleted when the winner is saved."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from eschaton.chain.electrum.headerstore import MIGRATIONS, HeaderStore, WrongNetwork
from eschaton.chain.electrum.spv import SpvHeaders
from eschaton.core.spv.pow import NETWORKS
from eschaton.store.sqlite import SchemaTooNew
from tests.unit.core.test_spv import GENESIS_REGTEST, branch


def test_headers_survive_a_restart_and_a_reorg_is_saved(tmp_path: Path) -> None:
    path = tmp_path / "spv" / "headers.sqlite"
    h = SpvHeaders(path, "regtest")
    assert h.chain.height == 0
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    hs = branch(GENESIS_REGTEST, 6, 1_600_000_000)
    h.applied(h.chain.apply(1, hs))
    h.proven["aa" * 32] = (5, h.chain.hash_at(5))
    h.proven["bb" * 32] = (3, h.chain.hash_at(3))
    rival = branch(hs[2], 5, 1_600_000_100, b"r")  # forks above 3, one longer
    r = h.chain.apply(4, rival)
    assert r.fork_height == 3
    h.applied(r)
    assert set(h.proven) == {"bb" * 32}  # proofs above the fork are proven again when asked
    tip = h.chain.tip_hash()
    h.close()
    again = SpvHeaders(path, "regtest")
    assert again.chain.height == 8 and again.chain.tip_hash() == tip
    again.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT count(*) FROM headers").fetchone()[0] == 9  # the losing 4..6 are gone
    db.close()


def test_schema_versions_and_network(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    sqlite3.connect(path).close()  # an empty file: version 0, migrated to the current one
    s = HeaderStore(path, NETWORKS["regtest"], GENESIS_REGTEST)
    assert s.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    s.close()
    with pytest.raises(WrongNetwork, match="headers of regtest, not signet"):
        HeaderStore(path, NETWORKS["signet"], NETWORKS["signet"].genesis_header)
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.close()
    with pytest.raises(SchemaTooNew):
        HeaderStore(path, NETWORKS["regtest"], GENESIS_REGTEST)

"""Everything a node creates in its datadir is private: files (databases and their -wal/-shm,
the kernel's block files and chainstate, port files, sockets, the wallet, journals) are 0600 and
directories 0700, even when the node is started by hand under a permissive umask (022). Files
left looser by older firmware are tightened when their store opens."""
from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from eschaton.chain.embedded.engine import ChainNode
from eschaton.channel.store import ChannelStore
from tests.integration.node.harness import NodeProc, cli_json

pytestmark = pytest.mark.timeout(180)


@pytest.fixture()
def loose_umask() -> Iterator[None]:
    """Start the node the way a user's shell would: umask 022 (systemd's UMask=0077 not set)."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _loose(root: Path) -> list[str]:
    """Paths under ``root`` (and ``root``) whose mode is not 0700 (directories) or 0600 (the rest)."""
    bad = []
    for p in [root, *root.rglob("*")]:
        st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode):
            continue
        want = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
        if stat.S_IMODE(st.st_mode) != want:
            bad.append(f"{p.relative_to(root)} {stat.S_IMODE(st.st_mode):04o}")
    return bad


def test_a_running_node_keeps_its_datadir_private(tmp_path: Path, loose_umask: None) -> None:
    n = NodeProc(tmp_path, "solo", chain_dir=None)
    try:
        n.start().wait_ready()
        addr = n.wallet("address")["address"]
        cli_json("chain", "mine", "101", "--to", addr, "--datadir", str(n.datadir))
        assert n.wallet_total() > 0
        d = n.datadir
        seen = {str(p.relative_to(d)) for p in d.rglob("*")}
        # The walk must cover what the node is known to make, or it proves nothing.
        assert {"channels.db", "channels.db-wal", "channels.db-shm",
                "chain/LOCK", "chain/index.sqlite", "chain/index.sqlite-wal", "chain/electrum.port",
                "chain/electrum.sock", "chain/kernel/blocks/blk00000.dat", "chain/kernel/chainstate/CURRENT",
                "wallet/seed", "node_key"} <= seen, sorted(seen)
        assert _loose(d) == []
        assert n.stop() == 0
    finally:
        if n.running:
            n.kill()


def _modes(paths: list[Path]) -> dict[str, str]:
    return {p.name: f"{stat.S_IMODE(os.stat(p).st_mode):04o}" for p in paths}


def test_files_of_an_older_install_are_tightened_when_opened(tmp_path: Path, loose_umask: None) -> None:
    # Databases as older firmware left them: 0644, with their -wal and -shm (an open connection
    # in WAL mode keeps both on disk while the store opens).
    held = []
    for name in ("channels.db", "channel_peers.db"):
        db = sqlite3.connect(tmp_path / name)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE old (x)")
        held.append(db)
    files = [tmp_path / f"{name}{suffix}" for name in ("channels.db", "channel_peers.db")
             for suffix in ("", "-wal", "-shm")]
    assert set(_modes(files).values()) == {"0644"}, _modes(files)
    # The channel store opens the old peer map too (to migrate it): both are tightened.
    store = ChannelStore(tmp_path / "channels.db")
    try:
        assert set(_modes(files).values()) == {"0600"}, _modes(files)
    finally:
        store.close()
        for db in held:
            db.close()

    # A chain directory as older firmware left it: every file 0644, every directory 0755.
    ChainNode(tmp_path).close()
    chain = tmp_path / "chain"
    for p in [chain, *chain.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    assert len(_loose(chain)) > 10
    node = ChainNode(tmp_path)
    try:
        assert _loose(chain) == []
    finally:
        node.close()

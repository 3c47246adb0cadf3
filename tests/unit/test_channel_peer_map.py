"""The node's channel -> peer map: durable, versioned, and a newer schema is refused."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from eschaton.daemon.channels import SCHEMA_VERSION, _PeerMap
from eschaton.errors import LocalError


def test_peer_map_survives_reopen_and_refuses_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "channel_peers.db"
    m = _PeerMap(path)
    m.set(b"\x01" * 32, "aa" * 32)
    m.close()
    again = _PeerMap(path)
    assert again.map == {b"\x01" * 32: "aa" * 32}
    again.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(LocalError, match="newer than this firmware"):
        _PeerMap(path)


def test_unversioned_map_from_an_older_build_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "channel_peers.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE channel_peers (channel_id BLOB PRIMARY KEY, peer TEXT NOT NULL)")
    db.execute("INSERT INTO channel_peers VALUES (?, ?)", (b"\x02" * 32, "bb" * 32))
    db.commit()
    db.close()
    m = _PeerMap(path)
    assert m.map == {b"\x02" * 32: "bb" * 32}
    m.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
